"""Watch memory: a long-running watcher does not grow with the number of checkpoints.

The long version is ``python bench/watch.py --memory 10000`` (RSS at every 1,000 of 10,000
checkpoints). Here: a few hundred checkpoints of a real ``Watcher`` (engine thread, thinning,
periodic prune) fed by an in-process event source, with simulated clocks so the retention
thins as it would over hours, and the Python heap measured with tracemalloc.
"""

from __future__ import annotations

import gc
import queue
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import backend.repository
from backend.clock import FixedClock
from backend.config import RetentionConfig, WatchConfig
from backend.index import ChunkIndex
from backend.prune import PruneResult
from backend.store import Store
from backend.watch import WatchCheckpoint, Watcher

SIM_INTERVAL_S = 180.0
"""Simulated seconds between edits."""
RETENTION = RetentionConfig(
    keep_within="1h", keep_hourly=0, keep_daily=0, keep_weekly=0, keep_monthly=0
)
"""~20 checkpoints kept at any time: the retained set (and what it references) is constant,
so anything that still grows is a leak. (The default rules keep a slowly growing set of
hourly and daily checkpoints for weeks; bench/watch.py --memory runs those.)"""


class FedWatcher:
    """A Watcher whose events come from ``edit`` (not inotify), with simulated clocks."""

    def __init__(self, tmp_path: Path, prune_every: int) -> None:
        self.src = tmp_path / "src"
        self.files: list[Path] = []
        for d in range(4):
            sub = self.src / f"d{d}"
            sub.mkdir(parents=True)
            for f in range(30):
                (sub / f"f{f:02d}.txt").write_text(f"{d}/{f}\n" * 10)
            self.files.append(sub / "f00.txt")
        self.clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
        self.mono = 0.0
        self.store = Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache", clock=self.clock)
        self.feed: queue.Queue[str] = queue.Queue()
        self.done: queue.Queue[WatchCheckpoint] = queue.Queue()
        self.heap_after_prune: list[tuple[int, int]] = []
        """(checkpoints so far, traced bytes) right after each prune."""
        self.errors: list[str] = []
        self.n = 0
        cfg = WatchConfig(
            quiet_ms=0,
            min_interval_s=0.0,
            full_rescan_s=0,
            prune_every=prune_every,
            retention=RETENTION,
        )
        self.w = Watcher(
            self.store,
            [self.src],
            cfg,
            watch_fn=self._events,
            clock=lambda: self.mono,
            on_checkpoint=self.done.put,
            on_error=self.errors.append,
            on_prune=self._pruned,
        )

    def _events(self, *_paths: str, stop_event: threading.Event, **_kw: Any) -> Iterator[set]:
        while not stop_event.is_set():
            try:
                yield {(2, self.feed.get(timeout=0.05))}
            except queue.Empty:
                yield set()

    def _pruned(self, _res: PruneResult) -> None:
        if tracemalloc.is_tracing():
            gc.collect()
            self.heap_after_prune.append((self.n, tracemalloc.get_traced_memory()[0]))

    def start(self) -> None:
        self.w.start()
        self.done.get(timeout=60)  # the startup full checkpoint

    def edit(self) -> WatchCheckpoint:
        """One one-file edit and its checkpoint."""
        self.n += 1
        self.mono += SIM_INTERVAL_S
        self.clock.advance(SIM_INTERVAL_S)
        f = self.files[self.n % len(self.files)]
        with open(f, "a") as fh:
            fh.write(f"edit {self.n}\n")
        self.feed.put(str(f))
        return self.done.get(timeout=60)

    def close(self) -> None:
        self.w.stop(timeout=30)
        self.store.close()


@pytest.fixture
def fed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FedWatcher]:
    # Bounded caches are filled during the warm-up, so what grows afterwards is unbounded:
    # the tree cache's bound (50,000 entries) would take thousands of checkpoints to fill.
    monkeypatch.setattr(backend.repository, "TREE_CACHE_ENTRIES", 600)
    r = FedWatcher(tmp_path, prune_every=20)
    r.start()
    yield r
    r.close()


def heap_slope(fed: FedWatcher, warmup: int, window: int, every: int) -> float:
    """Bytes of Python heap (tracemalloc) per checkpoint over ``window`` checkpoints after
    ``warmup``: the least-squares slope of samples taken every ``every`` checkpoints, each
    when the watcher is idle (after the prune that falls on it, if any)."""
    for _ in range(warmup):
        fed.edit()
    assert fed.w.wait_idle(30)
    pts: list[tuple[int, int]] = []
    tracemalloc.start(1)
    try:
        for i in range(1, window + 1):
            fed.edit()
            if i % every == 0:
                assert fed.w.wait_idle(30)
                gc.collect()
                pts.append((i, tracemalloc.get_traced_memory()[0]))
    finally:
        tracemalloc.stop()
    pts = pts[1:]  # the first interval still frees what was allocated before tracing
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def test_heap_stays_flat_over_hundreds_of_checkpoints(fed: FedWatcher) -> None:
    """After a warm-up (the retention at its level), the Python heap stays flat, sampled
    right after each periodic prune. Without the prune (``prune_every = 0``) the same run
    measures 900-1,500 bytes per checkpoint (index entries, pack ids and segment names of
    every checkpoint, and the index dict's growth); with it, 110-190: bounded caches and
    free lists still settling (the storage's fan-out directory set, sqlite's cursor list,
    datetime and tuple free lists), which level off over longer runs."""
    slope = heap_slope(fed, warmup=100, window=140, every=20)
    assert fed.errors == []
    assert fed.w.prunes >= 11
    assert slope < 350, slope
    # And the repository is compact: a few packs and segments, not two packs per checkpoint.
    assert sum(1 for _ in fed.store.storage.list("data")) < 40
    assert sum(1 for _ in fed.store.storage.list("index")) < 40


def test_prune_keeps_every_retained_checkpoint_readable(fed: FedWatcher) -> None:
    """The periodic prune drops only what thinned checkpoints referenced: every snapshot left
    reads back, and the newest has the latest edit."""
    for _ in range(50):
        ev = fed.edit()
    assert fed.w.prunes == 2
    assert fed.errors == []
    snaps = fed.store.list_snapshots()
    assert 19 <= len(snaps) <= 22  # thinned to the last hour
    assert fed.store.check().ok
    last = fed.files[fed.n % len(fed.files)]
    rel = last.relative_to(fed.src).as_posix()
    assert b"".join(fed.store.read_file(ev.snapshot, rel)).endswith(f"edit {fed.n}\n".encode())
    for s in snaps:
        assert len(list(fed.store.ls(s, recursive=True))) == 4 + 4 * 30


def test_prune_every_zero_never_prunes(tmp_path: Path) -> None:
    r = FedWatcher(tmp_path, prune_every=0)
    r.start()
    try:
        for _ in range(12):
            r.edit()
        assert r.w.prunes == 0
        # one data pack and one tree pack per checkpoint, the startup one included
        assert sum(1 for _ in r.store.storage.list("data")) >= 24
    finally:
        r.close()


def test_index_pack_ids_are_compact_and_round_trip() -> None:
    """Pack ids are kept as raw bytes (32 per pack), odd ids as they are; locations and the
    pack set read back unchanged."""
    idx = ChunkIndex()
    hexes = [f"{i:064x}" for i in range(300)]
    for i, p in enumerate(hexes):
        idx.add_pack(p, [(i % 2, i.to_bytes(32, "big"), 7 * i, 5, 9)])  # type: ignore[arg-type]
    idx.add_pack("not-a-hex-id", [(0, b"x" * 32, 1, 2, 3)])  # type: ignore[arg-type]
    assert idx.pack_count == 301
    assert len(idx._packs) == 301 * 32
    for i in (0, 1, 150, 299):
        loc = idx.get(i.to_bytes(32, "big"))  # type: ignore[arg-type]
        assert loc is not None and tuple(loc) == (hexes[i], i % 2, 7 * i, 5, 9)
    assert idx.get(b"x" * 32) == ("not-a-hex-id", 0, 1, 2, 3)  # type: ignore[arg-type]
    assert idx.pack_ids() == {*hexes, "not-a-hex-id"}
    assert dict(idx.items())[(42).to_bytes(32, "big")].pack == hexes[42]
    # a blob already known keeps its first location
    idx.add_pack("f" * 64, [(0, (5).to_bytes(32, "big"), 0, 1, 1)])  # type: ignore[arg-type]
    assert idx.get((5).to_bytes(32, "big")).pack == hexes[5]  # type: ignore[arg-type,union-attr]


def test_prune_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    """Another process's lock postpones the periodic prune (checkpoints go on, no error);
    once it is released, the next try prunes."""
    r = FedWatcher(tmp_path, prune_every=5)
    other = Store.open(tmp_path / "repo", cache_dir=tmp_path / "cache-other")
    lk = other.lock(exclusive=False, operation="reader")
    r.start()
    try:
        for _ in range(8):
            r.edit()
        assert r.w.wait_idle(30)
        assert r.w.prunes == 0
        assert r.errors == []
        assert r.w.state.checkpoints == 9  # the startup one too
        lk.release()
        r.edit()  # the simulated clock passes PRUNE_RETRY_S: tried again after this one
        assert r.w.wait_idle(30)
        assert r.w.prunes == 1
        assert r.errors == []
    finally:
        r.close()
        other.close()
