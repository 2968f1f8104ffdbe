"""Background uploads of finished packs (layer: repository).

The thread that fills a pack hands it to a ``PackUploader`` and goes straight back to reading
and compressing, while a few upload threads send packs to storage. On object storage an upload
is a network transfer of ~16 MiB; done inline it stalled the pipeline for its whole duration.

Invariants:

* At most ``slots`` jobs are in flight (queued or running). ``submit`` blocks while that many
  are, so the memory held by packs waiting for storage is bounded by ``slots`` packs.
* The first error of a job is kept: every later ``submit`` and ``check`` raises it, and
  ``wait`` raises (and clears) it once the jobs it waited for are done. Nothing that failed to
  store can therefore reach an index segment or a snapshot: the repository's ``flush`` waits
  here before it writes the index.
* ``wait`` waits only for the jobs submitted before it was called, so a flush for a checkpoint
  ends even while other threads keep producing packs.
* ``threads == 0`` runs every job inline in the submitting thread (the old behaviour).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures

__all__ = ["PackUploader"]


class PackUploader:
    """A bounded pool of upload threads with a sticky first error.

    Args:
        threads: Upload threads (0: run jobs inline).
        slots: Jobs in flight at most (queued or running); at least ``threads``.
        name: Thread name prefix.
    """

    def __init__(self, threads: int, slots: int, name: str = "pack-upload") -> None:
        self.threads = max(0, threads)
        self.slots = max(1, slots, self.threads)
        self._name = name
        self._sem = threading.BoundedSemaphore(self.slots)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: set[Future[None]] = set()
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not finished."""
        with self._lock:
            return len(self._futures)

    def check(self) -> None:
        """Raise the first error of an earlier job (it stays until ``wait`` reports it)."""
        err = self._error
        if err is not None:
            raise err

    def submit(self, job: Callable[[], None], on_error: Callable[[], None]) -> None:
        """Run ``job`` in an upload thread, waiting first while every slot is taken.

        ``on_error`` runs (in the upload thread) if the job raises, before the error is
        recorded; it undoes what the caller did in expectation of the job's success.

        Raises:
            BaseException: An earlier job's error (then ``job`` is not run; ``on_error`` is).
        """
        if self.threads == 0:
            self.check()
            try:
                job()
            except BaseException:
                on_error()
                raise
            return
        self._sem.acquire()
        try:
            self.check()
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self._name)
                fut = self._pool.submit(self._run, job, on_error)
                self._futures.add(fut)
        except BaseException:
            self._sem.release()
            on_error()
            raise
        fut.add_done_callback(self._done)

    def _run(self, job: Callable[[], None], on_error: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as exc:
            try:
                on_error()
            finally:
                with self._lock:
                    if self._error is None:
                        self._error = exc

    def _done(self, fut: Future[None]) -> None:
        with self._lock:
            self._futures.discard(fut)
        self._sem.release()

    def wait(self) -> None:
        """Wait for every job submitted so far; raise (and clear) the first error if any."""
        with self._lock:
            pending = list(self._futures)
        if pending:
            wait_futures(pending)
        with self._lock:
            err, self._error = self._error, None
        if err is not None:
            raise err

    def close(self) -> None:
        """Wait for the jobs in flight and stop the threads (errors are not raised)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
