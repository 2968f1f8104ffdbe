"""Hostile and odd input at the edges: each is one line naming the problem, with its exit code.

Restore-side hostility (``..``, absolute names, NUL or '/' in names, symlinks in the target,
hardlinks outside, setuid, devices, FIFOs) is in ``test_restore_safety.py``; this file covers
what reaches the CLI: a repository of a newer format, a garbage config object, malformed
config files, bad sources, a crafted snapshot restored from the command line, and names with
terminal escapes or Rich markup that must round-trip yet print escaped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.store import Store
from tests.backend.test_restore_safety import Hostile
from tests.conftest import isolated_environ, make_tree, read_tree
from tests.test_cli import assert_error, run


@pytest.fixture
def env(isolated_env: Path) -> dict[str, str]:
    return isolated_environ(isolated_env)


@pytest.fixture
def repo(tmp_path: Path, env: dict[str, str]) -> Path:
    r = tmp_path / "repo"
    assert run(env, "init", "-r", r, "-q").code == 0
    return r


def test_a_newer_repository_format_is_exit_11(repo: Path, env: dict[str, str]) -> None:
    doc = json.loads((repo / "config").read_text())
    doc["version"] = 99
    (repo / "config").write_text(json.dumps(doc))
    for args in (["list"], ["check"], ["snapshot", str(repo.parent)]):
        assert_error(run(env, *args, "-r", repo), 11, "upgrade snapdeck")


def test_a_garbage_repository_config_is_exit_20(repo: Path, env: dict[str, str]) -> None:
    (repo / "config").write_bytes(b"\x00\xffnot json")
    assert_error(run(env, "list", "-r", repo), 20, "repository config")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[snapshot]\ncompression_level = "high"\n', "compression_level"),
        ("[snapshot]\ncompresion_level = 3\n", "did you mean compression_level"),
        ("[snapshot\n", "invalid TOML"),
        ("[nosuchsection]\nx = 1\n", "nosuchsection"),
    ],
    ids=["wrong type", "unknown key", "bad syntax", "unknown section"],
)
def test_malformed_config_is_exit_2(
    tmp_path: Path, repo: Path, env: dict[str, str], text: str, needle: str
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    assert_error(run(env, "list", "-r", repo, "--config", cfg), 2, needle)


def test_a_missing_or_non_directory_source_is_exit_2(
    tmp_path: Path, repo: Path, env: dict[str, str]
) -> None:
    assert_error(run(env, "snapshot", tmp_path / "nope", "-r", repo), 2, "does not exist")
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert_error(run(env, "snapshot", f, "-r", repo), 2, "not a directory")
    assert not any((repo / "snapshots").iterdir())


def test_a_crafted_snapshot_is_refused_by_the_cli_and_nothing_is_written(
    tmp_path: Path, repo: Path, env: dict[str, str]
) -> None:
    with Store.open(repo, cache_dir=tmp_path / "c") as st:
        h = Hostile(st)
        snap = h.snapshot([h.dir(b"sub", [h.file(b"..", b"pwned")]), h.file(b"ok", b"fine")])
    r = run(env, "restore", snap.id, "--target", tmp_path / "t", "-r", repo)
    assert r.code in (1, 20), r.err
    assert_error(r, r.code, "unsafe name")
    assert not (tmp_path / "t").exists()
    assert not (tmp_path / "pwned").exists()


ODD = {
    "\x1b[31mred\x1b[0m": "ansi",
    "[bold]loud[red]x": "markup",
    "tab\there": "tab",
    "new\nline": "newline",
    "back\\slash": "backslash",
    b"caf\xe9": "latin-1",
}


def test_names_with_escapes_round_trip_and_print_escaped(
    tmp_path: Path, repo: Path, env: dict[str, str]
) -> None:
    src = tmp_path / "src"
    make_tree(src, {"d": dict(ODD)})
    r = run(env, "snapshot", src, "-r", repo, "--json")
    assert r.code == 0, r.err
    for args in (["ls", "latest", "-R"], ["ls", "latest", "-R", "--json"]):
        out = run(env, *args, "-r", repo)
        assert out.code == 0, out.err
        assert b"\x1b" not in out.out and b"\t" not in out.out and b"\xe9" not in out.out
        text = out.out.decode()
        if "--json" in args:
            text = "\n".join(e["path"] for e in json.loads(text))
        assert "\\x1b[31mred\\x1b[0m" in text and "[bold]loud[red]x" in text
        assert "new\\nline" in text and "back\\\\slash" in text and "caf\\xe9" in text
    r = run(env, "restore", "latest", "--target", tmp_path / "t", "-r", repo)
    assert r.code == 0, r.err
    assert read_tree(tmp_path / "t") == read_tree(src)  # the bytes of every name round-trip
    # A damaged file with such a name: check and restore print its path escaped.
    with Store.open(repo, cache_dir=tmp_path / "c") as st:
        loc = st.repo.index.get(st.repo.hash_blob(b"ansi"))
        assert loc is not None
        p = repo / "data" / loc.pack[:2] / loc.pack
        b = bytearray(p.read_bytes())
        b[loc.offset + loc.length - 1] ^= 1
        p.write_bytes(bytes(b))
    for args in (
        ["check", "--read-data"],
        ["restore", "latest", "--target", str(tmp_path / "t2")],
    ):
        out = run(env, *args, "-r", repo)
        assert out.code in (3, 20), out.err
        assert "\x1b" not in out.err and "d/\\x1b[31mred\\x1b[0m" in out.err
