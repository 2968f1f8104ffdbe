"""``?``: every key binding of the screen below (after the user's keymap), and the app's."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

_NAV = {
    "cursor_up": "Up",
    "cursor_down": "Down",
    "page_up_rows": "Page up",
    "page_down_rows": "Page down",
    "first": "First",
    "last": "Last",
    "select": "Open / choose",
}


class HelpScreen(ModalScreen[None]):
    """The key bindings, grouped by where they apply."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 76; max-width: 95%; height: 80%;
        border: thick $primary 60%; background: $surface; padding: 0 1;
    }
    HelpScreen .title { text-style: bold; color: $primary; padding: 1 1 0 1; }
    HelpScreen .hint { color: $text-muted; padding: 0 1 1 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss_help", "Close", id="help_close")
    ]

    def __init__(self, below: Screen[Any]) -> None:
        super().__init__()
        self.below = below

    def compose(self) -> ComposeResult:
        name = type(self.below).__name__.removesuffix("Screen").lower() or "screen"
        with Vertical():
            yield Label(f"Keys — {name}", classes="title")
            yield Static(
                'Rebind any key in config.toml [keymap] with the id shown (id = "keys"). '
                "ctrl+p opens the command palette with every action.",
                classes="hint",
                markup=False,
            )
            with VerticalScroll():
                yield Static(self._table(), id="help-table")

    def _table(self) -> Table:
        table = Table(box=None, expand=True, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("key", no_wrap=True, min_width=12)
        table.add_column("action", ratio=1)
        table.add_column("id", style="dim", no_wrap=True)
        rows: dict[str, tuple[str, str, str]] = {}
        for active in self.below.active_bindings.values():
            b = active.binding
            desc = b.description or _NAV.get(b.action, "")
            if not desc:
                continue
            shown = self.app.get_key_display(b)
            prev = rows.get(b.action + desc)
            keys = shown if prev is None else f"{prev[0]}, {shown}"
            rows[b.action + desc] = (keys, desc, b.id or "")
        self.rows = list(rows.values())
        """(keys, description, binding id) as shown."""
        for keys, desc, bid in self.rows:
            table.add_row(Text(keys), Text(desc), Text(bid))
        return table

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
