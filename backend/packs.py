"""Pack layer: buffer stored blobs into immutable packs of a target size."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from backend.format import PackEntry, encode_pack_trailer, split_pack
from backend.ids import BlobId, PackId, object_name

__all__ = ["FinishedPack", "PackWriter", "split_pack"]


@dataclass(frozen=True, slots=True)
class FinishedPack:
    """A complete pack, ready to be written under its id."""

    id: PackId
    data: bytes | bytearray
    entries: tuple[PackEntry, ...]


class PackWriter:
    """Accumulates stored blobs; ``add`` returns a finished pack once the target is reached.

    Thread-safe: several workers may add concurrently.
    """

    def __init__(self, target_size: int) -> None:
        self.target_size = target_size
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._entries: list[PackEntry] = []
        self._pending: dict[bytes, tuple[int, int]] = {}

    def add(
        self, blob_type: int, blob_id: BlobId, stored: bytes, raw_length: int
    ) -> FinishedPack | None:
        """Append a stored blob; return a finished pack if this filled one."""
        with self._lock:
            off = len(self._buf)
            self._buf += stored
            self._entries.append(PackEntry(blob_type, blob_id, off, len(stored), raw_length))
            self._pending[blob_id] = (off, len(stored))
            if len(self._buf) >= self.target_size:
                return self._finish_locked()
        return None

    def pending_blob(self, blob_id: BlobId) -> bytes | None:
        """The stored bytes of a blob that is still buffered here."""
        with self._lock:
            loc = self._pending.get(blob_id)
            if loc is None:
                return None
            off, ln = loc
            return bytes(self._buf[off : off + ln])

    def finish(self) -> FinishedPack | None:
        """Close the current pack (None if empty)."""
        with self._lock:
            return self._finish_locked() if self._entries else None

    def _finish_locked(self) -> FinishedPack:
        entries = tuple(self._entries)
        self._buf += encode_pack_trailer(entries)
        data = self._buf  # handed over whole: no 16 MiB copy; never touched here again
        self._buf = bytearray()
        self._entries = []
        self._pending = {}
        return FinishedPack(PackId(object_name(data)), data, entries)
