"""The eviction screen's plan list: every snapshot, newest first, with its fate and why.

One row per snapshot: ``keep`` or ``drop``, time, id, trigger, a bar of its exclusive size
(stored bytes only it references) and the reasons (the retention rules that keep it, its
protection, or why retention or eviction removes it). Built on ``LineList`` (virtualised).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from backend.model import Snapshot
from tui.formatting import hbar, human_size
from tui.widgets.linelist import LineList

BAR = 10
"""Cells of the exclusive-size bar."""


@dataclass(frozen=True, slots=True)
class Fate:
    """What the plan does with one snapshot."""

    snapshot: Snapshot
    keep: bool
    removed_by: str
    """``retention`` or ``eviction`` for a removed snapshot, "" for a kept one."""
    reasons: tuple[str, ...]
    exclusive: int | None
    """Stored bytes only this snapshot references (None: not known yet)."""


class EvictPlanList(LineList[Fate]):
    """Snapshots with keep/drop, exclusive-size bars and reasons."""

    COMPONENT_CLASSES = LineList.COMPONENT_CLASSES | {
        "evict-plan--keep",
        "evict-plan--drop",
        "evict-plan--muted",
        "evict-plan--bar",
        "evict-plan--bar-drop",
        "evict-plan--protected",
    }

    DEFAULT_CSS = """
    EvictPlanList > .evict-plan--keep { color: $text-success; text-style: bold; }
    EvictPlanList > .evict-plan--drop { color: $text-error; text-style: bold; }
    EvictPlanList > .evict-plan--muted { color: $text-muted; }
    EvictPlanList > .evict-plan--bar { color: $primary; }
    EvictPlanList > .evict-plan--bar-drop { color: $error; }
    EvictPlanList > .evict-plan--protected { color: $text-accent; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.max_exclusive = 0

    def item_key(self, item: Fate) -> object:
        return item.snapshot.id

    def show(self, fates: list[Fate]) -> None:
        """Replace the rows (keeping the cursor on the same snapshot)."""
        self.max_exclusive = max((f.exclusive or 0 for f in fates), default=0)
        self.set_rows(list(fates))

    def render_row(self, index: int, item: Fate | None, width: int) -> Text:
        if item is None:
            return Text("")
        s = item.snapshot

        def st(name: str):
            return self.component_style(f"evict-plan--{name}")

        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" keep " if item.keep else " drop ", st("keep" if item.keep else "drop"))
        t.append(f" {s.time.astimezone():%Y-%m-%d %H:%M} ")
        t.append(f"{s.short_id} ", st("muted"))
        trigger = "guard" if s.trigger == "restore-guard" else s.trigger[:6]
        t.append(f"{trigger:<6} ", st("muted"))
        if item.exclusive is None:
            t.append(" " * (BAR + 11), st("muted"))
        else:
            t.append(
                hbar(item.exclusive, self.max_exclusive, BAR),
                st("bar" if item.keep else "bar-drop"),
            )
            # a cell between the bar and its size, even for a full bar and a 9-cell size
            t.append(f" {human_size(item.exclusive):>9} ", st("muted"))
        t.append(" ")
        for i, reason in enumerate(item.reasons):
            if i:
                t.append(", ", st("muted"))
            protected = reason in ("HEAD", "pinned") or reason.startswith(("ref ", "newest"))
            t.append(reason, st("protected") if protected else None)
        return t
