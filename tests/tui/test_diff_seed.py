"""A seeded, fully deterministic repository for the diff and eviction screen tests.

Every byte is fixed: the repository config (id key, chunker seed) is written by hand and the
trees are built entry by entry (fixed mtimes, owners, no inode numbers), so snapshot ids, sizes
and therefore the screenshots are the same on every run and every machine. The tests at the
bottom check exactly that.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backend.chunking import ChunkerParams
from backend.clock import FixedClock
from backend.format import BLOB_DATA, RepoConfig, encode_config, encode_snapshot
from backend.ids import BlobId, object_name
from backend.model import Entry, EntryKind, Snapshot, SnapshotStats, Tree
from backend.storage import open_storage
from backend.store import Store

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
"""The frozen "now" of every seeded test."""
SOURCE = "/demo/project"
HOST = "demo"
MTIME = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 10**9

Spec = Mapping[str, "bytes | str | Spec | tuple[str, str]"]
"""name → file content, a subdirectory, or ("link", target) / ("mode", content) specials."""


def open_seeded(root: Path, clock: FixedClock | None = None) -> Store:
    """An empty repository at ``root/repo`` with a fixed id key and chunker seed."""
    storage = open_storage(str(root / "repo"))
    storage.create()
    cfg = RepoConfig(
        id="0" * 32,
        created=NOW.isoformat(),
        chunker=ChunkerParams(seed=1),
        compression_level=3,
        id_key=bytes(range(32)),
    )
    storage.put("config", "config", encode_config(cfg))
    storage.close()
    return Store.open(root / "repo", cache_dir=root / "cache", clock=clock or FixedClock(NOW))


def _tree(store: Store, spec: Spec) -> tuple[BlobId, int, int]:
    """Store a tree; returns (id, files, bytes)."""
    repo = store.repo
    entries = []
    files = total = 0
    for name in sorted(spec, key=lambda n: n.encode()):
        value = spec[name]
        bname = name.encode()
        if isinstance(value, Mapping):
            tid, f, b = _tree(store, value)
            files += f
            total += b
            entries.append(
                Entry(bname, EntryKind.DIR, 0o755, 1000, 1000, MTIME, 0, payload=bytes(tid))
            )
            continue
        mode = 0o644
        if isinstance(value, tuple):
            tag, arg = value
            if tag == "link":
                entries.append(
                    Entry(
                        bname,
                        EntryKind.SYMLINK,
                        0o777,
                        1000,
                        1000,
                        MTIME,
                        len(arg),
                        payload=arg.encode(),
                    )
                )
                continue
            mode, value = 0o755, arg
        data = value.encode() if isinstance(value, str) else value
        content: tuple[BlobId, ...] = ()
        if data:
            bid = repo.hash_blob(data)
            repo.put_blob(BLOB_DATA, bid, data)
            content = (bid,)
        entries.append(
            Entry(bname, EntryKind.FILE, mode, 1000, 1000, MTIME, len(data), content=content)
        )
        files += 1
        total += len(data)
    tid, _ = repo.save_tree(Tree(tuple(entries)))
    return tid, files, total


def add_snapshot(
    store: Store,
    spec: Spec,
    *,
    time: datetime,
    parent: Snapshot | None = None,
    tags: tuple[str, ...] = (),
    trigger: str = "manual",
    source: str = SOURCE,
    save: bool = True,
) -> Snapshot:
    """Store ``spec`` as a snapshot taken at ``time``.

    With ``save=False`` only the data and trees are stored (buffered, not yet flushed) and the
    snapshot is returned with its id, to be saved with ``save_all`` (one flush for many).
    """
    tid, files, total = _tree(store, spec)
    snap = Snapshot(
        id="",
        time=time,
        host=HOST,
        source=source,
        tree=bytes(tid).hex(),
        parent=parent.id if parent else None,
        tags=tags,
        trigger=trigger,
        stats=SnapshotStats(total_files=files, total_bytes=total, files_new=files),
    )
    if not save:
        return replace(snap, id=object_name(encode_snapshot(snap)))
    store.repo.flush()
    return store.repo.save_snapshot(snap)


def save_all(store: Store, snaps: list[Snapshot]) -> None:
    """Flush the buffered data, then write the snapshot objects (the crash-safe order)."""
    store.repo.flush()
    for s in snaps:
        saved = store.repo.save_snapshot(s)
        assert saved.id == s.id


# --------------------------------------------------------------------------------------------
# The diff pair
# --------------------------------------------------------------------------------------------

APP_V1 = "\n".join(
    [
        '"""A small demo module."""',
        "",
        "import os",
        "",
        "",
        *[f"def helper_{i}(x):\n    return x * {i}\n" for i in range(1, 31)],
        "def main():",
        '    print("hello")',
        "    return 0",
        "",
    ]
)
APP_V2 = (
    APP_V1.replace("import os", "import os\nimport sys")
    .replace("return x * 14\n", "return x * 14 + 1  # adjusted\n")
    .replace('    print("hello")', '    print("hello, world", file=sys.stderr)')
)
PNG_A = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PNG_B = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4


def huge_text(n: int, edits: int, seed: int) -> tuple[str, str]:
    """Two versions of an ``n``-line text with ``edits`` scattered one-line changes."""
    rng = random.Random(seed)
    a = [f"line {i:05d}: value={rng.randrange(10**6)} status=ok" for i in range(n)]
    b = list(a)
    for k in sorted(rng.sample(range(n), edits)):
        b[k] = b[k].replace("status=ok", "status=CHANGED")
    return "\n".join(a) + "\n", "\n".join(b) + "\n"


@dataclass(frozen=True)
class DiffPair:
    """A seeded store and the two snapshots of the diff tests."""

    store: Store
    a: Snapshot
    b: Snapshot


def seed_diff(root: Path, *, huge_lines: int = 0) -> DiffPair:
    """Two snapshots with one change of every kind (and optionally a huge text file)."""
    store = open_seeded(root)
    common: dict[str, bytes | str | Spec | tuple[str, str]] = {
        "src": {"app.py": APP_V1, "util.py": "def util():\n    return 1\n"},
        "README.md": "# Demo\n\nA demo project.\nRun it with `python -m app`.\n",
        "old.txt": "this file goes away\n",
        "logo.png": PNG_A,
        "current": ("link", "releases/v1"),
        "run.sh": "#!/bin/sh\necho run\n",
    }
    v2 = dict(common)
    v2["src"] = {"app.py": APP_V2, "util.py": "def util():\n    return 1\n"}
    v2["README.md"] = "# Demo\n\nA demo project.\nRun it with `python -m app --fast`.\n"
    del v2["old.txt"]
    v2["CHANGES.md"] = "## 1.1\n\n- faster\n- louder\n"
    v2["logo.png"] = PNG_B
    v2["current"] = ("link", "releases/v2")
    v2["run.sh"] = ("mode", "#!/bin/sh\necho run\n")
    if huge_lines:
        ha, hb = huge_text(huge_lines, 25, seed=7)
        common["huge.log"] = ha
        v2["huge.log"] = hb
    a = add_snapshot(store, common, time=NOW - timedelta(days=2))
    b = add_snapshot(store, v2, time=NOW - timedelta(hours=3), parent=a)
    return DiffPair(store, a, b)


# --------------------------------------------------------------------------------------------
# The eviction history
# --------------------------------------------------------------------------------------------


def seed_history(root: Path, *, count: int = 48) -> Store:
    """``count`` snapshots of one source over about three months, sizes varying.

    Every snapshot shares a base file and adds a file of its own (incompressible, 2-40 KiB),
    so exclusive sizes differ. Snapshot 0 is pinned, the newest is HEAD, one has ref "release".
    """
    store = open_seeded(root)
    rng = random.Random(42)
    base = bytes(rng.randrange(256) for _ in range(16 * 1024))
    snaps: list[Snapshot] = []
    start = NOW - timedelta(days=80)
    step = timedelta(days=80) / count
    parent = None
    for i in range(count):
        t = start + step * i + timedelta(hours=rng.randrange(0, 12))
        own = rng.randbytes(1024 * rng.randrange(2, 40))
        spec: Spec = {"base.bin": base, "notes": {f"n{i:03d}.bin": own}}
        tags = ("release",) if i % 16 == 5 else ()
        trigger = "watch" if i % 3 else "manual"
        snap = add_snapshot(
            store, spec, time=t, parent=parent, tags=tags, trigger=trigger, save=False
        )
        snaps.append(snap)
        parent = snap
    save_all(store, snaps)
    store.list_snapshots()
    store.set_pinned(snaps[0], True)
    store.add_ref("release", snaps[count // 2])
    store.set_head(snaps[-1])
    return store


def test_seeded_diff_is_deterministic(tmp_path: Path) -> None:
    """Two seeded repositories hold snapshots with the same ids (so screenshots are stable)."""
    one = seed_diff(tmp_path / "one")
    two = seed_diff(tmp_path / "two")
    assert (one.a.id, one.b.id) == (two.a.id, two.b.id)
    changes = one.store.diff(one.a, one.b).changes
    assert {c.path: c.change for c in changes} == {
        b"CHANGES.md": "A",
        b"README.md": "M",
        b"current": "M",
        b"logo.png": "M",
        b"old.txt": "D",
        b"run.sh": "P",
        b"src/app.py": "M",
    }
    one.store.close()
    two.store.close()


def test_seeded_history_is_deterministic(tmp_path: Path) -> None:
    """The eviction history has the same ids, pins, refs and HEAD every time."""
    one = seed_history(tmp_path / "one", count=12)
    two = seed_history(tmp_path / "two", count=12)
    ids1 = [s.id for s in one.list_snapshots()]
    assert ids1 == [s.id for s in two.list_snapshots()]
    assert len(ids1) == 12
    prot = one.protection()
    assert prot[ids1[0]] == ["pinned"]
    assert prot[ids1[-1]] == ["HEAD"]
    assert prot[ids1[6]] == ["ref release"]
    one.close()
    two.close()
