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
- Regular files are written by ``restore_files`` (forked worker processes for a large restore
  from a local repository), after every tree of the restore is loaded and checked; each
  directory is made before the first file in it is handed out.
"""

from __future__ import annotations

import collections
import errno
import gc
import logging
import os
import secrets
import shutil
import stat
import tempfile
import threading
import zipfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, NamedTuple

from backend import restore_files as rf
from backend.chunking import chunk_fd
from backend.errors import IntegrityError, PathNotFound, StoreError, UnsafeRestore, UsageError
from backend.format import decode_tree_rows, entry_from_row
from backend.ids import BlobId
from backend.model import Entry, EntryKind, Problem, RestoreResult, Tree
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository, default_threads
from backend.snapshots import escape_path
from backend.storage.local import LocalStorage

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


OnFile = Callable[[int, bytes, Entry], None]
"""Receives each selected file instead of ``_Plan.files``: (index of its directory in
``_Plan.dirs``, its relative path, its entry)."""
OnFileRow = Callable[[int, list[Any]], None]
"""Receives a plain file of a fully selected directory straight from its tree row, already
checked: (directory index, the row)."""


class _Rows(NamedTuple):
    """A tree as its raw rows (``format.decode_tree_rows``), checked while they are walked."""

    rows: list[Any]


def _flatten(
    repo: Repository,
    root: BlobId,
    includes: list[list[bytes]],
    on_file: OnFile | None = None,
    load: Callable[[BlobId], Tree | _Rows] | None = None,
    on_file_row: OnFileRow | None = None,
) -> _Plan:
    """Walk the selected part of the snapshot: every tree is loaded and every name checked
    before anything is written (a hostile tree refuses the whole restore).

    With ``load`` returning ``_Rows`` and ``on_file_row``, the plain files of fully selected
    directories skip the ``Entry`` objects: a row whose fields have exactly the types the
    encoder writes is checked here (name, order, blob ids); any other row goes through
    ``format.entry_from_row``, which accepts or refuses it as ``decode_tree`` would.
    """
    plan = _Plan()
    load_tree = load or repo.load_tree

    def visit(tree_id: BlobId, rel: bytes, dir_no: int, parts: list[bytes], whole: bool) -> None:
        tree = _load_subtree(repo, tree_id, rel, plan, load_tree)
        if tree is None:
            return
        if isinstance(tree, _Rows):
            visit_rows(tree.rows, rel, dir_no, parts, whole)
            return
        names: set[bytes] = set()
        for e in tree.entries:
            check_name(e.name)
            visit_entry(e, rel, dir_no, parts, whole, names)
        if whole:
            plan.wanted[rel] = names

    def visit_entry(
        e: Entry, rel: bytes, dir_no: int, parts: list[bytes], whole: bool, names: set[bytes]
    ) -> None:
        if whole:
            full, partial = True, False
        else:
            full, partial = _selected([*parts, e.name], includes)
            if not full and not partial:
                return
        names.add(e.name)
        crel = rel + b"/" + e.name if rel else e.name
        kind = e.kind
        if kind is EntryKind.FILE:
            if not full:
                return
            if on_file is None:
                plan.files.append((crel, e))
            else:
                on_file(dir_no, crel, e)
        elif kind is EntryKind.DIR:
            plan.dirs.append((crel, e))
            visit(BlobId(e.payload), crel, len(plan.dirs) - 1, [*parts, e.name], full)
        elif not full:
            return
        elif kind is EntryKind.SYMLINK:
            plan.links.append((crel, e))
        else:
            plan.specials.append((crel, e))

    def visit_rows(
        rows: list[Any], rel: bytes, dir_no: int, parts: list[bytes], whole: bool
    ) -> None:
        names: set[bytes] = set()
        prev = b""
        first = True
        fast = whole and on_file_row is not None
        for r in rows:
            if (
                fast
                and type(r) is list
                and len(r) >= 12
                and r[1] == "f"
                and type(name := r[0]) is bytes
                and name
                and name != b"."
                and name != b".."
                and b"/" not in name
                and b"\0" not in name
                and type(r[2]) is int
                and type(r[3]) is int
                and type(r[4]) is int
                and type(r[5]) is int
                and type(r[6]) is int
                and type(r[8]) is int
                and type(r[9]) is int
                and type(nlink := r[10]) is int
                and ((content := r[7]) is None or _blob_ids(content))
                and (
                    (extra := r[11]) is None
                    or (type(extra) is dict and not (nlink > 1 and "dev" in extra))
                )
            ):
                if not first and name <= prev:
                    raise IntegrityError("tree entries are not sorted and unique")
                names.add(name)
                assert on_file_row is not None
                on_file_row(dir_no, r)
            else:
                e = entry_from_row(r)  # refuses a malformed row, with decode_tree's message
                name = e.name
                if not first and name <= prev:
                    raise IntegrityError("tree entries are not sorted and unique")
                check_name(name)
                visit_entry(e, rel, dir_no, parts, whole, names)
            prev = name
            first = False
        if whole:
            plan.wanted[rel] = names

    plan.dirs.append((b"", None))
    visit(root, b"", 0, [], not includes)
    return plan


def _blob_ids(content: Any) -> bool:
    """Whether a file row's content is a list of 32-byte blob ids (as the encoder writes)."""
    return type(content) is list and all(type(b) is bytes and len(b) == 32 for b in content)


def _uncached_loader(repo: Repository) -> Callable[[BlobId], Tree | _Rows]:
    """Load trees without filling the repository's tree cache (a restore reads each tree
    once; cached, the entries of a large tree would stay in memory for nothing), as raw rows
    that ``_flatten`` checks as it walks them (a tree already in the cache is used as is)."""

    def load(tree_id: BlobId) -> Tree | _Rows:
        tree = repo.cached_tree(tree_id)
        if tree is not None:
            return tree
        return _Rows(decode_tree_rows(repo.read_blob(tree_id)))

    return load


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a plan of many objects (none cyclic) is built:
    each full collection would walk all of them (measured: flatten of 100k files 2x)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _load_subtree(
    repo: Repository,
    tree_id: BlobId,
    rel: bytes,
    plan: _Plan,
    load: Callable[[BlobId], Tree | _Rows] | None = None,
) -> Tree | _Rows | None:
    """A directory's tree, or None (and a problem) when its data is lost or damaged.

    The root tree must load (else nothing can be restored and the error propagates). A tree
    whose bytes verify against its id but that is malformed or hostile (an unsafe name,
    unsorted entries) is never a "partial" case: the error propagates and nothing is restored.
    """
    try:
        return (load or repo.load_tree)(tree_id)
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
    processes: int | None = None,
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
        progress: advanced by the number of files done (after each batch of files).
        cancel: stop between files.
        threads: writer threads when files are written in this process (0: automatic).
        processes: worker processes that write the files (None: automatic — forked for a
            large restore from a local repository; 0 or 1: none, write in this process).
    """
    if overwrite not in OVERWRITE_MODES:
        raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}")
    progress = progress or NullProgress()
    incl = _include_filter(includes, repo.load_tree, root)
    btarget = os.fsencode(os.path.abspath(target))
    if dry_run:
        plan = _flatten(repo, root, incl)
        progress.start(len(plan.files), "restore")
        return _dry_run(plan, btarget, overwrite, delete, repo)

    # The plan: every tree loaded and every name checked before anything is written. Files
    # go into columns (FileTable); the second and later names of a hardlink group, files
    # whose blobs the index does not know (written by this process just now, or lost) and
    # files with values beyond 64 bits (crafted) are written here afterwards the slow way
    # (read_blob says what is wrong with a lost one).
    table = rf.FileTable()
    slow: list[tuple[bytes, Entry]] = []
    hard_first: dict[tuple[int, int], bytes] = {}
    hard_rest: list[tuple[bytes, Entry, tuple[int, int]]] = []
    add = table.adder(repo.index.get)
    slow_rows: list[tuple[int, Entry]] = []  # (directory index, entry): their path comes later

    def on_file(dir_no: int, rel: bytes, e: Entry) -> None:
        hard = False
        if e.nlink > 1 and e.extra and "dev" in e.extra:
            key = (int(e.extra["dev"]), e.ino)
            if key in hard_first:
                hard_rest.append((rel, e, key))
                return
            hard_first[key] = rel
            hard = True
        if not add(
            dir_no, e.name, e.mode, e.uid, e.gid, e.mtime_ns, e.size, e.content, e.extra, hard
        ):
            slow.append((rel, e))

    def on_file_row(dir_no: int, r: list[Any]) -> None:
        if not add(dir_no, r[0], r[2], r[3], r[4], r[5], r[6], r[7], r[11], False):
            slow_rows.append((dir_no, entry_from_row(r)))  # the slow path wants an entry

    with _gc_paused():
        plan = _flatten(repo, root, incl, on_file, _uncached_loader(repo), on_file_row)
    slow += [(_join(plan.dirs[d][0], e.name), e) for d, e in slow_rows]
    total = len(table) + len(slow) + len(hard_rest)
    progress.start(total, "restore")
    os.makedirs(btarget, exist_ok=True)
    root_fd = os.open(btarget, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = _DirFds(root_fd, _fd_budget())
    problems: list[Problem] = list(plan.problems)
    counts = {"files": 0, "skipped": 0, "bytes": 0, "dirs": 0, "links": 0, "deleted": 0}

    def problem(rel: bytes, msg: str) -> None:
        problems.append(Problem(escape_path(rel), msg))

    made = 0  # directories plan.dirs[:made] are made (0 is the target itself)

    def prepare(upto: int) -> None:
        """Make directories up to ``plan.dirs[upto]``, top-down (never through a symlink),
        and (``delete``) remove what the snapshot does not have from each."""
        nonlocal made
        while made <= upto:
            rel, _e = plan.dirs[made]
            made += 1
            if rel:
                try:
                    _make_dir(fds, rel)
                    counts["dirs"] += 1
                except OSError as exc:
                    problem(rel, f"cannot create directory: {exc.strerror}")
                    continue
            if delete and rel in plan.wanted:
                try:
                    dfd = fds.get(rel)
                except OSError:
                    continue
                names = plan.wanted[rel]
                for extra in _listdir_bytes(dfd):
                    if extra not in names and not extra.startswith(b".snapdeck-tmp-"):
                        _remove_any(dfd, extra)
                        counts["deleted"] += 1

    try:
        # 1. files, in batches (by forked workers for a large restore from a local
        # repository); the directories a batch writes into are made (and, with ``delete``,
        # emptied of what the snapshot does not have) just before it is handed out
        check_cancel(cancel)
        out = _write_table(
            repo,
            table,
            plan,
            prepare,
            root_fd,
            fds.capacity,
            overwrite,
            keep_setuid,
            threads,
            processes,
            progress,
            cancel,
        )
        prepare(len(plan.dirs) - 1)  # the directories without files
        counts["files"] += out.files
        counts["skipped"] += out.skipped
        counts["bytes"] += out.bytes
        for i, msg in out.problems:
            problem(_join(plan.dirs[table.dir[i]][0], table.names[i]), msg)
        hard_written = {  # hardlink sources this run actually wrote
            _join(plan.dirs[table.dir[i]][0], table.names[i]) for i in out.hard
        }
        for rel, e in slow:
            check_cancel(cancel)
            parent, _, name = rel.rpartition(b"/")
            try:
                dfd = open_dir_chain(root_fd, parent)
            except OSError as exc:
                problem(rel, f"cannot open directory: {exc.strerror}")
                progress.advance(1)
                continue
            try:
                if _write_file(repo, dfd, name, e, overwrite, keep_setuid):
                    counts["files"] += 1
                    counts["bytes"] += e.size
                    if e.nlink > 1:
                        hard_written.add(rel)
                else:
                    counts["skipped"] += 1
            except StoreError as exc:
                problem(rel, str(exc))
            except OSError as exc:
                problem(rel, exc.strerror or str(exc))
            except (OverflowError, ValueError) as exc:  # a crafted mode or time
                problem(rel, f"cannot restore its metadata: {exc}")
            finally:
                os.close(dfd)
            progress.advance(1)
        check_cancel(cancel)
        for rel, e, key in hard_rest:
            progress.advance(1)
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


def _pack_path(storage: LocalStorage) -> Callable[[str], str]:
    """The file of a pack in a local repository (where ``LocalStorage`` keeps it)."""

    def path(pack: str) -> str:
        return storage._locate("data", pack)[1]

    return path


def _write_table(
    repo: Repository,
    table: rf.FileTable,
    plan: _Plan,
    prepare: Callable[[int], None],
    root_fd: int,
    fd_capacity: int,
    overwrite: str,
    keep_setuid: bool,
    threads: int,
    processes: int | None,
    progress: Progress,
    cancel: threading.Event | None,
) -> rf.Outcome:
    """Write the table's files (see ``restore_files``)."""
    storage = repo.storage
    local = isinstance(storage, LocalStorage)
    large = len(table) >= rf.FORK_MIN_FILES or table.total_bytes >= rf.FORK_MIN_BYTES
    if processes is None:
        processes = default_threads() if large else 0
    if not (local and rf.fork_available()):
        processes = 0
    if processes <= 1 and (large or not local):
        # Remote reads wait on the network; local writes of small files wait on syscalls
        # that release the GIL: more threads than cores (measured on W4: 6 beat 3).
        threads = threads or 2 * default_threads() + 2
    elif processes <= 1:
        threads = threads or 1
    number = {rel: d for d, (rel, _e) in enumerate(plan.dirs)}
    parents = array("q", [-1])
    names = [b""]
    for rel, _e in plan.dirs[1:]:
        parent, _, name = rel.rpartition(b"/")
        parents.append(number[parent])
        names.append(name)
    setup = rf.WriteSetup(
        table=table,
        dir_parent=parents,
        dir_names=names,
        root_fd=root_fd,
        prepare=prepare,
        dir_cap=max(64, min(4096, fd_capacity // 8)),
        open_stored=repo.open_stored_blob,
        hash_blob=repo.hash_blob,
        chunker=repo.config.chunker,
        overwrite=overwrite,
        keep_setuid=keep_setuid,
        pack_path=_pack_path(storage) if isinstance(storage, LocalStorage) else None,
        get_range=storage.get_range,
        location=storage.location,
    )
    return rf.write_files(
        setup, processes=processes, threads=threads, progress=progress, cancel=cancel
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


_remove_any = rf.remove_any


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
    if tmp is not None:
        rf.replace_entry(dfd, tmp, name)
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
