"""Restore through forked worker processes (``backend/restore_files.py``).

A large restore from a local repository writes its files in worker processes. These tests
force that path on small trees (lower thresholds, small batches) and check that it gives the
same tree as the in-process path, byte for byte, with the same problems and counts; that a
damaged pack, a worker that crashes or dies, a cancel and Ctrl-C each end the way the CLI
promises (one line, the documented exit code, no worker left behind, no half-written file);
and that a small restore never forks.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from backend import restore_files as rf
from backend.errors import Cancelled
from backend.model import RestoreResult, Snapshot
from backend.store import Store
from tests.conftest import isolated_environ, make_tree, read_tree

pytestmark = pytest.mark.skipif(not rf.fork_available(), reason="no fork start method")

REPO_ROOT = Path(__file__).resolve().parents[2]
MTIME = 1_650_000_000_123_456_789
IS_ROOT = os.geteuid() == 0


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every restore forks workers, with small batches; counts how often workers ran."""
    calls = {"processes": 0}
    real = rf._run_processes

    def counting(*a: Any, **kw: Any) -> rf.Outcome:
        calls["processes"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(rf, "_run_processes", counting)
    monkeypatch.setattr(rf, "FORK_MIN_FILES", 0)
    monkeypatch.setattr(rf, "BATCH_FILES", 7)
    monkeypatch.setattr(rf, "SMALL_FILE", 600_000)  # the 1.5 MB files take the streamed path
    return calls


def no_workers_left() -> bool:
    for _ in range(50):
        if not multiprocessing.active_children():
            return True
        time.sleep(0.05)
    return False


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


def build_source(root: Path) -> None:
    """Many small files (some equal, some empty) in nested directories with assorted modes and
    mtimes, files of several blobs, hardlinks, symlinks, a FIFO, xattrs, odd names."""
    rng = random.Random(7)
    modes = [0o644, 0o600, 0o755, 0o444, 0o640, 0o4755, 0o2750]
    shared = rng.randbytes(3000)
    for i in range(240):
        d = root / f"d{i % 9}" / f"s{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        kind = i % 6
        data = b"" if kind == 0 else shared if kind == 1 else rng.randbytes(rng.randint(1, 20_000))
        p = d / f"f{i:03d}"
        p.write_bytes(data)
        os.chmod(p, modes[i % len(modes)])
        os.utime(p, ns=(MTIME, MTIME + i * 1_000_003))
    for k in range(3):  # several blobs each (the chunker's minimum is 256 KiB)
        (root / f"big{k}.bin").write_bytes(rng.randbytes(1_500_000))
    (root / "empty-dir").mkdir()
    odd = os.fsencode(root) + b"/d0/\xff odd\nname"
    with open(odd, "wb") as f:
        f.write(b"not utf-8")
    os.link(root / "d1" / "s1" / "f001", root / "d2" / "hard-a")
    os.link(root / "d1" / "s1" / "f001", root / "hard-b")
    os.symlink("d0/s0/f000", root / "rel-link")
    os.symlink("/nonexistent/target", root / "d3" / "dangling")
    os.mkfifo(root / "fifo")
    if xattrs_supported(root):
        os.setxattr(root / "d4" / "s0" / "f004", "user.note", b"kept")
        os.setxattr(root / "big0.bin", "user.big", b"\x00\x01")
    for d in sorted(root.rglob("*"), reverse=True):
        if d.is_dir() and not d.is_symlink():
            os.chmod(d, 0o750 if d.name.startswith("s1") else 0o755)
            os.utime(d, ns=(MTIME, MTIME - 5_000_000_000))


def capture(root: Path) -> tuple[dict[bytes, tuple[Any, ...]], set[frozenset[bytes]]]:
    """Everything a person would notice, per path; and the hardlink groups."""
    broot = os.fsencode(root)
    out: dict[bytes, tuple[Any, ...]] = {}
    inodes: dict[int, set[bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, broot)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
                continue
            try:
                xattrs = {
                    n: os.getxattr(p, n, follow_symlinks=False)
                    for n in os.listxattr(p, follow_symlinks=False)
                    if n.startswith("user.")
                }
            except OSError:
                xattrs = {}
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, st.st_mtime_ns, xattrs)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("file", mode, st.st_mtime_ns, f.read(), xattrs)
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, set()).add(rel)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode), mode, st.st_mtime_ns)
    return out, {frozenset(g) for g in inodes.values() if len(g) > 1}


@pytest.fixture
def snap(tmp_path: Path, store: Store) -> Snapshot:
    build_source(tmp_path / "src")
    return store.create_snapshot(tmp_path / "src").snapshot


def test_large_restore_through_workers_is_byte_exact(
    tmp_path: Path, store: Store, snap: Snapshot, forced: dict[str, int]
) -> None:
    res = store.restore(snap, tmp_path / "out")
    assert forced["processes"] == 1
    assert res.problems == ()
    assert res.files_restored == 240 + 3 + 1 + 2  # hardlinks count as files
    assert capture(tmp_path / "out") == capture(tmp_path / "src")
    setuid = os.stat(tmp_path / "out" / "d5" / "s1" / "f005").st_mode
    assert not setuid & (stat.S_ISUID | stat.S_ISGID)  # stripped unless asked
    assert no_workers_left()


def test_workers_keep_setuid_when_asked(
    tmp_path: Path, store: Store, forced: dict[str, int]
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"tool": "#!/bin/sh\n", "other": "x"})
    os.chmod(src / "tool", 0o4755)
    snap = store.create_snapshot(src).snapshot
    store.restore(snap, tmp_path / "out", keep_setuid=True)
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "tool").st_mode) == 0o4755
    assert forced["processes"] == 1


def restore_both(
    store: Store,
    snap: Snapshot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepare: Any,
    **kwargs: Any,
) -> tuple[RestoreResult, RestoreResult]:
    """The same restore in this process and through workers, each into a target that
    ``prepare`` filled the same way; returns both results (targets: a/ and b/)."""
    results = []
    for where, fork in (("a", False), ("b", True)):
        target = tmp_path / where
        prepare(target)
        with monkeypatch.context() as m:
            if fork:
                m.setattr(rf, "FORK_MIN_FILES", 0)
                m.setattr(rf, "BATCH_FILES", 5)
            results.append(store.restore(snap, target, **kwargs))
    return results[0], results[1]


@pytest.mark.parametrize("overwrite", ["always", "if-changed", "never"])
@pytest.mark.parametrize("delete", [False, True])
def test_workers_and_in_process_give_the_same_result_over_an_existing_tree(
    tmp_path: Path,
    store: Store,
    snap: Snapshot,
    monkeypatch: pytest.MonkeyPatch,
    overwrite: str,
    delete: bool,
) -> None:
    outside = tmp_path / "outside"
    make_tree(outside, {"victim": "original"})

    def prepare(target: Path) -> None:
        make_tree(
            target,
            {
                "d0": {"s0": {"f000": "stale", "extra": "not in the snapshot"}},
                "d1": "a file where the snapshot has a directory",
                "gone": {"deep": {"x": "y"}},
            },
        )
        # an unchanged copy (if-changed leaves it), and a symlink where a file belongs
        (target / "d2").mkdir()
        (target / "d2" / "s2").mkdir()
        src = tmp_path / "src" / "d2" / "s2" / "f002"
        (target / "d2" / "s2" / "f002").write_bytes(src.read_bytes())
        os.symlink(outside / "victim", target / "d2" / "s2" / "f011")

    a, b = restore_both(
        store, snap, tmp_path, monkeypatch, prepare, overwrite=overwrite, delete=delete
    )
    assert read_tree(outside) == {b"victim": b"original"}
    assert a == b
    assert read_tree(tmp_path / "a") == read_tree(tmp_path / "b")
    if overwrite == "always" and delete:
        assert capture(tmp_path / "b") == capture(tmp_path / "src")
    names = {p.name for p in (tmp_path / "b").rglob("*")}
    assert not any(n.startswith(".snapdeck-tmp") for n in names)


def _flip_a_blob(store: Store, snap: Snapshot, path: str) -> None:
    e = store.entry(snap, path)
    assert e is not None and e.content
    loc = store.repo.locate(e.content[0])
    pack = Path(store.location) / "data" / loc.pack[:2] / loc.pack
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0xFF
    os.chmod(pack, 0o600)
    pack.write_bytes(bytes(raw))


def test_a_damaged_pack_is_the_same_problem_through_workers(
    tmp_path: Path, store: Store, snap: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flip_a_blob(store, snap, "d3/s3/f003")
    _flip_a_blob(store, snap, "big1.bin")  # a streamed file: created, then removed again
    with Store.open(store.location, cache_dir=tmp_path / "c2") as fresh:
        a, b = restore_both(fresh, snap, tmp_path, monkeypatch, lambda t: None)
    assert a == b
    assert sorted(p.path for p in b.problems) == ["big1.bin", "d3/s3/f003"]
    assert all("does not match its id" in p.message or "corrupt" in p.message for p in b.problems)
    assert not (tmp_path / "b" / "d3" / "s3" / "f003").exists()  # never wrong bytes
    assert not (tmp_path / "b" / "big1.bin").exists()
    assert read_tree(tmp_path / "a") == read_tree(tmp_path / "b")


def run_cli(*args: str | os.PathLike[str]) -> Any:
    from tui.cli import cli

    return CliRunner().invoke(cli, [os.fspath(a) for a in args])


def test_a_damaged_pack_through_workers_is_exit_3_with_a_warning_line(
    tmp_path: Path, store: Store, snap: Snapshot, forced: dict[str, int]
) -> None:
    _flip_a_blob(store, snap, "d3/s3/f003")
    res = run_cli("restore", snap.id, "--target", tmp_path / "out", "--repo", store.location)
    assert res.exit_code == 3, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snapdeck: warning: d3/s3/f003: "), lines
    assert forced["processes"] == 1
    assert no_workers_left()


def test_a_worker_that_dies_fails_the_restore_in_one_line_with_exit_1(
    tmp_path: Path, store: Store, snap: Snapshot, forced: dict[str, int], monkeypatch: Any
) -> None:
    real = rf.Writer.write

    def write(self: rf.Writer, i: int) -> bool:
        if self.t.names[i] == b"f100":
            os.kill(os.getpid(), signal.SIGKILL)  # in the worker: killed mid-restore
        return real(self, i)

    monkeypatch.setattr(rf.Writer, "write", write)
    res = run_cli("restore", snap.id, "--target", tmp_path / "out", "--repo", store.location)
    assert res.exit_code == 1, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snapdeck: error: "), lines
    assert "SIGKILL" in lines[0] and "incomplete" in lines[0]
    assert no_workers_left()


def test_a_worker_bug_fails_the_restore_with_its_message(
    tmp_path: Path, store: Store, snap: Snapshot, forced: dict[str, int], monkeypatch: Any
) -> None:
    def meta(self: rf.Writer, fd: int, i: int, d: int) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rf.Writer, "meta", meta)
    with pytest.raises(rf.WorkerFailed, match="RuntimeError: boom") as info:
        store.restore(snap, tmp_path / "out")
    assert "\n" not in str(info.value) and info.value.exit_code == 1
    assert no_workers_left()
    names = [p.name for p in (tmp_path / "out").rglob("*")]
    assert not any(n.startswith(".snapdeck-tmp") for n in names)


class CancelAfter:
    """A progress sink that sets the cancel event once some files are done."""

    def __init__(self, cancel: threading.Event, after: int) -> None:
        self.cancel, self.after, self.done, self.total = cancel, after, 0, 0

    def start(self, total: int | None, label: str) -> None:
        self.total = total or 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self.after:
            self.cancel.set()

    def note(self, msg: str) -> None:
        pass


def assert_only_whole_files(out: Path, src: Path) -> int:
    """Every file in ``out`` equals its source (a cancel never leaves a partial file)."""
    n = 0
    for p in out.rglob("*"):
        assert not p.name.startswith(".snapdeck-tmp"), p
        if p.is_file() and not p.is_symlink():
            assert p.read_bytes() == (src / p.relative_to(out)).read_bytes(), p
            n += 1
    return n


def test_cancel_mid_restore_stops_the_workers_and_leaves_only_whole_files(
    tmp_path: Path, store: Store, snap: Snapshot, forced: dict[str, int], monkeypatch: Any
) -> None:
    real = rf.Writer.run

    def slow_run(self: rf.Writer, lo: int, hi: int, stop: Any) -> Any:
        time.sleep(0.02)  # slow enough that the cancel lands with batches to go
        return real(self, lo, hi, stop)

    monkeypatch.setattr(rf.Writer, "run", slow_run)
    cancel = threading.Event()
    prog = CancelAfter(cancel, 20)
    with pytest.raises(Cancelled):
        store.restore(snap, tmp_path / "out", progress=prog, cancel=cancel)
    assert no_workers_left()
    written = assert_only_whole_files(tmp_path / "out", tmp_path / "src")
    assert 20 <= written < prog.total


SLOW_CLI = textwrap.dedent(
    """
    import sys, time
    import backend.restore_files as rf
    rf.FORK_MIN_FILES = 0
    rf.BATCH_FILES = 2
    real = rf.Writer.run
    def run(self, lo, hi, stop):
        time.sleep(0.05)
        return real(self, lo, hi, stop)
    rf.Writer.run = run
    sys.argv = ["snapdeck", *sys.argv[1:]]
    from tui.cli import main
    main()
    """
)


def test_ctrl_c_mid_restore_exits_130_and_leaves_no_worker(
    tmp_path: Path, store: Store, snap: Snapshot
) -> None:
    env = isolated_environ(tmp_path / "env")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "restore", snap.id, "--target", str(out),
         "--repo", store.location],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until files are being written
            if out.is_dir() and sum(1 for p in out.rglob("f*") if p.is_file()) >= 10:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr.decode().strip().splitlines()[-1] == "snapdeck: interrupted"
    for _ in range(100):  # the workers are gone too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("a restore worker outlived the interrupted restore")
    assert_only_whole_files(out, tmp_path / "src")


def test_a_small_restore_stays_in_process(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a small restore forked workers")

    monkeypatch.setattr(rf, "_run_processes", never)
    src = tmp_path / "src"
    make_tree(src, {f"f{i}": f"content {i}" for i in range(50)})
    snap = store.create_snapshot(src).snapshot
    store.restore(snap, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)


def test_in_place_restore_and_undo_through_workers(
    tmp_path: Path, store: Store, forced: dict[str, int]
) -> None:
    src = tmp_path / "proj"
    make_tree(src, {f"m{i}.txt": f"v1 {i}\n" for i in range(30)} | {"sub": {"a": "1"}})
    v1 = store.create_snapshot(src).snapshot
    at_v1 = read_tree(src)
    make_tree(src, {f"m{i}.txt": f"v2 {i}\n" for i in range(0, 30, 2)} | {"new.txt": "n"})
    before = read_tree(src)
    guard, res = store.restore_in_place(v1)
    assert guard is not None and res.problems == ()
    assert read_tree(src) == at_v1
    store.undo_restore(str(src))
    assert read_tree(src) == before
    assert forced["processes"] >= 2


@pytest.fixture
def big_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rf, "FORK_MIN_FILES", 0)
    yield


def test_include_through_workers_restores_only_that_path(
    tmp_path: Path, store: Store, snap: Snapshot, big_batches: None
) -> None:
    store.restore(snap, tmp_path / "out", includes=["d4/s0"])
    assert sorted(os.listdir(tmp_path / "out")) == ["d4"]
    assert read_tree(tmp_path / "out" / "d4" / "s0") == read_tree(tmp_path / "src" / "d4" / "s0")


@pytest.mark.skipif(not IS_ROOT, reason="owners can only be restored by root")
def test_workers_restore_owners_as_root(
    tmp_path: Path, store: Store, forced: dict[str, int]
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"mine": "a", "theirs": "b", "sub": {"g": "c"}})
    os.chown(src / "theirs", 1234, 5678)
    os.chown(src / "sub" / "g", 0, 4321)
    snap = store.create_snapshot(src).snapshot
    store.restore(snap, tmp_path / "out")
    out = tmp_path / "out"
    assert (os.stat(out / "theirs").st_uid, os.stat(out / "theirs").st_gid) == (1234, 5678)
    assert os.stat(out / "sub" / "g").st_gid == 4321
    assert (os.stat(out / "mine").st_uid, os.stat(out / "mine").st_gid) == (0, 0)


def test_an_encrypted_repository_restores_through_workers(
    tmp_path: Path, forced: dict[str, int]
) -> None:
    from backend.keys import KdfParams

    kdf = KdfParams(memory_kib=64, iterations=1, lanes=1)
    build_source(tmp_path / "src")
    with Store.init(tmp_path / "enc", cache_dir=tmp_path / "c", password="pw", kdf=kdf) as s:
        snap = s.create_snapshot(tmp_path / "src").snapshot
    with Store.open(tmp_path / "enc", cache_dir=tmp_path / "c2", password="pw") as s:
        res = s.restore(snap, tmp_path / "out")
    assert res.problems == () and forced["processes"] == 1
    assert capture(tmp_path / "out") == capture(tmp_path / "src")


def test_a_repository_that_is_not_a_local_directory_restores_in_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"threads": 0}
    real = rf._run_threads

    def counting(*a: Any, **kw: Any) -> rf.Outcome:
        calls["threads"] += 1
        return real(*a, **kw)

    def never(*a: Any, **kw: Any) -> Any:
        raise AssertionError("workers forked for a repository they cannot read by path")

    monkeypatch.setattr(rf, "_run_threads", counting)
    monkeypatch.setattr(rf, "_run_processes", never)
    monkeypatch.setattr(rf, "FORK_MIN_FILES", 0)
    monkeypatch.setattr(rf, "BATCH_FILES", 7)
    monkeypatch.setattr(rf, "SMALL_FILE", 600_000)
    build_source(tmp_path / "src")
    with Store.init("memory://", cache_dir=tmp_path / "c") as s:
        snap = s.create_snapshot(tmp_path / "src").snapshot
        res = s.restore(snap, tmp_path / "out")
    assert res.problems == () and calls["threads"] == 1
    assert capture(tmp_path / "out") == capture(tmp_path / "src")
