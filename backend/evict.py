"""Eviction: keep the repository under a size budget and an age limit (operations layer).

``plan_evict`` (reads only) orders the candidates least recently accessed first — never a
HEAD, a named ref, a pinned snapshot or the newest snapshot of a source — and removes them
one by one *from a usage graph* (see ``usage``): each removal frees exactly the bytes no
remaining snapshot references, so a snapshot that shared data only with an already-evicted
one frees that data too. It stops when both limits hold: no candidate was last accessed
longer ago than ``max_age``, and the projected size is within ``max_size``.

The projected size is what the repository will occupy after prune: every live blob's stored
bytes plus its pack header entry, pack trailers, the index (scaled by live blobs) and the
remaining snapshot objects. Garbage already in the repository (left by earlier forgets) counts
as reclaimed from the start. ``execute_evict`` removes the snapshots and prunes with
``max_repack_ratio=1`` (every pack holding a freed blob is rewritten), so the size on disk
afterwards matches the promise closely (tests check 1 %).

``sweep`` is the background sweeper for watch mode: one call applies ``[evict]`` once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.config import Config, EvictConfig
from backend.errors import StoreLocked, UsageError
from backend.format import TRAILER
from backend.model import Snapshot
from backend.progress import Progress
from backend.prune import PruneResult
from backend.units import Duration, format_size
from backend.usage import UsageGraph

if TYPE_CHECKING:
    from backend.store import Store

__all__ = ["EvictItem", "EvictPlan", "EvictResult", "execute_evict", "plan_evict", "sweep"]

log = logging.getLogger(__name__)

NEWEST = "newest of its source"
USAGE_CACHE = "usage-graph.v3"


@dataclass(frozen=True, slots=True)
class EvictItem:
    """One snapshot the plan removes, in order."""

    snapshot: Snapshot
    exclusive_bytes: int
    """Stored bytes of blobs only it still referenced when it was removed (in plan order)."""
    freed_bytes: int
    """``exclusive_bytes`` plus its snapshot object and index entries."""
    cumulative_bytes: int
    """Bytes reclaimed so far, this snapshot included (and garbage already present)."""
    last_access: datetime
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EvictPlan:
    """Which snapshots eviction removes, why, and what it frees."""

    remove: tuple[EvictItem, ...]
    size_before: int
    """Bytes of packs, index segments and snapshot objects now."""
    size_after: int
    """Projected bytes after removing ``remove`` and pruning."""
    garbage_bytes: int
    """Of the reclaimed bytes, those no snapshot references already (freed by any prune)."""
    budget: int | None
    max_age: Duration | None
    protected: dict[str, list[str]]
    """Snapshots that are never evicted, with why."""
    candidates: int

    @property
    def bytes_reclaimed(self) -> int:
        """``size_before - size_after``."""
        return self.size_before - self.size_after

    @property
    def has_work(self) -> bool:
        """Whether executing changes anything: snapshots to remove, or garbage to prune to
        get under the budget."""
        over = self.budget is not None and self.size_before > self.budget
        return bool(self.remove) or (over and self.garbage_bytes > 0)

    @property
    def budget_met(self) -> bool:
        """Whether the projected size fits the budget (True without a budget)."""
        return self.budget is None or self.size_after <= self.budget

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "remove": [
                {
                    "id": i.snapshot.id,
                    "time": i.snapshot.time.isoformat(),
                    "source": i.snapshot.source,
                    "exclusive_bytes": i.exclusive_bytes,
                    "freed_bytes": i.freed_bytes,
                    "cumulative_bytes": i.cumulative_bytes,
                    "last_access": i.last_access.isoformat(),
                    "reason": i.reason,
                }
                for i in self.remove
            ],
            "bytes_reclaimed": self.bytes_reclaimed,
            "garbage_bytes": self.garbage_bytes,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "budget": self.budget,
            "budget_met": self.budget_met,
            "max_age": str(self.max_age) if self.max_age is not None else None,
            "protected": [{"id": k, "reasons": v} for k, v in sorted(self.protected.items())],
        }


@dataclass(frozen=True, slots=True)
class EvictResult:
    """What an executed eviction did."""

    plan: EvictPlan
    removed: tuple[str, ...]
    prune: PruneResult | None
    size_after: int
    """Bytes of packs, index segments and snapshot objects after the prune."""


def repo_size(store: Store) -> int:
    """Bytes of packs, index segments and snapshot objects."""
    return sum(i.size for k in ("data", "index", "snapshots") for i in store.storage.list(k))


def usage_cache(store: Store) -> Path | None:
    """Where a store keeps the usage graph's tree structure between runs (None: nowhere)."""
    if store.cache_dir is None:
        return None
    path = Path(store.cache_dir) / store.repo.config.id / USAGE_CACHE
    for old in ("usage-graph.v1", "usage-graph.v2"):  # earlier versions' files
        try:
            path.with_name(old).unlink()
        except OSError:
            pass
    return path


def protected_snapshots(store: Store, snaps: list[Snapshot]) -> dict[str, list[str]]:
    """HEADs, refs, pins, and the newest snapshot of each source: never evicted."""
    prot = {k: list(v) for k, v in store.protection().items()}
    newest: dict[tuple[str, str], Snapshot] = {}
    for s in snaps:
        k = (s.host, s.source)
        if k not in newest or s.time >= newest[k].time:
            newest[k] = s
    for s in newest.values():
        prot.setdefault(s.id, []).append(NEWEST)
    live = {s.id for s in snaps}
    return {k: v for k, v in prot.items() if k in live}


def plan_evict(
    store: Store,
    *,
    max_size: int | None,
    max_age: Duration | None,
    now: datetime | None = None,
    exclude: Collection[str] = (),
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> EvictPlan:
    """Plan an eviction (reads only; see the module docstring).

    ``exclude``: ids of snapshots already planned for removal (by a forget): the plan is made
    for the repository without them, so their objects and the data only they use count as
    garbage that the prune after the eviction reclaims, and "newest of its source" is judged
    among the others.

    Raises:
        UsageError: neither a size budget nor an age limit.
    """
    if max_size is None and max_age is None:
        raise UsageError(
            "nothing to evict by: give --max-size or --max-age (or set [evict] max_size / "
            "max_age in the config)"
        )
    if max_size is not None and max_size <= 0:
        raise UsageError("--max-size must be greater than zero")
    now = now or store.clock.now()
    with store.meta.cached():  # HEADs, refs and notes are read once for the whole plan
        return _plan_evict(store, max_size, max_age, now, exclude, progress, cancel)


def _plan_evict(
    store: Store,
    max_size: int | None,
    max_age: Duration | None,
    now: datetime,
    exclude: Collection[str],
    progress: Progress | None,
    cancel: threading.Event | None,
) -> EvictPlan:
    snaps = store.list_snapshots()
    if exclude:
        gone = set(exclude)
        snaps = [s for s in snaps if s.id not in gone]
    graph = UsageGraph.build(
        store.repo, snaps, cache=usage_cache(store), progress=progress, cancel=cancel
    )
    recorded = store.meta.access_times()  # what Store.last_access says, for these snapshots
    access = {s.id: max(recorded.get(s.id, s.time), s.time) for s in snaps}
    protected = protected_snapshots(store, snaps)

    storage = store.storage
    obj_size = {i.name: i.size for i in storage.list("snapshots")}
    pack_bytes = packs = 0
    for info in storage.list("data"):
        pack_bytes += info.size
        packs += 1
    index_bytes = graph.index_bytes
    size_before = pack_bytes + index_bytes + sum(obj_size.values())
    per_entry = index_bytes / max(1, graph.index_entries)
    trailers = TRAILER.size * packs

    def projected(snapshot_bytes: int) -> int:
        return round(graph.live_bytes + trailers + per_entry * graph.live_nodes + snapshot_bytes)

    live_objects = sum(obj_size.get(s.id, 0) for s in snaps)
    size_after = projected(live_objects)
    garbage = max(0, size_before - size_after)
    size_after = min(size_after, size_before)

    cutoff = max_age.subtract_from(now) if max_age is not None else None
    candidates = sorted(
        (s for s in snaps if s.id not in protected),
        key=lambda s: (access.get(s.id, s.time), s.time),
    )
    items: list[EvictItem] = []
    for s in candidates:
        last = access.get(s.id, s.time)
        if cutoff is not None and last < cutoff:
            reason = f"not accessed for {max_age} (last {last.astimezone():%Y-%m-%d %H:%M})"
        elif max_size is not None and size_after > max_size:
            reason = f"over budget ({format_size(size_after)} > {format_size(max_size)})"
        else:
            break
        freed, _nodes = graph.remove(s.id)
        live_objects -= obj_size.get(s.id, 0)
        new_after = min(size_after, projected(live_objects))
        items.append(
            EvictItem(
                snapshot=s,
                exclusive_bytes=freed,
                freed_bytes=size_after - new_after,
                cumulative_bytes=size_before - new_after,
                last_access=last,
                reason=reason,
            )
        )
        size_after = new_after
    return EvictPlan(
        remove=tuple(items),
        size_before=size_before,
        size_after=size_after,
        garbage_bytes=garbage,
        budget=max_size,
        max_age=max_age,
        protected=protected,
        candidates=len(candidates),
    )


def execute_evict(
    store: Store,
    plan: EvictPlan,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> EvictResult:
    """Remove the planned snapshots, then prune so the space is really freed (``Store.evict``:
    one exclusive lock for both)."""
    return store.evict(plan, progress=progress, cancel=cancel)


def sweep(
    store: Store,
    config: Config | EvictConfig,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> EvictResult | None:
    """Apply the ``[evict]`` limits once (the watch-mode sweeper calls this on a timer).

    Returns None when no limit is configured, when nothing needs evicting, or when another
    process holds the repository lock (the next sweep tries again); otherwise what was done.
    Call it between checkpoints, never while this process holds a snapshot's shared lock.
    """
    cfg = config.evict if isinstance(config, Config) else config
    max_size = cfg.max_size_bytes
    max_age = cfg.max_age_duration
    if max_size is None and max_age is None:
        return None
    try:
        plan = plan_evict(
            store, max_size=max_size, max_age=max_age, now=now, progress=progress, cancel=cancel
        )
        if not plan.has_work:
            return None
        res = execute_evict(store, plan, progress=progress, cancel=cancel)
    except StoreLocked as exc:
        log.info("evict sweep skipped: %s", exc)
        return None
    log.info(
        "evict sweep removed %d snapshots, %s reclaimed",
        len(res.removed),
        format_size(plan.size_before - res.size_after),
    )
    return res
