"""A calendar of kept and removed snapshots: month grids, one cell per day.

A day with snapshots is coloured by what the plan does with them: all kept, all removed, or
some of each; days without snapshots are dim. The newest months come first, as many as fit
the widget's height. Colours are component classes (theme variables only).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import date
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from tui.widgets.linelist import solid_style

MONTH_ROWS = 9
"""Rows one month takes: title, weekday header, up to six weeks, a blank line."""


def day_counts(entries: Iterable[tuple[date, bool]]) -> dict[date, tuple[int, int]]:
    """Day → (kept, removed) snapshot counts from (local date, kept) pairs."""
    days: dict[date, tuple[int, int]] = {}
    for d, kept in entries:
        k, r = days.get(d, (0, 0))
        days[d] = (k + 1, r) if kept else (k, r + 1)
    return days


class EvictCalendar(Widget):
    """Month grids of days coloured kept / removed / mixed."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "evict-calendar--title",
        "evict-calendar--weekday",
        "evict-calendar--none",
        "evict-calendar--kept",
        "evict-calendar--removed",
        "evict-calendar--mixed",
        "evict-calendar--legend",
    }

    DEFAULT_CSS = """
    EvictCalendar {
        width: 24;
        height: 1fr;
        padding: 0 1;
        background: $surface;
    }
    EvictCalendar > .evict-calendar--title { color: $text; text-style: bold; }
    EvictCalendar > .evict-calendar--weekday { color: $text-muted; }
    EvictCalendar > .evict-calendar--none { color: $text-disabled; }
    EvictCalendar > .evict-calendar--kept { color: $text; background: $success 55%; }
    EvictCalendar > .evict-calendar--removed { color: $text; background: $error 55%; }
    EvictCalendar > .evict-calendar--mixed { color: $text; background: $warning 55%; }
    EvictCalendar > .evict-calendar--legend { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.days: dict[date, tuple[int, int]] = {}
        """Day → (kept, removed) snapshot counts."""
        self._styles: dict[str, Style] = {}

    def show(self, entries: Iterable[tuple[date, bool]]) -> None:
        """Set the days from (local date, kept) pairs, one per snapshot."""
        self.show_days(day_counts(entries))

    def show_days(self, days: dict[date, tuple[int, int]]) -> None:
        """Set the days from ``day_counts`` (which may run in a worker)."""
        self.days = days
        self.refresh()

    def state(self, day: date) -> str:
        """``kept``, ``removed``, ``mixed`` or ``none`` for one day."""
        k, r = self.days.get(day, (0, 0))
        if k and r:
            return "mixed"
        if k:
            return "kept"
        if r:
            return "removed"
        return "none"

    def months(self, count: int) -> list[tuple[int, int]]:
        """The ``count`` newest (year, month) pairs that have snapshots, newest first."""
        if not self.days:
            return []
        last = max(self.days)
        first = min(self.days)
        out: list[tuple[int, int]] = []
        y, m = last.year, last.month
        while len(out) < count and (y, m) >= (first.year, first.month):
            out.append((y, m))
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        return out

    def _style(self, name: str) -> Style:
        # solid colours: "auto" ones ($text, $text-muted) vanish on a light theme otherwise
        st = self._styles.get(name)
        if st is None:
            st = self._styles[name] = solid_style(self, f"evict-calendar--{name}")
        return st

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="crop")
        if not self.days:
            out.append("No snapshots.", self._style("legend"))
            return out
        fit = max(1, (self.size.height - 2) // MONTH_ROWS)
        cal = calendar.Calendar(firstweekday=0)
        for n, (y, m) in enumerate(self.months(fit)):
            if n:
                out.append("\n")
            out.append(f"{calendar.month_name[m]} {y}".center(20), self._style("title"))
            out.append("\nMo Tu We Th Fr Sa Su", self._style("weekday"))
            weeks = cal.monthdatescalendar(y, m)
            for week in weeks:
                out.append("\n")
                for i, day in enumerate(week):
                    if i:
                        out.append(" ")
                    if day.month != m:
                        out.append("  ")
                        continue
                    out.append(f"{day.day:>2}", self._style(self.state(day)))
            out.append("\n" * (7 - len(weeks)))
        out.append("\n")
        out.append("kept", self._style("kept"))
        out.append(" ")
        out.append("removed", self._style("removed"))
        out.append(" ")
        out.append("both", self._style("mixed"))
        return out
