"""A virtualised list of one-line rows (the Line API): renders only the rows on screen, so
10,000 snapshots cost no more to show than 30. Subclasses say how a row looks and which rows
the cursor may stop on (day headers, graph connector lines are skipped)."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.dom import DOMNode
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

T = TypeVar("T")


def solid_style(node: DOMNode, name: str) -> Style:
    """A component class's style for text drawn on ``node``, with every colour made solid.

    Textual's partial component styles leave ``auto`` colours unresolved (``$text-muted`` is
    "auto 60%": it came out near-white, invisible on a light theme) and drop the alpha of
    translucent ones. Here both are blended over the node's own background, as Textual does
    for a widget's text."""
    styles = node.get_component_styles(name)
    base = node.background_colors[1]
    background = base + styles.background if styles.has_rule("background") else None
    under = background or base
    color = None
    if styles.has_rule("color"):
        c = styles.color
        if styles.has_rule("auto_color") and styles.auto_color:
            c = under.get_contrast_text(c.a)
        color = (under + c).rich_color
    return Style(color=color, bgcolor=background.rich_color if background else None) + (
        styles.text_style
    )


class LineList(ScrollView, Generic[T], can_focus=True):
    """Rows of items of type ``T`` (``None`` rows are not selectable), with a row cursor."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor_up", "Up", show=False),
        Binding("down,j", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up_rows", "Page up", show=False),
        Binding("pagedown", "page_down_rows", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {"line-list--cursor", "line-list--cursor-blurred"}

    DEFAULT_CSS = """
    LineList {
        background: $surface;
        scrollbar-gutter: stable;
    }
    LineList > .line-list--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    LineList > .line-list--cursor-blurred {
        background: $block-cursor-blurred-background;
    }
    """

    cursor: reactive[int] = reactive(-1, always_update=True, init=False)
    """Index of the highlighted row (-1: none)."""

    class Highlighted(Message):
        """The cursor moved to a row."""

        def __init__(self, source: LineList[object], item: object) -> None:
            super().__init__()
            self.list = source
            self.item = item

        @property
        def control(self) -> LineList[object]:
            return self.list

    class Chosen(Message):
        """A row was chosen (Enter or a double click)."""

        def __init__(self, source: LineList[object], item: object) -> None:
            super().__init__()
            self.list = source
            self.item = item

        @property
        def control(self) -> LineList[object]:
            return self.list

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._items: list[T | None] = []
        self._line_cache: dict[tuple[int, int, int, bool], Strip] = {}
        self._styles: dict[str, Style] = {}

    def component_style(self, name: str) -> Style:
        """A component class's style with solid colours (see ``solid_style``), cached until
        the theme or styles change."""
        st = self._styles.get(name)
        if st is None:
            st = self._styles[name] = solid_style(self, name)
        return st

    # ------------------------------------------------------------ data

    @property
    def items(self) -> list[T | None]:
        """The rows (``None`` for non-selectable rows)."""
        return self._items

    def set_rows(self, items: list[T | None], *, keep: T | None = None) -> None:
        """Replace every row; keep the cursor on ``keep`` (or the current item) if still there."""
        current = keep if keep is not None else self.highlighted
        self._items = items
        self.virtual_size = Size(self.size.width, len(items))
        new = -1 if current is None else self._find(items, self.item_key(current), self.cursor)
        if new < 0:
            new = self._next_selectable(0, 1)
        self._clear_caches()
        self.refresh()
        self.cursor = new

    def _find(self, items: list[T | None], key: object, near: int) -> int:
        """The index of the item with ``key`` (-1: gone), looking near ``near`` first: after
        a reload or a new row on top, the item is usually within a few rows of where it was."""
        item_key = self.item_key
        for i in range(max(0, near - 4), min(len(items), near + 5)):
            it = items[i]
            if it is not None and item_key(it) == key:
                return i
        for i, it in enumerate(items):
            if it is not None and item_key(it) == key:
                return i
        return -1

    def item_key(self, item: T) -> object:
        """What identifies an item across reloads (default: the item itself)."""
        return item

    @property
    def highlighted(self) -> T | None:
        """The item under the cursor."""
        if 0 <= self.cursor < len(self._items):
            return self._items[self.cursor]
        return None

    def _cursor_style(self, focused: bool) -> Style:
        """The cursor row's style, always with a text colour (the theme's, or the one that
        contrasts with the cursor's background)."""
        name = "line-list--cursor" if focused else "line-list--cursor-blurred"
        st = self._styles.get("=" + name)
        if st is None:
            st = self.component_style(name)
            if st.color is None and st.bgcolor is not None:
                bg = Color.from_rich_color(st.bgcolor)
                st += Style(color=(bg + bg.get_contrast_text(0.9)).rich_color)
            self._styles["=" + name] = st
        return st

    def _clear_caches(self) -> None:
        """Forget rendered rows (data, marks, size or theme changed)."""
        self._line_cache.clear()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._line_cache.clear()

    def refresh_rows(self) -> None:
        """Re-render every row (after changing what rows show, e.g. a mark)."""
        self._clear_caches()
        self.refresh()

    # ------------------------------------------------------------ rendering

    def render_row(self, index: int, item: T | None, width: int) -> Text:
        """The row's text (subclasses override)."""
        return Text(str(item))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= len(self._items):
            return Strip.blank(width, base)
        state = (2 if self.has_focus else 1) if index == self.cursor else 0
        key = (index, width, state, scroll_x != 0)
        cached = self._line_cache.get(key)
        if cached is not None and scroll_x == 0:
            return cached
        text = self.render_row(index, self._items[index], width)
        segments = list(text.render(self.app.console, end=""))
        strip = Strip(segments).apply_style(base)
        style = base
        if state:
            # The cursor's colours win over the row's own (a bar in $primary on a $primary
            # cursor, muted text on it, would vanish); the row keeps its bold and italics.
            cursor = self._cursor_style(state == 2)
            strip = Strip(Segment.apply_style(strip, post_style=cursor), strip.cell_length)
            style = base + cursor
        strip = strip.crop_extend(scroll_x, scroll_x + width, style)
        if scroll_x == 0:
            if len(self._line_cache) > 4000:
                self._line_cache.clear()
            self._line_cache[key] = strip
        return strip

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self._items))
        self._clear_caches()

    # ------------------------------------------------------------ cursor

    def _next_selectable(self, start: int, step: int) -> int:
        i = start
        while 0 <= i < len(self._items):
            if self._items[i] is not None:
                return i
            i += step
        return -1

    def watch_cursor(self, old: int, new: int) -> None:
        if 0 <= old < len(self._items):
            self.refresh(Region(0, old - self.scroll_offset.y, self.size.width, 1))
        if 0 <= new < len(self._items):
            self.refresh(Region(0, new - self.scroll_offset.y, self.size.width, 1))
            self.scroll_to_region(Region(0, new, 1, 1), animate=False, force=True, immediate=True)
            self.post_message(self.Highlighted(self, self._items[new]))  # type: ignore[arg-type]

    def move_to(self, index: int, step: int = 1) -> None:
        """Put the cursor on ``index`` (or the nearest selectable row in direction ``step``)."""
        if not self._items:
            return
        index = max(0, min(index, len(self._items) - 1))
        target = self._next_selectable(index, step)
        if target < 0:
            target = self._next_selectable(index, -step)
        if target >= 0 and target != self.cursor:
            self.cursor = target

    def action_cursor_up(self) -> None:
        self.move_to(self.cursor - 1, -1)

    def action_cursor_down(self) -> None:
        self.move_to(self.cursor + 1, 1)

    def action_page_up_rows(self) -> None:
        self.move_to(self.cursor - max(1, self.size.height - 1), -1)

    def action_page_down_rows(self) -> None:
        self.move_to(self.cursor + max(1, self.size.height - 1), 1)

    def action_first(self) -> None:
        self.move_to(0, 1)

    def action_last(self) -> None:
        self.move_to(len(self._items) - 1, -1)

    def action_select(self) -> None:
        item = self.highlighted
        if item is not None:
            self.post_message(self.Chosen(self, item))  # type: ignore[arg-type]

    def on_click(self, event: events.Click) -> None:
        index = event.y + self.scroll_offset.y
        if 0 <= index < len(self._items) and self._items[index] is not None:
            self.cursor = index
            if event.chain >= 2:
                self.action_select()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
