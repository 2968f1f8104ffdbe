"""Index layer: which pack holds which blob, merged from immutable index segments.

The index keeps no refcounts; garbage collection is mark-and-sweep (see prune).
Values are packed into one int per blob to keep memory small on large repositories:
``type << 127 | pack_no << 96 | raw_length << 64 | offset << 32 | length``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from backend.format import IndexRow, PackEntry
from backend.ids import BlobId, PackId

_M32 = (1 << 32) - 1


def _loc(fields: tuple[PackId, int, int, int, int]) -> Location:
    return tuple.__new__(Location, fields)


class Location(NamedTuple):
    """Where a blob is stored (a named tuple: cheap to make, one per lookup)."""

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

    def add_pack(self, pack: PackId, entries: Iterable[PackEntry | IndexRow]) -> None:
        """Record every blob of a pack (a blob already known keeps its first location).

        ``entries`` are ``PackEntry``s or the same fields as plain tuples."""
        no = self._pack_no.get(pack)
        if no is None:
            no = len(self._packs)
            self._packs.append(pack)
            self._pack_no[pack] = no
        m = self._map
        base = no << 96
        rows = entries if isinstance(entries, list | tuple) else list(entries)
        new = {  # reversed: of two equal ids in one pack, the first wins
            bid: (t << 127) | base | (raw << 64) | (off << 32) | ln
            for t, bid, off, ln, raw in reversed(rows)
            if bid not in m
        }
        m.update(new)

    def get(self, blob: BlobId) -> Location | None:
        """The location of a blob, or None."""
        v = self._map.get(blob)
        if v is None:
            return None
        return _loc(
            (
                self._packs[(v >> 96) & 0x7FFFFFFF],
                v >> 127,
                (v >> 32) & _M32,
                v & _M32,
                (v >> 64) & _M32,
            )
        )

    def items(self) -> Iterator[tuple[BlobId, Location]]:
        """Every (blob id, location)."""
        packs = self._packs
        for k, v in list(self._map.items()):
            yield (
                BlobId(k),
                _loc(
                    (
                        packs[(v >> 96) & 0x7FFFFFFF],
                        v >> 127,
                        (v >> 32) & _M32,
                        v & _M32,
                        (v >> 64) & _M32,
                    )
                ),
            )

    def contains_fn(self) -> Callable[[bytes], bool]:
        """A fast ``blob in index`` test (the bound ``__contains__`` of the live mapping)."""
        return self._map.__contains__

    def pack_ids(self) -> set[PackId]:
        """Every pack that holds at least one indexed blob."""
        packs = self._packs
        return {packs[no] for no in {(v >> 96) & 0x7FFFFFFF for v in self._map.values()}}
