"""The on-disk format, versions 1 and 2: golden bytes, version checks, damage detection.

The golden files in ``tests/data/format/v1/`` and ``v2/`` were written once by
``tests/data/format/make_golden.py`` from fixed inputs. If an encoder no longer produces those
exact bytes, repositories written by older snapdecks may become unreadable or dedup may break
(tree ids would change): bump the format version instead of regenerating the files. Every
version stays readable: the decoders are checked against both.
"""

from __future__ import annotations

import importlib.util
import json
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
import zstandard

from backend import format as fmt
from backend.errors import IntegrityError, UnsupportedFormat
from backend.ids import object_name
from backend.model import Entry, EntryKind, Tree

DATA = Path(__file__).resolve().parent.parent / "data" / "format"


def _load_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("snapdeck_make_golden", DATA / "make_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


G = _load_golden()
FILES = ("config.json", "pack.bin", "index.bin", "tree.bin", "snapshot.json")
VERSIONED = [("v2", n) for n in FILES] + [("v1", "pack.bin"), ("v1", "index.bin")]
"""Every golden object: config, tree and snapshot did not change in version 2."""


def golden(name: str, version: str = "v2") -> bytes:
    return (DATA / version / name).read_bytes()


def _decode_pack(data: bytes) -> list[tuple[fmt.PackEntry, bytes]]:
    """Parse a whole pack and decode + verify every blob (what a reader does)."""
    dctx = zstandard.ZstdDecompressor()
    out = []
    for e in fmt.split_pack(data):
        plain = fmt.decode_blob(data[e.offset : e.offset + e.length], e.raw_length, dctx)
        if G.blob_id(plain) != e.id:
            raise IntegrityError("blob does not match its id")
        out.append((e, plain))
    return out


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "config.json": fmt.decode_config,
    "pack.bin": _decode_pack,
    "index.bin": lambda d: list(fmt.decode_index(d)),
    "tree.bin": fmt.decode_tree,
    "snapshot.json": lambda d: fmt.decode_snapshot(object_name(d), d),
}


# ---------------------------------------------------------------- golden bytes


@pytest.mark.parametrize("name", FILES)
def test_encoder_output_is_byte_identical_to_golden_v2(name: str) -> None:
    assert G.build("v2")[name] == golden(name), (
        f"the encoding of {name} changed: old repositories would no longer match "
        "(bump the format version rather than regenerating the golden files)"
    )


@pytest.mark.parametrize("name", FILES)
def test_frozen_v1_writers_still_produce_the_golden_v1_bytes(name: str) -> None:
    """The expectations of the v1 decoding tests (``G.PACK_ENTRIES_V1``) are what v1 wrote."""
    assert G.build("v1")[name] == golden(name, "v1")


@pytest.mark.parametrize("name", ["config.json", "tree.bin", "snapshot.json"])
def test_version_2_kept_config_tree_and_snapshot_bytes(name: str) -> None:
    """Tree ids are hashes of tree bytes: an unchanged tree encoding keeps dedup across the
    upgrade (a snapshot after it reuses every unchanged tree of one taken before)."""
    assert golden(name, "v1") == golden(name, "v2")


def test_golden_config_decodes_to_its_inputs() -> None:
    cfg = fmt.decode_config(golden("config.json"))
    assert cfg == G.CONFIG
    assert cfg.id_key == bytes(range(32))
    assert cfg.chunker == fmt.ChunkerParams(262144, 1048576, 4194304, 424242)
    assert cfg.version == 1


def test_golden_v1_pack_decodes_to_its_blobs() -> None:
    data = golden("pack.bin", "v1")
    assert data[-9:] == struct.pack("<I", 4 * fmt.ENTRY.size) + b"SDPK\x01"
    blobs = _decode_pack(data)
    assert [e for e, _ in blobs] == G.PACK_ENTRIES_V1
    assert [p for _, p in blobs] == [G.RAW_BLOB, G.ZSTD_BLOB, G.SUBTREE_BYTES, G.TREE_BYTES]
    assert [e.type for e, _ in blobs] == [0, 0, 1, 1]
    # one blob of each storage flavour
    assert data[G.PACK_ENTRIES_V1[0].offset] == fmt.FLAG_RAW
    assert data[G.PACK_ENTRIES_V1[1].offset] == fmt.FLAG_ZSTD
    assert G.PACK_ENTRIES_V1[1].length < len(G.ZSTD_BLOB)
    assert object_name(data) == G.PACK_ID_V1


def test_golden_v2_pack_decodes_to_its_blobs() -> None:
    data = golden("pack.bin")
    hlen = struct.unpack("<I", data[-9:-5])[0]
    assert data[-5:] == b"SDPK\x02"
    header_start = len(data) - 9 - hlen
    # four blobs: the table as it is (zstd would not shrink it), offsets left out
    assert data[header_start] == fmt.HEADER_V2_RAW
    assert hlen == 1 + 5 + 4 * (fmt.ENTRY.size - 8)
    blobs = _decode_pack(data)
    assert [e for e, _ in blobs] == G.PACK_ENTRIES
    assert [p for _, p in blobs] == [G.RAW_BLOB, G.ZSTD_BLOB, G.SUBTREE_BYTES, G.TREE_BYTES]
    assert [e.type for e, _ in blobs] == [0, 0, 1, 1]
    assert data[G.PACK_ENTRIES[0].offset] == fmt.FLAG_RAW
    assert data[G.PACK_ENTRIES[1].offset] == fmt.FLAG_ZSTD_BARE
    assert data[G.PACK_ENTRIES[3].offset] == fmt.FLAG_ZSTD_BARE  # even a 347-byte tree
    # the magic-less frame is the v1 frame without its first four bytes
    assert G.PACK_ENTRIES[1].length == G.PACK_ENTRIES_V1[1].length - 4
    assert G.PACK_ENTRIES[-1].offset + G.PACK_ENTRIES[-1].length == header_start
    assert object_name(data) == G.PACK_ID


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_golden_index_decodes_to_its_pack(version: str) -> None:
    data = golden("index.bin", version)
    assert data[:5] == b"SDIX" + bytes([int(version[1])])
    pid, entries = (
        (G.PACK_ID_V1, G.PACK_ENTRIES_V1) if version == "v1" else (G.PACK_ID, G.PACK_ENTRIES)
    )
    assert list(fmt.decode_index(data)) == [(pid, entries)]
    assert list(fmt.decode_index_rows(data)) == [(pid, [tuple(e) for e in entries])]


def test_golden_tree_decodes_to_its_entries() -> None:
    tree = fmt.decode_tree(golden("tree.bin"))
    assert tree == G.TREE
    first = tree.entries[0]
    assert first.name == b"\n\t[bold] \xff"
    assert first.mode == 0o4755
    assert first.content == (G.blob_id(G.RAW_BLOB), G.blob_id(G.ZSTD_BLOB))
    assert first.extra == {"dev": 2049, "xattrs": {b"user.k": b"v\x00\xff"}}
    assert tree.find(b"link") is not None and tree.find(b"link").payload == b"/abs/\xfetarget"
    assert tree.find(b"null").payload == 259
    assert [e.kind for e in tree.entries] == [
        EntryKind.FILE,
        EntryKind.FILE,
        EntryKind.FIFO,
        EntryKind.SYMLINK,
        EntryKind.CHARDEV,
        EntryKind.DIR,
        EntryKind.FILE,
    ]


def test_golden_snapshot_decodes_to_its_fields() -> None:
    data = golden("snapshot.json")
    sid = object_name(data)
    snap = fmt.decode_snapshot(sid, data)
    assert snap == replace(G.SNAPSHOT, id=sid)
    assert snap.source == "/home/u/proj \udcff"
    assert snap.time.utcoffset() is not None and snap.time.utcoffset().total_seconds() == 3600
    assert snap.stats.duration_s == 1.25


def test_tree_encoding_is_deterministic_and_independent_of_xattr_order() -> None:
    e1 = replace(G.TREE.entries[0], extra={"xattrs": {b"user.a": b"1"}, "dev": 2049})
    e2 = replace(G.TREE.entries[0], extra={"dev": 2049, "xattrs": {b"user.a": b"1"}})
    assert fmt.encode_tree(Tree((e1,))) == fmt.encode_tree(Tree((e2,)))


# ---------------------------------------------------------------- newer versions


def _config_v2() -> bytes:
    doc = json.loads(golden("config.json"))
    doc["version"] = 2
    return json.dumps(doc).encode()


def _pack_v3() -> bytes:
    data = bytearray(golden("pack.bin"))
    data[-1] = fmt.PACK_VERSION + 1
    return bytes(data)


def _index_v3() -> bytes:
    data = bytearray(golden("index.bin"))
    data[4] = fmt.INDEX_VERSION + 1
    return bytes(data)


def _tree_v2() -> bytes:
    doc = msgpack.unpackb(golden("tree.bin"), raw=False, strict_map_key=False)
    doc["v"] = 2
    doc["e"] = [["new-style entry that v1 cannot parse"]]
    return msgpack.packb(doc, use_bin_type=True)


def _snapshot_v2() -> bytes:
    doc = json.loads(golden("snapshot.json"))
    doc["v"] = 2
    del doc["tree"]  # a v2 snapshot may lay itself out differently
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("config.json", _config_v2),
        ("pack.bin", _pack_v3),
        ("index.bin", _index_v3),
        ("tree.bin", _tree_v2),
        ("snapshot.json", _snapshot_v2),
    ],
)
def test_newer_version_is_unsupported_format(name: str, make: Callable[[], bytes]) -> None:
    with pytest.raises(UnsupportedFormat) as info:
        DECODERS[name](make())
    assert info.value.exit_code == 11
    assert "\n" not in str(info.value)


def test_unknown_compression_is_unsupported() -> None:
    doc = json.loads(golden("config.json"))
    doc["compression"]["algorithm"] = "lz77"
    with pytest.raises(UnsupportedFormat):
        fmt.decode_config(json.dumps(doc).encode())


# ---------------------------------------------------------------- damage


@pytest.mark.parametrize(("version", "name"), VERSIONED)
def test_every_truncation_is_an_integrity_error(version: str, name: str) -> None:
    data = golden(name, version)
    decode = DECODERS[name]
    for n in range(len(data)):
        prefix = data[:n]
        if name == "config.json" and prefix == data.rstrip(b"\n"):
            continue  # the config without its final newline is still the same JSON
        with pytest.raises(IntegrityError):
            decode(prefix)


@pytest.mark.parametrize("name", FILES)
def test_random_garbage_is_an_integrity_error(name: str) -> None:
    rnd = random.Random(f"garbage-{name}")
    decode = DECODERS[name]
    cases = [b"", b"\x00", b"null", b"[]", b"{}", b"\xc0", msgpack.packb([1, 2])]
    cases += [rnd.randbytes(rnd.randint(1, 400)) for _ in range(300)]
    for garbage in cases:
        with pytest.raises(IntegrityError):
            decode(garbage)


@pytest.mark.parametrize(("version", "name"), VERSIONED)
def test_flipped_bytes_never_raise_anything_but_store_errors(version: str, name: str) -> None:
    """A damaged object may decode (a changed mode byte is still a tree), but it must never
    raise anything other than IntegrityError / UnsupportedFormat."""
    data = golden(name, version)
    decode = DECODERS[name]
    rnd = random.Random(f"flip-{name}")
    for _ in range(1500):
        b = bytearray(data)
        for _ in range(rnd.randint(1, 3)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        try:
            decode(bytes(b))
        except (IntegrityError, UnsupportedFormat):
            pass


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_pack_blob_with_flipped_payload_fails_its_id_check(version: str) -> None:
    data = bytearray(golden("pack.bin", version))
    e = G.PACK_ENTRIES[0]  # the raw blob (first in both versions): a flip changes the plaintext
    data[e.offset + 3] ^= 0x01
    with pytest.raises(IntegrityError):
        _decode_pack(bytes(data))


def test_pack_header_entry_out_of_bounds_is_an_integrity_error() -> None:
    bad = fmt.PackEntry(0, G.blob_id(b"x"), 10, 1 << 20, 5)
    data = b"x" * 20 + fmt.encode_pack_trailer([bad])
    with pytest.raises(IntegrityError):
        fmt.split_pack(data)


def _row(name: bytes, kind: str = "f", payload: Any = None, extra: Any = None) -> list[Any]:
    return [name, kind, 0o644, 0, 0, 0, 0, payload, 0, 0, 1, extra]


def _tree_bytes(*rows: list[Any], v: Any = 1) -> bytes:
    return msgpack.packb({"v": v, "e": list(rows)}, use_bin_type=True)


@pytest.mark.parametrize(
    "names",
    [
        [b"b", b"a"],
        [b"a", b"a"],
        [b"a", b"c", b"b"],
        [b"x", b"x", b"y"],
        [b"\xff", b"a"],
    ],
)
def test_tree_with_unsorted_or_duplicate_names_is_an_integrity_error(names: list[bytes]) -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes(*[_row(n) for n in names]))
    # and the encoder does not silently fix it: the same rows through encode_tree
    entries = tuple(Entry(n, EntryKind.FILE, 0o644, 0, 0, 0, 0) for n in names)
    with pytest.raises(IntegrityError):
        fmt.decode_tree(fmt.encode_tree(Tree(entries)))


def test_tree_with_non_bytes_name_or_unknown_kind_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes(["a", "f", 0, 0, 0, 0, 0, None, 0, 0, 1, None]))
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes(_row(b"a", kind="?")))
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes([b"a", "f"]))


def test_snapshot_with_missing_fields_is_an_integrity_error() -> None:
    doc = json.loads(golden("snapshot.json"))
    del doc["time"]
    data = json.dumps(doc).encode()
    with pytest.raises(IntegrityError) as info:
        fmt.decode_snapshot(object_name(data), data)
    assert object_name(data)[:8] in str(info.value)


# ---------------------------------------------------------------- known bugs


@pytest.mark.parametrize("v", [{}, [1], "1", None])
def test_tree_with_non_integer_version_is_an_integrity_error(v: Any) -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes(_row(b"a"), v=v))


def _zstd_bomb(content_size: int) -> bytes:
    """A 16-byte zstd frame whose header claims ``content_size`` bytes (one empty raw block)."""
    return (
        b"\x28\xb5\x2f\xfd"
        + bytes([0xE0])  # single segment, 8-byte frame content size
        + struct.pack("<Q", content_size)
        + b"\x01\x00\x00"  # last block, raw, size 0
    )


@pytest.mark.parametrize("version", [1, 2])
def test_index_whose_frame_claims_a_huge_size_is_an_integrity_error(version: int) -> None:
    with pytest.raises(IntegrityError):
        list(fmt.decode_index(b"SDIX" + bytes([version]) + _zstd_bomb(1 << 40)))


def test_blob_whose_frame_claims_a_huge_size_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_blob(b"\x01" + _zstd_bomb(1 << 40), 10, zstandard.ZstdDecompressor())
    with pytest.raises(IntegrityError):  # the same frame without its magic (flag 0x02)
        fmt.decode_blob(b"\x02" + _zstd_bomb(1 << 40)[4:], 10, zstandard.ZstdDecompressor())


def test_pack_header_whose_frame_claims_a_huge_size_is_an_integrity_error() -> None:
    header = bytes([fmt.HEADER_V2]) + _zstd_bomb(1 << 40)
    data = b"x" * 20 + header + fmt.TRAILER.pack(len(header), b"SDPK", 2)
    with pytest.raises(IntegrityError):
        fmt.split_pack(data)


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"x\x00y"])
def test_tree_with_unsafe_name_is_an_integrity_error(name: bytes) -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes(_row(name)))


@pytest.mark.parametrize(
    "row",
    [
        _row(b"a", "f", payload=[1, 2]),  # blob ids that are ints
        _row(b"a", "f", payload=b"x" * 32),  # bytes: becomes a tuple of 32 ints
        _row(b"a", "f", payload=[b"short"]),  # blob id of the wrong length
        _row(b"a", "d", payload=5),  # subtree id that is not 32 bytes
        _row(b"a", "l", payload=7),  # symlink target that is not bytes
        _row(b"a", "f", extra=5),  # extra that is not a dict
    ],
)
def test_tree_with_mistyped_payload_is_an_integrity_error(row: list[Any]) -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_tree(_tree_bytes(row))


# ---------------------------------------------------------------- version 2 specifics


def _entries(*lengths: int, start: int = 0, gap: int = 0) -> list[fmt.PackEntry]:
    out, pos = [], start
    for i, n in enumerate(lengths):
        out.append(fmt.PackEntry(i % 2, G.blob_id(i.to_bytes(4, "little")), pos, n, 3 * n))
        pos += n + gap
    return out


@pytest.mark.parametrize("n", [1, 2, 3, 50, 5000])
def test_v2_pack_header_is_never_larger_than_v1(n: int) -> None:
    """Compressed when that pays (many blobs), the table as it is otherwise: the per-blob
    header cost that size accounting assumes (``ENTRY.size``) stays an upper bound."""
    entries = _entries(*[100 + i % 7 for i in range(n)])
    size = entries[-1].offset + entries[-1].length
    trailer = fmt.encode_pack_trailer(entries)
    assert len(trailer) - fmt.TRAILER.size <= n * fmt.ENTRY.size
    assert trailer[0] == (fmt.HEADER_V2 if n >= 50 else fmt.HEADER_V2_RAW)
    assert fmt.split_pack(b"y" * size + trailer) == entries


def test_v2_pack_header_of_blobs_with_gaps_keeps_their_offsets() -> None:
    """A writer that left gaps (or wrote out of order) gets an offsets column."""
    entries = _entries(5, 7, 11, gap=3)
    data = b"y" * (entries[-1].offset + entries[-1].length) + fmt.encode_pack_trailer(entries)
    assert fmt.split_pack(data) == entries
    shuffled = [entries[2], entries[0], entries[1]]
    data = b"y" * 40 + fmt.encode_pack_trailer(shuffled)
    assert fmt.split_pack(data) == shuffled


def test_v2_index_of_part_of_a_pack_keeps_true_offsets() -> None:
    """repair may index only the intact blobs of a pack: their offsets must survive."""
    entries = _entries(5, 7, 11, 13)
    kept = [entries[0], entries[2], entries[3]]  # the second blob was dropped
    pid = G.PACK_ID
    assert list(fmt.decode_index(fmt.encode_index([(pid, kept), (pid, entries)]))) == [
        (pid, kept),
        (pid, entries),
    ]


def test_v2_pack_header_that_does_not_cover_the_blobs_is_an_integrity_error() -> None:
    entries = _entries(5, 7, 11)
    data = b"y" * 23 + fmt.encode_pack_trailer(entries)
    assert fmt.split_pack(data) == entries
    # one blob's entry lost (or the data grew): the tiling no longer reaches the header
    with pytest.raises(IntegrityError, match="does not cover"):
        fmt.split_pack(b"y" * 23 + fmt.encode_pack_trailer(entries[:2]))
    with pytest.raises(IntegrityError):
        fmt.split_pack(b"y" * 22 + fmt.encode_pack_trailer(entries))


def test_v2_entry_table_with_unknown_flags_is_an_integrity_error() -> None:
    table = bytearray(fmt._encode_table(_entries(5)))
    table[4] |= 0x80
    header = bytes([fmt.HEADER_V2]) + zstandard.ZstdCompressor().compress(bytes(table))
    with pytest.raises(IntegrityError, match="unknown flags"):
        fmt.split_pack(b"y" * 5 + header + fmt.TRAILER.pack(len(header), b"SDPK", 2))


@pytest.mark.parametrize(
    ("plain", "flag"),
    [
        (b"", fmt.FLAG_RAW),
        (b"short", fmt.FLAG_RAW),
        (bytes(range(256)), fmt.FLAG_RAW),  # incompressible: stored as it is
        (b"abc" * 30, fmt.FLAG_ZSTD_BARE),  # 90 bytes that compress: saved, however few
        (b"snapdeck " * 100_000, fmt.FLAG_ZSTD_BARE),
    ],
)
def test_blob_encoding_round_trips(plain: bytes, flag: int) -> None:
    stored = fmt.encode_blob(plain, zstandard.ZstdCompressor(level=3))
    assert stored[0] == flag
    assert len(stored) <= len(plain) + 1
    assert fmt.decode_blob(stored, len(plain), zstandard.ZstdDecompressor()) == plain
    if flag == fmt.FLAG_ZSTD_BARE:
        with pytest.raises(IntegrityError, match="claims"):
            fmt.decode_blob(stored, len(plain) + 1, zstandard.ZstdDecompressor())


def test_blob_frames_of_both_flags_decode_alike() -> None:
    plain = b"the same frame, with and without its magic " * 20
    frame = zstandard.ZstdCompressor(level=3).compress(plain)
    dctx = zstandard.ZstdDecompressor()
    assert fmt.decode_blob(b"\x01" + frame, len(plain), dctx) == plain
    assert fmt.decode_blob(b"\x02" + frame[4:], len(plain), dctx) == plain
    with pytest.raises(IntegrityError):  # a flag-1 frame read as flag 2: not a frame
        fmt.decode_blob(b"\x02" + frame, len(plain), dctx)
    with pytest.raises(IntegrityError, match="unknown blob flag"):
        fmt.decode_blob(b"\x03" + frame, len(plain), dctx)


def test_repository_with_v1_and_v2_objects_reads_and_checks(tmp_path: Path) -> None:
    """A repository written by version 1 (the golden pack and index) gets version-2 packs and
    index segments from now on; both are read, deduplicated against and verified."""
    from backend.check import check_repository
    from backend.repository import Repository
    from backend.storage.local import LocalStorage

    root = tmp_path / "repo"
    storage = LocalStorage(root)
    storage.create()
    storage.put("config", "config", golden("config.json"))
    storage.put("data", G.PACK_ID_V1, golden("pack.bin", "v1"))
    storage.put("index", object_name(golden("index.bin", "v1")), golden("index.bin", "v1"))
    repo = Repository.open(storage)
    for plain in (G.RAW_BLOB, G.ZSTD_BLOB, G.TREE_BYTES):
        assert repo.read_blob(G.blob_id(plain)) == plain
    assert not repo.put_blob(fmt.BLOB_DATA, G.blob_id(G.ZSTD_BLOB), G.ZSTD_BLOB).new
    new = [b"a new blob, written in version 2 " * 9, b"another " * 50]
    for plain in new:
        assert repo.put_blob(fmt.BLOB_DATA, G.blob_id(plain), plain).new
    repo.flush()

    again = Repository.open(LocalStorage(root))
    for plain in (*new, G.RAW_BLOB, G.ZSTD_BLOB, G.SUBTREE_BYTES):
        assert again.read_blob(G.blob_id(plain)) == plain
    segments = [storage.get("index", n) for n in again.index_segments()]
    assert sorted(s[4] for s in segments) == [1, 2]
    packs = {i.name: storage.get("data", i.name) for i in storage.list("data")}
    assert sorted(p[-1] for p in packs.values()) == [1, 2]
    result = check_repository(again, read_data=True)
    assert result.ok, result.errors
    assert result.blobs_read == 6


def test_committed_demo_repository_still_verifies_after_v2_writes(tmp_path: Path) -> None:
    """The TUI's demo repository (written by version 1) opens, verifies, takes a snapshot in
    version 2 that deduplicates against its v1 data, and verifies again."""
    import shutil

    from backend.store import Store

    demo = DATA.parent.parent / "tui" / "data" / "demo-repo"
    shutil.copytree(demo, tmp_path / "repo")
    with Store.open(tmp_path / "repo", cache_dir=tmp_path / "cache") as store:
        before = store.check(read_data=True)
        assert before.ok, before.errors
        snap = store.list_snapshots()[-1]
        src = tmp_path / "src"
        store.restore(snap, src)
        added = store.create_snapshot(src)
        assert added.snapshot.stats.bytes_added == 0  # every blob was found among the v1 ones
        after = store.check(read_data=True)
        assert after.ok, after.errors
        assert after.snapshots == before.snapshots + 1


def _tree_pack(*plains: bytes) -> tuple[bytes, list[fmt.PackEntry]]:
    cctx = zstandard.ZstdCompressor(level=3)
    body, entries = b"", []
    for plain in plains:
        stored = fmt.encode_blob(plain, cctx)
        entries.append(
            fmt.PackEntry(fmt.BLOB_TREE, G.blob_id(plain), len(body), len(stored), len(plain))
        )
        body += stored
    return body + fmt.encode_pack_trailer(entries), entries


def test_tree_pack_header_leaves_out_ids_that_the_blobs_give_back() -> None:
    trees = [G.TREE_BYTES, G.SUBTREE_BYTES, fmt.encode_tree(Tree(G.TREE.entries[:3]))]
    data, entries = _tree_pack(*trees)
    hlen = struct.unpack("<I", data[-9:-5])[0]
    header = data[-9 - hlen : -9]
    assert fmt.header_omits_ids(header)
    assert hlen < 1 + 5 + 3 * 9 + 10  # no 32-byte ids in it
    with pytest.raises(IntegrityError, match="leaves out the blob ids"):
        fmt.split_pack(data)
    assert fmt.split_pack(data, hash_blob=G.blob_id) == entries
    # a pack with any data blob, and every sealed header, keeps its ids
    mixed = fmt.encode_pack_trailer([*entries, entries[0]._replace(type=fmt.BLOB_DATA)])
    assert not fmt.header_omits_ids(mixed[: -fmt.TRAILER.size])
    sealed = fmt.encode_pack_trailer(entries, seal=lambda h: h)
    assert not fmt.header_omits_ids(sealed[: -fmt.TRAILER.size])
    assert not fmt.header_omits_ids(golden("pack.bin", "v1")[-9 - 4 * fmt.ENTRY.size : -9])


def test_damaged_tree_blob_makes_an_id_less_header_unreadable() -> None:
    data, entries = _tree_pack(G.TREE_BYTES, G.SUBTREE_BYTES)
    bad = bytearray(data)
    bad[entries[0].offset + 5] ^= 0xFF  # inside the compressed tree
    with pytest.raises(IntegrityError, match="offset 0"):
        fmt.split_pack(bytes(bad), hash_blob=G.blob_id)
    # the index-free listing of an id-less table is refused, never guessed
    with pytest.raises(IntegrityError):
        list(
            fmt.decode_index(
                b"SDIX\x02"
                + zstandard.ZstdCompressor().compress(
                    fmt.U32.pack(1) + bytes(32) + fmt._encode_table(entries, ids=False)
                )
            )
        )


def test_repository_lists_and_checks_id_less_tree_packs(tmp_path: Path) -> None:
    from backend.check import check_repository
    from backend.repository import Repository
    from backend.storage.local import LocalStorage

    storage = LocalStorage(tmp_path / "repo")
    repo = Repository.init(storage)
    tid, _ = repo.save_tree(G.TREE)
    sid, _ = repo.save_tree(G.SUBTREE)
    repo.flush()
    (loc,) = {repo.locate(tid).pack, repo.locate(sid).pack}  # one tree pack
    entries = repo.read_pack_header(loc)
    assert sorted(e.id for e in entries) == sorted([tid, sid])
    assert entries == repo.pack_entries(storage.get("data", loc))
    assert check_repository(repo).ok
    # a damaged tree: even a check that reads no data notices it
    path = next((tmp_path / "repo" / "data").rglob(loc))
    raw = bytearray(path.read_bytes())
    raw[repo.locate(tid).offset + 4] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(raw))
    result = check_repository(Repository.open(LocalStorage(tmp_path / "repo")))
    assert not result.ok
    assert any("recompute its id" in e.message for e in result.errors)
