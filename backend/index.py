"""Index layer: which pack holds which blob, merged from immutable index segments.

The index keeps no refcounts; garbage collection is mark-and-sweep (see prune).
Values are packed into one int per blob to keep memory small on large repositories:
``type << 127 | pack_no << 96 | raw_length << 64 | offset << 32 | length``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from backend.format import PackEntry
from backend.ids import BlobId, PackId

_M32 = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Location:
    """Where a blob is stored."""

    pack: PackId
    type: int
    offset: int
    length: int
    raw_length: int


class ChunkIndex:
    """Blob id → location, for dedup lookups and reads. Not thread-safe by itself."""

    def __init__(self) -> None:
        self._map: dict[bytes, int] = {}
        self._packs: list[PackId] = []
        self._pack_no: dict[PackId, int] = {}

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, blob: object) -> bool:
        return blob in self._map

    def add_pack(self, pack: PackId, entries: Iterable[PackEntry]) -> None:
        """Record every blob of a pack (a blob already known keeps its first location)."""
        no = self._pack_no.get(pack)
        if no is None:
            no = len(self._packs)
            self._packs.append(pack)
            self._pack_no[pack] = no
        m = self._map
        base = no << 96
        for e in entries:
            if e.id not in m:
                m[e.id] = (
                    (e.type << 127) | base | (e.raw_length << 64) | (e.offset << 32) | e.length
                )

    def get(self, blob: BlobId) -> Location | None:
        """The location of a blob, or None."""
        v = self._map.get(blob)
        if v is None:
            return None
        return Location(
            pack=self._packs[(v >> 96) & 0x7FFFFFFF],
            type=v >> 127,
            offset=(v >> 32) & _M32,
            length=v & _M32,
            raw_length=(v >> 64) & _M32,
        )

    def items(self) -> Iterator[tuple[BlobId, Location]]:
        """Every (blob id, location)."""
        for k in list(self._map):
            loc = self.get(BlobId(k))
            assert loc is not None
            yield BlobId(k), loc
