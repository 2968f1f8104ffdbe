"""Operation: watch directories and checkpoint them when they change.

Layer: operations, above the Store facade (it drives a ``Store``); never imports Textual.

API (used by ``snapdeck watch`` and, in-process, by the TUI from a worker thread)::

    w = Watcher(store, ["/home/me/project"], config.watch,
                options=SnapshotOptions(excludes=..., threads=...),
                on_checkpoint=lambda ev: ...,   # WatchCheckpoint, after HEAD moved
                on_state=lambda st: ...,        # WatchState, whenever it changes
                on_error=lambda msg: ...,       # one line for people; watching goes on
                evict=config.evict,             # [evict]: the sweeper, if sweep_in_watch
                on_sweep=lambda res: ...,       # EvictResult of a sweep that removed some
                on_prune=lambda res: ...)       # PruneResult of each periodic prune
    w.start()            # returns at once; a full checkpoint of each dir is taken first
    w.state              # WatchState: dirs, mode, pending, checkpoints, last_checkpoint, message
    w.pause(); w.resume(rescan=True)   # e.g. around an in-place restore
    w.request_rescan()   # a full rescan soon
    w.stop()             # finish the checkpoint in flight; stop(abandon=True) cancels it
    w.wait_idle(5.0)     # (tests) until nothing is pending or running

Every callback runs on the watcher's engine thread; keep them short (post a message).

How it works. watchfiles (inotify) reports changed paths on one or two event threads. They are
hints, not truth: the engine thread collects them per directory, and after a quiet period
(``quiet_ms`` without events, at most ``MAX_DELAY_S`` after the first) and at most one
checkpoint per ``min_interval_s``, calls ``Store.checkpoint`` with those paths as *dirty*: only
they and their ancestors are examined, every other subtree is reused from HEAD by id. A
periodic full rescan (``full_rescan_s``) catches events the kernel dropped. No snapshot is
written when nothing really changed (``Store.checkpoint`` compares with HEAD). Events under the
repository, the cache, snapdeck's temp files and ignored patterns (``[watch] ignore``,
``[snapshot] exclude`` and the watched directory's ``.snapdeckignore``) are dropped; the same
patterns are left out of watch checkpoints, so a dirty checkpoint and a full one agree.

What breaks watchfiles, and what happens then:

* A name that is not UTF-8 makes watchfiles raise and stop for good (on startup for such a
  directory, or on the first event naming such a file). The engine finds every directory that
  holds such a name, watches the rest (clean subtrees recursively, their ancestors
  non-recursively) and rescans the others every ``fallback_rescan_s``, then takes a full
  rescan to catch what happened meanwhile. Too many failures in a row: rescans only, retried
  later.
* The OS watch limit (inotify ``max_user_watches``): a clear message, and periodic full rescans
  every ``fallback_rescan_s`` instead of events.

Watch checkpoints of the directory are thinned with ``[watch.retention]`` (restic's rules)
after the first checkpoint and then at most every ``THIN_EVERY_S`` (the policy's finest unit is
an hour, so thinning after every checkpoint would only cost time): only snapshots with trigger
``watch`` that are not tagged, pinned, ref'd or a HEAD are candidates; the rest are never
touched. Data is reclaimed by ``prune``, or by the eviction sweeper: with ``[evict]
sweep_in_watch`` the engine applies ``[evict]`` every ``sweep_interval_s``, between checkpoints.

Memory and the repository stay flat over any number of checkpoints: every ``prune_every``
checkpoints (``[watch]``, default 1,000) the engine prunes the repository between checkpoints,
when no change is pending (or after twice as many checkpoints regardless). Each checkpoint
writes a small data pack, a small tree pack and an index segment, and the in-memory index
holds an entry for every blob of every pack until a prune drops what only thinned
checkpoints referenced; the prune also merges the small packs and segments into a few, so
the index that is loaded afterwards (here and in every later process) is small again.
Everything else the process keeps is bounded: the catalog by the retention, the tree cache by
``TREE_CACHE_ENTRIES``. A repository locked by another process postpones the prune by
``PRUNE_RETRY_S``; stopping the watcher cancels a prune in flight (prune is crash-safe).
What the prune allocates for a moment is given back to the OS afterwards (``trim_malloc``).
(The CLI and TUI process also caps glibc's malloc arenas, ``backend.tuning``: without that,
each prune's transient memory lands in another short-lived thread's arena and RSS climbs by
4-13 MiB per prune for thousands of checkpoints.)

Cost of a checkpoint. The shared repository lock is kept from one checkpoint to the next while
changes keep coming (``Store.checkpoint(keep_lock=True)``; its lease is renewed by a thread)
and released after ``LOCK_LINGER_S`` without a checkpoint, before a sweep, on pause and on
stop, so a prune in another process waits at most that long after the last edit.

In-place restores (``Store.restore_in_place``, in this or another process) write a restore
marker for their source; while it is fresh the engine holds off checkpointing that directory
(``RestoreInProgress``), then takes a full rescan.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pathspec

from backend.config import EvictConfig, WatchConfig, default_cache_dir
from backend.errors import Cancelled, StoreError, StoreLocked
from backend.evict import EvictResult, sweep
from backend.history import RestoreInProgress
from backend.model import Problem, Snapshot
from backend.progress import Progress
from backend.retention import Duration, RetentionPolicy, SnapshotRef, apply_policy
from backend.snapshots import SnapshotOptions, escape_path
from backend.store import Store

if TYPE_CHECKING:
    from backend.prune import PruneResult

log = logging.getLogger(__name__)

MAX_DELAY_S = 30.0
"""Checkpoint even if events never stop for this long after the first pending one."""
RUST_TIMEOUT_MS = 400
"""How long an event thread waits in watchfiles before checking in (and noticing a stop)."""
STEP_MS = 30
"""watchfiles groups events until none came for this long (then hands them over)."""
MAX_FAILURES = 5
"""Event-watcher failures within ``FAILURE_WINDOW_S`` before falling back to rescans only."""
FAILURE_WINDOW_S = 60.0
RETRY_WATCH_S = 300.0
"""After too many failures, how long until events are tried again."""
LOCK_LINGER_S = 3.0
"""Release the repository lock kept between checkpoints after this long without one."""
THIN_EVERY_S = 60.0
"""Thin watch checkpoints at most this often (and after the first checkpoint)."""
RESTORE_POLL_S = 0.25
PRUNE_RETRY_S = 60.0
"""After a periodic prune found the repository locked, how long until it is tried again."""
"""While a restore marker holds a directory back, look again this often."""
IGNORE_FILE = ".snapdeckignore"
TEMP_PREFIXES = (b".snapdeck-tmp", b".tmp-")
"""snapdeck's own temp files (restore, local storage): their events never count."""

WatchFn = Callable[..., Iterable[set[tuple[Any, str]]]]


@dataclass(frozen=True, slots=True)
class WatchState:
    """What the watcher is doing, for a status bar."""

    dirs: tuple[str, ...]
    mode: str
    """``starting``, ``events`` (watching), ``partial`` (events for most, rescans for some
    directories), ``rescan`` (periodic rescans only), ``paused`` or ``stopped``."""
    pending: int = 0
    """Changed paths waiting for a checkpoint."""
    checkpoints: int = 0
    """Checkpoints taken since start."""
    running: bool = False
    """A checkpoint is being taken."""
    last_checkpoint: Snapshot | None = None
    message: str | None = None
    """The latest warning (why events are degraded), if any."""


@dataclass(frozen=True, slots=True)
class WatchCheckpoint:
    """One checkpoint the watcher took."""

    snapshot: Snapshot
    paths_changed: int
    """How many distinct paths the events named (0 for a full rescan without events)."""
    full: bool
    """A full rescan (startup, periodic, recovery) rather than a dirty-path one."""
    checkpoint_s: float
    """The checkpoint's own work: scan, store, compare, save, move HEAD."""
    problems: tuple[Problem, ...] = ()
    forgotten: tuple[str, ...] = ()
    """Watch checkpoints the retention removed right after."""

    def to_json(self) -> dict[str, Any]:
        """``snapshot --json``'s object plus the watch fields."""
        return self.snapshot.to_json() | {
            "trigger": "watch",
            "paths_changed": self.paths_changed,
            "full_scan": self.full,
            "checkpoint_s": self.checkpoint_s,
            "forgotten": list(self.forgotten),
            "problems": [{"path": p.path, "message": p.message} for p in self.problems],
        }


@dataclass(slots=True)
class _Dir:
    """Engine-thread state of one watched directory."""

    path: str
    bpath: bytes
    spec: pathspec.GitIgnoreSpec | None = None
    patterns: tuple[str, ...] = ()
    dirty: set[bytes] = field(default_factory=set)
    full: bool = True
    """The next checkpoint scans everything (startup, periodic, recovery)."""
    first_event: float | None = None
    last_event: float = 0.0
    last_checkpoint: float = -1e18
    base: Snapshot | None = None
    unwatched: tuple[bytes, ...] = ()
    """Relative directories no event thread covers (non-UTF-8 names): rescanned."""
    partition: bool = False
    """Watch around directories holding non-UTF-8 names (after watchfiles failed on one)."""
    held_until: float = -1e18
    """An in-place restore of this directory runs: no checkpoint before this (then re-check)."""
    last_thin: float | None = None


def policy_from_config(cfg: WatchConfig) -> RetentionPolicy:
    """The retention policy of ``[watch.retention]``."""
    r = cfg.retention
    w = r.within
    within = None
    if w is not None:
        # restic's within counts whole hours: minutes and seconds round up to the next hour.
        extra = -(-(w.minutes * 60 + w.seconds) // 3600)
        within = Duration(w.years, w.months, w.days, w.hours + extra)
    return RetentionPolicy(
        keep_hourly=r.keep_hourly,
        keep_daily=r.keep_daily,
        keep_weekly=r.keep_weekly,
        keep_monthly=r.keep_monthly,
        keep_within=within,
    )


def thin_watch_checkpoints(store: Store, source: str, policy: RetentionPolicy) -> list[str]:
    """Forget the watch checkpoints of ``source`` that ``policy`` does not keep.

    Candidates are snapshots with trigger ``watch`` that have no tags and are not protected
    (HEAD, a ref, pinned); manual, guard, tagged, pinned and ref'd snapshots are never touched.
    Returns the ids removed.
    """
    if policy.is_empty():
        return []
    prot = store.protection()
    cands = [
        SnapshotRef(s.id, s.time, s.tags)
        for s in store.list_snapshots(source=source)
        if s.trigger == "watch" and not s.tags and not s.pinned and s.id not in prot
    ]
    if not cands:
        return []
    decision = apply_policy(cands, policy)
    ids = [r.id for r in decision.remove]
    return list(store.forget(ids)) if ids else []


def _read_ignore_file(root: str) -> tuple[str, ...]:
    try:
        with open(os.path.join(root, IGNORE_FILE), encoding="utf-8", errors="surrogateescape") as f:
            return tuple(
                line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")
            )
    except OSError:
        return ()


def _is_utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def partition_watchable(root: bytes) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Split a tree so that no watched directory holds a name watchfiles cannot decode.

    Returns (directories to watch recursively, directories to watch without their
    subdirectories, relative paths of directories to rescan instead). A directory holding a
    non-UTF-8 name is rescanned; its ancestors are watched non-recursively; every subtree
    free of such names is watched recursively.
    """
    clean: dict[bytes, bool] = {}
    bad_here: dict[bytes, bool] = {}
    subdirs: dict[bytes, list[bytes]] = {}

    def scan(path: bytes) -> bool:
        bad = False
        subs: list[bytes] = []
        try:
            with os.scandir(path) as it:
                for de in it:
                    if not _is_utf8(de.name):
                        bad = True
                        continue
                    try:
                        if de.is_dir(follow_symlinks=False):
                            subs.append(path + b"/" + de.name)
                    except OSError:
                        continue
        except OSError:
            pass
        ok = not bad
        for sub in subs:
            ok = scan(sub) and ok
        clean[path], bad_here[path], subdirs[path] = ok, bad, subs
        return ok

    scan(root)
    rec: list[bytes] = []
    flat: list[bytes] = []
    rescan: list[bytes] = []

    def place(path: bytes) -> None:
        if clean[path]:
            rec.append(path)
            return
        if bad_here[path]:
            rescan.append(os.path.relpath(path, root) if path != root else b"")
        else:
            flat.append(path)
        for sub in subdirs[path]:
            place(sub)

    place(root)
    return rec, flat, [b"" if r == b"." else r for r in rescan]


_libc: Any = None


def _glibc() -> Any:
    """glibc through ctypes, or None (another libc or platform)."""
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL("libc.so.6")
                if hasattr(lib, "malloc_trim"):
                    _libc = lib
            except OSError:
                pass
    return _libc or None


def trim_malloc() -> None:
    """Give the free memory glibc holds back to the OS (a no-op elsewhere).

    Called after each periodic prune: its transient peak (index segments, tree packs and
    small packs read, new packs written) is freed but glibc keeps it. Measured with
    ``bench/watch.py --memory`` (with the CLI's ``backend.tuning.tune_malloc``): the level
    RSS settles at is ~2 MiB lower with the trim, and reached sooner.
    """
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)


def _classify(exc: BaseException) -> str:
    """``decode`` (a non-UTF-8 name), ``limit`` (OS watch limit) or ``other``."""
    msg = str(exc).lower()
    if "decode" in msg:
        return "decode"
    if isinstance(exc, OSError) and (
        "watch limit" in msg or "maxfileswatch" in msg or exc.errno in (errno.ENOSPC, errno.EMFILE)
    ):
        return "limit"
    return "other"


def _limit_hint() -> str:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as f:
            n = f.read().strip()
        return (
            f" (fs.inotify.max_user_watches is {n}; raise it with "
            "'sysctl fs.inotify.max_user_watches=524288')"
        )
    except OSError:
        return ""


class Watcher:
    """Watch directories and checkpoint them (see the module docstring).

    Args:
        store: the open Store (shared with the caller; its methods are thread-safe).
        dirs: the directories to watch.
        config: ``[watch]``.
        options: the snapshot options template (excludes, threads, exclude_caches); the
            trigger is set to ``watch`` and ignore patterns are added.
        on_checkpoint: called with a ``WatchCheckpoint`` after each checkpoint.
        on_state: called with the ``WatchState`` whenever it changes.
        on_error: called with a one-line message when something goes wrong (watching goes on).
        watch_fn: the event source (``watchfiles.watch``; tests may wrap it).
        clock: monotonic seconds.
        evict: ``[evict]``; with ``sweep_in_watch`` the eviction sweeper runs every
            ``sweep_interval_s`` between checkpoints.
        on_sweep: called with the ``EvictResult`` of a sweep that removed something.
        on_prune: called with the ``PruneResult`` of each periodic prune (``prune_every``).
        progress: receives the checkpoints' progress (one ``advance`` per file examined),
            e.g. for a status bar during the startup full checkpoint of a big tree.
    """

    def __init__(
        self,
        store: Store,
        dirs: Sequence[str | os.PathLike[str]],
        config: WatchConfig,
        *,
        options: SnapshotOptions | None = None,
        on_checkpoint: Callable[[WatchCheckpoint], None] | None = None,
        on_state: Callable[[WatchState], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        watch_fn: WatchFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        evict: EvictConfig | None = None,
        on_sweep: Callable[[EvictResult], None] | None = None,
        progress: Progress | None = None,
        on_prune: Callable[[PruneResult], None] | None = None,
    ) -> None:
        if not dirs:
            raise ValueError("nothing to watch")
        self.store = store
        self.config = config
        self.options = options or SnapshotOptions()
        self.on_checkpoint = on_checkpoint
        self.on_state = on_state
        self.on_error = on_error
        self.clock = clock
        if watch_fn is None:
            import watchfiles

            watch_fn = watchfiles.watch
        self._watch_fn = watch_fn
        self.policy = policy_from_config(config)
        self._dirs = [_Dir(os.path.abspath(d), os.fsencode(os.path.abspath(d))) for d in dirs]
        self._own = self._own_dirs()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._cancel = threading.Event()
        self._wstop = threading.Event()
        self._wthreads: list[threading.Thread] = []
        self._engine: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = False
        self._mode = "starting"
        self._message: str | None = None
        self._checkpoints = 0
        self._last: Snapshot | None = None
        self._failures: list[float] = []
        self._retry_watch_at: float | None = None
        self._next_full = clock() + config.full_rescan_s if config.full_rescan_s else None
        self._next_fallback = clock() + config.fallback_rescan_s
        self._paused = False
        self._watch_gen = 0
        self.evict = evict if evict is not None and evict.sweep_in_watch else None
        self.on_sweep = on_sweep
        self.progress = progress
        self._next_sweep = clock() + self.evict.sweep_interval_s if self.evict is not None else None
        self._last_work = clock()
        self.sweeps = 0
        """Sweeps run (whether or not they removed anything)."""
        self.on_prune = on_prune
        self.prunes = 0
        """Periodic prunes done."""
        self._since_prune = 0
        """Checkpoints saved since the last prune (periodic, or by an eviction sweep)."""
        self._next_prune_try = -1e18
        self._pruning = False
        for d in self._dirs:
            self._load_ignores(d)

    # ------------------------------------------------------------ public

    def start(self) -> None:
        """Start watching (returns at once); each directory gets a full checkpoint first."""
        for d in self._dirs:
            if not os.path.isdir(d.bpath):
                raise StoreError(f"cannot watch {escape_path(d.bpath)}: not a directory")
        self._start_event_threads()
        self._engine = threading.Thread(target=self._run, name="snapdeck-watch", daemon=True)
        self._engine.start()

    def stop(self, *, abandon: bool = False, timeout: float | None = None) -> None:
        """Stop. The checkpoint in flight finishes (``abandon``: it is cancelled, nothing of
        it is saved and HEAD stays)."""
        if abandon:
            self._cancel.set()
        self._stop.set()
        self._events.put(("wake", None))
        self._stop_event_threads()
        if self._engine is not None and self._engine is not threading.current_thread():
            self._engine.join(timeout)
        self._set_mode("stopped")

    def abandon(self) -> None:
        """Cancel the checkpoint in flight (nothing of it is saved; HEAD stays)."""
        self._cancel.set()

    def pause(self) -> None:
        """Stop listening to events (what changes meanwhile is found by the next rescan)."""
        self._paused = True
        self._stop_event_threads()
        self._set_mode("paused")

    def resume(self, *, rescan: bool = False) -> None:
        """Listen to events again; ``rescan``: also take a full rescan now."""
        self._paused = False
        self._start_event_threads()
        if rescan:
            self.request_rescan()

    def request_rescan(self) -> None:
        """Take a full rescan of every directory as soon as the minimum interval allows."""
        self._events.put(("rescan", None))

    @property
    def state(self) -> WatchState:
        """The current state."""
        with self._lock:
            return WatchState(
                dirs=tuple(d.path for d in self._dirs),
                mode=self._mode,
                pending=sum(len(d.dirty) for d in self._dirs),
                checkpoints=self._checkpoints,
                running=self._running,
                last_checkpoint=self._last,
                message=self._message,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no change is pending and no checkpoint or periodic prune runs (and the
        startup checkpoint is done); returns False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while True:
                busy = self._running or self._pruning or any(d.dirty or d.full for d in self._dirs)
                if not busy and self._events.empty():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))

    # ------------------------------------------------------------ event threads

    def _start_event_threads(self) -> None:
        self._stop_event_threads()
        self._wstop = threading.Event()
        self._watch_gen += 1
        gen = self._watch_gen
        rec: list[bytes] = []
        flat: list[bytes] = []
        partial = False
        for d in self._dirs:
            if d.partition:
                r, f, u = partition_watchable(d.bpath)
                d.unwatched = tuple(u)
                rec += r
                flat += f
                partial = partial or bool(u)
            else:
                rec.append(d.bpath)
        groups = [(rec, True), (flat, False)]
        for paths, recursive in groups:
            if not paths:
                continue
            t = threading.Thread(
                target=self._event_thread,
                args=(gen, [os.fsdecode(p) for p in paths], recursive, self._wstop),
                name="snapdeck-watch-events",
                daemon=True,
            )
            self._wthreads.append(t)
            t.start()
        self._set_mode("partial" if partial else "events")

    def _stop_event_threads(self) -> None:
        self._wstop.set()
        for t in self._wthreads:
            if t is not threading.current_thread():
                t.join(5.0)
        self._wthreads = []

    def _event_thread(
        self, gen: int, paths: list[str], recursive: bool, stop: threading.Event
    ) -> None:
        started = False
        try:
            for changes in self._watch_fn(
                *paths,
                watch_filter=None,
                debounce=max(self.config.quiet_ms, 100),
                step=STEP_MS,
                stop_event=stop,
                rust_timeout=RUST_TIMEOUT_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
                recursive=recursive,
            ):
                started = True
                if changes:
                    self._events.put(("changes", (gen, changes)))
        except BaseException as exc:  # watchfiles' failures are ours to survive
            if not stop.is_set():
                self._events.put(("failed", (gen, exc, started)))

    # ------------------------------------------------------------ engine thread

    def _own_dirs(self) -> list[bytes]:
        own: list[bytes] = []
        loc = self.store.location
        if os.path.isdir(loc):
            own.append(os.fsencode(os.path.realpath(loc)))
        cache = self.store.cache_dir or default_cache_dir()
        own.append(os.fsencode(os.path.realpath(cache)))
        return own

    def _load_ignores(self, d: _Dir) -> None:
        pats = (*self.options.excludes, *self.config.ignore, *_read_ignore_file(d.path))
        d.patterns = pats
        d.spec = pathspec.GitIgnoreSpec.from_lines(pats) if pats else None

    def _route(self, path: str) -> tuple[_Dir, bytes] | None:
        """The watched directory and relative path of an event, or None to drop it."""
        bp = os.fsencode(path)
        for own in self._own:
            if bp == own or bp.startswith(own + b"/"):
                return None
        base = os.path.basename(bp)
        if base.startswith(TEMP_PREFIXES):
            return None
        best: _Dir | None = None
        for d in self._dirs:
            if (bp == d.bpath or bp.startswith(d.bpath + b"/")) and (
                best is None or len(d.bpath) > len(best.bpath)
            ):
                best = d
        if best is None:
            return None
        rel = bp[len(best.bpath) + 1 :] if bp != best.bpath else b""
        if rel == IGNORE_FILE.encode():
            self._load_ignores(best)
            best.full = True
            return best, rel
        if rel and best.spec is not None:
            s = rel.decode("utf-8", "surrogateescape")
            if best.spec.match_file(s) or best.spec.match_file(s + "/"):
                return None
        return best, rel

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # never die silently: say why, stop cleanly
            log.exception("watch engine failed")
            self._error(f"watching stopped: {type(exc).__name__}: {exc}")
            self._set_mode("stopped")
        finally:
            try:
                self.store.release_held_lock()
            except Exception:  # releasing is best effort: the lease lapses by itself
                log.exception("releasing the repository lock failed")
            with self._idle:
                self._running = False
                self._idle.notify_all()

    def _loop(self) -> None:
        quiet = self.config.quiet_ms / 1000.0
        while not self._stop.is_set():
            try:
                kind, payload = self._events.get(timeout=self._timeout(quiet))
                self._handle(kind, payload)
                while True:  # take everything queued before deciding
                    kind, payload = self._events.get_nowait()
                    self._handle(kind, payload)
            except queue.Empty:
                pass
            if self._stop.is_set():
                break
            now = self.clock()
            self._schedule_rescans(now)
            for d in self._dirs:
                if self._stop.is_set():
                    break
                if self._due(d, now, quiet):
                    self._checkpoint(d)
                    now = self.clock()
            if not self._stop.is_set():
                self._housekeeping(now)
            self._notify_idle()

    def _housekeeping(self, now: float) -> None:
        """Between checkpoints: release the lock kept since the last one when idle, and run
        the eviction sweeper when it is due."""
        if self.store.holds_lock and (self._paused or now - self._last_work >= LOCK_LINGER_S):
            self.store.release_held_lock()
        if self._next_sweep is not None and now >= self._next_sweep:
            self._sweep()
        if self._prune_due(now):
            self._prune()

    def _prune_due(self, now: float) -> bool:
        every = self.config.prune_every
        if not every or self._since_prune < every or self._paused or now < self._next_prune_try:
            return False
        # Between bursts of edits; a change that never settles does not put it off forever.
        busy = any(d.dirty or d.full for d in self._dirs)
        return not busy or self._since_prune >= 2 * every

    def _prune(self) -> None:
        """Prune (exclusive lock): the data only thinned checkpoints referenced goes, small
        packs and index segments are merged, and the in-memory index is loaded afresh."""
        self.store.release_held_lock()  # prune takes the exclusive lock
        started = time.monotonic()
        with self._idle:
            self._pruning = True
        try:
            res = self.store.prune(cancel=self._stop)
        except Cancelled:
            return
        except StoreLocked as exc:
            log.info("periodic prune postponed: %s", exc)
            self._next_prune_try = self.clock() + PRUNE_RETRY_S
            return
        except (StoreError, OSError) as exc:
            self._since_prune = 0  # tried again after another prune_every checkpoints
            self._error(f"pruning the repository failed: {exc}")
            return
        finally:
            self._last_work = self.clock()
            with self._idle:
                self._pruning = False
                self._idle.notify_all()
        self._since_prune = 0
        self.prunes += 1
        try:
            _ = self.store.repo.index  # loaded now, not in the next checkpoint's latency
        except (StoreError, OSError) as exc:  # the next checkpoint reports it
            log.info("loading the index after prune failed: %s", exc)
        trim_malloc()
        log.info(
            "periodic prune: %d packs deleted, %d repacked, %d bytes reclaimed in %.2f s",
            len(res.plan.delete),
            len(res.plan.repack),
            res.bytes_before - res.bytes_after,
            time.monotonic() - started,
        )
        if self.on_prune is not None:
            try:
                self.on_prune(res)
            except Exception:
                log.exception("on_prune callback failed")

    def _sweep(self) -> None:
        assert self.evict is not None
        self.store.release_held_lock()  # the sweep takes the exclusive lock
        try:
            res = sweep(self.store, self.evict, cancel=self._cancel)
        except Cancelled:
            return
        except (StoreError, OSError) as exc:
            self._error(f"eviction sweep failed: {exc}")
            res = None
        finally:
            self.sweeps += 1
            self._next_sweep = self.clock() + self.evict.sweep_interval_s
            self._last_work = self.clock()
        if res is not None and res.prune is not None:
            self._since_prune = 0
        if res is not None and self.on_sweep is not None:
            try:
                self.on_sweep(res)
            except Exception:
                log.exception("on_sweep callback failed")

    def _timeout(self, quiet: float) -> float:
        now = self.clock()
        t = 0.5
        for d in self._dirs:
            if d.dirty or d.full:
                if d.held_until > now:
                    t = min(t, d.held_until - now)
                    continue
                t = min(t, max(0.0, d.last_event + quiet - now))
                t = min(t, max(0.0, d.last_checkpoint + self.config.min_interval_s - now))
        return max(0.005, t)

    def _due(self, d: _Dir, now: float, quiet: float) -> bool:
        if not d.dirty and not d.full:
            return False
        if now < d.held_until:
            return False
        if now - d.last_checkpoint < self.config.min_interval_s:
            return False
        if d.full and not d.dirty:
            return True  # rescans wait for nothing but the interval
        settled = now - d.last_event >= quiet
        overdue = d.first_event is not None and now - d.first_event >= MAX_DELAY_S
        return settled or overdue

    def _schedule_rescans(self, now: float) -> None:
        if self._next_full is not None and now >= self._next_full:
            for d in self._dirs:
                d.full = True
            self._next_full = now + self.config.full_rescan_s
        if now >= self._next_fallback:
            self._next_fallback = now + self.config.fallback_rescan_s
            if self._mode == "rescan":
                for d in self._dirs:
                    d.full = True
            else:
                for d in self._dirs:
                    if d.unwatched:
                        d.dirty.update(d.unwatched)
                        if b"" in d.unwatched:
                            d.full = True
                        d.last_event = min(d.last_event, now)
        if self._retry_watch_at is not None and now >= self._retry_watch_at and not self._paused:
            self._retry_watch_at = None
            self._failures.clear()
            self._start_event_threads()

    def _handle(self, kind: str, payload: Any) -> None:
        now = self.clock()
        if kind == "changes":
            gen, changes = payload
            if gen != self._watch_gen:
                return
            for _change, path in changes:
                routed = self._route(path)
                if routed is None:
                    continue
                d, rel = routed
                if rel:
                    d.dirty.add(rel)
                else:
                    d.full = True
                if d.first_event is None:
                    d.first_event = now
                d.last_event = now
            self._emit_state()
        elif kind == "rescan":
            for d in self._dirs:
                d.full = True
        elif kind == "failed":
            gen, exc, started = payload
            if gen == self._watch_gen and not self._paused:
                self._watcher_failed(exc, started)

    def _watcher_failed(self, exc: BaseException, started: bool) -> None:
        now = self.clock()
        why = _classify(exc)
        self._stop_event_threads()
        for d in self._dirs:
            d.full = True  # events were lost: a full rescan catches up
        if why == "limit":
            self._watch_gen += 1
            self._message = (
                "the OS limit on watched directories is reached"
                + _limit_hint()
                + f"; rescanning every {self.config.fallback_rescan_s} s instead"
            )
            self._error(self._message)
            self._set_mode("rescan")
            return
        self._failures = [t for t in self._failures if now - t < FAILURE_WINDOW_S] + [now]
        if len(self._failures) > MAX_FAILURES:
            self._watch_gen += 1
            self._message = (
                f"file events keep failing ({exc}); rescanning every "
                f"{self.config.fallback_rescan_s} s, events retried in {RETRY_WATCH_S:.0f} s"
            )
            self._error(self._message)
            self._retry_watch_at = now + RETRY_WATCH_S
            self._set_mode("rescan")
            return
        if why == "decode":
            # A name watchfiles cannot decode: watch around such directories from now on.
            self._message = (
                "a file name that is not UTF-8 stopped the event watcher; watching around it "
                f"and rescanning its directory every {self.config.fallback_rescan_s} s"
            )
            log.warning("%s (%s)", self._message, exc)
            for d in self._dirs:
                d.partition = True
        else:
            self._error(f"the event watcher failed ({exc}); restarting it")
        self._start_event_threads()

    def _checkpoint(self, d: _Dir) -> None:
        with self._idle:
            self._running = True  # before the flags clear: wait_idle never sees a gap
        try:
            self._checkpoint_locked(d)
        finally:
            with self._idle:
                self._running = False
                self._idle.notify_all()
            self._emit_state()

    def _checkpoint_locked(self, d: _Dir) -> None:
        paths = set(d.dirty)
        full = d.full
        d.dirty.clear()
        d.full = False
        d.first_event = None
        self._emit_state()
        opts = replace(self.options, trigger="watch", excludes=d.patterns)
        try:
            res = self.store.checkpoint(
                d.path,
                options=opts,
                dirty=None if full else paths,
                base=d.base,
                progress=self.progress,
                cancel=self._cancel,
                keep_lock=True,
            )
        except Cancelled:
            return
        except RestoreInProgress as exc:
            # A restore is rewriting the directory: wait for it to end, then scan everything.
            d.dirty |= paths
            d.full = True
            now = self.clock()
            if d.held_until < now - RESTORE_POLL_S:  # a new hold: say it once
                log.info("holding off: %s", exc)
            d.held_until = now + RESTORE_POLL_S
            return
        except StoreLocked as exc:
            # Someone holds the exclusive lock (prune): keep the changes, try again later.
            d.dirty |= paths
            d.full = d.full or full
            d.last_checkpoint = self.clock()
            log.info("checkpoint postponed: %s", exc)
            return
        except (StoreError, OSError) as exc:
            d.full = True  # whatever happened, the next attempt starts from the truth
            d.last_checkpoint = self.clock()
            self._error(f"checkpoint of {escape_path(d.bpath)} failed: {exc}")
            return
        d.last_checkpoint = self._last_work = self.clock()
        d.base = res.base
        if res.snapshot is None:
            return
        forgotten: list[str] = []
        if d.last_thin is None or d.last_checkpoint - d.last_thin >= THIN_EVERY_S:
            d.last_thin = d.last_checkpoint
            try:
                forgotten = thin_watch_checkpoints(self.store, d.path, self.policy)
            except (StoreError, OSError) as exc:
                self._error(f"thinning watch checkpoints failed: {exc}")
        self._since_prune += 1
        with self._lock:
            self._checkpoints += 1
            self._last = res.snapshot
        ev = WatchCheckpoint(
            res.snapshot,
            len(paths),
            full,
            res.duration_s,
            res.problems,
            tuple(forgotten),
        )
        if self.on_checkpoint is not None:
            try:
                self.on_checkpoint(ev)
            except Exception:
                log.exception("on_checkpoint callback failed")

    # ------------------------------------------------------------ plumbing

    def _set_mode(self, mode: str) -> None:
        with self._lock:
            if self._paused and mode in ("events", "partial"):
                mode = "paused"
            changed = mode != self._mode
            self._mode = mode
        if changed:
            self._emit_state()

    def _emit_state(self) -> None:
        if self.on_state is not None:
            try:
                self.on_state(self.state)
            except Exception:
                log.exception("on_state callback failed")

    def _error(self, msg: str) -> None:
        log.warning("%s", msg)
        if self.on_error is not None:
            try:
                self.on_error(msg)
            except Exception:
                log.exception("on_error callback failed")

    def _notify_idle(self) -> None:
        with self._idle:
            self._idle.notify_all()
