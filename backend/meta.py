"""Mutable metadata beside the immutable snapshots: HEADs, named refs, notes and last access.

Everything here is a small JSON object under the ``refs`` kind, each written by an atomic
replace, so editing never rewrites (or re-ids) a snapshot:

```
refs/heads/<hash(host, source)>   {"snapshot", "source", "host"}   a source's HEAD
refs/named/<name>                 {"snapshot", "time"}             a named ref (protects)
refs/notes/<snapshot id>          {"tags": [...], "pinned": bool}  edited tags, pin
refs/access/<snapshot id>         {"time"}                         last access (evict)
```

Each kind of object has its own folder, so reading the HEADs, the refs, the notes or the
access records lists only that folder (``ObjectStorage.list`` with a prefix), however many
access records there are. Inside ``Meta.cached()`` each of those listings is read once per
thread (one operation, such as planning a forget, asks for the notes and HEADs several times).

A note's ``tags`` replace the snapshot's own tags when present. Writers of one object are
serialised in-process by the Store; across processes the last atomic replace wins, which is
safe (an object is never half-written) and, for notes, rare (one object per snapshot).

In an encrypted repository (``crypto`` given) every object's JSON is sealed with the metadata
key, its name bound as associated data (a note cannot be moved to another snapshot), and a
HEAD's name is keyed, so neither reveals the source path. Named refs keep their name visible.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import blake3

from backend import format as fmt
from backend.crypto import Crypto
from backend.errors import IntegrityError, ObjectNotFound, UsageError
from backend.storage import ObjectStorage

HEADS = "heads/"
NAMED = "named/"
NOTES = "notes/"
ACCESS = "access/"

_REF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED = {"HEAD", "latest"}


def head_name(host: str, source: str, key: bytes | None = None) -> str:
    """The ref object name of a source's HEAD (``key``: keyed, for encrypted repositories)."""
    ident = f"{host}\0{source}".encode("utf-8", "surrogateescape")
    h = blake3.blake3(ident, key=key) if key is not None else blake3.blake3(ident)
    return HEADS + h.hexdigest()[:32]


def check_ref_name(name: str) -> str:
    """A valid ref name, or a UsageError saying what is allowed."""
    if name in RESERVED or not _REF_NAME.match(name) or name.endswith(".lock"):
        raise UsageError(
            f"invalid ref name {name!r}: use letters, digits, '.', '_' and '-' "
            "(not HEAD or latest, at most 100 characters)"
        )
    return name


@dataclass(frozen=True, slots=True)
class Head:
    """Where a source's HEAD points."""

    host: str
    source: str
    snapshot: str


@dataclass(frozen=True, slots=True)
class Note:
    """Edited tags (None: the snapshot's own) and the pin of one snapshot."""

    tags: tuple[str, ...] | None = None
    pinned: bool = False


class Meta:
    """Reads and writes the metadata objects of one repository's storage."""

    def __init__(self, storage: ObjectStorage, crypto: Crypto | None = None) -> None:
        self.storage = storage
        self.crypto = crypto
        self._name_key = crypto.ref_name_key if crypto is not None else None
        self._local = threading.local()  # .memo: this thread's cached reads (``cached``)

    @contextmanager
    def cached(self) -> Iterator[None]:
        """Within the block, the calling thread reads each listing (HEADs, refs, notes, access
        times) at most once; its own writes drop what it had read. Other threads, and calls
        outside the block, always read the storage. Nests (the outermost block counts)."""
        if getattr(self._local, "memo", None) is not None:
            yield
            return
        self._local.memo = {}
        try:
            yield
        finally:
            self._local.memo = None

    def _memo(self, key: str, read: Callable[[], Any]) -> Any:
        memo: dict[str, Any] | None = getattr(self._local, "memo", None)
        if memo is None:
            return read()
        if key not in memo:
            memo[key] = read()
        return memo[key]

    def _changed(self) -> None:
        memo: dict[str, Any] | None = getattr(self._local, "memo", None)
        if memo:
            memo.clear()

    # ------------------------------------------------------------ plumbing

    def _get(self, name: str) -> dict | None:
        try:
            raw = self.storage.get("refs", name)
            if self.crypto is not None:
                box = fmt.unwrap_sealed(fmt.REF_MAGIC_SEALED, raw, f"ref {name}")
                raw = self.crypto.open_ref(name, box)
            doc = json.loads(raw)
        except ObjectNotFound:
            return None
        except (ValueError, IntegrityError):
            return None
        return doc if isinstance(doc, dict) else None

    def _put(self, name: str, doc: dict) -> None:
        data = json.dumps(doc, sort_keys=True).encode()
        if self.crypto is not None:
            data = fmt.wrap_sealed(fmt.REF_MAGIC_SEALED, self.crypto.seal_ref(name, data))
        self._changed()
        self.storage.put("refs", name, data, overwrite=True)

    def _delete(self, name: str) -> bool:
        self._changed()
        existed = self.storage.exists("refs", name)
        self.storage.delete("refs", name)
        return existed

    def _names(self, prefix: str) -> list[str]:
        """The objects of one folder (``prefix`` ends in '/'), sorted; only it is listed."""
        return sorted(i.name for i in self.storage.list("refs", prefix))

    def _folder(self, prefix: str) -> list[tuple[str, dict | None]]:
        """(name, document) of every object of one folder, sorted by name. Many objects (an
        access record per snapshot) are read on a few threads: on S3 each is a round trip."""
        names = self._names(prefix)
        if len(names) <= READ_BATCH:
            return [(n, self._get(n)) for n in names]
        batches = [names[i : i + READ_BATCH] for i in range(0, len(names), READ_BATCH)]
        with ThreadPoolExecutor(min(READ_THREADS, len(batches)), "refs") as pool:
            docs = pool.map(lambda batch: [self._get(n) for n in batch], batches)
            return list(zip(names, (d for batch in docs for d in batch), strict=True))

    # ------------------------------------------------------------ heads

    def head(self, host: str, source: str) -> str | None:
        """The snapshot id a source's HEAD points at (None: no HEAD recorded)."""
        doc = self._get(head_name(host, source, self._name_key))
        sid = doc.get("snapshot") if doc else None
        return sid if isinstance(sid, str) else None

    def set_head(self, host: str, source: str, snapshot: str) -> None:
        """Move a source's HEAD."""
        self._put(
            head_name(host, source, self._name_key),
            {"snapshot": snapshot, "source": source, "host": host},
        )

    def heads(self) -> list[Head]:
        """Every recorded HEAD."""
        return list(self._memo(HEADS, self._read_heads))

    def _read_heads(self) -> list[Head]:
        out = []
        for _name, doc in self._folder(HEADS):
            if doc and all(isinstance(doc.get(k), str) for k in ("snapshot", "source", "host")):
                out.append(Head(doc["host"], doc["source"], doc["snapshot"]))
        return out

    # ------------------------------------------------------------ named refs

    def refs(self) -> dict[str, str]:
        """Named refs: name → snapshot id."""
        return dict(self._memo(NAMED, self._read_refs))

    def _read_refs(self) -> dict[str, str]:
        out = {}
        for name, doc in self._folder(NAMED):
            if doc and isinstance(doc.get("snapshot"), str):
                out[name[len(NAMED) :]] = doc["snapshot"]
        return out

    def ref(self, name: str) -> str | None:
        """The snapshot id a named ref points at."""
        if name in RESERVED or not _REF_NAME.match(name):
            return None
        doc = self._get(NAMED + name)
        sid = doc.get("snapshot") if doc else None
        return sid if isinstance(sid, str) else None

    def set_ref(self, name: str, snapshot: str, when: datetime) -> None:
        """Create or move a named ref."""
        self._put(NAMED + check_ref_name(name), {"snapshot": snapshot, "time": when.isoformat()})

    def remove_ref(self, name: str) -> bool:
        """Delete a named ref; False if there was none."""
        return self._delete(NAMED + check_ref_name(name))

    # ------------------------------------------------------------ notes (tags, pins)

    def notes(self) -> dict[str, Note]:
        """Every snapshot's note: id → Note."""
        return dict(self._memo(NOTES, self._read_notes))

    def _read_notes(self) -> dict[str, Note]:
        out = {}
        for name, doc in self._folder(NOTES):
            note = self._parse_note(doc)
            if note is not None:
                out[name[len(NOTES) :]] = note
        return out

    def note(self, snapshot: str) -> Note:
        """One snapshot's note (empty when it has none)."""
        return self._parse_note(self._get(NOTES + snapshot)) or Note()

    @staticmethod
    def _parse_note(doc: dict | None) -> Note | None:
        if not doc:
            return None
        tags = doc.get("tags")
        if tags is not None and not (
            isinstance(tags, list) and all(isinstance(t, str) for t in tags)
        ):
            tags = None
        return Note(tuple(tags) if tags is not None else None, bool(doc.get("pinned", False)))

    def set_note(self, snapshot: str, note: Note) -> None:
        """Replace a snapshot's note (an empty note is deleted)."""
        if note.tags is None and not note.pinned:
            self._delete(NOTES + snapshot)
            return
        doc: dict[str, object] = {"pinned": note.pinned}
        if note.tags is not None:
            doc["tags"] = list(note.tags)
        self._put(NOTES + snapshot, doc)

    # ------------------------------------------------------------ last access

    def access_times(self) -> dict[str, datetime]:
        """Recorded last-access times: id → time."""
        return dict(self._memo(ACCESS, self._read_access_times))

    def _read_access_times(self) -> dict[str, datetime]:
        out = {}
        for name, doc in self._folder(ACCESS):
            try:
                out[name[len(ACCESS) :]] = datetime.fromisoformat(str(doc["time"]))  # type: ignore[index]
            except (TypeError, KeyError, ValueError):
                continue
        return out

    def touch(self, snapshot: str, when: datetime) -> None:
        """Record an access."""
        self._put(ACCESS + snapshot, {"time": when.isoformat()})

    def forget(self, snapshot: str) -> None:
        """Drop a removed snapshot's note and access record."""
        self._delete(NOTES + snapshot)
        self._delete(ACCESS + snapshot)

    # ------------------------------------------------------------ bulk (issue 4)

    def forget_many(self, snapshots: Iterable[str]) -> int:
        """Drop the notes and access records of many removed snapshots: one listing of each
        folder, then only the objects that exist, deleted in parallel. Returns how many were
        deleted."""
        wanted = set(snapshots)
        names = [
            i.name
            for folder in (NOTES, ACCESS)
            for i in self.storage.list("refs", folder)
            if i.name[len(folder) :] in wanted
        ]
        self._changed()
        delete_objects(self.storage, "refs", names)
        return len(names)


DELETE_THREADS = 8
"""Parallel deletes (each local delete waits for a directory fsync)."""
READ_THREADS = 8
"""Threads reading the objects of a large folder (``Meta._folder``)."""
READ_BATCH = 64
"""Objects one of those threads reads in a row (and the most read without threads)."""


def delete_objects(
    storage: ObjectStorage,
    kind: str,
    names: Sequence[str],
    done: Callable[[int], None] | None = None,
) -> None:
    """Delete objects in parallel; returns only when every delete finished, and raises the
    first failure (the others still ran). ``done`` (thread-safe, like ``Progress.advance``)
    is called once per object deleted, from the deleting threads.

    ``DELETE_THREADS`` threads each take the next name until none is left: as many deletes
    (and directory fsyncs) in flight as with one task per name, without a future each.
    """
    if not names:
        return
    if len(names) == 1:
        storage.delete(kind, names[0])
        if done is not None:
            done(1)
        return
    todo = iter(names)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                name = next(todo, None)
            if name is None:
                return
            try:
                storage.delete(kind, name)
            except BaseException as exc:  # re-raised below, after the others ran
                with lock:
                    failures.append(exc)
                continue
            if done is not None:
                done(1)

    with ThreadPoolExecutor(min(DELETE_THREADS, len(names)), "delete") as pool:
        for f in [pool.submit(work) for _ in range(min(DELETE_THREADS, len(names)))]:
            f.result()
    if failures:
        raise failures[0]
