"""Repository layer: blobs in and out, dedup, packs, index, trees and snapshot objects.

Invariants:
- Write order is packs → index segment → snapshot; a snapshot is only written after every
  blob it references is in a pack that an index segment names. A crash at any point leaves
  at worst unreferenced packs (garbage for prune), never a snapshot with missing data.
- Every blob read is decompressed and re-hashed against its id (``IntegrityError`` otherwise).
- ``put_blob`` is thread-safe; compression runs outside the lock so workers use every core.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import blake3
import zstandard

from backend import format as fmt
from backend.errors import (
    ChunkNotFound,
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
)
from backend.format import BLOB_TREE, ChunkerParams, PackEntry, RepoConfig
from backend.ids import BlobId, PackId, SnapshotId, object_name
from backend.index import ChunkIndex, Location
from backend.model import Snapshot, Tree
from backend.packs import FinishedPack, PackWriter
from backend.storage.base import ObjectStorage

log = logging.getLogger(__name__)

PACK_TARGET = 16 * 1024 * 1024
TREE_PACK_TARGET = 4 * 1024 * 1024
INDEX_EVERY_PACKS = 8
TREE_CACHE_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class PutResult:
    """What storing one blob did."""

    new: bool
    stored_length: int


class Repository:
    """A snapdeck repository on some object storage."""

    def __init__(self, storage: ObjectStorage, config: RepoConfig) -> None:
        self.storage = storage
        self.config = config
        self.id_key = config.id_key
        self._lock = threading.Lock()
        self._index: ChunkIndex | None = None
        self._reserved: set[bytes] = set()
        self._inflight: dict[bytes, tuple[FinishedPack, int]] = {}
        self._data_writer = PackWriter(PACK_TARGET)
        self._tree_writer = PackWriter(TREE_PACK_TARGET)
        self._unindexed: list[tuple[PackId, tuple[PackEntry, ...]]] = []
        self._loaded_segments: set[str] = set()
        self._tree_cache: OrderedDict[bytes, Tree] = OrderedDict()
        self._tree_cache_entries = 0
        self._local = threading.local()
        self.packs_written = 0

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def init(
        cls,
        storage: ObjectStorage,
        *,
        chunker: ChunkerParams | None = None,
        compression_level: int = 3,
        now: datetime | None = None,
    ) -> Repository:
        """Create a new repository on empty storage."""
        if storage.is_initialized():
            raise RepositoryExists(f"a repository already exists at {storage.location}")
        storage.create()
        params = chunker or ChunkerParams(seed=secrets.randbelow(2**31))
        cfg = RepoConfig(
            id=secrets.token_hex(16),
            created=(now or datetime.now(UTC)).isoformat(),
            chunker=params,
            compression_level=compression_level,
            id_key=secrets.token_bytes(32),
        )
        try:
            storage.put("config", "config", fmt.encode_config(cfg))
        except ObjectExists:
            raise RepositoryExists(f"a repository already exists at {storage.location}") from None
        return cls(storage, cfg)

    @classmethod
    def open(cls, storage: ObjectStorage) -> Repository:
        """Open an existing repository."""
        try:
            data = storage.get("config", "config")
        except ObjectNotFound:
            raise RepositoryNotFound(
                f"no snapdeck repository at {storage.location} (run 'snapdeck init' first)"
            ) from None
        return cls(storage, fmt.decode_config(data))

    # ------------------------------------------------------------ per-thread codecs

    def _cctx(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = zstandard.ZstdCompressor(level=self.config.compression_level)
            self._local.cctx = c
        return c

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = zstandard.ZstdDecompressor()
            self._local.dctx = d
        return d

    def hash_blob(self, data: bytes | memoryview) -> BlobId:
        """The keyed id of a plaintext blob."""
        return BlobId(blake3.blake3(data, key=self.id_key).digest())

    # ------------------------------------------------------------ index

    @property
    def index(self) -> ChunkIndex:
        """The merged index, loaded on first use."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._load_index()
        return self._index

    def _load_index(self) -> ChunkIndex:
        idx = ChunkIndex()
        for info in self.storage.list("index"):
            for pack_id, entries in self._read_index_segment(info.name):
                idx.add_pack(pack_id, entries)
            self._loaded_segments.add(info.name)
        return idx

    def refresh_index(self) -> int:
        """Load index segments written since the index was loaded (by another process).

        Returns how many new segments were read.
        """
        if self._index is None:
            return 0
        new = [i.name for i in self.storage.list("index") if i.name not in self._loaded_segments]
        for name in new:
            entries = self._read_index_segment(name)
            with self._lock:
                for pack_id, es in entries:
                    self._index.add_pack(pack_id, es)
                self._loaded_segments.add(name)
        return len(new)

    def _read_index_segment(self, name: str) -> list[tuple[PackId, list[PackEntry]]]:
        data = self.storage.get("index", name)
        if object_name(data) != name:
            raise IntegrityError(f"index segment {name[:12]} does not match its name")
        return list(fmt.decode_index(data))

    def index_segments(self) -> list[str]:
        """Names of every index segment."""
        return [i.name for i in self.storage.list("index")]

    def has_blob(self, blob_id: BlobId) -> bool:
        """Whether the blob is stored (or being stored by this process)."""
        return blob_id in self.index or blob_id in self._reserved

    # ------------------------------------------------------------ writing

    def put_blob(self, blob_type: int, blob_id: BlobId, plain: bytes | memoryview) -> PutResult:
        """Store a blob unless it is already known. Thread-safe."""
        index = self.index
        with self._lock:
            if blob_id in index or blob_id in self._reserved:
                return PutResult(False, 0)
            self._reserved.add(blob_id)
        stored = fmt.encode_blob(plain, self._cctx())
        writer = self._tree_writer if blob_type == BLOB_TREE else self._data_writer
        done = writer.add(blob_type, blob_id, stored, len(plain))
        if done is not None:
            self._write_pack(done)
        return PutResult(True, len(stored))

    def _write_pack(self, pack: FinishedPack) -> None:
        with self._lock:
            for i, e in enumerate(pack.entries):
                self._inflight[e.id] = (pack, i)
        try:
            self.storage.put("data", pack.id, pack.parts)
        except ObjectExists:
            pass  # identical content under the same name: already there
        except BaseException:
            # The pack is not stored: its blobs must not count as stored, or a later snapshot
            # in this process would reference blobs that exist nowhere.
            with self._lock:
                for e in pack.entries:
                    self._inflight.pop(e.id, None)
                    self._reserved.discard(e.id)
            raise
        with self._lock:
            assert self._index is not None
            self._index.add_pack(pack.id, pack.entries)
            self._unindexed.append((pack.id, pack.entries))
            for e in pack.entries:
                self._inflight.pop(e.id, None)
                self._reserved.discard(e.id)
            self.packs_written += 1
            write_index = len(self._unindexed) >= INDEX_EVERY_PACKS
        if write_index:
            self._write_index()

    def _write_index(self) -> None:
        with self._lock:
            packs, self._unindexed = self._unindexed, []
        if not packs:
            return
        data = fmt.encode_index(packs)
        name = object_name(data)
        try:
            self.storage.put("index", name, data)
        except ObjectExists:
            pass
        except BaseException:
            # Not indexed yet: keep them queued so the next flush writes an index naming them
            # before any snapshot can reference their blobs.
            with self._lock:
                self._unindexed = packs + self._unindexed
            raise
        with self._lock:
            self._loaded_segments.add(name)

    def flush(self) -> None:
        """Write every buffered blob to a pack and index it (packs first, then the index)."""
        for writer in (self._data_writer, self._tree_writer):
            done = writer.finish()
            if done is not None:
                self._write_pack(done)
        self._write_index()

    def save_tree(self, tree: Tree) -> tuple[BlobId, PutResult]:
        """Store a tree blob; returns its id."""
        data = fmt.encode_tree(tree)
        tid = self.hash_blob(data)
        res = self.put_blob(BLOB_TREE, tid, data)
        return tid, res

    def save_snapshot(self, snap: Snapshot) -> Snapshot:
        """Write a snapshot object (after ``flush``); returns it with its id set."""
        data = fmt.encode_snapshot(snap)
        sid = SnapshotId(object_name(data))
        try:
            self.storage.put("snapshots", sid, data)
        except ObjectExists:
            pass
        return replace(snap, id=sid)

    # ------------------------------------------------------------ reading

    def locate(self, blob_id: BlobId) -> Location:
        """Where a blob is; ``ChunkNotFound`` if no index segment names it."""
        loc = self.index.get(blob_id)
        if loc is None and self.refresh_index():
            loc = self.index.get(blob_id)
        if loc is None:
            raise ChunkNotFound(f"blob {blob_id.hex()[:12]} is not in the index")
        return loc

    def read_blob(self, blob_id: BlobId) -> bytes:
        """A blob's plaintext, verified against its id."""
        loc = self.index.get(blob_id)
        if loc is None:
            pending = self._pending_stored(blob_id)
            if pending is None:
                loc = self.locate(blob_id)  # maybe written by another process since
        if loc is not None:
            where = f"pack {loc.pack[:12]}"
            stored = self.storage.get_range("data", loc.pack, loc.offset, loc.length)
            if len(stored) != loc.length:
                raise IntegrityError(f"{where} is truncated (blob {blob_id.hex()[:12]})")
            raw_length = loc.raw_length
        else:
            assert pending is not None
            where = "a pack being written"
            stored, raw_length = pending
        try:
            plain = fmt.decode_blob(stored, raw_length, self._dctx())
        except IntegrityError as exc:
            raise IntegrityError(f"blob {blob_id.hex()[:12]} in {where}: {exc}") from None
        if self.hash_blob(plain) != blob_id:
            raise IntegrityError(f"blob {blob_id.hex()[:12]} in {where} does not match its id")
        return plain

    def _pending_stored(self, blob_id: BlobId) -> tuple[bytes, int] | None:
        with self._lock:
            hit = self._inflight.get(blob_id)
        if hit is not None:
            pack, i = hit
            return pack.parts[i], pack.entries[i].raw_length
        for w in (self._tree_writer, self._data_writer):
            hit2 = w.pending_blob(blob_id)
            if hit2 is not None:
                return hit2
        return None

    def load_tree(self, tree_id: BlobId) -> Tree:
        """A tree by id (cached)."""
        with self._lock:
            t = self._tree_cache.get(tree_id)
            if t is not None:
                self._tree_cache.move_to_end(tree_id)
                return t
        tree = fmt.decode_tree(self.read_blob(tree_id))
        self._cache_tree(tree_id, tree)
        return tree

    def _cache_tree(self, tree_id: BlobId, tree: Tree) -> None:
        # Bounded by entries, not trees: one huge directory must not pin memory.
        with self._lock:
            if tree_id in self._tree_cache:
                return
            self._tree_cache[tree_id] = tree
            self._tree_cache_entries += len(tree.entries)
            while self._tree_cache_entries > TREE_CACHE_ENTRIES and len(self._tree_cache) > 1:
                _k, old = self._tree_cache.popitem(last=False)
                self._tree_cache_entries -= len(old.entries)

    def load_snapshot(self, snap_id: str) -> Snapshot:
        """A snapshot object by full id, checked against its name."""
        data = self.storage.get("snapshots", snap_id)
        if object_name(data) != snap_id:
            raise IntegrityError(f"snapshot {snap_id[:8]} does not match its id")
        return fmt.decode_snapshot(snap_id, data)

    def snapshot_ids(self) -> list[str]:
        """Every snapshot id in storage."""
        return [i.name for i in self.storage.list("snapshots")]


def default_threads() -> int:
    """Worker threads for the pipeline: one per core, at least two."""
    return max(2, os.cpu_count() or 2)
