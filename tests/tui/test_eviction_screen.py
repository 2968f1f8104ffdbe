"""Pilot tests of the eviction screen on a seeded history: usage and exclusive sizes, editing
the policy in place (the plan follows; bad values are shown, not planned), eviction by size,
the calendar, running the plan after a confirmation, and cancelling a run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input, ProgressBar

from backend.store import Store
from tests.tui.test_diff_screen import ScreenApp, settle
from tests.tui.test_diff_seed import seed_history
from tui.screens.eviction import EvictionScreen, PolicyForm
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.evict_calendar import EvictCalendar
from tui.widgets.evict_plan import EvictPlanList

SIZE = (120, 36)


@pytest.fixture
def history(tmp_path: Path) -> Iterator[Store]:
    store = seed_history(tmp_path / "seed")
    yield store
    store.close()


async def _replan(app: ScreenApp) -> None:
    """Let the input debounce fire, then wait for the plan."""
    import asyncio

    await asyncio.sleep(0.35)
    await settle(app)


def _screen(app: ScreenApp) -> EvictionScreen:
    screen = app.screen
    assert isinstance(screen, EvictionScreen)
    return screen


async def test_usage_plan_and_calendar(history: Store) -> None:
    form = PolicyForm(keep_daily="7", keep_weekly="4")
    app = ScreenApp(lambda: EvictionScreen(history, form=form))
    async with app.run_test(size=SIZE):
        await settle(app)
        screen = _screen(app)
        usage = screen.usage
        assert usage is not None and usage.stats.snapshots == 48
        # Each snapshot holds one file of its own: a few KiB no other snapshot references.
        assert len(usage.exclusive) == 48 and min(usage.exclusive.values()) > 2048
        p = screen.preview
        assert p is not None
        kept = [f for f in p.fates if f.keep]
        assert len(kept) == 11 and len(p.forget_ids) == 37 and not p.evict_ids
        snaps = history.list_snapshots()
        by_id = {f.snapshot.id: f for f in p.fates}
        assert by_id[snaps[0].id].keep and "pinned" in by_id[snaps[0].id].reasons
        assert by_id[snaps[24].id].reasons == ("ref release",)
        assert by_id[snaps[-1].id].reasons[0] == "HEAD"
        assert "daily #1" in by_id[snaps[-1].id].reasons
        assert p.freed > 0 and p.size_after < p.size_before
        status = str(screen.query_one("#evict-status").render())
        assert "Keep 11, remove 37" in status and "keep 7 daily, 4 weekly" in status
        plan = screen.query_one(EvictPlanList)
        assert len(plan.items) == 48 and plan.items[0].snapshot.id == snaps[-1].id  # newest first
        cal = screen.query_one(EvictCalendar)
        newest_day = snaps[-1].time.date()
        assert cal.state(newest_day) == "kept"
        assert {cal.state(d) for d in cal.days} >= {"kept", "removed"}
        assert cal.months(3)[0] == (2025, 3)


async def test_editing_the_policy_changes_the_plan(history: Store) -> None:
    form = PolicyForm(keep_daily="7")
    app = ScreenApp(lambda: EvictionScreen(history, form=form))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = _screen(app)
        assert screen.preview is not None
        before = len(screen.preview.forget_ids)
        # keep-last 30: far fewer snapshots go.
        last = screen.query_one("#evict-keep-last", Input)
        last.focus()
        await pilot.press("3", "0")
        await _replan(app)
        assert screen.form.keep_last == "30"
        assert len(screen.preview.forget_ids) < before
        assert sum(1 for f in screen.preview.fates if f.keep) >= 30
        # A bad duration is reported and marks its input; the last good plan stays.
        good = screen.preview
        within = screen.query_one("#evict-keep-within", Input)
        within.focus()
        await pilot.press("x", "y", "z")
        await _replan(app)
        assert within.has_class("-invalid")
        assert "Cannot plan" in str(screen.query_one("#evict-status").render())
        assert screen.preview is good
        # Fixed: enter plans at once.
        within.value = "10d"
        await pilot.press("enter")
        await settle(app)
        assert not within.has_class("-invalid")
        assert screen.preview is not good
        assert "within 10d" in str(screen.query_one("#evict-status").render())


async def test_size_budget_evicts_least_recently_used_unprotected(history: Store) -> None:
    form = PolicyForm(max_size="500KiB")
    app = ScreenApp(lambda: EvictionScreen(history, form=form))
    async with app.run_test(size=SIZE):
        await settle(app)
        screen = _screen(app)
        p = screen.preview
        assert p is not None and not p.forget_ids and p.evict_ids
        assert p.size_after <= 500 * 1024 < p.size_before
        protected = history.protection()
        assert not set(p.evict_ids) & set(protected)
        gone = [f for f in p.fates if not f.keep]
        assert all(f.removed_by == "eviction" and "over budget" in f.reasons[0] for f in gone)
        # Least recently used first: the oldest (never accessed) go, newer ones stay.
        snaps = history.list_snapshots()
        assert snaps[1].id in p.evict_ids and snaps[-2].id not in p.evict_ids
        assert "budget 500.0 KiB met" in str(screen.query_one("#evict-status").render())


async def test_run_after_confirmation_removes_the_planned_snapshots(history: Store) -> None:
    form = PolicyForm(keep_last="10")
    app = ScreenApp(lambda: EvictionScreen(history, form=form))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = _screen(app)
        planned = set(screen.preview.remove_ids)
        size_before = screen.preview.size_before
        assert len(planned) == 36  # 10 last + pinned + ref; HEAD is the newest
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")  # no: nothing happens
        await settle(app)
        assert len(history.list_snapshots()) == 48
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("y")
        await settle(app)
        assert screen.last_run is not None and not screen.last_run.error
        assert screen.last_run.removed == 36
        left = {s.id for s in history.list_snapshots()}
        assert len(left) == 12 and not left & planned
        assert screen.last_run.size_after < size_before
        # The screen reloaded: the same policy now removes nothing.
        assert screen.preview is not None and not screen.preview.remove_ids
        assert screen.usage is not None and screen.usage.stats.snapshots == 12


async def test_cancel_a_run_leaves_a_valid_repository(history: Store) -> None:
    form = PolicyForm(keep_last="4")
    app = ScreenApp(lambda: EvictionScreen(history, form=form))
    progress: list[int] = []
    async with app.run_test(size=SIZE, message_hook=lambda m: _note(m, progress)) as pilot:
        await settle(app)
        screen = _screen(app)
        screen.step_pause = 0.05
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("y")
        for _ in range(200):
            await pilot.pause(0.02)
            if any(n >= 2 for n in progress):
                break
        assert screen.running
        assert screen.query_one("#evict-run").display
        assert screen.query_one(ProgressBar).total == 42
        await pilot.press("c")
        await settle(app)
        assert screen.last_run is not None and screen.last_run.cancelled
        assert not screen.running and not screen.query_one("#evict-run").display
    left = history.list_snapshots()
    assert 6 < len(left) < 48  # some were forgotten, not all
    # Still a valid repository: every remaining snapshot reads.
    for s in left[:3]:
        assert list(history.ls(s))


def _note(message: object, progress: list[int]) -> None:
    if isinstance(message, EvictionScreen.RunProgressed) and message.label == "forget":
        progress.append(message.done)
