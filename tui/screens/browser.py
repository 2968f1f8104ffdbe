"""Browse one snapshot: a lazy tree, a file preview (syntax highlighted, binary and size
guarded), the file's history across snapshots (identical versions collapsed), and restore of
a file or folder to its place or elsewhere with a dry-run preview and undo."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import ClassVar

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Label, Static, Tree
from textual.worker import get_current_worker

from backend.errors import PathNotFound
from backend.model import Entry, EntryKind, Snapshot
from backend.snapshots import escape_path
from tui import restoring
from tui.formatting import human_size, local, relative_time
from tui.screens.base import BackendScreen
from tui.widgets.dialogs import ConfirmDialog, InputDialog
from tui.widgets.linelist import LineList
from tui.widgets.status_bar import StatusBar

PREVIEW_BYTES = 256 * 1024
"""Preview at most this much of a file (the rest is elided)."""
PREVIEW_LINES = 3000


@dataclass(frozen=True, slots=True)
class Node:
    """What a tree node holds."""

    path: bytes
    entry: Entry | None
    """None for the root."""

    @property
    def is_dir(self) -> bool:
        return self.entry is None or self.entry.kind is EntryKind.DIR

    @property
    def text_path(self) -> str:
        return escape_path(self.path) if self.path else ""


@dataclass
class DirLoaded(Message):
    node_id: int
    children: list[tuple[bytes, Entry]]


@dataclass
class PreviewReady(Message):
    path: bytes
    renderable: object
    title: str


@dataclass(frozen=True, slots=True)
class Version:
    """One distinct version of a path: the first snapshot holding it and how many share it."""

    first: Snapshot
    last: Snapshot
    count: int
    entry: Entry | None
    """None: the path did not exist in those snapshots."""


@dataclass
class VersionsLoaded(Message):
    path: bytes
    versions: list[Version]


@dataclass
class RestorePlanned(Message):
    plan: restoring.RestorePlan


@dataclass
class RestoreFinished(Message):
    done: restoring.RestoreDone | None
    text: str


class VersionList(LineList[Version]):
    """Per-file history, newest first."""

    COMPONENT_CLASSES: ClassVar[set[str]] = LineList.COMPONENT_CLASSES | {
        "version-list--muted",
        "version-list--here",
    }
    DEFAULT_CSS = """
    VersionList > .version-list--muted { color: $text-muted; }
    VersionList > .version-list--here { color: $accent; text-style: bold; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current: str = ""
        self.now = None

    def item_key(self, item: Version) -> object:
        return item.first.id

    def render_row(self, index: int, item: Version | None, width: int) -> Text:
        if item is None:
            return Text("")
        muted = self.get_component_rich_style("version-list--muted", partial=True)
        here = self.get_component_rich_style("version-list--here", partial=True)
        t = Text(no_wrap=True, overflow="ellipsis")
        is_here = self.current in {item.first.id, item.last.id} or (
            item.first.time <= self._cur_time <= item.last.time if self._cur_time else False
        )
        t.append("● " if is_here else "  ", style=here)
        t.append(f"{item.first.short_id} ", style=muted)
        t.append(f"{local(item.first.time):%-d %b %H:%M} ")
        if self.now is not None:
            t.append(f"{relative_time(item.first.time, self.now):>11} ", style=muted)
        if item.entry is None:
            t.append("(absent)", style=muted)
        elif item.entry.kind is EntryKind.DIR:
            t.append("directory")
        else:
            t.append(f"{human_size(item.entry.size):>9}")
        if item.count > 1:
            t.append(f"  ×{item.count} snapshots", style=muted)
        return t

    _cur_time = None


class BrowserScreen(BackendScreen):
    """A snapshot's files."""

    CSS_PATH = "browser.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "restore_here", "Restore", id="browser_restore"),
        Binding("R", "restore_elsewhere", "Restore to…", id="browser_restore_to"),
        Binding("u", "undo", "Undo restore", id="browser_undo"),
        Binding("d", "diff_version", "Diff version", id="browser_diff"),
        Binding("L", "diff_live", "Diff live", id="browser_diff_live", show=False),
        Binding("tab", "focus_next", "Next pane", show=False),
    ]

    def __init__(self, snapshot: Snapshot, *, path: str = "") -> None:
        super().__init__()
        self.snapshot = snapshot
        self.start_path = path
        self.current: Node | None = None
        self.last_restore: restoring.RestoreDone | None = None
        self._loaded: set[int] = set()
        """Ids of tree nodes whose children are loaded (or loading)."""

    def compose(self) -> ComposeResult:
        s = self.snapshot
        with Horizontal(classes="title-bar"):
            yield Label("snapdeck", classes="title-text")
            yield Label(
                f"· browse {s.short_id} · {s.source} · {local(s.time):%Y-%m-%d %H:%M:%S}",
                id="browser-title",
            )
        with Horizontal(id="panes"):
            tree: Tree[Node] = Tree(
                f"{os.path.basename(s.source) or s.source}/", Node(b"", None), id="tree"
            )
            tree.show_root = True
            tree.guide_depth = 3
            yield tree
            with Vertical(id="right"):
                yield Label("", id="preview-title")
                with VerticalScroll(id="preview-scroll"):
                    yield Static("select a file", id="preview")
                yield Label(
                    "history of this path (identical versions collapsed)", id="versions-title"
                )
                yield VersionList(id="versions")
        yield StatusBar()
        yield Footer()

    def on_mount(self) -> None:
        tree = self.query_one("#tree", Tree)
        tree.focus()
        self.load_dir(tree.root.id, b"")

    # ------------------------------------------------------------ tree

    @work(thread=True, group="browser-dir", exit_on_error=False)
    def load_dir(self, node_id: int, path: bytes) -> None:
        children = list(self.snap_app.store.ls(self.snapshot, path))
        self.post_message(DirLoaded(node_id, children))

    @on(DirLoaded)
    def dir_loaded(self, msg: DirLoaded) -> None:
        tree = self.query_one("#tree", Tree)
        try:
            node = tree.get_node_by_id(msg.node_id)  # type: ignore[arg-type]
        except Exception:
            return
        show_hidden = self.snap_app.config.ui.show_hidden
        kids = sorted(msg.children, key=lambda pe: (pe[1].kind is not EntryKind.DIR, pe[1].name))
        for path, e in kids:
            name = escape_path(e.name)
            if not show_hidden and name.startswith("."):
                continue
            if e.kind is EntryKind.DIR:
                node.add(f"{name}/", Node(path, e), allow_expand=True)
            else:
                label = Text(name)
                label.append(f"  {human_size(e.size)}", style="dim")
                if e.kind is EntryKind.SYMLINK:
                    label.append(f" → {escape_path(e.payload)}", style="dim")
                node.add_leaf(label, Node(path, e))
        self._loaded.add(node.id)
        if node.is_root:
            node.expand()
            if node.children:
                first = node.children[0]
                tree.call_after_refresh(tree.move_cursor, first)

    @on(Tree.NodeExpanded, "#tree")
    def expanded(self, event: Tree.NodeExpanded[Node]) -> None:
        node = event.node
        if node.id in self._loaded or node.data is None:
            return
        self._loaded.add(node.id)
        self.load_dir(node.id, node.data.path)

    @on(Tree.NodeHighlighted, "#tree")
    def highlighted(self, event: Tree.NodeHighlighted[Node]) -> None:
        data = event.node.data
        if data is None:
            return
        self.current = data
        title = data.text_path or "/"
        self.query_one("#preview-title", Label).update(title)
        if data.entry is None or data.entry.kind is not EntryKind.FILE:
            e = data.entry
            what = "directory" if data.is_dir else e.kind.name.lower() if e else ""
            self.query_one("#preview", Static).update(Text(f"{title}: {what}", style="dim"))
        else:
            self.query_one("#preview", Static).update(Text("loading…", style="dim"))
            self.load_preview(data)
        if data.path:
            self.load_versions(data.path)
        else:
            self.query_one(VersionList).set_rows([])

    # ------------------------------------------------------------ preview

    @work(thread=True, exclusive=True, group="browser-preview", exit_on_error=False)
    def load_preview(self, node: Node) -> None:
        e = node.entry
        assert e is not None
        worker = get_current_worker()
        buf = bytearray()
        for chunk in self.snap_app.store.read_file(self.snapshot, node.path):
            buf += chunk
            if len(buf) >= PREVIEW_BYTES or worker.is_cancelled:
                break
        if worker.is_cancelled:
            return
        data = bytes(buf[:PREVIEW_BYTES])
        name = escape_path(e.name)
        title = f"{node.text_path} · {human_size(e.size)}"
        if b"\0" in data[:8192]:
            r: object = Text(f"binary file, {human_size(e.size)}: no preview", style="dim")
        else:
            text = data.decode("utf-8", errors="replace")
            lines = text.splitlines()
            cut = e.size > len(data) or len(lines) > PREVIEW_LINES
            if len(lines) > PREVIEW_LINES:
                text = "\n".join(lines[:PREVIEW_LINES])
            lexer = Syntax.guess_lexer(name, text)
            dark = self.app.current_theme.dark
            r = Syntax(
                text,
                lexer,
                theme="monokai" if dark else "friendly",
                background_color="default",
                line_numbers=True,
                word_wrap=False,
            )
            if cut:
                title += f" · first {human_size(len(data))} shown"
        self.post_message(PreviewReady(node.path, r, title))

    @on(PreviewReady)
    def preview_ready(self, msg: PreviewReady) -> None:
        if self.current is None or self.current.path != msg.path:
            return
        self.query_one("#preview-title", Label).update(msg.title)
        self.query_one("#preview", Static).update(msg.renderable)  # type: ignore[arg-type]
        self.query_one("#preview-scroll", VerticalScroll).scroll_home(animate=False)

    # ------------------------------------------------------------ versions

    @work(thread=True, exclusive=True, group="browser-versions", exit_on_error=False)
    def load_versions(self, path: bytes) -> None:
        store = self.snap_app.store
        worker = get_current_worker()
        snaps = store.list_snapshots(source=self.snapshot.source, refresh=False)
        versions: list[Version] = []
        prev_key: object = object()
        for s in snaps:
            if worker.is_cancelled:
                return
            try:
                e = store.entry(s, path)
            except PathNotFound:
                e = None
            key = _version_key(e)
            if versions and key == prev_key:
                v = versions[-1]
                versions[-1] = Version(v.first, s, v.count + 1, v.entry)
            else:
                versions.append(Version(s, s, 1, e))
                prev_key = key
        self.post_message(VersionsLoaded(path, list(reversed(versions))))

    @on(VersionsLoaded)
    def versions_loaded(self, msg: VersionsLoaded) -> None:
        if self.current is None or self.current.path != msg.path:
            return
        vl = self.query_one(VersionList)
        vl.now = self.snap_app.clock.now()  # type: ignore[assignment]
        vl.current = self.snapshot.id
        vl._cur_time = self.snapshot.time  # type: ignore[assignment]
        here = next(
            (v for v in msg.versions if v.first.time <= self.snapshot.time <= v.last.time), None
        )
        vl.set_rows(list(msg.versions), keep=here)
        n = len([v for v in msg.versions if v.entry is not None])
        self.query_one("#versions-title", Label).update(
            f"history of this path: {n} distinct version{'s' if n != 1 else ''} "
            f"in {sum(v.count for v in msg.versions)} snapshots"
        )

    @on(LineList.Chosen, "#versions")
    def open_version(self, event: LineList.Chosen) -> None:
        v = event.item
        if isinstance(v, Version) and v.entry is not None and self.current is not None:
            self.snap_app.open_browser(v.first, self.current.text_path)

    def action_diff_version(self) -> None:
        """Diff the selected version of this path against this snapshot's."""
        if self.current is None or not self.current.path:
            return
        v = self.query_one(VersionList).highlighted
        other = v.first if v is not None else None
        if other is None or other.id == self.snapshot.id:
            parent = self.snapshot.parent
            if parent is None:
                self.notify(
                    "pick another version in the history list to compare", severity="warning"
                )
                return
            try:
                other = self.snap_app.store.get(parent)
            except Exception as exc:
                self.snap_app.show_error(exc)
                return
        a, b = sorted((other, self.snapshot), key=lambda x: x.time)
        self.snap_app.open_diff(a, b, self.current.text_path)

    def action_diff_live(self) -> None:
        path = self.current.text_path if self.current else ""
        self.snap_app.open_diff(self.snapshot, None, path)

    # ------------------------------------------------------------ restore

    def _target_path(self) -> str:
        return self.current.text_path if self.current is not None else ""

    def action_restore_here(self) -> None:
        self.plan(self._target_path(), None)

    def action_restore_elsewhere(self) -> None:
        path = self._target_path()

        def done(target: str | None) -> None:
            if target:
                self.plan(path, os.path.abspath(os.path.expanduser(target)))

        self.app.push_screen(
            InputDialog(
                f"Restore {path or 'everything'} to…",
                placeholder="/path/to/directory",
                help="A directory; the path is recreated inside it (DIR/" + (path or "") + ").",
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="browser-restore", exit_on_error=False)
    def plan(self, path: str, target: str | None) -> None:
        opts = self.snap_app.snapshot_options()
        plan = restoring.plan_restore(
            self.snap_app.store, self.snapshot, path=path, target=target, excludes=opts.excludes
        )
        self.post_message(RestorePlanned(plan))

    @on(RestorePlanned)
    def confirm(self, msg: RestorePlanned) -> None:
        plan = msg.plan

        def done(yes: bool | None) -> None:
            if yes:
                self.execute(plan)

        self.app.push_screen(
            ConfirmDialog(
                f"Restore {plan.path or 'everything'} from {plan.snapshot.short_id}?",
                plan.summary(),
                yes="Restore",
                danger=plan.in_place,
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="browser-restore", exit_on_error=False)
    def execute(self, plan: restoring.RestorePlan) -> None:
        app = self.snap_app
        done = restoring.execute(app.store, plan, app.snapshot_options())
        r = done.result
        where = os.path.join(plan.target, plan.path) if plan.path else plan.target
        self.post_message(
            RestoreFinished(done, f"restored {r.files_restored} file(s) to {where} · u to undo")
        )
        app.store_changed()

    def action_undo(self) -> None:
        if self.last_restore is None:
            self.notify("nothing to undo", severity="warning")
            return
        done, self.last_restore = self.last_restore, None
        self.run_undo(done)

    @work(thread=True, exclusive=True, group="browser-restore", exit_on_error=False)
    def run_undo(self, done: restoring.RestoreDone) -> None:
        app = self.snap_app
        text = restoring.undo(app.store, done, app.snapshot_options())
        self.post_message(RestoreFinished(None, f"undone: {text}"))
        app.store_changed()

    @on(RestoreFinished)
    def finished(self, msg: RestoreFinished) -> None:
        if msg.done is not None:
            self.last_restore = msg.done
        self.notify(msg.text, timeout=6)


def _version_key(e: Entry | None) -> object:
    if e is None:
        return None
    if e.kind is EntryKind.FILE:
        return ("f", e.content)
    if e.kind is EntryKind.DIR:
        return ("d", e.payload)
    return (e.kind.value, e.payload)
