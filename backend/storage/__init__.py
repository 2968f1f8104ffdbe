"""Storage backends (layer: storage): where a repository's objects live.

``open_storage`` turns a repository location into an ``ObjectStorage``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from backend.errors import UsageError
from backend.storage.base import KINDS, ObjectInfo, ObjectStorage, check_name
from backend.storage.local import LocalStorage
from backend.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from backend.config import S3Config
    from backend.storage.s3 import S3Settings

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


def open_storage(
    location: str, *, s3: S3Config | None = None, s3_settings: S3Settings | None = None
) -> ObjectStorage:
    """The storage for a repository location.

    Args:
        location: A directory path (``~`` is expanded; ``file://`` is accepted), ``memory://``
            for a fresh in-memory store, or ``s3://bucket/prefix``.
        s3: The ``[s3]`` config section for S3 locations; the AWS environment variables win
            over it (see ``S3Settings.resolve``).
        s3_settings: Fully resolved S3 settings (instead of ``s3`` and the environment).

    Returns:
        The storage. Nothing is created or checked yet: call ``create()`` or
        ``is_initialized()``.

    Raises:
        UsageError: An empty location, an invalid bucket or prefix, or an unknown scheme.
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
        from backend.storage.s3 import S3Settings, S3Storage, parse_s3_location

        bucket, prefix = parse_s3_location(rest)
        settings = s3_settings if s3_settings is not None else S3Settings.resolve(s3)
        return S3Storage(bucket, prefix, settings=settings)
    raise UsageError(
        f"unsupported repository location {location!r}: use a path, memory:// or s3://"
    )
