"""TUI responsiveness benchmark (one command: ``python bench/tui.py``).

1. First paint of the timeline with 10,000 snapshots (goal ≤ 500 ms): a repository with one
   real snapshot plus 9,999 snapshot objects of the same tree (watch checkpoints a minute
   apart, realistic stats); measured in-process from ``SnapApp()`` to the first frame that
   shows timeline rows, ``cold`` (no local catalog yet: every snapshot object is read) and
   ``warm`` (the catalog is there).
2. Launch to first paint of the real command, ``snapdeck --repo R ui --no-watch``, in a
   pseudo-terminal (120x36): process start to the first frame with a day header of the
   timeline, and the process's CPU time at that moment (``/proc/PID/stat``, all threads).
   Cached bytecode (``PYTHONPYCACHEPREFIX``, like an installed program; see bench/README.md).
   ``warm``: catalog and page cache warm; ``cold``: the page cache of Python's standard
   library, the venv, snapdeck's code and bytecode, the repository and the catalog evicted
   first (``posix_fadvise(DONTNEED)`` on each file: like a first launch after a while, without
   disturbing the rest of the machine; ``BENCH_TUI_DROP_CACHES=1`` drops every cache instead,
   as root); ``first-open``: no catalog (a fresh cache directory).
3. The event loop while a snapshot of W1 runs (goal: no stall > 50 ms): a 10 ms-period
   probe timer records the largest gap between ticks (``max_stall_ms``) while ``s`` (snapshot
   now) snapshots ``~/.cache/snapdeck-corpus/w1_tree`` into a hard-linked copy of the
   10,000-snapshot repository (so the timeline's update afterwards is the big one). Every step
   of the event loop (an asyncio callback or task step) is timed too: ``max_step_cpu_ms`` is
   the most CPU the loop's own thread spent in one step (our handlers' and the compositor's
   work: independent of the load on the machine), ``max_step_ms`` the longest step in wall
   time, ``top``/``slowest`` name the handlers (messages, timers) behind the slowest steps, and
   ``max_gc_pause_ms`` the longest garbage collection by generation (a collection stops every
   thread). A stall longer than every step is time the loop's thread waited for the GIL or a
   CPU. With Python's GIL switch interval (5 ms), then each of ``BENCH_TUI_SWITCH_MS`` (e.g.
   ``1,0.5``) for comparison.
4. The same probe while the watcher checkpoints a tree of 3,000 files that a writer keeps
   changing (30 files every 0.2 s for ``BENCH_TUI_WATCH_S``, 8 s), over the same repository:
   the start-up full checkpoint, then incremental ones every ``min_interval_s`` (1 s), each
   landing in the timeline as a new row.

Each first paint and launch is measured ``BENCH_TUI_RUNS`` (3) times; min and median are
printed (other work on the machine skews single runs: ``loadavg_1m`` is printed too).
``BENCH_TUI_REPO=DIR`` builds the repository there once and reuses it. ``BENCH_TUI_ONLY`` (a
comma list of ``paint,launch,w1,watch``) runs only some parts.

Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import gc
import json
import os
import pty
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.config import Config, UiConfig, WatchConfig  # noqa: E402
from backend.model import SnapshotStats  # noqa: E402
from backend.store import Store  # noqa: E402
from tui.app import SnapApp  # noqa: E402
from tui.widgets.snapshot_list import SnapshotList  # noqa: E402

N = int(os.environ.get("BENCH_TUI_SNAPSHOTS", "10000"))
RUNS = int(os.environ.get("BENCH_TUI_RUNS", "3"))
W1 = Path(os.environ.get("BENCH_TUI_W1", os.path.expanduser("~/.cache/snapdeck-corpus/w1_tree")))
WATCH_S = float(os.environ.get("BENCH_TUI_WATCH_S", "8"))
ONLY = set(filter(None, os.environ.get("BENCH_TUI_ONLY", "paint,launch,w1,watch").split(",")))
SNAPDECK = Path(os.environ.get("BENCH_TUI_SNAPDECK") or Path(sys.executable).with_name("snapdeck"))
"""The command launched (``BENCH_TUI_SNAPDECK``: another build's entry point, for an A/B)."""
SIZE = (120, 36)


def build_many(repo: Path, n: int) -> None:
    src = repo.parent / f"{repo.name}-src"
    (src / "d").mkdir(parents=True, exist_ok=True)
    for i in range(20):
        (src / "d" / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    with Store.init(repo) as store:
        base = store.create_snapshot(src).snapshot
        for i in range(1, n):
            snap = replace(
                base,
                id="",
                time=base.time - timedelta(minutes=i),
                trigger="watch",
                parent=None,
                stats=SnapshotStats(files_changed=i % 7, bytes_added=(i * 7919) % 50000),
            )
            store.repo.save_snapshot(snap)


def link_copy(src: Path, dst: Path) -> None:
    """A copy of a repository made of hard links (objects are write-once: the copy's new
    objects, HEAD moves and locks are new files, so the original never changes)."""
    for dirpath, _dirs, files in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.link(Path(dirpath) / f, dst / rel / f)


# ------------------------------------------------------------------ 1. first paint in-process


async def first_paint(repo: Path, cache: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process) from app start to the first timeline rows;
    CPU time is what the paint costs regardless of other load on the machine."""
    store = Store.open(repo, cache_dir=cache)
    cfg = Config(ui=UiConfig(animation="none"))
    t0 = time.perf_counter()
    c0 = time.process_time()
    app = SnapApp(store, dirs=[], config=cfg, watch=False, state_file=cache / "state.toml")
    painted = cpu = 0.0
    async with app.run_test(size=SIZE):
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


# ------------------------------------------------------------------ 2. launch in a pty

HEADER = re.compile(rb"\d[\d,]*\+? snapshots? \xc2\xb7 ")
"""A day header of the timeline ("12 snapshots · 3.4 KiB added"): rows are on screen."""
ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)"
)


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def launch(repo: Path, env: dict[str, str], timeout: float = 60.0) -> tuple[float, float]:
    """(wall s, CPU s) from fork to the first frame showing a day header of the timeline."""
    t0 = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command, in the pty
        try:
            os.execve(str(SNAPDECK), ["snapdeck", "--repo", str(repo), "ui", "--no-watch"], env)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    buf = b""
    found = cpu = 0.0
    try:
        while time.perf_counter() - t0 < timeout:
            ready, _w, _x = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                break
            if not data:
                break
            buf += data
            if HEADER.search(ANSI.sub(b"", buf[-8192:])):
                found = time.perf_counter() - t0
                cpu = _cpu_s(pid)
                break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
    if not found:
        tail = ANSI.sub(b"", buf)[-400:].decode("utf-8", "replace")
        raise RuntimeError(f"no timeline rows within {timeout} s; screen ended with: {tail!r}")
    return found, cpu


def evict_page_cache(roots: list[Path]) -> int:
    """Drop the page cache of every file under ``roots`` (``posix_fadvise(DONTNEED)``)."""
    n = 0
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                try:
                    fd = os.open(os.path.join(dirpath, f), os.O_RDONLY | os.O_NOFOLLOW)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    n += 1
                finally:
                    os.close(fd)
    return n


def launches(repo: Path, tmp: Path) -> dict[str, Any]:
    home = tmp / "launch"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        TERM="xterm-256color",
        COLUMNS=str(SIZE[0]),
        LINES=str(SIZE[1]),
        PYTHONPYCACHEPREFIX=str(home / "pycache"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_STATE_HOME=str(home / "state"),
    )
    env.pop("SNAPDECK_REPO", None)
    launch(repo, env)  # untimed: fills the bytecode cache
    # the catalog, where the app looks for it (a launch killed at its first paint on a first
    # open has not written it yet)
    with Store.open(repo, cache_dir=home / "cache" / "snapdeck") as store:
        store.list_snapshots()
    stdlib = Path(os.__file__).parent
    roots = [stdlib, Path(sys.prefix), ROOT / "backend", ROOT / "tui", ROOT / "themes", home, repo]
    drop = os.environ.get("BENCH_TUI_DROP_CACHES") == "1"
    out: dict[str, Any] = {}
    runs: dict[str, list[tuple[float, float]]] = {"warm": [], "cold": [], "first_open": []}
    for _ in range(RUNS):
        runs["warm"].append(launch(repo, env))
    for i in range(RUNS):  # page cache warm, no catalog
        fresh = dict(env, XDG_CACHE_HOME=str(home / f"cache-{i}"))
        runs["first_open"].append(launch(repo, fresh))
    for _ in range(RUNS):  # catalog there, page cache cold
        if drop:
            subprocess.run(["sync"], check=False)
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        else:
            evict_page_cache(roots)
        runs["cold"].append(launch(repo, env))
    for k, v in runs.items():
        out[k] = _ms(v)
    out["cold_by"] = "drop_caches" if drop else "posix_fadvise(DONTNEED) of the files involved"
    return out


# ------------------------------------------------------------------ 3./4. the event loop


class LoopProbe:
    """Times every step of the event loop (``Handle._run``: a callback or a task step) in
    wall and thread CPU time, and names the message a task step was dispatching."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float, str]] = []
        self.active = False
        self._labels: list[str] = []
        self._gc_t0 = 0.0
        self.gc_pauses: dict[int, float] = {}

    def install(self) -> None:
        from asyncio import events

        from textual.message_pump import MessagePump

        probe = self
        run = events.Handle._run
        dispatch = MessagePump._dispatch_message

        def timed_run(handle: Any) -> None:
            if not probe.active:
                run(handle)
                return
            probe._labels = []
            w, c = time.perf_counter(), time.thread_time()
            run(handle)
            dc, dw = time.thread_time() - c, time.perf_counter() - w
            label = ""
            if dc > 0.002 or dw > 0.010:
                label = " + ".join(dict.fromkeys(probe._labels)) or _name(handle)
            probe.steps.append((dw, dc, label))

        async def timed_dispatch(pump: Any, message: Any) -> Any:
            # the messages a step dispatches (a step runs one task: these are its handlers)
            probe._labels.append(f"{type(pump).__name__}.{type(message).__name__}")
            return await dispatch(pump, message)

        events.Handle._run = timed_run  # type: ignore[method-assign]
        MessagePump._dispatch_message = timed_dispatch  # type: ignore[method-assign]
        self._undo = (run, dispatch)
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        """Garbage collections stop every thread: their longest pause, by generation."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self.active:
            dt = time.perf_counter() - self._gc_t0
            gen = info.get("generation", -1)
            self.gc_pauses[gen] = max(self.gc_pauses.get(gen, 0.0), dt)

    def uninstall(self) -> None:
        from asyncio import events

        from textual.message_pump import MessagePump

        events.Handle._run, MessagePump._dispatch_message = self._undo  # type: ignore[method-assign]
        gc.callbacks.remove(self._gc)

    def stats(self) -> dict[str, Any]:
        if not self.steps:
            return {}
        walls = sorted(s[0] for s in self.steps)
        cpus = sorted(s[1] for s in self.steps)
        worst: dict[str, float] = collections.defaultdict(float)
        for _w, c, label in self.steps:
            if label:
                worst[label] = max(worst[label], c)
        return {
            "max_step_ms": round(walls[-1] * 1000, 1),
            "max_step_cpu_ms": round(cpus[-1] * 1000, 1),
            "p99_step_cpu_ms": round(cpus[int(len(cpus) * 0.99)] * 1000, 2),
            "steps": len(self.steps),
            "steps_over_10ms_cpu": sum(1 for c in cpus if c > 0.010),
            "top": [
                (round(w * 1000, 1), round(c * 1000, 1), label[:60])
                for w, c, label in sorted(self.steps, key=lambda x: -x[1])[:5]
            ],
            "max_gc_pause_ms": {g: round(t * 1000, 1) for g, t in sorted(self.gc_pauses.items())},
            "slowest": {
                k: round(v * 1000, 1) for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:6]
            },
        }


def _name(handle: Any) -> str:
    """What a loop step ran: a task's coroutine, else the callback."""
    cb = getattr(handle, "_callback", None)
    task = getattr(cb, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        where = (
            f" ({frame.f_code.co_filename.rpartition('/')[2]}:{frame.f_lineno})" if frame else ""
        )
        timer_cb = getattr(frame.f_locals.get("self"), "_callback", None) if frame else None
        if timer_cb is not None:  # a Textual timer: name what it calls
            where = f" → {getattr(timer_cb, '__qualname__', timer_cb)}"
        return f"task {getattr(coro, '__qualname__', coro)}{where}"
    return getattr(cb, "__qualname__", None) or type(cb).__name__


async def _loaded(app: SnapApp) -> None:
    """Until the timeline shows the repository's truth (its first listing done)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 60:
        await asyncio.sleep(0.05)
        scr = app.screen
        if getattr(scr, "_loaded", False) and not any(
            w.group == "timeline-load" and w.is_running for w in app.workers
        ):
            return


async def probe_loop(app: SnapApp, store: Store, run: Any, switch_s: float) -> dict[str, Any]:
    """Run ``run(app)`` (a coroutine function) with a 10 ms tick probe and the step probe."""
    sys.setswitchinterval(switch_s)
    gaps: list[float] = []
    probe = LoopProbe()
    probe.install()
    try:
        async with app.run_test(size=SIZE):
            await _loaded(app)
            await asyncio.sleep(0.3)
            last = time.perf_counter()

            def tick() -> None:
                nonlocal last
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

            app.set_interval(0.01, tick)
            await asyncio.sleep(0.2)
            probe.active = True
            t0 = time.perf_counter()
            await run(app)
            took = time.perf_counter() - t0
            probe.active = False
    finally:
        probe.uninstall()
        sys.setswitchinterval(0.005)
        store.close()
    steady = sorted(gaps)
    return {
        "switch_interval_ms": switch_s * 1000,
        "took_s": round(took, 2),
        "max_stall_ms": round((max(gaps) - 0.01) * 1000, 1),
        "p99_tick_ms": round(steady[int(len(steady) * 0.99)] * 1000, 1),
        **probe.stats(),
    }


async def _snapshot_w1(app: SnapApp) -> None:
    app.screen.action_snapshot_now()  # what the "s" key does
    await asyncio.sleep(0.05)
    while any(w.group == "snapshot" and w.is_running for w in app.workers):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the timeline's reload of 10,001 snapshots


def stall_w1(repo: Path, tmp: Path, i: int, switch_s: float) -> dict[str, Any]:
    copy = tmp / f"w1-repo-{i}"
    link_copy(repo, copy)
    cache = tmp / f"w1-cache-{i}"
    store = Store.open(copy, cache_dir=cache)
    cfg = Config(ui=UiConfig(animation="none"))
    app = SnapApp(store, dirs=[str(W1)], config=cfg, watch=False, state_file=cache / "s.toml")
    out = asyncio.run(probe_loop(app, store, _snapshot_w1, switch_s))
    shutil.rmtree(copy, ignore_errors=True)
    return out


def make_tree(root: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        p = root / f"d{i % 30:02d}" / f"f{i:05d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i}\n" * (20 + i % 50))
        files.append(p)
    return files


def stall_watch(repo: Path, tmp: Path) -> dict[str, Any]:
    copy = tmp / "watch-repo"
    link_copy(repo, copy)
    tree = tmp / "watched"
    files = make_tree(tree, 3000)
    cache = tmp / "watch-cache"
    store = Store.open(copy, cache_dir=cache)
    cfg = Config(ui=UiConfig(animation="none"), watch=WatchConfig(quiet_ms=100, min_interval_s=1.0))
    app = SnapApp(store, dirs=[str(tree)], config=cfg, watch=True, state_file=cache / "s.toml")
    landed = [0]

    async def run(app: SnapApp) -> None:
        stop = threading.Event()

        def writer() -> None:
            rnd = random.Random(5)
            k = 0
            while not stop.wait(0.2):
                for p in rnd.sample(files, 30):
                    k += 1
                    p.write_text(f"changed {k}\n" * (10 + k % 40))

        t = threading.Thread(target=writer, daemon=True)
        before = len(getattr(app.screen, "_all", []))
        t.start()
        await asyncio.sleep(WATCH_S)
        stop.set()
        t.join()
        await asyncio.sleep(2.5)  # the last checkpoint lands
        landed[0] = len(getattr(app.screen, "_all", [])) - before

    out = asyncio.run(probe_loop(app, store, run, 0.005))
    out["checkpoints_landed"] = landed[0]
    shutil.rmtree(copy, ignore_errors=True)
    return out


# ------------------------------------------------------------------ main


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
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        # BENCH_TUI_REPO: build the 10,000-snapshot repository there once and reuse it
        keep = os.environ.get("BENCH_TUI_REPO")
        repo = Path(keep) if keep else tmp / "repo"
        if not (repo / "config").exists():
            t = time.perf_counter()
            build_many(repo, N)
            out["build_s"] = round(time.perf_counter() - t, 1)
            print(f"built {N} snapshots in {out['build_s']} s", file=sys.stderr, flush=True)
        if "paint" in ONLY:
            # cold: no catalog yet (every snapshot object is read); warm: the catalog is there
            cold = [asyncio.run(first_paint(repo, tmp / f"c{i}")) for i in range(RUNS)]
            warm = [asyncio.run(first_paint(repo, tmp / "c0")) for _ in range(RUNS)]
            out["first_paint_cold_ms"] = _ms(cold)
            out["first_paint_warm_ms"] = _ms(warm)
        if "launch" in ONLY:
            out["launch_ms"] = launches(repo, tmp)
        if "w1" in ONLY:
            if W1.is_dir():
                # Python's GIL switch interval (5 ms), then BENCH_TUI_SWITCH_MS if set
                switches = [0.005] + [
                    float(x) / 1000
                    for x in os.environ.get("BENCH_TUI_SWITCH_MS", "").split(",")
                    if x
                ]
                out["w1"] = [stall_w1(repo, tmp, i, sw) for i, sw in enumerate(switches)]
            else:
                out["w1"] = "skipped: no corpus (see /work/shared/bench/make_corpus.sh)"
        if "watch" in ONLY:
            out["watch"] = stall_watch(repo, tmp)
        out["loadavg_1m_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
