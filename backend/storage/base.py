"""Storage layer: the only code that touches bytes at rest.

An ``ObjectStorage`` holds named objects grouped by *kind*. Every object is written whole and
atomically: a reader sees either nothing or the complete object, never a partial one.

Kinds and their mutability:

    config      the repository config (written once by init)
    keys        key material (encryption); replaced by ``key passwd``
    data        packs, write-once, name = hex pack id; stored with a 2-char fan-out
    index       index segments, write-once
    snapshots   snapshot objects, write-once
    locks       lock leases, replaced on refresh, deleted on release
    refs        small mutable pointers (heads, refs, pins, tags, access times); names may contain
                '/' (``heads/abc``), each replaced atomically

Names are ``[A-Za-z0-9._-]`` segments joined by '/'; '..' and empty segments are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from backend.errors import UsageError

Data = bytes | bytearray | memoryview | list[bytes]
"""What ``put`` accepts: the whole object, or its parts in order."""

KINDS: tuple[str, ...] = ("config", "keys", "data", "index", "snapshots", "locks", "refs")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing says of one object."""

    name: str
    """The object's name within its kind (no fan-out prefix)."""
    size: int
    """Size in bytes."""
    mtime: float
    """Last modification, seconds since the epoch."""


def check_prefix(kind: str, prefix: str) -> None:
    """Raise ``UsageError`` unless ``prefix`` can start an object name of ``kind``.

    (issue 4) A listing prefix is a plain string prefix of names (``"heads/"``, ``"ab"``):
    whole name segments joined by '/' (refs only), the last one possibly partial or empty.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown object kind {kind!r}")
    if not prefix:
        return
    *whole, last = prefix.split("/")
    if (
        len(prefix) > 512
        or (whole and kind != "refs")
        or not all(_SEGMENT.match(seg) for seg in whole)
        or (last and not _SEGMENT.match(last))
    ):
        raise UsageError(f"invalid {kind} listing prefix {prefix!r}")


def check_name(kind: str, name: str) -> None:
    """Raise ``UsageError`` unless ``kind``/``name`` is a valid object address."""
    if kind not in KINDS:
        raise UsageError(f"unknown object kind {kind!r}")
    if not name or len(name) > 512:
        raise UsageError(f"invalid object name {name!r}")
    for seg in name.split("/"):
        if not _SEGMENT.match(seg):
            raise UsageError(f"invalid object name {name!r}")


@runtime_checkable
class ObjectStorage(Protocol):
    """Where a repository's objects live (local directory, memory, S3)."""

    location: str
    """A human-readable location, e.g. the directory path or ``s3://bucket/prefix``."""

    def create(self) -> None:
        """Create the empty layout (idempotent)."""
        ...

    def is_initialized(self) -> bool:
        """True when a ``config`` object exists."""
        ...

    def put(self, kind: str, name: str, data: Data, *, overwrite: bool = False) -> None:
        """Write an object atomically. ``data`` may be a list of parts, written in order
        without being joined first (packs are written this way).

        With ``overwrite=False`` (write-once objects) the write is create-if-absent: it raises
        ``ObjectExists`` when the name exists, and of two racing writers exactly one wins. With
        ``overwrite=True`` it atomically replaces any existing object.
        """
        ...

    def get(self, kind: str, name: str) -> bytes:
        """The whole object; ``ObjectNotFound`` if absent."""
        ...

    def get_range(self, kind: str, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the object)."""
        ...

    def exists(self, kind: str, name: str) -> bool:
        """Whether the object exists."""
        ...

    def stat(self, kind: str, name: str) -> ObjectInfo:
        """Size and mtime; ``ObjectNotFound`` if absent."""
        ...

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of a kind whose name starts with ``prefix``, in no particular order;
        never temp files. A prefix ending in '/' lists one ref folder (``"access/"``) without
        visiting the others; ``check_prefix`` says which prefixes are valid."""
        ...

    def delete(self, kind: str, name: str) -> None:
        """Remove an object. Deleting a missing object is not an error (re-runs converge)."""
        ...

    def close(self) -> None:
        """Release resources."""
        ...
