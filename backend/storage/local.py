"""Object storage in a local directory (layer: storage).

On-disk layout under the repository root::

    config              the single ``config`` object
    keys/<name>         key material
    data/<ab>/<name>    packs, fanned out by the first two characters of the name
    index/<name>        index segments
    snapshots/<name>    snapshot objects
    locks/<name>        lock leases
    refs/<a>/<b>        refs; a '/' in a ref name is a subdirectory

Invariants:

* Every write is atomic. The bytes go to ``.tmp-<random>`` in the destination directory, the
  file is fsynced, and only then does the object appear under its name: through ``os.link``
  for create-if-absent (the link fails with ``EEXIST`` if the name exists, so of two racing
  writers exactly one wins) or ``os.replace`` for overwrites. The directory is then fsynced
  so the new name survives a crash.
* Temp files never show in listings. A crash can leave them behind; ``cleanup_temp`` removes
  old ones.
* Every OS error becomes a ``StoreError`` with a one-line message that names the path.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from backend.errors import ObjectExists, ObjectNotFound, StoreError, UsageError
from backend.storage.base import KINDS, Data, ObjectInfo, check_name, check_prefix

__all__ = ["LocalStorage", "check_address", "check_kind"]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
"""Prefix of in-flight temp files; object names can never start with '.'."""

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
# Filesystems that cannot fsync a directory say so with one of these; the rename is still atomic.
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def _reason(exc: OSError) -> str:
    """The human part of an OS error ("No space left on device")."""
    if exc.strerror:
        return exc.strerror
    if exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def check_address(kind: str, name: str) -> None:
    """Validate an object address, with the per-kind rules ``check_name`` leaves out.

    ``config`` holds the single object ``config``; only refs may contain '/' (elsewhere a '/'
    would break the data fan-out and make names that no listing returns). Every storage
    uses this, so the rules are the same everywhere; it could move into ``base.check_name``.

    Raises:
        UsageError: The kind is unknown or the name is invalid for it.
    """
    check_name(kind, name)
    if kind == "config" and name != "config":
        raise UsageError(f"the config kind holds only the object 'config', not {name!r}")
    if kind != "refs" and "/" in name:
        raise UsageError(f"invalid {kind} object name {name!r}: only refs may contain '/'")


SLOW_IO_ENV = "SNAPDECK_TEST_SLOW_IO"
"""TEST-ONLY hook: milliseconds to sleep in every ``put`` (with the temp file written, before
it is linked into place) and every ``delete`` of an object other than a lock. The crash
harness (``bench/crash.py``) sets it so that kill -9 lands inside write phases, which are too
short to hit otherwise. Never set it in real use: it only slows snapdeck down."""


def _slow_io_s() -> float:
    raw = os.environ.get(SLOW_IO_ENV, "")
    try:
        return max(0.0, float(raw)) / 1000 if raw else 0.0
    except ValueError:
        return 0.0


def check_kind(kind: str) -> None:
    """Raise ``UsageError`` unless ``kind`` is one of ``KINDS``."""
    if kind not in KINDS:
        raise UsageError(f"unknown object kind {kind!r}")


class _FdCache:
    """Open read-only fds of immutable objects (packs), shared by threads.

    Entries are refcounted: an evicted fd is closed only when its last reader releases it, so
    a concurrent ``pread`` can never hit a closed (or reused) descriptor.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._open: OrderedDict[str, list[int]] = OrderedDict()  # path -> [fd, refs, evicted]

    def acquire(self, path: str) -> list[int]:
        with self._lock:
            ent = self._open.get(path)
            if ent is not None:
                ent[1] += 1
                self._open.move_to_end(path)
                return ent
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
        with self._lock:
            ent = self._open.get(path)
            if ent is not None:  # another thread opened it meanwhile
                os.close(fd)
                ent[1] += 1
                return ent
            ent = [fd, 1, 0]
            self._open[path] = ent
            while len(self._open) > self.capacity:
                _p, old = self._open.popitem(last=False)
                old[2] = 1
                if old[1] == 0:
                    os.close(old[0])
            return ent

    def release(self, ent: list[int]) -> None:
        with self._lock:
            ent[1] -= 1
            if ent[2] and ent[1] == 0:
                os.close(ent[0])

    def forget(self, path: str) -> None:
        with self._lock:
            ent = self._open.pop(path, None)
            if ent is not None:
                ent[2] = 1
                if ent[1] == 0:
                    os.close(ent[0])

    def close_all(self) -> None:
        with self._lock:
            for ent in self._open.values():
                ent[2] = 1
                if ent[1] == 0:
                    os.close(ent[0])
            self._open.clear()


class LocalStorage:
    """An ``ObjectStorage`` in a local directory.

    Safe to share between threads, and between processes that use the same directory.

    Args:
        root: The repository directory. ``create()`` makes it; the other methods expect it.
    """

    location: str
    """The repository directory, as given."""

    def __init__(self, root: Path | str) -> None:
        self._root = os.path.abspath(os.fspath(root))
        self.location = os.fspath(root)
        # Directories known to exist, so a burst of puts costs no mkdir calls. A directory
        # removed behind our back is noticed when the temp file cannot be created.
        self._dirs: set[str] = set()
        self._fds = _FdCache()
        self._slow_s = _slow_io_s()  # test-only, see SLOW_IO_ENV

    @property
    def root(self) -> Path:
        """The repository directory."""
        return Path(self._root)

    def __repr__(self) -> str:
        return f"LocalStorage({self._root!r})"

    # -- layout --------------------------------------------------------------------------------

    def _kind_dir(self, kind: str) -> str:
        return self._root if kind == "config" else os.path.join(self._root, kind)

    def _locate(self, kind: str, name: str) -> tuple[str, str]:
        """The directory and the path of an object (the name must be valid)."""
        if kind == "config":
            return self._root, os.path.join(self._root, "config")
        base = os.path.join(self._root, kind)
        if kind == "data":
            directory = os.path.join(base, name[:2])
        elif kind == "refs" and "/" in name:
            head, _, name = name.rpartition("/")
            directory = os.path.join(base, *head.split("/"))
        else:
            directory = base
        return directory, os.path.join(directory, name)

    def create(self) -> None:
        """Create the root and the kind directories (idempotent).

        Raises:
            StoreError: The directories cannot be created.
        """
        try:
            made_root = not os.path.isdir(self._root)
            os.makedirs(self._root, mode=_DIR_MODE, exist_ok=True)
            if made_root:
                self._fsync_dir(os.path.dirname(self._root))
            made_kind = False
            for kind in KINDS:
                if kind == "config":
                    continue
                try:
                    os.mkdir(os.path.join(self._root, kind), _DIR_MODE)
                    made_kind = True
                except FileExistsError:
                    pass
            if made_kind:  # one fsync of the root covers all new kind directories
                self._fsync_dir(self._root)
            self._dirs.add(self._root)
            for kind in KINDS:
                if kind != "config":
                    self._ensure_dir(os.path.join(self._root, kind))
        except OSError as exc:
            raise StoreError(f"cannot create repository at {self._root}: {_reason(exc)}") from exc

    def is_initialized(self) -> bool:
        """True when the ``config`` object exists."""
        return self.exists("config", "config")

    def _ensure_dir(self, directory: str) -> None:
        """Make ``directory`` (and missing parents below the root), fsyncing each new one."""
        if directory in self._dirs:
            return
        if directory == self._root:
            if not os.path.isdir(directory):
                raise FileNotFoundError(errno.ENOENT, "repository directory is missing", directory)
            self._dirs.add(directory)
            return
        parent = os.path.dirname(directory)
        self._ensure_dir(parent)
        try:
            os.mkdir(directory, _DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory
                ) from None
        else:
            self._fsync_dir(parent)
        self._dirs.add(directory)

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        """Make the entries of ``directory`` durable."""
        try:
            fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except OSError as exc:
            if exc.errno in _DIR_FSYNC_UNSUPPORTED or os.name == "nt":
                return
            raise
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
                raise
        finally:
            os.close(fd)

    # -- writing -------------------------------------------------------------------------------

    def put(self, kind: str, name: str, data: Data, *, overwrite: bool = False) -> None:
        """Write an object atomically.

        Args:
            kind: One of ``KINDS``.
            name: The object's name.
            data: The whole content.
            overwrite: Replace an existing object instead of refusing.

        Raises:
            ObjectExists: ``overwrite`` is false and the object exists (another writer won).
            UsageError: An invalid address, or a ref name that clashes with a ref directory.
            StoreError: The write failed; nothing was stored and no temp file is left.
        """
        check_address(kind, name)
        directory, path = self._locate(kind, name)
        try:
            self._write(directory, path, data, overwrite, self._slow_s if kind != "locks" else 0)
        except ObjectExists:
            raise
        except OSError as exc:
            if kind == "refs" and exc.errno in (errno.ENOTDIR, errno.EISDIR):
                raise UsageError(
                    f"ref {name!r} clashes with an existing ref (a ref cannot also be a folder)"
                ) from exc
            raise StoreError(f"cannot write {path}: {_reason(exc)}") from exc

    def _open_temp(self, directory: str) -> tuple[int, str]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_BINARY
        for attempt in range(2):
            self._ensure_dir(directory)
            tmp = os.path.join(directory, TEMP_PREFIX + os.urandom(8).hex())
            try:
                return os.open(tmp, flags, _FILE_MODE), tmp
            except FileNotFoundError:
                if attempt:
                    raise
                # Someone removed a directory we had cached: forget them all and recreate.
                self._dirs.clear()
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(
        self, directory: str, path: str, data: Data, overwrite: bool, slow_s: float = 0.0
    ) -> None:
        fd, tmp = self._open_temp(directory)
        try:
            try:
                for part in data if isinstance(data, list) else (data,):
                    view = memoryview(part)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if slow_s:
                time.sleep(slow_s)  # test-only (SLOW_IO_ENV): the temp file is in place
            if overwrite:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    if os.path.isdir(path):
                        raise IsADirectoryError(
                            errno.EISDIR, os.strerror(errno.EISDIR), path
                        ) from None
                    raise ObjectExists(f"object already exists: {path}") from None
                _unlink_quietly(tmp)
            self._fsync_dir(directory)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def delete(self, kind: str, name: str) -> None:
        """Remove an object; a missing object is not an error.

        Emptied ref subdirectories are left in place (removing them would race with writers).

        Raises:
            UsageError: An invalid address.
            StoreError: The object exists but cannot be removed.
        """
        check_address(kind, name)
        directory, path = self._locate(kind, name)
        if kind == "data":
            self._fds.forget(path)
        if self._slow_s and kind != "locks":
            time.sleep(self._slow_s)  # test-only (SLOW_IO_ENV)
        try:
            os.unlink(path)
        except _MISSING:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {_reason(exc)}") from exc
        try:
            # Prune deletes in a deliberate order (index before packs); keep it across a crash.
            self._fsync_dir(directory)
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {_reason(exc)}") from exc

    def cleanup_temp(self, older_than_s: float) -> int:
        """Remove temp files that crashed writers left behind.

        Args:
            older_than_s: Only remove temp files last modified at least this long ago, so
                writes in flight (in this or another process) are left alone.

        Returns:
            How many temp files were removed.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        for dirpath, _dirnames, filenames in os.walk(self._root):
            for filename in filenames:
                if not filename.startswith(TEMP_PREFIX):
                    continue
                tmp = os.path.join(dirpath, filename)
                try:
                    if os.lstat(tmp).st_mtime > cutoff:
                        continue
                    os.unlink(tmp)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("cannot remove temp file %s: %s", tmp, _reason(exc))
                    continue
                logger.info("removed stale temp file %s", tmp)
                removed += 1
        return removed

    # -- reading -------------------------------------------------------------------------------

    def _not_found(self, kind: str, name: str) -> ObjectNotFound:
        return ObjectNotFound(f"no {kind} object {name!r} in {self.location}")

    def get(self, kind: str, name: str) -> bytes:
        """The whole object.

        Raises:
            ObjectNotFound: No such object.
            StoreError: It cannot be read.
        """
        check_address(kind, name)
        _, path = self._locate(kind, name)
        try:
            with open(path, "rb", buffering=0) as f:
                return f.read()
        except _MISSING:
            raise self._not_found(kind, name) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {_reason(exc)}") from exc

    def get_range(self, kind: str, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at the end of the object.

        Raises:
            UsageError: A negative offset or length.
            ObjectNotFound: No such object.
            StoreError: It cannot be read.
        """
        check_address(kind, name)
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range: offset {offset}, length {length}")
        _, path = self._locate(kind, name)
        cached = kind == "data"  # packs are immutable: keep their fds open
        ent: list[int] | None = None
        try:
            if cached:
                ent = self._fds.acquire(path)
                fd = ent[0]
            else:
                fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | _O_BINARY)
        except _MISSING:
            raise self._not_found(kind, name) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {_reason(exc)}") from exc
        try:
            first = os.pread(fd, length, offset)
            if len(first) == length or not first:
                return first
            parts = [first]
            got = len(first)
            while got < length:  # pread may return short for huge reads
                part = os.pread(fd, length - got, offset + got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            return b"".join(parts)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {_reason(exc)}") from exc
        finally:
            if ent is not None:
                self._fds.release(ent)
            else:
                os.close(fd)

    def _stat(self, kind: str, name: str) -> tuple[str, os.stat_result | None]:
        check_address(kind, name)
        _, path = self._locate(kind, name)
        try:
            st = os.stat(path)
        except _MISSING:
            return path, None
        except OSError as exc:
            raise StoreError(f"cannot stat {path}: {_reason(exc)}") from exc
        return path, st if stat_mod.S_ISREG(st.st_mode) else None

    def exists(self, kind: str, name: str) -> bool:
        """Whether the object exists.

        Raises:
            UsageError: An invalid address.
            StoreError: Its presence cannot be determined (e.g. permission denied).
        """
        return self._stat(kind, name)[1] is not None

    def stat(self, kind: str, name: str) -> ObjectInfo:
        """Size and mtime of an object.

        Raises:
            ObjectNotFound: No such object.
        """
        _, st = self._stat(kind, name)
        if st is None:
            raise self._not_found(kind, name)
        return ObjectInfo(name=name, size=st.st_size, mtime=st.st_mtime)

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of a kind whose name starts with ``prefix``, in no particular order;
        never temp files. Only the directories that can hold such names are read (a ref
        folder, a data fan-out directory), and only matching entries are stat'ed.

        Raises:
            UsageError: An unknown kind or an invalid prefix (at once, not on iteration).
            StoreError: A directory cannot be read (on iteration).
        """
        check_prefix(kind, prefix)
        return self._iter_kind(kind, prefix)

    def _iter_kind(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self._kind_dir(kind)
        if kind == "config":
            if "config".startswith(prefix):
                try:
                    yield self.stat("config", "config")
                except ObjectNotFound:
                    pass
        elif kind == "data":
            if len(prefix) >= 2:  # one fan-out directory
                yield from _files(os.path.join(base, prefix[:2]), "", prefix)
                return
            for sub in _scan(base):
                if (
                    sub.name.startswith(".")
                    or not sub.name.startswith(prefix)
                    or not sub.is_dir(follow_symlinks=False)
                ):
                    continue
                yield from _files(sub.path, "")
        elif kind == "refs":
            folder = prefix.rpartition("/")[0]  # the deepest folder every match is in
            if folder:
                yield from _walk_refs(
                    os.path.join(base, *folder.split("/")), folder + "/", prefix
                )
            else:
                yield from _walk_refs(base, "", prefix)
        else:
            yield from _files(base, "", prefix)

    def close(self) -> None:
        """Close cached pack descriptors."""
        self._fds.close_all()


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _scan(directory: str) -> list[os.DirEntry[str]]:
    """The entries of a directory; none if it does not exist."""
    try:
        with os.scandir(directory) as it:
            return list(it)
    except _MISSING:
        return []
    except OSError as exc:
        raise StoreError(f"cannot list {directory}: {_reason(exc)}") from exc


def _info(entry: os.DirEntry[str], name: str) -> ObjectInfo | None:
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:  # deleted while we listed
        return None
    except OSError as exc:
        raise StoreError(f"cannot stat {entry.path}: {_reason(exc)}") from exc
    if not stat_mod.S_ISREG(st.st_mode):
        return None
    return ObjectInfo(name=name, size=st.st_size, mtime=st.st_mtime)


def _files(directory: str, prefix: str, match: str = "") -> Iterator[ObjectInfo]:
    """The objects in ``directory`` (names ``prefix + entry``) whose name starts with
    ``match``."""
    for entry in _scan(directory):
        # Object names never start with '.', so this hides temp files and nothing else of ours.
        if entry.name.startswith("."):
            continue
        name = prefix + entry.name
        if match and not name.startswith(match):
            continue
        info = _info(entry, name)
        if info is not None:
            yield info


def _walk_refs(directory: str, prefix: str, match: str = "") -> Iterator[ObjectInfo]:
    """The refs below ``directory`` (named ``prefix + path``) whose name starts with
    ``match``; a sub-folder is entered only if names below it can match."""
    for entry in _scan(directory):
        if entry.name.startswith("."):
            continue
        name = prefix + entry.name
        if entry.is_dir(follow_symlinks=False):
            folder = name + "/"
            if folder.startswith(match) or match.startswith(folder):
                yield from _walk_refs(entry.path, folder, match)
            continue
        if match and not name.startswith(match):
            continue
        info = _info(entry, name)
        if info is not None:
            yield info
