"""Usage accounting: which blobs each snapshot holds alone (operations layer; reads only).

A ``UsageGraph`` reference-counts the Merkle DAG of a set of snapshots. Every node (tree or data
blob, keyed by its 32-byte id) counts the edges that reach it from live parents: one per
snapshot whose root it is, one per occurrence in a live tree. A tree's children are counted
once, when the tree first becomes live, so each distinct tree is loaded once however many
snapshots share it (the Merkle property: an unchanged subtree is the same node everywhere).

Invariants:
- ``refs[id] = count << 1 | is_tree``; a node is live while its count is above zero.
- Removing a snapshot decrements its root; a node whose count reaches zero is freed and
  decrements its children (refcounting is exact on a DAG: there are no cycles). The nodes
  freed are exactly those no other snapshot reaches, so the bytes they occupy are the
  snapshot's *exclusive size*, and the freed sets of different snapshots are disjoint: computing
  every snapshot's exclusive size costs one pass over the nodes, not one per snapshot.
- Memory is one dict entry per live node (the graph never holds whole trees; trees are read
  through the repository's bounded tree cache).

A node's size is what it occupies in its pack: the stored (compressed) length plus its pack
header entry. Blobs the index does not know are collected in ``missing`` (size 0); prune
refuses to run while any are missing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from backend.errors import IntegrityError, UnsupportedFormat
from backend.format import ENTRY, FORMAT_VERSION
from backend.ids import BlobId
from backend.model import EntryKind, Snapshot
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository

__all__ = ["SnapshotUsage", "UsageGraph", "snapshot_usage"]

ENTRY_OVERHEAD = ENTRY.size
"""Bytes of a blob's entry in its pack header."""
CHILDREN_CACHE_EDGES = 400_000
"""The children lists kept in memory (an LRU bounded by edges, ~30 MB at most)."""
_FILE = EntryKind.FILE.value
_DIR = EntryKind.DIR.value


def tree_children(data: bytes) -> tuple[tuple[bytes, bool], ...]:
    """The (blob id, is_tree) references of a tree blob's plaintext, without building entries.

    The mark phase only needs what a tree points to, so it reads the msgpack rows of
    ``format.encode_tree`` directly (kind at index 1, payload at index 7) instead of
    validating every name and field (``format.decode_tree``), which is ~10x slower. Damage is
    still an ``IntegrityError``; the blob was verified against its id before.
    """
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
        version = doc["v"]
        rows = doc["e"]
        if version > FORMAT_VERSION:
            raise UnsupportedFormat(f"tree format version {version} is newer than supported")
        out: list[tuple[bytes, bool]] = []
        for r in rows:
            kind = r[1]
            if kind == _FILE:
                payload = r[7]
                if payload:
                    for b in payload:
                        if not isinstance(b, bytes) or len(b) != 32:
                            raise IntegrityError("file entry content is not a list of blob ids")
                        out.append((b, False))
            elif kind == _DIR:
                sub = r[7]
                if not isinstance(sub, bytes) or len(sub) != 32:
                    raise IntegrityError("directory entry has no valid subtree id")
                out.append((sub, True))
    except (IntegrityError, UnsupportedFormat):
        raise
    except Exception as exc:
        raise IntegrityError(f"tree is malformed: {exc}") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SnapshotUsage:
    """What one snapshot occupies."""

    id: str
    exclusive_bytes: int
    """Stored bytes (compressed, in packs) that no other snapshot references."""
    exclusive_blobs: int


class UsageGraph:
    """Reference counts over the trees and blobs of a set of snapshots.

    Args:
        repo: the repository to read trees and the index from.
    """

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.refs: dict[bytes, int] = {}
        self.roots: dict[str, bytes] = {}
        self.live_bytes = 0
        """Bytes occupied by every live node."""
        self.missing: set[bytes] = set()
        """Blob ids referenced by a live tree that the index does not know."""
        self._index = repo.index
        self._cache: OrderedDict[bytes, tuple[tuple[bytes, bool], ...]] = OrderedDict()
        self._cached_edges = 0

    # ------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        repo: Repository,
        snapshots: Sequence[Snapshot],
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> UsageGraph:
        """The graph of ``snapshots`` (the mark phase: every distinct tree is read once)."""
        g = cls(repo)
        prog = progress or NullProgress()
        prog.start(len(snapshots), "mark")
        for s in snapshots:
            check_cancel(cancel)
            g.add(s.id, BlobId(bytes.fromhex(s.tree)))
            prog.advance(1)
        return g

    def size_of(self, node: bytes) -> int:
        """Bytes a node occupies in its pack (0 when the index does not know it)."""
        loc = self._index.get(BlobId(node))
        if loc is None:
            self.missing.add(node)
            return 0
        return loc.length + ENTRY_OVERHEAD

    def _children(self, tree_id: bytes) -> tuple[tuple[bytes, bool], ...]:
        """(child id, is_tree) for every file blob and subtree of a tree, in entry order."""
        hit = self._cache.get(tree_id)
        if hit is not None:
            self._cache.move_to_end(tree_id)
            return hit
        try:
            kids = tree_children(self.repo.read_blob(BlobId(tree_id)))
        except IntegrityError as exc:
            raise IntegrityError(
                f"tree {tree_id.hex()[:12]} cannot be read ({exc}); run 'snapdeck check'"
            ) from None
        self._cache[tree_id] = kids
        self._cached_edges += len(kids) + 1
        while self._cached_edges > CHILDREN_CACHE_EDGES and len(self._cache) > 1:
            _k, old = self._cache.popitem(last=False)
            self._cached_edges -= len(old) + 1
        return kids

    def add(self, snapshot_id: str, root: bytes) -> None:
        """Make a snapshot live: count its root, expanding every tree that becomes live."""
        if snapshot_id in self.roots:
            return
        self.roots[snapshot_id] = root
        refs = self.refs
        stack: list[tuple[bytes, bool]] = [(root, True)]
        while stack:
            node, is_tree = stack.pop()
            v = refs.get(node)
            if v is not None:
                refs[node] = v + 2
                continue
            refs[node] = 2 | is_tree
            self.live_bytes += self.size_of(node)
            if is_tree:
                stack.extend(self._children(node))

    # ------------------------------------------------------------ removing

    def _release(self, root: bytes, *, apply: bool) -> tuple[int, int]:
        """Decrement ``root``; returns (bytes, nodes) freed. ``apply=False`` only simulates."""
        refs = self.refs
        taken: dict[bytes, int] = {}  # simulation: decrements so far per node
        freed = nodes = 0
        stack = [root]
        while stack:
            node = stack.pop()
            v = refs[node]
            count = v >> 1
            if apply:
                if count > 1:
                    refs[node] = v - 2
                    continue
                del refs[node]
            else:
                t = taken.get(node, 0) + 1
                taken[node] = t
                if t < count:
                    continue
            freed += self.size_of(node)
            nodes += 1
            if v & 1:
                stack.extend(child for child, _t in self._children(node))
        if apply:
            self.live_bytes -= freed
        return freed, nodes

    def exclusive(self, snapshot_id: str) -> tuple[int, int]:
        """(bytes, blobs) that removing the snapshot now would free; nothing changes."""
        return self._release(self.roots[snapshot_id], apply=False)

    def remove(self, snapshot_id: str) -> tuple[int, int]:
        """Remove a snapshot from the graph; returns the (bytes, blobs) it freed."""
        root = self.roots.pop(snapshot_id)
        return self._release(root, apply=True)

    @property
    def live_nodes(self) -> int:
        """How many trees and blobs are live."""
        return len(self.refs)

    def is_live(self, blob: bytes) -> bool:
        """Whether a blob or tree is reachable from a snapshot in the graph."""
        return blob in self.refs


def snapshot_usage(graph: UsageGraph) -> dict[str, SnapshotUsage]:
    """Every snapshot's exclusive size (one pass: exclusive sets are disjoint)."""
    out = {}
    for sid in graph.roots:
        b, n = graph.exclusive(sid)
        out[sid] = SnapshotUsage(sid, b, n)
    return out
