"""Operation: differences between two trees, and text diffs of one file.

Subtrees with the same id are skipped without being read (Merkle trees), so the cost of a diff
is proportional to what changed, not to the size of the snapshot.
Change codes: A added, D removed, M content modified, T type changed, P metadata only
(mode, owner, mtime or xattrs). ctime and inode numbers are not compared: they change on every
restore and carry no meaning for a person.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from backend.ids import BlobId
from backend.model import Change, Entry, EntryKind, Tree

TreeLoader = Callable[[BlobId], Tree]


def _join(prefix: bytes, name: bytes) -> bytes:
    return prefix + b"/" + name if prefix else name


def _meta_differs(a: Entry, b: Entry) -> bool:
    if a.mode != b.mode or a.uid != b.uid or a.gid != b.gid:
        return True
    if a.kind is not EntryKind.DIR and a.mtime_ns != b.mtime_ns:
        return True
    xa = (a.extra or {}).get("xattrs")
    xb = (b.extra or {}).get("xattrs")
    return xa != xb


def _walk_all(load: TreeLoader, tree_id: BlobId, prefix: bytes) -> Iterator[tuple[bytes, Entry]]:
    for e in load(tree_id).entries:
        p = _join(prefix, e.name)
        yield p, e
        if e.kind is EntryKind.DIR and e.payload:
            yield from _walk_all(load, BlobId(e.payload), p)


def diff_trees(
    load_a: TreeLoader,
    tree_a: BlobId | None,
    load_b: TreeLoader,
    tree_b: BlobId | None,
    prefix: bytes = b"",
) -> Iterator[Change]:
    """Yield the changes from tree A to tree B, in path order.

    An added or removed directory yields itself and everything below it.
    """
    if tree_a == tree_b:
        return
    ea = load_a(tree_a).entries if tree_a is not None else ()
    eb = load_b(tree_b).entries if tree_b is not None else ()
    i = j = 0
    while i < len(ea) or j < len(eb):
        a = ea[i] if i < len(ea) else None
        b = eb[j] if j < len(eb) else None
        if b is None or (a is not None and a.name < b.name):
            assert a is not None
            yield from _removed(load_a, a, _join(prefix, a.name))
            i += 1
            continue
        if a is None or b.name < a.name:
            yield from _added(load_b, b, _join(prefix, b.name))
            j += 1
            continue
        i += 1
        j += 1
        path = _join(prefix, a.name)
        if a.kind is not b.kind:
            yield Change("T", path, a.kind, b.kind, _size(a), _size(b))
            if a.kind is EntryKind.DIR:
                for p, e in _walk_all(load_a, BlobId(a.payload), path):
                    yield Change("D", p, e.kind, None, _size(e), None)
            if b.kind is EntryKind.DIR:
                for p, e in _walk_all(load_b, BlobId(b.payload), path):
                    yield Change("A", p, None, e.kind, None, _size(e))
            continue
        if a.kind is EntryKind.DIR:
            if _meta_differs(a, b):
                yield Change("P", path, a.kind, b.kind, None, None)
            if a.payload != b.payload:
                yield from diff_trees(load_a, BlobId(a.payload), load_b, BlobId(b.payload), path)
            continue
        if a.kind is EntryKind.FILE:
            if a.content != b.content or a.size != b.size:
                yield Change("M", path, a.kind, b.kind, a.size, b.size)
            elif _meta_differs(a, b):
                yield Change("P", path, a.kind, b.kind, a.size, b.size)
            continue
        if a.payload != b.payload:
            yield Change("M", path, a.kind, b.kind, _size(a), _size(b))
        elif _meta_differs(a, b):
            yield Change("P", path, a.kind, b.kind, _size(a), _size(b))


def _size(e: Entry) -> int | None:
    if e.kind is EntryKind.FILE:
        return e.size
    if e.kind is EntryKind.SYMLINK and isinstance(e.payload, bytes):
        return len(e.payload)
    return None


def _removed(load: TreeLoader, e: Entry, path: bytes) -> Iterator[Change]:
    yield Change("D", path, e.kind, None, _size(e), None)
    if e.kind is EntryKind.DIR and e.payload:
        for p, c in _walk_all(load, BlobId(e.payload), path):
            yield Change("D", p, c.kind, None, _size(c), None)


def _added(load: TreeLoader, e: Entry, path: bytes) -> Iterator[Change]:
    yield Change("A", path, None, e.kind, None, _size(e))
    if e.kind is EntryKind.DIR and e.payload:
        for p, c in _walk_all(load, BlobId(e.payload), path):
            yield Change("A", p, None, c.kind, None, _size(c))


# ------------------------------------------------------------------ content


@dataclass(frozen=True, slots=True)
class TextDiff:
    """A unified text diff of one file (or why there is none)."""

    path: str
    binary: bool
    lines: tuple[str, ...]


def looks_binary(data: bytes) -> bool:
    """A NUL byte in the first 8 KiB, or invalid UTF-8 there, means binary."""
    head = data[:8192]
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the 8 KiB edge is still text; invalid UTF-8 anywhere
        # else (including near the end of a short file) is not.
        cut_here = len(data) > len(head) and exc.end == len(head)
        return not (cut_here and exc.reason == "unexpected end of data")
    return False


def unified_text_diff(path: str, before: bytes, after: bytes, context: int = 3) -> TextDiff:
    """``difflib`` unified diff of two versions of a file; binaries are only flagged."""
    if looks_binary(before) or looks_binary(after):
        return TextDiff(path, True, ())
    a = before.decode("utf-8", "replace").splitlines(keepends=True)
    b = after.decode("utf-8", "replace").splitlines(keepends=True)
    out: list[str] = []
    for line in difflib.unified_diff(a, b, f"a/{path}", f"b/{path}", n=context):
        if line.endswith("\n"):
            out.append(line)
        else:
            # Like diff(1): say so, or "b" and "b\n" would print as the same line.
            out.append(line + "\n")
            out.append("\\ No newline at end of file\n")
    return TextDiff(path, False, tuple(out))
