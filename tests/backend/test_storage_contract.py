"""One conformance suite for every ObjectStorage, plus LocalStorage's on-disk guarantees."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.errors import ObjectExists, ObjectNotFound, StoreError, UsageError
from backend.storage import (
    KINDS,
    LocalStorage,
    MemoryStorage,
    ObjectStorage,
    open_storage,
)
from tests.s3.server import BUCKET, SeaweedServer, new_prefix, s3_server  # noqa: F401

PACK = "ab" + "0" * 62
OTHER_PACK = "cd" + "1" * 62


@pytest.fixture(params=["memory", "local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStorage]:
    store: ObjectStorage
    if request.param == "memory":
        store = MemoryStorage()
    elif request.param == "local":
        store = LocalStorage(tmp_path / "repo")
    else:  # a real SeaweedFS server on loopback, a fresh prefix per test
        server: SeaweedServer = request.getfixturevalue("s3_server")
        store = server.storage(BUCKET, new_prefix())
    store.create()
    yield store
    store.close()


def names(store: ObjectStorage, kind: str) -> set[str]:
    return {info.name for info in store.list(kind)}


# -- the contract ------------------------------------------------------------------------------


def test_is_a_storage(storage: ObjectStorage) -> None:
    assert isinstance(storage, ObjectStorage)
    assert storage.location


def test_create_is_idempotent_and_config_marks_initialized(storage: ObjectStorage) -> None:
    storage.create()
    assert not storage.is_initialized()
    storage.put("config", "config", b"{}")
    assert storage.is_initialized()
    storage.create()
    assert storage.get("config", "config") == b"{}"
    assert names(storage, "config") == {"config"}


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_kind(storage: ObjectStorage, kind: str) -> None:
    name = "config" if kind == "config" else PACK
    data = bytes(range(256)) * 3
    storage.put(kind, name, data)
    assert storage.get(kind, name) == data
    assert storage.exists(kind, name)


def test_empty_object(storage: ObjectStorage) -> None:
    storage.put("index", "empty", b"")
    assert storage.get("index", "empty") == b""
    assert storage.stat("index", "empty").size == 0


def test_put_without_overwrite_keeps_first(storage: ObjectStorage) -> None:
    storage.put("snapshots", "s1", b"first")
    with pytest.raises(ObjectExists):
        storage.put("snapshots", "s1", b"second")
    assert storage.get("snapshots", "s1") == b"first"


def test_overwrite_replaces(storage: ObjectStorage) -> None:
    storage.put("refs", "heads/main", b"one")
    storage.put("refs", "heads/main", b"two", overwrite=True)
    assert storage.get("refs", "heads/main") == b"two"
    storage.put("refs", "new", b"created", overwrite=True)
    assert storage.get("refs", "new") == b"created"


def test_concurrent_create_if_absent_has_one_winner(storage: ObjectStorage) -> None:
    contents = [f"writer {i} ".encode() * 1000 for i in range(8)]
    barrier = threading.Barrier(len(contents))
    winners: list[int] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            storage.put("locks", "contended", contents[i])
            winners.append(i)
        except ObjectExists:
            pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(contents))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(winners) == 1
    assert storage.get("locks", "contended") == contents[winners[0]]
    assert names(storage, "locks") == {"contended"}


def test_get_range(storage: ObjectStorage) -> None:
    data = bytes(range(100))
    storage.put("data", PACK, data)
    assert storage.get_range("data", PACK, 0, 10) == data[:10]
    assert storage.get_range("data", PACK, 40, 20) == data[40:60]
    assert storage.get_range("data", PACK, 90, 10) == data[90:]
    assert storage.get_range("data", PACK, 95, 10) == data[95:]  # short only at the end
    assert storage.get_range("data", PACK, 100, 5) == b""
    assert storage.get_range("data", PACK, 500, 5) == b""
    assert storage.get_range("data", PACK, 3, 0) == b""
    with pytest.raises(UsageError):
        storage.get_range("data", PACK, -1, 5)
    with pytest.raises(ObjectNotFound):
        storage.get_range("data", OTHER_PACK, 0, 1)


def test_missing_objects(storage: ObjectStorage) -> None:
    assert not storage.exists("data", PACK)
    with pytest.raises(ObjectNotFound):
        storage.get("data", PACK)
    with pytest.raises(ObjectNotFound):
        storage.stat("data", PACK)
    with pytest.raises(ObjectNotFound):
        storage.get("config", "config")


def test_stat(storage: ObjectStorage) -> None:
    before = time.time()
    storage.put("index", "i1", b"12345")
    info = storage.stat("index", "i1")
    assert info.name == "i1"
    assert info.size == 5
    assert before - 2 <= info.mtime <= time.time() + 2


def test_list_per_kind(storage: ObjectStorage) -> None:
    for kind in KINDS:
        assert names(storage, kind) == set()
    storage.put("data", PACK, b"p1")
    storage.put("data", OTHER_PACK, b"p2")
    storage.put("index", "i1", b"i")
    storage.put("snapshots", "s1", b"s")
    storage.put("refs", "heads/abc", b"h")
    storage.put("refs", "pins/deep/x", b"p")
    storage.put("refs", "top", b"t")
    assert names(storage, "data") == {PACK, OTHER_PACK}  # no fan-out prefix
    assert names(storage, "index") == {"i1"}
    assert names(storage, "snapshots") == {"s1"}
    assert names(storage, "refs") == {"heads/abc", "pins/deep/x", "top"}
    assert names(storage, "keys") == set()
    assert {(i.name, i.size) for i in storage.list("data")} == {(PACK, 2), (OTHER_PACK, 2)}


def prefixed(store: ObjectStorage, kind: str, prefix: str) -> set[str]:
    return {info.name for info in store.list(kind, prefix)}


def test_list_with_prefix(storage: ObjectStorage) -> None:
    """(issue 4) A prefix lists only the names that start with it, in every kind; a ref
    folder ('access/') is listed without its siblings, at any depth."""
    for name in ("heads/abc", "heads/abd", "headsx", "access/s1", "access/s2", "top"):
        storage.put("refs", name, name.encode())
    storage.put("refs", "notes/deep/x", b"n")
    storage.put("refs", "notes/deeper", b"n")
    storage.put("data", PACK, b"p1")
    storage.put("data", "ab" + "9" * 62, b"p2")
    storage.put("data", OTHER_PACK, b"p3")
    storage.put("index", "i1", b"i")
    storage.put("index", "j1", b"j")
    storage.put("config", "config", b"{}")
    assert prefixed(storage, "refs", "") == names(storage, "refs")
    assert prefixed(storage, "refs", "heads/") == {"heads/abc", "heads/abd"}
    assert prefixed(storage, "refs", "heads") == {"heads/abc", "heads/abd", "headsx"}
    assert prefixed(storage, "refs", "heads/abc") == {"heads/abc"}
    assert prefixed(storage, "refs", "heads/ab") == {"heads/abc", "heads/abd"}
    assert prefixed(storage, "refs", "access/") == {"access/s1", "access/s2"}
    assert prefixed(storage, "refs", "notes/deep") == {"notes/deep/x", "notes/deeper"}
    assert prefixed(storage, "refs", "notes/deep/") == {"notes/deep/x"}
    assert prefixed(storage, "refs", "missing/") == set()
    assert prefixed(storage, "refs", "t") == {"top"}
    assert prefixed(storage, "data", "ab") == {PACK, "ab" + "9" * 62}
    assert prefixed(storage, "data", "ab0") == {PACK}
    assert prefixed(storage, "data", "c") == {OTHER_PACK}
    assert prefixed(storage, "data", "ef") == set()
    assert {(i.name, i.size) for i in storage.list("data", "cd")} == {(OTHER_PACK, 2)}
    assert prefixed(storage, "index", "i") == {"i1"}
    assert prefixed(storage, "config", "conf") == {"config"}
    assert prefixed(storage, "config", "x") == set()


@pytest.mark.parametrize(
    ("kind", "prefix"),
    [
        ("bogus", ""),
        ("data", "a/b"),
        ("refs", "../x"),
        ("refs", "a//b"),
        ("refs", "/a"),
        ("refs", ".tmp"),
        ("index", "a b"),
    ],
)
def test_invalid_list_prefix_rejected(storage: ObjectStorage, kind: str, prefix: str) -> None:
    with pytest.raises(UsageError):
        storage.list(kind, prefix)


def test_delete_is_idempotent(storage: ObjectStorage) -> None:
    storage.put("data", PACK, b"x")
    storage.delete("data", PACK)
    assert not storage.exists("data", PACK)
    storage.delete("data", PACK)
    storage.delete("refs", "never/was")
    assert names(storage, "data") == set()
    storage.put("data", PACK, b"again")  # write-once name is free again after delete
    assert storage.get("data", PACK) == b"again"


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("bogus", "x"),
        ("data", ""),
        ("data", ".."),
        ("data", "../escape"),
        ("data", ".tmp-abc"),
        ("data", "a b"),
        ("data", "a/b"),
        ("index", "x\x00"),
        ("refs", "heads//x"),
        ("refs", "/abs"),
        ("refs", "heads/"),
        ("refs", "heads/../x"),
        ("config", "other"),
        ("keys", "x" * 513),
    ],
)
def test_invalid_addresses_rejected(storage: ObjectStorage, kind: str, name: str) -> None:
    with pytest.raises(UsageError):
        storage.put(kind, name, b"x")
    with pytest.raises(UsageError):
        storage.get(kind, name)
    with pytest.raises(UsageError):
        storage.exists(kind, name)
    with pytest.raises(UsageError):
        storage.delete(kind, name)


def test_unknown_kind_rejected_by_list(storage: ObjectStorage) -> None:
    with pytest.raises(UsageError):
        storage.list("bogus")


def test_ref_cannot_also_be_a_folder(storage: ObjectStorage) -> None:
    storage.put("refs", "heads/abc", b"1", overwrite=True)
    with pytest.raises(UsageError):
        storage.put("refs", "heads", b"2", overwrite=True)
    with pytest.raises(UsageError):
        storage.put("refs", "heads", b"2")
    with pytest.raises(UsageError):
        storage.put("refs", "heads/abc/def", b"3", overwrite=True)
    assert not storage.exists("refs", "heads")
    with pytest.raises(ObjectNotFound):
        storage.get("refs", "heads")
    assert names(storage, "refs") == {"heads/abc"}


def test_list_never_shows_temp_files(storage: ObjectStorage) -> None:
    """Listings racing with writers show complete objects only."""
    stop = threading.Event()
    payload = b"z" * 50_000

    def writer() -> None:
        i = 0
        while not stop.is_set():
            storage.put("data", f"{i % 7:02x}{i % 40:06x}", payload, overwrite=True)
            storage.put("refs", f"heads/{i % 3}", payload, overwrite=True)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(30):
            for info in storage.list("data"):
                assert not info.name.startswith(".")
                assert info.size == len(payload)
            for info in storage.list("refs"):
                assert not info.name.split("/")[-1].startswith(".")
                assert info.size == len(payload)
    finally:
        stop.set()
        t.join()


def test_put_accepts_buffers(storage: ObjectStorage) -> None:
    buf = bytearray(b"mutable")
    storage.put("index", "buf", buf)  # type: ignore[arg-type]
    buf[:] = b"changed"
    assert storage.get("index", "buf") == b"mutable"


# -- open_storage ------------------------------------------------------------------------------


def test_open_storage(tmp_path: Path) -> None:
    local = open_storage(str(tmp_path / "r"))
    assert isinstance(local, LocalStorage)
    assert local.root == tmp_path / "r"
    assert isinstance(open_storage(f"file://{tmp_path}/r"), LocalStorage)
    assert isinstance(open_storage("memory://"), MemoryStorage)
    s3 = open_storage("s3://bucket/some/prefix")
    assert s3.location == "s3://bucket/some/prefix"
    for bad in ("s3://", "s3://B/x", "s3://bucket/../x", "s3://bucket/a b"):
        with pytest.raises(UsageError):
            open_storage(bad)
    with pytest.raises(UsageError):
        open_storage("ftp://host/x")
    with pytest.raises(UsageError):
        open_storage("")


# -- LocalStorage only -------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path / "repo")
    store.create()
    return store


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_layout_on_disk(local: LocalStorage) -> None:
    root = local.root
    assert {p.name for p in root.iterdir()} == set(KINDS) - {"config"}
    local.put("config", "config", b"c")
    local.put("keys", "k1", b"k")
    local.put("data", PACK, b"d")
    local.put("index", "i1", b"i")
    local.put("snapshots", "s1", b"s")
    local.put("locks", "l1", b"l")
    local.put("refs", "heads/abc", b"r")
    local.put("refs", "pins/a/b", b"r")
    assert all_files(root) == {
        "config",
        "keys/k1",
        f"data/ab/{PACK}",
        "index/i1",
        "snapshots/s1",
        "locks/l1",
        "refs/heads/abc",
        "refs/pins/a/b",
    }
    assert (root / "data" / "ab" / PACK).read_bytes() == b"d"


def test_put_creates_kind_dirs_on_demand(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    store = LocalStorage(tmp_path / "repo")
    store.put("data", PACK, b"x")
    assert store.get("data", PACK) == b"x"


def test_put_into_missing_root_fails_cleanly(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="cannot write"):
        store.put("data", PACK, b"x")
    assert not (tmp_path / "nowhere").exists()


def test_put_recreates_a_removed_directory(local: LocalStorage) -> None:
    local.put("data", PACK, b"x")
    local.delete("data", PACK)
    (local.root / "data" / "ab").rmdir()  # cached as existing, now gone
    local.put("data", PACK, b"y")
    assert local.get("data", PACK) == b"y"


def test_leftover_temp_file_is_hidden_and_cleaned(local: LocalStorage) -> None:
    local.put("data", PACK, b"real")
    crash = local.root / "data" / "ab" / ".tmp-xyz"
    crash.write_bytes(b"half a pack")
    ref_crash = local.root / "refs" / ".tmp-abc"
    ref_crash.write_bytes(b"half a ref")
    fresh = local.root / "index" / ".tmp-inflight"
    fresh.write_bytes(b"being written right now")
    old = time.time() - 3600
    os.utime(crash, (old, old))
    os.utime(ref_crash, (old, old))

    assert names(local, "data") == {PACK}
    assert names(local, "refs") == set()
    assert names(local, "index") == set()

    assert local.cleanup_temp(older_than_s=60) == 2
    assert not crash.exists()
    assert not ref_crash.exists()
    assert fresh.exists()  # too young: may be a write in flight
    assert local.get("data", PACK) == b"real"
    assert local.cleanup_temp(older_than_s=0) == 1
    assert local.cleanup_temp(older_than_s=0) == 0


def no_temp_files(root: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in root.rglob("*"))


@pytest.mark.parametrize("target", ["write", "fsync"])
@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("neighbour", [OTHER_PACK, "ab" + "2" * 62], ids=["new-dir", "old-dir"])
def test_failed_write_leaves_nothing(
    local: LocalStorage,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    overwrite: bool,
    neighbour: str,
) -> None:
    """With "old-dir" the fan-out directory exists, so the failure hits the temp file itself."""
    temp_existed: list[bool] = []

    def fail(*args: object) -> int:
        temp_existed.append(not no_temp_files(local.root))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    local.put("data", neighbour, b"unrelated")
    monkeypatch.setattr(os, target, fail)
    with pytest.raises(StoreError) as info:
        local.put("data", PACK, b"x" * 100_000, overwrite=overwrite)
    monkeypatch.undo()

    assert not isinstance(info.value, ObjectExists)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"cannot write {local.root / 'data' / 'ab' / PACK}: No space left on device"
    assert temp_existed
    if neighbour.startswith("ab"):
        assert temp_existed[-1]  # it failed midway through writing the temp file
    assert not local.exists("data", PACK)
    assert names(local, "data") == {neighbour}
    assert no_temp_files(local.root)


def test_failed_overwrite_keeps_old_content(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.put("refs", "heads/x", b"old")

    def fail(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(StoreError, match="Input/output error"):
        local.put("refs", "heads/x", b"new", overwrite=True)
    monkeypatch.undo()
    assert local.get("refs", "heads/x") == b"old"
    assert no_temp_files(local.root)


def test_losing_race_leaves_no_temp_file(local: LocalStorage) -> None:
    local.put("snapshots", "s1", b"first")
    with pytest.raises(ObjectExists):
        local.put("snapshots", "s1", b"second")
    assert no_temp_files(local.root)


def test_two_instances_share_a_directory(tmp_path: Path) -> None:
    a = LocalStorage(tmp_path / "repo")
    a.create()
    b = LocalStorage(tmp_path / "repo")
    a.put("refs", "heads/x", b"from a")
    assert b.get("refs", "heads/x") == b"from a"
    with pytest.raises(ObjectExists):
        b.put("refs", "heads/x", b"from b")
