"""Repository locks: shared/exclusive semantics, staleness, leases, races."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.clock import FixedClock
from backend.errors import StoreError, StoreLocked, UsageError
from backend.locking import (
    UNREADABLE,
    LockInfo,
    RepositoryLock,
    acquire_lock,
    break_locks,
    list_locks,
    process_alive,
)
from backend.storage import LocalStorage, MemoryStorage, ObjectInfo, ObjectStorage

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def everyone_alive(pid: int) -> bool:
    return True


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


def lock_names(storage: ObjectStorage) -> set[str]:
    return {info.name for info in storage.list("locks")}


def take(
    storage: ObjectStorage,
    *,
    exclusive: bool,
    operation: str = "test",
    host: str = "here",
    pid: int = 100,
    **kwargs: object,
) -> RepositoryLock:
    """A lock without a refresh thread, with every pid alive unless told otherwise."""
    kwargs.setdefault("refresh", False)
    kwargs.setdefault("pid_alive", everyone_alive)
    return acquire_lock(
        storage,
        exclusive=exclusive,
        operation=operation,
        host=host,
        pid=pid,
        **kwargs,  # type: ignore[arg-type]
    )


def test_lock_info_round_trip() -> None:
    info = LockInfo("ab12", "host-1", 42, True, T0, T0.replace(hour=13), "prune")
    assert LockInfo.from_json("ab12", info.to_json()) == info
    for bad in [b"", b"garbage\xff", b"[]", b'{"host": "h"}', b'{"pid": true}']:
        with pytest.raises(ValueError):
            LockInfo.from_json("x", bad)


def test_shared_locks_coexist(storage: MemoryStorage) -> None:
    with take(storage, exclusive=False, pid=1) as a, take(storage, exclusive=False, pid=2) as b:
        assert lock_names(storage) == {a.name, b.name}
    assert lock_names(storage) == set()


def test_exclusive_blocks_shared(storage: MemoryStorage) -> None:
    with (
        take(storage, exclusive=True, operation="prune", host="box", pid=4242),
        pytest.raises(StoreLocked) as info,
    ):
        take(storage, exclusive=False, operation="snapshot", pid=7)
    message = str(info.value)
    assert "\n" not in message
    assert "pid 4242" in message
    assert "box" in message
    assert "prune" in message
    assert "exclusive" in message
    assert "since" in message
    assert "run 'snapdeck unlock' if that process is gone" in message
    assert info.value.exit_code == 12
    assert lock_names(storage) == set()  # the loser cleaned up after itself


def test_shared_blocks_exclusive(storage: MemoryStorage) -> None:
    with take(storage, exclusive=False, operation="snapshot", pid=55) as held:
        with pytest.raises(StoreLocked, match=r"pid 55 .*\(snapshot\)"):
            take(storage, exclusive=True, operation="prune", pid=66)
        assert lock_names(storage) == {held.name}


def test_exclusive_blocks_exclusive(storage: MemoryStorage) -> None:
    with take(storage, exclusive=True, pid=1), pytest.raises(StoreLocked):
        take(storage, exclusive=True, pid=2)


def test_dead_pid_on_same_host_is_stale_at_once(storage: MemoryStorage) -> None:
    crashed = take(storage, exclusive=True, host="here", pid=999)
    alive = {100}
    with take(storage, exclusive=True, host="here", pid=100, pid_alive=alive.__contains__) as mine:
        assert lock_names(storage) == {mine.name}  # the dead one was removed
    assert crashed.name not in lock_names(storage)


def test_dead_looking_pid_on_other_host_is_not_stale(storage: MemoryStorage) -> None:
    take(storage, exclusive=True, host="elsewhere", pid=999)
    with pytest.raises(StoreLocked, match="elsewhere"):
        take(storage, exclusive=False, host="here", pid_alive=lambda pid: False)


def test_other_host_lock_is_stale_only_after_its_lease(storage: MemoryStorage) -> None:
    clock = FixedClock(T0)
    take(storage, exclusive=True, host="elsewhere", clock=clock, lease_s=60)
    clock.advance(59)
    with pytest.raises(StoreLocked):
        take(storage, exclusive=False, host="here", clock=clock)
    clock.advance(2)
    with take(storage, exclusive=False, host="here", clock=clock) as mine:
        assert lock_names(storage) == {mine.name}


def test_lapsed_lease_makes_check_fail(storage: MemoryStorage) -> None:
    clock = FixedClock(T0)
    with take(storage, exclusive=True, clock=clock, lease_s=60) as lock:
        lock.check()
        clock.advance(61)
        with pytest.raises(StoreLocked, match="lost the repository lock"):
            lock.check()


def test_refresh_keeps_the_lease_alive(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.create()
    with take(storage, exclusive=True, lease_s=0.3, refresh=True) as lock:
        first = LockInfo.from_json(lock.name, storage.get("locks", lock.name)).expires
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            time.sleep(0.05)
            stored = LockInfo.from_json(lock.name, storage.get("locks", lock.name))
            if stored.expires > first:
                break
        assert stored.expires > first
        time.sleep(0.4)  # longer than the lease: only renewal keeps it valid
        lock.check()
        # and others still see it as live
        with pytest.raises(StoreLocked):
            take(storage, exclusive=False, host="other-host", pid=1)
    assert lock_names(storage) == set()


class FlakyStorage:
    """A MemoryStorage whose writes fail while ``failing`` is set."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.location = "flaky://"
        self.failing = threading.Event()

    def create(self) -> None:
        self.inner.create()

    def is_initialized(self) -> bool:
        return self.inner.is_initialized()

    def put(self, kind: str, name: str, data: bytes, *, overwrite: bool = False) -> None:
        if self.failing.is_set():
            raise StoreError("cannot write: No space left on device")
        self.inner.put(kind, name, data, overwrite=overwrite)

    def get(self, kind: str, name: str) -> bytes:
        return self.inner.get(kind, name)

    def get_range(self, kind: str, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(kind, name, offset, length)

    def exists(self, kind: str, name: str) -> bool:
        return self.inner.exists(kind, name)

    def stat(self, kind: str, name: str) -> ObjectInfo:
        return self.inner.stat(kind, name)

    def list(self, kind: str) -> Iterator[ObjectInfo]:
        return self.inner.list(kind)

    def delete(self, kind: str, name: str) -> None:
        self.inner.delete(kind, name)

    def close(self) -> None:
        self.inner.close()


def wait_until_lost(lock: RepositoryLock, timeout: float = 3.0) -> StoreLocked:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lock.check()
        except StoreLocked as exc:
            return exc
        time.sleep(0.02)
    raise AssertionError("the lock was never marked lost")


def test_refresh_failure_marks_the_lock_lost() -> None:
    storage = FlakyStorage()
    assert isinstance(storage, ObjectStorage)
    with take(storage, exclusive=True, lease_s=0.3, refresh=True) as lock:
        lock.check()
        storage.failing.set()
        exc = wait_until_lost(lock)
        # Under load the lease may lapse before the failed renewal is noticed; either way lost.
        assert "lost the repository lock" in str(exc)
        assert lock.lost
        storage.failing.clear()
    assert lock_names(storage) == set()  # release still removes it


def test_short_refresh_hiccup_is_tolerated() -> None:
    storage = FlakyStorage()
    # Generous margins: a loaded CI machine may delay the refresh thread.
    with take(storage, exclusive=True, lease_s=3.0, refresh=True) as lock:
        storage.failing.set()
        time.sleep(0.5)  # at most one failed renewal (every 1 s); lost only after 1.5 s
        storage.failing.clear()
        time.sleep(1.2)
        lock.check()


def test_lock_removed_by_someone_else_is_lost(storage: MemoryStorage) -> None:
    with take(storage, exclusive=True, lease_s=0.3, refresh=True) as lock:
        break_locks(storage, all=True)
        exc = wait_until_lost(lock)
        assert "removed by someone else" in str(exc)
        assert lock_names(storage) == set()  # not resurrected by the refresh thread


def test_release_is_idempotent(storage: MemoryStorage) -> None:
    lock = take(storage, exclusive=True, refresh=True, lease_s=30)
    assert lock_names(storage) == {lock.name}
    lock.release()
    lock.release()
    assert lock_names(storage) == set()
    with pytest.raises(StoreLocked):
        lock.check()
    with lock:
        pass
    assert lock_names(storage) == set()


def test_exclusive_lock_is_mutually_exclusive_across_threads(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.create()
    inside = 0
    worst = 0
    acquired = 0
    failures: list[BaseException] = []
    count_lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        nonlocal inside, worst, acquired
        barrier.wait()
        try:
            with take(storage, exclusive=True, pid=1000 + i, wait_s=6):
                with count_lock:
                    inside += 1
                    acquired += 1
                    worst = max(worst, inside)
                time.sleep(0.005)
                with count_lock:
                    inside -= 1
        except StoreLocked:
            pass  # gave up waiting: allowed, overlap is what matters
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert worst == 1
    assert acquired >= 1
    assert lock_names(storage) == set()


def test_wait_until_the_holder_releases(storage: MemoryStorage) -> None:
    holder = take(storage, exclusive=True, pid=1)
    releaser = threading.Timer(0.3, holder.release)
    start = time.monotonic()
    releaser.start()
    try:
        with take(storage, exclusive=False, pid=2, wait_s=5):
            waited = time.monotonic() - start
    finally:
        releaser.join()
    assert 0.25 <= waited < 3


def test_wait_gives_up_after_wait_s(storage: MemoryStorage) -> None:
    with take(storage, exclusive=True, pid=1):
        start = time.monotonic()
        with pytest.raises(StoreLocked):
            take(storage, exclusive=True, pid=2, wait_s=0.2)
        assert 0.15 <= time.monotonic() - start < 1.5


def test_garbage_lock_objects_are_stale(storage: MemoryStorage) -> None:
    storage.put("locks", "empty", b"")
    storage.put("locks", "junk", b"\x00\xffnot json")
    storage.put("locks", "wrongshape", b'{"pid": "nope"}')
    listed = list_locks(storage)
    assert {info.name for info, _ in listed} == {"empty", "junk", "wrongshape"}
    assert all(stale for _, stale in listed)
    assert all(info.operation == UNREADABLE for info, _ in listed)
    with take(storage, exclusive=True) as mine:
        assert lock_names(storage) == {mine.name}


def test_list_and_break_locks(storage: MemoryStorage) -> None:
    clock = FixedClock(T0)
    dead = take(storage, exclusive=False, host="here", pid=999, clock=clock, operation="snap")
    clock.advance(1)
    live = take(storage, exclusive=False, host="here", pid=100, clock=clock, operation="diff")
    alive = {100}.__contains__

    listed = list_locks(storage, clock, host="here", pid_alive=alive)
    assert [(info.name, stale) for info, stale in listed] == [(dead.name, True), (live.name, False)]
    assert listed[1][0].operation == "diff"

    assert break_locks(storage, clock=clock, host="here", pid_alive=alive) == 1
    assert lock_names(storage) == {live.name}
    assert break_locks(storage, clock=clock, host="here", pid_alive=alive) == 0
    assert break_locks(storage, all=True, clock=clock, host="here", pid_alive=alive) == 1
    assert lock_names(storage) == set()


def test_break_locks_uses_lease_for_other_hosts(storage: MemoryStorage) -> None:
    clock = FixedClock(T0)
    take(storage, exclusive=True, host="elsewhere", clock=clock, lease_s=60)
    assert break_locks(storage, clock=clock, host="here") == 0
    clock.advance(120)
    assert break_locks(storage, clock=clock, host="here") == 1


def test_invalid_timing_is_refused(storage: MemoryStorage) -> None:
    with pytest.raises(UsageError):
        take(storage, exclusive=True, lease_s=0)
    with pytest.raises(UsageError):
        take(storage, exclusive=True, wait_s=-1)


def test_process_alive() -> None:
    import os

    assert process_alive(os.getpid())
    assert not process_alive(0)
    assert not process_alive(-5)
    assert not process_alive(2**22 + 12345)  # above Linux's pid_max default
