"""Operation: repair a damaged repository (``snapdeck repair index|packs|snapshots``).

Every repair runs under the exclusive lock (the caller takes it) and writes in the crash-safe
order: new packs, then new index segments, then new snapshots, and only then deletes what they
replace. A crash at any point leaves a repository that ``check`` accepts or that a re-run of
the same repair finishes.

- ``repair_index``: rebuild the index from the packs' own headers. A pack whose header is
  unreadable keeps the entries the old index had for it (``repair packs`` can salvage it); an
  indexed pack that no longer exists is dropped.
- ``repair_packs``: read every pack (or the ones named), find damaged ones (bad header, bytes
  that do not hash to the name, blobs that do not verify, missing), copy their intact blobs
  into new packs, write an index without the damaged packs, then delete them. Blobs with no
  intact copy are *lost*; they are reported with the snapshots and paths that need them, and
  are no longer in the index, so the next snapshot of the same content stores them again.
- ``repair_snapshots``: rewrite each snapshot whose trees reference blobs that are not in the
  index (or trees that cannot be read): the unreadable files and directories are dropped, the
  rest is kept. The new snapshot is tagged ``repaired`` and its message says what was dropped;
  HEADs, refs and notes move to it and the old snapshot is removed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from backend import format as fmt
from backend.check import (
    CheckError,
    _Checker,
    read_pack_header,
    verify_pack,
)
from backend.clock import Clock, SystemClock
from backend.errors import IntegrityError, ObjectExists, ObjectNotFound, StoreError, UsageError
from backend.format import BLOB_DATA, BLOB_TREE, PackEntry
from backend.ids import BlobId, PackId, object_name
from backend.index import ChunkIndex
from backend.meta import Meta, Note
from backend.model import Entry, EntryKind, Snapshot, Tree
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository
from backend.snapshots import escape_path

log = logging.getLogger(__name__)

__all__ = ["RepairResult", "repair_index", "repair_packs", "repair_snapshots"]

SEGMENT_PACKS = 4096
"""Packs per index segment written by a repair."""
REPAIRED_TAG = "repaired"


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairResult:
    """What a repair did (or, with ``dry_run``, would do)."""

    action: str
    """``index``, ``packs`` or ``snapshots``."""
    messages: tuple[str, ...] = ()
    """One line per thing done, for people."""
    dry_run: bool = False
    packs_indexed: int = 0
    segments_written: int = 0
    segments_removed: int = 0
    packs_damaged: tuple[str, ...] = ()
    packs_written: tuple[str, ...] = ()
    blobs_salvaged: int = 0
    lost: tuple[CheckError, ...] = ()
    """Blobs with no intact copy, with the snapshots and paths that need them."""
    rewritten: tuple[tuple[str, str], ...] = ()
    """(old snapshot id, new snapshot id)."""
    dropped: tuple[tuple[str, str], ...] = ()
    """(old snapshot id, escaped path) of every entry a snapshot repair dropped."""
    unrepairable: tuple[str, ...] = ()
    """Snapshots whose root tree cannot be read (removed only with ``forget``)."""
    removed: tuple[str, ...] = ()
    """Snapshots removed."""

    @property
    def partial(self) -> bool:
        """Whether some data could not be saved (lost blobs, unrepairable snapshots kept)."""
        return bool(self.lost) or (bool(self.unrepairable) and not self.removed)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "messages": list(self.messages),
            "packs_indexed": self.packs_indexed,
            "segments_written": self.segments_written,
            "segments_removed": self.segments_removed,
            "packs_damaged": list(self.packs_damaged),
            "packs_written": list(self.packs_written),
            "blobs_salvaged": self.blobs_salvaged,
            "lost": [e.to_json() for e in self.lost],
            "rewritten": [{"old": o, "new": n} for o, n in self.rewritten],
            "dropped": [{"snapshot": s, "path": p} for s, p in self.dropped],
            "unrepairable": list(self.unrepairable),
            "removed": list(self.removed),
        }


# ---------------------------------------------------------------- shared helpers


def reset_index(repo: Repository) -> None:
    """Make ``repo`` reload its index from storage on next use (after a repair rewrote it)."""
    repo.reset_index()


def _write_index(
    repo: Repository, packs: Sequence[tuple[PackId, Sequence[PackEntry]]]
) -> list[str]:
    """Write index segments covering ``packs``; returns their names."""
    names: list[str] = []
    items = sorted(packs)
    for i in range(0, len(items), SEGMENT_PACKS):
        data = repo.encode_index(items[i : i + SEGMENT_PACKS])
        name = object_name(data)
        _put_sound(repo, "index", name, data)
        names.append(name)
    return names


def _put_sound(repo: Repository, kind: str, name: str, data: bytes | list[bytes]) -> None:
    """Write a content-addressed object; an existing one of that name is kept only if its
    bytes are sound (a damaged copy under the right name is replaced, not trusted)."""
    try:
        repo.storage.put(kind, name, data)
    except ObjectExists:
        try:
            sound = object_name(repo.storage.get(kind, name)) == name
        except StoreError:
            sound = False
        if not sound:
            log.warning("replacing damaged %s/%s", kind, name[:12])
            repo.storage.put(kind, name, data, overwrite=True)


def _replace_index(
    repo: Repository, packs: Sequence[tuple[PackId, Sequence[PackEntry]]], old: Sequence[str]
) -> tuple[int, int]:
    """Write the new index, then delete the old segments it replaces: (written, removed)."""
    new = _write_index(repo, packs)
    removed = 0
    for name in old:
        if name not in new:
            repo.storage.delete("index", name)
            removed += 1
    reset_index(repo)
    return len(new), removed


def _damaged_segments(c: _Checker) -> list[str]:
    return [obj for obj in c.f.by_object if obj.startswith("index/")]


# ---------------------------------------------------------------- repair index


def repair_index(
    repo: Repository,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    threads: int = 0,
) -> RepairResult:
    """Rebuild the index from the pack headers (the caller holds the exclusive lock)."""
    progress = progress or NullProgress()
    c = _Checker(repo, progress, cancel, threads)
    c.load_index()  # tolerant: damaged segments are skipped and replaced
    old_segments = [i.name for i in repo.storage.list("index")]
    listed = {i.name: i.size for i in repo.storage.list("data") if _is_hex64(i.name)}
    progress.start(len(listed), "read pack headers")

    def one(pack: PackId) -> tuple[PackId, list[PackEntry] | None, str]:
        check_cancel(cancel)
        try:
            return pack, read_pack_header(repo, pack, listed[pack]), ""
        except StoreError as exc:
            return pack, None, str(exc)

    packs: list[tuple[PackId, Sequence[PackEntry]]] = []
    messages: list[str] = []
    for pack, header, err in c._map(one, sorted(PackId(p) for p in listed)):
        progress.advance(1)
        if header is not None:
            packs.append((pack, header))
            continue
        kept = c.pack_entries.get(pack)
        if kept:
            packs.append((pack, kept))
            messages.append(
                f"pack {pack[:12]}: header unreadable ({err}); kept its {len(kept)} old index "
                "entries (run 'snapdeck repair packs' to salvage it)"
            )
        else:
            messages.append(f"pack {pack[:12]}: header unreadable ({err}); not indexed")
    gone = [p for p in c.pack_entries if p not in listed]
    for p in gone:
        messages.append(f"pack {p[:12]} is missing: dropped {len(c.pack_entries[p])} index entries")
    for obj in _damaged_segments(c):
        messages.append(f"{obj[:18]} was damaged: replaced")
    check_cancel(cancel)
    written, removed = _replace_index(repo, packs, old_segments)
    messages.append(
        f"indexed {len(packs)} packs in {written} segment(s); removed {removed} old segment(s)"
    )
    return RepairResult(
        action="index",
        messages=tuple(messages),
        packs_indexed=len(packs),
        segments_written=written,
        segments_removed=removed,
    )


def _is_hex64(name: str) -> bool:
    return len(name) == 64 and all(ch in "0123456789abcdef" for ch in name)


# ---------------------------------------------------------------- repair packs


def repair_packs(
    repo: Repository,
    packs: Sequence[str] = (),
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    threads: int = 0,
) -> RepairResult:
    """Salvage the intact blobs of damaged packs into new packs and drop the damaged ones.

    Args:
        repo: the open repository (the caller holds the exclusive lock).
        packs: only consider these packs (full ids or unique prefixes); default: read all.
        dry_run: find the damage and report it; write and delete nothing.
        progress: progress sink.
        cancel: stop early.
        threads: parallel pack reads.

    Raises:
        IntegrityError: An index segment is damaged (run ``repair index`` first).
        UsageError: A pack prefix matches no indexed pack, or several.
    """
    progress = progress or NullProgress()
    c = _Checker(repo, progress, cancel, threads)
    c.load_index()
    bad_segments = _damaged_segments(c)
    if bad_segments:
        raise IntegrityError(
            f"{bad_segments[0]} is damaged; run 'snapdeck repair index' first, then repair packs"
        )
    c.load_snapshots()
    c.check_packs()
    selection: set[PackId] | None = None
    if packs:
        selection = {_resolve_pack(c, p) for p in packs}
    # Read every selected pack once (without keeping data) to find the damage.
    saved_entries = c.pack_entries
    if selection is not None:
        c.pack_entries = {p: e for p, e in saved_entries.items() if p in selection}
    c.read_data(None)
    c.pack_entries = saved_entries
    damaged = sorted(
        p
        for p in c.bad_packs | {_pack_of(c, obj) for obj in c.f.by_object}
        if p and (selection is None or p in selection)
    )
    c.walk_trees()  # attribute lost blobs to snapshots and paths
    findings = {e.object: e for e in c.f.result()}
    if not damaged:
        return RepairResult(action="packs", dry_run=dry_run, messages=("no damaged packs",))
    damaged_set = set(damaged)
    messages: list[str] = []
    salvaged: dict[bytes, tuple[bytes, int, int]] = {}
    progress.start(len(damaged), "salvage packs")
    for pack in damaged:
        check_cancel(cancel)
        progress.advance(1)
        pid = PackId(pack)
        try:
            rep = verify_pack(repo, pid, c.pack_entries.get(pid, ()), keep=True)
        except ObjectNotFound:
            messages.append(f"pack {pack[:12]} is missing: nothing to salvage")
            continue
        except StoreError as exc:
            messages.append(f"pack {pack[:12]} is unreadable ({exc}): nothing to salvage")
            continue
        n = 0
        for bid, val in rep.good.items():
            if bid not in salvaged:
                salvaged[bid] = val
                n += 1
        total = len(c.pack_entries.get(pid, ()))
        messages.append(f"pack {pack[:12]}: {n} intact blob(s) salvaged of {total} indexed")
    # Blobs of damaged packs with no intact copy anywhere are lost.
    intact_elsewhere = {
        e.id for p, es in c.pack_entries.items() if p not in damaged_set for e in es
    } - set(c.blob_fault)
    lost_ids = {
        e.id
        for p in damaged
        for e in c.pack_entries.get(PackId(p), ())
        if e.id not in salvaged and e.id not in intact_elsewhere
    }
    lost_list: list[CheckError] = []
    for b in sorted(lost_ids):
        f = findings.get(c.blob_fault.get(b, ""))
        loc = c.index.get(b)
        what = "tree" if loc is not None and loc[1].type == BLOB_TREE else "blob"
        lost_list.append(
            CheckError(
                f"{what}/{b.hex()}",
                "lost",
                f"no intact copy ({f.message})" if f else "no intact copy",
                f.snapshots if f else (),
                f.paths if f else (),
            )
        )
    lost = tuple(lost_list)
    if dry_run:
        return RepairResult(
            action="packs",
            dry_run=True,
            messages=tuple(messages),
            packs_damaged=tuple(damaged),
            blobs_salvaged=len(salvaged),
            lost=lost,
        )
    # 1. new packs with the salvaged blobs
    writers = {t: repo.new_pack_writer(t) for t in (BLOB_DATA, BLOB_TREE)}
    new_packs: list[tuple[PackId, Sequence[PackEntry]]] = []

    def put(done: Any) -> None:
        _put_sound(repo, "data", done.id, done.parts)
        new_packs.append((done.id, done.entries))

    for bid, (stored, raw, typ) in sorted(salvaged.items()):
        done = writers[BLOB_TREE if typ == BLOB_TREE else BLOB_DATA].add(
            typ, BlobId(bid), stored, raw
        )
        if done is not None:
            put(done)
    for w in writers.values():
        done = w.finish()
        if done is not None:
            put(done)
    # 2. the index without the damaged packs, with the new ones; 3. delete the damaged packs
    keep = [(p, es) for p, es in c.pack_entries.items() if p not in damaged_set]
    old_segments = [i.name for i in repo.storage.list("index")]
    written, removed = _replace_index(repo, [*keep, *new_packs], old_segments)
    rewritten_in_place = {p for p, _ in new_packs}
    for pack in damaged:
        if pack not in rewritten_in_place:  # a salvage identical to it replaced it already
            repo.storage.delete("data", pack)
    messages.append(
        f"wrote {len(new_packs)} new pack(s), {written} index segment(s); "
        f"removed {len(damaged)} damaged pack(s)"
    )
    if lost:
        messages.append(
            f"{len(lost)} blob(s) had no intact copy: run 'snapdeck repair snapshots' to drop "
            "the files that need them (a new snapshot of the same files stores them again)"
        )
    return RepairResult(
        action="packs",
        messages=tuple(messages),
        segments_written=written,
        segments_removed=removed,
        packs_damaged=tuple(damaged),
        packs_written=tuple(p for p, _ in new_packs),
        blobs_salvaged=len(salvaged),
        lost=lost,
    )


def _pack_of(c: _Checker, obj: str) -> str:
    """The pack a finding is about ('' if none)."""
    kind, _, name = obj.partition("/")
    if kind == "data" and name in c.pack_entries:
        return name
    if kind in ("blob", "tree"):
        loc = c.index.get(bytes.fromhex(name))
        if loc is not None and c.f.by_object[obj].kind == "corrupt":
            return loc[0]
    return ""


def _resolve_pack(c: _Checker, prefix: str) -> PackId:
    p = prefix.strip().lower()
    hits = [k for k in c.pack_entries if k.startswith(p)] if p else []
    if len(hits) != 1:
        raise UsageError(
            f"pack {prefix!r} matches {'no' if not hits else len(hits)} indexed pack(s)"
        )
    return hits[0]


# ---------------------------------------------------------------- repair snapshots


class _Rewriter:
    """Rewrites trees without their unreadable entries (memoised by tree id)."""

    def __init__(self, repo: Repository, missing_packs: set[str], save: bool) -> None:
        self.repo = repo
        self.index = repo.index
        self.missing_packs = missing_packs
        self.save = save
        self.memo: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}

    def blob_ok(self, bid: BlobId) -> bool:
        loc = self.index.get(bid)
        return loc is not None and loc.pack not in self.missing_packs

    def tree(self, tid: bytes) -> tuple[bytes | None, tuple[bytes, ...]]:
        """(new tree id or None if unreadable, dropped paths relative to it)."""
        hit = self.memo.get(tid)
        if hit is not None:
            return hit
        if not self.blob_ok(BlobId(tid)):
            return None, ()
        try:
            tree = self.repo.load_tree(BlobId(tid))
        except StoreError:
            return None, ()
        entries: list[Entry] = []
        dropped: list[bytes] = []
        changed = False
        for e in tree.entries:
            if e.kind is EntryKind.FILE:
                if all(self.blob_ok(b) for b in e.content):
                    entries.append(e)
                else:
                    dropped.append(e.name)
                    changed = True
            elif e.kind is EntryKind.DIR:
                sub, below = self.tree(bytes(e.payload))
                if sub is None:
                    dropped.append(e.name + b"/")
                    changed = True
                    continue
                dropped.extend(e.name + b"/" + p for p in below)
                if sub != bytes(e.payload):
                    entries.append(replace(e, payload=sub))
                    changed = True
                else:
                    entries.append(e)
            else:
                entries.append(e)
        new_id = tid
        if changed:
            if self.save:
                new_id = bytes(self.repo.save_tree(Tree(tuple(entries)))[0])
            else:
                new_id = bytes(self.repo.hash_blob(fmt.encode_tree(Tree(tuple(entries)))))
        out = (new_id, tuple(dropped))
        self.memo[tid] = out
        return out


def repair_snapshots(
    repo: Repository,
    meta: Meta,
    *,
    forget: bool = False,
    dry_run: bool = False,
    clock: Clock | None = None,
    on_rewrite: Any = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> RepairResult:
    """Rewrite snapshots that reference unreadable data, keeping everything else.

    Args:
        repo: the open repository (the caller holds the exclusive lock).
        meta: HEADs, refs and notes, moved from each old snapshot to its repaired one.
        forget: remove snapshots whose root tree cannot be read (default: report them).
        dry_run: report what would change; write nothing.
        clock: time source for the repair note.
        on_rewrite: called as ``on_rewrite(old_id, new_snapshot_or_None)`` after each change
            (the Store updates its catalog).
        progress: progress sink.
        cancel: stop between snapshots.

    Raises:
        IntegrityError: The index cannot be read (run ``repair index`` first).
    """
    progress = progress or NullProgress()
    clock = clock or SystemClock()
    listed = {i.name for i in repo.storage.list("data")}
    indexed = repo.index.pack_ids()
    missing: set[str] = {p for p in indexed if p not in listed}
    rw = _Rewriter(repo, missing, save=not dry_run)
    ids = sorted(i.name for i in repo.storage.list("snapshots"))
    progress.start(len(ids), "repair snapshots")
    messages: list[str] = []
    plans: list[tuple[Snapshot, bytes, tuple[bytes, ...]]] = []
    unrepairable: list[str] = []
    unreadable: list[str] = []
    for sid in ids:
        check_cancel(cancel)
        progress.advance(1)
        try:
            snap = repo.load_snapshot(sid)
            root = bytes.fromhex(snap.tree)
        except (StoreError, ValueError) as exc:
            unreadable.append(sid)
            messages.append(f"snapshot {sid[:8]} is unreadable: {exc}")
            continue
        new_root, dropped = rw.tree(root)
        if new_root is None:
            unrepairable.append(sid)
            messages.append(f"snapshot {sid[:8]}: its root tree cannot be read")
            continue
        if new_root != root:
            plans.append((snap, new_root, dropped))
    rewritten: list[tuple[str, str]] = []
    dropped_all: list[tuple[str, str]] = []
    for snap, _new_root, dropped in plans:
        dropped_all.extend((snap.id, escape_path(p)) for p in dropped)
    if dry_run:
        for snap, _r, dropped in plans:
            messages.append(f"snapshot {snap.short_id}: would drop {len(dropped)} entries")
        return RepairResult(
            action="snapshots",
            dry_run=True,
            messages=tuple(messages),
            dropped=tuple(dropped_all),
            unrepairable=tuple(unrepairable + unreadable),
        )
    repo.flush()  # packs → index before any snapshot names the new trees
    now = clock.now()
    refs = meta.refs()
    heads = meta.heads()
    for snap, new_root, dropped in plans:
        check_cancel(cancel)
        note_line = (
            f"[repaired {now.date().isoformat()}: dropped {len(dropped)} unreadable "
            f"entr{'y' if len(dropped) == 1 else 'ies'}]"
        )
        tags = snap.tags if REPAIRED_TAG in snap.tags else (*snap.tags, REPAIRED_TAG)
        new = repo.save_snapshot(
            replace(
                snap,
                id="",
                tree=new_root.hex(),
                tags=tags,
                message=f"{snap.message}\n{note_line}" if snap.message else note_line,
                pinned=False,
            )
        )
        _move_meta(meta, snap.id, new, refs, heads, now)
        repo.storage.delete("snapshots", snap.id)
        meta.forget(snap.id)
        if on_rewrite is not None:
            on_rewrite(snap.id, new)
        rewritten.append((snap.id, new.id))
        messages.append(
            f"snapshot {snap.short_id} → {new.short_id}: dropped {len(dropped)} unreadable entries"
        )
    removed: list[str] = []
    if forget:
        for sid in unrepairable + unreadable:
            repo.storage.delete("snapshots", sid)
            meta.forget(sid)
            if on_rewrite is not None:
                on_rewrite(sid, None)
            removed.append(sid)
            messages.append(f"snapshot {sid[:8]} removed (nothing in it could be read)")
    elif unrepairable or unreadable:
        messages.append(
            f"{len(unrepairable) + len(unreadable)} snapshot(s) cannot be repaired; "
            "'snapdeck repair snapshots --forget' removes them"
        )
    if not plans and not removed and not unrepairable and not unreadable:
        messages.append("no snapshot references unreadable data")
    return RepairResult(
        action="snapshots",
        messages=tuple(messages),
        rewritten=tuple(rewritten),
        dropped=tuple(dropped_all),
        unrepairable=tuple(unrepairable + unreadable),
        removed=tuple(removed),
    )


def _move_meta(
    meta: Meta,
    old: str,
    new: Snapshot,
    refs: dict[str, str],
    heads: Sequence[Any],
    now: Any,
) -> None:
    """Point HEADs, refs and the note of ``old`` at ``new``."""
    for h in heads:
        if h.snapshot == old:
            meta.set_head(h.host, h.source, new.id)
    for name, sid in refs.items():
        if sid == old:
            meta.set_ref(name, new.id, now)
    note = meta.note(old)
    if note.tags is not None or note.pinned:
        tags = note.tags
        if tags is not None and REPAIRED_TAG not in tags:
            tags = (*tags, REPAIRED_TAG)
        meta.set_note(new.id, Note(tags, note.pinned))


# ---------------------------------------------------------------- missing packs at snapshot time


def forget_missing_packs(repo: Repository) -> list[PackId]:
    """Drop index entries whose pack no longer exists from ``repo``'s in-memory index.

    A snapshot calls this once per process before it deduplicates against the index: a blob
    whose pack is gone must be stored again, not referenced. The index segments in the
    repository are left alone (``repair index`` rewrites them). Returns the missing packs.
    """
    index = repo.index
    indexed = index.pack_ids()
    if not indexed:
        return []
    present = {i.name for i in repo.storage.list("data")}
    missing = sorted(p for p in indexed if p not in present)
    if not missing:
        return []
    gone = set(missing)
    by_pack: dict[PackId, list[PackEntry]] = {}
    for bid, loc in index.items():
        if loc.pack not in gone:
            by_pack.setdefault(loc.pack, []).append(
                PackEntry(loc.type, bid, loc.offset, loc.length, loc.raw_length)
            )
    fresh = ChunkIndex()
    for pack, entries in by_pack.items():
        fresh.add_pack(pack, entries)
    with repo._lock:
        repo._index = fresh
    log.warning(
        "%d indexed pack(s) are missing (%s…): their blobs will be stored again; "
        "run 'snapdeck check' and 'snapdeck repair index'",
        len(missing),
        missing[0][:12],
    )
    return missing
