"""CLI of issue 3 as scripts use it: watch --json, log, ref, tag, pin, restore --in-place, undo."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import isolated_environ, make_tree
from tests.test_cli import REPO_ROOT, SNAPSHOT_KEYS, assert_error, run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "_env" / "home").mkdir(parents=True, exist_ok=True)
    e = isolated_environ(tmp_path / "_env")
    e["SNAPDECK_REPO"] = str(tmp_path / "repo")
    r = run(e, "init", "-q")
    assert r.code == 0, r.err
    return e


QUICK = ("--quiet-ms", "50", "--min-interval-s", "0")


def _lines(stream: IO[bytes]) -> queue.Queue[bytes]:
    q: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


@pytest.mark.slow
def test_watch_json_lines_and_sigterm(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a"})
    proc = subprocess.Popen(
        [*(sys.executable, "-m", "tui", "watch", str(src), "--json"), *QUICK],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = _lines(proc.stdout)  # type: ignore[arg-type]
        first = json.loads(out.get(timeout=30))
        assert first["trigger"] == "watch" and first["full_scan"] is True
        assert set(first) >= SNAPSHOT_KEYS and first["parent"] is None
        (src / "a.txt").write_text("changed")
        (src / "b.txt").write_text("new")
        second = json.loads(out.get(timeout=30))
        assert second["trigger"] == "watch" and second["paths_changed"] == 2
        assert second["parent"] == first["id"] and second["full_scan"] is False
        assert second["stats"]["files_changed"] == 1 and second["stats"]["files_new"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
    r = run(env, "list", "--json")
    assert [s["id"] for s in r.json] == [first["id"], second["id"]]


def test_watch_rejects_a_missing_directory(env: dict[str, str], tmp_path: Path) -> None:
    assert_error(run(env, "watch", tmp_path / "nope"), 2, "is not a directory")


def _snap(env: dict[str, str], src: Path, *extra: str) -> dict[str, Any]:
    r = run(env, "snapshot", src, "--json", *extra)
    assert r.code == 0, r.err
    result: dict[str, Any] = r.json
    return result


def test_log_ref_tag_pin(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "1"})
    s1 = _snap(env, src)
    (src / "a.txt").write_text("22")
    s2 = _snap(env, src)

    r = run(env, "ref", "add", "main", "HEAD~1", "--source", src, "--json")
    assert r.code == 0 and r.json == {"name": "main", "snapshot": s1["id"]}
    assert run(env, "ref", "list", "--json").json == [{"name": "main", "snapshot": s1["id"]}]
    assert_error(run(env, "ref", "add", "HEAD", s1["id"]), 2, "invalid ref name")

    r = run(env, "tag", s2["short_id"], "--add", "keep", "--add", "x", "--json")
    assert r.code == 0 and r.json["id"] == s2["id"] and r.json["tags"] == ["keep", "x"]
    r = run(env, "tag", s2["short_id"], "--remove", "x", "--json")
    assert r.json["tags"] == ["keep"] and r.json["id"] == s2["id"]
    assert_error(run(env, "tag", s2["short_id"]), 2, "--add")
    r = run(env, "pin", "main", "--json")
    assert r.code == 0 and r.json["pinned"] is True

    r = run(env, "log", "--source", src, "--json")
    nodes = r.json
    assert [n["id"] for n in nodes] == [s2["id"], s1["id"]]
    assert {"id", "parent", "time", "trigger", "refs", "tags", "pinned"} <= set(nodes[0])
    assert nodes[0]["head"] is True and nodes[0]["tags"] == ["keep"]
    assert nodes[1]["refs"] == ["main"] and nodes[1]["pinned"] is True
    assert nodes[0]["parent"] == s1["id"]
    text = run(env, "log", "--graph").text.splitlines()
    assert text[0].startswith(f"* {s2['short_id']} (HEAD, tag: keep)")
    assert text[1].startswith(f"* {s1['short_id']} (ref: main, pinned)")

    assert run(env, "unpin", "main", "--json").json["pinned"] is False
    assert run(env, "ref", "rm", "main", "--json").json == {"removed": "main"}
    assert_error(run(env, "ref", "rm", "main"), 13, "no ref named")


def test_restore_in_place_and_undo(env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "one"})
    s1 = _snap(env, src)
    (src / "a.txt").write_text("two")
    (src / "b.txt").write_text("b")
    s2 = _snap(env, src)

    assert_error(run(env, "undo", "--source", src), 13, "nothing to undo")
    assert_error(run(env, "restore", s1["id"], "--in-place", "--target", src), 2, "exactly one")
    assert_error(run(env, "restore", s1["id"], "--in-place", "--delete"), 2, "--in-place")

    r = run(env, "restore", s1["short_id"], "--in-place", "--json")
    assert r.code == 0, r.err
    out = r.json
    assert out["in_place"] is True and out["head"] == s1["id"] and out["files_deleted"] == 1
    assert (src / "a.txt").read_text() == "one" and not (src / "b.txt").exists()
    log = run(env, "log", "--json").json
    guard = next(n for n in log if n["trigger"] == "restore-guard")
    assert guard["id"] == out["guard"] and guard["parent"] == s2["id"]
    assert next(n for n in log if n["id"] == s1["id"])["head"] is True

    (src / "a.txt").write_text("branch")
    s3 = _snap(env, src)
    assert s3["parent"] == s1["id"]  # history branched at s1

    r = run(env, "undo", "--json", cwd=src)  # HEAD's source is the current directory
    assert r.code == 0, r.err
    assert r.json["snapshot"] == guard["id"]
    assert (src / "a.txt").read_text() == "two" and (src / "b.txt").read_text() == "b"
    text = run(env, "log", "--graph", "--source", src).text
    assert "|/" in text and "restore-guard" in text
    assert os.path.isdir(src)


@pytest.mark.slow
def test_watch_runs_the_eviction_sweeper(env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[evict]\nmax_size = "1KiB"\nmax_age = ""\nsweep_in_watch = true\nsweep_interval_s = 1\n'
    )
    env = env | {"SNAPDECK_CONFIG": str(cfg)}
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "a"})
    proc = subprocess.Popen(
        [*(sys.executable, "-m", "tui", "watch", str(src), "--json"), *QUICK],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = _lines(proc.stdout)  # type: ignore[arg-type]
        docs = [json.loads(out.get(timeout=30))]
        (src / "a.txt").write_text("changed")
        while docs[-1]["trigger"] != "evict-sweep":
            docs.append(json.loads(out.get(timeout=30)))
        made = [d["id"] for d in docs if d["trigger"] == "watch"]
        sweep = docs[-1]
        assert len(made) == 2 and sweep["removed"] == made[:1]
        assert isinstance(sweep["size_after"], int)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [s["id"] for s in run(env, "list", "--json").json] == made[1:]
