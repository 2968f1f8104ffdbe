"""Browse one snapshot: a lazy tree, a file preview (syntax highlighted, binary and size
guarded), the file's history across snapshots (identical versions collapsed along the
checkpoint graph, so branches after a restore stay apart), and restore of a file or folder to
its place or elsewhere (a single file: flat into the directory by default) with a dry-run
preview and undo."""

from __future__ import annotations

import os
from collections.abc import Callable
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
from tui.screens.base import RestoreFinished, RestoringScreen, screen_css
from tui.widgets.dialogs import ConfirmDialog, RestoreToDialog
from tui.widgets.graph import layout as graph_layout
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
    """One version of a path along the checkpoint graph: a run of snapshots linked by parent
    edges that all hold the same content (a run may fork into branches that kept it)."""

    first: Snapshot
    """The oldest snapshot of the run (where this content appeared on its branch)."""
    last: Snapshot
    """The newest snapshot of the run."""
    count: int
    entry: Entry | None
    """None: the path did not exist in those snapshots."""
    lane: int = 0
    """The graph lane (branch) of ``first``, as the history screen draws it."""
    ids: frozenset[str] = frozenset()
    """Every snapshot of the run."""


def versions_along_graph(
    snaps: list[Snapshot], entry_of: Callable[[Snapshot], Entry | None]
) -> list[Version]:
    """A path's versions, newest first, following the checkpoint graph rather than time.

    A snapshot joins its parent's version when the path is identical in both; otherwise it
    starts a new one. So the versions of two branches are never merged just because their
    snapshots interleave in time, and a version restored onto a new branch stays one version
    (its run continues through the parent edge). ``entry_of`` may raise nothing: it returns
    None for an absent path.
    """
    lanes = {r.snapshot.id: r.lane for r in graph_layout(snaps) if r.snapshot is not None}
    runs: list[list[Snapshot]] = []
    run_of: dict[str, int] = {}
    keys: list[object] = []
    entries: list[Entry | None] = []
    key_of: dict[str, object] = {}
    for s in sorted(snaps, key=lambda x: (x.time, x.id)):
        e = entry_of(s)
        key = _version_key(e)
        key_of[s.id] = key
        parent = s.parent
        if parent is not None and parent in run_of and key_of.get(parent) == key:
            i = run_of[parent]
            runs[i].append(s)
        else:
            i = len(runs)
            runs.append([s])
            keys.append(key)
            entries.append(e)
        run_of[s.id] = i
    out = [
        Version(
            run[0],
            max(run, key=lambda x: (x.time, x.id)),
            len(run),
            entries[i],
            lanes.get(run[0].id, 0),
            frozenset(x.id for x in run),
        )
        for i, run in enumerate(runs)
    ]
    out.sort(key=lambda v: (v.first.time, v.first.id), reverse=True)
    return out


@dataclass
class VersionsLoaded(Message):
    path: bytes
    versions: list[Version]


@dataclass
class RestorePlanned(Message):
    plan: restoring.RestorePlan


class VersionList(LineList[Version]):
    """Per-file history along the graph, newest first; the lane column shows the branch."""

    COMPONENT_CLASSES: ClassVar[set[str]] = LineList.COMPONENT_CLASSES | {
        "version-list--muted",
        "version-list--here",
        "version-list--lane-1",
        "version-list--lane-2",
        "version-list--lane-3",
        "version-list--lane-4",
    }
    DEFAULT_CSS = """
    VersionList > .version-list--muted { color: $text-muted; }
    VersionList > .version-list--here { color: $accent; text-style: bold; }
    VersionList > .version-list--lane-1 { color: $graph-lane-1; }
    VersionList > .version-list--lane-2 { color: $graph-lane-2; }
    VersionList > .version-list--lane-3 { color: $graph-lane-3; }
    VersionList > .version-list--lane-4 { color: $graph-lane-4; }
    """
    MAX_LANES = 4
    """Lanes drawn before the column stops growing."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current: str = ""
        self.now = None

    def item_key(self, item: Version) -> object:
        return item.first.id

    def render_row(self, index: int, item: Version | None, width: int) -> Text:
        if item is None:
            return Text("")
        muted = self.component_style("version-list--muted")
        here = self.component_style("version-list--here")
        t = Text(no_wrap=True, overflow="ellipsis")
        is_here = self.current in item.ids
        t.append("▶ " if is_here else "  ", style=here)
        width_lanes = min(self._lanes, self.MAX_LANES)
        if width_lanes > 1:  # one branch: no lane column
            lane = min(item.lane, width_lanes - 1)
            cells = "".join("● " if i == lane else "  " for i in range(width_lanes))
            lane_style = self.component_style(f"version-list--lane-{item.lane % 4 + 1}")
            t.append(cells, style=lane_style)
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

    _lanes = 1

    def set_rows(self, items: list[Version | None], *, keep: Version | None = None) -> None:
        self._lanes = max((v.lane + 1 for v in items if v is not None), default=1)
        super().set_rows(items, keep=keep)


class BrowserScreen(RestoringScreen):
    """A snapshot's files."""

    DEFAULT_CSS = screen_css("browser.tcss")
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
                    "history of this path (identical versions collapsed along the graph)",
                    id="versions-title",
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
            if text.endswith("\n"):  # Syntax would number an empty line after it
                text = text[:-1]
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

        def entry_of(s: Snapshot) -> Entry | None:
            if worker.is_cancelled:
                raise _Stop
            try:
                return store.entry(s, path)
            except PathNotFound:
                return None

        try:
            versions = versions_along_graph(snaps, entry_of)
        except _Stop:
            return
        self.post_message(VersionsLoaded(path, versions))

    @on(VersionsLoaded)
    def versions_loaded(self, msg: VersionsLoaded) -> None:
        if self.current is None or self.current.path != msg.path:
            return
        vl = self.query_one(VersionList)
        vl.now = self.snap_app.clock.now()  # type: ignore[assignment]
        vl.current = self.snapshot.id
        here = next((v for v in msg.versions if self.snapshot.id in v.ids), None)
        vl.set_rows(list(msg.versions), keep=here)
        n = len({_version_key(v.entry) for v in msg.versions if v.entry is not None})
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
        e = self.current.entry if self.current is not None else None
        is_file = bool(path) and e is not None and e.kind is EntryKind.FILE

        def done(answer: tuple[str, bool] | None) -> None:
            if answer and answer[0].strip():
                target, keep_folders = answer
                where = os.path.abspath(os.path.expanduser(target.strip()))
                self.plan(path, where, flat=is_file and not keep_folders)

        self.app.push_screen(RestoreToDialog(path, is_file=is_file), done)

    @work(thread=True, exclusive=True, group="browser-restore", exit_on_error=False)
    def plan(self, path: str, target: str | None, flat: bool = False) -> None:
        opts = self.snap_app.snapshot_options()
        plan = restoring.plan_restore(
            self.snap_app.store,
            self.snapshot,
            path=path,
            target=target,
            excludes=opts.excludes,
            flat=flat,
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
        where = plan.destination
        self.post_message(
            RestoreFinished(done, f"restored {r.files_restored} file(s) to {where} · u to undo")
        )
        app.store_changed()


class _Stop(Exception):
    """The versions worker was cancelled (another path was selected)."""


def _version_key(e: Entry | None) -> object:
    if e is None:
        return None
    if e.kind is EntryKind.FILE:
        return ("f", e.content)
    if e.kind is EntryKind.DIR:
        return ("d", e.payload)
    return (e.kind.value, e.payload)
