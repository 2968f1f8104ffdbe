"""TUI fixtures: a private copy of the committed demo repository, a frozen clock, UTC, and an
app factory with watching off, no animation and no cursor blink (deterministic screens)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.config import Config, UiConfig
from backend.store import Store
from tui.app import SnapApp
from tui.demo import open_demo_copy

DEMO_DATA = Path(__file__).parent / "data" / "demo-repo"
SNAP_SIZE = (120, 36)
"""The terminal size of every TUI test and screenshot."""


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC, so day grouping, retention buckets and clock times do not depend on
    the machine. (tests/conftest.py keeps pytest-textual-snapshot's TEXTUAL_SNAPSHOT_TEMPDIR.)"""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def demo_store(tmp_path: Path) -> Iterator[Store]:
    """A private, writable copy of the demo repository (frozen clock at ``DEMO_NOW``)."""
    store = open_demo_copy(DEMO_DATA, tmp_path / "demo")
    try:
        yield store
    finally:
        store.close()


def build_app(
    store: Store,
    tmp_path: Path,
    *,
    theme: str = "snapdeck-dark",
    dirs: tuple[str, ...] = (),
    keymap: dict[str, str] | None = None,
) -> SnapApp:
    """The app as tests and screenshots use it."""
    cfg = Config(ui=UiConfig(theme=theme, animation="none", cursor_blink=False))
    if keymap:
        from types import MappingProxyType

        cfg = Config(ui=cfg.ui, keymap=MappingProxyType(keymap))
    app = SnapApp(
        store,
        dirs=dirs,
        config=cfg,
        clock=store.clock,
        watch=False,
        state_file=tmp_path / "state.toml",
        user_theme_dir=tmp_path / "user-themes",
        freeze_gc=False,  # many apps in one test process: nothing made immortal
    )
    app.repo_label = "repo (demo)"  # the real path is a temporary directory
    return app


@pytest.fixture
def make_app(demo_store: Store, tmp_path: Path) -> Callable[..., SnapApp]:
    """``make_app(theme=..., dirs=..., keymap=...)`` over the demo store."""

    def make(**kw: Any) -> SnapApp:
        return build_app(demo_store, tmp_path, **kw)

    return make


async def settle(pilot: Any) -> None:
    """Wait for the app's (non-watch) workers and a refresh."""
    app = pilot.app
    from textual.worker import WorkerCancelled, WorkerFailed

    for _ in range(3):
        try:
            await app.workers.wait_for_complete()
        except (WorkerCancelled, WorkerFailed):  # a reload superseded by a newer one
            pass
        await pilot.pause()
