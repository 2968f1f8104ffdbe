"""Operation: restore a snapshot's tree to a directory, a ZIP file, or one file's bytes.

Safety invariants (a snapshot may be hostile):
- Every name is checked: no '/', no NUL, not '', '.' or '..'; trees must be sorted and unique.
- Everything is created relative to directory file descriptors opened with O_NOFOLLOW, so a
  symlink inside the target (pre-existing or restored) is never followed. Restored symlinks are
  created last, after every file and directory, so nothing is written through them.
- New files are created with O_CREAT|O_EXCL|O_NOFOLLOW; a file that replaces an existing entry
  is written to a temporary name, verified (each blob is re-hashed on read), then renamed over
  it, so existing data is never half-overwritten. A failed write removes what it created.
- setuid/setgid bits are stripped unless ``keep_setuid``; devices are only created as root with
  ``devices=True``; FIFOs are created, never opened; sockets are skipped.
- Hardlinks are only made between files restored by this run.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from backend.chunking import chunk_fd
from backend.errors import PathNotFound, StoreError, UnsafeRestore, UsageError
from backend.ids import BlobId
from backend.model import Entry, EntryKind, Problem, RestoreResult, Tree
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository, default_threads
from backend.snapshots import escape_path

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OVERWRITE_MODES = ("always", "if-changed", "never")
ZIP_SPOOL_BYTES = 64 * 1024 * 1024
"""A ZIP member up to this size is verified in memory, a larger one in a temp file."""


def check_name(name: bytes) -> None:
    """Refuse names that could escape a directory."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise UnsafeRestore(f"refusing unsafe name {escape_path(name)!r} in snapshot")


def split_path(path: str | bytes) -> list[bytes]:
    """A snapshot-relative path as checked components ('' or '/' is the root)."""
    b = os.fsencode(path) if isinstance(path, str) else path
    parts = [p for p in b.split(b"/") if p and p != b"."]
    for p in parts:
        if p == b"..":
            raise UsageError(f"path {escape_path(b)!r} must not contain '..'")
    return parts


def walk_to(
    repo_load: Callable[[BlobId], Tree], root: BlobId, parts: Sequence[bytes]
) -> Entry | None:
    """The entry at ``parts`` below the root tree (None for the root itself)."""
    tree = repo_load(root)
    entry: Entry | None = None
    for i, p in enumerate(parts):
        entry = tree.find(p)
        if entry is None:
            raise PathNotFound(f"{escape_path(b'/'.join(parts))} is not in the snapshot")
        if i < len(parts) - 1:
            if entry.kind is not EntryKind.DIR:
                raise PathNotFound(f"{escape_path(b'/'.join(parts[: i + 1]))} is not a directory")
            tree = repo_load(BlobId(entry.payload))
    return entry


@dataclass(slots=True)
class _Plan:
    """A flattened restore: work items in tree order."""

    dirs: list[tuple[bytes, Entry | None]] = field(default_factory=list)
    files: list[tuple[bytes, Entry]] = field(default_factory=list)
    links: list[tuple[bytes, Entry]] = field(default_factory=list)
    specials: list[tuple[bytes, Entry]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    """Directories whose tree could not be read (lost or damaged data): restored empty."""
    wanted: dict[bytes, set[bytes]] = field(default_factory=dict)
    """Names each fully restored directory should hold (``--delete`` removes the others).
    Directories only on the way to an ``--include`` are absent: their other entries are not
    part of this restore and must be left alone."""


def _include_filter(
    includes: Sequence[str], load: Callable[[BlobId], Tree], root: BlobId
) -> list[list[bytes]]:
    """The includes as path components; each must exist in the snapshot (``PathNotFound``),
    so a typo is an error rather than a restore of nothing."""
    parts = [split_path(i) for i in includes]
    for p in parts:
        walk_to(load, root, p)
    return parts


def _selected(rel_parts: list[bytes], includes: list[list[bytes]]) -> tuple[bool, bool]:
    """(fully included, on the way to an include)."""
    if not includes:
        return True, False
    for inc in includes:
        n = min(len(inc), len(rel_parts))
        if inc[:n] == rel_parts[:n]:
            if len(rel_parts) >= len(inc):
                return True, False
            return False, True
    return False, False


def _flatten(repo: Repository, root: BlobId, includes: list[list[bytes]]) -> _Plan:
    plan = _Plan()

    def visit(tree_id: BlobId, rel: bytes, parts: list[bytes], whole: bool) -> None:
        tree = _load_subtree(repo, tree_id, rel, plan)
        if tree is None:
            return
        names: set[bytes] = set()
        for e in tree.entries:
            check_name(e.name)
            cparts = [*parts, e.name]
            full, partial = (True, False) if whole else _selected(cparts, includes)
            if not full and not partial:
                continue
            names.add(e.name)
            crel = rel + b"/" + e.name if rel else e.name
            if e.kind is EntryKind.DIR:
                plan.dirs.append((crel, e))
                visit(BlobId(e.payload), crel, cparts, full)
            elif not full:
                continue
            elif e.kind is EntryKind.FILE:
                plan.files.append((crel, e))
            elif e.kind is EntryKind.SYMLINK:
                plan.links.append((crel, e))
            else:
                plan.specials.append((crel, e))
        if whole:
            plan.wanted[rel] = names

    plan.dirs.append((b"", None))
    visit(root, b"", [], not includes)
    return plan


def _load_subtree(repo: Repository, tree_id: BlobId, rel: bytes, plan: _Plan) -> Tree | None:
    """A directory's tree, or None (and a problem) when its data is lost or damaged.

    The root tree must load (else nothing can be restored and the error propagates). A tree
    whose bytes verify against its id but that is malformed or hostile (an unsafe name,
    unsorted entries) is never a "partial" case: the error propagates and nothing is restored.
    """
    try:
        return repo.load_tree(tree_id)
    except StoreError as exc:
        if not rel:
            raise
        try:
            repo.read_blob(tree_id)
        except StoreError:
            plan.problems.append(
                Problem(escape_path(rel), f"directory contents cannot be restored: {exc}")
            )
            return None
        raise  # authentic bytes, malformed tree: refuse the whole restore


def _fd_budget() -> int:
    """How many directory fds a restore may keep open (raising the soft limit if allowed)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        want = min(want, 1 << 20)
        if soft < want:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
                soft = want
            except (ValueError, OSError):
                pass
        return max(256, int(soft) - 512)
    except Exception:
        return 256


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def open_dir_chain(root_fd: int, rel: bytes) -> int:
    """Open ``rel`` below ``root_fd`` one component at a time, never following a symlink."""
    fd = os.dup(root_fd)
    for comp in (p for p in rel.split(b"/") if p):
        try:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


class _DirFds:
    """Directory fds by relative path for the main thread, opened without following symlinks."""

    def __init__(self, root_fd: int, capacity: int = 256) -> None:
        self.root_fd = root_fd
        self.capacity = capacity
        self._fds: dict[bytes, int] = {b"": root_fd}

    def peek(self, rel: bytes) -> int | None:
        """An already open fd (safe from worker threads once the main thread stops opening)."""
        return self._fds.get(rel)

    def get(self, rel: bytes) -> int:
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        if len(self._fds) > self.capacity:
            self.close()
        parent, _, name = rel.rpartition(b"/")
        pfd = self.get(parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        self._fds[rel] = fd
        return fd

    def close(self) -> None:
        for k, fd in self._fds.items():
            if k != b"":
                os.close(fd)
        self._fds = {b"": self.root_fd}


def restore_tree(
    repo: Repository,
    root: BlobId,
    target: str | os.PathLike[str],
    *,
    includes: Sequence[str] = (),
    dry_run: bool = False,
    overwrite: str = "always",
    delete: bool = False,
    keep_setuid: bool = False,
    devices: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    threads: int = 0,
) -> RestoreResult:
    """Restore the tree ``root`` into the directory ``target`` (created if missing).

    Args:
        repo: the open repository.
        root: the root tree id of the snapshot.
        target: the directory that becomes equal to the snapshot (within ``includes``).
        includes: snapshot-relative paths to restore (default: everything).
        dry_run: plan only; ``actions`` lists what would happen.
        overwrite: ``always`` rewrite existing files, ``if-changed`` only those whose content
            differs, ``never`` leave existing files alone.
        delete: remove files in the target that the snapshot does not have.
        keep_setuid: keep setuid/setgid bits.
        devices: create device nodes (root only).
        progress: one ``advance`` per file.
        cancel: stop between files.
        threads: writer threads (0: one per core).
    """
    if overwrite not in OVERWRITE_MODES:
        raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}")
    progress = progress or NullProgress()
    incl = _include_filter(includes, repo.load_tree, root)
    plan = _flatten(repo, root, incl)
    total = len(plan.files)
    progress.start(total, "restore")
    btarget = os.fsencode(os.path.abspath(target))
    if dry_run:
        return _dry_run(plan, btarget, overwrite, delete, repo)
    os.makedirs(btarget, exist_ok=True)
    root_fd = os.open(btarget, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = _DirFds(root_fd, _fd_budget())
    problems: list[Problem] = list(plan.problems)
    plock = threading.Lock()
    counts = {"files": 0, "skipped": 0, "bytes": 0, "dirs": 0, "links": 0, "deleted": 0}

    def problem(rel: bytes, msg: str) -> None:
        with plock:
            problems.append(Problem(escape_path(rel), msg))

    try:
        # 1. directories, top-down (never through a symlink)
        for rel, _e in plan.dirs:
            if rel == b"":
                continue
            check_cancel(cancel)
            try:
                _make_dir(fds, rel)
                fds.get(rel)  # keep it open: file jobs write through this fd
                counts["dirs"] += 1
            except OSError as exc:
                problem(rel, f"cannot create directory: {exc.strerror}")
        # 2. optional delete of extras
        if delete:
            for rel, names in plan.wanted.items():
                try:
                    dfd = fds.get(rel)
                except OSError:
                    continue
                for extra in _listdir_bytes(dfd):
                    if extra not in names and not extra.startswith(b".snapdeck-tmp-"):
                        _remove_any(dfd, extra)
                        counts["deleted"] += 1
        # 3. files, in parallel; each job owns a batch of one directory and its own dir fd
        hard_first: dict[tuple[int, int], bytes] = {}
        hard_written: set[bytes] = set()  # hardlink sources this run actually wrote
        hard_rest: list[tuple[bytes, Entry, tuple[int, int]]] = []
        batches: list[tuple[bytes, list[tuple[bytes, Entry]]]] = []
        for rel, e in plan.files:
            if e.nlink > 1 and e.extra and "dev" in e.extra:
                key = (int(e.extra["dev"]), e.ino)
                if key in hard_first:
                    hard_rest.append((rel, e, key))
                    continue
                hard_first[key] = rel
            parent, _, name = rel.rpartition(b"/")
            if batches and batches[-1][0] == parent and len(batches[-1][1]) < 64:
                batches[-1][1].append((name, e))
            else:
                batches.append((parent, [(name, e)]))

        all_open = len(plan.dirs) < fds.capacity

        def write_batch(parent: bytes, items: list[tuple[bytes, Entry]]) -> None:
            shared = fds.peek(parent) if all_open else None
            try:
                dfd = shared if shared is not None else open_dir_chain(root_fd, parent)
            except OSError as exc:
                for name, _e in items:
                    problem(_join(parent, name), f"cannot open directory: {exc.strerror}")
                return
            try:
                for name, e in items:
                    if cancel is not None and cancel.is_set():
                        return
                    try:
                        wrote = _write_file(repo, dfd, name, e, overwrite, keep_setuid)
                        with plock:
                            if wrote:
                                counts["files"] += 1
                                counts["bytes"] += e.size
                                if e.nlink > 1:
                                    hard_written.add(_join(parent, name))
                            else:
                                counts["skipped"] += 1
                    except StoreError as exc:
                        problem(_join(parent, name), str(exc))
                    except OSError as exc:
                        problem(_join(parent, name), exc.strerror or str(exc))
                    progress.advance(1)
            finally:
                if shared is None:
                    os.close(dfd)

        # Writing small files is bound by create/write/chmod/utime syscalls, which release the
        # GIL: more writers than cores keep the filesystem busy (measured on W4: 6 beat 3).
        n_threads = threads or 2 * default_threads() + 2
        with ThreadPoolExecutor(n_threads, thread_name_prefix="restore") as pool:
            futs: list[Future[None]] = []
            for parent, items in batches:
                futs.append(pool.submit(write_batch, parent, items))
                if len(futs) > 1024:
                    for f in futs:
                        f.result()
                    futs = []
                    check_cancel(cancel)
            for f in futs:
                f.result()
        check_cancel(cancel)
        for rel, e, key in hard_rest:
            src = hard_first[key]
            sparent, _, sname = src.rpartition(b"/")
            dparent, _, dname = rel.rpartition(b"/")
            try:
                dfd = open_dir_chain(root_fd, dparent)
                try:
                    if src not in hard_written:
                        # The first link was skipped or failed: it may be a pre-existing file
                        # (even one hardlinked to a file outside the target). Never link to
                        # it; restore this name as a file of its own.
                        if _write_file(repo, dfd, dname, e, overwrite, keep_setuid):
                            counts["files"] += 1
                            counts["bytes"] += e.size
                        else:
                            counts["skipped"] += 1
                        continue
                    if _keep_existing(repo, dfd, dname, e, overwrite, keep_setuid):
                        counts["skipped"] += 1
                        continue
                    sfd = open_dir_chain(root_fd, sparent)
                    try:
                        _unlink_if_exists(dfd, dname)
                        os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
                    finally:
                        os.close(sfd)
                finally:
                    os.close(dfd)
                counts["files"] += 1
            except StoreError as exc:
                problem(rel, str(exc))
            except OSError as exc:
                problem(rel, f"cannot hardlink: {exc.strerror}")
        # 4. special files
        for rel, e in plan.specials:
            sparent, _, sname = rel.rpartition(b"/")
            try:
                _make_special(fds.get(sparent), sname, e, devices)
            except (OSError, StoreError) as exc:
                problem(rel, str(exc) if isinstance(exc, StoreError) else exc.strerror or "")
        # 5. symlinks last: nothing is ever written through them
        for rel, e in plan.links:
            lparent, _, lname = rel.rpartition(b"/")
            try:
                _replace_with_symlink(fds.get(lparent), lname, e)
                counts["links"] += 1
            except OSError as exc:
                problem(rel, f"cannot create symlink: {exc.strerror}")
        # 6. directory metadata bottom-up (mtime would change as children are written)
        for rel, de in reversed(plan.dirs):
            if de is None:
                continue
            try:
                fd = fds.get(rel)
                mode = de.mode if keep_setuid else de.mode & ~(stat.S_ISUID | stat.S_ISGID)
                _chown(fd, de)  # before chmod: chown clears setuid/setgid
                os.chmod(fd, mode)
                _set_xattrs_fd(fd, de)
                os.utime(fd, ns=(de.mtime_ns, de.mtime_ns))
            except OSError as exc:
                problem(rel, f"cannot set directory metadata: {exc.strerror}")
    finally:
        fds.close()
        os.close(root_fd)
    return RestoreResult(
        files_restored=counts["files"],
        dirs_restored=counts["dirs"],
        links_restored=counts["links"],
        files_skipped=counts["skipped"],
        files_deleted=counts["deleted"],
        bytes_written=counts["bytes"],
        problems=tuple(problems),
    )


def _dry_run(
    plan: _Plan, btarget: bytes, overwrite: str, delete: bool, repo: Repository
) -> RestoreResult:
    """The plan of a restore. Looks at the target exactly as a restore would: relative to
    directory fds, never through a symlink, never opening anything but regular files."""
    actions: list[tuple[str, str]] = []
    skipped = written = 0
    try:
        root_fd: int | None = os.open(btarget, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        root_fd = None  # the target does not exist yet: everything is new
    fds = _DirFds(root_fd) if root_fd is not None else None

    def real_dir(rel: bytes) -> int | None:
        """The fd of the real directory at ``rel`` (None: absent, a file, or a symlink)."""
        if fds is None:
            return None
        try:
            return fds.get(rel)
        except OSError:
            return None

    try:
        for rel, _e in plan.dirs:
            if rel and real_dir(rel) is None:
                actions.append(("mkdir", escape_path(rel)))
        for rel, e in plan.files:
            parent, _, name = rel.rpartition(b"/")
            dfd = real_dir(parent)
            exists = False
            if dfd is not None:
                try:
                    os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    exists = True
                except OSError:
                    pass
            if exists and (
                overwrite == "never"
                or (overwrite == "if-changed" and _same_content(repo, name, e, dfd))
            ):
                actions.append(("skip", escape_path(rel)))
                skipped += 1
            else:
                actions.append(("write", escape_path(rel)))
                written += 1
        for rel, _e in plan.links:
            actions.append(("link", escape_path(rel)))
        if delete:
            for rel, names in plan.wanted.items():
                dfd = real_dir(rel)
                if dfd is None:
                    continue
                for name in sorted(_listdir_bytes(dfd)):
                    if name not in names and not name.startswith(b".snapdeck-tmp-"):
                        actions.append(("delete", escape_path(_join(rel, name))))
    finally:
        if fds is not None:
            fds.close()
        if root_fd is not None:
            os.close(root_fd)
    return RestoreResult(
        files_restored=written,
        files_skipped=skipped,
        dry_run=True,
        problems=tuple(plan.problems),
        actions=tuple(actions),
    )


def _make_dir(fds: _DirFds, rel: bytes) -> None:
    parent, _, name = rel.rpartition(b"/")
    pfd = fds.get(parent)
    try:
        os.mkdir(name, 0o700, dir_fd=pfd)
    except FileExistsError:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            # A file or a symlink where the snapshot has a directory: replace the link itself.
            os.unlink(name, dir_fd=pfd)
            os.mkdir(name, 0o700, dir_fd=pfd)


def _unlink_if_exists(dfd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        _remove_any(dfd, name)


def _listdir_bytes(fd: int) -> list[bytes]:
    """Names in a directory fd as bytes (``os.listdir(fd)`` returns str)."""
    return [os.fsencode(n) for n in os.listdir(fd)]


def _remove_any(dfd: int, name: bytes) -> None:
    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        try:
            for child in _listdir_bytes(fd):
                _remove_any(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _chown(fd: int, e: Entry) -> None:
    if _IS_ROOT:
        try:
            os.fchown(fd, e.uid, e.gid)
        except OSError:
            pass


def _same_content(repo: Repository, path: bytes, e: Entry, dfd: int | None = None) -> bool:
    """Whether the existing file at ``path`` holds exactly the entry's content."""
    # O_NONBLOCK: opening a FIFO that sits where the snapshot has a file must not hang.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, dir_fd=dfd) if dfd is not None else os.open(path, flags)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            return False
        ids = tuple(repo.hash_blob(c) for c in chunk_fd(fd, repo.config.chunker, st.st_size))
        return ids == e.content
    finally:
        os.close(fd)


def _keep_existing(
    repo: Repository, dfd: int, name: bytes, e: Entry, overwrite: str, keep_setuid: bool
) -> bool:
    """Whether ``--overwrite`` leaves the entry already at ``name`` alone (``if-changed``:
    a regular file with the same content, whose metadata is then brought up to date)."""
    if overwrite == "always":
        return False
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if overwrite == "never":
        return True
    if stat.S_ISREG(st.st_mode) and _same_content(repo, name, e, dfd):
        _set_file_meta_path(dfd, name, e, keep_setuid)
        return True
    return False


def _write_file(
    repo: Repository, dfd: int, name: bytes, e: Entry, overwrite: str, keep_setuid: bool
) -> bool:
    if _keep_existing(repo, dfd, name, e, overwrite, keep_setuid):
        return False
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    # Nothing at the name (a fresh restore): create it in place. O_EXCL never follows or
    # clobbers anything. Otherwise write a temp file and rename it over the old entry.
    tmp: bytes | None = None
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
    except FileExistsError:
        tmp = b".snapdeck-tmp-" + secrets.token_hex(6).encode()
        fd = os.open(tmp, flags, 0o600, dir_fd=dfd)
    try:
        written = 0
        for data in _blobs(repo, e.content):
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            written += len(data)
        if written != e.size:
            raise StoreError(f"restored size {written} differs from recorded size {e.size}")
        mode = e.mode if keep_setuid else e.mode & ~(stat.S_ISUID | stat.S_ISGID)
        _chown(fd, e)  # before chmod: chown clears setuid/setgid
        os.fchmod(fd, mode)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
        _set_xattrs_fd(fd, e)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp if tmp is not None else name, dir_fd=dfd)
        except OSError:
            pass
        raise
    os.close(fd)
    if tmp is None:
        return True
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except IsADirectoryError:
        _remove_any(dfd, name)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            _remove_any(dfd, name)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.unlink(tmp, dir_fd=dfd)
            raise
    return True


READ_AHEAD = 4
"""Blobs of one large file read, decompressed and verified ahead of the writer, in parallel."""


def _blobs(repo: Repository, ids: Sequence[BlobId]) -> Iterator[bytes]:
    """A file's blobs in order. For a large file (many blobs) the next few are read ahead on
    helper threads (pread, zstd and BLAKE3 release the GIL), so one big file uses every core;
    memory stays bounded by ``READ_AHEAD`` blobs."""
    if len(ids) <= 2:
        for bid in ids:
            yield repo.read_blob(bid)
        return
    with ThreadPoolExecutor(2, thread_name_prefix="restore-read") as ex:
        ahead: collections.deque[Future[bytes]] = collections.deque()
        it = iter(ids)
        try:
            for bid in it:
                ahead.append(ex.submit(repo.read_blob, bid))
                if len(ahead) >= READ_AHEAD:
                    break
            while ahead:
                data = ahead.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    ahead.append(ex.submit(repo.read_blob, nxt))
                yield data
        finally:
            for f in ahead:
                f.cancel()


def _set_file_meta_path(dfd: int, name: bytes, e: Entry, keep_setuid: bool) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    try:
        mode = e.mode if keep_setuid else e.mode & ~(stat.S_ISUID | stat.S_ISGID)
        _chown(fd, e)  # before chmod: chown clears setuid/setgid
        os.fchmod(fd, mode)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
    finally:
        os.close(fd)


def _set_xattrs_fd(fd: int, e: Entry) -> None:
    if not e.extra or "xattrs" not in e.extra:
        return
    for k, v in e.extra["xattrs"].items():
        try:
            os.setxattr(fd, k, v)
        except OSError:
            pass


def _replace_with_symlink(dfd: int, name: bytes, e: Entry) -> None:
    target = e.payload if isinstance(e.payload, bytes) else os.fsencode(str(e.payload))
    tmp = b".snapdeck-tmp-" + secrets.token_hex(6).encode()
    os.symlink(target, tmp, dir_fd=dfd)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            _remove_any(dfd, name)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        else:
            os.unlink(tmp, dir_fd=dfd)
            raise
    _lchown(dfd, name, e)
    try:
        os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass


def _make_special(dfd: int, name: bytes, e: Entry, devices: bool) -> None:
    mode = e.mode & ~(stat.S_ISUID | stat.S_ISGID)
    if e.kind is EntryKind.FIFO:
        _unlink_if_exists(dfd, name)
        os.mkfifo(name, mode, dir_fd=dfd)
    elif e.kind in (EntryKind.CHARDEV, EntryKind.BLOCKDEV):
        if not (devices and _IS_ROOT):
            raise StoreError("device node skipped (needs root and --devices)")
        _unlink_if_exists(dfd, name)
        kind = stat.S_IFCHR if e.kind is EntryKind.CHARDEV else stat.S_IFBLK
        os.mknod(name, mode | kind, int(e.payload or 0), dir_fd=dfd)
    else:
        return  # sockets cannot be restored meaningfully
    # mkfifo/mknod apply the umask: set the recorded mode (and owner) explicitly.
    _lchown(dfd, name, e)
    try:
        os.chmod(name, mode, dir_fd=dfd, follow_symlinks=False)
    except (NotImplementedError, ValueError):
        if not stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
            os.chmod(name, mode, dir_fd=dfd)
    os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)


def _lchown(dfd: int, name: bytes, e: Entry) -> None:
    if _IS_ROOT:
        try:
            os.chown(name, e.uid, e.gid, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            pass


# ------------------------------------------------------------------ zip and single files


def iter_file(repo: Repository, e: Entry) -> Iterator[bytes]:
    """The verified content of a file entry, blob by blob."""
    for bid in e.content:
        yield repo.read_blob(bid)


def restore_zip(
    repo: Repository,
    root: BlobId,
    out: IO[bytes],
    *,
    includes: Sequence[str] = (),
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> RestoreResult:
    """Write the snapshot (or the included paths) as a ZIP archive to ``out``."""
    progress = progress or NullProgress()
    plan = _flatten(repo, root, _include_filter(includes, repo.load_tree, root))
    progress.start(len(plan.files), "zip")
    files = bytes_total = 0
    problems: list[Problem] = list(plan.problems)

    def zname(rel: bytes) -> str:
        # ZIP names are UTF-8 (or CP437): a name that is not UTF-8 cannot be stored as it is.
        try:
            return rel.decode("utf-8")
        except UnicodeDecodeError:
            shown = rel.decode("utf-8", "backslashreplace")
            problems.append(Problem(escape_path(rel), f"name is not UTF-8; stored as {shown!r}"))
            return shown

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for rel, e in plan.dirs:
            if e is None:
                continue
            zi = zipfile.ZipInfo(zname(rel) + "/", _zip_time(e))
            zi.external_attr = (stat.S_IFDIR | (e.mode & 0o777)) << 16 | 0x10
            zf.writestr(zi, b"")
        for rel, e in plan.files:
            check_cancel(cancel)
            zi = zipfile.ZipInfo(zname(rel), _zip_time(e))
            zi.external_attr = (stat.S_IFREG | (e.mode & 0o777)) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            # Read and verify the whole file before its entry is opened: a lost or damaged
            # blob must not leave a truncated member in the archive.
            with tempfile.SpooledTemporaryFile(max_size=ZIP_SPOOL_BYTES) as spool:
                try:
                    for chunk in iter_file(repo, e):
                        spool.write(chunk)
                except StoreError as exc:
                    problems.append(Problem(escape_path(rel), str(exc)))
                    progress.advance(1)
                    continue
                spool.seek(0)
                with zf.open(zi, "w", force_zip64=e.size > 2**31) as w:
                    shutil.copyfileobj(spool, w, 1 << 20)
            files += 1
            bytes_total += e.size
            progress.advance(1)
        for rel, e in plan.links:
            zi = zipfile.ZipInfo(zname(rel), _zip_time(e))
            zi.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(zi, e.payload if isinstance(e.payload, bytes) else b"")
    return RestoreResult(files_restored=files, bytes_written=bytes_total, problems=tuple(problems))


def _zip_time(e: Entry) -> tuple[int, int, int, int, int, int]:
    try:
        t = datetime.fromtimestamp(e.mtime_ns / 1e9, UTC)
    except (ValueError, OverflowError, OSError):
        return (1980, 1, 1, 0, 0, 0) if e.mtime_ns < 0 else (2107, 12, 31, 23, 59, 58)
    if t.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    if t.year > 2107:  # the last time a ZIP header can hold
        return (2107, 12, 31, 23, 59, 58)
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)
