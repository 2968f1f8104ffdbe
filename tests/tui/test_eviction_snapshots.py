"""Screenshots of the eviction screen (seeded history, fixed size, built-in dark and light
themes, UTC). Regenerate with ``pytest tests/tui/test_eviction_snapshots.py --snapshot-update``
(serially)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.test_diff_screen import ScreenApp, settle
from tests.tui.test_diff_seed import seed_history
from tui.screens.eviction import EvictionScreen, PolicyForm

SNAP_SIZE = (120, 36)
_SNAPSHOT_TEMPDIR = os.environ.get("TEXTUAL_SNAPSHOT_TEMPDIR")
"""Set by pytest-textual-snapshot at session start; tests/conftest.py's isolation removes every
TEXTUAL* variable per test, so it is put back for these tests."""


@pytest.fixture(autouse=True)
def snapshot_tempdir(monkeypatch: pytest.MonkeyPatch) -> None:
    if _SNAPSHOT_TEMPDIR is not None:
        monkeypatch.setenv("TEXTUAL_SNAPSHOT_TEMPDIR", _SNAPSHOT_TEMPDIR)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Days, weeks and times in UTC, whatever the machine's zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


async def _ready(pilot: Pilot[None]) -> None:
    await settle(pilot.app)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_plan_with_budget(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    """Usage bar, the policy inputs (7 daily, 4 weekly, 700KiB budget), the plan with keep /
    drop, exclusive-size bars and reasons (HEAD, pinned, ref, daily #n, over budget), and the
    calendar of March and February 2025."""
    store = seed_history(tmp_path / "seed")
    form = PolicyForm(keep_daily="7", keep_weekly="4", max_size="700KiB", max_age="")
    app = ScreenApp(lambda: EvictionScreen(store, form=form), theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=_ready)
