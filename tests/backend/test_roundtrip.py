"""Snapshot → restore gives back the same tree, and incremental snapshots count correctly.

The property test generates trees with empty, small and (sometimes) multi-chunk files, deep
paths, symlinks (relative, dangling, absolute), names that are not UTF-8 or hold control
characters and markup, several modes, hardlinks, FIFOs and user xattrs; it snapshots them
through the Store facade, restores into a new directory and compares everything a person would
notice: bytes, types, modes (minus setuid/setgid, which restore strips), mtimes, link targets,
hardlink groups and xattrs.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.model import EntryKind
from backend.store import Store
from tests.conftest import Symlink, make_tree

MiB = 1024 * 1024
SETID = stat.S_ISUID | stat.S_ISGID
IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------- capturing a tree


def xattrs_supported(where: Path) -> bool:
    probe = where / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.snapdeck", b"1")
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    finally:
        probe.unlink()


def user_xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names if n.startswith("user.")}


def capture(root: bytes) -> tuple[dict[bytes, tuple[Any, ...]], set[frozenset[bytes]]]:
    """Everything compared, by relative path; plus the hardlink groups (paths sharing an inode)."""
    out: dict[bytes, tuple[Any, ...]] = {}
    inodes: dict[int, set[bytes]] = {}

    def walk(d: bytes, rel: bytes) -> None:
        for name in sorted(os.listdir(d)):
            p = os.path.join(d, name)
            r = rel + b"/" + name if rel else name
            s = os.lstat(p)
            mode = stat.S_IMODE(s.st_mode) & ~SETID
            owner = (s.st_uid, s.st_gid) if IS_ROOT else None
            if stat.S_ISLNK(s.st_mode):
                out[r] = ("l", os.readlink(p), s.st_mtime_ns, owner)
            elif stat.S_ISDIR(s.st_mode):
                walk(p, r)
                out[r] = ("d", mode, s.st_mtime_ns, owner, user_xattrs(p))
            elif stat.S_ISFIFO(s.st_mode):
                out[r] = ("p", mode, s.st_mtime_ns, owner)
            elif stat.S_ISREG(s.st_mode):
                with open(p, "rb") as f:
                    content = f.read()
                out[r] = ("f", mode, s.st_mtime_ns, owner, content, user_xattrs(p))
                inodes.setdefault(s.st_ino, set()).add(r)
            else:
                raise AssertionError(f"unexpected file type at {p!r}")

    walk(root, b"")
    groups = {frozenset(g) for g in inodes.values() if len(g) > 1}
    return out, groups


# ---------------------------------------------------------------- generating a tree

ODD_NAMES = [
    b"\xff",
    b"\xfe\xfd.bin",
    b"new\nline",
    b"tab\there",
    b"esc\x1b[31mred",
    b"[bold]",
    b"[link=x]y[bold red]",
    b"  spaces  ",
    "ünïcødé 日本".encode(),
    b"-rf",
    b".hidden",
    b"back\\slash",
    b"a",
    b"b",
    b"CamelCase",
]
NAME = st.one_of(
    st.sampled_from(ODD_NAMES),
    st.binary(min_size=1, max_size=12).filter(
        lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
    ),
)
FILE_MODES = [0o600, 0o644, 0o755, 0o400, 0o4755, 0o2750, 0o6711]
DIR_MODES = [0o700, 0o755, 0o750]
MTIME = st.integers(min_value=0, max_value=4_000_000_000 * 10**9)


@dataclass
class Plan:
    files: dict[bytes, tuple[int, int, int, int]] = field(default_factory=dict)
    """path → (size, seed, mode, mtime)"""
    dirs: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """path → (mode, mtime)"""
    links: dict[bytes, bytes] = field(default_factory=dict)
    fifos: dict[bytes, int] = field(default_factory=dict)
    hardlinks: dict[bytes, bytes] = field(default_factory=dict)
    """new path → existing file path"""
    xattrs: dict[bytes, dict[str, bytes]] = field(default_factory=dict)
    owners: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    """path → (uid, gid), applied only when the tests run as root"""

    def taken(self, path: bytes) -> bool:
        return any(
            path in m for m in (self.files, self.dirs, self.links, self.fifos, self.hardlinks)
        )


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    plan = Plan()
    big_budget = 12 * MiB
    n = draw(st.integers(min_value=0, max_value=14))
    for _ in range(n):
        depth = draw(st.integers(min_value=0, max_value=7))
        parts = draw(st.lists(NAME, min_size=depth + 1, max_size=depth + 1))
        path = b"/".join(parts)
        parents = [b"/".join(parts[:i]) for i in range(1, len(parts))]
        if any(
            p in plan.files or p in plan.links or p in plan.fifos or p in plan.hardlinks
            for p in parents
        ) or plan.taken(path):
            continue
        for p in parents:
            plan.dirs.setdefault(p, (draw(st.sampled_from(DIR_MODES)), draw(MTIME)))
        kind = draw(st.sampled_from(["file", "file", "file", "link", "fifo", "dir"]))
        if kind == "file":
            size = draw(
                st.one_of(
                    st.just(0),
                    st.integers(1, 300),
                    st.integers(300, 70_000),
                    st.integers(4 * MiB + 1, 5 * MiB),
                )
            )
            if size > big_budget:
                size = 0
            big_budget -= size
            plan.files[path] = (
                size,
                draw(st.integers(0, 2**32)),
                draw(st.sampled_from(FILE_MODES)),
                draw(MTIME),
            )
        elif kind == "link":
            plan.links[path] = draw(
                st.one_of(
                    st.sampled_from([b"nope/dangling", b"/etc/passwd", b"/nonexistent/abs", b".."]),
                    st.sampled_from(ODD_NAMES),
                    st.just(b"../" * depth + b"x"),
                )
            )
        elif kind == "fifo":
            plan.fifos[path] = draw(st.sampled_from([0o600, 0o644, 0o666]))
        else:
            plan.dirs[path] = (draw(st.sampled_from(DIR_MODES)), draw(MTIME))
    # hardlinks to some files, in any existing directory
    files = sorted(plan.files)
    if files:
        for _ in range(draw(st.integers(0, 3))):
            target = draw(st.sampled_from(files))
            where = draw(st.sampled_from([b"", *sorted(plan.dirs)]))
            name = draw(NAME)
            path = where + b"/" + name if where else name
            if not plan.taken(path):
                plan.hardlinks[path] = target
    # user xattrs on some files and directories
    for p in draw(st.lists(st.sampled_from(files or [b""]), max_size=3)):
        if p:
            plan.xattrs[p] = {"user.k": draw(st.binary(max_size=40)), "user.comment": b"x"}
    for p in draw(st.lists(st.sampled_from(sorted(plan.dirs) or [b""]), max_size=2)):
        if p:
            plan.xattrs[p] = {"user.dir": draw(st.binary(min_size=1, max_size=10))}
    # other owners (restored only by root)
    everything = sorted({*plan.files, *plan.dirs, *plan.links, *plan.fifos})
    for p in draw(st.lists(st.sampled_from(everything or [b""]), max_size=3)):
        if p:
            plan.owners[p] = (
                draw(st.sampled_from([0, 1000, 65534])),
                draw(st.sampled_from([0, 100])),
            )
    return plan


def build(root: bytes, plan: Plan, with_xattrs: bool) -> None:
    os.makedirs(root)
    for d in sorted(plan.dirs):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for p, (size, seed, mode, mtime) in plan.files.items():
        full = os.path.join(root, p)
        with open(full, "wb") as f:
            f.write(random.Random(seed).randbytes(size))
        os.chmod(full, mode)
        os.utime(full, ns=(mtime, mtime))
    for p, target in plan.hardlinks.items():
        os.link(os.path.join(root, target), os.path.join(root, p))
    for p, mode in plan.fifos.items():
        os.mkfifo(os.path.join(root, p))
        os.chmod(os.path.join(root, p), mode)
    if with_xattrs:
        for p, xs in plan.xattrs.items():
            for k, v in xs.items():
                os.setxattr(os.path.join(root, p), k, v)
    for p, target in plan.links.items():
        os.symlink(target, os.path.join(root, p))
        os.utime(os.path.join(root, p), ns=(123_456_789, 123_456_789), follow_symlinks=False)
    if IS_ROOT:
        for p, (uid, gid) in plan.owners.items():
            os.chown(os.path.join(root, p), uid, gid, follow_symlinks=False)
        for p, (_size, _seed, mode, _mtime) in plan.files.items():
            os.chmod(os.path.join(root, p), mode)  # chown cleared setuid/setgid
    # directory metadata last, deepest first (creating children changes a directory's mtime)
    for d in sorted(plan.dirs, key=lambda d: -d.count(b"/")):
        mode, mtime = plan.dirs[d]
        os.chmod(os.path.join(root, d), mode)
        os.utime(os.path.join(root, d), ns=(mtime, mtime))


# ---------------------------------------------------------------- the property


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(plan=plans())
def test_snapshot_restore_roundtrip(tmp_path: Path, plan: Plan) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    with_xattrs = xattrs_supported(tmp_path)
    src = os.fsencode(base / "src")
    build(src, plan, with_xattrs)
    want, want_groups = capture(src)

    with Store.init(base / "repo", cache_dir=base / "cache") as store:
        result = store.create_snapshot(os.fsdecode(src))
        assert result.problems == ()
        snap = result.snapshot
        assert snap.stats.total_files == len(plan.files) + len(plan.hardlinks)
        out = base / "out"
        res = store.restore(snap, out)
        assert res.problems == ()
        got, got_groups = capture(os.fsencode(out))
        assert got == want
        assert got_groups == want_groups
        # the snapshot itself records what it saw
        entries = dict(store.ls(snap, recursive=True))
        assert {p for p, e in entries.items() if e.kind is EntryKind.FIFO} == set(plan.fifos)
        assert {p: e.payload for p, e in entries.items() if e.kind is EntryKind.SYMLINK} == {
            p: t for p, t in plan.links.items()
        }
        for p, (_size, _seed, mode, _mtime) in plan.files.items():
            assert entries[p].mode == mode  # setuid is recorded, only restore strips it


# ---------------------------------------------------------------- incremental snapshots

SPEC: dict[str | bytes, Any] = {
    "a.txt": "alpha",
    "b.bin": bytes(range(256)) * 40,
    "empty": b"",
    "sub": {"deep": {"c.txt": "gamma", b"\xff odd": "odd"}, "d.txt": "delta"},
    "link": Symlink("a.txt"),
}
N_FILES = 6


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_tree(root, SPEC)
    return root


def test_unchanged_second_snapshot_reads_nothing(store: Store, src: Path) -> None:
    first = store.create_snapshot(src).snapshot
    assert first.stats.files_new == N_FILES
    second = store.create_snapshot(src).snapshot
    st2 = second.stats
    assert st2.files_unmodified == N_FILES
    assert (st2.files_new, st2.files_changed, st2.files_removed) == (0, 0, 0)
    assert st2.bytes_read == 0
    assert st2.bytes_added == 0
    assert second.tree == first.tree
    assert second.parent == first.id


def test_one_modified_file_is_counted_as_changed(store: Store, src: Path) -> None:
    first = store.create_snapshot(src).snapshot
    target = src / "sub" / "deep" / "c.txt"
    target.write_text("gamma, edited")
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))  # an mtime that surely differs
    second = store.create_snapshot(src).snapshot
    st2 = second.stats
    assert (st2.files_new, st2.files_changed, st2.files_removed) == (0, 1, 0)
    assert st2.files_unmodified == N_FILES - 1
    assert st2.bytes_read == len("gamma, edited")
    assert second.tree != first.tree
    assert b"".join(store.read_file(second, "sub/deep/c.txt")) == b"gamma, edited"
    assert b"".join(store.read_file(first, "sub/deep/c.txt")) == b"gamma"
    changes = store.diff(first, second).changes
    assert [(c.change, c.path) for c in changes] == [("M", b"sub/deep/c.txt")]


def test_same_size_rewrite_with_a_new_mtime_is_detected(store: Store, src: Path) -> None:
    store.create_snapshot(src)
    target = src / "a.txt"
    old = target.stat()
    target.write_text("ALPHA")  # same size
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns + 1))
    st2 = store.create_snapshot(src).snapshot.stats
    assert st2.files_changed == 1


def test_deleted_file_is_counted_as_removed(store: Store, src: Path) -> None:
    store.create_snapshot(src)
    (src / "sub" / "d.txt").unlink()
    st2 = store.create_snapshot(src).snapshot.stats
    assert st2.files_removed == 1
    assert st2.files_unmodified == N_FILES - 1
    assert (st2.files_new, st2.files_changed) == (0, 0)


def test_deleted_directory_counts_every_file_below_it(store: Store, src: Path) -> None:
    store.create_snapshot(src)
    for p in sorted((src / "sub").rglob("*"), key=lambda p: -len(p.parts)):
        p.unlink() if p.is_file() else p.rmdir()
    (src / "sub").rmdir()
    st2 = store.create_snapshot(src).snapshot.stats
    assert st2.files_removed == 3


def test_new_file_is_counted_as_new(store: Store, src: Path) -> None:
    store.create_snapshot(src)
    (src / "sub" / "new.txt").write_text("fresh")
    st2 = store.create_snapshot(src).snapshot.stats
    assert (st2.files_new, st2.files_changed, st2.files_removed) == (1, 0, 0)
    assert st2.bytes_read == 5


def test_unreadable_file_is_reported_and_left_out(
    store: Store, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = os.fsencode(src / "sub" / "deep" / "c.txt")
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsencode(path) == secret:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    result = store.create_snapshot(src)
    monkeypatch.undo()
    assert [(p.path, p.message) for p in result.problems] == [
        ("sub/deep/c.txt", "Permission denied")
    ]
    snap = result.snapshot
    paths = {p for p, _e in store.ls(snap, recursive=True)}
    assert b"sub/deep/c.txt" not in paths
    assert b"sub/deep/\xff odd" in paths
    assert snap.stats.total_files == N_FILES - 1
    assert snap.stats.files_new == N_FILES - 1
    # the next snapshot, with the file readable again, picks it up as new
    again = store.create_snapshot(src).snapshot
    assert again.stats.files_new == 1
    assert b"".join(store.read_file(again, "sub/deep/c.txt")) == b"gamma"


def test_hardlinked_files_are_restored_as_one_inode(
    store: Store, tmp_path: Path, src: Path
) -> None:
    os.link(src / "b.bin", src / "sub" / "b-link")
    snap = store.create_snapshot(src).snapshot
    store.restore(snap, tmp_path / "out")
    a = os.stat(tmp_path / "out" / "b.bin")
    b = os.stat(tmp_path / "out" / "sub" / "b-link")
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert os.stat(tmp_path / "out" / "a.txt").st_nlink == 1


def test_hardlinked_file_content_is_counted_once(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "hl"
    src.mkdir()
    data = random.Random(1).randbytes(100_000)
    (src / "a").write_bytes(data)
    os.link(src / "a", src / "b")
    st = store.create_snapshot(src).snapshot.stats
    assert store.stats().unique_bytes == len(data)
    assert st.bytes_added == len(data)  # bytes_added is "new raw bytes added to the repository"
    assert st.bytes_read == len(data)
