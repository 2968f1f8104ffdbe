"""The ``snapdeck`` command line: thin adapters over ``backend.store.Store``.

Each command parses options, opens the store, calls one backend function and renders the
result (text, or ``--json`` on stdout and nothing else). Errors become one line on stderr and
the error's exit code; see the README for the table. Textual is imported only by ``ui``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from backend.config import Config, default_cache_dir, default_repo_path, load_config
from backend.crypto import CIPHERS, DEFAULT_CIPHER
from backend.errors import Cancelled, StoreError, UsageError
from backend.model import Entry, EntryKind, RestoreResult, Snapshot
from backend.store import Store
from backend.units import format_size

# Start-up time (issue 4): every command imports this module and those of the other areas, so
# modules only some commands need (the snapshot pipeline, check, restore, watch, Textual,
# rich) are imported inside those commands, not here.


def escape_path(p: bytes | str) -> str:
    """``backend.snapshots.escape_path``, imported on first use."""
    from backend.snapshots import escape_path as escape

    return escape(p)


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PARTIAL = 3

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Ctx:
    """Per-invocation state shared by every command."""

    repo: str | None
    config_path: str | None
    json: bool
    quiet: bool
    _config: Config | None = None
    _store: Store | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    # --- encryption (issue 6): password sources; see tui/cmd_key.py ---
    password_file: str | None = None
    password_command: str | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config, _ = load_config(Path(self.config_path) if self.config_path else None)
        return self._config

    def repo_location(self) -> str:
        if self.repo:
            return self.repo
        env = os.environ.get("SNAPDECK_REPO")
        if env:
            return env
        if self.config.repository.path:
            return os.path.expanduser(self.config.repository.path)
        return str(default_repo_path())

    def is_default_repo(self) -> bool:
        return (
            not self.repo
            and not os.environ.get("SNAPDECK_REPO")
            and not self.config.repository.path
        )

    def store(self, *, create: bool | None = None) -> Store:
        """Open the repository; the embedded default one is created on first use."""
        if self._store is None:
            if create is None:
                create = self.is_default_repo()
            self._store = Store.open(
                self.repo_location(),
                create=create,
                cache_dir=default_cache_dir(),
                compression_level=self.config.snapshot.compression_level,
                password=password_provider(self),  # issue 6: asked only if encrypted
                s3=self.config.s3,  # issue 7
            )
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def emit_json(obj: Any, *, err: bool = False) -> None:
    """Write one JSON document to stdout (``err``: to stderr, when stdout carries data)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(json.dumps(obj, indent=None, ensure_ascii=False, default=str) + "\n")
    stream.flush()


def fail(msg: str, code: int = EXIT_ERROR) -> NoReturn:
    """One clear line on stderr, then exit."""
    one_line = msg.replace("\r", "\\r").replace("\n", "\\n")
    click.echo(f"snapdeck: error: {one_line}", err=True)
    sys.exit(code)


def usage_fail(exc: click.UsageError) -> NoReturn:
    """A click usage error (bad option, missing argument) as one line, exit 2."""
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    fail(exc.format_message() + hint, exc.exit_code)


@contextmanager
def progress_bar(ctx: Ctx, label: str) -> Iterator[Any]:
    """A rich progress bar on stderr when it is a terminal, else a null sink."""
    from backend.progress import NullProgress

    if ctx.json or ctx.quiet or not sys.stderr.isatty():
        yield NullProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        class _Sink:
            def start(self, total: int | None, lbl: str) -> None:
                bar.update(task, total=total, description=escape_markup(lbl))

            def advance(self, n: int = 1) -> None:
                bar.advance(task, n)

            def note(self, msg: str) -> None:
                console.print(escape_markup(msg))

        yield _Sink()


def escape_markup(s: str) -> str:
    """Escape Rich markup so names like '[bold]' print literally."""
    from rich.markup import escape

    return escape(s)


def info(ctx: Ctx, msg: str) -> None:
    """A human line on stdout (suppressed by --json and -q)."""
    if not ctx.json and not ctx.quiet:
        click.echo(msg)


def get_ctx() -> Ctx:
    obj = click.get_current_context().obj
    assert isinstance(obj, Ctx)
    return obj


def _set_global(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def cb(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value in (None, False):
            return
        obj = ctx.find_object(Ctx)
        if obj is not None:
            setattr(obj, name, value)

    return cb


def _global_option(*decls: str, attr: str, flag: bool, help: str) -> Callable[[F], F]:
    return click.option(
        *decls,
        is_flag=flag,
        metavar=None if flag else "PATH",
        expose_value=False,
        is_eager=True,
        callback=_set_global(attr),
        help=help,
    )


def common(f: F) -> F:
    """Accept the global options after the command name too (``snapdeck list --json``)."""
    for opt in reversed(
        [
            _global_option(
                "--repo", "-r", attr="repo", flag=False, help="Repository (see snapdeck --help)."
            ),
            _global_option("--config", attr="config_path", flag=False, help="Config file."),
            _global_option(
                "--json", attr="json", flag=True, help="Machine-readable output on stdout."
            ),
            _global_option("-q", "--quiet", attr="quiet", flag=True, help="Print only errors."),
            # --- encryption (issue 6) ---
            _global_option(
                "--password-file",
                attr="password_file",
                flag=False,
                help="Read the repository password from the first line of this file.",
            ),
            _global_option(
                "--password-command",
                attr="password_command",
                flag=False,
                help="Run this command; its first output line is the repository password.",
            ),
        ]
    ):
        f = opt(f)
    return f


# ------------------------------------------------------------------ the group


class SnapdeckGroup(click.Group):
    """Runs ``ui`` when no command is given, and turns errors into one line + exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not any(a in self.commands for a in args) and not any(
            a in ("--help", "-h", "--version") for a in args
        ):
            # `snapdeck`, `snapdeck DIR`, `snapdeck --repo X DIR`: open the UI.
            args = [*_leading_globals(args), "ui", *_trailing(args)]
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            usage_fail(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's options or arguments
            usage_fail(exc)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except StoreError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("snapdeck: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(EXIT_OK)
        except OSError as exc:
            filename = getattr(exc, "filename", None)
            where = f" ({escape_path(filename)})" if isinstance(filename, str | bytes) else ""
            fail(f"{exc.strerror or exc}{where}")
        except Exception as exc:
            # A bug: still one line and an exit code, never a traceback (unless debugging).
            if os.environ.get("SNAPDECK_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (set SNAPDECK_DEBUG=1 for details)")
        finally:
            obj = ctx.obj
            if isinstance(obj, Ctx):
                obj.close()


_GLOBAL_WITH_VALUE = ("--repo", "-r", "--config", "--password-file", "--password-command")
_GLOBAL_FLAGS = ("--json", "-q", "--quiet")


def _leading_globals(args: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in _GLOBAL_WITH_VALUE and i + 1 < len(args):
            out += [a, args[i + 1]]
            i += 2
        elif a in _GLOBAL_FLAGS or any(a.startswith(g + "=") for g in _GLOBAL_WITH_VALUE):
            out.append(a)
            i += 1
        else:
            break
    return out


def _trailing(args: list[str]) -> list[str]:
    return args[len(_leading_globals(args)) :]


@click.group(cls=SnapdeckGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--repo",
    "-r",
    metavar="PATH",
    help="Repository (default: $SNAPDECK_REPO, config, or the embedded one).",
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $SNAPDECK_CONFIG or the platform config dir).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.option(
    "--password-file",
    metavar="FILE",
    help="Repository password: first line of FILE (default: $SNAPDECK_PASSWORD_FILE).",
)
@click.option(
    "--password-command",
    metavar="CMD",
    help="Repository password: first output line of CMD (default: $SNAPDECK_PASSWORD_COMMAND).",
)
@click.version_option(package_name="snapdeck")
@click.pass_context
def cli(
    ctx: click.Context,
    repo: str | None,
    config_path: str | None,
    as_json: bool,
    quiet: bool,
    password_file: str | None,
    password_command: str | None,
) -> None:
    """snapdeck keeps the history of a directory.

    Run without a command to open the TUI on the current directory.
    """
    ctx.obj = Ctx(repo=repo, config_path=config_path, json=as_json, quiet=quiet)
    ctx.obj.password_file, ctx.obj.password_command = password_file, password_command


# ------------------------------------------------------------------ init


@cli.command()
@common
@click.option(
    "--encrypt",
    is_flag=True,
    help="Encrypt everything with a password (asked, or from the password options/env).",
)
@click.option(
    "--cipher",
    type=click.Choice(CIPHERS),
    default=DEFAULT_CIPHER,
    show_default=True,
    help="The AEAD of an encrypted repository (chacha20-poly1305 for CPUs without AES).",
)
def init(encrypt: bool, cipher: str) -> None:
    """Create a repository at --repo (or the default location)."""
    c = get_ctx()
    store = Store.init(
        c.repo_location(),
        cache_dir=default_cache_dir(),
        compression_level=c.config.snapshot.compression_level,
        password=new_password(c, "init --encrypt") if encrypt else None,  # issue 6
        cipher=cipher,
        s3=c.config.s3,  # issue 7
    )
    c._store = store
    if c.json:
        emit_json(
            {
                "repository": store.location,
                "id": store.repo_id,
                "encrypted": encrypt,
                "cipher": cipher if encrypt else None,
            }
        )
    elif encrypt:
        info(
            c,
            f"created encrypted repository {store.repo_id[:8]} at {store.location} ({cipher}); "
            "without the password its data cannot be read: keep it safe",
        )
    else:
        info(c, f"created repository {store.repo_id[:8]} at {store.location}")


# ------------------------------------------------------------------ snapshot


def _parse_time(s: str | None) -> datetime | None:
    if s is None:
        return None
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(
            f"invalid --time {s!r}: use ISO 8601, e.g. 2026-01-31T14:00:00+01:00"
        ) from None
    if t.tzinfo is None:
        t = t.astimezone()
    return t


def _snapshot_line(s: Snapshot) -> str:
    st = s.stats
    return (
        f"snapshot {s.short_id} of {escape_path(s.source)}: "
        f"{st.files_new} new, {st.files_changed} changed, {st.files_unmodified} unmodified, "
        f"{st.files_removed} removed; added {format_size(st.bytes_added)} "
        f"(stored {format_size(st.bytes_stored)}) in {st.duration_s:.2f} s"
    )


@cli.command()
@common
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the snapshot (repeatable).")
@click.option("--message", "-m", default="", help="A message to record.")
@click.option("--time", "time_", metavar="ISO8601", help="Record this time instead of now.")
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="gitignore-style pattern to skip (repeatable).",
)
def snapshot(
    paths: tuple[str, ...],
    tags: tuple[str, ...],
    message: str,
    time_: str | None,
    excludes: tuple[str, ...],
) -> None:
    """Take a snapshot of each PATH (a directory).

    Exit code 3 when the snapshot was taken but some files could not be read.
    """
    from backend.snapshots import SnapshotOptions

    c = get_ctx()
    when = _parse_time(time_)
    store = c.store()
    cfg = c.config.snapshot
    results = []
    problems = 0
    for p in paths:
        opts = SnapshotOptions(
            tags=tags,
            message=message,
            time=when,
            excludes=(*cfg.exclude, *excludes),
            exclude_caches=cfg.exclude_caches,
            threads=cfg.threads,
            processes=cfg.processes,  # core: worker processes (backend/workers.py)
        )
        with progress_bar(c, f"snapshot {p}") as prog:
            res = store.create_snapshot(p, options=opts, progress=prog, cancel=c.cancel)
        results.append(res)
        problems += len(res.problems)
        for pr in res.problems:
            click.echo(f"snapdeck: warning: {pr.path}: {pr.message}", err=True)
        info(c, _snapshot_line(res.snapshot))
    if c.json:
        objs = [
            r.snapshot.to_json()
            | {"problems": [{"path": p.path, "message": p.message} for p in r.problems]}
            for r in results
        ]
        emit_json(objs[0] if len(objs) == 1 else objs)
    if problems:
        sys.exit(EXIT_PARTIAL)


# ------------------------------------------------------------------ list


@cli.command(name="list")
@common
@click.option("--source", metavar="PATH", help="Only snapshots of this source directory.")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="TAG",
    help="Only snapshots with this tag (repeatable: all must match).",
)
def list_(source: str | None, tags: tuple[str, ...]) -> None:
    """List snapshots, oldest first."""
    c = get_ctx()
    snaps = c.store().list_snapshots(source=source, tags=tags)
    if c.json:
        emit_json([s.to_json() for s in snaps])
        return
    if not snaps:
        info(c, "no snapshots")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("id", "time", "source", "trigger", "tags", "files", "size", "added"):
        t.add_column(col, justify="right" if col in ("files", "size", "added") else "left")
    for s in snaps:
        t.add_row(
            s.short_id,
            s.time.astimezone().strftime("%Y-%m-%d %H:%M:%S"),
            escape_markup(escape_path(s.source)),
            s.trigger,
            escape_markup(",".join(s.tags)),
            str(s.stats.total_files),
            format_size(s.stats.total_bytes),
            format_size(s.stats.bytes_added),
        )
    if not c.quiet:
        Console(highlight=False, soft_wrap=True).print(t)
        click.echo(f"{len(snaps)} snapshot{'s' if len(snaps) != 1 else ''}")


# ------------------------------------------------------------------ ls / cat


def _entry_json(path: bytes, e: Entry) -> dict[str, Any]:
    d: dict[str, Any] = {
        "path": escape_path(path),  # the same escaping as diff --json and the text output
        "type": e.kind.name.lower(),
        "mode": oct(e.mode),
        "size": e.size,
        "mtime": datetime.fromtimestamp(e.mtime_ns / 1e9).astimezone().isoformat(),
        "uid": e.uid,
        "gid": e.gid,
    }
    if e.kind is EntryKind.SYMLINK:
        d["target"] = escape_path(e.payload)
    return d


_TYPE_CHAR = {
    EntryKind.FILE: "-",
    EntryKind.DIR: "d",
    EntryKind.SYMLINK: "l",
    EntryKind.FIFO: "p",
    EntryKind.SOCKET: "s",
    EntryKind.CHARDEV: "c",
    EntryKind.BLOCKDEV: "b",
}


def _mode_str(e: Entry) -> str:
    bits = "rwxrwxrwx"
    perms = "".join(bits[i] if e.mode & (1 << (8 - i)) else "-" for i in range(9))
    return _TYPE_CHAR[e.kind] + perms


@cli.command()
@common
@click.argument("snap")
@click.argument("path", default="")
@click.option("--recursive", "-R", is_flag=True, help="List everything below PATH.")
def ls(snap: str, path: str, recursive: bool) -> None:
    """List the entries of PATH (default: the root) in snapshot SNAP."""
    c = get_ctx()
    store = c.store()
    s = store.resolve(snap)
    rows = store.ls(s, path, recursive=recursive)
    if c.json:
        emit_json([_entry_json(p, e) for p, e in rows])
        return
    for p, e in rows:
        when = datetime.fromtimestamp(e.mtime_ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M")
        name = escape_path(p)
        if e.kind is EntryKind.DIR:
            name += "/"
        elif e.kind is EntryKind.SYMLINK:
            name += " -> " + escape_path(e.payload)
        click.echo(f"{_mode_str(e)} {e.size:>12} {when} {name}")


@cli.command()
@common
@click.argument("snap")
@click.argument("path")
def cat(snap: str, path: str) -> None:
    """Write the content of file PATH in SNAP to stdout (raw bytes)."""
    c = get_ctx()
    store = c.store()
    s = store.resolve(snap)
    out = sys.stdout.buffer
    for chunk in store.read_file(s, path):
        out.write(chunk)
    out.flush()


# ------------------------------------------------------------------ diff


@cli.command()
@common
@click.argument("snap_a")
@click.argument("snap_b", required=False)
@click.argument("path", required=False, default="")
@click.option("--live", is_flag=True, help="Compare SNAP_A with its source directory as it is now.")
@click.option("--content", is_flag=True, help="Print unified text diffs of modified files.")
def diff(snap_a: str, snap_b: str | None, path: str, live: bool, content: bool) -> None:
    """Show what changed from SNAP_A to SNAP_B (or to the live directory with --live).

    Codes: A added, D removed, M modified, T type changed, P metadata only.
    """
    c = get_ctx()
    store = c.store()
    a = store.resolve(snap_a)
    if live:
        if snap_b is not None and not path:
            path = snap_b
        b = None
    else:
        if snap_b is None:
            raise UsageError("diff needs two snapshots, or one and --live")
        b = store.resolve(snap_b)
    res = store.diff(a, b, path=path, cancel=c.cancel)
    if c.json:
        emit_json(
            {
                "from": res.source_from,
                "to": res.source_to,
                "changes": [
                    {
                        "change": ch.change,
                        "path": escape_path(ch.path),
                        "type_before": ch.kind_before.name.lower() if ch.kind_before else None,
                        "type_after": ch.kind_after.name.lower() if ch.kind_after else None,
                        "size_before": ch.size_before,
                        "size_after": ch.size_after,
                    }
                    for ch in res.changes
                ],
            }
        )
        return
    counts: dict[str, int] = {}
    for ch in res.changes:
        counts[ch.change] = counts.get(ch.change, 0) + 1
        suffix = "/" if (ch.kind_after or ch.kind_before) is EntryKind.DIR else ""
        click.echo(f"{ch.change}  {escape_path(ch.path)}{suffix}")
        if content and ch.change == "M" and ch.kind_after is EntryKind.FILE:
            td = store.file_diff(a, b, ch.path)
            if td.binary:
                click.echo("   (binary files differ)")
            else:
                click.echo("".join(td.lines), nl=False)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no changes"
    info(c, f"-- {summary}")


# ------------------------------------------------------------------ restore


@cli.command()
@common
@click.argument("snap")
@click.option(
    "--target", metavar="DIR", help="Restore into DIR (it becomes equal to the snapshot)."
)
@click.option(
    "--zip", "zip_path", metavar="FILE", help="Write a ZIP archive to FILE ('-' for stdout)."
)
@click.option(
    "--include",
    "includes",
    multiple=True,
    metavar="PATH",
    help="Only this path of the snapshot (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option(
    "--overwrite",
    type=click.Choice(["always", "if-changed", "never"]),
    default="always",
    show_default=True,
    help="What to do with files that already exist.",
)
@click.option(
    "--delete", is_flag=True, help="Remove files in the target that the snapshot does not have."
)
@click.option("--keep-setuid", is_flag=True, help="Keep setuid/setgid bits (stripped by default).")
@click.option(
    "--in-place",
    is_flag=True,
    help="Restore over the snapshot's source directory, after a guard checkpoint "
    "(undo with 'snapdeck undo'); HEAD moves to SNAP.",
)
@click.option("--source", metavar="DIR", help="Resolve HEAD against this source.")
def restore(
    snap: str,
    target: str | None,
    zip_path: str | None,
    includes: tuple[str, ...],
    dry_run: bool,
    overwrite: str,
    delete: bool,
    keep_setuid: bool,
    in_place: bool,
    source: str | None,
) -> None:
    """Restore snapshot SNAP into a directory, a ZIP file, or over its source (--in-place)."""
    c = get_ctx()
    if sum((target is not None, zip_path is not None, in_place)) != 1:
        raise UsageError("restore needs exactly one of --target DIR, --zip FILE or --in-place")
    store = c.store()
    s = store.resolve(snap, source=source)
    if in_place:  # issue 3: guard checkpoint, restore over the source, HEAD → SNAP
        if includes or dry_run or delete or overwrite != "always" or keep_setuid:
            raise UsageError(
                "--in-place takes no --include, --dry-run, --overwrite, --delete or "
                "--keep-setuid (it always makes the source equal the snapshot)"
            )
        from backend.snapshots import SnapshotOptions
        from tui.cmd_history import report_in_place

        scfg = c.config.snapshot
        opts = SnapshotOptions(excludes=scfg.exclude, exclude_caches=scfg.exclude_caches)
        with progress_bar(c, f"restore {s.short_id} in place") as prog:
            guard, res = store.restore_in_place(s, options=opts, progress=prog, cancel=c.cancel)
        report_in_place(c, s, guard, res, s.source)
        return
    if zip_path is not None:
        if zip_path == "-":
            res = store.restore_zip(s, sys.stdout.buffer, includes=includes)
            sys.stdout.buffer.flush()
        else:
            tmp = zip_path + ".part"
            try:
                with open(tmp, "wb") as f:
                    res = store.restore_zip(s, f, includes=includes)
                os.replace(tmp, zip_path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
    else:
        assert target is not None
        with progress_bar(c, f"restore {s.short_id}") as prog:
            res = store.restore(
                s,
                target,
                includes=includes,
                dry_run=dry_run,
                overwrite=overwrite,
                delete=delete,
                keep_setuid=keep_setuid,
                progress=prog,
                cancel=c.cancel,
            )
    # With --zip -, stdout carries the archive: the report (text or JSON) goes to stderr.
    _report_restore(c, s, res, target or zip_path or "", err=zip_path == "-")
    if res.problems:
        sys.exit(EXIT_PARTIAL if res.files_restored else EXIT_ERROR)


def _report_restore(
    c: Ctx, s: Snapshot, res: RestoreResult, where: str, *, err: bool = False
) -> None:
    for p in res.problems:
        click.echo(f"snapdeck: warning: {p.path}: {p.message}", err=True)
    if c.json:
        emit_json(
            {
                "snapshot": s.id,
                "target": where,
                "dry_run": res.dry_run,
                "files_restored": res.files_restored,
                "files_skipped": res.files_skipped,
                "files_deleted": res.files_deleted,
                "dirs_restored": res.dirs_restored,
                "links_restored": res.links_restored,
                "bytes_written": res.bytes_written,
                "actions": [{"action": a, "path": p} for a, p in res.actions],
                "problems": [{"path": p.path, "message": p.message} for p in res.problems],
            },
            err=err,
        )
        return

    def say(msg: str) -> None:
        if err:
            if not c.quiet:
                click.echo(msg, err=True)
        else:
            info(c, msg)

    if res.dry_run:
        for action, path in res.actions:
            say(f"{action:<6} {path}")
        say(f"dry run: would write {res.files_restored} files, skip {res.files_skipped}")
    else:
        say(
            f"restored {res.files_restored} files ({format_size(res.bytes_written)}), "
            f"{res.dirs_restored} dirs, {res.links_restored} symlinks from {s.short_id} to {where}"
            + (f"; skipped {res.files_skipped}" if res.files_skipped else "")
            + (f"; deleted {res.files_deleted}" if res.files_deleted else ""),
        )


# ------------------------------------------------------------------ stats / unlock


@cli.command()
@common
def stats() -> None:
    """Repository size, dedup and compression ratios, and each snapshot's exclusive size.

    A snapshot's exclusive size is the stored (compressed) bytes no other snapshot references:
    what removing it and pruning would free.
    """
    # Exclusive sizes: issue 4 (backend/usage.py).
    c = get_ctx()
    store = c.store()
    st = store.stats()
    snaps = store.list_snapshots(refresh=False)
    with progress_bar(c, "usage") as prog:
        usage = store.usage(progress=prog, cancel=c.cancel)
    per_snapshot = [
        {
            "id": s.id,
            "time": s.time.isoformat(),
            "source": s.source,
            "raw_bytes": s.stats.total_bytes,
            "exclusive_bytes": usage[s.id].exclusive_bytes if s.id in usage else 0,
        }
        for s in snaps
    ]
    if c.json:
        emit_json(
            {
                "repository": store.location,
                "snapshots": st.snapshots,
                "packs": st.packs,
                "blobs": st.blobs,
                "raw_bytes": st.raw_bytes,
                "unique_bytes": st.unique_bytes,
                "stored_bytes": st.stored_bytes,
                "dedup_ratio": round(st.dedup_ratio, 3),
                "compression_ratio": round(st.compression_ratio, 3),
                "snapshot_usage": per_snapshot,
            }
        )
        return
    info(c, f"repository   {store.location}")
    info(c, f"snapshots    {st.snapshots}")
    info(c, f"raw          {format_size(st.raw_bytes)}  (all snapshots, as restored)")
    info(
        c,
        f"unique       {format_size(st.unique_bytes)}  (after dedup, dedup ratio {st.dedup_ratio:.2f}x)",
    )
    info(
        c,
        f"stored       {format_size(st.stored_bytes)}  (compression ratio {st.compression_ratio:.2f}x)",
    )
    info(c, f"packs/blobs  {st.packs} / {st.blobs}")
    if per_snapshot:
        info(c, f"\n{'id':<8}  {'time':<19}  {'size':>10}  {'exclusive':>10}  source")
    for s, row in zip(snaps, per_snapshot, strict=True):
        info(
            c,
            f"{s.short_id}  {s.time.astimezone():%Y-%m-%d %H:%M:%S}  "
            f"{format_size(s.stats.total_bytes):>10}  {format_size(row['exclusive_bytes']):>10}  "
            f"{escape_path(s.source)}",
        )


@cli.command()
@common
@click.option(
    "--all",
    "all_locks",
    is_flag=True,
    help="Remove every lock, not only stale ones (only when no snapdeck is running).",
)
def unlock(all_locks: bool) -> None:
    """Remove stale locks left by crashed processes (no password needed: locks are plaintext)."""
    c = get_ctx()
    # issue 6: locks are plaintext even in an encrypted repository, so work on the storage
    # directly: no password prompt, no catalog, no key derivation.
    from backend.errors import RepositoryNotFound
    from backend.locking import break_locks
    from backend.storage import open_storage

    storage = open_storage(c.repo_location(), s3=c.config.s3)
    try:
        if not storage.is_initialized():
            raise RepositoryNotFound(
                f"no snapdeck repository at {storage.location} (run 'snapdeck init' first)"
            )
        n = break_locks(storage, all=all_locks)
    finally:
        storage.close()
    if c.json:
        emit_json({"removed": n})
    else:
        info(c, f"removed {n} lock{'s' if n != 1 else ''}")


# ------------------------------------------------------------------ ui


@cli.command()
@common
@click.argument("dirs", nargs=-1, type=click.Path())
@click.option("--no-watch", is_flag=True, help="Only browse; do not watch DIR.")
def ui(dirs: tuple[str, ...], no_watch: bool) -> None:
    """Open the TUI on DIR (default: the current directory)."""
    c = get_ctx()
    targets = dirs or (".",)
    for d in targets:
        if not os.path.isdir(d):
            raise UsageError(f"{d} is not a directory")
    try:
        from tui.app import run_app  # type: ignore[import-not-found]
    except ImportError:
        run_app = None
    if run_app is None:
        # The TUI is not built yet: take a snapshot of DIR and show the listing.
        from backend.snapshots import SnapshotOptions

        store = c.store()
        for d in targets:
            res = store.create_snapshot(
                d, options=SnapshotOptions(excludes=c.config.snapshot.exclude)
            )
            click.echo(_snapshot_line(res.snapshot))
        for s in store.list_snapshots():
            click.echo(
                f"{s.short_id}  {s.time.astimezone():%Y-%m-%d %H:%M:%S}  {escape_path(s.source)}  {s.stats.total_files} files"
            )
        return
    run_app(c, list(targets), watch=not no_watch)


# The other areas' commands live in their own modules; importing them registers them on `cli`.
from tui import cmd_check, cmd_copy, cmd_history, cmd_key, cmd_maint  # noqa: E402,F401
from tui.cmd_key import new_password, password_provider  # noqa: E402  (issue 6)


def main() -> None:
    """Console entry point."""
    import logging

    from backend.tuning import tune_malloc

    tune_malloc()
    # Backend warnings (a damaged parent tree, a stale lock broken) as one line each.
    logging.basicConfig(level=logging.WARNING, format="snapdeck: warning: %(message)s")
    try:
        cli.main(prog_name="snapdeck", standalone_mode=True)
    except Cancelled:
        sys.exit(130)
