"""``snapdeck check`` and ``snapdeck repair …`` as scripts use them: real processes, exit codes,
``--json`` shapes, and a damaged repository taken back to health (heal by re-snapshot)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import isolated_environ, make_tree, read_tree
from tests.test_cli import assert_error, run


def flip_last_byte_of_blob(repo: Path, cache: Path, content: bytes) -> None:
    from backend.store import Store

    with Store.open(repo, cache_dir=cache) as st:
        loc = st.repo.index.get(st.repo.hash_blob(content))
        assert loc is not None
        p = repo / "data" / loc.pack[:2] / loc.pack
        b = bytearray(p.read_bytes())
        b[loc.offset + loc.length - 1] ^= 0xFF
        p.write_bytes(bytes(b))


def test_check_damage_repair_and_heal_end_to_end(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src, {"keep.txt": "keep me " * 100, "d": {"lost.txt": "precious"}})
    assert run(env, "init", "-r", repo, "-q").code == 0
    r = run(env, "snapshot", src, "-r", repo, "--json")
    assert r.code == 0, r.err
    sid = r.json["id"]

    r = run(env, "check", "-r", repo, "--read-data", "--json")
    assert r.code == 0, r.err
    assert r.json["ok"] is True and r.json["errors"] == []

    flip_last_byte_of_blob(repo, tmp_path / "c", b"precious")
    r = run(env, "check", "-r", repo)
    assert r.code == 0, r.err  # structure is fine; only reading the data finds it
    r = run(env, "check", "-r", repo, "--read-data", "--json")
    assert r.code == 20
    doc = r.json
    assert doc["ok"] is False
    [err] = [e for e in doc["errors"] if e["object"].startswith("blob/")]
    assert set(err) == {"object", "kind", "message", "snapshots", "paths"}
    assert err["kind"] == "corrupt" and err["snapshots"] == [sid] and err["paths"] == ["d/lost.txt"]
    r = run(env, "check", "-r", repo, "--read-data")
    assert r.code == 20 and "d/lost.txt" in r.err and "Traceback" not in r.err

    # Restore: everything else comes back, the lost file is listed, exit 3 (partial).
    r = run(env, "restore", sid[:8], "--target", tmp_path / "t1", "-r", repo)
    assert r.code == 3 and "d/lost.txt" in r.err
    assert read_tree(tmp_path / "t1") == {b"keep.txt": b"keep me " * 100, b"d": {}}

    r = run(env, "repair", "packs", "-r", repo, "--json")
    assert r.code == 3, r.err  # one blob had no intact copy
    assert [e["paths"] for e in r.json["lost"]] == [["d/lost.txt"]]
    r = run(env, "repair", "snapshots", "-r", repo, "--json")
    assert r.code == 0, r.err
    [rw] = r.json["rewritten"]
    assert rw["old"] == sid and r.json["dropped"] == [{"snapshot": sid, "path": "d/lost.txt"}]
    assert run(env, "check", "-r", repo, "--read-data", "-q").code == 0

    # The file is still on disk: the next snapshot stores it again.
    r = run(env, "snapshot", src, "-r", repo, "--json")
    assert r.code == 0 and r.json["stats"]["files_new"] == 1
    r = run(env, "restore", "latest", "--target", tmp_path / "t2", "-r", repo)
    assert r.code == 0, r.err
    assert read_tree(tmp_path / "t2") == read_tree(src)
    assert run(env, "check", "-r", repo, "--read-data-subset", "1/2", "-q").code == 0


def test_repair_index_after_the_index_is_lost(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src, {"a": "a" * 1000, "b": os.urandom(5000).hex()})
    assert run(env, "init", "-r", repo, "-q").code == 0
    assert run(env, "snapshot", src, "-r", repo, "-q").code == 0
    for p in (repo / "index").iterdir():
        p.unlink()
    r = run(env, "check", "-r", repo, "--json")
    assert r.code == 20 and r.json["ok"] is False
    r = run(env, "repair", "index", "-r", repo)
    assert r.code == 0, r.err
    assert "indexed 2 packs" in r.out.decode()
    assert run(env, "check", "-r", repo, "--read-data", "-q").code == 0
    assert run(env, "restore", "latest", "--target", tmp_path / "t", "-r", repo, "-q").code == 0
    assert read_tree(tmp_path / "t") == read_tree(src)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["check", "--read-data-subset", "150%"], 2, "150%"),
        (["check", "--read-data-subset", "3/2"], 2, "3/2"),
        (["check", "--read-data", "--read-data-subset", "1/2"], 2, "either"),
        (["repair", "packs", "zz"], 2, "zz"),
        (["repair", "bogus"], 2, "bogus"),
    ],
)
def test_check_and_repair_usage_errors(
    tmp_path: Path, isolated_env: Path, args: list[str], code: int, needle: str
) -> None:
    env = isolated_environ(isolated_env)
    repo = tmp_path / "repo"
    assert run(env, "init", "-r", repo, "-q").code == 0
    assert_error(run(env, *args, "-r", repo), code, needle)


def test_check_of_no_repository_is_exit_10(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    assert_error(run(env, "check", "-r", tmp_path / "nowhere"), 10, "no snapdeck repository")
    assert not (tmp_path / "nowhere").exists()


def test_check_json_with_garbage_objects(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    repo, src = tmp_path / "repo", tmp_path / "src"
    make_tree(src, {"a": "a"})
    assert run(env, "init", "-r", repo, "-q").code == 0
    assert run(env, "snapshot", src, "-r", repo, "-q").code == 0
    (repo / "snapshots" / ("f" * 64)).write_bytes(b"")
    (repo / "index" / "README").write_text("not an index")
    r = run(env, "check", "-r", repo, "--json")
    assert r.code == 20
    kinds = {e["object"]: e["kind"] for e in json.loads(r.out)["errors"]}
    assert kinds == {f"snapshots/{'f' * 64}": "foreign", "index/README": "foreign"}
    # Listing and restoring still work: garbage is skipped, never read as a snapshot.
    r = run(env, "list", "-r", repo, "--json")
    assert r.code == 0 and len(r.json) == 1
