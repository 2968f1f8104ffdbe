"""Messages that cross screens (widget-owned messages are nested in their widgets)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.message import Message

from backend.model import Snapshot


class StoreChanged(Message, bubble=False):
    """Snapshots, tags, pins, refs or HEADs changed: screens showing them reload.

    Posted to the app, which posts one to every screen; it does not bubble (a screen's copy
    must not come back to the app)."""


class CheckpointLanded(StoreChanged):
    """A snapshot was written by this app: a watch checkpoint (older watch checkpoints maybe
    thinned out) or "snapshot now".

    Screens that can add one row cheaply handle it as such (the timeline: O(days), not a
    relisting of 10,000 snapshots); to the others it is a ``StoreChanged``."""

    def __init__(self, snapshot: Snapshot | None, forgotten: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.forgotten = forgotten


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

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, WatchState)  # only the latest state matters
