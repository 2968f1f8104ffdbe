"""Modal dialogs: confirm (with an optional plan to read first), a one-line input, and the
"restore to…" question (a directory, and for a single file whether to keep its folders)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

DIALOG_CSS = """
.dialog {
    width: 72;
    max-width: 90%;
    height: auto;
    max-height: 80%;
    border: thick $primary 60%;
    background: $surface;
    padding: 1 2;
}
.dialog .title { text-style: bold; color: $primary; margin-bottom: 1; }
.dialog .body { height: auto; max-height: 20; margin-bottom: 1; }
.dialog .buttons { height: auto; align-horizontal: right; }
.dialog Button { margin-left: 1; }
.dialog.-danger { border: thick $error 70%; }
.dialog.-danger .title { color: $error; }
"""


class ConfirmDialog(ModalScreen[bool]):
    """Ask yes/no; dismisses with True (yes) or False."""

    DEFAULT_CSS = "ConfirmDialog { align: center middle; }\n" + DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n,escape", "answer(False)", "No", show=False),
    ]

    def __init__(
        self, title: str, body: str = "", *, yes: str = "Yes", danger: bool = False
    ) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.yes = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -danger" if self.danger else "dialog"):
            yield Label(self.title_text, classes="title")
            if self.body:
                with VerticalScroll(classes="body"):
                    yield Static(self.body, markup=False)
            with Horizontal(classes="buttons"):
                yield Button("No", id="no")
                yield Button(
                    f"{self.yes} (y)", id="yes", variant="error" if self.danger else "primary"
                )

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class InputDialog(ModalScreen[str | None]):
    """Ask for one line of text; dismisses with the text, or None when cancelled."""

    DEFAULT_CSS = "InputDialog { align: center middle; }\n" + DIALOG_CSS
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(
        self, title: str, *, value: str = "", placeholder: str = "", help: str = ""
    ) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.help = help

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            if self.help:
                yield Static(self.help, classes="body", markup=False)
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.cursor_blink = self.app.cursor_blink if hasattr(self.app, "cursor_blink") else False
        inp.focus()

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RestoreToDialog(ModalScreen[tuple[str, bool] | None]):
    """Ask where to restore ``path``: dismisses with (directory, keep folders) or None.

    A single file goes flat into the directory (``DIR/<name>``) unless "keep its folders" is
    ticked (``DIR/<path>``); a folder always keeps its path."""

    DEFAULT_CSS = (
        "RestoreToDialog { align: center middle; }\n"
        + DIALOG_CSS
        + "RestoreToDialog Checkbox { margin-top: 1; border: none; padding: 0; }\n"
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(self, path: str, *, is_file: bool, value: str = "") -> None:
        super().__init__()
        self.path = path
        self.is_file = is_file
        self.value = value

    def compose(self) -> ComposeResult:
        name = self.path.rsplit("/", 1)[-1]
        with Vertical(classes="dialog"):
            yield Label(f"Restore {self.path or 'everything'} to…", classes="title")
            if self.is_file:
                help = (
                    f"A directory: the file is written there as DIR/{name}. Tick the box to "
                    f"recreate its folders (DIR/{self.path}). A dry run is shown before "
                    "anything is written."
                )
            else:
                help = (
                    f"A directory; the path is recreated inside it (DIR/{self.path}). "
                    "A dry run is shown before anything is written."
                )
            yield Static(help, classes="body", markup=False)
            yield Input(value=self.value, placeholder="/path/to/directory", id="answer")
            if self.is_file and "/" in self.path:
                yield Checkbox(f"keep its folders (DIR/{self.path})", id="keep-folders")

    def on_mount(self) -> None:
        inp = self.query_one(Input)
        inp.cursor_blink = bool(getattr(self.app, "cursor_blink", False))
        inp.focus()

    @on(Checkbox.Changed)
    def ticked(self) -> None:
        self.query_one(Input).focus()  # enter in the input restores

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        keep = not self.is_file
        for box in self.query("#keep-folders").results(Checkbox):
            keep = box.value
        self.dismiss((event.value, keep))

    def action_cancel(self) -> None:
        self.dismiss(None)
