"""Progress reporting and cancellation, passed down as plain objects.

Operations accept ``progress: Progress`` and ``cancel: threading.Event | None``. They call
``check_cancel(cancel)`` between units of work; a set event raises ``Cancelled``.
"""

from __future__ import annotations

import threading
from typing import Protocol

from backend.errors import Cancelled


class Progress(Protocol):
    """Receives progress from a long operation. Implementations must be thread-safe."""

    def start(self, total: int | None, label: str) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def note(self, msg: str) -> None: ...


class NullProgress:
    """A progress sink that ignores everything."""

    def start(self, total: int | None, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def note(self, msg: str) -> None:
        pass


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise ``Cancelled`` if the event is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
