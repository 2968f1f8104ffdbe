"""The seeded demo repository used by the TUI tests, the screenshots and ``--demo`` runs.

Snapshot ids hash inode numbers and ctimes, so a repository built twice differs; the tests use
a copy of one committed build (``tests/tui/data/demo-repo``). Rebuild it with
``python -m tui.demo tests/tui/data/demo-repo`` (then update the snapshot SVGs).
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from backend.clock import FixedClock
from backend.snapshots import SnapshotOptions
from backend.store import Store

DEMO_ROOT = "/tmp/snapdeck-demo"
"""Where the demo sources live while the repository is built (recorded in its snapshots)."""
DEMO_NOW = datetime(2025, 11, 20, 14, 0, 0, tzinfo=UTC)
"""The frozen "now" of the demo (the tests' clock)."""
DEMO_HOST = "demo"

MAIN_V1 = '''"""A tiny demo program."""

import sys

from util import greet


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else "world"
    print(greet(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''

UTIL = '''def greet(name: str) -> str:
    """Say hello."""
    return f"Hello, {name}!"


def shout(text: str) -> str:
    return text.upper() + "!"
'''

README_V1 = "# demo\n\nA project whose history snapdeck keeps.\n"
README_V2 = README_V1 + "\n## Usage\n\n    python main.py NAME\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + bytes(range(256)) * 4


def _at(day: int, hh: int, mm: int) -> datetime:
    return datetime(2025, 11, day, hh, mm, 0, tzinfo=UTC)


def _write(root: Path, rel: str, data: str | bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(p, ns=(1_763_000_000_000_000_000, 1_763_000_000_000_000_000))


def build_demo_repo(repo: Path, root: str = DEMO_ROOT) -> Store:
    """Build the demo repository at ``repo`` (sources under ``root``, recreated)."""
    shutil.rmtree(root, ignore_errors=True)
    project = Path(root) / "project"
    notes = Path(root) / "notes"
    clock = FixedClock(_at(18, 9, 0))
    store = Store.init(repo, clock=clock)

    def snap(
        src: Path,
        when: datetime,
        trigger: str = "watch",
        tags: tuple[str, ...] = (),
        message: str = "",
    ):
        clock._now = when
        opts = SnapshotOptions(
            time=when, trigger=trigger, tags=tags, message=message, host=DEMO_HOST, threads=1
        )
        return store.create_snapshot(src, options=opts).snapshot

    _write(project, "README.md", README_V1)
    _write(project, "main.py", MAIN_V1)
    _write(project, "notes.txt", "remember the milk\n")
    first = snap(project, _at(18, 9, 12), "manual", ("start",), "first snapshot")
    _write(project, "README.md", README_V2)
    snap(project, _at(18, 9, 40))
    _write(project, "src/util.py", UTIL)
    snap(project, _at(18, 11, 5))
    v01 = snap(project, _at(18, 16, 30), "manual", ("v0.1",), "release 0.1")
    store.add_ref("release", v01)

    _write(project, "main.py", MAIN_V1.replace('"world"', '"snapdeck"'))
    snap(project, _at(19, 10, 2))
    _write(project, "data/logo.png", PNG)
    snap(project, _at(19, 10, 15))
    (project / "notes.txt").unlink()
    snap(project, _at(19, 14, 48))
    _write(notes, "todo.md", "- [ ] write the docs\n")
    snap(notes, _at(19, 14, 50), "manual")
    # restore 0.1 in place: a guard first, then HEAD moves back → the next checkpoint branches
    clock._now = _at(19, 15, 0)
    snap(project, _at(19, 15, 0), "restore-guard", message=f"before restoring {v01.short_id}")
    store.restore(v01, project, delete=True)
    store.set_head(v01)
    os.utime(project / "main.py", ns=(1_763_000_000_000_000_000, 1_763_000_000_000_000_000))
    _write(project, "main.py", MAIN_V1.replace("print(greet(name))", "print(greet(name).upper())"))
    snap(project, _at(19, 15, 20))

    _write(
        project,
        "src/util.py",
        UTIL + "\n\ndef whisper(text: str) -> str:\n    return text.lower()\n",
    )
    snap(project, _at(20, 9, 30))
    _write(notes, "todo.md", "- [x] write the docs\n- [ ] ship it\n")
    snap(notes, _at(20, 10, 0))
    _write(project, "CHANGELOG.md", "## 0.2\n\n- whisper()\n- louder greetings\n")
    mile = snap(project, _at(20, 11, 45), "manual", ("milestone",), "feature complete")
    store.set_pinned(mile, True)
    _write(project, "README.md", README_V2 + "\nSee CHANGELOG.md.\n")
    snap(project, _at(20, 13, 58))
    del first
    clock._now = DEMO_NOW
    return store


def open_demo_copy(data: Path, dest: Path) -> Store:
    """A private copy of a built demo repository, opened with the frozen demo clock."""
    shutil.copytree(data, dest / "repo")
    return Store.open(dest / "repo", cache_dir=dest / "cache", clock=FixedClock(DEMO_NOW))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/tui/data/demo-repo")
    shutil.rmtree(out, ignore_errors=True)
    build_demo_repo(out).close()
    print(f"built {out}")
