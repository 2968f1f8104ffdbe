"""TUI responsiveness benchmark (one command: ``python bench/tui.py``).

1. First paint of the timeline with 10,000 snapshots (goal ≤ 500 ms): a repository with one
   real snapshot plus 9,999 snapshot objects of the same tree (watch checkpoints a minute
   apart, realistic stats), opened cold (no catalog); measured from app start to the first
   frame that shows timeline rows.
2. The longest event-loop stall while a snapshot of W1 runs in a worker (goal ≤ 50 ms): a
   10 ms-period probe timer in the app records the largest gap between ticks while
   ``s`` (snapshot now) snapshots ``~/.cache/snapdeck-corpus/w1_tree`` (skipped if absent);
   with Python's GIL switch interval (5 ms), then with each of ``BENCH_TUI_SWITCH_MS``
   (e.g. ``1,0.5``) for comparison.

Each first paint is measured ``BENCH_TUI_RUNS`` (3) times; min and median are printed (other
work on the machine skews single runs: ``loadavg_1m`` is printed too). ``BENCH_TUI_REPO=DIR``
builds the repository there once and reuses it.

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
RUNS = int(os.environ.get("BENCH_TUI_RUNS", "3"))
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


async def first_paint(repo: Path, cache: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) from app start to the first timeline rows;
    CPU time is what the paint costs regardless of other load on the machine."""
    store = Store.open(repo, cache_dir=cache)
    cfg = Config(ui=UiConfig(animation="none"))
    t0 = time.perf_counter()
    c0 = time.process_time()
    app = SnapApp(store, dirs=[], config=cfg, watch=False, state_file=cache / "state.toml")
    painted = cpu = 0.0
    async with app.run_test(size=(120, 36)):
        while time.perf_counter() - t0 < 30:
            await asyncio.sleep(0.005)
            try:
                lst = app.screen.query_one(SnapshotList)
            except Exception:
                continue
            if lst.items and lst._line_cache:  # rows rendered by the compositor
                painted = time.perf_counter() - t0
                cpu = time.process_time() - c0
                break
    store.close()
    return painted, cpu


async def stall_during_snapshot(repo: Path, cache: Path, switch_s: float) -> dict[str, float]:
    sys.setswitchinterval(switch_s)
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
        "switch_interval_ms": switch_s * 1000,
        "snapshot_s": round(took, 2),
        "max_stall_ms": round((max(gaps) - 0.01) * 1000, 1),
        "p99_tick_ms": round(steady[int(len(steady) * 0.99)] * 1000, 1),
    }


def _ms(runs: list[tuple[float, float]]) -> dict[str, int]:
    wall = sorted(w for w, _c in runs)
    cpu = sorted(c for _w, c in runs)
    return {
        "min": round(wall[0] * 1000),
        "median": round(wall[len(wall) // 2] * 1000),
        "cpu_median": round(cpu[len(cpu) // 2] * 1000),
    }


def main() -> None:
    os.environ.setdefault("TZ", "UTC")
    out: dict[str, object] = {"snapshots": N, "loadavg_1m": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory() as tmp:
        # BENCH_TUI_REPO: build the 10,000-snapshot repository there once and reuse it
        keep = os.environ.get("BENCH_TUI_REPO")
        repo = Path(keep) if keep else Path(tmp) / "repo"
        if not (repo / "config").exists():
            t = time.perf_counter()
            build_many(repo, N)
            out["build_s"] = round(time.perf_counter() - t, 1)
            print(f"built {N} snapshots in {out['build_s']} s", file=sys.stderr, flush=True)
        # cold: no catalog yet (every snapshot object is read); warm: the catalog is there
        cold = [asyncio.run(first_paint(repo, Path(tmp) / f"c{i}")) for i in range(RUNS)]
        warm = [asyncio.run(first_paint(repo, Path(tmp) / "c0")) for _ in range(RUNS)]
        out["first_paint_cold_ms"] = _ms(cold)
        out["first_paint_warm_ms"] = _ms(warm)
        if W1.is_dir():
            # Python's GIL switch interval (5 ms), then BENCH_TUI_SWITCH_MS if set, to compare
            switches = [0.005] + [
                float(x) / 1000 for x in os.environ.get("BENCH_TUI_SWITCH_MS", "").split(",") if x
            ]
            out["w1"] = [
                asyncio.run(stall_during_snapshot(Path(tmp) / f"r{i}", Path(tmp) / f"s{i}", sw))
                for i, sw in enumerate(switches)
            ]
        else:
            out["w1"] = "skipped: no corpus (see /work/shared/bench/make_corpus.sh)"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
