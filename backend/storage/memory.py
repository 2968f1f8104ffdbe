"""Object storage in memory (layer: storage), for tests and throwaway repositories.

It follows exactly the semantics of ``LocalStorage`` and passes the same conformance suite:
create-if-absent writes where one of several racing writers wins, atomic replacement, the same
name rules (including that a ref cannot also be a ref folder), and missing-object errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from backend.errors import ObjectExists, ObjectNotFound, UsageError
from backend.storage.base import KINDS, Data, ObjectInfo, check_prefix
from backend.storage.local import check_address

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """An ``ObjectStorage`` held in a dict; thread-safe."""

    location: str
    """Always ``memory://``."""

    def __init__(self) -> None:
        self.location = "memory://"
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, tuple[bytes, float]]] = {kind: {} for kind in KINDS}

    def __repr__(self) -> str:
        return "MemoryStorage()"

    def create(self) -> None:
        """Nothing to lay out; present for the protocol."""

    def is_initialized(self) -> bool:
        """True when the ``config`` object exists."""
        return self.exists("config", "config")

    def put(self, kind: str, name: str, data: Data, *, overwrite: bool = False) -> None:
        """Store an object.

        Args:
            kind: One of ``KINDS``.
            name: The object's name.
            data: The whole content (copied).
            overwrite: Replace an existing object instead of refusing.

        Raises:
            ObjectExists: ``overwrite`` is false and the object exists.
            UsageError: An invalid address, or a ref name that clashes with a ref folder.
        """
        check_address(kind, name)
        content = b"".join(data) if isinstance(data, list) else bytes(data)
        with self._lock:
            objects = self._objects[kind]
            if kind == "refs":
                self._check_ref_clash(objects, name)
            if not overwrite and name in objects:
                raise ObjectExists(f"object already exists: {kind}/{name} in {self.location}")
            objects[name] = (content, time.time())

    @staticmethod
    def _check_ref_clash(refs: dict[str, tuple[bytes, float]], name: str) -> None:
        """Refuse what a directory tree refuses: ``a/b`` next to ``a``, or ``a`` next to ``a/b``."""
        parts = name.split("/")
        parents = {"/".join(parts[:i]) for i in range(1, len(parts))}
        folder = name + "/"
        for other in refs:
            if other in parents or other.startswith(folder):
                raise UsageError(
                    f"ref {name!r} clashes with an existing ref (a ref cannot also be a folder)"
                )

    def _read(self, kind: str, name: str) -> tuple[bytes, float]:
        check_address(kind, name)
        with self._lock:
            found = self._objects[kind].get(name)
        if found is None:
            raise ObjectNotFound(f"no {kind} object {name!r} in {self.location}")
        return found

    def get(self, kind: str, name: str) -> bytes:
        """The whole object.

        Raises:
            ObjectNotFound: No such object.
        """
        return self._read(kind, name)[0]

    def get_range(self, kind: str, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at the end of the object.

        Raises:
            UsageError: A negative offset or length.
            ObjectNotFound: No such object.
        """
        check_address(kind, name)
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range: offset {offset}, length {length}")
        return self._read(kind, name)[0][offset : offset + length]

    def exists(self, kind: str, name: str) -> bool:
        """Whether the object exists."""
        check_address(kind, name)
        with self._lock:
            return name in self._objects[kind]

    def stat(self, kind: str, name: str) -> ObjectInfo:
        """Size and mtime of an object.

        Raises:
            ObjectNotFound: No such object.
        """
        content, mtime = self._read(kind, name)
        return ObjectInfo(name=name, size=len(content), mtime=mtime)

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of a kind whose name starts with ``prefix`` (a snapshot taken at the
        call).

        Raises:
            UsageError: An unknown kind or an invalid prefix.
        """
        check_prefix(kind, prefix)
        with self._lock:
            infos = [
                ObjectInfo(name=name, size=len(content), mtime=mtime)
                for name, (content, mtime) in self._objects[kind].items()
                if name.startswith(prefix)
            ]
        return iter(infos)

    def delete(self, kind: str, name: str) -> None:
        """Remove an object; a missing object is not an error."""
        check_address(kind, name)
        with self._lock:
            self._objects[kind].pop(name, None)

    def close(self) -> None:
        """Nothing to release; present for the protocol."""
