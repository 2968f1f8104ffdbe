"""TUI responsiveness benchmark (one command: ``python bench/tui.py``).

1. First paint of the timeline with 10,000 snapshots (goal ≤ 500 ms): a repository with one
   real snapshot plus 9,999 snapshot objects of the same tree (watch checkpoints a minute
   apart, realistic stats), opened cold (no catalog); measured from app start to the first
   frame that shows timeline rows.
2. The longest event-loop stall while a snapshot of W1 runs in a worker (goal ≤ 50 ms): a
   50 ms-period probe timer in the app records the largest gap between ticks while
   ``s`` (snapshot now) snapshots ``~/.cache/snapdeck-corpus/w1_tree`` (skipped if absent).

Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.config import Config, UiConfig
from backend.model import SnapshotStats
from backend.store import Store
from tui.app import SnapApp
from tui.widgets.snapshot_list import SnapshotList

N = int(os.environ.get("BENCH_TUI_SNAPSHOTS", "10000"))
W1 = Path(os.environ.get("BENCH_TUI_W1", os.path.expanduser("~/.cache/snapdeck-corpus/w1_tree")))


def build_many(repo: Path, n: int) -> None:
    src = repo.parent / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    with Store.init(repo) as store:
        base = store.create_snapshot(src).snapshot
        parent = base
        for i in range(1, n):
            snap = replace(
                base,
                id="",
                time=base.time - timedelta(minutes=i),
                trigger="watch",
                parent=None,
                stats=SnapshotStats(files_changed=i % 7, bytes_added=(i * 7919) % 50000),
            )
            parent = store.repo.save_snapshot(snap)
        del parent


async def first_paint(repo: Path, cache: Path) -> float:
    store = Store.open(repo, cache_dir=cache)
    cfg = Config(ui=UiConfig(animation="none"))
    t0 = time.perf_counter()
    app = SnapApp(store, dirs=[], config=cfg, watch=False, state_file=cache / "state.toml")
    painted = 0.0
    async with app.run_test(size=(120, 36)):
        while time.perf_counter() - t0 < 30:
            await asyncio.sleep(0.005)
            try:
                lst = app.screen.query_one(SnapshotList)
            except Exception:
                continue
            if lst.items and lst._line_cache:  # rows rendered by the compositor
                painted = time.perf_counter() - t0
                break
    store.close()
    return painted


async def stall_during_snapshot(repo: Path, cache: Path) -> dict[str, float]:
    tiny = repo.parent / "tiny"
    tiny.mkdir(exist_ok=True)
    (tiny / "x.txt").write_text("x")
    store = Store.open(repo, cache_dir=cache, create=True)
    store.create_snapshot(tiny)  # not empty: the timeline, not the welcome screen
    cfg = Config(ui=UiConfig(animation="none"))
    app = SnapApp(store, dirs=[str(W1)], config=cfg, watch=False, state_file=cache / "s.toml")
    gaps: list[float] = []
    async with app.run_test(size=(120, 36)):
        await asyncio.sleep(0.5)
        last = time.perf_counter()

        def tick() -> None:
            nonlocal last
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

        app.set_interval(0.01, tick)
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        app.screen.action_snapshot_now()  # what the "s" key does
        await asyncio.sleep(0.05)
        while any(w.group == "snapshot" and w.is_running for w in app.workers):
            await asyncio.sleep(0.05)
        took = time.perf_counter() - t0
    store.close()
    steady = sorted(gaps)
    return {
        "snapshot_s": round(took, 2),
        "max_stall_ms": round((max(gaps) - 0.01) * 1000, 1),
        "p99_tick_ms": round(steady[int(len(steady) * 0.99)] * 1000, 1),
    }


def main() -> None:
    os.environ.setdefault("TZ", "UTC")
    out: dict[str, object] = {"snapshots": N}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        t = time.perf_counter()
        build_many(repo, N)
        out["build_s"] = round(time.perf_counter() - t, 1)
        print(f"built {N} snapshots in {out['build_s']} s", file=sys.stderr, flush=True)
        out["first_paint_cold_ms"] = round(asyncio.run(first_paint(repo, Path(tmp) / "c1")) * 1000)
        out["first_paint_warm_ms"] = round(asyncio.run(first_paint(repo, Path(tmp) / "c1")) * 1000)
        if W1.is_dir():
            out["w1"] = asyncio.run(stall_during_snapshot(Path(tmp) / "repo2", Path(tmp) / "c2"))
        else:
            out["w1"] = "skipped: no corpus (see /work/shared/bench/make_corpus.sh)"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
