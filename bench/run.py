#!/usr/bin/env python3
"""snapdeck benchmark harness: snapdeck vs restic / borg (lz4) / borg (zstd,3).

Stdlib only.  Run from the repo root:

    python bench/run.py                      # all workloads (w1 w2 w3 w4), 3 reps, all tools
    python bench/run.py w1 w4 --reps 3 --tools snapdeck,restic,borg,borg-zstd3
    python bench/run.py --quick              # tiny self-made corpus, snapdeck + restic, 1 rep

Every rep starts from a FRESH repository (init untimed; tool caches wiped too) and times, in
order, each step as a whole process (wall seconds, user+sys CPU seconds, peak RSS of the process
tree via os.wait4 ru_maxrss), with `sync` before each timed step:

    first     first backup of the source dir            -> repo size (du -sb)
    nochange  second backup, nothing touched
    v2        (W3 only) big.bin replaced by v2, backup  -> bytes added (du delta)
    restore   restore latest into an empty dir          -> verified against the source
    W2        16 Django versions rsync'ed one after the other into one stage dir, one backup
              each (first = v00, nochange = v15 again); total time of the 16 and final repo size

Tools are interleaved rep by rep so that machine drift hits all of them alike.  Each measurement
is appended as one JSON line to bench/results/<date>-<workload>.jsonl; the markdown tables are
printed and written to bench/results/latest.md.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
WORKLOADS = {
    "w1": "w1_tree",
    "w2": "w2_versions",
    "w3": "w3_bigfile",
    "w4": "w4_manyfiles",
}
TITLES = {
    "w1": "W1 tree (stdlib + 10 packages)",
    "w2": "W2 versions (Django 4.2.0 → 4.2.15, 16 snapshots into one repo)",
    "w3": "W3 bigfile (1 GiB; v2 = 10×4 KiB overwrites + 100 B insert)",
    "w4": "W4 manyfiles (100k files of 1–8 KiB)",
    "quick": "quick (tiny self-made corpus, smoke test)",
}
ALL_TOOLS = ["snapdeck", "restic", "borg", "borg-zstd3"]
ANCHORS = ["restic", "borg", "borg-zstd3"]
MiB = 1024 * 1024


# ------------------------------------------------------------------------------- utilities
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rmrf(p: Path) -> None:
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.exists():
        shutil.rmtree(p)


def du_sb(path: Path) -> int:
    """Apparent size of a tree like `du -sb`: every inode once, directories included."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(path)]
    if not os.path.lexists(path):
        return 0
    st = os.lstat(path)
    total += st.st_size
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                s = e.stat(follow_symlinks=False)
                if s.st_nlink > 1 and not e.is_dir(follow_symlinks=False):
                    key = (s.st_dev, s.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += s.st_size
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total


def tree_index(root: Path) -> dict[str, tuple[str, int | str]]:
    """relpath -> (kind, size | link target) for every entry below root (root excluded)."""
    out: dict[str, tuple[str, int | str]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                if e.is_symlink():
                    out[r] = ("link", os.readlink(e.path))
                elif e.is_dir(follow_symlinks=False):
                    out[r] = ("dir", 0)
                    stack.append(r)
                elif e.is_file(follow_symlinks=False):
                    out[r] = ("file", e.stat(follow_symlinks=False).st_size)
                else:
                    out[r] = ("other", 0)
    return out


def same_bytes(a: Path, b: Path, bufsize: int = MiB) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(bufsize)
            y = fb.read(bufsize)
            if x != y:
                return False
            if not x:
                return True


def fmt_cmd(argv: list[str]) -> str:
    return " ".join(argv)


# ------------------------------------------------------------------------------- the runner
class Runner:
    """Owns the run dir, the tool output log and the timed process launcher."""

    def __init__(self, run_dir: Path, step_timeout: float) -> None:
        self.run = run_dir
        self.run.mkdir(parents=True, exist_ok=True)
        self.logfile = self.run / "tool-output.log"
        self.step_timeout = step_timeout
        self.base_env = dict(
            os.environ,
            RESTIC_PASSWORD="x",
            RESTIC_CACHE_DIR=str(self.run / "cache-restic"),
            BORG_BASE_DIR=str(self.run / "borgbase"),
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
        )
        xdg = self.run / "xdg-snapdeck"
        self.snapdeck_env = dict(
            self.base_env,
            XDG_CACHE_HOME=str(xdg / "cache"),
            XDG_DATA_HOME=str(xdg / "data"),
            XDG_CONFIG_HOME=str(xdg / "config"),
            XDG_STATE_HOME=str(xdg / "state"),
            # Like any installed Python program (borg's Debian package ships its .pyc files),
            # snapdeck runs from cached bytecode: without this an inherited
            # PYTHONDONTWRITEBYTECODE=1 would recompile every module on every step (~0.1 s CPU).
            # The untimed `init` writes the cache; it lives outside the checkout.
            PYTHONPYCACHEPREFIX=str(self.run / "pycache"),
        )
        self.snapdeck_env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.tool_state_dirs = [self.run / "cache-restic", self.run / "borgbase", xdg]

    def wipe_tool_state(self) -> None:
        for p in self.tool_state_dirs:
            rmrf(p)
        for k in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            Path(self.snapdeck_env[k]).mkdir(parents=True, exist_ok=True)

    def _launch(
        self, argv: list[str], cwd: Path | None, env: dict[str, str] | None, timeout: float
    ) -> dict[str, Any]:
        out_p, err_p = self.run / "last.stdout", self.run / "last.stderr"
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env or self.base_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timer.start()
            try:
                _, status, ru = os.wait4(p.pid, 0)
            finally:
                timer.cancel()
            t1 = time.monotonic()
        p.returncode = os.waitstatus_to_exitcode(status)
        stdout = out_p.read_text(errors="replace")
        stderr = err_p.read_text(errors="replace")
        with open(self.logfile, "a") as lf:
            lf.write(f"\n$ {fmt_cmd(argv)}" + (f"   (cwd={cwd})" if cwd else "") + "\n")
            lf.write(stdout[-20000:])
            lf.write(stderr[-20000:])
            lf.write(f"[rc={p.returncode} wall={t1 - t0:.3f}s]\n")
        res: dict[str, Any] = dict(
            wall=round(t1 - t0, 3),
            cpu=round(ru.ru_utime + ru.ru_stime, 3),
            rss_mib=round(ru.ru_maxrss / 1024, 1),
            rc=p.returncode,
        )
        if timed_out.is_set():
            res["error"] = f"timed out after {timeout:.0f} s"
        elif p.returncode != 0:
            res["error"] = (stderr.strip() or stdout.strip())[-2000:]
        res["_stdout"] = stdout
        return res

    def timed(
        self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """sync (untimed), then run argv as one timed whole-process step."""
        os.sync()
        res = self._launch(argv, cwd, env, self.step_timeout)
        if res["rc"] != 0:
            log(f"  !! rc={res['rc']} for {fmt_cmd(argv)}: {res.get('error', '')[-500:]}")
        return res

    def untimed(
        self, argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return self._launch(argv, cwd, env, self.step_timeout)


class ToolError(RuntimeError):
    pass


def strip_private(step: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------- tool adapters
class Tool:
    name = "?"
    verify_sample = 200

    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self.repo = runner.run / f"repo-{self.name}"
        self.n = 0

    def fresh(self) -> None:
        rmrf(self.repo)
        self.r.wipe_tool_state()
        self.n = 0
        res = self.r.untimed(self.init_argv(), env=self.env())
        if res["rc"] != 0:
            raise ToolError(f"{self.name} init failed (rc={res['rc']}): {res.get('error', '')}")

    def env(self) -> dict[str, str]:
        return self.r.base_env

    def init_argv(self) -> list[str]:
        raise NotImplementedError

    def backup(self, src: Path) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self, src: Path, target: Path) -> dict[str, Any]:
        raise NotImplementedError

    def restored_root(self, src: Path, target: Path) -> Path:
        raise NotImplementedError

    def extra_stats(self) -> dict[str, Any] | None:
        return None


class Snapdeck(Tool):
    name = "snapdeck"
    verify_sample = 2000

    def __init__(self, runner: Runner, exe: str, json_global: bool) -> None:
        super().__init__(runner)
        self.exe = exe
        self.json_global = json_global

    def json_argv(self, *cmd: str) -> list[str]:
        """`snapdeck --json --repo R CMD ...` or `snapdeck --repo R CMD ... --json`."""
        if self.json_global:
            return [self.exe, "--json", "--repo", str(self.repo), *cmd]
        return [self.exe, "--repo", str(self.repo), *cmd, "--json"]

    def env(self) -> dict[str, str]:
        return self.r.snapdeck_env

    def init_argv(self) -> list[str]:
        return [self.exe, "--repo", str(self.repo), "init"]

    def backup(self, src: Path) -> dict[str, Any]:
        res = self.r.timed(self.json_argv("snapshot", str(src)), env=self.env())
        if res["rc"] == 0:
            obj = last_json_object(res["_stdout"])
            if obj is None:
                res["json_error"] = "no JSON object on stdout: " + res["_stdout"][-300:]
            else:
                res["snapshot_id"] = obj.get("id")
                res["stats"] = obj.get("stats")
        return res

    def restore(self, src: Path, target: Path) -> dict[str, Any]:
        return self.r.timed(
            [self.exe, "--repo", str(self.repo), "restore", "latest", "--target", str(target)],
            env=self.env(),
        )

    def restored_root(self, src: Path, target: Path) -> Path:
        return target  # snapdeck restores the tree contents into the target

    def extra_stats(self) -> dict[str, Any] | None:
        res = self.r.untimed(self.json_argv("stats"), env=self.env())
        if res["rc"] != 0:
            return {"error": res.get("error", ""), "rc": res["rc"]}
        obj = last_json_object(res["_stdout"])
        return obj if obj is not None else {"error": "no JSON: " + res["_stdout"][-300:]}


class Restic(Tool):
    name = "restic"

    def init_argv(self) -> list[str]:
        return ["restic", "-r", str(self.repo), "init"]

    def backup(self, src: Path) -> dict[str, Any]:
        return self.r.timed(["restic", "-r", str(self.repo), "backup", "--quiet", str(src)])

    def restore(self, src: Path, target: Path) -> dict[str, Any]:
        return self.r.timed(
            ["restic", "-r", str(self.repo), "restore", "latest", "--target", str(target)]
        )

    def restored_root(self, src: Path, target: Path) -> Path:
        return Path(str(target) + str(src))  # restic recreates the absolute path


class Borg(Tool):
    name = "borg"
    comp: str | None = None

    def init_argv(self) -> list[str]:
        return ["borg", "init", "-e", "none", str(self.repo)]

    def backup(self, src: Path) -> dict[str, Any]:
        self.n += 1
        argv = ["borg", "create"]
        if self.comp:
            argv += ["--compression", self.comp]
        return self.r.timed([*argv, f"{self.repo}::s{self.n:03d}", str(src)])

    def restore(self, src: Path, target: Path) -> dict[str, Any]:
        return self.r.timed(["borg", "extract", f"{self.repo}::s{self.n:03d}"], cwd=target)

    def restored_root(self, src: Path, target: Path) -> Path:
        return Path(str(target) + str(src))  # borg strips the leading "/" and extracts in cwd


class BorgZstd3(Borg):
    name = "borg-zstd3"
    comp = "zstd,3"


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last JSON object printed on stdout (whole text first, then line by line)."""
    text = text.strip()
    if not text:
        return None
    with contextlib.suppress(ValueError):
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict):
                    return obj
    return None


# ------------------------------------------------------------------------------- verification
def verify_restore(tool: Tool, src: Path, target: Path, sample: int, seed: int) -> dict[str, Any]:
    """Restored tree == source: same entries (paths, kinds, sizes, link targets) and, for a
    seeded sample of files (all if sample <= 0) plus the largest ones, identical bytes.
    mtime/mode differences on the sampled files are reported but do not fail the check."""
    root = tool.restored_root(src, target)
    res: dict[str, Any] = {"root": str(root)}
    if not root.is_dir():
        res.update(ok=False, reason=f"restored root {root} does not exist")
        return res
    a, b = tree_index(src), tree_index(root)
    files = sorted(k for k, v in a.items() if v[0] == "file")
    res["src_files"] = len(files)
    res["restored_files"] = sum(1 for v in b.values() if v[0] == "file")
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} unexpected (e.g. {extra[:3]})")
    if differ:
        ex = [(k, a[k], b[k]) for k in differ[:3]]
        problems.append(f"{len(differ)} differ in kind/size/link (e.g. {ex})")
    if sample <= 0 or sample >= len(files):
        picked = files
    else:
        rng = random.Random(seed)
        largest = sorted(files, key=lambda k: a[k][1], reverse=True)[:10]
        picked = sorted(set(rng.sample(files, sample)) | set(largest))
    bad_bytes, meta = [], []
    for k in picked:
        rp = root / k
        if k not in b or b[k][0] != "file":
            continue
        if not same_bytes(src / k, rp):
            bad_bytes.append(k)
        sa, sb = os.lstat(src / k), os.lstat(rp)
        if (sa.st_mode & 0o7777) != (sb.st_mode & 0o7777) or abs(
            sa.st_mtime_ns - sb.st_mtime_ns
        ) >= 1_000_000_000:
            meta.append(k)
    res["bytes_compared_files"] = len(picked)
    if bad_bytes:
        problems.append(
            f"{len(bad_bytes)} of {len(picked)} sampled files differ in content "
            f"(e.g. {bad_bytes[:3]})"
        )
    res["meta_mismatch"] = len(meta)
    if meta:
        res["meta_mismatch_examples"] = meta[:3]
    res["ok"] = not problems
    if problems:
        res["reason"] = "; ".join(problems)
    return res


# ------------------------------------------------------------------------------- workloads
class Workload:
    def __init__(self, key: str, corpus: Path, runner: Runner) -> None:
        self.key = key
        self.corpus = corpus
        self.r = runner

    @property
    def data(self) -> Path:
        return self.corpus / WORKLOADS.get(self.key, self.key)

    def stage(self) -> Path:
        """The directory the tools back up.  W1/W4/quick: the corpus dir itself.  W3: a private
        copy of v1 (replaced by v2 later).  W2: an empty dir filled by rsync per version."""
        if self.key in ("w1", "w4", "quick"):
            return self.data.resolve()
        st = (self.r.run / "stage" / self.key).resolve()
        rmrf(st)
        st.mkdir(parents=True)
        if self.key == "w3":
            shutil.copyfile(self.data / "v1" / "big.bin", st / "big.bin")
        os.sync()
        return st

    def versions(self) -> list[Path]:
        return sorted(p for p in self.data.iterdir() if p.is_dir())


def rsync_into(src: Path, dst: Path) -> None:
    subprocess.run(
        ["rsync", "-a", "--delete", f"{src}/", f"{dst}/"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def one_rep(w: Workload, tool: Tool, args: argparse.Namespace, rep: int) -> dict[str, Any]:
    rec: dict[str, Any] = dict(
        work=w.key,
        tool=tool.name,
        rep=rep,
        t=_dt.datetime.now().isoformat(timespec="seconds"),
        host=platform.node(),
    )
    src = w.stage()
    rec["src"] = str(src)
    try:
        tool.fresh()
    except ToolError as e:
        rec["error"] = str(e)
        log(f"  !! {e}")
        return rec

    def step(name: str, res: dict[str, Any]) -> bool:
        rec[name] = strip_private(res)
        if res["rc"] != 0:
            rec["error"] = f"{name}: rc={res['rc']}: {res.get('error', '')}"
            return False
        return True

    if w.key == "w2":
        per = []
        for v in w.versions():
            rsync_into(v, src)
            res = tool.backup(src)
            per.append(strip_private(res))
            if res["rc"] != 0:
                rec["versions"] = per
                rec["error"] = f"version {v.name}: rc={res['rc']}: {res.get('error', '')}"
                return rec
        rec["versions"] = per
        rec["first"] = per[0]
        rec["versions_total_wall"] = round(sum(x["wall"] for x in per), 3)
        rec["versions_total_cpu"] = round(sum(x["cpu"] for x in per), 3)
        rec["versions_max_rss_mib"] = max(x["rss_mib"] for x in per)
        rec["raw_bytes_all_versions"] = sum(du_sb(v) for v in w.versions())
        rec["repo_bytes_after_first"] = None
    else:
        if not step("first", tool.backup(src)):
            return rec
        rec["repo_bytes_after_first"] = du_sb(tool.repo)
    rec["src_bytes"] = du_sb(src)
    if not step("nochange", tool.backup(src)):
        return rec
    if w.key == "w3":
        big = src / "big.bin"
        big.unlink()
        shutil.copyfile(w.data / "v2" / "big.bin", big)
        os.sync()
        before = du_sb(tool.repo)
        if not step("v2", tool.backup(src)):
            return rec
        rec["v2_added_bytes"] = du_sb(tool.repo) - before
    rec["repo_bytes"] = du_sb(tool.repo)
    stats = tool.extra_stats()
    if stats is not None:
        rec["repo_stats"] = stats
    target = tool.r.run / "restore"
    rmrf(target)
    target.mkdir(parents=True)
    ok = step("restore", tool.restore(src, target))
    if ok:
        sample = 0 if args.verify_all or w.key == "quick" else tool.verify_sample
        rec["verify"] = verify_restore(tool, src, target, sample, seed=rep)
        if not rec["verify"]["ok"]:
            rec["error"] = "restore verification failed: " + rec["verify"]["reason"]
            log(f"  !! {tool.name}: {rec['error']}")
    rmrf(target)
    return rec


# ------------------------------------------------------------------------------- quick corpus
def make_quick_corpus(root: Path, seed: int = 20261120) -> Path:
    """A few hundred small files (text-like and binary, some duplicates, an empty file) in
    nested dirs, plus one 20 MiB file half random / half repetitive.  Deterministic."""
    rng = random.Random(seed)
    d = root / "quick"
    rmrf(d)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(500)
    ]
    contents: list[bytes] = []
    for i in range(300):
        sub = d / f"dir{i % 12:02d}" / f"sub{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = i % 5
        if kind == 4:
            data = rng.randbytes(rng.randint(1, 32768))
        elif kind == 3 and contents:
            data = rng.choice(contents)  # duplicate content (dedup)
        else:
            n = rng.randint(20, 3000)
            data = (" ".join(rng.choice(words) for _ in range(n)) + "\n").encode()
        contents.append(data)
        (sub / f"file{i:03d}.{'bin' if kind == 4 else 'txt'}").write_bytes(data)
    (d / "empty.txt").write_bytes(b"")
    (d / "emptydir").mkdir()
    text_block = (" ".join(rng.choice(words) for _ in range(60000))).encode()[: MiB // 4]
    assert len(text_block) == MiB // 4
    with open(d / "big-20MiB.bin", "wb") as f:
        for i in range(80):  # 80 x 256 KiB = 20 MiB
            f.write(rng.randbytes(MiB // 4) if i % 2 else text_block)
    return d


# ------------------------------------------------------------------------------- corpus check
def shared_dir() -> Path:
    env = os.environ.get("SNAPDECK_SHARED")
    return Path(env) if env else (REPO_ROOT.parent / "shared")


def ensure_corpus(corpus: Path, works: Iterable[str]) -> None:
    missing = [w for w in works if not (corpus / WORKLOADS[w]).is_dir()]
    if not missing:
        return
    script = shared_dir() / "bench" / "make_corpus.sh"
    if not script.is_file():
        sys.exit(
            f"corpus dirs missing under {corpus} ({', '.join(missing)}) and {script} not found; "
            "set SNAPDECK_SHARED to the shared dir (containing bench/make_corpus.sh)"
        )
    corpus.mkdir(parents=True, exist_ok=True)
    log(f"building corpus ({', '.join(missing)} missing) with {script} into {corpus} ...")
    with open(corpus / ".bench-corpus.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)  # one builder at a time (between run.py instances)
        rc = subprocess.run(
            ["bash", str(script)], env=dict(os.environ, CORPUS=str(corpus))
        ).returncode
    if rc != 0:
        sys.exit(f"make_corpus.sh failed (rc={rc})")
    still = [w for w in works if not (corpus / WORKLOADS[w]).is_dir()]
    if still:
        sys.exit(f"corpus still missing after make_corpus.sh: {still}")


def find_snapdeck() -> str | None:
    cands = [
        os.environ.get("SNAPDECK_BIN"),
        str(Path(sys.executable).parent / "snapdeck"),
        str(REPO_ROOT / ".venv" / "bin" / "snapdeck"),
        shutil.which("snapdeck"),
    ]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def snapdeck_json_is_global(exe: str) -> bool:
    """True unless `snapdeck snapshot --help` lists its own --json option (the CLI has a global
    `--json` before the command; accept either placement)."""
    try:
        p = subprocess.run([exe, "snapshot", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return True
    return "--json" not in p.stdout


def check_tools(tools: list[str], need_rsync: bool) -> None:
    problems = []
    for t, exe, pkg in (("restic", "restic", "restic"), ("borg", "borg", "borgbackup")):
        if any(x == t or x.startswith(t + "-") for x in tools) and not shutil.which(exe):
            problems.append(f"`{exe}` is not on PATH: apt-get install -y {pkg}")
    if need_rsync and not shutil.which("rsync"):
        problems.append("`rsync` is not on PATH (needed for W2 staging): apt-get install -y rsync")
    if problems:
        sys.exit("missing tools:\n  " + "\n  ".join(problems))


def tool_versions(tools: list[str], snapdeck: str | None) -> dict[str, str]:
    out = {}

    def first_line(argv: list[str]) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    if "restic" in tools:
        out["restic"] = first_line(["restic", "version"])
    if any(t.startswith("borg") for t in tools):
        out["borg"] = first_line(["borg", "--version"])
    if "snapdeck" in tools and snapdeck:
        out["snapdeck"] = snapdeck
    return out


# ------------------------------------------------------------------------------- reporting
def mmm(vals: list[float], fmt: str = "{:.2f}") -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    s = fmt.format(statistics.median(vals))
    if len(vals) > 1:
        s += f" ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
    return s


def ok_steps(rs: list[dict[str, Any]], key: str, field: str = "wall") -> list[float]:
    return [r[key][field] for r in rs if isinstance(r.get(key), dict) and r[key].get("rc") == 0]


def med(vals: list[float]) -> float | None:
    return statistics.median(vals) if vals else None


def peak_rss(r: dict[str, Any]) -> float | None:
    vals = [r[k]["rss_mib"] for k in ("first", "nochange", "v2", "restore") if r.get(k)]
    vals += [v["rss_mib"] for v in r.get("versions", [])]
    return max(vals) if vals else None


def metric(rs: list[dict[str, Any]], name: str) -> float | None:
    """Median over reps of one summary metric (only successful values)."""
    if name in ("first", "nochange", "v2", "restore"):
        return med(ok_steps(rs, name))
    if name == "w2_total":
        return med([r["versions_total_wall"] for r in rs if "versions_total_wall" in r])
    if name == "repo_bytes":
        return med([r["repo_bytes"] for r in rs if "repo_bytes" in r])
    if name == "peak_rss":
        return med([x for x in (peak_rss(r) for r in rs) if x is not None])
    raise KeyError(name)


def verified_cell(rs: list[dict[str, Any]]) -> str:
    n_ok = sum(1 for r in rs if r.get("verify", {}).get("ok"))
    if n_ok == len(rs):
        meta = sum(r["verify"].get("meta_mismatch", 0) for r in rs)
        s = f"yes ({n_ok}/{len(rs)})"
        return s + (f", mtime/mode differ on {meta} sampled" if meta else "")
    return f"NO ({n_ok}/{len(rs)})"


def workload_table(work: str, recs: list[dict[str, Any]], tools: list[str]) -> list[str]:
    by = {t: [r for r in recs if r["tool"] == t] for t in tools}
    by = {t: rs for t, rs in by.items() if rs}
    if not by:
        return []
    lines = [f"### {TITLES.get(work, work)}", ""]
    hdr = ["tool", "n", "first s", "no-change s"]
    if work == "w3":
        hdr += ["v2 s", "v2 added MB"]
    if work == "w2":
        hdr += ["16 versions total s", "final repo MB"]
    else:
        hdr += ["repo MB (after 1st)"]
    hdr += [
        "restore s",
        "restore verified",
        "peak RSS MiB",
        "RSS MiB 1st/no-change/restore",
        "CPU s 1st",
    ]
    lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for t, rs in by.items():
        row = [t, str(len(rs)), mmm(ok_steps(rs, "first")), mmm(ok_steps(rs, "nochange"))]
        if work == "w3":
            row += [
                mmm(ok_steps(rs, "v2")),
                mmm([r["v2_added_bytes"] / 1e6 for r in rs if "v2_added_bytes" in r], "{:.1f}"),
            ]
        if work == "w2":
            row += [
                mmm([r["versions_total_wall"] for r in rs if "versions_total_wall" in r]),
                mmm([r["repo_bytes"] / 1e6 for r in rs if "repo_bytes" in r], "{:.1f}"),
            ]
        else:
            row += [
                mmm(
                    [
                        r["repo_bytes_after_first"] / 1e6
                        for r in rs
                        if r.get("repo_bytes_after_first") is not None
                    ],
                    "{:.1f}",
                )
            ]

        def rss(k: str, rs: list[dict[str, Any]] = rs) -> str:
            if k == "first" and work == "w2":
                v = med([r["versions_max_rss_mib"] for r in rs if "versions_max_rss_mib" in r])
            else:
                v = med(ok_steps(rs, k, "rss_mib"))
            return "–" if v is None else f"{v:.0f}"

        prss = metric(rs, "peak_rss")
        row += [
            mmm(ok_steps(rs, "restore")),
            verified_cell(rs),
            "n/a" if prss is None else f"{prss:.0f}",
            f"{rss('first')} / {rss('nochange')} / {rss('restore')}",
            mmm(ok_steps(rs, "first", "cpu"), "{:.1f}"),
        ]
        errs = [r["error"] for r in rs if r.get("error")]
        if errs:
            row[0] += " ⚠"
        lines.append("| " + " | ".join(row) + " |")
    src = [r["src_bytes"] for rs in by.values() for r in rs if r.get("src_bytes")]
    notes = []
    if work == "w2":
        raw = [
            r["raw_bytes_all_versions"]
            for rs in by.values()
            for r in rs
            if r.get("raw_bytes_all_versions")
        ]
        if raw:
            notes.append(f"raw size of all 16 versions: {raw[0] / 1e6:.1f} MB")
    elif src:
        nfiles = [
            r["verify"]["src_files"]
            for rs in by.values()
            for r in rs
            if r.get("verify", {}).get("src_files") is not None
        ]
        notes.append(f"source: {src[0] / 1e6:.1f} MB" + (f", {nfiles[0]} files" if nfiles else ""))
    sd = by.get("snapdeck")
    if sd:
        st = [r["first"].get("stats") for r in sd if isinstance(r.get("first"), dict)]
        st = [s for s in st if s]
        if st:
            notes.append("snapdeck first-snapshot stats (rep 0): " + json.dumps(st[0]))
    for t, rs in by.items():
        for r in rs:
            for k in ("first", "nochange", "v2"):
                if isinstance(r.get(k), dict) and r[k].get("json_error"):
                    notes.append(f"⚠ {t} rep {r['rep']} {k}: {r[k]['json_error'][:300]}")
            if r.get("error"):
                notes.append(f"⚠ {t} rep {r['rep']}: {r['error'][:600]}")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines.append("")
    return lines


# (workload, metric label, metric key, anchor selector, goal)
RATIO_ROWS: list[tuple[str, str, str, str, float | None]] = [
    ("w1", "first snapshot s", "first", "fastest", 0.5),
    ("w4", "first snapshot s", "first", "fastest", 0.5),
    ("w3", "first snapshot s", "first", "fastest", 0.6),
    ("w1", "no-change s", "nochange", "fastest", 0.3),
    ("w4", "no-change s", "nochange", "fastest", 0.3),
    ("w3", "no-change s", "nochange", "fastest", None),
    ("w3", "v2 backup s", "v2", "fastest", None),
    ("w1", "restore s", "restore", "fastest", 0.5),
    ("w4", "restore s", "restore", "fastest", 0.5),
    ("w3", "restore s", "restore", "fastest", None),
    ("w2", "16 versions total s", "w2_total", "fastest", 0.5),
    ("w2", "final repo size MB", "repo_bytes", "borg-zstd3", 1.0),
    ("quick", "first snapshot s", "first", "fastest", None),
    ("quick", "no-change s", "nochange", "fastest", None),
    ("quick", "restore s", "restore", "fastest", None),
] + [(w, "peak RSS MiB", "peak_rss", "restic", 1.0) for w in ("w1", "w2", "w3", "w4", "quick")]


def ratio_table(all_recs: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = []
    for work, label, key, sel, goal in RATIO_ROWS:
        recs = all_recs.get(work)
        if not recs:
            continue
        sd = [r for r in recs if r["tool"] == "snapdeck"]
        if not sd:
            continue
        mine = metric(sd, key)
        anchors = {}
        for t in ANCHORS if sel == "fastest" else [sel]:
            v = metric([r for r in recs if r["tool"] == t], key)
            if v is not None:
                anchors[t] = v
        scale, unit_fmt = (1e6, "{:.1f}") if key == "repo_bytes" else (1.0, "{:.2f}")
        if key == "peak_rss":
            unit_fmt = "{:.0f}"
        mine_s = "FAIL" if mine is None else unit_fmt.format(mine / scale)
        if anchors:
            best = min(anchors, key=lambda t: anchors[t])
            anc_s = f"{unit_fmt.format(anchors[best] / scale)} ({best})"
        else:
            best, anc_s = None, "n/a"
        if mine is not None and best is not None and anchors[best] > 0:
            ratio = mine / anchors[best]
            ratio_s = f"{ratio:.2f}"
            status = "—" if goal is None else ("PASS" if ratio <= goal else "miss")
        else:
            ratio_s, status = "n/a", ("FAIL" if mine is None else "—")
        if not all(r.get("verify", {}).get("ok") for r in sd):
            status = "FAIL (restore not verified)"
        goal_s = "—" if goal is None else f"≤ {goal:g}"
        vs = "fastest anchor" if sel == "fastest" else sel
        rows.append(
            f"| {work.upper()} | {label} | {mine_s} | {anc_s} | {vs} | {ratio_s} | "
            f"{goal_s} | {status} |"
        )
    if not rows:
        return []
    return [
        "### Ratio: snapdeck / anchor (medians)",
        "",
        "| workload | metric | snapdeck | anchor | vs | ratio | goal | status |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def render(all_recs: dict[str, list[dict[str, Any]]], tools: list[str], header: list[str]) -> str:
    lines = list(header)
    for work, recs in all_recs.items():
        lines += workload_table(work, recs, tools)
    lines += ratio_table(all_recs)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="snapdeck benchmark vs restic/borg (see bench/README.md)",
    )
    ap.add_argument(
        "workloads",
        nargs="*",
        metavar="WORKLOAD",
        help="w1 w2 w3 w4 (default: all)",
    )
    ap.add_argument("--reps", type=int, default=None, help="reps per tool (default 3; quick: 1)")
    ap.add_argument(
        "--tools",
        default=None,
        help="comma list of snapdeck,restic,borg,borg-zstd3 (default: all; quick: snapdeck,restic)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny self-made corpus in a temp dir, smoke test"
    )
    ap.add_argument(
        "--corpus", default=None, help="corpus dir (default $CORPUS or ~/.cache/snapdeck-corpus)"
    )
    ap.add_argument(
        "--run-dir",
        default=None,
        help="scratch dir for repos/caches/restores (default $CORPUS/run-bench; quick: a temp dir)",
    )
    ap.add_argument(
        "--results",
        default=None,
        help="results dir (default bench/results; quick: not written unless given)",
    )
    ap.add_argument(
        "--verify-all",
        action="store_true",
        help="byte-compare every restored file (default: a seeded sample)",
    )
    ap.add_argument(
        "--step-timeout",
        type=float,
        default=None,
        help="kill a timed step after this many seconds (default 1800; quick: 60)",
    )
    a = ap.parse_args(argv)
    tools = (a.tools or ("snapdeck,restic" if a.quick else ",".join(ALL_TOOLS))).split(",")
    tools = [t.strip() for t in tools if t.strip()]
    bad = [t for t in tools if t not in ALL_TOOLS]
    if bad or not tools:
        ap.error(f"unknown tool(s) {bad}; choose from {','.join(ALL_TOOLS)}")
    a.tool_list = tools
    unknown = [w for w in a.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from {' '.join(WORKLOADS)}")
    if a.quick and a.workloads:
        ap.error("--quick uses its own corpus; do not name workloads")
    a.workloads = ["quick"] if a.quick else (a.workloads or list(WORKLOADS))
    a.reps = a.reps or (1 if a.quick else 3)
    a.step_timeout = a.step_timeout or (60.0 if a.quick else 1800.0)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    tools = a.tool_list
    check_tools(tools, need_rsync="w2" in a.workloads)
    snapdeck = None
    if "snapdeck" in tools:
        snapdeck = find_snapdeck()
        if snapdeck is None:
            sys.exit("snapdeck executable not found (run `make install`, or set SNAPDECK_BIN)")

    json_global = snapdeck_json_is_global(snapdeck) if snapdeck else True
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if a.quick:
        tmp = tempfile.TemporaryDirectory(prefix="snapdeck-bench-quick-")
        corpus = Path(tmp.name) / "corpus"
        corpus.mkdir()
        make_quick_corpus(corpus)
        run_dir = Path(a.run_dir) if a.run_dir else Path(tmp.name) / "run"
        results = Path(a.results) if a.results else None
    else:
        corpus = (
            Path(a.corpus or os.environ.get("CORPUS") or Path.home() / ".cache" / "snapdeck-corpus")
            .expanduser()
            .resolve()
        )
        ensure_corpus(corpus, a.workloads)
        run_dir = Path(a.run_dir) if a.run_dir else corpus / "run-bench"
        results = Path(a.results) if a.results else HERE / "results"
    runner = Runner(run_dir.resolve(), a.step_timeout)

    def make_tool(t: str) -> Tool:
        if t == "snapdeck":
            assert snapdeck is not None
            return Snapdeck(runner, snapdeck, json_global)
        cls: dict[str, Callable[[Runner], Tool]] = {
            "restic": Restic,
            "borg": Borg,
            "borg-zstd3": BorgZstd3,
        }
        return cls[t](runner)

    date = _dt.date.today().isoformat()
    versions = tool_versions(tools, snapdeck)
    header = [
        f"## snapdeck bench — {_dt.datetime.now().isoformat(timespec='seconds')}",
        "",
        f"host {platform.node()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
        + "; ".join(f"{k}: {v}" for k, v in versions.items()),
        f"corpus {corpus}; reps {a.reps}; tools {','.join(tools)}; whole-process wall seconds, "
        "median (min–max); sync before every timed step; peak RSS = ru_maxrss of the process "
        "tree (max over the steps); repo MB = du -sb / 1e6.",
        "",
    ]
    if results:
        results.mkdir(parents=True, exist_ok=True)
    all_recs: dict[str, list[dict[str, Any]]] = {}
    failed = False
    try:
        for work in a.workloads:
            w = Workload(work, corpus, runner)
            recs = all_recs.setdefault(work, [])
            log(f"== {work}: {w.data}")
            for rep in range(a.reps):  # tools interleaved rep by rep
                for t in tools:
                    tool = make_tool(t)
                    t0 = time.monotonic()
                    try:
                        rec = one_rep(w, tool, a, rep)
                    except Exception as e:  # keep going with the other tools
                        log(traceback.format_exc())
                        rec = dict(work=work, tool=t, rep=rep, error=f"harness: {e!r}")
                    rmrf(tool.repo)
                    recs.append(rec)
                    if rec.get("error") or not rec.get("verify", {}).get("ok"):
                        failed = True
                    if results:
                        with open(results / f"{date}-{work}.jsonl", "a") as f:
                            f.write(json.dumps(rec) + "\n")
                    short = {
                        k: (v["wall"] if isinstance(v, dict) and "wall" in v else v)
                        for k, v in rec.items()
                        if k
                        in (
                            "first",
                            "nochange",
                            "v2",
                            "restore",
                            "versions_total_wall",
                            "repo_bytes",
                        )
                    }
                    ok = rec.get("verify", {}).get("ok")
                    log(
                        f"  rep {rep} {t:<11} {json.dumps(short)} verified={ok} "
                        f"({time.monotonic() - t0:.0f} s)"
                    )
            rmrf(runner.run / "stage" / work)
    finally:
        if tmp is not None:
            tmp.cleanup()
    md = render(all_recs, tools, header)
    print(md)
    if results and not a.quick:
        (results / "latest.md").write_text(md)
        log(f"results appended to {results}/{date}-<workload>.jsonl; tables in {results}/latest.md")
    elif results:
        (results / "quick.md").write_text(md)
    if failed:
        log("some steps failed or a restore did not verify (see ⚠ notes above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
