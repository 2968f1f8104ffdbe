"""The Store facade: the one object every client (CLI, TUI, watch) uses.

It opens the storage and repository, keeps the catalog in sync, resolves snapshot references,
takes the right repository lock for each operation, and returns plain data. Mutations within
one process are serialised with a lock, because TUI workers may overlap.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from backend.catalog import Catalog
from backend.clock import Clock, SystemClock
from backend.diff import TextDiff, diff_trees, unified_text_diff
from backend.errors import (
    AmbiguousReference,
    ObjectNotFound,
    PathNotFound,
    SnapshotNotFound,
    StoreError,
    UsageError,
)
from backend.format import BLOB_DATA, ChunkerParams
from backend.ids import BlobId
from backend.locking import RepositoryLock, acquire_lock, break_locks, list_locks
from backend.meta import Head, Meta, Note, check_ref_name
from backend.model import (
    DiffResult,
    Entry,
    EntryKind,
    RepoStats,
    RestoreResult,
    Snapshot,
    SnapshotResult,
)
from backend.progress import Progress
from backend.repository import Repository
from backend.restore import iter_file, restore_tree, restore_zip, split_path, walk_to
from backend.snapshots import SnapshotOptions, create_snapshot, escape_path, scan_live_tree
from backend.storage import ObjectStorage, open_storage

log = logging.getLogger(__name__)

MIN_PREFIX = 6
TOUCH_EVERY_S = 60.0
"""Accesses to one snapshot closer together than this are recorded once."""


class Store:
    """A repository opened for use.

    Args:
        repo: the open repository.
        cache_dir: where the catalog lives (None: in memory).
        clock: the time source.
    """

    def __init__(
        self,
        repo: Repository,
        *,
        cache_dir: Path | None = None,
        clock: Clock | None = None,
        lock_wait_s: float = 0.0,
    ) -> None:
        self.repo = repo
        self.storage: ObjectStorage = repo.storage
        self.clock = clock or SystemClock()
        self.lock_wait_s = lock_wait_s
        cat_path = cache_dir / repo.config.id / "catalog.sqlite" if cache_dir else None
        self.catalog = Catalog(cat_path, repo.config.id)
        self.meta = Meta(self.storage)
        self._mutex = threading.RLock()
        self._synced = False
        self._touched: dict[str, datetime] = {}

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        *,
        create: bool = False,
        cache_dir: Path | None = None,
        clock: Clock | None = None,
        compression_level: int = 3,
        lock_wait_s: float = 0.0,
    ) -> Store:
        """Open the repository at ``location``; with ``create``, initialise it if absent."""
        storage = open_storage(str(location))
        if create and not storage.is_initialized():
            repo = Repository.init(storage, compression_level=compression_level)
        else:
            repo = Repository.open(storage)
        return cls(repo, cache_dir=cache_dir, clock=clock, lock_wait_s=lock_wait_s)

    @classmethod
    def init(
        cls,
        location: str | os.PathLike[str],
        *,
        cache_dir: Path | None = None,
        clock: Clock | None = None,
        chunker: ChunkerParams | None = None,
        compression_level: int = 3,
    ) -> Store:
        """Create a new repository at ``location``."""
        storage = open_storage(str(location))
        repo = Repository.init(
            storage,
            chunker=chunker,
            compression_level=compression_level,
            now=(clock or SystemClock()).now(),
        )
        return cls(repo, cache_dir=cache_dir, clock=clock)

    def close(self) -> None:
        """Release the catalog and storage."""
        self.catalog.close()
        self.storage.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def location(self) -> str:
        """Where the repository is."""
        return self.storage.location

    @property
    def repo_id(self) -> str:
        """The repository's id."""
        return self.repo.config.id

    def lock(self, *, exclusive: bool, operation: str) -> RepositoryLock:
        """Take a repository lock (context manager)."""
        return acquire_lock(
            self.storage,
            exclusive=exclusive,
            operation=operation,
            clock=self.clock,
            wait_s=self.lock_wait_s,
        )

    # ------------------------------------------------------------ snapshots

    def list_snapshots(
        self,
        *,
        source: str | None = None,
        tags: Sequence[str] = (),
        host: str | None = None,
        refresh: bool = True,
    ) -> list[Snapshot]:
        """Snapshots, oldest first, filtered by source, host and tags (all must match)."""
        snaps = self.catalog.sync(self.repo) if refresh or not self._synced else self.catalog.all()
        self._synced = True
        notes = self.meta.notes()
        if notes:
            snaps = [_annotate(s, notes.get(s.id)) for s in snaps]
        if source is not None:
            src = os.path.abspath(source)
            snaps = [s for s in snaps if s.source == src]
        if host is not None:
            snaps = [s for s in snaps if s.host == host]
        for t in tags:
            snaps = [s for s in snaps if t in s.tags]
        return snaps

    def resolve(self, ref: str, *, source: str | None = None) -> Snapshot:
        """A snapshot from a full id, a unique prefix, ``latest`` or ``HEAD``.

        ``latest`` is the newest snapshot (of ``source`` if given); ``HEAD`` is the HEAD of
        ``source`` (default: the current directory's source). ``X~N`` walks N parents back.
        """
        ref = ref.strip()
        base, _, back = ref.partition("~")
        steps = 0
        if _:
            if back and not back.isdigit():
                raise UsageError(f"invalid reference {ref!r}: ~ must be followed by a number")
            steps = int(back or 1)
        snap = self._resolve_base(base, source)
        for _i in range(steps):
            if snap.parent is None:
                raise SnapshotNotFound(f"{ref}: snapshot {snap.short_id} has no parent")
            snap = self._by_id(snap.parent)
        return snap

    def _by_id(self, sid: str) -> Snapshot:
        snap = self.catalog.get(sid)
        if snap is None:
            try:
                snap = self.repo.load_snapshot(sid)
            except ObjectNotFound:
                raise SnapshotNotFound(f"snapshot {sid[:8]} not found") from None
        return _annotate(snap, self.meta.note(sid))

    def get(self, sid: str) -> Snapshot:
        """A snapshot by full id (with its note applied)."""
        return self._by_id(sid)

    def _resolve_base(self, ref: str, source: str | None) -> Snapshot:
        named = self.meta.ref(ref)
        if named is not None:
            return self._by_id(named)
        snaps = self.list_snapshots()
        if not snaps:
            raise SnapshotNotFound("the repository has no snapshots yet")
        if ref == "latest":
            pool = [s for s in snaps if source is None or s.source == os.path.abspath(source)]
            if not pool:
                raise SnapshotNotFound(f"no snapshot of {source}")
            return pool[-1]
        if ref == "HEAD":
            src = os.path.abspath(source or os.getcwd())
            head = self.head(src)
            if head is None:
                raise SnapshotNotFound(f"no HEAD for {escape_path(src)} (no snapshot of it yet)")
            return head
        low = ref.lower()
        if not low or any(ch not in "0123456789abcdef" for ch in low):
            raise SnapshotNotFound(f"no snapshot matches {ref!r}")
        if len(low) < MIN_PREFIX:
            raise UsageError(
                f"snapshot prefix {ref!r} is too short (use at least {MIN_PREFIX} characters)"
            )
        hits = [s for s in snaps if s.id.startswith(low)]
        if not hits:
            raise SnapshotNotFound(f"no snapshot matches {ref!r}")
        if len(hits) > 1:
            shown = ", ".join(s.short_id for s in hits[:5])
            raise AmbiguousReference(
                f"{ref!r} matches {len(hits)} snapshots ({shown}); use more characters"
            )
        return hits[0]

    def head(self, source: str, host: str | None = None) -> Snapshot | None:
        """The HEAD snapshot of a source (its files were last known to equal it)."""
        host = host or socket.gethostname()
        src = os.path.abspath(source)
        sid = self.meta.head(host, src)
        if sid is not None:
            try:
                return self._by_id(sid)
            except SnapshotNotFound:
                pass
        pool = [s for s in self.list_snapshots(refresh=False) if s.source == src and s.host == host]
        return pool[-1] if pool else None

    def set_head(self, snap: Snapshot) -> None:
        """Move a source's HEAD (an atomic replace of a small ref)."""
        with self._mutex:
            self.meta.set_head(snap.host, snap.source, snap.id)

    def heads(self) -> list[Head]:
        """Every source's recorded HEAD."""
        return self.meta.heads()

    # ------------------------------------------------------------ refs, tags, pins, access

    def refs(self) -> dict[str, str]:
        """Named refs: name → snapshot id."""
        return self.meta.refs()

    def add_ref(self, name: str, snap: Snapshot) -> None:
        """Create or move a named ref to ``snap``."""
        check_ref_name(name)
        with self._mutex, self.lock(exclusive=False, operation="ref"):
            self.meta.set_ref(name, snap.id, self.clock.now())

    def remove_ref(self, name: str) -> None:
        """Delete a named ref (SnapshotNotFound if there is none)."""
        with self._mutex, self.lock(exclusive=False, operation="ref"):
            if not self.meta.remove_ref(name):
                raise SnapshotNotFound(f"no ref named {name!r}")

    def set_tags(
        self, snap: Snapshot, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Snapshot:
        """Edit a snapshot's tags (its id does not change); returns the edited snapshot."""
        for t in (*add, *remove):
            if not t or t != t.strip() or "," in t:
                raise UsageError(
                    f"invalid tag {t!r}: tags are non-empty, without ',' or edge spaces"
                )
        with self._mutex, self.lock(exclusive=False, operation="tag"):
            note = self.meta.note(snap.id)
            base = self.catalog.get(snap.id) or self.repo.load_snapshot(snap.id)
            tags = list(note.tags if note.tags is not None else base.tags)
            tags = [t for t in tags if t not in remove]
            tags += [t for t in add if t not in tags]
            new = tuple(tags)
            self.meta.set_note(snap.id, Note(None if new == base.tags else new, note.pinned))
            return _annotate(base, self.meta.note(snap.id))

    def set_pinned(self, snap: Snapshot, pinned: bool) -> Snapshot:
        """Pin (protect from retention and eviction) or unpin a snapshot."""
        with self._mutex, self.lock(exclusive=False, operation="pin"):
            note = self.meta.note(snap.id)
            self.meta.set_note(snap.id, Note(note.tags, pinned))
            return self._by_id(snap.id)

    def protection(self) -> dict[str, list[str]]:
        """Snapshots that retention and eviction must keep, with why: id → reasons.

        Reasons are ``HEAD``, ``ref NAME`` and ``pinned``.
        """
        out: dict[str, list[str]] = {}
        for h in self.meta.heads():
            out.setdefault(h.snapshot, []).append("HEAD")
        for name, sid in sorted(self.meta.refs().items()):
            out.setdefault(sid, []).append(f"ref {name}")
        for sid, note in self.meta.notes().items():
            if note.pinned:
                out.setdefault(sid, []).append("pinned")
        return out

    def touch(self, snap: Snapshot) -> None:
        """Record that a snapshot was accessed (browsed, diffed, restored): a cheap write."""
        now = self.clock.now()
        last = self._touched.get(snap.id)
        if last is not None and (now - last).total_seconds() < TOUCH_EVERY_S:
            return
        self._touched[snap.id] = now
        try:
            self.meta.touch(snap.id, now)
        except (StoreError, OSError) as exc:  # read-only repository: access is best effort
            log.debug("could not record access to %s: %s", snap.short_id, exc)

    def last_access(self) -> dict[str, datetime]:
        """Every snapshot's last access (its time when never accessed since)."""
        acc = self.meta.access_times()
        return {s.id: max(acc.get(s.id, s.time), s.time) for s in self.list_snapshots()}

    def create_snapshot(
        self,
        path: str | os.PathLike[str],
        *,
        options: SnapshotOptions | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        parent: Snapshot | str | None = "auto",
    ) -> SnapshotResult:
        """Snapshot a directory (under a shared lock); its HEAD moves to the new snapshot."""
        opts = options or SnapshotOptions()
        src = os.path.abspath(path)
        excl = set(opts.exclude_inodes)
        loc = self.storage.location
        if os.path.isdir(loc):
            st = os.stat(loc)
            excl.add((st.st_dev, st.st_ino))
        if self.catalog.path is not None and self.catalog.path.parent.exists():
            st = os.stat(self.catalog.path.parent)
            excl.add((st.st_dev, st.st_ino))
        opts = SnapshotOptions(**{**_opts_dict(opts), "exclude_inodes": frozenset(excl)})
        with self._mutex, self.lock(exclusive=False, operation="snapshot"):
            par = self.head(src, opts.host or None) if parent == "auto" else parent
            assert not isinstance(par, str)
            result = create_snapshot(
                self.repo,
                src,
                parent=par,
                options=opts,
                progress=progress,
                cancel=cancel,
                clock=self.clock,
            )
            self.catalog.add(result.snapshot)
            self.set_head(result.snapshot)
        return result

    def forget(self, ids: Sequence[str]) -> list[str]:
        """Remove snapshot objects (data stays until ``prune``); returns the ids removed.

        Runs under a shared lock: removing a snapshot never removes data another writer may
        need (only prune, under the exclusive lock, deletes packs). Their notes and access
        records go too; a HEAD or ref pointing at one is left dangling and resolves to
        nothing, so callers keep protected snapshots (see ``protection``).
        """
        removed = []
        with self._mutex, self.lock(exclusive=False, operation="forget"):
            for sid in ids:
                if not self.storage.exists("snapshots", sid):
                    continue
                self.storage.delete("snapshots", sid)
                self.meta.forget(sid)
                removed.append(sid)
            self.catalog.remove(removed)
        return removed

    # ------------------------------------------------------------ reading

    def _root(self, snap: Snapshot) -> BlobId:
        return BlobId(bytes.fromhex(snap.tree))

    def entry(self, snap: Snapshot, path: str | bytes) -> Entry | None:
        """The entry at ``path`` (None for the root)."""
        return walk_to(self.repo.load_tree, self._root(snap), split_path(path))

    def ls(
        self, snap: Snapshot, path: str | bytes = "", *, recursive: bool = False
    ) -> Iterator[tuple[bytes, Entry]]:
        """(path, entry) for the entries in a directory of a snapshot."""
        parts = split_path(path)
        self.touch(snap)
        e = walk_to(self.repo.load_tree, self._root(snap), parts)
        prefix = b"/".join(parts)
        if e is not None and e.kind is not EntryKind.DIR:
            yield prefix, e
            return
        tree_id = self._root(snap) if e is None else BlobId(e.payload)
        yield from self._ls(tree_id, prefix, recursive)

    def _ls(self, tree_id: BlobId, prefix: bytes, recursive: bool) -> Iterator[tuple[bytes, Entry]]:
        for e in self.repo.load_tree(tree_id).entries:
            p = prefix + b"/" + e.name if prefix else e.name
            yield p, e
            if recursive and e.kind is EntryKind.DIR:
                yield from self._ls(BlobId(e.payload), p, True)

    def read_file(self, snap: Snapshot, path: str | bytes) -> Iterator[bytes]:
        """The verified content of a file in a snapshot."""
        e = self.entry(snap, path)
        if e is None or e.kind is not EntryKind.FILE:
            raise PathNotFound(
                f"{escape_path(os.fsencode(path) if isinstance(path, str) else path)} is not a file in snapshot {snap.short_id}"
            )
        return iter_file(self.repo, e)

    def diff(
        self,
        a: Snapshot,
        b: Snapshot | None,
        *,
        path: str | bytes = "",
        live_source: str | None = None,
        cancel: threading.Event | None = None,
    ) -> DiffResult:
        """Changes from snapshot ``a`` to ``b``, or to the live directory when ``b`` is None."""
        parts = split_path(path)
        self.touch(a)
        if b is not None:
            self.touch(b)
        load = self.repo.load_tree
        ra = self._subtree(load, self._root(a), parts)
        if b is None:
            src = live_source or a.source
            root, sink = scan_live_tree(self.repo, src, parent=a, cancel=cancel)
            rb = self._subtree(sink.load_tree, root, parts)
            load_b = sink.load_tree
            to = f"live:{src}"
        else:
            rb = self._subtree(load, self._root(b), parts)
            load_b = load
            to = b.id
        want = b"/".join(parts)
        if parts and ra is None and rb is None:
            # PATH is not a directory on either side (a file, or gone): diff the parent
            # directories and keep what is at PATH or below it.
            up = parts[:-1]
            pa = self._subtree(load, self._root(a), up)
            pb = self._subtree(load_b, self._root(b) if b is not None else root, up)
            changes = tuple(
                c
                for c in diff_trees(load, pa, load_b, pb, b"/".join(up))
                if c.path == want or c.path.startswith(want + b"/")
            )
        else:
            changes = tuple(diff_trees(load, ra, load_b, rb, want))
        return DiffResult(a.id, to, changes)

    @staticmethod
    def _subtree(load: Any, root: BlobId, parts: list[bytes]) -> BlobId | None:
        if not parts:
            return root
        try:
            e = walk_to(load, root, parts)
        except PathNotFound:
            return None
        if e is None or e.kind is not EntryKind.DIR:
            return None
        return BlobId(e.payload)

    def file_diff(self, a: Snapshot, b: Snapshot | None, path: str | bytes) -> TextDiff:
        """A unified diff of one file between two snapshots (``b`` None: the live file)."""
        bpath = os.fsencode(path) if isinstance(path, str) else path
        before = self._content_or_empty(a, bpath)
        if b is None:
            live = os.path.join(os.fsencode(a.source), bpath)
            try:
                with open(live, "rb") as f:
                    after = f.read()
            except OSError:
                after = b""
        else:
            after = self._content_or_empty(b, bpath)
        return unified_text_diff(escape_path(bpath), before, after)

    def _content_or_empty(self, snap: Snapshot, path: bytes) -> bytes:
        try:
            e = self.entry(snap, path)
        except PathNotFound:
            return b""
        if e is None or e.kind is not EntryKind.FILE:
            return b""
        return b"".join(iter_file(self.repo, e))

    # ------------------------------------------------------------ restore

    def restore(
        self,
        snap: Snapshot,
        target: str | os.PathLike[str],
        *,
        includes: Sequence[str] = (),
        dry_run: bool = False,
        overwrite: str = "always",
        delete: bool = False,
        keep_setuid: bool = False,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        """Restore a snapshot into a directory (under a shared lock)."""
        if not dry_run:
            self.touch(snap)
        ctx: AbstractContextManager[Any] = (
            nullcontext() if dry_run else self.lock(exclusive=False, operation="restore")
        )
        with ctx:
            return restore_tree(
                self.repo,
                self._root(snap),
                target,
                includes=includes,
                dry_run=dry_run,
                overwrite=overwrite,
                delete=delete,
                keep_setuid=keep_setuid,
                progress=progress,
                cancel=cancel,
            )

    def restore_zip(
        self,
        snap: Snapshot,
        out: IO[bytes],
        *,
        includes: Sequence[str] = (),
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RestoreResult:
        """Write a snapshot as a ZIP archive."""
        self.touch(snap)
        with self.lock(exclusive=False, operation="restore"):
            return restore_zip(
                self.repo,
                self._root(snap),
                out,
                includes=includes,
                progress=progress,
                cancel=cancel,
            )

    # ------------------------------------------------------------ maintenance

    def stats(self) -> RepoStats:
        """Repository size, dedup and compression."""
        snaps = self.list_snapshots()
        index = self.repo.index
        unique = 0
        for _bid, loc in index.items():
            if loc.type == BLOB_DATA:
                unique += loc.raw_length
        stored = 0
        packs = 0
        for kind in ("data", "index", "snapshots"):
            for info in self.storage.list(kind):
                stored += info.size
                packs += kind == "data"
        return RepoStats(
            snapshots=len(snaps),
            packs=packs,
            blobs=len(index),
            raw_bytes=sum(s.stats.total_bytes for s in snaps),
            unique_bytes=unique,
            stored_bytes=stored,
        )

    def locks(self) -> list[tuple[Any, bool]]:
        """Every lock with whether it is stale."""
        return list_locks(self.storage, clock=self.clock)

    def unlock(self, *, all_locks: bool = False) -> int:
        """Remove stale locks (or every lock); returns how many."""
        return break_locks(self.storage, all=all_locks, clock=self.clock)


def _annotate(snap: Snapshot, note: Note | None) -> Snapshot:
    """A snapshot with its note's tags and pin applied (the id never changes)."""
    if note is None:
        return snap if not snap.pinned else replace(snap, pinned=False)
    tags = note.tags if note.tags is not None else snap.tags
    if tags == snap.tags and note.pinned == snap.pinned:
        return snap
    return replace(snap, tags=tags, pinned=note.pinned)


def _opts_dict(o: SnapshotOptions) -> dict[str, Any]:
    return {s: getattr(o, s) for s in SnapshotOptions.__slots__}
