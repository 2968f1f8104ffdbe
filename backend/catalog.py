"""Catalog: a local SQLite cache of snapshot metadata for instant listing.

The repository is the truth; the catalog is rebuilt from it whenever it is missing, corrupt or
stale (``sync`` adds snapshots it has not seen and drops ones that are gone). It lives in the
user cache dir, one file per repository id.

Each snapshot is one row of plain columns (not its JSON), so listing 10,000 snapshots is a
single query and cheap object construction. The schema version includes the model's field
names: a snapshot model with new fields rebuilds an older catalog instead of misreading it.

``latest(n)`` reads only the newest rows (an index on the UTC timestamp): the TUI paints its
first screen from them before decoding the other thousands (issue 5).

``sync`` reads the snapshot objects it has not seen in parallel (a thread pool: storage reads
release the GIL, and on S3 each is a round trip), then inserts them in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from backend import format as fmt
from backend.errors import IntegrityError, ObjectNotFound
from backend.model import Snapshot, SnapshotStats
from backend.repository import Repository

log = logging.getLogger(__name__)

_STATS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SnapshotStats))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    host TEXT NOT NULL,
    tree TEXT NOT NULL,
    parent TEXT,
    tags TEXT NOT NULL,
    message TEXT NOT NULL,
    author TEXT NOT NULL,
    trigger_ TEXT NOT NULL,
    {", ".join(f"s_{f} NUMERIC NOT NULL" for f in _STATS_FIELDS)},
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_ts ON snapshots (ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLUMNS = ", ".join(
    ["id", "time", "source", "host", "tree", "parent", "tags", "message", "author", "trigger_"]
    + [f"s_{f}" for f in _STATS_FIELDS]
)
_INSERT = (
    f"INSERT OR REPLACE INTO snapshots ({_COLUMNS}, ts) "
    f"VALUES ({', '.join('?' * (11 + len(_STATS_FIELDS)))})"
)

# Version 2: one column per field. Version 3: plus ``ts`` (UTC epoch seconds, indexed) for
# ``latest``. The model's field names are part of the version so that a change to Snapshot or
# SnapshotStats rebuilds the cache rather than misreading it.
_MODEL = ",".join((*(f.name for f in fields(Snapshot)), *_STATS_FIELDS))
SCHEMA_VERSION = "3:" + hashlib.sha256(_MODEL.encode()).hexdigest()[:12]

_stats_values = attrgetter(*_STATS_FIELDS)
_by_time = attrgetter("time", "id")

SYNC_THREADS = 16
"""Snapshot objects read at once by ``sync`` (local disks and S3 both gain from overlap)."""
_BATCH = 64
"""Snapshot objects one pool task reads (fewer hand-offs between threads)."""


def _row(s: Snapshot) -> tuple[Any, ...]:
    return (
        s.id,
        s.time.isoformat(),
        s.source,
        s.host,
        s.tree,
        s.parent,
        json.dumps(list(s.tags)) if s.tags else "",
        s.message,
        s.author,
        s.trigger,
        *_stats_values(s.stats),
        s.time.timestamp(),
    )


def _snapshot(row: Sequence[Any]) -> Snapshot:
    sid, time, source, host, tree, parent, tags, message, author, trigger, *stats = row
    return Snapshot(
        id=sid,
        time=datetime.fromisoformat(time),
        host=host,
        source=source,
        tree=tree,
        parent=parent,
        tags=tuple(json.loads(tags)) if tags else (),
        message=message,
        author=author,
        trigger=trigger,
        stats=SnapshotStats(**dict(zip(_STATS_FIELDS, stats, strict=True))),
    )


def _read_batch(repo: Repository, ids: Sequence[str]) -> list[Snapshot]:
    """Read and decode snapshot objects (in a pool thread); unreadable ones are skipped."""
    out = []
    for sid in ids:
        try:
            data = repo.load_snapshot_bytes(sid)  # opened when the repository is encrypted
            out.append(fmt.decode_snapshot(sid, data))
        except (ObjectNotFound, IntegrityError) as exc:
            log.warning("skipping unreadable snapshot %s: %s", sid[:8], exc)
    return out


class Catalog:
    """Snapshot metadata cached in SQLite (``path=None``: in memory)."""

    def __init__(self, path: Path | None, repo_id: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = self._connect(repo_id)
        self._cache: dict[str, Snapshot] = {}

    def _connect(self, repo_id: str) -> sqlite3.Connection:
        target = ":memory:"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        for attempt in range(2):
            db: sqlite3.Connection | None = None
            try:
                db = sqlite3.connect(target, timeout=30, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                row = db.execute("SELECT value FROM meta WHERE key='repo'").fetchone()
                ver = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if (row and row[0] != repo_id) or (ver and ver[0] != SCHEMA_VERSION):
                    raise sqlite3.DatabaseError("catalog of another repository or version")
                # an old catalog without a version row has another table layout
                db.execute(f"SELECT {_COLUMNS} FROM snapshots LIMIT 1").fetchall()
                db.execute("INSERT OR REPLACE INTO meta VALUES ('repo', ?)", (repo_id,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.commit()
                return db
            except sqlite3.DatabaseError as exc:
                if self.path is None or attempt:
                    raise
                log.warning("catalog %s unusable (%s); rebuilding", self.path, exc)
                if db is not None:
                    db.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(str(self.path) + suffix).unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def sync(
        self,
        repo: Repository,
        *,
        threads: int | None = None,
        on_batch: Callable[[int, int], object] | None = None,
        on_read: Callable[[list[Snapshot], set[str]], object] | None = None,
    ) -> list[Snapshot]:
        """Bring the catalog up to date with the repository; every snapshot, oldest first.

        Args:
            repo: the repository (the truth).
            threads: how many snapshot objects are read at once (default: ``SYNC_THREADS``).
            on_batch: called with (read so far, to read) as new snapshots arrive.
            on_read: called with the snapshots just read (in no order) and the ids of those
                that are gone, before the catalog is written: on a first open of 10,000 the
                TUI paints the newest ones while the rows are still being inserted.
        """
        ids = set(repo.snapshot_ids())
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT id FROM snapshots")}
        gone = known - ids
        new = sorted(ids - known)
        n = SYNC_THREADS if threads is None else threads
        snaps = self._read(repo, new, n, on_batch) if new else []
        if on_read is not None:
            on_read(snaps, gone)
        with self._lock:
            with self._db:  # one transaction
                if gone:
                    self._db.executemany("DELETE FROM snapshots WHERE id=?", [(g,) for g in gone])
                if snaps:
                    self._db.executemany(_INSERT, [_row(s) for s in snaps])
            for g in gone:
                self._cache.pop(g, None)
            for s in snaps:
                self._cache[s.id] = s
        return self.all()

    @staticmethod
    def _read(
        repo: Repository,
        ids: Sequence[str],
        threads: int,
        on_batch: Callable[[int, int], object] | None,
    ) -> list[Snapshot]:
        batches = [ids[i : i + _BATCH] for i in range(0, len(ids), _BATCH)]
        out: list[Snapshot] = []
        if len(batches) == 1 or threads <= 1:
            results: Iterable[list[Snapshot]] = (_read_batch(repo, b) for b in batches)
            return _collect(results, out, len(ids), on_batch)
        with ThreadPoolExecutor(min(threads, len(batches)), "catalog-sync") as pool:
            results = pool.map(lambda b: _read_batch(repo, b), batches)
            return _collect(results, out, len(ids), on_batch)

    def add(self, snap: Snapshot) -> None:
        """Record a snapshot this process just wrote."""
        with self._lock:
            with self._db:
                self._db.execute(_INSERT, _row(snap))
            self._cache[snap.id] = snap

    def remove(self, ids: list[str]) -> None:
        """Forget snapshots that were deleted."""
        with self._lock:
            with self._db:
                self._db.executemany("DELETE FROM snapshots WHERE id=?", [(i,) for i in ids])
            for i in ids:
                self._cache.pop(i, None)

    def get(self, sid: str) -> Snapshot | None:
        """One cached snapshot by full id (None if the catalog does not have it)."""
        s = self._cache.get(sid)
        if s is not None:
            return s
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM snapshots WHERE id=?", (sid,)
            ).fetchone()
        if row is None:
            return None
        s = _snapshot(row)
        self._cache[sid] = s
        return s

    def all(self) -> list[Snapshot]:
        """Every cached snapshot, oldest first."""
        cache = self._cache
        with self._lock:
            # Another process may have changed the file: the ids are the truth, and only rows
            # this process has not decoded yet are read in full.
            ids = [r[0] for r in self._db.execute("SELECT id FROM snapshots")]
            if any(i not in cache for i in ids):
                for row in self._db.execute(f"SELECT {_COLUMNS} FROM snapshots"):
                    if row[0] not in cache:
                        cache[row[0]] = _snapshot(row)
        out = [s for i in ids if (s := cache.get(i)) is not None]
        out.sort(key=_by_time)
        return out

    def latest(self, n: int) -> list[Snapshot]:
        """The ``n`` newest cached snapshots, oldest first: one indexed query, only those rows
        decoded (the TUI's first screen, before ``all``)."""
        cache = self._cache
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM snapshots ORDER BY ts DESC, id DESC LIMIT ?", (n,)
            ).fetchall()
        out = []
        for row in reversed(rows):
            s = cache.get(row[0])
            if s is None:
                s = cache[row[0]] = _snapshot(row)
            out.append(s)
        return out

    def count(self) -> int:
        """How many snapshots the catalog has."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM snapshots").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _collect(
    results: Iterable[list[Snapshot]],
    out: list[Snapshot],
    total: int,
    on_batch: Callable[[int, int], object] | None,
) -> list[Snapshot]:
    for batch in results:
        out.extend(batch)
        if on_batch is not None:
            on_batch(len(out), total)
    return out
