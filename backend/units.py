"""Sizes and durations as people write them, parsed and formatted.

Layer: pure values. No I/O, no clock: ``Duration.subtract_from`` takes the reference time.

Sizes follow borg: ``K``/``M``/``G``/``T`` and ``KiB``/``MiB``/... are binary (powers of 1024);
``KB``/``MB``/... are decimal (powers of 1000); a bare number is bytes. Units are
case-insensitive.

Durations follow restic's ``--keep-within`` format (``1y2m3d4h``) plus weeks, minutes and
seconds: ``y`` years, ``m`` months, ``w`` weeks (7 days), ``d`` days, ``h`` hours, ``min``
minutes, ``s`` seconds. Years, months and days are calendar units, subtracted like Go's
``time.AddDate`` (so 31 March minus one month is 2 or 3 March, never an error); hours, minutes
and seconds are elapsed time. Note that ``m`` is months, as in restic: 90 minutes is ``90min``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

from backend.errors import UsageError

__all__ = [
    "Duration",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)

_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgtpe", start=1):
    _SIZE_UNITS[_letter] = 1024**_power
    _SIZE_UNITS[f"{_letter}i"] = 1024**_power
    _SIZE_UNITS[f"{_letter}ib"] = 1024**_power
    _SIZE_UNITS[f"{_letter}b"] = 1000**_power

_FORMAT_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def parse_size(s: str) -> int:
    """Parse a size such as ``"500MB"``, ``"1.5G"``, ``"2GiB"`` or ``"1024"`` into bytes.

    Args:
        s: A non-negative number with an optional unit. Fractions of a byte are dropped.

    Returns:
        The size in bytes.

    Raises:
        UsageError: The text is not a size.
    """
    match = _SIZE_RE.fullmatch(s)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise UsageError(
            f"invalid size {s!r}: use a number with an optional unit like 500M or 2GiB"
        )
    return int(Fraction(match.group(1)) * _SIZE_UNITS[unit])


def format_size(n: int) -> str:
    """Format a byte count for people, in binary units: ``"0 B"``, ``"1.5 MiB"``.

    Args:
        n: A number of bytes (negative for a decrease).

    Returns:
        Whole bytes below 1 KiB, otherwise one decimal and the largest unit that keeps the
        value under 1024.
    """
    sign = "-" if n < 0 else ""
    n = abs(n)
    if n < 1024:
        return f"{sign}{n} B"
    value = float(n)
    unit = 0
    while unit < len(_FORMAT_UNITS) - 1 and round(value, 1) >= 1024:
        value /= 1024
        unit += 1
    return f"{sign}{value:.1f} {_FORMAT_UNITS[unit]}"


@dataclass(frozen=True, slots=True)
class Duration:
    """A span of calendar time, as written in a retention rule (``7d``, ``1y6m``, ``1h30min``).

    Years, months and days are calendar units, so the span they cover depends on where it is
    applied; use :meth:`subtract_from` for exact arithmetic and :meth:`approx_timedelta` only
    for display or rough comparison.
    """

    years: int = 0
    """Calendar years."""
    months: int = 0
    """Calendar months."""
    days: int = 0
    """Calendar days (weeks are stored here as 7 days each)."""
    hours: int = 0
    """Elapsed hours."""
    minutes: int = 0
    """Elapsed minutes."""
    seconds: int = 0
    """Elapsed seconds."""

    def __post_init__(self) -> None:
        for name in ("years", "months", "days", "hours", "minutes", "seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Duration.{name} must be an integer >= 0, got {value!r}")

    def __str__(self) -> str:
        """The canonical spelling, which :func:`parse_duration` reads back: ``1y6m14d2h30min``."""
        parts = [
            f"{value}{unit}"
            for value, unit in (
                (self.years, "y"),
                (self.months, "m"),
                (self.days, "d"),
                (self.hours, "h"),
                (self.minutes, "min"),
                (self.seconds, "s"),
            )
            if value
        ]
        return "".join(parts) or "0s"

    def is_zero(self) -> bool:
        """Whether every component is zero."""
        return not (
            self.years or self.months or self.days or self.hours or self.minutes or self.seconds
        )

    def subtract_from(self, dt: datetime) -> datetime:
        """The point in time this duration before ``dt``.

        Years, months and days are subtracted on the calendar like Go's ``time.AddDate`` with
        negative arguments (what restic's ``--keep-within`` does): the month is moved first and
        an overflowing day of month rolls over into the next month, so 2024-03-31 minus one
        month is 2024-03-02 (there is no 31 February). The wall-clock time is kept. Hours,
        minutes and seconds are then subtracted as elapsed time (across a DST change too).

        Args:
            dt: The reference time, naive or aware.

        Returns:
            A datetime in ``dt``'s time zone; a result before year 1 is clamped to the
            earliest representable time (in UTC for an aware ``dt``).
        """
        try:
            total_months = dt.year * 12 + (dt.month - 1) - (self.years * 12 + self.months)
            year, month0 = divmod(total_months, 12)
            # Go's time.Date: normalise the month into the year, then count the day of month
            # as an offset from the 1st, so day 31 of a 29-day month is the 2nd of the next.
            day = date(year, month0 + 1, 1) + timedelta(days=dt.day - 1 - self.days)
            shifted = datetime.combine(day, dt.timetz())
            elapsed = timedelta(hours=self.hours, minutes=self.minutes, seconds=self.seconds)
            if shifted.tzinfo is None:
                return shifted - elapsed
            return (shifted.astimezone(UTC) - elapsed).astimezone(shifted.tzinfo)
        except (OverflowError, ValueError):
            if dt.tzinfo is None:
                return datetime.min
            return datetime.min.replace(tzinfo=UTC)

    def approx_timedelta(self) -> timedelta:
        """A fixed-length approximation: a year is 365 days and a month 30 days.

        Returns:
            The approximate span, clamped to ``timedelta.max``.
        """
        try:
            return timedelta(
                days=self.years * 365 + self.months * 30 + self.days,
                hours=self.hours,
                minutes=self.minutes,
                seconds=self.seconds,
            )
        except OverflowError:
            return timedelta.max


_DURATION_TOKEN_RE = re.compile(r"\s*(\d+)\s*(min|[ymwdhs])", re.IGNORECASE)
_DURATION_HINT = (
    "use whole numbers with units y, m (months), w, d, h, min, s, like 7d, 1y6m or 1h30min"
)


def parse_duration(s: str) -> Duration:
    """Parse a duration such as ``"7d"``, ``"2w"``, ``"1y6m"``, ``"90min"`` or ``"1h30min"``.

    Units are case-insensitive and may be separated by spaces; each unit may appear once.
    ``m`` means months (as in restic); minutes are ``min``.

    Args:
        s: The text to parse.

    Returns:
        The parsed duration (weeks folded into days).

    Raises:
        UsageError: The text is not a duration.
    """
    text = s.strip()
    values: dict[str, int] = {}
    pos = 0
    while pos < len(text):
        match = _DURATION_TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos:].strip().isdigit():
                raise UsageError(
                    f"invalid duration {s!r}: add a unit to {text[pos:].strip()}, like 30d or 30min"
                )
            raise UsageError(f"invalid duration {s!r}: {_DURATION_HINT}")
        unit = match.group(2).lower()
        if unit in values:
            raise UsageError(f"invalid duration {s!r}: the unit {unit!r} appears twice")
        values[unit] = int(match.group(1))
        pos = match.end()
    if not values:
        raise UsageError(f"invalid duration {s!r}: {_DURATION_HINT}")
    return Duration(
        years=values.get("y", 0),
        months=values.get("m", 0),
        days=values.get("w", 0) * 7 + values.get("d", 0),
        hours=values.get("h", 0),
        minutes=values.get("min", 0),
        seconds=values.get("s", 0),
    )


def format_duration(seconds: float) -> str:
    """Format an elapsed time for people: ``"1.2 s"``, ``"3 min 4 s"``, ``"2 h 5 min"``.

    Args:
        seconds: The elapsed time (negative for a time in the past).

    Returns:
        Milliseconds below one second, one decimal below a minute, then the two largest units
        (``min s``, ``h min``, ``d h``), rounded.
    """
    if math.isnan(seconds):
        return "? s"
    sign = "-" if seconds < 0 else ""
    x = abs(seconds)
    if math.isinf(x):
        return f"{sign}∞ s"
    if round(x * 1000) < 1000:
        return f"{sign}{round(x * 1000)} ms"
    if round(x, 1) < 60:
        return f"{sign}{x:.1f} s"
    whole = round(x)
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{sign}{minutes} min {secs} s"
    total_minutes = round(x / 60)
    if total_minutes < 24 * 60:
        hours, minutes = divmod(total_minutes, 60)
        return f"{sign}{hours} h {minutes} min"
    days, hours = divmod(round(x / 3600), 24)
    return f"{sign}{days} d {hours} h"
