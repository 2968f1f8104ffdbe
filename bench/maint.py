#!/usr/bin/env python3
"""Maintenance benchmark: forget / evict / prune on a long watch-style history, beside restic.

Run from the repository root (one command; results are printed and appended to
bench/results/<date>-maint.jsonl):

    .venv/bin/python bench/maint.py                      # 2,000 checkpoints of W1
    .venv/bin/python bench/maint.py --checkpoints 200    # what fits in ~10 minutes here

History: the W1 tree is copied to a stage directory and snapshotted once by each tool; then,
for each checkpoint, one small Python file of the stage gets a line appended and both tools
record it with the same fake time (``--time``), 10 minutes apart:

* snapdeck like its watch mode does: only the changed path is rescanned and every other
  subtree is reused from HEAD by id (one new blob, the trees on the path to the root, one
  small pack per checkpoint), built in-process so 2,000 checkpoints take minutes;
* restic with ``restic backup STAGE --time T`` (it re-scans the tree, reading nothing
  unchanged thanks to its parent snapshot). This dominates the setup time.

Timed, each as a whole process (wall seconds, peak RSS of the process via ``os.wait4``),
restic and snapdeck with the same policy:

    forget --dry-run   POLICY                    (snapdeck and restic)
    evict --dry-run    --max-size 90% of size --max-age none   (snapdeck; cold: no usage cache,
                       every tree read; then warm: the cache the cold run left, as after any
                       earlier stats / evict / TUI eviction screen)
    forget             POLICY  (untimed setup for prune, both)
    prune                                         (snapdeck and restic)

Ratios snapdeck / restic are printed; the goal (issue 4) is time <= 0.5x and RSS <= 1x.
Times are wall seconds (the goal); CPU seconds (user + system of the process) are printed
beside them, since the machine may be shared. With ``--reps N`` the whole timed sequence runs
N times, each on fresh copies of both repositories and both tools' caches, and medians are
reported. snapdeck runs from cached bytecode like any installed Python program (an inherited
PYTHONDONTWRITEBYTECODE=1 would recompile every module in every step).

Reuse a built history (building 2,000 restic backups takes hours)::

    .venv/bin/python bench/maint.py --keep --checkpoints 2000     # build, measure, keep
    .venv/bin/python bench/maint.py --reuse --reps 3               # measure it again
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(REPO_ROOT))

if TYPE_CHECKING:
    from backend.store import Store

USAGE_CACHE = "usage-graph.v*"  # backend.evict.USAGE_CACHE, any version (not imported: keep
# the parent's RSS small; any version: this harness also measures older code)

POLICY = ["--keep-last", "10", "--keep-hourly", "24", "--keep-daily", "7"]
STEP = _dt.timedelta(minutes=10)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_measured(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Like ``timed`` but with the child's own peak RSS (fork + wait4)."""
    subprocess.run(["sync"], check=False)
    out_r, out_w = os.pipe()
    err_path = Path(env.get("TMPDIR", "/tmp")) / f"maint-bench-{os.getpid()}.err"
    t0 = time.monotonic()
    with open(err_path, "wb") as err:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out_w, stderr=err)
    os.close(out_w)
    chunks = []
    with os.fdopen(out_r, "rb") as f:
        while True:
            b = f.read(1 << 16)
            if not b:
                break
            chunks.append(b)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text("utf-8", "replace")[-2000:]
    err_path.unlink(missing_ok=True)
    return {
        "cmd": " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv[:6])),
        "rc": p.returncode,
        "wall_s": round(wall, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "rss_mib": round(ru.ru_maxrss / 1024, 1),
        "stdout": b"".join(chunks).decode("utf-8", "replace"),
        "stderr": stderr,
    }


def pick_files(stage: Path, n: int, rng: random.Random) -> list[Path]:
    pool = []
    for dirpath, _dirs, files in os.walk(stage):
        for name in files:
            if name.endswith(".py"):
                p = Path(dirpath) / name
                try:
                    if 1000 < p.stat().st_size < 100_000:
                        pool.append(p)
                except OSError:
                    pass
    pool.sort()
    return [rng.choice(pool) for _ in range(n)]


def watch_checkpoint(store: Store, stage: Path, changed: Path, when: _dt.datetime) -> None:
    """What watch mode records for one changed file: one blob, the trees up to the root.

    Files below the chunker's minimum size are one chunk, so the blob is the whole file,
    exactly what a full rescan would store for it.
    """
    from backend.format import BLOB_DATA
    from backend.ids import BlobId
    from backend.model import SnapshotStats, Tree

    repo = store.repo
    head = store.head(str(stage))
    assert head is not None
    data = changed.read_bytes()
    assert len(data) < repo.config.chunker.min_size
    bid = repo.hash_blob(data)
    res = repo.put_blob(BLOB_DATA, bid, data)
    st = os.lstat(changed)
    parts = os.fsencode(changed.relative_to(stage)).split(b"/")
    path_trees: list[Tree] = []
    tid = BlobId(bytes.fromhex(head.tree))
    for name in parts[:-1]:
        t = repo.load_tree(tid)
        path_trees.append(t)
        e = t.find(name)
        assert e is not None
        tid = BlobId(e.payload)
    leaf = repo.load_tree(tid)
    old = leaf.find(parts[-1])
    assert old is not None
    new_entry = replace(
        old, content=(bid,), size=len(data), mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns
    )
    new_id, _ = repo.save_tree(
        Tree(tuple(new_entry if e.name == old.name else e for e in leaf.entries))
    )
    for t, name in zip(reversed(path_trees), reversed(parts[:-1]), strict=True):
        new_id, _ = repo.save_tree(
            Tree(tuple(replace(e, payload=new_id) if e.name == name else e for e in t.entries))
        )
    repo.flush()
    stats = SnapshotStats(
        files_changed=1,
        files_unmodified=head.stats.total_files - 1,
        bytes_read=len(data),
        bytes_added=len(data) if res.new else 0,
        bytes_stored=res.stored_length,
        total_files=head.stats.total_files,
        total_bytes=head.stats.total_bytes + len(data) - old.size,
    )
    snap = repo.save_snapshot(
        replace(
            head,
            id="",
            time=when,
            tree=new_id.hex(),
            parent=head.id,
            trigger="watch",
            message="",
            stats=stats,
        )
    )
    store.catalog.add(snap)
    store.set_head(snap)


def du(path: Path) -> int:
    total = 0
    for dirpath, _d, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def make_env(w: Path) -> dict[str, str]:
    xdg = w / "xdg"
    env = dict(
        os.environ,
        TZ="UTC",
        XDG_CACHE_HOME=str(xdg / "cache"),
        XDG_CONFIG_HOME=str(xdg / "config"),
        XDG_DATA_HOME=str(xdg / "data"),
        XDG_STATE_HOME=str(xdg / "state"),
        RESTIC_PASSWORD="x",
        RESTIC_REPOSITORY=str(w / "restic-repo"),
        RESTIC_CACHE_DIR=str(w / "restic-cache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # run from cached bytecode (see the docstring)
    env["PYTHONPYCACHEPREFIX"] = str(w / "pycache")
    return env


def build_history(args: argparse.Namespace) -> int:
    """The setup (in its own process, so the measuring parent stays small: Linux keeps a
    process's peak RSS across fork and exec, and children would inherit ours)."""
    from backend.clock import FixedClock
    from backend.config import default_cache_dir
    from backend.snapshots import SnapshotOptions
    from backend.store import Store

    restic = None if args.no_restic else shutil.which("restic")
    w = args.workdir
    stage, sd_repo = w / "stage", w / "snapdeck-repo"
    env = make_env(w)
    os.environ.update(env)
    log(f"copying {args.corpus} to {stage}")
    shutil.copytree(args.corpus, stage, symlinks=True)
    rng = random.Random(args.seed)
    n = args.checkpoints
    edits = pick_files(stage, n, rng)
    t0 = _dt.datetime(2026, 1, 5, 8, 0, tzinfo=_dt.UTC)
    clock = FixedClock(t0)
    store = Store.init(sd_repo, cache_dir=default_cache_dir(), clock=clock)
    host = socket.gethostname()
    build = {"snapdeck_s": 0.0, "restic_s": 0.0}

    def restic_backup(when: _dt.datetime) -> None:
        if restic is None:
            return
        t = time.monotonic()
        stamp = f"{when:%Y-%m-%d %H:%M:%S}"
        subprocess.run(
            [restic, "backup", "-q", "--host", host, "--time", stamp, str(stage)],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        build["restic_s"] += time.monotonic() - t

    if restic is not None:
        subprocess.run([restic, "init", "-q"], env=env, check=True)
    log("initial snapshots")
    t = time.monotonic()
    store.create_snapshot(stage, options=SnapshotOptions(time=t0, trigger="watch"))
    build["snapdeck_s"] += time.monotonic() - t
    restic_backup(t0)
    started = time.monotonic()
    done = 0
    for i, path in enumerate(edits, 1):
        when = t0 + i * STEP
        clock._now = when
        with open(path, "a") as f:
            f.write(f"# checkpoint {i}\n")
        t = time.monotonic()
        watch_checkpoint(store, stage, path, when)
        build["snapdeck_s"] += time.monotonic() - t
        restic_backup(when)
        done = i
        if restic is not None and build["restic_s"] > args.restic_budget:
            log(f"  restic budget of {args.restic_budget:.0f} s spent: stopping at {i} checkpoints")
            break
        if i % 50 == 0:
            el = time.monotonic() - started
            log(f"  {i}/{n} checkpoints, {el:.0f} s, eta {el / i * (n - i):.0f} s")
    store.close()
    log(f"built: snapdeck {build['snapdeck_s']:.1f} s, restic {build['restic_s']:.1f} s")
    (w / "build.json").write_text(json.dumps({**build, "checkpoints": done}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=int, default=2000)
    ap.add_argument("--corpus", type=Path, default=Path.home() / ".cache/snapdeck-corpus/w1_tree")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/snapdeck-maint-bench"))
    ap.add_argument("--no-restic", action="store_true")
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument(
        "--restic-budget",
        type=float,
        default=float("inf"),
        help="Seconds of restic backups at most: both histories stop at the checkpoint "
        "where restic's build time ran out (the same history for both tools).",
    )
    ap.add_argument("--reps", type=int, default=1, help="Repeat the timed steps; medians.")
    ap.add_argument(
        "--label",
        default="",
        help="Recorded with the results (e.g. 'before'): which code was measured. snapdeck "
        "runs as 'python -m tui' from the current directory, so running this script from "
        "another checkout measures that checkout's code.",
    )
    ap.add_argument("--keep", action="store_true", help="Keep the work directory.")
    ap.add_argument("--reuse", action="store_true", help="Measure an existing --keep'd history.")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        return build_history(args)
    if not args.corpus.is_dir():
        log(f"no corpus at {args.corpus}: run /work/shared/bench/make_corpus.sh")
        return 2
    restic = None if args.no_restic else shutil.which("restic")
    w = args.workdir
    env = make_env(w)
    sd_repo, r_repo = w / "snapdeck-repo", w / "restic-repo"
    n = args.checkpoints
    if not args.reuse:
        if w.exists():
            shutil.rmtree(w)
        w.mkdir(parents=True)
        argv = [sys.executable, __file__, "--build-only", *sys.argv[1:]]
        subprocess.run(argv, check=True)
    build = json.loads((w / "build.json").read_text())
    n = int(build.pop("checkpoints", n))  # fewer when --restic-budget ran out
    # What every repetition starts from: both repositories and both tools' caches as built.
    state = [sd_repo, r_repo, w / "xdg", w / "restic-cache"]
    pristine = [w / (d.name + ".orig") for d in state]
    if args.keep or args.reuse or args.reps > 1:
        for d, orig in zip(state, pristine, strict=True):
            if d.exists() and not orig.exists():
                shutil.copytree(d, orig, symlinks=True)

    py = sys.executable
    sd = [py, "-m", "tui"]
    repo_args = ["-r", str(sd_repo)]
    runs: dict[str, list[dict[str, Any]]] = {}
    outputs: dict[str, str] = {}
    load_before = os.getloadavg()

    def step(name: str, argv: list[str]) -> dict[str, Any]:
        res = run_measured(argv, env)
        runs.setdefault(name, []).append(res)
        outputs[name] = res["stdout"]
        ok = "ok" if res["rc"] in (0, 3) else f"FAILED rc={res['rc']}: {res['stderr'][-300:]}"
        log(
            f"  {name:<32} {res['wall_s']:>7.2f} s  cpu {res['cpu_s']:>6.2f} s  "
            f"{res['rss_mib']:>6.1f} MiB  {ok}"
        )
        return res

    sizes: list[tuple[int, int]] = []
    for rep in range(args.reps):
        if rep or args.reuse:
            for d, orig in zip(state, pristine, strict=True):
                if orig.exists():
                    shutil.rmtree(d, ignore_errors=True)
                    shutil.copytree(orig, d, symlinks=True)
        log(f"repetition {rep + 1} of {args.reps}:")
        # untimed: syncs the catalog and writes the bytecode cache
        stats = json.loads(step("snapdeck stats", [*sd, "stats", *repo_args, "--json"])["stdout"])
        budget = int(stats["stored_bytes"] * 0.9)
        step(
            "snapdeck forget --dry-run", [*sd, "forget", *repo_args, *POLICY, "--dry-run", "--json"]
        )
        if restic:
            step("restic forget --dry-run", [restic, "forget", *POLICY, "--dry-run", "--json"])
        evict_argv = [*sd, "evict", *repo_args, "--max-size", str(budget), "--max-age", "none"]
        for cache in (w / "xdg" / "cache" / "snapdeck").glob(f"*/{USAGE_CACHE}"):
            cache.unlink()  # the first plan reads every tree, and leaves the usage cache
        step("snapdeck evict --dry-run (cold)", [*evict_argv, "--dry-run", "--json"])
        step("snapdeck evict --dry-run", [*evict_argv, "--dry-run", "--json"])
        step("snapdeck forget", [*sd, "forget", *repo_args, *POLICY, "--json"])
        if restic:
            step("restic forget", [restic, "forget", *POLICY, "--json"])
        before = (du(sd_repo), du(r_repo) if restic else 0)
        step("snapdeck prune", [*sd, "prune", *repo_args, "--json"])
        if restic:
            step("restic prune", [restic, "prune"])
        sizes.append(before)
    load_after = os.getloadavg()
    fd = json.loads(outputs["snapdeck forget --dry-run"])
    ev = json.loads(outputs["snapdeck evict --dry-run"])

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    summary: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "checkpoints": n,
        "snapshots": n + 1,
        "reps": args.reps,
        "label": args.label,
        "code": os.getcwd(),
        "load_avg": [round(x, 2) for x in (*load_before, *load_after)],
        "build_s": {k: round(v, 1) for k, v in build.items()},
        "snapdeck_repo_bytes": [sizes[-1][0], du(sd_repo)],
        "restic_repo_bytes": [sizes[-1][1], du(r_repo)] if restic else None,
        "forget_keep": len(fd["keep"]),
        "forget_remove": len(fd["remove"]),
        "evict_remove": len(ev["remove"]),
        "steps": {
            k: {
                "wall_s": median(k, "wall_s"),
                "cpu_s": median(k, "cpu_s"),
                "rss_mib": median(k, "rss_mib"),
                "rc": v[-1]["rc"],
                "runs": [[r["wall_s"], r["cpu_s"], r["rss_mib"]] for r in v],
            }
            for k, v in runs.items()
        },
    }
    label = f" [{args.label}]" if args.label else ""
    print(f"\n## maint bench{label}: {n} watch-style checkpoints of W1 ({n + 1} snapshots)\n")
    print(f"forget policy {' '.join(POLICY)}: keep {len(fd['keep'])}, remove {len(fd['remove'])}")
    print(f"evict --max-size {budget} (90%): plan removes {len(ev['remove'])} snapshots")
    print(
        f"medians of {args.reps} run(s); load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f}"
    )
    print(
        "\n| step | snapdeck s | snapdeck CPU s | snapdeck MiB | restic s | restic CPU s "
        "| restic MiB | time ratio | RSS ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    pairs = [
        ("forget --dry-run", "snapdeck forget --dry-run", "restic forget --dry-run"),
        (
            "evict --dry-run, cold (vs restic forget --dry-run)",
            "snapdeck evict --dry-run (cold)",
            "restic forget --dry-run",
        ),
        (
            "evict --dry-run, warm usage cache (vs restic forget --dry-run)",
            "snapdeck evict --dry-run",
            "restic forget --dry-run",
        ),
        ("forget", "snapdeck forget", "restic forget"),
        ("prune", "snapdeck prune", "restic prune"),
    ]
    ratios = {}
    for label, a, b in pairs:
        if a not in runs:
            continue
        wa, ca, ma = median(a, "wall_s"), median(a, "cpu_s"), median(a, "rss_mib")
        if b not in runs:
            print(f"| {label} | {wa:.2f} | {ca:.2f} | {ma:.0f} | - | - | - | - | - |")
            continue
        wb, cb, mb = median(b, "wall_s"), median(b, "cpu_s"), median(b, "rss_mib")
        tr = wa / wb if wb else float("nan")
        mr = ma / mb if mb else float("nan")
        ratios[label] = {"time": round(tr, 3), "rss": round(mr, 3)}
        print(
            f"| {label} | {wa:.2f} | {ca:.2f} | {ma:.0f} | {wb:.2f} | {cb:.2f} | {mb:.0f} "
            f"| {tr:.2f} | {mr:.2f} |"
        )
    summary["ratios"] = ratios
    out = HERE / "results" / f"{_dt.date.today().isoformat()}-maint.jsonl"
    out.parent.mkdir(exist_ok=True)
    with open(out, "a") as f:
        f.write(json.dumps(summary) + "\n")
    print(f"\nappended to {out.relative_to(REPO_ROOT)}")
    if not args.keep and not args.reuse:
        shutil.rmtree(w, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
