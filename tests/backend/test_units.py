"""Sizes and durations: parsing, formatting, and restic/Go calendar arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.errors import UsageError
from backend.units import Duration, format_duration, format_size, parse_duration, parse_size

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("1024", 1024),
        ("10k", 10 * KIB),
        ("10K", 10 * KIB),
        ("1KiB", KIB),
        ("1kib", KIB),
        ("1Ki", KIB),
        ("1KB", 1000),
        ("1kb", 1000),
        ("500MB", 500_000_000),
        ("500M", 500 * MIB),
        ("1.5G", GIB + GIB // 2),
        ("1GiB", GIB),
        ("2GB", 2_000_000_000),
        ("1T", TIB),
        ("1TiB", TIB),
        ("1TB", 10**12),
        ("7b", 7),
        ("7B", 7),
        (" 500 MB ", 500_000_000),
        ("1.5 MiB", MIB + MIB // 2),
        (".5K", 512),
        ("1.3k", 1331),  # 1331.2: fractions of a byte are dropped
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["abc", "", " ", "-1", "1.5.2", "10X", "1e3", "GiB", "1,5G", "1 G B", "1Kibb"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_size(text)
    assert str(info.value) == (
        f"invalid size {text!r}: use a number with an optional unit like 500M or 2GiB"
    )
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MIB + MIB // 2, "1.5 MiB"),
        (MIB - 1, "1.0 MiB"),  # 1023.999 KiB would round to "1024.0 KiB"
        (GIB, "1.0 GiB"),
        (5 * TIB, "5.0 TiB"),
        (-1536, "-1.5 KiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


def test_format_size_reads_back() -> None:
    assert parse_size(format_size(MIB + MIB // 2)) == MIB + MIB // 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", Duration(days=7)),
        ("2w", Duration(days=14)),
        ("1w2d", Duration(days=9)),
        ("1y6m", Duration(years=1, months=6)),
        ("1y2m3d4h", Duration(years=1, months=2, days=3, hours=4)),  # restic's example
        ("90min", Duration(minutes=90)),
        ("1h30min", Duration(hours=1, minutes=30)),
        ("30s", Duration(seconds=30)),
        ("5m", Duration(months=5)),  # m is months, as in restic
        ("1Y2M3D", Duration(years=1, months=2, days=3)),
        ("15MIN", Duration(minutes=15)),
        (" 1h 30min ", Duration(hours=1, minutes=30)),
        ("30min1h", Duration(hours=1, minutes=30)),
        ("0d", Duration()),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid duration '': use whole numbers with units y, m (months), w, d, h, min, s"),
        ("abc", "invalid duration 'abc': use whole numbers"),
        ("5x", "invalid duration '5x': use whole numbers"),
        ("-1d", "invalid duration '-1d': use whole numbers"),
        ("1.5h", "invalid duration '1.5h': use whole numbers"),
        ("1mi", "invalid duration '1mi': use whole numbers"),
        ("h", "invalid duration 'h': use whole numbers"),
        ("30", "invalid duration '30': add a unit to 30, like 30d or 30min"),
        ("1h30", "invalid duration '1h30': add a unit to 30, like 30d or 30min"),
        ("1d2d", "invalid duration '1d2d': the unit 'd' appears twice"),
        ("1w2W", "invalid duration '1w2W': the unit 'w' appears twice"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(text)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["7d", "1y6m", "1y2m3d4h5min6s", "90min", "0s"])
def test_duration_str_reads_back(text: str) -> None:
    duration = parse_duration(text)
    assert parse_duration(str(duration)) == duration


def test_duration_str_is_canonical() -> None:
    assert str(parse_duration("30s1h2w")) == "14d1h30s"
    assert str(Duration()) == "0s"


def test_duration_rejects_negative_or_non_integer_parts() -> None:
    with pytest.raises(ValueError):
        Duration(days=-1)
    with pytest.raises(ValueError):
        Duration(hours=True)


def test_duration_is_zero() -> None:
    assert Duration().is_zero()
    assert parse_duration("0y0d").is_zero()
    assert not Duration(seconds=1).is_zero()


# Go's time.AddDate normalises like time.Date: the month moves first, then an out-of-range day
# of month overflows into the next month ("adding one month to October 31 yields December 1,
# the normalized form for November 31" -- Go docs). restic's --keep-within subtracts with
# AddDate(-y, -m, -d) and then subtracts hours as elapsed time.
@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        # 2024 is a leap year: 31 Feb 2024 = 29 Feb + 2 days = 2 March.
        (datetime(2024, 3, 31), "1m", datetime(2024, 3, 2)),
        # 2023 is not: 31 Feb 2023 = 28 Feb + 3 days = 3 March.
        (datetime(2023, 3, 31), "1m", datetime(2023, 3, 3)),
        # 31 Nov = 1 Dec: one month "before" 31 Dec is 1 Dec.
        (datetime(2023, 12, 31), "1m", datetime(2023, 12, 1)),
        (datetime(2024, 2, 29), "1y", datetime(2023, 3, 1)),
        (datetime(2024, 1, 15, 8, 30), "2m", datetime(2023, 11, 15, 8, 30)),
        (datetime(2024, 1, 31), "1y11m", datetime(2022, 3, 3)),  # 31 Feb 2022 → 3 Mar
        (datetime(2024, 3, 1), "1d", datetime(2024, 2, 29)),
        (datetime(2024, 5, 31, 12), "1m1d", datetime(2024, 4, 30, 12)),  # 30 April exists
        (datetime(2024, 3, 10), "2w", datetime(2024, 2, 25)),
        (datetime(2024, 3, 31), "1m1h", datetime(2024, 3, 1, 23)),  # month first, then hours
        (datetime(2024, 1, 1), "90min", datetime(2023, 12, 31, 22, 30)),
        (datetime(2024, 1, 1), "1s", datetime(2023, 12, 31, 23, 59, 59)),
        (datetime(2024, 6, 15, 10), "0d", datetime(2024, 6, 15, 10)),
    ],
)
def test_subtract_from_follows_go_add_date(
    start: datetime, duration: str, expected: datetime
) -> None:
    assert parse_duration(duration).subtract_from(start) == expected


def test_subtract_from_keeps_utc_time_zone() -> None:
    start = datetime(2024, 3, 31, 12, tzinfo=UTC)
    result = parse_duration("1m2h").subtract_from(start)
    assert result == datetime(2024, 3, 2, 10, tzinfo=UTC)
    assert result.tzinfo is UTC


def test_subtract_from_days_keep_wall_clock_hours_are_elapsed_across_dst() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    # Clocks went from 02:00 CET to 03:00 CEST on 2024-03-31.
    noon = datetime(2024, 3, 31, 12, tzinfo=berlin)
    day_before = parse_duration("1d").subtract_from(noon)
    assert (day_before.hour, day_before.day) == (12, 30)  # calendar: same wall clock
    assert noon.astimezone(UTC) - day_before.astimezone(UTC) == timedelta(hours=23)
    after_switch = datetime(2024, 3, 31, 3, 30, tzinfo=berlin)
    two_hours_before = parse_duration("2h").subtract_from(after_switch)
    assert two_hours_before.astimezone(UTC) == datetime(2024, 3, 30, 23, 30, tzinfo=UTC)
    assert (two_hours_before.hour, two_hours_before.minute) == (0, 30)


def test_subtract_from_clamps_before_year_one() -> None:
    assert Duration(years=5000).subtract_from(datetime(2024, 1, 1)) == datetime.min
    aware = Duration(years=5000).subtract_from(datetime(2024, 1, 1, tzinfo=UTC))
    assert aware == datetime.min.replace(tzinfo=UTC)


def test_approx_timedelta() -> None:
    duration = parse_duration("1y2m3d4h5min6s")
    assert duration.approx_timedelta() == timedelta(
        days=365 + 60 + 3, hours=4, minutes=5, seconds=6
    )
    assert parse_duration("2w").approx_timedelta() == timedelta(days=14)
    assert Duration(years=10**9).approx_timedelta() == timedelta.max


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0 ms"),
        (0.35, "350 ms"),
        (0.9996, "1.0 s"),
        (1.2, "1.2 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 0 s"),
        (184, "3 min 4 s"),
        (184.4, "3 min 4 s"),
        (3599.7, "1 h 0 min"),
        (2 * 3600 + 5 * 60, "2 h 5 min"),
        (90000, "1 d 1 h"),
        (-1.5, "-1.5 s"),
        (float("inf"), "∞ s"),
        (float("nan"), "? s"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected
