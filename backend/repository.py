"""Repository layer: blobs in and out, dedup, packs, index, trees and snapshot objects.

Invariants:
- Write order is packs → index segment → snapshot; a snapshot is only written after every
  blob it references is in a pack that an index segment names. A crash at any point leaves
  at worst unreferenced packs (garbage for prune), never a snapshot with missing data.
- Every blob read is decompressed and re-hashed against its id (``IntegrityError`` otherwise).
- ``put_blob`` is thread-safe; compression runs outside the lock so workers use every core.
- Encrypted repositories (``crypto`` set): blobs are sealed right after compression, in the same
  worker thread; pack headers, index segments and snapshot objects are sealed with the metadata
  key. Nothing is returned before it authenticates. Unencrypted repositories take exactly the
  old path (one ``is None`` test per blob).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import blake3
import zstandard

from backend import crypto as cr
from backend import format as fmt
from backend import keys as kf
from backend.errors import (
    ChunkNotFound,
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    PasswordRequired,
    RepositoryExists,
    RepositoryNotFound,
    UsageError,
    WrongPassword,
)
from backend.format import BLOB_TREE, ChunkerParams, PackEntry, RepoConfig
from backend.ids import BlobId, PackId, SnapshotId, object_name
from backend.index import ChunkIndex, Location
from backend.model import Snapshot, Tree
from backend.packs import FinishedPack, PackWriter
from backend.storage.base import ObjectStorage
from backend.uploader import PackUploader

log = logging.getLogger(__name__)

PACK_TARGET = 16 * 1024 * 1024
TREE_PACK_TARGET = 4 * 1024 * 1024
INDEX_EVERY_PACKS = 8
UPLOAD_EXTRA_SLOTS = 0
"""Finished packs that may wait for a free upload thread (beyond one per thread)."""
TREE_CACHE_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class PutResult:
    """What storing one blob did."""

    new: bool
    stored_length: int


class Repository:
    """A snapdeck repository on some object storage."""

    def __init__(
        self,
        storage: ObjectStorage,
        config: RepoConfig,
        *,
        crypto: cr.Crypto | None = None,
        key_name: str | None = None,
    ) -> None:
        if config.encrypted and crypto is None:
            raise PasswordRequired(f"the repository at {storage.location} is encrypted")
        self.storage = storage
        self.crypto = crypto
        """The unlocked keys (None: an unencrypted repository)."""
        self.key_name = key_name
        """The key object the password opened (encrypted repositories)."""
        if crypto is not None:
            # The id key and chunker seed come from the master key, never from the config.
            config = replace(
                config,
                id_key=crypto.id_key,
                chunker=replace(config.chunker, seed=crypto.chunker_seed),
            )
        self.config = config
        self.id_key = config.id_key
        self._lock = threading.Lock()
        self._index: ChunkIndex | None = None
        self._reserved: set[bytes] = set()
        self._inflight: dict[bytes, tuple[FinishedPack, int]] = {}
        seal_header = self._seal_pack_header if crypto is not None else None
        self._data_writer = PackWriter(PACK_TARGET, seal_header)
        self._tree_writer = PackWriter(TREE_PACK_TARGET, seal_header)
        self._unindexed: list[tuple[PackId, tuple[PackEntry, ...]]] = []
        self._loaded_segments: set[str] = set()
        self._tree_cache: OrderedDict[bytes, Tree] = OrderedDict()
        self._tree_cache_entries = 0
        self._local = threading.local()
        self.packs_written = 0
        self._uploads = _new_uploader(storage)  # issue 7: see "pack uploads" below
        self._index_write_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def init(
        cls,
        storage: ObjectStorage,
        *,
        chunker: ChunkerParams | None = None,
        compression_level: int = 3,
        now: datetime | None = None,
        password: kf.PasswordSource | None = None,
        cipher: str = cr.DEFAULT_CIPHER,
        kdf: kf.KdfParams | None = None,
    ) -> Repository:
        """Create a new repository on empty storage.

        With ``password`` the repository is encrypted: a random master key is wrapped by the
        password (Argon2id with ``kdf``) and every object is sealed with ``cipher``.
        """
        if storage.is_initialized():
            raise RepositoryExists(f"a repository already exists at {storage.location}")
        pw = None
        given = password() if callable(password) else password
        if given is not None:
            pw = kf.as_password(given)
            if not pw:
                raise UsageError("the password must not be empty")
            cr.aead(cipher, bytes(32))  # an unknown cipher is a UsageError before any write
        storage.create()
        created = (now or datetime.now(UTC)).isoformat()
        repo_id = secrets.token_hex(16)
        if pw is None:
            params = chunker or ChunkerParams(seed=secrets.randbelow(2**31))
            cfg = RepoConfig(
                id=repo_id,
                created=created,
                chunker=params,
                compression_level=compression_level,
                id_key=secrets.token_bytes(32),
            )
            crypto, key_name = None, None
        else:
            # The seed is derived from the master key; whatever the caller passed is ignored.
            params = replace(chunker or ChunkerParams(), seed=0)
            cfg = RepoConfig(
                id=repo_id,
                created=created,
                chunker=params,
                compression_level=compression_level,
                id_key=b"",
                version=fmt.ENCRYPTED_REPO_VERSION,
                cipher=cipher,
            )
            master = kf.new_master_key()
            key_name = kf.new_key_name()
            # The key first: a crash before the config leaves a stray key (it names another
            # repository id, so it never opens this one), never a config without its key.
            storage.put(
                "keys",
                key_name,
                kf.encode_key(pw, master, repo_id=repo_id, cipher=cipher, kdf=kdf, now=now),
            )
            crypto = cr.Crypto(master, repo_id, cipher)
        try:
            storage.put("config", "config", fmt.encode_config(cfg))
        except ObjectExists:
            if key_name is not None:
                storage.delete("keys", key_name)
            raise RepositoryExists(f"a repository already exists at {storage.location}") from None
        return cls(storage, cfg, crypto=crypto, key_name=key_name)

    @classmethod
    def open(
        cls, storage: ObjectStorage, *, password: kf.PasswordSource | None = None
    ) -> Repository:
        """Open an existing repository.

        ``password`` (a value, or a function called only when the repository is encrypted)
        unlocks an encrypted repository: ``PasswordRequired`` without one, ``WrongPassword``
        when it opens no key.
        """
        try:
            data = storage.get("config", "config")
        except ObjectNotFound:
            raise RepositoryNotFound(
                f"no snapdeck repository at {storage.location} (run 'snapdeck init' first)"
            ) from None
        cfg = fmt.decode_config(data)
        if not cfg.encrypted:
            if next(iter(storage.list("keys")), None) is not None:
                # Keys exist but the readable config claims no encryption: someone replaced
                # it. Opening would write plaintext into an encrypted repository.
                raise IntegrityError(
                    f"the repository at {storage.location} has key objects but its config says "
                    "it is not encrypted: the config was altered; not opening it"
                )
            return cls(storage, cfg)
        crypto, key_name = unlock(storage, cfg, password)
        return cls(storage, cfg, crypto=crypto, key_name=key_name)

    def change_password(self, new_password: str | bytes, *, kdf: kf.KdfParams | None = None) -> str:
        """Rewrap the master key with a new password (fresh salt); returns the key name.

        The key object is replaced atomically: at every moment exactly one of the two
        passwords opens it, and afterwards only the new one. No data is rewritten.
        """
        if self.crypto is None or self.key_name is None:
            raise UsageError(f"the repository at {self.storage.location} is not encrypted")
        pw = kf.as_password(new_password)
        data = kf.encode_key(
            pw, self.crypto.master, repo_id=self.config.id, cipher=self.crypto.cipher, kdf=kdf
        )
        self.storage.put("keys", self.key_name, data, overwrite=True)
        return self.key_name

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
            for pack_id, entries in self._read_index_rows(info.name):
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
            entries = self._read_index_rows(name)
            with self._lock:
                for pack_id, es in entries:
                    self._index.add_pack(pack_id, es)
                self._loaded_segments.add(name)
        return len(new)

    def _read_index_segment(self, name: str) -> list[tuple[PackId, list[PackEntry]]]:
        data = self.storage.get("index", name)
        if object_name(data) != name:
            raise IntegrityError(f"index segment {name[:12]} does not match its name")
        return self.decode_index_segment(data)

    def _read_index_rows(self, name: str) -> list[tuple[PackId, list[fmt.IndexRow]]]:
        data = self.storage.get("index", name)
        if object_name(data) != name:
            raise IntegrityError(f"index segment {name[:12]} does not match its name")
        return list(
            fmt.decode_index_rows(data, self._open_index if self.crypto is not None else None)
        )

    def read_index_segment(self, name: str) -> list[tuple[PackId, list[PackEntry]]]:
        """One stored index segment, checked against its name (and opened when sealed)."""
        return self._read_index_segment(name)

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
        return self._add_stored(blob_type, blob_id, fmt.encode_blob(plain, self._cctx()), len(plain))

    def pack_header_sealer(self) -> fmt.Sealer | None:
        """How pack headers are sealed (encrypted repositories), for writers elsewhere."""
        return self._seal_pack_header if self.crypto is not None else None

    def claim_blob(self, blob_id: BlobId) -> bool:
        """Claim a new blob that a worker process is packing itself (see ``adopt_pack``);
        False when it is stored or claimed already. Thread-safe."""
        index = self.index
        with self._lock:
            if blob_id in index or blob_id in self._reserved:
                return False
            self._reserved.add(blob_id)
            return True

    def put_claimed_blob(
        self, blob_type: int, blob_id: BlobId, stored: bytes, raw_length: int
    ) -> PutResult:
        """Pack a blob claimed with ``claim_blob``, encoded by ``format.encode_blob`` (in a
        worker process that hashed the plaintext it compressed). Thread-safe."""
        return self._add_stored(blob_type, blob_id, stored, raw_length)

    def release_blobs(self, blob_ids: Iterable[bytes]) -> None:
        """Give up claims whose pack will never be adopted (its worker failed)."""
        with self._lock:
            for b in blob_ids:
                self._reserved.discard(b)

    def adopt_pack(self, pack_id: PackId, entries: Sequence[PackEntry]) -> None:
        """Index a pack that a worker process has already stored, durably, under ``pack_id``
        (its blobs were claimed with ``claim_blob``). The next index segment names it."""
        entries = tuple(entries)
        with self._lock:
            assert self._index is not None
            self._index.add_pack(pack_id, entries)
            self._unindexed.append((pack_id, entries))
            for e in entries:
                self._reserved.discard(e.id)
            self.packs_written += 1
            write_index = len(self._unindexed) >= INDEX_EVERY_PACKS
        if write_index:
            self._write_index()

    def _add_stored(
        self, blob_type: int, blob_id: BlobId, stored: bytes, raw_length: int
    ) -> PutResult:
        if self.crypto is not None:
            stored = self.crypto.seal_blob(blob_id, stored)
        writer = self._tree_writer if blob_type == BLOB_TREE else self._data_writer
        done = writer.add(blob_type, blob_id, stored, raw_length)
        if done is not None:
            self._write_pack(done)
        return PutResult(True, len(stored))

    # ------------------------------------------------------------ pack uploads (issue 7)
    # Finished packs are stored by background threads (backend/uploader.py): the thread that
    # filled a pack goes back to reading and compressing at once. Until a pack is stored and
    # indexed, its blobs stay in ``_inflight`` (readers find them there) and ``_reserved``
    # (writers dedup against them). At most the storage's ``upload_threads`` packs (plus
    # ``UPLOAD_EXTRA_SLOTS``) are in flight: a producer waits for a free slot, so memory
    # stays bounded. A failed upload un-reserves its blobs and its error is raised by the next
    # finished pack and by ``flush``, which waits for every upload before it writes the index:
    # the order packs → index → snapshot holds, and a failed pack never reaches either.

    def _write_pack(self, pack: FinishedPack) -> None:
        with self._lock:
            for i, e in enumerate(pack.entries):
                self._inflight[e.id] = (pack, i)
        self._uploads.submit(lambda: self._store_pack(pack), lambda: self._drop_pack(pack))

    def _store_pack(self, pack: FinishedPack) -> None:
        """Upload one pack, then index it in memory (an upload thread, or inline)."""
        try:
            self.storage.put("data", pack.id, pack.parts)
        except ObjectExists:
            pass  # identical content under the same name: already there
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

    def _drop_pack(self, pack: FinishedPack) -> None:
        """The pack is not stored: its blobs must not count as stored, or a later snapshot in
        this process would reference blobs that exist nowhere."""
        with self._lock:
            for e in pack.entries:
                self._inflight.pop(e.id, None)
                self._reserved.discard(e.id)

    def _write_index(self) -> None:
        # One segment write at a time: a flush that finds nothing left to index must not
        # return while an upload thread is still writing the segment that names its packs.
        with self._index_write_lock:
            with self._lock:
                packs, self._unindexed = self._unindexed, []
            if not packs:
                return
            data = fmt.encode_index(packs, self._seal_index if self.crypto is not None else None)
            name = object_name(data)
            try:
                self.storage.put("index", name, data)
            except ObjectExists:
                pass
            except BaseException:
                # Not indexed yet: keep them queued so the next flush writes an index naming
                # them before any snapshot can reference their blobs.
                with self._lock:
                    self._unindexed = packs + self._unindexed
                raise
            with self._lock:
                self._loaded_segments.add(name)

    @property
    def uploads_in_flight(self) -> int:
        """Packs handed to the uploader and not yet stored (for tests and progress)."""
        return self._uploads.in_flight

    def flush(self) -> None:
        """Write every buffered blob to a pack and index it (packs first, then the index).

        Waits for every pack upload started before it; raises the first upload error (the
        index is then not written for the packs that failed).
        """
        try:
            for writer in (self._data_writer, self._tree_writer):
                done = writer.finish()
                if done is not None:
                    self._write_pack(done)
        finally:
            self._uploads.wait()  # raises (and clears) the first upload error
        self._write_index()

    # ------------------------------------------------------------ end of pack uploads

    def save_tree(self, tree: Tree) -> tuple[BlobId, PutResult]:
        """Store a tree blob; returns its id."""
        data = fmt.encode_tree(tree)
        tid = self.hash_blob(data)
        res = self.put_blob(BLOB_TREE, tid, data)
        return tid, res

    def save_snapshot(self, snap: Snapshot) -> Snapshot:
        """Write a snapshot object (after ``flush``); returns it with its id set."""
        data = fmt.encode_snapshot(snap)
        if self.crypto is not None:
            data = fmt.wrap_sealed(
                fmt.SNAPSHOT_MAGIC_SEALED, self.crypto.seal(data, cr.AD_SNAPSHOT)
            )
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
        return self.open_stored_blob(blob_id, stored, raw_length, where)

    def open_stored_blob(
        self, blob_id: BlobId, stored: bytes, raw_length: int, where: str = "a pack"
    ) -> bytes:
        """The verified plaintext of a blob's stored bytes (as they sit in a pack).

        Opens the seal (encrypted repositories), decompresses, and re-hashes against the id;
        ``IntegrityError`` naming the blob and ``where`` otherwise.
        """
        try:
            if self.crypto is not None:
                stored = self.crypto.open_blob(blob_id, stored)
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

    def cached_tree(self, tree_id: BlobId) -> Tree | None:
        """A tree if it is in the cache (no I/O), else None."""
        with self._lock:
            return self._tree_cache.get(tree_id)

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
        return fmt.decode_snapshot(snap_id, self.load_snapshot_bytes(snap_id))

    def load_snapshot_bytes(self, snap_id: str) -> bytes:
        """A snapshot object's JSON (opened when sealed), checked against its name."""
        data = self.storage.get("snapshots", snap_id)
        if object_name(data) != snap_id:
            raise IntegrityError(f"snapshot {snap_id[:8]} does not match its id")
        return self._open_snapshot(snap_id, data)

    # ------------------------------------------------------------ sealing (encrypted repos)

    def _seal_pack_header(self, header: bytes) -> bytes:
        assert self.crypto is not None
        return self.crypto.seal(header, cr.AD_PACK_HEADER)

    def _open_pack_header(self, sealed: bytes) -> bytes:
        assert self.crypto is not None
        return self.crypto.open(sealed, cr.AD_PACK_HEADER, "pack header")

    def _seal_index(self, frame: bytes) -> bytes:
        assert self.crypto is not None
        return self.crypto.seal(frame, cr.AD_INDEX)

    def _open_index(self, sealed: bytes) -> bytes:
        assert self.crypto is not None
        return self.crypto.open(sealed, cr.AD_INDEX, "index segment")

    # The helpers below are what maintenance code (check, repair, prune, copy) should use
    # instead of the format functions, so that it works on encrypted repositories too.

    def new_pack_writer(self, blob_type: int) -> PackWriter:
        """A pack writer for this repository (headers sealed when encrypted)."""
        target = TREE_PACK_TARGET if blob_type == BLOB_TREE else PACK_TARGET
        return PackWriter(target, self._seal_pack_header if self.crypto is not None else None)

    def encode_index(self, packs: Iterable[tuple[PackId, Sequence[PackEntry]]]) -> bytes:
        """An index segment's stored bytes (sealed when encrypted); its name is
        ``object_name`` of them."""
        return fmt.encode_index(packs, self._seal_index if self.crypto is not None else None)

    def decode_index_segment(self, data: bytes) -> list[tuple[PackId, list[PackEntry]]]:
        """Parse an index segment's stored bytes (opened when sealed)."""
        return list(fmt.decode_index(data, self._open_index if self.crypto is not None else None))

    def decode_snapshot_object(self, snap_id: str, data: bytes) -> Snapshot:
        """Parse a snapshot object's stored bytes (name checked, opened when sealed)."""
        if object_name(data) != snap_id:
            raise IntegrityError(f"snapshot {snap_id[:8]} does not match its id")
        return fmt.decode_snapshot(snap_id, self._open_snapshot(snap_id, data))

    def _open_snapshot(self, snap_id: str, data: bytes) -> bytes:
        if self.crypto is None:
            return data
        what = f"snapshot {snap_id[:8]}"
        box = fmt.unwrap_sealed(fmt.SNAPSHOT_MAGIC_SEALED, data, what)
        return self.crypto.open(box, cr.AD_SNAPSHOT, what)

    def pack_entries(self, data: bytes) -> list[PackEntry]:
        """The header entries of a whole pack in memory (sealed headers opened; blob ids a
        tree pack's header leaves out are recomputed from its blobs)."""
        return fmt.split_pack(
            data, self._open_pack_header if self.crypto is not None else None, self.hash_blob
        )

    def read_pack_header(self, pack_id: PackId, size: int | None = None) -> list[PackEntry]:
        """A stored pack's header entries, read from its end (two range reads; the whole pack
        when its header leaves the blob ids out, see ``format.header_omits_ids``).

        Raises ``IntegrityError`` for a damaged, truncated or (encrypted) unauthentic header.
        """
        if size is None:
            size = self.storage.stat("data", pack_id).size
        tail = self.storage.get_range("data", pack_id, max(0, size - fmt.TRAILER.size), 9)
        hlen, sealed = fmt.read_pack_trailer(tail, size)
        start = size - fmt.TRAILER.size - hlen
        header = self.storage.get_range("data", pack_id, start, hlen)
        if len(header) != hlen:
            raise IntegrityError(f"pack {pack_id[:12]} is truncated")
        if sealed != (self.crypto is not None):
            raise IntegrityError(
                f"pack {pack_id[:12]} is encrypted, in an unencrypted repository"
                if sealed
                else f"pack {pack_id[:12]} is not encrypted, in an encrypted repository"
            )
        if sealed:
            header = self._open_pack_header(header)
        try:
            if fmt.header_omits_ids(header):  # a tree pack: its ids come from its blobs
                return self.pack_entries(self.storage.get("data", pack_id))
            return fmt.decode_pack_header(header, start)
        except IntegrityError as exc:
            raise IntegrityError(f"pack {pack_id[:12]}: {exc}") from None

    def snapshot_ids(self) -> list[str]:
        """Every snapshot id in storage."""
        return [i.name for i in self.storage.list("snapshots")]

    # ------------------------------------------------------------ prune support (issue 4)

    def reset_index(self) -> None:
        """Forget the loaded index and cached trees (after prune replaced segments and packs).

        Call only when nothing is buffered (``flush`` first): pending packs stay pending.
        """
        with self._lock:
            self._index = None
            self._loaded_segments = set()
            self._tree_cache.clear()
            self._tree_cache_entries = 0


def unlock(
    storage: ObjectStorage, cfg: RepoConfig, password: kf.PasswordSource | None
) -> tuple[cr.Crypto, str]:
    """Open an encrypted repository's master key with a password: (keys, key object name)."""
    where = storage.location
    pw = password() if callable(password) else password
    if pw is None:
        raise PasswordRequired(
            f"the repository at {where} is encrypted: set SNAPDECK_PASSWORD, "
            "SNAPDECK_PASSWORD_FILE or SNAPDECK_PASSWORD_COMMAND (or --password-file / "
            "--password-command)"
        )
    names = sorted(i.name for i in storage.list("keys"))
    if not names:
        raise IntegrityError(f"the encrypted repository at {where} has no key objects")
    pwb = kf.as_password(pw)
    assert cfg.cipher is not None
    for name in names:
        try:
            key = kf.decode_key(name, storage.get("keys", name))
        except (IntegrityError, ObjectNotFound) as exc:
            log.warning("skipping key %s: %s", name, exc)
            continue
        master = kf.unwrap_key(key, pwb, repo_id=cfg.id, cipher=cfg.cipher)
        if master is not None:
            return cr.Crypto(master, cfg.id, cfg.cipher), name
    raise WrongPassword(f"wrong password for the encrypted repository at {where}")


def _new_uploader(storage: ObjectStorage) -> PackUploader:
    """Upload threads and slots as the storage asks (``upload_threads``; default 1)."""
    threads = int(getattr(storage, "upload_threads", 1))
    return PackUploader(threads, threads + UPLOAD_EXTRA_SLOTS, name="pack-upload")


def default_threads() -> int:
    """Worker threads for the pipeline: one per core, at least two."""
    return max(2, os.cpu_count() or 2)
