"""Refs, tags, pins, HEADs and last access: mutable metadata that never changes a snapshot id."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.clock import FixedClock
from backend.errors import SnapshotNotFound, UsageError
from backend.meta import Meta, Note
from backend.store import Store


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    (d / "a.txt").write_text("one")
    return d


def test_tags_edit_keeps_id_and_survives_reopen(store: Store, src: Path) -> None:
    snap = store.create_snapshot(src).snapshot
    edited = store.set_tags(snap, add=["keep", "x"])
    assert edited.id == snap.id and edited.tags == ("keep", "x")
    edited = store.set_tags(edited, remove=["x"])
    assert edited.tags == ("keep",)
    # the snapshot object is untouched; the list and resolve show the edited tags
    assert store.repo.load_snapshot(snap.id).tags == ()
    assert [s.tags for s in store.list_snapshots()] == [("keep",)]
    assert store.resolve(snap.id[:8]).tags == ("keep",)
    assert [s.id for s in store.list_snapshots(tags=["keep"])] == [snap.id]
    with pytest.raises(UsageError):
        store.set_tags(snap, add=["a,b"])


def test_pin_and_protection_reasons(store: Store, src: Path) -> None:
    s1 = store.create_snapshot(src).snapshot
    (src / "a.txt").write_text("two")
    s2 = store.create_snapshot(src).snapshot
    assert store.protection() == {s2.id: ["HEAD"]}
    assert store.set_pinned(s1, True).pinned
    store.add_ref("release", s1)
    assert store.protection() == {s2.id: ["HEAD"], s1.id: ["ref release", "pinned"]}
    assert store.resolve("release").id == s1.id
    assert store.resolve("release~0").id == s1.id
    assert store.resolve(f"{s2.id[:8]}~1").id == s1.id
    assert store.set_pinned(s1, False).pinned is False
    store.remove_ref("release")
    with pytest.raises(SnapshotNotFound):
        store.remove_ref("release")
    with pytest.raises(UsageError):
        store.add_ref("HEAD", s1)
    with pytest.raises(UsageError):
        store.add_ref("a/b", s1)
    assert store.protection() == {s2.id: ["HEAD"]}


def test_head_moves_and_is_listed(store: Store, src: Path) -> None:
    s1 = store.create_snapshot(src).snapshot
    (src / "a.txt").write_text("two")
    s2 = store.create_snapshot(src).snapshot
    assert store.head(str(src)).id == s2.id
    store.set_head(s1)
    assert store.head(str(src)).id == s1.id
    (src / "a.txt").write_text("three")
    s3 = store.create_snapshot(src).snapshot
    assert s3.parent == s1.id  # history branches after HEAD moved
    assert [(h.source, h.snapshot) for h in store.heads()] == [(str(src), s3.id)]


def test_touch_is_throttled_and_recorded(tmp_path: Path, src: Path) -> None:
    clock = FixedClock(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    st = Store.init(tmp_path / "repo", clock=clock)
    snap = st.create_snapshot(src).snapshot
    assert st.last_access() == {snap.id: snap.time}
    clock.advance(3600)
    list(st.ls(snap))
    t1 = clock.now()
    assert st.last_access()[snap.id] == t1
    clock.advance(10)
    list(st.ls(snap))  # within the throttle window: not written again
    assert st.last_access()[snap.id] == t1
    clock.advance(300)
    st.diff(snap, snap)
    assert st.last_access()[snap.id] == clock.now()
    st.close()


def test_concurrent_tag_edits_in_process_lose_nothing(store: Store, src: Path) -> None:
    snap = store.create_snapshot(src).snapshot
    tags = [f"t{i}" for i in range(16)]
    threads = [
        threading.Thread(target=store.set_tags, args=(snap,), kwargs={"add": [t]}) for t in tags
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(store.get(snap.id).tags) == sorted(tags)


def test_forget_removes_snapshot_and_its_note(store: Store, src: Path) -> None:
    s1 = store.create_snapshot(src).snapshot
    store.set_tags(s1, add=["old"])
    (src / "a.txt").write_text("two")
    s2 = store.create_snapshot(src).snapshot
    assert store.forget([s1.id, "0" * 64]) == [s1.id]
    assert [s.id for s in store.list_snapshots()] == [s2.id]
    assert store.meta.notes() == {}
    assert b"".join(store.read_file(s2, "a.txt")) == b"two"


class CountingStorage:
    """A real storage that records what each listing asked for and how much it returned."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.listed: list[tuple[str, str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list(self, kind: str, prefix: str = "") -> Iterator[Any]:
        infos = list(self.inner.list(kind, prefix))
        self.listed.append((kind, prefix, len(infos)))
        return iter(infos)


def test_metadata_reads_list_only_their_folder_once_per_operation(store: Store, src: Path) -> None:
    """(issue 4) Many access records cost nothing to reading HEADs, refs and notes: each is
    listed by its own folder; inside ``Meta.cached`` each folder is listed once, and the
    thread's own writes are seen."""
    snaps = []
    for i in range(3):
        (src / "a.txt").write_text(str(i))
        snaps.append(store.create_snapshot(src).snapshot)
    store.set_pinned(snaps[0], True)
    store.add_ref("main", snaps[1])
    for i in range(200):  # access records of snapshots long gone, as after many forgets
        store.meta.touch(f"{i:064x}", datetime(2026, 1, 1, tzinfo=UTC))
    counting = CountingStorage(store.storage)
    meta = Meta(counting)
    assert meta.heads() and meta.refs() == {"main": snaps[1].id}
    assert set(meta.notes()) == {snaps[0].id}
    assert [(k, p) for k, p, _n in counting.listed] == [
        ("refs", "heads/"),
        ("refs", "named/"),
        ("refs", "notes/"),
    ]
    assert sum(n for _k, _p, n in counting.listed) == 3  # no access record was listed
    counting.listed.clear()
    with meta.cached():
        for _ in range(3):
            meta.notes()
            meta.heads()
        assert len(counting.listed) == 2
        meta.set_note(snaps[2].id, Note(("t",), True))  # a write drops what was read
        assert set(meta.notes()) == {snaps[0].id, snaps[2].id}
        seen_elsewhere: list[set[str]] = []
        t = threading.Thread(target=lambda: seen_elsewhere.append(set(meta.notes())))
        t.start()
        t.join()
        assert len(counting.listed) == 4  # the other thread read the storage itself
    meta.notes()
    assert len(counting.listed) == 5  # outside the block, every call reads
    assert seen_elsewhere == [{snaps[0].id, snaps[2].id}]
    assert len(store.meta.access_times()) == 200
