"""Restore's file writer: the regular files of a restore, in batches, in this process or in
forked worker processes.

Writing many small files is bound by per-file Python work and syscalls; threads share one GIL
and top out at about one core. So a large restore from a local repository forks worker
processes (the ``fork`` start method: a worker inherits the plan and the repository,
copy-on-write; nothing is pickled but batch numbers and results). Each worker takes batches of
files in tree order (which is pack order for the files one snapshot stored), reads each pack
region once (a *span* covering the next blobs of its batch, in one pread), decompresses and
verifies every blob against its id, and writes each file with four syscalls (create with the
final permission bits, write, futimens, close; chown only as root and when the owner differs,
chmod only for setuid/setgid/sticky bits). The parent makes each directory just before the
first batch that writes into it, and sets directory metadata at the end. A small restore, or
one from a remote repository, runs the same code in this process (remote: in threads, which
overlap the network waits).

The plan is held in columns (``FileTable``: arrays and one list of names), not in one object
per file: the restore of W4 (100k files) peaks at 94 MiB instead of 143 MiB, and a forked
worker reading the plan dirties almost no shared pages.

Safety is that of ``restore.py`` (whose invariants this module keeps): files are created
relative to directory fds opened one component at a time without following symlinks, with
O_CREAT|O_EXCL|O_NOFOLLOW; an existing entry is replaced through a temporary name and a
rename; a file whose content does not verify is never created (small files are verified
before they are opened) or is removed (large files, streamed); setuid/setgid bits are stripped
unless asked. Forked workers never touch the repository's locks, caches or storage objects:
they read packs through their own fds. Ctrl-C reaches the parent (workers ignore SIGINT), which
stops the workers after their current file; a worker that dies fails the restore (one line).

This module imports nothing heavier than the codecs the workers use.
"""

from __future__ import annotations

import collections
import errno
import gc
import mmap
import multiprocessing
import os
import secrets
import signal
import stat
import sys
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from backend.chunking import chunk_fd
from backend.errors import Cancelled, IntegrityError, ObjectNotFound, StoreError
from backend.ids import BlobId
from backend.progress import Progress

_IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SETID = stat.S_ISUID | stat.S_ISGID
TMP_PREFIX = b".snapdeck-tmp-"

HARD = 1
"""Flag: the first name of a hardlink group (the parent links the others to it)."""
XATTRS = 2
"""Flag: the file has extended attributes (in ``FileTable.xattrs``)."""

BATCH_FILES = 256
"""Files per batch at most: the unit a worker takes, reports and can be cancelled after."""
BATCH_BYTES = 8 * 1024 * 1024
"""Raw bytes per batch at most (a larger file is a batch of its own)."""
SPAN_MAX = 4 * 1024 * 1024
"""Bytes of a pack read at once to serve the next blobs of a batch."""
SPAN_GAP = 64 * 1024
"""Unneeded bytes a span may read over between two needed blobs (cheaper than a new read)."""
SPANS = 4
"""Spans a writer keeps (of different packs, when the files of a batch alternate between
packs); memory per writer is at most ``SPANS * SPAN_MAX``."""
SMALL_FILE = 8 * 1024 * 1024
"""A file up to this size is read and verified whole before it is created; a larger one is
streamed (created first, removed again if a blob fails)."""
READ_AHEAD = 4
"""Blobs of a large file fetched and verified ahead of the writer, on helper threads."""
FORK_MIN_FILES = 2000
"""A restore with at least this many files (or ``FORK_MIN_BYTES``) forks worker processes."""
FORK_MIN_BYTES = 256 * 1024 * 1024
WORKER_POLL_S = 0.1
"""How often the parent of worker processes looks at the cancel event and for dead workers."""


def fork_available() -> bool:
    """Whether worker processes can be forked here (Linux with the ``fork`` start method)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


# ---------------------------------------------------------------- the plan, in columns


@dataclass(slots=True)
class FileTable:
    """The regular files of a restore, in tree order, one column per field.

    File ``i`` lives in directory ``dir[i]`` (an index into the restore's directory list) under
    ``names[i]``; its blobs are ``b0[i]:b0[i+1]`` of the blob columns, which hold where each
    blob is stored (``pack`` is an index into ``packs``) and its id (32 bytes each in ``ids``).
    """

    dir: array[int] = field(default_factory=lambda: array("q"))
    names: list[bytes] = field(default_factory=list)
    mode: array[int] = field(default_factory=lambda: array("q"))
    uid: array[int] = field(default_factory=lambda: array("q"))
    gid: array[int] = field(default_factory=lambda: array("q"))
    mtime: array[int] = field(default_factory=lambda: array("q"))
    size: array[int] = field(default_factory=lambda: array("q"))
    flags: array[int] = field(default_factory=lambda: array("b"))
    b0: array[int] = field(default_factory=lambda: array("q", [0]))
    xattrs: dict[int, dict[Any, bytes]] = field(default_factory=dict)
    bpack: array[int] = field(default_factory=lambda: array("q"))
    boff: array[int] = field(default_factory=lambda: array("q"))
    blen: array[int] = field(default_factory=lambda: array("q"))
    braw: array[int] = field(default_factory=lambda: array("q"))
    ids: bytearray = field(default_factory=bytearray)
    packs: list[str] = field(default_factory=list)
    pack_no: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def adder(self, locate: Callable[[Any], Any]) -> AddFile:
        """A function that appends a file (in directory ``dir_no``: name, mode, uid, gid,
        mtime_ns, size, blob ids, extras; ``hard``: the first name of a hardlink group) and
        returns False, appending nothing, when one of its blobs is not in the index
        (``locate``: blob id → location or None) or a value does not fit the columns. The
        plan of a large restore calls it once per file: everything it touches is bound
        locally."""
        names, packs, pack_no, xattrs, ids = (
            self.names,
            self.packs,
            self.pack_no,
            self.xattrs,
            self.ids,
        )
        bpack = self.bpack
        a_pack, a_off, a_len, a_raw = (
            bpack.append,
            self.boff.append,
            self.blen.append,
            self.braw.append,
        )
        a_mode, a_uid, a_gid = self.mode.append, self.uid.append, self.gid.append
        a_mtime, a_size = self.mtime.append, self.size.append
        a_dir, a_name, a_flags, a_b0 = (
            self.dir.append,
            names.append,
            self.flags.append,
            self.b0.append,
        )
        checked = (self.mode, self.uid, self.gid, self.mtime, self.size)

        def add(
            dir_no: int,
            name: bytes,
            mode: int,
            uid: int,
            gid: int,
            mtime: int,
            size: int,
            content: Sequence[bytes] | None,
            extra: dict[str, Any] | None,
            hard: bool,
        ) -> bool:
            if not 0 <= mode <= 0o7777:
                return False  # crafted (a mode is st_mode & 0o7777): the slow path says so
            n = len(names)
            try:  # a crafted snapshot may hold values beyond 64 bits: the slow path has them
                a_mode(mode)
                a_uid(uid)
                a_gid(gid)
                a_mtime(mtime)
                a_size(size)
            except (OverflowError, TypeError):
                for col in checked:
                    del col[n:]
                return False
            if content:
                if len(content) == 1:  # most files: one blob
                    locs: tuple[Any, ...] = (locate(content[0]),)
                else:
                    locs = tuple(locate(bid) for bid in content)
                if None in locs:
                    for col in checked:
                        del col[n:]
                    return False
                for bid, (pack, _type, off, length, raw) in zip(content, locs, strict=True):
                    p = pack_no.get(pack)
                    if p is None:
                        p = pack_no[pack] = len(packs)
                        packs.append(pack)
                    a_pack(p)
                    a_off(off)
                    a_len(length)
                    a_raw(raw)
                    ids.extend(bid)
            flags = HARD if hard else 0
            if extra and extra.get("xattrs"):
                flags |= XATTRS
                xattrs[n] = extra["xattrs"]
            a_dir(dir_no)
            a_name(name)
            a_flags(flags)
            a_b0(len(bpack))
            return True

        return add

    @property
    def total_bytes(self) -> int:
        """The files' total size."""
        return sum(self.size)

    def batches(self) -> list[Batch]:
        """Consecutive file ranges of at most ``BATCH_FILES`` files and ``BATCH_BYTES``, each
        with the highest directory number that it, or a batch before it, writes into."""
        out: list[Batch] = []
        size, dirs = self.size, self.dir
        lo, n, acc, need = 0, len(self.names), 0, 0
        for i in range(n):
            s = size[i]
            if i > lo and (i - lo >= BATCH_FILES or acc + s > BATCH_BYTES):
                out.append((lo, i, need))
                lo, acc = i, 0
            acc += s
            if dirs[i] > need:
                need = dirs[i]
        if lo < n:
            out.append((lo, n, need))
        return out


AddFile = Callable[
    [int, bytes, int, int, int, int, int, "Sequence[bytes] | None", "dict[str, Any] | None", bool],
    bool,
]
"""Appends a file to a ``FileTable`` (see ``FileTable.adder``)."""

Batch = tuple[int, int, int]
"""Files ``lo:hi`` of the table, and the directories ``0..need`` that must exist first."""


@dataclass(slots=True)
class WriteSetup:
    """What every writer (in this process or a forked one) shares."""

    table: FileTable
    dir_parent: array[int]
    """The number of each directory's parent (the root, number 0, has -1)."""
    dir_names: list[bytes]
    """Each directory's name in its parent."""
    root_fd: int
    prepare: Callable[[int], None]
    """Makes directories ``0..n`` exist (the parent calls it before handing out a batch)."""
    dir_cap: int
    """Directory fds a writer keeps open at most."""
    open_stored: Callable[[BlobId, bytes, int, str], bytes]
    """``Repository.open_stored_blob``: open (when sealed), decompress and verify a blob."""
    hash_blob: Callable[[Any], bytes]
    chunker: Any
    overwrite: str
    keep_setuid: bool
    pack_path: Callable[[str], str] | None
    """A pack's file (a local repository): workers read it through their own fds."""
    get_range: Callable[[str, str, int, int], bytes]
    """``storage.get_range`` (a remote repository)."""
    location: str


Result = tuple[int, int, int, int, list[tuple[int, str]], list[int]]
"""A batch's outcome: (files looked at, written, skipped, bytes written, problems as
(file index, message), written files that start a hardlink group)."""


# ---------------------------------------------------------------- one writer


class Writer:
    """Writes batches of files; one per thread or process (it keeps a pack span and fds)."""

    def __init__(self, s: WriteSetup, *, umask_zero: bool = False) -> None:
        self.s = s
        self.t = s.table
        self.umask_zero = umask_zero
        """Files are created with their final permission bits (the process umask is 0), so
        no chmod is needed unless the mode has setuid/setgid/sticky bits."""
        self.euid = os.geteuid() if _IS_ROOT else -1
        self._fds: dict[int, int] = {}
        self._fd_lock = threading.Lock()
        self._dirs: dict[int, int] = {0: s.root_fd}
        self._gid: dict[int, int] = {}
        self._egid = os.getegid() if _IS_ROOT else -1
        self._spans: list[tuple[int, int, int, bytes]] = []
        """Pack regions read for the current batch, newest first: (pack, start, end, bytes)."""
        self._last_id = b""
        self._last_plain = b""
        self._blob_end = 0
        self._pool: ThreadPoolExecutor | None = None
        self._check_existing = s.overwrite != "always"
        self._where = [f"pack {pack[:12]}" for pack in self.t.packs]
        self._ids = bytes(self.t.ids)  # slices of bytes are bytes: one copy less per blob

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._close_dirs()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._spans = []
        self._last_plain = b""

    # ------------------------------------------------------------ a batch

    def run(self, lo: int, hi: int, stop: Callable[[], Any]) -> Result:
        t = self.t
        sizes, flags = t.size, t.flags
        done = files = skipped = nbytes = 0
        problems: list[tuple[int, str]] = []
        hard: list[int] = []
        self._blob_end = t.b0[hi]
        write = self.write
        try:
            for i in range(lo, hi):
                if stop():
                    break
                done += 1
                try:
                    wrote = write(i)
                except StoreError as exc:
                    problems.append((i, str(exc)))
                    continue
                except OSError as exc:
                    problems.append((i, exc.strerror or str(exc)))
                    continue
                except (OverflowError, ValueError) as exc:  # a crafted mode, owner or time
                    problems.append((i, f"cannot restore its metadata: {exc}"))
                    continue
                if wrote:
                    files += 1
                    nbytes += sizes[i]
                    if flags[i] & HARD:
                        hard.append(i)
                else:
                    skipped += 1
        finally:
            self._spans = []
            self._last_plain = b""
            self._last_id = b""
            if len(self._dirs) > self.s.dir_cap:
                self._close_dirs()
            if len(self._fds) > 64:  # no read-ahead thread is using them between batches
                for fd in self._fds.values():
                    os.close(fd)
                self._fds.clear()
        return done, files, skipped, nbytes, problems, hard

    # ------------------------------------------------------------ one file

    def _close_dirs(self) -> None:
        for d, fd in self._dirs.items():
            if d:
                os.close(fd)
        self._dirs = {0: self.s.root_fd}

    def dir_fd(self, d: int) -> int:
        """Directory ``d``, opened below its parent's fd (never through a symlink)."""
        fd = self._dirs.get(d)
        if fd is not None:
            return fd
        pfd = self.dir_fd(self.s.dir_parent[d])
        try:
            fd = os.open(self.s.dir_names[d], _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            raise StoreError(f"cannot open directory: {exc.strerror}") from None
        self._dirs[d] = fd
        return fd

    def dir_gid(self, d: int) -> int:
        """The group a new file in directory ``d`` gets: the directory's if it is setgid."""
        gid = self._gid.get(d)
        if gid is None:
            st = os.fstat(self.dir_fd(d))
            gid = self._gid[d] = st.st_gid if st.st_mode & stat.S_ISGID else self._egid
        return gid

    def write(self, i: int) -> bool:
        """Restore file ``i``; False when ``--overwrite`` keeps what is there."""
        t = self.t
        d = t.dir[i]
        dfd = self._dirs.get(d)
        if dfd is None:
            dfd = self.dir_fd(d)
        name = t.names[i]
        if self._check_existing and self.keep_existing(dfd, name, i):
            return False
        b0 = t.b0[i]
        b1 = t.b0[i + 1]
        size = t.size[i]
        if size <= SMALL_FILE:
            # Read and verify first: a file whose data is lost or damaged is never created.
            if b1 - b0 == 1:
                data = self.blob(b0)
            else:
                data = b"".join([self.blob(k) for k in range(b0, b1)])
            if len(data) != size:
                raise StoreError(f"restored size {len(data)} differs from recorded size {size}")
            mode = t.mode[i]
            try:  # O_EXCL: never follows or clobbers anything
                fd = os.open(name, _CREATE, mode & 0o777 if self.umask_zero else 0o600, dir_fd=dfd)
                tmp = None
            except FileExistsError:
                fd, tmp = self.create(dfd, name, mode)
            try:
                if data:
                    n = os.write(fd, data)
                    if n < len(data):
                        view = memoryview(data)[n:]
                        while view:
                            view = view[os.write(fd, view) :]
                self.meta(fd, i, d)
            except BaseException:
                self.abandon(fd, dfd, tmp if tmp is not None else name)
                raise
        else:
            fd, tmp = self.create(dfd, name, t.mode[i])
            try:
                written = 0
                for data in self.stream(b0, b1):
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    written += len(data)
                if written != size:
                    raise StoreError(f"restored size {written} differs from recorded size {size}")
                self.meta(fd, i, d)
            except BaseException:
                self.abandon(fd, dfd, tmp if tmp is not None else name)
                raise
        os.close(fd)
        if tmp is not None:
            replace_entry(dfd, tmp, name)
        return True

    def create(self, dfd: int, name: bytes, mode: int) -> tuple[int, bytes | None]:
        """A new file at ``name`` (O_EXCL: never follows or clobbers anything), or at a
        temporary name when something is there already (renamed over it once complete)."""
        cmode = mode & 0o777 if self.umask_zero else 0o600
        try:
            return os.open(name, _CREATE, cmode, dir_fd=dfd), None
        except FileExistsError:
            tmp = TMP_PREFIX + secrets.token_hex(6).encode()
            return os.open(tmp, _CREATE, cmode, dir_fd=dfd), tmp

    @staticmethod
    def abandon(fd: int, dfd: int, name: bytes) -> None:
        os.close(fd)
        try:
            os.unlink(name, dir_fd=dfd)
        except OSError:
            pass

    def meta(self, fd: int, i: int, d: int) -> None:
        t = self.t
        mode = t.mode[i]
        if not self.s.keep_setuid:
            mode &= ~_SETID
        if _IS_ROOT:
            uid, gid = t.uid[i], t.gid[i]
            # A new file is ours, with the directory's group (setgid) or ours: skip the call
            # when that is what the snapshot has. chown comes before chmod (it clears setuid).
            dgid = self._gid.get(d)
            if dgid is None:
                dgid = self.dir_gid(d)
            if uid != self.euid or gid != dgid:
                try:
                    os.fchown(fd, uid, gid)
                except OSError:
                    pass
        if not self.umask_zero or mode & 0o7000:
            os.fchmod(fd, mode)
        m = t.mtime[i]
        os.utime(fd, ns=(m, m))
        if t.flags[i] & XATTRS:
            for k, v in t.xattrs[i].items():
                try:
                    os.setxattr(fd, k, v)
                except OSError:
                    pass

    def keep_existing(self, dfd: int, name: bytes, i: int) -> bool:
        """Whether ``--overwrite`` leaves the entry at ``name`` alone (``if-changed``: a
        regular file with the same content, whose metadata is then brought up to date)."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if self.s.overwrite == "never":
            return True
        if not stat.S_ISREG(st.st_mode) or st.st_size != self.t.size[i]:
            return False
        # O_NONBLOCK: a FIFO swapped in meanwhile must not hang the open.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=dfd)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            t = self.t
            if not stat.S_ISREG(st.st_mode) or st.st_size != t.size[i]:
                return False
            want = [self._ids[32 * k : 32 * k + 32] for k in range(t.b0[i], t.b0[i + 1])]
            got = [self.s.hash_blob(c) for c in chunk_fd(fd, self.s.chunker, st.st_size)]
            if got != want:
                return False
        finally:
            os.close(fd)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            t = self.t
            mode = t.mode[i] if self.s.keep_setuid else t.mode[i] & ~_SETID
            if _IS_ROOT:
                try:
                    os.fchown(fd, t.uid[i], t.gid[i])
                except OSError:
                    pass
            os.fchmod(fd, mode)
            os.utime(fd, ns=(t.mtime[i], t.mtime[i]))
        finally:
            os.close(fd)
        return True

    # ------------------------------------------------------------ blobs

    def blob(self, k: int) -> bytes:
        """Blob ``k``'s verified plaintext, served from a pack span read for the batch."""
        bid = self._ids[32 * k : 32 * k + 32]
        if bid == self._last_id:
            return self._last_plain  # the same content again (duplicates sort together)
        t = self.t
        p = t.bpack[k]
        off = t.boff[k]
        ln = t.blen[k]
        for sp, start, end, data in self._spans:
            if sp == p and start <= off and off + ln <= end:
                stored = data[off - start : off - start + ln]
                break
        else:
            stored = self._fill(k, p, off, ln, bid)
        plain = self.s.open_stored(BlobId(bid), stored, t.braw[k], self._where[p])
        self._last_id = bid
        self._last_plain = plain
        return plain

    def _fill(self, k: int, p: int, off: int, ln: int, bid: bytes) -> bytes:
        """Read the span that starts with blob ``k`` and covers the next blobs of the batch
        that lie close after it in the same pack (blobs of other packs in between are passed
        over: a snapshot written by several workers interleaves their packs); return blob
        ``k``'s stored bytes."""
        t = self.t
        bpack, boff, blen = t.bpack, t.boff, t.blen
        end = off + ln
        limit = off + max(SPAN_MAX, ln)
        for j in range(k + 1, self._blob_end):
            if bpack[j] != p:
                continue
            o = boff[j]
            e = o + blen[j]
            if o < off or o > end + SPAN_GAP or e > limit:
                break
            if e > end:
                end = e
        data = self.read(p, off, end - off)
        if len(data) < ln:
            raise IntegrityError(f"pack {t.packs[p][:12]} is truncated (blob {bid.hex()[:12]})")
        self._spans.insert(0, (p, off, off + len(data), data))
        if len(self._spans) > SPANS:
            self._spans.pop()
        return data[:ln] if len(data) > ln else data

    def read(self, p: int, off: int, length: int) -> bytes:
        """``length`` bytes of pack ``p`` from ``off`` (fewer only at its end)."""
        s = self.s
        pack = self.t.packs[p]
        if s.pack_path is None:
            return s.get_range("data", pack, off, length)
        fd = self._fds.get(p)
        if fd is None:
            fd = self._open_pack(p, pack)
        try:
            data = os.pread(fd, length, off)
            while len(data) < length:
                more = os.pread(fd, length - len(data), off + len(data))
                if not more:
                    break
                data += more
            return data
        except OSError as exc:
            raise StoreError(f"cannot read {s.pack_path(pack)}: {_reason(exc)}") from None

    def _open_pack(self, p: int, pack: str) -> int:
        assert self.s.pack_path is not None
        path = self.s.pack_path(pack)
        with self._fd_lock:
            fd = self._fds.get(p)
            if fd is not None:
                return fd
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                raise ObjectNotFound(f"no data object {pack!r} in {self.s.location}") from None
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {_reason(exc)}") from None
            self._fds[p] = fd  # closed between batches when many are open (see run)
            return fd

    def fetch(self, k: int) -> bytes:
        """Blob ``k`` read on its own and verified (thread-safe: for read-ahead)."""
        t = self.t
        p, off, ln = t.bpack[k], t.boff[k], t.blen[k]
        bid = self._ids[32 * k : 32 * k + 32]
        stored = self.read(p, off, ln)
        if len(stored) != ln:
            raise IntegrityError(f"pack {t.packs[p][:12]} is truncated (blob {bid.hex()[:12]})")
        return self.s.open_stored(BlobId(bid), stored, t.braw[k], f"pack {t.packs[p][:12]}")

    def stream(self, b0: int, b1: int) -> Iterator[bytes]:
        """A large file's blobs in order, the next few read and verified ahead on helper
        threads (pread, zstd and BLAKE3 release the GIL); memory stays bounded."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="restore-read")
        ahead: collections.deque[Future[bytes]] = collections.deque()
        nxt = b0
        try:
            while nxt < b1 and len(ahead) < READ_AHEAD:
                ahead.append(self._pool.submit(self.fetch, nxt))
                nxt += 1
            while ahead:
                data = ahead.popleft().result()
                if nxt < b1:
                    ahead.append(self._pool.submit(self.fetch, nxt))
                    nxt += 1
                yield data
        finally:
            for f in ahead:
                f.cancel()


def _reason(exc: OSError) -> str:
    return exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))


def replace_entry(dfd: int, tmp: bytes, name: bytes) -> None:
    """Rename the finished temporary ``tmp`` over whatever is at ``name`` (a directory or
    anything else there is removed first; never followed)."""
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except IsADirectoryError:
        remove_any(dfd, name)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            remove_any(dfd, name)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.unlink(tmp, dir_fd=dfd)
            raise


def remove_any(dfd: int, name: bytes) -> None:
    """Remove ``name`` (recursively for a directory), relative to ``dfd``, never following."""
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            for child in os.listdir(fd):
                remove_any(fd, os.fsencode(child))
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


# ---------------------------------------------------------------- running the batches


@dataclass(slots=True)
class Outcome:
    """What writing the files did."""

    files: int = 0
    skipped: int = 0
    bytes: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)
    hard: list[int] = field(default_factory=list)
    processes: int = 0
    """Worker processes used (0: this process)."""

    def add(self, r: Result) -> None:
        self.files += r[1]
        self.skipped += r[2]
        self.bytes += r[3]
        self.problems.extend(r[4])
        self.hard.extend(r[5])


def write_files(
    s: WriteSetup,
    *,
    processes: int,
    threads: int,
    progress: Progress,
    cancel: threading.Event | None,
) -> Outcome:
    """Write every file of the table: in ``processes`` forked workers (local repositories),
    else in ``threads`` threads (remote ones) or in this thread (``threads`` <= 1). The
    directories are made (``s.prepare``) just before the first batch that needs them, so
    workers already write while later directories are being made."""
    batches = s.table.batches()
    if processes > 1 and s.pack_path is not None and batches:
        out = _run_processes(s, batches, processes, progress, cancel)
    elif threads > 1 and len(batches) > 1:
        out = _run_threads(s, batches, threads, progress, cancel)
    else:
        out = _run_inline(s, batches, progress, cancel)
    out.problems.sort()
    return out


def _never() -> bool:
    return False


def _run_inline(
    s: WriteSetup,
    batches: Sequence[Batch],
    progress: Progress,
    cancel: threading.Event | None,
) -> Outcome:
    out = Outcome()
    w = Writer(s)
    stop = cancel.is_set if cancel is not None else _never
    try:
        for lo, hi, need in batches:
            if stop():
                raise Cancelled("cancelled")
            s.prepare(need)
            r = w.run(lo, hi, stop)
            out.add(r)
            progress.advance(r[0])
        if stop():
            raise Cancelled("cancelled")
    finally:
        w.close()
    return out


def _run_threads(
    s: WriteSetup,
    batches: Sequence[Batch],
    n: int,
    progress: Progress,
    cancel: threading.Event | None,
) -> Outcome:
    out = Outcome()
    halt = threading.Event()
    writers: list[Writer] = []
    local = threading.local()
    wlock = threading.Lock()

    def stop() -> bool:
        return halt.is_set() or (cancel is not None and cancel.is_set())

    def job(lo: int, hi: int) -> Result:
        w = getattr(local, "w", None)
        if w is None:
            w = local.w = Writer(s)
            with wlock:
                writers.append(w)
        return w.run(lo, hi, stop)

    try:
        with ThreadPoolExecutor(n, thread_name_prefix="restore") as ex:
            pending: collections.deque[Future[Result]] = collections.deque()
            it = iter(batches)
            try:
                for lo, hi, need in it:
                    s.prepare(need)
                    pending.append(ex.submit(job, lo, hi))
                    if len(pending) >= 2 * n:
                        break
                while pending:
                    r = pending.popleft().result()
                    out.add(r)
                    progress.advance(r[0])
                    if stop():
                        break
                    nxt = next(it, None)
                    if nxt is not None:
                        s.prepare(nxt[2])
                        pending.append(ex.submit(job, nxt[0], nxt[1]))
            finally:
                halt.set()
                for f in pending:
                    f.cancel()
    finally:
        for w in writers:
            w.close()
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
    return out


class WorkerFailed(StoreError):
    """A restore worker process failed or died; the restore is incomplete."""


def _child(
    s: WriteSetup,
    batches: Sequence[Batch],
    conn: Connection,
    others: list[Connection],
    flag: mmap.mmap,
    parent: int,
) -> None:
    """A worker process: takes batch numbers from ``conn`` until None, replies with results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    gc.disable()  # it allocates no cycles; a collection would only dirty shared pages
    os.umask(0)  # files are created with their final permission bits
    for c in others:
        c.close()  # the parent's ends: EOF on ours must mean the parent is gone
    w = Writer(s, umask_zero=True)

    def stop() -> bool:
        return flag[0] != 0

    try:
        while True:
            while not conn.poll(1.0):
                if os.getppid() != parent:
                    return
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            lo, hi, _need = batches[msg]
            try:
                reply: tuple[str, Any] = ("ok", w.run(lo, hi, stop))
            except BaseException as exc:  # a bug or resource exhaustion: fail the restore
                reply = ("err", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return
    finally:
        w.close()


PREPARE_AHEAD = 64
"""Directories the parent of worker processes makes at a time while the workers are busy."""


def _run_processes(
    s: WriteSetup,
    batches: Sequence[Batch],
    n: int,
    progress: Progress,
    cancel: threading.Event | None,
) -> Outcome:
    ctx = multiprocessing.get_context("fork")
    n = min(n, len(batches))
    out = Outcome(processes=n)
    flag = mmap.mmap(-1, 1)  # shared with the workers: nonzero = stop after the current file
    parent = os.getpid()
    conns: list[Connection] = []
    procs: list[Any] = []
    inflight: list[int] = []
    failure: str | None = None
    next_batch = 0
    made = 0  # directories 0..made-1 exist
    last_dir = len(s.dir_names) - 1
    was_enabled = gc.isenabled()
    gc.disable()  # no collection in the parent while workers share its pages either

    def feed(k: int) -> str | None:
        """Keep two batches in flight on worker ``k`` (it never waits for the parent);
        returns why the worker cannot take them (it died)."""
        nonlocal next_batch, made
        while inflight[k] < 2 and next_batch < len(batches):
            need = batches[next_batch][2]
            if need >= made:
                s.prepare(need)
                made = need + 1
            try:
                conns[k].send(next_batch)
            except (OSError, ValueError):
                return _death(procs[k])
            next_batch += 1
            inflight[k] += 1
        return None

    try:
        for _ in range(n):
            mine, theirs = ctx.Pipe()
            conns.append(mine)
            p = ctx.Process(
                target=_child,
                args=(s, batches, theirs, list(conns), flag, parent),
                name="snapdeck-restore",
                daemon=True,
            )
            p.start()
            theirs.close()
            procs.append(p)
            inflight.append(0)
        for k in range(n):
            failure = failure or feed(k)
        by_conn = {c: k for k, c in enumerate(conns)}
        by_sentinel = {p.sentinel: k for k, p in enumerate(procs)}
        while any(inflight) and failure is None:
            if cancel is not None and cancel.is_set():
                break
            waiting: list[Any] = [conns[k] for k in range(n) if inflight[k]]
            waiting += [procs[k].sentinel for k in range(n) if inflight[k]]
            # While the workers are busy, make the directories of the batches to come.
            ahead = made <= last_dir
            for ready in wait(waiting, timeout=0 if ahead else WORKER_POLL_S):
                if isinstance(ready, int):
                    k = by_sentinel[ready]
                    if inflight[k] and not conns[k].poll():
                        failure = _death(procs[k])
                    continue
                conn = cast(Connection, ready)
                k = by_conn[conn]
                try:
                    status, value = conn.recv()
                except (EOFError, OSError):
                    failure = _death(procs[k])
                    inflight[k] = 0
                    continue
                inflight[k] -= 1
                if status != "ok":
                    failure = str(value)
                    continue
                res = cast(Result, value)
                out.add(res)
                progress.advance(res[0])
                if failure is None:
                    failure = feed(k)
            if failure is not None:
                break
            if ahead:
                upto = min(made + PREPARE_AHEAD, last_dir + 1) - 1
                s.prepare(upto)
                made = upto + 1
    finally:
        flag[0] = 1 if any(inflight) else 0  # stop after the current file
        for k, c in enumerate(conns):
            try:
                c.send(None)
                while inflight[k] > 0 and c.poll(10):  # the replies of stopped batches
                    c.recv()
                    inflight[k] -= 1
            except (EOFError, OSError, ValueError):
                pass
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        for c in conns:
            c.close()
        flag.close()
        if was_enabled:
            gc.enable()
    if failure is not None:
        raise WorkerFailed(f"a restore worker failed: {failure}; the restore is incomplete")
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
    return out


def _death(p: Any) -> str:
    p.join(timeout=1)
    code = p.exitcode
    if code is not None and code < 0:
        try:
            return f"worker process {p.pid} was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker process {p.pid} was killed by signal {-code}"
    return f"worker process {p.pid} ended unexpectedly (exit code {code})"
