"""Repository locks as lease objects in the ``locks`` kind (layer: repository).

Readers (snapshot, restore, diff) take *shared* locks; prune, evict and forget take an
*exclusive* one. A lock is an object ``locks/<random hex>`` holding JSON: who (host, pid), what
(operation), whether exclusive, and when the lease was taken and when it expires.

Acquiring works with nothing but create-if-absent writes and listings, so it is the same on a
local directory and on object storage:

1. write our own lock object (a fresh random name, ``overwrite=False``);
2. list every lock; delete the stale ones (dead pid on this host, lapsed lease, or unreadable);
3. if a live lock conflicts with ours (either side exclusive), delete ours, back off with
   jitter and start again until ``wait_s`` is used up, then raise ``StoreLocked``.

Because everyone writes before listing, two exclusive lockers can never both win: the later
writer's listing always sees the earlier one's object. They may both back off; the jittered
backoff then lets one through.

While held, a daemon thread renews the lease (``expires``) every ``lease_s / 3``. If renewing
keeps failing for longer than ``lease_s / 2``, or our object was removed by someone else, the
lock is *lost*: ``RepositoryLock.check()`` raises and long operations must stop.

Lease expiry compares times written by different hosts, so hosts sharing a repository need
roughly synchronised clocks (skew well below ``lease_s``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from backend.clock import Clock, SystemClock
from backend.errors import ObjectExists, ObjectNotFound, StoreError, StoreLocked, UsageError
from backend.storage.base import ObjectStorage

__all__ = [
    "LockInfo",
    "RepositoryLock",
    "acquire_lock",
    "break_locks",
    "list_locks",
    "process_alive",
]

logger = logging.getLogger(__name__)

KIND = "locks"
"""The storage kind that holds lock objects."""
LOCK_FORMAT = 1
"""Version written into every lock object."""
BACKOFF_START_S = 0.05
"""First retry delay while waiting for a conflicting lock."""
BACKOFF_CAP_S = 2.0
"""Longest retry delay."""
UNREADABLE = "(unreadable lock object)"
"""The ``operation`` shown for a lock object that cannot be parsed (such a lock is stale)."""


@dataclass(frozen=True, slots=True)
class LockInfo:
    """One lock lease, as stored in ``locks/<name>``."""

    name: str
    """The lock object's name (random hex); not part of the stored JSON."""
    host: str
    """Host name of the holder."""
    pid: int
    """Process id of the holder on ``host``."""
    exclusive: bool
    """Exclusive (prune, evict) or shared (everything else)."""
    created: datetime
    """When the lock was first taken (tz-aware UTC)."""
    expires: datetime
    """When the lease lapses unless renewed (tz-aware UTC)."""
    operation: str
    """What the holder is doing, for people ("snapshot", "prune")."""

    def to_json(self) -> bytes:
        """The stored form."""
        return json.dumps(
            {
                "version": LOCK_FORMAT,
                "host": self.host,
                "pid": self.pid,
                "exclusive": self.exclusive,
                "created": self.created.isoformat(),
                "expires": self.expires.isoformat(),
                "operation": self.operation,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, name: str, data: bytes) -> LockInfo:
        """Parse a stored lock.

        Raises:
            ValueError: The bytes are not a lock object.
        """
        try:
            obj: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        host, pid, op = obj.get("host"), obj.get("pid"), obj.get("operation")
        exclusive = obj.get("exclusive")
        if not isinstance(host, str) or not isinstance(op, str):
            raise ValueError("bad host or operation")
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise ValueError("bad pid")
        if not isinstance(exclusive, bool):
            raise ValueError("bad exclusive flag")
        return cls(
            name=name,
            host=host,
            pid=pid,
            exclusive=exclusive,
            created=_parse_time(obj.get("created")),
            expires=_parse_time(obj.get("expires")),
            operation=op,
        )

    def describe(self) -> str:
        """One line for people: who holds it, doing what, since when."""
        kind = "an exclusive" if self.exclusive else "a shared"
        since = self.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{kind} lock held by pid {self.pid} on {self.host} ({self.operation}) since {since}"


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("bad timestamp")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (``os.kill(pid, 0)``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    except OSError:
        return True  # cannot tell: assume alive, never break a live lock
    return True


@dataclass(frozen=True, slots=True)
class _Judge:
    """Decides staleness from the viewpoint of one host at one moment."""

    host: str
    now: datetime
    alive: Callable[[int], bool]

    def stale_reason(self, info: LockInfo, readable: bool = True) -> str | None:
        """Why ``info`` is stale, or None if it is live."""
        if not readable:
            return "the lock object is unreadable"
        if info.host == self.host and not self.alive(info.pid):
            return f"pid {info.pid} is not running"
        if info.expires < self.now:
            return f"lease expired at {info.expires.isoformat()}"
        return None


def _read_locks(storage: ObjectStorage) -> list[tuple[LockInfo, bool]]:
    """Every lock object with whether it parsed; unreadable ones become placeholders."""
    found: list[tuple[LockInfo, bool]] = []
    for obj in storage.list(KIND):
        try:
            data = storage.get(KIND, obj.name)
        except ObjectNotFound:  # released while we listed
            continue
        try:
            found.append((LockInfo.from_json(obj.name, data), True))
        except ValueError:
            when = datetime.fromtimestamp(obj.mtime, UTC)
            found.append((LockInfo(obj.name, "?", 0, False, when, when, UNREADABLE), False))
    return found


def _remove_stale(storage: ObjectStorage, info: LockInfo, reason: str) -> None:
    logger.info("removing stale lock %s (%s): %s", info.name, info.describe(), reason)
    storage.delete(KIND, info.name)


class RepositoryLock:
    """A held repository lock; a context manager that releases it on exit.

    Made by ``acquire_lock``. Long operations call ``check()`` between units of work.
    """

    def __init__(
        self,
        storage: ObjectStorage,
        info: LockInfo,
        *,
        clock: Clock,
        lease_s: float,
        refresh: bool,
    ) -> None:
        self._storage = storage
        self._info = info
        self._clock = clock
        self._lease = timedelta(seconds=lease_s)
        self._lease_s = lease_s
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._released = False
        self._lost_reason: str | None = None
        self._lost_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._etag: str | None = None
        """On storage with ``replace_if`` (S3): the ETag of the lease we last wrote."""
        if refresh:
            self._thread = threading.Thread(
                target=self._refresh_loop, name=f"snapdeck-lock-{info.name[:8]}", daemon=True
            )
            self._thread.start()

    @property
    def info(self) -> LockInfo:
        """The lease as last written."""
        return self._info

    @property
    def name(self) -> str:
        """The lock object's name."""
        return self._info.name

    @property
    def exclusive(self) -> bool:
        """Whether this is an exclusive lock."""
        return self._info.exclusive

    @property
    def lost(self) -> bool:
        """Whether the lock can no longer be trusted (see ``check``)."""
        return self._lost_reason is not None

    @property
    def lost_event(self) -> threading.Event:
        """Set as soon as the lock is known lost (see ``cancel_when_lost``)."""
        return self._lost_event

    def _lose(self, reason: str) -> None:
        self._lost_reason = reason
        self._lost_event.set()

    def cancel_when_lost(self, cancel: threading.Event | None = None) -> threading.Event:
        """A cancel event for a long operation: set when ``cancel`` is, or when this lock is
        lost, so the operation stops between units of work instead of writing on without it.
        After the operation raises ``Cancelled``, call ``check()`` to tell the two apart."""
        return _EitherEvent(cancel, self._lost_event)

    def check(self) -> None:
        """Raise unless the lock is still ours.

        Raises:
            StoreLocked: The lock was lost (renewal kept failing, someone removed it, or the
                lease lapsed), or it was released.
        """
        if self._released:
            raise StoreLocked("the repository lock was already released")
        if self._lost_reason is None and self._clock.now() > self._info.expires:
            self._lose(f"its lease expired at {self._info.expires.isoformat()}")
        if self._lost_reason is not None:
            raise StoreLocked(
                f"lost the repository lock ({self._lost_reason}); stopping so another process "
                "cannot see a half-done change"
            )

    def refresh(self) -> None:
        """Renew the lease now (the refresh thread does this by itself).

        Raises:
            StoreLocked: Our lock object is gone (someone broke the lock).
            StoreError: The storage write failed.
        """
        with self._mutex:
            if self._released:
                return
            renewed = replace(self._info, expires=self._clock.now() + self._lease)
            if hasattr(self._storage, "replace_if"):
                self._refresh_cas(renewed)
            else:
                if not self._storage.exists(KIND, self._info.name):
                    self._lose("its lock object was removed by someone else")
                    raise StoreLocked(f"lost the repository lock ({self._lost_reason})")
                self._storage.put(KIND, renewed.name, renewed.to_json(), overwrite=True)
            self._info = renewed
        logger.debug("renewed lock %s until %s", renewed.name, renewed.expires.isoformat())

    def _refresh_cas(self, renewed: LockInfo) -> None:
        """Renew with compare-and-swap on the ETag (object storage, issue 7): the lease is
        rewritten only if it is still the object we last wrote, so a lock broken (or
        replaced) between two renewals is never brought back to life."""
        storage: Any = self._storage
        try:
            if self._etag is None:
                self._etag = storage.etag(KIND, self._info.name)
            self._etag = storage.replace_if(KIND, renewed.name, renewed.to_json(), self._etag)
        except (ObjectNotFound, ObjectExists):
            self._lose("its lock object was removed by someone else")
            raise StoreLocked(f"lost the repository lock ({self._lost_reason})") from None

    def _refresh_loop(self) -> None:
        interval = self._lease_s / 3
        failing_since: float | None = None
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except StoreLocked as exc:
                logger.error("%s", exc)
                return
            except Exception as exc:  # keep renewing through transient storage errors
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                logger.warning("cannot renew repository lock %s: %s", self._info.name, exc)
                if now - failing_since > self._lease_s / 2:
                    self._lose(f"renewing it failed for {now - failing_since:.1f}s: {exc}")
                    logger.error("lost the repository lock (%s)", self._lost_reason)
                    return
            else:
                failing_since = None

    def release(self) -> None:
        """Stop renewing and delete the lock object (idempotent).

        A failed delete is logged, not raised: the lease lapses by itself.
        """
        with self._mutex:
            if self._released:
                return
            self._released = True
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self._storage.delete(KIND, self._info.name)
        except StoreError as exc:
            logger.warning(
                "cannot remove repository lock %s (it expires by itself): %s",
                self._info.name,
                exc,
            )

    def __enter__(self) -> RepositoryLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "lost" if self.lost else "held"
        mode = "exclusive" if self.exclusive else "shared"
        return f"<RepositoryLock {self.name[:8]} {mode} {state}>"


def acquire_lock(
    storage: ObjectStorage,
    *,
    exclusive: bool,
    operation: str,
    clock: Clock | None = None,
    lease_s: float = 300,
    wait_s: float = 0,
    refresh: bool = True,
    host: str | None = None,
    pid: int | None = None,
    pid_alive: Callable[[int], bool] | None = None,
) -> RepositoryLock:
    """Take a shared or exclusive repository lock.

    Args:
        storage: The repository's storage.
        exclusive: Exclusive (no other lock may exist) or shared (no exclusive lock may exist).
        operation: What we are doing, shown to anyone we block.
        clock: The time source for leases (default: the system clock).
        lease_s: How long the lease lasts without renewal.
        wait_s: How long to keep retrying while a conflicting lock is held.
        refresh: Renew the lease from a daemon thread every ``lease_s / 3``.
        host: Our host name (default: ``socket.gethostname()``).
        pid: Our process id (default: ``os.getpid()``).
        pid_alive: Tells whether a pid on this host is running (default: ``process_alive``).

    Returns:
        The held lock; use it as a context manager.

    Raises:
        UsageError: A non-positive lease or a negative wait.
        StoreLocked: A conflicting live lock was still held after ``wait_s``.
        StoreError: The storage failed.
    """
    if lease_s <= 0 or wait_s < 0:
        raise UsageError(f"invalid lock timing: lease {lease_s}s, wait {wait_s}s")
    clock = clock or SystemClock()
    judge_host = host if host is not None else socket.gethostname()
    my_pid = pid if pid is not None else os.getpid()
    alive = pid_alive if pid_alive is not None else process_alive
    lease = timedelta(seconds=lease_s)
    deadline = time.monotonic() + wait_s
    delay = BACKOFF_START_S
    while True:
        now = clock.now()
        mine = LockInfo(
            name=os.urandom(16).hex(),
            host=judge_host,
            pid=my_pid,
            exclusive=exclusive,
            created=now,
            expires=now + lease,
            operation=operation,
        )
        try:
            storage.put(KIND, mine.name, mine.to_json(), overwrite=False)
        except ObjectExists:  # a 128-bit collision: just draw another name
            continue
        try:
            holder = _find_conflict(storage, mine, _Judge(judge_host, clock.now(), alive))
        except BaseException:
            storage.delete(KIND, mine.name)
            raise
        if holder is None:
            logger.debug("acquired %s lock %s for %s", _mode(exclusive), mine.name, operation)
            return RepositoryLock(storage, mine, clock=clock, lease_s=lease_s, refresh=refresh)
        storage.delete(KIND, mine.name)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StoreLocked(
                f"repository is locked: {holder.describe()}; "
                "run 'snapdeck unlock' if that process is gone"
            )
        pause = min(remaining, delay * random.uniform(0.5, 1.5))
        logger.debug("waiting %.3fs for %s", pause, holder.describe())
        time.sleep(pause)
        delay = min(delay * 2, BACKOFF_CAP_S)


class _EitherEvent(threading.Event):
    """An event that also reads as set when any of the given events is set (polled only:
    operations call ``is_set()`` between units of work)."""

    def __init__(self, *events: threading.Event | None) -> None:
        super().__init__()
        self._events = tuple(e for e in events if e is not None)

    def is_set(self) -> bool:
        return super().is_set() or any(e.is_set() for e in self._events)


def _mode(exclusive: bool) -> str:
    return "exclusive" if exclusive else "shared"


def _find_conflict(storage: ObjectStorage, mine: LockInfo, judge: _Judge) -> LockInfo | None:
    """The live lock that keeps us from holding ``mine`` (an exclusive one if any), or None."""
    conflict: LockInfo | None = None
    for other, readable in _read_locks(storage):
        if other.name == mine.name:
            continue
        reason = judge.stale_reason(other, readable)
        if reason is not None:
            _remove_stale(storage, other, reason)
            continue
        if other.exclusive:
            return other
        if mine.exclusive and conflict is None:
            conflict = other
    return conflict


def list_locks(
    storage: ObjectStorage,
    clock: Clock | None = None,
    *,
    host: str | None = None,
    pid_alive: Callable[[int], bool] | None = None,
) -> list[tuple[LockInfo, bool]]:
    """Every lock in the repository, oldest first, each with whether it is stale.

    Args:
        storage: The repository's storage.
        clock: The time source (default: the system clock).
        host: This host's name (default: ``socket.gethostname()``).
        pid_alive: Liveness test for pids on this host (default: ``process_alive``).

    Returns:
        ``(info, stale)`` pairs. Unreadable objects appear with ``operation`` set to
        ``UNREADABLE`` and are always stale.
    """
    judge = _Judge(
        host if host is not None else socket.gethostname(),
        (clock or SystemClock()).now(),
        pid_alive if pid_alive is not None else process_alive,
    )
    locks = sorted(_read_locks(storage), key=lambda pair: (pair[0].created, pair[0].name))
    return [(info, judge.stale_reason(info, readable) is not None) for info, readable in locks]


def break_locks(
    storage: ObjectStorage,
    *,
    all: bool = False,
    clock: Clock | None = None,
    pid_alive: Callable[[int], bool] | None = None,
    host: str | None = None,
) -> int:
    """Remove stale locks, or every lock with ``all=True`` (``snapdeck unlock``).

    Args:
        storage: The repository's storage.
        all: Remove live locks too. Only safe when no other process uses the repository.
        clock: The time source (default: the system clock).
        pid_alive: Liveness test for pids on this host (default: ``process_alive``).
        host: This host's name (default: ``socket.gethostname()``).

    Returns:
        How many lock objects were removed.
    """
    removed = 0
    for info, stale in list_locks(storage, clock, host=host, pid_alive=pid_alive):
        if stale or all:
            logger.info(
                "removing %s lock %s: %s", "stale" if stale else "live", info.name, info.describe()
            )
            storage.delete(KIND, info.name)
            removed += 1
    return removed
