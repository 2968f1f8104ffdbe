"""Pilot tests of the timeline's key paths, over a copy of the demo repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import make_tree
from tests.tui.conftest import SNAP_SIZE, build_app, settle
from tui.screens.browser import BrowserScreen
from tui.screens.history import HistoryScreen
from tui.screens.timeline import TimelineScreen, matches
from tui.widgets.dialogs import ConfirmDialog, InputDialog
from tui.widgets.snapshot_list import SnapshotList


def _list(app) -> SnapshotList:  # type: ignore[no-untyped-def]
    return app.screen.query_one(SnapshotList)


async def test_rows_newest_first_grouped_by_day_and_navigation(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = _list(app)
        items = lst.items
        assert items[0] is None  # a day header first
        snaps = [s for s in items if s is not None]
        assert len(snaps) == 14
        assert [s.time for s in snaps] == sorted((s.time for s in snaps), reverse=True)
        assert sum(1 for s in items if s is None) == 3  # three days
        assert lst.highlighted is snaps[0]
        await pilot.press("down", "down", "down", "down")
        # the cursor skipped the "Yesterday" header
        assert lst.highlighted is snaps[4]
        await pilot.press("up")
        assert lst.highlighted is snaps[3]
        await pilot.press("end")
        assert lst.highlighted is snaps[-1]
        await pilot.press("home")
        assert lst.highlighted is snaps[0]


async def test_filter_by_tag_source_and_text(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        await pilot.press(*"tag:v0")
        await settle(pilot)  # matching runs in a worker
        shown = [s for s in _list(app).items if s is not None]
        assert [s.tags for s in shown] == [("v0.1",)]
        await pilot.press("escape")
        await settle(pilot)
        assert len([s for s in _list(app).items if s is not None]) == 14


def test_matches_words_and_fields(demo_store) -> None:  # type: ignore[no-untyped-def]
    snaps = demo_store.list_snapshots()
    notes = [s for s in snaps if matches(s, "source:notes")]
    assert len(notes) == 2
    assert [s.trigger for s in snaps if matches(s, "trigger:restore")] == ["restore-guard"]
    assert [s.message for s in snaps if matches(s, "release")] == ["release 0.1"]
    assert not [s for s in snaps if matches(s, "tag:milestone source:notes")]


async def test_enter_browses_and_h_opens_history(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        sel = _list(app).highlighted
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)
        assert app.screen.snapshot.id == sel.id
        await pilot.press("escape")
        assert isinstance(app.screen, TimelineScreen)
        await pilot.press("h")
        await settle(pilot)
        assert isinstance(app.screen, HistoryScreen)
        assert app.screen.source == sel.source


async def test_d_diffs_with_parent_and_mark_then_d_diffs_marked_vs_selected(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    opened: list[tuple[str, str | None, str]] = []
    monkeypatch.setattr(
        app, "open_diff", lambda a, b, path="": opened.append((a.id, b.id if b else None, path))
    )
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = _list(app)
        newest = lst.highlighted
        await pilot.press("d")
        assert opened == [(newest.parent, newest.id, "")]
        await pilot.press("m")
        assert lst.marked == newest.id
        await pilot.press("end")
        oldest = lst.highlighted
        await pilot.press("d")
        assert opened[-1] == (oldest.id, newest.id, "")  # older first
        assert lst.marked is None
        await pilot.press("L")
        assert opened[-1] == (oldest.id, None, "")


async def test_d_pushes_the_diff_screen(make_app) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("tui.screens.diff")
    from tui.screens.diff import DiffScreen

    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)


async def test_tag_pin_and_forget_with_confirm(make_app, demo_store) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = _list(app)
        target = lst.highlighted
        # tag
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, InputDialog)
        await pilot.press(*"keep", "enter")
        await settle(pilot)
        assert "keep" in demo_store.get(target.id).tags
        assert "keep" in lst.highlighted.tags  # reloaded live
        # pin, unpin
        await pilot.press("p")
        await settle(pilot)
        assert demo_store.get(target.id).pinned
        assert "pinned" in demo_store.protection()[target.id]
        await pilot.press("p")
        await settle(pilot)
        assert not demo_store.get(target.id).pinned
        # forget: "n" keeps it, "y" forgets it
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await settle(pilot)
        assert target.id in {s.id for s in demo_store.list_snapshots()}
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert target.id not in {s.id for s in demo_store.list_snapshots()}
        assert target.id not in {s.id for s in lst.items if s is not None}


async def test_restore_in_place_takes_a_guard_and_undo_brings_files_back(
    store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "one", "sub": {"b.txt": "two"}})
    first = store.create_snapshot(src).snapshot
    (src / "a.txt").write_text("changed")
    (src / "new.txt").write_text("new")
    store.create_snapshot(src)
    (src / "a.txt").write_text("changed again, unsaved")
    app = build_app(store, tmp_path, dirs=(str(src),))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("end")
        assert _list(app).highlighted.id == first.id
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(pilot)
        assert (src / "a.txt").read_text() == "one"
        assert not (src / "new.txt").exists()
        guards = [s for s in store.list_snapshots() if s.trigger == "restore-guard"]
        assert len(guards) == 1
        assert store.head(str(src)).id == first.id
        await pilot.press("u")
        await settle(pilot)
        assert (src / "a.txt").read_text() == "changed again, unsaved"
        assert (src / "new.txt").read_text() == "new"
        assert os.listdir(src / "sub") == ["b.txt"]


async def test_restore_keeps_excluded_extras(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from backend.config import Config, SnapshotConfig, UiConfig
    from tui.app import SnapApp

    src = tmp_path / "src"
    make_tree(src, {"a.txt": "one"})
    store.create_snapshot(src)
    make_tree(src, {"cache.tmp": "excluded, never in a snapshot"})
    cfg = Config(snapshot=SnapshotConfig(exclude=("*.tmp",)), ui=UiConfig(animation="none"))
    app = SnapApp(store, dirs=[str(src)], config=cfg, watch=False, state_file=tmp_path / "s")
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert "kept     1 extra file" in app.screen.body
        await pilot.press("y")
        await settle(pilot)
    assert (src / "cache.tmp").exists()


async def test_empty_repository_shows_welcome_and_takes_the_first_snapshot(
    store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from tui.screens.welcome import WelcomeScreen

    src = tmp_path / "src"
    make_tree(src, {"hello.txt": "hi"})
    app = build_app(store, tmp_path, dirs=(str(src),))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, WelcomeScreen)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TimelineScreen)
        snaps = [s for s in _list(app).items if s is not None]
        assert len(snaps) == 1 and snaps[0].source == str(src)


async def test_store_errors_become_toasts(make_app, demo_store) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        target = _list(app).highlighted
        demo_store.forget([target.id])
        await pilot.press("t")
        await pilot.pause()
        await pilot.press(*"bad,tag", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TimelineScreen)  # still running, no traceback
        texts = [n.message for n in app._notifications]
        assert any("invalid tag" in t for t in texts), texts
