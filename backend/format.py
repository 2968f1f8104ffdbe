"""Format layer: pure encode/decode of every repository object. No I/O.

Objects and their layouts (all integers little-endian). Each object carries its own version:
config, trees and snapshots are at version 1, packs and index segments at version 2 (the
repository config version says which snapdeck may open the repository at all; it stays 1
unencrypted, 2 encrypted, whatever object versions the repository holds):

Repository config (``config/config``), JSON::

    {"format": "snapdeck-repository", "version": 1, "id": hex16, "created": iso8601,
     "chunker": {"min": int, "avg": int, "max": int, "seed": int},
     "compression": {"algorithm": "zstd", "level": int}, "id_key": hex32}

Stored blob (inside a pack): one flag byte then the payload.
    0x00 raw plaintext, 0x01 zstd frame of the plaintext (version 1 writers),
    0x02 zstd frame of the plaintext without its 4-byte magic number (written since pack
    version 2: the flag already says what follows, and small blobs are the common case).
    The blob id is the keyed BLAKE3 of the plaintext; readers re-hash and compare.

Pack (``data/<id>``), id = BLAKE3 of the whole pack::

    blob_0 … blob_n-1 | header | trailer
    trailer = header_length u32 | b"SDPK" | version u8         (9 bytes)
    version 1 header = n × ENTRY  (type u8, id 32B, offset u64, length u32, raw_length u32)
    version 2 header = 0x02 | zstd( TABLE )    or, when that is not smaller,  0x03 | TABLE

    TABLE = n u32 | flags u8 | types n×u8 | lengths n×u32 | raw_lengths n×u32
            | offsets n×u64 (only with flag 0x01) | ids n×32B (not with flag 0x02)
    Without flag 0x01 the blobs tile the data from offset 0 in table order (offset i = sum of
    the lengths before it), which the reader checks against the header's position. Columns
    put the 32-byte ids together and the small integers together, so zstd shrinks the rest.
    Flag 0x02 (unencrypted packs of tree blobs only): the ids are left out. The index has
    them, and each is the keyed hash of its blob, so whoever needs the header's own account
    (check, repair) reads the whole pack and recomputes them. Trees are small and many (one
    per directory and version), so their ids would be most of a tree pack's header.

Index segment (``index/<id>``), id = BLAKE3 of the segment::

    version 1: b"SDIX" | 1 | zstd( pack_count u32 | per pack: pack id 32B | n u32 | n × ENTRY )
    version 2: b"SDIX" | 2 | zstd( pack_count u32 | per pack: pack id 32B | TABLE )

Tree blob (type TREE): msgpack ``{"v": 1, "e": [entry, …]}``, entries sorted by name bytes, each a
list ``[name, kind, mode, uid, gid, mtime_ns, size, payload, ino, ctime_ns, nlink, extra]``:
payload is the list of blob ids (file), the subtree id (dir), the link target (symlink), rdev
(devices) or None; extra is None or a dict (``xattrs``, ``dev`` for hardlinked files).

Snapshot (``snapshots/<id>``), id = BLAKE3 of the JSON bytes: see ``Snapshot`` in model.py.

Readers accept every version up to the current one (repositories written by older snapdecks
stay readable; packs and index segments of both versions may sit side by side). Tree and
snapshot encodings are unchanged since version 1, so tree ids (and dedup) are stable.
Any object of a newer version raises ``UnsupportedFormat``; anything malformed raises
``IntegrityError`` naming the object.

Encrypted repositories (repository format version 2 = version 1 + encryption; see crypto.py).
Every object keeps its unencrypted encoding inside a sealed box (``nonce | ciphertext | tag``);
an unencrypted repository is written exactly as described above, byte for byte. Repository
version 2 exists so that a snapdeck that predates encryption refuses such a repository with
"upgrade snapdeck" instead of misreading it. The config gains
``"encryption": {"cipher": name}`` and loses ``id_key`` (derived from the master key; so is the
chunker seed, stored as 0)::

    stored blob     sealed(flag + payload), associated data = the blob id
    pack            blob_0 … blob_n-1 | sealed(header) | len u32 | b"SDPE" | version u8
    index segment   b"SDIE" | version u8 | sealed(zstd(body as unencrypted))
    snapshot        b"SDSE" | version u8 | sealed(JSON as in v1)
    ref (refs/…)    b"SDRE" | version u8 | sealed(JSON), associated data binds the ref's name

Object names stay the plain BLAKE3 of the stored (sealed) bytes, so ``check`` can verify every
object against its name without the key.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate
from typing import Any, NamedTuple

import msgpack
import zstandard

from backend.errors import IntegrityError, UnsupportedFormat
from backend.ids import BlobId, PackId
from backend.model import Entry, EntryKind, Snapshot, SnapshotStats, Tree

FORMAT_VERSION = 1
"""Version of the repository config, tree and snapshot encodings (and sealed snapshot/ref
envelopes)."""
PACK_VERSION = 2
"""Version of the pack header written now (readers accept 1 and 2)."""
INDEX_VERSION = 2
"""Version of the index segments written now (readers accept 1 and 2)."""
REPO_FORMAT = "snapdeck-repository"
ENCRYPTED_REPO_VERSION = 2
"""Repository (config) version of encrypted repositories; their objects are v1 inside."""

BLOB_DATA = 0
BLOB_TREE = 1

FLAG_RAW = 0
FLAG_ZSTD = 1
FLAG_ZSTD_BARE = 2
"""A zstd frame without its magic number (``zstandard.FORMAT_ZSTD1_MAGICLESS``)."""
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

PACK_MAGIC = b"SDPK"
INDEX_MAGIC = b"SDIX"
PACK_MAGIC_SEALED = b"SDPE"
INDEX_MAGIC_SEALED = b"SDIE"
SNAPSHOT_MAGIC_SEALED = b"SDSE"
REF_MAGIC_SEALED = b"SDRE"
SEAL_OVERHEAD = 28
"""nonce + tag of a sealed box (crypto.OVERHEAD; format stays free of crypto imports)."""
ENTRY = struct.Struct("<B32sQII")
"""One blob of a version-1 pack header or index segment."""
TRAILER = struct.Struct("<I4sB")
U32 = struct.Struct("<I")
TABLE_HEAD = struct.Struct("<IB")
"""Version-2 entry table: blob count, flags."""
TABLE_OFFSETS = 0x01
"""Table flag: an offsets column follows (the blobs do not tile the data in order)."""
TABLE_NO_IDS = 0x02
"""Table flag (pack headers of tree packs only): no ids column; each id is the keyed hash of
its blob, recomputed from the pack when needed."""
HEADER_V2 = 0x02
"""First byte of a version-2 pack header holding a zstd frame of the entry table (a version-1
header starts with a blob type, 0 or 1)."""
HEADER_V2_RAW = 0x03
"""First byte of a version-2 pack header holding the entry table as it is (when compressing
would not make it smaller: a pack of one or two blobs)."""
_TABLE_LEVEL = 3
_HEADER_V2 = bytes([HEADER_V2])
_HEADER_V2_RAW = bytes([HEADER_V2_RAW])
_ID = struct.Struct("32s")


# ---------------------------------------------------------------- repository config


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """Content-defined chunking parameters, fixed for a repository's life."""

    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 4 * 1024 * 1024
    seed: int = 0


@dataclass(frozen=True, slots=True)
class RepoConfig:
    """The repository's immutable configuration."""

    id: str
    created: str
    chunker: ChunkerParams
    compression_level: int
    id_key: bytes
    version: int = FORMAT_VERSION
    cipher: str | None = None
    """The AEAD of an encrypted repository (None: not encrypted)."""

    @property
    def encrypted(self) -> bool:
        """Whether the repository's objects are sealed."""
        return self.cipher is not None


def encode_config(cfg: RepoConfig) -> bytes:
    """Serialise a repository config."""
    doc = {
        "format": REPO_FORMAT,
        "version": cfg.version,
        "id": cfg.id,
        "created": cfg.created,
        "chunker": {
            "min": cfg.chunker.min_size,
            "avg": cfg.chunker.avg_size,
            "max": cfg.chunker.max_size,
            "seed": cfg.chunker.seed,
        },
        "compression": {"algorithm": "zstd", "level": cfg.compression_level},
    }
    if cfg.cipher is None:
        doc["id_key"] = cfg.id_key.hex()
    else:
        # The id key and chunker seed are derived from the master key: never stored here.
        doc["chunker"]["seed"] = 0  # type: ignore[index]
        doc["encryption"] = {"cipher": cfg.cipher}
        doc["version"] = max(cfg.version, ENCRYPTED_REPO_VERSION)
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def decode_config(data: bytes) -> RepoConfig:
    """Parse a repository config; refuses unknown formats and newer versions."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != REPO_FORMAT:
            raise ValueError("not a snapdeck repository config")
        version = int(doc["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"repository config is unreadable: {exc}") from None
    if version > ENCRYPTED_REPO_VERSION:
        raise UnsupportedFormat(
            f"repository format version {version} is newer than this snapdeck supports "
            f"({ENCRYPTED_REPO_VERSION}); upgrade snapdeck"
        )
    try:
        ch = doc["chunker"]
        comp = doc["compression"]
        if comp.get("algorithm") != "zstd":
            raise UnsupportedFormat(f"unknown compression {comp.get('algorithm')!r}")
        enc = doc.get("encryption")
        if enc is None and version >= ENCRYPTED_REPO_VERSION:
            # Version 2 is "version 1 + encryption"; a v2 config without it is not ours.
            raise UnsupportedFormat(
                f"repository format version {version} is newer than this snapdeck supports "
                f"({FORMAT_VERSION} unencrypted); upgrade snapdeck"
            )
        if enc is not None and version < ENCRYPTED_REPO_VERSION:
            raise ValueError("encryption needs repository format version 2")
        if enc is not None:
            if not isinstance(enc, dict) or not isinstance(enc.get("cipher"), str):
                raise ValueError("encryption section is malformed")
            if "id_key" in doc:
                raise ValueError("an encrypted repository must not store its id key")
            return RepoConfig(
                id=str(doc["id"]),
                created=str(doc["created"]),
                chunker=ChunkerParams(int(ch["min"]), int(ch["avg"]), int(ch["max"]), 0),
                compression_level=int(comp["level"]),
                id_key=b"",
                version=version,
                cipher=enc["cipher"],
            )
        return RepoConfig(
            id=str(doc["id"]),
            created=str(doc["created"]),
            chunker=ChunkerParams(int(ch["min"]), int(ch["avg"]), int(ch["max"]), int(ch["seed"])),
            compression_level=int(comp["level"]),
            id_key=bytes.fromhex(doc["id_key"]),
            version=version,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"repository config is malformed: {exc}") from None


# ---------------------------------------------------------------- blobs


def encode_blob(plain: bytes | memoryview, cctx: zstandard.ZstdCompressor | None) -> bytes:
    """Compress a blob when that saves space; returns the stored bytes (flag + payload).

    ``cctx`` is an ordinary compressor (frames with their magic number and content size); the
    stored form drops the 4-byte magic (flag 0x02), which matters for the many small blobs
    (trees, small files) and costs nothing to read.
    """
    if cctx is not None and len(plain) >= 64:
        comp = cctx.compress(plain)
        if comp[:4] == ZSTD_MAGIC:
            if len(comp) - 4 < len(plain):
                return b"".join((b"\x02", memoryview(comp)[4:]))
        elif len(comp) < len(plain):  # a compressor configured without magic numbers
            return b"\x01" + comp
    return b"\x00" + bytes(plain)


_local = threading.local()


def _bare_dctx() -> zstandard.ZstdDecompressor:
    """This thread's decompressor of magic-less frames (flag 0x02)."""
    d: zstandard.ZstdDecompressor | None = getattr(_local, "bare", None)
    if d is None:
        d = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS)
        _local.bare = d
    return d


def decode_blob(stored: bytes, raw_length: int, dctx: zstandard.ZstdDecompressor) -> bytes:
    """The plaintext of a stored blob (not yet checked against its id).

    The decompressed size is bounded by ``raw_length`` from the index, so a damaged frame that
    claims a huge size is an ``IntegrityError``, never a giant allocation. ``dctx`` reads
    ordinary frames (flag 0x01); magic-less ones use a decompressor of this module.
    """
    if not stored:
        raise IntegrityError("empty stored blob")
    flag = stored[0]
    if flag == FLAG_RAW:
        return stored[1:]
    if flag in (FLAG_ZSTD, FLAG_ZSTD_BARE):
        frame = memoryview(stored)[1:]
        try:
            if flag == FLAG_ZSTD:
                claimed = zstandard.frame_content_size(frame)
            else:
                dctx = _bare_dctx()
                fp = zstandard.get_frame_parameters(frame, format=zstandard.FORMAT_ZSTD1_MAGICLESS)
                claimed = fp.content_size
                if claimed == zstandard.CONTENTSIZE_ERROR:
                    raise IntegrityError("corrupt compressed blob: bad frame header")
                if claimed == zstandard.CONTENTSIZE_UNKNOWN:
                    claimed = -1
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"corrupt compressed blob: {exc}") from None
        if claimed >= 0 and claimed != raw_length:
            raise IntegrityError(
                f"compressed blob claims {claimed} bytes, the index says {raw_length}"
            )
        try:
            return dctx.decompress(frame, max_output_size=max(raw_length, 1))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"corrupt compressed blob: {exc}") from None
    raise IntegrityError(f"unknown blob flag {flag}")


def decompress_bounded(frame: bytes, what: str, limit: int) -> bytes:
    """Decompress a zstd frame whose size must not exceed ``limit`` (damage is not a bomb)."""
    try:
        claimed = zstandard.frame_content_size(frame)
        if claimed > limit:
            raise IntegrityError(f"{what} claims {claimed} bytes: damaged")
        dctx = zstandard.ZstdDecompressor()
        if claimed >= 0:
            return dctx.decompress(frame)
        out = dctx.decompressobj().decompress(frame)
        if len(out) > limit:
            raise IntegrityError(f"{what} is larger than {limit} bytes: damaged")
        return out
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"corrupt {what}: {exc}") from None


# ---------------------------------------------------------------- packs


class PackEntry(NamedTuple):
    """Where one blob sits inside a pack.

    A named tuple, not a dataclass: index loading builds one per blob, and a tuple is made
    several times faster than a frozen dataclass."""

    type: int
    id: BlobId
    offset: int
    length: int
    raw_length: int


Sealer = Callable[[bytes], bytes]
"""Seals (or opens) one metadata object; supplied by the repository of an encrypted repo."""


def _encode_table(entries: Sequence[PackEntry], *, ids: bool = True) -> bytes:
    """The version-2 entry table of blobs (see the module docstring)."""
    n = len(entries)
    flags = 0 if ids else TABLE_NO_IDS
    pos = 0
    for e in entries:
        if e.offset != pos:
            flags |= TABLE_OFFSETS
            break
        pos += e.length
    parts = [
        TABLE_HEAD.pack(n, flags),
        bytes(e.type for e in entries),
        struct.pack(f"<{n}I", *(e.length for e in entries)),
        struct.pack(f"<{n}I", *(e.raw_length for e in entries)),
    ]
    if flags & TABLE_OFFSETS:
        parts.append(struct.pack(f"<{n}Q", *(e.offset for e in entries)))
    if ids:
        parts.extend(e.id for e in entries)
    return b"".join(parts)


class _Table(NamedTuple):
    """One parsed entry table (``ids`` None when the table leaves them out)."""

    types: bytes
    ids: list[bytes] | None
    offsets: Iterable[int]
    lengths: tuple[int, ...]
    raws: tuple[int, ...]
    end: int
    has_offsets: bool

    def rows(self, ids: Iterable[bytes] | None = None) -> list[IndexRow]:
        # (accumulate yields one offset more than there are blobs: zip stops at the lengths)
        use = self.ids if ids is None else ids
        assert use is not None
        return list(zip(self.types, use, self.offsets, self.lengths, self.raws, strict=False))


def _decode_table(body: bytes | memoryview, pos: int, *, ids_optional: bool = False) -> _Table:
    """Parse one entry table at ``pos``.

    Without an offsets column the offsets are the running sum of the lengths from 0. A table
    without ids (flag 0x02) is accepted only where ``ids_optional`` (pack headers).
    """
    try:
        n, flags = TABLE_HEAD.unpack_from(body, pos)
    except struct.error as exc:
        raise IntegrityError(f"entry table truncated: {exc}") from None
    if flags & ~(TABLE_OFFSETS | TABLE_NO_IDS) or (flags & TABLE_NO_IDS and not ids_optional):
        raise IntegrityError(f"entry table has unknown flags {flags:#x}")
    has_offsets = bool(flags & TABLE_OFFSETS)
    has_ids = not flags & TABLE_NO_IDS
    pos += TABLE_HEAD.size
    end = pos + n * (9 + (8 if has_offsets else 0) + (32 if has_ids else 0))
    if end > len(body):
        raise IntegrityError("entry table truncated")
    types = bytes(body[pos : pos + n])
    pos += n
    lengths = struct.unpack_from(f"<{n}I", body, pos)
    pos += 4 * n
    raws = struct.unpack_from(f"<{n}I", body, pos)
    pos += 4 * n
    offsets: Iterable[int]
    if has_offsets:
        offsets = struct.unpack_from(f"<{n}Q", body, pos)
        pos += 8 * n
    else:
        offsets = accumulate(lengths, initial=0)
    idl = [i for (i,) in _ID.iter_unpack(body[pos:end])] if has_ids else None
    return _Table(types, idl, offsets, lengths, raws, end, has_offsets)


def encode_pack_trailer(entries: Sequence[PackEntry], seal: Sealer | None = None) -> bytes:
    """The header and trailer appended after a pack's blobs (header sealed when ``seal``).

    The header of an unencrypted pack of tree blobs leaves the blob ids out: the index has
    them, and each is the keyed hash of its blob, so ``split_pack`` can always recompute them
    (see ``header_omits_ids``). Trees are small and many (one per directory and version), so
    their ids are a large part of a pack header. Encrypted packs keep them: a sealed blob opens
    only with its id.
    """
    ids = seal is not None or not entries or any(e.type != BLOB_TREE for e in entries)
    table = _encode_table(entries, ids=ids)
    frame = zstandard.ZstdCompressor(level=_TABLE_LEVEL).compress(table)
    if len(frame) < len(table):
        header = bytes([HEADER_V2]) + frame
    else:  # never more than a version-1 header of the same blobs
        header = bytes([HEADER_V2_RAW]) + table
    if seal is not None:
        header = seal(header)
        return header + TRAILER.pack(len(header), PACK_MAGIC_SEALED, PACK_VERSION)
    return header + TRAILER.pack(len(header), PACK_MAGIC, PACK_VERSION)


def read_pack_trailer(tail: bytes, pack_size: int) -> tuple[int, bool]:
    """Validate the 9-byte trailer; return (header length, whether the header is sealed)."""
    if len(tail) != TRAILER.size:
        raise IntegrityError("pack too short for a trailer")
    hlen, magic, version = TRAILER.unpack(tail)
    if magic not in (PACK_MAGIC, PACK_MAGIC_SEALED):
        raise IntegrityError("not a snapdeck pack (bad magic)")
    if version > PACK_VERSION:
        raise UnsupportedFormat(f"pack format version {version} is newer than supported")
    sealed = magic == PACK_MAGIC_SEALED
    body = hlen - SEAL_OVERHEAD if sealed else hlen
    if body < 0 or (version < 2 and body % ENTRY.size) or hlen + TRAILER.size > pack_size:
        raise IntegrityError("pack header length is invalid")
    return int(hlen), sealed


def decode_pack_trailer(tail: bytes, pack_size: int) -> int:
    """Validate the 9-byte trailer of an unencrypted pack; return the header length."""
    hlen, sealed = read_pack_trailer(tail, pack_size)
    if sealed:
        raise IntegrityError("pack header is encrypted (read it through the repository)")
    return hlen


def _header_table(header: bytes) -> bytes | None:
    """The entry table of a version-2 header (None: a version-1 header)."""
    marker = header[:1]
    if marker == _HEADER_V2:
        # A table is ~41 bytes per blob and zstd never shrinks the ids: 64 bytes per header
        # byte is far beyond any real header, so damage is not a decompression bomb.
        return decompress_bounded(header[1:], "pack header", 64 * len(header) + 1024)
    if marker == _HEADER_V2_RAW:
        return header[1:]
    return None


def header_omits_ids(header: bytes) -> bool:
    """Whether a pack header (opened, if sealed) leaves out its blob ids: then only
    ``split_pack`` of the whole pack, with ``hash_blob``, can list its entries. A damaged
    header is an ``IntegrityError``."""
    table = _header_table(header)
    return table is not None and len(table) >= TABLE_HEAD.size and bool(table[4] & TABLE_NO_IDS)


Recover = Callable[[int, int, int], bytes]
"""(offset, length, raw length) of a blob in its pack → its id (reads and hashes the blob)."""


def decode_pack_header(
    header: bytes, data_size: int, recover: Recover | None = None
) -> list[PackEntry]:
    """Parse a pack header (either version); ``data_size`` (where the header starts) bounds
    every entry. A header without ids needs ``recover`` (see ``split_pack``)."""
    table = _header_table(header)
    if table is not None:
        t = _decode_table(table, 0, ids_optional=True)
        if t.end != len(table):
            raise IntegrityError("pack header has trailing bytes")
        if not t.has_offsets and sum(t.lengths) != data_size:
            raise IntegrityError("pack header does not cover the pack's blobs")
        if t.ids is None:
            if recover is None:
                raise IntegrityError(
                    "pack header leaves out the blob ids (read the whole pack to list it)"
                )
            t = t._replace(offsets=list(t.offsets)[: len(t.lengths)])
            for off, ln in zip(t.offsets, t.lengths, strict=True):
                if off + ln > data_size:
                    raise IntegrityError("pack header entry out of bounds")
            ids = [
                recover(off, ln, raw)
                for off, ln, raw in zip(t.offsets, t.lengths, t.raws, strict=True)
            ]
            rows = t.rows(ids)
        else:
            rows = t.rows()
    else:
        if len(header) % ENTRY.size:
            raise IntegrityError("pack header length is invalid")
        rows = list(ENTRY.iter_unpack(header))
    out: list[PackEntry] = []
    for t_, bid, off, ln, raw in rows:
        if off + ln > data_size or t_ not in (BLOB_DATA, BLOB_TREE):
            raise IntegrityError("pack header entry out of bounds")
        out.append(PackEntry(t_, BlobId(bid), off, ln, raw))
    return out


def _std_dctx() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "std", None)
    if d is None:
        d = zstandard.ZstdDecompressor()
        _local.std = d
    return d


def split_pack(
    data: bytes,
    open_header: Sealer | None = None,
    hash_blob: Callable[[bytes], bytes] | None = None,
) -> list[PackEntry]:
    """Parse the header of a whole pack held in memory.

    ``open_header`` is given for encrypted repositories, whose packs must all be sealed.
    ``hash_blob`` (the repository's keyed hash) recomputes the ids a tree pack's header
    leaves out; a blob that does not decode makes the header unreadable (``IntegrityError``
    naming its offset), since its id cannot be known.
    """
    hlen, sealed = read_pack_trailer(data[-TRAILER.size :], len(data))
    end = len(data) - TRAILER.size
    header = data[end - hlen : end]
    if sealed != (open_header is not None):
        raise IntegrityError(
            "pack header is encrypted (read it through the repository)"
            if sealed
            else "pack header is not encrypted, in an encrypted repository"
        )
    if open_header is not None:
        header = open_header(header)
    recover: Recover | None = None
    if hash_blob is not None:
        mv = memoryview(data)

        def recover(off: int, ln: int, raw: int) -> bytes:
            try:
                return hash_blob(decode_blob(bytes(mv[off : off + ln]), raw, _std_dctx()))
            except IntegrityError as exc:
                raise IntegrityError(
                    f"the blob at offset {off} cannot be read to recompute its id: {exc}"
                ) from None

    return decode_pack_header(header, end - hlen, recover)


# ---------------------------------------------------------------- index segments


def encode_index(
    packs: Iterable[tuple[PackId, Sequence[PackEntry]]], seal: Sealer | None = None
) -> bytes:
    """Serialise an index segment covering the given packs (sealed when ``seal``)."""
    parts: list[bytes] = []
    count = 0
    for pack_id, entries in packs:
        count += 1
        parts.append(bytes.fromhex(pack_id))
        parts.append(_encode_table(entries))
    body = U32.pack(count) + b"".join(parts)
    frame = zstandard.ZstdCompressor(level=_TABLE_LEVEL).compress(body)
    if seal is not None:
        return INDEX_MAGIC_SEALED + bytes([INDEX_VERSION]) + seal(frame)
    return INDEX_MAGIC + bytes([INDEX_VERSION]) + frame


def decode_index(
    data: bytes, open_: Sealer | None = None
) -> Iterator[tuple[PackId, list[PackEntry]]]:
    """Parse an index segment into (pack id, entries) pairs.

    ``open_`` is given for encrypted repositories, whose segments must all be sealed.
    """
    make = PackEntry._make
    for pid, rows in decode_index_rows(data, open_):
        yield pid, list(map(make, rows))


IndexRow = tuple[int, bytes, int, int, int]
"""A ``PackEntry`` as a plain tuple (type, id, offset, length, raw_length)."""


def decode_index_rows(
    data: bytes, open_: Sealer | None = None
) -> Iterator[tuple[PackId, list[IndexRow]]]:
    """``decode_index`` with plain tuples for entries (loading a large index fast)."""
    if len(data) < 5 or data[:4] not in (INDEX_MAGIC, INDEX_MAGIC_SEALED):
        raise IntegrityError("not a snapdeck index segment")
    version = data[4]
    if version > INDEX_VERSION:
        raise UnsupportedFormat(f"index format version {version} is newer than supported")
    frame = data[5:]
    sealed = data[:4] == INDEX_MAGIC_SEALED
    if sealed != (open_ is not None):
        raise IntegrityError(
            "index segment is encrypted (read it through the repository)"
            if sealed
            else "index segment is not encrypted, in an encrypted repository"
        )
    if open_ is not None:
        frame = open_(frame)
    # An index body is at most ~50 bytes per blob; zstd rarely shrinks it below 1/50.
    body = decompress_bounded(frame, "index segment", 64 * 1024 * 1024 + 100 * len(data))
    try:
        (count,) = U32.unpack_from(body, 0)
        pos = 4
        for _ in range(count):
            if pos + 32 > len(body):
                raise IntegrityError("index segment truncated")
            pid = PackId(body[pos : pos + 32].hex())
            if version >= 2:
                table = _decode_table(body, pos + 32)
                entries, pos = table.rows(), table.end
            else:
                (n,) = U32.unpack_from(body, pos + 32)
                pos += 36
                end = pos + n * ENTRY.size
                if end > len(body):
                    raise IntegrityError("index segment truncated")
                entries = list(ENTRY.iter_unpack(body[pos:end]))
                pos = end
            yield pid, entries
    except struct.error as exc:
        raise IntegrityError(f"index segment truncated: {exc}") from None


# ---------------------------------------------------------------- trees


def encode_tree(tree: Tree) -> bytes:
    """Serialise a tree deterministically (same entries, same bytes, same id)."""
    rows = [
        [
            e.name,
            e.kind.value,
            e.mode,
            e.uid,
            e.gid,
            e.mtime_ns,
            e.size,
            list(e.content) if e.kind is EntryKind.FILE else e.payload,
            e.ino,
            e.ctime_ns,
            e.nlink,
            dict(sorted(e.extra.items())) if e.extra else None,
        ]
        for e in tree.entries
    ]
    return msgpack.packb({"v": FORMAT_VERSION, "e": rows}, use_bin_type=True)


_KINDS = {k.value: k for k in EntryKind}


def _check_entry_name(name: object) -> bytes:
    if not isinstance(name, bytes):
        raise IntegrityError("tree entry name is not bytes")
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise IntegrityError(f"tree entry has an unsafe name {name!r}")
    return name


def _check_payload(kind: EntryKind, payload: Any) -> tuple[tuple[BlobId, ...], Any]:
    """Validate a row's payload for its kind; returns (content, payload)."""
    if kind is EntryKind.FILE:
        if payload is None:
            return (), None
        if not isinstance(payload, list) or not all(
            isinstance(b, bytes) and len(b) == 32 for b in payload
        ):
            raise IntegrityError("file entry content is not a list of blob ids")
        return tuple(BlobId(b) for b in payload), None
    if kind is EntryKind.DIR:
        if not isinstance(payload, bytes) or len(payload) != 32:
            raise IntegrityError("directory entry has no valid subtree id")
        return (), payload
    if kind is EntryKind.SYMLINK:
        if not isinstance(payload, bytes):
            raise IntegrityError("symlink entry has no target")
        return (), payload
    if kind in (EntryKind.CHARDEV, EntryKind.BLOCKDEV):
        if not isinstance(payload, int) or isinstance(payload, bool):
            raise IntegrityError("device entry has no device number")
        return (), payload
    return (), None


def decode_tree_rows(data: bytes) -> list[Any]:
    """A tree blob's raw rows (msgpack lists), not yet validated: see ``entry_from_row``.

    For hot paths that only compare a few fields (the no-change snapshot); anything taken
    from a row into a new tree goes through ``entry_from_row`` first.
    """
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
        version = doc["v"]
        rows = doc["e"]
    except Exception as exc:
        raise IntegrityError(f"tree is unreadable: {exc}") from None
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(rows, list):
        raise IntegrityError("tree header is malformed")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(f"tree format version {version} is newer than supported")
    return rows


def entry_from_row(r: Any) -> Entry:
    """One validated entry of a raw tree row (name, kind, payload and extras checked)."""
    try:
        name = _check_entry_name(r[0])
        kind = _KINDS[r[1]]
        content, payload = _check_payload(kind, r[7])
        extra = r[11]
        if extra is not None and not isinstance(extra, dict):
            raise IntegrityError("tree entry extras are malformed")
        return Entry(
            name,
            kind,
            int(r[2]),
            int(r[3]),
            int(r[4]),
            int(r[5]),
            int(r[6]),
            content,
            payload,
            int(r[8]),
            int(r[9]),
            int(r[10]),
            extra or None,
        )
    except IntegrityError:
        raise
    except Exception as exc:
        raise IntegrityError(f"tree entry is malformed: {exc}") from None


def decode_tree(data: bytes) -> Tree:
    """Parse a tree blob; validates entry names (sorted, unique, no '/', NUL, '.', '..'),
    kinds and payload types, so nothing downstream meets a malformed entry."""
    rows = decode_tree_rows(data)
    entries: list[Entry] = []
    prev = b""
    for r in rows:
        e = entry_from_row(r)
        if entries and e.name <= prev:
            raise IntegrityError("tree entries are not sorted and unique")
        prev = e.name
        entries.append(e)
    return Tree(tuple(entries))


# ---------------------------------------------------------------- snapshots


def encode_snapshot(s: Snapshot) -> bytes:
    """Serialise a snapshot object (JSON; names as surrogate-escaped strings)."""
    doc = {
        "v": FORMAT_VERSION,
        "time": s.time.isoformat(),
        "host": s.host,
        "source": s.source,
        "tree": s.tree,
        "parent": s.parent,
        "tags": list(s.tags),
        "message": s.message,
        "author": s.author,
        "trigger": s.trigger,
        "stats": s.stats.to_dict(),
    }
    return json.dumps(doc, sort_keys=True, ensure_ascii=True).encode()


def decode_snapshot(snap_id: str, data: bytes) -> Snapshot:
    """Parse a snapshot object."""
    try:
        doc = json.loads(data)
        version = int(doc["v"])
    except Exception as exc:
        raise IntegrityError(f"snapshot {snap_id[:8]} is unreadable: {exc}") from None
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(f"snapshot {snap_id[:8]} has a newer format ({version})")
    try:
        return Snapshot(
            id=snap_id,
            time=datetime.fromisoformat(doc["time"]),
            host=str(doc["host"]),
            source=str(doc["source"]),
            tree=str(doc["tree"]),
            parent=doc.get("parent"),
            tags=tuple(doc.get("tags", ())),
            message=str(doc.get("message", "")),
            author=str(doc.get("author", "")),
            trigger=str(doc.get("trigger", "manual")),
            stats=SnapshotStats.from_dict(doc.get("stats", {})),
        )
    except Exception as exc:
        raise IntegrityError(f"snapshot {snap_id[:8]} is malformed: {exc}") from None


# ---------------------------------------------------------------- sealed envelopes (encryption)


def wrap_sealed(magic: bytes, sealed: bytes) -> bytes:
    """A sealed snapshot or ref object: magic, version, then the sealed box."""
    return magic + bytes([FORMAT_VERSION]) + sealed


def unwrap_sealed(magic: bytes, data: bytes, what: str) -> bytes:
    """The sealed box inside an object written by ``wrap_sealed``."""
    if len(data) < 5 + SEAL_OVERHEAD or data[:4] != magic:
        raise IntegrityError(f"{what} is not an encrypted snapdeck object")
    if data[4] > FORMAT_VERSION:
        raise UnsupportedFormat(f"{what} has a newer format ({data[4]})")
    return data[5:]
