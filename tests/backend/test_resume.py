"""Resumable snapshots: a run killed with SIGKILL resumes without re-storing what it stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from backend.resume import ResumeJournal
from backend.store import Store
from tests.conftest import isolated_environ, read_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = 300
SIZE = 64 * 1024

DRIVER = textwrap.dedent(
    """
    import sys, time
    import backend.snapshots as sn
    from backend.snapshots import SnapshotOptions
    from backend.store import Store

    sn.RESUME_EVERY_S = 0.02
    real = sn.SnapshotRun._read_file

    def slow(self, path, st):  # a slow disk: the kill lands mid-run
        time.sleep(0.004)
        return real(self, path, st)

    sn.SnapshotRun._read_file = slow
    store = Store.open(sys.argv[1], cache_dir=__import__("pathlib").Path(sys.argv[2]))
    store.create_snapshot(sys.argv[3], options=SnapshotOptions(threads=2))
    print("finished", flush=True)
    """
)


class _Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, total: int | None, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, msg: str) -> None:
        self.notes.append(msg)


def _records(path: Path) -> int:
    try:
        return max(0, path.read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i:03d}.bin").write_bytes(os.urandom(SIZE))
    cache = tmp_path / "cache"
    Store.init(tmp_path / "repo", cache_dir=cache).close()
    store = Store.open(tmp_path / "repo", cache_dir=cache)
    journal = store.resume_journal(str(src))
    assert journal is not None
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path / "repo"), str(cache), str(src)],
        env=isolated_environ(tmp_path / "_env"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while _records(journal.path) < FILES // 4:
        assert proc.poll() is None, "the snapshot finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.list_snapshots() == []  # no snapshot, no partial object visible
    done = _records(journal.path)
    assert FILES // 4 <= done < FILES

    notes = _Notes()
    res = store.create_snapshot(src, progress=notes)
    st = res.snapshot.stats
    assert any("resuming an interrupted snapshot" in n for n in notes.notes)
    assert st.files_new == FILES and st.total_bytes == FILES * SIZE
    # Journaled files are neither read nor stored again (random data: no dedup between files).
    assert st.bytes_read <= (FILES - done) * SIZE
    assert st.bytes_added <= (FILES - done) * SIZE
    assert not journal.exists()  # removed once the snapshot is saved
    out = tmp_path / "out"
    store.restore(res.snapshot, out)
    assert read_tree(out) == read_tree(src)
    store.close()


def test_a_journal_for_another_repository_is_discarded(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a" * 1000)
    with Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache") as store:
        journal = store.resume_journal(str(src))
        assert journal is not None
        other = ResumeJournal(
            journal.path,
            repo_id="f" * 32,
            format_version=journal.format_version,
            host=journal.host,
            source=journal.source,
        )
        st = os.stat(src / "a")
        other.append([(os.fsencode(src / "a"), st, ())])
        assert journal.exists()
        notes = _Notes()
        res = store.create_snapshot(src, progress=notes)
        assert res.snapshot.stats.bytes_read == 1000  # nothing taken from the bad journal
        assert any("resume state discarded" in n and "ffffffff" in n for n in notes.notes), (
            notes.notes
        )
        assert not journal.exists()


def test_a_journal_of_another_format_version_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = ResumeJournal(path, repo_id="a" * 32, format_version=1, host="h", source="/s")
    st = os.stat(tmp_path)
    j.append([(b"/s/x", st, ())])
    header = json.loads(path.read_text().splitlines()[0])
    assert header["repository"] == "a" * 32 and header["format"] == 1
    j2 = ResumeJournal(path, repo_id="a" * 32, format_version=2, host="h", source="/s")
    assert j2.load() == {}
    assert j2.message is not None and "format 1" in j2.message and "format 2" in j2.message
    assert not path.exists()


def test_a_torn_last_line_is_ignored_and_appending_continues(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = ResumeJournal(path, repo_id="a" * 32, format_version=1, host="h", source="/s")
    st = os.stat(tmp_path)
    j.append([(b"/s/x", st, ())])
    with open(path, "ab") as f:
        f.write(b'{"p": "2f", "s": 1')  # a crash mid-append
    j2 = ResumeJournal(path, repo_id="a" * 32, format_version=1, host="h", source="/s")
    assert set(j2.load()) == {b"/s/x"}
    j2.append([(b"/s/y", st, ())])
    j3 = ResumeJournal(path, repo_id="a" * 32, format_version=1, host="h", source="/s")
    assert set(j3.load()) == {b"/s/x", b"/s/y"}
