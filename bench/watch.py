"""Watch-mode latency benchmark (issue 3), with restic's no-change backup timed in the same run.

    python bench/watch.py                      # W4 (100k files), 50 edits, 100 ms quiet period
    python bench/watch.py --edits 20 --tree ~/.cache/snapdeck-corpus/w1_tree
    python bench/watch.py --memory 10000       # RSS over 10,000 in-process checkpoints
    python bench/watch.py --memory 3000 --trace 2000,2500   # what grows, by line

What it measures, on a private copy of the tree (the corpus itself is never modified):

* restic: ``restic backup`` of the copy twice; the second (no-change) run is timed. restic
  must rescan every file; snapdeck's watch must not.
* snapdeck: ``snapdeck watch COPY --json --quiet-ms 100 --min-interval-s 0`` as a subprocess.
  For each of N edits of one file: the time from the write to the checkpoint's JSON line
  (end to end, includes the quiet period) and the checkpoint's own work (``checkpoint_s``:
  scan of the dirty path, store, compare, save, move HEAD). Reported as p50/p99.
* A burst of 1,000 file creations: how many checkpoints it produced.
* ``--memory N``: N checkpoints in-process as the watcher takes them (one dirty path each,
  lock kept, thinning once per simulated minute, the clock advancing ``--sim-interval-s``
  per checkpoint so retention really thins); current RSS sampled, the slope over the second
  half reported in MiB per 1,000 checkpoints. ``--prune-every K`` prunes as the eviction
  sweeper would; ``--trace A,B`` adds a tracemalloc diff between checkpoints A and B.

Goals: checkpoint p50 ≤ 0.02 × restic's no-change backup; end-to-end p99 ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path.home() / ".cache" / "snapdeck-corpus"
SNAPDECK = [sys.executable, "-m", "tui"]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def restic_no_change(tree: Path, work: Path) -> float:
    env = os.environ | {
        "RESTIC_PASSWORD": "x",
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    repo = work / "restic-repo"
    subprocess.run(["restic", "-r", str(repo), "init", "-q"], env=env, check=True)
    subprocess.run(["restic", "-r", str(repo), "backup", "-q", str(tree)], env=env, check=True)
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    subprocess.run(["restic", "-r", str(repo), "backup", "-q", str(tree)], env=env, check=True)
    return time.perf_counter() - t


def pick_file(tree: Path) -> Path:
    for dirpath, _dirs, files in os.walk(tree):
        for f in sorted(files):
            return Path(dirpath) / f
    raise SystemExit(f"no file in {tree}")


def watch_latency(tree: Path, work: Path, edits: int, quiet_ms: int) -> dict[str, object]:
    env = os.environ | {
        "SNAPDECK_REPO": str(work / "snapdeck-repo"),
        "XDG_CACHE_HOME": str(work / "xdg-cache"),
    }
    subprocess.run([*SNAPDECK, "init", "-q"], env=env, cwd=ROOT, check=True)
    proc = subprocess.Popen(
        [
            *SNAPDECK,
            "watch",
            str(tree),
            "--json",
            "--quiet-ms",
            str(quiet_ms),
            "--min-interval-s",
            "0",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.perf_counter(), json.loads(line)))

    threading.Thread(target=pump, daemon=True).start()
    t0 = time.perf_counter()
    _t, first = lines.get(timeout=600)
    startup = time.perf_counter() - t0
    target = pick_file(tree)
    e2e: list[float] = []
    work_s: list[float] = []
    for i in range(edits):
        time.sleep(0.05)
        t = time.perf_counter()
        with open(target, "a") as f:
            f.write(f"edit {i}\n")
        got_at, ev = lines.get(timeout=60)
        e2e.append(got_at - t)
        work_s.append(float(ev["checkpoint_s"]))  # type: ignore[arg-type]
    # A burst of 1,000 creations.
    burst = tree / "burst"
    burst.mkdir()
    before = lines.qsize()
    for i in range(1000):
        (burst / f"f{i:04d}").write_text(str(i))
    time.sleep(3.0)
    burst_checkpoints = lines.qsize() - before
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return {
        "startup_full_checkpoint_s": round(startup, 3),
        "first_stats": first.get("stats"),
        "edits": edits,
        "quiet_ms": quiet_ms,
        "e2e_p50_s": round(pct(e2e, 50), 4),
        "e2e_p99_s": round(pct(e2e, 99), 4),
        "checkpoint_p50_s": round(pct(work_s, 50), 4),
        "checkpoint_p99_s": round(pct(work_s, 99), 4),
        "checkpoint_mean_s": round(statistics.mean(work_s), 4),
        "burst_1000_checkpoints": burst_checkpoints,
    }


def _rss_mib() -> float:
    """Current resident set size (not the peak), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (checkpoint, MiB), in MiB per 1,000 checkpoints."""
    if len(points) < 2:
        return 0.0
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def memory_run(
    n: int,
    work: Path,
    *,
    sim_interval_s: float,
    max_minutes: float,
    prune_every: int,
    trace: tuple[int, int] | None,
) -> dict[str, object]:
    """N checkpoints in-process, as the watcher takes them: one dirty file each, the lock kept
    between them, thinning at most once per simulated minute. The store's clock advances
    ``sim_interval_s`` per checkpoint (the watch minimum interval), so the default retention
    (everything within an hour, then hourly...) really thins; with a frozen clock every
    checkpoint would be "within the last hour" and kept, and the catalog would grow by design.
    """
    sys.path.insert(0, str(ROOT))
    from datetime import UTC, datetime

    from backend.clock import FixedClock
    from backend.config import WatchConfig
    from backend.snapshots import SnapshotOptions
    from backend.store import Store
    from backend.watch import THIN_EVERY_S, policy_from_config, thin_watch_checkpoints

    src = work / "mem-src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}").write_text(str(i))
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = Store.init(work / "mem-repo", cache_dir=work / "mem-cache", clock=clock)
    policy = policy_from_config(WatchConfig())
    opts = SnapshotOptions(trigger="watch")
    base = store.checkpoint(src, options=opts, keep_lock=True).base
    thin_every = max(1, round(THIN_EVERY_S / sim_interval_s))
    samples: list[dict[str, float]] = []
    every = max(1, min(250, n // 20))
    deadline = time.monotonic() + max_minutes * 60
    snaps: dict[int, object] = {}
    t = time.perf_counter()
    done = 0
    for i in range(n):
        if trace and i == max(0, trace[0] - 400):  # bounded caches turn over before A
            import tracemalloc

            tracemalloc.start(8)
        clock.advance(sim_interval_s)
        (src / "f0").write_text(f"v{i}")
        res = store.checkpoint(src, options=opts, dirty=[b"f0"], base=base, keep_lock=True)
        base = res.base
        if i % thin_every == 0:
            thin_watch_checkpoints(store, str(src), policy)
        if prune_every and i and i % prune_every == 0:
            store.prune()
        if trace and i in trace:
            import gc
            import tracemalloc

            gc.collect()
            snaps[i] = tracemalloc.take_snapshot()
        done = i + 1
        if i % every == 0:
            samples.append(
                {
                    "checkpoint": i,
                    "rss_mib": round(_rss_mib(), 1),
                    "index_blobs": len(store.repo.index),
                    "catalog_snapshots": len(store.catalog.all()),
                    "seconds": round(time.perf_counter() - t, 1),
                }
            )
        if time.monotonic() > deadline:
            break
    half = [(int(s["checkpoint"]), s["rss_mib"]) for s in samples if s["checkpoint"] >= done / 2]
    out: dict[str, object] = {
        "checkpoints": done,
        "sim_interval_s": sim_interval_s,
        "prune_every": prune_every,
        "seconds": round(time.perf_counter() - t, 1),
        "samples": samples,
        "rss_slope_mib_per_1000_second_half": round(_slope(half), 3),
        "snapshots_left": len(store.list_snapshots()),
    }
    if trace and len(snaps) == 2:
        import tracemalloc

        a, b = (snaps[k] for k in trace)
        diff = b.compare_to(a, "lineno")  # type: ignore[attr-defined]
        out["tracemalloc_growth_per_checkpoint_bytes"] = round(
            sum(d.size_diff for d in diff) / (trace[1] - trace[0])
        )
        out["tracemalloc_top"] = [
            {"where": str(d.traceback), "bytes": d.size_diff, "count": d.count_diff}
            for d in diff[:10]
        ]
        tracemalloc.stop()
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tree", type=Path, default=CORPUS / "w4_manyfiles")
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--quiet-ms", type=int, default=100)
    ap.add_argument("--memory", type=int, default=0, metavar="N")
    ap.add_argument(
        "--sim-interval-s",
        type=float,
        default=2.0,
        help="(--memory) simulated seconds between checkpoints (the clock the retention sees)",
    )
    ap.add_argument("--max-minutes", type=float, default=15.0, help="(--memory) stop after this")
    ap.add_argument(
        "--prune-every", type=int, default=0, metavar="K", help="(--memory) prune every K"
    )
    ap.add_argument(
        "--trace", default="", metavar="A,B", help="(--memory) tracemalloc diff between A and B"
    )
    ap.add_argument("--no-restic", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapdeck-watch-bench-") as d:
        work = Path(d)
        out: dict[str, object] = {}
        if a.memory:
            trace = tuple(int(x) for x in a.trace.split(",")) if a.trace else None
            out["memory"] = memory_run(
                a.memory,
                work,
                sim_interval_s=a.sim_interval_s,
                max_minutes=a.max_minutes,
                prune_every=a.prune_every,
                trace=trace,  # type: ignore[arg-type]
            )
        else:
            if not a.tree.is_dir():
                raise SystemExit(f"{a.tree}: no corpus (run /work/shared/bench/make_corpus.sh)")
            tree = work / "tree"
            shutil.copytree(a.tree, tree, symlinks=True)
            out["tree"] = str(a.tree)
            if not a.no_restic and shutil.which("restic"):
                out["restic_no_change_s"] = round(restic_no_change(tree, work), 3)
            out["snapdeck"] = watch_latency(tree, work, a.edits, a.quiet_ms)
            r = out.get("restic_no_change_s")
            s = out["snapdeck"]
            assert isinstance(s, dict)
            if isinstance(r, float) and r > 0:
                ratio = s["checkpoint_p50_s"] / r
                out["checkpoint_p50_vs_restic_no_change"] = round(ratio, 4)
                out["goal_checkpoint"] = "met" if ratio <= 0.02 else "missed"
            out["goal_e2e_p99"] = "met" if s["e2e_p99_s"] <= 1.0 else "missed"
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
