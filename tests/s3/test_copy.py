"""snapdeck copy: between local and S3 repositories, deduplicating, re-keying ids."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.copying import copy_snapshots
from backend.keys import KdfParams
from backend.store import Store
from tests.conftest import isolated_environ, make_tree, read_tree
from tests.s3.server import BUCKET, SeaweedServer, new_prefix

REPO_ROOT = Path(__file__).resolve().parents[2]


def files(n: int, salt: str) -> dict[str | bytes, bytes | str]:
    return {f"f{i}.bin": (f"{salt}{i}-".encode() * 30_000) for i in range(n)}


def test_copy_local_to_s3_and_back(
    s3_server: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    src = tmp_path / "src"
    make_tree(src, {"a": files(3, "x"), "b": {"c.txt": "hello"}, "empty": {}})
    local = Store.init(tmp_path / "local", cache_dir=tmp_path / "c1")
    first = local.create_snapshot(src).snapshot
    (src / "b" / "c.txt").write_text("changed")
    second = local.create_snapshot(src).snapshot

    remote = Store.init(f"s3://{BUCKET}/{new_prefix()}", cache_dir=tmp_path / "c2")
    res = copy_snapshots(local.repo, remote.repo, [local.repo.load_snapshot(first.id)])
    assert res.reid  # separate inits: different id keys
    assert [s.copied for s in res.snapshots] == [True]
    one_new = res.blobs_copied

    # The second snapshot shares all but one file: only its new blobs travel.
    res = copy_snapshots(
        local.repo, remote.repo, [local.repo.load_snapshot(s) for s in (first.id, second.id)]
    )
    assert [s.copied for s in res.snapshots] == [False, True]
    assert 0 < res.blobs_copied < one_new
    assert res.blobs_present > 0
    copied = [s.target_id for s in res.snapshots]
    snaps = remote.list_snapshots()
    assert [s.id for s in snaps] == copied
    assert snaps[1].parent == snaps[0].id  # the parent link follows the copy
    assert (snaps[1].time, snaps[1].source, snaps[1].host) == (
        second.time,
        second.source,
        second.host,
    )
    remote.restore(snaps[1], tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)

    # Again: nothing to do.
    res = copy_snapshots(
        local.repo, remote.repo, [local.repo.load_snapshot(s) for s in (first.id, second.id)]
    )
    assert [s.copied for s in res.snapshots] == [False, False]
    assert res.blobs_copied == 0

    # And back from S3 into a fresh local repository.
    back = Store.init(tmp_path / "back", cache_dir=tmp_path / "c3")
    res = copy_snapshots(remote.repo, back.repo, [remote.repo.load_snapshot(copied[0])])
    back.restore(back.list_snapshots()[0], tmp_path / "out0")
    shutil.rmtree(tmp_path / "out")
    local.restore(first, tmp_path / "out")
    assert read_tree(tmp_path / "out0") == read_tree(tmp_path / "out")
    for s in (local, remote, back):
        s.close()


def test_same_id_key_keeps_ids_and_skips_known_trees(tmp_path: Path) -> None:
    """A destination sharing the id key (made from the same config) keeps every id and does
    not descend into trees it already has."""
    src = tmp_path / "src"
    make_tree(src, {"big": files(4, "y"), "small": {"x": "1"}})
    a = Store.init(tmp_path / "a", cache_dir=tmp_path / "ca")
    s1 = a.create_snapshot(src).snapshot
    (src / "small" / "x").write_text("2")
    s2 = a.create_snapshot(src).snapshot
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "config", tmp_path / "b" / "config")
    b = Store.open(tmp_path / "b", cache_dir=tmp_path / "cb")
    assert b.repo.id_key == a.repo.id_key

    res = copy_snapshots(a.repo, b.repo, [a.repo.load_snapshot(s1.id)])
    assert not res.reid
    assert [s.target_id for s in res.snapshots] == [s1.id]
    res = copy_snapshots(a.repo, b.repo, [a.repo.load_snapshot(s2.id)])
    assert [s.target_id for s in res.snapshots] == [s2.id]
    # New: the root tree, the "small" tree and x's chunk; "big" was skipped whole.
    assert res.blobs_copied == 3
    assert b.get(s2.id).parent == s1.id
    b.restore(b.get(s2.id), tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    a.close()
    b.close()


def test_copy_cli(s3_server: SeaweedServer, tmp_path: Path) -> None:
    env = {**isolated_environ(tmp_path / "_env"), **s3_server.env()}
    src = tmp_path / "src"
    make_tree(src, files(2, "z"))
    cheap = KdfParams(memory_kib=64, iterations=1, lanes=1)
    with Store.init(
        tmp_path / "local", cache_dir=tmp_path / "c", password="pw", kdf=cheap
    ) as local:
        snap = local.create_snapshot(src).snapshot
    remote = f"s3://{BUCKET}/{new_prefix()}"

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tui", *args],
            env={**env, **extra},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert run("init", "--repo", remote).returncode == 0
    args = ("copy", "--from-repo", str(tmp_path / "local"), "--to-repo", remote)
    r = run(*args, snap.id[:8], "--json", SNAPDECK_FROM_PASSWORD="pw")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["reid"] is True
    assert [(s["source_id"], s["copied"]) for s in doc["snapshots"]] == [(snap.id, True)]
    assert doc["blobs_copied"] > 0
    r = run("restore", doc["snapshots"][0]["id"][:8], "--target", str(tmp_path / "o"), "-r", remote)
    assert r.returncode == 0, r.stderr
    assert read_tree(tmp_path / "o") == read_tree(src)

    r = run(*args, SNAPDECK_FROM_PASSWORD="pw")  # all snapshots: already there
    assert r.returncode == 0, r.stderr
    assert "copied 0 of 1 snapshots" in r.stderr + r.stdout

    r = run(*args, SNAPDECK_FROM_PASSWORD="wrong")
    assert r.returncode == 15 and r.stderr.count("\n") == 1, r.stderr
    r = run("copy", "--from-repo", remote, "--to-repo", remote + "/")
    assert r.returncode == 2 and "same repository" in r.stderr, r.stderr
    r = run(*args, "nosuchsnap", SNAPDECK_FROM_PASSWORD="pw")
    assert r.returncode == 13 and r.stderr.count("\n") == 1, r.stderr


def test_copy_carries_pins_tag_edits_and_with_refs_named_refs(tmp_path: Path) -> None:
    env = isolated_environ(tmp_path / "_env")
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "one"})
    with Store.init(tmp_path / "a", cache_dir=tmp_path / "ca") as a:
        s1 = a.create_snapshot(src).snapshot
        (src / "a.txt").write_text("two")
        s2 = a.create_snapshot(src).snapshot
        a.set_pinned(s1, True)
        a.set_tags(a.get(s2.id), add=["release"])
        a.add_ref("stable", a.get(s1.id))
        a.add_ref("taken", a.get(s2.id))
    with Store.init(tmp_path / "b", cache_dir=tmp_path / "cb") as b:
        other = b.create_snapshot(src).snapshot
        b.add_ref("taken", other)  # B's own ref of that name: never moved

    def copy(*extra: str) -> dict:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tui",
                "copy",
                "--from-repo",
                str(tmp_path / "a"),
                *extra,
                "--to-repo",
                str(tmp_path / "b"),
                "--json",
            ],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        doc: dict = json.loads(r.stdout)
        return doc

    doc = copy(s1.id[:8])  # without --refs: notes only
    [c1] = [s["id"] for s in doc["snapshots"]]
    assert doc["pinned"] == [c1] and doc["refs"] == [] and doc["ref_conflicts"] == {}
    doc = copy("--refs")
    ids = {s["source_id"]: s["id"] for s in doc["snapshots"]}
    assert doc["pinned"] == [] and doc["tags_set"] == [ids[s2.id]]
    assert doc["refs"] == ["stable"]
    with Store.open(tmp_path / "b", cache_dir=tmp_path / "cb") as b:
        assert doc["ref_conflicts"] == {"taken": other.id}
        assert b.get(ids[s1.id]).pinned and not b.get(ids[s2.id]).pinned
        assert "release" in b.get(ids[s2.id]).tags
        assert b.refs() == {"stable": ids[s1.id], "taken": other.id}
        assert "pinned" in b.protection()[ids[s1.id]]
    assert copy("--refs")["refs"] == ["stable"]  # again: nothing new, nothing moved
