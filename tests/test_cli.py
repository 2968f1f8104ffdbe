"""The snapdeck CLI as scripts use it: a real subprocess, ``--json`` shapes, exit codes, stderr.

Every subprocess gets an environment whose HOME and XDG directories are temporary, so no test
reads the real config or touches the real default repository. The exit-code-3 and
internal-error cases run in-process with ``CliRunner`` because they need a monkeypatch.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from backend import format as fmt
from backend.ids import object_name
from backend.store import Store
from tests.conftest import Symlink, isolated_environ, make_tree

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_KEYS = {"id", "short_id", "time", "host", "source", "parent", "tags", "message", "stats"}
STATS_KEYS = {
    "files_new",
    "files_changed",
    "files_unmodified",
    "files_removed",
    "bytes_read",
    "bytes_added",
    "bytes_stored",
    "duration_s",
}


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def json(self) -> Any:
        text = self.out.decode()
        assert text.count("\n") == 1 and text.endswith("\n"), f"not one JSON line: {text!r}"
        return json.loads(text)

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")


def run(env: dict[str, str], *args: str | os.PathLike[str], cwd: Path | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "tui", *map(os.fspath, args)],
        env=env,
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


def assert_error(r: Result, code: int, *needles: str) -> None:
    """Exactly one line on stderr, 'snapdeck: error: …', no traceback, nothing on stdout."""
    assert r.code == code, (r.code, r.err)
    lines = r.err.splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("snapdeck: error: "), r.err
    assert "Traceback" not in r.err
    assert r.out == b""
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---------------------------------------------------------------- a shared world (read-only)

SOURCE_SPEC: dict[str | bytes, Any] = {
    "a.txt": "hello\n",
    "gone.txt": "bye\n",
    b"\xff": "not utf-8",
    "new\nline": "nl",
    "[bold]": "markup",
    "sub": {"deep.txt": "deep\n", "bin.dat": b"\x00\xff\x00\r\n" * 10},
    "link": Symlink("a.txt"),
}


CHANGED = {b"\xff": b"still not utf-8", b"new\nline": b"nl, edited", b"[bold]": b"markup!"}
"""Odd names whose content the second snapshot changes (sizes differ, so mtimes don't matter)."""


@dataclass
class World:
    root: Path
    env: dict[str, str]
    repo: Path
    src: Path
    s1: dict[str, Any]
    s2: dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("cli-world")
    (root / "_env" / "home").mkdir(parents=True)
    env = isolated_environ(root / "_env")
    repo, src = root / "repo", root / "src"
    make_tree(src, SOURCE_SPEC)
    r = run(env, "init", "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert r.json["repository"] == str(repo) and len(r.json["id"]) == 32
    r = run(
        env,
        "snapshot",
        src,
        "--repo",
        repo,
        "--json",
        "--tag",
        "nightly",
        "--tag",
        "t2",
        "--time",
        "2026-01-01T10:00:00+00:00",
        "-m",
        "first",
    )
    assert r.code == 0, r.err
    s1 = r.json
    (src / "a.txt").write_text("hello\nworld\n")
    os.utime(src / "a.txt", ns=(10**18, 10**18))
    (src / "gone.txt").unlink()
    (src / "sub" / "new\tfile").write_text("fresh")
    for name, content in CHANGED.items():
        with open(os.path.join(os.fsencode(src), name), "wb") as f:
            f.write(content)
    r = run(env, "--repo", repo, "--json", "snapshot", src, "--time", "2026-01-02T10:00:00Z")
    assert r.code == 0, r.err
    return World(root, env, repo, src, s1, r.json)


def test_snapshot_json_shape(world: World) -> None:
    s1, s2 = world.s1, world.s2
    for s in (s1, s2):
        assert set(s) >= SNAPSHOT_KEYS
        assert set(s["stats"]) >= STATS_KEYS
        assert s["short_id"] == s["id"][:8] and len(s["id"]) == 64
        assert s["source"] == str(world.src)
        assert s["host"]
        assert all(isinstance(s["stats"][k], int) for k in STATS_KEYS - {"duration_s"})
        assert isinstance(s["stats"]["duration_s"], int | float)
    assert s1["parent"] is None and s2["parent"] == s1["id"]
    assert s1["tags"] == ["nightly", "t2"] and s2["tags"] == []
    assert s1["message"] == "first"
    assert s1["time"] == "2026-01-01T10:00:00+00:00"
    assert s1["stats"]["files_new"] == 7
    st = s2["stats"]
    assert (st["files_new"], st["files_changed"], st["files_removed"]) == (1, 4, 1)
    assert st["files_unmodified"] == 2
    assert st["bytes_read"] == len("hello\nworld\n") + len("fresh") + sum(
        map(len, CHANGED.values())
    )


def test_list_json_is_an_array_oldest_first(world: World) -> None:
    r = run(world.env, "--repo", world.repo, "list", "--json")
    assert r.code == 0, r.err
    ids = [s["id"] for s in r.json]
    assert ids == [world.s1["id"], world.s2["id"]]
    assert all(set(s) >= SNAPSHOT_KEYS for s in r.json)


def test_list_filters_by_tag_and_source(world: World) -> None:
    r = run(world.env, "list", "--repo", world.repo, "--json", "--tag", "nightly", "--tag", "t2")
    assert [s["id"] for s in r.json] == [world.s1["id"]]
    r = run(world.env, "list", "--repo", world.repo, "--json", "--tag", "nightly", "--tag", "x")
    assert r.json == []
    r = run(world.env, "list", "--repo", world.repo, "--json", "--source", world.src)
    assert len(r.json) == 2
    r = run(world.env, "list", "--repo", world.repo, "--json", "--source", world.root / "other")
    assert r.json == []


@pytest.mark.parametrize(
    "args",
    [
        ["--repo", "{repo}", "--json", "list"],
        ["list", "--repo", "{repo}", "--json"],
        ["--json", "list", "--repo", "{repo}"],
        ["-r", "{repo}", "list", "--json"],
    ],
)
def test_global_options_work_before_and_after_the_command(world: World, args: list[str]) -> None:
    r = run(world.env, *[a.format(repo=world.repo) for a in args])
    assert r.code == 0, r.err
    assert [s["id"] for s in r.json] == [world.s1["id"], world.s2["id"]]


def test_ls_json_and_escaped_text(world: World) -> None:
    r = run(world.env, "--repo", world.repo, "ls", world.s1["id"], "--json")
    assert r.code == 0, r.err
    rows = {row["path"]: row for row in r.json}
    # Paths in --json use the same escaping as the text output and diff --json.
    assert set(rows) == {"[bold]", "\\xff", "a.txt", "gone.txt", "link", "new\\nline", "sub"}
    assert rows["a.txt"]["type"] == "file" and rows["a.txt"]["size"] == 6
    assert rows["sub"]["type"] == "dir"
    assert rows["link"]["type"] == "symlink" and rows["link"]["target"] == "a.txt"

    r = run(world.env, "--repo", world.repo, "ls", world.s1["short_id"])
    assert r.code == 0, r.err
    assert b"\xff" not in r.out and b"\x1b" not in r.out
    lines = r.text.splitlines()
    assert len(lines) == 7  # one line per entry: the newline in a name is escaped
    names = [re.match(r"^\S+\s+\d+\s+\S+\s+\S+\s(.*)$", line).group(1) for line in lines]
    assert "\\xff" in names
    assert "new\\nline" in names
    assert "[bold]" in names  # markup printed literally
    assert "sub/" in names
    assert "link -> a.txt" in names


def test_ls_of_a_subdirectory_recursive(world: World) -> None:
    r = run(world.env, "--repo", world.repo, "ls", world.s2["id"], "sub", "-R", "--json")
    assert {row["path"] for row in r.json} == {"sub/deep.txt", "sub/bin.dat", "sub/new\\tfile"}


def test_diff_json_shape_and_escaped_text(world: World) -> None:
    r = run(world.env, "--repo", world.repo, "diff", world.s1["id"], world.s2["id"], "--json")
    assert r.code == 0, r.err
    doc = r.json
    assert doc["from"] == world.s1["id"] and doc["to"] == world.s2["id"]
    changes = {c["path"]: c for c in doc["changes"]}
    for c in doc["changes"]:
        assert {"change", "path", "size_before", "size_after"} <= set(c)
    assert changes["a.txt"]["change"] == "M"
    assert (changes["a.txt"]["size_before"], changes["a.txt"]["size_after"]) == (6, 12)
    assert changes["gone.txt"]["change"] == "D" and changes["gone.txt"]["size_after"] is None
    assert changes["sub/new\\tfile"]["change"] == "A"
    assert changes["sub/new\\tfile"]["size_before"] is None
    assert changes["\\xff"]["change"] == "M"
    assert changes["new\\nline"]["change"] == "M"
    assert changes["[bold]"]["change"] == "M"
    assert set(changes) == {"a.txt", "gone.txt", "sub/new\\tfile", "\\xff", "new\\nline", "[bold]"}

    r = run(world.env, "--repo", world.repo, "diff", world.s1["short_id"], world.s2["short_id"])
    assert r.code == 0, r.err
    assert b"\xff" not in r.out and b"\x1b" not in r.out
    lines = r.text.splitlines()
    assert len(lines) == 7  # six changes and the summary: no name spills onto a second line
    for line in (
        "M  a.txt",
        "D  gone.txt",
        "A  sub/new\\tfile",
        "M  \\xff",
        "M  new\\nline",
        "M  [bold]",
    ):
        assert line in lines


def test_diff_content_prints_a_unified_diff(world: World) -> None:
    r = run(world.env, "--repo", world.repo, "diff", world.s1["id"], world.s2["id"], "--content")
    assert r.code == 0, r.err
    assert "--- a/a.txt" in r.text and "+++ b/a.txt" in r.text
    assert "+world" in r.text.splitlines()


def test_cat_writes_raw_bytes(world: World) -> None:
    r = run(world.env, "--repo", world.repo, "cat", world.s1["id"], "sub/bin.dat")
    assert r.code == 0, r.err
    assert r.out == b"\x00\xff\x00\r\n" * 10
    r = run(world.env, "--repo", world.repo, "cat", "latest", "a.txt")
    assert r.out == b"hello\nworld\n"


def test_prefix_latest_and_parent_references(world: World) -> None:
    s1, s2 = world.s1["id"], world.s2["id"]
    for ref, want in [
        (s1[:6], s1),
        (s1[:10].upper(), s1),
        (s1, s1),
        ("latest", s2),
        ("latest~1", s1),
    ]:
        r = run(world.env, "--repo", world.repo, "diff", ref, s2, "--json")
        assert r.code == 0, (ref, r.err)
        assert r.json["from"] == want, ref
    r = run(world.env, "--repo", world.repo, "diff", "latest~1", "latest", "--json")
    assert (r.json["from"], r.json["to"]) == (s1, s2)


def test_stats_json_shape(world: World) -> None:
    r = run(world.env, "stats", "--repo", world.repo, "--json")
    assert r.code == 0, r.err
    doc = r.json
    assert doc["snapshots"] == 2
    for k in ("raw_bytes", "stored_bytes"):
        assert isinstance(doc[k], int) and doc[k] > 0
    for k in ("dedup_ratio", "compression_ratio"):
        assert isinstance(doc[k], int | float) and doc[k] > 0
    assert doc["dedup_ratio"] > 1  # the second snapshot shares most content with the first


# ---------------------------------------------------------------- exit codes and errors


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["list", "--bogus"], 2, "--bogus"),
        (["--bogus", "list"], 2, "--bogus"),
        (["restore"], 2, "SNAP"),
        (["restore", "latest", "--target", "x", "--overwrite", "sometimes"], 2, "sometimes"),
        (["snapshot", "{src}", "--time", "yesterday-ish"], 2, "--time"),
        (["restore", "latest"], 2, "--target"),
        (["diff", "latest"], 2, "--live"),
        (["ls", "0000000000"], 13, "0000000000"),
        (["ls", "nothex"], 13, "nothex"),
        (["cat", "latest", "no/such/file"], 14, "no/such/file"),
        (["ls", "abc12"], 2, "abc12"),
        (["init"], 1, "already exists"),
        (["restore", "latest", "--target", "t", "--include", "../x"], 2, ".."),
        (["restore", "latest", "--target", "t", "--include", "sub/typo"], 14, "sub/typo"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    world: World, args: list[str], code: int, needle: str
) -> None:
    filled = [a.format(src=world.src) for a in args]
    r = run(world.env, "--repo", world.repo, *filled, cwd=world.root)
    assert_error(r, code, needle)
    r = run(world.env, "--repo", world.repo, "--json", *filled, cwd=world.root)
    assert_error(r, code)  # --json: still nothing on stdout, the error on stderr


def test_no_repository_is_exit_10(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    for args in (["list"], ["ls", "latest"], ["stats", "--json"]):
        r = run(env, "--repo", tmp_path / "nowhere", *args)
        assert_error(r, 10, "no snapdeck repository")


def _collide(store: Store, base: dict[str, Any]) -> list[str]:
    """Two new snapshot objects whose ids share their first 6 hex digits."""
    snap = store.resolve(base["id"])
    seen: dict[str, Any] = {}
    for i in range(200_000):
        cand = replace(snap, id="", message=f"collide {i}")
        sid = object_name(fmt.encode_snapshot(cand))
        if sid[:6] in seen and sid[:6] not in (base["id"][:6],):
            other = seen[sid[:6]]
            return [store.repo.save_snapshot(other).id, store.repo.save_snapshot(cand).id]
        seen[sid[:6]] = cand
    raise AssertionError("no collision found")


def test_ambiguous_prefix_is_exit_13_and_longer_prefix_resolves(
    tmp_path: Path, isolated_env: Path
) -> None:
    env = isolated_environ(isolated_env)
    src = tmp_path / "src"
    make_tree(src, {"f": "x"})
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache") as store:
        base = store.create_snapshot(src).snapshot
        a, b = _collide(store, {"id": base.id})
    assert a[:6] == b[:6] and a != b
    r = run(env, "--repo", tmp_path / "repo", "ls", a[:6])
    assert_error(r, 13, a[:6])
    assert "2 snapshots" in r.err
    n = next(i for i in range(6, 64) if a[:i] != b[:i]) + 1
    r = run(env, "--repo", tmp_path / "repo", "cat", a[:n], "f")
    assert r.code == 0 and r.out == b"x"


# ---------------------------------------------------------------- restore, live diff, defaults


def test_restore_json_and_files(world: World, tmp_path: Path) -> None:
    target = tmp_path / "target"
    r = run(
        world.env, "--repo", world.repo, "restore", world.s1["id"], "--target", target, "--json"
    )
    assert r.code == 0, r.err
    doc = r.json
    assert doc["snapshot"] == world.s1["id"] and doc["dry_run"] is False
    assert doc["files_restored"] == 7 and doc["links_restored"] == 1 and doc["problems"] == []
    assert (target / "gone.txt").read_text() == "bye\n"
    with open(os.fsencode(target) + b"/\xff", "rb") as f:
        assert f.read() == b"not utf-8"
    assert os.readlink(target / "link") == "a.txt"
    # a dry run over it changes nothing and says so
    r = run(
        world.env, "--repo", world.repo, "restore", "latest", "--target", target, "--dry-run",
        "--delete", "--json",
    )  # fmt: skip
    actions = {(a["action"], a["path"]) for a in r.json["actions"]}
    assert ("delete", "gone.txt") in actions and ("write", "a.txt") in actions
    assert (target / "gone.txt").exists()


def test_restore_zip_to_a_file_and_to_stdout(world: World, tmp_path: Path) -> None:
    out = tmp_path / "snap.zip"
    r = run(world.env, "--repo", world.repo, "restore", world.s1["id"], "--zip", out)
    assert r.code == 3  # the name b"\xff" cannot be stored as it is: reported, exit 3
    assert "\\xff" in r.err and "Traceback" not in r.err
    with zipfile.ZipFile(out) as zf:
        assert zf.read("sub/bin.dat") == b"\x00\xff\x00\r\n" * 10
        assert zf.read("new\nline") == b"nl"
        assert zf.read("[bold]") == b"markup"
    assert not (tmp_path / "snap.zip.part").exists()

    r = run(world.env, "--repo", world.repo, "restore", "latest", "--zip", "-", "--include", "sub")
    assert r.code == 0, r.err
    assert r.out[-22:-18] == b"PK\x05\x06"  # the archive, and nothing after it
    with zipfile.ZipFile(io.BytesIO(r.out)) as zf:
        assert set(zf.namelist()) == {"sub/", "sub/deep.txt", "sub/bin.dat", "sub/new\tfile"}
        assert zf.read("sub/deep.txt") == b"deep\n"


def test_diff_live_sees_uncommitted_changes(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    src = tmp_path / "src"
    make_tree(src, {"keep": "k", "edit.txt": "one\n", "drop": "d"})
    repo = tmp_path / "repo"
    assert run(env, "init", "-r", repo).code == 0
    assert run(env, "snapshot", "-r", repo, src, "-q").code == 0
    (src / "edit.txt").write_text("one\ntwo\n")
    (src / "drop").unlink()
    (src / "add [new]").write_text("a")
    r = run(env, "diff", "-r", repo, "latest", "--live", "--json")
    assert r.code == 0, r.err
    assert r.json["to"] == f"live:{src}"
    assert {(c["change"], c["path"]) for c in r.json["changes"]} == {
        ("M", "edit.txt"),
        ("D", "drop"),
        ("A", "add [new]"),
    }
    r = run(env, "diff", "-r", repo, "latest", "--live", "--content")
    assert "+two" in r.text.splitlines()
    # a live diff stores nothing
    assert run(env, "list", "-r", repo, "--json").json[0]["stats"]["files_new"] == 3
    assert len(run(env, "list", "-r", repo, "--json").json) == 1


def test_default_repository_lives_in_the_xdg_data_dir(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    src = tmp_path / "src"
    make_tree(src, {"f": "x"})
    r = run(env, "snapshot", src, "--json")
    assert r.code == 0, r.err
    default = Path(env["XDG_DATA_HOME"]) / "snapdeck" / "repo"
    assert (default / "config").is_file()
    snap_id = r.json["id"]
    r = run(env, "list", "--json")
    assert [s["id"] for s in r.json] == [snap_id]
    env2 = {**env, "SNAPDECK_REPO": str(tmp_path / "via-env")}
    assert_error(run(env2, "list"), 10, "via-env")  # SNAPDECK_REPO wins over the default


def test_snapshot_time_and_tags_round_trip(tmp_path: Path, isolated_env: Path) -> None:
    env = isolated_environ(isolated_env)
    src = tmp_path / "src"
    make_tree(src, {"f": "x"})
    repo = tmp_path / "repo"
    run(env, "init", "-r", repo)
    late = run(env, "snapshot", "-r", repo, src, "--json", "--time", "2031-05-06T07:08:09+02:00")
    early = run(env, "snapshot", "-r", repo, src, "--json", "--time", "2020-01-01T00:00:00+00:00",
                "--tag", "old", "--tag", "[red]")  # fmt: skip
    assert late.json["time"] == "2031-05-06T07:08:09+02:00"
    assert early.json["tags"] == ["old", "[red]"]
    listed = run(env, "list", "-r", repo, "--json").json
    assert [s["id"] for s in listed] == [early.json["id"], late.json["id"]]  # by time
    assert run(env, "ls", "-r", repo, "latest", "--json").json[0]["path"] == "f"
    text = run(env, "list", "-r", repo).text
    assert "[red]" in text  # tags print literally, not as Rich markup


# ---------------------------------------------------------------- in-process (monkeypatch)


def _invoke(args: Sequence[str | os.PathLike[str]]) -> Any:
    from tui.cli import cli

    return CliRunner().invoke(cli, [os.fspath(a) for a in args], catch_exceptions=True)


def test_unreadable_file_gives_exit_3_with_json_and_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"ok.txt": "ok", "secret.txt": "s"})
    secret = os.fsencode(src / "secret.txt")
    real_open = os.open

    def fake_open(path: Any, flags: int, *a: Any, **kw: Any) -> int:
        if isinstance(path, str | bytes) and os.fsencode(path) == secret:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *a, **kw)

    repo = tmp_path / "repo"
    assert _invoke(["init", "--repo", repo]).exit_code == 0
    monkeypatch.setattr(os, "open", fake_open)
    res = _invoke(["snapshot", src, "--repo", repo, "--json"])
    monkeypatch.undo()
    assert res.exit_code == 3, res.output
    doc = json.loads(res.stdout)
    assert doc["problems"] == [{"path": "secret.txt", "message": "Permission denied"}]
    assert doc["stats"]["files_new"] == 1
    assert "snapdeck: warning: secret.txt: Permission denied" in res.stderr
    assert "Traceback" not in res.stderr


def test_internal_error_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    assert _invoke(["init", "--repo", repo]).exit_code == 0

    def broken(self: Store) -> Any:
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(Store, "stats", broken)
    res = _invoke(["stats", "--repo", repo, "--json"])
    assert res.exit_code == 1
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("snapdeck: error: "), res.stderr
    assert "something unexpected" in lines[0]


def test_escaped_names_are_unambiguous(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src, {b"\xff": "byte", b"\\xff": "text", b"a\nb": "nl", b"a\\nb": "bs"})
    repo = tmp_path / "repo"
    assert _invoke(["init", "--repo", repo]).exit_code == 0
    assert _invoke(["snapshot", src, "--repo", repo, "-q"]).exit_code == 0
    res = _invoke(["ls", "latest", "--repo", repo, "--json"])
    paths = [row["path"] for row in json.loads(res.stdout)]
    assert len(set(paths)) == 4, paths
