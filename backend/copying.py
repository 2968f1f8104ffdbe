"""Copy snapshots between repositories without re-chunking (layer: operations).

Used by ``snapdeck copy --from-repo A --to-repo B``; A and B may live anywhere (local, S3).
Blobs keep their boundaries: each chunk of A is read (verified), and stored in B unless B
already has it, so the copy deduplicates against everything B holds. Write order in B is the
usual one: packs, then the index (``flush``), then the snapshot object.

Two repositories made by separate ``init`` runs have different id keys (blob ids are keyed
hashes), so a blob's id in B differs from its id in A. The copy then re-ids every blob with B's
key and rewrites every tree (whose entries name blob and subtree ids); the snapshot gets a new
id. When the keys are equal, ids are kept and any tree B already has is skipped whole.

What is copied: the snapshot objects and all their data. A snapshot's parent is kept when the
parent was copied too (or is already in B), else cleared. A snapshot B already has (same time,
host and source) is skipped, so running the same copy twice copies nothing.

``copy_notes`` then carries A's notes over (``snapdeck copy`` always runs it): a pin pins the
copy too (pins only ever add protection), and edited tags become the copy's tags unless B has
edited that snapshot's tags itself (B's own edits win). With ``refs=True`` named refs of A that
point at a copied snapshot are created in B, unless B has a ref of that name pointing
elsewhere (left alone and reported). HEADs are never copied: they say which snapshot a
directory on a host last equalled, which is B's own history.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime

from backend import format as fmt
from backend.format import BLOB_DATA, BLOB_TREE
from backend.ids import BlobId
from backend.meta import Meta, Note
from backend.model import Entry, EntryKind, Snapshot, Tree
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository

__all__ = ["CopiedNotes", "CopiedSnapshot", "CopyResult", "copy_notes", "copy_snapshots"]


@dataclass(frozen=True, slots=True)
class CopiedSnapshot:
    """What happened to one snapshot."""

    source_id: str
    """Its id in the source repository."""
    target_id: str
    """Its id in the destination (equal to ``source_id`` when the id keys match)."""
    copied: bool
    """False when the destination already had it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyResult:
    """The outcome of ``copy_snapshots``."""

    snapshots: tuple[CopiedSnapshot, ...]
    blobs_copied: int = 0
    """Blobs (chunks and trees) newly stored in the destination."""
    blobs_present: int = 0
    """Blobs the destination already had (deduplicated)."""
    bytes_copied: int = 0
    """Plaintext bytes of the blobs newly stored."""
    bytes_stored: int = 0
    """Bytes they take in the destination (compressed, sealed)."""
    reid: bool = False
    """Whether the id keys differ, so blobs were re-identified and trees rewritten."""


def _identity(s: Snapshot) -> tuple[str, str, str]:
    return (s.time.isoformat(), s.host, s.source)


class _Copier:
    def __init__(
        self,
        src: Repository,
        dst: Repository,
        progress: Progress,
        cancel: threading.Event | None,
        threads: int,
    ) -> None:
        self.src = src
        self.dst = dst
        self.progress = progress
        self.cancel = cancel
        self.reid = src.id_key != dst.id_key
        self.trees: dict[bytes, BlobId] = {}
        self.blobs: dict[bytes, BlobId] = {}
        self.lock = threading.Lock()
        self.copied = 0
        self.present = 0
        self.bytes_copied = 0
        self.bytes_stored = 0
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="copy")

    def check(self) -> None:
        check_cancel(self.cancel)

    def _store(self, blob_type: int, blob_id: BlobId, plain: bytes) -> None:
        res = self.dst.put_blob(blob_type, blob_id, plain)
        with self.lock:
            if res.new:
                self.copied += 1
                self.bytes_copied += len(plain)
                self.bytes_stored += res.stored_length
            else:
                self.present += 1
        self.progress.advance(len(plain))

    def blob(self, bid: BlobId) -> BlobId:
        """Copy one data blob; its id in the destination."""
        self.check()
        if not self.reid:
            if self.dst.has_blob(bid):
                with self.lock:
                    self.present += 1
                return bid
            self._store(BLOB_DATA, bid, self.src.read_blob(bid))
            return bid
        known = self.blobs.get(bid)
        if known is not None:
            return known
        plain = self.src.read_blob(bid)
        new = self.dst.hash_blob(plain)
        self._store(BLOB_DATA, new, plain)
        self.blobs[bid] = new
        return new

    def tree(self, tid: BlobId) -> BlobId:
        """Copy a tree and everything below it; its id in the destination."""
        known = self.trees.get(tid)
        if known is not None:
            return known
        self.check()
        if not self.reid and self.dst.has_blob(tid):
            with self.lock:  # B has this tree, hence everything below it
                self.present += 1
            self.trees[tid] = tid
            return tid
        raw = self.src.read_blob(tid)
        tree = fmt.decode_tree(raw)
        # All chunks of this directory's files at once, in parallel (bounded by the pool).
        wanted = [b for e in tree.entries if e.kind is EntryKind.FILE for b in e.content]
        mapped = dict(zip(wanted, self.pool.map(self.blob, wanted), strict=True))
        entries: list[Entry] = []
        for e in tree.entries:
            if e.kind is EntryKind.DIR and e.payload:
                sub = self.tree(BlobId(bytes(e.payload)))
                if sub != bytes(e.payload):
                    e = replace(e, payload=sub)
            elif e.kind is EntryKind.FILE and e.content:
                content = tuple(mapped[b] for b in e.content)
                if content != e.content:
                    e = replace(e, content=content)
            entries.append(e)
        if self.reid:
            new_tid, res = self.dst.save_tree(Tree(tuple(entries)))
            with self.lock:
                if res.new:
                    self.copied += 1
                    self.bytes_copied += len(raw)
                    self.bytes_stored += res.stored_length
                else:
                    self.present += 1
        else:
            new_tid = tid
            self._store(BLOB_TREE, tid, raw)
        self.trees[tid] = new_tid
        return new_tid


def copy_snapshots(
    src: Repository,
    dst: Repository,
    snapshots: Sequence[Snapshot],
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    threads: int = 4,
) -> CopyResult:
    """Copy ``snapshots`` (of ``src``) into ``dst``, oldest first.

    The caller holds shared locks on both repositories.

    Args:
        src: The repository the snapshots are in.
        dst: The repository to copy them to.
        snapshots: Which snapshots (as loaded from ``src``).
        progress: Advanced by the plaintext bytes of every blob visited.
        cancel: Set to stop between blobs (``Cancelled``); what was flushed stays valid.
        threads: Parallel blob reads and writes.

    Returns:
        What was copied and what the destination already had.

    Raises:
        Cancelled: ``cancel`` was set.
        StoreError: Reading ``src`` or writing ``dst`` failed (a damaged source blob raises
            ``IntegrityError`` before anything that references it is written).
    """
    progress = progress or NullProgress()
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id))
    existing: dict[tuple[str, str, str], str] = {}
    for sid in dst.snapshot_ids():
        snap = dst.load_snapshot(sid)
        existing[_identity(snap)] = sid
    copier = _Copier(src, dst, progress, cancel, threads)
    mapped: dict[str, str] = {}
    done: list[CopiedSnapshot] = []
    progress.start(sum(s.stats.total_bytes for s in ordered) or None, "copy")
    try:
        for snap in ordered:
            already = existing.get(_identity(snap))
            if already is not None:
                mapped[snap.id] = already
                done.append(CopiedSnapshot(snap.id, already, False))
                continue
            root = copier.tree(BlobId(bytes.fromhex(snap.tree)))
            dst.flush()  # packs, then the index: before the snapshot that needs them
            parent = mapped.get(snap.parent) if snap.parent else None
            kept = snap.parent and not copier.reid and dst.storage.exists("snapshots", snap.parent)
            if parent is None and kept:
                parent = snap.parent
            saved = dst.save_snapshot(replace(snap, id="", tree=bytes(root).hex(), parent=parent))
            mapped[snap.id] = saved.id
            existing[_identity(saved)] = saved.id
            done.append(CopiedSnapshot(snap.id, saved.id, True))
    finally:
        copier.pool.shutdown(wait=True, cancel_futures=True)
    return CopyResult(
        snapshots=tuple(done),
        blobs_copied=copier.copied,
        blobs_present=copier.present,
        bytes_copied=copier.bytes_copied,
        bytes_stored=copier.bytes_stored,
        reid=copier.reid,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CopiedNotes:
    """What ``copy_notes`` carried over."""

    pins: tuple[str, ...] = ()
    """Destination ids newly pinned."""
    tags: tuple[str, ...] = ()
    """Destination ids whose tags were set from the source's tag edits."""
    refs: tuple[str, ...] = ()
    """Named refs created (or already equal) in the destination."""
    ref_conflicts: dict[str, str] = field(default_factory=dict)
    """Ref name → the destination snapshot it already points at (left alone)."""


def copy_notes(
    src: Meta,
    dst: Meta,
    mapping: Mapping[str, str],
    *,
    refs: bool = False,
    now: datetime,
) -> CopiedNotes:
    """Carry pins, tag edits and (with ``refs``) named refs of copied snapshots from ``src``
    to ``dst`` (see the module docstring for the rules).

    Args:
        src: The source repository's metadata.
        dst: The destination's.
        mapping: Source snapshot id → destination id, for every snapshot copied or found
            already present (``CopyResult.snapshots``).
        refs: Also copy named refs that point at one of those snapshots.
        now: The time recorded on refs created.

    Raises:
        StoreError: Reading or writing a metadata object failed.
    """
    pins: list[str] = []
    tags: list[str] = []
    notes = src.notes()
    for sid, did in mapping.items():
        note = notes.get(sid)
        if note is None:
            continue
        have = dst.note(did)
        want = Note(
            tags=have.tags if have.tags is not None else note.tags,
            pinned=have.pinned or note.pinned,
        )
        if want == have:
            continue
        dst.set_note(did, want)
        if want.pinned and not have.pinned:
            pins.append(did)
        if want.tags != have.tags:
            tags.append(did)
    made: list[str] = []
    conflicts: dict[str, str] = {}
    if refs:
        theirs = dst.refs()
        for name, sid in sorted(src.refs().items()):
            target = mapping.get(sid)
            if target is None:
                continue
            current = theirs.get(name)
            if current is not None and current != target:
                conflicts[name] = current
                continue
            if current is None:
                dst.set_ref(name, target, now)
            made.append(name)
    return CopiedNotes(
        pins=tuple(pins), tags=tuple(tags), refs=tuple(made), ref_conflicts=conflicts
    )
