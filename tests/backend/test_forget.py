"""Forget planning: groups, reasons, protection, refusals (the decisions are test_retention's)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.errors import UsageError
from backend.forget import plan_forget, plan_forget_ids
from backend.model import Snapshot
from backend.retention import Duration, RetentionPolicy

T0 = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def snap(n: int, *, source: str = "/a", host: str = "h", tags: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(
        id=f"{n:064x}",
        time=T0 + timedelta(hours=6 * n),
        host=host,
        source=source,
        tree="00" * 32,
        tags=tags,
    )


def test_policy_per_group_with_reasons() -> None:
    snaps = [snap(i, source="/a") for i in range(8)] + [
        snap(100 + i, source="/b") for i in range(3)
    ]
    plan = plan_forget(
        snaps, RetentionPolicy(keep_daily=2), protection={}, group_by=("host", "source"), tz=UTC
    )
    assert [g.key.source for g in plan.groups] == ["/a", "/b"]
    a, b = plan.groups
    # /a: 8 snapshots 6 h apart from noon (days of 2, 4 and 2); the newest of the last 2 days.
    assert [s.id for s, _k in a.keep] == [snaps[7].id, snaps[5].id]
    assert [k.labels for _s, k in a.keep] == [("daily #1",), ("daily #2",)]
    assert len(a.remove) == 6
    assert len(b.keep) == 2 and len(b.remove) == 1
    doc = plan.to_json()
    assert doc["keep"][0] == {
        "id": snaps[7].id,
        "time": snaps[7].time.isoformat(),
        "reasons": ["daily #1"],
    }
    assert {r["id"] for r in doc["remove"]} == {s.id for s in plan.remove}
    assert doc["groups"][0]["source"] == "/a" and doc["groups"][0]["tags"] is None


def test_protected_snapshots_are_always_kept_with_their_reasons() -> None:
    snaps = [snap(i) for i in range(5)]
    prot = {snaps[0].id: ["ref main"], snaps[1].id: ["pinned"], snaps[4].id: ["HEAD"]}
    plan = plan_forget(snaps, RetentionPolicy(keep_last=1), protection=prot, tz=UTC)
    kept = {s.id: k.labels for s, k in plan.keep}
    assert kept == {
        snaps[4].id: ("HEAD", "last #1"),
        snaps[1].id: ("pinned",),
        snaps[0].id: ("ref main",),
    }
    assert [s.id for s in plan.remove] == [snaps[3].id, snaps[2].id]


def test_a_policy_that_empties_a_group_is_refused() -> None:
    snaps = [snap(i, tags=("x",)) for i in range(3)]
    policy = RetentionPolicy(keep_tags=(("keep-me",),))
    with pytest.raises(UsageError, match=r"would remove all 3 snapshots of .*--allow-empty"):
        plan_forget(snaps, policy, protection={}, tz=UTC)
    plan = plan_forget(snaps, policy, protection={}, allow_empty=True, tz=UTC)
    assert len(plan.remove) == 3
    with pytest.raises(UsageError, match="no policy"):
        plan_forget(snaps, RetentionPolicy(), protection={}, tz=UTC)


def test_group_by_tags_and_within() -> None:
    snaps = [snap(0, tags=("b", "a")), snap(1, tags=("a", "b")), snap(2, tags=("c",))]
    plan = plan_forget(
        snaps,
        RetentionPolicy(keep_within=Duration(hours=1)),
        protection={},
        group_by=("tags",),
        tz=UTC,
    )
    assert [g.key.tags for g in plan.groups] == [("a", "b"), ("c",)]
    assert [s.id for s in plan.groups[0].remove] == [snaps[0].id]
    assert plan.groups[0].keep[0][1].labels == ("within 1h",)


def test_named_snapshots() -> None:
    snaps = [snap(i) for i in range(3)]
    plan = plan_forget_ids([snaps[0], snaps[2], snaps[0]], {})
    assert [s.id for s in plan.remove] == [snaps[2].id, snaps[0].id]
    with pytest.raises(UsageError, match="protected \\(HEAD\\)"):
        plan_forget_ids([snaps[1]], {snaps[1].id: ["HEAD"]})


def test_store_forget_in_bulk_drops_notes_and_access_of_those_only(tmp_path: Path) -> None:
    from tests.backend.test_prune import new_history

    h = new_history(tmp_path)
    ids = []
    for i in range(6):
        h.write("f", 3000 + i)
        ids.append(h.snap())
    s = h.store
    for sid in ids[:4]:
        s.set_tags(s.get(sid), add=["t"])
        s.touch(s.get(sid))
    s.set_pinned(s.get(ids[4]), True)
    refs = {i.name for i in s.storage.list("refs")}
    assert f"notes/{ids[0]}" in refs and f"access/{ids[0]}" in refs
    gone = [ids[0], ids[1], ids[0], "f" * 64]  # a duplicate and an unknown id are ignored
    assert s.forget(gone) == [ids[0], ids[1]]
    left = {i.name for i in s.storage.list("refs")}
    assert left == refs - {f"{k}/{sid}" for k in ("notes", "access") for sid in ids[:2]}
    assert [x.id for x in h.reopen().list_snapshots()] == ids[2:]
    assert h.store.get(ids[4]).pinned and h.store.get(ids[2]).tags == ("t",)
    assert h.store.forget(ids[:2]) == []  # already gone
