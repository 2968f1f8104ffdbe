"""Content-defined chunking (FastCDC, compiled) over files and buffers.

Boundaries depend only on content and the repository's chunker parameters (including the
per-repository gear seed), so an insertion early in a file only changes the chunks around it.
Files smaller than ``min_size`` are a single chunk without running the chunker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from pyfastcdc import FastCDC

from backend.format import ChunkerParams

WINDOW = 8 * 1024 * 1024
"""Bytes read at a time from a large file (must exceed the maximum chunk size)."""
_local = threading.local()


def _chunker(params: ChunkerParams) -> FastCDC:
    # FastCDC objects are not safe to share between threads: one per thread and params.
    cache: dict[ChunkerParams, FastCDC] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = {}
        _local.cache = cache
    c = cache.get(params)
    if c is None:
        c = FastCDC(
            avg_size=params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            seed=params.seed,
        )
        cache[params] = c
    return c


def chunk_buffer(buf: bytes | memoryview, params: ChunkerParams) -> Iterator[memoryview]:
    """Cut a whole buffer into chunks."""
    mv = memoryview(buf)
    if len(mv) <= params.min_size:
        if len(mv):
            yield mv
        return
    for c in _chunker(params).cut_buf(mv):
        yield mv[c.offset : c.offset + c.length]


def chunk_fd(fd: int, params: ChunkerParams, size_hint: int) -> Iterator[memoryview]:
    """Read a file descriptor to the end and cut it into chunks, a window at a time.

    A chunk that ends at a window's end is carried into the next window, so boundaries are the
    same as for the whole file in one buffer. Every window is a fresh buffer, never reused, so
    the chunks (views into it) stay valid after the next window is read: a caller may hand
    them to other threads without copying.
    """
    if size_hint <= WINDOW:
        data = _read_all(fd, size_hint)
        yield from chunk_buffer(data, params)
        return
    carry: memoryview | None = None
    while True:
        n_carry = len(carry) if carry is not None else 0
        buf = bytearray(n_carry + WINDOW)
        if carry is not None:
            buf[:n_carry] = carry
        got = _readinto_all(fd, memoryview(buf)[n_carry:])
        eof = got < WINDOW
        window = memoryview(buf)[: n_carry + got] if eof else memoryview(buf)
        if eof:
            yield from chunk_buffer(window, params)
            return
        chunks = list(chunk_buffer(window, params))
        if not chunks:
            carry = None
            continue
        yield from chunks[:-1]
        carry = chunks[-1]


def _readinto_all(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; returns the bytes read (fewer only at EOF)."""
    got = 0
    total = len(view)
    while got < total:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return got


def _read_all(fd: int, want: int) -> bytes:
    """Read ``want`` bytes (fewer only at EOF).

    For a file read whole (``want`` is its stat size) one ``read`` is usually all it takes; the
    caller compares fstat before and after, so a file that grew is noticed and read again.
    """
    b = os.read(fd, want)
    if len(b) == want or not b:
        return b
    parts = [b]
    got = len(b)
    while got < want:
        b = os.read(fd, want - got)
        if not b:
            break
        parts.append(b)
        got += len(b)
    return b"".join(parts)
