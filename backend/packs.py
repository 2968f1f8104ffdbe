"""Pack layer: buffer stored blobs into immutable packs of a target size."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import blake3

from backend.format import PackEntry, Sealer, encode_pack_trailer, split_pack
from backend.ids import BlobId, PackId

__all__ = ["FinishedPack", "PackWriter", "split_pack"]


@dataclass(frozen=True, slots=True)
class FinishedPack:
    """A complete pack, ready to be written under its id."""

    id: PackId
    parts: list[bytes]
    """The stored blobs in order (part i is entry i), then the header+trailer."""
    entries: tuple[PackEntry, ...]

    @property
    def size(self) -> int:
        """Bytes in the pack."""
        return sum(len(p) for p in self.parts)


class PackWriter:
    """Accumulates stored blobs; ``add`` returns a finished pack once the target is reached.

    Blobs are kept as a list of parts, hashed and written part by part, so neither adding a
    blob nor finishing a pack copies the buffer. Thread-safe: several workers may add concurrently.
    """

    def __init__(self, target_size: int, seal_header: Sealer | None = None) -> None:
        self.target_size = target_size
        self._seal_header = seal_header
        """Seals the header of each finished pack (encrypted repositories)."""
        self._lock = threading.Lock()
        self._parts: list[bytes] = []
        self._size = 0
        self._entries: list[PackEntry] = []
        self._pending: dict[bytes, int] = {}

    def add(
        self, blob_type: int, blob_id: BlobId, stored: bytes, raw_length: int
    ) -> FinishedPack | None:
        """Append a stored blob; return a finished pack if this filled one."""
        with self._lock:
            self._pending[blob_id] = len(self._parts)
            self._entries.append(PackEntry(blob_type, blob_id, self._size, len(stored), raw_length))
            self._parts.append(stored)
            self._size += len(stored)
            if self._size < self.target_size:
                return None
            parts, entries = self._take_locked()
        return _finish(parts, entries, self._seal_header)

    def pending_blob(self, blob_id: BlobId) -> tuple[bytes, int] | None:
        """(stored bytes, raw length) of a blob that is still buffered here."""
        with self._lock:
            i = self._pending.get(blob_id)
            return None if i is None else (self._parts[i], self._entries[i].raw_length)

    def finish(self) -> FinishedPack | None:
        """Close the current pack (None if empty)."""
        with self._lock:
            if not self._entries:
                return None
            parts, entries = self._take_locked()
        return _finish(parts, entries, self._seal_header)

    def _take_locked(self) -> tuple[list[bytes], tuple[PackEntry, ...]]:
        parts, entries = self._parts, tuple(self._entries)
        self._parts, self._entries, self._pending, self._size = [], [], {}, 0
        return parts, entries


def _finish(
    parts: list[bytes], entries: tuple[PackEntry, ...], seal: Sealer | None
) -> FinishedPack:
    parts.append(encode_pack_trailer(entries, seal))
    h = blake3.blake3()
    for p in parts:  # hashed part by part: the pack is never joined into one buffer
        h.update(p)
    return FinishedPack(PackId(h.hexdigest()), parts, entries)
