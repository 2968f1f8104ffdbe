"""Resumable snapshots: a journal of the files a long snapshot run has already stored.

Layer: operations (beside ``snapshots``). Seed 000's streaming checkpoint, applied to the
snapshot pipeline. During a long run the pipeline periodically waits for its readers, flushes
packs and the index to the repository (so everything stored so far is durable and findable),
and then appends the files completed since the last save to this journal. After a crash
(kill -9, power loss) or Ctrl-C, the next run of the same source reads the journal: a file whose
size, mtime, ctime and inode still match a record, and whose blobs are all in the index, is
taken from the record without being read again. Nothing already stored is stored twice (the
index says it is there), and most of it is not even re-read.

File format (one file per repository location, host and source, in the cache directory)::

    {"snapdeck_resume": 1, "repository": ID, "format": N, "host": ..., "source": ..., ...}
    {"p": HEX(path), "s": size, "m": mtime_ns, "c": ctime_ns, "i": ino, "b": HEX(ids...)}
    ...

The first line carries the repository id and the repository format version: a journal written
for another repository (the location was re-initialised) or another format is discarded with a
clear message. Lines are appended and fsynced; a torn last line (a crash mid-append) is ignored.
The journal is removed when the snapshot completes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import blake3

from backend.ids import BlobId

log = logging.getLogger(__name__)

RESUME_VERSION = 1
"""Version of the journal file format itself."""
_MAGIC = "snapdeck_resume"
_ID_LEN = 32


@dataclass(frozen=True, slots=True)
class ResumeEntry:
    """A file already stored by an interrupted run: its stat identity and its blob ids."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    content: tuple[BlobId, ...]

    def matches(self, st: os.stat_result) -> bool:
        """Whether the file on disk is still the one that was stored."""
        return (
            st.st_size == self.size
            and st.st_mtime_ns == self.mtime_ns
            and st.st_ctime_ns == self.ctime_ns
            and st.st_ino == self.ino
        )


class ResumeJournal:
    """The resume journal of one source in one repository.

    Args:
        path: the journal file.
        repo_id: the repository's id (checked when loading).
        format_version: the repository format version (checked when loading).
        host: the host of the source.
        source: the absolute source path.
    """

    def __init__(
        self, path: Path, *, repo_id: str, format_version: int, host: str, source: str
    ) -> None:
        self.path = path
        self.repo_id = repo_id
        self.format_version = format_version
        self.host = host
        self.source = source
        self._started = False
        self._torn = False
        self.message: str | None = None
        """What ``load`` found, for people: resuming, or why a journal was discarded."""

    @classmethod
    def for_source(
        cls,
        cache_dir: Path,
        *,
        location: str,
        repo_id: str,
        format_version: int,
        host: str,
        source: str,
    ) -> ResumeJournal:
        """The journal for ``source`` on ``host`` in the repository at ``location``.

        The file is keyed by location (not id), so a repository re-created at the same place
        finds the old journal and discards it for its mismatched id.
        """
        key = f"{location}\0{host}\0{source}".encode("utf-8", "surrogateescape")
        name = blake3.blake3(key).hexdigest()[:32] + ".jsonl"
        return cls(
            cache_dir / "resume" / name,
            repo_id=repo_id,
            format_version=format_version,
            host=host,
            source=source,
        )

    # ------------------------------------------------------------ reading

    def load(self) -> dict[bytes, ResumeEntry]:
        """The records of a valid journal (path → entry); {} when there is none.

        A journal for another repository, format or source is deleted, and ``message`` says
        why. Appending continues in a valid journal.
        """
        self.message = None
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self.message = f"resume state unreadable ({exc.strerror}); starting over"
            return {}
        lines = data.split(b"\n")
        self._torn = not data.endswith(b"\n")
        reason = self._check_header(lines[0])
        if reason is not None:
            self.message = f"resume state discarded: {reason}"
            log.warning("%s", self.message)
            self.clear()
            return {}
        out: dict[bytes, ResumeEntry] = {}
        for raw in lines[1:]:
            if not raw:
                continue
            try:
                d = json.loads(raw)
                ids = bytes.fromhex(d["b"])
                if len(ids) % _ID_LEN:
                    raise ValueError("blob ids")
                out[bytes.fromhex(d["p"])] = ResumeEntry(
                    int(d["s"]),
                    int(d["m"]),
                    int(d["c"]),
                    int(d["i"]),
                    tuple(BlobId(ids[i : i + _ID_LEN]) for i in range(0, len(ids), _ID_LEN)),
                )
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line after a crash mid-append
        self._started = True
        self.message = f"resuming an interrupted snapshot: {len(out)} files already stored"
        return out

    def _check_header(self, line: bytes) -> str | None:
        try:
            h = json.loads(line)
            if not isinstance(h, dict) or h.get(_MAGIC) != RESUME_VERSION:
                return "not a snapdeck resume file of a known version"
        except ValueError:
            return "its header is damaged"
        if h.get("repository") != self.repo_id:
            return (
                f"it was written for repository {str(h.get('repository'))[:8]}, "
                f"this one is {self.repo_id[:8]}"
            )
        if h.get("format") != self.format_version:
            return (
                f"it was written for repository format {h.get('format')}, "
                f"this repository uses format {self.format_version}"
            )
        if h.get("source") != self.source or h.get("host") != self.host:
            return "it belongs to another source"
        return None

    # ------------------------------------------------------------ writing

    @staticmethod
    def line(
        path: bytes, size: int, mtime_ns: int, ctime_ns: int, ino: int, content: Sequence[bytes]
    ) -> str:
        """One file's journal record (a compact line: a run keeps these, not tuples, between
        saves). The same compact JSON as json.dumps(separators=(",", ":")) gives for these
        fields (hex strings and integers need no escaping), several times faster per file."""
        return (
            f'{{"p":"{path.hex()}","s":{int(size)},"m":{int(mtime_ns)},'
            f'"c":{int(ctime_ns)},"i":{int(ino)},"b":"{b"".join(content).hex()}"}}'
        )

    def append(self, done: list[tuple[bytes, os.stat_result, tuple[BlobId, ...]]]) -> None:
        """Record files whose blobs are all flushed and indexed (call only after a flush)."""
        self.append_lines(
            [
                self.line(p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, c)
                for p, st, c in done
            ]
        )

    def append_lines(self, records: list[str]) -> None:
        """Record files given as ``line`` records (call only after a flush); written and
        synced in one go, encoded a slice at a time so a 100k-file save stays small."""
        if not records:
            return
        lines = []
        if not self._started:
            header = {
                _MAGIC: RESUME_VERSION,
                "repository": self.repo_id,
                "format": self.format_version,
                "host": self.host,
                "source": self.source,
                "created": datetime.now(UTC).isoformat(),
            }
            lines.append(json.dumps(header))
        head = ("\n" if self._torn else "") + "".join(x + "\n" for x in lines)
        self._torn = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = "ab" if self._started else "wb"
        with open(self.path, mode) as f:
            f.write(head.encode())
            for k in range(0, len(records), 4096):
                f.write(("\n".join(records[k : k + 4096]) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        self._started = True

    def clear(self) -> None:
        """Remove the journal (the snapshot completed, or the journal is invalid)."""
        self._started = False
        self._torn = False
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove resume state %s: %s", self.path, exc.strerror)

    def exists(self) -> bool:
        """Whether a journal file is present."""
        return self.path.exists()
