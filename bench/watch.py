"""Watch-mode latency benchmark (issue 3), with restic's no-change backup timed in the same run.

    python bench/watch.py                      # W4 (100k files), 50 edits, 100 ms quiet period
    python bench/watch.py --edits 20 --tree ~/.cache/snapdeck-corpus/w1_tree
    python bench/watch.py --memory 10000       # RSS over 10,000 in-process checkpoints

What it measures, on a private copy of the tree (the corpus itself is never modified):

* restic: ``restic backup`` of the copy twice; the second (no-change) run is timed. restic
  must rescan every file; snapdeck's watch must not.
* snapdeck: ``snapdeck watch COPY --json --quiet-ms 100 --min-interval-s 0`` as a subprocess.
  For each of N edits of one file: the time from the write to the checkpoint's JSON line
  (end to end, includes the quiet period) and the checkpoint's own work (``checkpoint_s``:
  scan of the dirty path, store, compare, save, move HEAD). Reported as p50/p99.
* A burst of 1,000 file creations: how many checkpoints it produced.
* ``--memory N``: N checkpoints in-process (Store.checkpoint with one dirty path each), RSS
  sampled every N/10: memory must stay flat.

Goals: checkpoint p50 ≤ 0.02 × restic's no-change backup; end-to-end p99 ≤ 1 s.
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


def memory_run(n: int, work: Path) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from backend.config import WatchConfig
    from backend.snapshots import SnapshotOptions
    from backend.store import Store
    from backend.watch import policy_from_config, thin_watch_checkpoints

    src = work / "mem-src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i}").write_text(str(i))
    store = Store.init(work / "mem-repo", cache_dir=work / "mem-cache")
    policy = policy_from_config(WatchConfig())
    opts = SnapshotOptions(trigger="watch")
    base = store.checkpoint(src, options=opts).base
    samples = []
    t = time.perf_counter()
    for i in range(n):
        (src / "f0").write_text(f"v{i}")
        res = store.checkpoint(src, options=opts, dirty=[b"f0"], base=base)
        base = res.base
        if i % 50 == 0:
            thin_watch_checkpoints(store, str(src), policy)
        if i % max(1, n // 10) == 0:
            samples.append(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return {
        "checkpoints": n,
        "seconds": round(time.perf_counter() - t, 1),
        "max_rss_mib_samples": samples,
        "snapshots_left": len(store.list_snapshots()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tree", type=Path, default=CORPUS / "w4_manyfiles")
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--quiet-ms", type=int, default=100)
    ap.add_argument("--memory", type=int, default=0, metavar="N")
    ap.add_argument("--no-restic", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapdeck-watch-bench-") as d:
        work = Path(d)
        out: dict[str, object] = {}
        if a.memory:
            out["memory"] = memory_run(a.memory, work)
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
