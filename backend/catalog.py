"""Catalog: a local SQLite cache of snapshot metadata for instant listing.

The repository is the truth; the catalog is rebuilt from it whenever it is missing, corrupt or
stale (``sync`` adds snapshots it has not seen and drops ones that are gone). It lives in the
user cache dir, one file per repository id.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from backend import format as fmt
from backend.errors import IntegrityError, ObjectNotFound
from backend.model import Snapshot
from backend.repository import Repository

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    host TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_time ON snapshots(time);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SCHEMA_VERSION = "1"


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
            try:
                db = sqlite3.connect(target, timeout=30, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                row = db.execute("SELECT value FROM meta WHERE key='repo'").fetchone()
                ver = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if (row and row[0] != repo_id) or (ver and ver[0] != SCHEMA_VERSION):
                    raise sqlite3.DatabaseError("catalog belongs to another repository")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('repo', ?)", (repo_id,))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                db.commit()
                return db
            except sqlite3.DatabaseError as exc:
                if self.path is None or attempt:
                    raise
                log.warning("catalog %s unusable (%s); rebuilding", self.path, exc)
                for suffix in ("", "-wal", "-shm"):
                    Path(str(self.path) + suffix).unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def sync(self, repo: Repository) -> list[Snapshot]:
        """Bring the catalog up to date with the repository; every snapshot, oldest first."""
        ids = set(repo.snapshot_ids())
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT id FROM snapshots")}
        gone = known - ids
        new = ids - known
        rows = []
        for sid in new:
            try:
                data = repo.load_snapshot_bytes(sid)  # opened when the repository is encrypted
                snap = fmt.decode_snapshot(sid, data)
            except (ObjectNotFound, IntegrityError) as exc:
                log.warning("skipping unreadable snapshot %s: %s", sid[:8], exc)
                continue
            rows.append((sid, snap.time.isoformat(), snap.source, snap.host, data))
            self._cache[sid] = snap
        with self._lock:
            if gone:
                self._db.executemany("DELETE FROM snapshots WHERE id=?", [(g,) for g in gone])
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?,?)", rows)
            if gone or rows:
                self._db.commit()
            for g in gone:
                self._cache.pop(g, None)
        return self.all()

    def add(self, snap: Snapshot) -> None:
        """Record a snapshot this process just wrote."""
        data = fmt.encode_snapshot(snap)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?,?)",
                (snap.id, snap.time.isoformat(), snap.source, snap.host, data),
            )
            self._db.commit()
            self._cache[snap.id] = snap

    def remove(self, ids: list[str]) -> None:
        """Forget snapshots that were deleted."""
        with self._lock:
            self._db.executemany("DELETE FROM snapshots WHERE id=?", [(i,) for i in ids])
            self._db.commit()
            for i in ids:
                self._cache.pop(i, None)

    def get(self, sid: str) -> Snapshot | None:
        """One cached snapshot by full id (None if the catalog does not have it)."""
        s = self._cache.get(sid)
        if s is not None:
            return s
        with self._lock:
            row = self._db.execute("SELECT data FROM snapshots WHERE id=?", (sid,)).fetchone()
        if row is None:
            return None
        s = fmt.decode_snapshot(sid, row[0])
        self._cache[sid] = s
        return s

    def all(self) -> list[Snapshot]:
        """Every cached snapshot, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT id, data FROM snapshots").fetchall()
        out = []
        for sid, data in rows:
            s = self._cache.get(sid)
            if s is None:
                s = fmt.decode_snapshot(sid, data)
                self._cache[sid] = s
            out.append(s)
        out.sort(key=lambda s: (s.time, s.id))
        return out

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
