"""The exception hierarchy of the backend. Every error carries a one-line message and an exit code.

    StoreError (1)                      base: something went wrong; the message says what to do
    ├── UsageError (2)                  bad arguments detected by the backend (bad reference, bad size)
    ├── RepositoryNotFound (10)         no repository at that location
    ├── RepositoryExists (1)            init over an existing repository
    ├── UnsupportedFormat (11)          repository or object of a newer or unknown format version
    ├── StoreLocked (12)                another process holds a conflicting lock
    ├── SnapshotNotFound (13)           a snapshot reference that resolves to nothing
    │   └── AmbiguousReference (13)     a prefix that matches several snapshots
    ├── PathNotFound (14)               a path that is not in the snapshot
    ├── IntegrityError (20)             an object whose content does not match its id or is damaged
    │   └── ChunkNotFound (20)          a blob referenced but not in the index
    ├── ObjectNotFound (1)              storage: no object of that name
    ├── ObjectExists (1)                storage: write-once object already present
    ├── ConfigError (2)                 a malformed config file or unknown key
    ├── SourceError (2)                 a source path that does not exist or is not a directory
    ├── UnsafeRestore (1)               a restore that would write outside its target
    ├── PasswordRequired (15)           an encrypted repository and no password given
    ├── WrongPassword (15)              the password opens no key of the repository
    └── Cancelled (130)                 the operation was cancelled by the user

The CLI maps ``exit_code`` to the process exit status. ``PartialSuccess`` (exit 3) is not an
error class: operations that finish with skipped files report it in their results.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the backend raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(StoreError):
    """Arguments that cannot be acted on."""

    exit_code = 2


class RepositoryNotFound(StoreError):
    """No repository at that location."""

    exit_code = 10


class RepositoryExists(StoreError):
    """A repository is already there."""


class UnsupportedFormat(StoreError):
    """An object or repository of an unknown or newer format version."""

    exit_code = 11


class StoreLocked(StoreError):
    """A conflicting lock is held by another process."""

    exit_code = 12


class SnapshotNotFound(StoreError):
    """A snapshot reference that resolves to no snapshot."""

    exit_code = 13


class AmbiguousReference(SnapshotNotFound):
    """A snapshot id prefix that matches more than one snapshot."""


class PathNotFound(StoreError):
    """A path that does not exist inside a snapshot."""

    exit_code = 14


class IntegrityError(StoreError):
    """Damaged data: content that does not match its id, a truncated object, a bad header."""

    exit_code = 20


class ChunkNotFound(IntegrityError):
    """A blob that a tree references but the index does not know."""


class ObjectNotFound(StoreError):
    """Storage: no object of that kind and name."""


class ObjectExists(StoreError):
    """Storage: a write-once object of that name already exists."""


class ConfigError(StoreError):
    """A config file that cannot be used."""

    exit_code = 2


class SourceError(StoreError):
    """A source that does not exist or is not a directory."""

    exit_code = 2


class UnsafeRestore(StoreError):
    """A restore that would write outside its target."""


class Cancelled(StoreError):
    """The user cancelled the operation."""

    exit_code = 130


# ---------------------------------------------------------------- encryption (issue 6)


class PasswordRequired(StoreError):
    """An encrypted repository was opened without any password source."""

    exit_code = 15


class WrongPassword(StoreError):
    """The password does not open any key of the repository."""

    exit_code = 15
