"""Operation: verify a repository's integrity (``snapdeck check``). Reads only; never repairs.

What is checked, in order:

1. **Snapshots**: every object under ``snapshots/`` has a valid name, its content hashes to its
   name, and it decodes.
2. **Index**: every segment has a valid name, hashes to it, and decodes. The check builds its
   own index from the segments that are sound, so one damaged segment does not hide the rest.
3. **Packs**: every pack the index names exists; its trailer and header are valid and agree
   with the index entries (offset, length, type). Packs that no index names are *notes*, not
   damage: an interrupted snapshot leaves them behind and ``prune`` removes them.
4. **Read data** (optional, all packs or a subset): each pack is read once, sequentially and in
   parallel with the others; its bytes must hash to its name and every blob the index places in
   it is decompressed and re-hashed against its id.
5. **Trees**: from every snapshot's root, every tree is read, verified and decoded; every blob
   a file references must be in the index, in a pack that exists and was not found damaged.
6. **Catalog** (when given): the local cache lists exactly the snapshots in the repository,
   with the same content.

Each finding is a ``CheckError`` naming the damaged object (``data/<id>``, ``index/<id>``,
``snapshots/<id>``, ``blob/<id>``, ``tree/<id>``), a kind, a message, and the snapshots and
file paths it affects. Trees shared by many snapshots are walked once (memoised by id).
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import blake3
import zstandard

from backend import format as fmt
from backend.errors import ObjectNotFound, StoreError, UnsupportedFormat, UsageError
from backend.format import BLOB_TREE, PackEntry
from backend.ids import BlobId, PackId, object_name
from backend.model import EntryKind, Snapshot, Tree
from backend.progress import NullProgress, Progress, check_cancel
from backend.repository import Repository, default_threads
from backend.snapshots import escape_path

log = logging.getLogger(__name__)

__all__ = [
    "CheckError",
    "CheckResult",
    "PackReport",
    "check_repository",
    "parse_subset",
    "read_pack_header",
    "verify_pack",
]

T = TypeVar("T")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_PATHS_PER_ERROR = 1000
"""Paths kept per finding (a damaged blob shared by a million files names the first 1000)."""

# Kinds of findings.
MISSING = "missing"
"""An object something refers to does not exist."""
CORRUPT = "corrupt"
"""An object exists but its content is damaged (bad hash, bad header, undecodable)."""
FOREIGN = "foreign"
"""A file in the repository that is not a snapdeck object (bad name, zero length)."""
MISMATCH = "mismatch"
"""Two records disagree (index vs pack header, catalog vs repository)."""
UNSUPPORTED = "unsupported"
"""An object of a newer format version than this snapdeck reads."""


@dataclass(frozen=True, slots=True)
class CheckError:
    """One finding: a damaged or missing object and what it affects."""

    object: str
    """``kind/name`` of the object: ``data/<pack>``, ``index/<id>``, ``snapshots/<id>``,
    ``blob/<id>``, ``tree/<id>``, ``catalog``."""
    kind: str
    """``missing``, ``corrupt``, ``foreign``, ``mismatch`` or ``unsupported``."""
    message: str
    """One line for people."""
    snapshots: tuple[str, ...] = ()
    """Ids of the snapshots whose content is affected."""
    paths: tuple[str, ...] = ()
    """Affected paths inside those snapshots (escaped for printing)."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form."""
        return {
            "object": self.object,
            "kind": self.kind,
            "message": self.message,
            "snapshots": list(self.snapshots),
            "paths": list(self.paths),
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a check found."""

    errors: tuple[CheckError, ...]
    notes: tuple[str, ...] = ()
    """Observations that are not damage (unindexed packs from interrupted runs)."""
    snapshots: int = 0
    trees: int = 0
    packs: int = 0
    packs_read: int = 0
    blobs_read: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing is damaged."""
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form: ``{"ok", "errors": [...], ...}``."""
        return {
            "ok": self.ok,
            "errors": [e.to_json() for e in self.errors],
            "notes": list(self.notes),
            "snapshots": self.snapshots,
            "trees": self.trees,
            "packs": self.packs,
            "packs_read": self.packs_read,
            "blobs_read": self.blobs_read,
            "bytes_read": self.bytes_read,
        }


@dataclass(slots=True)
class _Finding:
    kind: str
    message: str
    snapshots: set[str] = field(default_factory=set)
    paths: list[str] = field(default_factory=list)
    seen_paths: set[str] = field(default_factory=set)


class _Findings:
    """Findings keyed by object; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_object: dict[str, _Finding] = {}

    def add(self, obj: str, kind: str, message: str) -> None:
        with self._lock:
            if obj not in self.by_object:
                self.by_object[obj] = _Finding(kind, message)

    def affect(self, obj: str, snapshot: str, path: str) -> None:
        f = self.by_object[obj]
        f.snapshots.add(snapshot)
        if path not in f.seen_paths and len(f.paths) < MAX_PATHS_PER_ERROR:
            f.seen_paths.add(path)
            f.paths.append(path)

    def result(self) -> tuple[CheckError, ...]:
        out = [
            CheckError(obj, f.kind, f.message, tuple(sorted(f.snapshots)), tuple(sorted(f.paths)))
            for obj, f in self.by_object.items()
        ]
        order = {"snapshots": 0, "index": 1, "data": 2, "tree": 3, "blob": 4}
        out.sort(key=lambda e: (order.get(e.object.partition("/")[0], 9), e.object))
        return tuple(out)


# ---------------------------------------------------------------- subsets


def parse_subset(spec: str) -> tuple[str, float, int]:
    """Parse ``--read-data-subset``: ``N%`` (a random share of packs) or ``N/M`` (group N of M).

    Returns:
        ``("percent", share 0..1, 0)`` or ``("group", n, m)``.

    Raises:
        UsageError: The spec is neither form, or out of range.
    """
    s = spec.strip()
    try:
        if s.endswith("%"):
            pct = float(s[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            return ("percent", pct / 100, 0)
        n_s, sep, m_s = s.partition("/")
        if sep:
            n, m = int(n_s), int(m_s)
            if not 1 <= n <= m:
                raise ValueError
            return ("group", n, m)
    except ValueError:
        pass
    raise UsageError(
        f"invalid --read-data-subset {spec!r}: use N% (e.g. 10%) or N/M (e.g. 1/5, 1 <= N <= M)"
    )


def select_packs(packs: Iterable[PackId], subset: str | None) -> list[PackId]:
    """The packs to read for ``subset`` (None: all), sorted."""
    all_packs = sorted(packs)
    if subset is None:
        return all_packs
    form, a, b = parse_subset(subset)
    if form == "group":
        return [p for p in all_packs if int(p[:8], 16) % b == int(a) - 1]
    k = max(1, round(len(all_packs) * a)) if all_packs else 0
    return sorted(random.sample(all_packs, min(k, len(all_packs))))


# ---------------------------------------------------------------- pack helpers


def read_pack_header(repo: Repository, pack: PackId, size: int) -> list[PackEntry]:
    """A pack's header entries, read from its tail (two small range reads).

    Raises:
        IntegrityError: The trailer or header is damaged.
        UnsupportedFormat: A newer pack version.
    """
    return repo.read_pack_header(pack, size)


@dataclass(frozen=True, slots=True)
class PackReport:
    """The result of reading one pack in full."""

    pack: PackId
    size: int
    name_ok: bool
    """The pack's bytes hash to its name."""
    header: list[PackEntry] | None
    """The pack's own header (None: unreadable)."""
    header_error: str
    bad: dict[bytes, str]
    """Blob id → why it is damaged, for the entries checked."""
    good: dict[bytes, tuple[bytes, int, int]]
    """Blob id → (stored bytes, raw length, type) for intact blobs (only with ``keep``)."""
    blobs: int


def verify_pack(
    repo: Repository,
    pack: PackId,
    entries: Iterable[PackEntry],
    *,
    keep: bool = False,
    dctx: zstandard.ZstdDecompressor | None = None,
) -> PackReport:
    """Read a whole pack once and verify each entry (and the pack's own header entries).

    Args:
        repo: the repository (for the id key and storage).
        pack: the pack id.
        entries: the index's entries for this pack.
        keep: keep the stored bytes of intact blobs (for salvage).
        dctx: a decompressor (one per thread).

    Raises:
        ObjectNotFound: The pack does not exist.
    """
    data = repo.storage.get("data", pack)
    dctx = dctx or zstandard.ZstdDecompressor()
    name_ok = blake3.blake3(data, max_threads=1).hexdigest() == pack
    header: list[PackEntry] | None = None
    header_error = ""
    try:
        header = repo.pack_entries(data)
    except StoreError as exc:
        header_error = str(exc)
    cands: dict[bytes, PackEntry] = {}
    for e in entries:
        cands.setdefault(e.id, e)
    bad: dict[bytes, str] = {}
    good: dict[bytes, tuple[bytes, int, int]] = {}
    mv = memoryview(data)
    n = 0

    def ok(e: PackEntry) -> str | None:
        nonlocal n
        n += 1
        why = _verify_entry(repo, mv, e, dctx)
        if why is None:
            stored = bytes(mv[e.offset : e.offset + e.length]) if keep else b""
            good[e.id] = (stored, e.raw_length, e.type)
        return why

    # Damage is judged by the index's entries: that is where reads look.
    for e in cands.values():
        why = ok(e)
        if why is not None:
            bad[e.id] = why
    if keep:  # salvage: the pack's own header may place intact blobs elsewhere (swapped packs)
        idx_keys = {(e.id, e.offset, e.length) for e in cands.values()}
        for e in header or ():
            if e.id not in good and (e.id, e.offset, e.length) not in idx_keys:
                ok(e)
    return PackReport(pack, len(data), name_ok, header, header_error, bad, good, n)


def _verify_entry(
    repo: Repository, data: memoryview, e: PackEntry, dctx: zstandard.ZstdDecompressor
) -> str | None:
    """Why the blob at ``e`` in ``data`` is damaged, or None if it verifies."""
    if e.offset + e.length > len(data) or e.length == 0:
        return "lies outside the pack"
    try:
        repo.open_stored_blob(e.id, bytes(data[e.offset : e.offset + e.length]), e.raw_length)
    except StoreError as exc:
        return _blob_message(str(exc), e.id)
    return None


def _blob_message(msg: str, bid: bytes) -> str:
    """An ``open_stored_blob`` message without its "blob X in a pack" prefix (the finding
    names the blob and the pack already)."""
    prefix = f"blob {bid.hex()[:12]} in a pack"
    if msg.startswith(prefix):
        msg = msg[len(prefix) :].lstrip(": ").strip()
    return msg or "damaged"


# ---------------------------------------------------------------- the check


class _Checker:
    def __init__(
        self,
        repo: Repository,
        progress: Progress,
        cancel: threading.Event | None,
        threads: int,
    ) -> None:
        self.repo = repo
        self.storage = repo.storage
        self.progress = progress
        self.cancel = cancel
        self.threads = threads or default_threads()
        self.f = _Findings()
        self.notes: list[str] = []
        # blob id -> (pack, entry); first location wins, as in ChunkIndex
        self.index: dict[bytes, tuple[PackId, PackEntry]] = {}
        self.pack_entries: dict[PackId, list[PackEntry]] = {}
        self.pack_sizes: dict[PackId, int] = {}
        self.blob_fault: dict[bytes, str] = {}
        """Blob id → the object key of the finding that makes it unreadable."""
        self.bad_packs: set[str] = set()
        self.snapshots: list[Snapshot] = []
        self.trees = 0
        self.packs_read = 0
        self.blobs_read = 0
        self.bytes_read = 0
        self._local = threading.local()

    def _dctx(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = zstandard.ZstdDecompressor()
            self._local.dctx = d
        return d

    # -------------------------------------------------------- 1. snapshots

    def load_snapshots(self) -> None:
        for info in sorted(self.storage.list("snapshots"), key=lambda i: i.name):
            obj = f"snapshots/{info.name}"
            if not _HEX64.match(info.name):
                self.f.add(obj, FOREIGN, "not a snapdeck snapshot (bad object name)")
                continue
            if info.size == 0:
                self.f.add(obj, FOREIGN, "snapshot object is empty (zero-length file)")
                continue
            try:
                data = self.storage.get("snapshots", info.name)
            except ObjectNotFound:
                continue  # removed while we listed (forget)
            if object_name(data) != info.name:
                self.f.add(obj, CORRUPT, "snapshot content does not match its name")
                continue
            try:
                self.snapshots.append(self.repo.decode_snapshot_object(info.name, data))
            except UnsupportedFormat as exc:
                self.f.add(obj, UNSUPPORTED, str(exc))
            except StoreError as exc:
                self.f.add(obj, CORRUPT, str(exc))
        self.snapshots.sort(key=lambda s: (s.time, s.id))

    # -------------------------------------------------------- 2. index

    def load_index(self) -> None:
        for info in sorted(self.storage.list("index"), key=lambda i: i.name):
            obj = f"index/{info.name}"
            if not _HEX64.match(info.name) or info.size == 0:
                why = "bad object name" if info.size else "zero-length file"
                self.f.add(obj, FOREIGN, f"not a snapdeck index segment ({why})")
                continue
            try:
                data = self.storage.get("index", info.name)
            except ObjectNotFound:
                continue  # removed by a concurrent repair
            if object_name(data) != info.name:
                self.f.add(obj, CORRUPT, "index segment content does not match its name")
                continue
            try:
                packs = self.repo.decode_index_segment(data)
            except UnsupportedFormat as exc:
                self.f.add(obj, UNSUPPORTED, str(exc))
                continue
            except StoreError as exc:
                self.f.add(obj, CORRUPT, str(exc))
                continue
            for pack, entries in packs:
                have = self.pack_entries.setdefault(pack, [])
                known = {e.id for e in have}
                for e in entries:
                    if e.id not in known:
                        have.append(e)
                        known.add(e.id)
                    self.index.setdefault(e.id, (pack, e))

    # -------------------------------------------------------- 3. packs

    def check_packs(self) -> None:
        listed: dict[str, int] = {}
        for info in self.storage.list("data"):
            if not _HEX64.match(info.name):
                self.f.add(f"data/{info.name}", FOREIGN, "not a snapdeck pack (bad object name)")
                continue
            listed[info.name] = info.size
        for pack in self.pack_entries:
            if pack not in listed:
                self._pack_fault(pack, MISSING, "pack is missing (the index names it)")
        unindexed = [p for p in listed if p not in self.pack_entries]
        if unindexed:
            total = sum(listed[p] for p in unindexed)
            self.notes.append(
                f"{len(unindexed)} pack(s) ({total} bytes) are in no index: left by an "
                "interrupted run; 'snapdeck prune' removes them"
            )
            for p in unindexed:
                if listed[p] == 0:
                    self.f.add(f"data/{p}", FOREIGN, "pack is empty (zero-length file)")
        self.pack_sizes = {PackId(p): s for p, s in listed.items()}
        todo = [p for p in self.pack_entries if p in listed]
        self.progress.start(len(todo), "check pack headers")

        def one(pack: PackId) -> tuple[PackId, list[PackEntry] | None, str]:
            check_cancel(self.cancel)
            try:
                return pack, read_pack_header(self.repo, pack, listed[pack]), ""
            except ObjectNotFound:
                return pack, None, "pack is missing (the index names it)"
            except StoreError as exc:
                return pack, None, str(exc)

        for pack, header, err in self._map(one, todo):
            self.progress.advance(1)
            if header is None:
                kind = MISSING if err.startswith("pack is missing") else CORRUPT
                if listed.get(pack) == 0:
                    kind, err = FOREIGN, "pack is empty (zero-length file)"
                self._pack_fault(pack, kind, err if kind != CORRUPT else f"pack header: {err}")
                continue
            by_id = {e.id: e for e in header}
            wrong = 0
            for e in self.pack_entries[pack]:
                h = by_id.get(e.id)
                if h is None or (h.offset, h.length, h.type, h.raw_length) != (
                    e.offset,
                    e.length,
                    e.type,
                    e.raw_length,
                ):
                    wrong += 1
            if wrong:
                self._pack_fault(
                    pack,
                    MISMATCH,
                    f"pack header disagrees with the index for {wrong} blob(s)",
                )

    def _pack_fault(self, pack: PackId, kind: str, message: str) -> None:
        obj = f"data/{pack}"
        self.f.add(obj, kind, message)
        self.bad_packs.add(pack)
        for e in self.pack_entries.get(pack, ()):
            if self.index.get(e.id, (None,))[0] == pack:
                self.blob_fault.setdefault(e.id, obj)

    # -------------------------------------------------------- 4. read data

    def read_data(self, subset: str | None) -> None:
        present = [p for p in self.pack_entries if p in self.pack_sizes]
        todo = select_packs(present, subset)
        self.progress.start(len(todo), "read data")
        lock = threading.Lock()

        def one(pack: PackId) -> PackReport | tuple[PackId, str]:
            check_cancel(self.cancel)
            try:
                return verify_pack(self.repo, pack, self.pack_entries[pack], dctx=self._dctx())
            except ObjectNotFound:
                return pack, "pack is missing (the index names it)"
            except StoreError as exc:
                return pack, str(exc)

        for rep in self._map(one, todo):
            self.progress.advance(1)
            if isinstance(rep, tuple):
                self._pack_fault(rep[0], MISSING, rep[1])
                continue
            with lock:
                self.packs_read += 1
                self.blobs_read += rep.blobs
                self.bytes_read += rep.size
            pobj = f"data/{rep.pack}"
            if not rep.name_ok:
                self.f.add(pobj, CORRUPT, "pack content does not match its name")
                self.bad_packs.add(rep.pack)
            elif rep.header_error and pobj not in self.f.by_object:
                self.f.add(pobj, CORRUPT, f"pack header: {rep.header_error}")
                self.bad_packs.add(rep.pack)
            for bid, why in rep.bad.items():
                if self.index.get(bid, (None,))[0] != rep.pack:
                    continue  # the index reads this blob from another pack
                kind = "tree" if self.index[bid][1].type == BLOB_TREE else "blob"
                obj = f"{kind}/{bid.hex()}"
                self.f.add(obj, CORRUPT, f"in pack {rep.pack[:12]}: {why}")
                self.blob_fault[bid] = obj

    # -------------------------------------------------------- 5. trees

    def read_tree(self, tid: bytes) -> Tree:
        loc = self.index.get(tid)
        if loc is None:
            raise fmt.IntegrityError("tree is not in the index")
        pack, e = loc
        stored = self.storage.get_range("data", pack, e.offset, e.length)
        if len(stored) != e.length:
            raise fmt.IntegrityError(f"pack {pack[:12]} is truncated")
        try:
            plain = self.repo.open_stored_blob(BlobId(tid), stored, e.raw_length)
        except StoreError as exc:
            raise fmt.IntegrityError(_blob_message(str(exc), tid)) from None
        return fmt.decode_tree(plain)

    def walk_trees(self) -> None:
        memo: dict[bytes, tuple[tuple[bytes, str], ...]] = {}
        self.progress.start(len(self.snapshots), "check trees")
        for snap in self.snapshots:
            check_cancel(self.cancel)
            try:
                root = bytes.fromhex(snap.tree)
                if len(root) != 32:
                    raise ValueError
            except ValueError:
                self.f.add(f"snapshots/{snap.id}", CORRUPT, "snapshot has no valid tree id")
                continue
            for path, obj in self._faults_below(root, memo):
                self.f.affect(obj, snap.id, escape_path(path) if path else "/")
            self.progress.advance(1)

    def _tree_fault(self, tid: bytes, message: str, kind: str = CORRUPT) -> str:
        fault = self.blob_fault.get(tid)
        if fault is not None:
            return fault
        obj = f"tree/{tid.hex()}"
        self.f.add(obj, kind, message)
        self.blob_fault[tid] = obj
        return obj

    def _faults_below(
        self, root: bytes, memo: dict[bytes, tuple[tuple[bytes, str], ...]]
    ) -> tuple[tuple[bytes, str], ...]:
        """(path relative to the tree, finding key) for every unreadable thing below ``root``.

        Iterative post-order over the DAG of trees, so deep trees cannot overflow the stack.
        """
        stack: list[tuple[bytes, Tree | None]] = [(root, None)]
        while stack:
            tid, tree = stack[-1]
            if tid in memo:
                stack.pop()
                continue
            if tree is None:
                fault = self.blob_fault.get(tid)
                if fault is None and tid not in self.index:
                    fault = self._tree_fault(tid, "tree is not in the index", MISSING)
                if fault is None:
                    try:
                        tree = self.read_tree(tid)
                        self.trees += 1
                    except StoreError as exc:
                        fault = self._tree_fault(tid, str(exc))
                if fault is not None:
                    memo[tid] = ((b"", fault),)
                    stack.pop()
                    continue
                assert tree is not None
                stack[-1] = (tid, tree)
                pending = [
                    bytes(e.payload)
                    for e in tree.entries
                    if e.kind is EntryKind.DIR and bytes(e.payload) not in memo
                ]
                if pending:
                    stack.extend((p, None) for p in pending)
                    continue
            out: list[tuple[bytes, str]] = []
            for e in tree.entries:
                if e.kind is EntryKind.FILE:
                    for b in e.content:
                        fault = self.blob_fault.get(b)
                        if fault is None and b not in self.index:
                            fault = f"blob/{b.hex()}"
                            self.f.add(fault, MISSING, "blob is not in the index")
                            self.blob_fault[b] = fault
                        if fault is not None:
                            out.append((e.name, fault))
                elif e.kind is EntryKind.DIR:
                    for p, fault in memo[bytes(e.payload)]:
                        out.append((e.name + b"/" + p if p else e.name, fault))
            memo[tid] = tuple(dict.fromkeys(out))
            stack.pop()
        return memo[root]

    # -------------------------------------------------------- helpers

    def _map(self, fn: Callable[[PackId], T], items: list[PackId]) -> Iterator[T]:
        """``map(fn, items)`` on a thread pool, in order, with a bounded number in flight
        (each running job may hold one pack in memory)."""
        if len(items) <= 1 or self.threads <= 1:
            yield from map(fn, items)
            return
        with ThreadPoolExecutor(self.threads, thread_name_prefix="check") as pool:
            window: deque[Future[T]] = deque()
            it = iter(items)
            try:
                for p in it:
                    window.append(pool.submit(fn, p))
                    if len(window) >= 2 * self.threads:
                        yield window.popleft().result()
                while window:
                    yield window.popleft().result()
            finally:
                for f in window:
                    f.cancel()


def check_repository(
    repo: Repository,
    *,
    read_data: bool = False,
    subset: str | None = None,
    catalog: Callable[[], list[Snapshot]] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    threads: int = 0,
) -> CheckResult:
    """Verify the repository; returns every finding (never raises for damage).

    Args:
        repo: the open repository (the caller holds a shared lock).
        read_data: read every pack and re-hash every blob.
        subset: read only a subset of packs (``N%`` or ``N/M``); implies ``read_data``.
        catalog: returns the local catalog's snapshots, to compare with the repository.
        progress: progress sink.
        cancel: stop early (raises ``Cancelled``).
        threads: parallel pack reads (0: one per core).

    Raises:
        UsageError: A malformed ``subset``.
        Cancelled: ``cancel`` was set.
    """
    if subset is not None:
        parse_subset(subset)
        read_data = True
    c = _Checker(repo, progress or NullProgress(), cancel, threads)
    c.load_snapshots()
    check_cancel(cancel)
    c.load_index()
    check_cancel(cancel)
    c.check_packs()
    if read_data:
        c.read_data(subset)
    c.walk_trees()
    if catalog is not None:
        _check_catalog(c, catalog())
    return CheckResult(
        errors=c.f.result(),
        notes=tuple(c.notes),
        snapshots=len(c.snapshots),
        trees=c.trees,
        packs=len(c.pack_entries),
        packs_read=c.packs_read,
        blobs_read=c.blobs_read,
        bytes_read=c.bytes_read,
    )


def _check_catalog(c: _Checker, cat: list[Snapshot]) -> None:
    repo_ids = {i.name for i in c.storage.list("snapshots")}
    cat_by_id = {s.id: s for s in cat}
    stale = sorted(set(cat_by_id) - repo_ids)
    missing = sorted(repo_ids - set(cat_by_id))
    differ = [s.id for s in c.snapshots if s.id in cat_by_id and cat_by_id[s.id] != s]
    if differ:
        c.f.add(
            "catalog",
            MISMATCH,
            f"the local catalog's copy of {len(differ)} snapshot(s) differs from the "
            "repository (it is a cache: it is rebuilt when deleted)",
        )
    if stale or missing:
        c.notes.append(
            f"the local catalog was out of date ({len(stale)} removed, {len(missing)} new "
            "snapshot(s)); it re-syncs on the next listing"
        )


def is_object_name(name: str) -> bool:
    """Whether ``name`` looks like a content-addressed object name (64 lowercase hex)."""
    return bool(_HEX64.match(name))
