"""User settings (``config.toml``), platform paths, and the small UI state file.

Layer: configuration. Reads files, but only here; everything else receives a ``Config`` value.

Invariants:
    * Settings are frozen, slotted dataclasses, one per TOML section; ``Config()`` is the
      defaults, and ``config.example.toml`` parses to exactly ``Config()`` (a test checks it).
    * ``load_config`` validates strictly and fails with one ``ConfigError`` line naming the file,
      the section and the key: wrong types (a bool is not an integer), out-of-range values,
      unknown sections or keys (with a "did you mean" from ``difflib``), TOML syntax errors
      (with ``file:line:column``).
    * The user's config file is never written. UI state (last theme, last screen) lives in a
      separate ``state.toml`` that is written atomically; a damaged state file is ignored.
    * Platform directories are looked up when the functions are called (``platformdirs`` reads
      ``XDG_*`` at call time), so tests can redirect them with environment variables.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

import platformdirs
import tomli_w

from backend.errors import ConfigError, UsageError
from backend.units import Duration, parse_duration, parse_size

__all__ = [
    "ANIMATION_LEVELS",
    "APP_NAME",
    "CONFIG_ENV",
    "Config",
    "EvictConfig",
    "RepositoryConfig",
    "RetentionConfig",
    "S3Config",
    "SnapshotConfig",
    "UiConfig",
    "WatchConfig",
    "config_to_dict",
    "default_cache_dir",
    "default_config_path",
    "default_repo_path",
    "load_config",
    "load_state",
    "parse_config",
    "save_state",
    "state_path",
]

logger = logging.getLogger(__name__)

APP_NAME = "snapdeck"
"""The name used for every platform directory."""
CONFIG_ENV = "SNAPDECK_CONFIG"
"""The environment variable that names a config file (after ``--config``, before the default)."""
ANIMATION_LEVELS: tuple[str, ...] = ("none", "basic", "full")
"""The values of ``[ui] animation`` (Textual's animation levels)."""

AnimationLevel = Literal["none", "basic", "full"]

_T = TypeVar("_T")


# --- value checks -------------------------------------------------------------------------------


class _Invalid(Exception):
    """A value that does not fit; ``expected`` completes "… must be ___"."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


_Check = Callable[[object], object]


def _boolean() -> _Check:
    def check(value: object) -> object:
        if isinstance(value, bool):
            return value
        raise _Invalid("true or false")

    return check


def _integer(minimum: int, maximum: int | None = None) -> _Check:
    if maximum is None:
        expected = f"an integer ≥ {minimum}"
    else:
        expected = f"an integer from {minimum} to {maximum}"

    def check(value: object) -> object:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= minimum
            and (maximum is None or value <= maximum)
        ):
            return value
        raise _Invalid(expected)

    return check


def _number(minimum: float) -> _Check:
    expected = f"a number ≥ {minimum:g}"

    def check(value: object) -> object:
        # An integer is fine where a float is expected; a bool is not a number here.
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= minimum
        ):
            return float(value)
        raise _Invalid(expected)

    return check


def _string(*, non_empty: bool = False) -> _Check:
    expected = "a non-empty string" if non_empty else "a string"

    def check(value: object) -> object:
        if isinstance(value, str) and (value or not non_empty):
            return value
        raise _Invalid(expected)

    return check


def _choice(choices: tuple[str, ...]) -> _Check:
    quoted = [f'"{c}"' for c in choices]
    expected = "one of " + ", ".join(quoted[:-1]) + f" or {quoted[-1]}"

    def check(value: object) -> object:
        if isinstance(value, str) and value in choices:
            return value
        raise _Invalid(expected)

    return check


def _string_list() -> _Check:
    def check(value: object) -> object:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise _Invalid("a list of strings")

    return check


def _size_or_empty(empty_means: str) -> _Check:
    expected = f'a size greater than zero like "500M" or "2GiB", or "" for {empty_means}'

    def check(value: object) -> object:
        if not isinstance(value, str):
            raise _Invalid(expected)
        if value.strip() == "":
            return ""
        try:
            size = parse_size(value)
        except UsageError:
            raise _Invalid(expected) from None
        if size <= 0:
            raise _Invalid(expected)
        return value

    return check


def _duration_or_empty(empty_means: str, *, allow_zero: bool) -> _Check:
    zero = "" if allow_zero else " greater than zero"
    expected = f'a duration{zero} like "7d", "12h" or "1y6m", or "" for {empty_means}'

    def check(value: object) -> object:
        if not isinstance(value, str):
            raise _Invalid(expected)
        if value.strip() == "":
            return ""
        try:
            duration = parse_duration(value)
        except UsageError:
            raise _Invalid(expected) from None
        if duration.is_zero() and not allow_zero:
            raise _Invalid(expected)
        return value

    return check


def _checked(check: _Check) -> dict[str, _Check]:
    """Field metadata: the check ``load_config`` applies to the key's TOML value."""
    return {"check": check}


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RepositoryConfig:
    """``[repository]``: where snapshots are stored."""

    path: str = field(default="", metadata=_checked(_string()))
    """The repository directory. Empty: the platform data directory (``default_repo_path()``).
    ``~`` is expanded, and a relative path is taken relative to the config file."""
    password_file: str = field(default="", metadata=_checked(_string()))
    """A file holding the repository password (``~`` and relative paths as for ``path``).
    Empty: none. Exclusive with ``password_command``."""
    password_command: str = field(default="", metadata=_checked(_string()))
    """A command that prints the repository password. Empty: none."""

    def repo_path(self) -> Path:
        """The repository directory this setting names.

        Returns:
            ``path`` with ``~`` expanded, or the platform default when ``path`` is empty.
        """
        return Path(self.path).expanduser() if self.path else default_repo_path()


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotConfig:
    """``[snapshot]``: what a snapshot reads and how it stores it."""

    exclude: tuple[str, ...] = field(default=(), metadata=_checked(_string_list()))
    """``.gitignore``-style patterns, relative to the source, never included in a snapshot."""
    compression_level: int = field(default=3, metadata=_checked(_integer(1, 19)))
    """The zstd compression level, 1 (fastest) to 19 (smallest)."""
    threads: int = field(default=0, metadata=_checked(_integer(0)))
    """Worker threads for chunking and compression. 0: one per CPU (``os.cpu_count()``)."""
    processes: int = field(default=-1, metadata=_checked(_integer(-1)))
    """Worker processes that read, hash and compress small files once a snapshot is large
    (more than a few hundred files): -1 one per CPU (none on a single CPU), 0 none (threads
    only)."""
    exclude_caches: bool = field(default=True, metadata=_checked(_boolean()))
    """Skip directories that contain a ``CACHEDIR.TAG`` file."""

    @property
    def worker_threads(self) -> int:
        """``threads``, with 0 replaced by the number of CPUs (at least 1)."""
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionConfig:
    """``[watch.retention]``: how watch checkpoints are thinned (restic's keep rules).

    A checkpoint is kept if any rule keeps it. Each ``keep_*`` count keeps the newest checkpoint
    of each of that many most recent hours/days/weeks/months that have one; 0 turns a rule off.
    """

    keep_within: str = field(
        default="1h", metadata=_checked(_duration_or_empty("off", allow_zero=True))
    )
    """Keep every checkpoint within this duration of the newest one, as restic's
    ``--keep-within`` does. Empty: off."""
    keep_hourly: int = field(default=24, metadata=_checked(_integer(0)))
    """Hours for which the newest checkpoint is kept."""
    keep_daily: int = field(default=30, metadata=_checked(_integer(0)))
    """Days for which the newest checkpoint is kept."""
    keep_weekly: int = field(default=8, metadata=_checked(_integer(0)))
    """Weeks for which the newest checkpoint is kept."""
    keep_monthly: int = field(default=12, metadata=_checked(_integer(0)))
    """Months for which the newest checkpoint is kept."""

    @property
    def within(self) -> Duration | None:
        """``keep_within`` parsed, or ``None`` when it is empty."""
        return parse_duration(self.keep_within) if self.keep_within.strip() else None


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchConfig:
    """``[watch]``: automatic checkpoints when files change."""

    enabled: bool = field(default=True, metadata=_checked(_boolean()))
    """Take checkpoints automatically when files in the source change."""
    quiet_ms: int = field(default=300, metadata=_checked(_integer(0)))
    """Milliseconds without further changes before a checkpoint is taken."""
    min_interval_s: float = field(default=2.0, metadata=_checked(_number(0)))
    """The least number of seconds between two checkpoints."""
    full_rescan_s: int = field(default=600, metadata=_checked(_integer(0)))
    """Seconds between full rescans, which catch events the OS dropped. 0: never."""
    ignore: tuple[str, ...] = field(default=(), metadata=_checked(_string_list()))
    """``.gitignore``-style patterns watch mode ignores: their changes never trigger a
    checkpoint and watch checkpoints leave them out, like the lines of a ``.snapdeckignore``
    file in the watched directory (the repository and caches are always ignored)."""
    fallback_rescan_s: int = field(default=30, metadata=_checked(_integer(1)))
    """Seconds between rescans of what cannot be watched for events: directories holding
    names that are not UTF-8, or everything once the OS watch limit is reached."""
    # issue 3 (watch memory): periodic prune while watching
    prune_every: int = field(default=1000, metadata=_checked(_integer(0)))
    """Prune the repository after this many watch checkpoints, between checkpoints: reclaims
    what thinned checkpoints alone referenced and merges the small packs and index segments
    each checkpoint writes, so a long-running watch stays flat in memory and on disk.
    0: never."""
    retention: RetentionConfig = field(
        default_factory=RetentionConfig, metadata={"section": RetentionConfig}
    )
    """How checkpoints are thinned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvictConfig:
    """``[evict]``: keep the repository under a size budget and an age limit."""

    max_size: str = field(default="1GiB", metadata=_checked(_size_or_empty("no size budget")))
    """The size budget, like ``"1GiB"`` or ``"500MB"``. Empty: no budget."""
    max_age: str = field(
        default="7d", metadata=_checked(_duration_or_empty("no age limit", allow_zero=False))
    )
    """Unprotected snapshots not accessed for this duration are evicted, like ``"7d"``.
    Empty: no age limit."""
    sweep_in_watch: bool = field(default=False, metadata=_checked(_boolean()))
    """Apply the eviction plan in the background while watching (off: ``snapdeck evict``
    is the only thing that evicts)."""
    sweep_interval_s: int = field(default=3600, metadata=_checked(_integer(1)))
    """Seconds between background sweeps."""

    @property
    def max_size_bytes(self) -> int | None:
        """``max_size`` in bytes, or ``None`` when there is no budget."""
        return parse_size(self.max_size) if self.max_size.strip() else None

    @property
    def max_age_duration(self) -> Duration | None:
        """``max_age`` parsed, or ``None`` when there is no age limit."""
        return parse_duration(self.max_age) if self.max_age.strip() else None


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Config:
    """``[s3]``: an S3-compatible object store for the repository."""

    endpoint: str = field(default="", metadata=_checked(_string()))
    """The endpoint URL, like ``"https://s3.example.com"``. Empty: AWS S3. The environment
    (``SNAPDECK_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``) wins over it."""
    region: str = field(default="", metadata=_checked(_string()))
    """The region name. Empty: ``us-east-1``. ``AWS_REGION``/``AWS_DEFAULT_REGION`` win."""
    path_style: bool = field(default=True, metadata=_checked(_boolean()))
    """Address buckets as ``endpoint/bucket`` (true) rather than ``bucket.endpoint`` (false)."""
    access_key_id: str = field(default="", metadata=_checked(_string()))
    """The access key id. Empty: none."""
    secret_access_key: str = field(default="", metadata=_checked(_string()))
    """The secret access key. Empty: none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UiConfig:
    """``[ui]``: the terminal interface."""

    theme: str = field(default="snapdeck-dark", metadata=_checked(_string(non_empty=True)))
    """The theme name (bundled or a user theme)."""
    animation: AnimationLevel = field(default="none", metadata=_checked(_choice(ANIMATION_LEVELS)))
    """Animation level: ``"none"``, ``"basic"`` or ``"full"``."""
    cursor_blink: bool = field(default=False, metadata=_checked(_boolean()))
    """Blink the cursor in text inputs."""
    show_hidden: bool = field(default=True, metadata=_checked(_boolean()))
    """Show dot files in the snapshot browser."""


def _empty_keymap() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Every setting. ``Config()`` is the defaults."""

    repository: RepositoryConfig = field(
        default_factory=RepositoryConfig, metadata={"section": RepositoryConfig}
    )
    """``[repository]``."""
    snapshot: SnapshotConfig = field(
        default_factory=SnapshotConfig, metadata={"section": SnapshotConfig}
    )
    """``[snapshot]``."""
    watch: WatchConfig = field(default_factory=WatchConfig, metadata={"section": WatchConfig})
    """``[watch]`` and ``[watch.retention]``."""
    evict: EvictConfig = field(default_factory=EvictConfig, metadata={"section": EvictConfig})
    """``[evict]``."""
    s3: S3Config = field(default_factory=S3Config, metadata={"section": S3Config})
    """``[s3]``."""
    ui: UiConfig = field(default_factory=UiConfig, metadata={"section": UiConfig})
    """``[ui]``."""
    keymap: Mapping[str, str] = field(
        default_factory=_empty_keymap, hash=False, metadata={"keymap": True}
    )
    """``[keymap]``: binding id → keys (comma-separated, e.g. ``"ctrl+s,f2"``). Read-only.
    Ids are not checked here; the TUI knows them."""


# --- parsing ------------------------------------------------------------------------------------


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    """A TOML key as the user would write it (quoted if it is not a bare key)."""
    if _BARE_KEY.fullmatch(name):
        return name
    return '"' + name.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def _show(value: object) -> str:
    """A value for an error message: TOML-like, on one line, not too long."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(name: str, candidates: list[str], *, brackets: bool = False) -> str:
    """The " (did you mean x?)" hint for the nearest candidate, else the list of candidates."""
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if matches:
        match = f"[{matches[0]}]" if brackets else matches[0]
        return f" (did you mean {match}?)"
    return f" (expected one of: {', '.join(candidates)})"


def _parse_table(cls: Callable[..., _T], table: Mapping[str, Any], where: str, source: str) -> _T:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        spec = known.get(key)
        if spec is None:
            hint = _suggest(key, list(known))
            raise ConfigError(f"{source}: unknown key [{where}] {_key(key)}{hint}")
        if "section" in spec.metadata:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{source}: [{where}] {key} must be a table [{where}.{key}], got {_show(value)}"
                )
            values[key] = _parse_table(spec.metadata["section"], value, f"{where}.{key}", source)
            continue
        try:
            values[key] = spec.metadata["check"](value)
        except _Invalid as invalid:
            raise ConfigError(
                f"{source}: [{where}] {key} must be {invalid.expected}, got {_show(value)}"
            ) from None
    return cls(**values)


def _parse_keymap(table: Mapping[str, Any], source: str) -> Mapping[str, str]:
    keymap: dict[str, str] = {}
    for binding_id, value in table.items():
        keys = [value] if isinstance(value, str) else value
        parts: list[str] = []
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            parts = [part.strip() for k in keys for part in k.split(",")]
        if not parts or not all(parts):
            raise ConfigError(
                f'{source}: [keymap] {_key(binding_id)} must be keys like "ctrl+s" or '
                f'"ctrl+s,f2" (or a list of them), got {_show(value)}'
            )
        keymap[binding_id] = ",".join(parts)
    return MappingProxyType(keymap)


def _resolve_path(value: str, base_dir: Path) -> str:
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(os.path.abspath(base_dir / path))
    return str(path)


def parse_config(
    data: Mapping[str, Any], source: str = "config", base_dir: Path | None = None
) -> Config:
    """Validate parsed TOML and build the settings.

    Args:
        data: The TOML document as ``tomllib`` returns it.
        source: How error messages name the file.
        base_dir: The config file's directory: when given, ``[repository] path`` and
            ``password_file`` get ``~`` expanded and relative paths resolved against it.

    Returns:
        The settings; keys that are absent keep their defaults.

    Raises:
        ConfigError: An unknown section or key, a value of the wrong type or out of range.
    """
    sections = {f.name: f for f in fields(Config)}
    values: dict[str, Any] = {}
    for name, value in data.items():
        spec = sections.get(name)
        if spec is None:
            if isinstance(value, dict):
                hint = _suggest(name, list(sections), brackets=True)
                raise ConfigError(f"{source}: unknown section [{_key(name)}]{hint}")
            owners = [
                section.name
                for section in fields(Config)
                if "section" in section.metadata
                and name in {f.name for f in fields(section.metadata["section"])}
            ]
            if owners:
                hint = f" (did you mean [{owners[0]}] {name}?)"
            else:
                hint = _suggest(name, list(sections), brackets=True)
            raise ConfigError(f"{source}: unknown top-level key {_key(name)}{hint}")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a table [{name}], got {_show(value)}")
        if "keymap" in spec.metadata:
            values[name] = _parse_keymap(value, source)
        else:
            values[name] = _parse_table(spec.metadata["section"], value, name, source)
    config = Config(**values)

    repo = config.repository
    if repo.password_file and repo.password_command:
        raise ConfigError(f"{source}: [repository] set password_file or password_command, not both")
    if base_dir is not None:
        repo = replace(
            repo,
            path=_resolve_path(repo.path, base_dir),
            password_file=_resolve_path(repo.password_file, base_dir),
        )
        config = replace(config, repository=repo)
    return config


_TOML_POSITION = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = " ".join(str(exc).split())
        match = _TOML_POSITION.match(message)
        if match:
            where = f"{path}:{match['line']}:{match['col']}"
            message = match["msg"]
        else:
            # "... (at end of document)": point at the last line.
            message = message.replace(" (at end of document)", " at the end of the file")
            where = f"{path}:{text.count(chr(10)) + (0 if text.endswith(chr(10)) else 1)}"
        raise ConfigError(f"{where}: invalid TOML: {message}") from None


def load_config(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> tuple[Config, Path | None]:
    """Find, read and validate the config file.

    Precedence: ``path`` (``--config``), then ``$SNAPDECK_CONFIG``, then
    ``default_config_path()`` if it exists, else the defaults. A file named explicitly (by
    ``path`` or the variable) must exist.

    Args:
        path: An explicit config file.
        env: The environment to read ``SNAPDECK_CONFIG`` from (default ``os.environ``).

    Returns:
        The settings and the file they came from (``None`` for the defaults).

    Raises:
        ConfigError: A named file is missing, or the file is unreadable, not TOML or invalid.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is not None:
        chosen = Path(path).expanduser()
        if not chosen.exists():
            raise ConfigError(f"config file {chosen} not found")
    elif environ.get(CONFIG_ENV):
        chosen = Path(environ[CONFIG_ENV]).expanduser()
        if not chosen.exists():
            raise ConfigError(f"config file {chosen} not found (named by ${CONFIG_ENV})")
    else:
        chosen = default_config_path()
        if not chosen.exists():
            logger.debug("config: no %s, using defaults", chosen)
            return Config(), None
    data = _read_toml(chosen)
    config = parse_config(data, source=str(chosen), base_dir=chosen.parent)
    logger.debug("config: loaded %s", chosen)
    return config, chosen


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The settings as a TOML-ready dict (``snapdeck config show``); ``parse_config`` reads it back.

    Args:
        cfg: The settings.

    Returns:
        Nested dicts of sections in declaration order, with lists for tuples.
    """

    def convert(obj: object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for spec in fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, spec.name)
            if "section" in spec.metadata:
                out[spec.name] = convert(value)
            elif isinstance(value, Mapping):
                out[spec.name] = dict(value)
            elif isinstance(value, tuple):
                out[spec.name] = list(value)
            else:
                out[spec.name] = value
        return out

    return convert(cfg)


# --- platform paths -----------------------------------------------------------------------------


def default_config_path() -> Path:
    """``config.toml`` in the platform config directory (e.g. ``~/.config/snapdeck``)."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "config.toml"


def default_repo_path() -> Path:
    """The repository used when ``[repository] path`` is empty (e.g. ``~/.local/share/...``)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False) / "repo"


def default_cache_dir() -> Path:
    """The platform cache directory (e.g. ``~/.cache/snapdeck``); safe to delete."""
    return platformdirs.user_cache_path(APP_NAME, appauthor=False)


def state_path() -> Path:
    """The UI state file, ``state.toml`` in the platform state directory."""
    return platformdirs.user_state_path(APP_NAME, appauthor=False) / "state.toml"


# --- UI state -----------------------------------------------------------------------------------


def load_state(path: Path | None = None) -> dict[str, Any]:
    """Read the UI state (last theme, last screen, ...).

    Never fails: a missing, unreadable or damaged file gives an empty dict (and a log warning).

    Args:
        path: The state file (default ``state_path()``).

    Returns:
        The stored state.
    """
    target = state_path() if path is None else path
    try:
        return tomllib.loads(target.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        logger.warning("ignoring unreadable state file %s: %s", target, exc)
        return {}


def save_state(state: Mapping[str, Any], path: Path | None = None) -> bool:
    """Write the UI state atomically (a temporary file in the same directory, then a rename).

    A failure to write is logged, not raised: losing UI state must never stop the program.

    Args:
        state: TOML-serialisable values (no ``None``).
        path: The state file (default ``state_path()``).

    Returns:
        Whether the file was written.

    Raises:
        TypeError: ``state`` holds a value TOML cannot represent (a programming error).
    """
    target = state_path() if path is None else path
    data = tomli_w.dumps(dict(state)).encode("utf-8")
    tmp_name: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
        return True
    except OSError as exc:
        logger.warning("could not save state file %s: %s", target, exc)
        return False
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
