"""The on-disk format, version 1: golden bytes, version checks, damage detection.

The golden files in ``tests/data/format/v1/`` were written once by
``tests/data/format/make_golden.py`` from fixed inputs. If an encoder no longer produces those
exact bytes, repositories written by older snapdecks may become unreadable or dedup may break
(tree ids would change): bump the format version instead of regenerating the files.
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
GOLDEN = DATA / "v1"


def _load_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("snapdeck_make_golden", DATA / "make_golden.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


G = _load_golden()
FILES = ("config.json", "pack.bin", "index.bin", "tree.bin", "snapshot.json")


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


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
def test_encoder_output_is_byte_identical_to_golden_v1(name: str) -> None:
    assert G.build()[name] == golden(name), (
        f"the encoding of {name} changed: old repositories would no longer match "
        "(bump FORMAT_VERSION rather than regenerating the golden files)"
    )


def test_golden_config_decodes_to_its_inputs() -> None:
    cfg = fmt.decode_config(golden("config.json"))
    assert cfg == G.CONFIG
    assert cfg.id_key == bytes(range(32))
    assert cfg.chunker == fmt.ChunkerParams(262144, 1048576, 4194304, 424242)
    assert cfg.version == 1


def test_golden_pack_decodes_to_its_blobs() -> None:
    data = golden("pack.bin")
    assert data[-9:] == struct.pack("<I", 4 * fmt.ENTRY.size) + b"SDPK\x01"
    blobs = _decode_pack(data)
    assert [e for e, _ in blobs] == G.PACK_ENTRIES
    assert [p for _, p in blobs] == [G.RAW_BLOB, G.ZSTD_BLOB, G.SUBTREE_BYTES, G.TREE_BYTES]
    assert [e.type for e, _ in blobs] == [0, 0, 1, 1]
    # one blob of each storage flavour
    assert data[G.PACK_ENTRIES[0].offset] == fmt.FLAG_RAW
    assert data[G.PACK_ENTRIES[1].offset] == fmt.FLAG_ZSTD
    assert G.PACK_ENTRIES[1].length < len(G.ZSTD_BLOB)
    assert object_name(data) == G.PACK_ID


def test_golden_index_decodes_to_its_pack() -> None:
    data = golden("index.bin")
    assert data[:5] == b"SDIX\x01"
    assert list(fmt.decode_index(data)) == [(G.PACK_ID, G.PACK_ENTRIES)]


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


def _pack_v2() -> bytes:
    data = bytearray(golden("pack.bin"))
    data[-1] = 2
    return bytes(data)


def _index_v2() -> bytes:
    data = bytearray(golden("index.bin"))
    data[4] = 2
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
        ("pack.bin", _pack_v2),
        ("index.bin", _index_v2),
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


@pytest.mark.parametrize("name", FILES)
def test_every_truncation_is_an_integrity_error(name: str) -> None:
    data = golden(name)
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


@pytest.mark.parametrize("name", FILES)
def test_flipped_bytes_never_raise_anything_but_store_errors(name: str) -> None:
    """A damaged object may decode (a changed mode byte is still a tree), but it must never
    raise anything other than IntegrityError / UnsupportedFormat."""
    data = golden(name)
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


def test_pack_blob_with_flipped_payload_fails_its_id_check() -> None:
    data = bytearray(golden("pack.bin"))
    e = G.PACK_ENTRIES[0]  # the raw blob: a flip changes the plaintext
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


def test_index_whose_frame_claims_a_huge_size_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        list(fmt.decode_index(b"SDIX\x01" + _zstd_bomb(1 << 40)))


def test_blob_whose_frame_claims_a_huge_size_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        fmt.decode_blob(b"\x01" + _zstd_bomb(1 << 40), 10, zstandard.ZstdDecompressor())


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
