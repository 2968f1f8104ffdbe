"""The eviction screen: repository usage, the retention and eviction policy edited in place,
a preview of the plan (what goes, why the rest stays, bytes freed), a calendar of kept vs
removed days, and running the plan with a progress bar and cancel.

Every backend call goes through ``EvictionBackend`` (the adapter at the top of this module)
and runs in a thread worker (STYLE E3):

* ``load_usage``: ``Store.stats()`` and ``Store.usage()`` (per-snapshot exclusive sizes);
* ``compute_plan`` (exclusive: an edit cancels the stale plan): ``Store.plan_forget`` for the
  retention rules, then ``evict.plan_evict`` for the size budget and age limit *on the
  snapshots retention keeps*, so the projected size is what forget + evict + prune leave;
* ``run_plan``: re-plans, refuses if the plan changed since it was shown, forgets the
  retention removals one by one (cancel is checked between them), then evicts and prunes
  (``Store.evict`` / ``Store.prune``, which check cancel between their own steps). Whatever
  point a cancel lands at, the repository stays valid: a forget is one object deletion, and
  prune is crash-safe.

Keys: r run the plan (after a confirmation), c cancel a run, ctrl+l reload, tab moves between
the policy inputs and the plan list.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Footer, Input, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from backend.config import Config
from backend.errors import Cancelled, StoreError, UsageError
from backend.evict import EvictPlan, plan_evict
from backend.model import RepoStats, Snapshot
from backend.retention import Duration as RetentionDuration
from backend.retention import RetentionPolicy
from backend.store import Store
from backend.units import format_size, parse_duration, parse_size
from tui.screens.base import BackendScreen
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.evict_calendar import EvictCalendar, day_counts
from tui.widgets.evict_plan import EvictPlanList, Fate
from tui.widgets.status_bar import StatusBar

NO_BUDGET = 1 << 62
"""A size budget no repository reaches: plans the projection (bytes freed) without evicting."""

# --------------------------------------------------------------------------------------------
# The policy form
# --------------------------------------------------------------------------------------------

COUNT_FIELDS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
FIELDS: tuple[tuple[str, str], ...] = (
    ("keep_last", "last"),
    ("keep_hourly", "hourly"),
    ("keep_daily", "daily"),
    ("keep_weekly", "weekly"),
    ("keep_monthly", "monthly"),
    ("keep_yearly", "yearly"),
    ("keep_within", "within"),
    ("max_size", "max size"),
    ("max_age", "max age"),
)
"""(form field, label) of every input, in order."""


@dataclass(frozen=True, slots=True)
class PolicyForm:
    """The policy as typed (strings; parsed by ``retention`` and ``limits``)."""

    keep_last: str = ""
    keep_hourly: str = ""
    keep_daily: str = ""
    keep_weekly: str = ""
    keep_monthly: str = ""
    keep_yearly: str = ""
    keep_within: str = ""
    """restic's duration format, like ``1y2m3d4h``."""
    max_size: str = ""
    """A size budget like ``500MiB``."""
    max_age: str = ""
    """Evict snapshots not accessed for this long, like ``30d``."""

    @classmethod
    def from_config(cls, config: Config) -> PolicyForm:
        """The configured watch retention and ``[evict]`` limits."""
        r = config.watch.retention
        e = config.evict

        def n(v: int) -> str:
            return str(v) if v else ""

        return cls(
            keep_hourly=n(r.keep_hourly),
            keep_daily=n(r.keep_daily),
            keep_weekly=n(r.keep_weekly),
            keep_monthly=n(r.keep_monthly),
            keep_within=r.keep_within.strip(),
            max_size=e.max_size.strip(),
            max_age=e.max_age.strip(),
        )

    def retention(self) -> RetentionPolicy:
        """The keep rules (may be empty).

        Raises:
            UsageError: a count that is not a whole number >= 0, or a bad duration.
        """
        counts: dict[str, int] = {}
        for name in COUNT_FIELDS:
            text = getattr(self, name).strip()
            label = name.replace("_", "-")
            try:
                value = int(text) if text else 0
            except ValueError:
                raise UsageError(f"{label}: {text!r} is not a whole number") from None
            if value < 0:
                raise UsageError(f"{label} must be >= 0")
            counts[name] = value
        within = self.keep_within.strip()
        return RetentionPolicy(
            keep_last=counts["keep_last"],
            keep_hourly=counts["keep_hourly"],
            keep_daily=counts["keep_daily"],
            keep_weekly=counts["keep_weekly"],
            keep_monthly=counts["keep_monthly"],
            keep_yearly=counts["keep_yearly"],
            keep_within=RetentionDuration.parse(within) if within else None,
        )

    def errors(self) -> dict[str, str]:
        """Field → what is wrong with it, for every field that does not parse."""
        out: dict[str, str] = {}
        for field, _label in FIELDS:
            probe = PolicyForm(**{field: getattr(self, field)})
            try:
                if field in ("max_size", "max_age"):
                    probe.limits()
                else:
                    probe.retention()
            except StoreError as exc:
                out[field] = str(exc)
        return out

    def limits(self) -> tuple[int | None, Any]:
        """(max size in bytes, max age duration), each None when not set.

        Raises:
            UsageError: an unreadable size or duration (the messages of ``backend.units``).
        """
        size = parse_size(self.max_size) if self.max_size.strip() else None
        if size is not None and size <= 0:
            raise UsageError("max size must be greater than zero")
        age = parse_duration(self.max_age) if self.max_age.strip() else None
        return size, age


# --------------------------------------------------------------------------------------------
# The backend adapter
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """Repository-wide numbers and every snapshot's exclusive size."""

    stats: RepoStats
    exclusive: dict[str, int]
    snapshots: tuple[Snapshot, ...]
    """Oldest first."""


@dataclass(frozen=True, slots=True)
class Preview:
    """A plan as shown: every snapshot's fate, and the sizes before and after."""

    fates: tuple[Fate, ...]
    """Newest first."""
    forget_ids: tuple[str, ...]
    """Removed by the retention rules (newest first)."""
    evict_ids: tuple[str, ...]
    """Removed by eviction, in eviction order."""
    size_before: int
    size_after: int
    """Projected bytes after forget, evict and prune."""
    budget: int | None
    policy: str
    """The retention policy in words ("" when there is none)."""
    warnings: tuple[str, ...] = ()

    @property
    def remove_ids(self) -> tuple[str, ...]:
        """Everything the plan removes."""
        return self.forget_ids + self.evict_ids

    @property
    def freed(self) -> int:
        """Bytes the run gives back (after prune)."""
        return max(0, self.size_before - self.size_after)


class EvictionBackend:
    """Every backend call the eviction screen makes (blocking; call from a worker).

    Args:
        store: the open repository.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def usage(self, cancel: threading.Event | None = None) -> Usage:
        """Stats and exclusive sizes (reads every tree once)."""
        snaps = self.store.list_snapshots()
        stats = self.store.stats()
        per = self.store.usage(cancel=cancel)
        return Usage(stats, {k: v.exclusive_bytes for k, v in per.items()}, tuple(snaps))

    def preview(
        self, form: PolicyForm, usage: Usage | None, cancel: threading.Event | None = None
    ) -> Preview:
        """The plan for ``form``.

        Raises:
            UsageError: the form does not parse.
        """
        policy = form.retention()
        max_size, max_age = form.limits()
        store = self.store
        snaps = store.list_snapshots()
        warnings: list[str] = []
        keep_reasons: dict[str, tuple[str, ...]] = {}
        forget: list[str] = []
        if not policy.is_empty():
            try:
                fplan = store.plan_forget(policy)
            except UsageError as exc:
                # A group would be emptied: show it, and plan without the retention rules.
                warnings.append(str(exc))
            else:
                for s, kept in fplan.keep:
                    keep_reasons[s.id] = kept.labels or kept.reasons
                forget = [s.id for s in sorted(fplan.remove, key=lambda s: s.time, reverse=True)]
        hidden = set(forget)
        eplan: EvictPlan = plan_evict(
            store,
            exclude=hidden,
            max_size=max_size if max_size is not None or max_age is not None else NO_BUDGET,
            max_age=max_age,
            cancel=cancel,
        )
        evict = {i.snapshot.id: i.reason for i in eplan.remove}
        protected = {k: tuple(v) for k, v in store.protection().items()}
        exclusive = usage.exclusive if usage is not None else {}
        fates = []
        for s in sorted(snaps, key=lambda s: s.time, reverse=True):
            if s.id in hidden:
                fates.append(
                    Fate(
                        s, False, "retention", ("no retention rule keeps it",), exclusive.get(s.id)
                    )
                )
            elif s.id in evict:
                fates.append(Fate(s, False, "eviction", (evict[s.id],), exclusive.get(s.id)))
            else:
                reasons = keep_reasons.get(s.id) or protected.get(s.id) or ()
                if not reasons:
                    reasons = (eplan.protected.get(s.id) and tuple(eplan.protected[s.id])) or ()
                if not reasons:
                    reasons = ("no retention rules",) if policy.is_empty() else ("kept",)
                if max_size is not None and s.id not in eplan.protected:
                    reasons = (*reasons, "within budget")
                fates.append(Fate(s, True, "", reasons, exclusive.get(s.id)))
        return Preview(
            fates=tuple(fates),
            forget_ids=tuple(forget),
            evict_ids=tuple(i.snapshot.id for i in eplan.remove),
            size_before=eplan.size_before,
            size_after=eplan.size_after,
            budget=max_size,
            policy="" if policy.is_empty() else policy.describe(),
            warnings=tuple(warnings),
        )

    def run(
        self,
        form: PolicyForm,
        expected: tuple[str, ...],
        progress: RunProgress,
        cancel: threading.Event,
        step_pause: float = 0.0,
    ) -> tuple[int, int]:
        """Carry out the plan for ``form`` if it still removes exactly ``expected``.

        Returns (snapshots removed, bytes after). Raises ``Cancelled`` when cancelled (what
        was done stays done; the repository is valid), ``UsageError`` when the plan changed.
        """
        again = self.preview(form, None, cancel)
        if set(again.remove_ids) != set(expected):
            raise UsageError("the repository changed since the plan was shown; review it again")
        store = self.store
        removed = 0
        if again.forget_ids:
            progress.start(len(again.forget_ids), "forget")
            for sid in again.forget_ids:
                if cancel.is_set():
                    raise Cancelled(f"cancelled after forgetting {removed} snapshots")
                removed += len(store.forget([sid]))
                progress.advance(1)
                if step_pause:
                    time.sleep(step_pause)
        max_size, max_age = form.limits()
        if cancel.is_set():
            raise Cancelled(f"cancelled after forgetting {removed} snapshots")
        if max_size is not None or max_age is not None:
            eplan = plan_evict(store, max_size=max_size, max_age=max_age, cancel=cancel)
            result = store.evict(eplan, progress=progress, cancel=cancel)
            return removed + len(result.removed), result.size_after
        if removed:
            store.prune(progress=progress, cancel=cancel)
        return removed, sum(
            i.size for k in ("data", "index", "snapshots") for i in store.storage.list(k)
        )


@dataclass(frozen=True, slots=True)
class PlanRows:
    """A preview as the screen shows it, built in a worker (10,000 snapshots are tens of
    milliseconds of Python: too long for a message handler)."""

    fates: list[Fate]
    days: dict[date, tuple[int, int]]
    """Local day → (kept, removed) snapshot counts (the calendar)."""
    kept: int
    usage: Usage | None
    """The usage the exclusive sizes came from."""


def plan_rows(p: Preview, usage: Usage | None) -> PlanRows:
    """The list rows and calendar days of a preview, with exclusive sizes from ``usage``."""
    exclusive = usage.exclusive if usage else {}
    fates = [
        Fate(f.snapshot, f.keep, f.removed_by, f.reasons, exclusive.get(f.snapshot.id, f.exclusive))
        for f in p.fates
    ]
    return PlanRows(
        fates,
        day_counts((f.snapshot.time.astimezone().date(), f.keep) for f in fates),
        sum(1 for f in fates if f.keep),
        usage,
    )


class RunProgress:
    """A ``backend.progress.Progress`` that posts (coalescing) messages to the screen."""

    def __init__(self, screen: EvictionScreen) -> None:
        self.screen = screen
        self.total: int | None = None
        self.done = 0
        self.label = ""
        self._last = 0.0

    def start(self, total: int | None, label: str) -> None:
        self.total, self.done, self.label = total, 0, label
        self._post(force=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._post()

    def note(self, msg: str) -> None:
        self.screen.post_message(EvictionScreen.RunNote(msg))

    def _post(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= 0.05 or (self.total and self.done >= self.total):
            self._last = now
            self.screen.post_message(
                EvictionScreen.RunProgressed(self.label, self.done, self.total)
            )


# --------------------------------------------------------------------------------------------
# The screen
# --------------------------------------------------------------------------------------------


class EvictionScreen(BackendScreen):
    """Usage, policy, plan preview, calendar, and running the plan.

    Args:
        store: the open repository.
        form: the policy to start from (default: the app's config, else the defaults).
    """

    AUTO_FOCUS = "#evict-plan"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit_policy", "Edit policy", id="evict.edit"),
        Binding("r", "run", "Run plan", id="evict.run"),
        Binding("c", "cancel_run", "Cancel run", id="evict.cancel"),
        Binding("ctrl+l", "reload", "Reload", id="evict.reload"),
    ]

    DEFAULT_CSS = """
    EvictionScreen { layout: vertical; }
    EvictionScreen #evict-title {
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
        text-style: bold;
    }
    EvictionScreen #evict-usage { height: 2; padding: 0 1; }
    EvictionScreen #evict-form { height: 2; padding: 0 1; }
    EvictionScreen .field { width: 1fr; height: 2; margin-right: 1; }
    EvictionScreen .field Label { color: $text-muted; height: 1; }
    EvictionScreen .field Input { height: 1; }
    EvictionScreen .field Input.-invalid { color: $text-error; }
    EvictionScreen #evict-status { height: 2; padding: 0 1; }
    EvictionScreen #evict-status.-warning { color: $text-warning; }
    EvictionScreen #evict-status.-error { color: $text-error; }
    EvictionScreen #evict-body { height: 1fr; }
    EvictionScreen #evict-plan { width: 1fr; }
    EvictionScreen #evict-run { height: 1; padding: 0 1; display: none; }
    EvictionScreen #evict-run.-running { display: block; }
    EvictionScreen #evict-run Label { width: auto; margin-right: 1; }
    EvictionScreen #evict-progress { width: 1fr; }
    """

    class UsageLoaded(Message):
        def __init__(self, usage: Usage) -> None:
            super().__init__()
            self.usage = usage

    class PlanReady(Message):
        def __init__(
            self,
            form: PolicyForm,
            preview: Preview | None,
            error: str = "",
            rows: PlanRows | None = None,
        ) -> None:
            super().__init__()
            self.form = form
            self.preview = preview
            self.error = error
            self.rows = rows

    class RowsReady(Message):
        """The preview's rows again, with exclusive sizes that arrived later."""

        def __init__(self, preview: Preview, rows: PlanRows) -> None:
            super().__init__()
            self.preview = preview
            self.rows = rows

    class RunProgressed(Message):
        def __init__(self, label: str, done: int, total: int | None) -> None:
            super().__init__()
            self.label = label
            self.done = done
            self.total = total

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, EvictionScreen.RunProgressed)

    class RunNote(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class RunFinished(Message):
        def __init__(
            self, removed: int, size_after: int, error: str = "", cancelled: bool = False
        ) -> None:
            super().__init__()
            self.removed = removed
            self.size_after = size_after
            self.error = error
            self.cancelled = cancelled

    def __init__(
        self,
        store: Store,
        *,
        form: PolicyForm | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.store = store
        self.backend = EvictionBackend(store)
        self._initial_form = form
        self.form = form or PolicyForm()
        self.usage: Usage | None = None
        self.preview: Preview | None = None
        self.running = False
        self.last_run: EvictionScreen.RunFinished | None = None
        self.step_pause = 0.0
        """Seconds to wait after each forget in a run (0; tests slow a run down to cancel it)."""
        self._debounce: Timer | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        if self._initial_form is None:
            config = getattr(self.app, "config", None)
            self.form = PolicyForm.from_config(config if isinstance(config, Config) else Config())
        yield Static("Eviction & retention", id="evict-title", markup=False)
        yield Static("Reading repository usage…", id="evict-usage")
        with Horizontal(id="evict-form"):
            for field, label in FIELDS:
                with Vertical(classes="field"):
                    yield Label(label)
                    yield Input(
                        getattr(self.form, field),
                        id=f"evict-{field.replace('_', '-')}",
                        compact=True,
                        placeholder="off",
                        type="integer" if field in COUNT_FIELDS else "text",
                    )
        yield Static("Planning…", id="evict-status")
        with Horizontal(id="evict-body"):
            yield EvictPlanList(id="evict-plan")
            yield EvictCalendar(id="evict-calendar")
        with Horizontal(id="evict-run"):
            yield Label("", id="evict-run-label")
            yield ProgressBar(id="evict-progress", show_eta=False)
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        blink = getattr(self.app, "cursor_blink", True)
        for inp in self.query(Input):
            inp.cursor_blink = bool(blink)
        plan = self.query_one(EvictPlanList)
        plan.loading = True
        self.load_usage()
        self.compute_plan(self.form)

    def reload(self) -> None:
        """The repository changed: usage and plan again."""
        if not self.running:
            self.load_usage()
            self.compute_plan(self.form)

    def action_reload(self) -> None:
        self.reload()

    def action_edit_policy(self) -> None:
        """Focus the first policy field (tab moves on; enter or escape ends editing)."""
        self.query(Input).first().focus()

    def action_back(self) -> None:
        if isinstance(self.focused, Input):  # escape in a field ends editing, not the screen
            self.query_one(EvictPlanList).focus()
            return
        super().action_back()

    def worker_failed(self, worker: Worker[object]) -> None:
        self.query_one(EvictPlanList).loading = False

    # ------------------------------------------------------------ workers

    @work(thread=True, exclusive=True, group="evict-usage", exit_on_error=False)
    def load_usage(self) -> None:
        """Stats and exclusive sizes."""
        worker = get_current_worker()
        usage = self.backend.usage(worker.cancelled_event)
        if not worker.is_cancelled:
            self.post_message(self.UsageLoaded(usage))

    @work(thread=True, exclusive=True, group="evict-plan", exit_on_error=False)
    def compute_plan(self, form: PolicyForm) -> None:
        """The plan for the policy as typed (a bad value is shown, not raised)."""
        worker = get_current_worker()
        try:
            preview = self.backend.preview(form, self.usage, worker.cancelled_event)
        except Cancelled:
            return
        except StoreError as exc:
            if not worker.is_cancelled:
                self.post_message(self.PlanReady(form, None, str(exc)))
            return
        rows = plan_rows(preview, self.usage)
        if not worker.is_cancelled:
            self.post_message(self.PlanReady(form, preview, rows=rows))

    @work(thread=True, exclusive=True, group="evict-rows", exit_on_error=False)
    def build_rows(self, preview: Preview, usage: Usage | None) -> None:
        self.post_message(self.RowsReady(preview, plan_rows(preview, usage)))

    @on(RowsReady)
    def rows_ready(self, message: RowsReady) -> None:
        if message.preview is self.preview:
            self._show_preview(message.preview, message.rows)

    @work(thread=True, exclusive=True, group="evict-run", exit_on_error=False)
    def run_plan(self, form: PolicyForm, expected: tuple[str, ...]) -> None:
        """Forget, evict and prune, with progress; a cancel stops between steps."""
        worker = get_current_worker()
        progress = RunProgress(self)
        try:
            removed, after = self.backend.run(
                form, expected, progress, worker.cancelled_event, self.step_pause
            )
        except Cancelled as exc:
            self.post_message(self.RunFinished(0, 0, str(exc), cancelled=True))
            return
        except StoreError as exc:
            self.post_message(self.RunFinished(0, 0, str(exc)))
            return
        self.post_message(self.RunFinished(removed, after))

    # ------------------------------------------------------------ editing

    def _read_form(self) -> PolicyForm:
        values = {
            field: self.query_one(f"#evict-{field.replace('_', '-')}", Input).value
            for field, _label in FIELDS
        }
        return PolicyForm(**values)

    @on(Input.Changed)
    def policy_edited(self, event: Input.Changed) -> None:
        event.stop()
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(0.3, self._replan)

    @on(Input.Submitted)
    def policy_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._debounce is not None:
            self._debounce.stop()
        self._replan()
        self.query_one(EvictPlanList).focus()

    def _replan(self) -> None:
        self._debounce = None
        form = self._read_form()
        if form == self.form and self.preview is not None:
            return
        self.form = form
        status = self.query_one("#evict-status", Static)
        errors = form.errors()
        for field, _label in FIELDS:
            self.query_one(f"#evict-{field.replace('_', '-')}", Input).set_class(
                field in errors, "-invalid"
            )
        if errors:
            # Nothing is planned from a policy that does not parse; the last plan stays.
            for w in self.workers:
                if w.group == "evict-plan":
                    w.cancel()
            status.set_class(True, "-error")
            status.update("Cannot plan: " + "; ".join(errors.values()))
            return
        status.update("Planning…")
        self.compute_plan(form)

    # ------------------------------------------------------------ results

    @on(UsageLoaded)
    def show_usage(self, message: UsageLoaded) -> None:
        self.usage = message.usage
        st = message.usage.stats
        ratio = st.stored_bytes / st.raw_bytes if st.raw_bytes else 0.0
        cells = 30
        filled = min(cells, round(ratio * cells))
        self.query_one("#evict-usage", Static).update(
            f"[b]{st.snapshots}[/b] snapshots   stored [b]{format_size(st.stored_bytes)}[/b] of "
            f"[b]{format_size(st.raw_bytes)}[/b] raw   dedup [b]{st.dedup_ratio:.1f}×[/b]   "
            f"compression [b]{st.compression_ratio:.1f}×[/b]   {st.packs} packs\n"
            f"[$primary]{'█' * filled}[/][$panel-lighten-2]{'░' * (cells - filled)}[/] "
            f"[$text-muted]stored / raw {ratio:.0%}[/]"
        )
        if self.preview is not None:  # its rows again with the exclusive sizes, in a worker
            self.build_rows(self.preview, self.usage)

    @on(PlanReady)
    def show_plan(self, message: PlanReady) -> None:
        if message.form != self.form:
            return
        status = self.query_one("#evict-status", Static)
        status.set_class(bool(message.error), "-error")
        if message.preview is None:
            status.update(f"Cannot plan: {message.error}")
            return
        self.preview = message.preview
        rows = message.rows or plan_rows(message.preview, self.usage)
        self._show_preview(message.preview, rows)
        if rows.usage is not self.usage:  # the sizes arrived while planning: rows again
            self.build_rows(message.preview, self.usage)

    def _show_preview(self, p: Preview, rows: PlanRows) -> None:
        plan = self.query_one(EvictPlanList)
        plan.loading = False
        plan.show(rows.fates)
        self.query_one(EvictCalendar).show_days(rows.days)
        status = self.query_one("#evict-status", Static)
        status.set_class(bool(p.warnings), "-warning")
        kept = rows.kept
        parts = [
            f"Keep {kept}, remove {len(p.remove_ids)}"
            + (
                f" ({len(p.forget_ids)} by retention, {len(p.evict_ids)} by eviction)"
                if p.remove_ids
                else ""
            ),
            f"frees {format_size(p.freed)}",
            f"{format_size(p.size_before)} → {format_size(p.size_after)}",
        ]
        if p.budget is not None:
            parts.append(
                f"budget {format_size(p.budget)} "
                + ("met" if p.size_after <= p.budget else "NOT met (protected snapshots)")
            )
        line2 = (
            "; ".join(p.warnings)
            if p.warnings
            else (f"policy: {p.policy}" if p.policy else "no retention rules")
        )
        status.update("   ".join(parts) + "\n" + line2)

    # ------------------------------------------------------------ running

    def action_run(self) -> None:
        p = self.preview
        if self.running or p is None:
            return
        if not p.remove_ids and not p.freed:
            self.notify("Nothing to do: the plan removes nothing.", timeout=3)
            return
        body = (
            f"Forget {len(p.forget_ids)} snapshot(s) by retention and evict "
            f"{len(p.evict_ids)}, then prune.\n"
            f"Frees about {format_size(p.freed)} ({format_size(p.size_before)} → "
            f"{format_size(p.size_after)})."
        )
        form, expected = self.form, p.remove_ids

        def answered(yes: bool | None) -> None:
            if yes:
                self._start_run(form, expected)

        self.app.push_screen(
            ConfirmDialog(f"Remove {len(expected)} snapshots?", body, yes="Run", danger=True),
            answered,
        )

    def _start_run(self, form: PolicyForm, expected: tuple[str, ...]) -> None:
        self.running = True
        self.last_run = None
        bar = self.query_one("#evict-run")
        bar.add_class("-running")
        self.query_one("#evict-run-label", Label).update("Starting…")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.run_plan(form, expected)

    def action_cancel_run(self) -> None:
        if not self.running:
            return
        for w in self.workers:
            if w.group == "evict-run" and w.state in (WorkerState.PENDING, WorkerState.RUNNING):
                w.cancel()
        self.query_one("#evict-run-label", Label).update("Cancelling…")

    @on(RunProgressed)
    def run_progressed(self, message: RunProgressed) -> None:
        self.query_one("#evict-run-label", Label).update(message.label.capitalize())
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    @on(RunNote)
    def run_note(self, message: RunNote) -> None:
        self.query_one("#evict-run-label", Label).update(message.text[:60])

    @on(RunFinished)
    def run_finished(self, message: EvictionScreen.RunFinished) -> None:
        self.running = False
        self.last_run = message
        self.query_one("#evict-run").remove_class("-running")
        if message.cancelled:
            self.notify(
                f"Run cancelled: {message.error}. The repository is consistent.",
                severity="warning",
            )
        elif message.error:
            self.notify(message.error, severity="error")
        else:
            self.notify(
                f"Removed {message.removed} snapshots; the repository is now "
                f"{format_size(message.size_after)}."
            )
        # The app tells every screen (this one included) that the repository changed.
        store_changed = getattr(self.app, "store_changed", None)
        if callable(store_changed):
            store_changed()
        else:
            self.reload()
