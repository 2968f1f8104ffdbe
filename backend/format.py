"""Format layer: pure encode/decode of every repository object. No I/O.

Objects and their layouts (all integers little-endian; version 1):

Repository config (``config/config``), JSON::

    {"format": "snapdeck-repository", "version": 1, "id": hex16, "created": iso8601,
     "chunker": {"min": int, "avg": int, "max": int, "seed": int},
     "compression": {"algorithm": "zstd", "level": int}, "id_key": hex32}

Stored blob (inside a pack): one flag byte then the payload.
    0x00 raw plaintext, 0x01 zstd frame of the plaintext.
    The blob id is the keyed BLAKE3 of the plaintext; readers re-hash and compare.

Pack (``data/<id>``), id = BLAKE3 of the whole pack::

    blob_0 … blob_n-1 | header | trailer
    header  = n × ENTRY  (type u8, id 32B, offset u64, length u32, raw_length u32)
    trailer = header_length u32 | b"SDPK" | version u8         (9 bytes)

Index segment (``index/<id>``), id = BLAKE3 of the segment::

    b"SDIX" | version u8 | zstd( pack_count u32 | per pack: pack id 32B | n u32 | n × ENTRY )

Tree blob (type TREE): msgpack ``{"v": 1, "e": [entry, …]}``, entries sorted by name bytes, each a
list ``[name, kind, mode, uid, gid, mtime_ns, size, payload, ino, ctime_ns, nlink, extra]``:
payload is the list of blob ids (file), the subtree id (dir), the link target (symlink), rdev
(devices) or None; extra is None or a dict (``xattrs``, ``dev`` for hardlinked files).

Snapshot (``snapshots/<id>``), id = BLAKE3 of the JSON bytes: see ``Snapshot`` in model.py.

Any object of a newer version raises ``UnsupportedFormat``; anything malformed raises
``IntegrityError`` naming the object.

Encrypted repositories (repository format version 2 = version 1 + encryption; see crypto.py).
Every object keeps its version-1 encoding inside a sealed box (``nonce | ciphertext | tag``);
an unencrypted repository is written exactly as version 1, byte for byte. Version 2 exists so
that a snapdeck that predates encryption refuses such a repository with "upgrade snapdeck"
instead of misreading it. The config gains ``"encryption": {"cipher": name}`` and loses
``id_key`` (derived from the master key; so is the chunker seed, stored as 0)::

    stored blob     sealed(flag + payload), associated data = the blob id
    pack            blob_0 … blob_n-1 | sealed(header) | len u32 | b"SDPE" | version u8
    index segment   b"SDIE" | version u8 | sealed(zstd(body as in v1))
    snapshot        b"SDSE" | version u8 | sealed(JSON as in v1)
    ref (refs/…)    b"SDRE" | version u8 | sealed(JSON), associated data binds the ref's name

Object names stay the plain BLAKE3 of the stored (sealed) bytes, so ``check`` can verify every
object against its name without the key.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import msgpack
import zstandard

from backend.errors import IntegrityError, UnsupportedFormat
from backend.ids import BlobId, PackId
from backend.model import Entry, EntryKind, Snapshot, SnapshotStats, Tree

FORMAT_VERSION = 1
REPO_FORMAT = "snapdeck-repository"
ENCRYPTED_REPO_VERSION = 2
"""Repository (config) version of encrypted repositories; their objects are v1 inside."""

BLOB_DATA = 0
BLOB_TREE = 1

FLAG_RAW = 0
FLAG_ZSTD = 1

PACK_MAGIC = b"SDPK"
INDEX_MAGIC = b"SDIX"
PACK_MAGIC_SEALED = b"SDPE"
INDEX_MAGIC_SEALED = b"SDIE"
SNAPSHOT_MAGIC_SEALED = b"SDSE"
REF_MAGIC_SEALED = b"SDRE"
SEAL_OVERHEAD = 28
"""nonce + tag of a sealed box (crypto.OVERHEAD; format stays free of crypto imports)."""
ENTRY = struct.Struct("<B32sQII")
TRAILER = struct.Struct("<I4sB")
U32 = struct.Struct("<I")


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
    """Compress a blob when that saves space; returns the stored bytes (flag + payload)."""
    if cctx is not None and len(plain) >= 64:
        comp = cctx.compress(plain)
        if len(comp) < len(plain) - 16:
            return b"\x01" + comp
    return b"\x00" + bytes(plain)


def decode_blob(stored: bytes, raw_length: int, dctx: zstandard.ZstdDecompressor) -> bytes:
    """The plaintext of a stored blob (not yet checked against its id).

    The decompressed size is bounded by ``raw_length`` from the index, so a damaged frame that
    claims a huge size is an ``IntegrityError``, never a giant allocation.
    """
    if not stored:
        raise IntegrityError("empty stored blob")
    flag = stored[0]
    if flag == FLAG_RAW:
        return stored[1:]
    if flag == FLAG_ZSTD:
        frame = stored[1:]
        try:
            claimed = zstandard.frame_content_size(frame)
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


def encode_pack_trailer(entries: Sequence[PackEntry], seal: Sealer | None = None) -> bytes:
    """The header and trailer appended after a pack's blobs (header sealed when ``seal``)."""
    header = b"".join(ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length) for e in entries)
    if seal is not None:
        header = seal(header)
        return header + TRAILER.pack(len(header), PACK_MAGIC_SEALED, FORMAT_VERSION)
    return header + TRAILER.pack(len(header), PACK_MAGIC, FORMAT_VERSION)


def read_pack_trailer(tail: bytes, pack_size: int) -> tuple[int, bool]:
    """Validate the 9-byte trailer; return (header length, whether the header is sealed)."""
    if len(tail) != TRAILER.size:
        raise IntegrityError("pack too short for a trailer")
    hlen, magic, version = TRAILER.unpack(tail)
    if magic not in (PACK_MAGIC, PACK_MAGIC_SEALED):
        raise IntegrityError("not a snapdeck pack (bad magic)")
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(f"pack format version {version} is newer than supported")
    sealed = magic == PACK_MAGIC_SEALED
    body = hlen - SEAL_OVERHEAD if sealed else hlen
    if body < 0 or body % ENTRY.size or hlen + TRAILER.size > pack_size:
        raise IntegrityError("pack header length is invalid")
    return int(hlen), sealed


def decode_pack_trailer(tail: bytes, pack_size: int) -> int:
    """Validate the 9-byte trailer of an unencrypted pack; return the header length."""
    hlen, sealed = read_pack_trailer(tail, pack_size)
    if sealed:
        raise IntegrityError("pack header is encrypted (read it through the repository)")
    return hlen


def decode_pack_header(header: bytes, data_size: int) -> list[PackEntry]:
    """Parse a pack header; ``data_size`` bounds every entry."""
    out: list[PackEntry] = []
    for t, bid, off, ln, raw in ENTRY.iter_unpack(header):
        if off + ln > data_size or t not in (BLOB_DATA, BLOB_TREE):
            raise IntegrityError("pack header entry out of bounds")
        out.append(PackEntry(t, BlobId(bid), off, ln, raw))
    return out


def split_pack(data: bytes, open_header: Sealer | None = None) -> list[PackEntry]:
    """Parse the header of a whole pack held in memory.

    ``open_header`` is given for encrypted repositories, whose packs must all be sealed.
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
    return decode_pack_header(header, end - hlen)


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
        parts.append(U32.pack(len(entries)))
        parts.extend(ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length) for e in entries)
    body = U32.pack(count) + b"".join(parts)
    frame = zstandard.ZstdCompressor(level=3).compress(body)
    if seal is not None:
        return INDEX_MAGIC_SEALED + bytes([FORMAT_VERSION]) + seal(frame)
    return INDEX_MAGIC + bytes([FORMAT_VERSION]) + frame


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
    if data[4] > FORMAT_VERSION:
        raise UnsupportedFormat(f"index format version {data[4]} is newer than supported")
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
            pid = PackId(body[pos : pos + 32].hex())
            (n,) = U32.unpack_from(body, pos + 32)
            pos += 36
            end = pos + n * ENTRY.size
            if end > len(body):
                raise IntegrityError("index segment truncated")
            entries: list[IndexRow] = list(ENTRY.iter_unpack(body[pos:end]))
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
