"""Model layer: immutable values shared by every layer and client. No I/O."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from backend.ids import BlobId

_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    """A dataclass's field names (issue 5: computed once, not per decoded snapshot)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    return names


class EntryKind(enum.StrEnum):
    """What a tree entry is."""

    FILE = "f"
    DIR = "d"
    SYMLINK = "l"
    FIFO = "p"
    SOCKET = "s"
    CHARDEV = "c"
    BLOCKDEV = "b"


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a directory tree."""

    name: bytes
    """The name exactly as the filesystem has it (bytes; may be invalid UTF-8)."""
    kind: EntryKind
    mode: int
    """Permission bits (``st_mode & 0o7777``)."""
    uid: int
    gid: int
    mtime_ns: int
    size: int
    content: tuple[BlobId, ...] = ()
    """Blob ids of a file's content, in order."""
    payload: Any = None
    """Subtree id (bytes) of a directory, target (bytes) of a symlink, rdev of a device."""
    ino: int = 0
    ctime_ns: int = 0
    nlink: int = 1
    extra: dict[str, Any] | None = None
    """Optional extras: ``xattrs`` (name → value bytes), ``dev`` (hardlinked files)."""


@dataclass(frozen=True, slots=True)
class Tree:
    """One directory: entries sorted by name bytes."""

    entries: tuple[Entry, ...]

    def find(self, name: bytes) -> Entry | None:
        """The entry with that name, by binary search."""
        lo, hi = 0, len(self.entries)
        while lo < hi:
            mid = (lo + hi) // 2
            n = self.entries[mid].name
            if n < name:
                lo = mid + 1
            elif n > name:
                hi = mid
            else:
                return self.entries[mid]
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotStats:
    """What a snapshot run did."""

    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    files_removed: int = 0
    dirs: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    """New raw (uncompressed) bytes added to the repository."""
    bytes_stored: int = 0
    """New bytes stored, after compression."""
    total_files: int = 0
    total_bytes: int = 0
    """Raw size of every file in the snapshot."""
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """As a plain dict (JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotStats:
        """From a plain dict, ignoring unknown keys."""
        names = _field_names(cls)  # issue 5: cached (listing 10,000 snapshots decodes each)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The immutable state of a source at a time."""

    id: str
    time: datetime
    host: str
    source: str
    """Absolute path of the source directory (surrogate-escaped str of the bytes path)."""
    tree: str
    """Hex id of the root tree."""
    parent: str | None = None
    tags: tuple[str, ...] = ()
    message: str = ""
    author: str = ""
    trigger: str = "manual"
    """manual, watch, restore-guard or schedule."""
    stats: SnapshotStats = field(default_factory=SnapshotStats)
    pinned: bool = False
    """From the snapshot's note (mutable metadata, not part of the snapshot object)."""

    @property
    def short_id(self) -> str:
        """The first 8 hex characters of the id."""
        return self.id[:8]

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` object for a snapshot."""
        return {
            "id": self.id,
            "short_id": self.short_id,
            "time": self.time.isoformat(),
            "host": self.host,
            "source": self.source,
            "parent": self.parent,
            "tags": list(self.tags),
            "message": self.message,
            "author": self.author,
            "trigger": self.trigger,
            "pinned": self.pinned,
            "tree": self.tree,
            "stats": self.stats.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Problem:
    """A non-fatal problem met during an operation (an unreadable file, say)."""

    path: str
    message: str


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    """The outcome of creating a snapshot."""

    snapshot: Snapshot
    problems: tuple[Problem, ...] = ()
    """Files that were skipped or changed while being read."""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference between two trees."""

    change: str
    """A added, D removed, M content modified, T type changed, P metadata only."""
    path: bytes
    kind_before: EntryKind | None
    kind_after: EntryKind | None
    size_before: int | None
    size_after: int | None


@dataclass(frozen=True, slots=True)
class DiffResult:
    """Changes between two snapshots (or a snapshot and the live directory)."""

    source_from: str
    source_to: str
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreResult:
    """The outcome (or, with dry_run, the plan) of a restore."""

    files_restored: int = 0
    dirs_restored: int = 0
    links_restored: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    bytes_written: int = 0
    dry_run: bool = False
    problems: tuple[Problem, ...] = ()
    actions: tuple[tuple[str, str], ...] = ()
    """With dry_run: (action, path) pairs, action in write/skip/delete/mkdir/link."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoStats:
    """Repository-wide numbers."""

    snapshots: int
    packs: int
    blobs: int
    raw_bytes: int
    """Sum of the logical size of every snapshot (what restoring all would write)."""
    unique_bytes: int
    """Raw size of the distinct blobs (after dedup, before compression)."""
    stored_bytes: int
    """Bytes on disk/in storage for packs, index and snapshots."""

    @property
    def dedup_ratio(self) -> float:
        """raw / unique."""
        return self.raw_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        """unique / stored."""
        return self.unique_bytes / self.stored_bytes if self.stored_bytes else 1.0
