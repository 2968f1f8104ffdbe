"""Key objects: the master key wrapped by a passphrase, and where passphrases come from.

Layer: beside format.py (pure encode/decode plus the KDF), used by the repository. A key object
(``keys/<name>``) is readable JSON, like the config, so a person can see that a repository is
encrypted and how without the passphrase::

    {"format": "snapdeck-key", "version": 1, "created": iso8601,
     "kdf": {"algorithm": "argon2id", "salt": b64(16), "memory_kib": int, "iterations": int,
             "lanes": int},
     "wrap": "aes-256-gcm", "data": b64(nonce | ciphertext | tag)}

The wrapping key is Argon2id(passphrase, salt, params); the sealed payload is JSON
``{"v": 1, "repo": repository id, "master": b64(32 bytes), "cipher": repository cipher}`` with
associated data ``snapdeck/key\\0<repository id>``: a key object only opens in its own
repository, and the payload pins the repository's cipher, so editing the readable config cannot
change how data is sealed. Changing the passphrase rewraps the same master key (new salt) and
replaces the key object atomically: no data is rewritten and the old passphrase stops working.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from backend.crypto import CIPHERS, MASTER_KEY_LEN, open_box, seal_box
from backend.errors import IntegrityError, UnsupportedFormat, UsageError

KEY_FORMAT = "snapdeck-key"
KEY_VERSION = 1
WRAP_CIPHER = "aes-256-gcm"
SALT_LEN = 16

PasswordSource = str | bytes | Callable[[], "str | bytes | None"]
"""A passphrase, or a function that returns one or None (called only when a repository needs
it: an unencrypted repository never asks)."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters, stored with each key object.

    The defaults take about 0.25 s on the 2-core benchmark machine (RFC 9106's second
    recommended option, 64 MiB and 4 lanes, with 8 passes instead of 3 to reach that time):
    slow for a guesser, cheap once per command.
    """

    memory_kib: int = 64 * 1024
    """Memory in KiB."""
    iterations: int = 8
    """Passes over the memory."""
    lanes: int = 4
    """Parallelism parameter (fixed by the key; not the number of threads used)."""

    def check(self) -> KdfParams:
        """Reject parameters too weak or too large to be deliberate."""
        if not (8 * self.lanes <= self.memory_kib <= 4 * 1024 * 1024):
            raise IntegrityError(f"key derivation memory {self.memory_kib} KiB is out of range")
        if not (1 <= self.iterations <= 64 and 1 <= self.lanes <= 64):
            raise IntegrityError("key derivation parameters are out of range")
        return self


@dataclass(frozen=True, slots=True)
class KeyObject:
    """One parsed key object (still wrapped)."""

    name: str
    created: str
    kdf: KdfParams
    salt: bytes
    sealed: bytes


def _wrapping_key(password: bytes, salt: bytes, kdf: KdfParams) -> AESGCM:
    raw = Argon2id(
        salt=salt,
        length=32,
        iterations=kdf.iterations,
        lanes=kdf.lanes,
        memory_cost=kdf.memory_kib,
    ).derive(password)
    return AESGCM(raw)


def _ad(repo_id: str) -> bytes:
    return b"snapdeck/key\0" + repo_id.encode()


def encode_key(
    password: bytes,
    master: bytes,
    *,
    repo_id: str,
    cipher: str,
    kdf: KdfParams | None = None,
    now: datetime | None = None,
) -> bytes:
    """A new key object wrapping ``master`` with ``password`` (fresh salt)."""
    if not password:
        raise UsageError("the password must not be empty")
    kdf = (kdf or KdfParams()).check()
    salt = secrets.token_bytes(SALT_LEN)
    payload = json.dumps(
        {
            "v": 1,
            "repo": repo_id,
            "master": base64.b64encode(master).decode(),
            "cipher": cipher,
        },
        sort_keys=True,
    ).encode()
    sealed = seal_box(_wrapping_key(password, salt, kdf), payload, _ad(repo_id))
    doc = {
        "format": KEY_FORMAT,
        "version": KEY_VERSION,
        "created": (now or datetime.now(UTC)).isoformat(),
        "kdf": {
            "algorithm": "argon2id",
            "salt": base64.b64encode(salt).decode(),
            "memory_kib": kdf.memory_kib,
            "iterations": kdf.iterations,
            "lanes": kdf.lanes,
        },
        "wrap": WRAP_CIPHER,
        "data": base64.b64encode(sealed).decode(),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def decode_key(name: str, data: bytes) -> KeyObject:
    """Parse a key object (``IntegrityError`` when malformed, ``UnsupportedFormat`` if newer)."""
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT:
            raise ValueError("not a snapdeck key")
        version = int(doc["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"key {name} is unreadable: {exc}") from None
    if version > KEY_VERSION:
        raise UnsupportedFormat(f"key {name} has a newer format ({version}); upgrade snapdeck")
    try:
        k = doc["kdf"]
        if k["algorithm"] != "argon2id" or doc["wrap"] != WRAP_CIPHER:
            raise ValueError("unknown key derivation or wrapping")
        kdf = KdfParams(int(k["memory_kib"]), int(k["iterations"]), int(k["lanes"])).check()
        return KeyObject(
            name=name,
            created=str(doc["created"]),
            kdf=kdf,
            salt=base64.b64decode(k["salt"], validate=True),
            sealed=base64.b64decode(doc["data"], validate=True),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"key {name} is malformed: {exc}") from None


def unwrap_key(key: KeyObject, password: bytes, *, repo_id: str, cipher: str) -> bytes | None:
    """The master key if ``password`` opens ``key`` for this repository, else None.

    Raises ``IntegrityError`` when the key opens but its content contradicts the repository
    config (another cipher: the readable config was edited).
    """
    try:
        payload = open_box(_wrapping_key(password, key.salt, key.kdf), key.sealed, _ad(repo_id))
    except InvalidTag:
        return None
    try:
        doc = json.loads(payload)
        master = base64.b64decode(doc["master"], validate=True)
        sealed_cipher = str(doc["cipher"])
        sealed_repo = str(doc["repo"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"key {key.name} content is malformed: {exc}") from None
    if sealed_repo != repo_id or len(master) != MASTER_KEY_LEN:
        raise IntegrityError(f"key {key.name} belongs to another repository")
    if sealed_cipher != cipher or sealed_cipher not in CIPHERS:
        raise IntegrityError(
            f"the repository config says cipher {cipher!r} but its key says {sealed_cipher!r}: "
            "the config was altered"
        )
    return master


def new_master_key() -> bytes:
    """32 random bytes from the OS CSPRNG."""
    return secrets.token_bytes(MASTER_KEY_LEN)


def new_key_name() -> str:
    """A random key object name."""
    return secrets.token_hex(16)


def as_password(value: str | bytes) -> bytes:
    """A passphrase as bytes (UTF-8; undecodable command output passes through as is)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


# ------------------------------------------------------------------ password sources


def password_from_file(path: str) -> bytes:
    """The first line of a password file, without its line ending."""
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read(1024 * 1024)
    except OSError as exc:
        raise UsageError(f"cannot read password file {path}: {exc.strerror or exc}") from None
    line = data.splitlines()[0] if data else b""
    if not line:
        raise UsageError(f"password file {path} is empty")
    return line


def password_from_command(command: str) -> bytes:
    """The first line a password command prints (run without a shell; split like a shell)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"invalid password command {command!r}: {exc}") from None
    if not argv:
        raise UsageError("the password command is empty")
    try:
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"password command {argv[0]!r} failed: {exc}") from None
    if proc.returncode != 0:
        raise UsageError(f"password command {argv[0]!r} exited with status {proc.returncode}")
    line = proc.stdout.splitlines()[0] if proc.stdout else b""
    if not line:
        raise UsageError(f"password command {argv[0]!r} printed no password")
    return line


def configured_password(
    *,
    file: str | None = None,
    command: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> bytes | None:
    """The passphrase from the first configured source, or None when none is configured.

    Order: ``file`` / ``command`` arguments (command-line options), then the environment:
    ``SNAPDECK_PASSWORD_FILE``, ``SNAPDECK_PASSWORD_COMMAND``, ``SNAPDECK_PASSWORD``. Giving
    both a file and a command at the same level is a ``UsageError``.
    """
    env = os.environ if environ is None else environ
    if file and command:
        raise UsageError("give either --password-file or --password-command, not both")
    if file:
        return password_from_file(file)
    if command:
        return password_from_command(command)
    efile = env.get("SNAPDECK_PASSWORD_FILE")
    ecmd = env.get("SNAPDECK_PASSWORD_COMMAND")
    if efile and ecmd:
        raise UsageError("set either SNAPDECK_PASSWORD_FILE or SNAPDECK_PASSWORD_COMMAND, not both")
    if efile:
        return password_from_file(efile)
    if ecmd:
        return password_from_command(ecmd)
    pw = env.get("SNAPDECK_PASSWORD")
    if pw:
        return as_password(pw)
    return None
