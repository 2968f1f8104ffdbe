"""CLI commands: ``check`` and ``repair index|packs|snapshots`` (issue 6).

Defined on the group from ``tui.cli``, which imports this module once the group exists.

Exit codes: ``check`` exits 0 when the repository is sound and 20 (``CheckFailed``, the
``IntegrityError`` code) when it found damage. A repair exits 0 when everything it touched
is sound again, 3 when some data could not be saved (lost blobs, snapshots it cannot repair).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from backend.errors import IntegrityError, UsageError
from tui.cli import (
    EXIT_OK,
    EXIT_PARTIAL,
    cli,
    common,
    emit_json,
    get_ctx,
    info,
    progress_bar,
)

if TYPE_CHECKING:  # the check and repair modules load with the command (start-up time)
    from backend.check import CheckResult
    from backend.repair import RepairResult

EXIT_DAMAGED = IntegrityError.exit_code
"""``check`` found damage (20)."""
MAX_PATHS_SHOWN = 5


def _clean(text: str) -> str:
    """One printable line: control characters from object names or messages escaped."""
    return "".join(
        ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
        for ch in text
    )


def _print_check(res: CheckResult, quiet: bool) -> None:
    for e in res.errors:
        line = f"{e.kind}: {e.object}: {e.message}"
        click.echo(_clean(line), err=True)
        if e.snapshots:
            shown = ", ".join(s[:8] for s in e.snapshots[:MAX_PATHS_SHOWN])
            more = f" and {len(e.snapshots) - MAX_PATHS_SHOWN} more" if len(e.snapshots) > 5 else ""
            click.echo(f"  affects snapshot(s) {shown}{more}", err=True)
        for p in e.paths[:MAX_PATHS_SHOWN]:
            click.echo(f"  {_clean(p)}", err=True)
        if len(e.paths) > MAX_PATHS_SHOWN:
            click.echo(f"  … and {len(e.paths) - MAX_PATHS_SHOWN} more path(s)", err=True)
    if quiet:
        return
    for n in res.notes:
        click.echo(f"note: {_clean(n)}")
    read = (
        f", read {res.packs_read} pack(s) / {res.blobs_read} blob(s) ({res.bytes_read} bytes)"
        if res.packs_read
        else ""
    )
    summary = (
        f"checked {res.snapshots} snapshot(s), {res.trees} tree(s), {res.packs} pack(s){read}: "
    )
    if res.ok:
        click.echo(summary + "no errors")
    else:
        click.echo(
            summary
            + f"{len(res.errors)} error(s); see 'snapdeck repair --help' (repair index, packs, "
            "snapshots)"
        )


@cli.command()
@common
@click.option(
    "--read-data", is_flag=True, help="Also read every pack and re-hash every blob (slow)."
)
@click.option(
    "--read-data-subset",
    "subset",
    metavar="N%|N/M",
    help="Read only a subset of packs: a random N% or group N of M (e.g. 1/7 on Mondays).",
)
def check(read_data: bool, subset: str | None) -> None:
    """Verify the repository: snapshots, trees, index and pack headers (and data).

    Names each damaged object and the snapshots and paths it affects. Exit 0 when the
    repository is sound, 20 when damage was found.
    """
    c = get_ctx()
    if read_data and subset is not None:
        raise UsageError("use either --read-data or --read-data-subset, not both")
    store = c.store(create=False)
    with progress_bar(c, "check") as prog:
        res = store.check(read_data=read_data, subset=subset, progress=prog, cancel=c.cancel)
    if c.json:
        emit_json(res.to_json())
    else:
        _print_check(res, c.quiet)
    sys.exit(EXIT_OK if res.ok else EXIT_DAMAGED)


@cli.group()
def repair() -> None:
    """Repair a damaged repository: index, packs, snapshots (in that order)."""


def _report_repair(res: RepairResult) -> None:
    c = get_ctx()
    if c.json:
        emit_json(res.to_json())
    else:
        for m in res.messages:
            info(c, _clean(m))
        for e in res.lost:
            click.echo(_clean(f"lost: {e.object}: {e.message}"), err=True)
            for p in e.paths[:MAX_PATHS_SHOWN]:
                click.echo(f"  {_clean(p)}", err=True)
        if res.dry_run:
            info(c, "dry run: nothing was changed")
    sys.exit(EXIT_PARTIAL if res.partial else EXIT_OK)


@repair.command(name="index")
@common
def repair_index() -> None:
    """Rebuild the index from the pack headers (drops packs that no longer exist)."""
    c = get_ctx()
    with progress_bar(c, "repair index") as prog:
        res = c.store(create=False).repair_index(progress=prog, cancel=c.cancel)
    _report_repair(res)


@repair.command(name="packs")
@common
@click.argument("packs", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Find damaged packs; change nothing.")
def repair_packs(packs: tuple[str, ...], dry_run: bool) -> None:
    """Salvage the intact blobs of damaged packs into new packs, then drop the damaged ones.

    Reads every pack (or only PACKS, ids or prefixes). Exit 3 when some blobs had no intact
    copy: run 'snapdeck repair snapshots' next.
    """
    c = get_ctx()
    with progress_bar(c, "repair packs") as prog:
        res = c.store(create=False).repair_packs(
            packs, dry_run=dry_run, progress=prog, cancel=c.cancel
        )
    _report_repair(res)


@repair.command(name="snapshots")
@common
@click.option("--dry-run", is_flag=True, help="Show what would be dropped; change nothing.")
@click.option(
    "--forget", is_flag=True, help="Also remove snapshots whose root cannot be read at all."
)
def repair_snapshots(dry_run: bool, forget: bool) -> None:
    """Rewrite snapshots that reference lost data: drop the unreadable files, keep the rest.

    Each repaired snapshot gets a new id, the tag 'repaired' and a note in its message;
    HEADs, refs, tags and pins move to it and the old one is removed.
    """
    c = get_ctx()
    with progress_bar(c, "repair snapshots") as prog:
        res = c.store(create=False).repair_snapshots(
            forget=forget, dry_run=dry_run, progress=prog, cancel=c.cancel
        )
    _report_repair(res)
