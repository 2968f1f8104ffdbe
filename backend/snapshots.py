"""Operation: create a snapshot of a source directory.

Pipeline: scan (os.scandir + lstat, main thread) → for entries whose size, mtime_ns, ctime_ns
and inode equal the parent snapshot's, reuse the parent's blob list without reading → otherwise
read → FastCDC → keyed BLAKE3 → dedup → zstd → pack writer, in a thread pool (the GIL is released
while reading, hashing and compressing, so both cores work). Directories are finalised into
tree blobs in post-order as their files complete; an unchanged directory yields the same tree
id as before. Unreadable files are reported as problems and left out, never fatal. A file that
changes while it is read is re-read (up to three times) and otherwise flagged.

Two extra modes:

* **Dirty paths** (watch mode): given the paths that changed (relative to the source), only
  those paths and their ancestor directories are looked at. An ancestor is *listed* (names
  only): names the parent snapshot has and that are not dirty reuse the parent's entry as is,
  subtrees included, by id, without a single ``stat``; dirty or new names are examined as
  usual (a dirty directory is walked in full). Totals are the parent's plus what changed.
* **Resume** (``backend.resume``): a long run periodically drains its readers, flushes packs
  and index, and journals the files completed so far; a later run takes a journaled file whose
  stat still matches without reading it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import pathspec

from backend.chunking import chunk_fd
from backend.clock import Clock, SystemClock
from backend.errors import IntegrityError, SourceError
from backend.format import BLOB_DATA, decode_tree_rows, encode_tree, entry_from_row
from backend.ids import BlobId, PackId
from backend.model import Entry, EntryKind, Problem, Snapshot, SnapshotResult, SnapshotStats, Tree
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import PACK_TARGET, PutResult, Repository, default_threads
from backend.resume import ResumeEntry, ResumeJournal
from backend.storage.local import LocalStorage
from backend.workers import FileResult, PackDone, WorkerPool, WorkerSetup, open_for_read
from backend.workers import read_xattrs as _xattrs

log = logging.getLogger(__name__)
done_line = ResumeJournal.line

MAX_INFLIGHT = 4096
MAX_PREFETCH = 128
"""Directory listings (lstat results included) read ahead at most: ~100 KiB each for a
directory of 100 files, so this bounds their memory; 4 scan threads need far fewer queued."""
BIG_FILE = 4 * 1024 * 1024
HUGE_FILE = 64 * 1024 * 1024
"""Files this large are read in this process, their chunks compressed by every thread; below
it, when worker processes are used, a large file is one worker's (it keeps the parent's
memory free of file data)."""
BATCH_FILES = 64
BATCH_BYTES = 4 * 1024 * 1024
RESUME_EVERY_S = 10.0
PROC_MIN_FILES = 512
"""Small files a run queues before it forks worker processes (smaller runs stay in threads:
a watch checkpoint of a few files must not pay for a fork)."""
"""How often a run with a resume journal makes its progress durable (drain, flush, journal)."""

DirtyTree = dict[bytes, "DirtyTree | None"]
"""Dirty paths as a tree of names: a dict is a directory to list, None a path to scan fully."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotOptions:
    """What to record and how."""

    tags: tuple[str, ...] = ()
    message: str = ""
    time: datetime | None = None
    trigger: str = "manual"
    excludes: tuple[str, ...] = ()
    """gitignore-style patterns, relative to the source."""
    exclude_caches: bool = True
    """Skip directories holding a CACHEDIR.TAG."""
    exclude_inodes: frozenset[tuple[int, int]] = frozenset()
    """(st_dev, st_ino) of directories never to enter (the repository, the cache)."""
    threads: int = 0
    processes: int = -1
    """Worker processes for small files: -1 one per core once a run is large, 0 none."""
    host: str = ""
    author: str = ""


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """What ``Store.checkpoint`` did: a snapshot, or none because nothing really changed."""

    snapshot: Snapshot | None
    """The new snapshot (HEAD moved to it), or None: no change since HEAD."""
    base: Snapshot | None
    """The snapshot the next checkpoint should compare against: the new snapshot, or HEAD
    with the tree just computed (equal content; fresher inode/ctime, so nothing is re-read)."""
    problems: tuple[Problem, ...] = ()
    duration_s: float = 0.0
    """Wall time of the whole checkpoint (scan, store, decide, save, move HEAD)."""


@dataclass(slots=True)
class _FileOut:
    content: tuple[BlobId, ...] = ()
    bytes_read: int = 0
    bytes_added: int = 0
    bytes_stored: int = 0
    st: os.stat_result | None = None
    error: str | None = None
    unstable: bool = False
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class _Slot:
    """A directory entry waiting for its content (a file being read or a subtree being built)."""

    base: Entry
    future: Future[Any] | None = None
    """A single file's future (``index`` -1) or a batch's (result list, item ``index``)."""
    node: _DirNode | None = None
    is_new: bool = False
    index: int = -1
    link: _Slot | None = None
    """A hardlink to a file this run is already reading: share its result."""

    def result(self) -> _FileOut:
        src = self.link or self
        assert src.future is not None
        r = src.future.result()
        out: _FileOut = r[src.index] if src.index >= 0 else r
        return out

    def done(self) -> bool:
        src = self.link or self
        return src.future is not None and src.future.done()


@dataclass(slots=True)
class _DirNode:
    rel: bytes
    items: list[Entry | _Slot | list[Any]] = field(default_factory=list)
    """Entries, pending slots, and parent rows (``_same_file``) that become entries."""
    tree_id: BlobId | None = None
    parent_id: BlobId | None = None
    unchanged: bool = False
    """Every entry is the parent's entry object: the tree is the parent's tree."""


@dataclass(slots=True)
class _Counters:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    files_removed: int = 0
    dirs: int = 0
    bytes_read: int = 0
    bytes_added: int = 0
    bytes_stored: int = 0
    total_files: int = 0
    total_bytes: int = 0
    prev_files: int = 0
    """Dirty mode: files of the parent that the examined paths replace (totals are deltas)."""
    prev_bytes: int = 0
    files_resumed: int = 0


def dirty_tree(paths: Collection[bytes]) -> DirtyTree | None:
    """The dirty-path tree of relative paths (``a/b/c``); None when the root itself is dirty."""
    root: DirtyTree = {}
    for p in paths:
        parts = [x for x in p.split(b"/") if x and x != b"."]
        if not parts or b".." in parts:
            return None
        node = root
        for i, name in enumerate(parts):
            if i == len(parts) - 1:
                node[name] = None  # scanned fully; anything dirty below it is covered
                break
            child = node.get(name, {})
            if child is None:
                break  # an ancestor is already scanned fully
            node[name] = child
            node = child
    return root


class TreeSink:
    """Where blobs and trees go: the repository, or (dry run) only hashes kept in memory."""

    def __init__(self, repo: Repository, dry_run: bool = False) -> None:
        self.repo = repo
        self.dry_run = dry_run
        self._trees: dict[bytes, Tree] = {}
        self._lock = threading.Lock()

    def put_blob(self, blob_type: int, blob_id: BlobId, plain: bytes | memoryview) -> PutResult:
        """Store (or, dry, only account for) a blob."""
        if self.dry_run:
            return PutResult(not self.repo.has_blob(blob_id), 0)
        return self.repo.put_blob(blob_type, blob_id, plain)

    def save_tree(self, tree: Tree) -> tuple[BlobId, PutResult]:
        """Store a tree; in a dry run keep it in memory so a diff can read it back."""
        if self.dry_run:
            tid = self.repo.hash_blob(encode_tree(tree))
            with self._lock:
                self._trees[tid] = tree
            return tid, PutResult(False, 0)
        return self.repo.save_tree(tree)

    def load_tree(self, tree_id: BlobId) -> Tree:
        """A tree from this run's memory or the repository."""
        t = self._trees.get(tree_id)
        return t if t is not None else self.repo.load_tree(tree_id)

    def load_tree_rows(self, tree_id: BlobId, data: bytes | None = None) -> list[list[Any]] | None:
        """A stored tree's raw rows (see ``format.decode_tree_rows``), each checked to be a
        12-field list; None when the tree is already decoded in memory (use ``load_tree``).
        ``data``: the tree blob's verified plaintext, when already read (prefetched)."""
        if tree_id in self._trees or self.repo.cached_tree(tree_id) is not None:
            return None
        rows = decode_tree_rows(data if data is not None else self.repo.read_blob(tree_id))
        for r in rows:
            if type(r) is not list or len(r) != 12:
                raise IntegrityError("tree entry is malformed")
        return rows


def _entry_from_stat(
    name: bytes,
    st: os.stat_result,
    kind: EntryKind,
    extra: dict[str, Any] | None = None,
    payload: Any = None,
    content: tuple[BlobId, ...] = (),
) -> Entry:
    return Entry(
        name,
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        st.st_mtime_ns,
        st.st_size if kind is EntryKind.FILE else 0,
        content,
        payload,
        st.st_ino,
        st.st_ctime_ns,
        st.st_nlink,
        extra or None,
    )


def _scan_dir(path: bytes) -> list[tuple[bytes, os.stat_result | OSError]] | OSError:
    """A directory's names (sorted) with their lstat results, or the error listing it."""
    try:
        with os.scandir(path) as it:
            names = sorted(de.name for de in it)
    except OSError as exc:
        return exc
    sep = b"/" if path != b"/" else b""
    out: list[tuple[bytes, os.stat_result | OSError]] = []
    for name in names:
        try:
            out.append((name, os.lstat(path + sep + name)))
        except OSError as exc:
            out.append((name, exc))
    return out


def _scan_dir_dirty(
    path: bytes, pmap: dict[bytes, Entry], dirty: DirtyTree
) -> list[tuple[bytes, os.stat_result | OSError | None]] | OSError:
    """Dirty mode's listing: names only; a name the parent has and that is not dirty gets
    None (reuse the parent's entry, no ``lstat``), every other name its lstat result."""
    try:
        with os.scandir(path) as it:
            names = sorted(de.name for de in it)
    except OSError as exc:
        return exc
    sep = b"/" if path != b"/" else b""
    out: list[tuple[bytes, os.stat_result | OSError | None]] = []
    for name in names:
        if name in pmap and name not in dirty:
            out.append((name, None))
            continue
        try:
            out.append((name, os.lstat(path + sep + name)))
        except OSError as exc:
            out.append((name, exc))
    return out


def _item_name(item: Entry | _Slot | list[Any]) -> bytes:
    if isinstance(item, list):
        name: bytes = item[0]
        return name
    return item.name if isinstance(item, Entry) else item.base.name


def _dir_row_ok(row: list[Any]) -> bool:
    """Whether a parent row is a directory whose every field ``entry_from_row`` checks is
    well-formed (its name is the listing's): then it may be reused without building an Entry."""
    extra = row[11]
    sub = row[7]
    return (
        row[1] == "d"
        and type(sub) is bytes
        and len(sub) == 32
        and type(row[2]) is int
        and type(row[3]) is int
        and type(row[4]) is int
        and type(row[5]) is int
        and type(row[6]) is int
        and type(row[8]) is int
        and type(row[9]) is int
        and type(row[10]) is int
        and (extra is None or type(extra) is dict)
    )


def _row_entry(row: list[Any]) -> Entry | None:
    """A parent row as an Entry; None (treated as absent from the parent) when malformed."""
    try:
        return entry_from_row(row)
    except IntegrityError as exc:
        log.warning("malformed entry in the parent tree, reading it again: %s", exc)
        return None


def _kind_of(mode: int) -> EntryKind | None:
    if stat.S_ISREG(mode):
        return EntryKind.FILE
    if stat.S_ISDIR(mode):
        return EntryKind.DIR
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    if stat.S_ISFIFO(mode):
        return EntryKind.FIFO
    if stat.S_ISSOCK(mode):
        return EntryKind.SOCKET
    if stat.S_ISCHR(mode):
        return EntryKind.CHARDEV
    if stat.S_ISBLK(mode):
        return EntryKind.BLOCKDEV
    return None


class SnapshotRun:
    """One snapshot run. Use ``create_snapshot``."""

    def __init__(
        self,
        sink: TreeSink,
        source: bytes,
        parent_tree: BlobId | None,
        options: SnapshotOptions,
        progress: Progress,
        cancel: threading.Event | None,
        *,
        dirty: DirtyTree | None = None,
        resume: dict[bytes, ResumeEntry] | None = None,
        journal: ResumeJournal | None = None,
    ) -> None:
        self.sink = sink
        self.repo = sink.repo
        self.source = source
        self.parent_tree = parent_tree
        self.opts = options
        self.progress = progress
        self.cancel = cancel
        self.params = self.repo.config.chunker
        self.c = _Counters()
        self.clock_lock = threading.Lock()
        self.problems: list[Problem] = []
        self.hardlinks: dict[tuple[int, int], _Slot | tuple[BlobId, ...]] = {}
        self._batch: list[tuple[bytes, os.stat_result]] = []
        self._batch_slots: list[_Slot] = []
        self._batch_bytes = 0
        threads = options.threads or default_threads()
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="snap-read")
        self.cpool = ThreadPoolExecutor(threads, thread_name_prefix="snap-zstd")
        self.scan_pool = ThreadPoolExecutor(4, thread_name_prefix="snap-scan")
        self._scans: dict[
            bytes, Future[list[tuple[bytes, os.stat_result | OSError]] | OSError]
        ] = {}
        self.spec = (
            pathspec.GitIgnoreSpec.from_lines(options.excludes) if options.excludes else None
        )
        self.inflight = 0
        self.queue: collections.deque[_DirNode] = collections.deque()
        self.dirty = dirty
        self.dirty_used = dirty is not None
        """False when the root had to be walked in full (its parent tree was unreadable)."""
        self._totals: dict[bytes, tuple[int, int]] = {}
        self.resume = resume or {}
        self.journal = journal
        self._done: list[str] = []
        """Files completed since the last ``save_resume`` (a compact stat: a W4-sized run
        holds up to ~100k of them between saves)."""
        self._futs: list[Future[Any]] = []
        self._futs_cap = 64
        self._next_save = time.monotonic() + RESUME_EVERY_S
        self._tree_pre: dict[bytes, Future[bytes]] = {}
        """Parent subtrees being read ahead on the scan pool (full scans)."""
        self._indexed: Callable[[bytes], bool] | None = None
        nprocs = options.processes
        self._nprocs = (os.cpu_count() or 1) if nprocs < 0 else nprocs
        if self._nprocs < 2 and nprocs < 0:
            self._nprocs = 0  # one core: a worker process would only add copying
        self._wpool: WorkerPool | None = None
        self._small_files = 0
        self._unadopted: set[bytes] = set()
        """Blobs claimed for workers that have not stored them yet (released if the run
        fails: those packs will never be written)."""
        self._dry_claimed: set[bytes] = set()
        """``blob in index`` without the property and method calls (``_same_file``)."""

    # -------------------------------------------------------------- files (worker threads)

    def _read_file(self, path: bytes, st: os.stat_result) -> _FileOut:
        out = _FileOut(st=st, extra=_xattrs(path))
        for attempt in range(3):
            fd = open_for_read(path)
            if isinstance(fd, str):
                out.error = fd
                return out
            try:
                content, read, added, stored = self._chunk_and_store(fd, st.st_size)
                after = os.fstat(fd)
            except OSError as exc:
                out.error = exc.strerror or str(exc)
                return out
            finally:
                os.close(fd)
            out.content, out.bytes_read = content, out.bytes_read + read
            out.bytes_added += added
            out.bytes_stored += stored
            stable = (
                after.st_size == st.st_size
                and after.st_mtime_ns == st.st_mtime_ns
                and after.st_ctime_ns == st.st_ctime_ns
                and read == after.st_size
            )
            out.st = after
            if stable:
                if self.journal is not None:
                    a = after
                    line = done_line(
                        path, a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino, content
                    )
                    self._done.append(line)  # list.append is atomic
                return out
            log.info("changed while read (attempt %d): %r", attempt + 1, path)
            st = after
        out.unstable = True
        return out

    def _chunk_and_store(self, fd: int, size: int) -> tuple[tuple[BlobId, ...], int, int, int]:
        ids: list[BlobId] = []
        read = added = stored = 0
        hash_blob = self.repo.hash_blob
        if size < BIG_FILE:
            for chunk in chunk_fd(fd, self.params, size):
                bid = hash_blob(chunk)
                ids.append(bid)
                read += len(chunk)
                res = self.sink.put_blob(BLOB_DATA, bid, chunk)
                if res.new:
                    added += len(chunk)
                    stored += res.stored_length
            return tuple(ids), read, added, stored
        # Large file: compress chunks on the compression pool so one file uses every core.
        futs: collections.deque[tuple[Future[PutResult], int]] = collections.deque()
        limit = 2 * (self.opts.threads or default_threads()) + 2
        for chunk in chunk_fd(fd, self.params, size):
            check_cancel(self.cancel)
            bid = hash_blob(chunk)
            ids.append(bid)
            read += len(chunk)
            if self.repo.has_blob(bid) and not self.sink.dry_run:
                continue
            # chunk_fd never reuses a window's buffer: the view stays valid, no copy needed.
            futs.append((self.cpool.submit(self.sink.put_blob, BLOB_DATA, bid, chunk), len(chunk)))
            while len(futs) >= limit:
                f, n = futs.popleft()
                res = f.result()
                if res.new:
                    added += n
                    stored += res.stored_length
        for f, n in futs:
            res = f.result()
            if res.new:
                added += n
                stored += res.stored_length
        return tuple(ids), read, added, stored

    # -------------------------------------------------------------- walking (main thread)

    def run(self) -> BlobId:
        try:
            root = self._walk(self.source, b"", self.parent_tree, self.dirty)
            if self.journal is not None:
                self._flush_batch()
                while self._futs:  # the readers' tail: keep saving progress meanwhile
                    left = max(0.0, self._next_save - time.monotonic())
                    _done, pending = concurrent.futures.wait(self._futs, timeout=left)
                    self._futs = list(pending)
                    if pending:
                        self.save_resume()
            self._drain(block=True, final=True)
            if self._wpool is not None:
                self._wpool.finish(self._ingest_packs)  # their last packs, before the index
            assert root.tree_id is not None
            return root.tree_id
        finally:
            self.scan_pool.shutdown(wait=True, cancel_futures=True)
            if self._wpool is not None:
                self._wpool.close()
                self._wpool, self._nprocs = None, 0  # an interrupted run's resume: no workers
                if self._unadopted:  # the run failed: those packs will never be written
                    self.repo.release_blobs(self._unadopted)
                    self._unadopted.clear()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.cpool.shutdown(wait=True, cancel_futures=True)

    # -------------------------------------------------------------- resume

    def save_resume(self) -> None:
        """Make the work so far durable and journal the files completed so far.

        The files are taken first, then packs and index are flushed, so every blob a record
        names was handed to the repository before the flush. A pack another reader thread is
        still writing at that moment may miss this flush's index segment; that is harmless:
        a resumed run uses a record only if the index it loads has every blob of it, and
        otherwise reads the file again.
        """
        if self.journal is None:
            return
        done, self._done = self._done, []
        if self._wpool is not None:
            self._wpool.finish(self._ingest_packs)
        self.repo.flush()
        self.journal.append_lines(done)
        self._next_save = time.monotonic() + RESUME_EVERY_S

    def _resumed(self, full: bytes, st: os.stat_result) -> tuple[BlobId, ...] | None:
        r = self.resume.get(full)
        if r is None or not r.matches(st):
            return None
        if not all(self.repo.has_blob(b) for b in r.content):
            return None  # pruned since: read it again
        return r.content

    # -------------------------------------------------------------- dirty mode

    def _subtree_totals(self, tree_id: bytes) -> tuple[int, int]:
        """(files, bytes) of a parent subtree, for dirty-mode totals."""
        hit = self._totals.get(tree_id)
        if hit is not None:
            return hit
        files = size = 0
        try:
            entries = self.sink.load_tree(BlobId(tree_id)).entries
        except Exception as exc:
            log.warning("parent tree unreadable while counting: %s", exc)
            entries = ()
        for e in entries:
            if e.kind is EntryKind.FILE:
                files += 1
                size += e.size
            elif e.kind is EntryKind.DIR and e.payload:
                f, b = self._subtree_totals(e.payload)
                files += f
                size += b
        self._totals[tree_id] = (files, size)
        return files, size

    def _account_prev(self, e: Entry) -> None:
        c = self.c
        if e.kind is EntryKind.FILE:
            c.prev_files += 1
            c.prev_bytes += e.size
        elif e.kind is EntryKind.DIR and e.payload:
            f, b = self._subtree_totals(e.payload)
            c.prev_files += f
            c.prev_bytes += b

    def _excluded(self, rel: bytes, is_dir: bool) -> bool:
        if self.spec is None:
            return False
        s = rel.decode("utf-8", "surrogateescape") + ("/" if is_dir else "")
        return self.spec.match_file(s)

    def _walk(
        self, path: bytes, rel: bytes, parent_id: BlobId | None, dirty: DirtyTree | None = None
    ) -> _DirNode:
        """Build one directory. ``dirty`` (a dict): list it, examine only dirty/new names."""
        check_cancel(self.cancel)
        node = _DirNode(rel, parent_id=parent_id)
        pmap: dict[bytes, Entry] = {}
        rmap: dict[bytes, list[Any]] | None = None
        """Full scan: the parent's raw rows by name. Files are compared against them without
        building an ``Entry``; an unchanged directory never builds one (see ``_same_file``)."""
        nrows = 0
        pre = self._tree_pre.pop(parent_id, None) if parent_id is not None else None
        if parent_id is not None:
            try:
                rows = (
                    self.sink.load_tree_rows(parent_id, pre.result() if pre is not None else None)
                    if dirty is None
                    else None
                )
                if rows is not None:
                    rmap = {r[0]: r for r in rows}
                    nrows = len(rows)
                else:
                    pmap = {e.name: e for e in self.sink.load_tree(parent_id).entries}
            except Exception as exc:  # a damaged parent only costs re-reading
                log.warning(
                    "parent tree of %s unreadable, reading it again: %s", _show(rel or b"."), exc
                )
                node.parent_id = None
        if dirty is not None and node.parent_id is None:
            dirty = None  # nothing to reuse: walk this directory in full
            if not rel:
                self.dirty_used = False
        listing: list[tuple[bytes, os.stat_result | OSError | None]] | OSError
        if dirty is None:
            fut = self._scans.pop(path, None)
            listing = fut.result() if fut is not None else _scan_dir(path)  # type: ignore[assignment]
        else:
            listing = _scan_dir_dirty(path, pmap, dirty)
        if isinstance(listing, OSError):
            self.problems.append(Problem(_show(rel or b"."), listing.strerror or str(listing)))
            # Unreadable now: keep what the parent snapshot had (never record it as emptied,
            # which would make a later restore --delete remove its files).
            node.unchanged = node.parent_id is not None
            self.queue.append(node)
            return node
        # Prefetch the subdirectories' listings and stats on the scan pool: on a cold inode
        # cache the walk is bound by metadata I/O, and this keeps several requests in flight.
        sep = b"/" if path != b"/" else b""
        for name, st_or_exc in listing:
            if (
                st_or_exc is not None
                and not isinstance(st_or_exc, OSError)
                and stat.S_ISDIR(st_or_exc.st_mode)
                and len(self._scans) < MAX_PREFETCH
                and (dirty is None or not isinstance(dirty.get(name), dict))
            ):
                sub = path + sep + name
                self._scans[sub] = self.scan_pool.submit(_scan_dir, sub)
                # ... and the parent snapshot's tree of it (read, decompress, verify: the GIL
                # is released), so the walk does not wait for tree blobs one by one.
                row = rmap.get(name) if rmap is not None else None
                if row is not None and _dir_row_ok(row) and len(self._tree_pre) < 512:
                    tid = BlobId(row[7])
                    if tid not in self._tree_pre and self.repo.cached_tree(tid) is None:
                        self._tree_pre[tid] = self.scan_pool.submit(self.repo.read_blob, tid)
        unchanged = node.parent_id is not None
        matched = 0
        items = node.items
        kept: set[bytes] = set()
        """Dirty mode: names whose parent entry is reused or accounted for below them."""
        for name, st_or_exc in listing:
            if st_or_exc is None:  # dirty mode: not dirty, reuse the parent's entry as is
                items.append(pmap[name])
                kept.add(name)
                matched += 1
                continue
            full = path + sep + name
            crel = rel + b"/" + name if rel else name
            if isinstance(st_or_exc, OSError):
                self.problems.append(Problem(_show(crel), st_or_exc.strerror or str(st_or_exc)))
                continue
            st = st_or_exc
            kind = _kind_of(st.st_mode)
            if kind is None:
                continue
            if self.spec is not None and self._excluded(crel, kind is EntryKind.DIR):
                continue
            row = None
            if rmap is not None:
                row = rmap.get(name)
                if row is None:
                    prev = None
                else:
                    matched += 1
                    if kind is EntryKind.FILE and self._same_file(row, st):
                        items.append(row)  # the parent's entry, as a raw row
                        continue
                    if kind is EntryKind.DIR and _dir_row_ok(row):
                        prev = None  # reused as a row below
                    else:
                        prev = _row_entry(row)
                        row = None
            else:
                prev = pmap.get(name)
                if prev is not None:
                    matched += 1
            if kind is EntryKind.FILE:
                if not self._add_file(items, full, name, st, prev):
                    unchanged = False
                    if self.journal is not None and time.monotonic() >= self._next_save:
                        self.save_resume()
            elif kind is EntryKind.DIR:
                if (st.st_dev, st.st_ino) in self.opts.exclude_inodes:
                    continue
                if self.opts.exclude_caches and self._is_cache_dir(full):
                    continue
                if row is not None:  # full scan, a well-formed parent row (_dir_row_ok)
                    child = self._walk(full, crel, BlobId(row[7]), None)
                    self.c.dirs += 1
                    if (
                        row[9] == st.st_ctime_ns
                        and row[8] == st.st_ino
                        and row[5] == st.st_mtime_ns
                    ):
                        if child.unchanged:
                            items.append(row)
                            continue
                        extra = row[11] or None
                    else:
                        extra = _xattrs(full)
                    unchanged = False
                    items.append(
                        _Slot(_entry_from_stat(name, st, EntryKind.DIR, extra), node=child)
                    )
                    continue
                same_meta = (
                    prev is not None
                    and prev.kind is EntryKind.DIR
                    and prev.ctime_ns == st.st_ctime_ns
                    and prev.ino == st.st_ino
                    and prev.mtime_ns == st.st_mtime_ns
                )
                prev_sub = prev.payload if prev is not None and prev.kind is EntryKind.DIR else None
                sub_dirty = dirty.get(name) if dirty is not None and prev_sub else None
                if sub_dirty is not None:
                    kept.add(name)  # listed in dirty mode: it accounts for itself
                child = self._walk(full, crel, BlobId(prev_sub) if prev_sub else None, sub_dirty)
                self.c.dirs += 1
                if same_meta and child.unchanged:
                    assert prev is not None
                    items.append(prev)
                    continue
                unchanged = False
                extra = prev.extra if same_meta and prev is not None else _xattrs(full)
                items.append(_Slot(_entry_from_stat(name, st, EntryKind.DIR, extra), node=child))
            else:
                if (
                    prev is not None
                    and prev.kind is kind
                    and prev.ctime_ns == st.st_ctime_ns
                    and prev.ino == st.st_ino
                    and prev.mtime_ns == st.st_mtime_ns
                ):
                    items.append(prev)
                    continue
                unchanged = False
                payload: Any = None
                if kind is EntryKind.SYMLINK:
                    try:
                        payload = os.readlink(full)
                    except OSError as exc:
                        self.problems.append(Problem(_show(crel), exc.strerror or str(exc)))
                        continue
                elif kind in (EntryKind.CHARDEV, EntryKind.BLOCKDEV):
                    payload = st.st_rdev
                extra = _xattrs(full) if kind is not EntryKind.SYMLINK else None
                items.append(_entry_from_stat(name, st, kind, extra, payload))
        if rmap is not None:
            if matched != nrows:
                unchanged = False
                present = {_item_name(i) for i in items}
                gone = {}
                for name, row in rmap.items():
                    if name not in present and (e := _row_entry(row)) is not None:
                        gone[name] = e
                self._count_removed(gone, present)
        elif matched != len(pmap):
            unchanged = False
            self._count_removed(pmap, {_item_name(i) for i in items})
        if dirty is not None:
            for name, e in pmap.items():
                if name not in kept:
                    self._account_prev(e)
        node.unchanged = unchanged
        self._flush_batch()
        self.queue.append(node)
        self._drain(block=self.inflight > MAX_INFLIGHT)
        if self.journal is not None and time.monotonic() >= self._next_save:
            self.save_resume()
        return node

    def _same_file(self, row: list[Any], st: os.stat_result) -> bool:
        """``_add_file`` for a parent row that matches (size, mtime, ctime, inode, mode, nlink,
        every blob still indexed): count it as unmodified and return True, reading nothing.

        Only fields compared or type-checked here are taken over, so the row becomes a valid
        ``Entry`` later (``entry_from_row``); anything unusual returns False (the slow path).
        """
        content = row[7]
        extra = row[11]
        if not (
            row[6] == st.st_size
            and row[5] == st.st_mtime_ns
            and row[9] == st.st_ctime_ns
            and row[8] == st.st_ino
            and row[1] == "f"
            and row[2] == stat.S_IMODE(st.st_mode)
            and row[10] == st.st_nlink
            and type(content) is list
            and type(row[3]) is int
            and type(row[4]) is int
            and (extra is None or type(extra) is dict)
        ):
            return False
        if self._indexed is None:
            self._indexed = self.repo.index.contains_fn()
        indexed = self._indexed
        for b in content:
            # issue 6: a blob repair dropped from the index is read and stored again.
            if type(b) is not bytes or len(b) != 32:
                return False
            if not indexed(b) and not self.repo.has_blob(BlobId(b)):
                return False
        c = self.c
        c.total_files += 1
        c.total_bytes += st.st_size
        c.files_unmodified += 1
        if st.st_nlink > 1:
            self.hardlinks.setdefault((st.st_dev, st.st_ino), tuple(content))
        self.progress.advance(1)
        return True

    def _is_cache_dir(self, path: bytes) -> bool:
        """Whether a directory holds a valid CACHEDIR.TAG; the prefetched listing (if any)
        answers "no" without opening a file."""
        fut = self._scans.get(path)
        if fut is not None:
            listing = fut.result()
            if isinstance(listing, OSError) or not any(n == b"CACHEDIR.TAG" for n, _st in listing):
                return False
        return _is_cache_dir(path)

    def _add_file(
        self,
        items: list[Entry | _Slot | list[Any]],
        full: bytes,
        name: bytes,
        st: os.stat_result,
        prev: Entry | None,
    ) -> bool:
        """Queue or reuse a file; returns whether the entry is the parent's, unchanged."""
        c = self.c
        c.total_files += 1
        c.total_bytes += st.st_size
        if (
            prev is not None
            and prev.kind is EntryKind.FILE
            and prev.size == st.st_size
            and prev.mtime_ns == st.st_mtime_ns
            and prev.ctime_ns == st.st_ctime_ns
            and prev.ino == st.st_ino
            # issue 6 (check/repair): a blob that repair dropped from the index is read and
            # stored again instead of being referenced from the parent (heal by re-snapshot).
            and all(self.repo.has_blob(b) for b in prev.content)
        ):
            # Same size, mtime, ctime and inode: the content is the parent's, not read again.
            # (ctime moves on chmod/chown/link too, so mode, owner and nlink are equal as well.)
            c.files_unmodified += 1
            if st.st_nlink > 1:
                self.hardlinks.setdefault((st.st_dev, st.st_ino), prev.content)
            self.progress.advance(1)
            if prev.mode == stat.S_IMODE(st.st_mode) and prev.nlink == st.st_nlink:
                items.append(prev)
                return True
            items.append(_entry_from_stat(name, st, EntryKind.FILE, prev.extra, None, prev.content))
            return False
        is_new = prev is None or prev.kind is not EntryKind.FILE
        if self.resume and st.st_nlink == 1:
            content = self._resumed(full, st)
            if content is not None:  # stored by an interrupted run: not read again
                c.files_resumed += 1
                if is_new:
                    c.files_new += 1
                else:
                    c.files_changed += 1
                self.progress.advance(1)
                items.append(
                    _entry_from_stat(name, st, EntryKind.FILE, _xattrs(full), None, content)
                )
                return False
        extra: dict[str, Any] | None = None  # xattrs are read by the worker
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1:
            extra = {"dev": st.st_dev}
            known = self.hardlinks.get(key)
            if known is not None:
                base = _entry_from_stat(name, st, EntryKind.FILE, extra)
                if isinstance(known, tuple):
                    items.append(_replace_entry(base, content=known))
                else:
                    self.inflight += 1
                    items.append(_Slot(base, is_new=is_new, link=known))
                return False
        slot = _Slot(_entry_from_stat(name, st, EntryKind.FILE, extra), is_new=is_new)
        self.inflight += 1
        if st.st_size >= BIG_FILE and (self._nprocs <= 0 or st.st_size >= HUGE_FILE):
            slot.future = self.pool.submit(self._read_file, full, st)
            if self.journal is not None:
                self._track(slot.future)
        else:
            slot.index = len(self._batch)
            self._batch.append((full, st))
            self._batch_slots.append(slot)
            self._batch_bytes += st.st_size
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self._flush_batch()
        if st.st_nlink > 1:
            self.hardlinks[key] = slot
        items.append(slot)
        return False

    def _track(self, fut: Future[Any]) -> None:
        """Remember a reader future for ``run``'s tail (resume journaling). Finished ones are
        dropped now and then: kept, they would hold every file's result (its stat and blob
        ids) until the end of the run, ~1 KiB per file."""
        self._futs.append(fut)
        if len(self._futs) >= self._futs_cap:  # a batch future holds up to 64 files' results
            self._futs = [f for f in self._futs if not f.done()]
            self._futs_cap = max(64, 2 * len(self._futs))

    def _flush_batch(self) -> None:
        if not self._batch:
            return
        if self._use_procs(len(self._batch)):
            assert self._wpool is not None
            batch = self._batch
            items = [(full, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for full, st in batch]
            fut = self._wpool.submit(items, partial(self._ingest, batch))
        else:
            fut = self.pool.submit(self._read_batch, self._batch)
        if self.journal is not None:
            self._track(fut)
        for slot in self._batch_slots:
            slot.future = fut
        self._batch, self._batch_slots, self._batch_bytes = [], [], 0

    # -------------------------------------------------------------- worker processes

    def _use_procs(self, n: int) -> bool:
        """Whether this batch goes to worker processes (forked on first need)."""
        if self._wpool is not None:
            return True
        if self._nprocs <= 0:
            return False
        self._small_files += n
        if self._small_files < PROC_MIN_FILES:
            return False
        repo = self.repo
        index = repo.index  # loaded before the fork: the workers inherit it
        # Workers write their own packs to a local directory (plain files: fork-safe); other
        # storages (S3 clients hold threads) get the encoded blobs back through the parent.
        own = isinstance(repo.storage, LocalStorage) and not self.sink.dry_run
        crypto = repo.crypto
        setup = WorkerSetup(
            id_key=repo.id_key,
            params=self.params,
            level=repo.config.compression_level,
            known=index.__contains__,
            compress=not self.sink.dry_run,
            storage=repo.storage if own else None,
            pack_target=PACK_TARGET,
            seal_blob=crypto.seal_blob if own and crypto is not None else None,
            seal_header=repo.pack_header_sealer() if own else None,
        )
        try:
            self._wpool = WorkerPool(self._nprocs, setup, self._claim)
        except (OSError, ValueError) as exc:  # no fork here, or out of processes: use threads
            log.info("worker processes unavailable (%s): reading in threads", exc)
            self._nprocs = 0
            return False
        return True

    def _claim(self, ids: list[bytes]) -> bytes:
        """A worker's candidate new blobs: claim each one nobody stored or claimed yet (in a
        worker's feeder thread)."""
        answer = bytearray(len(ids))
        if self.sink.dry_run:
            has, dry = self.repo.has_blob, self._dry_claimed
            for i, b in enumerate(ids):
                if b not in dry and not has(BlobId(b)):
                    dry.add(b)
                    answer[i] = 1
            return bytes(answer)
        claim, unadopted = self.repo.claim_blob, self._unadopted
        for i, b in enumerate(ids):
            if claim(BlobId(b)):
                unadopted.add(b)
                answer[i] = 1
        return bytes(answer)

    def _ingest(
        self,
        batch: list[tuple[bytes, os.stat_result]],
        results: list[FileResult],
        packs: list[PackDone],
    ) -> list[_FileOut]:
        """A worker's reply (in its feeder thread, in order): pack the new blobs it sent back
        (or adopt the packs it wrote), and make the files' results."""
        repo = self.repo
        dry = self.sink.dry_run
        unadopted = self._unadopted
        journal = self.journal is not None
        out: list[_FileOut] = []
        for (full, st0), r in zip(batch, results, strict=True):
            st = r.st or st0
            fo = _FileOut(st=st, extra=r.extra, bytes_read=r.bytes_read)
            if r.error is not None:
                fo.error = r.error
                out.append(fo)
                continue
            for bid, stored, slen, n in r.new:  # every one claimed for this file
                fo.bytes_added += n
                if dry:
                    continue
                if stored is not None:
                    slen = repo.put_claimed_blob(BLOB_DATA, BlobId(bid), stored, n).stored_length
                    unadopted.discard(bid)  # packed here: the parent's flush writes it
                fo.bytes_stored += slen
            fo.content = cast(tuple[BlobId, ...], r.content)
            fo.unstable = r.unstable
            if journal and not r.unstable:
                self._done.append(
                    done_line(
                        full, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, r.content
                    )
                )
            out.append(fo)
        self._ingest_packs([], packs)
        return out

    def _ingest_packs(self, _results: list[FileResult], packs: list[PackDone]) -> None:
        for pack_id, entries in packs:
            self.repo.adopt_pack(PackId(pack_id), entries)
            self._unadopted.difference_update(e.id for e in entries)

    def _read_batch(self, batch: list[tuple[bytes, os.stat_result]]) -> list[_FileOut]:
        out = []
        for full, st in batch:
            if self.cancel is not None and self.cancel.is_set():
                break
            out.append(self._read_file(full, st))
        return out

    def _count_removed(self, pmap: dict[bytes, Entry], present: set[bytes]) -> None:
        for name, e in pmap.items():
            if name in present:
                continue
            if e.kind is EntryKind.FILE:
                self.c.files_removed += 1
            elif e.kind is EntryKind.DIR and e.payload:
                try:
                    sub = self.sink.load_tree(BlobId(e.payload))
                except Exception:
                    continue
                self._count_removed({x.name: x for x in sub.entries}, set())

    def _drain(self, block: bool, final: bool = False) -> None:
        """Finalise queued directories whose files are done, in post-order.

        With ``block`` (too much in flight) it waits until half the work is done; with
        ``final`` it finalises everything.
        """
        q = self.queue
        while q:
            if not final and not _ready(q[0]) and (not block or self.inflight <= MAX_INFLIGHT // 2):
                return
            self._finalize(q[0])
            q.popleft()

    def _finalize(self, node: _DirNode) -> None:
        if node.unchanged and node.parent_id is not None:
            node.tree_id = node.parent_id  # every entry is the parent's: same tree, same id
            node.items = []
            return
        entries: list[Entry] = []
        c = self.c
        for item in node.items:
            if isinstance(item, Entry):
                entries.append(item)
                continue
            if isinstance(item, list):  # a parent row checked by _same_file
                entries.append(entry_from_row(item))
                continue
            if item.node is not None:
                assert item.node.tree_id is not None
                entries.append(_replace_entry(item.base, payload=bytes(item.node.tree_id)))
                continue
            out = item.result()
            self.inflight -= 1
            ent = item.base
            if out.error is not None or out.unstable:
                rel = node.rel + b"/" + ent.name if node.rel else ent.name
                if out.error is not None:
                    self.problems.append(Problem(_show(rel), out.error))
                    c.total_files -= 1
                    c.total_bytes -= ent.size
                    continue
                self.problems.append(Problem(_show(rel), "file changed while being read"))
            st = out.st
            size, mtime_ns, ctime_ns = ent.size, ent.mtime_ns, ent.ctime_ns
            if st is not None and (st.st_size != size or st.st_mtime_ns != mtime_ns):
                c.total_bytes += st.st_size - size
                size, mtime_ns, ctime_ns = st.st_size, st.st_mtime_ns, st.st_ctime_ns
            extra = ent.extra
            if out.extra:
                extra = {**(extra or {}), **out.extra}
            entries.append(
                Entry(
                    ent.name,
                    EntryKind.FILE,
                    ent.mode,
                    ent.uid,
                    ent.gid,
                    mtime_ns,
                    size,
                    out.content,
                    None,
                    ent.ino,
                    ctime_ns,
                    ent.nlink,
                    extra,
                )
            )
            if item.is_new:
                c.files_new += 1
            else:
                c.files_changed += 1
            if item.link is None:  # a hardlink's content was read (and counted) once
                c.bytes_read += out.bytes_read
                c.bytes_added += out.bytes_added
                c.bytes_stored += out.bytes_stored
            self.progress.advance(1)
        tid, res = self.sink.save_tree(Tree(tuple(entries)))
        if res.new:
            c.bytes_stored += res.stored_length
        node.tree_id = tid
        node.items = []


def _ready(node: _DirNode) -> bool:
    for item in node.items:
        if isinstance(item, _Slot) and item.node is None and not item.done():
            return False
    return True


def _replace_entry(e: Entry, **kw: Any) -> Entry:
    d = {s: getattr(e, s) for s in Entry.__slots__}
    d.update(kw)
    return Entry(**d)


def _is_cache_dir(path: bytes) -> bool:
    try:
        with open(path + b"/CACHEDIR.TAG", "rb") as f:
            return f.read(43) == b"Signature: 8a477f597d28d172789f06886806bc55"
    except OSError:
        return False


def _show(rel: bytes) -> str:
    """A path for people: invalid UTF-8 and control characters escaped."""
    return escape_path(rel)


def escape_path(p: bytes | str) -> str:
    """Render a path printable and unambiguous.

    Invalid UTF-8 bytes become ``\\xNN``, control characters ``\\n``, ``\\t``, ``\\xNN`` or
    ``\\uNNNN``, and a literal backslash is doubled, so distinct names never print alike.
    """
    if isinstance(p, str):
        p = p.encode("utf-8", "surrogateescape")
    s = p.decode("utf-8", "surrogateescape")
    if s.isprintable() and "\\" not in s:
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x100:
            out.append(f"\\x{o:02x}")
        else:
            out.append(f"\\u{o:04x}")
    return "".join(out)


def create_snapshot(
    repo: Repository,
    source: str | os.PathLike[str],
    *,
    parent: Snapshot | None = None,
    options: SnapshotOptions | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    save: Callable[[Snapshot], Snapshot] | None = None,
    dirty: Collection[bytes] | None = None,
    resume: ResumeJournal | None = None,
) -> SnapshotResult:
    """Snapshot a source directory into the repository.

    Args:
        repo: the open repository (the caller holds a shared lock).
        source: the directory to snapshot.
        parent: the previous snapshot of this source; unchanged files are not read again.
        options: tags, message, time, trigger, excludes, threads.
        progress: receives one ``advance`` per file.
        cancel: set to stop; raises ``Cancelled`` and writes no snapshot.
        clock: the time source for the snapshot time.
        save: how to persist the snapshot object (defaults to ``repo.save_snapshot``).
        dirty: only these paths (relative to the source, bytes) changed since ``parent``;
            everything else is reused from it (see the module docstring). None: scan all.
        resume: the source's resume journal; a long run journals its progress there and an
            interrupted run's journal is used, then removed once the snapshot is saved.

    Returns:
        The snapshot and the problems met (unreadable files).

    Raises:
        SourceError: the source does not exist or is not a directory.
    """
    snap, problems = build_snapshot(
        repo,
        source,
        parent=parent,
        options=options,
        progress=progress,
        cancel=cancel,
        clock=clock,
        dirty=dirty,
        resume=resume,
    )
    saved = (save or repo.save_snapshot)(snap)
    if resume is not None:
        resume.clear()
    return SnapshotResult(saved, problems)


def build_snapshot(
    repo: Repository,
    source: str | os.PathLike[str],
    *,
    parent: Snapshot | None = None,
    options: SnapshotOptions | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    clock: Clock | None = None,
    dirty: Collection[bytes] | None = None,
    resume: ResumeJournal | None = None,
) -> tuple[Snapshot, tuple[Problem, ...]]:
    """Everything ``create_snapshot`` does but saving the snapshot object.

    Every blob and tree is stored and flushed (packs, then index), so the caller may save the
    returned snapshot (its ``id`` is empty) or drop it, e.g. when its tree equals the parent's.
    The resume journal, if any, is left for the caller to clear.
    """
    opts = options or SnapshotOptions()
    progress = progress or NullProgress()
    clock = clock or SystemClock()
    src = Path(os.path.abspath(source))
    bsrc = os.fsencode(src)
    try:
        st = os.stat(bsrc)
    except FileNotFoundError:
        raise SourceError(f"source {escape_path(bsrc)} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read source {escape_path(bsrc)}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SourceError(f"source {escape_path(bsrc)} is not a directory")
    started = time.monotonic()
    progress.start(None, f"snapshot {escape_path(bsrc)}")
    parent_tree = BlobId(bytes.fromhex(parent.tree)) if parent is not None else None
    dtree = dirty_tree(dirty) if dirty is not None and parent is not None else None
    entries = resume.load() if resume is not None else {}
    if resume is not None and resume.message:
        progress.note(resume.message)
    run = SnapshotRun(
        TreeSink(repo),
        bsrc,
        parent_tree,
        opts,
        progress,
        cancel,
        dirty=dtree,
        resume=entries,
        journal=resume,
    )
    try:
        root = run.run()
        check_cancel(cancel)
    except BaseException:
        if resume is not None:
            _save_interrupted(run)
        raise
    repo.flush()
    c = run.c
    if c.files_resumed:
        log.info("%d files taken from the resume journal", c.files_resumed)
    total_files, total_bytes, unmodified = c.total_files, c.total_bytes, c.files_unmodified
    if dtree is not None and run.dirty_used and parent is not None:
        total_files = parent.stats.total_files + c.total_files - c.prev_files
        total_bytes = parent.stats.total_bytes + c.total_bytes - c.prev_bytes
        unmodified = max(0, total_files - c.files_new - c.files_changed)
    stats = SnapshotStats(
        files_new=c.files_new,
        files_changed=c.files_changed,
        files_unmodified=unmodified,
        files_removed=c.files_removed,
        dirs=c.dirs,
        bytes_read=c.bytes_read,
        bytes_added=c.bytes_added,
        bytes_stored=c.bytes_stored,
        total_files=total_files,
        total_bytes=total_bytes,
        duration_s=round(time.monotonic() - started, 3),
    )
    snap = Snapshot(
        id="",
        time=opts.time or clock.now(),
        host=opts.host or socket.gethostname(),
        source=os.fsdecode(bsrc),
        tree=bytes(root).hex(),
        parent=parent.id if parent is not None else None,
        tags=tuple(opts.tags),
        message=opts.message,
        author=opts.author or _user(),
        trigger=opts.trigger,
        stats=stats,
    )
    return snap, tuple(run.problems)


def _save_interrupted(run: SnapshotRun) -> None:
    """After an interruption (the pools are shut down): keep what was stored, for resuming."""
    try:
        run.save_resume()
    except Exception as exc:  # the interruption may be the storage failing: best effort
        log.warning("could not save the resume state: %s", exc)


def scan_live_tree(
    repo: Repository,
    source: str | os.PathLike[str],
    *,
    parent: Snapshot | None,
    options: SnapshotOptions | None = None,
    cancel: threading.Event | None = None,
) -> tuple[BlobId, TreeSink]:
    """Compute the tree of a live directory without storing anything (for diff --live)."""
    bsrc = os.fsencode(Path(os.path.abspath(source)))
    if not os.path.isdir(bsrc):
        raise SourceError(f"source {escape_path(bsrc)} is not a directory")
    sink = TreeSink(repo, dry_run=True)
    parent_tree = BlobId(bytes.fromhex(parent.tree)) if parent is not None else None
    run = SnapshotRun(sink, bsrc, parent_tree, options or SnapshotOptions(), NullProgress(), cancel)
    return run.run(), sink


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return ""
