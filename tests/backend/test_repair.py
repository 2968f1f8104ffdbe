"""``repair index|packs|snapshots``, partial restores, and healing by taking a new snapshot."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from backend.errors import IntegrityError
from backend.model import Snapshot
from backend.store import Store
from tests.backend.test_check import SPEC, data_pack_of, open_store, pack_path
from tests.conftest import make_tree, read_tree

LOST = b"delta"
"""The content of sub/deep/d.txt; the tests damage the blob that holds it."""


@pytest.fixture
def world(tmp_path: Path, store: Store) -> tuple[Store, Snapshot]:
    make_tree(tmp_path / "src", SPEC)
    snap = store.create_snapshot(tmp_path / "src").snapshot
    return store, snap


def corrupt_blob(tmp_path: Path, store: Store, content: bytes) -> str:
    """Flip the last byte of the blob holding ``content``; returns its pack."""
    loc = store.repo.index.get(store.repo.hash_blob(content))
    assert loc is not None
    p = pack_path(tmp_path, loc.pack)
    b = bytearray(p.read_bytes())
    b[loc.offset + loc.length - 1] ^= 0xFF
    p.write_bytes(bytes(b))
    return loc.pack


def want_without_lost(tmp_path: Path) -> dict:
    want = read_tree(tmp_path / "src")
    del want[b"sub"][b"deep"][b"d.txt"]
    return want


def test_restore_of_a_snapshot_with_a_lost_blob_restores_everything_else(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    corrupt_blob(tmp_path, store, LOST)
    with open_store(tmp_path) as st:
        res = st.restore(snap, tmp_path / "target")
        assert [p.path for p in res.problems] == ["sub/deep/d.txt"]
        assert read_tree(tmp_path / "target") == want_without_lost(tmp_path)
        buf = io.BytesIO()
        zres = st.restore_zip(snap, buf)
        assert [p.path for p in zres.problems] == ["sub/deep/d.txt"]
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
            assert "sub/deep/d.txt" not in zf.namelist()
            assert zf.read("a.txt") == SPEC["a.txt"].encode()  # type: ignore[union-attr]


def test_restore_with_a_lost_directory_tree_restores_the_rest(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    deep = store.entry(snap, "sub/deep")
    assert deep is not None
    corrupt_blob_id = deep.payload
    loc = store.repo.index.get(corrupt_blob_id)
    assert loc is not None
    p = pack_path(tmp_path, loc.pack)
    b = bytearray(p.read_bytes())
    b[loc.offset + 1] ^= 0xFF
    p.write_bytes(bytes(b))
    with open_store(tmp_path) as st:
        res = st.restore(snap, tmp_path / "target")
    assert [p.path for p in res.problems] == ["sub/deep"]
    got = read_tree(tmp_path / "target")
    assert got[b"sub"][b"deep"] == {}  # created, empty: its contents could not be read
    assert got[b"a.txt"] == SPEC["a.txt"].encode()  # type: ignore[union-attr]


def test_repair_packs_salvages_intact_blobs_and_reports_the_lost_ones(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    pack = corrupt_blob(tmp_path, store, LOST)
    with open_store(tmp_path) as st:
        before = st.check(read_data=True)
        assert not before.ok
        dry = st.repair_packs(dry_run=True)
        assert dry.dry_run and dry.packs_damaged == (pack,)
        assert pack_path(tmp_path, pack).exists()
        res = st.repair_packs()
        assert res.packs_damaged == (pack,) and len(res.packs_written) == 1
        assert res.blobs_salvaged >= 3 and res.partial
        [lost] = res.lost
        assert lost.paths == ("sub/deep/d.txt",) and lost.snapshots == (snap.id,)
        assert not pack_path(tmp_path, pack).exists()
        after = st.check(read_data=True)
    # Only the lost blob is left: missing from the index, needed by that one file.
    assert [(e.kind, e.paths) for e in after.errors] == [("missing", ("sub/deep/d.txt",))]


def test_repair_snapshots_drops_the_unreadable_files_and_moves_heads_refs_and_notes(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    store.add_ref("good", snap)
    store.set_tags(snap, add=["keep"])
    store.set_pinned(snap, True)
    corrupt_blob(tmp_path, store, LOST)
    with open_store(tmp_path) as st:
        st.repair_packs()
        dry = st.repair_snapshots(dry_run=True)
        assert dry.dropped == ((snap.id, "sub/deep/d.txt"),) and not dry.rewritten
        res = st.repair_snapshots()
        [(old, new_id)] = res.rewritten
        assert old == snap.id and not res.partial
        assert not st.storage.exists("snapshots", snap.id)
        new = st.get(new_id)
        assert "repaired" in new.tags and "keep" in new.tags and new.pinned
        assert "dropped 1 unreadable entry" in new.message
        assert st.refs() == {"good": new_id}
        head = st.head(snap.source, snap.host)
        assert head is not None and head.id == new_id
        assert [s.id for s in st.list_snapshots()] == [new_id]
        assert st.check(read_data=True).ok
        st.restore(new, tmp_path / "target")
        assert read_tree(tmp_path / "target") == want_without_lost(tmp_path)
        assert st.repair_snapshots().rewritten == ()  # idempotent


def test_a_new_snapshot_heals_a_blob_that_repair_dropped(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    """The file is unchanged on disk (same size, mtime, inode): without the fix the new
    snapshot would reference the parent's lost blob again instead of storing it."""
    store, snap = world
    corrupt_blob(tmp_path, store, LOST)
    with open_store(tmp_path) as st:
        st.repair_packs()
        healed = st.create_snapshot(tmp_path / "src").snapshot
        assert healed.stats.bytes_added >= len(LOST)
        res = st.check(read_data=True)
        # The old snapshot still lacks it (repair snapshots would drop it); the new one is whole.
        assert all(e.snapshots == (snap.id,) for e in res.errors)
        st.restore(healed, tmp_path / "target")
    assert read_tree(tmp_path / "target") == read_tree(tmp_path / "src")


def test_a_snapshot_stores_again_what_a_vanished_pack_held(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, _snap = world
    pack = data_pack_of(store, LOST)
    pack_path(tmp_path, pack).unlink()
    with open_store(tmp_path) as st:
        new = st.create_snapshot(tmp_path / "src").snapshot
        st.restore(new, tmp_path / "target")
    assert read_tree(tmp_path / "target") == read_tree(tmp_path / "src")


def test_repair_index_rebuilds_a_lost_or_damaged_index(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    names = [i.name for i in store.storage.list("index")]
    p = tmp_path / "repo" / "index" / names[0]
    p.write_bytes(p.read_bytes()[:-7])  # damaged segment: the repository cannot even load
    with open_store(tmp_path) as st:
        assert not st.check().ok
        with pytest.raises(IntegrityError):
            st.restore(snap, tmp_path / "t0")
        with pytest.raises(IntegrityError, match="repair index"):
            st.repair_packs()
        res = st.repair_index()
        assert res.packs_indexed == sum(1 for _ in st.storage.list("data"))
        assert res.segments_written == 1  # the damaged segment was replaced (or rewritten in place)
    with open_store(tmp_path) as st:
        assert st.check(read_data=True).ok
        st.restore(snap, tmp_path / "target")
    assert read_tree(tmp_path / "target") == read_tree(tmp_path / "src")


def test_repair_index_drops_missing_packs_so_new_snapshots_store_again(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, _snap = world
    pack = data_pack_of(store, LOST)
    pack_path(tmp_path, pack).unlink()
    with open_store(tmp_path) as st:
        res = st.repair_index()
        assert any("missing" in m for m in res.messages)
        assert st.repo.index.get(st.repo.hash_blob(LOST)) is None
        st.repair_snapshots()
        new = st.create_snapshot(tmp_path / "src").snapshot
        assert st.check(read_data=True).ok
        st.restore(new, tmp_path / "target")
    assert read_tree(tmp_path / "target") == read_tree(tmp_path / "src")


def test_repair_snapshots_forget_removes_a_snapshot_whose_root_is_gone(
    tmp_path: Path, world: tuple[Store, Snapshot]
) -> None:
    store, snap = world
    root = bytes.fromhex(snap.tree)
    loc = store.repo.index.get(root)
    assert loc is not None
    pack_path(tmp_path, loc.pack).unlink()
    with open_store(tmp_path) as st:
        st.repair_index()
        res = st.repair_snapshots()
        assert res.unrepairable == (snap.id,) and res.partial
        res = st.repair_snapshots(forget=True)
        assert res.removed == (snap.id,) and not res.partial
        assert st.list_snapshots() == []
        assert st.check().ok


def test_check_and_repair_work_on_an_encrypted_repository(tmp_path: Path) -> None:
    from backend.keys import KdfParams

    cheap = KdfParams(memory_kib=64, iterations=1, lanes=1)
    make_tree(tmp_path / "src", SPEC)
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "c", password="pw", kdf=cheap) as st:
        snap = st.create_snapshot(tmp_path / "src").snapshot
        assert st.check(read_data=True).ok
        corrupt_blob(tmp_path, st, LOST)
    with Store.open(tmp_path / "repo", cache_dir=tmp_path / "c2", password="pw") as st:
        res = st.check(read_data=True)
        assert [e.paths for e in res.errors if e.object.startswith("blob/")] == [
            ("sub/deep/d.txt",)
        ]
        assert [e.paths for e in st.repair_packs().lost] == [("sub/deep/d.txt",)]
        [(old, _new)] = st.repair_snapshots().rewritten
        assert old == snap.id
        assert st.check(read_data=True).ok
        healed = st.create_snapshot(tmp_path / "src").snapshot
        st.restore(healed, tmp_path / "t")
    assert read_tree(tmp_path / "t") == read_tree(tmp_path / "src")
