"""The diff screen's list of changed files: A/D/M/T/P marker, +/− line counts, path.

Built on ``LineList`` (the Line API), so 30,000 changed files scroll as fast as 30. Counts come
in later (the screen computes them in a worker) through ``set_counts``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text

from backend.model import Change, EntryKind
from backend.snapshots import escape_path
from tui.widgets.linelist import LineList

BINARY = -1
"""A count meaning "binary file" (no lines)."""
SKIPPED = -2
"""A count meaning "not counted" (too large)."""

MARKER_CLASS = {
    "A": "added",
    "D": "deleted",
    "M": "modified",
    "T": "type",
    "P": "meta",
}


@dataclass(frozen=True, slots=True)
class FileItem:
    """One changed path in the list."""

    index: int
    """Position in the diff's change list (the key of its counts)."""
    change: Change
    path: str
    """The path for display (escaped, ``/`` appended for directories)."""

    @property
    def is_file_pair(self) -> bool:
        """Whether both sides are (or one side is) a regular file: there is text to diff."""
        kinds = {self.change.kind_before, self.change.kind_after} - {None}
        return kinds == {EntryKind.FILE}


def make_items(changes: tuple[Change, ...]) -> list[FileItem | None]:
    """List rows for a diff's changes."""
    out: list[FileItem | None] = []
    for i, c in enumerate(changes):
        path = escape_path(c.path)
        kind = c.kind_after or c.kind_before
        if kind is EntryKind.DIR:
            path += "/"
        out.append(FileItem(i, c, path))
    return out


class DiffFileList(LineList[FileItem]):
    """Changed files with markers and line counts."""

    COMPONENT_CLASSES = LineList.COMPONENT_CLASSES | {
        "diff-files--added",
        "diff-files--deleted",
        "diff-files--modified",
        "diff-files--type",
        "diff-files--meta",
        "diff-files--plus",
        "diff-files--minus",
        "diff-files--muted",
    }

    DEFAULT_CSS = """
    DiffFileList > .diff-files--added { color: $text-success; text-style: bold; }
    DiffFileList > .diff-files--deleted { color: $text-error; text-style: bold; }
    DiffFileList > .diff-files--modified { color: $text-warning; text-style: bold; }
    DiffFileList > .diff-files--type { color: $text-accent; text-style: bold; }
    DiffFileList > .diff-files--meta { color: $text-muted; text-style: bold; }
    DiffFileList > .diff-files--plus { color: $text-success; }
    DiffFileList > .diff-files--minus { color: $text-error; }
    DiffFileList > .diff-files--muted { color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.counts: dict[int, tuple[int, int]] = {}
        """Change index → (added, removed) lines, or (BINARY, BINARY) / (SKIPPED, SKIPPED)."""

    def item_key(self, item: FileItem) -> object:
        return item.change.path

    def set_counts(self, counts: dict[int, tuple[int, int]]) -> None:
        """Add line counts (change index → (added, removed)) and redraw."""
        self.counts.update(counts)
        self.refresh()

    def render_row(self, index: int, item: FileItem | None, width: int) -> Text:
        if item is None:
            return Text("")
        c = item.change
        marker_style = self.component_style(f"diff-files--{MARKER_CLASS.get(c.change, 'meta')}")
        plus = self.component_style("diff-files--plus")
        minus = self.component_style("diff-files--minus")
        muted = self.component_style("diff-files--muted")
        t = Text(no_wrap=True, overflow="crop")
        t.append(f" {c.change} ", marker_style)
        counts = self.counts.get(item.index)
        if counts is None:
            t.append("      " * 2, muted)
        elif counts[0] == BINARY:
            t.append(" binary".ljust(12), muted)
        elif counts[0] == SKIPPED:
            t.append(" large".ljust(12), muted)
        else:
            added, removed = counts
            t.append(f"+{added}".rjust(6) if added else "".rjust(6), plus)
            t.append(f"−{removed}".rjust(6) if removed else "".rjust(6), minus)
        t.append(" ")
        room = width - t.cell_len
        path = item.path
        if room > 1 and len(path) > room:
            path = "…" + path[-(room - 1) :]
        t.append(path)
        return t
