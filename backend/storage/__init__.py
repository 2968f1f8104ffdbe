"""Storage backends (layer: storage): where a repository's objects live.

``open_storage`` turns a repository location into an ``ObjectStorage``.
"""

from __future__ import annotations

import re
from pathlib import Path

from backend.errors import UsageError
from backend.storage.base import KINDS, ObjectInfo, ObjectStorage, check_name
from backend.storage.local import LocalStorage
from backend.storage.memory import MemoryStorage

__all__ = [
    "KINDS",
    "LocalStorage",
    "MemoryStorage",
    "ObjectInfo",
    "ObjectStorage",
    "check_name",
    "open_storage",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_storage(location: str) -> ObjectStorage:
    """The storage for a repository location.

    Args:
        location: A directory path (``~`` is expanded; ``file://`` is accepted), ``memory://``
            for a fresh in-memory store, or ``s3://bucket/prefix``.

    Returns:
        The storage. Nothing is created or checked yet: call ``create()`` or
        ``is_initialized()``.

    Raises:
        UsageError: An empty location, an S3 location (not supported yet), or an unknown scheme.
    """
    if not location:
        raise UsageError("empty repository location")
    match = _SCHEME.match(location)
    if match is None:
        return LocalStorage(Path(location).expanduser())
    scheme = match.group(1).lower()
    rest = location[match.end() :]
    if scheme == "memory":
        return MemoryStorage()
    if scheme == "file":
        if not rest:
            raise UsageError(f"no path in repository location {location!r}")
        return LocalStorage(Path(rest).expanduser())
    if scheme == "s3":
        raise UsageError("S3 repositories are not supported yet")
    raise UsageError(
        f"unsupported repository location {location!r}: use a path, memory:// or s3://"
    )
