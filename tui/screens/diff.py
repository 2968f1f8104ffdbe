"""The diff screen: changed files between two snapshots (or a snapshot and the live directory),
and the selected file side by side or unified.

Data flow (STYLE E3): ``on_mount`` starts ``load_changes`` (a thread worker calling
``Store.diff``); its ``ChangesLoaded`` fills the file list at once. Then two more workers run:
``count_lines`` fills in the +/− counts in batches, and ``load_file`` (exclusive, so moving the
selection cancels the stale one) reads the selected pair, aligns it (``backend.textdiff``),
posts it, then lexes both sides for syntax colours and posts those too. Widgets change only in
the message handlers.

Keys: n / N next / previous hunk (across files), u unified, s side by side, e expand every fold,
enter (in the diff) expand the fold under the cursor, ] / [ next / previous file, tab switches
between the list and the diff, escape goes back.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Static
from textual.worker import Worker, get_current_worker

from backend.diff import looks_binary
from backend.errors import PathNotFound
from backend.model import Change, DiffResult, Entry, EntryKind, Snapshot
from backend.store import Store
from backend.textdiff import count_changes, decode_lines, describe_side, diff_blocks
from tui.formatting import human_size
from tui.screens.base import BackendScreen
from tui.widgets.diff_files import BINARY, SKIPPED, DiffFileList, FileItem, make_items
from tui.widgets.diff_highlight import highlight_lines
from tui.widgets.diffview import DiffText, DiffView
from tui.widgets.status_bar import StatusBar

MAX_DIFF_BYTES = 16 * 1024 * 1024
"""Larger files are not aligned line by line: sizes and hashes are shown instead."""
MAX_COUNT_BYTES = 4 * 1024 * 1024
"""Larger files get no +/− counts in the list (they would hold up the others)."""
COUNT_BATCH_S = 0.1
"""How often the counting worker posts what it has."""
PAINT_WAIT_S = 1.0
"""At most this long the file worker waits for the view to draw before it lexes."""


@dataclass(frozen=True, slots=True)
class LoadedSide:
    """One side of a file pair as read in the worker."""

    label: str
    data: bytes | None
    """The content (None: absent, or too large to hold)."""
    size: int
    sha256: str = ""


class DiffScreen(BackendScreen):
    """Changed files between ``a`` and ``b`` (``b`` None: the live directory of a's source).

    Args:
        store: the open repository.
        a: the older snapshot (left side).
        b: the newer snapshot (right side), or None for the live directory.
        path: only show changes at or below this path (relative to the snapshot root).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "hunk(1)", "Next hunk", id="diff.next_hunk"),
        Binding("N", "hunk(-1)", "Prev hunk", id="diff.prev_hunk"),
        Binding("u", "mode('unified')", "Unified", id="diff.unified"),
        Binding("s", "mode('split')", "Side by side", id="diff.split"),
        Binding("e", "expand_all", "Expand folds", id="diff.expand_all"),
        Binding("right_square_bracket", "file(1)", "Next file", id="diff.next_file"),
        Binding("left_square_bracket", "file(-1)", "Prev file", id="diff.prev_file"),
    ]

    DEFAULT_CSS = """
    DiffScreen { layout: vertical; }
    DiffScreen #diff-title {
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
        text-style: bold;
    }
    DiffScreen #diff-summary { height: 1; color: $text-muted; padding: 0 1; }
    DiffScreen #diff-body { height: 1fr; }
    DiffScreen #diff-files {
        width: 38%;
        min-width: 24;
        max-width: 60;
        border-right: vkey $panel-lighten-1;
    }
    DiffScreen #diff-right { width: 1fr; }
    DiffScreen #diff-file-header {
        height: 1;
        background: $boost;
        color: $text;
        padding: 0 1;
    }
    DiffScreen #diff-view { height: 1fr; }
    """

    class ChangesLoaded(Message):
        """The list of changes is known."""

        def __init__(
            self, result: DiffResult, items: list[FileItem | None], seconds: float
        ) -> None:
            super().__init__()
            self.result = result
            self.items = items
            """The list rows, built in the worker (escaping 30,000 paths is not free)."""
            self.seconds = seconds

    class CountsReady(Message):
        """+/− line counts for some changes (change index → (added, removed))."""

        def __init__(self, counts: dict[int, tuple[int, int]], done: bool) -> None:
            super().__init__()
            self.counts = counts
            self.done = done

    class FileLoaded(Message):
        """The selected file, ready to show: a text pair, or lines of explanation."""

        def __init__(
            self,
            item: FileItem,
            text: DiffText | None,
            message: list[str],
            painted: threading.Event | None = None,
        ) -> None:
            super().__init__()
            self.item = item
            self.text = text
            self.message = message
            self.painted = painted
            """Set once the view has drawn it (the worker waits before lexing)."""

    class SyntaxLoaded(Message):
        """Syntax spans for a file already shown."""

        def __init__(self, path: str, spans_a: object, spans_b: object) -> None:
            super().__init__()
            self.path = path
            self.spans_a = spans_a
            self.spans_b = spans_b

    def __init__(
        self,
        store: Store,
        a: Snapshot,
        b: Snapshot | None,
        path: str = "",
        *,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id)
        self.store = store
        self.a = a
        self.b = b
        self.path = path
        self.result: DiffResult | None = None
        self.load_seconds: float | None = None
        """How long ``Store.diff`` took (for the benchmark)."""
        self.counts_done = False
        self.current: FileItem | None = None
        self._tally: dict[str, int] | None = None
        self._pending_hunk: int = 0
        """After moving to another file with n / N: 1 go to its first hunk, -1 its last."""

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="diff-title", markup=False)
        yield Static("Comparing…", id="diff-summary", markup=False)
        with Horizontal(id="diff-body"):
            yield DiffFileList(id="diff-files")
            with Vertical(id="diff-right"):
                yield Static("", id="diff-file-header", markup=False)
                yield DiffView(id="diff-view")
        yield StatusBar()
        yield Footer()

    def _title(self) -> str:
        right = f"{self.b.short_id} ({_when(self.b.time)})" if self.b else f"live {self.a.source}"
        where = f"   in {self.path}" if self.path else ""
        return f"Diff  {self.a.short_id} ({_when(self.a.time)})  →  {right}{where}"

    def on_mount(self) -> None:
        self.query_one(DiffFileList).loading = True
        self.query_one(DiffView).show_message(["Comparing…"])
        self.load_changes()

    def reload(self) -> None:
        """The repository changed; a diff between fixed snapshots stays what it was."""

    def worker_failed(self, worker: Worker[object]) -> None:
        self.query_one(DiffFileList).loading = False
        if worker.group == "diff-changes":
            self.query_one("#diff-summary", Static).update("The diff failed.")

    # ------------------------------------------------------------ workers

    @work(thread=True, exclusive=True, group="diff-changes", exit_on_error=False)
    def load_changes(self) -> None:
        """Compute the list of changes (``Store.diff``)."""
        worker = get_current_worker()
        t0 = time.perf_counter()
        result = self.store.diff(self.a, self.b, path=self.path, cancel=worker.cancelled_event)
        items = make_items(result.changes)
        if not worker.is_cancelled:
            self.post_message(self.ChangesLoaded(result, items, time.perf_counter() - t0))

    @work(thread=True, exclusive=True, group="diff-counts", exit_on_error=False)
    def count_lines(self, items: list[FileItem]) -> None:
        """Count added and removed lines of every changed file, in batches."""
        worker = get_current_worker()
        batch: dict[int, tuple[int, int]] = {}
        last = time.monotonic()
        for item in items:
            if worker.is_cancelled:
                return
            c = item.change
            if c.change not in "AMD" or not item.is_file_pair:
                continue
            if max(c.size_before or 0, c.size_after or 0) > MAX_COUNT_BYTES:
                batch[item.index] = (SKIPPED, SKIPPED)
                continue
            try:
                before = self._read(self.a, c.path, c.kind_before)
                after = self._read(self.b, c.path, c.kind_after)
            except (OSError, PathNotFound):
                continue
            batch[item.index] = _count(before, after)
            now = time.monotonic()
            if now - last >= COUNT_BATCH_S:
                self.post_message(self.CountsReady(batch, False))
                batch = {}
                last = now
        if not worker.is_cancelled:
            self.post_message(self.CountsReady(batch, True))

    @work(thread=True, exclusive=True, group="diff-file", exit_on_error=False)
    def load_file(self, item: FileItem, mode: str = "split") -> None:
        """Read, align and lay out (in ``mode``), then highlight the selected pair."""
        worker = get_current_worker()
        text, message = self._prepare(item, mode)
        if worker.is_cancelled:
            return
        painted = threading.Event()
        self.post_message(self.FileLoaded(item, text, message, painted))
        if text is None:
            return
        # Lexing holds the GIL; let the event loop draw the plain diff first (measured: a
        # 20,000-line pair shows in ~0.3 s this way, ~1.2 s when lexing starts at once).
        painted.wait(PAINT_WAIT_S)
        if worker.is_cancelled:
            return
        name = os.path.basename(item.path)
        # The new side first: it is what a reader looks at (and unified mode shows mostly it).
        cancel = worker.cancelled_event
        spans_b = highlight_lines(list(text.b), name, cancel) if text.b else None
        if worker.is_cancelled:
            return
        spans_a = highlight_lines(list(text.a), name, cancel) if text.a else None
        if not worker.is_cancelled and (spans_a is not None or spans_b is not None):
            self.post_message(self.SyntaxLoaded(text.path, spans_a, spans_b))

    # ------------------------------------------------------------ reading (worker threads)

    def _read(self, snap: Snapshot | None, path: bytes, kind: EntryKind | None) -> bytes:
        """A file's content on one side (b"" when the side has no file there)."""
        if kind is not EntryKind.FILE:
            return b""
        if snap is None:
            with open(os.path.join(os.fsencode(self.a.source), path), "rb") as f:
                return f.read()
        return b"".join(self.store.read_file(snap, path))

    def _entry(self, snap: Snapshot | None, path: bytes) -> Entry | os.stat_result | None:
        try:
            if snap is None:
                return os.lstat(os.path.join(os.fsencode(self.a.source), path))
            return self.store.entry(snap, path)
        except (OSError, PathNotFound):
            return None

    def _hash_stream(self, snap: Snapshot | None, path: bytes) -> str:
        """SHA-256 of a (large) file, read in pieces; "" when cancelled or unreadable."""
        worker = get_current_worker()
        h = hashlib.sha256()
        try:
            if snap is None:
                with open(os.path.join(os.fsencode(self.a.source), path), "rb") as f:
                    while piece := f.read(1 << 20):
                        if worker.is_cancelled:
                            return ""
                        h.update(piece)
            else:
                for piece in self.store.read_file(snap, path):
                    if worker.is_cancelled:
                        return ""
                    h.update(piece)
        except (OSError, PathNotFound):
            return ""
        return h.hexdigest()

    def _prepare(self, item: FileItem, mode: str = "split") -> tuple[DiffText | None, list[str]]:
        """What to show for one change: a text pair, or lines that explain."""
        c = item.change
        la = self.a.short_id
        lb = self.b.short_id if self.b else "live"
        kb, ka = c.kind_before, c.kind_after
        if c.change == "T":
            return None, [
                f"Type changed: {_kind_name(kb)} → {_kind_name(ka)}",
                "",
                *self._describe_entries(c, la, lb),
            ]
        if c.change == "P":
            return None, ["Only metadata changed:", "", *self._describe_entries(c, la, lb)]
        kind = ka or kb
        if kind is EntryKind.DIR:
            what = "added" if c.change == "A" else "removed" if c.change == "D" else "changed"
            return None, [f"Directory {what}: {item.path}"]
        if kind is EntryKind.SYMLINK:
            ta = self._link(self.a, c.path) if kb is EntryKind.SYMLINK else None
            tb = self._link(self.b, c.path) if ka is EntryKind.SYMLINK else None
            return None, [
                "Symbolic link",
                "",
                f"  {la:>8}  → {ta if ta is not None else '(none)'}",
                f"  {lb:>8}  → {tb if tb is not None else '(none)'}",
            ]
        if kind is not EntryKind.FILE:
            return None, [f"{_kind_name(kind).capitalize()} {c.change}: {item.path}"]
        sa, sb = c.size_before or 0, c.size_after or 0
        if max(sa, sb) > MAX_DIFF_BYTES:
            ha = self._hash_stream(self.a, c.path) if kb is EntryKind.FILE else ""
            hb = self._hash_stream(self.b, c.path) if ka is EntryKind.FILE else ""
            return None, [
                f"Too large to compare line by line (over {human_size(MAX_DIFF_BYTES)})",
                "",
                *_side_lines(la, kb, sa, ha),
                *_side_lines(lb, ka, sb, hb),
            ]
        before = self._read(self.a, c.path, kb) if kb is EntryKind.FILE else b""
        try:
            after = self._read(self.b, c.path, ka) if ka is EntryKind.FILE else b""
        except OSError as exc:
            return None, [f"Cannot read the live file: {exc.strerror or exc}"]
        if looks_binary(before) or looks_binary(after):
            da, db = describe_side(before), describe_side(after)
            return None, [
                "Binary files differ" if da.sha256 != db.sha256 else "Binary files are identical",
                "",
                *_side_lines(la, kb, da.size, da.sha256),
                *_side_lines(lb, ka, db.size, db.sha256),
            ]
        lines_a = decode_lines(before) or []
        lines_b = decode_lines(after) or []
        return DiffText.build(item.path, lines_a, lines_b, mode), []

    def _link(self, snap: Snapshot | None, path: bytes) -> str | None:
        e = self._entry(snap, path)
        if e is None:
            return None
        if isinstance(e, os.stat_result):
            try:
                target = os.readlink(os.path.join(os.fsencode(self.a.source), path))
            except OSError:
                return None
            return os.fsdecode(target)
        return os.fsdecode(e.payload) if isinstance(e.payload, bytes) else None

    def _describe_entries(self, c: Change, la: str, lb: str) -> list[str]:
        out = []
        for label, snap in ((la, self.a), (lb, self.b)):
            e = self._entry(snap, c.path)
            if e is None:
                out.append(f"  {label:>8}  (none)")
            elif isinstance(e, os.stat_result):
                out.append(
                    f"  {label:>8}  {stat.filemode(e.st_mode)}  {e.st_uid}:{e.st_gid}  "
                    f"{human_size(e.st_size)}  {_when_ns(e.st_mtime_ns)}"
                )
            else:
                mode = stat.filemode(_type_bits(e.kind) | e.mode)
                out.append(
                    f"  {label:>8}  {mode}  {e.uid}:{e.gid}  {human_size(e.size)}  "
                    f"{_when_ns(e.mtime_ns)}"
                )
        return out

    # ------------------------------------------------------------ messages

    @on(ChangesLoaded)
    def show_changes(self, message: ChangesLoaded) -> None:
        self.result = message.result
        self.load_seconds = message.seconds
        files = self.query_one(DiffFileList)
        files.loading = False
        items = message.items
        files.set_rows(items)
        self._update_summary()
        if not items:
            self.query_one(DiffView).show_message(["No differences."])
            self.query_one("#diff-file-header", Static).update("")
            self.counts_done = True
            return
        files.focus()
        self.count_lines([i for i in items if i is not None])

    @on(CountsReady)
    def show_counts(self, message: CountsReady) -> None:
        self.query_one(DiffFileList).set_counts(message.counts)
        self.counts_done = message.done
        self._update_summary()
        if self.current is not None:
            self._update_file_header()

    @on(DiffFileList.Highlighted)
    def file_highlighted(self, message: DiffFileList.Highlighted) -> None:
        message.stop()
        item = message.item
        if not isinstance(item, FileItem) or item == self.current:
            return
        self.current = item
        self._update_file_header()
        self.load_file(item, self.query_one(DiffView).mode)

    @on(DiffFileList.Chosen)
    def file_chosen(self, message: DiffFileList.Chosen) -> None:
        message.stop()
        self.query_one(DiffView).focus()

    @on(FileLoaded)
    def show_file(self, message: FileLoaded) -> None:
        if message.item != self.current:
            return
        view = self.query_one(DiffView)
        if message.text is None:
            view.show_message(message.message)
        else:
            view.show_text(message.text)
            if self._pending_hunk < 0 and view.layout_ is not None and view.layout_.hunks:
                view.next_hunk(0)
                while view.next_hunk(1):
                    pass
        self._pending_hunk = 0
        self._update_file_header()
        if message.painted is not None:
            self.call_after_refresh(message.painted.set)

    @on(SyntaxLoaded)
    def show_syntax(self, message: SyntaxLoaded) -> None:
        self.query_one(DiffView).set_syntax(message.path, message.spans_a, message.spans_b)  # type: ignore[arg-type]

    @on(DiffView.PositionChanged)
    def position_changed(self, message: DiffView.PositionChanged) -> None:
        message.stop()
        self._update_file_header()

    # ------------------------------------------------------------ actions

    def action_hunk(self, step: int) -> None:
        view = self.query_one(DiffView)
        if view.next_hunk(step):
            return
        # No more hunks in this file: go on to the next (or previous) file, like a pager.
        files = self.query_one(DiffFileList)
        before = files.cursor
        files.move_to(files.cursor + step, step)
        if files.cursor == before:
            self.notify("No more hunks.", timeout=2)
        else:
            self._pending_hunk = step

    def action_mode(self, mode: str) -> None:
        self.query_one(DiffView).mode = mode
        self._update_file_header()

    def action_expand_all(self) -> None:
        self.query_one(DiffView).expand_all()

    def action_file(self, step: int) -> None:
        files = self.query_one(DiffFileList)
        files.move_to(files.cursor + step, step)

    # ------------------------------------------------------------ text

    def _update_summary(self) -> None:
        if self.result is None:
            return
        changes = self.result.changes
        if self._tally is None:
            self._tally = {}
            for c in changes:
                self._tally[c.change] = self._tally.get(c.change, 0) + 1
        tally = self._tally
        names = {
            "A": "added",
            "D": "deleted",
            "M": "modified",
            "T": "type changed",
            "P": "metadata",
        }
        parts = [f"{tally[k]} {names[k]}" for k in "AMDTP" if k in tally]
        counts = self.query_one(DiffFileList).counts
        plus = sum(a for a, _r in counts.values() if a > 0)
        minus = sum(r for _a, r in counts.values() if r > 0)
        lines = f"   +{plus} −{minus}" + ("" if self.counts_done else " …")
        if not changes:
            self.query_one("#diff-summary", Static).update("No differences.")
            return
        self.query_one("#diff-summary", Static).update(
            f"{len(changes)} changed: " + " · ".join(parts) + lines
        )

    def _update_file_header(self) -> None:
        item = self.current
        header = self.query_one("#diff-file-header", Static)
        if item is None:
            header.update("")
            return
        view = self.query_one(DiffView)
        parts = [f"{item.change.change}  {item.path}"]
        counts = self.query_one(DiffFileList).counts.get(item.index)
        if counts is not None and counts[0] >= 0:
            parts.append(f"+{counts[0]} −{counts[1]}")
        layout = view.layout_
        if layout is not None and view.text is not None and view.text.path == item.path:
            n = len(layout.hunks)
            if n:
                k = layout.hunk_index(view.cursor)
                parts.append(f"hunk {max(k, 0) + 1}/{n}")
            parts.append("side by side" if layout.mode == "split" else "unified")
        header.update("   ".join(parts))


def _count(before: bytes, after: bytes) -> tuple[int, int]:
    """(added, removed) lines between two contents, or (BINARY, BINARY)."""
    if looks_binary(before) or looks_binary(after):
        return BINARY, BINARY
    if not before:
        return _lines(after), 0
    if not after:
        return 0, _lines(before)
    return count_changes(diff_blocks(decode_lines(before) or [], decode_lines(after) or []))


def _lines(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _side_lines(label: str, kind: EntryKind | None, size: int, sha: str) -> list[str]:
    if kind is not EntryKind.FILE:
        return [f"  {label:>8}  (no file)"]
    digest = f"sha256 {sha}" if sha else "sha256 not computed"
    return [f"  {label:>8}  {human_size(size):>10}  {size:,} bytes", f"  {'':>8}  {digest}"]


def _kind_name(kind: EntryKind | None) -> str:
    names = {
        EntryKind.FILE: "file",
        EntryKind.DIR: "directory",
        EntryKind.SYMLINK: "symlink",
        EntryKind.FIFO: "fifo",
        EntryKind.SOCKET: "socket",
        EntryKind.CHARDEV: "character device",
        EntryKind.BLOCKDEV: "block device",
    }
    return names.get(kind, "nothing") if kind is not None else "nothing"


def _type_bits(kind: EntryKind) -> int:
    return {
        EntryKind.FILE: stat.S_IFREG,
        EntryKind.DIR: stat.S_IFDIR,
        EntryKind.SYMLINK: stat.S_IFLNK,
        EntryKind.FIFO: stat.S_IFIFO,
        EntryKind.SOCKET: stat.S_IFSOCK,
        EntryKind.CHARDEV: stat.S_IFCHR,
        EntryKind.BLOCKDEV: stat.S_IFBLK,
    }[kind]


def _when(ts: datetime) -> str:
    return ts.astimezone().strftime("%Y-%m-%d %H:%M")


def _when_ns(ns: int) -> str:
    return _when(datetime.fromtimestamp(ns / 1e9, UTC))
