"""Screenshots of the eviction screen (seeded history, fixed size, built-in dark and light
themes, UTC). Regenerate with ``pytest tests/tui/test_eviction_snapshots.py --snapshot-update``
(serially)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Footer

from tests.tui.test_diff_screen import ScreenApp, settle
from tests.tui.test_diff_seed import seed_history
from tui.screens.eviction import EvictionScreen, PolicyForm

SNAP_SIZE = (120, 36)


async def _ready(pilot: Pilot[None]) -> None:
    await settle(pilot.app)
    # the footer fills its keys in a later refresh (late on a busy machine): wait for it
    footer = pilot.app.screen.query_one(Footer)
    for _ in range(100):
        if footer.children:
            break
        await pilot.pause(0.05)
    await pilot.pause()


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_plan_with_budget(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    """Usage bar, the policy inputs (7 daily, 4 weekly, 700KiB budget), the plan with keep /
    drop, exclusive-size bars and reasons (HEAD, pinned, ref, daily #n, over budget), and the
    calendar of March and February 2025."""
    store = seed_history(tmp_path / "seed")
    form = PolicyForm(keep_daily="7", keep_weekly="4", max_size="700KiB", max_age="")
    app = ScreenApp(lambda: EvictionScreen(store, form=form), theme=theme)
    assert snap_compare(app, terminal_size=SNAP_SIZE, run_before=_ready)
