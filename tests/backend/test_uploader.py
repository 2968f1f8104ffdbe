"""Background pack uploads (issue 7): bounded, errors never lost, write order kept, packs in
flight readable and deduplicated."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from backend.errors import StoreError
from backend.format import BLOB_DATA
from backend.ids import BlobId
from backend.repository import Repository
from backend.storage.memory import MemoryStorage
from backend.uploader import PackUploader

PACK = 1024 * 1024


def wait_until(cond: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# ---------------------------------------------------------------- the uploader itself


def test_slots_bound_jobs_in_flight() -> None:
    up = PackUploader(2, 3)
    gate = threading.Event()
    running: list[int] = []
    submitted = threading.Event()

    def job(i: int) -> Callable[[], None]:
        def run() -> None:
            running.append(i)
            gate.wait()

        return run

    for i in range(3):
        up.submit(job(i), lambda: None)
    t = threading.Thread(target=lambda: (up.submit(job(3), lambda: None), submitted.set()))
    t.start()
    time.sleep(0.2)
    assert not submitted.is_set()  # the fourth waits for a slot
    assert up.in_flight == 3
    assert len(running) == 2  # two threads
    gate.set()
    t.join(10)
    up.wait()
    assert sorted(running) == [0, 1, 2, 3] and up.in_flight == 0
    up.close()


def test_an_error_is_sticky_until_wait_reports_it() -> None:
    up = PackUploader(1, 1)
    undone: list[str] = []

    def boom() -> None:
        raise StoreError("disk on fire")

    up.submit(boom, lambda: undone.append("first"))
    wait_until(lambda: up.in_flight == 0)
    assert undone == ["first"]
    ran: list[bool] = []
    for _ in range(2):  # every later submit refuses, and undoes its own job
        with pytest.raises(StoreError, match="disk on fire"):
            up.submit(lambda: ran.append(True), lambda: undone.append("later"))
    assert ran == [] and undone == ["first", "later", "later"]
    with pytest.raises(StoreError, match="disk on fire"):
        up.check()
    with pytest.raises(StoreError, match="disk on fire"):
        up.wait()
    up.wait()  # reported once: the next batch starts clean
    up.submit(lambda: ran.append(True), lambda: None)
    up.wait()
    assert ran == [True]
    up.close()


def test_wait_covers_only_jobs_submitted_before_it() -> None:
    """A checkpoint flush must end while other threads keep producing packs."""
    up = PackUploader(2, 2)
    first_done = threading.Event()
    gate = threading.Event()

    def first() -> None:
        time.sleep(0.05)
        first_done.set()

    up.submit(first, lambda: None)
    waiter = threading.Thread(target=up.wait)
    waiter.start()
    up.submit(gate.wait, lambda: None)  # submitted after the wait began: not waited for
    waiter.join(10)
    assert not waiter.is_alive() and first_done.is_set()
    gate.set()
    up.wait()
    up.close()


def test_zero_threads_runs_inline() -> None:
    up = PackUploader(0, 1)
    where: list[str] = []
    up.submit(lambda: where.append(threading.current_thread().name), lambda: None)
    assert where == [threading.current_thread().name]
    undone: list[bool] = []

    def boom() -> None:
        raise StoreError("no")

    with pytest.raises(StoreError):
        up.submit(boom, lambda: undone.append(True))
    assert undone == [True]


# ---------------------------------------------------------------- the repository's use of it


class GatedStorage(MemoryStorage):
    """Memory storage whose pack writes wait for a gate, recording the order of writes."""

    upload_threads = 2

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next_pack: str | None = None
        self.delay = 0.0
        self.log: list[tuple[str, str, str]] = []  # (event, kind, name)
        self.active = 0
        self.max_active = 0
        self._mu = threading.Lock()

    def put(self, kind: str, name: str, data: Any, *, overwrite: bool = False) -> None:
        if kind == "data":
            with self._mu:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                self.gate.wait()
                time.sleep(self.delay)
                if self.fail_next_pack is not None:
                    msg, self.fail_next_pack = self.fail_next_pack, None
                    raise StoreError(msg)
                super().put(kind, name, data, overwrite=overwrite)
            finally:
                with self._mu:
                    self.active -= 1
        else:
            super().put(kind, name, data, overwrite=overwrite)
        self.log.append(("done", kind, name))


@pytest.fixture
def gated() -> tuple[Repository, GatedStorage]:
    storage = GatedStorage()
    return Repository.init(storage), storage


def blobs(repo: Repository, n: int, seed: int) -> list[tuple[BlobId, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        data = rng.randbytes(256 * 1024)  # incompressible: 4 per 1 MiB pack
        out.append((repo.hash_blob(data), data))
    return out


def test_packs_in_flight_are_readable_deduplicated_and_bounded(
    gated: tuple[Repository, GatedStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, storage = gated
    monkeypatch.setattr(repo._data_writer, "target_size", PACK)
    storage.gate.clear()  # uploads hang until released
    items = blobs(repo, 40, 1)
    produced: list[int] = []

    def produce() -> None:
        for i, (bid, data) in enumerate(items):
            assert repo.put_blob(BLOB_DATA, bid, data).new
            produced.append(i)

    t = threading.Thread(target=produce)
    t.start()
    wait_until(lambda: repo.uploads_in_flight == 2 and len(produced) >= 11)
    time.sleep(0.2)
    # Two packs in flight (both upload threads busy), the producer blocked on the third:
    # memory is bounded by the slots, not by how much is produced.
    assert repo.uploads_in_flight == 2 and t.is_alive()
    assert len(produced) <= 12
    for bid, data in items[:8]:  # blobs of packs being uploaded: readable, and known
        assert repo.read_blob(bid) == data
        assert not repo.put_blob(BLOB_DATA, bid, data).new
    assert storage.max_active == 2
    storage.gate.set()
    t.join(30)
    repo.flush()
    assert repo.uploads_in_flight == 0
    reopened = Repository.open(storage)
    for bid, data in items:
        assert reopened.read_blob(bid) == data


def test_flush_writes_the_index_after_every_pack_it_names(
    gated: tuple[Repository, GatedStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, storage = gated
    monkeypatch.setattr(repo._data_writer, "target_size", PACK)
    storage.delay = 0.05  # the last pack is still uploading when flush is called
    for bid, data in blobs(repo, 30, 2):
        repo.put_blob(BLOB_DATA, bid, data)
    repo.flush()
    stored_packs: set[str] = set()
    indexed = 0
    for _event, kind, name in storage.log:
        if kind == "data":
            stored_packs.add(name)
        elif kind == "index":
            for pack_id, _entries in repo.read_index_segment(name):
                assert pack_id in stored_packs, "an index segment named a pack not yet stored"
                indexed += 1
    assert indexed == len(stored_packs) >= 7


def test_a_failed_upload_fails_the_flush_and_indexes_nothing_of_it(
    gated: tuple[Repository, GatedStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, storage = gated
    monkeypatch.setattr(repo._data_writer, "target_size", PACK)
    storage.fail_next_pack = "injected: connection reset"
    items = blobs(repo, 6, 3)
    for bid, data in items[:4]:  # exactly fills the first pack, which fails in the background
        repo.put_blob(BLOB_DATA, bid, data)
    wait_until(lambda: repo.uploads_in_flight == 0)
    assert not repo.has_blob(items[0][0])  # its blobs are not counted as stored
    with pytest.raises(StoreError, match="connection reset"):
        repo.flush()
    assert list(storage.list("data")) == []
    assert list(storage.list("index")) == []
    for bid, data in items:  # the next batch stores everything again, and succeeds
        assert repo.put_blob(BLOB_DATA, bid, data).new
    repo.flush()
    reopened = Repository.open(storage)
    for bid, data in items:
        assert reopened.read_blob(bid) == data


def test_an_error_reaches_the_flush_even_if_a_producer_swallowed_it(
    gated: tuple[Repository, GatedStorage], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline that catches a failing put as a per-file problem must still not commit."""
    repo, storage = gated
    monkeypatch.setattr(repo._data_writer, "target_size", PACK)
    storage.fail_next_pack = "injected: 503 slow down"
    items = blobs(repo, 12, 4)
    raised = 0
    for bid, data in items:
        try:
            repo.put_blob(BLOB_DATA, bid, data)
        except StoreError:
            raised += 1  # swallowed, as a per-file error would be
        wait_until(lambda: repo.uploads_in_flight == 0)
    assert raised >= 1
    with pytest.raises(StoreError, match="503"):
        repo.flush()
