"""Restore with a preview and an undo, for the TUI (plain blocking code: run it in a worker).

In place (into the snapshot's own source): a ``restore-guard`` snapshot of the source is taken
first, so undo restores the guard. Elsewhere: files the restore would overwrite are copied
aside first, and undo removes what the restore created and puts the copies back.

Extra files (in the target but not in the snapshot) are deleted only when every one of them
is also in the guard snapshot, i.e. none is excluded from snapshots; otherwise they are kept
and the result says how many.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backend.errors import UsageError
from backend.model import EntryKind, RestoreResult, Snapshot

if TYPE_CHECKING:  # imported where used: the timeline starts without them (issue 5)
    from backend.snapshots import SnapshotOptions
    from backend.store import Store

OVERWRITE = "if-changed"
"""Files whose content already matches are left alone: the plan lists only real changes and
undo has less to put back."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestorePlan:
    """What a restore would do (a dry run), shown before asking."""

    snapshot: Snapshot
    target: str
    path: str
    in_place: bool
    delete: bool
    """Whether extras will be deleted (False when some are excluded from snapshots)."""
    kept_extras: int
    result: RestoreResult
    flat: bool = False
    """A single file placed directly in ``target`` (``target/<name>``), not ``target/<path>``."""

    @property
    def destination(self) -> str:
        """Where the restored path ends up."""
        if self.flat:
            return os.path.join(self.target, posixpath.basename(self.path))
        return os.path.join(self.target, self.path) if self.path else self.target

    def summary(self, limit: int = 40) -> str:
        """A few lines for a confirm dialog."""
        counts: dict[str, int] = {}
        for action, _p in self.result.actions:
            counts[action] = counts.get(action, 0) + 1
        what = self.path or "everything"
        lines = [
            f"snapshot {self.snapshot.short_id} · {what}",
            (f"as       {self.destination}" if self.flat else f"into     {self.target}")
            + ("  (in place)" if self.in_place else ""),
            "plan     "
            + (", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing to change"),
        ]
        if self.kept_extras:
            lines.append(
                f"kept     {self.kept_extras} extra file(s) excluded from snapshots (not deleted)"
            )
        if self.in_place:
            lines.append("safety   a restore-guard snapshot is taken first; undo restores it")
        else:
            lines.append("safety   files that would be overwritten are copied aside for undo")
        lines.append("")
        shown = [f"  {a:<6} {p}" for a, p in self.result.actions if a != "skip"][:limit]
        lines += shown
        rest = sum(1 for a, _p in self.result.actions if a != "skip") - len(shown)
        if rest > 0:
            lines.append(f"  … and {rest} more")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreDone:
    """A finished restore and what undo needs."""

    plan: RestorePlan
    result: RestoreResult
    guard: Snapshot | None = None
    backup_dir: str | None = None
    created: tuple[str, ...] = ()
    """Target-relative paths that did not exist before (removed by undo)."""
    backed_up: tuple[str, ...] = field(default=())
    """Target-relative paths copied to ``backup_dir`` before being overwritten or deleted."""


def plan_restore(
    store: Store,
    snap: Snapshot,
    *,
    path: str = "",
    target: str | None = None,
    excludes: tuple[str, ...] = (),
    flat: bool = False,
) -> RestorePlan:
    """Dry-run a restore of ``path`` (default: all) of ``snap`` into ``target`` (default: its
    source, in place). With ``flat`` (a single file, elsewhere), the file goes straight into
    ``target`` under its own name instead of recreating its folders."""
    if flat and target is not None and path:
        return _plan_flat(store, snap, path, os.path.abspath(target))
    in_place = target is None or os.path.abspath(target) == snap.source
    dest = snap.source if target is None else os.path.abspath(target)
    includes = (path,) if path else ()
    delete = in_place and _is_dir(store, snap, path)
    res = store.restore(
        snap, dest, includes=includes, dry_run=True, delete=delete, overwrite=OVERWRITE
    )
    kept = 0
    if delete:
        unsafe = _unsafe_deletes(dest, [p for a, p in res.actions if a == "delete"], excludes)
        if unsafe:
            kept = len(unsafe)
            delete = False
            res = store.restore(
                snap, dest, includes=includes, dry_run=True, delete=False, overwrite=OVERWRITE
            )
    return RestorePlan(
        snapshot=snap,
        target=dest,
        path=path,
        in_place=in_place,
        delete=delete,
        kept_extras=kept,
        result=res,
    )


def _plan_flat(store: Store, snap: Snapshot, path: str, dest: str) -> RestorePlan:
    e = store.entry(snap, path)
    if e is None or e.kind is not EntryKind.FILE:
        raise UsageError(
            f"{path} is not a file in snapshot {snap.short_id}: restore it with its folders"
        )
    name = posixpath.basename(path)
    full = os.path.join(dest, name)
    if os.path.isdir(full) and not os.path.islink(full):
        raise UsageError(f"{full} is a directory: choose another place for {name}")
    actions: list[tuple[str, str]] = []
    if not os.path.isdir(dest):
        actions.append(("mkdir", dest))  # the directory itself (absolute: shown as such)
    actions.append(("write", name))
    res = RestoreResult(
        files_restored=1, bytes_written=e.size, dry_run=True, actions=tuple(actions)
    )
    return RestorePlan(
        snapshot=snap,
        target=dest,
        path=path,
        in_place=False,
        delete=False,
        kept_extras=0,
        result=res,
        flat=True,
    )


def _restore_flat(store: Store, plan: RestorePlan) -> RestoreResult:
    """Write one file as ``target/<name>``: a temporary file beside it, then a rename (a
    symlink already there is replaced, never followed)."""
    snap = plan.snapshot
    e = store.entry(snap, plan.path)
    if e is None or e.kind is not EntryKind.FILE:
        raise UsageError(f"{plan.path} is not a file in snapshot {snap.short_id}")
    os.makedirs(plan.target, exist_ok=True)
    full = plan.destination
    store.touch(snap)
    fd, tmp = tempfile.mkstemp(prefix=".snapdeck-restore-", dir=plan.target)
    written = 0
    try:
        with store.lock(exclusive=False, operation="restore"), os.fdopen(fd, "wb") as f:
            for chunk in store.read_file(snap, plan.path):
                f.write(chunk)
                written += len(chunk)
            f.flush()
            os.fchmod(f.fileno(), e.mode & 0o777)
            os.fsync(f.fileno())
        os.utime(tmp, ns=(e.mtime_ns, e.mtime_ns))
        os.replace(tmp, full)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return RestoreResult(files_restored=1, bytes_written=written)


def execute(store: Store, plan: RestorePlan, options: SnapshotOptions) -> RestoreDone:
    """Carry out a plan (with its safety net: guard snapshot or backup copies)."""
    snap = plan.snapshot
    includes = (plan.path,) if plan.path else ()
    if plan.in_place:
        from backend.snapshots import SnapshotOptions

        guard_opts = SnapshotOptions(
            **{
                **{s: getattr(options, s) for s in SnapshotOptions.__slots__},
                "trigger": "restore-guard",
                "message": f"before restoring {snap.short_id}"
                + (f" {plan.path}" if plan.path else ""),
            }
        )
        guard = store.create_snapshot(snap.source, options=guard_opts).snapshot
        res = store.restore(
            snap, plan.target, includes=includes, delete=plan.delete, overwrite=OVERWRITE
        )
        if not plan.path:
            store.set_head(snap)
        return RestoreDone(plan=plan, result=res, guard=guard)
    # elsewhere: copy aside what would be overwritten, note what is new
    backup = tempfile.mkdtemp(prefix="snapdeck-undo-")
    created: list[str] = []
    backed: list[str] = []
    for action, rel in plan.result.actions:
        if action not in ("write", "delete", "link"):
            continue
        full = os.path.join(plan.target, rel)
        if os.path.lexists(full):
            if os.path.isfile(full) and not os.path.islink(full):
                dst = os.path.join(backup, rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(full, dst)
                backed.append(rel)
        else:
            created.append(rel)
    for action, rel in plan.result.actions:
        if action == "mkdir" and not os.path.lexists(os.path.join(plan.target, rel)):
            created.append(rel)
    if plan.flat:
        res = _restore_flat(store, plan)
        created = [c for c in created if c != plan.target]  # the directory itself stays
        return RestoreDone(
            plan=plan,
            result=res,
            backup_dir=backup,
            created=tuple(created),
            backed_up=tuple(backed),
        )
    res = store.restore(
        snap, plan.target, includes=includes, delete=plan.delete, overwrite=OVERWRITE
    )
    return RestoreDone(
        plan=plan, result=res, backup_dir=backup, created=tuple(created), backed_up=tuple(backed)
    )


def undo(store: Store, done: RestoreDone, options: SnapshotOptions) -> str:
    """Undo a restore; returns a one-line description of what was done."""
    plan = done.plan
    if done.guard is not None:
        guard = done.guard
        if plan.path and not _exists_in(store, guard, plan.path):
            _remove(os.path.join(plan.target, plan.path))
            return f"removed {plan.path} (it was not there before)"
        redo = plan_restore(store, guard, path=plan.path, excludes=options.excludes)
        store.restore(
            guard,
            plan.target,
            includes=(plan.path,) if plan.path else (),
            delete=redo.delete,
            overwrite=OVERWRITE,
        )
        if not plan.path:
            store.set_head(guard)
        return f"restored the guard snapshot {guard.short_id}"
    assert done.backup_dir is not None
    for rel in sorted(done.created, key=len, reverse=True):
        _remove(os.path.join(plan.target, rel))
    for rel in done.backed_up:
        src = os.path.join(done.backup_dir, rel)
        dst = os.path.join(plan.target, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    shutil.rmtree(done.backup_dir, ignore_errors=True)
    return f"removed {len(done.created)} new and put back {len(done.backed_up)} overwritten"


# ------------------------------------------------------------------ helpers


def _exists_in(store: Store, snap: Snapshot, path: str) -> bool:
    from backend.errors import PathNotFound

    try:
        return store.entry(snap, path) is not None or not path
    except PathNotFound:
        return False


def _is_dir(store: Store, snap: Snapshot, path: str) -> bool:
    from backend.model import EntryKind

    if not path:
        return True
    e = store.entry(snap, path)
    return e is not None and e.kind is EntryKind.DIR


def _remove(full: str) -> None:
    if os.path.islink(full) or os.path.isfile(full):
        os.unlink(full)
    elif os.path.isdir(full):
        shutil.rmtree(full)


def _unsafe_deletes(target: str, rels: list[str], excludes: tuple[str, ...]) -> list[str]:
    """Deletes that would remove something no snapshot holds (excluded, or in a cache dir)."""
    import pathspec

    spec = pathspec.GitIgnoreSpec.from_lines(excludes) if excludes else None

    def unsafe(rel: str, is_dir: bool) -> bool:
        if spec is not None and spec.match_file(rel + ("/" if is_dir else "")):
            return True
        d = target
        for part in rel.split("/")[: None if is_dir else -1]:
            d = os.path.join(d, part)
            if os.path.exists(os.path.join(d, "CACHEDIR.TAG")):
                return True
        return False

    out = []
    for rel in rels:
        full = os.path.join(target, rel)
        is_dir = os.path.isdir(full) and not os.path.islink(full)
        bad = unsafe(rel, is_dir)
        if not bad and is_dir:
            for root, dirs, files in os.walk(full):
                base = os.path.relpath(root, target)
                if any(unsafe(f"{base}/{n}", True) for n in dirs) or any(
                    unsafe(f"{base}/{n}", False) for n in files
                ):
                    bad = True
                    break
        if bad:
            out.append(rel)
    return out
