"""Locks under faults and concurrency: a lost lock aborts a snapshot, an exclusive operation
during a snapshot refuses (or waits), two snapshots at once both land, and a killed process's
lock is stale at once. Leases run on a ``FixedClock``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.clock import FixedClock
from backend.errors import StoreLocked
from backend.locking import acquire_lock, break_locks
from backend.storage import MemoryStorage
from backend.store import Store
from tests.conftest import isolated_environ, make_tree, read_tree
from tests.test_cli import REPO_ROOT

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Hook:
    """A progress sink that runs ``fn`` once, at the first file."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.done = False

    def start(self, total: int | None, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        if not self.done:
            self.done = True
            self.fn()

    def note(self, msg: str) -> None:
        pass


def spec(n: int) -> dict[str, str]:
    return {f"f{i:03d}": f"file {i} " * 50 for i in range(n)}


def test_a_snapshot_whose_lease_lapses_aborts_and_writes_no_snapshot(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    make_tree(tmp_path / "src", spec(20))
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "c", clock=clock) as st:
        # The lease is 300 s; the (frozen) clock jumps past it while the snapshot runs, as if
        # the process had been suspended and someone else could have broken the lock.
        with pytest.raises(StoreLocked, match="lost the repository lock"):
            st.create_snapshot(tmp_path / "src", progress=Hook(lambda: clock.advance(301)))
        assert list(st.storage.list("snapshots")) == []
        assert list(st.storage.list("locks")) == []  # released on the way out
        clock.advance(1)
        res = st.create_snapshot(tmp_path / "src")  # a retry with a fresh lock works
        assert st.check(read_data=True).ok
        st.restore(res.snapshot, tmp_path / "t")
    assert read_tree(tmp_path / "t") == read_tree(tmp_path / "src")


def test_a_lock_removed_by_someone_else_cancels_the_operation() -> None:
    storage = MemoryStorage()
    lock = acquire_lock(storage, exclusive=False, operation="t", lease_s=0.3, refresh=True)
    ev = lock.cancel_when_lost(None)
    assert not ev.is_set()
    break_locks(storage, all=True)
    assert lock.lost_event.wait(5)
    assert ev.is_set()
    with pytest.raises(StoreLocked, match="removed by someone else"):
        lock.check()
    lock.release()


def test_cancel_when_lost_still_follows_the_user_cancel() -> None:
    storage = MemoryStorage()
    clock = FixedClock(T0)
    user = threading.Event()
    with acquire_lock(storage, exclusive=False, operation="t", clock=clock, refresh=False) as lock:
        ev = lock.cancel_when_lost(user)
        assert not ev.is_set()
        user.set()
        assert ev.is_set()
        lock.check()  # a user cancel is not a lost lock
        clock.advance(301)
        with pytest.raises(StoreLocked):
            lock.check()
        assert lock.lost_event.is_set()


def test_an_exclusive_operation_during_a_snapshot_refuses_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    make_tree(tmp_path / "src", spec(10))
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "c") as st:
        old = st.create_snapshot(tmp_path / "src").snapshot
        make_tree(tmp_path / "src", {"new.txt": "new"})
        seen: list[BaseException] = []

        def prune_now() -> None:
            other = Store.open(tmp_path / "repo", cache_dir=tmp_path / "c2")
            try:
                other.prune()
            except StoreLocked as exc:
                seen.append(exc)
            finally:
                other.close()

        res = st.create_snapshot(tmp_path / "src", progress=Hook(prune_now))
        assert seen and "shared lock" in str(seen[0]) and "snapshot" in str(seen[0])
        assert st.check(read_data=True).ok
        for snap in (old, res.snapshot):
            st.restore(snap, tmp_path / snap.short_id)


def test_an_exclusive_operation_waits_for_the_snapshot_when_asked(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", spec(10))
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "c") as st:
        st.create_snapshot(tmp_path / "src")
        make_tree(tmp_path / "src", {"new.txt": "new"})
        results: list[Any] = []
        started = threading.Event()

        def prune_waiting() -> None:
            other = Store.open(tmp_path / "repo", cache_dir=tmp_path / "c2", lock_wait_s=60)
            try:
                started.set()
                results.append(other.prune())
            finally:
                other.close()

        t = threading.Thread(target=prune_waiting)

        def start_prune() -> None:
            t.start()
            started.wait(5)

        res = st.create_snapshot(tmp_path / "src", progress=Hook(start_prune))
        t.join(60)
        assert results, "prune did not finish after the snapshot released its lock"
        assert st.check(read_data=True).ok  # prune ran after: it kept what the snapshot needs
        st.restore(res.snapshot, tmp_path / "t")
    assert read_tree(tmp_path / "t") == read_tree(tmp_path / "src")


def test_two_snapshot_processes_at_once_both_succeed(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    repo = tmp_path / "repo"
    srcs = [tmp_path / "a", tmp_path / "b"]
    make_tree(srcs[0], {f"x{i}": os.urandom(20_000) for i in range(40)})
    make_tree(srcs[1], {f"y{i}": os.urandom(20_000) for i in range(40)})
    cmd = [sys.executable, "-m", "tui"]
    assert subprocess.run([*cmd, "init", "-r", repo, "-q"], env=env, check=False).returncode == 0
    procs = [
        subprocess.Popen(
            [*cmd, "snapshot", s, "-r", repo, "-q"], env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE
        )
        for s in srcs
    ]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with Store.open(repo, cache_dir=tmp_path / "c") as st:
        assert st.check(read_data=True).ok
        snaps = st.list_snapshots()
        assert sorted(s.source for s in snaps) == sorted(str(s) for s in srcs)
        for s, src in zip(sorted(snaps, key=lambda s: s.source), sorted(srcs), strict=True):
            st.restore(s, tmp_path / "t" / src.name)
            assert read_tree(tmp_path / "t" / src.name) == read_tree(src)


def test_a_killed_snapshot_leaves_a_lock_that_is_stale_at_once(
    tmp_path: Path, isolated_env: Path
) -> None:
    env = isolated_environ(isolated_env)
    repo = tmp_path / "repo"
    make_tree(tmp_path / "src", spec(5))
    cmd = [sys.executable, "-m", "tui"]
    assert subprocess.run([*cmd, "init", "-r", repo, "-q"], env=env, check=False).returncode == 0
    # A process that takes the lock and is killed -9 while holding it.
    code = (
        "import os, signal\n"
        "from backend.store import Store\n"
        f"st = Store.open({str(repo)!r})\n"
        "st.lock(exclusive=True, operation='doomed')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, check=False)
    assert p.returncode == -9
    assert len(list((repo / "locks").iterdir())) == 1
    r = subprocess.run(
        [*cmd, "snapshot", tmp_path / "src", "-r", repo, "-q"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr  # no waiting: a dead pid on this host is stale at once
    assert list((repo / "locks").iterdir()) == []


def test_a_long_lived_store_does_not_dedup_against_what_another_process_pruned(
    tmp_path: Path,
) -> None:
    """The TUI or watch keeps a Store open for hours; a CLI forget + prune meanwhile deletes
    blobs its in-memory index still lists. Its next snapshot must store them again."""
    make_tree(tmp_path / "src", {"x.txt": "the same content " * 200})
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "c") as long_lived:
        first = long_lived.create_snapshot(tmp_path / "src").snapshot
        with Store.open(tmp_path / "repo", cache_dir=tmp_path / "c2") as cli:
            cli.forget([first.id])
            cli.prune()
        (tmp_path / "src" / "x.txt").unlink()  # new inode: not reused from the parent
        make_tree(tmp_path / "src", {"x.txt": "the same content " * 200})
        again = long_lived.create_snapshot(tmp_path / "src", parent=None).snapshot
        assert long_lived.check(read_data=True).ok
        long_lived.restore(again, tmp_path / "t")
    assert read_tree(tmp_path / "t") == read_tree(tmp_path / "src")
