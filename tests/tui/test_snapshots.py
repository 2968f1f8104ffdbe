"""Screenshots of every screen of part A in a dark and a light theme (pytest-textual-snapshot).

Deterministic: the committed demo repository, a frozen clock, UTC, 120x36, no animation, no
cursor blink, workers finished before the shot. Update with ``pytest tests/tui/test_snapshots.py
--snapshot-update`` (serially) after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend.clock import FixedClock
from backend.store import Store
from tests.tui.conftest import SNAP_SIZE, build_app, settle
from tui.demo import DEMO_NOW

THEMES = ["snapdeck-dark", "snapdeck-light"]


@pytest.mark.parametrize("theme", THEMES)
def test_timeline(snap_compare: Any, demo_store: Store, tmp_path: Path, theme: str) -> None:
    """The timeline: three day groups, newest first; HEAD, pinned, ref and tags decorated;
    the change-volume sparkline on top; the selected snapshot's details at the bottom."""
    app = build_app(demo_store, tmp_path, theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=settle, press=["down", "down"])


@pytest.mark.parametrize("theme", THEMES)
def test_timeline_marked_and_filtered(
    snap_compare: Any, demo_store: Store, tmp_path: Path, theme: str
) -> None:
    """A marked snapshot (▶) and the filter box with "source:project" narrowing the list."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("m", "slash", *"source:project")
        await settle(pilot)

    app = build_app(demo_store, tmp_path, theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_browser(snap_compare: Any, demo_store: Store, tmp_path: Path, theme: str) -> None:
    """The browser on the newest snapshot: src/ expanded, util.py previewed with syntax
    highlighting, and its history with identical versions collapsed."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("space")
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)

    app = build_app(demo_store, tmp_path, theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_history(snap_compare: Any, demo_store: Store, tmp_path: Path, theme: str) -> None:
    """The checkpoint graph of the project: the branch left behind by the restore of 0.1
    joins it in a second lane; HEAD, the release ref, tags and the pin are marked."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)

    app = build_app(demo_store, tmp_path, theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_help(snap_compare: Any, demo_store: Store, tmp_path: Path, theme: str) -> None:
    """``?`` over the timeline: every binding with its keymap id."""

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    app = build_app(demo_store, tmp_path, theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=run_before)


@pytest.mark.parametrize("theme", THEMES)
def test_welcome(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    """An empty repository: the welcome screen says what will happen."""
    store = Store.init(tmp_path / "empty", clock=FixedClock(DEMO_NOW))
    try:
        app = build_app(store, tmp_path, theme=theme, dirs=("/tmp/snapdeck-demo/project",))
        app.watch_enabled = True  # say what watching will do…
        app.start_watching = lambda: None  # type: ignore[method-assign]  # …without starting it
        assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=settle)
    finally:
        store.close()
