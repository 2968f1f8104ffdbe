"""The checkpoint graph: a small lane layout (like ``git log --graph``) and its list widget.

Snapshots have one parent each, so the graph is a forest: a restore moves HEAD back and the
next checkpoint starts a branch. Rows go newest first; every row is one snapshot, optionally
followed by a connector row where a branch joins its parent's lane.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.style import Style
from rich.text import Text

from backend.model import Snapshot
from tui.formatting import human_size, local, relative_time
from tui.widgets.linelist import LineList


@dataclass(frozen=True, slots=True)
class GraphRow:
    """One line of the graph: a node (``snapshot`` set) or a connector."""

    cells: str
    """The lane drawing, two characters per lane."""
    lane: int
    snapshot: Snapshot | None = None


def layout(snapshots: list[Snapshot]) -> list[GraphRow]:
    """Lay out snapshots (any order) as graph rows, newest first.

    Each lane waits for one snapshot id (the parent of the lane's last node). A node goes in
    the leftmost lane waiting for it (or a new lane); other lanes waiting for the same id merge
    into it on a connector row drawn after the node.
    """
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    ids = {s.id for s in ordered}
    lanes: list[str | None] = []
    rows: list[GraphRow] = []
    for s in ordered:
        waiting = [i for i, w in enumerate(lanes) if w == s.id]
        if waiting:
            lane = waiting[0]
        else:
            lane = lanes.index(None) if None in lanes else len(lanes)
            if lane == len(lanes):
                lanes.append(None)
        cells = []
        for i, w in enumerate(lanes):
            if i == lane:
                cells.append("● ")
            elif (w is not None and i not in waiting) or i in waiting:
                cells.append("│ ")
            else:
                cells.append("  ")
        rows.append(GraphRow("".join(cells).rstrip(), lane, s))
        merged = waiting[1:]
        for i in merged:
            lanes[i] = None
        lanes[lane] = s.parent if s.parent in ids else None
        if merged:
            cells = []
            right = max(merged)
            for i in range(len(lanes)):
                if i == lane:
                    cells.append("├─" if i < right else "│ ")
                elif i in merged:
                    cells.append("┘ " if i == right else "┴─")
                elif lane < i < right:
                    cells.append("┼─" if lanes[i] is not None else "──")
                elif lanes[i] is not None:
                    cells.append("│ ")
                else:
                    cells.append("  ")
            rows.append(GraphRow("".join(cells).rstrip(), lane))
        while lanes and lanes[-1] is None:
            lanes.pop()
    return rows


class GraphList(LineList[GraphRow]):
    """The graph rows with ids, times, triggers and decorations (HEAD, refs, tags, pins)."""

    COMPONENT_CLASSES: ClassVar[set[str]] = LineList.COMPONENT_CLASSES | {
        "graph-list--lane-1",
        "graph-list--lane-2",
        "graph-list--lane-3",
        "graph-list--lane-4",
        "graph-list--muted",
        "graph-list--head",
        "graph-list--ref",
        "graph-list--tag",
        "graph-list--pin",
        "graph-list--guard",
        "graph-list--mark",
    }
    DEFAULT_CSS = """
    GraphList > .graph-list--lane-1 { color: $graph-lane-1; }
    GraphList > .graph-list--lane-2 { color: $graph-lane-2; }
    GraphList > .graph-list--lane-3 { color: $graph-lane-3; }
    GraphList > .graph-list--lane-4 { color: $graph-lane-4; }
    GraphList > .graph-list--muted { color: $text-muted; }
    GraphList > .graph-list--head { color: $success; text-style: bold reverse; }
    GraphList > .graph-list--ref { color: $accent; text-style: bold; }
    GraphList > .graph-list--tag { color: $secondary; }
    GraphList > .graph-list--pin { color: $checkpoint-pin; text-style: bold; }
    GraphList > .graph-list--guard { color: $warning; }
    GraphList > .graph-list--mark { color: $timeline-marker; text-style: bold; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.now: datetime | None = None
        self.head: str | None = None
        self.refs: dict[str, list[str]] = {}
        self.marked: str | None = None
        self.graph_width = 2

    def item_key(self, item: GraphRow) -> object:
        return item.snapshot.id if item.snapshot else id(item)

    def show(
        self,
        snapshots: list[Snapshot],
        *,
        now: datetime,
        head: str | None,
        refs: dict[str, list[str]],
        select: Snapshot | None = None,
    ) -> None:
        """Lay out and show the snapshots of one source."""
        self.show_rows(layout(snapshots), now=now, head=head, refs=refs, select=select)

    def show_rows(
        self,
        rows: list[GraphRow],
        *,
        now: datetime,
        head: str | None,
        refs: dict[str, list[str]],
        select: Snapshot | None = None,
    ) -> None:
        """Show rows from ``layout`` (which may run in a worker)."""
        self.now, self.head, self.refs = now, head, refs
        self.graph_width = max((len(r.cells) for r in rows), default=2) + 1
        items: list[GraphRow | None] = [r if r.snapshot is not None else None for r in rows]
        self._connectors = {i: r for i, r in enumerate(rows) if r.snapshot is None}
        keep = next((r for r in rows if select and r.snapshot and r.snapshot.id == select.id), None)
        self.set_rows(items, keep=keep)

    def _st(self, name: str) -> Style:
        return self.component_style(f"graph-list--{name}")

    def _graph(self, cells: str) -> Text:
        t = Text()
        for i in range(0, len(cells), 2):
            lane_style = self._st(f"lane-{(i // 2) % 4 + 1}")
            t.append(cells[i : i + 2], style=lane_style)
        return t

    def render_row(self, index: int, item: GraphRow | None, width: int) -> Text:
        if item is None:
            row = self._connectors.get(index)
            if row is None:
                return Text("")
            t = Text("   ")  # the mark column of node rows
            t.append_text(self._graph(row.cells))
            return t
        s = item.snapshot
        assert s is not None
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" ▶ " if self.marked == s.id else "   ", style=self._st("mark"))
        g = self._graph(item.cells)
        g.pad_right(self.graph_width - len(item.cells))
        t.append_text(g)
        t.append(f"{s.short_id} ", style=self._st("muted"))
        if s.id == self.head:
            t.append(" HEAD ", style=self._st("head"))
            t.append(" ")
        for name in self.refs.get(s.id, []):
            t.append(f"({name}) ", style=self._st("ref"))
        if s.pinned:
            t.append("pinned ", style=self._st("pin"))
        for tag in s.tags:
            t.append(f"#{tag} ", style=self._st("tag"))
        trig_style = "guard" if s.trigger == "restore-guard" else "muted"
        t.append(f"{s.trigger} ", style=self._st(trig_style))
        now = self.now or s.time
        t.append(f"{local(s.time):%a %-d %b %H:%M} ({relative_time(s.time, now)}) ")
        st = s.stats
        t.append(
            f"+{st.files_new} ~{st.files_changed} -{st.files_removed} "
            f"{human_size(st.bytes_added)} ",
            style=self._st("muted"),
        )
        if s.message:
            t.append(s.message.splitlines()[0] if s.message.strip() else "")
        return t
