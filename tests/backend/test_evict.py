"""Eviction: exact exclusive sizes, the plan's order and protections, and the size promise."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from backend.config import EvictConfig
from backend.errors import StoreLocked, UsageError
from backend.evict import NEWEST, plan_evict, repo_size, sweep
from backend.format import ENTRY
from backend.ids import BlobId
from backend.model import EntryKind
from backend.store import Store
from backend.units import Duration
from backend.usage import UsageGraph, snapshot_usage
from tests.backend.test_prune import History, new_history, verify


def brute_force_exclusive(store: Store) -> dict[str, int]:
    """Walk every snapshot completely (no Merkle shortcut) and count blob owners."""
    owners: dict[bytes, set[str]] = {}

    def walk(sid: str, tree: bytes) -> None:
        owners.setdefault(tree, set()).add(sid)
        for e in store.repo.load_tree(BlobId(tree)).entries:
            if e.kind is EntryKind.FILE:
                for b in e.content:
                    owners.setdefault(b, set()).add(sid)
            elif e.kind is EntryKind.DIR:
                walk(sid, e.payload)

    snaps = store.list_snapshots()
    for s in snaps:
        walk(s.id, bytes.fromhex(s.tree))
    out = dict.fromkeys((s.id for s in snaps), 0)
    for blob, who in owners.items():
        if len(who) == 1:
            loc = store.repo.index.get(BlobId(blob))
            assert loc is not None
            out[next(iter(who))] += loc.length + ENTRY.size
    return out


def random_history(tmp: Path, seed: int, n: int = 9) -> History:
    h = new_history(tmp, seed)
    (h.src / "d").mkdir()
    (h.src / "d" / "e").mkdir()
    names = ["a", "b", "d/c", "d/e/f", "d/e/g"]
    for name in names:
        h.write(name, 5000)
    for _ in range(n):
        for name in h.rng.sample(names, h.rng.randint(0, 2)):
            h.write(name, h.rng.choice([3000, 7000, 20_000]))
        if h.rng.random() < 0.3:  # bring back an older version: shared by non-neighbours
            (h.src / "a").write_bytes(b"same old content" * 100)
        h.snap()
    return h


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exclusive_sizes_match_brute_force(tmp_path: Path, seed: int) -> None:
    h = random_history(tmp_path, seed)
    graph = UsageGraph.build(h.store.repo, h.store.list_snapshots())
    got = {sid: u.exclusive_bytes for sid, u in snapshot_usage(graph).items()}
    assert got == brute_force_exclusive(h.store)
    # Removing snapshots one by one: each removal frees exactly what the survivors no longer
    # reference, which brute force recomputes from scratch.
    total = graph.live_bytes
    for s in list(h.store.list_snapshots())[:-1]:
        expect = brute_force_exclusive(h.store)[s.id]
        freed, _n = graph.remove(s.id)
        assert freed == expect
        h.store.forget([s.id])
        total -= freed
        assert graph.live_bytes == total


def test_removing_a_partner_makes_shared_data_exclusive(tmp_path: Path) -> None:
    h = new_history(tmp_path)
    h.write("base", 10_000)
    a = h.snap()
    h.write("shared", 30_000)  # in b and c only
    b = h.snap()
    c = h.snap()  # same tree as b
    (h.src / "shared").unlink()
    h.snap()  # newest: protected
    usage = h.store.usage()
    assert usage[b].exclusive_bytes == usage[c].exclusive_bytes == 0
    plan = plan_evict(h.store, max_size=1, max_age=None)  # evict everything evictable
    freed = {i.snapshot.id: i.exclusive_bytes for i in plan.remove}
    assert list(freed) == [a, b, c]  # least recently accessed first
    assert freed[b] == 0 and freed[c] > 30_000  # c pays for what it shared with b alone


def test_plan_never_removes_protected_snapshots(tmp_path: Path) -> None:
    h = new_history(tmp_path)
    ids = []
    for i in range(6):
        h.write("f", 5000 + i)
        ids.append(h.snap())
    s = h.store
    s.add_ref("release", s.get(ids[1]))
    s.set_pinned(s.get(ids[2]), True)
    plan = plan_evict(s, max_size=1, max_age=None)
    removed = [i.snapshot.id for i in plan.remove]
    assert removed == [ids[0], ids[3], ids[4]]
    assert plan.protected[ids[5]] == ["HEAD", NEWEST]
    assert plan.protected[ids[1]] == ["ref release"]
    assert plan.protected[ids[2]] == ["pinned"]
    assert not plan.budget_met
    assert all("over budget" in i.reason for i in plan.remove)
    # Running totals add up.
    run = plan.garbage_bytes
    for i in plan.remove:
        run += i.freed_bytes
        assert i.cumulative_bytes == run


def test_least_recently_accessed_goes_first_and_age_limit(tmp_path: Path) -> None:
    h = new_history(tmp_path)
    ids = []
    for i in range(5):
        h.write("f", 5000 + i)
        ids.append(h.snap())
    s = h.store
    h.clock._now += timedelta(days=10)
    s.touch(s.get(ids[0]))  # the oldest was just read: it is the most recently used now
    plan = plan_evict(s, max_size=None, max_age=Duration(days=7))
    assert [i.snapshot.id for i in plan.remove] == ids[1:4]
    assert all(i.reason.startswith("not accessed for 7d") for i in plan.remove)
    plan = plan_evict(s, max_size=None, max_age=Duration(days=30))
    assert plan.remove == ()
    with pytest.raises(UsageError):
        plan_evict(s, max_size=None, max_age=None)


def test_executed_plan_keeps_its_promise(tmp_path: Path) -> None:
    h = new_history(tmp_path)
    for i in range(8):
        h.write(f"big{i % 4}", 60_000 + i)
        h.write("small", 300 + i)
        h.snap()
    s = h.store
    s.forget([s.list_snapshots()[0].id])  # some garbage already there
    before = repo_size(s)
    budget = before // 2
    plan = s.plan_evict(max_size=budget, max_age=None)
    assert plan.remove and plan.budget_met and plan.garbage_bytes > 0
    assert plan.size_before == before
    result = s.evict(plan)
    assert set(result.removed) == {i.snapshot.id for i in plan.remove}
    actual = repo_size(s)
    assert abs(actual - plan.size_after) <= 0.01 * plan.size_after, (actual, plan.size_after)
    assert actual <= budget
    verify(h.reopen(), h.expected, tmp_path)


def test_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = new_history(tmp_path)
    for i in range(4):
        h.write("f", 20_000 + i)
        h.snap()
    s = h.store
    assert sweep(s, EvictConfig(max_size="", max_age="")) is None  # no limit configured
    h.clock._now += timedelta(days=30)
    cfg = EvictConfig(max_age="7d")
    with s.lock(exclusive=False, operation="snapshot"):  # busy: the next sweep retries
        assert sweep(s, cfg) is None
    res = sweep(s, cfg)
    assert res is not None and len(res.removed) == 3
    assert len(s.list_snapshots()) == 1
    assert sweep(s, cfg) is None  # nothing left to do
    verify(h.reopen(), h.expected, tmp_path)

    def locked(*_a: object, **_k: object) -> None:
        raise StoreLocked("busy")

    monkeypatch.setattr(Store, "prune", locked)
    assert sweep(h.store, EvictConfig(max_size="1")) is None


def test_exclude_plans_for_the_repository_without_them(tmp_path: Path) -> None:
    h = new_history(tmp_path)
    ids = []
    for i in range(7):
        h.write(f"f{i % 3}", 20_000 + i)
        ids.append(h.snap())
    s = h.store
    gone = [ids[1], ids[4]]
    plan = plan_evict(s, max_size=1, max_age=None, exclude=gone)
    assert not {i.snapshot.id for i in plan.remove} & set(gone)
    s.forget(gone)  # the same plan as for a repository where they are forgotten already
    after = plan_evict(s, max_size=1, max_age=None)
    assert [i.snapshot.id for i in plan.remove] == [i.snapshot.id for i in after.remove]
    assert [i.exclusive_bytes for i in plan.remove] == [i.exclusive_bytes for i in after.remove]
    assert plan.size_after == after.size_after
    assert plan.garbage_bytes > after.garbage_bytes  # their objects and data: reclaimable


def test_usage_cache_gives_the_same_graph_and_reads_only_new_trees(tmp_path: Path) -> None:
    h = random_history(tmp_path, 5, n=6)
    repo, cache = h.store.repo, tmp_path / "usage.bin"
    snaps = h.store.list_snapshots()
    cold = UsageGraph.build(repo, snaps, cache=cache)
    assert cold.trees_read > 0 and cache.exists()
    warm = UsageGraph.build(repo, snaps, cache=cache)
    assert warm.trees_read == 0
    assert (
        snapshot_usage(warm)
        == snapshot_usage(cold)
        == snapshot_usage(UsageGraph.build(repo, snaps))
    )
    assert (warm.live_bytes, warm.live_nodes) == (cold.live_bytes, cold.live_nodes)
    h.write("d/e/new", 9000)  # one new file: only the trees on its path are read
    h.snap()
    snaps = h.store.list_snapshots()
    more = UsageGraph.build(repo, snaps, cache=cache)
    assert 0 < more.trees_read <= 3
    fresh = UsageGraph.build(repo, snaps)
    assert snapshot_usage(more) == snapshot_usage(fresh)
    # A damaged cache is ignored (checksum), never trusted.
    data = bytearray(cache.read_bytes())
    data[40] ^= 0xFF
    cache.write_bytes(bytes(data))
    again = UsageGraph.build(repo, snaps, cache=cache)
    assert again.trees_read == fresh.trees_read  # every tree read again
    assert snapshot_usage(again) == snapshot_usage(more)


def test_usage_cache_follows_forget_and_prune_without_rereading(tmp_path: Path) -> None:
    """The cached graph is brought up to date, not rebuilt: snapshots forgotten since are
    released (no tree read), a prune's replaced index segments make every size be looked up
    again; either way the result equals a fresh build. Unchanged, nothing is read or written:
    neither the index nor the file."""
    h = random_history(tmp_path, 7, n=8)
    repo, cache = h.store.repo, tmp_path / "usage.bin"
    UsageGraph.build(repo, h.store.list_snapshots(), cache=cache)
    stamp = cache.stat().st_mtime_ns
    h.reopen()
    repo = h.store.repo
    same = UsageGraph.build(repo, h.store.list_snapshots(), cache=cache)
    assert same.trees_read == 0 and cache.stat().st_mtime_ns == stamp
    assert repo._index is None  # the sizes came from the file, not from the index
    snaps = h.store.list_snapshots()
    h.store.forget([snaps[1].id, snaps[4].id])
    left = h.store.list_snapshots()
    after_forget = UsageGraph.build(repo, left, cache=cache)
    assert after_forget.trees_read == 0
    assert snapshot_usage(after_forget) == snapshot_usage(UsageGraph.build(repo, left))
    h.store.prune(max_repack_ratio=1.0)  # rewrites segments: blobs moved to new packs
    after_prune = UsageGraph.build(repo, left, cache=cache)
    assert after_prune.trees_read == 0
    fresh = UsageGraph.build(repo, left)
    assert snapshot_usage(after_prune) == snapshot_usage(fresh)
    exclusive = {sid: u.exclusive_bytes for sid, u in snapshot_usage(after_prune).items()}
    assert exclusive == brute_force_exclusive(h.store)
    assert (after_prune.live_bytes, after_prune.live_nodes, after_prune.index_entries) == (
        fresh.live_bytes,
        fresh.live_nodes,
        fresh.index_entries,
    )
