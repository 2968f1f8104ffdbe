"""Checkpoint history: dirty-path checkpoints, no-change detection, in-place restore, undo, log."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.errors import SnapshotNotFound
from backend.history import log_graph, remove_tracked, render_graph
from backend.model import Snapshot
from backend.snapshots import SnapshotOptions, dirty_tree, scan_live_tree
from backend.store import Store
from tests.conftest import make_tree, read_tree


def _full_tree(store: Store, src: Path, parent: Snapshot) -> str:
    root, _sink = scan_live_tree(store.repo, src, parent=parent)
    return bytes(root).hex()


def test_dirty_tree_shape() -> None:
    t = dirty_tree([b"a/b/c", b"a/d", b"a/b", b"x"])
    assert t == {b"a": {b"b": None, b"d": None}, b"x": None}
    assert dirty_tree([b"a", b""]) is None  # the root itself: a full scan
    assert dirty_tree([b"a/../b"]) is None


@pytest.mark.parametrize(
    "change",
    ["modify", "create_nested", "delete_file", "delete_dir", "rename_dir", "new_dir", "chmod"],
)
def test_dirty_checkpoint_equals_a_full_scan(store: Store, tmp_path: Path, change: str) -> None:
    src = tmp_path / "src"
    make_tree(
        src,
        {
            "top.txt": "top",
            "a": {"b": {"c.txt": "c" * 100, "d.txt": "d"}, "e.txt": "e"},
            "big": {f"f{i}": f"{i}" * i for i in range(50)},
        },
    )
    first = store.checkpoint(src).snapshot
    assert first is not None
    dirty: list[bytes]
    if change == "modify":
        (src / "a/b/c.txt").write_text("changed")
        dirty = [b"a/b/c.txt"]
    elif change == "create_nested":
        (src / "a/b/new.txt").write_text("new")
        dirty = [b"a/b/new.txt"]
    elif change == "delete_file":
        (src / "big/f7").unlink()
        dirty = [b"big/f7"]
    elif change == "delete_dir":
        shutil.rmtree(src / "a/b")
        dirty = [b"a/b/c.txt", b"a/b/d.txt", b"a/b"]
    elif change == "rename_dir":
        (src / "a").rename(src / "z")
        dirty = [b"a", b"z"]
    elif change == "new_dir":
        make_tree(src / "big/sub", {"x": "x", "y": {"z": "z"}})
        dirty = [b"big/sub"]
    else:
        os.chmod(src / "top.txt", 0o600)
        dirty = [b"top.txt"]
    res = store.checkpoint(src, dirty=dirty)
    snap = res.snapshot
    assert snap is not None and snap.parent == first.id
    assert store.head(str(src)) == snap
    assert snap.tree == _full_tree(store, src, first)
    # Totals in dirty mode (the parent's plus what changed) equal a full count.
    full = store.create_snapshot(src, parent=first).snapshot
    assert full.tree == snap.tree
    for k in ("total_files", "total_bytes", "files_removed"):
        assert getattr(snap.stats, k) == getattr(full.stats, k), k


def test_dirty_mode_never_stats_clean_names(store: Store, tmp_path: Path) -> None:
    """A name that is not dirty is taken from the parent even if the disk disagrees: the
    hint is trusted until a full rescan, which then finds the change."""
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", "b.txt": "b"})
    first = store.checkpoint(src).snapshot
    assert first is not None
    (src / "a.txt").write_text("A changed")
    (src / "b.txt").write_text("B changed")
    res = store.checkpoint(src, dirty=[b"b.txt"])
    assert res.snapshot is not None
    assert b"".join(store.read_file(res.snapshot, "a.txt")) == b"a"
    assert b"".join(store.read_file(res.snapshot, "b.txt")) == b"B changed"
    full = store.checkpoint(src).snapshot
    assert full is not None and b"".join(store.read_file(full, "a.txt")) == b"A changed"


def test_no_checkpoint_when_nothing_changed(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", "d": {"x": "x"}})
    first = store.checkpoint(src).snapshot
    assert first is not None
    assert store.checkpoint(src).snapshot is None
    assert store.checkpoint(src, dirty=[b"a.txt", b"d/x"]).snapshot is None
    # Same times set again: only ctime moves. Not a change; HEAD stays.
    st = os.stat(src / "a.txt")
    os.utime(src / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    (src / "d/tmp").write_text("t")
    (src / "d/tmp").unlink()  # the directory's mtime moved: not a change either
    res = store.checkpoint(src, dirty=[b"a.txt", b"d/tmp"])
    assert res.snapshot is None
    assert res.base is not None and res.base.id == first.id and res.base.tree != first.tree
    assert store.head(str(src)) == first
    assert len(store.list_snapshots()) == 1
    # The fresher base is used next time: nothing is read again.
    (src / "new").write_text("n")
    res2 = store.checkpoint(src, dirty=[b"new"], base=res.base)
    assert res2.snapshot is not None and res2.snapshot.parent == first.id
    assert res2.snapshot.stats.bytes_read == 1


def test_in_place_restore_branches_history_and_undo_returns(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "one", "keep.log": "untracked", "d": {"x": "x1"}})
    opts = SnapshotOptions(excludes=("*.log",))
    s1 = store.create_snapshot(src, options=opts).snapshot
    (src / "a.txt").write_text("two")
    (src / "b.txt").write_text("added later")
    shutil.rmtree(src / "d")
    (src / "d").write_text("now a file")
    s2 = store.create_snapshot(src, options=opts).snapshot
    (src / "c.txt").write_text("unsaved edit")  # not in any snapshot: the guard keeps it

    guard, res = store.restore_in_place(s1, options=opts)
    assert guard is not None and guard.trigger == "restore-guard" and guard.parent == s2.id
    assert not res.problems
    tree = read_tree(src)
    assert tree == {b"a.txt": b"one", b"keep.log": b"untracked", b"d": {b"x": b"x1"}}
    assert store.head(str(src)) == s1  # HEAD moved to the restored snapshot

    (src / "a.txt").write_text("branch edit")
    s3 = store.create_snapshot(src, options=opts).snapshot
    assert s3.parent == s1.id  # the history branches at s1

    target, guard2, _res2 = store.undo_restore(str(src), options=opts)
    assert target == guard and guard2 is not None and guard2.parent == s3.id
    assert read_tree(src) == {
        b"a.txt": b"two",
        b"b.txt": b"added later",
        b"c.txt": b"unsaved edit",
        b"d": b"now a file",
        b"keep.log": b"untracked",
    }
    assert store.head(str(src)) == guard
    # Undo again: redo (back to the branch edit).
    store.undo_restore(str(src), options=opts)
    assert (src / "a.txt").read_text() == "branch edit"

    nodes = log_graph(store.list_snapshots(), heads=[h.snapshot for h in store.heads()])
    by_id = {n.snapshot.id: n for n in nodes}
    assert by_id[s1.id].column == 0
    assert len({n.column for n in nodes}) >= 2  # two branches are drawn
    assert any("|/" in c for n in nodes for c in n.connectors)


def test_in_place_restore_keeps_a_repository_inside_the_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": "1"})
    with Store.init(src / ".repo", cache_dir=tmp_path / "cache") as store:
        s1 = store.create_snapshot(src).snapshot
        (src / "a").write_text("2")
        store.create_snapshot(src)
        store.restore_in_place(s1)
        assert (src / "a").read_text() == "1"
        assert len(store.list_snapshots()) == 3  # the repository survived the restore


def test_undo_without_restore_is_not_found(store: Store, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", {"a": "1"})
    store.create_snapshot(tmp_path / "src")
    with pytest.raises(SnapshotNotFound, match="nothing to undo"):
        store.undo_restore(str(tmp_path / "src"))


def test_remove_tracked_never_follows_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make_tree(outside, {"victim": "v"})
    root = tmp_path / "root"
    make_tree(root, {"d": {"f": "f"}, "full": {"kept.log": "x", "gone": "g"}})
    os.symlink(outside, root / "link")
    n, problems = remove_tracked(root, [b"link/victim", b"d/f", b"d", b"full/gone", b"full"])
    assert (outside / "victim").exists()
    assert not (root / "d").exists()
    assert (root / "full/kept.log").exists()  # a directory with untracked files stays
    assert n == 3 and not problems


def _snap(sid: str, parent: str | None, minutes: int, **kw: object) -> Snapshot:
    t = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return Snapshot(id=sid * 8, time=t, host="h", source="/s", tree="00", parent=parent, **kw)  # type: ignore[arg-type]


def test_log_graph_lanes_and_decorations() -> None:
    a = _snap("a", None, 0)
    b = _snap("b", a.id, 1, tags=("v1",))
    g = _snap("c", b.id, 2, trigger="restore-guard")
    d = _snap("d", a.id, 3, pinned=True)
    nodes = log_graph([a, b, g, d], heads=[d.id], refs={"main": b.id})
    lines = [ln.split(" 2026")[0] for ln in render_graph(nodes)]
    assert lines == [
        "* dddddddd (HEAD, pinned)",
        "| * cccccccc",
        "| * bbbbbbbb (ref: main, tag: v1)",
        "|/",
        "* aaaaaaaa",
    ]
    js = nodes[2].to_json()
    assert js["refs"] == ["main"] and js["tags"] == ["v1"] and js["parent"] == a.id
    assert {"id", "parent", "time", "trigger", "refs", "tags", "pinned"} <= set(js)
