"""Crash harness: kill -9 snapdeck at random moments and prove nothing is lost.

Each round mutates a source tree of a few thousand files, starts one operation as a real
``snapdeck`` process (snapshot most of the time; forget, prune and evict too), kills it with
SIGKILL after a random delay, and then checks, in this process:

1. the repository opens and ``check --read-data`` finds no damage;
2. every snapshot that still exists restores byte-exact to the tree it was taken of, and
   every snapshot that existed before the round still exists (unless the round was a
   forget or an evict, which may remove old snapshots on purpose);
3. re-running the same operation to completion succeeds (then the new state is verified too).

Usage::

    python bench/crash.py                          # 50 rounds, 3000 files
    python bench/crash.py --rounds 10 --files 500  # quicker
    python bench/crash.py --ops snapshot            # only snapshots

Kill times: write phases are short (a few packs, an index segment, a snapshot object), so
random delays rarely hit them. The killed process runs with ``SNAPDECK_TEST_SLOW_IO=<ms>``
(a test-only hook in ``LocalStorage`` that sleeps in every put, with the temp file in place,
and in every delete), and the harness watches the repository directory: once the operation
has changed it (a temp file, a new object, a deletion), the kill comes after a random part of
the write phase's length as measured on earlier runs. One round in ten is killed at a fully
random moment instead (start-up, scanning, locking). When ``--ops`` has no ``snapshot``, each
round first prepares work for the operation without killing (snapshots to forget or evict;
for prune, a snapshot and a forget so there is garbage).

Options: ``--rounds N``, ``--files N``, ``--seed N``, ``--ops snapshot,forget,prune,evict``,
``--slow-io MS`` (default 15; 0 turns the hook off), ``--workdir DIR`` (default: a temp dir,
removed unless ``--keep``), ``--json FILE``.
Exit status 1 if any round lost anything. ``tests/backend/test_crash.py`` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import blake3

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.store import Store  # noqa: E402

Manifest = dict[str, str]
"""Relative path → BLAKE3 of the file's content."""

OPS = ("snapshot", "forget", "prune", "evict")


@dataclass
class RoundResult:
    """One round: what ran, whether it was killed, and what was verified."""

    round: int
    op: str
    killed: bool
    delay_s: float
    mid_write: bool = False
    """The kill landed after the operation had started changing the repository (a pack, an
    index segment, a snapshot, a ref, a deletion or a temp file), not during start-up."""
    temp_in_flight: bool = False
    """A temp file (an object being written) was in the repository at the kill."""
    check_ok: bool = True
    snapshots_verified: int = 0
    rerun_ok: bool = True
    failures: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return self.check_ok and self.rerun_ok and not self.failures


@dataclass
class Report:
    rounds: list[RoundResult] = field(default_factory=list)
    files: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.survived for r in self.rounds)

    def table(self) -> str:
        lines = [
            "| operation | rounds | killed | killed mid-write | temp file in flight "
            "| survived | snapshots restored byte-exact |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]

        def row(label: str, rs: list[RoundResult]) -> str:
            return (
                f"| {label} | {len(rs)} | {sum(r.killed for r in rs)} | "
                f"{sum(r.mid_write for r in rs)} | {sum(r.temp_in_flight for r in rs)} | "
                f"{sum(r.survived for r in rs)} | {sum(r.snapshots_verified for r in rs)} |"
            )

        for op in OPS:
            rs = [r for r in self.rounds if r.op == op]
            if rs:
                lines.append(row(op, rs))
        lines.append(row("**all**", self.rounds))
        return "\n".join(lines)


# ---------------------------------------------------------------- the source tree


class Source:
    """A tree of small and a few large files that changes a little every round."""

    def __init__(self, root: Path, files: int, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.n = 0
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(files):
            self._new_file()

    def _size(self) -> int:
        x = self.rng.random()
        if x < 0.003:
            return self.rng.randint(1 << 20, 3 << 20)
        if x < 0.08:
            return self.rng.randint(16 << 10, 128 << 10)
        return self.rng.randint(0, 8 << 10)

    def _content(self, size: int) -> bytes:
        # Half random (incompressible), half repetitive text (compressible, dedups).
        if self.rng.random() < 0.5:
            return os.urandom(size)
        word = f"line {self.rng.randint(0, 999)} of some text\n".encode()
        return (word * (size // len(word) + 1))[:size]

    def _new_file(self) -> None:
        self.n += 1
        d = self.root / f"d{self.n % 37:02d}" / f"e{self.n % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{self.n:06d}.dat").write_bytes(self._content(self._size()))

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def mutate(self) -> None:
        files = self.files()
        k = max(1, len(files) // 50)
        for p in self.rng.sample(files, min(k, len(files))):
            if self.rng.random() < 0.5:
                p.write_bytes(self._content(self._size()))
            else:
                with open(p, "ab") as f:
                    f.write(self._content(self.rng.randint(1, 4096)))
        for p in self.rng.sample(files, min(k // 3 + 1, len(files))):
            p.unlink()
        # Every few rounds a big change, so the write phase (several packs) is long enough
        # for kills to land in it.
        for _ in range(k * (8 if self.rng.random() < 0.3 else 1)):
            self._new_file()

    def manifest(self) -> Manifest:
        return {
            str(p.relative_to(self.root)): blake3.blake3(p.read_bytes()).hexdigest()
            for p in self.files()
        }


def manifest_of(root: Path) -> Manifest:
    return {
        str(p.relative_to(root)): blake3.blake3(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- the harness


@dataclass
class Launch:
    """How one watched run of an operation went."""

    killed: bool
    seconds: float
    write_started: bool
    write_s: float
    """From the first change in the repository to the exit (or kill)."""
    temp_in_flight: bool
    returncode: int
    stderr: str


class Harness:
    def __init__(
        self, work: Path, files: int, seed: int, ops: Sequence[str], slow_io_ms: float = 15
    ) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.repo = work / "repo"
        self.env = {**os.environ}
        for var, sub in (
            ("XDG_CACHE_HOME", "cache"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_DATA_HOME", "data"),
            ("XDG_STATE_HOME", "state"),
        ):
            self.env[var] = str(work / "env" / sub)
        self.env.pop("SNAPDECK_REPO", None)
        self.env.pop("SNAPDECK_CONFIG", None)
        self.slow_env = {**self.env}
        if slow_io_ms > 0:
            self.slow_env["SNAPDECK_TEST_SLOW_IO"] = str(slow_io_ms)
        self.write_est: dict[str, float] = {}
        """Per operation: the longest of its last three write phases (seconds)."""
        self.write_recent: dict[str, list[float]] = {}
        self.src = Source(work / "src", files, self.rng)
        self.ops = list(ops)
        self.manifests: dict[str, Manifest] = {}
        self.durations: dict[str, float] = {}
        self.startup = 0.3
        self.verified_ok: set[str] = set()
        """Snapshots already proven byte-exact; later rounds re-check a sample of them."""

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tui", *args, "--repo", str(self.repo), "-q"]

    def command(self, op: str) -> list[str]:
        if op == "snapshot":
            return self.cli("snapshot", str(self.src.root))
        if op == "forget":
            return self.cli("forget", "--keep-last", "3")
        if op == "prune":
            return self.cli("prune")
        if op == "evict":
            return self.cli("evict", "--max-size", "1B")
        raise ValueError(op)

    def run(self, op: str, timeout: float = 600) -> tuple[int, str]:
        t = time.monotonic()
        p = subprocess.run(
            self.command(op), env=self.env, capture_output=True, timeout=timeout, check=False
        )
        self.durations[op] = time.monotonic() - t
        return p.returncode, p.stderr.decode("utf-8", "replace").strip()

    def repo_files(self) -> frozenset[str]:
        """Every object and temp file a write phase can touch (locks left out)."""
        out = set()
        for kind in ("data", "index", "snapshots", "refs"):
            for dirpath, _dirs, names in os.walk(self.repo / kind):
                out.update(os.path.join(dirpath, n) for n in names)
        return frozenset(out)

    def launch(
        self, op: str, *, after_write: float | None = None, at: float | None = None
    ) -> Launch:
        """Run ``op`` (slow I/O on) while watching the repository; kill it ``after_write``
        seconds after its first change to the repository, or ``at`` seconds after start."""
        before = self.repo_files()
        t0 = time.monotonic()
        errf = open(self.work / "stderr.txt", "w+b")  # noqa: SIM115
        proc = subprocess.Popen(
            self.command(op), env=self.slow_env, stdout=subprocess.DEVNULL, stderr=errf
        )
        t_write: float | None = None
        killed = in_flight = False
        while proc.poll() is None:
            now = time.monotonic()
            if t_write is None and self.repo_files() != before:
                t_write = now
            deadline = (
                t0 + at
                if at is not None
                else t_write + after_write
                if after_write is not None and t_write is not None
                else None
            )
            if deadline is not None and now >= deadline:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                killed = True
                in_flight = any(os.path.basename(f).startswith(".tmp-") for f in self.repo_files())
                break
            if now - t0 > 600:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{op} ran for over 10 minutes")
            time.sleep(0.004 if t_write is None else 0.002)
        end = time.monotonic()
        if t_write is None and self.repo_files() != before:
            t_write = end  # the change came in the last poll interval
        write_s = end - t_write if t_write is not None else 0.0
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace").strip()
        errf.close()
        if not killed and proc.returncode in (0, 3) and t_write is not None:
            # Learn how long this operation's write phase lasts.
            recent = self.write_recent.setdefault(op, [])
            recent[:] = [*recent[-2:], write_s]
            self.write_est[op] = max(recent)
        return Launch(
            killed, end - t0, t_write is not None, write_s, in_flight, proc.returncode, err
        )

    def take_snapshot(self) -> None:
        """A snapshot that is not killed (preparing a round); its manifest is recorded."""
        self.src.mutate()
        man = self.src.manifest()
        before = self.snapshot_ids()
        code, err = self.run("snapshot")
        if code != 0:
            raise RuntimeError(f"snapshot failed: {err}")
        for sid in self.snapshot_ids() - before:
            self.manifests[sid] = man

    def prepare(self, op: str) -> None:
        """Give ``op`` something to do (when rounds of other operations do not)."""
        if op == "forget":
            while len(self.snapshot_ids()) < 5:
                self.take_snapshot()
        elif op == "evict":
            while len(self.snapshot_ids()) < 3:
                self.take_snapshot()
        elif op == "prune":
            self.take_snapshot()
            code, err = self.run("forget")
            if code != 0:
                raise RuntimeError(f"forget failed: {err}")

    def snapshot_ids(self) -> set[str]:
        return {p.name for p in (self.repo / "snapshots").iterdir() if not p.name.startswith(".")}

    def init(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "tui", "init", "--repo", str(self.repo), "-q"],
            env=self.env,
            check=True,
        )
        t = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "tui", "--version"], env=self.env, capture_output=True
        )
        self.startup = time.monotonic() - t
        man = self.src.manifest()
        code, err = self.run("snapshot")
        if code != 0:
            raise SystemExit(f"first snapshot failed: {err}")
        self.run("snapshot")  # a no-change snapshot: its duration is the fast path
        for sid in self.snapshot_ids():
            self.manifests[sid] = man

    def kill_round(self, i: int, op: str) -> RoundResult:
        if "snapshot" not in self.ops:
            self.prepare(op)
        if op == "snapshot":
            self.src.mutate()
        man = self.src.manifest()
        before = self.snapshot_ids()
        if op in self.write_est and self.rng.random() < 0.9:
            # Inside the write phase: a random part of its length as seen on earlier runs.
            after = self.rng.uniform(0.0, self.write_est[op])
            run = self.launch(op, after_write=after)
            delay = after
        else:
            # Anywhere (start-up, scan, locking) — and how we first learn the write phase.
            est = self.durations.get(op, 2.0)
            delay = self.rng.uniform(0.02, max(0.1, est))
            run = self.launch(op, at=delay)
        res = RoundResult(i, op, run.killed, round(delay, 3))
        res.mid_write = run.killed and (run.write_started or run.temp_in_flight)
        res.temp_in_flight = run.temp_in_flight
        if op == "snapshot":
            for sid in self.snapshot_ids() - before:
                self.manifests[sid] = man  # written before the kill: it must be whole
        self.verify(res, before, may_remove=op in ("forget", "evict"))
        # Re-run to completion (watched, so it teaches how long the write phase is).
        rerun = self.launch(op)
        code, err = rerun.returncode, rerun.stderr
        if code not in (0, 3) or (code == 3 and op != "evict"):
            res.rerun_ok = False
            res.failures.append(f"re-run of {op} exited {code}: {err}")
        if op == "snapshot":
            for sid in self.snapshot_ids() - before - set(self.manifests):
                self.manifests[sid] = man
        self.verify(res, self.snapshot_ids(), may_remove=False, light=True)
        return res

    def verify(
        self, res: RoundResult, before: set[str], *, may_remove: bool, light: bool = False
    ) -> None:
        """Check the repository and restore snapshots. ``light`` (after a re-run): a check
        without read-data and only the snapshots not yet proven (the new one)."""
        now = self.snapshot_ids()
        if not may_remove and not before <= now:
            res.failures.append(f"snapshots vanished: {sorted(x[:8] for x in before - now)}")
        unknown = now - set(self.manifests)
        if unknown:
            res.failures.append(f"unknown snapshots appeared: {sorted(x[:8] for x in unknown)}")
        cache = self.work / "verify-cache"
        with Store.open(self.repo, cache_dir=cache) as store:
            chk = store.check(read_data=not light)
            if not chk.ok:
                res.check_ok = False
                res.failures.extend(f"check: {e.object[:20]} {e.message}" for e in chk.errors)
            # Every snapshot not yet proven is restored; proven ones are re-checked by sample
            # (their objects are immutable, and check --read-data re-hashes all their data).
            todo = [s for s in now if s in self.manifests and s not in self.verified_ok]
            old = [s for s in now if s in self.verified_ok]
            if not light:
                todo += self.rng.sample(sorted(old), min(1, len(old)))
            for sid in todo:
                target = self.work / "restore"
                shutil.rmtree(target, ignore_errors=True)
                try:
                    r = store.restore(store.get(sid), target)
                except Exception as exc:
                    res.failures.append(f"restore {sid[:8]}: {type(exc).__name__}: {exc}")
                    continue
                if r.problems:
                    res.failures.append(f"restore {sid[:8]}: {r.problems[0]}")
                got = manifest_of(target)
                if got != self.manifests[sid]:
                    diff = set(got.items()) ^ set(self.manifests[sid].items())
                    res.failures.append(
                        f"snapshot {sid[:8]} restored differently ({len(diff)} entries differ)"
                    )
                else:
                    self.verified_ok.add(sid)
                    res.snapshots_verified += 1
            shutil.rmtree(self.work / "restore", ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)

    def choose_op(self, i: int) -> str:
        others = [o for o in self.ops if o != "snapshot"]
        if "snapshot" not in self.ops:
            return others[i % len(others)]
        if others and self.rng.random() < 0.3 and len(self.snapshot_ids()) > 2:
            return self.rng.choice(others)
        return "snapshot"


def run(
    rounds: int,
    files: int,
    *,
    seed: int = 1,
    ops: Sequence[str] = OPS,
    workdir: Path | None = None,
    keep: bool = False,
    log: bool = True,
    slow_io_ms: float = 15,
) -> Report:
    """Run the harness; returns the report (``report.ok`` is False if anything was lost)."""
    work = Path(tempfile.mkdtemp(prefix="snapdeck-crash-")) if workdir is None else workdir
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report = Report(files=files)
    try:
        h = Harness(work, files, seed, ops, slow_io_ms)
        h.init()
        for i in range(1, rounds + 1):
            op = h.choose_op(i)
            res = h.kill_round(i, op)
            report.rounds.append(res)
            if log:
                state = "ok" if res.survived else "FAILED: " + "; ".join(res.failures[:3])
                print(
                    f"round {i:3d} {op:<8} "
                    f"{('killed*' if res.mid_write else 'killed ') if res.killed else 'finished'} at "
                    f"{res.delay_s:6.3f}s, {res.snapshots_verified} restored: {state}",
                    flush=True,
                )
    finally:
        report.seconds = round(time.monotonic() - started, 1)
        if not keep and workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS)
    )
    ap.add_argument(
        "--slow-io",
        type=float,
        default=15,
        metavar="MS",
        help="SNAPDECK_TEST_SLOW_IO for killed runs (0: off)",
    )
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the temp work dir")
    ap.add_argument("--json", type=Path, help="write the report as JSON here")
    a = ap.parse_args(argv)
    ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad:
        ap.error(f"unknown op(s) {bad}; choose from {', '.join(OPS)}")
    rep = run(
        a.rounds,
        a.files,
        seed=a.seed,
        ops=ops,
        workdir=a.workdir,
        keep=a.keep,
        slow_io_ms=a.slow_io,
    )
    print()
    print(rep.table())
    print(
        f"\n{len(rep.rounds)} rounds in {rep.seconds:.0f} s: {'nothing lost' if rep.ok else 'FAILURES'}"
    )
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "ok": rep.ok,
                    "seconds": rep.seconds,
                    "files": rep.files,
                    "rounds": [asdict(r) | {"survived": r.survived} for r in rep.rounds],
                },
                indent=1,
            )
        )
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
