"""Suite-wide fixtures: an isolated environment for every test, a fresh store, tree builders.

No test may read the real user's config or write the real default repository: the autouse
``isolated_env`` fixture points HOME and every XDG directory at a per-test temporary directory
and removes the variables that would choose another repository or config file. (The older
``tests/backend/test_config.py`` has its own fixture that sets the same variables to its own
paths; it runs after this one and wins, which is fine.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from backend.store import Store

ENV_DIRS = {
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_CACHE_HOME": "cache",
    "XDG_STATE_HOME": "state",
}
"""XDG variable → subdirectory of the per-test environment root."""

ENV_ROOT = "_env"
"""The per-test environment root, below ``tmp_path`` (a name no test uses for its own files)."""


def isolated_environ(root: Path) -> dict[str, str]:
    """``os.environ`` as the tests see it, for a subprocess rooted at ``root``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NO_COLOR", "SNAPDECK_REPO", "SNAPDECK_CONFIG", "COLUMNS", "LINES")
        and not k.startswith("TEXTUAL")
    }
    env["HOME"] = str(root / "home")
    for var, sub in ENV_DIRS.items():
        env[var] = str(root / sub)
    return env


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME and the XDG directories at ``tmp_path/_env``; drop SNAPDECK_* overrides."""
    root = tmp_path / ENV_ROOT
    (root / "home").mkdir(parents=True)
    for var in list(os.environ):
        if var == "NO_COLOR" or (var.startswith("TEXTUAL") and var != "TEXTUAL_SNAPSHOT_TEMPDIR"):
            # (pytest-textual-snapshot's report directory is kept: its plugin reads it back.)
            monkeypatch.delenv(var)
    monkeypatch.delenv("SNAPDECK_REPO", raising=False)
    monkeypatch.delenv("SNAPDECK_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(root / "home"))
    for var, sub in ENV_DIRS.items():
        monkeypatch.setenv(var, str(root / sub))
    from backend.config import default_cache_dir, default_config_path, default_repo_path

    # Fail loudly rather than touch a real user's files on a platform that ignores XDG_*.
    for p in (default_config_path(), default_repo_path(), default_cache_dir()):
        assert p.is_relative_to(tmp_path), p
    yield root


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A new, empty repository at ``tmp_path/repo`` with its catalog in ``tmp_path/cache``."""
    s = Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache")
    try:
        yield s
    finally:
        s.close()


TreeSpec = Mapping[str | bytes, "bytes | str | TreeSpec | Symlink | None"]


class Symlink:
    """A symlink in a ``make_tree`` spec."""

    def __init__(self, target: str | bytes) -> None:
        self.target = os.fsencode(target)


def make_tree(root: Path | bytes, spec: TreeSpec) -> None:
    """Create files (bytes/str content), directories (dicts), symlinks and FIFOs (None).

    Names may be bytes (any byte but '/' and NUL) so non-UTF-8 names are easy to make.
    """
    broot = os.fsencode(root)
    os.makedirs(broot, exist_ok=True)
    for name, value in spec.items():
        path = os.path.join(broot, os.fsencode(name))
        if isinstance(value, Mapping):
            make_tree(path, value)
        elif isinstance(value, Symlink):
            os.symlink(value.target, path)
        elif value is None:
            os.mkfifo(path)
        else:
            data = value.encode() if isinstance(value, str) else value
            with open(path, "wb") as f:
                f.write(data)


def read_tree(root: Path | bytes) -> dict[bytes, bytes | dict | tuple[str, bytes]]:
    """A directory as nested dicts: files → content, symlinks → ("link", target)."""
    broot = os.fsencode(root)
    out: dict[bytes, bytes | dict | tuple[str, bytes]] = {}
    for name in os.listdir(broot):
        path = os.path.join(broot, name)
        if os.path.islink(path):
            out[name] = ("link", os.readlink(path))
        elif os.path.isdir(path):
            out[name] = read_tree(path)
        elif os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = f.read()
        else:
            out[name] = ("special", b"")
    return out
