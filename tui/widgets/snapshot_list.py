"""The timeline list: snapshots newest first, grouped under day headers, virtualised."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import ClassVar

from rich.style import Style
from rich.text import Text

from backend.model import Snapshot
from tui.formatting import day_label, hbar, human_size, local, relative_time, short_source
from tui.widgets.linelist import LineList


@dataclass(frozen=True, slots=True)
class DayHeader:
    """A day's header row (not selectable; kept beside the rows for rendering)."""

    label: str
    count: int
    added: int
    partial: bool = False
    """Only some of the day's snapshots are known yet (a first page): counts are lower bounds."""


def changed_files(s: Snapshot) -> int:
    """How many files a snapshot added, changed or removed."""
    st = s.stats
    return st.files_new + st.files_changed + st.files_removed


def volume(s: Snapshot) -> float:
    """A snapshot's change volume: bytes added plus a little for every file touched."""
    return float(s.stats.bytes_added + 256 * changed_files(s))


_ORDER = attrgetter("time", "id")


@dataclass(frozen=True, slots=True)
class Layout:
    """Snapshots as timeline rows: newest first under day headers (``None`` rows)."""

    rows: list[Snapshot | None]
    headers: dict[int, DayHeader]
    max_volume: float
    show_source: bool
    now: datetime
    volumes: list[float]
    """Each snapshot's change volume, oldest first (the sparkline)."""
    complete: bool = True
    """False for a first page (only the newest snapshots; the rest are still being read)."""

    @property
    def newest(self) -> Snapshot | None:
        """The first snapshot row (None when there are none)."""
        return self.rows[1] if len(self.rows) > 1 else None

    def with_newest(self, s: Snapshot, now: datetime) -> Layout | None:
        """These rows with ``s`` added on top, in O(days) Python work (a new checkpoint must not
        re-sort and re-group 10,000 snapshots); None when ``s`` is not newer than every row."""
        top = self.newest
        if top is not None and _ORDER(s) <= _ORDER(top):
            return None
        day = local(s.time).date()
        added = s.stats.bytes_added
        if top is not None and local(top.time).date() == day:
            h = self.headers[0]
            rows = [None, s, *self.rows[1:]]
            headers = {0: DayHeader(h.label, h.count + 1, h.added + added, h.partial)}
            shift = 1
        else:
            rows = [None, s, *self.rows]
            headers = {0: DayHeader("", 1, added)}
            shift = 2
        for i, h in self.headers.items():
            if i + shift > 1:
                headers[i + shift] = h
        # labels say Today / Yesterday: relabel every header against the new now (few: days)
        for i, h in headers.items():
            first = rows[i + 1]
            assert first is not None
            headers[i] = DayHeader(day_label(first.time, now), h.count, h.added, h.partial)
        v = volume(s)
        return Layout(
            rows=rows,
            headers=headers,
            max_volume=max(self.max_volume, v) or 1,
            show_source=self.show_source or (top is not None and top.source != s.source),
            now=now,
            volumes=[*self.volumes, v],
            complete=self.complete,
        )


def layout(snapshots: list[Snapshot], now: datetime, *, complete: bool = True) -> Layout:
    """Sort and group snapshots for the list (pure: safe in a worker thread).

    ``complete=False``: ``snapshots`` are only the newest ones (a first page); the oldest day's
    header then says its counts are lower bounds."""
    ordered = sorted(snapshots, key=_ORDER, reverse=True)
    rows: list[Snapshot | None] = []
    headers: dict[int, DayHeader] = {}
    day = None
    start = 0
    count = added = 0
    for s in ordered:
        d = local(s.time).date()
        if d != day:
            if day is not None:
                headers[start] = DayHeader(headers[start].label, count, added)
            day = d
            start = len(rows)
            headers[start] = DayHeader(day_label(s.time, now), 0, 0)
            rows.append(None)
            count = added = 0
        rows.append(s)
        count += 1
        added += s.stats.bytes_added
    if day is not None:
        headers[start] = DayHeader(headers[start].label, count, added, partial=not complete)
    volumes = [volume(s) for s in reversed(ordered)]
    return Layout(
        rows=rows,
        headers=headers,
        max_volume=max(volumes, default=1) or 1,
        show_source=len({s.source for s in ordered}) > 1,
        now=now,
        volumes=volumes,
        complete=complete,
    )


class SnapshotList(LineList[Snapshot]):
    """Snapshots grouped by day; ``marked`` ids get a marker, ``protected`` show why."""

    COMPONENT_CLASSES: ClassVar[set[str]] = LineList.COMPONENT_CLASSES | {
        "snapshot-list--day",
        "snapshot-list--muted",
        "snapshot-list--mark",
        "snapshot-list--tag",
        "snapshot-list--pin",
        "snapshot-list--head",
        "snapshot-list--bar",
        "snapshot-list--manual",
        "snapshot-list--watch",
        "snapshot-list--guard",
    }

    DEFAULT_CSS = """
    SnapshotList > .snapshot-list--day { color: $accent; text-style: bold; }
    SnapshotList > .snapshot-list--muted { color: $text-muted; }
    SnapshotList > .snapshot-list--mark { color: $timeline-marker; text-style: bold; }
    SnapshotList > .snapshot-list--tag { color: $secondary; }
    SnapshotList > .snapshot-list--pin { color: $checkpoint-pin; text-style: bold; }
    SnapshotList > .snapshot-list--head { color: $success; text-style: bold; }
    SnapshotList > .snapshot-list--bar { color: $primary; }
    SnapshotList > .snapshot-list--manual { color: $primary; }
    SnapshotList > .snapshot-list--watch { color: $text-muted; }
    SnapshotList > .snapshot-list--guard { color: $warning; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.now: datetime | None = None
        self.marked: str | None = None
        self.protected: dict[str, list[str]] = {}
        self.show_source = True
        self._headers: dict[int, DayHeader] = {}
        self._max_volume = 1.0

    def item_key(self, item: Snapshot) -> object:
        return item.id

    def show(
        self,
        snapshots: list[Snapshot],
        *,
        now: datetime,
        protected: dict[str, list[str]],
        keep: Snapshot | None = None,
    ) -> None:
        """Show snapshots (any order in; newest first out), grouped by local day."""
        self.show_layout(layout(snapshots, now), protected=protected, keep=keep)

    def show_layout(
        self, lay: Layout, *, protected: dict[str, list[str]], keep: Snapshot | None = None
    ) -> None:
        """Show rows laid out by ``layout`` (which may run in a worker: 10,000 snapshots take
        tens of milliseconds to sort and group, too long for the event loop)."""
        self.now = lay.now
        self.protected = protected
        self._headers = lay.headers
        self._max_volume = lay.max_volume
        self.show_source = lay.show_source
        self.set_rows(lay.rows, keep=keep)

    def _style(self, name: str) -> Style:
        return self.component_style(f"snapshot-list--{name}")

    def render_row(self, index: int, item: Snapshot | None, width: int) -> Text:
        if item is None:
            h = self._headers.get(index)
            if h is None:
                return Text("")
            head = f" ─ {h.label} "
            more = "+" if h.partial else ""
            tail = (
                f" {h.count}{more} snapshot{'s' if h.count != 1 or more else ''} · "
                f"{human_size(h.added)}{more} added "
            )
            fill = max(1, width - len(head) - len(tail))
            t = Text(head, style=self._style("day"))
            t.append("─" * fill, style=self._style("muted"))
            t.append(tail, style=self._style("muted"))
            return t
        s = item
        now = self.now or s.time
        t = Text(no_wrap=True)
        if self.marked == s.id:
            t.append(" ▶ ", style=self._style("mark"))
        else:
            t.append("   ")
        t.append(f"{local(s.time):%H:%M:%S} ", style="bold")
        t.append(f"{relative_time(s.time, now):>11} ", style=self._style("muted"))
        t.append(f"{s.short_id} ", style=self._style("muted"))
        trig = {"manual": "manual", "watch": "watch", "restore-guard": "guard"}.get(
            s.trigger, s.trigger[:6]
        )
        style = {"manual": "manual", "watch": "watch", "restore-guard": "guard"}.get(
            s.trigger, "muted"
        )
        t.append(f"{trig:<6} ", style=self._style(style))
        st = s.stats
        t.append(f"+{st.files_new:<4}", style="")
        t.append(f"~{st.files_changed:<4}")
        t.append(f"-{st.files_removed:<4} ")
        t.append(f"{human_size(st.bytes_added):>10} ")
        t.append(hbar(volume(s), self._max_volume, 8), style=self._style("bar"))
        t.append(" ")
        if self.show_source:
            t.append(f"{short_source(s.source, 22):<22} ", style=self._style("muted"))
        for reason in self.protected.get(s.id, []):
            if reason == "HEAD":
                t.append("HEAD ", style=self._style("head"))
            elif reason == "pinned":
                t.append("pinned ", style=self._style("pin"))
            elif reason.startswith("ref "):
                t.append(f"({reason[4:]}) ", style=self._style("head"))
        for tag in s.tags:
            t.append(f"#{tag} ", style=self._style("tag"))
        if s.message:
            t.append(
                s.message.splitlines()[0] if s.message.strip() else "", style=self._style("muted")
            )
        return t
