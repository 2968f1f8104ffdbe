"""A short run of the crash harness (``bench/crash.py`` runs 50+ rounds on 3000 files).

Real ``snapdeck`` processes are killed with SIGKILL at random moments during snapshot, forget,
prune and evict; after each kill the repository must check clean with ``--read-data``, every
snapshot must restore byte-exact, and re-running the operation must complete.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import crash  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def test_kill_9_during_operations_loses_nothing(tmp_path: Path) -> None:
    report = crash.run(5, 150, seed=11, workdir=tmp_path / "work", log=False)
    assert len(report.rounds) == 5
    failures = [f for r in report.rounds for f in r.failures]
    assert report.ok, failures
    assert sum(r.snapshots_verified for r in report.rounds) >= 5
    assert {r.op for r in report.rounds} >= {"snapshot"}
