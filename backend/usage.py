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
header entry, from the index segments (read on a few threads; only the stored length of each
blob and the location of each tree are kept). Blobs the index does not know are collected in
``missing`` (size 0); prune refuses to run while any are missing.

The graph persists between runs (``build(cache=)``): structure, counts, sizes, the snapshots
it counts and the index segments its sizes are of. A later build only applies what changed
since: snapshots removed (their roots released) and added (only unknown trees read), index
segments added (only they are read); when segments were removed (a prune) every size is looked
up again. So planning an eviction again reads nothing but the listings and that file.

``mark_live`` is the mark phase alone (prune): the set of live blob ids, streamed through the
same loader without keeping any edges.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import blake3
import msgpack

from backend.errors import IntegrityError, ObjectNotFound, UnsupportedFormat
from backend.format import BLOB_TREE, ENTRY, FORMAT_VERSION, PackEntry
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
JOBS_PER_TASK = 32
"""Ranged reads one thread task makes at most."""
COALESCE_GAP = 64 * 1024
"""Trees of one pack closer than this are read with one ranged read."""
MAX_RUN = 8 * 1024 * 1024
_CACHE_HEAD = struct.Struct("<4sIQQQ")  # magic, version, nodes, edges, metadata bytes
_CACHE_MAGIC = b"SDUG"
_CACHE_VERSION = 3
_NODE_BYTES = 8 + 8 + 4 + 4 + 32 + 1  # first child, size, count, children, id, is_tree
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


class _Lookup(Protocol):
    """Where a blob is stored, if known (a ``ChunkIndex``, a dict, a ``UsageGraph``'s view)."""

    def get(self, blob: BlobId, /) -> Location | None: ...


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
        locations: Mapping[bytes, Location] | _Lookup | None = None,
    ) -> None:
        self.repo = repo
        self.index: Mapping[bytes, Location] | ChunkIndex | _Lookup = (
            locations if locations is not None else repo.index
        )
        self._threads = threads
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
            # Each task reads several runs (a watch history has thousands of small packs:
            # one task per run would cost more in hand-offs than the reads themselves).
            size = max(1, min(JOBS_PER_TASK, -(-len(jobs) // (4 * self._threads))))
            tasks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
            done = self._pool.map(lambda task: [self._run(*j) for j in task], tasks)
            runs = (kids for task in done for kids in task)
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


class _Locations:
    """A graph's tree locations, as its ``TreeLoader`` asks for them."""

    def __init__(self, graph: UsageGraph) -> None:
        self._graph = graph

    def get(self, blob: BlobId, /) -> Location | None:
        return self._graph._location(blob)


class UsageGraph:
    """Reference counts over the trees and blobs of a set of snapshots.

    Args:
        repo: the repository to read trees and the index from.
        cache: a file where the graph is kept between runs (see ``build``).
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
        self.index_bytes = 0
        """Bytes of the index segments (as of ``build``)."""
        self._threads = threads
        # Node ids: a list and a dict for lookups; a graph loaded from the cache keeps the
        # ids as one bytes object until something needs them (``_id_list``, ``_num_map``):
        # planning again without changes never does, and saves their memory.
        self._ids: list[bytes] | None = []
        self._num: dict[bytes, int] | None = {}
        self._ids_raw: bytes | memoryview = b""
        # Per node (mapped from the cache file, see ``_load_cache``, until ``_own``):
        self._count: array[int] | memoryview = array("i")
        self._size: array[int] | memoryview = array("q")  # -1: not looked up yet
        self._is_tree: bytearray | memoryview = bytearray()
        # trees: index of the first child in _edges; -1: not read
        self._first: array[int] | memoryview = array("q")
        self._nkids: array[int] | memoryview = array("i")
        self._edges: array[int] | memoryview = array("I")  # child node numbers
        self._map: mmap.mmap | None = None
        self._missing_nodes: set[int] = set()  # live or dead nodes the index did not know
        # Index segments the node sizes are of: name → entries. Of these, ``_read`` were read
        # here, into ``_lengths`` (every blob) and ``_trees`` (tree locations); the others
        # only when a lookup misses (``_read_all``).
        self._segments: dict[str, int] = {}
        self._read: set[str] = set()
        self._lengths: dict[bytes, int] = {}
        self._trees: dict[bytes, Location] = {}
        self._dirty = False  # differs from the cache file

    @property
    def index_entries(self) -> int:
        """Blob entries in the index segments (as of ``build``; a duplicate counts twice)."""
        return sum(self._segments.values())

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

        With ``cache``, the graph an earlier build left in that file is brought up to date
        instead: snapshots gone since are removed from it, new ones added (reading only trees
        it does not know: trees are immutable and named by their content's hash, so the
        structure never goes stale), and only index segments written since are read. The
        file carries a checksum and is ignored when damaged; it is rewritten when anything
        changed. Read-only planning uses it; prune never does (it reads and verifies every
        tree it relies on).
        """
        g = cls(repo, cache=cache)
        segments = {i.name: i.size for i in repo.storage.list("index")}
        g.index_bytes = sum(segments.values())
        if cache is None or not g._load_cache(cache):
            g._read_segments(list(segments), cancel)
            g._segments = {s: g._segments[s] for s in segments}
        else:
            g._catch_up(segments, cancel)
        wanted = {s.id for s in snapshots}
        for sid in [sid for sid in g.roots if sid not in wanted]:
            g.remove(sid)
            g._dirty = True
        prog = progress or NullProgress()
        prog.start(len(snapshots), "mark")
        with TreeLoader(repo, g._threads, locations=_Locations(g)) as loader:
            for i in range(0, len(snapshots), ROOTS_PER_STEP):
                check_cancel(cancel)
                step = snapshots[i : i + ROOTS_PER_STEP]
                g._add_roots([(s.id, bytes.fromhex(s.tree)) for s in step], loader, cancel)
                prog.advance(len(step))
        if g._missing_nodes:
            count, ids = g._count, g._id_list()
            g.missing = {ids[n] for n in g._missing_nodes if count[n] > 0}
        if cache is not None and g._dirty:
            g._save_cache(cache)
        return g

    def _read_segments(self, names: Sequence[str], cancel: threading.Event | None) -> None:
        """Read index segments: their entry counts, every blob's stored length and where
        each tree is (a few threads: reads, decompression and hashing release the GIL)."""
        if not names:
            return
        lengths, trees = self._lengths, self._trees

        def read(name: str) -> list[tuple[PackId, list[PackEntry]]]:
            check_cancel(cancel)
            return self.repo.read_index_segment(name)

        def merge(name: str, packs: list[tuple[PackId, list[PackEntry]]]) -> None:
            n = 0
            for pack, entries in packs:
                n += len(entries)
                for e in entries:
                    if e.id not in lengths:  # of two copies, the first listed counts
                        lengths[e.id] = e.length
                        if e.type == BLOB_TREE:
                            trees[e.id] = Location(pack, e.type, e.offset, e.length, e.raw_length)
            self._segments[name] = n
            self._read.add(name)

        if len(names) < 8 or self._threads <= 1:
            for name in names:
                merge(name, read(name))
            return
        with ThreadPoolExecutor(self._threads, thread_name_prefix="index") as pool:
            for name, packs in zip(names, pool.map(read, names), strict=True):
                merge(name, packs)

    def _read_all(self) -> None:
        """Read the segments not read yet (a lookup missed the ones read so far)."""
        rest = [s for s in self._segments if s not in self._read]
        if rest:
            self._read_segments(rest, None)

    def _catch_up(self, segments: Mapping[str, int], cancel: threading.Event | None) -> None:
        """Make the cached node sizes those of the index segments in storage now."""
        gone = [s for s in self._segments if s not in segments]
        new = [s for s in segments if s not in self._segments]
        if not (gone or new):
            return
        self._dirty = True
        if gone:
            # A prune or repair replaced segments: blobs may have moved or gone. Every size is
            # looked up again, from all the segments.
            self._segments = {}
            self._read_segments(list(segments), cancel)
            self._segments = {s: self._segments[s] for s in segments}
            count, size = self._count, self._size
            self._missing_nodes = set()
            self.live_bytes = 0
            for n in range(len(count)):
                if count[n] > 0:
                    self.live_bytes += self._lookup(n)
                else:
                    size[n] = -1
            return
        # Only new segments (writers add, never change): what they name is new, or was
        # missing before (a pack in flight then).
        self._read_segments(new, cancel)
        count, size, ids = self._count, self._size, self._id_list()
        for n in list(self._missing_nodes):
            length = self._lengths.get(ids[n])
            if length is not None:
                self._missing_nodes.discard(n)
                size[n] = length + ENTRY_OVERHEAD
                if count[n] > 0:
                    self.live_bytes += size[n]

    def _location(self, blob: bytes) -> Location | None:
        """Where a tree is stored (None: in no index segment)."""
        loc = self._trees.get(blob)
        if loc is None and len(self._read) < len(self._segments):
            self._read_all()
            loc = self._trees.get(blob)
        return loc

    def _id_list(self) -> list[bytes]:
        """Node number → id."""
        if self._ids is None:
            raw = bytes(self._ids_raw)
            self._ids = [raw[o : o + 32] for o in range(0, len(raw), 32)]
            self._ids_raw = b""
        return self._ids

    def _num_map(self) -> dict[bytes, int]:
        """Id → node number."""
        if self._num is None:
            self._num = {b: i for i, b in enumerate(self._id_list())}
        return self._num

    def _node(self, blob: bytes, is_tree: bool) -> int:
        """The number of a blob, created (count 0) when new."""
        self._own()
        assert isinstance(self._count, array) and isinstance(self._size, array)
        assert isinstance(self._first, array) and isinstance(self._nkids, array)
        assert isinstance(self._is_tree, bytearray)
        n = len(self._count)
        self._num_map()[blob] = n
        self._id_list().append(blob)
        self._size.append(-1)
        self._count.append(0)
        self._is_tree.append(is_tree)
        self._first.append(-1)
        self._nkids.append(0)
        return n

    def _lookup(self, n: int) -> int:
        """Node ``n``'s size in its pack, looked up once (0 and missing when unknown)."""
        blob = self._id_list()[n]
        length = self._lengths.get(blob)
        if length is None and len(self._read) < len(self._segments):
            self._read_all()
            length = self._lengths.get(blob)
        if length is None:
            self._missing_nodes.add(n)
            size = 0
        else:
            size = length + ENTRY_OVERHEAD
        self._size[n] = size
        return size

    def _add_roots(
        self,
        roots: Sequence[tuple[str, bytes]],
        loader: TreeLoader,
        cancel: threading.Event | None,
    ) -> None:
        """Count the roots; read every tree that becomes live (batched), count its children."""
        roots = [(sid, root) for sid, root in roots if sid not in self.roots]
        if not roots:
            return
        self._own()  # the graph may grow: new nodes, new edges
        count, size, is_tree, first, nkids = (
            self._count,
            self._size,
            self._is_tree,
            self._first,
            self._nkids,
        )
        edges = self._edges
        assert isinstance(edges, array) and isinstance(first, array) and isinstance(nkids, array)
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

        self._dirty = True
        num = self._num_map()
        for sid, root in roots:
            if sid in self.roots:  # listed twice
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
        if not to_read:
            return
        ids = self._id_list()
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
        with TreeLoader(self.repo, self._threads, locations=_Locations(self)) as loader:
            self._add_roots([(snapshot_id, root)], loader, None)

    # ------------------------------------------------------------ the cache
    # One file: a header, the node arrays (first child, size: 8 bytes each; count, children,
    # edges: 4 bytes each; so every array is aligned), the ids, is_tree, msgpack metadata
    # (roots, live totals, missing nodes, the index segments the sizes are of) and a BLAKE3
    # checksum of everything before it.

    def _load_cache(self, path: Path) -> bool:
        """The graph an earlier build saved in ``path`` (False when absent or damaged).

        The file is checked (read in chunks: nothing of it stays in memory) and then mapped
        copy-on-write, its arrays used in place: planning touches only the nodes it frees, so
        only those pages are ever read into this process (``_own`` copies the arrays once the
        graph has to grow).
        """
        try:
            with open(path, "rb") as f:
                head = f.read(_CACHE_HEAD.size)
                magic, version, n, e, m = _CACHE_HEAD.unpack(head)
                total = os.fstat(f.fileno()).st_size
                if (
                    magic != _CACHE_MAGIC
                    or version != _CACHE_VERSION
                    or total != _CACHE_HEAD.size + n * _NODE_BYTES + e * 4 + m + 32
                ):
                    raise ValueError("not a usage cache of this version")
                digest = blake3.blake3(head)
                left = total - len(head) - 32
                while left:
                    chunk = f.read(min(left, 1 << 18))
                    if not chunk:
                        raise ValueError("truncated")
                    digest.update(chunk)
                    left -= len(chunk)
                if f.read(32) != digest.digest():
                    raise ValueError("damaged (checksum)")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            view = memoryview(mm)
            o = _CACHE_HEAD.size
            parts: list[memoryview] = []
            for width, length in ((8, n), (8, n), (4, n), (4, n), (4, e), (32, n), (1, n)):
                parts.append(view[o : o + width * length])
                o += width * length
            meta = msgpack.unpackb(view[o : o + m], raw=False)
            roots = {str(sid): int(k) for sid, k in meta["roots"]}
            segments = {str(s): int(k) for s, k in meta["segments"]}
            missing = {int(k) for k in meta["missing"]}
            live_bytes, live_nodes = int(meta["live"][0]), int(meta["live"][1])
            if any(not 0 <= k < n for k in (*roots.values(), *missing)):
                raise ValueError("inconsistent")
        except FileNotFoundError:
            return False
        except (OSError, ValueError, TypeError, KeyError, struct.error) as exc:
            log.info("usage cache %s ignored: %s", path, exc)
            return False
        first, size, count, nkids, edges, ids_raw, is_tree = parts
        self._map = mm
        self._first, self._size = first.cast("q"), size.cast("q")
        self._count, self._nkids, self._edges = count.cast("i"), nkids.cast("i"), edges.cast("I")
        self._ids, self._num, self._ids_raw = None, None, ids_raw
        self._is_tree = is_tree
        self.roots = roots
        self._segments = segments
        self._missing_nodes = missing
        self.live_bytes, self.live_nodes = live_bytes, live_nodes
        return True

    def _own(self) -> None:
        """Copy mapped arrays into growable ones (before the graph gets new nodes or edges)."""
        if self._map is None:
            return
        self._first, self._size = array("q", self._first), array("q", self._size)
        self._count, self._nkids = array("i", self._count), array("i", self._nkids)
        self._edges = array("I", self._edges)
        self._is_tree = bytearray(self._is_tree)
        self._id_list()
        self._map = None  # closed when the last view of it goes

    def _save_cache(self, path: Path) -> None:
        """Write the graph to ``path`` (best effort, atomic replace). Nodes no snapshot holds
        are kept (a snapshot added back revives them unread) until they outnumber the live."""
        if len(self._count) > 2 * max(1, self.live_nodes):
            self._compact()
        meta = msgpack.packb(
            {
                "roots": list(self.roots.items()),
                "segments": list(self._segments.items()),
                "missing": sorted(self._missing_nodes),
                "live": [self.live_bytes, self.live_nodes],
            }
        )
        n, e = len(self._count), len(self._edges)
        body = b"".join(
            (
                _CACHE_HEAD.pack(_CACHE_MAGIC, _CACHE_VERSION, n, e, len(meta)),
                self._first.tobytes(),
                self._size.tobytes(),
                self._count.tobytes(),
                self._nkids.tobytes(),
                self._edges.tobytes(),
                bytes(self._ids_raw) if self._ids is None else b"".join(self._ids),
                bytes(self._is_tree),
                meta,
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

    def _compact(self) -> None:
        """Drop the nodes no snapshot holds (every live tree's children are live too)."""
        count, first, nkids, edges = self._count, self._first, self._nkids, self._edges
        ids = self._id_list()
        keep = [i for i in range(len(count)) if count[i] > 0]
        new = array("i", [-1]) * len(count)
        for j, i in enumerate(keep):
            new[i] = j
        out_first = array("q", [-1]) * len(keep)
        out_nkids = array("i", bytes(4 * len(keep)))
        out_edges = array("I")
        for j, i in enumerate(keep):
            f = first[i]
            if f >= 0:
                out_first[j] = len(out_edges)
                out_nkids[j] = nkids[i]
                out_edges.extend([new[c] for c in edges[f : f + nkids[i]]])
        self._ids = [ids[i] for i in keep]
        self._num = None
        self._is_tree = bytearray(self._is_tree[i] for i in keep)
        self._first, self._nkids, self._edges = out_first, out_nkids, out_edges
        self._count = array("i", [count[i] for i in keep])
        self._size = array("q", [self._size[i] for i in keep])
        self.roots = {sid: new[k] for sid, k in self.roots.items()}
        self._missing_nodes = {new[k] for k in self._missing_nodes if new[k] >= 0}
        self._map = None

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
        n = self._num_map().get(blob)
        return n is not None and self._count[n] > 0

    def live_ids(self) -> Iterator[bytes]:
        """The id of every live tree and blob."""
        count = self._count
        return (b for b, n in self._num_map().items() if count[n] > 0)


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
