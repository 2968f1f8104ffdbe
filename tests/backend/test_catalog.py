"""The catalog: a local SQLite cache of snapshot metadata, synced in parallel from the
repository (plain and encrypted), shared between processes, rebuilt when its layout is old."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from backend import catalog as cat
from backend.catalog import Catalog
from backend.keys import KdfParams
from backend.model import Snapshot, SnapshotStats
from backend.store import Store
from tests.conftest import make_tree

CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)


def _many(store: Store, src: Path, n: int) -> list[Snapshot]:
    """One real snapshot and ``n - 1`` snapshot objects of the same tree (varied metadata)."""
    make_tree(src, {"f.txt": "x"})
    base = store.create_snapshot(src).snapshot
    out = [base]
    for i in range(1, n):
        snap = replace(
            base,
            id="",
            time=base.time - timedelta(minutes=i),
            trigger="watch" if i % 2 else "manual",
            parent=out[-1].id,
            tags=("t", f"n{i}") if i % 5 == 0 else (),
            message="line\nmore" if i % 7 == 0 else "",
            stats=SnapshotStats(files_changed=i, bytes_added=i * 1000, duration_s=i / 3),
        )
        out.append(store.repo.save_snapshot(snap))
    return sorted(out, key=lambda s: (s.time, s.id))


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_parallel_sync_reads_every_snapshot_exactly(tmp_path: Path, encrypted: bool) -> None:
    """More snapshots than one batch: the pool reads and opens each (sealed ones too), and
    the catalog then returns them equal to the repository's own decoding."""
    pw = "pw" if encrypted else None
    n = cat._BATCH * 2 + 5
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "c0", password=pw, kdf=CHEAP) as s:
        want = _many(s, tmp_path / "src", n)
    seen: list[tuple[int, int]] = []
    with Store.open(tmp_path / "repo", cache_dir=tmp_path / "cold", password=pw) as s:
        got = s.catalog.sync(s.repo, on_batch=lambda done, total: seen.append((done, total)))
        assert got == want
        assert got == [s.repo.load_snapshot(x.id) for x in want]
        assert seen[-1] == (n, n) and len(seen) == 3  # three batches, progress each
    # a fresh process reads them back from SQLite, equal again (tags, message, stats)
    with Store.open(tmp_path / "repo", cache_dir=tmp_path / "cold", password=pw) as s:
        assert s.list_snapshots(cached=True) == want
        assert s.list_snapshots() == want


def test_sync_drops_gone_snapshots_and_skips_unreadable_ones(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snaps = _many(store, tmp_path / "src", 4)
    store.storage.put("snapshots", "ab" * 32, b"not a snapshot")  # name does not match
    store.storage.delete("snapshots", snaps[0].id)  # behind the catalog's back
    with caplog.at_level(logging.WARNING, logger="backend.catalog"):
        got = store.catalog.sync(store.repo)
    assert got == snaps[1:]
    assert any("skipping unreadable snapshot abababab" in r.message for r in caplog.records)


def test_rows_another_process_adds_are_seen(store: Store, tmp_path: Path) -> None:
    """Two catalogs on one file (two processes): what one adds, the other lists."""
    snaps = _many(store, tmp_path / "src", 3)
    path = store.catalog.path
    assert path is not None
    other = Catalog(path, store.repo.config.id)
    try:
        assert store.list_snapshots() == snaps  # synced by the first
        assert other.all() == snaps  # seen by the second
        extra = replace(snaps[0], id="cd" * 32, message="from elsewhere")
        store.catalog.add(extra)
        assert extra in other.all()
        store.catalog.remove([extra.id])
        assert extra not in other.all()
    finally:
        other.close()


def test_an_old_catalog_layout_is_rebuilt(tmp_path: Path) -> None:
    """A version-1 catalog (JSON blobs, no columns) is replaced, not misread."""
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache") as s:
        want = _many(s, tmp_path / "src", 3)
        path = s.catalog.path
        repo_id = s.repo.config.id
    assert path is not None
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE snapshots (id TEXT PRIMARY KEY, time TEXT, source TEXT, host TEXT,"
        " data BLOB);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    db.execute("INSERT INTO meta VALUES ('repo', ?), ('schema', '1')", (repo_id,))
    db.execute("INSERT INTO snapshots VALUES ('x', 't', 's', 'h', x'00')")
    db.commit()
    db.close()
    with Store.open(tmp_path / "repo", cache_dir=tmp_path / "cache") as s:
        assert s.list_snapshots(cached=True) == []
        assert s.list_snapshots() == want
