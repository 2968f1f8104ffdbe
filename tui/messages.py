"""Messages that cross screens (widget-owned messages are nested in their widgets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.message import Message


class StoreChanged(Message, bubble=False):
    """Snapshots, tags, pins, refs or HEADs changed: screens showing them reload.

    Posted to the app, which posts one to every screen; it does not bubble (a screen's copy
    must not come back to the app)."""


@dataclass
class WatchState(Message):
    """The watcher's state for the status bar."""

    watching: int
    """How many directories are watched (0: not watching)."""
    pending: int = 0
    """Changes seen and not yet in a checkpoint."""
    last_checkpoint: datetime | None = None
    busy: bool = False
    """A checkpoint is being taken."""
    note: str = ""
