"""Pure display helpers for the TUI (no Textual): sizes, times, ids, bars."""

from __future__ import annotations

import math
import os
from datetime import datetime

from backend.units import format_size

_BLOCKS = " ▏▎▍▌▋▊▉█"
SPARK = "▁▂▃▄▅▆▇█"


def human_size(n: int) -> str:
    """A byte count for people (the CLI's format)."""
    return format_size(n)


def relative_time(ts: datetime, now: datetime) -> str:
    """``just now``, ``5 min ago``, ``3 h ago``, ``2 d ago``, ``4 mo ago``, ``1 y ago``."""
    s = (now - ts).total_seconds()
    if s < 0:
        return "in the future"
    if s < 45:
        return "just now"
    if s < 3600:
        return f"{max(1, round(s / 60))} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    if s < 86400 * 45:
        return f"{int(s // 86400)} d ago"
    if s < 86400 * 365:
        return f"{int(s // (86400 * 30))} mo ago"
    return f"{int(s // (86400 * 365))} y ago"


def local(ts: datetime) -> datetime:
    """A time in the local zone (what people read)."""
    return ts.astimezone()


def day_label(day: datetime, now: datetime) -> str:
    """``Today``, ``Yesterday`` or ``Mon 3 Nov 2025``."""
    d = local(day).date()
    n = local(now).date()
    delta = (n - d).days
    if delta == 0:
        return f"Today · {d:%a %-d %b %Y}"
    if delta == 1:
        return f"Yesterday · {d:%a %-d %b %Y}"
    return f"{d:%a %-d %b %Y}"


def short_source(path: str, width: int = 28) -> str:
    """A source path shortened for a column: ``~`` for home, leading parts elided."""
    home = os.path.expanduser("~")
    p = path
    if home and home != "/" and (p == home or p.startswith(home + os.sep)):
        p = "~" + p[len(home) :]
    if len(p) <= width:
        return p
    return "…" + p[-(width - 1) :]


def hbar(value: float, maximum: float, width: int) -> str:
    """A horizontal bar of ``width`` cells, square-root scaled, with eighth-cell resolution."""
    if maximum <= 0 or value <= 0:
        return " " * width
    frac = min(1.0, math.sqrt(value / maximum))
    eighths = max(1, round(frac * width * 8))
    full, part = divmod(eighths, 8)
    out = "█" * full + (_BLOCKS[part] if part else "")
    return out[:width].ljust(width)


def spark(values: list[float], width: int) -> str:
    """A sparkline of ``width`` cells (max per bucket, log-scaled)."""
    if not values or width <= 0:
        return ""
    buckets: list[float] = []
    n = len(values)
    for i in range(min(width, n)):
        lo = i * n // min(width, n)
        hi = max(lo + 1, (i + 1) * n // min(width, n))
        buckets.append(max(values[lo:hi]))
    top = max(buckets)
    if top <= 0:
        return SPARK[0] * len(buckets)
    return "".join(
        SPARK[min(7, int(math.log1p(v) / math.log1p(top) * 7.999))] if v > 0 else SPARK[0]
        for v in buckets
    )
