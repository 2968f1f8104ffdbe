"""Benchmark: how fast the TUI's diff screen answers (issue 5's responsiveness targets).

    .venv/bin/python bench/tui_diff.py            # W1 pair + 20,000-line pairs, 5 reps each
    .venv/bin/python bench/tui_diff.py --no-w1    # only the 20,000-line pairs (no corpus needed)

Targets: a diff of two W1 snapshots shows its file list within 300 ms; a 20,000-line file pair
is shown side by side within 300 ms. Both are measured in a real (headless) Textual app, from
the moment the screen is pushed / the file is selected to the moment the widgets hold the
result, and the event loop's longest stall over the same time is reported (a 5 ms ticker).

The W1 pair: W1 (``~/.cache/snapdeck-corpus/w1_tree``, see bench/run.py) is copied to a temp
dir and snapshotted, then 100 files are edited, 40 deleted and 40 added and it is snapshotted
again (the repository is built once and kept in the temp dir for the run). A second W1 figure
diffs W1 against an empty snapshot: every file is "added", the largest list there can be.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual.app import App

from backend.model import Snapshot
from backend.store import Store
from backend.textdiff import DiffLayout, diff_blocks
from tui.screens.diff import DiffScreen
from tui.widgets.diff_files import DiffFileList
from tui.widgets.diff_highlight import highlight_lines, lexer_for
from tui.widgets.diffview import DiffView

CORPUS = Path(os.environ.get("CORPUS", Path.home() / ".cache" / "snapdeck-corpus"))
SIZE = (160, 48)


class BenchApp(App[None]):
    """An empty app the screens are pushed onto; a ticker records the loop's longest stall."""

    def __init__(self) -> None:
        super().__init__()
        self.animation_level = "none"
        self.max_stall = 0.0
        self._last = 0.0

    def on_mount(self) -> None:
        self._last = time.perf_counter()
        self.set_interval(0.005, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.max_stall = max(self.max_stall, now - self._last)
        self._last = now

    def reset_stall(self) -> None:
        self._last = time.perf_counter()
        self.max_stall = 0.0

    def show_error(self, error: BaseException) -> None:
        print("error:", error, file=sys.stderr)


async def _until(cond, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError
        await asyncio.sleep(0.001)


async def time_file_list(store: Store, a: Snapshot, b: Snapshot) -> tuple[float, float, int]:
    """(seconds to the file list, longest stall, changes) for one open of the diff screen."""
    app = BenchApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.reset_stall()
        t0 = time.perf_counter()
        screen = DiffScreen(store, a, b)
        await app.push_screen(screen)
        await _until(lambda: screen.result is not None and screen.query_one(DiffFileList).items)
        elapsed = time.perf_counter() - t0
        await pilot.pause()
        stall = app.max_stall
        n = len(screen.result.changes) if screen.result else 0
        for w in list(app.workers):
            w.cancel()
    return elapsed, stall, n


async def time_big_file(
    store: Store, a: Snapshot, b: Snapshot, path: str
) -> tuple[float, float, float]:
    """(seconds to the side-by-side view, seconds until syntax colours, longest stall)."""
    app = BenchApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = DiffScreen(store, a, b)
        await app.push_screen(screen)
        await _until(lambda: screen.result is not None and screen.query_one(DiffFileList).items)
        files = screen.query_one(DiffFileList)
        view = screen.query_one(DiffView)
        index = next(i for i, it in enumerate(files.items) if it is not None and it.path == path)
        # Start from another file so the selection really changes.
        other = 0 if index else 1
        files.move_to(other)
        await _until(lambda: view.text is not None or view.message_lines != ["Comparing…"])
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.reset_stall()
        t0 = time.perf_counter()
        files.move_to(index)
        await _until(lambda: view.text is not None and view.text.path == path)
        # One refresh: the visible rows are rendered. (Not ``pilot.pause()``: it waits for the
        # process's CPU to go idle, and the lexing worker keeps it busy.)
        drawn = asyncio.Event()
        view.call_after_refresh(drawn.set)
        await drawn.wait()
        shown = time.perf_counter() - t0
        colours = float("nan")
        if lexer_for(path) is not None:
            await _until(lambda: view._syntax_b is not None, 30)
            colours = time.perf_counter() - t0
        await pilot.pause()
        stall = app.max_stall
    return shown, colours, stall


def _snapshot_spec_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def big_pairs(work: Path, store: Store) -> list[tuple[str, Snapshot, Snapshot, str]]:
    """Three 20,000-line pairs: few edits, many edits, and real Python source."""
    rng = random.Random(5)
    a_dir, b_dir = work / "big-a", work / "big-b"
    base = [f"line {i:05d}: value={rng.randrange(10**6)} status=ok" for i in range(20_000)]
    few = list(base)
    for k in rng.sample(range(20_000), 25):
        few[k] = few[k].replace("ok", "CHANGED")
    many = list(base)
    for k in rng.sample(range(20_000), 2_000):
        many[k] = many[k].replace("value=", "v=")
    for k in sorted(rng.sample(range(19_000), 200), reverse=True):
        del many[k]
        many.insert(k + 3, f"inserted {k}")
    # Real code: distinct stdlib modules one after another, up to 20,000 lines.
    py_a: list[str] = []
    stdlib = Path(shutil.__file__).parent
    for name in (
        "shutil",
        "argparse",
        "typing",
        "pathlib",
        "tarfile",
        "inspect",
        "subprocess",
        "zipfile",
        "logging/__init__",
        "os",
        "dataclasses",
        "enum",
    ):
        py_a.extend((stdlib / f"{name}.py").read_text().splitlines())
        if len(py_a) >= 20_000:
            break
    py_a = py_a[:20_000]
    py_b = list(py_a)
    for k in rng.sample(range(20_000), 60):
        py_b[k] = py_b[k] + "  # edited"
    _snapshot_spec_files(
        a_dir,
        {
            "few.log": "\n".join(base) + "\n",
            "many.log": "\n".join(base) + "\n",
            "code.py": "\n".join(py_a) + "\n",
        },
    )
    _snapshot_spec_files(
        b_dir,
        {
            "few.log": "\n".join(few) + "\n",
            "many.log": "\n".join(many) + "\n",
            "code.py": "\n".join(py_b) + "\n",
        },
    )
    sa = store.create_snapshot(a_dir).snapshot
    sb = store.create_snapshot(b_dir).snapshot
    return [
        ("20k lines, 25 edits", sa, sb, "few.log"),
        ("20k lines, 2,200 edits", sa, sb, "many.log"),
        ("20k lines of Python, 60 edits", sa, sb, "code.py"),
    ]


def w1_pairs(work: Path, store: Store) -> list[tuple[str, Snapshot, Snapshot]]:
    """(label, a, b): W1 before/after 180 changes, and W1 against an empty snapshot."""
    src = CORPUS / "w1_tree"
    if not src.is_dir():
        print(f"(no W1 corpus at {src}: run /work/shared/bench/make_corpus.sh)")
        return []
    tree = work / "w1"
    print(f"copying W1 to {tree} …", flush=True)
    shutil.copytree(src, tree, symlinks=True)
    t0 = time.perf_counter()
    a = store.create_snapshot(tree).snapshot
    print(f"snapshot W1: {time.perf_counter() - t0:.1f} s", flush=True)
    rng = random.Random(11)
    files = sorted(p for p in tree.rglob("*.py") if p.is_file())
    picked = rng.sample(files, 180)
    for p in picked[:100]:
        with open(p, "a") as f:
            f.write("\n# edited by bench/tui_diff.py\n")
    for p in picked[100:140]:
        p.unlink()
    for i, p in enumerate(picked[140:]):
        (p.parent / f"bench_added_{i}.py").write_text(f"X = {i}\n")
    b = store.create_snapshot(tree).snapshot
    empty = work / "empty"
    empty.mkdir()
    e = store.create_snapshot(empty).snapshot
    return [("W1 → W1 with 180 changes", a, b), ("empty → W1 (every file added)", e, a)]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-w1", action="store_true", help="skip the W1 pair")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapdeck-tui-bench-"))
    try:
        store = Store.init(work / "repo", cache_dir=work / "cache")
        print("== pure alignment (backend.textdiff) ==")
        pairs = big_pairs(work, store)
        for label, a, b, path in pairs:
            la = b"".join(store.read_file(a, path)).decode().splitlines()
            lb = b"".join(store.read_file(b, path)).decode().splitlines()
            t0 = time.perf_counter()
            blocks = diff_blocks(la, lb)
            t1 = time.perf_counter()
            DiffLayout(blocks)
            t2 = time.perf_counter()
            highlight_lines(lb, path)
            t3 = time.perf_counter()
            print(
                f"  {label:32} align {1000 * (t1 - t0):6.1f} ms   layout {1000 * (t2 - t1):5.1f} ms"
                f"   lex one side {1000 * (t3 - t2):6.1f} ms"
            )
        print(f"== 20,000-line pair side by side (select → shown), {args.reps} reps ==")
        for label, a, b, path in pairs:
            shown, colours, stalls = [], [], []
            for _ in range(args.reps):
                s, c, st = asyncio.run(time_big_file(store, a, b, path))
                shown.append(s)
                colours.append(c)
                stalls.append(st)
            print(
                f"  {label:32} shown median {1000 * statistics.median(shown):6.1f} ms "
                f"(max {1000 * max(shown):6.1f})   syntax colours {1000 * statistics.median(colours):6.1f} ms"
                f"   longest loop stall {1000 * max(stalls):5.1f} ms"
            )
        if not args.no_w1:
            print(f"== diff screen file list (push → list shown), {args.reps} reps ==")
            for label, a, b in w1_pairs(work, store):
                times, stalls = [], []
                n = 0
                t0 = time.perf_counter()
                store.diff(a, b)
                cold = time.perf_counter() - t0
                for _ in range(args.reps):
                    t, st, n = asyncio.run(time_file_list(store, a, b))
                    times.append(t)
                    stalls.append(st)
                print(
                    f"  {label:32} {n:6d} changes   median {1000 * statistics.median(times):6.1f} ms "
                    f"(max {1000 * max(times):6.1f})   Store.diff first call {1000 * cold:6.1f} ms"
                    f"   longest loop stall {1000 * max(stalls):5.1f} ms"
                )
        store.close()
    finally:
        if args.keep:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
