"""CLI commands: copy between repositories (issue 7).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
"""

from __future__ import annotations

import os
from typing import Any

import click

from backend.config import default_cache_dir
from backend.errors import UsageError
from backend.keys import as_password, configured_password, password_from_file
from backend.store import Store
from backend.units import format_size
from tui.cli import cli, common, emit_json, get_ctx, info, progress_bar

FROM_PASSWORD_ENV = "SNAPDECK_FROM_PASSWORD"


def _same_location(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


@cli.command()
@click.option("--from-repo", "from_repo", required=True, help="The repository to copy from.")
@click.option(
    "--to-repo",
    "to_repo",
    default=None,
    help="The repository to copy to (default: --repo, $SNAPDECK_REPO, config, embedded).",
)
@click.option(
    "--from-password-file",
    default=None,
    help=f"Password of an encrypted source: first line of this file (or ${FROM_PASSWORD_ENV}).",
)
@click.option(
    "--from-password-command",
    default=None,
    help="Password of an encrypted source: first output line of this command.",
)
@click.option(
    "--refs",
    "with_refs",
    is_flag=True,
    help="Also copy named refs that point at a copied snapshot (never moves an existing one).",
)
@click.argument("snaps", nargs=-1)
@common
def copy(
    from_repo: str,
    to_repo: str | None,
    from_password_file: str | None,
    from_password_command: str | None,
    with_refs: bool,
    snaps: tuple[str, ...],
) -> None:
    """Copy snapshots SNAPS (default: all) from --from-repo to --to-repo.

    Chunks are copied as they are (no re-chunking) and only when the destination lacks them.
    Repositories made by separate inits have different id keys: blobs are then re-identified
    and trees rewritten, so copied snapshots get new ids. A snapshot the destination already
    has (same time, host, source) is skipped.

    Pins and tag edits come along (a pin always; edited tags unless the destination edited
    that snapshot's tags itself); with --refs, named refs pointing at a copied snapshot too,
    unless the destination has a ref of that name pointing elsewhere. HEADs are not copied.
    """
    from backend.copying import copy_notes, copy_snapshots  # with the command (start-up time)

    c = get_ctx()
    if to_repo:
        c.repo = to_repo
    dest_location = c.repo_location()
    if _same_location(from_repo, dest_location):
        raise UsageError(f"--from-repo and --to-repo are the same repository ({from_repo})")

    def source_password() -> bytes | None:
        if from_password_file:
            return password_from_file(from_password_file)
        if os.environ.get(FROM_PASSWORD_ENV):
            return as_password(os.environ[FROM_PASSWORD_ENV])
        return configured_password(command=from_password_command, environ={})

    src = Store.open(
        from_repo,
        cache_dir=default_cache_dir(),
        password=source_password,
        s3=c.config.s3,
    )
    try:
        dst = c.store()
        chosen = [src.resolve(ref) for ref in snaps] if snaps else src.list_snapshots()
        chosen = list({s.id: s for s in chosen}.values())
        raw = [src.repo.load_snapshot(s.id) for s in chosen]  # without notes (tag edits, pins)
        with (
            src.lock(exclusive=False, operation="copy (source)"),
            dst.lock(exclusive=False, operation="copy"),
            progress_bar(c, "copy") as progress,
        ):
            result = copy_snapshots(src.repo, dst.repo, raw, progress=progress, cancel=c.cancel)
            notes = copy_notes(
                src.meta,
                dst.meta,
                {s.source_id: s.target_id for s in result.snapshots},
                refs=with_refs,
                now=dst.clock.now(),
            )
        dst.list_snapshots()  # bring the destination's catalog up to date
    finally:
        src.close()
    new = [s for s in result.snapshots if s.copied]
    if c.json:
        doc: dict[str, Any] = {
            "from": src.location,
            "to": dst.location,
            "reid": result.reid,
            "snapshots": [
                {"source_id": s.source_id, "id": s.target_id, "copied": s.copied}
                for s in result.snapshots
            ],
            "blobs_copied": result.blobs_copied,
            "blobs_present": result.blobs_present,
            "bytes_copied": result.bytes_copied,
            "bytes_stored": result.bytes_stored,
            "pinned": list(notes.pins),
            "tags_set": list(notes.tags),
            "refs": list(notes.refs),
            "ref_conflicts": notes.ref_conflicts,
        }
        emit_json(doc)
        return
    for s in result.snapshots:
        verb = "copied" if s.copied else "already present"
        info(c, f"{s.source_id[:8]} -> {s.target_id[:8]} {verb}")
    info(
        c,
        f"copied {len(new)} of {len(result.snapshots)} snapshots from {src.location} to "
        f"{dst.location}: {result.blobs_copied} blobs new ({format_size(result.bytes_stored)} "
        f"stored), {result.blobs_present} already there"
        + ("; ids re-keyed for the destination" if result.reid else ""),
    )
    if notes.pins or notes.tags or notes.refs:
        info(
            c,
            f"notes: {len(notes.pins)} pinned, {len(notes.tags)} with edited tags"
            + (f", refs {', '.join(notes.refs)}" if notes.refs else ""),
        )
    for name, there in sorted(notes.ref_conflicts.items()):
        click.echo(
            f"snapdeck: warning: ref {name!r} not copied: the destination's points at {there[:8]}",
            err=True,
        )
