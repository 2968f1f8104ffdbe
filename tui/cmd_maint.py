"""CLI commands: forget, evict, prune (issue 4).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
Each command builds a plan in the backend, renders it (text or ``--json``), and executes it
unless ``--dry-run``. Refusals (empty policy, a policy that empties a group, no eviction limit)
are usage errors: one line, exit 2. ``evict`` exits 3 when the budget cannot be met.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from backend.errors import UsageError
from backend.evict import EvictPlan, EvictResult
from backend.forget import ForgetPlan
from backend.prune import DEFAULT_MAX_REPACK_RATIO, PrunePlan, PruneResult
from backend.retention import Duration as RetentionDuration
from backend.retention import RetentionPolicy
from backend.units import format_size, parse_duration, parse_size
from tui.cli import (
    EXIT_PARTIAL,
    Ctx,
    cli,
    common,
    emit_json,
    escape_path,
    get_ctx,
    info,
    progress_bar,
)

T = TypeVar("T")

_RATIO_HELP = (
    "Repack packs whose live share is below R (0 to 1; default "
    f"{DEFAULT_MAX_REPACK_RATIO}); 1 repacks every pack holding any unused blob."
)


def _ratio(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"--max-repack-ratio must be between 0 and 1, not {value:g}")
    return value


def _when(t: Any) -> str:
    return str(t.astimezone().strftime("%Y-%m-%d %H:%M:%S"))


# ------------------------------------------------------------------ prune


def _prune_json(plan: PrunePlan, result: PruneResult | None) -> dict[str, Any]:
    doc: dict[str, Any] = plan.to_json()
    doc["dry_run"] = result is None
    if result is not None:
        doc["packs_written"] = result.packs_written
        doc["index_segments_written"] = result.index_segments_written
        doc["bytes_before"] = result.bytes_before
        doc["bytes_after"] = result.bytes_after
    return doc


def _prune_text(c: Ctx, plan: PrunePlan, result: PruneResult | None) -> None:
    verb = "would" if result is None else "will"
    info(
        c,
        f"{plan.snapshots} snapshots; {plan.packs} packs ({format_size(plan.pack_bytes)}), "
        f"{plan.live_blobs} blobs in use ({format_size(plan.live_bytes)})",
    )
    if plan.nothing_to_do:
        info(c, "nothing to prune")
        return
    info(
        c,
        f"{'would delete' if result is None else 'deleted'} {len(plan.delete)} unused packs"
        + (f" ({plan.orphans} not indexed)" if plan.orphans else "")
        + f", {'would repack' if result is None else 'repacked'} {len(plan.repack)}"
        + (f" ({plan.small_packs} small)" if plan.small_packs else ""),
    )
    del verb
    if result is None:
        info(c, f"would free about {format_size(plan.bytes_reclaimed)}")
    else:
        info(
            c,
            f"freed {format_size(result.bytes_before - result.bytes_after)}: packs and index now "
            f"{format_size(result.bytes_after)}",
        )


def _run_prune(c: Ctx, *, dry_run: bool, ratio: float) -> tuple[PrunePlan, PruneResult | None]:
    store = c.store(create=False)
    with progress_bar(c, "prune") as prog:
        if dry_run:
            return store.plan_prune(max_repack_ratio=ratio, progress=prog, cancel=c.cancel), None
        res = store.prune(max_repack_ratio=ratio, progress=prog, cancel=c.cancel)
        return res.plan, res


@cli.command()
@common
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be deleted; change nothing.")
@click.option(
    "--max-repack-ratio",
    "ratio",
    type=float,
    default=DEFAULT_MAX_REPACK_RATIO,
    show_default=True,
    metavar="R",
    help=_RATIO_HELP,
)
def prune(dry_run: bool, ratio: float) -> None:
    """Delete data no snapshot uses (mark and sweep; exclusive lock).

    Deletes unused packs, repacks sparse ones and consolidates small ones, writes the new
    index, and only then deletes the old index segments and packs: an interrupted prune
    leaves the repository valid, and running it again finishes the job.
    """
    c = get_ctx()
    plan, result = _run_prune(c, dry_run=dry_run, ratio=_ratio(ratio))
    if c.json:
        emit_json(_prune_json(plan, result))
    else:
        _prune_text(c, plan, result)


# ------------------------------------------------------------------ forget


def _policy(
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: str | None,
    keep_tags: tuple[str, ...],
) -> RetentionPolicy:
    for name, n in (
        ("--keep-last", keep_last),
        ("--keep-hourly", keep_hourly),
        ("--keep-daily", keep_daily),
        ("--keep-weekly", keep_weekly),
        ("--keep-monthly", keep_monthly),
        ("--keep-yearly", keep_yearly),
    ):
        if n < 0:
            raise UsageError(f"{name} must be a whole number >= 0, not {n}")
    return RetentionPolicy(
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_within=RetentionDuration.parse(keep_within) if keep_within is not None else None,
        keep_tags=tuple(tuple(t.split(",")) for t in keep_tags),
    )


def _forget_text(c: Ctx, plan: ForgetPlan, dry_run: bool) -> None:
    if plan.policy is not None:
        info(c, f"policy: {plan.policy.describe()}")
    for g in plan.groups:
        if plan.policy is not None:
            info(
                c,
                f"\n{g.describe()}: keep {len(g.keep)}, remove {len(g.remove)}",
            )
        for s, k in g.keep:
            info(c, f"  keep    {s.short_id}  {_when(s.time)}  {', '.join(k.labels)}")
        for s in g.remove:
            info(c, f"  remove  {s.short_id}  {_when(s.time)}  {escape_path(s.source)}")
    n = len(plan.remove)
    word = f"{n} snapshot{'s' if n != 1 else ''}"
    info(c, f"{'would remove' if dry_run else 'removed'} {word}, kept {len(plan.keep)}")


@cli.command()
@common
@click.argument("snaps", nargs=-1)
@click.option("--keep-last", type=int, default=0, metavar="N", help="Keep the N newest.")
@click.option("--keep-hourly", type=int, default=0, metavar="N", help="Keep the newest of N hours.")
@click.option("--keep-daily", type=int, default=0, metavar="N", help="Keep the newest of N days.")
@click.option("--keep-weekly", type=int, default=0, metavar="N", help="Keep the newest of N weeks.")
@click.option(
    "--keep-monthly", type=int, default=0, metavar="N", help="Keep the newest of N months."
)
@click.option("--keep-yearly", type=int, default=0, metavar="N", help="Keep the newest of N years.")
@click.option(
    "--keep-within",
    metavar="DURATION",
    help="Keep everything within DURATION (like 2y5m7d3h) of the newest snapshot.",
)
@click.option(
    "--keep-tag",
    "keep_tags",
    multiple=True,
    metavar="T[,T...]",
    help="Keep snapshots that have all these tags (repeatable: any list).",
)
@click.option(
    "--group-by",
    default="host,source",
    show_default=True,
    metavar="FIELDS",
    help="Apply the policy per group of source, host and/or tags ('' = one group).",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only snapshots with this tag.")
@click.option("--source", metavar="PATH", help="Only snapshots of this source directory.")
@click.option("--host", metavar="HOST", help="Only snapshots of this host.")
@click.option("--dry-run", "-n", is_flag=True, help="Show the plan; remove nothing.")
@click.option("--prune", "then_prune", is_flag=True, help="Run prune afterwards.")
@click.option("--allow-empty", is_flag=True, help="Allow removing every snapshot of a group.")
@click.option(
    "--max-repack-ratio",
    "ratio",
    type=float,
    default=DEFAULT_MAX_REPACK_RATIO,
    metavar="R",
    help="With --prune: " + _RATIO_HELP,
)
def forget(
    snaps: tuple[str, ...],
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    keep_within: str | None,
    keep_tags: tuple[str, ...],
    group_by: str,
    tags: tuple[str, ...],
    source: str | None,
    host: str | None,
    dry_run: bool,
    then_prune: bool,
    allow_empty: bool,
    ratio: float,
) -> None:
    """Remove snapshots: the named SNAPS, or those a keep policy does not keep.

    The rules are restic's (per group; hours, days and ISO weeks in local time). HEADs, refs
    and pinned snapshots are always kept. Data stays until prune (--prune runs it).
    """
    c = get_ctx()
    policy = _policy(
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        keep_within,
        keep_tags,
    )
    _ratio(ratio)
    store = c.store(create=False)
    if snaps:
        if not policy.is_empty():
            raise UsageError("name snapshots or give a policy (--keep-*), not both")
        plan = store.plan_forget_ids(list(snaps))
    else:
        fields = [f.strip() for f in group_by.split(",") if f.strip()]
        plan = store.plan_forget(
            policy,
            group_by=fields,
            source=source,
            tags=tags,
            host=host,
            allow_empty=allow_empty,
        )
    removed: list[str] = []
    pruned: tuple[PrunePlan, PruneResult | None] | None = None
    if not dry_run:
        removed = store.forget([s.id for s in plan.remove])
        if then_prune:
            pruned = _run_prune(c, dry_run=False, ratio=ratio)
    elif then_prune:
        pruned = _run_prune(c, dry_run=True, ratio=ratio)
    if c.json:
        doc = plan.to_json()
        doc["dry_run"] = dry_run
        doc["removed"] = removed
        if pruned is not None:
            doc["prune"] = _prune_json(*pruned)
        emit_json(doc)
        return
    _forget_text(c, plan, dry_run)
    if pruned is not None:
        _prune_text(c, *pruned)


# ------------------------------------------------------------------ evict


def _unless_none(value: str, parse: Callable[[str], T]) -> T | None:
    """An option's value parsed, or None for ``none`` (or empty): that limit is off."""
    return None if value.strip().lower() in ("", "none") else parse(value)


def _evict_text(c: Ctx, plan: EvictPlan, result: EvictResult | None) -> None:
    budget = format_size(plan.budget) if plan.budget is not None else "none"
    age = str(plan.max_age) if plan.max_age is not None else "none"
    info(
        c,
        f"size {format_size(plan.size_before)}; budget {budget}; max age {age}; "
        f"{plan.candidates} candidates ({len(plan.protected)} protected)",
    )
    if plan.garbage_bytes:
        info(c, f"  unused data already in the repository: {format_size(plan.garbage_bytes)}")
    if plan.remove:
        info(c, f"  {'id':<8}  {'last access':<19}  {'frees':>10}  {'total':>10}  reason")
    for i in plan.remove:
        info(
            c,
            f"  {i.snapshot.short_id}  {_when(i.last_access)}  "
            f"{format_size(i.freed_bytes):>10}  {format_size(i.cumulative_bytes):>10}  {i.reason}",
        )
    n = len(plan.remove)
    verb = "would remove" if result is None else "removed"
    info(
        c,
        f"{verb} {n} snapshot{'s' if n != 1 else ''}: "
        f"{format_size(plan.size_before)} -> {format_size(plan.size_after)} "
        f"(reclaims {format_size(plan.bytes_reclaimed)})",
    )
    if result is not None:
        info(c, f"size on disk now {format_size(result.size_after)}")


@cli.command()
@common
@click.option(
    "--max-size",
    metavar="SIZE",
    help="Size budget, like 1GiB; 'none': no budget (default: [evict] max_size, 1GiB).",
)
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Evict what was not accessed for DURATION, like 7d; 'none': no age limit "
    "(default: [evict] max_age, 7d).",
)
@click.option("--dry-run", "-n", is_flag=True, help="Show the plan; remove nothing.")
def evict(max_size: str | None, max_age: str | None, dry_run: bool) -> None:
    """Remove least recently used snapshots until the size budget and age limit hold.

    Never removes a HEAD, a ref, a pinned snapshot or the newest snapshot of a source. The
    plan shows what each removal frees; afterwards prune runs so the space is really freed.
    Exit code 3 when the budget cannot be met.
    """
    c = get_ctx()
    cfg = c.config.evict
    size = cfg.max_size_bytes if max_size is None else _unless_none(max_size, parse_size)
    age = cfg.max_age_duration if max_age is None else _unless_none(max_age, parse_duration)
    if age is not None and age.is_zero():
        raise UsageError("--max-age must be greater than zero")
    store = c.store(create=False)
    with progress_bar(c, "evict") as prog:
        plan = store.plan_evict(max_size=size, max_age=age, progress=prog, cancel=c.cancel)
        result = None
        if not dry_run and plan.has_work:
            result = store.evict(plan, progress=prog, cancel=c.cancel)
    if c.json:
        doc = plan.to_json()
        doc["dry_run"] = dry_run
        if result is not None:
            doc["removed"] = list(result.removed)
            doc["size_on_disk"] = result.size_after
        emit_json(doc)
    else:
        _evict_text(c, plan, result)
    if not plan.budget_met:
        click.echo(
            "snapdeck: warning: the budget cannot be met: every other snapshot is protected "
            "(HEAD, ref, pinned or newest of its source)",
            err=True,
        )
        sys.exit(EXIT_PARTIAL)
