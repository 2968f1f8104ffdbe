"""Watch-mode latency benchmark (issue 3), with restic's no-change backup timed in the same run.

    python bench/watch.py                      # W4 (100k files), 50 edits, 100 ms quiet period
    python bench/watch.py --edits 20 --tree ~/.cache/snapdeck-corpus/w1_tree
    python bench/watch.py --memory 10000       # RSS over 10,000 checkpoints of a real Watcher
    python bench/watch.py --memory 10000 --prune-every 0   # the same without the periodic prune
    python bench/watch.py --memory 3000 --trace 2000,3000  # what grows, by line (tracemalloc)

What it measures, on a private copy of the tree (the corpus itself is never modified):

* restic: ``restic backup`` of the copy twice; the second (no-change) run is timed. restic
  must rescan every file; snapdeck's watch must not.
* snapdeck: ``snapdeck watch COPY --json --quiet-ms 100 --min-interval-s 0`` as a subprocess.
  For each of N edits of one file: the time from the write to the checkpoint's JSON line
  (end to end, includes the quiet period) and the checkpoint's own work (``checkpoint_s``:
  scan of the dirty path, store, compare, save, move HEAD). Reported as p50/p99.
* A burst of 1,000 file creations: how many checkpoints it produced.
* ``--memory N``: N one-file edits of a generated tree (``--files``, default 2,000 in 50
  directories), each checkpointed by a real ``Watcher`` (engine thread, retention thinning,
  periodic prune every ``--prune-every`` checkpoints, default 1,000 as ``[watch]
  prune_every``). Events come from an in-process source instead of inotify, and the clocks
  advance ``--sim-interval-s`` (2 s) per edit, so 10,000 checkpoints are ~5.6 simulated
  hours of editing and the retention really thins. Prints RSS at every 1,000 checkpoints
  (stderr, as it goes), then JSON: RSS at 1k..Nk, the least-squares slope from 1k on and
  over the second half (MiB per 1,000 checkpoints), peak RSS, checkpoint p50/p99, prune
  count and time, what is left in the repository. ``--trace A,B`` adds a tracemalloc diff
  between checkpoints A and B (traced from the start: caches that turn over, such as the
  catalog's ~1,800 retained snapshots, must have turned over once before A).

Goals: checkpoint p50 ≤ 0.02 × restic's no-change backup; end-to-end p99 ≤ 1 s; memory flat
over 10,000 checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
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


def _make_memory_tree(root: Path, files: int) -> list[Path]:
    """``files`` small files in a three-level tree (top/sub/file, ~40 files per directory);
    returns the files the edits cycle through (one per directory, so edits move around)."""
    per_dir = 40
    dirs = max(1, files // per_dir)
    edit: list[Path] = []
    for d in range(dirs):
        sub = root / f"top{d // 10:02d}" / f"sub{d % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(per_dir):
            (sub / f"file{f:02d}.txt").write_text(f"{d}/{f}\n" * 20)
        edit.append(sub / "file00.txt")
    return edit


def memory_run(
    n: int,
    work: Path,
    *,
    files: int,
    sim_interval_s: float,
    max_minutes: float,
    prune_every: int,
    trace: tuple[int, int] | None,
) -> dict[str, object]:
    """N checkpoints taken by a real ``Watcher`` (engine thread, thinning, periodic prune),
    one one-file edit each. Events come from an in-process source instead of inotify (same
    engine path from the event on; inotify itself is measured by the latency run), and the
    watcher's clock and the store's clock advance ``sim_interval_s`` per edit, so the
    retention (all within an hour, then hourly...) and the periodic rescans act as over
    hours of real editing. malloc is tuned as in the CLI process. RSS is sampled every 250
    checkpoints.
    """
    sys.path.insert(0, str(ROOT))
    from datetime import UTC, datetime

    from backend.clock import FixedClock
    from backend.config import WatchConfig
    from backend.store import Store
    from backend.tuning import tune_malloc
    from backend.watch import WatchCheckpoint, Watcher

    tune_malloc()  # as `snapdeck watch` (tui/cli.py main) does
    src = work / "mem-src"
    edits = _make_memory_tree(src, files)
    clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
    mono = [0.0]
    store = Store.init(work / "mem-repo", cache_dir=work / "mem-cache", clock=clock)
    feed: queue.Queue[str] = queue.Queue()

    def events(*_paths: str, stop_event: threading.Event, **_kw: object):  # type: ignore[no-untyped-def]
        while not stop_event.is_set():
            try:
                yield {(2, feed.get(timeout=0.1))}
            except queue.Empty:
                yield set()

    done_q: queue.Queue[WatchCheckpoint] = queue.Queue()
    prunes: list[float] = []
    last_checkpoint_at = [0.0]

    def on_checkpoint(ev: WatchCheckpoint) -> None:
        last_checkpoint_at[0] = time.perf_counter()
        done_q.put(ev)

    def on_prune(_res: object) -> None:
        # The engine prunes right after a checkpoint (nothing else is pending then).
        prunes.append(time.perf_counter() - last_checkpoint_at[0])

    errors: list[str] = []
    cfg = WatchConfig(quiet_ms=0, min_interval_s=0.0, prune_every=prune_every)
    w = Watcher(
        store,
        [src],
        cfg,
        watch_fn=events,
        clock=lambda: mono[0],
        on_checkpoint=on_checkpoint,
        on_error=errors.append,
        on_prune=on_prune,
    )
    w.start()
    done_q.get(timeout=600)  # the startup full checkpoint
    samples: list[dict[str, object]] = []
    work_s: list[float] = []
    deadline = time.monotonic() + max_minutes * 60
    snaps: dict[int, object] = {}
    if trace:
        import tracemalloc

        tracemalloc.start(1)
    t = time.perf_counter()
    done = 0
    for i in range(1, n + 1):
        mono[0] += sim_interval_s
        clock.advance(sim_interval_s)
        f = edits[i % len(edits)]
        with open(f, "a") as fh:
            fh.write(f"edit {i}\n")
        feed.put(str(f))
        ev = done_q.get(timeout=600)
        work_s.append(ev.checkpoint_s)
        done = i
        if trace and i in trace:
            import gc
            import tracemalloc

            gc.collect()
            snaps[i] = tracemalloc.take_snapshot()
        if i % 250 == 0:
            index = store.repo.index
            samples.append(
                {
                    "checkpoint": i,
                    "rss_mib": round(_rss_mib(), 1),
                    "index_blobs": len(index),
                    "index_packs": getattr(index, "pack_count", None),
                    "snapshots": len(store.catalog.all()),
                    "prunes": w.prunes,
                    "seconds": round(time.perf_counter() - t, 1),
                }
            )
            if i % 1000 == 0:
                s = samples[-1]
                print(
                    f"{i:>6} checkpoints  RSS {s['rss_mib']:6.1f} MiB  index {s['index_blobs']} "
                    f"blobs / {s['index_packs']} packs  {s['snapshots']} snapshots  "
                    f"{w.prunes} prunes  {s['seconds']} s",
                    file=sys.stderr,
                    flush=True,
                )
        if time.monotonic() > deadline:
            break
    w.stop(timeout=60)
    from_1k = [
        (int(s["checkpoint"]), float(s["rss_mib"])) for s in samples if s["checkpoint"] >= 1000
    ]  # type: ignore[call-overload]
    second = [(x, y) for x, y in from_1k if x >= done / 2]
    out: dict[str, object] = {
        "checkpoints": done,
        "files": files,
        "sim_interval_s": sim_interval_s,
        "prune_every": prune_every,
        "seconds": round(time.perf_counter() - t, 1),
        "rss_mib_at": {
            str(s["checkpoint"]): s["rss_mib"] for s in samples if s["checkpoint"] % 1000 == 0
        },  # type: ignore[operator]
        "rss_slope_mib_per_1000_from_1k": round(_slope(from_1k), 3),
        "rss_slope_mib_per_1000_second_half": round(_slope(second), 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "checkpoint_p50_s": round(pct(work_s, 50), 4),
        "checkpoint_p99_s": round(pct(work_s, 99), 4),
        "prunes": len(prunes),
        "prune_s_p50": round(pct(prunes, 50), 3) if prunes else None,
        "prune_s_max": round(max(prunes), 3) if prunes else None,
        "snapshots_left": len(store.list_snapshots()),
        "repo_packs": sum(1 for _ in store.storage.list("data")),
        "repo_index_segments": sum(1 for _ in store.storage.list("index")),
        "errors": errors,
        "samples": samples,
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
        "--files", type=int, default=2000, help="(--memory) files in the generated tree"
    )
    ap.add_argument(
        "--sim-interval-s",
        type=float,
        default=2.0,
        help="(--memory) simulated seconds between checkpoints (the clock the retention sees)",
    )
    ap.add_argument("--max-minutes", type=float, default=30.0, help="(--memory) stop after this")
    ap.add_argument(
        "--prune-every",
        type=int,
        default=1000,
        metavar="K",
        help="(--memory) [watch] prune_every (0: never, the growth without it)",
    )
    ap.add_argument(
        "--trace",
        default="",
        metavar="A,B",
        help="(--memory) tracemalloc diff between checkpoints A and B (traced from the start)",
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
                files=a.files,
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
