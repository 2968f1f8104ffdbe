"""The app's screens. ``all_screen_classes()`` lists them (for the keymap's known ids)."""

from __future__ import annotations

from typing import Any


def all_screen_classes() -> list[type[Any]]:
    """Every screen class of the app, the parallel-built ones only when present."""
    from tui.screens.browser import BrowserScreen
    from tui.screens.help import HelpScreen
    from tui.screens.history import HistoryScreen
    from tui.screens.timeline import TimelineScreen
    from tui.screens.welcome import WelcomeScreen
    from tui.widgets.dialogs import ConfirmDialog, InputDialog

    classes: list[type[Any]] = [
        TimelineScreen,
        BrowserScreen,
        HistoryScreen,
        WelcomeScreen,
        HelpScreen,
        ConfirmDialog,
        InputDialog,
    ]
    try:
        from tui.screens.diff import DiffScreen  # type: ignore[import-not-found,unused-ignore]

        classes.append(DiffScreen)
    except Exception:  # not built yet, or mid-edit
        pass
    try:
        from tui.screens.eviction import EvictionScreen  # type: ignore[import-not-found,unused-ignore]

        classes.append(EvictionScreen)
    except Exception:
        pass
    return classes
