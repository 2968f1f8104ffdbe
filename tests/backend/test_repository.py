"""The repository layer: dedup, persistence of the index, damage detection, write order, crashes."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.errors import ChunkNotFound, IntegrityError, StoreError
from backend.ids import BlobId
from backend.model import EntryKind, Snapshot
from backend.repository import Repository
from backend.storage import open_storage
from backend.store import Store

MiB = 1024 * 1024


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def content_of(store: Store, snap: Snapshot, path: str) -> bytes:
    return b"".join(store.read_file(snap, path))


def pack_path(repo_dir: Path, pack: str) -> Path:
    return repo_dir / "data" / pack[:2] / pack


@pytest.fixture
def reopen(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Open the repository at tmp_path/repo again, as a new process would."""
    opened: list[Store] = []

    def _open() -> Store:
        s = Store.open(tmp_path / "repo", cache_dir=tmp_path / f"cache{len(opened)}")
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


# ---------------------------------------------------------------- dedup


def test_same_content_in_two_files_is_stored_once(store: Store, tmp_path: Path) -> None:
    small, big = rand(50_000, 1), rand(5 * MiB, 2)  # small path and big-file (pool) path
    src = tmp_path / "src"
    src.mkdir()
    for name, data in [("a", small), ("b", small), ("big1", big), ("big2", big)]:
        (src / name).write_bytes(data)
    st = store.create_snapshot(src, options=None).snapshot.stats
    assert st.files_new == 4
    assert st.bytes_read == 2 * len(small) + 2 * len(big)
    assert st.bytes_added == len(small) + len(big)
    assert store.stats().unique_bytes == len(small) + len(big)


def test_same_content_in_a_second_snapshot_adds_nothing(store: Store, tmp_path: Path) -> None:
    data = {"x": rand(300_000, 3), "y": rand(6 * MiB, 4), "empty": b""}
    for d in ("one", "two"):
        (tmp_path / d / "sub").mkdir(parents=True)
        for name, content in data.items():
            (tmp_path / d / "sub" / name).write_bytes(content)
    first = store.create_snapshot(tmp_path / "one").snapshot
    assert first.stats.bytes_added == sum(map(len, data.values()))
    second = store.create_snapshot(tmp_path / "two").snapshot
    assert second.stats.files_new == 3
    assert second.stats.bytes_read == sum(map(len, data.values()))
    assert second.stats.bytes_added == 0
    # the same content behind a different parent directory's metadata is still deduplicated
    assert store.stats().unique_bytes == sum(map(len, data.values()))


def test_reopened_repository_sees_the_index(store: Store, tmp_path: Path, reopen: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = rand(2 * MiB, 5)
    (src / "f").write_bytes(payload)
    snap = store.create_snapshot(src).snapshot
    ids = store.entry(snap, "f").content
    store.close()

    again = reopen()
    assert all(again.repo.has_blob(b) for b in ids)
    assert len(again.repo.index) >= len(ids) + 1  # + the tree
    s = again.resolve(snap.id[:8])
    assert content_of(again, s, "f") == payload
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "g").write_bytes(payload)
    assert again.create_snapshot(tmp_path / "other").snapshot.stats.bytes_added == 0


def test_empty_snapshot_roundtrips(store: Store, tmp_path: Path, reopen: Any) -> None:
    (tmp_path / "empty").mkdir()
    snap = store.create_snapshot(tmp_path / "empty").snapshot
    assert snap.stats.total_files == 0
    assert list(reopen().ls(snap)) == []


# ---------------------------------------------------------------- damage


def _single_blob_repo(store: Store, tmp_path: Path, data: bytes) -> tuple[BlobId, str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(data)
    snap = store.create_snapshot(src).snapshot
    (bid,) = store.entry(snap, "f").content
    loc = store.repo.locate(bid)
    return bid, loc.pack, pack_path(tmp_path / "repo", loc.pack)


def _fresh_repo(tmp_path: Path) -> Repository:
    return Repository.open(open_storage(str(tmp_path / "repo")))


def test_flipped_byte_in_a_pack_is_an_integrity_error_naming_the_pack(
    store: Store, tmp_path: Path
) -> None:
    data = rand(100_000, 6)  # random: stored raw, so a flip changes the plaintext
    bid, pack, path = _single_blob_repo(store, tmp_path, data)
    loc = store.repo.locate(bid)
    raw = bytearray(path.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as info:
        _fresh_repo(tmp_path).read_blob(bid)
    assert pack[:12] in str(info.value)
    assert info.value.exit_code == 20


def test_truncated_pack_is_an_integrity_error(store: Store, tmp_path: Path) -> None:
    bid, pack, path = _single_blob_repo(store, tmp_path, rand(100_000, 7))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(IntegrityError) as info:
        _fresh_repo(tmp_path).read_blob(bid)
    assert pack[:12] in str(info.value)


def test_missing_pack_is_a_store_error_not_a_crash(store: Store, tmp_path: Path) -> None:
    bid, _pack, path = _single_blob_repo(store, tmp_path, rand(10_000, 8))
    path.unlink()
    with pytest.raises(StoreError):
        _fresh_repo(tmp_path).read_blob(bid)


def test_unknown_blob_is_chunk_not_found(store: Store) -> None:
    with pytest.raises(ChunkNotFound):
        store.repo.read_blob(BlobId(b"\x00" * 32))


def test_restore_of_a_damaged_file_reports_it_and_keeps_the_rest(
    store: Store, tmp_path: Path, reopen: Any
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad").write_bytes(rand(100_000, 9))
    (src / "good").write_bytes(b"fine")
    snap = store.create_snapshot(src).snapshot
    loc = store.repo.locate(store.entry(snap, "bad").content[0])
    path = pack_path(tmp_path / "repo", loc.pack)
    raw = bytearray(path.read_bytes())
    raw[loc.offset + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    res = reopen().restore(snap, tmp_path / "out")
    assert [p.path for p in res.problems] == ["bad"]
    assert (tmp_path / "out" / "good").read_bytes() == b"fine"
    assert not (tmp_path / "out" / "bad").exists()  # never a file with wrong content
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".snapdeck-tmp")]


def test_flipped_byte_in_a_compressed_blob_names_the_pack(store: Store, tmp_path: Path) -> None:
    bid, pack, path = _single_blob_repo(store, tmp_path, b"compressible text " * 5000)
    loc = store.repo.locate(bid)
    assert loc.length < loc.raw_length  # really compressed
    raw = bytearray(path.read_bytes())
    raw[loc.offset + 8] ^= 0x40  # inside the zstd frame: decompression fails
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as info:
        _fresh_repo(tmp_path).read_blob(bid)
    assert pack[:12] in str(info.value)


# ---------------------------------------------------------------- write order and crashes


def _record_puts(monkeypatch: pytest.MonkeyPatch, store: Store) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    real = store.storage.put

    def put(kind: str, name: str, data: bytes, **kw: Any) -> None:
        calls.append((kind, name))
        real(kind, name, data, **kw)

    monkeypatch.setattr(store.storage, "put", put)
    return calls


def test_write_order_is_packs_then_index_then_snapshot(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "big").write_bytes(rand(20 * MiB, 10))  # more than one data pack
    for i in range(20):
        (src / "d" / f"f{i}").write_bytes(rand(1000 + i, 100 + i))
    calls = _record_puts(monkeypatch, store)
    snap = store.create_snapshot(src).snapshot
    order = [(k, n) for k, n in calls if k in ("data", "index", "snapshots")]
    kinds = [k for k, _ in order]
    assert kinds.count("data") >= 3  # two data packs at least, and a tree pack
    assert kinds.count("snapshots") == 1
    last_data = max(i for i, k in enumerate(kinds) if k == "data")
    last_index = max(i for i, k in enumerate(kinds) if k == "index")
    assert last_data < last_index < kinds.index("snapshots") == len(kinds) - 1
    assert order[-1] == ("snapshots", snap.id)
    # every pack the snapshot needs is named by an index segment written before it
    indexed = {
        p for seg in store.repo.index_segments() for p, _ in store.repo._read_index_segment(seg)
    }
    assert {n for k, n in order if k == "data"} <= indexed


def test_crash_while_writing_the_index_leaves_no_snapshot(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reopen: Any
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = rand(200_000, 11)
    (src / "f").write_bytes(data)
    real = store.storage.put

    def put(kind: str, name: str, blob: bytes, **kw: Any) -> None:
        if kind == "index":
            raise OSError(28, "No space left on device (injected)")
        real(kind, name, blob, **kw)

    monkeypatch.setattr(store.storage, "put", put)
    with pytest.raises(OSError):
        store.create_snapshot(src)
    assert list(store.storage.list("snapshots")) == []
    assert list(store.storage.list("index")) == []
    monkeypatch.undo()  # the "process" died; a new one opens the repository
    store.close()

    again = reopen()
    assert again.list_snapshots() == []
    assert again.locks() == []  # no lock left behind either
    snap = again.create_snapshot(src).snapshot
    assert snap.stats.files_new == 1
    assert content_of(reopen(), snap, "f") == data


@pytest.mark.parametrize("failing_kind", ["index", "data"])
def test_snapshot_after_a_failed_put_in_the_same_process_is_complete(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reopen: Any, failing_kind: str
) -> None:
    """A long-lived process (TUI, watch) takes the next checkpoint after a transient error."""
    src = tmp_path / "src"
    src.mkdir()
    data = rand(5000, 12)
    (src / "f").write_bytes(data)
    real = store.storage.put
    failed: list[str] = []

    def put(kind: str, name: str, blob: bytes, **kw: Any) -> None:
        if kind == failing_kind and not failed:
            failed.append(name)
            raise OSError(5, "Input/output error (injected, once)")
        real(kind, name, blob, **kw)

    monkeypatch.setattr(store.storage, "put", put)
    with pytest.raises(OSError):
        store.create_snapshot(src)
    snap = store.create_snapshot(src).snapshot  # same Store: the transient error is over
    assert failed
    fresh = reopen()
    assert content_of(fresh, fresh.resolve(snap.id), "f") == data


def test_snapshot_tree_of_a_reopened_repo_is_readable(
    store: Store, tmp_path: Path, reopen: Any
) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "c").write_bytes(b"deep")
    snap = store.create_snapshot(src).snapshot
    other = reopen()
    rows = {p: e.kind for p, e in other.ls(other.resolve("latest"), recursive=True)}
    assert rows == {b"a": EntryKind.DIR, b"a/b": EntryKind.DIR, b"a/b/c": EntryKind.FILE}
    assert content_of(other, snap, "a/b/c") == b"deep"


def test_long_lived_store_reads_a_snapshot_written_by_another_process(
    store: Store, tmp_path: Path, reopen: Any
) -> None:
    """The TUI is open while cron runs `snapdeck snapshot`: the new snapshot must be readable."""
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a").write_bytes(b"first")
    store.create_snapshot(tmp_path / "one")  # loads this process's index
    other = reopen()
    (tmp_path / "two").mkdir()
    data = rand(1000, 13)
    (tmp_path / "two" / "b").write_bytes(data)
    theirs = other.create_snapshot(tmp_path / "two").snapshot
    assert theirs.id in {s.id for s in store.list_snapshots()}
    assert content_of(store, store.resolve(theirs.id), "b") == data
