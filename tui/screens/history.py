"""The checkpoint history of one source as a graph (parents, branches after restores, HEAD,
refs, tags, pins); browse or diff from any node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Label, Static, Tab, Tabs

from backend.model import Snapshot
from tui.formatting import human_size, local, relative_time, short_source
from tui.screens.base import BackendScreen
from tui.widgets.graph import GraphList, GraphRow
from tui.widgets.graph import layout as graph_layout
from tui.widgets.linelist import LineList
from tui.widgets.status_bar import StatusBar


@dataclass
class HistoryLoaded(Message):
    """Snapshots by source, HEADs and refs."""

    snapshots: list[Snapshot]
    heads: dict[str, str]
    """source → HEAD snapshot id."""
    refs: dict[str, list[str]]
    """snapshot id → ref names."""
    source: str | None = None
    """The source the rows are for."""
    rows: list[GraphRow] | None = None
    """Its graph, laid out in the worker (10,000 checkpoints take ~20 ms: not in a handler)."""
    children: dict[str, list[str]] | None = None
    """snapshot id → its children's short ids."""


@dataclass
class GraphReady(Message):
    """The graph of another source (a tab switch), laid out in a worker."""

    source: str
    rows: list[GraphRow]


class HistoryScreen(BackendScreen):
    """The graph of one source at a time; tabs switch sources."""

    DEFAULT_CSS = """
    HistoryScreen Tabs { dock: top; margin-top: 1; }
    HistoryScreen #graph { height: 1fr; }
    HistoryScreen #graph-detail {
        height: 4; padding: 0 1; background: $panel; border-top: hkey $primary 40%;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,b", "browse", "Browse", id="history_browse"),
        Binding("d", "diff", "Diff", id="history_diff"),
        Binding("m", "mark", "Mark", id="history_mark"),
        Binding("L", "diff_live", "Diff live", id="history_diff_live", show=False),
        Binding("left,[", "prev_source", "Prev source", id="history_prev", show=False),
        Binding("right,]", "next_source", "Next source", id="history_next", show=False),
    ]

    def __init__(self, *, source: str | None = None, select: Snapshot | None = None) -> None:
        super().__init__()
        self.source = source
        self.select = select
        self._all: list[Snapshot] = []
        self._sources: list[str] = []
        self._heads: dict[str, str] = {}
        self._refs: dict[str, list[str]] = {}
        self._by_id: dict[str, Snapshot] = {}
        self._children: dict[str, list[str]] = {}
        self._pending_tab: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(classes="title-bar"):
            yield Label("snapdeck", classes="title-text")
            yield Label("· checkpoint history", id="history-title")
        yield Tabs(id="sources")
        yield GraphList(id="graph")
        yield Static("", id="graph-detail")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(GraphList).focus()
        self.reload()

    def reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="history-load", exit_on_error=False)
    def load(self) -> None:
        store = self.snap_app.store
        snaps = store.list_snapshots()
        heads: dict[str, str] = {}
        for h in store.heads():
            heads.setdefault(h.source, h.snapshot)
        refs: dict[str, list[str]] = {}
        for name, sid in sorted(store.refs().items()):
            refs.setdefault(sid, []).append(name)
        sources = sorted({s.source for s in snaps})
        src = self.source if self.source in sources else (sources[0] if sources else None)
        children: dict[str, list[str]] = {}
        for x in snaps:
            if x.parent:
                children.setdefault(x.parent, []).append(x.short_id)
        rows = graph_layout([x for x in snaps if x.source == src])
        self.post_message(HistoryLoaded(snaps, heads, refs, src, rows, children))

    @work(thread=True, exclusive=True, group="history-layout", exit_on_error=False)
    def layout_source(self, source: str, snaps: list[Snapshot]) -> None:
        self.post_message(
            GraphReady(source, graph_layout([x for x in snaps if x.source == source]))
        )

    @on(GraphReady)
    def graph_ready(self, msg: GraphReady) -> None:
        if msg.source == self.source:
            self._show(msg.rows)

    @on(HistoryLoaded)
    async def loaded(self, msg: HistoryLoaded) -> None:
        self._all = msg.snapshots
        self._by_id = {s.id: s for s in msg.snapshots}
        self._children = msg.children or {}
        self._heads, self._refs = msg.heads, msg.refs
        sources = sorted({s.source for s in msg.snapshots})
        if sources != self._sources:
            self._sources = sources
            tabs = self.query_one(Tabs)
            await tabs.clear()
            for i, src in enumerate(sources):
                await tabs.add_tab(Tab(short_source(src, 30), id=f"src-{i}"))
        if self.source not in sources:
            self.source = sources[0] if sources else None
        if self.source is not None:
            self._pending_tab = f"src-{sources.index(self.source)}"
            self.query_one(Tabs).active = self._pending_tab
        self._show(msg.rows if msg.source == self.source else None)

    def _show(self, rows: list[GraphRow] | None = None) -> None:
        """Show the graph of ``self.source`` (``rows``: laid out already; else a worker lays
        it out and this runs again)."""
        src = self.source
        if rows is None:
            if src is not None:
                self.layout_source(src, self._all)
                return
            rows = []
        graph = self.query_one(GraphList)
        keep = self.select or (graph.highlighted and graph.highlighted.snapshot)
        graph.show_rows(
            rows,
            now=self.snap_app.clock.now(),
            head=self._heads.get(src or ""),
            refs=self._refs,
            select=keep if isinstance(keep, Snapshot) else None,
        )
        self.select = None
        n = sum(1 for r in rows if r.snapshot is not None)
        self.query_one("#history-title", Label).update(
            f"· checkpoint history · {src or '(no snapshots)'} · {n} checkpoint{'s' if n != 1 else ''}"
        )

    @on(Tabs.TabActivated)
    def tab(self, event: Tabs.TabActivated) -> None:
        if event.tab is None or event.tab.id is None:
            return
        if self._pending_tab is not None:
            # tabs activated while being rebuilt, until the one we asked for
            if event.tab.id == self._pending_tab:
                self._pending_tab = None
            return
        i = int(event.tab.id.removeprefix("src-"))
        if 0 <= i < len(self._sources) and self._sources[i] != self.source:
            self.source = self._sources[i]
            self._show()
        self.query_one(GraphList).focus()

    def action_prev_source(self) -> None:
        self.query_one(Tabs).action_previous_tab()

    def action_next_source(self) -> None:
        self.query_one(Tabs).action_next_tab()

    @property
    def selected(self) -> Snapshot | None:
        """The snapshot under the cursor."""
        row = self.query_one(GraphList).highlighted
        return row.snapshot if row is not None else None

    @on(LineList.Highlighted, "#graph")
    def detail(self, event: LineList.Highlighted) -> None:
        row = event.item
        if not isinstance(row, GraphRow) or row.snapshot is None:
            return
        s = row.snapshot
        st = s.stats
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(s.id, style="bold")
        t.append(
            f"  {local(s.time):%Y-%m-%d %H:%M:%S} ({relative_time(s.time, self.snap_app.clock.now())})"
            f"  {s.trigger}\n"
        )
        t.append(f"parent {s.parent[:8] if s.parent else '(none: a root)'}")
        children = self._children.get(s.id, [])
        if len(children) > 1:
            t.append(f" · branches here: {', '.join(children)}")
        t.append(
            f"\n{st.total_files} files · {human_size(st.total_bytes)} · "
            f"+{st.files_new} ~{st.files_changed} -{st.files_removed} · added {human_size(st.bytes_added)}"
        )
        self.query_one("#graph-detail", Static).update(t)

    @on(LineList.Chosen, "#graph")
    def chosen(self) -> None:
        self.action_browse()

    def action_browse(self) -> None:
        s = self.selected
        if s is not None:
            self.snap_app.open_browser(s)

    def action_mark(self) -> None:
        s = self.selected
        if s is None:
            return
        g = self.query_one(GraphList)
        g.marked = None if g.marked == s.id else s.id
        g.refresh_rows()

    def action_diff(self) -> None:
        s = self.selected
        if s is None:
            return
        g = self.query_one(GraphList)
        if g.marked and g.marked != s.id and g.marked in self._by_id:
            a = self._by_id[g.marked]
            g.marked = None
            g.refresh_rows()
            old, new = sorted((a, s), key=lambda x: x.time)
            self.snap_app.open_diff(old, new)
            return
        parent = self._by_id.get(s.parent or "")
        if parent is None:
            self.notify(f"{s.short_id} is a root: nothing to compare with", severity="warning")
            return
        self.snap_app.open_diff(parent, s)

    def action_diff_live(self) -> None:
        s = self.selected
        if s is not None:
            self.snap_app.open_diff(s, None)
