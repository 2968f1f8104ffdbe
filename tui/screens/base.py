"""The base of every snapdeck screen: a typed ``snap_app``, one error path for workers, the
status bar, and "every binding is a command" for the command palette."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui import restoring
from tui.messages import StoreChanged

if TYPE_CHECKING:
    from tui.app import SnapApp


def screen_css(name: str) -> str:
    """A screen's stylesheet (``tui/screens/NAME``), for its ``DEFAULT_CSS``.

    Not ``CSS_PATH``: Textual re-parses *every* stylesheet of the app when a screen with its
    own CSS file is first shown (a stall of tens of milliseconds, also at start-up), while a
    widget's default CSS is parsed alone. The selectors start with the screen's name, so
    they still win over the widgets' defaults."""
    return Path(__file__).with_name(name).read_text(encoding="utf-8")


class BackendScreen(Screen[None]):
    """A screen whose workers call the backend; their failures become toasts."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back", id="back")]

    @property
    def snap_app(self) -> SnapApp:
        """The app, typed."""
        return cast("SnapApp", self.app)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.snap_app.show_error(event.worker.error)
            self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker[object]) -> None:
        """Hook: undo a loading state after a failed worker."""

    @on(StoreChanged)
    def _store_changed(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Hook: reload data after the repository changed."""

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()


@dataclass
class RestoreFinished(Message):
    """A restore (or its undo) finished."""

    done: restoring.RestoreDone | None
    text: str


class RestoringScreen(BackendScreen):
    """A screen that restores: it keeps the last restore and undoes it (``u``) in a worker."""

    def __init__(self) -> None:
        super().__init__()
        self.last_restore: restoring.RestoreDone | None = None

    def action_undo(self) -> None:
        if self.last_restore is None:
            self.notify("nothing to undo", severity="warning")
            return
        done, self.last_restore = self.last_restore, None
        self.run_undo(done)

    @work(thread=True, exclusive=True, group="restore", exit_on_error=False)
    def run_undo(self, done: restoring.RestoreDone) -> None:
        app = self.snap_app
        text = restoring.undo(app.store, done, app.snapshot_options())
        self.post_message(RestoreFinished(None, f"undone: {text}"))
        app.store_changed()

    @on(RestoreFinished)
    def _restore_finished(self, msg: RestoreFinished) -> None:
        if msg.done is not None:
            self.last_restore = msg.done
        self.notify(msg.text, timeout=6)
