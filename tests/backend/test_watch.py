"""Watch mode with real watchfiles (inotify) in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.clock import FixedClock
from backend.config import RetentionConfig, WatchConfig
from backend.model import Snapshot
from backend.snapshots import SnapshotOptions
from backend.store import Store
from backend.watch import (
    WatchCheckpoint,
    Watcher,
    partition_watchable,
    policy_from_config,
    thin_watch_checkpoints,
)
from tests.conftest import isolated_environ, make_tree

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
IGNORE = ".snapdeckignore"
FAST = WatchConfig(quiet_ms=80, min_interval_s=0.0, full_rescan_s=0)


class Rig:
    """A watcher over ``src`` recording its checkpoints and errors."""

    def __init__(self, store: Store, src: Path, cfg: WatchConfig = FAST, **kw: Any) -> None:
        self.store = store
        self.src = src
        self.events: list[WatchCheckpoint] = []
        self.errors: list[str] = []
        self.w = Watcher(
            store,
            [src],
            cfg,
            on_checkpoint=self.events.append,
            on_error=self.errors.append,
            **kw,
        )

    def settle(self, pause: float = 0.25, timeout: float = 20.0) -> None:
        """Let the events arrive, then wait until nothing is pending or running."""
        time.sleep(pause)
        assert self.w.wait_idle(timeout), self.w.state

    def content(self, snap: Snapshot, path: str) -> bytes:
        return b"".join(self.store.read_file(snap, path))

    def names(self, snap: Snapshot) -> set[bytes]:
        return {p for p, _e in self.store.ls(snap, recursive=True)}


@pytest.fixture
def rig(store: Store, tmp_path: Path) -> Iterator[Rig]:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", "d": {"b.txt": "b"}})
    r = Rig(store, src)
    r.w.start()
    r.settle(0.0)
    assert len(r.events) == 1 and r.events[0].full, r.errors  # the startup checkpoint
    yield r
    r.w.stop(timeout=10)


def until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_create_modify_delete_rename(rig: Rig) -> None:
    src = rig.src
    (src / "d/new.txt").write_text("new")
    rig.settle()
    ev = rig.events[-1]
    assert not ev.full and ev.paths_changed >= 1
    assert rig.content(ev.snapshot, "d/new.txt") == b"new"
    assert ev.snapshot.parent == rig.events[0].snapshot.id
    assert rig.store.head(str(src)) == ev.snapshot

    (src / "a.txt").write_text("modified")
    rig.settle()
    assert rig.content(rig.events[-1].snapshot, "a.txt") == b"modified"

    (src / "d/b.txt").unlink()
    rig.settle()
    assert b"d/b.txt" not in rig.names(rig.events[-1].snapshot)

    (src / "d").rename(src / "e")
    rig.settle()
    names = rig.names(rig.events[-1].snapshot)
    assert b"e/new.txt" in names and b"d" not in names
    assert len(rig.events) == 5
    # Every checkpoint equals a full scan of the same state.
    last = rig.events[-1].snapshot
    full = rig.store.create_snapshot(src, parent=last).snapshot
    assert full.tree == last.tree or not list(rig.store.diff(last, full).changes)


def test_editor_style_atomic_save(rig: Rig) -> None:
    src = rig.src
    tmp = src / ".a.txt.swp"
    tmp.write_text("saved by an editor")
    os.replace(tmp, src / "a.txt")
    rig.settle()
    assert len(rig.events) == 2
    snap = rig.events[-1].snapshot
    assert rig.content(snap, "a.txt") == b"saved by an editor"
    assert b".a.txt.swp" not in rig.names(snap)


def test_touch_only_storm_makes_no_checkpoint(rig: Rig) -> None:
    src = rig.src
    for _ in range(20):
        for p in (src / "a.txt", src / "d/b.txt"):
            with open(p, "ab"):
                pass  # opened for writing, nothing written
            st = os.stat(p)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same times: only ctime moves
        (src / "d/tmp").write_text("x")
        (src / "d/tmp").unlink()  # created and gone again
    rig.settle(0.4)
    assert len(rig.events) == 1, [e.snapshot.stats for e in rig.events]


def test_event_storm_of_1000_creations_gives_one_or_two_checkpoints(
    store: Store, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", "d": {"b.txt": "b"}})
    rig = Rig(store, src, WatchConfig(full_rescan_s=0))  # the defaults: 300 ms quiet, 2 s apart
    rig.w.start()
    try:
        rig.settle(0.0)
        storm = src / "storm"
        storm.mkdir()
        for i in range(1000):
            (storm / f"f{i:04d}").write_text(str(i))
        rig.settle(0.5, timeout=60)
        new = rig.events[1:]
        assert 1 <= len(new) <= 2, len(new)
        assert sum(1 for n in rig.names(new[-1].snapshot) if n.startswith(b"storm/")) == 1000
        assert new[-1].snapshot.stats.total_files == 1002
    finally:
        rig.w.stop(timeout=10)


def test_own_writes_and_ignored_patterns_never_trigger(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a", IGNORE: "*.log\nbuild/\n"})
    # The repository lives inside the watched directory: its writes are not changes.
    with Store.init(src / ".repo", cache_dir=tmp_path / "cache") as inner:
        r = Rig(inner, src, options=SnapshotOptions(excludes=("*.tmp",)))
        r.w.start()
        try:
            r.settle(0.0)
            assert len(r.events) == 1
            first = r.events[0].snapshot
            assert not any(n.startswith(b".repo") for n in r.names(first))
            (src / "x.log").write_text("log")
            (src / "build").mkdir()
            (src / "build/out.o").write_text("o")
            (src / "junk.tmp").write_text("t")
            (src / ".snapdeck-tmp-abc").write_text("restore temp")
            inner.set_tags(first, add=["x"])  # a write into the repository
            r.settle(0.4)
            assert len(r.events) == 1
            (src / "a.txt").write_text("real change")
            r.settle()
            assert len(r.events) == 2
            names = r.names(r.events[-1].snapshot)
            assert b"x.log" not in names and b"build" not in names and b"junk.tmp" not in names
            assert IGNORE.encode() in names
        finally:
            r.w.stop(timeout=10)


def test_non_utf8_file_name_recovers_and_keeps_checkpointing(rig: Rig) -> None:
    bsrc = os.fsencode(rig.src)
    with open(os.path.join(bsrc, b"d", b"bad\xff.txt"), "wb") as f:
        f.write(b"latin-1 name")
    rig.settle(0.5)
    # watchfiles died on the name; the watcher recovered with a full rescan.
    assert len(rig.events) == 2 and rig.events[-1].full
    assert b"d/bad\xff.txt" in rig.names(rig.events[-1].snapshot)
    assert rig.w.state.mode == "partial"
    assert rig.w.state.message is not None and "UTF-8" in rig.w.state.message
    # Events still flow for the rest of the tree.
    (rig.src / "a.txt").write_text("after")
    rig.settle()
    assert len(rig.events) == 3 and not rig.events[-1].full
    assert rig.content(rig.events[-1].snapshot, "a.txt") == b"after"


def test_non_utf8_directory_at_startup(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"ok": {"a": "a"}, b"bad\xfedir": {"f": "f"}, "top": "t"})
    cfg = WatchConfig(quiet_ms=80, min_interval_s=0.0, full_rescan_s=0, fallback_rescan_s=1)
    r = Rig(store, src, cfg)
    r.w.start()
    try:
        r.settle(0.8)
        assert r.events and r.w.state.mode == "partial"
        (src / "ok/a").write_text("evented")
        r.settle()
        assert r.content(r.events[-1].snapshot, "ok/a") == b"evented"
        # Inside the unwatchable directory only the fallback rescan sees changes.
        with open(os.path.join(os.fsencode(src), b"bad\xfedir", b"f"), "wb") as f:
            f.write(b"rescanned")
        until(lambda: r.content(r.events[-1].snapshot, "bad\udcfedir/f") == b"rescanned")
    finally:
        r.w.stop(timeout=10)


def test_partition_watchable(tmp_path: Path) -> None:
    make_tree(
        tmp_path / "t",
        {"clean": {"x": {"y": "y"}}, "mixed": {"ok": {"z": "z"}, b"b\xffd": {"f": "f"}}},
    )
    root = os.fsencode(tmp_path / "t")
    rec, flat, rescan = partition_watchable(root)
    assert rec == [root + b"/clean", root + b"/mixed/ok"] or sorted(rec) == sorted(
        [root + b"/clean", root + b"/mixed/ok"]
    )
    assert flat == [root]
    assert rescan == [b"mixed"]


def test_dropped_events_are_found_by_the_periodic_rescan(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a"})
    cfg = WatchConfig(quiet_ms=80, min_interval_s=0.0, full_rescan_s=1)
    r = Rig(store, src, cfg)
    r.w.start()
    try:
        r.settle(0.0)
        r.w.pause()  # like an inotify queue overflow: these events never arrive
        (src / "a.txt").write_text("changed while nobody listened")
        r.w.resume(rescan=False)
        until(lambda: len(r.events) == 2, timeout=10)
        ev = r.events[-1]
        assert ev.full and ev.paths_changed == 0
        assert r.content(ev.snapshot, "a.txt") == b"changed while nobody listened"
    finally:
        r.w.stop(timeout=10)


def test_stop_abandons_a_checkpoint_cleanly(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {f"f{i}": os.urandom(20000) for i in range(300)})
    r = Rig(store, src)
    r.w.start()
    r.w.stop(abandon=True, timeout=20)
    # Either the startup checkpoint completed before the stop, or nothing was saved.
    snaps = store.list_snapshots()
    assert len(snaps) == len(r.events) <= 1
    if snaps:
        assert store.head(str(src)) == snaps[0]


def test_thinning_keeps_manual_tagged_pinned_and_refd(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a": "0"})
    clock = FixedClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    store.clock = clock
    made = []
    for i in range(30):  # one watch checkpoint every 10 minutes over 5 hours
        (src / "a").write_text(str(i))
        t = clock.now() + timedelta(minutes=10 * i)
        trig = "manual" if i == 3 else "watch"
        made.append(
            store.create_snapshot(src, options=SnapshotOptions(trigger=trig, time=t)).snapshot
        )
    store.set_tags(made[5], add=["keep"])
    store.set_pinned(made[6], True)
    store.add_ref("mark", made[7])
    policy = policy_from_config(
        WatchConfig(
            retention=RetentionConfig(
                keep_within="1h", keep_hourly=2, keep_daily=0, keep_weekly=0, keep_monthly=0
            )
        )
    )
    removed = set(thin_watch_checkpoints(store, str(src), policy))
    left = {s.id for s in store.list_snapshots()}
    assert removed and not (removed & left)
    for protected in (made[3], made[5], made[6], made[7], made[-1]):
        assert protected.id in left
    # Within the last hour of the newest (t = 290 min): 230..290 are all kept.
    assert all(m.id in left for m in made[23:])
    assert made[10].id in removed


LIMIT_DRIVER = textwrap.dedent(
    """
    import sys, time
    from backend.config import WatchConfig
    from backend.store import Store
    from backend.watch import Watcher
    store = Store.init(sys.argv[1])
    msgs = []
    w = Watcher(store, [sys.argv[2]], WatchConfig(quiet_ms=50, min_interval_s=0,
                full_rescan_s=0, fallback_rescan_s=1), on_error=msgs.append)
    w.start()
    time.sleep(1.0)
    open(sys.argv[2] + "/d0/new", "w").write("x")
    deadline = time.time() + 15
    while time.time() < deadline and not any(
        s for s in store.list_snapshots() if s.stats.files_new == 1):
        time.sleep(0.1)
    w.stop()
    print(w.state.mode)
    print(len(store.list_snapshots()))
    print(msgs[0] if msgs else "")
    """
)


def test_inotify_watch_limit_degrades_to_rescans(tmp_path: Path) -> None:
    """A real ENOSPC from inotify: in a user namespace whose watch limit is 20."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not available")
    probe = subprocess.run(
        ["unshare", "-Ur", "sh", "-c", "echo 20 > /proc/sys/user/max_inotify_watches"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("no user namespaces here")
    src = tmp_path / "src"
    make_tree(src, {f"d{i}": {"f": "f"} for i in range(40)})
    cmd = (
        "echo 20 > /proc/sys/user/max_inotify_watches && exec "
        f"'{sys.executable}' -c \"$DRIVER\" '{tmp_path / 'repo'}' '{src}'"
    )
    env = isolated_environ(tmp_path / "_env") | {"DRIVER": LIMIT_DRIVER}
    out = subprocess.run(
        ["unshare", "-Ur", "sh", "-c", cmd],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    mode, count, msg = out.stdout.splitlines()
    assert mode == "stopped"
    assert int(count) == 2  # the startup checkpoint, then the change found by a rescan
    assert "limit" in msg and "max_user_watches" in msg and "rescanning every 1 s" in msg
