"""S3Storage against a real server: settings, bucket creation, errors, atomicity, locks."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from backend.config import S3Config
from backend.errors import ObjectExists, ObjectNotFound, RepositoryNotFound, StoreError
from backend.locking import acquire_lock
from backend.storage import open_storage
from backend.storage import s3 as s3mod
from backend.storage.s3 import S3Settings, S3Storage
from tests.s3.server import BUCKET, SeaweedServer, new_bucket, new_prefix

PACK = "ab" + "0" * 62


def test_settings_env_beats_config_and_defaults() -> None:
    cfg = S3Config(
        endpoint="http://cfg:1",
        region="eu-west-1",
        path_style=False,
        access_key_id="cfg-id",
        secret_access_key="cfg-secret",
    )
    assert S3Settings.resolve(cfg, env={}) == S3Settings(
        endpoint="http://cfg:1",
        region="eu-west-1",
        path_style=False,
        access_key_id="cfg-id",
        secret_access_key="cfg-secret",
    )
    env = {
        "AWS_ENDPOINT_URL": "http://aws:2/",
        "SNAPDECK_S3_ENDPOINT": "http://mine:3",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "env-id",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_SESSION_TOKEN": "tok",
    }
    got = S3Settings.resolve(cfg, env=env)
    assert (got.endpoint, got.region, got.access_key_id, got.secret_access_key) == (
        "http://mine:3",
        "us-west-2",
        "env-id",
        "env-secret",
    )
    assert got.session_token == "tok"
    del env["SNAPDECK_S3_ENDPOINT"]
    env["AWS_REGION"] = "ap-south-1"
    got = S3Settings.resolve(None, env=env)
    assert (got.endpoint, got.region, got.path_style) == ("http://aws:2", "ap-south-1", True)
    # A key id without its secret in the environment does not shadow the config's pair.
    got = S3Settings.resolve(cfg, env={"AWS_ACCESS_KEY_ID": "half"})
    assert (got.access_key_id, got.secret_access_key) == ("cfg-id", "cfg-secret")
    assert S3Settings.resolve(None, env={}).region == "us-east-1"


def test_create_makes_the_bucket(s3_server: SeaweedServer) -> None:
    bucket = new_bucket()
    storage = s3_server.storage(bucket, "repo/one")
    assert not storage.is_initialized()  # a missing bucket is "no repository", not a crash
    with pytest.raises(RepositoryNotFound, match=f"bucket '{bucket}' does not exist"):
        list(storage.list("snapshots"))
    storage.create()
    storage.create()  # idempotent: the bucket exists now
    storage.put("config", "config", b"{}")
    assert storage.is_initialized()
    other = s3_server.storage(bucket, "repo/two")
    assert not other.is_initialized()  # prefixes are separate repositories
    assert (
        open_storage(f"s3://{bucket}/repo/one", s3_settings=s3_server.settings()).get(
            "config", "config"
        )
        == b"{}"
    )


@pytest.mark.parametrize("wrong", ["secret", "key id"])
def test_wrong_credentials_one_clear_line(s3_server: SeaweedServer, wrong: str) -> None:
    good = s3_server.storage(BUCKET, new_prefix())
    good.create()
    good.put("config", "config", b"{}")
    change = {"secret_access_key": "not-the-secret"} if wrong == "secret" else {}
    if wrong == "key id":
        change = {"access_key_id": "nobody"}
    bad = S3Storage(good.bucket, good.prefix, settings=s3_server.settings(**change))
    for call in (
        lambda: bad.get("config", "config"),
        bad.is_initialized,
        lambda: list(bad.list("data")),
        lambda: bad.put("index", "x", b"1"),
        bad.create,
    ):
        with pytest.raises(StoreError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"S3 refused access to {good.location}") or message.startswith(
            "S3 refused to create bucket"
        ), message
        assert "AWS_SECRET_ACCESS_KEY" in message or "credentials" in message
        assert type(info.value) is StoreError


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    from tests.s3.server import free_ports

    port = free_ports(1)[0]
    storage = S3Storage(
        BUCKET,
        "x",
        settings=S3Settings(
            endpoint=f"http://127.0.0.1:{port}",
            access_key_id="a",
            secret_access_key="b",
            max_retries=1,
            retry_timeout_s=1,
        ),
    )
    with pytest.raises(StoreError, match=f"cannot reach S3 endpoint http://127.0.0.1:{port}") as i:
        storage.get("config", "config")
    assert "\n" not in str(i.value)


def test_identical_retry_of_a_create_counts_as_written(s3: S3Storage) -> None:
    """A create whose reply was lost is retried; finding its own bytes there is success."""
    s3.put("locks", "l1", b"mine")
    s3.put("locks", "l1", b"mine")  # same bytes: our earlier attempt, not a rival
    with pytest.raises(ObjectExists):
        s3.put("locks", "l1", b"rival")
    assert s3.get("locks", "l1") == b"mine"


def test_a_pack_goes_as_its_parts_in_one_conditional_put(s3: S3Storage) -> None:
    """A pack's parts are sent in one PUT without being joined; a second writer of the name
    is refused by the server (create-if-absent), and an identical small retry counts."""
    parts = [bytes([i]) * (1000 + i) for i in range(256)]
    s3.put("data", PACK, parts)
    assert s3.requests["PUT data"] == 1 and s3.requests["HEAD data"] == 0
    assert s3.get("data", PACK) == b"".join(parts)
    s3.put("data", PACK, list(parts))  # our own lost-reply retry: identical bytes
    with pytest.raises(ObjectExists):
        s3.put("data", PACK, parts[:-1])
    assert s3.get("data", PACK) == b"".join(parts)


def test_compare_and_swap(s3: S3Storage) -> None:
    s3.put("refs", "heads/x", b"v1")
    tag = s3.etag("refs", "heads/x")
    new_tag = s3.replace_if("refs", "heads/x", b"v2", tag)
    assert new_tag and new_tag != tag
    with pytest.raises(ObjectExists):
        s3.replace_if("refs", "heads/x", b"v3", tag)  # stale etag: someone else won
    assert s3.get("refs", "heads/x") == b"v2"
    s3.delete("refs", "heads/x")
    with pytest.raises(ObjectExists):
        s3.replace_if("refs", "heads/x", b"v4", new_tag)


def _settle(s3: S3Storage) -> None:
    """Wait until no window is being fetched (read-ahead runs in background threads)."""
    deadline = time.monotonic() + 30
    while s3._cache._pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not s3._cache._pending


def test_read_ahead_fetches_each_window_once(s3: S3Storage) -> None:
    """Short pack reads are served from aligned 4 MiB windows. Walking on into the next
    window reads the one after it ahead, in the background: a walk through a pack costs one
    GET per window, each made once, and none past the pack's end. A lone read fetches only
    its own window."""
    data = bytes(range(256)) * 40_000  # ~9.8 MiB: windows 0, 1 and a short 2
    s3.put("data", PACK, data)
    before = s3.requests["GET"]
    for off in range(0, 3_000_000, 100_003):
        assert s3.get_range("data", PACK, off, 5000) == data[off : off + 5000]
    _settle(s3)
    assert s3.requests["GET"] - before == 1  # window 0 only: nothing says the walk goes on
    for off in range(3_000_000, len(data), 65_537):  # on into window 1: 2 is read ahead
        assert s3.get_range("data", PACK, off, 5000) == data[off : off + 5000]
    _settle(s3)
    assert s3.requests["GET"] - before == 3
    assert ("data/ab/" + PACK, 2) in s3._cache._windows
    edge = 4 * 1024 * 1024 - 100  # a read across two windows
    assert s3.get_range("data", PACK, edge, 300) == data[edge : edge + 300]
    tail = len(data) - 10
    assert s3.get_range("data", PACK, tail, 5000) == data[tail:]
    assert s3.get_range("data", PACK, len(data) + 7, 10) == b""
    _settle(s3)
    assert s3.requests["GET"] - before == 3
    big = s3.get_range("data", PACK, 5, 5_000_000)  # long reads bypass the windows
    assert big == data[5:5_000_005]
    s3.delete("data", PACK)
    with pytest.raises(ObjectNotFound):
        s3.get_range("data", PACK, 0, 10)  # deleting dropped the cached windows
    with pytest.raises(ObjectNotFound):
        s3.get_range("data", PACK, 0, 0)


def test_prefetch_hint_downloads_ahead_and_stays_within_the_cache(s3: S3Storage) -> None:
    """``prefetch`` fetches a range's windows in the background; the read then costs no
    request. The windows kept never exceed the cache's capacity."""
    other = "cd" + "1" * 62
    data = bytes(range(251)) * 180_000  # ~43 MiB: more windows than the 32 MiB cache holds
    s3.put("data", other, data)
    s3.prefetch("data", other, 20_000_000, 10)
    _settle(s3)
    assert s3.requests["GET data"] == 1  # that window only
    assert s3.get_range("data", other, 20_000_000, 10) == data[20_000_000:20_000_010]
    _settle(s3)
    # the read itself was served from the cache; it goes on reading ahead from there
    assert s3.requests["GET data"] == 1 + s3mod.READ_AHEAD_WINDOWS
    for off in range(0, len(data), 1_000_003):  # a whole walk, with read-ahead
        assert s3.get_range("data", other, off, 1000) == data[off : off + 1000]
        assert s3._cache._size <= s3._cache.capacity
    _settle(s3)
    assert s3._cache._size <= s3._cache.capacity
    s3.prefetch("index", "x" * 64, 0, 10)  # not a pack: ignored
    s3.prefetch("data", "../x", 0, 10)  # not a valid name: ignored
    s3.prefetch("data", "ef" + "2" * 62, 0, 10)  # missing pack: the read reports it
    with pytest.raises(ObjectNotFound):
        s3.get_range("data", "ef" + "2" * 62, 0, 10)
    for i in range(4):  # closing mid read-ahead strands no reader and leaves no thread busy
        s3.prefetch("data", other, i * 4 * 1024 * 1024, 10)
    s3.close()
    assert s3.get_range("data", other, 5, 10) == data[5:15]


def test_forked_child_gets_an_error_not_a_hang(s3: S3Storage) -> None:
    """obstore's runtime threads do not survive fork: a child's request would wait forever,
    so it fails at once with one clear line."""
    s3.put("refs", "r", b"x", overwrite=True)  # the runtime is running in this process
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what a request does, never hang the test
        signal.alarm(20)
        try:
            s3.get("refs", "r")
            msg = b"no error"
        except StoreError as exc:
            msg = str(exc).encode()
        except BaseException as exc:
            msg = repr(exc).encode()
        os.write(write_fd, msg[:1000])
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        msg = f.read().decode()
    os.waitpid(pid, 0)
    assert "forked" in msg and "\n" not in msg, msg
    assert s3.get("refs", "r") == b"x"  # the parent is unaffected


def test_sixteen_clients_race_for_the_exclusive_lock(s3_server: SeaweedServer) -> None:
    """16 clients, each with its own connection pool, take turns; never two at once."""
    prefix = new_prefix()
    clients = [s3_server.storage(BUCKET, prefix) for _ in range(16)]
    clients[0].create()
    clients[0].put("refs", "counter", b"0")
    barrier = threading.Barrier(len(clients))
    errors: list[BaseException] = []
    max_inside = [0]
    inside = [0]
    guard = threading.Lock()

    def worker(i: int) -> None:
        storage = clients[i]
        try:
            barrier.wait()
            lock = acquire_lock(
                storage,
                exclusive=True,
                operation=f"racer {i}",
                wait_s=120,
                refresh=False,
                host="racer",
                pid=10_000 + i,
                pid_alive=lambda pid: True,
            )
            with lock:
                with guard:
                    inside[0] += 1
                    max_inside[0] = max(max_inside[0], inside[0])
                # A create-if-absent marker: a second holder would find it present.
                storage.put("refs", "holder", str(i).encode())
                count = int(storage.get("refs", "counter"))
                time.sleep(0.01)
                storage.put("refs", "counter", str(count + 1).encode(), overwrite=True)
                storage.delete("refs", "holder")
                with guard:
                    inside[0] -= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert max_inside[0] == 1
    assert clients[0].get("refs", "counter") == b"16"  # no lost update: one holder at a time
    assert list(clients[0].list("locks")) == []


@pytest.mark.parametrize("multipart", [False, True], ids=["one-put", "multipart"])
def test_server_killed_mid_upload_leaves_no_partial_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, multipart: bool
) -> None:
    """kill -9 the server while a pack is in flight: after a restart the name is free (no
    partial object, none listed) and the retried upload succeeds. Both upload paths: one
    conditional PUT (every pack of the default size) and multipart (huge objects)."""
    monkeypatch.setattr(s3mod, "MULTIPART_MIN", 8 * 1024 * 1024 if multipart else 1 << 40)
    server = SeaweedServer(tmp_path / "weed")
    server.start()
    try:
        no_retry = server.storage(BUCKET, "repo", max_retries=0, retry_timeout_s=1)
        no_retry.create()
        data = bytes(range(256)) * (160 * 1024)  # 40 MiB: long enough to kill mid-flight
        outcome: list[BaseException | None] = []
        started = threading.Event()

        def upload() -> None:
            started.set()
            try:
                no_retry.put("data", PACK, data)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=upload)
        t.start()
        started.wait()
        time.sleep(0.1)
        assert not outcome, "the upload finished before the kill: the test proves nothing"
        server.kill()
        t.join(30)
        assert outcome and isinstance(outcome[0], StoreError), outcome
        assert "\n" not in str(outcome[0])

        server.start()
        fresh = server.storage(BUCKET, "repo")
        assert not fresh.exists("data", PACK)
        assert list(fresh.list("data")) == []
        fresh.put("data", PACK, data)  # the retry
        assert fresh.stat("data", PACK).size == len(data)
        assert fresh.get_range("data", PACK, len(data) - 1000, 1000) == data[-1000:]
    finally:
        server.stop()


def test_lease_refresh_and_stale_lock_on_s3(s3: S3Storage) -> None:
    """Leases renew in place on S3 as on disk; a broken lock is noticed by its holder."""
    from backend.errors import StoreLocked

    lock = acquire_lock(s3, exclusive=True, operation="prune", lease_s=60, refresh=False)
    first = lock.info.expires
    time.sleep(0.01)
    lock.refresh()
    assert lock.info.expires > first
    assert [i.name for i in s3.list("locks")] == [lock.name]
    with pytest.raises(StoreLocked, match="prune"):
        acquire_lock(s3, exclusive=False, operation="backup")
    s3.delete("locks", lock.name)  # someone ran 'snapdeck unlock --all'
    with pytest.raises(StoreLocked, match="removed by someone else"):
        lock.refresh()
    lock.release()
    with acquire_lock(s3, exclusive=False, operation="backup"):
        pass
    assert list(s3.list("locks")) == []


def test_lease_refresh_is_compare_and_swap_on_s3(
    s3: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock broken right before its holder renews it stays broken: the renewal is a
    conditional write on the ETag, not check-then-overwrite (which would resurrect it)."""
    from backend.errors import StoreLocked

    lock = acquire_lock(s3, exclusive=True, operation="prune", lease_s=60, refresh=False)
    lock.refresh()  # a normal renewal (learns the ETag, then swaps on it)
    lock.refresh()
    assert [i.name for i in s3.list("locks")] == [lock.name]
    real_replace, real_put = s3.replace_if, s3.put

    def unlock_lands_first(kind: str, name: str, *args: object, **kw: object) -> object:
        if kind == "locks":
            s3.delete(kind, name)  # 'snapdeck unlock --all' from another host, just now
        write = real_replace if len(args) == 2 else real_put
        return write(kind, name, *args, **kw)  # type: ignore[operator]

    monkeypatch.setattr(s3, "replace_if", unlock_lands_first)
    monkeypatch.setattr(s3, "put", unlock_lands_first)
    with pytest.raises(StoreLocked, match="removed by someone else"):
        lock.refresh()
    assert list(s3.list("locks")) == []  # not resurrected
    assert lock.lost
    monkeypatch.undo()

    # Someone replaced the lease with other content: also lost, and theirs is left alone.
    other = acquire_lock(s3, exclusive=False, operation="backup", lease_s=60, refresh=False)
    other.refresh()
    s3.put("locks", other.name, b'{"not": "ours"}', overwrite=True)
    with pytest.raises(StoreLocked):
        other.refresh()
    assert s3.get("locks", other.name) == b'{"not": "ours"}'
    s3.delete("locks", other.name)
