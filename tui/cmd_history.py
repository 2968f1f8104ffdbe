"""CLI commands: watch, log, ref, tag, pin/unpin, undo (issue 3).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from backend.errors import UsageError
from backend.model import Snapshot
from backend.units import format_size
from tui.cli import (
    EXIT_PARTIAL,
    _report_restore,
    _snapshot_line,
    cli,
    common,
    emit_json,
    escape_path,
    get_ctx,
    info,
    progress_bar,
)

if TYPE_CHECKING:
    from backend.evict import EvictResult
    from backend.watch import WatchCheckpoint, WatchState

# The snapshot pipeline, history and watch modules are imported inside the commands that use
# them: every snapdeck command imports this module, and most never need them (start-up time).

# ------------------------------------------------------------------ watch


@cli.command()
@common
@click.argument("dirs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--quiet-ms",
    type=click.IntRange(min=0),
    metavar="N",
    help="Milliseconds without changes before a checkpoint (default: [watch] quiet_ms).",
)
@click.option(
    "--min-interval-s",
    type=click.FloatRange(min=0),
    metavar="N",
    help="Least seconds between two checkpoints (default: [watch] min_interval_s).",
)
def watch(dirs: tuple[str, ...], quiet_ms: int | None, min_interval_s: float | None) -> None:
    """Watch each DIR and checkpoint it whenever it changes, until Ctrl-C or SIGTERM.

    A full checkpoint of each DIR is taken first. With --json, one line per checkpoint:
    the `snapshot --json` object plus "trigger": "watch" and "paths_changed"; with [evict]
    sweep_in_watch, one line per eviction sweep that removed something:
    {"trigger": "evict-sweep", "removed": [ids], "size_after": bytes}.
    On Ctrl-C/SIGTERM the checkpoint in flight finishes (a second signal abandons it:
    nothing of it is saved) and the exit code is 0.
    """
    from backend.snapshots import SnapshotOptions
    from backend.watch import Watcher

    c = get_ctx()
    for d in dirs:
        if not os.path.isdir(d):
            raise UsageError(f"{d} is not a directory")
    cfg = c.config.watch
    overrides: dict[str, Any] = {}
    if quiet_ms is not None:
        overrides["quiet_ms"] = quiet_ms
    if min_interval_s is not None:
        overrides["min_interval_s"] = min_interval_s
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    scfg = c.config.snapshot
    store = c.store()
    stopping = threading.Event()
    signals = [0]

    def on_checkpoint(ev: WatchCheckpoint) -> None:
        for p in ev.problems:
            click.echo(f"snapdeck: warning: {p.path}: {p.message}", err=True)
        if c.json:
            emit_json(ev.to_json())
        else:
            what = "full rescan" if ev.full else f"{ev.paths_changed} paths changed"
            info(c, f"{_snapshot_line(ev.snapshot)} [{what}]")

    def on_error(msg: str) -> None:
        click.echo(f"snapdeck: warning: {msg}", err=True)

    def on_sweep(res: EvictResult) -> None:
        if c.json:
            emit_json(
                {
                    "trigger": "evict-sweep",
                    "removed": list(res.removed),
                    "size_after": res.size_after,
                }
            )
        else:
            info(
                c,
                f"eviction sweep: removed {len(res.removed)} snapshots, "
                f"repository now {format_size(res.size_after)}",
            )

    w = Watcher(
        store,
        list(dirs),
        cfg,
        options=SnapshotOptions(
            excludes=scfg.exclude,
            exclude_caches=scfg.exclude_caches,
            threads=scfg.threads,
            processes=scfg.processes,
        ),
        on_checkpoint=on_checkpoint,
        on_error=on_error,
        evict=c.config.evict,
        on_sweep=on_sweep,
    )

    def on_signal(signum: int, _frame: Any) -> None:
        signals[0] += 1
        if signals[0] > 1:
            w.abandon()  # the second signal abandons the checkpoint in flight
        stopping.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        w.start()
        if not c.json and not c.quiet:
            names = ", ".join(escape_path(os.path.abspath(d)) for d in dirs)
            click.echo(f"watching {names} (Ctrl-C to stop)", err=True)
        while not stopping.wait(0.5):
            if w.state.mode == "stopped":
                break
        w.stop(abandon=signals[0] > 1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    st: WatchState = w.state
    if not c.json and not c.quiet:
        click.echo(f"stopped after {st.checkpoints} checkpoints", err=True)


# ------------------------------------------------------------------ log


@cli.command(name="log")
@common
@click.option("--source", metavar="DIR", help="Only the history of this source directory.")
@click.option("--graph", "draw", is_flag=True, help="Draw the history as a graph.")
@click.option("-n", "limit", type=click.IntRange(min=1), metavar="N", help="Show N entries.")
def log_(source: str | None, draw: bool, limit: int | None) -> None:
    """Show the checkpoint history, newest first, with HEAD, refs, tags and pins.

    --json: a list of nodes {id, parent, time, trigger, source, head, refs, tags, pinned, ...}.
    """
    from backend.history import log_graph, render_graph

    c = get_ctx()
    store = c.store()
    snaps = store.list_snapshots(source=source)
    if source is not None and not snaps and not os.path.isdir(source):
        raise UsageError(f"{source} is not a directory")
    nodes = log_graph(snaps, heads=[h.snapshot for h in store.heads()], refs=store.refs())
    if limit is not None:
        nodes = nodes[:limit]
    if c.json:
        emit_json([n.to_json() for n in nodes])
        return
    if not nodes:
        info(c, "no snapshots")
        return
    for line in render_graph(nodes, graph=draw):
        info(c, line)


# ------------------------------------------------------------------ ref


@cli.group()
def ref() -> None:
    """Named refs: names for snapshots that retention and eviction never remove."""


@ref.command(name="add")
@common
@click.argument("name")
@click.argument("snap")
@click.option("--source", metavar="DIR", help="Resolve HEAD against this source.")
def ref_add(name: str, snap: str, source: str | None) -> None:
    """Point ref NAME at snapshot SNAP (create it or move it)."""
    c = get_ctx()
    store = c.store()
    s = store.resolve(snap, source=source)
    store.add_ref(name, s)
    if c.json:
        emit_json({"name": name, "snapshot": s.id})
    else:
        info(c, f"ref {name} -> {s.short_id}")


@ref.command(name="rm")
@common
@click.argument("name")
def ref_rm(name: str) -> None:
    """Delete ref NAME (the snapshot stays)."""
    c = get_ctx()
    c.store().remove_ref(name)
    if c.json:
        emit_json({"removed": name})
    else:
        info(c, f"removed ref {name}")


@ref.command(name="list")
@common
def ref_list() -> None:
    """List refs and the snapshot each names."""
    c = get_ctx()
    refs = c.store().refs()
    if c.json:
        emit_json([{"name": n, "snapshot": sid} for n, sid in sorted(refs.items())])
        return
    if not refs:
        info(c, "no refs")
    for n, sid in sorted(refs.items()):
        info(c, f"{n}  {sid[:8]}")


# ------------------------------------------------------------------ tag, pin


def _show_snapshot(c: Any, s: Snapshot, what: str) -> None:
    if c.json:
        emit_json(s.to_json())
    else:
        info(c, f"{s.short_id}: {what}")


@cli.command()
@common
@click.argument("snap")
@click.option("--add", "add", multiple=True, metavar="TAG", help="Add a tag (repeatable).")
@click.option("--remove", "remove", multiple=True, metavar="TAG", help="Remove a tag (repeatable).")
@click.option("--source", metavar="DIR", help="Resolve HEAD against this source.")
def tag(snap: str, add: tuple[str, ...], remove: tuple[str, ...], source: str | None) -> None:
    """Edit the tags of snapshot SNAP (its id does not change)."""
    c = get_ctx()
    if not add and not remove:
        raise UsageError("tag needs --add TAG or --remove TAG")
    store = c.store()
    s = store.set_tags(store.resolve(snap, source=source), add=add, remove=remove)
    _show_snapshot(c, s, "tags " + (",".join(s.tags) or "(none)"))


@cli.command()
@common
@click.argument("snap")
@click.option("--source", metavar="DIR", help="Resolve HEAD against this source.")
def pin(snap: str, source: str | None) -> None:
    """Pin snapshot SNAP: retention and eviction never remove it."""
    c = get_ctx()
    store = c.store()
    s = store.set_pinned(store.resolve(snap, source=source), True)
    _show_snapshot(c, s, "pinned")


@cli.command()
@common
@click.argument("snap")
@click.option("--source", metavar="DIR", help="Resolve HEAD against this source.")
def unpin(snap: str, source: str | None) -> None:
    """Unpin snapshot SNAP."""
    c = get_ctx()
    store = c.store()
    s = store.set_pinned(store.resolve(snap, source=source), False)
    _show_snapshot(c, s, "unpinned")


# ------------------------------------------------------------------ undo


@cli.command()
@common
@click.option(
    "--source", metavar="DIR", help="The source to undo (default: the current directory)."
)
def undo(source: str | None) -> None:
    """Undo the last in-place restore of a source: bring back the state it replaced.

    The current state is kept in a new guard checkpoint first, so `undo` again redoes.
    Exit code 13 when the source was never restored in place.
    """
    from backend.snapshots import SnapshotOptions

    c = get_ctx()
    store = c.store()
    src = os.path.abspath(source or os.getcwd())
    scfg = c.config.snapshot
    opts = SnapshotOptions(excludes=scfg.exclude, exclude_caches=scfg.exclude_caches)
    with progress_bar(c, f"undo {escape_path(src)}") as prog:
        target, guard, res = store.undo_restore(src, options=opts, progress=prog, cancel=c.cancel)
    report_in_place(c, target, guard, res, src)


def report_in_place(c: Any, s: Snapshot, guard: Snapshot | None, res: Any, src: str) -> None:
    """Report an in-place restore (or undo): the guard, then the restore; exit 3 on problems."""
    if guard is not None and not c.json:
        info(c, f"guard checkpoint {guard.short_id} (undo with 'snapdeck undo --source {src}')")
    if c.json:
        for p in res.problems:
            click.echo(f"snapdeck: warning: {p.path}: {p.message}", err=True)
        emit_json(
            {
                "snapshot": s.id,
                "target": src,
                "in_place": True,
                "guard": guard.id if guard is not None else None,
                "head": s.id,
                "files_restored": res.files_restored,
                "files_skipped": res.files_skipped,
                "files_deleted": res.files_deleted,
                "dirs_restored": res.dirs_restored,
                "links_restored": res.links_restored,
                "bytes_written": res.bytes_written,
                "problems": [{"path": p.path, "message": p.message} for p in res.problems],
            }
        )
    else:
        _report_restore(c, s, res, src)
    if res.problems:
        sys.exit(EXIT_PARTIAL if res.files_restored else 1)
