"""Watch mode and the repository: locks kept between checkpoints, a lost lock, the eviction
sweeper, and in-place restores announced to a watcher in another process."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from backend.clock import FixedClock
from backend.config import EvictConfig
from backend.errors import StoreLocked
from backend.evict import EvictResult
from backend.history import RestoreInProgress
from backend.locking import acquire_lock
from backend.progress import NullProgress
from backend.snapshots import SnapshotOptions
from backend.store import Store
from backend.watch import LOCK_LINGER_S
from tests.backend.test_watch import FAST, REPO_ROOT, Rig, until
from tests.conftest import isolated_environ, make_tree

pytestmark = pytest.mark.slow

WATCH = SnapshotOptions(trigger="watch")
WATCH_CMD = [sys.executable, "-m", "tui", "watch"]


@pytest.fixture
def rig(store: Store, tmp_path: Path) -> Iterator[Rig]:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a"})
    r = Rig(store, src)
    r.w.start()
    r.settle(0.0)
    yield r
    r.w.stop(timeout=10)


class LoseLockOnce(NullProgress):
    """At the first file of an armed run, moves the clock past every lease (as after a
    suspend or a stalled disk) and lets "another process" take the exclusive lock, which
    judges ours stale and removes it, for half a second: the lock is lost in the middle of a
    checkpoint. ``seen`` is what that process saw in ``snapshots/`` while it held the lock."""

    def __init__(self, store: Store, clock: FixedClock) -> None:
        self.store = store
        self.clock = clock
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.released = threading.Event()
        self.seen: list[str] = []

    def advance(self, n: int = 1) -> None:
        if not self.armed.is_set() or self.fired.is_set():
            return
        self.fired.set()
        self.clock.advance(3600)
        other = acquire_lock(
            self.store.storage,
            exclusive=True,
            operation="prune",
            clock=self.clock,
            host="elsewhere",
            pid=1,
            refresh=False,
        )

        def hold() -> None:
            time.sleep(0.5)
            self.seen = sorted(i.name for i in self.store.storage.list("snapshots"))
            other.release()
            self.released.set()

        threading.Thread(target=hold, daemon=True).start()


def test_checkpoint_keeps_its_lock_and_checks_it(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": "0", "d": {"b": "b"}})
    first = store.checkpoint(src, options=WATCH, keep_lock=True)
    assert first.snapshot is not None and store.holds_lock
    held = [info.name for info, _stale in store.locks()]
    assert len(held) == 1
    (src / "a").write_text("1")
    second = store.checkpoint(src, options=WATCH, dirty=[b"a"], base=first.base, keep_lock=True)
    assert second.snapshot is not None
    assert [info.name for info, _stale in store.locks()] == held  # the same lease, reused
    # Someone breaks it ('unlock --all') and a prune takes the exclusive lock: the next
    # checkpoint notices that the held lock is gone and waits like any writer.
    store.unlock(all_locks=True)
    other = acquire_lock(store.storage, exclusive=True, operation="prune", pid=1, host="elsewhere")
    try:
        (src / "a").write_text("2")
        with pytest.raises(StoreLocked):
            store.checkpoint(src, options=WATCH, dirty=[b"a"], base=second.base, keep_lock=True)
        assert not store.holds_lock
        assert store.head(str(src)) == second.snapshot
    finally:
        other.release()
    third = store.checkpoint(src, options=WATCH, dirty=[b"a"], base=second.base, keep_lock=True)
    assert third.snapshot is not None and third.snapshot.parent == second.snapshot.id
    # An exclusive lock in this process releases the held one instead of failing on it.
    store.prune()
    assert not store.holds_lock and store.locks() == []


def test_lost_lock_during_a_watch_checkpoint_saves_nothing(tmp_path: Path) -> None:
    clock = FixedClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    store = Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache", clock=clock)
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", "d": {"b.txt": "b"}})
    prog = LoseLockOnce(store, clock)
    r = Rig(store, src, progress=prog)
    r.w.start()
    try:
        r.settle(0.0)
        start = r.events[0].snapshot
        prog.armed.set()
        (src / "a.txt").write_text("edited while the lock was lost")
        until(prog.released.is_set)
        r.settle()
        # The checkpoint that lost its lock saved nothing while the other process held the
        # exclusive lock; the change was retried under a fresh lock once it was released and
        # landed in exactly one checkpoint, a child of the startup one.
        assert prog.seen == [start.id]
        snaps = store.list_snapshots()
        assert [e.snapshot for e in r.events] == snaps and len(snaps) == 2
        assert snaps[1].parent == start.id
        assert r.content(snaps[1], "a.txt") == b"edited while the lock was lost"
        assert store.head(str(src)) == snaps[1]
        assert store.check().ok
    finally:
        r.w.stop(timeout=10)
        store.close()
    assert store.locks() == []  # stopping released the lease


def test_lock_is_released_when_idle(rig: Rig) -> None:
    (rig.src / "a.txt").write_text("x")
    rig.settle()
    assert rig.store.holds_lock and len(rig.store.locks()) == 1
    until(lambda: rig.store.locks() == [], timeout=LOCK_LINGER_S + 5)
    (rig.src / "a.txt").write_text("y")
    rig.settle()
    assert rig.content(rig.events[-1].snapshot, "a.txt") == b"y"


def test_eviction_sweeper_runs_between_checkpoints(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", "big": os.urandom(50_000)})
    swept: list[EvictResult] = []
    cfg = EvictConfig(max_size="1KiB", max_age="", sweep_in_watch=True, sweep_interval_s=1)
    r = Rig(store, src, FAST, evict=cfg, on_sweep=swept.append)
    r.w.start()
    try:
        r.settle(0.0)
        for i in range(3):
            (src / "big").write_bytes(os.urandom(50_000))
            (src / "a.txt").write_text(str(i))
            r.settle()
        until(lambda: r.w.sweeps >= 1 and len(store.list_snapshots()) == 1, timeout=20)
        removed = {sid for res in swept for sid in res.removed}
        made = [e.snapshot for e in r.events]
        assert len(made) == 4 and removed == {s.id for s in made[:-1]}
        assert store.list_snapshots() == [made[-1]]  # the HEAD is never evicted
        # After the sweep's prune, watching goes on with a valid repository.
        (src / "a.txt").write_text("after the sweep")
        r.settle()
        assert r.content(r.events[-1].snapshot, "a.txt") == b"after the sweep"
        assert r.events[-1].snapshot.parent == made[-1].id
        assert store.check(read_data=True).ok
        assert not r.errors
    finally:
        r.w.stop(timeout=10)


def test_sweeper_is_off_unless_configured(rig: Rig) -> None:
    assert rig.w.evict is None and rig.w.sweeps == 0


def test_checkpoint_refuses_while_a_restore_runs(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": "0"})
    first = store.checkpoint(src, options=WATCH).snapshot
    assert first is not None
    with store.restore_marker(str(src), first.id):
        assert store.restoring(str(src)) is not None
        (src / "a").write_text("half")
        with pytest.raises(RestoreInProgress):
            store.checkpoint(src, options=WATCH)
    assert store.restoring(str(src)) is None
    assert store.checkpoint(src, options=WATCH).snapshot is not None


class WatchProc:
    """``snapdeck watch SRC --json`` as a subprocess; its JSON lines on a queue."""

    def __init__(self, tmp_path: Path, repo: Path, src: Path) -> None:
        env = isolated_environ(tmp_path / "_env") | {"SNAPDECK_REPO": str(repo)}
        self.proc = subprocess.Popen(
            [*WATCH_CMD, str(src), "--json", "--quiet-ms", "50", "--min-interval-s", "0"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, out: IO[str] | None) -> None:
        assert out is not None
        for line in out:
            self.lines.put(json.loads(line))

    def next(self, timeout: float = 20.0) -> dict:
        return self.lines.get(timeout=timeout)

    def quiet_for(self, seconds: float) -> bool:
        try:
            self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def stop(self) -> str:
        self.proc.terminate()
        _out, err = self.proc.communicate(timeout=30)
        return err


def test_watcher_in_another_process_holds_off_during_an_in_place_restore(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "v1", "b.txt": "v1", "d": {"c.txt": "v1"}})
    repo = tmp_path / "repo"
    Store.init(repo).close()
    w = WatchProc(tmp_path, repo, src)
    store = Store.open(repo, cache_dir=tmp_path / "cache")
    try:
        v1 = w.next(timeout=60)["id"]
        (src / "a.txt").write_text("v2")
        (src / "b.txt").write_text("v2")
        (src / "d" / "c.txt").unlink()
        v2 = w.next()
        assert v2["parent"] == v1
        # A restore that writes in two steps, announced by its marker: the watcher sees the
        # events but never checkpoints the half-restored tree, then rescans when it ends.
        with store.restore_marker(str(src), v1):
            (src / "a.txt").write_text("v1")
            assert w.quiet_for(1.0), "checkpointed a half-restored tree"
            (src / "b.txt").write_text("v1")
        after = w.next()
        assert after["full_scan"] and after["parent"] == v2["id"]
        snap = store.get(after["id"])
        assert b"".join(store.read_file(snap, "a.txt")) == b"v1"
        assert b"".join(store.read_file(snap, "b.txt")) == b"v1"
        # A real in-place restore of v1: the watcher takes no checkpoint of its own (the
        # tree equals the new HEAD once it is done), and the next edit branches from v1.
        guard, _res = store.restore_in_place(store.get(v1))
        assert guard is not None and guard.trigger == "restore-guard"
        assert w.quiet_for(1.5), "a watch checkpoint landed during or right after the restore"
        assert store.head(str(src)) is not None and store.head(str(src)).id == v1  # type: ignore[union-attr]
        (src / "a.txt").write_text("v3")
        branched = w.next()
        assert branched["parent"] == v1
        triggers = [s.trigger for s in store.list_snapshots()]
        assert triggers.count("restore-guard") == 1 and "watch" in triggers
    finally:
        err = w.stop()
        store.close()
    assert w.proc.returncode == 0, err
