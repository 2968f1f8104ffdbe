"""The snapshot pipeline's worker processes (backend/workers.py) give the same snapshot as the
in-process path: same tree ids, same accounting, byte-exact restores, on plain, encrypted and
dry runs, and they survive a file growing while read and a worker dying."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from backend import snapshots as snapmod
from backend import workers
from backend.errors import StoreError
from backend.snapshots import SnapshotOptions, scan_live_tree
from backend.store import Store
from tests.conftest import Symlink, make_tree, read_tree


@pytest.fixture(autouse=True)
def engage_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork the workers from the first batch (the default waits for 512 small files)."""
    monkeypatch.setattr(snapmod, "PROC_MIN_FILES", 0)


def _corpus(root: Path, seed: int = 5) -> None:
    rnd = random.Random(seed)
    spec: dict[str, object] = {}
    for d in range(6):
        sub: dict[str, object] = {}
        for i in range(110):
            kind = rnd.random()
            if kind < 0.1:
                sub[f"dup{i}.txt"] = "the same content in many files\n" * 20
            elif kind < 0.15:
                sub[f"empty{i}"] = b""
            elif kind < 0.6:
                lines = rnd.randint(1, 300)
                sub[f"text{i}.py"] = "".join(f"line {rnd.random()}\n" for _ in range(lines))
            else:
                sub[f"bin{i}.dat"] = rnd.randbytes(rnd.randint(1, 40_000))
        spec[f"dir{d}"] = sub
    spec["big.bin"] = rnd.randbytes(5 * 1024 * 1024)  # above BIG_FILE: read in threads
    spec["link"] = Symlink("dir0")
    spec[b"caf\xe9-\nname"] = "non-UTF-8 and a newline"
    make_tree(root, spec)  # type: ignore[arg-type]
    os.link(root / "dir0" / sorted(os.listdir(root / "dir0"))[0], root / "hardlink")


def _snap(tmp_path: Path, name: str, src: Path, procs: int, **kw: object) -> tuple[Store, object]:
    store = Store.init(tmp_path / name, cache_dir=None, **kw)  # type: ignore[arg-type]
    res = store.create_snapshot(src, options=SnapshotOptions(processes=procs))
    return store, res.snapshot


def test_worker_processes_make_the_same_snapshot_as_threads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _corpus(src)
    # One repository config (same id key and chunker seed) for both runs: the tree ids compare.
    a = Store.init(tmp_path / "a", cache_dir=None)
    threads = a.create_snapshot(src, options=SnapshotOptions(processes=0)).snapshot
    b_path = tmp_path / "b"
    import shutil

    shutil.copytree(tmp_path / "a", b_path)
    for sub in ("data", "index", "snapshots", "refs"):
        shutil.rmtree(b_path / sub, ignore_errors=True)
        (b_path / sub).mkdir()
    b = Store.open(b_path, cache_dir=None)
    procs = b.create_snapshot(src, options=SnapshotOptions(processes=2)).snapshot
    assert procs.tree == threads.tree
    for f in ("files_new", "files_changed", "files_unmodified", "total_files", "total_bytes"):
        assert getattr(procs.stats, f) == getattr(threads.stats, f), f
    assert procs.stats.bytes_added == threads.stats.bytes_added
    assert b.check(read_data=True).ok
    b.restore(procs, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    out_link = tmp_path / "out" / "hardlink"
    assert out_link.stat().st_nlink == 2


def test_worker_processes_incremental_and_duplicates_stored_once(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _corpus(src)
    store, _s1 = _snap(tmp_path, "repo", src, 2)
    # Every distinct chunk is stored once although many files share content: the packs hold
    # exactly the blobs the index names, no duplicates.
    packs = store.repo.storage.list("data")  # type: ignore[attr-defined]
    in_packs = sum(len(store.repo.read_pack_header(p.name)) for p in packs)  # type: ignore[attr-defined]
    assert in_packs == len(store.repo.index)  # type: ignore[attr-defined]
    (src / "dir3" / "new.txt").write_text("fresh\n" * 1000)
    s2 = store.create_snapshot(src, options=SnapshotOptions(processes=2)).snapshot
    assert s2.stats.files_new == 1 and s2.stats.files_changed == 0
    assert s2.stats.bytes_added == 6000
    store.restore(s2, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)


def test_worker_processes_on_an_encrypted_repository(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _corpus(src, seed=9)
    store, snap = _snap(tmp_path, "enc", src, 2, password="correct horse")
    assert store.check(read_data=True).ok
    store.restore(snap, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    # Nothing in the packs is plaintext.
    needle = b"the same content in many files"
    for p in (tmp_path / "enc" / "data").rglob("*"):
        if p.is_file():
            assert needle not in p.read_bytes()


def test_live_scan_with_worker_processes_writes_nothing(tmp_path: Path) -> None:
    """``diff --live`` computes the live tree through the same pipeline, storing nothing."""
    src = tmp_path / "src"
    _corpus(src, seed=3)
    store = Store.init(tmp_path / "repo", cache_dir=None)

    def objects() -> list[Path]:
        return sorted(p for k in ("data", "index") for p in (tmp_path / "repo" / k).rglob("*"))

    before = objects()
    live_tree, _sink = scan_live_tree(
        store.repo, src, parent=None, options=SnapshotOptions(processes=2)
    )
    assert objects() == before
    real = store.create_snapshot(src, options=SnapshotOptions(processes=2)).snapshot
    assert bytes(live_tree).hex() == real.tree


def test_a_file_growing_while_a_worker_reads_it_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _corpus(src, seed=4)
    target = src / "dir2" / "grows.txt"
    target.write_bytes(b"a" * 1000)
    real_chunk = workers._chunk
    flag = tmp_path / "grown"

    def chunk(fd: int, size: int, s: workers.WorkerSetup) -> object:
        # Runs in the forked worker (the patch is inherited by fork).
        if os.readlink(f"/proc/self/fd/{fd}").endswith("grows.txt") and not flag.exists():
            flag.touch()
            with open(target, "ab") as fh:
                fh.write(b"b" * 5000)
        return real_chunk(fd, size, s)

    monkeypatch.setattr(workers, "_chunk", chunk)
    store, snap = _snap(tmp_path, "repo", src, 2)
    assert flag.exists()
    assert b"".join(store.read_file(snap, "dir2/grows.txt")) == b"a" * 1000 + b"b" * 5000  # type: ignore[arg-type]


def test_a_worker_that_dies_fails_the_snapshot_cleanly_and_a_retry_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    _corpus(src, seed=6)
    store = Store.init(tmp_path / "repo", cache_dir=None)
    real = workers.read_one
    flag = tmp_path / "died"

    def dying(path: bytes, size: int, mtime_ns: int, ctime_ns: int) -> object:
        # Runs in the forked worker (the patch is inherited by fork): the third file kills it.
        if path.endswith(b"2.py") and not flag.exists():
            flag.touch()
            os._exit(9)  # as if killed
        return real(path, size, mtime_ns, ctime_ns)

    monkeypatch.setattr(workers, "read_one", dying)
    with pytest.raises(StoreError) as err:
        store.create_snapshot(src, options=SnapshotOptions(processes=2))
    assert flag.exists()
    assert "worker process ended unexpectedly" in str(err.value)
    assert "\n" not in str(err.value)
    assert store.list_snapshots() == []
    assert not list((tmp_path / "repo").rglob(".tmp-*"))
    assert store.check(read_data=True).ok
    snap = store.create_snapshot(src, options=SnapshotOptions(processes=2)).snapshot
    assert store.check(read_data=True).ok
    store.restore(snap, tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)


def test_worker_packs_land_before_the_index_that_names_them_and_the_snapshot(
    tmp_path: Path,
) -> None:
    """Write order packs → index → snapshot holds across processes: every pack a worker wrote
    is named by an index segment, and each file was written before the snapshot object."""
    src = tmp_path / "src"
    _corpus(src, seed=8)
    store, snap = _snap(tmp_path, "repo", src, 2)
    repo = tmp_path / "repo"

    def mtimes(kind: str) -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in (repo / kind).rglob("*") if p.is_file()}

    packs, index, snaps = mtimes("data"), mtimes("index"), mtimes("snapshots")
    assert len(packs) >= 3  # each worker's own pack(s), and the parent's tree pack
    named_by: dict[str, str] = {}
    for seg in store.repo.index_segments():  # type: ignore[attr-defined]
        for p, _entries in store.repo.read_index_segment(seg):  # type: ignore[attr-defined]
            named_by.setdefault(p, seg)
    assert set(packs) == set(named_by)
    assert all(packs[p] <= index[seg] for p, seg in named_by.items())
    assert max(index.values()) <= snaps[snap.id]  # type: ignore[attr-defined]
