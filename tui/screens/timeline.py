"""The timeline: every snapshot, newest first, grouped by day; the app's home screen."""

from __future__ import annotations

from dataclasses import dataclass
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
from tui.formatting import human_size, local, relative_time, spark
from tui.screens.base import RestoreFinished, RestoringScreen
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

    CSS_PATH = "timeline.tcss"

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
        clock = self.snap_app.clock
        first = self.snap_app.take_first_listing()
        if first is not None:
            # Paint what the local catalog has at once, then the repository's truth.
            try:
                snaps, protected = first.cached.result()
            except Exception as exc:  # the synced listing below reports real problems
                self.log.warning(f"cached listing failed: {exc!r}")
            else:
                if snaps:
                    lay = layout(snaps, clock.now())
                    self.post_message(SnapshotsLoaded(snaps, protected, lay, final=False))
            snaps, protected = first.synced.result()
        else:
            store = self.snap_app.store
            snaps = store.list_snapshots()
            protected = store.protection()
        self.post_message(SnapshotsLoaded(snaps, protected, layout(snaps, clock.now())))

    @on(SnapshotsLoaded)
    def show_snapshots(self, msg: SnapshotsLoaded) -> None:
        self._all = msg.snapshots
        self._by_id = {s.id: s for s in msg.snapshots}
        self._protected = msg.protected
        self._layout = msg.layout
        self._loaded = True
        self._refilter()
        if not msg.final:
            return
        if not self._all and not self._welcomed:
            from tui.screens.welcome import WelcomeScreen

            self._welcomed = True
            self.app.push_screen(WelcomeScreen(), lambda _r: self.snap_app.start_watching())
        elif self._all:
            self.snap_app.start_watching()

    def _refilter(self) -> None:
        lst = self.query_one(SnapshotList)
        query = self.query_one("#filter", Input).value.strip()
        shown = [s for s in self._all if matches(s, query)] if query else self._all
        lay = self._layout
        if query or lay is None:
            lay = layout(shown, self.snap_app.clock.now())
        lst.show_layout(lay, protected=self._protected)
        n, total = len(shown), len(self._all)
        info = f"· timeline · {total} snapshot{'s' if total != 1 else ''}"
        if query:
            info += f" · {n} match “{query}”"
        self.query_one("#title-info", Label).update(info)
        vols = lay.volumes
        width = max(10, self.size.width - 30)
        line = Text("change volume ", style="bold")
        line.append(spark(vols, width) if vols else "—")
        if shown:
            line.append(f"  {local(shown[0].time):%-d %b} → {local(shown[-1].time):%-d %b}")
        self.query_one("#spark", Static).update(line)
        if not shown:
            self.query_one("#detail", Static).update(
                "no snapshots match the filter" if query else "no snapshots yet"
            )

    # ------------------------------------------------------------ selection

    @property
    def selected(self) -> Snapshot | None:
        """The highlighted snapshot."""
        return self.query_one(SnapshotList).highlighted

    @on(LineList.Highlighted, "#snapshots")
    def show_detail(self, event: LineList.Highlighted) -> None:
        s = event.item
        if not isinstance(s, Snapshot):
            return
        now = self.snap_app.clock.now()
        st = s.stats
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{s.id}", style="bold")
        t.append(f"  {local(s.time):%Y-%m-%d %H:%M:%S %Z} ({relative_time(s.time, now)})\n")
        t.append(f"{s.source}  ·  {s.trigger}  ·  host {s.host}")
        if s.parent:
            t.append(f"  ·  parent {s.parent[:8]}")
        reasons = self._protected.get(s.id)
        if reasons:
            t.append(f"  ·  kept: {', '.join(reasons)}")
        t.append(
            f"\n{st.files_new} new, {st.files_changed} changed, {st.files_removed} removed, "
            f"{st.total_files} files · {human_size(st.total_bytes)} · added "
            f"{human_size(st.bytes_added)} (stored {human_size(st.bytes_stored)})"
        )
        if s.message:
            t.append(f"\n{s.message.splitlines()[0]}")
        self.query_one("#detail", Static).update(t)

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
            self._refilter()
            self.query_one(SnapshotList).focus()
        else:
            lst = self.query_one(SnapshotList)
            if lst.marked:
                lst.marked = None
                lst.refresh_rows()

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        if self._loaded:
            self._refilter()

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
        for d in dirs:
            res = app.store.create_snapshot(d, options=app.snapshot_options())
            self.app.call_from_thread(
                self.notify, f"snapshot {res.snapshot.short_id} of {d}", timeout=3
            )
        app.store_changed()
