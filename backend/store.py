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
import time  # issue 3
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta  # issue 3: timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from backend.catalog import Catalog
from backend.clock import Clock, SystemClock
from backend.config import S3Config  # issue 7
from backend.crypto import DEFAULT_CIPHER
from backend.errors import (
    AmbiguousReference,
    Cancelled,
    IntegrityError,
    ObjectNotFound,
    PathNotFound,
    SnapshotNotFound,
    StoreError,
    StoreLocked,  # issue 3
    UsageError,
)
from backend.evict import EvictPlan, EvictResult, plan_evict, usage_cache  # issue 4
from backend.forget import ForgetPlan, plan_forget, plan_forget_ids  # issue 4
from backend.format import BLOB_DATA, ChunkerParams
from backend.ids import BlobId
from backend.keys import KdfParams, PasswordSource
from backend.locking import RepositoryLock, acquire_lock, break_locks, list_locks
from backend.meta import Head, Meta, Note, check_ref_name, delete_objects  # issue 4: bulk
from backend.model import (
    DiffResult,
    Entry,
    EntryKind,
    Problem,  # issue 3
    RepoStats,
    RestoreResult,
    Snapshot,
    SnapshotResult,
)
from backend.progress import Progress, check_cancel
from backend.prune import (  # issue 4
    DEFAULT_MAX_REPACK_RATIO,
    PrunePlan,
    PruneResult,
    execute_prune,
    plan_prune,
)
from backend.repository import Repository
from backend.retention import RetentionPolicy  # issue 4
from backend.storage import ObjectStorage, open_storage
from backend.units import Duration as UnitsDuration  # issue 4
from backend.usage import SnapshotUsage, UsageGraph, snapshot_usage  # issue 4

if TYPE_CHECKING:
    # Imported where they are used (issue 4: start-up time): a command that never snapshots,
    # checks, diffs or restores does not load the modules of those operations.
    from backend.check import CheckResult  # issue 6
    from backend.diff import TextDiff
    from backend.repair import RepairResult  # issue 6
    from backend.resume import ResumeJournal  # issue 3
    from backend.snapshots import CheckpointResult, SnapshotOptions  # issue 3

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
        self.cache_dir = cache_dir  # issue 3: resume journals live here
        cat_path = cache_dir / repo.config.id / "catalog.sqlite" if cache_dir else None
        self.catalog = Catalog(cat_path, repo.config.id)
        self.meta = Meta(self.storage, repo.crypto)
        self._mutex = threading.RLock()
        self._synced = False
        self._touched: dict[str, datetime] = {}
        self._packs_verified = False  # issue 6: missing packs looked for once per process

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
        password: PasswordSource | None = None,
        s3: S3Config | None = None,  # issue 7: [s3] settings for s3:// locations
    ) -> Store:
        """Open the repository at ``location``; with ``create``, initialise it if absent.

        ``password`` unlocks an encrypted repository: a value, or a function called only when
        the repository turns out to be encrypted (so a prompt appears only when needed).
        ``create`` always makes an unencrypted repository; use ``Store.init`` to encrypt.
        """
        storage = open_storage(str(location), s3=s3)  # issue 7
        if create and not storage.is_initialized():
            repo = Repository.init(storage, compression_level=compression_level)
        else:
            repo = Repository.open(storage, password=password)
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
        password: PasswordSource | None = None,
        cipher: str = DEFAULT_CIPHER,
        kdf: KdfParams | None = None,
        s3: S3Config | None = None,  # issue 7: [s3] settings for s3:// locations
    ) -> Store:
        """Create a new repository at ``location`` (encrypted when ``password`` is given)."""
        storage = open_storage(str(location), s3=s3)  # issue 7
        repo = Repository.init(
            storage,
            chunker=chunker,
            compression_level=compression_level,
            now=(clock or SystemClock()).now(),
            password=password,
            cipher=cipher,
            kdf=kdf,
        )
        return cls(repo, cache_dir=cache_dir, clock=clock)

    def close(self) -> None:
        """Release the catalog and storage."""
        self.release_held_lock()  # issue 3
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
        if exclusive:
            self.release_held_lock()  # issue 3: our own watch lease must not block us
        lk = acquire_lock(
            self.storage,
            exclusive=exclusive,
            operation=operation,
            clock=self.clock,
            wait_s=self.lock_wait_s,
        )
        try:
            self._sync_index()  # issue 6
        except BaseException:
            lk.release()
            raise
        return lk

    def _sync_index(self) -> None:
        """Drop the in-memory index if another process replaced segments (prune, repair).

        (issue 6) A long-lived process (TUI, watch) must not deduplicate against blobs that a
        prune in another process deleted, nor read from packs it removed. Called with a lock
        held, so no prune or repair runs while the operation that follows uses the index.
        """
        loaded = getattr(self.repo, "_loaded_segments", None)
        if not loaded or getattr(self.repo, "_index", None) is None:
            return
        current = {i.name for i in self.storage.list("index")}
        if set(loaded) - current:
            log.info("the index changed in another process; reloading it")
            self.repo.flush()  # pending packs are indexed before the index is dropped
            self.repo.reset_index()

    # ------------------------------------------------------------ snapshots

    def list_snapshots(
        self,
        *,
        source: str | None = None,
        tags: Sequence[str] = (),
        host: str | None = None,
        refresh: bool = True,
        cached: bool = False,
    ) -> list[Snapshot]:
        """Snapshots, oldest first, filtered by source, host and tags (all must match).

        With ``cached``, only what the local catalog already has, without asking the
        repository (instant, possibly stale; issue 5: the TUI paints this first, then syncs).
        """
        if cached:
            snaps = self.catalog.all()
        else:
            snaps = (
                self.catalog.sync(self.repo) if refresh or not self._synced else self.catalog.all()
            )
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
        from backend.snapshots import escape_path

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
        from backend.snapshots import SnapshotOptions, create_snapshot

        src = os.path.abspath(path)
        opts = self._exclude_own_dirs(options or SnapshotOptions())  # issue 3: helper below
        # issue 3+6: shared lock, a lost lock aborts (StoreLocked), vanished packs forgotten
        with self._snapshot_lock("snapshot") as lk:
            par = self.head(src, opts.host or None) if parent == "auto" else parent
            assert not isinstance(par, str)
            result = create_snapshot(
                self.repo,
                src,
                parent=par,
                options=opts,
                progress=progress,
                cancel=lk.cancel_when_lost(cancel),  # issue 6
                clock=self.clock,
                save=lambda snap: self._save_locked(lk, snap),  # issue 6
                resume=self.resume_journal(src, opts.host or None),  # issue 3
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
        with self._mutex, self.lock(exclusive=False, operation="forget"):
            return self._delete_snapshots(ids)  # issue 4: bulk

    def _delete_snapshots(self, ids: Sequence[str]) -> list[str]:
        """(issue 4) Delete snapshot objects, then their notes and access records, then their
        catalog rows: one listing per kind, parallel deletes, one catalog transaction. The
        caller holds a lock. A note outlives its snapshot if interrupted (harmless), never
        the other way round (a pinned snapshot stays pinned)."""
        present = {i.name for i in self.storage.list("snapshots")}
        removed = [sid for sid in dict.fromkeys(ids) if sid in present]
        try:
            delete_objects(self.storage, "snapshots", removed)
            self.meta.forget_many(removed)
        finally:
            self.catalog.remove(removed)
        return removed

    # ------------------------------------------------------------ reading

    def _root(self, snap: Snapshot) -> BlobId:
        return BlobId(bytes.fromhex(snap.tree))

    def entry(self, snap: Snapshot, path: str | bytes) -> Entry | None:
        """The entry at ``path`` (None for the root)."""
        from backend.restore import split_path, walk_to

        return walk_to(self.repo.load_tree, self._root(snap), split_path(path))

    def ls(
        self, snap: Snapshot, path: str | bytes = "", *, recursive: bool = False
    ) -> Iterator[tuple[bytes, Entry]]:
        """(path, entry) for the entries in a directory of a snapshot."""
        from backend.restore import split_path, walk_to

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
        from backend.restore import iter_file
        from backend.snapshots import escape_path

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
        from backend.diff import diff_trees
        from backend.restore import split_path
        from backend.snapshots import scan_live_tree

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
        from backend.restore import walk_to

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
        from backend.diff import unified_text_diff
        from backend.snapshots import escape_path

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
        from backend.restore import iter_file

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
        from backend.restore import restore_tree

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
        from backend.restore import restore_zip

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

    # ------------------------------------------------------------ retention, eviction, prune
    # (issue 4; the work is in backend/forget.py, usage.py, evict.py and prune.py)

    def plan_forget(
        self,
        policy: RetentionPolicy,
        *,
        group_by: Sequence[str] = ("host", "source"),
        source: str | None = None,
        tags: Sequence[str] = (),
        host: str | None = None,
        allow_empty: bool = False,
    ) -> ForgetPlan:
        """Which snapshots ``policy`` keeps (with reasons) and removes; nothing changes."""
        with self.meta.cached():  # the notes are read once (for tags and for pins)
            snaps = self.list_snapshots(source=source, tags=tags, host=host)
            return plan_forget(
                snaps,
                policy,
                protection=self.protection(),
                group_by=group_by,
                allow_empty=allow_empty,
                now=self.clock.now(),
            )

    def plan_forget_ids(self, refs: Sequence[str]) -> ForgetPlan:
        """A plan removing exactly the named snapshots (UsageError if one is protected)."""
        with self.meta.cached():
            return plan_forget_ids([self.resolve(r) for r in refs], self.protection())

    def usage(
        self, *, progress: Progress | None = None, cancel: threading.Event | None = None
    ) -> dict[str, SnapshotUsage]:
        """Every snapshot's exclusive size (stored bytes no other snapshot references)."""
        graph = UsageGraph.build(
            self.repo,
            self.list_snapshots(),
            cache=usage_cache(self),
            progress=progress,
            cancel=cancel,
        )
        return snapshot_usage(graph)

    def plan_evict(
        self,
        *,
        max_size: int | None,
        max_age: UnitsDuration | None,
        exclude: Collection[str] = (),
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> EvictPlan:
        """What eviction would remove to meet the limits, and the bytes each removal frees
        (``exclude``: snapshots a forget already removes; see ``evict.plan_evict``)."""
        return plan_evict(
            self,
            max_size=max_size,
            max_age=max_age,
            exclude=exclude,
            progress=progress,
            cancel=cancel,
        )

    def evict(
        self,
        plan: EvictPlan,
        *,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> EvictResult:
        """Carry out an eviction plan: remove its snapshots, then prune, all under one
        exclusive lock (so a busy repository changes nothing: ``StoreLocked``).

        Snapshots that became protected since the plan (a new ref, a moved HEAD) are kept.
        Prune repacks every pack holding a freed blob, so the space the plan promised is freed.
        """
        with self._mutex, self.lock(exclusive=True, operation="evict") as lk:
            protected = self.protection()
            removed = self._delete_snapshots(
                [i.snapshot.id for i in plan.remove if i.snapshot.id not in protected]
            )
            pruned = None
            if removed or plan.has_work:
                pruned = self._prune_locked(lk, 1.0, progress, cancel)
        size = sum(i.size for k in ("data", "index", "snapshots") for i in self.storage.list(k))
        return EvictResult(plan, tuple(removed), pruned, size)

    def _prune_plan(
        self,
        max_repack_ratio: float,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> PrunePlan:
        self.repo.flush()
        snaps = self.list_snapshots()
        unreadable = set(self.repo.snapshot_ids()) - {s.id for s in snaps}
        if unreadable:
            raise IntegrityError(
                f"snapshot {min(unreadable)[:8]} cannot be read; prune refuses to delete "
                "anything; run 'snapdeck check'"
            )
        return plan_prune(
            self.repo, snaps, max_repack_ratio=max_repack_ratio, progress=progress, cancel=cancel
        )

    def plan_prune(
        self,
        *,
        max_repack_ratio: float = DEFAULT_MAX_REPACK_RATIO,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> PrunePlan:
        """What prune would delete and repack (under a shared lock; nothing changes)."""
        with self._mutex, self.lock(exclusive=False, operation="prune --dry-run"):
            return self._prune_plan(max_repack_ratio, progress, cancel)

    def prune(
        self,
        *,
        max_repack_ratio: float = DEFAULT_MAX_REPACK_RATIO,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> PruneResult:
        """Delete unreferenced data (mark and sweep), under the exclusive lock."""
        with self._mutex, self.lock(exclusive=True, operation="prune") as lk:
            return self._prune_locked(lk, max_repack_ratio, progress, cancel)

    def _prune_locked(
        self,
        lk: RepositoryLock,
        max_repack_ratio: float,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> PruneResult:
        plan = self._prune_plan(max_repack_ratio, progress, cancel)
        if plan.nothing_to_do:
            size = sum(i.size for k in ("data", "index") for i in self.storage.list(k))
            return PruneResult(
                plan=plan,
                packs_written=0,
                index_segments_written=0,
                bytes_before=size,
                bytes_after=size,
            )
        return execute_prune(self.repo, plan, check_lock=lk.check, progress=progress, cancel=cancel)

    # ------------------------------------------------------------ checkpoints, in-place restore,
    # resume (issue 3; the work is in backend/snapshots.py, history.py, resume.py, watch.py)

    # A shared lock kept across checkpoints while watching (``checkpoint(keep_lock=True)``):
    # no lock object written and deleted, no index listing per checkpoint. Released by
    # ``release_held_lock`` (the watcher does it when idle) and before any exclusive lock.
    _held_lock: RepositoryLock | None = None

    @contextmanager
    def _snapshot_lock(self, operation: str, *, keep: bool = False) -> Iterator[RepositoryLock]:
        """The lock every snapshot writer (snapshot, checkpoint, guard) works under.

        The mutex, then a shared lock (the held one if it is still ours, else a new one; with
        ``keep`` a new one is kept afterwards); a lost lock aborts the operation with
        ``StoreLocked`` (issue 6) and the held lock is dropped; index entries of packs that
        vanished are forgotten once per process (issue 6).
        """
        with self._mutex:
            lk = self._valid_held_lock()
            fresh = lk is None
            if lk is None:
                lk = self.lock(exclusive=False, operation=operation)
            try:
                with _lost_lock_is_fatal(lk):
                    self._forget_missing_packs()
                    yield lk
            except StoreLocked:
                if lk is self._held_lock:
                    self.release_held_lock()
                raise
            finally:
                if fresh:
                    if keep and not lk.lost and self._held_lock is None:
                        self._held_lock = lk
                    elif lk is not self._held_lock:
                        lk.release()

    def _valid_held_lock(self) -> RepositoryLock | None:
        lk = self._held_lock
        if lk is None:
            return None
        try:
            lk.check()
            if not self.storage.exists("locks", lk.name):  # broken by 'unlock --all'
                raise StoreLocked("the held lock object was removed")
        except StoreLocked as exc:
            log.info("dropping the held repository lock: %s", exc)
            self.release_held_lock()
            return None
        return lk

    @property
    def holds_lock(self) -> bool:
        """Whether a shared lock is kept across checkpoints (see ``checkpoint``)."""
        return self._held_lock is not None

    def release_held_lock(self) -> None:
        """Release the shared lock kept across checkpoints, if any (idempotent)."""
        with self._mutex:
            lk, self._held_lock = self._held_lock, None
        if lk is not None:
            lk.release()

    def _exclude_own_dirs(self, opts: SnapshotOptions) -> SnapshotOptions:
        """``opts`` with the repository, catalog and resume directories never entered."""
        from backend.snapshots import SnapshotOptions

        excl = set(opts.exclude_inodes)
        dirs = [self.storage.location]
        if self.catalog.path is not None:
            dirs.append(str(self.catalog.path.parent))
        if self.cache_dir is not None:
            dirs.append(str(self.cache_dir / "resume"))
        for d in dirs:
            try:
                st = os.stat(d)
            except OSError:
                continue
            excl.add((st.st_dev, st.st_ino))
        return SnapshotOptions(**{**_opts_dict(opts), "exclude_inodes": frozenset(excl)})

    def resume_journal(self, source: str, host: str | None = None) -> ResumeJournal | None:
        """The resume journal of ``source`` (None without a cache directory)."""
        from backend.resume import ResumeJournal

        if self.cache_dir is None:
            return None
        return ResumeJournal.for_source(
            self.cache_dir,
            location=self.storage.location,
            repo_id=self.repo.config.id,
            format_version=self.repo.config.version,
            host=host or socket.gethostname(),
            source=os.path.abspath(source),
        )

    def checkpoint(
        self,
        path: str | os.PathLike[str],
        *,
        options: SnapshotOptions | None = None,
        dirty: Collection[bytes] | None = None,
        base: Snapshot | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        keep_lock: bool = False,
    ) -> CheckpointResult:
        """Snapshot ``path`` only if it really changed since its HEAD (watch mode).

        Args:
            path: the source directory.
            options: as for ``create_snapshot`` (watch passes trigger ``watch``).
            dirty: paths (relative, bytes) that changed since HEAD: only they and their
                ancestors are examined. None: a full scan.
            base: the previous result's ``base``; used instead of HEAD when it is HEAD.
            progress: receives one ``advance`` per file examined.
            cancel: set to abandon the checkpoint (nothing is saved, HEAD stays).
            keep_lock: keep the shared lock afterwards for the next checkpoint (a watcher
                calls ``release_held_lock`` when idle; an exclusive lock releases it too).

        "Really changed" means the new root tree differs from HEAD's and a diff finds a
        change (ctime and inode numbers alone do not count, nor a directory's mtime).

        Raises:
            RestoreInProgress: an in-place restore of the source is running (checked before
                the scan and again before saving, so a half-restored tree is never saved).
        """
        from backend.snapshots import CheckpointResult, SnapshotOptions, build_snapshot

        started = time.monotonic()
        src = os.path.abspath(path)
        opts = self._exclude_own_dirs(options or SnapshotOptions())
        host = opts.host or socket.gethostname()
        journal = self.resume_journal(src, host)
        with self._snapshot_lock("checkpoint", keep=keep_lock) as lk:
            self._hold_off_if_restoring(src, host)
            head = self.head(src, host)
            par = base if base is not None and head is not None and base.id == head.id else head
            snap, problems = build_snapshot(
                self.repo,
                src,
                parent=par,
                options=opts,
                progress=progress,
                cancel=lk.cancel_when_lost(cancel),
                clock=self.clock,
                dirty=dirty,
                resume=journal,
            )
            if head is not None and not self._trees_differ(head.tree, snap.tree):
                if journal is not None:
                    journal.clear()
                new_base = replace(head, tree=snap.tree)
                return CheckpointResult(
                    None, new_base, problems, round(time.monotonic() - started, 4)
                )
            self._hold_off_if_restoring(src, host)  # it may have begun while we scanned
            saved = self._save_locked(lk, snap)
            self.catalog.add(saved)
            self.set_head(saved)
            if journal is not None:
                journal.clear()
        return CheckpointResult(saved, saved, problems, round(time.monotonic() - started, 4))

    def _trees_differ(self, a_hex: str, b_hex: str) -> bool:
        from backend.diff import diff_trees

        if a_hex == b_hex:
            return False
        load = self.repo.load_tree
        a, b = BlobId(bytes.fromhex(a_hex)), BlobId(bytes.fromhex(b_hex))
        return next(iter(diff_trees(load, a, load, b)), None) is not None

    # In-place restores announce themselves with refs/restoring/<hash(host, source)> (a lease
    # renewed while the restore runs, removed at its end), so a watcher in any process holds
    # off checkpointing that source instead of saving a half-restored tree.

    def restoring(self, source: str, host: str | None = None) -> dict[str, Any] | None:
        """The restore marker of ``source`` while an in-place restore runs (else None)."""
        from backend.history import marker_is_fresh, restoring_name

        host = host or socket.gethostname()
        doc = self.meta._get(restoring_name(host, os.path.abspath(source), self.meta._name_key))
        return doc if marker_is_fresh(doc, self.clock.now(), socket.gethostname()) else None

    def _hold_off_if_restoring(self, src: str, host: str) -> None:
        from backend.history import RestoreInProgress
        from backend.snapshots import escape_path

        doc = self.restoring(src, host)
        if doc is not None:
            raise RestoreInProgress(
                f"an in-place restore of {escape_path(src)} (pid {doc.get('pid')} on "
                f"{doc.get('host')}) is running; checkpoints wait until it ends"
            )

    @contextmanager
    def restore_marker(
        self, source: str, snapshot: str = "", host: str | None = None
    ) -> Iterator[None]:
        """Announce an in-place restore of ``source`` while the block runs (lease renewed
        every third of ``MARKER_LEASE_S`` by a thread; removed at the end)."""
        from backend.history import MARKER_LEASE_S, marker_doc, restoring_name

        host = host or socket.gethostname()
        name = restoring_name(host, os.path.abspath(source), self.meta._name_key)
        stop = threading.Event()

        def put() -> None:
            exp = self.clock.now() + timedelta(seconds=MARKER_LEASE_S)
            self.meta._put(
                name,
                marker_doc(
                    socket.gethostname(), os.path.abspath(source), snapshot, os.getpid(), exp
                ),
            )

        def renew() -> None:
            while not stop.wait(MARKER_LEASE_S / 3):
                try:
                    put()
                except (StoreError, OSError) as exc:
                    log.warning("cannot renew the restore marker: %s", exc)

        put()
        t = threading.Thread(target=renew, name="snapdeck-restore-marker", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            try:
                self.meta._delete(name)
            except (StoreError, OSError) as exc:  # it lapses by itself
                log.warning("cannot remove the restore marker: %s", exc)

    def restore_in_place(
        self,
        snap: Snapshot,
        *,
        options: SnapshotOptions | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[Snapshot | None, RestoreResult]:
        """Restore ``snap`` over its source directory, undoably.

        First a guard checkpoint of the current state (trigger ``restore-guard``, message
        naming ``snap``), then what the guard has and ``snap`` does not is removed (only
        tracked paths: the repository, caches and excluded files stay), then ``snap`` is
        written (unchanged files are left alone), then the source's HEAD moves to ``snap``:
        the next checkpoint's parent is ``snap``, so history branches. ``undo_restore`` goes
        back to the guard. Throughout, the source's restore marker tells watchers (in any
        process) to hold off; they rescan when it is gone.

        Returns:
            The guard snapshot (None if the source did not exist) and the restore result.
        """
        with self.restore_marker(snap.source, snap.id, snap.host):
            return self._restore_in_place(snap, options, progress, cancel)

    def _restore_in_place(
        self,
        snap: Snapshot,
        options: SnapshotOptions | None,
        progress: Progress | None,
        cancel: threading.Event | None,
    ) -> tuple[Snapshot | None, RestoreResult]:
        from backend.diff import diff_trees
        from backend.history import remove_tracked
        from backend.snapshots import SnapshotOptions

        src = snap.source
        guard: Snapshot | None = None
        removed = 0
        extra_problems: list[Problem] = []
        if os.path.isdir(src):
            gopts = SnapshotOptions(
                **{
                    **_opts_dict(options or SnapshotOptions()),
                    "trigger": "restore-guard",
                    "message": f"before restoring {snap.short_id}",
                    "host": snap.host,
                }
            )
            # The guard goes through create_snapshot: the same lock protections as any
            # snapshot (lost lock aborts, vanished packs forgotten, save under the lock).
            guard = self.create_snapshot(
                src, options=gopts, progress=progress, cancel=cancel
            ).snapshot
            check_cancel(cancel)
            load = self.repo.load_tree
            gone = [
                ch.path
                for ch in diff_trees(
                    load,
                    BlobId(bytes.fromhex(guard.tree)),
                    load,
                    BlobId(bytes.fromhex(snap.tree)),
                )
                if ch.change in ("D", "T")
            ]
            with self.lock(exclusive=False, operation="restore"):
                removed, extra_problems = remove_tracked(src, gone)
        res = self.restore(
            snap, src, overwrite="if-changed", delete=False, progress=progress, cancel=cancel
        )
        if removed or extra_problems:
            res = replace(
                res,
                files_deleted=res.files_deleted + removed,
                problems=(*res.problems, *extra_problems),
            )
        with self._mutex:
            self.meta.set_head(snap.host, src, snap.id)
        return guard, res

    def last_guard(self, source: str) -> Snapshot | None:
        """The newest ``restore-guard`` snapshot of ``source`` (what ``undo`` returns to)."""
        src = os.path.abspath(source)
        guards = [s for s in self.list_snapshots(source=src) if s.trigger == "restore-guard"]
        return guards[-1] if guards else None

    def undo_restore(
        self,
        source: str,
        *,
        options: SnapshotOptions | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[Snapshot, Snapshot | None, RestoreResult]:
        """Return ``source`` to the state before its last in-place restore.

        The newest guard is restored in place, which itself takes a guard first: undoing
        twice redoes. Returns (the guard restored, the new guard, the restore result).

        Raises:
            SnapshotNotFound: the source was never restored in place.
        """
        from backend.snapshots import escape_path

        target = self.last_guard(source)
        if target is None:
            raise SnapshotNotFound(
                f"nothing to undo: {escape_path(os.path.abspath(source))} was never restored in place"
            )
        guard, res = self.restore_in_place(
            target, options=options, progress=progress, cancel=cancel
        )
        return target, guard, res

    # ------------------------------------------------------------ check and repair
    # (issue 6; the work is in backend/check.py and backend/repair.py)

    def _save_locked(self, lk: RepositoryLock, snap: Snapshot) -> Snapshot:
        """Write a snapshot object only while our lock still holds (a lost lock aborts)."""
        lk.check()
        return self.repo.save_snapshot(snap)

    def _forget_missing_packs(self) -> None:
        from backend.repair import forget_missing_packs

        if not self._packs_verified:
            self._packs_verified = True
            forget_missing_packs(self.repo)

    def check(
        self,
        *,
        read_data: bool = False,
        subset: str | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> CheckResult:
        """Verify the repository (under a shared lock); findings, never an exception for damage."""
        from backend.check import check_repository

        with self.lock(exclusive=False, operation="check") as lk, _lost_lock_is_fatal(lk):
            return check_repository(
                self.repo,
                read_data=read_data,
                subset=subset,
                catalog=self.catalog.all,
                progress=progress,
                cancel=lk.cancel_when_lost(cancel),
            )

    def repair_index(
        self, *, progress: Progress | None = None, cancel: threading.Event | None = None
    ) -> RepairResult:
        """Rebuild the index from pack headers (exclusive lock)."""
        from backend.repair import repair_index

        with self._mutex, self.lock(exclusive=True, operation="repair index"):
            self.repo.flush()
            return repair_index(self.repo, progress=progress, cancel=cancel)

    def repair_packs(
        self,
        packs: Sequence[str] = (),
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RepairResult:
        """Salvage damaged packs and drop them from the index (exclusive lock)."""
        from backend.repair import repair_packs

        with self._mutex, self.lock(exclusive=True, operation="repair packs"):
            self.repo.flush()
            return repair_packs(self.repo, packs, dry_run=dry_run, progress=progress, cancel=cancel)

    def repair_snapshots(
        self,
        *,
        forget: bool = False,
        dry_run: bool = False,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RepairResult:
        """Rewrite snapshots that reference unreadable data (exclusive lock)."""

        from backend.repair import repair_snapshots

        def on_rewrite(old: str, new: Snapshot | None) -> None:
            self.catalog.remove([old])
            if new is not None:
                self.catalog.add(new)

        with self._mutex, self.lock(exclusive=True, operation="repair snapshots"):
            self.repo.flush()
            return repair_snapshots(
                self.repo,
                self.meta,
                forget=forget,
                dry_run=dry_run,
                clock=self.clock,
                on_rewrite=on_rewrite,
                progress=progress,
                cancel=cancel,
            )


@contextmanager
def _lost_lock_is_fatal(lk: RepositoryLock) -> Iterator[None]:
    """Turn the ``Cancelled`` that a lost lock causes into ``StoreLocked`` (issue 6)."""
    try:
        yield
    except Cancelled:
        lk.check()
        raise


def _annotate(snap: Snapshot, note: Note | None) -> Snapshot:
    """A snapshot with its note's tags and pin applied (the id never changes)."""
    if note is None:
        return snap if not snap.pinned else replace(snap, pinned=False)
    tags = note.tags if note.tags is not None else snap.tags
    if tags == snap.tags and note.pinned == snap.pinned:
        return snap
    return replace(snap, tags=tags, pinned=note.pinned)


def _opts_dict(o: SnapshotOptions) -> dict[str, Any]:
    from backend.snapshots import SnapshotOptions

    return {s: getattr(o, s) for s in SnapshotOptions.__slots__}
