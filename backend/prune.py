"""Prune: mark-and-sweep garbage collection of packs (operations layer).

``plan_prune`` marks every blob reachable from the snapshots (each distinct tree read once),
then streams the index segments one at a time and decides, per pack:

- **delete**: no blob in it is live (or it is in storage but no index names it: an orphan
  left by an interrupted writer or an interrupted prune);
- **repack**: its live share (live stored bytes / stored bytes) is below ``max_repack_ratio``,
  or it is small (watch mode writes one small pack per checkpoint) and there are at least two
  small packs of its blob type to consolidate;
- **keep**: everything else (most packs, untouched).

A blob stored in several packs (a duplicate) is live in the first pack that names it and dead
in the others.

``execute_prune`` then, under the exclusive lock, and in this order (the crash-safe order of
the design):

1. copies the live blobs of the packs to repack into new packs (blobs are verified against
   their ids on the way; stored bytes are copied, not recompressed) and writes them;
2. writes new index segments: the new packs, plus every kept pack of each old segment that
   names a pack being dropped;
3. only then deletes those old segments;
4. and only then deletes the dropped packs.

An interruption at any point leaves a valid repository: before (2) the new packs are
unreferenced orphans; between (2) and (3) two segments name a blob and both locations exist;
between (3) and (4) the dropped packs are orphans. A re-run finds the orphans and converges.
Memory: the mark set (one dict entry per live blob; the mark phase streams trees in batches and
keeps no edges, see ``usage.mark_live``), one entry per pack, the live entries of the packs
being repacked, and at most two packs in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.errors import IntegrityError, ObjectExists, UsageError
from backend.format import BLOB_DATA, BLOB_TREE, PackEntry
from backend.ids import BlobId, PackId, object_name
from backend.meta import delete_objects
from backend.model import Snapshot
from backend.packs import FinishedPack
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository
from backend.usage import UsageGraph, mark_live

__all__ = [
    "DEFAULT_MAX_REPACK_RATIO",
    "SMALL_PACK",
    "PrunePlan",
    "PruneResult",
    "execute_prune",
    "plan_prune",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_REPACK_RATIO = 0.8
"""Repack a pack when less than this share of its stored bytes is live."""
SMALL_PACK = 1024 * 1024
"""Packs below this size are consolidated when there are two or more of a blob type."""
SEGMENT_ENTRIES = 200_000
"""At most this many blob entries per index segment that prune writes."""


@dataclass(slots=True)
class _PackStat:
    no: int
    size: int
    blob_type: int
    total_bytes: int = 0
    live_bytes: int = 0
    live_blobs: int = 0
    blobs: int = 0
    live_entries: list[PackEntry] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrunePlan:
    """What prune will do and why, with its numbers."""

    snapshots: int
    packs: int
    """Packs in storage."""
    pack_bytes: int
    """Bytes of every pack in storage."""
    live_blobs: int
    live_bytes: int
    """Stored bytes of the live blobs (without pack headers)."""
    delete: tuple[PackId, ...]
    """Packs with no live blob (orphans included): deleted."""
    delete_bytes: int
    repack: tuple[PackId, ...]
    """Sparse or small packs whose live blobs are copied into new packs."""
    repack_bytes: int
    repack_live_bytes: int
    small_packs: int
    """Of ``repack``, how many were chosen because they are small."""
    orphans: int
    """Of ``delete``, packs no index segment names."""
    missing_packs: tuple[PackId, ...]
    """Packs an index names that are not in storage (dropped from the index)."""
    rewrite_segments: tuple[str, ...]
    """Index segments that name a dropped pack: rewritten, then deleted."""
    max_repack_ratio: float
    live_entries: dict[PackId, list[PackEntry]] = field(default_factory=dict, repr=False)
    """The live entries to copy, per pack to repack."""

    @property
    def bytes_reclaimed(self) -> int:
        """About how many bytes of packs prune frees (headers of new packs aside)."""
        return self.delete_bytes + self.repack_bytes - self.repack_live_bytes

    @property
    def nothing_to_do(self) -> bool:
        """True when executing the plan would change nothing."""
        return not (self.delete or self.repack or self.rewrite_segments)

    def to_json(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {
            "snapshots": self.snapshots,
            "packs": self.packs,
            "pack_bytes": self.pack_bytes,
            "live_blobs": self.live_blobs,
            "live_bytes": self.live_bytes,
            "packs_deleted": len(self.delete),
            "packs_repacked": len(self.repack),
            "small_packs": self.small_packs,
            "orphan_packs": self.orphans,
            "missing_packs": list(self.missing_packs),
            "index_segments_rewritten": len(self.rewrite_segments),
            "bytes_reclaimed": self.bytes_reclaimed,
            "max_repack_ratio": self.max_repack_ratio,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    """What an executed prune did."""

    plan: PrunePlan
    packs_written: int
    index_segments_written: int
    bytes_before: int
    bytes_after: int
    """Bytes of packs and index segments before and after."""


def _storage_bytes(repo: Repository, kinds: tuple[str, ...] = ("data", "index")) -> int:
    return sum(i.size for k in kinds for i in repo.storage.list(k))


_delete_all = delete_objects  # parallel deletes (see meta.delete_objects)


def plan_prune(
    repo: Repository,
    snapshots: list[Snapshot],
    *,
    max_repack_ratio: float = DEFAULT_MAX_REPACK_RATIO,
    small_pack: int = SMALL_PACK,
    graph: UsageGraph | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> PrunePlan:
    """Decide which packs to delete and repack (reads only).

    Args:
        repo: the repository.
        snapshots: every snapshot that must stay restorable (all of them).
        max_repack_ratio: repack packs whose live share is below this (0: never, 1: any pack
            with a dead byte).
        small_pack: packs below this many bytes are consolidated (0: never).
        graph: an already built mark of ``snapshots`` (its live set is used as is).

    Raises:
        IntegrityError: a snapshot references a tree or blob that cannot be found; nothing is
            planned, since deleting anything then could lose data.
    """
    if not 0.0 <= max_repack_ratio <= 1.0:
        raise UsageError(f"--max-repack-ratio must be between 0 and 1, not {max_repack_ratio}")
    prog = progress or NullProgress()
    # blob -> pack number holding its kept copy (-1: not placed yet; a blob the index does
    # not know stays unplaced, and prune refuses below)
    if graph is None:
        placed = mark_live(repo, snapshots, progress=prog, cancel=cancel)
    else:
        placed = dict.fromkeys(graph.live_ids(), -1)
    live_blobs = len(placed)

    in_storage = {i.name: i.size for i in repo.storage.list("data")}
    segments = repo.index_segments()
    stats: dict[PackId, _PackStat] = {}
    seg_packs: dict[str, list[PackId]] = {}
    missing: dict[PackId, None] = {}
    prog.start(len(segments), "index")
    for seg in segments:
        check_cancel(cancel)
        names: list[PackId] = []
        for pack_id, entries in repo.read_index_segment(seg):
            names.append(pack_id)
            if pack_id in stats:
                continue  # listed by an earlier segment too (an interrupted prune)
            size = in_storage.get(pack_id)
            st = _PackStat(len(stats), size or 0, entries[0].type if entries else 0)
            stats[pack_id] = st
            if size is None:
                missing[pack_id] = None
                continue
            live: list[PackEntry] = []
            for e in entries:
                st.blobs += 1
                st.total_bytes += e.length
                if placed.get(e.id) == -1:
                    placed[e.id] = st.no
                    st.live_bytes += e.length
                    live.append(e)
            st.live_blobs = len(live)
            if st.live_blobs and (
                st.live_bytes < max_repack_ratio * st.total_bytes or st.size < small_pack
            ):
                st.live_entries = live
        seg_packs[seg] = names
        prog.advance(1)

    unplaced = sum(1 for v in placed.values() if v == -1)
    if unplaced:
        raise IntegrityError(
            f"{unplaced} blobs used by snapshots are in no pack in storage; prune refuses to "
            "delete anything; run 'snapdeck check'"
        )
    live_bytes = 0
    delete: list[PackId] = []
    repack: list[PackId] = []
    small: dict[int, list[PackId]] = {}
    for pack_id, st in stats.items():
        if pack_id in missing:
            continue
        live_bytes += st.live_bytes
        if not st.live_blobs:
            delete.append(pack_id)
        elif st.live_bytes < max_repack_ratio * st.total_bytes:
            repack.append(pack_id)
        elif st.size < small_pack:
            small.setdefault(st.blob_type, []).append(pack_id)
    small_count = 0
    for blob_type, packs in small.items():
        sparse = sum(1 for p in repack if stats[p].blob_type == blob_type)
        if len(packs) + sparse >= 2:
            repack.extend(packs)
            small_count += len(packs)
        else:
            for p in packs:
                stats[p].live_entries = None
    orphans = [PackId(p) for p in in_storage if p not in stats]
    dropped = set(delete) | set(repack) | set(missing)
    rewrite = tuple(s for s, names in seg_packs.items() if any(n in dropped for n in names))
    live_entries = {p: stats[p].live_entries or [] for p in repack}
    return PrunePlan(
        snapshots=len(snapshots),
        packs=len(in_storage),
        pack_bytes=sum(in_storage.values()),
        live_blobs=live_blobs,
        live_bytes=live_bytes,
        delete=(*delete, *orphans),
        delete_bytes=sum(in_storage[p] for p in (*delete, *orphans)),
        repack=tuple(repack),
        repack_bytes=sum(in_storage[p] for p in repack),
        repack_live_bytes=sum(stats[p].live_bytes for p in repack),
        small_packs=small_count,
        orphans=len(orphans),
        missing_packs=tuple(missing),
        rewrite_segments=rewrite,
        max_repack_ratio=max_repack_ratio,
        live_entries=live_entries,
    )


def execute_prune(
    repo: Repository,
    plan: PrunePlan,
    *,
    check_lock: Callable[[], None] = lambda: None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> PruneResult:
    """Carry out a plan: new packs, new index, then delete old index segments, then old packs.

    The caller holds the exclusive lock and made ``plan`` under it; ``check_lock`` raises if
    the lock was lost and is called before every destructive step.
    """
    prog = progress or NullProgress()
    storage = repo.storage
    before = _storage_bytes(repo)
    writers = {
        BLOB_TREE: repo.new_pack_writer(BLOB_TREE),
        BLOB_DATA: repo.new_pack_writer(BLOB_DATA),
    }
    new_packs: list[tuple[PackId, tuple[PackEntry, ...]]] = []

    def write(done: FinishedPack | None) -> None:
        if done is None:
            return
        try:
            storage.put("data", done.id, done.parts)
        except ObjectExists:
            pass  # the same pack from an interrupted run
        new_packs.append((done.id, done.entries))

    # 1. copy live blobs into new packs
    prog.start(len(plan.repack), "repack")
    for pack_id in plan.repack:
        check_cancel(cancel)
        data = storage.get("data", pack_id)
        for e in plan.live_entries.get(pack_id, ()):
            stored = data[e.offset : e.offset + e.length]
            if len(stored) != e.length:
                raise IntegrityError(f"pack {pack_id[:12]} is truncated; run 'snapdeck check'")
            # Verified before it is copied: prune never spreads a damaged blob.
            repo.open_stored_blob(BlobId(e.id), stored, e.raw_length, f"pack {pack_id[:12]}")
            kind = BLOB_TREE if e.type == BLOB_TREE else BLOB_DATA
            write(writers[kind].add(e.type, BlobId(e.id), stored, e.raw_length))
        del data
        prog.advance(1)
    for w in writers.values():
        write(w.finish())

    # 2. new index segments: the new packs + kept packs of every segment being replaced
    dropped = set(plan.delete) | set(plan.repack) | set(plan.missing_packs)
    segments_written = 0
    new_segments: set[str] = set()
    batch: list[tuple[PackId, tuple[PackEntry, ...] | list[PackEntry]]] = []
    batch_entries = 0

    def flush() -> None:
        nonlocal batch, batch_entries, segments_written
        if not batch:
            return
        data = repo.encode_index(batch)
        new_segments.add(object_name(data))
        try:
            storage.put("index", object_name(data), data)
        except ObjectExists:
            pass
        segments_written += 1
        batch, batch_entries = [], 0

    def add(pack_id: PackId, entries: tuple[PackEntry, ...] | list[PackEntry]) -> None:
        nonlocal batch_entries
        batch.append((pack_id, entries))
        batch_entries += len(entries)
        if batch_entries >= SEGMENT_ENTRIES:
            flush()

    for pack_id, entries in new_packs:
        add(pack_id, entries)
    for seg in plan.rewrite_segments:
        check_cancel(cancel)
        for pack_id, es in repo.read_index_segment(seg):
            if pack_id not in dropped:
                add(pack_id, es)
    flush()

    # 3. only now the old segments, 4. and only then the old packs
    # A new pack or segment may have the very name of an old one (an interrupted run wrote it
    # as an orphan, or a repack reproduced a pack byte for byte): it is the new one now.
    written = {p for p, _e in new_packs}
    check_lock()
    _delete_all(storage, "index", [s for s in plan.rewrite_segments if s not in new_segments])
    check_lock()
    prog.start(len(dropped), "delete")
    packs = [p for p in (*plan.delete, *plan.repack) if p not in written]
    _delete_all(storage, "data", packs, prog.advance)
    repo.reset_index()
    after = _storage_bytes(repo)
    log.info(
        "prune: deleted %d packs, repacked %d into %d, %d bytes freed",
        len(plan.delete),
        len(plan.repack),
        len(new_packs),
        before - after,
    )
    return PruneResult(
        plan=plan,
        packs_written=len(new_packs),
        index_segments_written=segments_written,
        bytes_before=before,
        bytes_after=after,
    )
