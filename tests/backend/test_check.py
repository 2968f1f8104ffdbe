"""``check``: every kind of damage is found and named, and garbage is never restored as content.

Each test damages a real repository on disk the way a disk, a person or another program
might, then asserts that ``check`` names the damaged object (and the snapshots and paths it
affects) and that a restore either writes a file's exact content or reports it as a problem:
never other bytes.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.check import check_repository, parse_subset, select_packs
from backend.errors import UsageError
from backend.format import BLOB_DATA
from backend.ids import PackId, object_name
from backend.model import Snapshot
from backend.store import Store
from tests.conftest import make_tree, read_tree

SPEC = {
    "a.txt": "alpha " * 500,
    "b.bin": bytes(range(256)) * 200,
    "sub": {"c.txt": "gamma " * 300, "deep": {"d.txt": "delta"}},
    "empty": "",
}


def open_store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "repo", cache_dir=tmp_path / "cache2")


def pack_path(tmp_path: Path, pack: str) -> Path:
    return tmp_path / "repo" / "data" / pack[:2] / pack


def data_pack_of(store: Store, content: bytes) -> str:
    loc = store.repo.index.get(store.repo.hash_blob(content))
    assert loc is not None
    return loc.pack


@pytest.fixture
def world(tmp_path: Path, store: Store) -> tuple[Store, Snapshot]:
    make_tree(tmp_path / "src", SPEC)
    snap = store.create_snapshot(tmp_path / "src").snapshot
    return store, snap


def assert_restore_never_lies(store: Store, snap: Snapshot, target: Path) -> set[str]:
    """Restore to a directory and to a ZIP; every file present holds its true content.
    Returns the problem paths."""
    want = read_tree(target.parent / "src")
    try:
        res = store.restore(snap, target)
    except Exception:  # nothing restorable at all (root tree gone): fine, nothing written
        return {"/"}
    got = read_tree(target)

    def walk(w: dict, g: dict, prefix: str) -> None:
        for name, val in g.items():
            assert name in w, name
            if isinstance(val, dict):
                walk(w[name], val, prefix + name.decode() + "/")
            else:
                assert val == w[name], f"{prefix}{name!r} restored with wrong content"

    walk(want, got, "")
    buf = io.BytesIO()
    zres = store.restore_zip(snap, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        for n in zf.namelist():
            if n.endswith("/"):
                continue
            node: object = want
            for part in n.split("/"):
                assert isinstance(node, dict)
                node = node[part.encode()]
            assert zf.read(n) == node, n
    assert {p.path for p in zres.problems} <= {p.path for p in res.problems} | {"sub", "sub/deep"}
    return {p.path for p in res.problems}


def test_a_sound_repository_checks_clean_with_and_without_read_data(
    world: tuple[Store, Snapshot],
) -> None:
    store, _snap = world
    res = store.check()
    assert res.ok and res.errors == () and res.snapshots == 1 and res.trees == 3
    full = store.check(read_data=True)
    assert full.ok and full.packs_read == full.packs >= 2 and full.blobs_read >= 5
    doc = full.to_json()
    assert doc["ok"] is True and doc["errors"] == []


# ---------------------------------------------------------------- damage, one kind at a time


def _flip(p: Path, at: int) -> None:
    b = bytearray(p.read_bytes())
    b[at] ^= 0x5A
    p.write_bytes(bytes(b))


Damage = Callable[[Path, Store], str]
"""Damages the repository; returns the object name check must report."""


def flip_data_byte(tmp_path: Path, store: Store) -> str:
    pack = data_pack_of(store, b"delta")
    _flip(pack_path(tmp_path, pack), 3)
    return f"data/{pack}"


def truncate_pack(tmp_path: Path, store: Store) -> str:
    pack = data_pack_of(store, b"delta")
    p = pack_path(tmp_path, pack)
    p.write_bytes(p.read_bytes()[:-20])
    return f"data/{pack}"


def zero_length_pack(tmp_path: Path, store: Store) -> str:
    pack = data_pack_of(store, b"delta")
    pack_path(tmp_path, pack).write_bytes(b"")
    return f"data/{pack}"


def delete_pack(tmp_path: Path, store: Store) -> str:
    pack = data_pack_of(store, b"delta")
    pack_path(tmp_path, pack).unlink()
    return f"data/{pack}"


def swap_packs(tmp_path: Path, store: Store) -> str:
    packs = sorted(i.name for i in store.storage.list("data"))
    assert len(packs) >= 2
    a, b = pack_path(tmp_path, packs[0]), pack_path(tmp_path, packs[1])
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    return f"data/{packs[0]}"


def foreign_file_in_data(tmp_path: Path, store: Store) -> str:
    d = tmp_path / "repo" / "data" / "zz"
    d.mkdir(exist_ok=True)
    (d / "holiday-photo.jpg").write_bytes(b"\xff\xd8 not a pack")
    return "data/holiday-photo.jpg"


def foreign_file_in_index(tmp_path: Path, store: Store) -> str:
    (tmp_path / "repo" / "index" / "notes.txt").write_text("hello")
    return "index/notes.txt"


def corrupt_index_segment(tmp_path: Path, store: Store) -> str:
    name = next(i.name for i in store.storage.list("index"))
    _flip(tmp_path / "repo" / "index" / name, 10)
    return f"index/{name}"


def zero_length_snapshot(tmp_path: Path, store: Store) -> str:
    name = "0" * 64
    (tmp_path / "repo" / "snapshots" / name).write_bytes(b"")
    return f"snapshots/{name}"


def snapshot_not_matching_its_name(tmp_path: Path, store: Store) -> str:
    sid = next(i.name for i in store.storage.list("snapshots"))
    p = tmp_path / "repo" / "snapshots" / sid
    p.write_bytes(p.read_bytes().replace(b'"host": "', b'"host": "x'))
    return f"snapshots/{sid}"


DAMAGES: dict[str, Damage] = {
    "bit flip in a pack": flip_data_byte,
    "truncated pack": truncate_pack,
    "zero-length pack": zero_length_pack,
    "missing pack": delete_pack,
    "swapped packs": swap_packs,
    "foreign file in data": foreign_file_in_data,
    "foreign file in index": foreign_file_in_index,
    "corrupt index segment": corrupt_index_segment,
    "zero-length snapshot": zero_length_snapshot,
    "snapshot not matching its name": snapshot_not_matching_its_name,
}


@pytest.mark.parametrize("damage", list(DAMAGES.values()), ids=list(DAMAGES))
def test_damage_is_found_named_and_never_restored_as_content(
    tmp_path: Path, world: tuple[Store, Snapshot], damage: Damage
) -> None:
    store, snap = world
    obj = damage(tmp_path, store)
    with open_store(tmp_path) as s2:
        res = s2.check(read_data=True)
        assert not res.ok
        assert obj in {e.object for e in res.errors}, [e.object for e in res.errors]
        for e in res.errors:
            assert e.kind in {"missing", "corrupt", "foreign", "mismatch"}
            assert e.message and "\n" not in e.message
        assert_restore_never_lies(s2, snap, tmp_path / "target")


def test_a_damaged_blob_names_the_snapshots_and_paths_that_need_it(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, s1 = world
    (tmp_path / "src" / "new.txt").write_text("new")
    s2 = store.create_snapshot(tmp_path / "src").snapshot
    bid = store.repo.hash_blob(b"delta")
    loc = store.repo.index.get(bid)
    assert loc is not None
    _flip(pack_path(tmp_path, loc.pack), loc.offset + loc.length - 1)
    with open_store(tmp_path) as st:
        quick = st.check()  # without read-data a bit flip inside a blob is not seen
        assert quick.ok
        res = st.check(read_data=True)
    err = next(e for e in res.errors if e.object == f"blob/{bid.hex()}")
    assert err.kind == "corrupt"
    assert set(err.snapshots) == {s1.id, s2.id}
    assert err.paths == ("sub/deep/d.txt",)
    doc = res.to_json()
    assert doc["ok"] is False
    assert {"object", "kind", "message", "snapshots", "paths"} <= set(doc["errors"][0])


def test_a_missing_tree_is_attributed_to_its_directory(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    sub = store.entry(snap, "sub/deep")
    assert sub is not None
    tree_pack = store.repo.index.get(sub.payload)
    assert tree_pack is not None
    pack_path(tmp_path, tree_pack.pack).unlink()  # trees of every directory are in it
    with open_store(tmp_path) as st:
        res = st.check()
    err = next(e for e in res.errors if e.object == f"data/{tree_pack.pack}")
    assert err.kind == "missing" and err.snapshots == (snap.id,)
    assert "/" in err.paths  # the root tree is in that pack too


def test_unindexed_packs_are_a_note_not_damage(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, _snap = world
    # What an interrupted snapshot leaves: a complete pack that no index names yet.
    store.repo.put_blob(BLOB_DATA, store.repo.hash_blob(b"orphan"), b"orphan")
    done = store.repo._data_writer.finish()
    assert done is not None
    store.storage.put("data", done.id, done.parts)
    res = store.check(read_data=True)
    assert res.ok
    assert any("in no index" in n for n in res.notes)


def test_a_stale_catalog_is_noted_and_a_lying_one_is_an_error(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    store.storage.delete("snapshots", snap.id)  # behind the catalog's back
    res = store.check()
    assert res.ok and any("catalog" in n for n in res.notes)
    res2 = check_repository(
        store.repo, catalog=lambda: [snap]
    )  # same id, the object is gone: only stale
    assert res2.ok


def test_catalog_copy_that_differs_is_reported(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    from dataclasses import replace

    res = check_repository(store.repo, catalog=lambda: [replace(snap, host="elsewhere")])
    assert [e.object for e in res.errors] == ["catalog"]


# ---------------------------------------------------------------- --read-data-subset


def test_subset_specs() -> None:
    assert parse_subset("10%") == ("percent", 0.1, 0)
    assert parse_subset("2/5") == ("group", 2, 5)
    for bad in ("0%", "101%", "0/3", "4/3", "x", "1/0", ""):
        with pytest.raises(UsageError):
            parse_subset(bad)
    packs = [PackId(object_name(bytes([i]))) for i in range(40)]
    groups = [select_packs(packs, f"{n}/4") for n in range(1, 5)]
    assert sorted(p for g in groups for p in g) == sorted(packs)  # a partition
    assert all(g for g in groups)
    assert len(select_packs(packs, "25%")) == 10
    assert len(select_packs(packs[:1], "1%")) == 1


def test_read_data_subset_reads_only_its_share(tmp_path: Path, store: Store) -> None:
    src = tmp_path / "src"
    make_tree(src, {f"f{i}": os.urandom(2000) for i in range(8)})
    store.create_snapshot(src)
    total = sum(1 for _ in store.storage.list("data"))
    parts = [store.check(subset=f"{n}/3").packs_read for n in (1, 2, 3)]
    assert sum(parts) == total
