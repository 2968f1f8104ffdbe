"""Usage accounting: which blobs each snapshot holds alone (operations layer; reads only).

A ``UsageGraph`` reference-counts the Merkle DAG of a set of snapshots. Every node (tree or data
blob) counts the edges that reach it from live parents: one per snapshot whose root it is, one
per occurrence in a live tree. A tree's children are counted once, when the tree first becomes
live, so each distinct tree is read once however many snapshots share it (the Merkle property:
an unchanged subtree is the same node everywhere).

Invariants:
- Every node known to the graph has a small integer number; its 32-byte id is only a key of
  one dict. Per node the graph keeps, in compact arrays, its reference count, its size, whether
  it is a tree and (trees) where its children start in one flat array of child numbers: about
  130 bytes per node and 4 per edge, instead of Python tuples of ids.
- A node is live while its count is above zero. Removing a snapshot decrements its root; a
  node whose count reaches zero is freed and decrements its children (refcounting is exact on a
  DAG: there are no cycles). The nodes freed are exactly those no other snapshot reaches, so
  the bytes they occupy are the snapshot's *exclusive size*. A freed node keeps its children,
  so a snapshot added again revives it without reading anything.
- Trees are read in batches (``TreeLoader``): grouped by pack, neighbours in one ranged read,
  opened, verified and decoded on a few threads (reads, zstd and blake3 release the GIL).

A node's size is what it occupies in its pack: the stored (compressed) length plus its pack
header entry. Blobs the index does not know are collected in ``missing`` (size 0); prune
refuses to run while any are missing.

``mark_live`` is the mark phase alone (prune): the set of live blob ids, streamed through the
same loader without keeping any edges.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3
import msgpack

from backend.errors import IntegrityError, ObjectNotFound, UnsupportedFormat
from backend.format import BLOB_TREE, ENTRY, FORMAT_VERSION
from backend.ids import BlobId, PackId
from backend.index import ChunkIndex, Location
from backend.model import EntryKind, Snapshot
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository

__all__ = ["SnapshotUsage", "TreeLoader", "UsageGraph", "mark_live", "snapshot_usage"]

log = logging.getLogger(__name__)

ENTRY_OVERHEAD = ENTRY.size
"""Bytes of a blob's entry in its pack header."""
READ_THREADS = 4
"""Threads reading and decoding trees."""
BATCH_TREES = 2048
"""Trees read per batch (bounds the decoded trees held at once)."""
ROOTS_PER_STEP = 256
"""Snapshots whose roots are expanded together (progress advances per step)."""
COALESCE_GAP = 64 * 1024
"""Trees of one pack closer than this are read with one ranged read."""
MAX_RUN = 8 * 1024 * 1024
_CACHE_HEAD = struct.Struct("<4sIQQ")
_CACHE_MAGIC = b"SDUG"
_CACHE_VERSION = 1
_FILE = EntryKind.FILE.value
_DIR = EntryKind.DIR.value

Kids = list[tuple[bytes, bool]]


def tree_children(data: bytes) -> Kids:
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
        out: Kids = []
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
    return out


def _unreadable(tree: bytes, why: object) -> IntegrityError:
    return IntegrityError(f"tree {tree.hex()[:12]} cannot be read ({why}); run 'snapdeck check'")


class TreeLoader:
    """Reads trees in batches: grouped by pack, neighbours in one read, decoded in threads.

    Every tree is verified against its id (``Repository.open_stored_blob``). A tree the index
    does not know goes through ``Repository.read_blob`` (a pack being written, or written by
    another process since the index was loaded).
    """

    def __init__(
        self,
        repo: Repository,
        threads: int = READ_THREADS,
        *,
        locations: Mapping[bytes, Location] | None = None,
    ) -> None:
        self.repo = repo
        self.index: Mapping[bytes, Location] | ChunkIndex = (
            locations if locations is not None else repo.index
        )
        self._pool = (
            ThreadPoolExecutor(threads, thread_name_prefix="trees") if threads > 1 else None
        )

    def close(self) -> None:
        """Stop the reading threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> TreeLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, pack: PackId, run: list[tuple[int, int, int, bytes]]) -> list[Kids]:
        start = run[0][0]
        end = max(off + length for off, length, _r, _t in run)
        try:
            data = self.repo.storage.get_range("data", pack, start, end - start)
        except ObjectNotFound:
            raise _unreadable(run[0][3], f"pack {pack[:12]} is missing") from None
        out = []
        for off, length, raw, tree in run:
            stored = data[off - start : off - start + length]
            try:
                if len(stored) != length:
                    raise IntegrityError(f"pack {pack[:12]} is truncated")
                plain = self.repo.open_stored_blob(BlobId(tree), stored, raw, f"pack {pack[:12]}")
                out.append(tree_children(plain))
            except IntegrityError as exc:
                raise _unreadable(tree, exc) from None
        return out

    def _stray(self, tree: bytes) -> list[Kids]:
        try:
            return [tree_children(self.repo.read_blob(BlobId(tree)))]
        except IntegrityError as exc:
            raise _unreadable(tree, exc) from None

    def load(self, trees: Sequence[bytes]) -> Iterator[tuple[bytes, Kids]]:
        """(tree id, children) for every tree of ``trees`` (distinct), in no fixed order."""
        by_pack: dict[PackId, list[tuple[int, int, int, bytes]]] = {}
        strays: list[bytes] = []
        get = self.index.get
        for t in trees:
            loc = get(BlobId(t))
            if loc is None:
                strays.append(t)
            else:
                by_pack.setdefault(loc.pack, []).append((loc.offset, loc.length, loc.raw_length, t))
        jobs: list[tuple[PackId, list[tuple[int, int, int, bytes]]]] = []
        for pack, items in by_pack.items():
            items.sort()
            run = [items[0]]
            for it in items[1:]:
                prev = run[-1]
                if it[0] - (prev[0] + prev[1]) <= COALESCE_GAP and (
                    it[0] + it[1] - run[0][0] <= MAX_RUN
                ):
                    run.append(it)
                else:
                    jobs.append((pack, run))
                    run = [it]
            jobs.append((pack, run))
        runs: Iterable[list[Kids]]
        if self._pool is not None and len(jobs) + len(strays) > 1:
            runs = self._pool.map(lambda j: self._run(*j), jobs)
            stray_kids: Iterable[list[Kids]] = self._pool.map(self._stray, strays)
        else:
            runs = (self._run(*j) for j in jobs)
            stray_kids = (self._stray(t) for t in strays)
        for (_pack, run), kids in zip(jobs, runs, strict=True):
            for item, k in zip(run, kids, strict=True):
                yield item[3], k
        for t, k1 in zip(strays, stray_kids, strict=True):
            yield t, k1[0]


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
        cache: a file where the tree structure read is kept between runs (see ``build``).
    """

    def __init__(
        self, repo: Repository, *, cache: Path | None = None, threads: int = READ_THREADS
    ) -> None:
        self.repo = repo
        self.cache = cache
        self.roots: dict[str, int] = {}
        """Snapshot id → its root's node number."""
        self.live_bytes = 0
        """Bytes occupied by every live node."""
        self.live_nodes = 0
        """How many trees and blobs are live."""
        self.missing: set[bytes] = set()
        """Blob ids referenced by a live tree that the index does not know."""
        self.trees_read = 0
        """Trees read from the repository (not from the cache)."""
        self._threads = threads
        self._index = repo.index
        self._num: dict[bytes, int] = {}
        self._ids: list[bytes] = []
        self._count = array("i")
        self._size = array("q")  # -1: not looked up yet
        self._is_tree = bytearray()
        self._first = array("q")  # trees: index of the first child in _edges; -1: not read
        self._nkids = array("i")
        self._edges = array("i")

    # ------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        repo: Repository,
        snapshots: Sequence[Snapshot],
        *,
        cache: Path | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> UsageGraph:
        """The graph of ``snapshots`` (the mark phase: every distinct tree is read once).

        With ``cache``, the children of trees read by an earlier build are taken from that
        file (trees are immutable and named by their content's hash, so an entry never goes
        stale; the file carries a checksum and is ignored when damaged), and it is rewritten
        with the live structure when trees had to be read. Read-only planning uses it; prune
        never does (it reads and verifies every tree it relies on).
        """
        g = cls(repo, cache=cache)
        if cache is not None:
            g._load_cache(cache)
        prog = progress or NullProgress()
        prog.start(len(snapshots), "mark")
        with TreeLoader(repo, g._threads) as loader:
            for i in range(0, len(snapshots), ROOTS_PER_STEP):
                check_cancel(cancel)
                step = snapshots[i : i + ROOTS_PER_STEP]
                g._add_roots([(s.id, bytes.fromhex(s.tree)) for s in step], loader, cancel)
                prog.advance(len(step))
        if cache is not None and (g.trees_read or len(g._ids) > 2 * max(1, g.live_nodes)):
            g._save_cache(cache)
        return g

    def _node(self, blob: bytes, is_tree: bool) -> int:
        """The number of a blob, created (count 0) when new."""
        n = len(self._ids)
        self._num[blob] = n
        self._ids.append(blob)
        self._size.append(-1)
        self._count.append(0)
        self._is_tree.append(is_tree)
        self._first.append(-1)
        self._nkids.append(0)
        return n

    def _lookup(self, n: int) -> int:
        """Node ``n``'s size in its pack, looked up once (0 and ``missing`` when unknown)."""
        blob = self._ids[n]
        loc = self._index.get(BlobId(blob))
        if loc is None:
            self.missing.add(blob)
            size = 0
        else:
            size = loc.length + ENTRY_OVERHEAD
        self._size[n] = size
        return size

    def _add_roots(
        self,
        roots: Sequence[tuple[str, bytes]],
        loader: TreeLoader,
        cancel: threading.Event | None,
    ) -> None:
        """Count the roots; read every tree that becomes live (batched), count its children."""
        count, size, is_tree, first, nkids = (
            self._count,
            self._size,
            self._is_tree,
            self._first,
            self._nkids,
        )
        edges = self._edges
        to_read: list[int] = []  # trees made live whose children are not known yet
        stack: list[int] = []  # nodes that just became live (count 0 → 1)

        def drain() -> None:
            # a node that became live passes a reference on to each of its known children
            # (or waits to be read); a child that becomes live in turn goes on the stack
            while stack:
                n = stack.pop()
                sz = size[n]
                self.live_bytes += sz if sz >= 0 else self._lookup(n)
                self.live_nodes += 1
                if is_tree[n]:
                    f = first[n]
                    if f < 0:
                        to_read.append(n)
                        continue
                    for c in edges[f : f + nkids[n]]:
                        k = count[c]
                        count[c] = k + 1
                        if not k:
                            stack.append(c)

        num = self._num
        for sid, root in roots:
            if sid in self.roots:
                continue
            n = num.get(root)
            if n is None:
                n = self._node(root, True)
            self.roots[sid] = n
            k = count[n]
            count[n] = k + 1
            if not k:
                stack.append(n)
                drain()
        ids = self._ids
        node = self._node
        while to_read:
            check_cancel(cancel)
            batch, to_read = to_read[:BATCH_TREES], to_read[BATCH_TREES:]
            where = {ids[n]: n for n in batch}
            for tree, kids in loader.load(list(where)):
                self.trees_read += 1
                n = where[tree]
                first[n] = len(edges)
                nkids[n] = len(kids)
                for child, sub in kids:
                    c = num.get(child)
                    if c is None:
                        c = node(child, sub)
                    edges.append(c)
                    k = count[c]
                    count[c] = k + 1
                    if not k:
                        stack.append(c)
                drain()

    def add(self, snapshot_id: str, root: bytes) -> None:
        """Make a snapshot live: count its root, reading every tree that becomes live."""
        with TreeLoader(self.repo, self._threads) as loader:
            self._add_roots([(snapshot_id, root)], loader, None)

    # ------------------------------------------------------------ the cache

    def _load_cache(self, path: Path) -> None:
        """Known nodes and tree children from ``path`` (nothing when absent or damaged)."""
        try:
            data = path.read_bytes()
            magic, version, n, e = _CACHE_HEAD.unpack_from(data)
            body = memoryview(data)[: len(data) - 32]
            if (
                magic != _CACHE_MAGIC
                or version != _CACHE_VERSION
                or len(data) != _CACHE_HEAD.size + n * (32 + 1 + 8 + 4) + e * 4 + 32
                or blake3.blake3(body).digest() != data[-32:]
            ):
                raise ValueError("not a usage cache of this version, or damaged")
        except FileNotFoundError:
            return
        except (OSError, ValueError, struct.error) as exc:
            log.info("usage cache %s ignored: %s", path, exc)
            return
        o = _CACHE_HEAD.size
        ids = [data[o + 32 * i : o + 32 * i + 32] for i in range(n)]
        o += 32 * n
        is_tree = bytearray(data[o : o + n])
        o += n
        first = array("q")
        first.frombytes(data[o : o + 8 * n])
        o += 8 * n
        nkids = array("i")
        nkids.frombytes(data[o : o + 4 * n])
        o += 4 * n
        edges = array("i")
        edges.frombytes(data[o : o + 4 * e])
        if any(f + k > e for f, k in zip(first, nkids, strict=True)) or (
            e and (min(edges) < 0 or max(edges) >= n)
        ):
            log.info("usage cache %s ignored: inconsistent", path)
            return
        self._ids = ids
        self._num = {b: i for i, b in enumerate(ids)}
        self._is_tree = is_tree
        self._first = first
        self._nkids = nkids
        self._edges = edges
        self._count = array("i", bytes(4 * n))
        self._size = array("q", [-1]) * n

    def _save_cache(self, path: Path) -> None:
        """Write the live part of the structure to ``path`` (best effort, atomic replace)."""
        count, first, nkids, edges = self._count, self._first, self._nkids, self._edges
        keep = [i for i in range(len(self._ids)) if count[i] > 0]
        new = array("i", [-1]) * len(self._ids)
        for j, i in enumerate(keep):
            new[i] = j
        out_first = array("q", [-1]) * len(keep)
        out_nkids = array("i", bytes(4 * len(keep)))
        out_edges = array("i")
        for j, i in enumerate(keep):
            f = first[i]
            if f >= 0:  # live trees were all read: their children are live too
                out_first[j] = len(out_edges)
                out_nkids[j] = nkids[i]
                out_edges.extend([new[c] for c in edges[f : f + nkids[i]]])
        body = b"".join(
            (
                _CACHE_HEAD.pack(_CACHE_MAGIC, _CACHE_VERSION, len(keep), len(out_edges)),
                b"".join(self._ids[i] for i in keep),
                bytes(self._is_tree[i] for i in keep),
                out_first.tobytes(),
                out_nkids.tobytes(),
                out_edges.tobytes(),
            )
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(body + blake3.blake3(body).digest())
            os.replace(tmp, path)
        except OSError as exc:
            log.info("usage cache %s not written: %s", path, exc)
            tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------ removing

    def _release(self, root: int, *, apply: bool) -> tuple[int, int]:
        """Decrement ``root``; returns (bytes, nodes) freed. ``apply=False`` only simulates."""
        count, size, is_tree, first, nkids, edges = (
            self._count,
            self._size,
            self._is_tree,
            self._first,
            self._nkids,
            self._edges,
        )
        freed = nodes = 0
        stack = [root]
        if apply:
            while stack:
                n = stack.pop()
                c = count[n] - 1
                count[n] = c
                if c:
                    continue
                freed += size[n]
                nodes += 1
                if is_tree[n]:
                    f = first[n]
                    stack.extend(edges[f : f + nkids[n]])
            self.live_bytes -= freed
            self.live_nodes -= nodes
        else:
            taken: dict[int, int] = {}  # decrements so far per node
            while stack:
                n = stack.pop()
                t = taken.get(n, 0) + 1
                taken[n] = t
                if t < count[n]:
                    continue
                freed += size[n]
                nodes += 1
                if is_tree[n]:
                    f = first[n]
                    stack.extend(edges[f : f + nkids[n]])
        return freed, nodes

    def exclusive(self, snapshot_id: str) -> tuple[int, int]:
        """(bytes, blobs) that removing the snapshot now would free; nothing changes."""
        return self._release(self.roots[snapshot_id], apply=False)

    def remove(self, snapshot_id: str) -> tuple[int, int]:
        """Remove a snapshot from the graph; returns the (bytes, blobs) it freed."""
        return self._release(self.roots.pop(snapshot_id), apply=True)

    # ------------------------------------------------------------ queries

    def is_live(self, blob: bytes) -> bool:
        """Whether a blob or tree is reachable from a snapshot in the graph."""
        n = self._num.get(blob)
        return n is not None and self._count[n] > 0

    def live_ids(self) -> Iterator[bytes]:
        """The id of every live tree and blob."""
        count = self._count
        return (b for b, n in self._num.items() if count[n] > 0)


def snapshot_usage(graph: UsageGraph) -> dict[str, SnapshotUsage]:
    """Every snapshot's exclusive size (one pass: exclusive sets are disjoint)."""
    out = {}
    for sid in graph.roots:
        b, n = graph.exclusive(sid)
        out[sid] = SnapshotUsage(sid, b, n)
    return out


def mark_live(
    repo: Repository,
    snapshots: Sequence[Snapshot],
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> dict[bytes, int]:
    """The mark phase of prune, streamed: every blob and tree reachable from ``snapshots``.

    Returns a dict with every live id as key and -1 as value (prune fills in the pack that
    keeps each blob). Held in memory: that set, the locations of tree blobs only (streamed
    from the index segments; data blobs, most of the index, are skipped) and one batch of
    decoded trees.
    """
    prog = progress or NullProgress()
    prog.start(len(snapshots), "mark")
    live: dict[bytes, int] = {}
    with TreeLoader(repo, locations=tree_locations(repo, cancel)) as loader:
        for i in range(0, len(snapshots), ROOTS_PER_STEP):
            check_cancel(cancel)
            step = snapshots[i : i + ROOTS_PER_STEP]
            frontier: list[bytes] = []
            for s in step:
                root = bytes.fromhex(s.tree)
                if root not in live:
                    live[root] = -1
                    frontier.append(root)
            while frontier:
                check_cancel(cancel)
                batch, frontier = frontier[:BATCH_TREES], frontier[BATCH_TREES:]
                for _tree, kids in loader.load(batch):
                    for child, sub in kids:
                        if child not in live:
                            live[child] = -1
                            if sub:
                                frontier.append(child)
            prog.advance(len(step))
    return live


def tree_locations(
    repo: Repository, cancel: threading.Event | None = None
) -> dict[bytes, Location]:
    """Where every tree blob is stored, streamed from the index segments one at a time (a
    tree in no segment is read through ``Repository.read_blob``)."""
    out: dict[bytes, Location] = {}
    for seg in repo.index_segments():
        check_cancel(cancel)
        for pack, entries in repo.read_index_segment(seg):
            for e in entries:
                if e.type == BLOB_TREE and e.id not in out:
                    out[e.id] = Location(pack, e.type, e.offset, e.length, e.raw_length)
    return out
