"""Tree diffs (change codes, Merkle skipping, path filters) and text diffs of one file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.diff import diff_trees, looks_binary, unified_text_diff
from backend.ids import BlobId
from backend.model import Snapshot, Tree
from backend.store import Store
from tests.conftest import Symlink, make_tree


def snap(store: Store, src: Path) -> Snapshot:
    return store.create_snapshot(src).snapshot


def codes(store: Store, a: Snapshot, b: Snapshot, path: str = "") -> list[tuple[str, bytes]]:
    return [(c.change, c.path) for c in store.diff(a, b, path=path).changes]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    make_tree(
        root,
        {
            "big": {f"f{i:03}": f"content {i}" for i in range(50)},
            "edit.txt": "one\n",
            "drop.txt": "x",
            "becomes-dir": "file",
            "dir-becomes-link": {"inner": "i"},
            "link": Symlink("edit.txt"),
            "chmod.sh": "#!/bin/sh\n",
            "gone": {"a": "a", "b": {"c": "c"}},
        },
    )
    return root


def test_change_codes(store: Store, src: Path) -> None:
    before = snap(store, src)
    (src / "edit.txt").write_text("one\ntwo\n")
    (src / "drop.txt").unlink()
    (src / "becomes-dir").unlink()
    make_tree(src / "becomes-dir", {"child": "c"})
    for p in (src / "dir-becomes-link").iterdir():
        p.unlink()
    (src / "dir-becomes-link").rmdir()
    os.symlink("edit.txt", src / "dir-becomes-link")
    (src / "link").unlink()
    os.symlink("drop.txt", src / "link")
    os.chmod(src / "chmod.sh", 0o755)
    for p in sorted((src / "gone").rglob("*"), key=lambda p: -len(p.parts)):
        p.unlink() if p.is_file() else p.rmdir()
    (src / "gone").rmdir()
    make_tree(src, {"added": {"new.txt": "n", "deeper": {"x": "x"}}})
    after = snap(store, src)

    assert codes(store, before, after) == [
        ("A", b"added"),
        ("A", b"added/deeper"),
        ("A", b"added/deeper/x"),
        ("A", b"added/new.txt"),
        ("T", b"becomes-dir"),
        ("A", b"becomes-dir/child"),
        ("P", b"chmod.sh"),
        ("T", b"dir-becomes-link"),
        ("D", b"dir-becomes-link/inner"),
        ("D", b"drop.txt"),
        ("M", b"edit.txt"),
        ("D", b"gone"),
        ("D", b"gone/a"),
        ("D", b"gone/b"),
        ("D", b"gone/b/c"),
        ("M", b"link"),
    ]
    sizes = {c.path: (c.size_before, c.size_after) for c in store.diff(before, after).changes}
    assert sizes[b"edit.txt"] == (4, 8)
    assert sizes[b"drop.txt"] == (1, None)
    assert sizes[b"added/new.txt"] == (None, 1)


def test_identical_snapshots_have_no_changes(store: Store, src: Path) -> None:
    a = snap(store, src)
    b = snap(store, src)
    assert store.diff(a, b).changes == ()
    assert store.diff(b, a).changes == ()


def test_unchanged_subtrees_are_never_read(store: Store, src: Path) -> None:
    a = snap(store, src)
    (src / "edit.txt").write_text("changed")
    b = snap(store, src)
    loaded: list[bytes] = []

    def load(tid: BlobId) -> Tree:
        loaded.append(bytes(tid))
        return store.repo.load_tree(tid)

    ra, rb = BlobId(bytes.fromhex(a.tree)), BlobId(bytes.fromhex(b.tree))
    changes = list(diff_trees(load, ra, load, rb))
    assert [c.path for c in changes] == [b"edit.txt"]
    assert sorted(loaded) == sorted([bytes(ra), bytes(rb)])  # not 'big', 'gone', ...


def test_diff_restricted_to_a_directory(store: Store, src: Path) -> None:
    a = snap(store, src)
    (src / "big" / "f001").write_text("edited")
    (src / "edit.txt").write_text("also edited")
    b = snap(store, src)
    assert codes(store, a, b, "big") == [("M", b"big/f001")]
    assert codes(store, a, b) == [("M", b"big/f001"), ("M", b"edit.txt")]


def test_diff_restricted_to_one_file(store: Store, src: Path) -> None:
    a = snap(store, src)
    (src / "edit.txt").write_text("changed!")
    b = snap(store, src)
    assert codes(store, a, b, "edit.txt") == [("M", b"edit.txt")]


def test_live_diff_and_live_file_diff(store: Store, src: Path) -> None:
    a = snap(store, src)
    (src / "edit.txt").write_text("one\nlive\n")
    (src / "new-live").write_text("n")
    res = store.diff(a, None)
    assert res.source_to == f"live:{src}"
    assert [(c.change, c.path) for c in res.changes] == [("M", b"edit.txt"), ("A", b"new-live")]
    td = store.file_diff(a, None, "edit.txt")
    assert not td.binary
    assert "+live\n" in td.lines
    assert len(store.list_snapshots()) == 1  # a live diff stores no snapshot


# ---------------------------------------------------------------- text diffs


@pytest.mark.parametrize(
    ("data", "binary"),
    [
        (b"plain text\n", False),
        ("ünïcødé\n".encode(), False),
        (b"", False),
        (b"nul\x00inside", True),
        (b"\xff", True),
        (b"abc\xfe\xff", True),
        (b"latin-1 caf\xe9", True),
        (b"a" * 8191 + "é".encode(), False),  # a character cut by the 8 KiB window
        (b"a" * 9000 + b"\xff", False),  # only the first 8 KiB are looked at
        (b"a" * 8190 + b"\xff\xff\xff", True),
    ],
)
def test_looks_binary(data: bytes, binary: bool) -> None:
    assert looks_binary(data) is binary


def test_unified_text_diff_marks_a_missing_final_newline() -> None:
    td = unified_text_diff("f", b"a\nb", b"a\nb\n")
    assert td.lines[-3:] == ("-b\n", "\\ No newline at end of file\n", "+b\n")


def test_unified_text_diff_of_binaries_is_only_flagged() -> None:
    td = unified_text_diff("f", b"\x00\x01", b"\x00\x02")
    assert td.binary and td.lines == ()
    td = unified_text_diff("f", b"x\n", b"y\n")
    assert not td.binary
    assert td.lines[:2] == ("--- a/f\n", "+++ b/f\n")
    assert "-x\n" in td.lines and "+y\n" in td.lines
