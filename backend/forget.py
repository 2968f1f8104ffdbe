"""Forget planning: a retention policy applied per group, with reasons (operations layer).

``plan_forget`` is pure: it takes snapshots, the protection map (HEADs, refs, pins) and a
``RetentionPolicy`` and returns a ``ForgetPlan``; it never deletes. The decisions are
``retention.apply_policy``'s (restic 0.14's, tested against restic). Protected snapshots are
always kept, with their reasons first. A plan that would leave a group with no snapshot is
refused unless ``allow_empty``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from backend.errors import UsageError
from backend.model import Snapshot
from backend.retention import (
    GroupKey,
    Kept,
    RetentionPolicy,
    SnapshotRef,
    apply_policy,
    group_snapshots,
)

__all__ = ["ForgetGroup", "ForgetPlan", "plan_forget", "plan_forget_ids"]

DEFAULT_GROUP_BY = ("host", "source")


@dataclass(frozen=True, slots=True)
class ForgetGroup:
    """One group's decision; ``keep`` and ``remove`` newest first."""

    key: GroupKey
    keep: tuple[tuple[Snapshot, Kept], ...]
    remove: tuple[Snapshot, ...]

    def describe(self) -> str:
        """``host h, source /x, tags [a]`` (only the fields grouped by)."""
        parts = []
        if self.key.host is not None:
            parts.append(f"host {self.key.host}")
        if self.key.source is not None:
            parts.append(f"source {self.key.source}")
        if self.key.tags is not None:
            parts.append(f"tags [{', '.join(self.key.tags)}]")
        return ", ".join(parts) or "all snapshots"


@dataclass(frozen=True, slots=True)
class ForgetPlan:
    """What forget keeps (with reasons) and removes, per group."""

    groups: tuple[ForgetGroup, ...]
    policy: RetentionPolicy | None
    """None when explicit snapshots were named."""

    @property
    def keep(self) -> list[tuple[Snapshot, Kept]]:
        """Every kept snapshot with its reasons."""
        return [k for g in self.groups for k in g.keep]

    @property
    def remove(self) -> list[Snapshot]:
        """Every snapshot to remove."""
        return [s for g in self.groups for s in g.remove]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape: keep (id, reasons), remove (id), groups."""
        return {
            "keep": [
                {"id": s.id, "time": s.time.isoformat(), "reasons": list(k.labels)}
                for s, k in self.keep
            ],
            "remove": [{"id": s.id, "time": s.time.isoformat()} for s in self.remove],
            "groups": [
                {
                    "host": g.key.host,
                    "source": g.key.source,
                    "tags": list(g.key.tags) if g.key.tags is not None else None,
                    "keep": [s.id for s, _k in g.keep],
                    "remove": [s.id for s in g.remove],
                }
                for g in self.groups
            ],
            "policy": self.policy.describe() if self.policy is not None else None,
        }


def plan_forget(
    snapshots: Sequence[Snapshot],
    policy: RetentionPolicy,
    *,
    protection: Mapping[str, Sequence[str]],
    group_by: Collection[str] = DEFAULT_GROUP_BY,
    allow_empty: bool = False,
    tz: tzinfo | None = None,
    now: datetime | None = None,
) -> ForgetPlan:
    """Apply ``policy`` to each group of ``snapshots``.

    Args:
        snapshots: the snapshots the policy is about (already filtered), oldest first.
        policy: the keep rules; an empty policy is refused.
        protection: id → reasons (``HEAD``, ``ref main``, ``pinned``): always kept.
        group_by: subset of ``host``, ``source``, ``tags``.
        allow_empty: allow a plan that removes every snapshot of a group.
        tz: the zone of hours/days/weeks (None: local, like restic).
        now: snapshots dated after it do not count as the newest (restic).

    Raises:
        UsageError: empty policy, or a group would be emptied without ``allow_empty``.
    """
    if policy.is_empty():
        raise UsageError(
            "no policy given: use --keep-last, --keep-hourly, --keep-daily, --keep-weekly, "
            "--keep-monthly, --keep-yearly, --keep-within or --keep-tag (or name snapshots)"
        )
    by_id = {s.id: s for s in snapshots}

    def key(s: Snapshot) -> GroupKey:
        return GroupKey(source=s.source, host=s.host, tags=s.tags)

    groups = []
    for gkey, members in group_snapshots(snapshots, group_by, key).items():
        refs = [SnapshotRef(s.id, s.time, s.tags, tuple(protection.get(s.id, ()))) for s in members]
        decision = apply_policy(refs, policy, tz=tz, now=now)
        group = ForgetGroup(
            key=gkey,
            keep=tuple((by_id[k.snapshot.id], k) for k in decision.keep),
            remove=tuple(by_id[r.id] for r in decision.remove),
        )
        if not group.keep and group.remove and not allow_empty:
            raise UsageError(
                f"the policy would remove all {len(group.remove)} snapshots of "
                f"{group.describe()}; pass --allow-empty to allow it"
            )
        groups.append(group)
    return ForgetPlan(tuple(groups), policy)


def plan_forget_ids(
    snapshots: Sequence[Snapshot], protection: Mapping[str, Sequence[str]]
) -> ForgetPlan:
    """A plan that removes exactly ``snapshots`` (named on the command line).

    Raises:
        UsageError: one of them is protected (a HEAD, a ref or pinned).
    """
    for s in snapshots:
        why = protection.get(s.id)
        if why:
            raise UsageError(
                f"snapshot {s.short_id} is protected ({', '.join(why)}); "
                "remove the ref or unpin it first"
            )
    seen: dict[str, Snapshot] = {s.id: s for s in snapshots}
    ordered = sorted(seen.values(), key=lambda s: s.time, reverse=True)
    return ForgetPlan((ForgetGroup(GroupKey(), (), tuple(ordered)),), None)
