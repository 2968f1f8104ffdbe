"""``snapdeck init --encrypt``, password sources, ``key passwd`` / ``key info``: real processes.

Repositories are mostly created in-process with a cheap Argon2id cost (stored in the key
object, so every command unlocks quickly); one test runs ``init --encrypt`` with the default
cost, as a person would.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from backend.keys import KdfParams
from backend.store import Store
from tests.conftest import isolated_environ, make_tree, read_tree
from tests.test_cli import REPO_ROOT, assert_error, run

CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)
PW = "hunter2 but longer"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = isolated_environ(tmp_path / "_env")
    for k in list(e):
        if k.startswith("SNAPDECK_"):
            del e[k]
    return e


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    Store.init(tmp_path / "repo", password=PW, kdf=CHEAP).close()
    return tmp_path / "repo"


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    make_tree(src, {"a.txt": "alpha\n" * 100, "d": {"b.bin": bytes(range(256)) * 40}})
    return src


def test_init_encrypt_with_the_default_key_cost(tmp_path: Path, env: dict[str, str]) -> None:
    e = {**env, "SNAPDECK_PASSWORD": PW}
    r = run(e, "init", "--encrypt", "-r", tmp_path / "r", "--json")
    assert r.code == 0, r.err
    assert r.json["encrypted"] is True and r.json["cipher"] == "aes-256-gcm"
    # key info needs no password: the config and key objects are readable
    info = run(env, "key", "info", "-r", tmp_path / "r", "--json")
    assert info.code == 0, info.err
    assert info.json["encrypted"] and info.json["version"] == 2
    [k] = info.json["keys"]
    assert k["kdf"] == {"algorithm": "argon2id", "memory_kib": 65536, "iterations": 8, "lanes": 4}
    r = run(e, "snapshot", _src(tmp_path), "-r", tmp_path / "r", "--json")
    assert r.code == 0, r.err


def test_every_password_source(tmp_path: Path, env: dict[str, str], repo: Path) -> None:
    src = _src(tmp_path)
    pwfile = tmp_path / "pw.txt"
    pwfile.write_text(PW + "\n")
    r = run(env, "snapshot", src, "-r", repo, "--password-file", pwfile, "-q")
    assert r.code == 0, r.err
    cmd = f'{sys.executable} -c "print({PW!r})"'
    r = run(env, "--password-command", cmd, "list", "-r", repo, "--json")
    assert r.code == 0, r.err
    assert len(r.json) == 1
    r = run({**env, "SNAPDECK_PASSWORD_FILE": str(pwfile)}, "list", "-r", repo, "--json")
    assert r.code == 0 and len(r.json) == 1, r.err
    r = run({**env, "SNAPDECK_PASSWORD_COMMAND": cmd}, "ls", "latest", "-r", repo)
    assert r.code == 0 and "a.txt" in r.text, r.err


def test_snapshot_list_diff_restore_cat_on_an_encrypted_repo(
    tmp_path: Path, env: dict[str, str], repo: Path
) -> None:
    e = {**env, "SNAPDECK_PASSWORD": PW, "SNAPDECK_REPO": str(repo)}
    src = _src(tmp_path)
    first = run(e, "snapshot", src, "--json")
    assert first.code == 0, first.err
    (src / "a.txt").write_text("beta\n")
    second = run(e, "snapshot", src, "--json")
    assert second.code == 0, second.err
    d = run(e, "diff", first.json["id"], second.json["id"], "--json")
    assert d.code == 0, d.err
    assert [(c["change"], c["path"]) for c in d.json["changes"]] == [("M", "a.txt")]
    r = run(e, "restore", first.json["id"], "--target", tmp_path / "out")
    assert r.code == 0, r.err
    assert read_tree(tmp_path / "out")[b"a.txt"] == b"alpha\n" * 100
    assert read_tree(tmp_path / "out")[b"d"] == read_tree(src)[b"d"]
    c = run(e, "cat", "latest", "a.txt")
    assert c.code == 0 and c.out == b"beta\n", c.err


def test_wrong_or_missing_password_is_one_line_exit_15(
    tmp_path: Path, env: dict[str, str], repo: Path
) -> None:
    r = run({**env, "SNAPDECK_PASSWORD": "nope"}, "list", "-r", repo)
    assert_error(r, 15, "wrong password")
    r = run(env, "list", "-r", repo)  # no source, no terminal: say how to give one
    assert_error(r, 15, "is encrypted", "SNAPDECK_PASSWORD")
    r = run(env, "list", "-r", repo, "--password-file", tmp_path / "missing")
    assert_error(r, 2, "cannot read password file")
    r = run(env, "list", "-r", repo, "--password-command", "false")
    assert_error(r, 2, "exited with status 1")


def test_key_passwd_changes_the_password(tmp_path: Path, env: dict[str, str], repo: Path) -> None:
    e = {**env, "SNAPDECK_REPO": str(repo)}
    assert run({**e, "SNAPDECK_PASSWORD": PW}, "snapshot", _src(tmp_path), "-q").code == 0
    newf = tmp_path / "new.txt"
    newf.write_text("second password\n")
    r = run({**e, "SNAPDECK_PASSWORD": PW}, "key", "passwd", "--new-password-file", newf, "--json")
    assert r.code == 0, r.err
    assert r.json["changed"] is True
    assert_error(run({**e, "SNAPDECK_PASSWORD": PW}, "list"), 15, "wrong password")
    ok = run({**e, "SNAPDECK_PASSWORD": "second password"}, "list", "--json")
    assert ok.code == 0 and len(ok.json) == 1, ok.err


def test_key_passwd_new_password_from_the_environment(
    tmp_path: Path, env: dict[str, str], repo: Path
) -> None:
    e = {**env, "SNAPDECK_PASSWORD": PW, "SNAPDECK_NEW_PASSWORD": "third"}
    r = run(e, "key", "passwd", "-r", repo)
    assert r.code == 0 and "password changed" in r.text, r.err
    Store.open(repo, password="third").close()


def test_key_passwd_needs_an_encrypted_repo_and_a_new_password(
    tmp_path: Path, env: dict[str, str], repo: Path
) -> None:
    r = run({**env, "SNAPDECK_PASSWORD": PW}, "key", "passwd", "-r", repo)
    assert_error(r, 2, "needs a password", "SNAPDECK_NEW_PASSWORD")
    assert run(env, "init", "-r", tmp_path / "plain", "-q").code == 0
    r = run({**env, "SNAPDECK_NEW_PASSWORD": "x"}, "key", "passwd", "-r", tmp_path / "plain")
    assert_error(r, 2, "not encrypted")
    info = run(env, "key", "info", "-r", tmp_path / "plain", "--json")
    assert info.code == 0 and info.json["encrypted"] is False and info.json["keys"] == []
    r = run(env, "init", "--encrypt", "-r", tmp_path / "r2")
    assert_error(r, 2, "init --encrypt needs a password")
    assert not (tmp_path / "r2" / "config").exists()


def test_unencrypted_repo_ignores_password_settings(tmp_path: Path, env: dict[str, str]) -> None:
    assert run(env, "init", "-r", tmp_path / "plain", "-q").code == 0
    cfg = json.loads((tmp_path / "plain" / "config").read_text())
    assert cfg["version"] == 1 and "encryption" not in cfg and len(cfg["id_key"]) == 64
    r = run(
        {**env, "SNAPDECK_PASSWORD_COMMAND": "false"}, "list", "-r", tmp_path / "plain", "--json"
    )
    assert r.code == 0 and r.json == [], r.err  # never asked: the failing command never ran


def _run_on_a_terminal(
    env: dict[str, str], args: list[str], answers: list[bytes]
) -> tuple[int, bytes]:
    """Run snapdeck with a pseudo-terminal as its controlling terminal; type ``answers`` at
    each prompt. Returns (exit code, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: snapdeck, attached to the terminal
        os.chdir(REPO_ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "tui", *args], env)
    seen = b""
    pending = list(answers)
    answered = 0  # answer a prompt only once: it must appear after the previous answer
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if pending and seen[answered:].rstrip().endswith(b":"):
            os.write(fd, pending.pop(0) + b"\n")
            answered = len(seen)
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


def test_password_prompt_on_a_terminal_does_not_echo(
    tmp_path: Path, env: dict[str, str], repo: Path
) -> None:
    code, seen = _run_on_a_terminal(env, ["list", "-r", str(repo)], [PW.encode()])
    assert code == 0, seen
    assert b"password for" in seen and b"no snapshots" in seen
    assert PW.encode() not in seen  # typed without echo
    code, seen = _run_on_a_terminal(env, ["list", "-r", str(repo)], [b"wrong"])
    assert code == 15 and b"wrong password" in seen, seen
    # init asks twice
    code, seen = _run_on_a_terminal(
        env, ["init", "--encrypt", "-r", str(tmp_path / "r2")], [b"typed twice", b"typed twice"]
    )
    assert code == 0 and b"repeat the new password" in seen and b"created encrypted" in seen, seen
    Store.open(tmp_path / "r2", password="typed twice").close()


def test_unlock_needs_no_password_on_an_encrypted_repo(
    tmp_path: Path, env: dict[str, str], repo: Path
) -> None:
    import socket
    from datetime import UTC, datetime, timedelta

    from backend.locking import LockInfo

    # A lock left by a crashed process (a dead pid on this host): plaintext JSON, like every lock.
    now = datetime.now(UTC)
    dead = LockInfo(
        name="ab" * 16,
        host=socket.gethostname(),
        pid=2**22 + 12345,
        exclusive=True,
        created=now,
        expires=now + timedelta(minutes=5),
        operation="prune",
    )
    (repo / "locks" / dead.name).write_bytes(dead.to_json())
    r = run(env, "unlock", "-r", repo, "--json")  # no password anywhere, no terminal
    assert r.code == 0, r.err
    assert r.json == {"removed": 1}
    assert not list((repo / "locks").iterdir())
    r = run(env, "unlock", "-r", tmp_path / "nothing-here")
    assert_error(r, 10, "no snapdeck repository")
