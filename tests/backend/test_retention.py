"""The retention policy: table-driven unit tests, properties, and restic 0.14 as the oracle."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.errors import UsageError
from backend.retention import (
    POLICY_IS_EMPTY,
    Duration,
    GroupKey,
    Kept,
    RetentionDecision,
    RetentionPolicy,
    SnapshotRef,
    apply_policy,
    group_snapshots,
)

try:
    BERLIN: tzinfo | None = ZoneInfo("Europe/Berlin")
except ZoneInfoNotFoundError:  # pragma: no cover - no tz database on this machine
    BERLIN = None

needs_berlin = pytest.mark.skipif(BERLIN is None, reason="no tz database (Europe/Berlin)")


def at(text: str, tz: tzinfo = UTC) -> datetime:
    """``"2024-01-02 03:04"`` (or with seconds) as an aware datetime in ``tz``."""
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def refs(*specs: str, tz: tzinfo = UTC) -> list[SnapshotRef]:
    """Snapshots named by their time; ``"2024-01-02 03:04 a,b"`` adds tags a and b."""
    out = []
    for spec in specs:
        date_part, time_part, *rest = spec.split(" ")
        tags = tuple(rest[0].split(",")) if rest else ()
        stamp = f"{date_part} {time_part}"
        out.append(SnapshotRef(id=stamp, time=at(stamp, tz), tags=tags))
    return out


def kept(decision: RetentionDecision) -> list[str]:
    return [k.snapshot.id for k in decision.keep]


def reasons(decision: RetentionDecision) -> dict[str, tuple[str, ...]]:
    return {k.snapshot.id: k.reasons for k in decision.keep}


# --------------------------------------------------------------------------------------------
# Duration
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1y2m3d4h", Duration(1, 2, 3, 4)),
        ("2y5m7d3h", Duration(2, 5, 7, 3)),
        ("7d", Duration(days=7)),
        ("2m15d", Duration(months=2, days=15)),
        ("36h", Duration(hours=36)),
        ("1h2y", Duration(years=2, hours=1)),  # any order, like restic
        (" 2d ", Duration(days=2)),  # surrounding space ignored, like restic
        ("0d", Duration()),
        ("0010d", Duration(days=10)),
    ],
)
def test_duration_parse(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "  ", "5", "d", "1x", "1d2", "-1d", "1d1d", "1 d", "1.5d", "1D", "y1", "1d-2h", "٣d"],
)
def test_duration_parse_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        Duration.parse(text)


def test_duration_rejects_negative_parts() -> None:
    with pytest.raises(UsageError):
        Duration(days=-1)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (Duration(1, 2, 3, 4), "1y2m3d4h"),
        (Duration(months=2, days=15), "2m15d"),
        (Duration(years=2, hours=1), "2y1h"),
        (Duration(), ""),
    ],
)
def test_duration_str_is_restic_spelling(duration: Duration, text: str) -> None:
    assert str(duration) == text


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # Go normalises overflowing days: 2024-02-31 is 2024-03-02.
        ("2024-03-31 12:00", "1m", "2024-03-02 12:00"),
        ("2023-03-31 12:00", "1m", "2023-03-03 12:00"),
        ("2024-02-29 08:00", "1y", "2023-03-01 08:00"),
        ("2024-01-15 00:00", "1m", "2023-12-15 00:00"),
        ("2024-01-01 03:00", "4h", "2023-12-31 23:00"),
        ("2024-05-31 10:00", "2m15d", "2024-03-16 10:00"),  # 2024-03-31, then minus 15 days
        ("2024-03-10 10:00", "1y2m3d4h", "2023-01-07 06:00"),
        ("2024-01-01 00:00", "2025y", "0001-01-01 00:00"),  # before year 1: clamped
    ],
)
def test_subtract_from_matches_go_add_date(start: str, duration: str, expected: str) -> None:
    got = Duration.parse(duration).subtract_from(at(start))
    assert got == at(expected) or (expected.startswith("0001") and got.year == 1)


@needs_berlin
@pytest.mark.parametrize(
    ("start", "duration", "expected_utc"),
    [
        # The calendar part is wall-clock: one day back across spring-forward is 23 hours.
        ("2024-03-31 12:00", "1d", "2024-03-30 11:00"),
        # ...but hours are absolute: 24h back is 24 hours.
        ("2024-03-31 12:00", "24h", "2024-03-30 10:00"),
        # Landing in the spring gap (02:30 does not exist): Go moves forward to 03:30 CEST.
        ("2024-04-01 02:30", "1d", "2024-03-31 01:30"),
        # Landing in the autumn overlap (02:30 twice): Go picks the later one, 02:30 CET.
        ("2024-10-28 02:30", "1d", "2024-10-27 01:30"),
    ],
)
def test_subtract_from_in_a_dst_zone(start: str, duration: str, expected_utc: str) -> None:
    assert BERLIN is not None
    got = Duration.parse(duration).subtract_from(at(start, BERLIN))
    # (In the repeated hour, == across zones is always False (PEP 495): compare in UTC.)
    assert got.astimezone(UTC) == at(expected_utc)
    assert got.tzinfo is BERLIN


# --------------------------------------------------------------------------------------------
# Policy values
# --------------------------------------------------------------------------------------------


def test_policy_is_empty() -> None:
    assert RetentionPolicy().is_empty()
    assert RetentionPolicy(keep_within=Duration()).is_empty()  # a zero duration is "not given"
    assert not RetentionPolicy(keep_last=1).is_empty()
    assert not RetentionPolicy(keep_within_yearly=Duration(years=1)).is_empty()
    assert not RetentionPolicy(keep_tags=((),)).is_empty()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_last": -1},  # restic 0.14 reads -1 as "off" and may delete everything
        {"keep_daily": -5},
        {"keep_hourly": 1.5},
        {"keep_weekly": True},
        {"keep_within": "2d"},
        {"keep_tags": "a"},
        {"keep_tags": ("a", "b")},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        RetentionPolicy(**kwargs)


def test_policy_normalises_tag_lists_to_tuples() -> None:
    policy = RetentionPolicy(keep_tags=[["a", "b"], ["c"]])  # type: ignore[arg-type]
    assert policy.keep_tags == (("a", "b"), ("c",))
    hash(policy)


@pytest.mark.parametrize(
    ("policy", "text"),
    [
        # Each line as restic 0.14 printed it after "Applying Policy: " for the same flags.
        (
            RetentionPolicy(
                keep_last=1,
                keep_hourly=2,
                keep_daily=3,
                keep_weekly=4,
                keep_monthly=5,
                keep_yearly=6,
                keep_within=Duration.parse("1y2m3d4h"),
                keep_within_hourly=Duration.parse("1h"),
                keep_within_daily=Duration.parse("2d"),
                keep_within_weekly=Duration.parse("3m"),
                keep_within_monthly=Duration.parse("1y"),
                keep_within_yearly=Duration.parse("9y"),
                keep_tags=(("a", "b"), ("c",)),
            ),
            "keep 1 latest, 2 hourly, 3 daily, 4 weekly, 5 monthly, 6 yearly snapshots, "
            "hourly snapshots within 1h, daily snapshots within 2d, weekly snapshots within 3m, "
            "monthly snapshots within 1y, yearly snapshots within 9y and all snapshots with "
            "tags [[a, b] [c]] and all snapshots within 1y2m3d4h of the newest",
        ),
        (RetentionPolicy(keep_within_daily=Duration(days=2)), "keep daily snapshots within 2d"),
        (RetentionPolicy(keep_tags=(("a",),)), "keep all snapshots with tags [[a]]"),
        (
            RetentionPolicy(keep_within=Duration(days=2)),
            "keep all snapshots within 2d of the newest",
        ),
        (
            RetentionPolicy(keep_last=2, keep_within=Duration(days=2)),
            "keep 2 latest snapshots and all snapshots within 2d of the newest",
        ),
    ],
)
def test_describe_matches_restic(policy: RetentionPolicy, text: str) -> None:
    assert policy.describe() == text


def test_snapshot_time_must_be_aware() -> None:
    with pytest.raises(ValueError):
        SnapshotRef(id="x", time=datetime(2024, 1, 1))


# --------------------------------------------------------------------------------------------
# The algorithm, table-driven
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    snapshots: tuple[str, ...]
    policy: RetentionPolicy
    keep: dict[str, tuple[str, ...]]  # id -> reasons, newest first


D = Duration.parse

CASES = [
    Case(
        "keep-last",
        ("2024-01-01 10:00", "2024-01-01 11:00", "2024-01-02 10:00", "2024-01-03 10:00"),
        RetentionPolicy(keep_last=3),
        {
            "2024-01-03 10:00": ("last snapshot",),
            "2024-01-02 10:00": ("last snapshot",),
            "2024-01-01 11:00": ("last snapshot",),
        },
    ),
    Case(
        "keep-last more than there are: no bonus",
        ("2024-01-01 10:00", "2024-01-02 10:00"),
        RetentionPolicy(keep_last=5),
        {"2024-01-02 10:00": ("last snapshot",), "2024-01-01 10:00": ("last snapshot",)},
    ),
    Case(
        "hourly: newest of each hour",
        ("2024-01-01 10:05", "2024-01-01 10:40", "2024-01-01 11:10", "2024-01-01 12:00"),
        RetentionPolicy(keep_hourly=2),
        {"2024-01-01 12:00": ("hourly snapshot",), "2024-01-01 11:10": ("hourly snapshot",)},
    ),
    Case(
        "daily: newest of each day, older days beyond the count go",
        (
            "2024-01-01 09:00",
            "2024-01-01 18:00",
            "2024-01-02 08:00",
            "2024-01-02 23:59",
            "2024-01-05 12:00",
        ),
        RetentionPolicy(keep_daily=2),
        {"2024-01-05 12:00": ("daily snapshot",), "2024-01-02 23:59": ("daily snapshot",)},
    ),
    Case(
        "daily: the oldest snapshot is not kept as a bonus (restic 0.14)",
        ("2024-01-01 09:00", "2024-01-01 18:00"),
        RetentionPolicy(keep_daily=10),
        {"2024-01-01 18:00": ("daily snapshot",)},
    ),
    Case(
        "weekly: ISO weeks across the year boundary",
        (
            "2020-12-28 12:00",  # 2020-W53 (Monday)
            "2021-01-03 12:00",  # 2020-W53 (Sunday)
            "2021-01-04 12:00",  # 2021-W01
            "2024-12-29 12:00",  # 2024-W52 (Sunday)
            "2024-12-30 12:00",  # 2025-W01 (Monday)
            "2025-01-02 12:00",  # 2025-W01
        ),
        RetentionPolicy(keep_weekly=4),
        {
            "2025-01-02 12:00": ("weekly snapshot",),
            "2024-12-29 12:00": ("weekly snapshot",),
            "2021-01-04 12:00": ("weekly snapshot",),
            "2021-01-03 12:00": ("weekly snapshot",),
        },
    ),
    Case(
        "monthly and yearly",
        (
            "2022-06-01 00:00",
            "2022-12-31 23:00",
            "2023-01-10 00:00",
            "2023-01-20 00:00",
            "2023-02-01 00:00",
        ),
        RetentionPolicy(keep_monthly=2, keep_yearly=2),
        {
            "2023-02-01 00:00": ("monthly snapshot", "yearly snapshot"),
            "2023-01-20 00:00": ("monthly snapshot",),
            "2022-12-31 23:00": ("yearly snapshot",),
        },
    ),
    Case(
        "within: relative to the newest, strictly after the cutoff",
        ("2020-01-01 00:00", "2024-01-08 12:00", "2024-01-08 12:01", "2024-01-10 12:00"),
        RetentionPolicy(keep_within=D("2d")),
        {"2024-01-10 12:00": ("within 2d",), "2024-01-08 12:01": ("within 2d",)},
    ),
    Case(
        "within: month overflow like Go (2024-03-31 minus 1m is 2024-03-02)",
        ("2024-03-01 13:00", "2024-03-02 12:00", "2024-03-02 13:00", "2024-03-31 12:00"),
        RetentionPolicy(keep_within=D("1m")),
        {"2024-03-31 12:00": ("within 1m",), "2024-03-02 13:00": ("within 1m",)},
    ),
    Case(
        "within-daily: one per day inside the window, no count",
        (
            "2024-01-01 10:00",
            "2024-01-04 10:00",
            "2024-01-04 20:00",
            "2024-01-07 09:00",
            "2024-01-07 10:00",
            "2024-01-08 10:00",
        ),
        RetentionPolicy(keep_within_daily=D("4d")),
        {
            "2024-01-08 10:00": ("daily within 4d",),
            "2024-01-07 10:00": ("daily within 4d",),
            "2024-01-04 20:00": ("daily within 4d",),
        },
    ),
    Case(
        "within-hourly and within-weekly, with a counted rule",
        ("2024-01-01 10:00", "2024-01-09 10:00", "2024-01-10 09:30", "2024-01-10 10:15"),
        RetentionPolicy(keep_last=1, keep_within_hourly=D("1d"), keep_within_weekly=D("1m")),
        {
            "2024-01-10 10:15": ("last snapshot", "hourly within 1d", "weekly within 1m"),
            "2024-01-10 09:30": ("hourly within 1d",),
            "2024-01-01 10:00": ("weekly within 1m",),
        },
    ),
    Case(
        "keep-tag: all tags of a list, lists OR'ed; '' matches untagged",
        (
            "2024-01-01 10:00 a",
            "2024-01-02 10:00 a,b",
            "2024-01-03 10:00 b,c,a",
            "2024-01-04 10:00",
            "2024-01-05 10:00 c",
        ),
        RetentionPolicy(keep_tags=(("a", "b"), ("c",), ("",))),
        {
            "2024-01-05 10:00 c": ("has tags [c]",),
            "2024-01-04 10:00": ("has tags []",),
            "2024-01-03 10:00 b,c,a": ("has tags [a, b]", "has tags [c]"),
            "2024-01-02 10:00 a,b": ("has tags [a, b]",),
        },
    ),
    Case(
        "reasons come in restic's order: tags, within, buckets, within-buckets",
        ("2024-01-01 10:00 x", "2024-01-02 10:00 x"),
        RetentionPolicy(
            keep_tags=(("x",),),
            keep_within=D("1d"),
            keep_daily=1,
            keep_last=1,
            keep_within_daily=D("1d"),
        ),
        {
            "2024-01-02 10:00 x": (
                "has tags [x]",
                "within 1d",
                "last snapshot",
                "daily snapshot",
                "daily within 1d",
            ),
            "2024-01-01 10:00 x": ("has tags [x]",),
        },
    ),
    Case(
        "empty policy keeps everything",
        ("2024-01-01 10:00", "2024-01-02 10:00"),
        RetentionPolicy(),
        {"2024-01-02 10:00": (POLICY_IS_EMPTY,), "2024-01-01 10:00": (POLICY_IS_EMPTY,)},
    ),
]


def _ids_with_tags(specs: Sequence[str]) -> list[SnapshotRef]:
    """Like ``refs`` but the id is the whole spec, so tagged cases read naturally."""
    out = []
    for ref, spec in zip(refs(*specs), specs, strict=True):
        out.append(SnapshotRef(id=spec, time=ref.time, tags=ref.tags))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_policy_table(case: Case) -> None:
    shuffled = _ids_with_tags(case.snapshots)
    random.Random(0).shuffle(shuffled)  # the input order must not matter
    decision = apply_policy(shuffled, case.policy, tz=UTC)
    assert reasons(decision) == case.keep
    assert kept(decision) == list(case.keep)  # newest first
    removed = [s.id for s in decision.remove]
    assert sorted(removed + kept(decision)) == sorted(case.snapshots)
    assert [s.time for s in decision.remove] == sorted(
        (s.time for s in decision.remove), reverse=True
    )


def test_no_snapshots() -> None:
    assert apply_policy([], RetentionPolicy(keep_last=1), tz=UTC) == RetentionDecision((), ())


def test_labels_number_the_counted_rules() -> None:
    snaps = refs("2024-01-01 10:00", "2024-01-02 10:00", "2024-01-03 10:00")
    policy = RetentionPolicy(keep_daily=3, keep_within_daily=D("1d"), keep_within=D("5d"))
    decision = apply_policy(snaps, policy, tz=UTC)
    assert [k.labels for k in decision.keep] == [
        ("within 5d", "daily #1", "daily within 1d #1"),
        ("within 5d", "daily #2"),
        ("within 5d", "daily #3"),
    ]
    assert decision.keep[1].reasons == ("within 5d", "daily snapshot")
    assert Kept(snaps[0], ("x",)).labels == ("x",)


def test_ties_keep_the_input_order() -> None:
    t = at("2024-01-01 10:00")
    a, b, c = (SnapshotRef(id=i, time=t) for i in "abc")
    old = SnapshotRef(id="old", time=at("2023-01-01 10:00"))
    decision = apply_policy([b, old, a, c], RetentionPolicy(keep_last=2), tz=UTC)
    assert kept(decision) == ["b", "a"]
    assert [s.id for s in decision.remove] == ["c", "old"]


def test_protected_snapshots_are_kept_first_and_change_nothing_else() -> None:
    snaps = refs("2023-01-01 10:00", "2024-01-01 10:00", "2024-01-02 10:00", "2024-01-03 10:00")
    policy = RetentionPolicy(keep_last=2)
    plain = apply_policy(snaps, policy, tz=UTC)
    protected = [
        SnapshotRef(s.id, s.time, s.tags, ("HEAD",) if s.id == "2024-01-03 10:00" else ())
        for s in snaps
    ]
    protected[0] = SnapshotRef(protected[0].id, protected[0].time, (), ("ref main", "pinned"))
    decision = apply_policy(protected, policy, tz=UTC)
    assert reasons(decision) == {
        "2024-01-03 10:00": ("HEAD", "last snapshot"),
        "2024-01-02 10:00": ("last snapshot",),
        "2023-01-01 10:00": ("ref main", "pinned"),
    }
    assert kept(decision) == ["2024-01-03 10:00", "2024-01-02 10:00", "2023-01-01 10:00"]
    assert plain.keep_ids() | {"2023-01-01 10:00"} == decision.keep_ids()
    assert [s.id for s in decision.remove] == ["2024-01-01 10:00"]


def test_protected_with_empty_policy() -> None:
    snap = SnapshotRef("x", at("2024-01-01 10:00"), (), ("HEAD",))
    decision = apply_policy([snap], RetentionPolicy(), tz=UTC)
    assert decision.keep == (Kept(snap, ("HEAD", POLICY_IS_EMPTY)),)


@needs_berlin
def test_buckets_use_the_given_zone() -> None:
    # 22:30 and 23:30 UTC on Jan 1 are 23:30 on Jan 1 and 00:30 on Jan 2 in Berlin.
    snaps = refs("2024-01-01 22:30", "2024-01-01 23:30")
    policy = RetentionPolicy(keep_daily=5)
    assert kept(apply_policy(snaps, policy, tz=UTC)) == ["2024-01-01 23:30"]
    assert kept(apply_policy(snaps, policy, tz=BERLIN)) == [
        "2024-01-01 23:30",
        "2024-01-01 22:30",
    ]


@needs_berlin
def test_within_cutoff_in_the_autumn_overlap_follows_go() -> None:
    # Newest 2024-10-28 02:30 CET; 1d back is wall 2024-10-27 02:30, which happens twice.
    # Go takes the later one (02:30 CET = 01:30 UTC), so 02:00 CET (01:00 UTC) is outside.
    assert BERLIN is not None
    newest = SnapshotRef("newest", at("2024-10-28 02:30", BERLIN))
    inside = SnapshotRef("inside", at("2024-10-27 01:40"))  # 02:40 CET
    outside = SnapshotRef("outside", at("2024-10-27 01:00"))  # 02:00 CET
    decision = apply_policy(
        [newest, inside, outside], RetentionPolicy(keep_within=D("1d")), tz=BERLIN
    )
    assert kept(decision) == ["newest", "inside"]


@needs_berlin
@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset is POSIX-only")
def test_default_zone_is_the_system_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BERLIN is not None
    snaps = [
        SnapshotRef(stamp, at(stamp, BERLIN))
        for stamp in (
            "2024-03-30 23:30", "2024-03-31 01:30", "2024-03-31 03:30", "2024-03-31 23:59",
            "2024-10-26 15:30", "2024-10-27 01:45", "2024-10-27 02:40", "2024-10-27 23:30",
            "2024-10-28 02:30",
        )
    ]  # fmt: skip
    policy = RetentionPolicy(
        keep_hourly=3, keep_daily=3, keep_within=D("1d"), keep_within_hourly=D("1d12h")
    )
    expected = apply_policy(snaps, policy, tz=BERLIN)
    assert expected != apply_policy(snaps, policy, tz=UTC)  # the zone matters here
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert apply_policy(snaps, policy) == expected
    finally:
        monkeypatch.undo()
        time.tzset()


def test_future_snapshots_are_ignored_for_within_when_now_is_given() -> None:
    snaps = refs("2024-01-01 10:00", "2024-01-05 10:00", "2030-01-01 10:00")
    policy = RetentionPolicy(keep_within=D("1d"))
    assert kept(apply_policy(snaps, policy, tz=UTC)) == ["2030-01-01 10:00"]
    now = at("2024-06-01 00:00")
    assert kept(apply_policy(snaps, policy, tz=UTC, now=now)) == [
        "2030-01-01 10:00",
        "2024-01-05 10:00",
    ]
    # Nothing before `now`: restic's reference is Go's zero time, so everything is within.
    assert len(apply_policy(snaps, policy, tz=UTC, now=at("2000-01-01 00:00")).keep) == 3


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC)
)
_counts = st.integers(min_value=0, max_value=4)
_durations = st.none() | st.builds(
    Duration,
    years=st.integers(0, 1),
    months=st.integers(0, 3),
    days=st.integers(0, 10),
    hours=st.integers(0, 30),
)
_policies = st.builds(
    RetentionPolicy,
    keep_last=_counts,
    keep_hourly=_counts,
    keep_daily=_counts,
    keep_weekly=_counts,
    keep_monthly=_counts,
    keep_yearly=_counts,
    keep_within=_durations,
    keep_within_daily=_durations,
    keep_within_monthly=_durations,
    keep_tags=st.lists(st.lists(st.sampled_from("abc"), max_size=2).map(tuple), max_size=2).map(
        tuple
    ),
)
_snapshot_lists = st.lists(
    st.tuples(_times, st.lists(st.sampled_from("abc"), max_size=2, unique=True), st.booleans()),
    max_size=25,
).map(
    lambda rows: [
        SnapshotRef(f"s{i}", t, tuple(tags), ("pinned",) if pin else ())
        for i, (t, tags, pin) in enumerate(rows)
    ]
)


@settings(max_examples=200, deadline=None)
@given(_snapshot_lists, _policies)
def test_properties(snaps: list[SnapshotRef], policy: RetentionPolicy) -> None:
    decision = apply_policy(snaps, policy, tz=UTC)
    ids = [s.id for s in snaps]
    # A partition of the input.
    assert sorted(decision.keep_ids() | decision.remove_ids()) == sorted(ids)
    assert not decision.keep_ids() & decision.remove_ids()
    # Every kept snapshot has a reason; protected ones first.
    for k in decision.keep:
        assert k.reasons
        assert len(k.labels) == len(k.reasons)
        assert k.reasons[: len(k.snapshot.protected_reasons)] == k.snapshot.protected_reasons
    # Protection changes nothing for the others.
    bare = apply_policy([SnapshotRef(s.id, s.time, s.tags) for s in snaps], policy, tz=UTC)
    pinned = {s.id for s in snaps if s.protected_reasons}
    assert decision.keep_ids() == bare.keep_ids() | pinned
    # A non-empty policy keeps the newest snapshot whenever a counted rule is set.
    if snaps and any((policy.keep_last, policy.keep_daily, policy.keep_yearly)):
        newest = max(snaps, key=lambda s: s.time)
        assert any(k.snapshot.time == newest.time for k in decision.keep)
    # Counted rules keep at most their count.
    for reason, count in (
        ("last snapshot", policy.keep_last),
        ("daily snapshot", policy.keep_daily),
    ):
        assert sum(reason in k.reasons for k in decision.keep) <= count


# --------------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snap:
    name: str
    source: str
    host: str
    tags: tuple[str, ...]


def _key(s: Snap) -> GroupKey:
    return GroupKey(source=s.source, host=s.host, tags=s.tags)


SNAPS = [
    Snap("1", "/home", "a", ("x", "y")),
    Snap("2", "/etc", "a", ("y", "x")),
    Snap("3", "/home", "b", ()),
    Snap("4", "/home", "a", ("x",)),
]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (set(), {GroupKey(): ["1", "2", "3", "4"]}),
        (
            {"source"},
            {GroupKey(source="/home"): ["1", "3", "4"], GroupKey(source="/etc"): ["2"]},
        ),
        (
            {"host", "tags"},
            {
                GroupKey(host="a", tags=("x", "y")): ["1", "2"],
                GroupKey(host="b", tags=()): ["3"],
                GroupKey(host="a", tags=("x",)): ["4"],
            },
        ),
        (
            {"source", "host", "tags"},
            {
                GroupKey("/home", "a", ("x", "y")): ["1"],
                GroupKey("/etc", "a", ("x", "y")): ["2"],
                GroupKey("/home", "b", ()): ["3"],
                GroupKey("/home", "a", ("x",)): ["4"],
            },
        ),
    ],
)
def test_group_snapshots(keys: set[str], expected: dict[GroupKey, list[str]]) -> None:
    groups = group_snapshots(SNAPS, keys, _key)
    assert {k: [s.name for s in v] for k, v in groups.items()} == expected
    assert list(groups) == list(expected)  # order of first appearance


def test_group_snapshots_rejects_unknown_keys() -> None:
    with pytest.raises(UsageError, match="paths"):
        group_snapshots(SNAPS, {"host", "paths"}, _key)


# --------------------------------------------------------------------------------------------
# restic 0.14 as the oracle
# --------------------------------------------------------------------------------------------
#
# One repository, built once per module. Each history is one restic host, backed up with
# `--time` under the TZ the history belongs to (restic records the local offset at backup
# time and buckets by it, so backup and forget must share a zone). `restic forget --dry-run
# --json --no-lock` runs once per (zone, policy), in parallel, and every group (= host) is
# compared with apply_policy: kept ids in order, removed ids, and every reason.

RESTIC_SERIES = "0.14."

ORACLE_POLICIES: dict[str, tuple[str, RetentionPolicy]] = {  # restic flags, our policy
    "last3": ("--keep-last 3", RetentionPolicy(keep_last=3)),
    "calendar": (
        "-H 5 -d 7 -w 4 -m 6 -y 2",
        RetentionPolicy(keep_hourly=5, keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=2),
    ),
    "within": ("--keep-within 2m15d", RetentionPolicy(keep_within=D("2m15d"))),
    "within-daily": (
        "--keep-within-daily 7d --keep-weekly 2",
        RetentionPolicy(keep_within_daily=D("7d"), keep_weekly=2),
    ),
    "tags": ("--keep-tag a --keep-tag b,c", RetentionPolicy(keep_tags=(("a",), ("b", "c")))),
    "dst-edges": (
        "--keep-within 1d --keep-within-hourly 1d12h --keep-monthly 3",
        RetentionPolicy(keep_within=D("1d"), keep_within_hourly=D("1d12h"), keep_monthly=3),
    ),
    "within-mix": (
        "--keep-within 6m28d --keep-within-weekly 1m --keep-within-monthly 1y"
        " --keep-within-yearly 2y --keep-last 1",
        RetentionPolicy(
            keep_within=D("6m28d"),
            keep_within_weekly=D("1m"),
            keep_within_monthly=D("1y"),
            keep_within_yearly=D("2y"),
            keep_last=1,
        ),
    ),
}

ZONES = ("UTC", "Europe/Berlin")


def random_history(seed: int, count: int) -> list[tuple[str, tuple[str, ...]]]:
    """``count`` distinct wall-clock times over ~2 years, with clusters, each with tags."""
    rng = random.Random(seed)
    end = datetime(2024, 5, 1) + timedelta(days=rng.randrange(120), seconds=rng.randrange(86400))
    times: set[datetime] = set()

    def add(t: datetime) -> None:
        if len(times) < count:
            times.add(t.replace(microsecond=0))

    for _ in range(6):  # the last two days, dense
        add(end - timedelta(seconds=rng.randrange(2 * 86400)))
    add(end)
    for _ in range(3):  # clusters: several snapshots within a day and a half
        centre = end - timedelta(days=rng.randrange(3, 700))
        for _ in range(rng.randrange(2, 5)):
            add(centre + timedelta(seconds=rng.randrange(-64800, 64800)))
    while len(times) < count:  # the rest spread out
        add(end - timedelta(seconds=rng.randrange(730 * 86400)))
    history = []
    for t in sorted(times):
        if t > end:
            continue
        tags = tuple(sorted(tag for tag in "abc" if rng.random() < 0.3))
        history.append((t.strftime("%Y-%m-%d %H:%M:%S"), tags))
    return history


# Berlin wall-clock times around both 2024 DST changes; the newest is 2024-10-28 02:30 CET,
# so "1d" ends inside the repeated hour and "6m28d" inside the skipped one (at 03:30 CEST,
# exactly the time of one snapshot: "after" must be strict). "1d12h" ends at 15:30 CEST on
# 10-26 only if the 12 hours are absolute (and a snapshot sits exactly there).
DST_HISTORY: list[tuple[str, tuple[str, ...]]] = [
    (stamp, ()) for stamp in (
        "2024-03-30 23:30:00", "2024-03-31 01:30:00", "2024-03-31 03:30:00",
        "2024-03-31 04:10:00", "2024-04-01 02:45:00",
        "2024-10-26 15:30:00", "2024-10-26 23:00:00", "2024-10-27 00:30:00", "2024-10-27 01:45:00",
        "2024-10-27 02:00:00", "2024-10-27 02:40:00", "2024-10-27 03:15:00",
        "2024-10-27 12:00:00", "2024-10-28 01:00:00", "2024-10-28 02:30:00",
    )
]  # fmt: skip

# Month ends: from 2024-03-31, "1m" ends at 03-02 (Go) not 02-29 (clamping), and "6m28d" at
# 2023-09-03 not 09-02. ISO weeks: 2023-01-01 and 2022-12-30 share 2022-W52, 2021-01-03 and
# 2020-12-31 share 2020-W53.
EDGE_HISTORY: list[tuple[str, tuple[str, ...]]] = [
    (stamp, ()) for stamp in (
        "2023-09-02 18:00:00", "2023-09-20 10:00:00", "2024-03-02 11:00:00",
        "2024-03-25 10:00:00", "2024-03-31 12:00:00",
    )
]  # fmt: skip
WEEK_HISTORY: list[tuple[str, tuple[str, ...]]] = [
    (stamp, ()) for stamp in (
        "2020-12-31 10:00:00", "2021-01-03 10:00:00", "2022-12-25 10:00:00",
        "2022-12-30 10:00:00", "2023-01-01 10:00:00",
    )
]  # fmt: skip

HISTORIES: dict[str, tuple[str, list[tuple[str, tuple[str, ...]]]]] = {
    "utc-1": ("UTC", random_history(1, 18)),
    "utc-2": ("UTC", random_history(2, 18)),
    "utc-3": ("UTC", random_history(3, 18)),
    "utc-edges": ("UTC", EDGE_HISTORY),
    "utc-weeks": ("UTC", WEEK_HISTORY),
    "berlin-1": ("Europe/Berlin", random_history(4, 16)),
    "berlin-dst": ("Europe/Berlin", DST_HISTORY),
}


@dataclass(frozen=True)
class Oracle:
    snapshots: dict[str, list[SnapshotRef]]  # host -> snapshots as restic recorded them
    forget: dict[tuple[str, str], list[dict[str, Any]]]  # (zone, policy) -> restic's JSON
    seconds: float


def _restic_or_skip() -> str:
    exe = shutil.which("restic")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(
                "restic is not installed; CI must install restic 0.14 (apt-get install restic)"
            )
        pytest.skip("restic is not installed (apt-get install restic); CI runs this test")
    version = subprocess.run([exe, "version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"restic (\d+\.\d+\.\d+)", version)
    if match is None or not match.group(1).startswith(RESTIC_SERIES):
        message = f"the oracle is restic {RESTIC_SERIES}x, found {version.strip()!r}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return exe


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    exe = _restic_or_skip()
    if BERLIN is None:
        pytest.skip("no tz database (Europe/Berlin)")
    started = time.monotonic()
    root = tmp_path_factory.mktemp("restic-oracle")
    data = root / "data"
    data.mkdir()
    (data / "file.txt").write_text("snapdeck retention oracle\n")
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "RESTIC_PASSWORD": "x",
        "RESTIC_REPOSITORY": str(root / "repo"),
        "RESTIC_CACHE_DIR": str(root / "cache"),
    }

    def restic(args: list[str], zone: str = "UTC") -> str:
        proc = subprocess.run(
            [exe, *args], env={**base_env, "TZ": zone}, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise AssertionError(f"restic {' '.join(args)} failed:\n{proc.stderr}")
        return proc.stdout

    restic(["init", "-q"])
    jobs = []
    for host, (zone, history) in HISTORIES.items():
        for stamp, tags in history:
            tag_args = [arg for tag in tags for arg in ("--tag", tag)]
            jobs.append(
                (["backup", "-q", "--host", host, "--time", stamp, *tag_args, str(data)], zone)
            )
    workers = max(2, min(8, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: restic(*job), jobs))

    snapshots: dict[str, list[SnapshotRef]] = {host: [] for host in HISTORIES}
    for sn in json.loads(restic(["snapshots", "--json", "--no-lock"])):
        snapshots[sn["hostname"]].append(
            SnapshotRef(
                id=sn["id"],
                time=datetime.fromisoformat(sn["time"]),
                tags=tuple(sn.get("tags") or ()),
            )
        )
    for host, (_zone, history) in HISTORIES.items():
        assert len(snapshots[host]) == len(history), host
        assert len({s.time for s in snapshots[host]}) == len(history), f"{host}: equal times"

    runs = [(zone, name) for zone in ZONES for name in ORACLE_POLICIES]

    def forget(run: tuple[str, str]) -> list[dict[str, Any]]:
        zone, name = run
        hosts = [arg for h, (z, _) in HISTORIES.items() if z == zone for arg in ("--host", h)]
        flags = ORACLE_POLICIES[name][0].split()
        out = restic(["forget", "--dry-run", "--json", "--no-lock", *hosts, *flags], zone)
        groups: list[dict[str, Any]] = json.loads(out)
        return groups

    with ThreadPoolExecutor(workers) as pool:
        results = dict(zip(runs, pool.map(forget, runs), strict=True))
    yield Oracle(snapshots, results, time.monotonic() - started)


def compare_with_restic(
    oracle: Oracle, zone: str, policy_name: str, groups: list[dict[str, Any]]
) -> list[str]:
    """Every difference between restic's answer for one forget run and ``apply_policy``."""
    policy = ORACLE_POLICIES[policy_name][1]
    where = f"[{zone}, {policy_name}]"
    hosts = {h for h, (z, _) in HISTORIES.items() if z == zone}
    if {g["host"] for g in groups} != hosts:
        return [f"{where} restic's groups {sorted(g['host'] for g in groups)} != {sorted(hosts)}"]
    problems = []
    for group in groups:
        host = group["host"]
        decision = apply_policy(oracle.snapshots[host], policy, tz=ZoneInfo(zone))
        ours = [(k.snapshot.id[:8], k.reasons) for k in decision.keep]
        # restic 0.14's reasons list runs parallel to its keep list (its snapshots carry no id).
        theirs = [
            (s["id"][:8], tuple(r["matches"]))
            for s, r in zip(group["keep"] or (), group["reasons"] or (), strict=True)
        ]
        if ours != theirs:
            problems.append(
                f"{where} {host} kept (id, reasons):\n  ours   {ours}\n  restic {theirs}"
            )
        ours_removed = [s.id for s in decision.remove]
        if ours_removed != [s["id"] for s in group["remove"] or ()]:
            problems.append(f"{where} {host}: removed differ")
        # Our display numbers agree with restic's counters (what is left after each snapshot).
        for k, r in zip(decision.keep, group["reasons"] or (), strict=False):
            for label in k.labels:
                rule, _, number = label.partition(" #")
                total = getattr(policy, f"keep_{rule}", None)
                if isinstance(total, int) and total - int(number) != r["counters"].get(rule, 0):
                    problems.append(f"{where} {host}: label {label!r} vs {r['counters']}")
    return problems


@pytest.mark.slow
def test_matches_restic(oracle: Oracle) -> None:
    """apply_policy == restic forget, for every zone x policy x history (one test, so that
    pytest-xdist never builds the repository twice)."""
    problems = [
        problem
        for (zone, name), groups in oracle.forget.items()
        for problem in compare_with_restic(oracle, zone, name, groups)
    ]
    assert not problems, "\n".join(problems)

    # The histories are rich enough that every kind of reason occurs and some snapshots go.
    seen: set[str] = set()
    removed = 0
    for groups in oracle.forget.values():
        for group in groups:
            removed += len(group["remove"] or ())
            for r in group["reasons"] or ():
                seen.update(re.sub(r" \d\S*$", "", m) for m in r["matches"])
    assert removed > 0
    assert {
        "last snapshot",
        "hourly snapshot",
        "daily snapshot",
        "weekly snapshot",
        "monthly snapshot",
        "yearly snapshot",
        "within",
        "hourly within",
        "daily within",
        "weekly within",
        "monthly within",
        "yearly within",
        "has tags [a]",
        "has tags [b, c]",
    } <= seen, seen
    runs = len(oracle.forget)
    print(f"restic oracle: {runs} forget runs, built in {oracle.seconds:.1f}s")
