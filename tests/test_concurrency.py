"""TUI + watch + CLI on one repository at once (issue 6, concurrency).

Three kinds of writer share one repository: a ``snapdeck watch`` process checkpointing one
directory, the TUI (``SnapApp`` headless, watching a second directory in-process) and CLI
processes taking snapshots of a third, forgetting, pruning and checking — all while the
watched directories keep changing. Afterwards ``check --read-data`` is clean, every snapshot
restores without a problem, each CLI snapshot restores byte-exact, and the newest checkpoint
of each watched directory equals its final content.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backend.config import Config, UiConfig, WatchConfig
from backend.store import Store
from tests.conftest import isolated_environ, make_tree, read_tree
from tests.test_cli import REPO_ROOT, run
from tui.app import SnapApp

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="inotify watching, SIGTERM"),
]

QUIET = WatchConfig(quiet_ms=50, min_interval_s=0.2)


class WatchProcess:
    """``snapdeck watch DIR --json`` in the background; its checkpoint lines are collected."""

    def __init__(self, env: dict[str, str], repo: Path, src: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tui",
                "watch",
                str(src),
                "--repo",
                str(repo),
                "--json",
                "--quiet-ms",
                "50",
                "--min-interval-s",
                "0.2",
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n:
            assert self.proc.poll() is None, self.stop()
            assert time.monotonic() < deadline, f"only {len(self.lines)} checkpoints"
            time.sleep(0.05)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=60)
        self._reader.join(timeout=10)
        return err.decode("utf-8", "replace")


def _churn(root: Path, i: int) -> None:
    """One burst of changes: a new file, an edited one, sometimes a removal."""
    (root / f"new{i:03d}.txt").write_text(f"file {i}\n" * (50 + i))
    (root / "edited.txt").write_text(f"edit {i}\n" * 200)
    if i % 3 == 2:
        (root / f"new{i - 1:03d}.txt").unlink()


def _exclusive_lock_held(repo: Path) -> bool:
    for p in (repo / "locks").iterdir():
        try:
            if json.loads(p.read_bytes()).get("exclusive"):
                return True
        except (OSError, ValueError):
            continue  # being written or removed
    return False


async def test_tui_watch_and_cli_share_one_repository(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path / "_env")
    repo = tmp_path / "repo"
    watched, tui_dir, cli_dir = tmp_path / "watched", tmp_path / "tui", tmp_path / "cli"
    for d in (watched, tui_dir, cli_dir):
        make_tree(d, {"edited.txt": "start\n", "sub": {"keep.bin": os.urandom(200_000)}})
    assert run(env, "init", "--repo", repo, "-q").code == 0
    # The TUI starts watching once its directory has a snapshot.
    assert run(env, "snapshot", tui_dir, "--repo", repo, "-q").code == 0

    watcher = WatchProcess(env, repo, watched)
    pause = threading.Event()  # set: the directories stop changing for a while
    cli_manifests: dict[str, dict[bytes, Any]] = {}
    cli_codes: list[tuple[str, int, str]] = []

    def cli_work() -> None:
        """The CLI side: snapshots of cli_dir, then forget / prune / check between them."""
        for i in range(6):
            _churn(cli_dir, i)
            want = read_tree(cli_dir)
            r = run(env, "snapshot", cli_dir, "--repo", repo, "--json")
            cli_codes.append(("snapshot", r.code, r.err))
            if r.code == 0:
                cli_manifests[r.json["id"]] = want
            op = ("forget", "prune", "check")[i % 3]
            if op == "prune":
                prune()
                continue
            args = ("forget", "--keep-last", "3") if op == "forget" else (op,)
            r = run(env, *args, "--repo", repo, "-q")
            cli_codes.append((op, r.code, r.err))

    def prune() -> None:
        """Prune refuses (exit 12) while a watcher holds its shared lock, which it keeps
        while changes keep coming: pause the changes until prune holds the exclusive lock,
        then resume them, so the watchers try to checkpoint during the prune."""
        pause.set()
        try:
            for _attempt in range(60):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "tui", "prune", "--repo", str(repo), "-q"],
                    env=env,
                    cwd=REPO_ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                while proc.poll() is None:
                    if pause.is_set() and _exclusive_lock_held(repo):
                        pause.clear()
                    time.sleep(0.01)
                assert proc.stderr is not None
                cli_codes.append(("prune", proc.wait(), proc.stderr.read().decode()))
                proc.stderr.close()
                if proc.returncode != 12:
                    return
                pause.set()
                time.sleep(0.25)
        finally:
            pause.clear()

    store = Store.open(repo, cache_dir=tmp_path / "tui-cache")
    app = SnapApp(
        store,
        dirs=[str(tui_dir)],
        config=Config(ui=UiConfig(animation="none", cursor_blink=False), watch=QUIET),
        watch=True,
        state_file=tmp_path / "state.toml",
        user_theme_dir=tmp_path / "themes",
    )
    tui_checkpoints: list[Any] = []
    real_cb = app._watcher_checkpoint_cb

    def on_checkpoint(result: Any) -> None:
        tui_checkpoints.append(result)
        real_cb(result)

    app._watcher_checkpoint_cb = on_checkpoint  # type: ignore[method-assign]
    try:
        watcher.wait_for(1)  # its first full checkpoint
        async with app.run_test(size=(120, 36)) as pilot:
            for _ in range(100):  # the timeline loads, then watching starts
                await pilot.pause(0.05)
                if app._watch_started:
                    break
            assert app._watch_started
            await asyncio.sleep(0.5)  # the watcher's initial scan
            cli = asyncio.create_task(asyncio.to_thread(cli_work))
            i = 0
            while not cli.done():
                if not pause.is_set():
                    _churn(watched, i)
                    _churn(tui_dir, i)
                    i += 1
                await pilot.pause(0.15)
                if i % 4 == 0:
                    await pilot.press("down")  # the TUI is being used meanwhile
            await cli
            # Quiet now: both watchers checkpoint the final state.
            final_tui, final_watched = read_tree(tui_dir), read_tree(watched)
            n_before = len(tui_checkpoints)
            for _ in range(200):
                await pilot.pause(0.05)
                if len(tui_checkpoints) > n_before:
                    break
            await asyncio.sleep(1.0)
            app.stop_watching()
    finally:
        err = watcher.stop()
        store.close()
    assert watcher.proc.returncode == 0, err
    assert "Traceback" not in err, err

    # Every CLI command succeeded; prune may refuse (exit 12) while a watcher holds a lock.
    bad = [(op, c, e) for op, c, e in cli_codes if c != 0 and not (op == "prune" and c == 12)]
    assert not bad, bad
    assert [(op, c) for op, c, _e in cli_codes].count(("prune", 0)) == 2
    assert len(watcher.lines) >= 3
    assert len(tui_checkpoints) >= 3

    r = run(env, "check", "--read-data", "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert r.json["ok"] is True and r.json["errors"] == []

    with Store.open(repo, cache_dir=tmp_path / "verify-cache") as s:
        snaps = s.list_snapshots()
        sources = {x.source for x in snaps}
        assert sources >= {str(watched), str(tui_dir), str(cli_dir)}
        for n, snap in enumerate(snaps):
            out = tmp_path / "out" / str(n)
            res = s.restore(snap, out)
            assert not res.problems, (snap.id, res.problems)
            if snap.id in cli_manifests:
                assert read_tree(out) == cli_manifests[snap.id]
        # forget --keep-last 3 ran after the 1st and the 4th snapshot: 6 taken, 1 forgotten.
        assert len([x for x in snaps if x.source == str(cli_dir)]) == 5
        for src, final in ((watched, final_watched), (tui_dir, final_tui)):
            newest = s.head(str(src))
            assert newest is not None
            out = tmp_path / "out" / f"head-{src.name}"
            s.restore(newest, out)
            assert read_tree(out) == final, src
