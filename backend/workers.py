"""Worker processes for the snapshot pipeline: read, chunk, hash and compress small files.

Threads alone top out at about 1.3 cores on a tree of small files: every file costs a few
dozen microseconds of Python between the GIL-free calls (open, read, hash, compress, fstat),
and the threads queue for the GIL. So a large snapshot forks worker processes (the ``fork``
start method: a worker inherits the open repository's index, copy-on-write, to skip blobs that
are already stored without asking). A worker returns, per file, its blob ids and the *encoded*
new blobs (``format.encode_blob``); the parent dedups them against everything stored since the
fork, seals them when the repository is encrypted, and packs them. Only the parent writes to the
repository, so write order, locking and crash safety are those of the in-process path.

This module imports nothing heavier than the codecs: it runs in the forked children.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, cast

import blake3
import zstandard

from backend.chunking import chunk_fd
from backend.errors import ObjectExists, StoreError
from backend.format import BLOB_DATA, ChunkerParams, PackEntry, Sealer, encode_blob
from backend.ids import BlobId
from backend.packs import FinishedPack, PackWriter

_O_NOATIME = getattr(os, "O_NOATIME", 0)
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
SEEN_MAX = 200_000
"""Ids a worker remembers having sent (so a duplicate is not compressed twice); then forgets."""


def open_for_read(path: bytes) -> int | str:
    """A read-only fd of a regular file, never following a symlink, without updating its
    atime where allowed (O_NOATIME needs ownership); or the reason it cannot be opened."""
    try:
        return os.open(path, READ_FLAGS | _O_NOATIME)
    except PermissionError:
        try:
            return os.open(path, READ_FLAGS)
        except OSError as exc:
            return exc.strerror or str(exc)
    except OSError as exc:
        return exc.strerror or str(exc)


def read_xattrs(path: bytes) -> dict[str, Any] | None:
    """A file's extended attributes as an entry's ``extra`` (None when it has none)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    if not names:
        return None
    out: dict[bytes, bytes] = {}
    for n in names:
        try:
            out[n.encode("utf-8", "surrogateescape")] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            continue
    return {"xattrs": dict(sorted(out.items()))} if out else None


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    """What a worker needs; inherited by fork (never pickled)."""

    id_key: bytes
    params: ChunkerParams
    level: int
    known: Callable[[bytes], bool]
    """Whether a blob id is stored already (the parent's index at fork time)."""
    compress: bool = True
    """False for a dry run: new blobs are reported with empty stored bytes."""
    storage: Any = None
    """Where the worker writes its own packs (a local directory store: its writes are plain
    files, safe in a forked child); None: new blobs go back to the parent, which packs them."""
    pack_target: int = 16 * 1024 * 1024
    seal_blob: Callable[[bytes, bytes], bytes] | None = None
    seal_header: Sealer | None = None


class FileResult(NamedTuple):
    """One file as a worker read it."""

    st: os.stat_result | None
    """fstat after the read; None when it equals the walk's lstat (size, mtime, ctime) or the
    file could not be opened."""
    content: tuple[bytes, ...]
    new: list[tuple[bytes, bytes | None, int, int]]
    """(blob id, stored bytes or None when the worker packs it itself, stored length, plain
    length) of the blobs the worker found new."""
    bytes_read: int
    error: str | None
    unstable: bool
    extra: dict[str, Any] | None


PackDone = tuple[str, tuple[PackEntry, ...]]
"""A pack a worker stored: (pack id, entries)."""

_setup: WorkerSetup | None = None
_cctx: zstandard.ZstdCompressor | None = None
_seen: set[bytes] = set()
_writer: PackWriter | None = None
_written: list[PackDone] = []


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this worker when the parent dies (kill -9 included)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere the pipe's EOF ends the worker once its batch is done
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(0)


def init_worker(setup: WorkerSetup) -> None:
    """Set a worker up: Ctrl-C goes to the parent, which cancels and stops the workers."""
    global _setup, _cctx, _writer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Forked from an app (the TUI's event loop, a watcher): drop its handlers and its loop's
    # wakeup fd, which the child shares with the parent, so a signal here never reaches them.
    for name in ("SIGTERM", "SIGHUP", "SIGWINCH", "SIGCHLD", "SIGTSTP", "SIGCONT"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread (cannot happen in a forked child)
        pass
    _setup = setup
    _cctx = zstandard.ZstdCompressor(level=setup.level)
    _seen.clear()
    _written.clear()
    _writer = PackWriter(setup.pack_target, setup.seal_header) if setup.storage else None


Claim = Callable[[list[bytes]], bytes]  # the parent's side of ("ids", ids) → ("store", answer)
"""Asks the parent which of these candidate blob ids to store: one byte (0/1) per id. The
parent claims the ones it says yes to, so a blob two workers meet is stored once."""


@dataclass(slots=True)
class _Read:
    """A file read and hashed, waiting for the parent's answer on its new blobs."""

    st: os.stat_result | None
    content: tuple[bytes, ...]
    chunks: list[bytes]
    """Ids of the candidates: blobs neither stored at fork time nor met before here."""
    bytes_read: int
    error: str | None
    unstable: bool
    extra: dict[str, Any] | None


CLAIM_BYTES = 8 * 1024 * 1024
"""Candidate plaintext a worker holds before it asks which blobs to store (bounds its memory
on large files: a 50 MiB file is settled window by window)."""


@dataclass(slots=True)
class _Batch:
    """A batch read and hashed; its candidates wait for the parent's answer."""

    reads: list[_Read] = field(default_factory=list)
    pending: list[tuple[bytes, memoryview]] = field(default_factory=list)
    pending_bytes: int = 0
    settled: dict[bytes, tuple[bytes | None, int, int]] = field(default_factory=dict)
    """Blobs stored: id → (stored bytes, or None when packed here; stored length; plain
    length)."""
    asked: bool = False
    """Its candidates were sent; the answer is the next one not yet read."""


class _Link:
    """A worker's end of the pipe. Batches are pipelined: the worker asks about batch k's
    candidates, reads batch k+1 while the parent answers, then compresses batch k's blobs
    and replies, so it never sits idle waiting for the parent's thread to be scheduled."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.ahead: collections.deque[tuple[str, Any]] = collections.deque()
        self.answers: collections.deque[bytes] = collections.deque()
        self.prev: _Batch | None = None
        self.cur: _Batch | None = None

    def _dispatch(self) -> None:
        """Read one message: an answer, or a job sent ahead."""
        kind, payload = self.conn.recv()
        if kind == "store":
            self.answers.append(cast(bytes, payload))
        else:
            self.ahead.append((kind, payload))

    def next_job(self) -> tuple[str, Any]:
        while not self.ahead:
            self._dispatch()
        return self.ahead.popleft()

    def idle(self) -> bool:
        """No job is waiting (answers that came in meanwhile are put aside)."""
        while not self.ahead and self.conn.poll():
            self._dispatch()
        return not self.ahead

    def ask(self, b: _Batch) -> None:
        self.conn.send(("ids", [bid for bid, _c in b.pending]))
        b.asked = True

    def answer(self) -> bytes:
        """The answer to the oldest question not yet answered (answers come in order)."""
        while not self.answers:
            self._dispatch()
        return self.answers.popleft()

    def settle(self, b: _Batch) -> None:
        """Wait for the answer about ``b``'s candidates and store the blobs it gives."""
        if not b.asked:
            return
        answer = self.answer()
        b.asked = False
        s = _setup
        assert s is not None
        writer = _writer
        for (bid, chunk), take in zip(b.pending, answer, strict=True):
            if not take:
                continue
            n = len(chunk)
            stored = encode_blob(chunk, _cctx) if s.compress else b""
            if writer is None:
                b.settled[bid] = (stored, len(stored), n)
                continue
            if s.seal_blob is not None:
                stored = s.seal_blob(bid, stored)
            b.settled[bid] = (None, len(stored), n)
            done = writer.add(BLOB_DATA, BlobId(bid), stored, n)
            if done is not None:
                _store_pack(done)
        b.pending.clear()
        b.pending_bytes = 0

    def settle_now(self, b: _Batch) -> None:
        """Settle ``b`` at once (a large file's candidates fill the budget mid-batch): the
        batch before it is completed first, so answers and replies stay in order."""
        self.complete_prev()
        self.ask(b)
        self.settle(b)

    def complete_prev(self) -> None:
        """Settle the previous batch and send its reply."""
        b, self.prev = self.prev, None
        if b is None:
            return
        try:
            self.settle(b)
            out = []
            for r in b.reads:
                new = [(bid, *b.settled[bid]) for bid in r.chunks if bid in b.settled]
                out.append(
                    FileResult(r.st, r.content, new, r.bytes_read, r.error, r.unstable, r.extra)
                )
            self.reply(("ok", (out, _take_written())))
        except EOFError:
            raise
        except BaseException as exc:
            self.reply(_error(exc))

    def reply(self, msg: tuple[str, Any]) -> None:
        try:
            self.conn.send(msg)
        except (OSError, ValueError):
            raise EOFError from None  # the parent is gone
        except Exception as exc:  # an exception that does not pickle
            self.conn.send(("err", StoreError(f"{type(exc).__name__}: {exc}")))


_link: _Link | None = None


def _take_written() -> list[PackDone]:
    packs = list(_written)
    _written.clear()
    return packs


def _error(exc: BaseException) -> tuple[str, Any]:
    keep = isinstance(exc, StoreError | OSError)
    return ("err", exc if keep else StoreError(f"{type(exc).__name__}: {exc}"))


def read_batch(link: _Link, items: list[tuple[bytes, int, int, int]]) -> None:
    """Read files given as (path, size, mtime_ns, ctime_ns) from the walk's lstat, hash them,
    ask which new blobs to store; the reply goes out once the answer is in (see ``_Link``)."""
    b = _Batch()
    link.cur = b
    try:
        b.reads = [read_one(*it) for it in items]
    except EOFError:
        raise
    except BaseException as exc:
        link.cur = None
        link.complete_prev()
        link.reply(_error(exc))
        return
    link.cur = None
    if b.pending:
        link.ask(b)
    link.complete_prev()
    link.prev = b
    if link.idle():
        link.complete_prev()


def read_one(path: bytes, size: int, mtime_ns: int, ctime_ns: int) -> _Read:
    """Read, chunk and hash one file; read it again if it changes meanwhile (three attempts,
    then it is flagged unstable with the last content read)."""
    s = _setup
    assert s is not None, "init_worker was not called"
    extra = read_xattrs(path)
    total_read = 0
    after: os.stat_result | None = None
    for _attempt in range(3):
        fd = open_for_read(path)
        if isinstance(fd, str):
            return _Read(after, (), [], total_read, fd, False, extra)
        try:
            content, chunks, read = _chunk(fd, size, s)
            after = os.fstat(fd)
        except OSError as exc:
            return _Read(after, (), [], total_read, exc.strerror or str(exc), False, extra)
        finally:
            os.close(fd)
        total_read += read
        if (
            after.st_size == size
            and after.st_mtime_ns == mtime_ns
            and after.st_ctime_ns == ctime_ns
            and read == after.st_size
        ):
            # Unchanged since the walk's lstat: the parent has that stat (not sent back).
            return _Read(None, content, chunks, total_read, None, False, extra)
        size, mtime_ns, ctime_ns = after.st_size, after.st_mtime_ns, after.st_ctime_ns
    return _Read(after, content, chunks, total_read, None, True, extra)


def _chunk(fd: int, size: int, s: WorkerSetup) -> tuple[tuple[bytes, ...], list[bytes], int]:
    link = _link
    assert link is not None and link.cur is not None
    b = link.cur
    ids: list[bytes] = []
    cands: list[bytes] = []
    read = 0
    key = s.id_key
    known = s.known
    seen = _seen
    for chunk in chunk_fd(fd, s.params, size):
        bid = blake3.blake3(chunk, key=key).digest()
        ids.append(bid)
        n = len(chunk)
        read += n
        if bid in seen or known(bid):
            continue
        if len(seen) >= SEEN_MAX:
            seen.clear()
        seen.add(bid)
        cands.append(bid)
        b.pending.append((bid, chunk))
        b.pending_bytes += n
        if b.pending_bytes >= CLAIM_BYTES:
            link.settle_now(b)
    return tuple(ids), cands, read


def _store_pack(pack: FinishedPack) -> None:
    s = _setup
    assert s is not None and s.storage is not None
    try:
        s.storage.put("data", pack.id, pack.parts)
    except ObjectExists:
        pass  # identical content under the same name: already there
    _written.append((pack.id, pack.entries))


# ---------------------------------------------------------------- the pool


class WorkerDied(StoreError):
    """A worker process ended unexpectedly (killed, out of memory)."""


def _serve(conn: Connection, setup: WorkerSetup, others: list[Connection], parent: int) -> None:
    """A worker's loop. ("batch", items) → ("ids", candidate ids) ← ("store", answer) →
    ("ok", (results, packs stored meanwhile)); ("finish", None) → ("ok", ([], [its last
    pack])); ("stop", None) ends it. Replies come in the order of the jobs."""
    global _link
    _die_with_parent(parent)
    for c in others:  # inherited by fork: closed, so each worker sees its own EOF
        c.close()
    init_worker(setup)
    link = _link = _Link(conn)
    try:
        while True:
            if link.prev is not None and link.idle():
                link.complete_prev()
            kind, payload = link.next_job()
            if kind == "batch":
                read_batch(link, payload)
                continue
            link.complete_prev()
            if kind == "stop":
                return
            try:
                if _writer is not None and (done := _writer.finish()) is not None:
                    _store_pack(done)
                link.reply(("ok", ([], _take_written())))
            except EOFError:
                raise
            except BaseException as exc:
                link.reply(_error(exc))
    except (EOFError, OSError):
        return  # the parent is gone


Ingest = Callable[[list[FileResult], list[PackDone]], Any]
IN_FLIGHT = 3
"""Jobs sent ahead to a worker: one it reads, one whose answer it waits for, one queued."""


@dataclass(slots=True)
class _Handle:
    proc: Any
    conn: Connection
    q: queue.SimpleQueue[tuple[str, Any, Future[Any], Ingest | None]]
    pending: int = 0
    dead: BaseException | None = None
    thread: threading.Thread | None = None


class WorkerPool:
    """Forked worker processes, each fed by a parent thread that keeps ``IN_FLIGHT`` jobs in flight
    (one running, one queued) and hands each reply, in order, to the job's ``ingest``
    callback — so per worker, blobs are claimed before the pack holding them is adopted."""

    def __init__(self, n: int, setup: WorkerSetup, claim: Claim) -> None:
        self._claim = claim
        self._closed = False
        ctx = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._handles: list[_Handle] = []
        try:
            for _ in range(n):
                mine, theirs = ctx.Pipe()
                others = [x.conn for x in self._handles]  # earlier workers' parent ends
                proc = ctx.Process(
                    target=_serve,
                    args=(theirs, setup, others, os.getpid()),
                    daemon=True,
                    name="snapdeck-worker",
                )
                proc.start()
                theirs.close()
                h = _Handle(proc, mine, queue.SimpleQueue())
                h.thread = threading.Thread(
                    target=self._pump, args=(h,), daemon=True, name="snap-worker-io"
                )
                h.thread.start()
                self._handles.append(h)
        except BaseException:
            self.close()
            raise

    def submit(self, items: list[tuple[bytes, int, int, int]], ingest: Ingest) -> Future[Any]:
        """Queue a batch on the least busy live worker; the future holds ``ingest``'s value."""
        fut: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise StoreError("the snapshot worker processes are stopped")
            live = [h for h in self._handles if h.dead is None]
            if not live:
                raise WorkerDied("every snapshot worker process has died")
            h = min(live, key=lambda x: x.pending)
            h.pending += 1
        h.q.put(("batch", items, fut, ingest))
        return fut

    def finish(self, ingest: Ingest) -> None:
        """Make every worker store its partly filled pack (after the batches queued before),
        and hand the packs to ``ingest``. Raises the first worker failure."""
        if self._closed:
            raise StoreError("the snapshot worker processes are stopped")
        futs = []
        for h in self._handles:
            fut: Future[Any] = Future()
            with self._lock:
                h.pending += 1
            h.q.put(("finish", None, fut, ingest))
            futs.append(fut)
        for f in futs:
            f.result()

    def close(self) -> None:
        """Stop the workers (a worker finishes the batch it is on first)."""
        with self._lock:
            self._closed = True
        for h in self._handles:
            h.q.put(("stop", None, Future(), None))
        for h in self._handles:
            if h.thread is not None:
                h.thread.join(timeout=30)
            h.proc.join(timeout=5)
            if h.proc.is_alive():
                h.proc.kill()
                h.proc.join()
            h.conn.close()

    def _pump(self, h: _Handle) -> None:
        out: collections.deque[tuple[Future[Any], Ingest | None]] = collections.deque()
        stopping = False
        while True:
            if not stopping:
                stopping = self._fill(h, out, block=not out)
            if not out:
                if stopping:
                    try:
                        h.conn.send(("stop", None))
                    except (OSError, ValueError):
                        pass
                    return
                continue
            fut, ingest = out.popleft()
            try:
                status, value = h.conn.recv()
                while status == "ids":  # the worker asks which blobs to store
                    try:
                        answer = self._claim(value)
                    except BaseException:
                        answer = bytes(len(value))  # store none; the failure is the parent's
                    h.conn.send(("store", answer))
                    status, value = h.conn.recv()
            except (EOFError, OSError) as exc:
                self._died(h, exc)
                fut.set_exception(cast(BaseException, h.dead))
                while out:
                    out.popleft()[0].set_exception(cast(BaseException, h.dead))
                continue
            with self._lock:
                h.pending -= 1
            if not stopping:  # keep the worker busy while this reply is ingested
                stopping = self._fill(h, out, block=False)
            if status != "ok":
                fut.set_exception(value)
                continue
            try:
                fut.set_result(ingest(*value) if ingest is not None else value)
            except BaseException as exc:
                fut.set_exception(exc)

    def _fill(
        self, h: _Handle, out: collections.deque[tuple[Future[Any], Ingest | None]], block: bool
    ) -> bool:
        """Send queued jobs until ``IN_FLIGHT`` are; True when told to stop."""
        while len(out) < IN_FLIGHT:
            try:
                kind, payload, fut, ingest = h.q.get(block=block)
            except queue.Empty:
                return False
            block = False
            if kind == "stop":
                return True
            if h.dead is not None:
                fut.set_exception(h.dead)
                continue
            try:
                h.conn.send((kind, payload))
            except (OSError, ValueError) as exc:
                self._died(h, exc)
                fut.set_exception(cast(BaseException, h.dead))
                continue
            out.append((fut, ingest))
        return False

    def _died(self, h: _Handle, exc: BaseException) -> None:
        code = h.proc.exitcode
        with self._lock:
            h.dead = WorkerDied(
                f"a snapshot worker process ended unexpectedly (exit code {code}): {exc}"
            )
