"""The status bar: repository, watch state (dirs, last checkpoint, pending changes), hints."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.widgets import Static

from tui.formatting import relative_time
from tui.messages import WatchState

if TYPE_CHECKING:
    from tui.app import SnapApp


class StatusBar(Static):
    """One line at the bottom of every screen, fed by the app's ``watch_state`` and
    ``activity`` (both throttled to ten updates a second: a watcher reports every batch of
    file events, a snapshot every file)."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def on_mount(self) -> None:
        from tui.app import SnapApp

        if not isinstance(self.app, SnapApp):  # a screen shown alone (tests): no watch state
            self.display = False
            return
        self.watch(self.app, "watch_state", self._show, init=True)
        self.watch(self.app, "activity", self._activity, init=False)

    def _activity(self, _text: str) -> None:
        self._show(cast("SnapApp", self.app).watch_state)

    def _show(self, state: WatchState | None) -> None:
        app = cast("SnapApp", self.app)
        t = Text(no_wrap=True, overflow="ellipsis")
        if state is None and app.watch_enabled:
            # before the first snapshot (the welcome screen): say what will happen
            n = len(app.dirs)
            t.append("not watching yet", style="bold")
            t.append(f" · watching {n} dir{'s' if n != 1 else ''} starts after the first snapshot")
        elif state is None or state.watching == 0:
            t.append("not watching", style="bold")
            if state is not None and state.note:
                t.append(f" · {state.note}")
        else:
            n = state.watching
            t.append(f"watching {n} dir{'s' if n != 1 else ''}", style="bold")
            if state.busy:
                t.append(" · checkpoint running…")
            if state.last_checkpoint is not None:
                t.append(
                    f" · last checkpoint {relative_time(state.last_checkpoint, app.clock.now())}"
                )
            else:
                t.append(" · no checkpoint yet")
            t.append(f" · {state.pending} pending change{'s' if state.pending != 1 else ''}")
            if state.note:
                t.append(f" · {state.note}")
        if app.activity:
            t.append(f"  │  {app.activity}", style="bold")
        t.append(f"  │  {app.repo_label}")
        self.update(t, layout=False)  # one fixed line: no full-screen layout pass at 10 Hz
