"""Issue 5, responsiveness: the first paint from the newest page of the catalog, a new
snapshot added as one row (no relisting), backend state shown at most ten times a second,
solid colours for list text (the light theme), and start-up without a CSS re-parse.

The speed itself is measured by ``bench/tui.py``; these tests pin the behaviour the speed
depends on."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from textual.color import Color
from textual.css.stylesheet import Stylesheet

import tui.app as app_mod
from backend.model import Snapshot, SnapshotStats
from backend.store import Store
from tests.conftest import make_tree
from tests.tui.conftest import SNAP_SIZE, build_app, settle
from tui.app import FirstListing, GcPause, Throttle
from tui.messages import CheckpointLanded
from tui.screens.timeline import TimelineScreen
from tui.widgets.snapshot_list import SnapshotList, layout
from tui.widgets.status_bar import StatusBar

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _many(
    store: Store, src: Path, n: int, *, step: timedelta = timedelta(hours=5)
) -> list[Snapshot]:
    """One real snapshot and ``n - 1`` snapshot objects of its tree, ``step`` apart (older)."""
    make_tree(src, {"f.txt": "x"})
    base = store.create_snapshot(src).snapshot
    out = [base]
    for i in range(1, n):
        snap = replace(
            base,
            id="",
            time=base.time - step * i,
            trigger="watch",
            parent=None,
            stats=SnapshotStats(files_changed=i % 3, bytes_added=100 * i),
        )
        out.append(store.repo.save_snapshot(snap))
    store.list_snapshots()  # the catalog has them all (the TUI's next start is "warm")
    return sorted(out, key=lambda s: (s.time, s.id))


# ------------------------------------------------------------------ the catalog's first page


def test_catalog_latest_is_the_newest_page_in_utc_order(store: Store, tmp_path: Path) -> None:
    """``latest(n)`` is the n newest by the instant, even when a time carries another UTC
    offset (its ISO text sorts wrongly as a string), oldest first like ``all``."""
    snaps = _many(store, tmp_path / "src", 8)
    # 2 h after the newest, written with a -05:00 offset: as text it sorts before the rest
    east = replace(
        snaps[-1],
        id="",
        time=(snaps[-1].time + timedelta(hours=2)).astimezone(timezone(timedelta(hours=-5))),
    )
    east = store.repo.save_snapshot(east)
    every = store.list_snapshots()
    assert every[-1].id == east.id
    assert store.catalog.count() == 9
    assert [s.id for s in store.catalog.latest(3)] == [s.id for s in every[-3:]]
    assert [s.id for s in store.catalog.latest(50)] == [s.id for s in every]


def test_first_open_paints_the_newest_before_the_catalog_is_written(
    store: Store, tmp_path: Path
) -> None:
    """No catalog (a first open): the page is the newest snapshots just read, and the
    catalog is written only once the page is painted."""
    want = _many(store, tmp_path / "src", 12)
    fresh = Store.open(store.location, cache_dir=tmp_path / "fresh-cache")
    try:
        first = FirstListing(fresh, page=5)
        page = first.page.result(timeout=30)
        assert [s.id for s in page.snapshots] == [s.id for s in want[-5:]]
        assert page.total == 12 and not page.complete
        time.sleep(0.05)
        assert fresh.catalog.count() == 0  # waiting for the paint
        first.painted.set()
        synced = first.synced.result(timeout=30)
        assert [s.id for s in synced.snapshots] == [s.id for s in want]
        assert fresh.catalog.count() == 12
    finally:
        fresh.close()


async def test_first_paint_is_the_page_then_everything(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a catalog, the timeline shows the newest page first (the oldest day's header says
    it is a lower bound), then every snapshot; the repository's listing, being the same, is
    not laid out a third time."""
    want = _many(store, tmp_path / "src", 12)
    monkeypatch.setattr(app_mod, "PAGE", 5)
    posted: list[tuple[int, int, bool]] = []
    orig = TimelineScreen._post_listing

    def record(self: TimelineScreen, snaps: list[Snapshot], *a: Any, **k: Any) -> None:
        posted.append((len(snaps), a[1], k["final"]))
        orig(self, snaps, *a, **k)

    monkeypatch.setattr(TimelineScreen, "_post_listing", record)
    app = build_app(store, tmp_path)
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = app.screen.query_one(SnapshotList)
        shown = [s.id for s in lst.items if s is not None]
        assert shown == [s.id for s in reversed(want)]
        assert lst.highlighted is not None and lst.highlighted.id == want[-1].id
    assert posted == [(5, 12, False), (12, 12, False)]
    page = layout(want[-5:], want[-1].time, complete=False)
    last_header = page.headers[max(page.headers)]
    assert last_header.partial and not page.complete
    assert all(not h.partial for i, h in page.headers.items() if i != max(page.headers))


# ------------------------------------------------------------------ new snapshots: one row


def test_with_newest_equals_a_full_layout() -> None:
    """Adding the newest snapshot to a layout (same day, a new day, another source) gives the
    rows, headers, volumes and flags that laying out everything again gives."""
    base = Snapshot(
        id="0" * 64, time=T0, host="h", source="/a", tree="t" * 64, stats=SnapshotStats()
    )
    snaps = [
        replace(
            base,
            id=f"{i:064x}",
            time=T0 + timedelta(hours=7 * i),
            stats=SnapshotStats(bytes_added=i * 10, files_new=i % 2),
        )
        for i in range(9)
    ]
    newer = [
        replace(base, id="a" * 64, time=snaps[-1].time + timedelta(minutes=5)),  # same day
        replace(base, id="b" * 64, time=snaps[-1].time + timedelta(days=2), source="/b"),
    ]
    now = T0 + timedelta(days=5)
    lay = layout(snaps, T0)
    have = list(snaps)
    for s in newer:
        got = lay.with_newest(s, now)
        assert got is not None
        have.append(s)
        full = layout(have, now)
        assert got.rows == full.rows
        assert got.headers == full.headers
        assert got.volumes == full.volumes
        assert (got.max_volume, got.show_source) == (full.max_volume, full.show_source)
        lay = got
    assert lay.with_newest(snaps[0], now) is None  # not the newest: the caller relists


async def test_a_checkpoint_is_one_new_row_without_relisting(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A landed checkpoint goes on top with the cursor kept where it was; nothing is listed
    again; the HEAD mark moves (protection is read again in a worker)."""
    src = tmp_path / "src"
    want = _many(store, src, 6, step=timedelta(minutes=3))
    app = build_app(store, tmp_path)
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = app.screen.query_one(SnapshotList)
        await pilot.press("down")
        cursor_on = lst.highlighted
        calls: list[int] = []
        orig = store.list_snapshots

        def counting(*a: Any, **k: Any) -> list[Snapshot]:
            calls.append(1)
            return orig(*a, **k)

        monkeypatch.setattr(store, "list_snapshots", counting)
        (src / "g.txt").write_text("new")
        new = store.create_snapshot(src).snapshot
        app.post_message(CheckpointLanded(new))
        await settle(pilot)
        assert calls == []
        rows = [s for s in lst.items if s is not None]
        assert [s.id for s in rows] == [new.id, *(s.id for s in reversed(want))]
        assert lst.highlighted is cursor_on
        assert "HEAD" in lst.protected.get(new.id, [])
        assert "HEAD" not in lst.protected.get(want[-1].id, [])
        assert "7 snapshots" in str(app.screen.query_one("#title-info").render())
        # thinned checkpoints (or an older snapshot) make it list again
        app.post_message(CheckpointLanded(new, forgotten=(want[0].id,)))
        await settle(pilot)
        assert calls


# ------------------------------------------------------------------ throttled backend state


async def test_throttle_applies_the_latest_value_ten_times_a_second(
    store: Store, tmp_path: Path
) -> None:
    """A backend thread calling ``set`` 20,000 times in 0.3 s costs a handful of applies,
    spaced by the interval, and the last value always arrives."""
    _many(store, tmp_path / "src", 1)
    app = build_app(store, tmp_path)
    applied: list[tuple[float, int]] = []
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        th: Throttle[int] = Throttle(app, lambda v: applied.append((time.monotonic(), v)))

        def hammer() -> None:
            end = time.monotonic() + 0.3
            i = 0
            while time.monotonic() < end or i < 20_000:
                i += 1
                th.set(i)
            th.set(-1)

        t = threading.Thread(target=hammer)
        t.start()
        while t.is_alive():
            await pilot.pause(0.05)
        await pilot.pause(0.3)
    assert applied[-1][1] == -1
    assert 2 <= len(applied) <= 12
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(applied)]
    assert min(gaps) >= 0.09


async def test_progress_of_a_snapshot_shows_in_the_status_bar(store: Store, tmp_path: Path) -> None:
    _many(store, tmp_path / "src", 1)
    app = build_app(store, tmp_path)
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        progress = app.progress("snapshot of ~/src")
        done = threading.Event()

        def run() -> None:
            progress.start(2000, "files")
            for _ in range(2000):
                progress.advance()
            done.set()

        threading.Thread(target=run).start()
        done.wait(10)
        await pilot.pause(0.25)
        bar = app.screen.query_one(StatusBar)
        assert "snapshot of ~/src: 2,000/2,000 files" in str(bar.render())
        app.done_activity()
        await pilot.pause(0.25)
        assert "snapshot of" not in str(bar.render())


async def test_snapshot_now_adds_its_row(store: Store, tmp_path: Path) -> None:
    """``s``: the snapshot runs in a worker with progress, then appears as the newest row
    (and a toast says so)."""
    src = tmp_path / "src"
    _many(store, src, 3)
    (src / "more.txt").write_text("more")
    app = build_app(store, tmp_path, dirs=(str(src),))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        await pilot.pause(0.2)
        lst = app.screen.query_one(SnapshotList)
        rows = [s for s in lst.items if s is not None]
        assert len(rows) == 4
        assert rows[0].stats.files_new == 1 and rows[0].trigger == "manual"
        assert app.activity == ""
        assert any("snapshot" in str(n.message) for n in app._notifications)


# ------------------------------------------------------------------ colours and start-up


def _luminance(c: Color) -> float:
    return (0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b) / 255


@pytest.mark.parametrize("theme", ["snapdeck-light", "snapdeck-dark", "snapdeck-high-contrast"])
async def test_muted_row_text_is_solid_and_readable(
    demo_store: Store, tmp_path: Path, theme: str
) -> None:
    """Muted list text ($text-muted, an auto colour) is resolved against the list's
    background: a grey that is neither the background nor full-strength text (it came out
    near-white, invisible on the light theme). The cursor row always has a text colour."""
    app = build_app(demo_store, tmp_path, theme=theme)
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = app.screen.query_one(SnapshotList)
        bg = lst.background_colors[1]
        muted = lst.component_style("snapshot-list--muted").color
        assert muted is not None
        m = Color.from_rich_color(muted)
        assert abs(_luminance(m) - _luminance(bg)) > 0.25
        cursor = lst._cursor_style(True)
        assert cursor.color is not None and cursor.bgcolor is not None
        assert (
            abs(
                _luminance(Color.from_rich_color(cursor.color))
                - _luminance(Color.from_rich_color(cursor.bgcolor))
            )
            > 0.3
        )


async def test_start_up_parses_the_css_once(
    demo_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choosing the theme before the app runs and the screens' default CSS leave Textual
    nothing to re-parse at start-up (each full re-parse is tens of milliseconds), and the
    light theme still applies."""
    reparses: list[int] = []
    orig = Stylesheet.reparse

    def counting(self: Stylesheet) -> None:
        reparses.append(1)
        orig(self)

    monkeypatch.setattr(Stylesheet, "reparse", counting)
    app = build_app(demo_store, tmp_path, theme="snapdeck-light")
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        assert reparses == []
        assert app.screen.styles.background == Color.parse("#F7F5EF")
        assert app.has_class("-light-mode") and app.has_class("-theme-snapdeck-light")
        await pilot.press("ctrl+t")  # switching later re-parses, as it must
        await settle(pilot)
        assert reparses


def test_gc_pause_is_counted_and_restores_the_collector() -> None:
    """Nested holders (a manual snapshot while a checkpoint runs) keep the collector off
    until the last one ends; a collector that was off stays off."""
    pause = GcPause()
    assert gc.isenabled()
    try:
        with pause:
            assert not gc.isenabled()
            with pause:
                assert pause.active
            assert not gc.isenabled()
        assert gc.isenabled() and not pause.active
        gc.disable()
        with pause:
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_watcher_checkpoints_hold_the_collector_off(store: Store, tmp_path: Path) -> None:
    """The watcher's state callback (its thread, around each checkpoint) holds the pause
    while ``running``; stopping the watcher mid-checkpoint lets it go."""
    _many(store, tmp_path / "src", 1)
    app = build_app(store, tmp_path)

    class State:
        def __init__(self, running: bool) -> None:
            self.running = running
            self.mode = "events"
            self.dirs = ("/x",)
            self.pending = 0
            self.last_checkpoint = None
            self.message = None

    try:
        app._watcher_state_cb(State(True))
        assert not gc.isenabled() and app.gc_pause.active
        app._watcher_state_cb(State(True))  # still running: held once
        app._watcher_state_cb(State(False))
        assert gc.isenabled() and not app.gc_pause.active
        app._watcher_state_cb(State(True))
        app.stop_watching()
        assert gc.isenabled()
    finally:
        gc.enable()
