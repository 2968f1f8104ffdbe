"""Content-defined chunking: boundaries depend on content only, so edits stay local."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from backend.chunking import WINDOW, chunk_buffer, chunk_fd
from backend.format import ChunkerParams

MiB = 1024 * 1024
PARAMS = ChunkerParams(seed=1_234_567)  # the repository defaults with a fixed gear seed
SMALL = ChunkerParams(min_size=2048, avg_size=8192, max_size=32768, seed=99)


@pytest.fixture(scope="module")
def random_data() -> bytes:
    """2 × window + a bit of seeded random bytes (shared: generating it is the slow part)."""
    return random.Random(20260101).randbytes(2 * WINDOW + 4096)


def chunks_of_buffer(data: bytes, params: ChunkerParams) -> list[bytes]:
    return [bytes(c) for c in chunk_buffer(data, params)]


def chunks_of_file(path: Path, params: ChunkerParams, size_hint: int | None = None) -> list[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        hint = os.fstat(fd).st_size if size_hint is None else size_hint
        return [bytes(c) for c in chunk_fd(fd, params, hint)]
    finally:
        os.close(fd)


def test_insert_in_the_middle_of_20_mib_changes_at_most_3_chunks(random_data: bytes) -> None:
    data = random_data[: 20 * MiB]
    edited = data[: 10 * MiB] + b"\x5a" * 100 + data[10 * MiB :]
    before = chunks_of_buffer(data, PARAMS)
    after = chunks_of_buffer(edited, PARAMS)
    assert b"".join(after) == edited
    assert len(before) >= 8  # the data is really chunked (avg 1 MiB), not one blob
    new = [c for c in after if c not in set(before)]
    assert 1 <= len(new) <= 3
    # and the chunks before and after the edit are shared
    assert after[0] == before[0] and after[-1] == before[-1]


def test_insert_at_the_start_only_changes_the_first_chunks(random_data: bytes) -> None:
    data = random_data[: 20 * MiB]
    before = set(chunks_of_buffer(data, PARAMS))
    after = chunks_of_buffer(b"header!" + data, PARAMS)
    assert sum(c not in before for c in after) <= 2


def test_boundaries_depend_on_the_seed(random_data: bytes) -> None:
    data = random_data[: 8 * MiB]
    a = chunks_of_buffer(data, ChunkerParams(seed=1))
    b = chunks_of_buffer(data, ChunkerParams(seed=2))
    assert a != b
    assert a == chunks_of_buffer(data, ChunkerParams(seed=1))


def test_chunks_respect_min_and_max_size(random_data: bytes) -> None:
    chunks = chunks_of_buffer(random_data[: 4 * MiB], SMALL)
    assert all(SMALL.min_size <= len(c) <= SMALL.max_size for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= SMALL.max_size
    zeros = chunks_of_buffer(bytes(MiB), SMALL)  # no content to cut on: max-size chunks
    assert len(zeros) == MiB // SMALL.max_size
    assert {len(c) for c in zeros} == {SMALL.max_size}


@pytest.mark.parametrize(
    "size",
    [
        WINDOW - 1,
        WINDOW,
        WINDOW + 1,
        2 * WINDOW - 1,
        2 * WINDOW,
        2 * WINDOW + 1,
    ],
    ids=["win-1", "win", "win+1", "2win-1", "2win", "2win+1"],
)
@pytest.mark.parametrize("params", [PARAMS, SMALL], ids=["default", "small"])
def test_chunk_fd_equals_chunk_buffer_around_the_window(
    tmp_path: Path, random_data: bytes, size: int, params: ChunkerParams
) -> None:
    data = random_data[:size]
    path = tmp_path / "f"
    path.write_bytes(data)
    whole = chunks_of_buffer(data, params)
    streamed = chunks_of_file(path, params)
    assert b"".join(streamed) == data
    assert [len(c) for c in streamed] == [len(c) for c in whole]
    assert streamed == whole


def test_chunk_fd_reads_exactly_the_size_hint(tmp_path: Path, random_data: bytes) -> None:
    """chunk_fd reads what stat() said (one read per small file); growth is the caller's to
    notice by comparing fstat before and after (see test_file_growing_while_read_is_reread)."""
    data = random_data[: 3 * MiB]
    path = tmp_path / "f"
    path.write_bytes(data)
    assert b"".join(chunks_of_file(path, PARAMS, size_hint=1000)) == data[:1000]
    assert b"".join(chunks_of_file(path, PARAMS, size_hint=len(data))) == data


def test_file_growing_while_read_is_reread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that grows between the walk's lstat and the read is read again, whole."""
    from backend import snapshots as snapmod
    from backend.store import Store

    src = tmp_path / "src"
    src.mkdir()
    f = src / "grows.txt"
    f.write_bytes(b"a" * 1000)
    real_read_file = snapmod.SnapshotRun._read_file
    grown = {"done": False}

    def read_file(self: object, path: bytes, st: object) -> object:
        if path.endswith(b"grows.txt") and not grown["done"]:
            grown["done"] = True
            with open(path, "ab") as fh:
                fh.write(b"b" * 5000)  # grows after lstat, before the read
        return real_read_file(self, path, st)  # type: ignore[arg-type]

    monkeypatch.setattr(snapmod.SnapshotRun, "_read_file", read_file)
    store = Store.init(tmp_path / "repo", cache_dir=None)
    res = store.create_snapshot(src)
    assert grown["done"]
    assert b"".join(store.read_file(res.snapshot, "grows.txt")) == b"a" * 1000 + b"b" * 5000
    (entry,) = [e for _p, e in store.ls(res.snapshot)]
    assert entry.size == 6000


def test_chunk_fd_with_a_size_hint_above_the_window_on_a_short_file(
    tmp_path: Path, random_data: bytes
) -> None:
    """The file shrank after stat(): the streamed path must still match the buffer."""
    data = random_data[: 5 * MiB]
    path = tmp_path / "f"
    path.write_bytes(data)
    assert chunks_of_file(path, PARAMS, size_hint=WINDOW + 10) == chunks_of_buffer(data, PARAMS)


@pytest.mark.parametrize("size", [1, 100, 4096, PARAMS.min_size])
def test_small_file_is_exactly_one_chunk(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert chunks_of_buffer(data, PARAMS) == [data]
    assert chunks_of_file(path, PARAMS) == [data]


def test_empty_file_has_no_chunk(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert chunks_of_buffer(b"", PARAMS) == []
    assert chunks_of_file(path, PARAMS) == []
    assert chunks_of_file(path, PARAMS, size_hint=WINDOW + 1) == []
