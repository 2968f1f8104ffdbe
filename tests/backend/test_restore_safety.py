"""Restore never writes outside its target, whatever the snapshot or the target holds.

Hostile snapshots are built directly with ``Repository.save_tree`` / ``save_snapshot`` (the
walker would never produce them) and restored through a freshly opened store, so every tree
goes through the decoder as it would for a snapshot received from someone else.
"""

from __future__ import annotations

import io
import os
import signal
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend import restore_files as rf
from backend.errors import IntegrityError, PathNotFound, UnsafeRestore, UsageError
from backend.format import BLOB_DATA
from backend.ids import BlobId
from backend.model import Entry, EntryKind, Snapshot, Tree
from backend.store import Store
from tests.conftest import Symlink, make_tree, read_tree

MTIME = 1_700_000_000_000_000_000
REFUSED = (UnsafeRestore, IntegrityError)
"""How a hostile name may be refused: by restore's own check, or already by the tree decoder."""


class Hostile:
    """Builds snapshots of arbitrary trees in a repository."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.repo = store.repo
        self.n = 0

    def blob(self, data: bytes) -> tuple[BlobId, ...]:
        if not data:
            return ()
        bid = self.repo.hash_blob(data)
        self.repo.put_blob(BLOB_DATA, bid, data)
        return (bid,)

    def file(self, name: bytes, data: bytes, mode: int = 0o644, **kw: Any) -> Entry:
        return Entry(
            name, EntryKind.FILE, mode, 0, 0, MTIME, len(data), content=self.blob(data), **kw
        )

    def tree(self, entries: list[Entry]) -> bytes:
        tid, _ = self.repo.save_tree(Tree(tuple(sorted(entries, key=lambda e: e.name))))
        return bytes(tid)

    def dir(self, name: bytes, entries: list[Entry], mode: int = 0o755) -> Entry:
        return Entry(name, EntryKind.DIR, mode, 0, 0, MTIME, 0, payload=self.tree(entries))

    @staticmethod
    def link(name: bytes, target: str | bytes) -> Entry:
        return Entry(name, EntryKind.SYMLINK, 0o777, 0, 0, MTIME, 0, payload=os.fsencode(target))

    def snapshot(self, entries: list[Entry]) -> Snapshot:
        root = self.tree(entries)
        self.repo.flush()
        self.n += 1
        return self.repo.save_snapshot(
            Snapshot(
                id="",
                time=datetime(2026, 1, 1, 0, 0, self.n, tzinfo=UTC),
                host="hostile",
                source="/hostile",
                tree=root.hex(),
            )
        )


@pytest.fixture(autouse=True, params=["in-process", "workers"])
def writers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every case twice: files written by this process, and by forked worker processes (one
    file per batch, so that even a restore of two files is spread over the workers)."""
    if request.param == "workers":
        if not rf.fork_available():
            pytest.skip("no fork start method here")
        monkeypatch.setattr(rf, "FORK_MIN_FILES", 0)
        monkeypatch.setattr(rf, "BATCH_FILES", 1)
    return str(request.param)


@pytest.fixture
def hostile(store: Store) -> Hostile:
    return Hostile(store)


@pytest.fixture
def fresh(tmp_path: Path, store: Store) -> Iterator[Callable[[], Store]]:
    """Open the same repository anew (after the snapshots are written): trees are decoded
    from their stored bytes, as for a snapshot received from someone else."""
    opened: list[Store] = []

    def _open() -> Store:
        opened.append(Store.open(tmp_path / "repo", cache_dir=tmp_path / "cache-fresh"))
        return opened[-1]

    yield _open
    for s in opened:
        s.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the target that a restore must never touch."""
    d = tmp_path / "outside"
    make_tree(d, {"victim": "original", "sub": {"deep": "deep original"}})
    return d


OUTSIDE_STATE = {
    b"victim": b"original",
    b"sub": {b"deep": b"deep original"},
}


def snapshot_of(tmp_path: Path, store: Store, spec: Mapping[str | bytes, Any]) -> Snapshot:
    src = tmp_path / "src"
    make_tree(src, spec)
    return store.create_snapshot(src).snapshot


def files_below(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ---------------------------------------------------------------- unsafe names

UNSAFE = [b"..", b".", b"", b"a/b", b"x\x00y", b"/abs", b"../../escape"]


@pytest.mark.parametrize("name", UNSAFE, ids=repr)
@pytest.mark.parametrize("where", ["root", "nested"])
def test_unsafe_name_is_refused_and_nothing_is_written(
    tmp_path: Path,
    hostile: Hostile,
    fresh: Callable[[], Store],
    outside: Path,
    name: bytes,
    where: str,
) -> None:
    bad = hostile.file(name, b"pwned")
    if where == "root":
        entries = [bad, hostile.file(b"ok", b"fine")]
    else:
        entries = [hostile.dir(b"sub", [bad]), hostile.file(b"ok", b"fine")]
    snap = hostile.snapshot(entries)
    target = tmp_path / "target"
    for kwargs in ({}, {"dry_run": True}):
        with pytest.raises(REFUSED) as info:
            fresh().restore(snap, target, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(REFUSED):
        fresh().restore_zip(snap, io.BytesIO())
    assert not target.exists()
    assert read_tree(outside) == OUTSIDE_STATE
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["_env", "cache", "cache-fresh", "outside", "repo"]
    )


def test_nested_dotdot_directories_cannot_climb_out(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path
) -> None:
    pwn = hostile.file(b"pwned", b"pwned")
    climb = hostile.dir(b"..", [hostile.dir(b"..", [hostile.dir(b"..", [pwn])])])
    snap = hostile.snapshot([hostile.dir(b"sub", [climb])])
    with pytest.raises(REFUSED):
        fresh().restore(snap, tmp_path / "a" / "b" / "target")
    assert not any(p.name == "pwned" for p in tmp_path.rglob("*"))


def _row(name: bytes, data_id: bytes, **change: Any) -> list[Any]:
    """A file row of a tree blob as the encoder writes it, with fields replaced."""
    row: list[Any] = [name, "f", 0o644, 0, 0, MTIME, 4, [data_id], 1, MTIME, 1, None]
    for k, v in change.items():
        row[int(k[1:])] = v
    return row


CRAFTED_ROWS = {
    "duplicate name": lambda ok: [_row(b"a", ok), _row(b"a", ok)],
    "unsorted names": lambda ok: [_row(b"b", ok), _row(b"a", ok)],
    "dot-dot name": lambda ok: [_row(b"..", ok)],
    "slash in name": lambda ok: [_row(b"x/y", ok)],
    "name not bytes": lambda ok: [_row("a", ok)],  # type: ignore[arg-type]
    "short blob id": lambda ok: [_row(b"a", ok, f7=[ok[:31]])],
    "content not a list": lambda ok: [_row(b"a", ok, f7=ok)],
    "extras not a map": lambda ok: [_row(b"a", ok, f11=[1, 2])],
    "mode not a number": lambda ok: [_row(b"a", ok, f2="rw")],
    "short row": lambda ok: [_row(b"a", ok)[:11]],
}


@pytest.mark.parametrize("craft", list(CRAFTED_ROWS.values()), ids=list(CRAFTED_ROWS))
def test_a_crafted_tree_row_refuses_the_whole_restore(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], craft: Any
) -> None:
    """Rows the encoder never writes (restore checks plain file rows itself, without making
    entries): refused like the tree decoder refuses them, and nothing is written."""
    import msgpack

    from backend.format import BLOB_TREE, FORMAT_VERSION

    ok = bytes(hostile.blob(b"data")[0])
    good = hostile.file(b"zz-good", b"fine")
    rows = [*craft(ok), [good.name, "f", 0o644, 0, 0, MTIME, 4, list(good.content), 1, 0, 1, None]]
    data = msgpack.packb({"v": FORMAT_VERSION, "e": rows}, use_bin_type=True)
    tid = hostile.repo.hash_blob(data)
    hostile.repo.put_blob(BLOB_TREE, tid, data)
    snap = hostile.snapshot([Entry(b"sub", EntryKind.DIR, 0o755, 0, 0, MTIME, 0, payload=tid)])
    target = tmp_path / "target"
    with pytest.raises(REFUSED) as info:
        fresh().restore(snap, target)
    assert "\n" not in str(info.value)
    assert not target.exists() or not any(target.rglob("*"))


def test_unsafe_name_in_an_unselected_subtree_is_still_refused_or_ignored(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store]
) -> None:
    snap = hostile.snapshot(
        [hostile.dir(b"bad", [hostile.file(b"..", b"x")]), hostile.file(b"good", b"g")]
    )
    target = tmp_path / "target"
    try:
        fresh().restore(snap, target, includes=["good"])
    except REFUSED:
        return
    assert read_tree(target) == {b"good": b"g"}


# ---------------------------------------------------------------- symlinks in the target


@pytest.mark.parametrize("overwrite", ["always", "if-changed", "never"])
def test_restored_symlink_then_directory_of_the_same_name_stays_inside(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path, overwrite: str
) -> None:
    target = tmp_path / "target"
    first = hostile.snapshot([hostile.link(b"evil", outside)])
    fresh().restore(first, target)
    assert os.readlink(target / "evil") == str(outside)

    second = hostile.snapshot([hostile.dir(b"evil", [hostile.file(b"passwd", b"root::0:0")])])
    res = fresh().restore(second, target, overwrite=overwrite)
    assert res.problems == ()
    assert read_tree(outside) == OUTSIDE_STATE
    assert not (outside / "passwd").exists()
    assert not (target / "evil").is_symlink()
    assert (target / "evil" / "passwd").read_bytes() == b"root::0:0"


@pytest.mark.parametrize("overwrite", ["always", "if-changed"])
def test_restored_symlink_then_file_of_the_same_name_replaces_the_link(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path, overwrite: str
) -> None:
    target = tmp_path / "target"
    fresh().restore(hostile.snapshot([hostile.link(b"evil", outside / "victim")]), target)
    second = hostile.snapshot([hostile.file(b"evil", b"overwritten?")])
    fresh().restore(second, target, overwrite=overwrite)
    assert read_tree(outside) == OUTSIDE_STATE
    assert not (target / "evil").is_symlink()
    assert (target / "evil").read_bytes() == b"overwritten?"


@pytest.mark.parametrize("overwrite", ["always", "if-changed", "never"])
def test_preexisting_symlink_at_a_file_path_is_never_written_through(
    tmp_path: Path, store: Store, outside: Path, overwrite: str
) -> None:
    snap = snapshot_of(tmp_path, store, {"victim": "from snapshot", "d": {"f": "new"}})
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside / "victim", target / "victim")
    os.symlink(outside / "sub" / "deep", target / "d-placeholder")
    res = store.restore(snap, target, overwrite=overwrite)
    assert read_tree(outside) == OUTSIDE_STATE
    if overwrite != "never":
        assert not (target / "victim").is_symlink()
        assert (target / "victim").read_bytes() == b"from snapshot"
        assert res.problems == ()


@pytest.mark.parametrize("overwrite", ["always", "if-changed", "never"])
def test_preexisting_symlink_at_a_directory_path_is_replaced(
    tmp_path: Path, store: Store, outside: Path, overwrite: str
) -> None:
    snap = snapshot_of(tmp_path, store, {"sub": {"deep": "from snapshot", "new": "n"}})
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside / "sub", target / "sub")
    store.restore(snap, target, overwrite=overwrite)
    assert read_tree(outside) == OUTSIDE_STATE
    assert not (target / "sub").is_symlink()
    assert read_tree(target / "sub") == {b"deep": b"from snapshot", b"new": b"n"}


def test_preexisting_symlink_to_a_directory_at_the_parent_of_a_file(
    tmp_path: Path, store: Store, outside: Path
) -> None:
    snap = snapshot_of(tmp_path, store, {"a": {"b": {"victim": "x"}}})
    target = tmp_path / "target"
    (target / "a").mkdir(parents=True)
    os.symlink(outside, target / "a" / "b")
    store.restore(snap, target, overwrite="if-changed")
    assert read_tree(outside) == OUTSIDE_STATE
    assert (target / "a" / "b" / "victim").read_bytes() == b"x"


def test_symlink_targets_are_restored_verbatim_and_never_followed(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path
) -> None:
    snap = hostile.snapshot(
        [
            hostile.link(b"abs", outside / "victim"),
            hostile.link(b"up", b"../../../../etc/passwd"),
            hostile.link(b"odd", b"\xff\n[bold]"),
        ]
    )
    target = tmp_path / "target"
    fresh().restore(snap, target)
    assert os.readlink(os.fsencode(target / "abs")) == os.fsencode(outside / "victim")
    assert os.readlink(os.fsencode(target / "up")) == b"../../../../etc/passwd"
    assert os.readlink(os.fsencode(target / "odd")) == b"\xff\n[bold]"
    assert read_tree(outside) == OUTSIDE_STATE


# ---------------------------------------------------------------- includes


@pytest.mark.parametrize("include", ["..", "../x", "a/../../x", "a/..", "./../etc"])
def test_include_with_dotdot_is_a_usage_error(tmp_path: Path, store: Store, include: str) -> None:
    snap = snapshot_of(tmp_path, store, {"a": {"x": "1"}})
    with pytest.raises(UsageError):
        store.restore(snap, tmp_path / "target", includes=[include])
    with pytest.raises(UsageError):
        store.restore_zip(snap, io.BytesIO(), includes=[include])
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize("include", ["nope", "a/nope", "a/x/below-a-file"])
def test_include_of_a_missing_path_is_an_error_not_an_empty_restore(
    tmp_path: Path, store: Store, include: str
) -> None:
    snap = snapshot_of(tmp_path, store, {"a": {"x": "1"}})
    with pytest.raises(PathNotFound):
        store.restore(snap, tmp_path / "target", includes=["a", include])
    with pytest.raises(PathNotFound):
        store.restore(snap, tmp_path / "target", includes=[include], dry_run=True)
    with pytest.raises(PathNotFound):
        store.restore_zip(snap, io.BytesIO(), includes=[include])
    assert not (tmp_path / "target").exists()


def test_include_restores_only_that_path(tmp_path: Path, store: Store) -> None:
    snap = snapshot_of(tmp_path, store, {"a": {"x": "1", "y": {"z": "2"}}, "b": "3", "ab": "4"})
    target = tmp_path / "target"
    store.restore(snap, target, includes=["a/y"])
    assert read_tree(target) == {b"a": {b"y": {b"z": b"2"}}}


# ---------------------------------------------------------------- hardlinks


def _hardlinked_pair(h: Hostile, data: bytes, names: tuple[bytes, bytes]) -> list[Entry]:
    extra = {"dev": 64769, "xattrs": {}}
    return [h.file(n, data, ino=777, nlink=2, extra=dict(extra)) for n in names]


def test_hardlink_to_a_file_outside_the_restore_is_not_made(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path
) -> None:
    snap = hostile.snapshot(_hardlinked_pair(hostile, b"snapshot content", (b"a", b"b")))
    target = tmp_path / "target"
    fresh().restore(snap, target, includes=["b"])
    assert read_tree(target) == {b"b": b"snapshot content"}
    assert os.stat(target / "b").st_nlink == 1


def test_hardlink_never_joins_a_preexisting_file_linked_outside(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path
) -> None:
    """target/a already exists and is a hardlink to a file outside; with --overwrite never the
    snapshot's 'b' (hardlinked to 'a' in the snapshot) must not become a third name of it."""
    snap = hostile.snapshot(_hardlinked_pair(hostile, b"snapshot content", (b"a", b"b")))
    target = tmp_path / "target"
    target.mkdir()
    os.link(outside / "victim", target / "a")
    victim = os.stat(outside / "victim")
    fresh().restore(snap, target, overwrite="never")
    assert os.stat(target / "a").st_ino == victim.st_ino  # left alone, as asked
    assert os.stat(target / "b").st_ino != victim.st_ino
    assert os.stat(outside / "victim").st_nlink == 2
    assert (target / "b").read_bytes() == b"snapshot content"
    assert read_tree(outside) == OUTSIDE_STATE
    # if-changed: 'a' differs, so it is replaced by a new file; 'b' joins the new one
    fresh().restore(snap, target, overwrite="if-changed")
    assert os.stat(target / "b").st_ino != victim.st_ino
    assert read_tree(outside) == OUTSIDE_STATE
    assert read_tree(target) == {b"a": b"snapshot content", b"b": b"snapshot content"}


def test_hardlink_group_is_rebuilt_from_files_this_restore_wrote(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store], outside: Path
) -> None:
    snap = hostile.snapshot(_hardlinked_pair(hostile, b"snapshot content", (b"a", b"b")))
    target = tmp_path / "target"
    target.mkdir()
    os.link(outside / "victim", target / "a")
    fresh().restore(snap, target)  # always: 'a' is replaced, then 'b' linked to the new 'a'
    assert read_tree(outside) == OUTSIDE_STATE
    a, b = os.stat(target / "a"), os.stat(target / "b")
    assert a.st_ino == b.st_ino != os.stat(outside / "victim").st_ino
    assert (target / "b").read_bytes() == b"snapshot content"


def test_hardlinked_files_with_overwrite_never_keep_existing_names(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store]
) -> None:
    snap = hostile.snapshot(_hardlinked_pair(hostile, b"snap", (b"a", b"b")))
    target = tmp_path / "target"
    make_tree(target, {"b": "mine"})
    fresh().restore(snap, target, overwrite="never")
    assert read_tree(target) == {b"a": b"snap", b"b": b"mine"}


# ---------------------------------------------------------------- --delete


def test_delete_removes_only_extras_inside_the_target_without_following_links(
    tmp_path: Path, store: Store, outside: Path
) -> None:
    snap = snapshot_of(tmp_path, store, {"keep": {"k": "k"}, "top": "t"})
    target = tmp_path / "target"
    make_tree(
        target,
        {
            "extra-file": "x",
            "extra-dir": {"nested": {"n": "n"}},
            "keep": {"k": "old", "extra-in-keep": "x", "link-dir": Symlink(outside)},
            "link-to-outside-dir": Symlink(outside / "sub"),
            "link-to-outside-file": Symlink(outside / "victim"),
            "dangling": Symlink("nowhere"),
        },
    )
    res = store.restore(snap, target, delete=True)
    assert read_tree(target) == {b"keep": {b"k": b"k"}, b"top": b"t"}
    assert res.files_deleted == 7
    assert read_tree(outside) == OUTSIDE_STATE


def test_delete_with_include_only_deletes_inside_the_included_path(
    tmp_path: Path, store: Store
) -> None:
    snap = snapshot_of(tmp_path, store, {"docs": {"d": "d"}, "top": "t"})
    target = tmp_path / "target"
    make_tree(target, {"mine.txt": "precious", "docs": {"extra": "x"}, "other": {"o": "o"}})
    plan = store.restore(snap, target, includes=["docs"], delete=True, dry_run=True)
    assert ("delete", "docs/extra") in plan.actions
    assert not any(p in ("mine.txt", "other") for a, p in plan.actions if a == "delete")
    store.restore(snap, target, includes=["docs"], delete=True)
    assert read_tree(target) == {
        b"mine.txt": b"precious",
        b"docs": {b"d": b"d"},
        b"other": {b"o": b"o"},
    }


# ---------------------------------------------------------------- --overwrite


def test_overwrite_never_keeps_existing_files_and_adds_missing_ones(
    tmp_path: Path, store: Store
) -> None:
    snap = snapshot_of(tmp_path, store, {"a": "snap-a", "b": "snap-b"})
    target = tmp_path / "target"
    make_tree(target, {"a": "mine"})
    res = store.restore(snap, target, overwrite="never")
    assert read_tree(target) == {b"a": b"mine", b"b": b"snap-b"}
    assert (res.files_restored, res.files_skipped) == (1, 1)


def test_overwrite_if_changed_leaves_identical_files_untouched(
    tmp_path: Path, store: Store
) -> None:
    snap = snapshot_of(tmp_path, store, {"same": "same" * 1000, "diff": "snapshot", "new": "n"})
    target = tmp_path / "target"
    make_tree(target, {"same": "same" * 1000, "diff": "mine!"})
    same_ino = os.stat(target / "same").st_ino
    res = store.restore(snap, target, overwrite="if-changed")
    assert os.stat(target / "same").st_ino == same_ino
    assert read_tree(target) == {b"same": b"same" * 1000, b"diff": b"snapshot", b"new": b"n"}
    assert (res.files_restored, res.files_skipped) == (2, 1)
    # the untouched file still gets the snapshot's metadata
    src_mtime = os.stat(tmp_path / "src" / "same").st_mtime_ns
    assert os.stat(target / "same").st_mtime_ns == src_mtime


def test_overwrite_always_rewrites_existing_files(tmp_path: Path, store: Store) -> None:
    snap = snapshot_of(tmp_path, store, {"a": "snap-a"})
    target = tmp_path / "target"
    make_tree(target, {"a": "mine"})
    store.restore(snap, target, overwrite="always")
    assert read_tree(target) == {b"a": b"snap-a"}


def test_bad_overwrite_mode_is_a_usage_error(tmp_path: Path, store: Store) -> None:
    snap = snapshot_of(tmp_path, store, {"a": "a"})
    with pytest.raises(UsageError):
        store.restore(snap, tmp_path / "t", overwrite="sometimes")


# ---------------------------------------------------------------- --dry-run


def test_dry_run_writes_nothing(tmp_path: Path, store: Store) -> None:
    snap = snapshot_of(tmp_path, store, {"a": "A", "d": {"f": "F"}, "l": Symlink("a"), "same": "S"})
    target = tmp_path / "target"
    res = store.restore(snap, target, dry_run=True)
    assert not target.exists()
    assert res.dry_run and res.files_restored == 3
    assert set(res.actions) >= {("write", "a"), ("mkdir", "d"), ("write", "d/f"), ("link", "l")}

    make_tree(target, {"a": "old", "same": "S", "extra": "E"})
    before = read_tree(target)
    before_stat = {p: os.lstat(target / p) for p in ("a", "same", "extra")}
    res = store.restore(snap, target, dry_run=True, overwrite="if-changed", delete=True)
    assert read_tree(target) == before
    assert {p: os.lstat(target / p) for p in before_stat} == before_stat
    assert set(res.actions) >= {
        ("write", "a"),
        ("skip", "same"),
        ("delete", "extra"),
        ("write", "d/f"),
    }


class Hung(BaseException):
    """Raised by the alarm (not an OSError, which the code under test might swallow)."""


@pytest.fixture
def alarm() -> Iterator[None]:
    """Turn a hang into a failure."""

    def boom(*_: Any) -> None:
        raise Hung("restore hung (opened a FIFO?)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("dry_run", [True, False])
def test_fifo_where_the_snapshot_has_a_file_does_not_hang(
    tmp_path: Path, store: Store, alarm: None, dry_run: bool
) -> None:
    snap = snapshot_of(tmp_path, store, {"f": "content"})
    target = tmp_path / "target"
    target.mkdir()
    os.mkfifo(target / "f")
    res = store.restore(snap, target, overwrite="if-changed", dry_run=dry_run)
    if dry_run:
        assert res.actions == (("write", "f"),)
        assert stat.S_ISFIFO(os.lstat(target / "f").st_mode)
    else:
        assert (target / "f").read_bytes() == b"content"


def test_dry_run_does_not_look_through_a_symlinked_directory(
    tmp_path: Path, store: Store, outside: Path
) -> None:
    snap = snapshot_of(tmp_path, store, {"sub": {"deep": "deep original"}})
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside / "sub", target / "sub")
    res = store.restore(snap, target, dry_run=True, overwrite="if-changed")
    # a real restore replaces the link with a directory and writes the file
    assert set(res.actions) == {("mkdir", "sub"), ("write", "sub/deep")}
    res = store.restore(snap, target, overwrite="if-changed")
    assert res.files_restored == 1
    assert read_tree(outside) == OUTSIDE_STATE


# ---------------------------------------------------------------- specials and modes


def test_setuid_is_stripped_unless_asked(tmp_path: Path, store: Store) -> None:
    snap = snapshot_of(tmp_path, store, {"tool": "#!/bin/sh\n", "dir": {"x": "x"}})
    os.chmod(tmp_path / "src" / "tool", 0o6755)
    os.chmod(tmp_path / "src" / "dir", 0o2775)
    snap = store.create_snapshot(tmp_path / "src").snapshot
    store.restore(snap, tmp_path / "plain")
    assert stat.S_IMODE(os.stat(tmp_path / "plain" / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "plain" / "dir").st_mode) == 0o775
    store.restore(snap, tmp_path / "kept", keep_setuid=True)
    assert stat.S_IMODE(os.stat(tmp_path / "kept" / "tool").st_mode) == 0o6755


def test_device_entries_are_not_created(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store]
) -> None:
    dev = Entry(b"sda", EntryKind.BLOCKDEV, 0o666, 0, 0, MTIME, 0, payload=os.makedev(8, 0))
    snap = hostile.snapshot([dev, hostile.file(b"ok", b"ok")])
    target = tmp_path / "target"
    res = fresh().restore(snap, target)
    assert not os.path.lexists(target / "sda")
    assert [p.path for p in res.problems] == ["sda"]
    assert (target / "ok").read_bytes() == b"ok"


def test_file_whose_content_does_not_match_its_size_is_not_left_behind(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store]
) -> None:
    lying = Entry(b"liar", EntryKind.FILE, 0o644, 0, 0, MTIME, 999, content=hostile.blob(b"short"))
    snap = hostile.snapshot([lying])
    target = tmp_path / "target"
    res = fresh().restore(snap, target)
    assert [p.path for p in res.problems] == ["liar"]
    assert os.listdir(target) == []


def test_values_beyond_64_bits_are_a_problem_of_that_file_not_a_crash(
    tmp_path: Path, hostile: Hostile, fresh: Callable[[], Store]
) -> None:
    late = Entry(b"late", EntryKind.FILE, 0o644, 0, 0, 2**64 - 1, 1, content=hostile.blob(b"l"))
    odd = Entry(b"odd", EntryKind.FILE, 2**40, 0, 0, MTIME, 1, content=hostile.blob(b"o"))
    snap = hostile.snapshot([late, odd, hostile.file(b"ok", b"fine")])
    target = tmp_path / "target"
    res = fresh().restore(snap, target)
    assert [p.path for p in res.problems] == ["odd"]
    assert "\n" not in res.problems[0].message
    assert read_tree(target) == {b"late": b"l", b"ok": b"fine"}


# ---------------------------------------------------------------- zip


def test_zip_roundtrips_contents_and_names(tmp_path: Path, store: Store) -> None:
    spec = {
        "plain.txt": "plain",
        "new\nline": "nl",
        "[bold]": "markup",
        "ünï cødé": "u",
        "d": {"e": {"f.bin": bytes(range(256)) * 100}, "empty": b""},
        "link": Symlink("plain.txt"),
    }
    snap = snapshot_of(tmp_path, store, spec)
    buf = io.BytesIO()
    res = store.restore_zip(snap, buf)
    assert res.problems == ()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {
            "plain.txt",
            "new\nline",
            "[bold]",
            "ünï cødé",
            "d/",
            "d/e/",
            "d/e/f.bin",
            "d/empty",
            "link",
        }
        assert zf.read("d/e/f.bin") == bytes(range(256)) * 100
        assert zf.read("new\nline") == b"nl"
        assert zf.read("ünï cødé") == b"u"
        link = zf.getinfo("link")
        assert stat.S_ISLNK(link.external_attr >> 16)
        assert zf.read("link") == b"plain.txt"
    assert res.files_restored == 6


def test_zip_with_a_non_utf8_name_reports_it_instead_of_crashing(
    tmp_path: Path, store: Store
) -> None:
    snap = snapshot_of(tmp_path, store, {b"bad\xff": "x", "good": "g"})
    buf = io.BytesIO()
    res = store.restore_zip(snap, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert zf.read("good") == b"g"
        assert len(zf.namelist()) == 2
    assert [p.path for p in res.problems] == ["bad\\xff"]


def test_zip_with_include_only_holds_that_path(tmp_path: Path, store: Store) -> None:
    snap = snapshot_of(tmp_path, store, {"a": {"x": "1"}, "b": "2"})
    buf = io.BytesIO()
    store.restore_zip(snap, buf, includes=["a"])
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert set(zf.namelist()) == {"a/", "a/x"}
