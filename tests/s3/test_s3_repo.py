"""A whole repository on S3: Store round trip, the catalog cache, and the CLI end to end."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backend import repository
from backend.storage.s3 import S3Storage
from backend.store import Store
from tests.conftest import isolated_environ, make_tree, read_tree
from tests.s3.server import BUCKET, SeaweedServer, new_bucket, new_prefix

REPO_ROOT = Path(__file__).resolve().parents[2]

TREE = {
    "a.txt": "hello\n",
    "sub": {"big.bin": bytes(range(256)) * 12_000, "empty": b""},
    b"caf\xe9": "latin-1 name",
}


@pytest.fixture
def s3_env(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> SeaweedServer:
    """The AWS environment variables point at the test server (as a user would set them)."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SNAPDECK_S3_ENDPOINT", raising=False)
    return s3_server


def test_snapshot_restore_round_trip(s3_env: SeaweedServer, tmp_path: Path) -> None:
    location = f"s3://{BUCKET}/{new_prefix()}"
    src = tmp_path / "src"
    make_tree(src, TREE)
    with Store.init(location, cache_dir=tmp_path / "cache") as store:
        assert isinstance(store.storage, S3Storage)
        first = store.create_snapshot(src).snapshot
        (src / "a.txt").write_text("changed\n")
        second = store.create_snapshot(src).snapshot
        assert second.parent == first.id
    with Store.open(location, cache_dir=tmp_path / "cache2") as store:
        assert [s.id for s in store.list_snapshots()] == [first.id, second.id]
        changes = {c.path: c.change for c in store.diff(first, second).changes}
        assert changes == {b"a.txt": "M"}
        store.restore(store.get(first.id), tmp_path / "out1")
        store.restore(store.get(second.id), tmp_path / "out2")
    expected = read_tree(src)
    assert read_tree(tmp_path / "out2") == expected
    expected[b"a.txt"] = b"hello\n"
    assert read_tree(tmp_path / "out1") == expected


def test_packs_upload_in_parallel_behind_the_pipeline(
    s3_env: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finished packs go to S3 from background threads, two at a time; every index segment
    is written after the packs it names; the snapshot reads back whole from a fresh open."""
    monkeypatch.setattr(repository, "PACK_TARGET", 256 * 1024)  # many packs from a small tree
    rng = random.Random(7)
    src = tmp_path / "src"
    make_tree(src, {f"d{i}": {f"f{j}": rng.randbytes(40_000) for j in range(12)} for i in range(6)})
    real_put = S3Storage.put
    mu = threading.Lock()
    active, peak, stored, order_ok = [0], [0], set(), [True]

    def put(self: S3Storage, kind: str, name: str, data: Any, **kw: Any) -> None:
        with mu:
            active[0] += kind == "data"
            peak[0] = max(peak[0], active[0])
        try:
            if kind == "index":
                named = {p for p, _e in repository_of[0].decode_index_segment(bytes(data))}
                with mu:
                    order_ok[0] &= named <= stored
            time.sleep(0.02 if kind == "data" else 0)  # a slower link than loopback
            real_put(self, kind, name, data, **kw)
        finally:
            with mu:
                active[0] -= kind == "data"
                if kind == "data":
                    stored.add(name)

    monkeypatch.setattr(S3Storage, "put", put)
    repository_of: list[Any] = []
    location = f"s3://{BUCKET}/{new_prefix()}"
    with Store.init(location, cache_dir=tmp_path / "cache") as store:
        repository_of.append(store.repo)
        snap = store.create_snapshot(src).snapshot
        assert store.repo.packs_written >= 8 and store.repo.uploads_in_flight == 0
    assert peak[0] == S3Storage.upload_threads == 2
    assert order_ok[0]
    with Store.open(location, cache_dir=tmp_path / "cache2") as store:
        store.restore(store.get(snap.id), tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)


def test_catalog_cache_makes_listing_cheap(s3_env: SeaweedServer, tmp_path: Path) -> None:
    """With a warm local catalog, listing reads no snapshot objects: one LIST is enough."""
    location = f"s3://{BUCKET}/{new_prefix()}"
    src = tmp_path / "src"
    make_tree(src, {"f": "1"})
    with Store.init(location, cache_dir=tmp_path / "cache") as store:
        for i in range(5):
            (src / "f").write_text(str(i))
            store.create_snapshot(src)
    with Store.open(location, cache_dir=tmp_path / "cache") as store:
        assert isinstance(store.storage, S3Storage)
        assert len(store.list_snapshots()) == 5
        assert store.storage.requests["GET snapshots"] == 0
        assert store.storage.requests["LIST snapshots"] == 1
    with Store.open(location, cache_dir=tmp_path / "cold") as store:
        assert isinstance(store.storage, S3Storage)
        assert len(store.list_snapshots()) == 5
        assert store.storage.requests["GET snapshots"] == 5  # a cold cache reads each once


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_end_to_end(s3_server: SeaweedServer, tmp_path: Path) -> None:
    env = {**isolated_environ(tmp_path / "_env"), **s3_server.env()}
    bucket = new_bucket()
    repo = f"s3://{bucket}/backups/home"
    src = tmp_path / "src"
    make_tree(src, TREE)

    r = cli(env, "init", "--repo", repo, "--json")  # the bucket does not exist yet
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["repository"] == repo
    r = cli(env, "snapshot", str(src), "--repo", repo, "--json")
    assert r.returncode == 0, r.stderr
    r = cli(env, "list", "--repo", repo, "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) == 1, listed
    r = cli(env, "restore", "latest", "--target", str(tmp_path / "out"), "--repo", repo)
    assert r.returncode == 0, r.stderr
    assert read_tree(tmp_path / "out") == read_tree(src)

    # The endpoint can come from SNAPDECK_S3_ENDPOINT and the keys from the config file.
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "[s3]\n"
        f'access_key_id = "{env.pop("AWS_ACCESS_KEY_ID")}"\n'
        f'secret_access_key = "{env.pop("AWS_SECRET_ACCESS_KEY")}"\n'
    )
    env["SNAPDECK_S3_ENDPOINT"] = env.pop("AWS_ENDPOINT_URL")
    r = cli(env, "list", "--repo", repo, "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 1
    # Commands that open only the storage (no Store) use the [s3] section too.
    r = cli(env, "key", "info", "--repo", repo, "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["encrypted"] is False
    r = cli(env, "unlock", "--repo", repo, "--config", str(cfg), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"removed": 0}

    env["AWS_ACCESS_KEY_ID"] = "snapdeck-test"
    env["AWS_SECRET_ACCESS_KEY"] = "wrong"  # the environment wins over the config file
    r = cli(env, "list", "--repo", repo, "--config", str(cfg))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"snapdeck: error: S3 refused access to {repo}"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr

    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    r = cli(env, "list", "--repo", f"s3://{new_bucket()}/x", "--config", str(cfg))
    assert r.returncode == 10, r.stderr
    assert "does not exist" in r.stderr and r.stderr.count("\n") == 1
    r = cli(env, "list", "--repo", "s3://Bad_Bucket/x", "--config", str(cfg))
    assert r.returncode == 2, r.stderr
    assert "invalid S3 bucket name" in r.stderr and r.stderr.count("\n") == 1
