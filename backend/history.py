"""Operation: checkpoint history as a graph (git log --graph), and in-place restore helpers.

Layer: operations. Pure functions over snapshots (``log_graph``, ``render_graph``) plus the one
filesystem helper an in-place restore needs (``remove_tracked``). Snapshots of one source are
linked by ``parent`` like commits; a source's HEAD is where its files last were, so a checkpoint
taken after restoring an older snapshot has that snapshot as its parent and the history
branches.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backend.errors import StoreLocked
from backend.locking import process_alive
from backend.meta import head_name
from backend.model import Problem, Snapshot
from backend.snapshots import escape_path

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_O_DIR |= getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class LogNode:
    """One snapshot in the history graph, with its decorations."""

    snapshot: Snapshot
    column: int
    """The lane the node is drawn in (0 = leftmost)."""
    graph: str
    """The graph characters of the node's row, e.g. ``"| * "``."""
    connectors: tuple[str, ...]
    """Lines drawn before the row, where lanes that wait for this node join it (``"|/"``)."""
    head: bool
    refs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``log --json`` object of a node."""
        s = self.snapshot
        return {
            "id": s.id,
            "short_id": s.short_id,
            "parent": s.parent,
            "time": s.time.isoformat(),
            "trigger": s.trigger,
            "source": s.source,
            "host": s.host,
            "message": s.message,
            "head": self.head,
            "refs": list(self.refs),
            "tags": list(s.tags),
            "pinned": s.pinned,
            "column": self.column,
        }


def _topo_newest_first(snaps: Sequence[Snapshot]) -> list[Snapshot]:
    """Children before parents; among ready snapshots, the newest first (git's order)."""
    by_id = {s.id: s for s in snaps}
    children: dict[str, int] = {}
    for s in snaps:
        if s.parent in by_id:
            children[s.parent] = children.get(s.parent, 0) + 1
    ready = [s for s in snaps if children.get(s.id, 0) == 0]
    out: list[Snapshot] = []
    while ready:
        ready.sort(key=lambda x: (x.time, x.id))
        s = ready.pop()
        out.append(s)
        if s.parent in by_id:
            children[s.parent] -= 1
            if children[s.parent] == 0:
                ready.append(by_id[s.parent])
    return out


def log_graph(
    snaps: Sequence[Snapshot],
    *,
    heads: Iterable[str] = (),
    refs: Mapping[str, str] | None = None,
) -> list[LogNode]:
    """Lay snapshots out as a graph, newest first, one lane per open branch.

    Args:
        snaps: the snapshots to show (any order; parents outside the set end their lane).
        heads: ids that are some source's HEAD.
        refs: named refs, name → snapshot id.
    """
    head_ids = set(heads)
    ref_names: dict[str, list[str]] = {}
    for name, sid in sorted((refs or {}).items()):
        ref_names.setdefault(sid, []).append(name)
    lanes: list[str | None] = []
    out: list[LogNode] = []
    for s in _topo_newest_first(snaps):
        waiting = [i for i, x in enumerate(lanes) if x == s.id]
        if waiting:
            col = waiting[0]
        else:
            col = lanes.index(None) if None in lanes else len(lanes)
            if col == len(lanes):
                lanes.append(None)
        connectors: list[str] = []
        for j in reversed(waiting[1:]):
            # Lane j ends here, joining the node's lane: "|/" (lanes are two characters wide).
            line = "".join("| " if lanes[i] is not None else "  " for i in range(j))
            connectors.append(line[:-1] + "/")
            lanes[j] = None
        width = len(lanes)
        row = "".join(
            ("* " if i == col else ("| " if lanes[i] is not None else "  ")) for i in range(width)
        )
        lanes[col] = s.parent
        while lanes and lanes[-1] is None:
            lanes.pop()
        out.append(
            LogNode(
                s,
                col,
                row.rstrip(),
                tuple(connectors),
                s.id in head_ids,
                tuple(ref_names.get(s.id, ())),
            )
        )
    return out


def describe(node: LogNode) -> str:
    """A node's one-line text: short id, decorations, time, trigger, message, change counts."""
    s = node.snapshot
    deco = []
    if node.head:
        deco.append("HEAD")
    deco += [f"ref: {r}" for r in node.refs]
    deco += [f"tag: {t}" for t in s.tags]
    if s.pinned:
        deco.append("pinned")
    st = s.stats
    parts = [s.short_id]
    if deco:
        parts.append("(" + ", ".join(deco) + ")")
    parts.append(s.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"))
    parts.append(s.trigger)
    parts.append(f"+{st.files_new} ~{st.files_changed} -{st.files_removed}")
    if s.message:
        parts.append(s.message.replace("\n", " "))
    return " ".join(parts)


def render_graph(nodes: Sequence[LogNode], *, graph: bool = True) -> list[str]:
    """Text lines like ``git log --graph --oneline`` (``graph`` False: no lane drawing)."""
    lines: list[str] = []
    for n in nodes:
        text = describe(n)
        if graph:
            lines.extend(n.connectors)
            lines.append(f"{n.graph} {text}")
        else:
            lines.append(text)
    return lines


# ------------------------------------------------------------------ in-place restore

RESTORING = "restoring/"
"""``refs/restoring/<hash(host, source)>``: an in-place restore of that source is running."""
MARKER_LEASE_S = 60.0
"""How long a restore marker stays fresh without renewal (renewed every third of it)."""


class RestoreInProgress(StoreLocked):
    """An in-place restore of the source is running: a checkpoint now could save a
    half-restored tree (exit code 12, like any busy repository)."""


def restoring_name(host: str, source: str, key: bytes | None = None) -> str:
    """The ref object name of a source's restore marker (keyed like its HEAD's name)."""
    return RESTORING + head_name(host, source, key)[len("heads/") :]


def marker_doc(host: str, source: str, snapshot: str, pid: int, expires: datetime) -> dict:
    """The JSON of a restore marker."""
    return {
        "host": host,
        "source": source,
        "snapshot": snapshot,
        "pid": pid,
        "expires": expires.isoformat(),
    }


def marker_is_fresh(doc: Mapping[str, Any] | None, now: datetime, this_host: str) -> bool:
    """Whether a restore marker still holds: its lease has not lapsed and, on this host, its
    process is alive (a restore killed with -9 holds nothing back)."""
    if not doc:
        return False
    try:
        expires = datetime.fromisoformat(str(doc["expires"]))
    except (KeyError, ValueError):
        return False
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if expires <= now:
        return False
    pid = doc.get("pid")
    dead = doc.get("host") == this_host and isinstance(pid, int) and not process_alive(pid)
    return not dead


def _open_parent(root_fd: int, parts: list[bytes]) -> int:
    """A directory fd for ``parts`` below ``root_fd``, never following a symlink."""
    fd = os.dup(root_fd)
    for part in parts:
        try:
            nfd = os.open(part, _O_DIR, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def remove_tracked(root: str | bytes, paths: Iterable[bytes]) -> tuple[int, list[Problem]]:
    """Remove entries (relative paths) below ``root``, deepest first, never via a symlink.

    Used by an in-place restore for what the current state (the guard snapshot) has and the
    restored snapshot does not: only tracked paths go, so files snapshots never include (the
    repository, caches, excluded patterns) stay. A directory that still holds such files is
    left in place. Returns how many entries were removed and the problems met.
    """
    broot = os.fsencode(root)
    problems: list[Problem] = []
    removed = 0
    root_fd = os.open(broot, _O_DIR)
    try:
        ordered = sorted(set(paths), key=lambda p: (p.count(b"/"), p), reverse=True)
        for rel in ordered:
            parts = [x for x in rel.split(b"/") if x]
            if not parts or any(x in (b".", b"..") for x in parts):
                continue
            try:
                dfd = _open_parent(root_fd, parts[:-1])
            except OSError:
                continue  # the parent is gone or is no longer a directory: nothing to do
            try:
                st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(parts[-1], dir_fd=dfd)
                else:
                    os.unlink(parts[-1], dir_fd=dfd)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    problems.append(Problem(escape_path(rel), exc.strerror or str(exc)))
            finally:
                os.close(dfd)
    finally:
        os.close(root_fd)
    return removed, problems
