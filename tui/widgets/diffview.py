"""The diff view: one file's changes side by side or unified, rendered line by line.

A Line API widget (``ScrollView``): it keeps the two line lists, the aligned blocks and a
``DiffLayout`` (segments, not rows), and renders only the rows on screen, so a 20,000-line file
costs no more to show than a 20-line one. Word emphasis and syntax spans are computed for the
rows drawn and cached. Every colour comes from a component class in ``DEFAULT_CSS`` (theme
variables only), so a theme switch restyles it.

Keys: up/down (j/k) move the row cursor, page up/down, home/end (g/G), left/right (h/l) scroll
sideways, enter (o) opens the fold under the cursor; the screen adds n/N, u and e.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from backend.textdiff import Block, DiffLayout, Row, RowKind, diff_blocks, intraline
from tui.widgets.diff_highlight import SYNTAX_CLASSES, LineSpans
from tui.widgets.linelist import solid_style

TAB = 4
_CONTROL = {c: 0x2400 + c for c in range(32) if c != 9}
_CONTROL[127] = 0x2421


@dataclass(frozen=True, slots=True)
class DiffText:
    """A text file pair ready to show."""

    path: str
    a: Sequence[str]
    b: Sequence[str]
    blocks: Sequence[Block]
    layout: DiffLayout | None = None
    """A layout built off the event loop (used when its mode is the view's)."""
    maxlen: int = -1
    """The longest line's length (-1: not known; the view measures)."""

    @classmethod
    def build(cls, path: str, a: Sequence[str], b: Sequence[str], mode: str) -> DiffText:
        """Align, lay out and measure a pair (slow for big files: call it from a worker)."""
        blocks = diff_blocks(a, b)
        maxlen = max(max(map(len, a), default=0), max(map(len, b), default=0))
        return cls(path, a, b, blocks, DiffLayout(blocks, mode=mode), maxlen)


class DiffView(ScrollView, can_focus=True):
    """One file's diff, split (side by side) or unified, with folds and a row cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown,space", "page(1)", "Page down", show=False),
        Binding("home,g", "edge(-1)", "Top", show=False),
        Binding("end,G", "edge(1)", "Bottom", show=False),
        Binding("left,h", "sideways(-1)", "Left", show=False),
        Binding("right,l", "sideways(1)", "Right", show=False),
        Binding("enter,o", "expand_here", "Expand fold", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "diffview--added",
        "diffview--removed",
        "diffview--added-word",
        "diffview--removed-word",
        "diffview--empty",
        "diffview--gutter",
        "diffview--gutter-added",
        "diffview--gutter-removed",
        "diffview--cursor",
        "diffview--fold",
        "diffview--separator",
        "diffview--message",
        *(f"diffview--syntax-{c}" for c in SYNTAX_CLASSES),
    }

    DEFAULT_CSS = """
    DiffView {
        background: $surface;
        color: $foreground;
        scrollbar-gutter: stable;
    }
    DiffView > .diffview--added { background: $success 18%; }
    DiffView > .diffview--removed { background: $error 18%; }
    DiffView > .diffview--added-word { background: $success 45%; }
    DiffView > .diffview--removed-word { background: $error 45%; }
    DiffView > .diffview--empty { background: $panel 60%; }
    DiffView > .diffview--gutter { color: $text-muted; background: $panel; }
    DiffView > .diffview--gutter-added { color: $text-success; background: $success 30%; }
    DiffView > .diffview--gutter-removed { color: $text-error; background: $error 30%; }
    DiffView > .diffview--cursor {
        color: $block-cursor-foreground;
        background: $block-cursor-background;
        text-style: bold;
    }
    DiffView > .diffview--fold { color: $text-muted; background: $boost; text-style: italic; }
    DiffView > .diffview--separator { color: $text-muted; background: $panel; }
    DiffView > .diffview--message { color: $text-muted; }
    DiffView > .diffview--syntax-keyword { color: $text-accent; text-style: bold; }
    DiffView > .diffview--syntax-string { color: $text-warning; }
    DiffView > .diffview--syntax-comment { color: $text-muted; text-style: italic; }
    DiffView > .diffview--syntax-number { color: $text-secondary; }
    DiffView > .diffview--syntax-function { color: $text-primary; }
    DiffView > .diffview--syntax-type { color: $text-primary; text-style: bold; }
    DiffView > .diffview--syntax-builtin { color: $text-secondary; }
    DiffView > .diffview--syntax-operator { color: $text-accent; }
    """

    mode: reactive[str] = reactive("split", init=False)
    """``split`` (side by side) or ``unified``."""
    cursor: reactive[int] = reactive(0, init=False)
    """The row the cursor is on."""

    class PositionChanged(Message):
        """The cursor moved, or the layout changed: which hunk, of how many."""

        def __init__(self, view: DiffView, hunk: int, hunks: int, row: int, rows: int) -> None:
            super().__init__()
            self.view = view
            self.hunk = hunk
            """0-based hunk the cursor is in or after (-1: before the first)."""
            self.hunks = hunks
            self.row = row
            self.rows = rows

        @property
        def control(self) -> DiffView:
            return self.view

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text: DiffText | None = None
        self._layout: DiffLayout | None = None
        self._message: list[str] = []
        self._syntax_a: list[LineSpans] | None = None
        self._syntax_b: list[LineSpans] | None = None
        self._hscroll = 0
        self._maxlen = 0
        self._digits = 1
        self._cache: LRUCache[tuple[int, int, int, bool, int], Strip] = LRUCache(512)
        self._emph: LRUCache[
            tuple[int, int], tuple[list[tuple[int, int]], list[tuple[int, int]]]
        ] = LRUCache(2048)
        self._styles: dict[str, Style] = {}
        self._generation = 0

    # ------------------------------------------------------------ data

    @property
    def layout_(self) -> DiffLayout | None:
        """The current layout (None while a message is shown)."""
        return self._layout

    @property
    def text(self) -> DiffText | None:
        """The file pair shown (None while a message is shown)."""
        return self._text

    @property
    def message_lines(self) -> list[str]:
        """The message shown instead of a diff (binary, too large, loading …)."""
        return list(self._message)

    def show_text(self, text: DiffText, *, first_hunk: bool = True) -> None:
        """Show a file pair; the cursor goes to the first hunk."""
        self._text = text
        self._message = []
        self._syntax_a = self._syntax_b = None
        if text.maxlen >= 0:
            self._maxlen = text.maxlen
        else:
            self._maxlen = max(max(map(len, text.a), default=0), max(map(len, text.b), default=0))
        self._digits = max(3, len(str(max(len(text.a), len(text.b)))))
        self._hscroll = 0
        self._emph.clear()
        if text.layout is not None and text.layout.mode == self.mode:
            self._set_layout(text.layout)
        else:
            self._set_layout(DiffLayout(text.blocks, mode=self.mode))
        target = self._layout.hunks[0] if first_hunk and self._layout and self._layout.hunks else 0
        self._move(target, top=True)

    def show_message(self, lines: Sequence[str]) -> None:
        """Show a few lines of text instead of a diff."""
        self._text = None
        self._layout = None
        self._message = list(lines)
        self._syntax_a = self._syntax_b = None
        self._invalidate()
        self.virtual_size = Size(self.size.width, len(self._message))
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.set_reactive(DiffView.cursor, 0)
        self.post_message(self.PositionChanged(self, -1, 0, 0, 0))

    def set_syntax(
        self, path: str, spans_a: list[LineSpans] | None, spans_b: list[LineSpans] | None
    ) -> None:
        """Syntax spans for the file shown (ignored if another file is shown by now)."""
        if self._text is None or self._text.path != path:
            return
        self._syntax_a, self._syntax_b = spans_a, spans_b
        self._invalidate()
        self.refresh()

    def _set_layout(self, layout: DiffLayout) -> None:
        self._layout = layout
        self._invalidate()
        self.virtual_size = Size(self.size.width, layout.height)
        self.refresh()

    def _invalidate(self) -> None:
        self._generation += 1
        self._cache.clear()

    # ------------------------------------------------------------ actions

    def watch_mode(self, old: str, new: str) -> None:
        if self._layout is None or old == new:
            return
        # Keep the same file line at the cursor across the switch.
        row = self._layout.row(self.cursor) if self._layout.height else None
        layout = self._layout.with_mode(new)
        self._set_layout(layout)
        self._move(layout.find(row) if row else 0, top=True)

    def toggle_mode(self) -> None:
        """Switch between side by side and unified."""
        self.mode = "unified" if self.mode == "split" else "split"

    def next_hunk(self, step: int = 1) -> bool:
        """Move the cursor to the next (or previous) hunk; False when there is none."""
        if self._layout is None:
            return False
        if step > 0:
            target = self._layout.next_hunk(self.cursor)
        else:
            target = self._layout.prev_hunk(self.cursor)
        if target is None:
            return False
        self._move(target, top=True)
        return True

    def expand_fold(self, fold: int | None = None) -> bool:
        """Open the fold under the cursor (or the one given); False when there is none."""
        if self._layout is None:
            return False
        if fold is None:
            fold = self._layout.fold_at(self.cursor)
        if fold is None or fold not in self._layout.folds:
            return False
        at = self._layout.folds[fold]
        self._set_layout(self._layout.expand(fold))
        self._move(at)
        return True

    def expand_all(self) -> bool:
        """Open every fold; False when there was none."""
        if self._layout is None or not self._layout.folds:
            return False
        row = self._layout.row(self.cursor) if self._layout.height else None
        layout = self._layout.expand_all()
        self._set_layout(layout)
        self._move(layout.find(row) if row else 0, top=True)
        return True

    def action_cursor(self, step: int) -> None:
        self._move(self.cursor + step)

    def action_page(self, step: int) -> None:
        self._move(self.cursor + step * max(1, self.size.height - 1))

    def action_edge(self, step: int) -> None:
        height = self._layout.height if self._layout else 0
        self._move(0 if step < 0 else height - 1)

    def action_sideways(self, step: int) -> None:
        new = max(0, min(self._hscroll + 8 * step, max(0, self._maxlen - 8)))
        if new != self._hscroll:
            self._hscroll = new
            self._cache.clear()
            self.refresh()

    def action_expand_here(self) -> None:
        self.expand_fold()

    def _move(self, row: int, *, top: bool = False) -> None:
        height = self._layout.height if self._layout else 0
        if height == 0:
            return
        row = max(0, min(row, height - 1))
        old = self.cursor
        self.set_reactive(DiffView.cursor, row)
        if top:
            # Show the change with a few lines above it, as pagers do.
            self.scroll_to(y=max(0, row - 3), animate=False, immediate=True)
        else:
            y = self.scroll_offset.y
            h = max(1, self.scrollable_content_region.height)
            if row < y:
                self.scroll_to(y=row, animate=False, immediate=True)
            elif row >= y + h:
                self.scroll_to(y=row - h + 1, animate=False, immediate=True)
        if old != row:
            self.refresh()
        layout = self._layout
        assert layout is not None
        self.post_message(
            self.PositionChanged(self, layout.hunk_index(row), len(layout.hunks), row, height)
        )

    def on_click(self, event: events.Click) -> None:
        if self._layout is None:
            return
        row = event.y + self.scroll_offset.y
        if 0 <= row < self._layout.height:
            self._move(row)
            if self._layout.fold_at(row) is not None:
                self.expand_fold()

    def on_resize(self) -> None:
        height = self._layout.height if self._layout else len(self._message)
        self.virtual_size = Size(self.size.width, height)
        self._cache.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._invalidate()

    # ------------------------------------------------------------ rendering

    def _style(self, name: str) -> Style:
        st = self._styles.get(name)
        if st is None:
            if name.startswith("syntax-"):  # solid: $text-muted (comments) is an auto colour
                st = solid_style(self, f"diffview--{name}")
            else:
                partial = name.endswith("-word")
                st = self.get_component_rich_style(f"diffview--{name}", partial=partial)
            self._styles[name] = st
        return st

    def render_line(self, y: int) -> Strip:
        scroll_y = self.scroll_offset.y
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if self._layout is None:
            if 0 <= index < len(self._message):
                st = base + self._style("message")
                return Strip([Segment("  " + self._message[index], st)]).crop_extend(0, width, st)
            return Strip.blank(width, base)
        if index >= self._layout.height:
            return Strip.blank(width, base)
        key = (index, width, self._hscroll, index == self.cursor, self._generation)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        row = self._layout.row(index)
        if row.kind is RowKind.FOLD:
            strip = self._fold_strip(row, width, base, index == self.cursor)
        elif self._layout.mode == "split":
            strip = self._split_strip(row, width, base, index == self.cursor)
        else:
            strip = self._unified_strip(row, width, base, index == self.cursor)
        self._cache[key] = strip
        return strip

    def _fold_strip(self, row: Row, width: int, base: Style, cursor: bool) -> Strip:
        st = base + self._style("fold")
        label = f"  ⋯ {row.count} unchanged lines (enter to expand) ⋯"
        g = base + self._style("cursor" if cursor else "gutter")
        gutter = (
            self._digits + 2
            if self._layout and self._layout.mode == "split"
            else 2 * self._digits + 3
        )
        segs = [Segment(" " * gutter, g), Segment(label, st)]
        return Strip(segs).crop_extend(0, width, st)

    def _emphasis(self, a: int, b: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        key = (a, b)
        hit = self._emph.get(key)
        if hit is None:
            assert self._text is not None
            hit = intraline(self._text.a[a], self._text.b[b])
            self._emph[key] = hit
        return hit

    def _split_strip(self, row: Row, width: int, base: Style, cursor: bool) -> Strip:
        assert self._text is not None
        left_w = (width - 1) // 2
        right_w = width - 1 - left_w
        spans_a: list[tuple[int, int]] = []
        spans_b: list[tuple[int, int]] = []
        if row.kind is RowKind.CHANGED and row.a is not None and row.b is not None:
            spans_a, spans_b = self._emphasis(row.a, row.b)
        kind_a = "removed" if row.kind in (RowKind.CHANGED, RowKind.DELETED) else None
        kind_b = "added" if row.kind in (RowKind.CHANGED, RowKind.INSERTED) else None
        left = self._side(
            row.a, self._text.a, self._syntax_a, kind_a, spans_a, left_w, base, cursor, "-"
        )
        right = self._side(
            row.b, self._text.b, self._syntax_b, kind_b, spans_b, right_w, base, cursor, "+"
        )
        sep = Segment("│", base + self._style("separator"))
        return Strip([*left, sep, *right], width)

    def _unified_strip(self, row: Row, width: int, base: Style, cursor: bool) -> Strip:
        assert self._text is not None
        d = self._digits
        if cursor:
            gutter_style = base + self._style("cursor")
        elif row.kind is RowKind.DELETED:
            gutter_style = base + self._style("gutter-removed")
        elif row.kind is RowKind.INSERTED:
            gutter_style = base + self._style("gutter-added")
        else:
            gutter_style = base + self._style("gutter")
        na = str(row.a + 1).rjust(d) if row.a is not None else " " * d
        nb = str(row.b + 1).rjust(d) if row.b is not None else " " * d
        mark = "-" if row.kind is RowKind.DELETED else "+" if row.kind is RowKind.INSERTED else " "
        segs = [Segment(f"{na} {nb} {mark}", gutter_style)]
        tw = width - (2 * d + 3)
        if row.kind is RowKind.DELETED:
            assert row.a is not None
            spans = self._emphasis(row.a, row.partner)[0] if row.partner is not None else []
            segs += self._text_segments(
                self._text.a[row.a], _line_spans(self._syntax_a, row.a), spans, "removed", tw, base
            )
        elif row.kind is RowKind.INSERTED:
            assert row.b is not None
            spans = self._emphasis(row.partner, row.b)[1] if row.partner is not None else []
            segs += self._text_segments(
                self._text.b[row.b], _line_spans(self._syntax_b, row.b), spans, "added", tw, base
            )
        else:
            assert row.b is not None
            segs += self._text_segments(
                self._text.b[row.b], _line_spans(self._syntax_b, row.b), [], None, tw, base
            )
        return Strip(segs, width)

    def _side(
        self,
        index: int | None,
        lines: Sequence[str],
        syntax: list[LineSpans] | None,
        kind: str | None,
        spans: list[tuple[int, int]],
        width: int,
        base: Style,
        cursor: bool,
        mark: str,
    ) -> list[Segment]:
        d = self._digits
        if index is None:
            st = base + self._style("empty")
            return [Segment(" " * width, st)]
        if cursor:
            gutter_style = base + self._style("cursor")
        elif kind is not None:
            gutter_style = base + self._style(f"gutter-{kind}")
        else:
            gutter_style = base + self._style("gutter")
        gutter = f"{str(index + 1).rjust(d)}{mark if kind else ' '}"
        segs = [Segment(gutter[:width], gutter_style)]
        tw = width - len(gutter)
        if tw > 0:
            segs += self._text_segments(
                lines[index], _line_spans(syntax, index), spans, kind, tw, base
            )
        return segs

    def _text_segments(
        self,
        text: str,
        syntax: LineSpans,
        emph: list[tuple[int, int]],
        kind: str | None,
        width: int,
        base: Style,
    ) -> list[Segment]:
        """One line's text: syntax colours, row background, word emphasis, tabs expanded,
        control characters made visible, cropped to ``width`` cells after the sideways scroll."""
        line_style = base + self._style(kind) if kind else base
        emph_style = self._style(f"{kind}-word") if kind else None
        if text.endswith("\r"):
            text = text[:-1]
        cuts = {0, len(text)}
        for s, e, _c in syntax:
            cuts.add(min(s, len(text)))
            cuts.add(min(e, len(text)))
        for s, e in emph:
            cuts.add(min(s, len(text)))
            cuts.add(min(e, len(text)))
        bounds = sorted(cuts)
        segs: list[Segment] = []
        col = 0
        si = 0
        for start, end in pairwise(bounds):
            if start >= end:
                continue
            piece = text[start:end]
            style = line_style
            while si < len(syntax) and syntax[si][1] <= start:
                si += 1
            if si < len(syntax) and syntax[si][0] <= start < syntax[si][1]:
                style = style + self._style(f"syntax-{syntax[si][2]}")
            if emph_style is not None and any(s <= start < e for s, e in emph):
                style = style + emph_style
            if "\t" in piece:
                out = []
                for ch in piece:
                    if ch == "\t":
                        n = TAB - (col % TAB)
                        out.append(" " * n)
                        col += n
                    else:
                        out.append(ch)
                        col += 1
                piece = "".join(out)
            else:
                col += len(piece)
            segs.append(Segment(piece.translate(_CONTROL), style))
        strip = Strip(segs)
        return list(strip.crop_extend(self._hscroll, self._hscroll + width, line_style))


def _line_spans(syntax: list[LineSpans] | None, index: int) -> LineSpans:
    if syntax is None or index >= len(syntax):
        return []
    return syntax[index]
