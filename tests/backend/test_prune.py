"""Prune: mark and sweep on real repositories; crash safety by injected failures at every step.

The helpers at the top (``History``) are shared with test_evict.py.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.clock import FixedClock
from backend.errors import IntegrityError
from backend.snapshots import SnapshotOptions
from backend.store import Store
from tests.conftest import read_tree

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class History:
    """A source directory and the content each snapshot of it must restore to."""

    root: Path
    store: Store
    src: Path
    rng: random.Random
    clock: FixedClock
    expected: dict[str, dict[bytes, Any]] = field(default_factory=dict)
    n: int = 0

    def write(self, name: str, size: int) -> None:
        (self.src / name).write_bytes(self.rng.randbytes(size))

    def snap(self, **kw: Any) -> str:
        self.n += 1
        self.clock._now = T0 + timedelta(hours=self.n)
        res = self.store.create_snapshot(
            self.src, options=SnapshotOptions(time=self.clock.now(), **kw)
        )
        sid = res.snapshot.id
        self.expected[sid] = read_tree(self.src)
        return sid

    def reopen(self) -> Store:
        self.store.close()
        self.store = Store.open(self.root / "repo", cache_dir=self.root / "cache", clock=self.clock)
        return self.store


def new_history(root: Path, seed: int = 1) -> History:
    clock = FixedClock(T0)
    src = root / "src"
    src.mkdir(parents=True)
    store = Store.init(root / "repo", cache_dir=root / "cache", clock=clock)
    return History(root, store, src, random.Random(seed), clock)


def verify(store: Store, expected: dict[str, dict[bytes, Any]], tmp: Path) -> None:
    """Every snapshot in the repository restores byte-exact."""
    snaps = store.list_snapshots()
    assert {s.id for s in snaps} <= set(expected)
    for s in snaps:
        out = tmp / f"restore-{s.id[:12]}"
        shutil.rmtree(out, ignore_errors=True)
        store.restore(s, out)
        assert read_tree(out) == expected[s.id], s.short_id


def pack_count(store: Store) -> int:
    return sum(1 for _ in store.storage.list("data"))


def disk(store: Store, kinds: tuple[str, ...] = ("data", "index", "snapshots")) -> int:
    return sum(i.size for k in kinds for i in store.storage.list(k))


def sample_history(root: Path) -> History:
    """Six snapshots: big files rewritten, small edits, then the three oldest forgotten."""
    h = new_history(root)
    for i in range(6):
        h.write(f"f{i}", 40_000)
    h.write("keep", 2000)
    h.snap()
    for i in range(5):
        h.write(f"f{i}", 40_000 + i)
        (h.src / "keep").write_bytes(b"x" * (i + 1))
        h.snap()
    old = [s.id for s in h.store.list_snapshots()[:3]]
    h.store.forget(old)
    return h


# ---------------------------------------------------------------------------- behaviour


def test_prune_frees_forgotten_data_and_keeps_the_rest(tmp_path: Path) -> None:
    h = sample_history(tmp_path)
    before = disk(h.store, ("data",))
    plan = h.store.plan_prune()
    assert plan.delete or plan.repack
    assert disk(h.store, ("data",)) == before  # the plan changes nothing
    res = h.store.prune()
    after = disk(h.store, ("data",))
    # Three forgotten snapshots each held 40 kB of random data alone.
    assert before - after >= 3 * 40_000
    assert after <= plan.live_bytes * 1.02 + 4096
    verify(h.reopen(), h.expected, tmp_path)
    assert h.store.plan_prune().nothing_to_do  # converged
    assert res.bytes_after == disk(h.store, ("data", "index"))


def test_prune_consolidates_small_packs_and_converges(tmp_path: Path) -> None:
    h = new_history(tmp_path)
    for i in range(12):  # watch-style: one small pack (or two) per checkpoint
        h.write(f"f{i % 3}", 3000 + i)
        h.snap(trigger="watch")
    packs = pack_count(h.store)
    assert packs >= 12
    h.store.prune()
    assert pack_count(h.store) <= 2  # one data pack and one tree pack
    verify(h.reopen(), h.expected, tmp_path)
    assert h.store.plan_prune().nothing_to_do


def test_prune_deletes_orphan_packs(tmp_path: Path) -> None:
    h = sample_history(tmp_path)
    h.store.prune()
    orphan = "ab" * 32
    h.store.storage.put("data", orphan, b"left by a crashed writer")
    plan = h.store.plan_prune()
    assert plan.orphans == 1 and orphan in plan.delete
    h.store.prune()
    assert not h.store.storage.exists("data", orphan)
    verify(h.reopen(), h.expected, tmp_path)


def test_prune_refuses_when_live_data_is_missing(tmp_path: Path) -> None:
    h = sample_history(tmp_path)
    h.store.prune()
    h.write("new", 10_000)
    sid = h.snap()
    snap = h.store.get(sid)
    entry = h.store.entry(snap, "new")
    assert entry is not None
    pack = h.store.repo.index.get(entry.content[0])
    assert pack is not None
    h.store.storage.delete("data", pack.pack)
    names = sorted(i.name for k in ("data", "index") for i in h.store.storage.list(k))
    with pytest.raises(IntegrityError, match="refuses"):
        h.reopen().prune()
    assert sorted(i.name for k in ("data", "index") for i in h.store.storage.list(k)) == names


def test_prune_dry_run_and_ratio_zero_keep_sparse_packs(tmp_path: Path) -> None:
    h = sample_history(tmp_path)
    names = sorted(i.name for i in h.store.storage.list("data"))
    lazy = h.store.plan_prune(max_repack_ratio=0.0)
    assert lazy.small_packs == len(lazy.repack)  # ratio 0: only consolidation, never sparse
    assert sorted(i.name for i in h.store.storage.list("data")) == names
    eager = h.store.plan_prune(max_repack_ratio=1.0)
    assert eager.bytes_reclaimed >= lazy.bytes_reclaimed


# ---------------------------------------------------------------------------- crash safety


class Boom(Exception):
    """The injected failure."""


def _arm(store: Store, fail_at: int) -> list[str]:
    """Make the k-th write or delete of a pack or index segment fail; returns the step log."""
    storage = store.storage
    steps: list[str] = []
    put, delete = storage.put, storage.delete

    def step(what: str) -> None:
        if len(steps) == fail_at:
            raise Boom(what)
        steps.append(what)

    def failing_put(kind: str, name: str, data: Any, *, overwrite: bool = False) -> None:
        if kind in ("data", "index"):
            step(f"put {kind}")
        put(kind, name, data, overwrite=overwrite)

    def failing_delete(kind: str, name: str) -> None:
        if kind in ("data", "index"):
            step(f"delete {kind}")
        delete(kind, name)

    storage.put = failing_put  # type: ignore[method-assign]
    storage.delete = failing_delete  # type: ignore[method-assign]
    return steps


def test_prune_interrupted_at_every_step_stays_valid_and_converges(tmp_path: Path) -> None:
    base = tmp_path / "base"
    h = sample_history(base)
    for i in range(4):  # small packs to consolidate as well as sparse and dead ones
        h.write(f"w{i}", 500 + i)
        h.snap(trigger="watch")
    h.store.close()
    expected = h.expected

    # A clean run first, to count the steps.
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    with Store.open(clean / "repo", cache_dir=clean / "cache", clock=h.clock) as s:
        steps = _arm(s, 10**9)
        s.prune()
    kinds = set(steps)
    assert {"put data", "put index", "delete index", "delete data"} <= kinds, steps
    # Order of the design: every put before the first delete, index deletes before packs.
    first_delete = next(i for i, w in enumerate(steps) if w.startswith("delete"))
    assert all(w.startswith("put") for w in steps[:first_delete])
    assert all(w.startswith("delete") for w in steps[first_delete:])
    last_index_delete = max(i for i, w in enumerate(steps) if w == "delete index")
    first_pack_delete = steps.index("delete data")
    assert last_index_delete < first_pack_delete

    for k in range(len(steps)):
        run = tmp_path / f"k{k}"
        shutil.copytree(base, run)
        with Store.open(run / "repo", cache_dir=run / "cache", clock=h.clock) as s:
            _arm(s, k)
            with pytest.raises(Boom):
                s.prune()
        with Store.open(run / "repo", cache_dir=run / "cache", clock=h.clock) as s:
            verify(s, expected, run)  # valid right after the interruption
            s.prune()  # a re-run converges
            verify(s, expected, run)
            assert s.plan_prune().nothing_to_do, k
        shutil.rmtree(run)


def test_parallel_deletes_finish_every_other_delete_then_raise(tmp_path: Path) -> None:
    """``delete_objects`` (prune's and forget's deletes): a failing delete does not stop the
    others; the first failure is raised once all have run; progress counts the deleted."""
    from backend.errors import StoreError
    from backend.meta import delete_objects
    from backend.storage import LocalStorage

    storage = LocalStorage(tmp_path / "repo")
    storage.create()
    names = [f"{i:064x}" for i in range(50)]
    for n in names:
        storage.put("snapshots", n, b"x")

    class Failing:
        def __getattr__(self, attr: str) -> Any:
            return getattr(storage, attr)

        def delete(self, kind: str, name: str) -> None:
            if name in (names[7], names[30]):
                raise StoreError(f"cannot delete {name}")
            storage.delete(kind, name)

    done: list[int] = []
    with pytest.raises(StoreError, match="cannot delete"):
        delete_objects(Failing(), "snapshots", names, done.append)  # type: ignore[arg-type]
    assert {i.name for i in storage.list("snapshots")} == {names[7], names[30]}
    assert sum(done) == 48
    delete_objects(storage, "snapshots", [names[7], names[30], "0" * 64])  # re-runs converge
    assert not list(storage.list("snapshots"))
