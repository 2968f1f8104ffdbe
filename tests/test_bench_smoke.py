"""Smoke test of the benchmark harness: `bench/run.py --quick --tools snapdeck`.

Backs up a tiny self-made corpus (a few hundred small files + one 20 MiB file) with the real
snapdeck CLI, restores it and byte-compares every file.  Needs no restic/borg and writes nothing
under bench/results.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _table_rows(out: str) -> tuple[list[str], dict[str, list[str]]]:
    """Header cells and {tool: cells} of the first per-workload markdown table."""
    header: list[str] = []
    rows: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "tool":
            header = cells
        elif header and len(cells) == len(header) and not cells[0].startswith("---"):
            rows.setdefault(cells[0], cells)
    return header, rows


@pytest.mark.slow
def test_bench_quick_snapdeck_restore_verified() -> None:
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--tools", "snapdeck"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, report
    header, rows = _table_rows(proc.stdout)
    assert "restore verified" in header, report
    assert "snapdeck" in rows, report
    verified = rows["snapdeck"][header.index("restore verified")]
    assert verified.startswith("yes"), report
