"""CLI commands: ``key passwd`` and ``key info`` (issue 6, encryption at rest), plus the
password sources every command uses.

A repository password comes from, in order: ``--password-file`` / ``--password-command``,
``$SNAPDECK_PASSWORD_FILE`` / ``$SNAPDECK_PASSWORD_COMMAND``, ``$SNAPDECK_PASSWORD``, and
finally a prompt without echo when stdin is a terminal. It is only asked for when the
repository turns out to be encrypted. Defined on the group from ``tui.cli``, which imports this
module once the group exists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from backend import format as fmt
from backend.errors import ObjectNotFound, RepositoryNotFound, StoreError, UsageError
from backend.keys import as_password, configured_password, decode_key, password_from_file
from backend.storage import open_storage
from tui.cli import cli, common, emit_json, get_ctx, info

if TYPE_CHECKING:
    from tui.cli import Ctx

NEW_PASSWORD_ENV = "SNAPDECK_NEW_PASSWORD"


def _interactive() -> bool:
    return sys.stdin.isatty()


def password_provider(c: Ctx) -> Callable[[], bytes | None]:
    """The password of the repository ``c`` opens, resolved only when it is needed."""

    def get() -> bytes | None:
        pw = configured_password(file=c.password_file, command=c.password_command)
        if pw is None and _interactive():
            pw = as_password(
                click.prompt(
                    f"password for {c.repo_location()}",
                    hide_input=True,
                    err=True,
                    show_default=False,
                )
            )
        return pw

    return get


def new_password(c: Ctx, purpose: str, *, file: str | None = None, env: str = "") -> bytes:
    """A password being set (init --encrypt, key passwd): from ``file``, ``$env``, the usual
    sources (init only), or typed twice at a prompt."""
    pw: bytes | None = None
    if file:
        pw = password_from_file(file)
    elif env and os.environ.get(env):
        pw = as_password(os.environ[env])
    elif not env:
        pw = configured_password(file=c.password_file, command=c.password_command)
    if pw is None and _interactive():
        pw = as_password(
            click.prompt(
                "new password",
                hide_input=True,
                confirmation_prompt="repeat the new password",
                err=True,
            )
        )
    if pw is None:
        where = (
            f"--new-password-file or ${env}"
            if env
            else "$SNAPDECK_PASSWORD, --password-file or --password-command"
        )
        raise UsageError(f"{purpose} needs a password: use {where}, or run it in a terminal")
    if not pw:
        raise UsageError("the password must not be empty")
    return pw


@cli.group()
def key() -> None:
    """Encryption keys: change the password, show how the repository is encrypted."""


@key.command()
@common
@click.option(
    "--new-password-file",
    metavar="FILE",
    help=f"Read the new password from FILE (default: ${NEW_PASSWORD_ENV}, or a prompt).",
)
def passwd(new_password_file: str | None) -> None:
    """Change the repository password.

    The master key is rewrapped with the new password and its key object replaced atomically:
    no data is rewritten, and the old password stops working at once.
    """
    c = get_ctx()
    store = c.store(create=False)
    if store.repo.crypto is None:
        raise UsageError(
            f"the repository at {store.location} is not encrypted (see 'snapdeck init --encrypt')"
        )
    pw = new_password(c, "key passwd", file=new_password_file, env=NEW_PASSWORD_ENV)
    name = store.repo.change_password(pw)
    if c.json:
        emit_json({"repository": store.location, "key": name, "changed": True})
    else:
        info(c, f"password changed (key {name[:8]}); the old password no longer opens it")


@key.command(name="info")
@common
def key_info() -> None:
    """Show whether the repository is encrypted, its cipher and key derivation (no password
    needed: the config and key objects are readable)."""
    c = get_ctx()
    storage = open_storage(c.repo_location(), s3=c.config.s3)
    try:
        try:
            cfg = fmt.decode_config(storage.get("config", "config"))
        except ObjectNotFound:
            raise RepositoryNotFound(f"no snapdeck repository at {storage.location}") from None
        keys: list[dict[str, object]] = []
        for obj in sorted(storage.list("keys"), key=lambda o: o.name):
            try:
                k = decode_key(obj.name, storage.get("keys", obj.name))
            except StoreError as exc:
                keys.append({"name": obj.name, "error": str(exc)})
                continue
            keys.append(
                {
                    "name": k.name,
                    "created": k.created,
                    "kdf": {
                        "algorithm": "argon2id",
                        "memory_kib": k.kdf.memory_kib,
                        "iterations": k.kdf.iterations,
                        "lanes": k.kdf.lanes,
                    },
                }
            )
    finally:
        storage.close()
    if c.json:
        emit_json(
            {
                "repository": storage.location,
                "id": cfg.id,
                "version": cfg.version,
                "encrypted": cfg.encrypted,
                "cipher": cfg.cipher,
                "keys": keys,
            }
        )
        return
    info(c, f"repository  {storage.location} ({cfg.id[:8]}, format {cfg.version})")
    if not cfg.encrypted:
        info(c, "encryption  none (create an encrypted one with 'snapdeck init --encrypt')")
        return
    info(c, f"encryption  {cfg.cipher}, keys derived with HKDF-SHA256 from a master key")
    for row in keys:
        if "error" in row:
            info(c, f"key         {str(row['name'])[:8]}: {row['error']}")
            continue
        kdf = row["kdf"]
        assert isinstance(kdf, dict)
        info(
            c,
            f"key         {str(row['name'])[:8]} created {row['created']}: argon2id "
            f"{kdf['memory_kib'] // 1024} MiB, {kdf['iterations']} passes, {kdf['lanes']} lanes",
        )
