"""The welcome screen of an empty repository: says what will happen, takes the first snapshot."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Center, Container, Vertical
from textual.message import Message
from textual.widgets import Button, Footer, Label, ProgressBar, Static

from tui.screens.base import BackendScreen
from tui.widgets.status_bar import StatusBar


class _Progress(Message):
    def __init__(self, total: int | None, done: int) -> None:
        super().__init__()
        self.total = total
        self.done = done

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, _Progress)


class FirstSnapshotDone(Message):
    """The first snapshot finished."""


class _Sink:
    """Progress → coalesced messages, at most ten a second."""

    def __init__(self, screen: WelcomeScreen) -> None:
        self.screen = screen
        self.total: int | None = None
        self.done = 0
        self.last = 0.0

    def start(self, total: int | None, label: str) -> None:
        self.total, self.done = total, 0
        self.screen.post_message(_Progress(total, 0))

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last > 0.1:
            self.last = now
            self.screen.post_message(_Progress(self.total, self.done))

    def note(self, msg: str) -> None:
        pass


class WelcomeScreen(BackendScreen):
    """Shown over the timeline when the repository has no snapshot yet."""

    DEFAULT_CSS = """
    WelcomeScreen #welcome-area { height: 1fr; align: center middle; }
    WelcomeScreen #welcome {
        width: 80; max-width: 95%; height: auto;
        border: thick $primary 50%; background: $surface; padding: 1 3;
    }
    WelcomeScreen #welcome-title { text-style: bold; color: $primary; width: 100%; content-align: center middle; }
    WelcomeScreen #welcome-body { margin: 1 0; }
    WelcomeScreen #start { width: 100%; margin-top: 1; }
    WelcomeScreen ProgressBar { margin-top: 1; width: 100%; }
    WelcomeScreen ProgressBar Bar { width: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,s", "start", "Take the first snapshot", id="welcome_start"),
        Binding("escape", "skip", "Skip", id="welcome_skip"),
    ]

    def compose(self) -> ComposeResult:
        app = self.snap_app
        with Container(id="welcome-area"), Center(), Vertical(id="welcome"):
            yield Label("Welcome to snapdeck", id="welcome-title")
            yield Static(self._body(), id="welcome-body")
            bar = ProgressBar(show_eta=False, id="progress")
            bar.display = False
            yield bar
            yield Button(
                "Take the first snapshot  (enter)" if app.dirs else "Nothing to snapshot",
                id="start",
                variant="primary",
                disabled=not app.dirs,
            )
        yield StatusBar()
        yield Footer()

    def _body(self) -> Text:
        app = self.snap_app
        t = Text()
        t.append("This repository has no snapshots yet.\n\n")
        if app.dirs:
            t.append("When you press enter, snapdeck takes a snapshot of\n")
            for d in app.dirs:
                t.append(f"  {d}\n", style="bold")
            t.append(
                "into the repository: every file, deduplicated and compressed. Files never leave "
                "this machine and nothing in the directory is changed.\n\n"
            )
            if app.watch_enabled:
                t.append(
                    "After that snapdeck watches the directory and takes a checkpoint a moment "
                    "after files change, so you can browse, compare and restore any version.\n"
                )
            else:
                t.append("Watching is off (--no-watch): take snapshots with s on the timeline.\n")
        else:
            t.append("Start snapdeck with a directory (snapdeck ui DIR) to snapshot it.\n")
        t.append(f"\n{app.repo_label}", style="dim")
        return t

    @on(Button.Pressed, "#start")
    def pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if not self.snap_app.dirs:
            return
        self.query_one("#start", Button).disabled = True
        bar = self.query_one(ProgressBar)
        bar.display = True
        self.take_first()

    @work(thread=True, exclusive=True, group="welcome", exit_on_error=False)
    def take_first(self) -> None:
        app = self.snap_app
        for d in app.dirs:
            app.store.create_snapshot(d, options=app.snapshot_options(), progress=_Sink(self))
        self.post_message(FirstSnapshotDone())

    @on(_Progress)
    def progress(self, msg: _Progress) -> None:
        bar = self.query_one(ProgressBar)
        bar.update(total=msg.total, progress=msg.done)

    @on(FirstSnapshotDone)
    def first_done(self) -> None:
        self.snap_app.store_changed()
        self.dismiss()

    def worker_failed(self, worker: object) -> None:
        self.query_one("#start", Button).disabled = False

    def action_skip(self) -> None:
        self.dismiss()
