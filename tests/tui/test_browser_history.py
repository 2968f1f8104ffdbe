"""Pilot tests of the browser (lazy tree, preview, per-file history, restore with undo) and
the checkpoint graph."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual.widgets import Static, Tree

from backend.model import Entry, EntryKind, Snapshot
from tests.conftest import make_tree
from tests.tui.conftest import SNAP_SIZE, build_app, settle
from tui.screens.browser import BrowserScreen, VersionList, versions_along_graph
from tui.screens.history import HistoryScreen
from tui.widgets.dialogs import ConfirmDialog, RestoreToDialog
from tui.widgets.graph import GraphList, layout


async def _browse_newest_project(app, pilot):  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(app.screen, BrowserScreen)
    return app.screen


def _labels(node) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(c.label).split("  ")[0] for c in node.children]


async def test_lazy_tree_preview_and_versions(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        screen = await _browse_newest_project(app, pilot)
        tree = screen.query_one("#tree", Tree)
        # after the restore of 0.1 the branch has notes.txt again and no data/
        assert _labels(tree.root) == ["src/", "CHANGELOG.md", "README.md", "main.py", "notes.txt"]
        src = tree.root.children[0]
        assert len(src.children) == 0  # not loaded until expanded
        tree.move_cursor(src)
        await pilot.press("space")
        await settle(pilot)
        assert _labels(src) == ["util.py"]
        # README.md: highlighted preview and its history, identical versions collapsed
        tree.move_cursor(tree.root.children[2])
        await settle(pilot)
        preview = screen.query_one("#preview", Static)
        assert isinstance(preview.content, Syntax)
        versions = [v for v in screen.query_one(VersionList).items if v is not None]
        # README changed at 09:12 (v1), 09:40 (v2) and 13:58 (v3): three versions, newest first
        assert [v.entry is not None for v in versions] == [True, True, True]
        assert [v.count for v in versions] == [1, 10, 1]  # 12 project snapshots
        assert versions[0].first.time > versions[1].first.time
        # the binary file (in the other branch): no preview
        logo = next(s for s in app.store.list_snapshots() if s.stats.bytes_added >= 1024)
        app.open_browser(logo)
        await settle(pilot)
        screen = app.screen
        tree = screen.query_one("#tree", Tree)
        data = tree.root.children[0]
        tree.move_cursor(data)
        await pilot.press("space")
        await settle(pilot)
        tree.move_cursor(data.children[0])
        await settle(pilot)
        shown = screen.query_one("#preview", Static).content
        assert isinstance(shown, Text) and "binary file" in shown.plain


async def test_restore_a_file_in_place_and_undo(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    make_tree(src, {"keep.txt": "v1", "other.txt": "untouched"})
    store.create_snapshot(src)
    (src / "keep.txt").write_text("v2 local edit")
    (src / "other.txt").write_text("edited too")
    app = build_app(store, tmp_path, dirs=(str(src),))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        screen = await _browse_newest_project(app, pilot)
        tree = screen.query_one("#tree", Tree)
        tree.move_cursor(tree.root.children[0])  # keep.txt
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert "1 write" in app.screen.body  # the dry-run plan is shown first
        assert (src / "keep.txt").read_text() == "v2 local edit"  # nothing yet
        await pilot.press("y")
        await settle(pilot)
        assert (src / "keep.txt").read_text() == "v1"
        assert (src / "other.txt").read_text() == "edited too"  # only the file
        await pilot.press("u")
        await settle(pilot)
        assert (src / "keep.txt").read_text() == "v2 local edit"


async def test_restore_a_folder_elsewhere_and_undo(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    make_tree(src, {"dir": {"a.txt": "A", "b.txt": "B"}})
    store.create_snapshot(src)
    dest = tmp_path / "elsewhere"
    make_tree(dest, {"dir": {"a.txt": "precious"}})
    app = build_app(store, tmp_path, dirs=(str(src),))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        screen = await _browse_newest_project(app, pilot)
        tree = screen.query_one("#tree", Tree)
        tree.move_cursor(tree.root.children[0])  # dir/
        await settle(pilot)
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, RestoreToDialog)
        await pilot.press(*str(dest), "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(pilot)
        assert (dest / "dir" / "a.txt").read_text() == "A"
        assert (dest / "dir" / "b.txt").read_text() == "B"
        await pilot.press("u")
        await settle(pilot)
        assert (dest / "dir" / "a.txt").read_text() == "precious"
        assert not (dest / "dir" / "b.txt").exists()


def _snap(n: int, parent: int | None) -> Snapshot:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return Snapshot(
        id=f"{n:064x}",
        time=t0 + timedelta(minutes=n),
        host="h",
        source="/src",
        tree="0" * 64,
        parent=None if parent is None else f"{parent:064x}",
    )


def _file(content: str) -> Entry:
    return Entry(
        name=b"f",
        kind=EntryKind.FILE,
        mode=0o644,
        uid=0,
        gid=0,
        mtime_ns=0,
        size=len(content),
        content=(content.encode().ljust(32, b"-"),),  # type: ignore[arg-type]
    )


def test_file_history_follows_the_graph_not_time() -> None:
    """1 (A) → 2 (B) → 4 (B); a restore of 1 then 3 (A) branches from 1 between them in time.
    By time the file looks like A, B, A, B; along the graph it is A (1 and 3) and B (2, 4)."""
    snaps = [_snap(1, None), _snap(2, 1), _snap(3, 1), _snap(4, 2)]
    content = {1: "A", 2: "B", 3: "A", 4: "B"}

    def entry_of(s: Snapshot) -> Entry:
        return _file(content[int(s.id, 16)])

    versions = versions_along_graph(snaps, entry_of)
    assert [(int(v.first.id, 16), v.count) for v in versions] == [(2, 2), (1, 2)]
    b, a = versions
    assert a.ids == {f"{1:064x}", f"{3:064x}"} and b.last.id == f"{4:064x}"
    # a change reverted on one line is three versions (two distinct contents)
    line = [_snap(1, None), _snap(2, 1), _snap(3, 2)]
    content = {1: "A", 2: "B", 3: "A"}
    assert [v.count for v in versions_along_graph(line, entry_of)] == [1, 1, 1]
    # an absent path is a version too
    gone = versions_along_graph(line, lambda s: None if s.id.endswith("2") else entry_of(s))
    assert [v.entry is None for v in gone] == [False, True, False]


async def test_restore_a_file_elsewhere_flat_then_with_folders(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    make_tree(src, {"deep": {"er": {"f.txt": "content"}}})
    store.create_snapshot(src)
    dest = tmp_path / "out"
    make_tree(dest, {"f.txt": "precious"})
    app = build_app(store, tmp_path, dirs=(str(src),))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        screen = await _browse_newest_project(app, pilot)
        for _ in range(2):  # deep/ → er/
            await pilot.press("space")
            await settle(pilot)
            await pilot.press("down")
            await settle(pilot)
        await pilot.press("space")
        await settle(pilot)
        await pilot.press("down")  # f.txt
        await settle(pilot)
        assert screen.current is not None and screen.current.text_path == "deep/er/f.txt"
        # flat (the default for a file): out/f.txt, the dry run first, then undo
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, RestoreToDialog)
        await pilot.press(*str(dest), "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        assert f"as       {dest / 'f.txt'}" in app.screen.body
        assert (dest / "f.txt").read_text() == "precious"  # nothing written yet
        await pilot.press("y")
        await settle(pilot)
        assert (dest / "f.txt").read_text() == "content"
        assert not (dest / "deep").exists()
        await pilot.press("u")
        await settle(pilot)
        assert (dest / "f.txt").read_text() == "precious"
        assert sorted(p.name for p in dest.iterdir()) == ["f.txt"]  # no temp file left
        # keep its folders: out/deep/er/f.txt
        await pilot.press("R")
        await pilot.pause()
        await pilot.press(*str(dest), "tab", "space", "enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settle(pilot)
        assert (dest / "deep" / "er" / "f.txt").read_text() == "content"
        assert (dest / "f.txt").read_text() == "precious"


def test_layout_branches_after_a_restore(demo_store) -> None:  # type: ignore[no-untyped-def]
    snaps = [s for s in demo_store.list_snapshots() if s.source.endswith("project")]
    rows = layout(snaps)
    nodes = [r for r in rows if r.snapshot is not None]
    assert len(nodes) == 12
    # the old line (10:02 … guard) runs in a second lane and joins release 0.1
    guard = next(r for r in nodes if r.snapshot.trigger == "restore-guard")
    assert guard.lane == 1
    connectors = [r for r in rows if r.snapshot is None]
    assert [c.cells for c in connectors] == ["├─┘"]
    release = next(r for r in nodes if "v0.1" in r.snapshot.tags)
    assert rows[rows.index(release) + 1] is connectors[0]


async def test_history_graph_browse_and_diff(make_app, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    opened: list[tuple[str, str | None]] = []
    monkeypatch.setattr(app, "open_diff", lambda a, b, path="": opened.append((a.id, b and b.id)))
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        graph = screen.query_one(GraphList)
        head = graph.highlighted.snapshot
        assert graph.head == head.id  # the newest project checkpoint is HEAD
        await pilot.press("d")
        assert opened == [(head.parent, head.id)]
        await pilot.press("right")  # the other source
        await settle(pilot)
        assert screen.source.endswith("notes")
        await pilot.press("left")
        await settle(pilot)
        assert screen.source.endswith("project")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)
