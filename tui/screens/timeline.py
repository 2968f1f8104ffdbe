"""The timeline: every snapshot, newest first, grouped by day; the app's home screen."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Input, Label, Static

from backend.model import Snapshot
from tui import restoring
from tui.formatting import human_size, local, relative_time, short_source, spark
from tui.messages import CheckpointLanded
from tui.screens.base import RestoreFinished, RestoringScreen, screen_css
from tui.widgets.dialogs import ConfirmDialog, InputDialog
from tui.widgets.linelist import LineList
from tui.widgets.snapshot_list import Layout, SnapshotList, layout
from tui.widgets.status_bar import StatusBar


@dataclass
class SnapshotsLoaded(Message):
    """The worker's result: every snapshot and the protection reasons."""

    snapshots: list[Snapshot]
    protected: dict[str, list[str]]
    layout: Layout
    """The rows, laid out in the worker (sorting and grouping 10,000 is too slow for the loop)."""
    final: bool = True
    """False for what the local catalog had before the repository was asked (may be stale)."""
    total: int = -1
    """How many snapshots there are (more than ``len(snapshots)`` for a first page)."""
    by_id: dict[str, Snapshot] = field(default_factory=dict)
    """``snapshots`` by id (built in the worker too)."""
    painted: threading.Event | None = None
    """Set once these rows are on screen (the first listing waits for it)."""


class FinalListing(Message):
    """The repository's listing is what is already shown (nothing to redraw)."""


def _same(
    a: tuple[list[Snapshot], dict[str, list[str]]], b: tuple[list[Snapshot], dict[str, list[str]]]
) -> bool:
    """Whether two listings show the same (rows are shared objects when unchanged: ``is``
    settles most comparisons)."""
    sa, sb = a[0], b[0]
    if len(sa) != len(sb) or a[1] != b[1]:
        return False
    return all(x is y or x == y for x, y in zip(sa, sb, strict=True))


@dataclass
class Filtered(Message):
    """The filter worker's result: the matching rows, laid out."""

    query: str
    layout: Layout
    matches: int


@dataclass
class SnapshotTaken(Message):
    """A manual snapshot finished (a toast)."""

    text: str


@dataclass
class ProtectionLoaded(Message):
    """Protection reasons read again after a checkpoint moved a HEAD."""

    protected: dict[str, list[str]]


@dataclass
class RestorePlanned(Message):
    """A dry run finished: ask before restoring."""

    plan: restoring.RestorePlan


def matches(s: Snapshot, query: str) -> bool:
    """Whether a snapshot matches a filter: words are ANDed; ``source:``, ``tag:`` and
    ``trigger:`` narrow to that field, other words match id, source, tags or message."""
    for word in query.lower().split():
        key, sep, val = word.partition(":")
        if sep and key == "source":
            if val not in s.source.lower():
                return False
        elif sep and key == "tag":
            if not any(t.lower().startswith(val) for t in s.tags):
                return False
        elif sep and key == "trigger":
            if not s.trigger.lower().startswith(val):
                return False
        elif not (
            s.id.startswith(word)
            or word in s.source.lower()
            or any(word in t.lower() for t in s.tags)
            or word in s.message.lower()
        ):
            return False
    return True


class TimelineScreen(RestoringScreen):
    """Every snapshot, newest first; the keys act on the highlighted one."""

    DEFAULT_CSS = screen_css("timeline.tcss")

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "browse", "Browse", id="timeline_browse", show=False),
        Binding("d", "diff", "Diff", id="timeline_diff"),
        Binding("m", "mark", "Mark", id="timeline_mark"),
        Binding("L", "diff_live", "Diff live", id="timeline_diff_live", show=False),
        Binding("r", "restore", "Restore", id="timeline_restore"),
        Binding("u", "undo", "Undo restore", id="timeline_undo", show=False),
        Binding("t", "tag", "Tag", id="timeline_tag"),
        Binding("p", "pin", "Pin", id="timeline_pin"),
        Binding("x", "forget", "Forget", id="timeline_forget"),
        Binding("h", "history", "History", id="timeline_history"),
        Binding("slash", "filter", "Filter", id="timeline_filter"),
        Binding("s", "snapshot_now", "Snapshot now", id="timeline_snapshot", show=False),
        Binding("escape", "clear_filter", "Clear filter", id="timeline_clear", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._all: list[Snapshot] = []
        self._by_id: dict[str, Snapshot] = {}
        self._protected: dict[str, list[str]] = {}
        self._layout: Layout | None = None
        """Every snapshot, laid out."""
        self._shown: Layout | None = None
        """What the list shows: ``_layout``, or the rows matching ``_query``."""
        self._query = ""
        self._total = 0
        self._loaded = False
        self._welcomed = False

    def compose(self) -> ComposeResult:
        with Horizontal(classes="title-bar"):
            yield Label("snapdeck", classes="title-text")
            yield Label("· timeline", id="title-info")
        yield Static("", id="spark")
        yield Input(
            placeholder="filter: words, source:…, tag:…, trigger:…  (esc clears)", id="filter"
        )
        yield SnapshotList(id="snapshots")
        yield Static("loading snapshots…", id="detail")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        inp = self.query_one("#filter", Input)
        inp.cursor_blink = self.snap_app.cursor_blink
        inp.display = False
        self.query_one(SnapshotList).focus()
        self.reload()

    # ------------------------------------------------------------ loading

    def reload(self) -> None:
        self.load_snapshots()

    @work(thread=True, exclusive=True, group="timeline-load", exit_on_error=False)
    def load_snapshots(self) -> None:
        """List and lay out in this thread; the handler only swaps the rows in (a few ms).

        The app's first listing comes in three steps: the newest page of the local catalog
        (painted at once), then all it has, then the repository's truth; a step that changes
        nothing is not shown again."""
        app = self.snap_app
        first = app.take_first_listing()
        if first is None:
            store = app.store
            snaps = store.list_snapshots()
            self._post_listing(snaps, store.protection(), len(snaps), final=True)
            return
        shown: tuple[list[Snapshot], dict[str, list[str]]] | None = None
        try:
            page = first.page.result()
        except Exception as exc:  # the listings below report real problems
            self.log.warning(f"first page failed: {exc!r}")
        else:
            if page.snapshots:
                self._post_listing(
                    page.snapshots, page.protected, page.total, final=False, painted=first.painted
                )
                shown = (page.snapshots, page.protected)
        if shown is None:
            first.painted.set()  # nothing cached to paint: read on at once
        for fut, final in ((first.cached, False), (first.synced, True)):
            try:
                got = fut.result()
            except Exception:
                if final:
                    raise
                continue
            if shown is not None and _same(shown, (got.snapshots, got.protected)):
                if final:
                    self.post_message(FinalListing())
                continue
            if got.snapshots or final:
                self._post_listing(got.snapshots, got.protected, got.total, final=final)
                shown = (got.snapshots, got.protected)

    def _post_listing(
        self,
        snaps: list[Snapshot],
        protected: dict[str, list[str]],
        total: int,
        *,
        final: bool,
        painted: threading.Event | None = None,
    ) -> None:
        complete = len(snaps) >= total
        lay = layout(snaps, self.snap_app.clock.now(), complete=complete)
        self.post_message(
            SnapshotsLoaded(
                snaps,
                protected,
                lay,
                final=final,
                total=total,
                by_id={s.id: s for s in snaps},
                painted=painted,
            )
        )

    @on(SnapshotsLoaded)
    def show_snapshots(self, msg: SnapshotsLoaded) -> None:
        self._all = msg.snapshots
        self._by_id = msg.by_id or {s.id: s for s in msg.snapshots}
        self._protected = msg.protected
        self._layout = msg.layout
        self._total = max(msg.total, len(msg.snapshots))
        self._loaded = True
        if self._query:
            self.refilter()  # in a worker; the list keeps the old matches until then
        else:
            self._shown = msg.layout
            self._show()
        if msg.painted is not None:
            self.call_after_refresh(msg.painted.set)
        if msg.final:
            self._listing_final()

    @on(CheckpointLanded)
    def checkpoint_landed(self, msg: CheckpointLanded) -> None:
        """A watch checkpoint: one row on top (O(days) work), not a relisting; protection
        (the HEAD moved) is read again in a worker."""
        msg.prevent_default()
        msg.stop()
        s = msg.snapshot
        lay = self._layout
        new = None
        if (
            s is not None
            and lay is not None
            and lay.complete
            and not msg.forgotten
            and s.id not in self._by_id
        ):
            new = lay.with_newest(s, self.snap_app.clock.now())
        if new is None or s is None:  # thinned checkpoints, an older one, a first page: relist
            self.reload()
            return
        self._all = [*self._all, s]
        self._by_id[s.id] = s
        self._layout = new
        self._total += 1
        if not self._query:
            self._shown = new
        elif matches(s, self._query) and self._shown is not None:
            self._shown = self._shown.with_newest(s, new.now) or self._shown
        self._show()
        self.load_protection()

    @work(thread=True, exclusive=True, group="timeline-protection", exit_on_error=False)
    def load_protection(self) -> None:
        self.post_message(ProtectionLoaded(self.snap_app.store.protection()))

    @on(ProtectionLoaded)
    def protection_loaded(self, msg: ProtectionLoaded) -> None:
        self._protected = msg.protected
        lst = self.query_one(SnapshotList)
        lst.protected = msg.protected
        lst.refresh_rows()
        s = lst.highlighted
        if s is not None:
            self._show_detail(s)

    def _listing_final(self) -> None:
        self.snap_app.started()
        if not self._all and not self._welcomed:
            from tui.screens.welcome import WelcomeScreen

            self._welcomed = True
            self.app.push_screen(WelcomeScreen(), lambda _r: self.snap_app.start_watching())
        elif self._all:
            self.snap_app.start_watching()

    @on(FinalListing)
    def final_listing(self) -> None:
        self._listing_final()

    def refilter(self) -> None:
        """Show the snapshots that match the filter (matching 10,000 runs in a worker)."""
        self._query = self.query_one("#filter", Input).value.strip()
        if not self._query or self._layout is None:
            self._shown = self._layout
            self._show()
            return
        self.filter_snapshots(self._query, self._all)

    @work(thread=True, exclusive=True, group="timeline-filter", exit_on_error=False)
    def filter_snapshots(self, query: str, snaps: list[Snapshot]) -> None:
        shown = [s for s in snaps if matches(s, query)]
        self.post_message(Filtered(query, layout(shown, self.snap_app.clock.now()), len(shown)))

    @on(Filtered)
    def filtered(self, msg: Filtered) -> None:
        if msg.query == self._query:
            self._shown = msg.layout
            self._show()

    def _show(self) -> None:
        """Put ``_shown`` on screen with the title and sparkline (no O(snapshots) Python work:
        the layout is ready; the sparkline is one ``max`` per cell)."""
        lay = self._shown
        if lay is None:
            return
        lst = self.query_one(SnapshotList)
        lst.show_layout(lay, protected=self._protected)
        query = self._query
        n = sum(1 for r in lay.rows if r is not None) if query else self._total
        total = self._total
        info = f"· timeline · {total:,} snapshot{'s' if total != 1 else ''}"
        if query:
            info += f" · {n:,} match “{query}”"
        self.query_one("#title-info", Label).update(info, layout=False)  # width: 1fr
        line = Text("change volume ", style="bold")
        if not lay.complete:
            line.append("…  (reading the other snapshots)")
        else:
            vols = lay.volumes
            width = max(10, self.size.width - 34)  # room for "change volume" and the dates
            line.append(spark(vols, width) if vols else "—")
            newest, oldest = lay.newest, lay.rows[-1] if lay.rows else None
            if newest is not None and oldest is not None:
                line.append(f"  {local(oldest.time):%-d %b} → {local(newest.time):%-d %b}")
        self.query_one("#spark", Static).update(line, layout=False)
        if lay.newest is None:
            self.query_one("#detail", Static).update(
                "no snapshots match the filter" if query else "no snapshots yet", layout=False
            )

    # ------------------------------------------------------------ selection

    @property
    def selected(self) -> Snapshot | None:
        """The highlighted snapshot."""
        return self.query_one(SnapshotList).highlighted

    @on(LineList.Highlighted, "#snapshots")
    def show_detail(self, event: LineList.Highlighted) -> None:
        if isinstance(event.item, Snapshot):
            self._show_detail(event.item)

    def _show_detail(self, s: Snapshot) -> None:
        now = self.snap_app.clock.now()
        st = s.stats
        # Each field has its own place; the 64-hex id ends the last line, so nothing is drawn
        # after it (where a renderer with wider glyphs than the cell grid would overlap it).
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{local(s.time):%Y-%m-%d %H:%M:%S %Z}", style="bold")
        t.append(f"   {relative_time(s.time, now)}  ·  {s.trigger}")
        reasons = self._protected.get(s.id)
        if reasons:
            t.append(f"  ·  kept: {', '.join(reasons)}")
        t.append(f"\n{s.source}  ·  host {s.host}")
        if s.parent:
            t.append(f"  ·  parent {s.parent[:8]}")
        t.append(
            f"\n{st.files_new} new, {st.files_changed} changed, {st.files_removed} removed, "
            f"{st.total_files} files · {human_size(st.total_bytes)} · added "
            f"{human_size(st.bytes_added)} (stored {human_size(st.bytes_stored)})"
        )
        if s.message.strip():
            t.append(f"\n{s.message.strip().splitlines()[0]}")
        t.append("\nid ")
        t.append(s.id, style="bold")
        # fixed height: no layout pass (a full-screen one each time the cursor moves)
        self.query_one("#detail", Static).update(t, layout=False)

    @on(LineList.Chosen, "#snapshots")
    def chosen(self, event: LineList.Chosen) -> None:
        self.action_browse()

    # ------------------------------------------------------------ actions

    def action_browse(self) -> None:
        s = self.selected
        if s is not None:
            self.snap_app.open_browser(s)

    def action_mark(self) -> None:
        s = self.selected
        if s is None:
            return
        lst = self.query_one(SnapshotList)
        lst.marked = None if lst.marked == s.id else s.id
        lst.refresh_rows()
        if lst.marked:
            self.notify(f"marked {s.short_id}: press d on another snapshot to compare", timeout=3)

    def action_diff(self) -> None:
        s = self.selected
        if s is None:
            return
        lst = self.query_one(SnapshotList)
        if lst.marked and lst.marked != s.id:
            a = self._by_id.get(lst.marked)
            lst.marked = None
            lst.refresh_rows()
            if a is not None:
                old, new = sorted((a, s), key=lambda x: x.time)
                self.snap_app.open_diff(old, new)
                return
        if s.parent is None or s.parent not in self._by_id:
            self.notify(
                f"{s.short_id} has no parent to compare with; mark one with m, or L for live",
                severity="warning",
            )
            return
        self.snap_app.open_diff(self._by_id[s.parent], s)

    def action_diff_live(self) -> None:
        s = self.selected
        if s is not None:
            self.snap_app.open_diff(s, None)

    def action_history(self) -> None:
        s = self.selected
        self.snap_app.open_history(s.source if s else None, s)

    def action_filter(self) -> None:
        inp = self.query_one("#filter", Input)
        inp.display = True
        inp.focus()

    def action_clear_filter(self) -> None:
        inp = self.query_one("#filter", Input)
        if inp.value or inp.display:
            inp.value = ""
            inp.display = False
            self.refilter()
            self.query_one(SnapshotList).focus()
        else:
            lst = self.query_one(SnapshotList)
            if lst.marked:
                lst.marked = None
                lst.refresh_rows()

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        if self._loaded:
            self.refilter()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(SnapshotList).focus()

    # tag --------------------------------------------------------

    def action_tag(self) -> None:
        s = self.selected
        if s is None:
            return

        def done(text: str | None) -> None:
            if text is None:
                return
            add = [w[1:] if w.startswith("+") else w for w in text.split() if not w.startswith("-")]
            remove = [w[1:] for w in text.split() if w.startswith("-") and len(w) > 1]
            if add or remove:
                self.edit_tags(s, add, remove)

        self.app.push_screen(
            InputDialog(
                f"Tags of {s.short_id}",
                placeholder="release +keep -old",
                help=f"now: {' '.join(s.tags) or '(none)'} · words add a tag, -word removes one",
            ),
            done,
        )

    @work(thread=True, group="timeline-edit", exit_on_error=False)
    def edit_tags(self, s: Snapshot, add: list[str], remove: list[str]) -> None:
        new = self.snap_app.store.set_tags(s, add=add, remove=remove)
        self.app.call_from_thread(
            self.notify, f"{new.short_id}: tags {' '.join(new.tags) or '(none)'}", timeout=3
        )
        self.snap_app.store_changed()

    # pin --------------------------------------------------------

    def action_pin(self) -> None:
        s = self.selected
        if s is not None:
            self.toggle_pin(s)

    @work(thread=True, group="timeline-edit", exit_on_error=False)
    def toggle_pin(self, s: Snapshot) -> None:
        new = self.snap_app.store.set_pinned(s, not s.pinned)
        word = "pinned" if new.pinned else "unpinned"
        self.app.call_from_thread(self.notify, f"{new.short_id} {word}", timeout=3)
        self.snap_app.store_changed()

    # forget -----------------------------------------------------

    def action_forget(self) -> None:
        s = self.selected
        if s is None:
            return
        reasons = self._protected.get(s.id, [])
        body = (
            f"{s.short_id} · {local(s.time):%Y-%m-%d %H:%M:%S} · {s.source}\n\n"
            "The snapshot record is removed; its data stays until the next prune."
        )
        if reasons:
            body += f"\n\nIt is protected ({', '.join(reasons)})."

        def done(yes: bool | None) -> None:
            if yes:
                self.forget(s)

        self.app.push_screen(
            ConfirmDialog(f"Forget snapshot {s.short_id}?", body, yes="Forget", danger=True), done
        )

    @work(thread=True, group="timeline-edit", exit_on_error=False)
    def forget(self, s: Snapshot) -> None:
        removed = self.snap_app.store.forget([s.id])
        self.app.call_from_thread(
            self.notify, f"forgot {s.short_id}" if removed else f"{s.short_id} was already gone"
        )
        self.snap_app.store_changed()

    # restore ----------------------------------------------------

    def action_restore(self) -> None:
        s = self.selected
        if s is not None:
            self.plan(s)

    @work(thread=True, exclusive=True, group="timeline-restore", exit_on_error=False)
    def plan(self, s: Snapshot) -> None:
        opts = self.snap_app.snapshot_options()
        self.post_message(
            RestorePlanned(restoring.plan_restore(self.snap_app.store, s, excludes=opts.excludes))
        )

    @on(RestorePlanned)
    def confirm_restore(self, msg: RestorePlanned) -> None:
        plan = msg.plan

        def done(yes: bool | None) -> None:
            if yes:
                self.run_restore(plan)

        self.app.push_screen(
            ConfirmDialog(
                f"Restore {plan.snapshot.short_id} over {plan.target}?",
                plan.summary(),
                yes="Restore",
                danger=True,
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="timeline-restore", exit_on_error=False)
    def run_restore(self, plan: restoring.RestorePlan) -> None:
        app = self.snap_app
        done = restoring.execute(app.store, plan, app.snapshot_options())
        r = done.result
        text = (
            f"restored {plan.snapshot.short_id}: {r.files_restored} files written, "
            f"{r.files_deleted} deleted · u to undo"
        )
        self.post_message(RestoreFinished(done, text))
        app.store_changed()

    # snapshot now -----------------------------------------------

    def action_snapshot_now(self) -> None:
        dirs = self.snap_app.dirs
        if not dirs:
            self.notify("no directory to snapshot (start with snapdeck ui DIR)", severity="warning")
            return
        self.snapshot_now(dirs)

    @work(thread=True, group="snapshot", exit_on_error=False)
    def snapshot_now(self, dirs: list[str]) -> None:
        app = self.snap_app
        try:
            for d in dirs:
                progress = app.progress(f"snapshot of {short_source(d, 40)}")
                with app.gc_pause:
                    res = app.store.create_snapshot(
                        d, options=app.snapshot_options(), progress=progress
                    )
                self.post_message(SnapshotTaken(f"snapshot {res.snapshot.short_id} of {d}"))
                # one new row (the timeline adds it; screens that cannot, reload)
                app.post_message(CheckpointLanded(res.snapshot))
        finally:
            app.done_activity()

    @on(SnapshotTaken)
    def snapshot_taken(self, msg: SnapshotTaken) -> None:
        self.notify(msg.text, timeout=3)
