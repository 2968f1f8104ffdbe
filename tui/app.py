"""The snapdeck Textual app: screens over one ``Store``, a watcher feeding live checkpoints.

Every backend call runs in a thread worker; results come back as messages. Errors the backend
raises on purpose (``StoreError``) become toasts; anything else is a toast naming the bug, with
the traceback in Textual's log.
"""

from __future__ import annotations

import gc
import heapq
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import var
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from backend.clock import Clock, SystemClock
from backend.config import Config, load_state, save_state
from backend.errors import Cancelled, StoreError
from backend.model import Snapshot
from backend.store import Store
from tui import theming
from tui.messages import CheckpointLanded, StoreChanged, WatchState

if TYPE_CHECKING:
    from backend.meta import Note
    from backend.snapshots import SnapshotOptions
    from tui.cli import Ctx

__all__ = ["CheckpointLanded", "FirstListing", "GcPause", "SnapApp", "Throttle", "UiProgress"]

T = TypeVar("T")

UI_HZ = 10
"""How often, at most, state that backend threads update (watch state, progress) is shown."""


class WatchProblem(Message):
    """A one-line problem the watcher reported (watching goes on)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class _Flush(Message):
    """A ``Throttle`` has a value to apply (posted at most once per interval)."""

    def __init__(self, throttle: Throttle[Any]) -> None:
        super().__init__()
        self.throttle = throttle


class Throttle(Generic[T]):
    """The latest value a backend thread set, applied on the event loop at most ``UI_HZ``
    times a second. ``set`` is cheap and never blocks: while a value waits to be applied,
    newer ones only replace it (so 10,000 progress calls a second cost one message per
    interval, and a handler that re-renders the status bar runs ten times a second at most).
    """

    def __init__(self, app: App[Any], apply: Callable[[T], object], interval: float = 1 / UI_HZ):
        self._app = app
        self._apply = apply
        self.interval = interval
        self._value: Any = _NOTHING
        self._pending = False
        self._last = 0.0

    def set(self, value: T) -> None:
        """Offer a new value (from any thread)."""
        self._value = value
        if not self._pending:
            self._pending = True
            self._app.post_message(_Flush(self))

    def _flush(self) -> None:
        wait = self._last + self.interval - time.monotonic()
        if wait > 0:
            self._app.set_timer(wait, self._fire)
        else:
            self._fire()

    def _fire(self) -> None:
        self._pending = False  # before reading: a value set from now on posts again
        value, self._value = self._value, _NOTHING
        if value is not _NOTHING:
            self._last = time.monotonic()
            self._apply(value)


_NOTHING: Any = object()


class UiProgress:
    """A thread-safe ``backend.progress.Progress`` that shows ``label: done/total unit`` in
    the status bar through a ``Throttle`` (the snapshot pipeline calls ``advance`` once per
    file: thousands of times a second)."""

    def __init__(self, throttle: Throttle[str], label: str, unit: str = "files") -> None:
        self._throttle = throttle
        self._lock = threading.Lock()
        self.label = label
        self.unit = unit
        self.done = 0
        self.total: int | None = None

    def start(self, total: int | None, label: str) -> None:
        with self._lock:
            self.total, self.done = total, 0
        self._show()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
        self._show()

    def note(self, msg: str) -> None:
        pass

    def _show(self) -> None:
        done, total = self.done, self.total
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        self._throttle.set(f"{self.label}: {count} {self.unit}")


class GcPause:
    """No cyclic garbage collection while a snapshot or checkpoint runs in this process.

    A full collection stops every thread, the event loop too, for as long as it takes to
    scan every tracked object, and a running snapshot has tens of thousands (its trees and
    entries): that was the longest stall of the UI during a W1 snapshot (~50-190 ms). The
    pipeline's objects are freed by reference counting (it makes no cycles worth collecting;
    ``backend.restore`` pauses the collector the same way); once no operation runs, the
    collector is on again and finds a small heap. Counted: nested operations keep it off.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._was_enabled = True

    def __enter__(self) -> None:
        with self._lock:
            if self._n == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._n += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._n -= 1
            if self._n == 0 and self._was_enabled:
                gc.enable()

    @property
    def active(self) -> bool:
        """Whether an operation holds the collector off."""
        return self._n > 0


class SnapApp(App[None]):
    """The snapdeck TUI.

    Args:
        store: the open repository.
        dirs: the directories to watch (absolute paths).
        config: settings (theme, keymap, watch, snapshot excludes).
        clock: the time source (a ``FixedClock`` in tests).
        watch: watch ``dirs`` and take checkpoints when they change.
        state_file: where the remembered theme goes (default: the platform state file).
        user_theme_dir: user themes (default: ``~/.config/snapdeck/themes``).
        preload: start listing snapshots at once, while Textual starts (the timeline takes
            the result when it mounts).
        freeze_gc: once the first full listing is on screen, move what exists out of the
            garbage collector's reach (see ``started``; tests that build many apps in one
            process turn it off).
    """

    CSS_PATH = "app.tcss"
    TITLE = "snapdeck"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("ctrl+t", "cycle_theme", "Next theme", id="theme", show=False),
        Binding("E", "eviction", "Eviction", id="eviction", show=False),
    ]

    # ``var``, not ``reactive``: a reactive on the app repaints the whole screen when it
    # changes; these change up to ten times a second and only the status bar shows them
    watch_state: var[WatchState | None] = var(None)
    activity: var[str] = var("")
    """What a backend operation started from the UI is doing (``snapshot of ~/x: 1,234``)."""

    def __init__(
        self,
        store: Store,
        *,
        dirs: Sequence[str] = (),
        config: Config | None = None,
        clock: Clock | None = None,
        watch: bool = True,
        state_file: Path | None = None,
        user_theme_dir: Path | None = None,
        preload: bool = True,
        freeze_gc: bool = True,
    ) -> None:
        self.config = config or Config()
        super().__init__()
        self.store = store
        self.clock: Clock = clock or store.clock or SystemClock()
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.watch_enabled = watch and bool(self.dirs)
        self.state_file = state_file
        self.animation_level = self.config.ui.animation
        self.cursor_blink = self.config.ui.cursor_blink
        self.theme_failures: list[tuple[Path, str]] = []
        self._watch_stop = threading.Event()
        self._watcher: Any = None
        self._watch_started = False
        self._state: dict[str, Any] = load_state(state_file)
        bundled = theming.bundled_themes()
        user, failed = theming.user_themes(user_theme_dir)
        for t in (*bundled, *user):
            self.register_theme(t)
        self.cycle_themes = list(dict.fromkeys(t.name for t in (*bundled, *user)))
        """The themes ``ctrl+t`` cycles through (bundled, then the user's)."""
        self.theme_failures = failed
        wanted = str(self._state.get("theme") or self.config.ui.theme)
        if self.get_theme(wanted) is None:
            wanted = theming.DEFAULT_THEME
        self._set_first_theme(wanted)
        self.repo_label = _short_location(store.location)
        self._first_listing: FirstListing | None = FirstListing(store) if preload else None
        self._frozen = not freeze_gc
        self.gc_pause = GcPause()
        """Held by "snapshot now" and while the watcher checkpoints (see ``GcPause``)."""
        self._watch_gc = False
        self._watch_throttle: Throttle[WatchState] = Throttle(self, self._set_watch_state)
        self.activity_throttle: Throttle[str] = Throttle(self, self._set_activity)
        """Feeds ``activity`` from backend threads (see ``progress``)."""

    # ------------------------------------------------------------ theming

    def _set_first_theme(self, name: str) -> None:
        """Choose the theme before the app runs, without the theme watcher: the watcher
        schedules a full re-parse of every stylesheet, and the first parse (when the app
        starts) already uses this theme. What else the watcher does is done here."""
        self.set_reactive(App.theme, name)
        dark = self.current_theme.dark
        self.update_classes(
            {
                **{c: False for c in self.classes if c.startswith("-theme-")},
                f"-theme-{name}": True,
                "-dark-mode": dark,
                "-light-mode": not dark,
            },
            update=False,
        )
        self._refresh_truecolor_filter(self.ansi_theme)  # the ANSI colours of a light theme
        self.stylesheet.set_variables(self.get_css_variables())

    def get_theme_variable_defaults(self) -> dict[str, str]:
        try:
            theme = self.current_theme
        except Exception:  # during construction, before a theme is chosen
            return theming.variable_defaults(self.available_themes["textual-dark"])
        return theming.variable_defaults(theme)

    def _theme_changed(self, theme: Any) -> None:
        self._state["theme"] = self.theme
        self._save_state(dict(self._state))

    @work(thread=True, group="state", exit_on_error=False)
    def _save_state(self, state: dict[str, Any]) -> None:
        save_state(state, self.state_file)

    def action_cycle_theme(self) -> None:
        """Switch to the next snapdeck (bundled or user) theme."""
        names = self.cycle_themes
        if not names:
            return
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    # ------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        from tui.screens.timeline import TimelineScreen

        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._apply_keymap()
        if self.theme_failures:
            lines = "\n".join(f"{p.name}: {why}" for p, why in self.theme_failures)
            self.notify(f"skipped broken theme file(s):\n{lines}", severity="warning", timeout=8)
        self.push_screen(TimelineScreen())
        if not self.watch_enabled:
            self.watch_state = WatchState(0, note="--no-watch" if self.dirs else "")
        # watching starts once the repository has a snapshot (the timeline or the welcome
        # screen calls start_watching), so an empty repository first shows the welcome

    def _apply_keymap(self) -> None:
        keymap = dict(self.config.keymap)
        if not keymap:
            return
        known = known_binding_ids()
        unknown = sorted(set(keymap) - known)
        if unknown:
            self.notify(
                f"[keymap]: unknown binding id(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}",
                severity="warning",
                timeout=10,
                markup=False,
            )
        self.set_keymap({k: v for k, v in keymap.items() if k in known})

    def on_unmount(self) -> None:
        self.stop_watching()

    @on(_Flush)
    def _flush_throttle(self, event: _Flush) -> None:
        event.throttle._flush()

    def _set_watch_state(self, state: WatchState) -> None:
        self.watch_state = state

    def _set_activity(self, text: str) -> None:
        self.activity = text

    def progress(self, label: str) -> UiProgress:
        """A progress sink for a backend call in a worker: ``label: done/total`` in the status
        bar, ten times a second at most; ``done_activity()`` clears it."""
        return UiProgress(self.activity_throttle, label)

    def done_activity(self) -> None:
        """Clear the status bar's activity (thread-safe)."""
        self.activity_throttle.set("")

    def started(self) -> None:
        """The first full listing is on screen: what exists now (modules, widgets, thousands of
        snapshots in the catalog's cache) lives as long as the app. It is moved out of the
        garbage collector's reach (``gc.freeze``), once: a full collection stops every thread,
        and scanning these objects made it last ~100 ms while a snapshot or checkpoint ran."""
        if not self._frozen:
            self._frozen = True
            gc.freeze()

    def take_first_listing(self) -> FirstListing | None:
        """The listing started with the app, once (later loads list afresh)."""
        first, self._first_listing = self._first_listing, None
        return first

    # ------------------------------------------------------------ errors

    def show_error(self, exc: BaseException) -> None:
        """The one place errors are shown: expected ones as a toast, bugs with their type."""
        if isinstance(exc, Cancelled):
            self.notify("cancelled", severity="warning", timeout=3)
        elif isinstance(exc, StoreError):
            self.notify(str(exc), title=type(exc).__name__, severity="error", markup=False)
        elif isinstance(exc, OSError):
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            self.notify(f"{exc.strerror or exc}{where}", severity="error", markup=False)
        else:
            self.log.error("".join(traceback.format_exception(exc)))
            self.notify(
                f"internal error: {type(exc).__name__}: {exc}",
                title="bug",
                severity="error",
                markup=False,
                timeout=10,
            )

    @on(Worker.StateChanged)
    def _app_worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            self.show_error(event.worker.error)

    # ------------------------------------------------------------ navigation

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_timeline(self) -> None:
        """Back to the timeline (the screen at the bottom of the stack)."""
        from tui.screens.timeline import TimelineScreen

        while len(self.screen_stack) > 2 and not isinstance(self.screen, TimelineScreen):
            self.pop_screen()

    def open_browser(self, snap: Snapshot, path: str = "") -> None:
        """Push the browser on a snapshot."""
        from tui.screens.browser import BrowserScreen

        self.push_screen(BrowserScreen(snap, path=path))

    def open_history(self, source: str | None = None, snap: Snapshot | None = None) -> None:
        """Push the checkpoint graph of a source."""
        from tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen(source=source, select=snap))

    def open_diff(self, a: Snapshot, b: Snapshot | None, path: str = "") -> None:
        """Push the diff screen (``b`` None: against the live directory)."""
        try:
            from tui.screens.diff import DiffScreen  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            self.notify("the diff screen is not available in this build", severity="warning")
            return
        try:
            screen = DiffScreen(self.store, a, b, path)
        except Exception as exc:  # a partial build of the diff screen: say so, keep running
            self.show_error(exc)
            return
        self.push_screen(screen)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self._offered(action, self.screen)

    @staticmethod
    def _offered(action: str, screen: Screen[Any]) -> bool:
        """Whether an app action makes sense over ``screen`` (the footer and the palette)."""
        # the eviction screen is already showing
        return not (action == "eviction" and type(screen).__name__ == "EvictionScreen")

    def action_eviction(self) -> None:
        """Push the eviction screen (unless it is the one showing)."""
        if type(self.screen).__name__ == "EvictionScreen":
            return
        try:
            from tui.screens.eviction import (  # type: ignore[import-not-found,unused-ignore]
                EvictionScreen,
            )
        except ImportError:
            self.notify("the eviction screen is not available in this build", severity="warning")
            return
        try:
            self.push_screen(EvictionScreen(self.store))
        except Exception as exc:
            self.show_error(exc)

    # ------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every named action of the screen (its bindings with an id, the ones a keymap can
        rebind: timeline, browser, history, diff, eviction...), the app's, then Textual's.

        Unnamed navigation bindings (up, page down, tree moves) stay out of the palette."""
        from tui.screens.timeline import TimelineScreen

        titles: set[str] = set()
        ids: set[str] = set()
        found: list[tuple[Binding, str, Any]] = []
        for key, active in screen.active_bindings.items():
            if active.enabled:
                found.append(
                    (active.binding, self.get_key_display(active.binding) or key, active.node)
                )
        # Bindings a focused widget shadows (the timeline's enter = browse under the list's
        # enter = open) are still actions: the palette offers them too.
        focused = screen.focused
        nodes = list(focused.ancestors_with_self) if focused is not None else [screen, self]
        keymap = dict(self.config.keymap)
        for node in nodes:
            if isinstance(screen, ModalScreen) and node is self:
                continue  # a dialog does not run the app's actions
            for b in getattr(type(node), "BINDINGS", []):
                if isinstance(b, Binding) and b.id:
                    found.append((b, keymap.get(b.id, b.key).split(",")[0], node))
        for b, shown, node in found:
            if not b.description or not b.id or b.id in ids or b.action == "command_palette":
                continue
            if node is self and not self._offered(b.action, screen):
                continue
            ids.add(b.id)
            titles.add(b.description)
            yield SystemCommand(
                b.description,
                b.tooltip or f"{b.description} (key: {shown})",
                partial(self._run_bound, b.action, node),
            )
        if not isinstance(screen, TimelineScreen) and "Timeline" not in titles:
            titles.add("Timeline")
            yield SystemCommand(
                "Timeline", "Back to the timeline (every snapshot)", self.action_timeline
            )
        for cmd in super().get_system_commands(screen):
            if cmd.title not in titles:
                yield cmd

    def _run_bound(self, action: str, node: Any) -> None:
        self.call_later(self.run_action, action, node)

    # ------------------------------------------------------------ store changes

    @on(StoreChanged)
    def _broadcast_store_changed(self, event: StoreChanged) -> None:
        """Every screen that shows repository data gets its own copy (a ``CheckpointLanded``
        stays one: the timeline adds a row instead of listing everything again)."""
        for screen in self.screen_stack:
            if hasattr(screen, "reload"):
                if isinstance(event, CheckpointLanded):
                    screen.post_message(CheckpointLanded(event.snapshot, event.forgotten))
                else:
                    screen.post_message(StoreChanged())

    def store_changed(self) -> None:
        """Tell every screen the repository changed (thread-safe)."""
        self.post_message(StoreChanged())

    # ------------------------------------------------------------ snapshots (shared by screens)

    def snapshot_options(self, trigger: str = "manual") -> SnapshotOptions:
        """Options for a snapshot taken from the UI (config excludes applied)."""
        from backend.snapshots import SnapshotOptions

        cfg = self.config.snapshot
        return SnapshotOptions(
            trigger=trigger,
            excludes=tuple(cfg.exclude),
            exclude_caches=cfg.exclude_caches,
            threads=cfg.threads,
            processes=cfg.processes,
        )

    # ------------------------------------------------------------ watching

    def start_watching(self) -> None:
        """Start the watcher once (after the first snapshot exists): the backend's
        ``Watcher`` when available, else a small built-in one."""
        if not self.watch_enabled or self._watch_started:
            return
        self._watch_started = True
        self._watch_stop.clear()
        self.watch_state = WatchState(len(self.dirs), note="starting")
        try:
            from backend import watch as watch_mod
        except ImportError:  # an older backend: the built-in watcher below
            watch_mod = None  # type: ignore[assignment]
        if watch_mod is not None:
            self._watcher = watch_mod.Watcher(
                self.store,
                self.dirs,
                self.config.watch,
                options=self.snapshot_options("watch"),
                evict=self.config.evict,
                on_checkpoint=self._watcher_checkpoint_cb,
                on_state=self._watcher_state_cb,
                on_error=self._watcher_error_cb,
            )
            self._run_backend_watcher()
        else:
            self._run_builtin_watcher()

    def stop_watching(self) -> None:
        """Stop watching (idempotent)."""
        self._watch_stop.set()
        if self._watch_gc:  # a checkpoint was running: the collector is not held for it now
            self._watch_gc = False
            self.gc_pause.__exit__()
        w = self._watcher
        if w is not None:
            try:
                w.stop()
            except Exception as exc:  # stopping must never stop the app from closing
                self.log.error(f"watcher stop: {exc!r}")

    def _watcher_checkpoint_cb(self, result: Any) -> None:
        snap = getattr(result, "snapshot", result)
        forgotten = tuple(getattr(result, "forgotten", ()) or ())
        self.post_message(CheckpointLanded(snap if isinstance(snap, Snapshot) else None, forgotten))

    def _watcher_state_cb(self, state: Any) -> None:
        # (the watcher's thread, before and after each checkpoint)
        running = bool(getattr(state, "running", False))
        if running != self._watch_gc:
            self._watch_gc = running
            if running:
                self.gc_pause.__enter__()
            else:
                self.gc_pause.__exit__()
        mode = str(getattr(state, "mode", "events"))
        last = getattr(state, "last_checkpoint", None)
        note = "" if mode in ("events", "starting") else mode
        if getattr(state, "message", None):
            note = f"{note}: {state.message}" if note else str(state.message)
        # called on every batch of file events: shown ten times a second at most
        self._watch_throttle.set(
            WatchState(
                watching=0 if mode == "stopped" else len(getattr(state, "dirs", self.dirs)),
                pending=int(getattr(state, "pending", 0) or 0),
                last_checkpoint=getattr(last, "time", last),
                busy=bool(getattr(state, "running", False)),
                note=note,
            )
        )

    def _watcher_error_cb(self, msg: str) -> None:
        self.post_message(WatchProblem(msg))

    @on(WatchProblem)
    def _watch_problem(self, event: WatchProblem) -> None:
        self.notify(event.text, title="watch", severity="warning", markup=False)

    @on(WatchState)
    def _show_watch_state(self, event: WatchState) -> None:
        self.watch_state = event

    @work(thread=True, group="watch", exit_on_error=False, description="watching")
    def _run_backend_watcher(self) -> None:
        w = self._watcher
        w.start()
        self._watch_stop.wait()

    @work(thread=True, group="watch", exit_on_error=False, description="watching")
    def _run_builtin_watcher(self) -> None:
        run_builtin_watcher(
            self.store,
            self.dirs,
            self.config,
            stop=self._watch_stop,
            options=self.snapshot_options("watch"),
            clock=self.clock,
            post=self.post_message,
        )


PAGE = 120
"""Snapshots the first paint shows (the newest): more than a tall terminal's rows."""
PAINT_WAIT_S = 1.0
"""How long the first listing waits for the first paint before decoding the rest anyway."""


@dataclass(frozen=True, slots=True)
class Listing:
    """Snapshots (oldest first), their protection reasons, and how many there are in all
    (more than ``len(snapshots)`` for a first page)."""

    snapshots: list[Snapshot]
    protected: dict[str, list[str]]
    total: int

    @property
    def complete(self) -> bool:
        """Every snapshot is here (not only a first page)."""
        return len(self.snapshots) >= self.total


class FirstListing:
    """The app's first listing, started in a thread as the app is built, so that reading the
    repository overlaps Textual's start-up. Three steps, each a future:

    - ``page``: the newest ``PAGE`` snapshots, from the local catalog (one indexed query: a
      few milliseconds with 10,000 snapshots); on a first open (an empty catalog), the
      newest of the snapshot objects just read, before the catalog is written;
    - ``cached``: everything the catalog has (decoding 10,000 rows takes ~0.1 s of CPU);
    - ``synced``: the repository's truth (the catalog brought up to date).

    After the page, the thread waits for ``painted`` (or ``PAINT_WAIT_S``): the first paint
    does not share the GIL with decoding thousands of rows.
    """

    def __init__(self, store: Store, page: int | None = None) -> None:
        self.page: Future[Listing] = Future()
        self.cached: Future[Listing] = Future()
        self.synced: Future[Listing] = Future()
        self.painted = threading.Event()
        """Set by the timeline once the page is on screen (or when there is none to show)."""
        self._n = PAGE if page is None else page
        threading.Thread(
            target=self._run, args=(store,), name="snapdeck-first-listing", daemon=True
        ).start()

    def _run(self, store: Store) -> None:
        notes: dict[str, Note] = {}
        protected: dict[str, list[str]] = {}
        try:
            notes = store.meta.notes()
            protected = store.protection()
            snaps = [_noted(s, notes.get(s.id)) for s in store.catalog.latest(self._n)]
            if snaps:
                self.page.set_result(Listing(snaps, protected, store.catalog.count()))
        except BaseException as exc:  # the later steps report real problems
            self.page.set_exception(exc)
        if self.page.done():
            self.painted.wait(PAINT_WAIT_S)
            self._step(self.cached, store, cached=True)
            self._step(self.synced, store, cached=False)
            return

        # An empty catalog (a first open): every snapshot object is read; the newest are
        # painted before the catalog is written.
        def on_read(snaps: list[Snapshot], gone: set[str]) -> None:
            newest = sorted(heapq.nlargest(self._n, snaps, key=_BY_TIME), key=_BY_TIME)
            page = [_noted(s, notes.get(s.id)) for s in newest]
            self.page.set_result(Listing(page, protected, len(snaps)))
            self.painted.wait(PAINT_WAIT_S)

        try:
            store.catalog.sync(store.repo, on_read=on_read)
        except BaseException as exc:
            for fut in (self.page, self.cached, self.synced):
                if not fut.done():
                    fut.set_exception(exc)
            return
        if not self.page.done():
            self.page.set_result(Listing([], protected, 0))
        self._step(self.cached, store, cached=True)  # now the repository's truth as well
        failed = self.cached.exception()
        if failed is not None:
            self.synced.set_exception(failed)
        else:
            self.synced.set_result(self.cached.result())

    @staticmethod
    def _step(fut: Future[Listing], store: Store, *, cached: bool) -> None:
        try:
            snaps = store.list_snapshots(cached=cached)
            fut.set_result(Listing(snaps, store.protection(), len(snaps)))
        except BaseException as exc:  # handed to whoever takes the result
            fut.set_exception(exc)


_BY_TIME = attrgetter("time", "id")


def _noted(s: Snapshot, note: Note | None) -> Snapshot:
    """A catalog row with its note (edited tags, pin) applied, as ``list_snapshots`` does."""
    if note is None:
        return s
    tags = note.tags if note.tags is not None else s.tags
    if tags == s.tags and note.pinned == s.pinned:
        return s
    return replace(s, tags=tags, pinned=note.pinned)


def run_builtin_watcher(
    store: Store,
    dirs: Sequence[str],
    config: Config,
    *,
    stop: threading.Event,
    options: SnapshotOptions,
    clock: Clock,
    post: Callable[[Any], Any],
) -> None:
    """A minimal watcher (used until ``backend.watch`` exists): on changes, after
    ``[watch] quiet_ms`` of quiet and at least ``min_interval_s`` apart, snapshot the changed
    dirs; snapshots with no change are dropped again."""
    import time

    from watchfiles import watch

    ignore = [os.path.abspath(store.location)]
    if store.catalog.path is not None:
        ignore.append(str(store.catalog.path.parent))
    last_at: datetime | None = None
    last_mono = 0.0
    opts = SnapshotOptions(
        **{
            **{s: getattr(options, s) for s in SnapshotOptions.__slots__},
            "excludes": (*options.excludes, *config.watch.ignore),
        }
    )
    for changes in watch(
        *dirs,
        stop_event=stop,
        debounce=max(50, config.watch.quiet_ms),
        step=50,
        raise_interrupt=False,
    ):
        paths = [
            p for _c, p in changes if not any(p == i or p.startswith(i + os.sep) for i in ignore)
        ]
        if not paths:
            continue
        post(WatchState(len(dirs), pending=len(paths), last_checkpoint=last_at, busy=True))
        wait = config.watch.min_interval_s - (time.monotonic() - last_mono)
        if wait > 0 and stop.wait(wait):
            break
        touched = [d for d in dirs if any(p == d or p.startswith(d + os.sep) for p in paths)]
        for d in touched:
            parent = store.head(d)
            res = store.create_snapshot(d, options=opts, cancel=stop)
            if parent is not None and res.snapshot.tree == parent.tree:
                store.forget([res.snapshot.id])
                store.set_head(parent)
            else:
                last_at = clock.now()
                post(CheckpointLanded(res.snapshot))
        last_mono = time.monotonic()
        post(WatchState(len(dirs), pending=0, last_checkpoint=last_at))


def known_binding_ids() -> set[str]:
    """Every binding id a ``[keymap]`` may rebind."""
    from tui.screens import all_screen_classes
    from tui.widgets.linelist import LineList

    ids: set[str] = set()
    for cls in (SnapApp, LineList, *all_screen_classes()):
        for b in getattr(cls, "BINDINGS", []):
            if isinstance(b, Binding) and b.id:
                ids.add(b.id)
    return ids


def _short_location(loc: str) -> str:
    home = os.path.expanduser("~")
    if home not in ("", "/") and loc.startswith(home + os.sep):
        return "repo ~" + loc[len(home) :]
    return f"repo {loc}"


def run_app(ctx: Ctx, dirs: Sequence[str], watch: bool = True) -> None:
    """Open the TUI (the ``ui`` command): the configured repository, watching ``dirs``."""
    store = ctx.store()
    cfg = ctx.config
    app = SnapApp(store, dirs=dirs, config=cfg, watch=watch and cfg.watch.enabled)
    app.run()
