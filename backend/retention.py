"""The retention policy: which snapshots ``forget`` keeps, and why. Pure functions, no I/O.

``apply_policy`` is restic 0.14's ``ApplyPolicy`` (``internal/restic/snapshot_policy.go``)
re-implemented rule for rule, and ``tests/backend/test_retention.py`` checks it against a real
``restic forget --dry-run --json``. What restic does, and therefore what we do:

* Snapshots are sorted newest first with a *stable* sort, so snapshots with the same time keep
  the order the caller gave them in.
* Every snapshot is offered to every rule, in this order; each rule that keeps it adds one
  reason (restic's exact wording, so the oracle test can compare them):

  1. ``keep_tags``: each element is a tag list; a snapshot that has *all* tags of a list is
     kept with ``"has tags [a, b]"``. Lists are OR'ed (restic ``--keep-tag a,b --keep-tag c``).
     Restic's quirk is kept: the empty tag ``""`` matches a snapshot without any tags.
  2. ``keep_within``: kept when its time is strictly after ``newest - duration``
     (``"within 2m15d"``). Durations count back from the newest snapshot, not from now.
  3. ``keep_last``, ``keep_hourly``, ``keep_daily``, ``keep_weekly``, ``keep_monthly``,
     ``keep_yearly``: one bucket each. A snapshot is kept when its bucket key differs from the
     key of the previous snapshot this rule kept and the rule still has a count left
     (``"last snapshot"``, ``"hourly snapshot"`` …). Keys: hourly ``YYYYMMDDHH``, daily
     ``YYYYMMDD``, weekly ISO ``YYYYWW``, monthly ``YYYYMM``, yearly ``YYYY``; ``last`` gives
     every snapshot its own key. Restic 0.14 does *not* keep the oldest snapshot as a bonus when
     counts are left (0.16 does), and it has no ``-1`` = unlimited (0.15 added it; 0.14 treats
     ``-1`` as "rule off", which with no other rule deletes everything). Snapdeck rejects
     negative counts with ``UsageError``.
  4. ``keep_within_hourly`` … ``keep_within_yearly``: like the buckets, but without a count,
     only for snapshots within the duration (``"daily within 7d"``).

* Bucket keys use wall-clock time. Restic uses the UTC offset each snapshot recorded at backup
  time, which is the local zone of the machine that made it; snapdeck stores UTC, so
  ``apply_policy`` converts every time to ``tz`` (default: the system's local zone, DST and
  all). With ``tz`` equal to the zone restic ran in, the result is identical.
* ``newest - duration`` is Go's ``t.AddDate(-y, -m, -d).Add(-h * time.Hour)`` in that zone:
  months overflow into days (2024-03-31 minus 1m is 2024-03-02), and a wall-clock time that
  falls into a DST gap or overlap is resolved the way Go's ``time.Date`` resolves it (see
  ``Duration.subtract_from``).
* Restic ignores snapshots dated in the future when it looks for the newest one. Pass ``now``
  to get the same; without it the newest snapshot is the reference, whatever its date.
* An empty policy keeps everything with the reason ``"policy is empty"`` (restic's
  ``ApplyPolicy``). The CLI refuses an empty policy before it gets here.

Snapdeck additions:

* ``SnapshotRef.protected_reasons`` (``"HEAD"``, ``"ref main"``, ``"pinned"``): such a snapshot
  is always kept, with those reasons first. It still takes part in the rules exactly as it
  would in restic, so protecting a snapshot never changes the fate of any other snapshot.
* ``Kept.labels`` runs parallel to ``Kept.reasons`` and numbers the counted rules for display:
  ``"daily #3"`` is the third day the daily rule kept, ``"daily within 7d #2"`` likewise.
  ``Kept.reasons`` stays restic's exact wording.
* ``Duration.parse`` is stricter than restic: no negative numbers, no repeated unit, not empty.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import TypeVar

from backend.errors import UsageError

__all__ = [
    "GROUP_FIELDS",
    "POLICY_IS_EMPTY",
    "Duration",
    "GroupKey",
    "Kept",
    "RetentionDecision",
    "RetentionPolicy",
    "SnapshotRef",
    "apply_policy",
    "group_snapshots",
]

POLICY_IS_EMPTY = "policy is empty"

_UNITS = "ymdh"
_EARLIEST = datetime.min.replace(tzinfo=UTC)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duration:
    """A calendar duration in restic's format: ``"1y2m3d4h"`` (years, months, days, hours)."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"duration {f.name} must be a whole number >= 0, not {value!r}")

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``"2y5m7d3h"``: numbers each followed by one of y, m, d, h, in any order.

        Like restic, surrounding whitespace is ignored, units may come in any order and any may
        be left out. Unlike restic, a negative number, a repeated unit or an empty string is an
        error (restic silently lets the last repeat win, and reads "" as "no duration").
        """
        s = text.strip()
        if not s:
            raise UsageError("empty duration: expected something like 2y5m7d3h")
        values: dict[str, int] = {}
        i = 0
        while i < len(s):
            start = i
            while i < len(s) and s[i] in "0123456789":
                i += 1
            if i == start:
                raise UsageError(
                    f"invalid duration {text!r}: expected a number at {s[start:]!r} "
                    "(format: 2y5m7d3h)"
                )
            number = int(s[start:i])
            if i == len(s):
                raise UsageError(f"invalid duration {text!r}: no unit after {number} (y, m, d, h)")
            unit = s[i]
            if unit not in _UNITS:
                raise UsageError(
                    f"invalid duration {text!r}: unknown unit {unit!r} after {number} (y, m, d, h)"
                )
            if unit in values:
                raise UsageError(f"invalid duration {text!r}: unit {unit!r} given twice")
            values[unit] = number
            i += 1
        return cls(
            years=values.get("y", 0),
            months=values.get("m", 0),
            days=values.get("d", 0),
            hours=values.get("h", 0),
        )

    def is_zero(self) -> bool:
        """True when every part is 0; restic treats such a duration as "not given"."""
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        """Restic's spelling: the non-zero parts in y, m, d, h order (``"2m15d"``)."""
        parts = (
            (self.years, "y"),
            (self.months, "m"),
            (self.days, "d"),
            (self.hours, "h"),
        )
        return "".join(f"{n}{unit}" for n, unit in parts if n)

    def subtract_from(self, dt: datetime) -> datetime:
        """``dt`` minus this duration, as Go's ``dt.AddDate(-y, -m, -d).Add(-h * time.Hour)``.

        The calendar part works on ``dt``'s wall clock in ``dt.tzinfo`` and normalises overflow
        like Go (2024-03-31 minus 1m is 2024-03-02); the hours are then subtracted from the
        absolute time. A result before year 1 is clamped to ``datetime.min`` in UTC.
        """
        if dt.tzinfo is None:
            raise ValueError("subtract_from needs a timezone-aware datetime")
        zone = dt.tzinfo
        cutoff = _subtract(self, dt.replace(tzinfo=None), _offset_in(zone))
        if cutoff == _EARLIEST:
            return cutoff
        try:
            return cutoff.astimezone(zone)
        except (OverflowError, ValueError):
            return cutoff


def _offset_in(zone: tzinfo | None) -> Callable[[datetime], timedelta]:
    """The UTC offset of ``zone`` (None: the system's local zone) at an absolute instant."""

    def offset(instant: datetime) -> timedelta:
        off = instant.astimezone(zone).utcoffset()
        return off if off is not None else timedelta(0)

    return offset


def _go_add_date(wall: datetime, years: int, months: int, days: int) -> datetime:
    """Go's ``AddDate`` on a naive wall-clock time: months carry into years, days overflow."""
    month0 = wall.month - 1 + months
    year = wall.year + years + month0 // 12
    first = date(year, month0 % 12 + 1, 1)
    return datetime.combine(first + timedelta(days=wall.day - 1 + days), wall.time())


def _go_resolve(wall: datetime, offset: Callable[[datetime], timedelta]) -> datetime:
    """The instant Go's ``time.Date`` picks for a wall-clock time (UTC-aware result).

    Go looks up the zone offset at the wall clock read as if it were UTC, and when the
    resulting instant lies outside that zone period, it uses the offset in force at that
    instant instead. Both steps together are ``offset(wall - offset(wall))``. In a DST overlap
    this picks the later instant in Europe (2024-10-27 02:30 Berlin is 02:30 CET), in a gap
    it moves forward (2024-03-31 02:30 Berlin is 03:30 CEST).
    """
    as_utc = wall.replace(tzinfo=UTC)
    return as_utc - offset(as_utc - offset(as_utc))


def _subtract(
    duration: Duration, wall: datetime, offset: Callable[[datetime], timedelta]
) -> datetime:
    """``wall`` (naive, in the zone of ``offset``) minus ``duration``, as a UTC instant."""
    try:
        moved = _go_add_date(wall, -duration.years, -duration.months, -duration.days)
        return _go_resolve(moved, offset) - timedelta(hours=duration.hours)
    except (OverflowError, ValueError):
        return _EARLIEST


# --------------------------------------------------------------------------------------------
# Policy and results
# --------------------------------------------------------------------------------------------

_COUNTS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
_WITHINS = (
    "keep_within",
    "keep_within_hourly",
    "keep_within_daily",
    "keep_within_weekly",
    "keep_within_monthly",
    "keep_within_yearly",
)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Which snapshots to keep; restic's ``--keep-*`` options. A count of 0 turns a rule off."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration | None = None
    keep_within_hourly: Duration | None = None
    keep_within_daily: Duration | None = None
    keep_within_weekly: Duration | None = None
    keep_within_monthly: Duration | None = None
    keep_within_yearly: Duration | None = None
    keep_tags: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(
                    f"{name.replace('_', '-')} must be a whole number >= 0, not {value!r}"
                )
        for name in _WITHINS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Duration):
                raise UsageError(f"{name.replace('_', '-')} must be a Duration, not {value!r}")
        if isinstance(self.keep_tags, str) or any(isinstance(t, str) for t in self.keep_tags):
            raise UsageError("keep_tags is a sequence of tag lists, e.g. (('a', 'b'), ('c',))")
        object.__setattr__(self, "keep_tags", tuple(tuple(t) for t in self.keep_tags))

    def is_empty(self) -> bool:
        """True when no rule is set (zero counts, zero or missing durations, no tag lists)."""
        return (
            not any(getattr(self, name) for name in _COUNTS)
            and all(_duration_off(getattr(self, name)) for name in _WITHINS)
            and not self.keep_tags
        )

    def describe(self) -> str:
        """One line in restic 0.14's words (its "Applying Policy:" line)."""
        counted = [
            f"{n} {word}"
            for n, word in (
                (self.keep_last, "latest"),
                (self.keep_hourly, "hourly"),
                (self.keep_daily, "daily"),
                (self.keep_weekly, "weekly"),
                (self.keep_monthly, "monthly"),
                (self.keep_yearly, "yearly"),
            )
            if n > 0
        ]
        within = [
            f"{word} snapshots within {d}"
            for d, word in (
                (self.keep_within_hourly, "hourly"),
                (self.keep_within_daily, "daily"),
                (self.keep_within_weekly, "weekly"),
                (self.keep_within_monthly, "monthly"),
                (self.keep_within_yearly, "yearly"),
            )
            if d is not None and not d.is_zero()
        ]
        text = f"{', '.join(counted)} snapshots" if counted else ""
        if within:
            text = ", ".join([text, *within]) if text else ", ".join(within)
        if self.keep_tags:
            lists = " ".join(_tag_list(t) for t in self.keep_tags)
            text += (" and " if text else "") + f"all snapshots with tags [{lists}]"
        if not _duration_off(self.keep_within):
            text += (" and " if text else "") + (
                f"all snapshots within {self.keep_within} of the newest"
            )
        return "keep " + text


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """What the policy needs to know about one snapshot."""

    id: str
    time: datetime  # timezone-aware
    tags: tuple[str, ...] = ()
    protected_reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"snapshot {self.id}: time must be timezone-aware")
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "protected_reasons", tuple(self.protected_reasons))


@dataclass(frozen=True, slots=True)
class Kept:
    """A snapshot the policy keeps and every reason it keeps it.

    ``reasons`` is restic's wording (``"daily snapshot"``), protected reasons first;
    ``labels`` says the same for display, with counted rules numbered (``"daily #3"``).
    """

    snapshot: SnapshotRef
    reasons: tuple[str, ...]
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.labels:
            object.__setattr__(self, "labels", self.reasons)


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """The plan: snapshots kept (with reasons) and removed, each newest first."""

    keep: tuple[Kept, ...]
    remove: tuple[SnapshotRef, ...]

    def keep_ids(self) -> frozenset[str]:
        return frozenset(k.snapshot.id for k in self.keep)

    def remove_ids(self) -> frozenset[str]:
        return frozenset(s.id for s in self.remove)


def _duration_off(d: Duration | None) -> bool:
    return d is None or d.is_zero()


def _tag_list(tags: Sequence[str]) -> str:
    """Go's ``fmt`` spelling of a restic TagList: ``[a, b]``."""
    return "[" + ", ".join(tags) + "]"


def _has_tags(snapshot_tags: Sequence[str], wanted: Sequence[str]) -> bool:
    """Restic's ``Snapshot.HasTags``: all of ``wanted``; ``""`` matches an untagged snapshot."""
    for tag in wanted:
        if tag == "" and not snapshot_tags:
            return True
        if tag not in snapshot_tags:
            return False
    return True


# --------------------------------------------------------------------------------------------
# The algorithm
# --------------------------------------------------------------------------------------------

_BucketFn = Callable[[datetime, int], int]


def _hourly(t: datetime, _nr: int) -> int:
    return t.year * 1_000_000 + t.month * 10_000 + t.day * 100 + t.hour


def _daily(t: datetime, _nr: int) -> int:
    return t.year * 10_000 + t.month * 100 + t.day


def _weekly(t: datetime, _nr: int) -> int:
    iso = t.isocalendar()
    return iso.year * 100 + iso.week


def _monthly(t: datetime, _nr: int) -> int:
    return t.year * 100 + t.month


def _yearly(t: datetime, _nr: int) -> int:
    return t.year


def _every(_t: datetime, nr: int) -> int:
    return nr


@dataclass(slots=True)
class _Bucket:
    reason: str
    label: str
    key: _BucketFn
    count: int = 0  # counted rules: how many more it may keep
    cutoff: datetime | None = None  # within rules: only snapshots after this instant
    last: int = -1
    kept: int = 0


def apply_policy(
    snapshots: Sequence[SnapshotRef],
    policy: RetentionPolicy,
    *,
    tz: tzinfo | None = None,
    now: datetime | None = None,
) -> RetentionDecision:
    """Decide which of ``snapshots`` (one group) to keep, exactly as restic 0.14 would.

    ``tz`` is the zone whose wall clock defines hours, days, weeks, months and years (None:
    the system's local zone). ``now``, when given, makes snapshots dated at or after it count
    as "in the future" and be ignored when finding the newest snapshot, as restic does.
    """
    ordered = sorted(snapshots, key=lambda s: s.time, reverse=True)  # stable, like restic
    if policy.is_empty():
        return RetentionDecision(
            keep=tuple(Kept(s, (*s.protected_reasons, POLICY_IS_EMPTY)) for s in ordered),
            remove=(),
        )
    if not ordered:
        return RetentionDecision(keep=(), remove=())

    offset = _offset_in(tz)

    def wall(instant: datetime) -> datetime:
        return instant.astimezone(tz).replace(tzinfo=None)  # tz None: the system zone

    newest: datetime | None = None
    for s in ordered:
        if (now is None or s.time < now) and (newest is None or s.time > newest):
            newest = s.time

    def cutoff(d: Duration) -> datetime:
        # No snapshot before `now`: restic's "newest" is Go's zero time, so everything is within.
        return _EARLIEST if newest is None else _subtract(d, wall(newest), offset)

    counted = [
        _Bucket("last snapshot", "last", _every, count=policy.keep_last),
        _Bucket("hourly snapshot", "hourly", _hourly, count=policy.keep_hourly),
        _Bucket("daily snapshot", "daily", _daily, count=policy.keep_daily),
        _Bucket("weekly snapshot", "weekly", _weekly, count=policy.keep_weekly),
        _Bucket("monthly snapshot", "monthly", _monthly, count=policy.keep_monthly),
        _Bucket("yearly snapshot", "yearly", _yearly, count=policy.keep_yearly),
    ]
    within_buckets = [
        _Bucket(f"{word} within {d}", f"{word} within {d}", key, cutoff=cutoff(d))
        for d, word, key in (
            (policy.keep_within_hourly, "hourly", _hourly),
            (policy.keep_within_daily, "daily", _daily),
            (policy.keep_within_weekly, "weekly", _weekly),
            (policy.keep_within_monthly, "monthly", _monthly),
            (policy.keep_within_yearly, "yearly", _yearly),
        )
        if d is not None and not d.is_zero()
    ]
    within = policy.keep_within
    within_cutoff = None if within is None or within.is_zero() else cutoff(within)

    keep: list[Kept] = []
    remove: list[SnapshotRef] = []
    for nr, snap in enumerate(ordered):
        matched = [(reason, reason) for reason in snap.protected_reasons]  # (reason, label)

        for tags in policy.keep_tags:
            if _has_tags(snap.tags, tags):
                matched.append((f"has tags {_tag_list(tags)}",) * 2)

        if within_cutoff is not None and snap.time > within_cutoff:
            matched.append((f"within {within}",) * 2)

        local = wall(snap.time)
        for b in counted:
            if b.count > 0:
                value = b.key(local, nr)
                if value != b.last:
                    b.last = value
                    b.count -= 1
                    b.kept += 1
                    matched.append((b.reason, f"{b.label} #{b.kept}"))

        for b in within_buckets:
            assert b.cutoff is not None
            if snap.time > b.cutoff:
                value = b.key(local, nr)
                if value != b.last:
                    b.last = value
                    b.kept += 1
                    matched.append((b.reason, f"{b.label} #{b.kept}"))

        if matched:
            keep.append(
                Kept(snap, tuple(r for r, _ in matched), tuple(label for _, label in matched))
            )
        else:
            remove.append(snap)

    return RetentionDecision(keep=tuple(keep), remove=tuple(remove))


# --------------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------------

GROUP_FIELDS = frozenset({"source", "host", "tags"})


@dataclass(frozen=True, slots=True)
class GroupKey:
    """What a group of snapshots has in common; fields not grouped by are None."""

    source: str | None = None
    host: str | None = None
    tags: tuple[str, ...] | None = None


def group_snapshots(
    items: Iterable[T],
    keys: Collection[str],
    key_fn: Callable[[T], GroupKey],
) -> dict[GroupKey, list[T]]:
    """Split ``items`` into groups, like restic's ``--group-by``; the policy applies per group.

    ``key_fn`` returns the full ``GroupKey`` of an item; only the fields named in ``keys``
    (a subset of ``source``, ``host``, ``tags``) are kept, and tags are compared sorted, so
    ``("b", "a")`` and ``("a", "b")`` share a group. No keys: one group. Groups come out in
    order of first appearance, and items keep their order inside a group.
    """
    wanted = set(keys)
    unknown = wanted - GROUP_FIELDS
    if unknown:
        raise UsageError(
            f"cannot group by {', '.join(sorted(unknown))}: use source, host and/or tags"
        )
    groups: dict[GroupKey, list[T]] = {}
    for item in items:
        full = key_fn(item)
        key = GroupKey(
            source=full.source if "source" in wanted else None,
            host=full.host if "host" in wanted else None,
            tags=tuple(sorted(full.tags or ())) if "tags" in wanted else None,
        )
        groups.setdefault(key, []).append(item)
    return groups
