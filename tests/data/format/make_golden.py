"""Build the golden format objects from fixed inputs (run once per version; commit the output).

    .venv/bin/python tests/data/format/make_golden.py v2     # writes tests/data/format/v2/*

``tests/backend/test_format.py`` imports ``build()`` from here and checks that today's encoders
still produce exactly the committed bytes and that the decoders read them back to these inputs.
Never regenerate the files to make that test pass: a difference means the on-disk format
changed, which needs a new format version. Everything here is fixed: the id key, the entries,
the times; zstd level 3 output is deterministic for a given zstandard version (pinned).

``v1/`` was written by snapdeck's version-1 writers (blob flag 0x01, 49-byte header entries,
index version 1). Those writers are frozen below (``_v1_*``) so that the test can still prove
the committed v1 bytes are what the inputs encode to; the decoders must read both versions.
Only the pack and the index changed in version 2: config, tree and snapshot are the same bytes.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import blake3
import zstandard

from backend import format as fmt
from backend.ids import BlobId, PackId, object_name
from backend.model import Entry, EntryKind, Snapshot, SnapshotStats, Tree

HERE = Path(__file__).resolve().parent
VERSIONS = ("v1", "v2")

ID_KEY = bytes(range(32))
"""The fixed keyed-hash key of the golden repository."""

CONFIG = fmt.RepoConfig(
    id="0123456789abcdef0123456789abcdef",
    created="2026-01-02T03:04:05.678901+00:00",
    chunker=fmt.ChunkerParams(min_size=262144, avg_size=1048576, max_size=4194304, seed=424242),
    compression_level=3,
    id_key=ID_KEY,
)

RAW_BLOB = b"short!"
"""Stored raw (flag 0): too short to compress."""
ZSTD_BLOB = b"snapdeck golden blob " * 40
"""Stored compressed (flag 1): repetitive."""


def blob_id(data: bytes) -> BlobId:
    """The keyed id of a plaintext under the golden key."""
    return BlobId(blake3.blake3(data, key=ID_KEY).digest())


SUBTREE = Tree(())
SUBTREE_BYTES = fmt.encode_tree(SUBTREE)

TREE = Tree(
    (
        Entry(
            name=b"\n\t[bold] \xff",
            kind=EntryKind.FILE,
            mode=0o4755,
            uid=1000,
            gid=100,
            mtime_ns=1_767_323_045_123_456_789,
            size=len(RAW_BLOB) + len(ZSTD_BLOB),
            content=(blob_id(RAW_BLOB), blob_id(ZSTD_BLOB)),
            ino=42,
            ctime_ns=1_767_323_046_000_000_001,
            nlink=2,
            extra={"dev": 2049, "xattrs": {b"user.k": b"v\x00\xff"}},
        ),
        Entry(name=b"empty", kind=EntryKind.FILE, mode=0o600, uid=0, gid=0, mtime_ns=0, size=0),
        Entry(name=b"fifo", kind=EntryKind.FIFO, mode=0o644, uid=1, gid=2, mtime_ns=5, size=0),
        Entry(
            name=b"link",
            kind=EntryKind.SYMLINK,
            mode=0o777,
            uid=0,
            gid=0,
            mtime_ns=-1_000_000_000,
            size=0,
            payload=b"/abs/\xfetarget",
        ),
        Entry(
            name=b"null",
            kind=EntryKind.CHARDEV,
            mode=0o666,
            uid=0,
            gid=0,
            mtime_ns=7,
            size=0,
            payload=259,
        ),
        Entry(
            name=b"sub",
            kind=EntryKind.DIR,
            mode=0o755,
            uid=0,
            gid=0,
            mtime_ns=9,
            size=0,
            payload=bytes(blob_id(SUBTREE_BYTES)),
            extra={"xattrs": {b"user.dir": b"1"}},
        ),
        Entry(name="ü".encode(), kind=EntryKind.FILE, mode=0o644, uid=0, gid=0, mtime_ns=1, size=0),
    )
)
TREE_BYTES = fmt.encode_tree(TREE)


def _v1_blob(plain: bytes, cctx: zstandard.ZstdCompressor) -> bytes:
    """The version-1 blob writer (frozen): whole zstd frame, when that saves over 16 bytes."""
    if len(plain) >= 64:
        comp = cctx.compress(plain)
        if len(comp) < len(plain) - 16:
            return b"\x01" + comp
    return b"\x00" + plain


def _v1_rows(entries: list[fmt.PackEntry]) -> bytes:
    return b"".join(fmt.ENTRY.pack(e.type, e.id, e.offset, e.length, e.raw_length) for e in entries)


def _v1_index(pack_id: PackId, entries: list[fmt.PackEntry]) -> bytes:
    """The version-1 index writer (frozen)."""
    body = fmt.U32.pack(1) + bytes.fromhex(pack_id) + fmt.U32.pack(len(entries))
    body += _v1_rows(entries)
    return b"SDIX\x01" + zstandard.ZstdCompressor(level=3).compress(body)


def pack(version: str = "v2") -> tuple[bytes, list[fmt.PackEntry]]:
    """A pack of a raw blob, a compressed blob and two tree blobs, with its entries."""
    cctx = zstandard.ZstdCompressor(level=3)
    body = b""
    entries: list[fmt.PackEntry] = []
    for typ, plain in (
        (fmt.BLOB_DATA, RAW_BLOB),
        (fmt.BLOB_DATA, ZSTD_BLOB),
        (fmt.BLOB_TREE, SUBTREE_BYTES),
        (fmt.BLOB_TREE, TREE_BYTES),
    ):
        stored = _v1_blob(plain, cctx) if version == "v1" else fmt.encode_blob(plain, cctx)
        entries.append(fmt.PackEntry(typ, blob_id(plain), len(body), len(stored), len(plain)))
        body += stored
    if version == "v1":
        rows = _v1_rows(entries)
        return body + rows + fmt.TRAILER.pack(len(rows), b"SDPK", 1), entries
    return body + fmt.encode_pack_trailer(entries), entries


PACKS = {v: pack(v) for v in VERSIONS}
PACK_BYTES, PACK_ENTRIES = PACKS["v2"]
PACK_ID = PackId(object_name(PACK_BYTES))
PACK_BYTES_V1, PACK_ENTRIES_V1 = PACKS["v1"]
PACK_ID_V1 = PackId(object_name(PACK_BYTES_V1))

SNAPSHOT = Snapshot(
    id="",
    time=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1))),
    host="golden-host",
    source="/home/u/proj \udcff",
    tree=bytes(blob_id(TREE_BYTES)).hex(),
    parent="ab" * 32,
    tags=("nightly", "ü"),
    message="golden\nmessage",
    author="u",
    trigger="watch",
    stats=SnapshotStats(
        files_new=1,
        files_changed=2,
        files_unmodified=3,
        files_removed=4,
        dirs=5,
        bytes_read=6,
        bytes_added=7,
        bytes_stored=8,
        total_files=9,
        total_bytes=10,
        duration_s=1.25,
    ),
)


def build(version: str = "v2") -> dict[str, bytes]:
    """File name → bytes of every golden object of a format version."""
    data, entries = PACKS[version]
    pid = PackId(object_name(data))
    return {
        "config.json": fmt.encode_config(CONFIG),
        "pack.bin": data,
        "index.bin": (
            _v1_index(pid, entries) if version == "v1" else fmt.encode_index([(pid, entries)])
        ),
        "tree.bin": TREE_BYTES,
        "snapshot.json": fmt.encode_snapshot(SNAPSHOT),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in VERSIONS:
        print(f"usage: make_golden.py {{{','.join(VERSIONS)}}}", file=sys.stderr)
        return 2
    out = HERE / argv[0]
    out.mkdir(exist_ok=True)
    for name, data in build(argv[0]).items():
        (out / name).write_bytes(data)
        print(f"wrote {out / name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
