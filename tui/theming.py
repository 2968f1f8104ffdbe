"""Themes: bundled ones from ``themes/`` (or ``tui/_bundled_themes`` in a wheel), user ones from
the config directory, and the defaults of the app's own theme variables.

Loading never raises: broken files are collected as ``(path, reason)`` and shown in one toast.
Textual's ``BUILTIN_THEMES`` is never mutated.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import platformdirs
from textual.color import Color, ColorParseError
from textual.theme import Theme

from backend.config import APP_NAME

DEFAULT_THEME = "snapdeck-dark"
LIGHT_THEME = "snapdeck-light"

_COLOUR_FIELDS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_ALLOWED = {f.name for f in fields(Theme)}

APP_VARIABLES: tuple[str, ...] = (
    "diff-added-background",
    "diff-removed-background",
    "diff-changed-background",
    "timeline-marker",
    "checkpoint-pin",
    "evict-reclaim",
    "graph-lane-1",
    "graph-lane-2",
    "graph-lane-3",
    "graph-lane-4",
)
"""The app's own theme variables; every one has a default computed from the current theme."""


class ThemeFileError(Exception):
    """A theme file that cannot be used (the message says why)."""


def bundled_themes_dir() -> Path:
    """Where the bundled themes are: ``themes/`` in a checkout, ``tui/_bundled_themes`` installed."""
    here = Path(__file__).resolve().parent
    installed = here / "_bundled_themes"
    if installed.is_dir():
        return installed
    return here.parent / "themes"


def user_themes_dir() -> Path:
    """``themes/`` in the platform config directory (e.g. ``~/.config/snapdeck/themes``)."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False) / "themes"


def _check_colour(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(f"{where} must be a colour string, got {value!r}")
    base = value.split()[0] if value.split() else value
    try:
        Color.parse(base)
    except ColorParseError:
        raise ThemeFileError(f"{where}: {value!r} is not a colour") from None
    if "$" in value:
        raise ThemeFileError(f"{where}: references to other variables are not allowed")
    return value


def load_theme_file(path: Path) -> Theme:
    """Parse one theme file into a ``Theme``.

    Args:
        path: A TOML theme file.

    Returns:
        The theme.

    Raises:
        ThemeFileError: The file is unreadable, not TOML, or not a valid theme.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeFileError(f"cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeFileError(f"not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _ALLOWED)
    if unknown:
        raise ThemeFileError(f"unknown key(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ThemeFileError("needs a non-empty 'name'")
    if "primary" not in data:
        raise ThemeFileError("needs a 'primary' colour")
    for key in _COLOUR_FIELDS:
        if key in data:
            _check_colour(data[key], key)
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeFileError("[variables] must be a table")
    for key, value in variables.items():
        _check_colour(value, f"variables.{key}")
    if "dark" in data and not isinstance(data["dark"], bool):
        raise ThemeFileError("'dark' must be true or false")
    for key in ("luminosity_spread", "text_alpha"):
        if key in data and not isinstance(data[key], int | float):
            raise ThemeFileError(f"'{key}' must be a number")
    try:
        return Theme(**data)
    except (TypeError, ValueError) as exc:
        raise ThemeFileError(str(exc)) from None


def load_theme_dir(directory: Path) -> tuple[list[Theme], list[tuple[Path, str]]]:
    """Every ``*.toml`` theme in a directory (sorted by file name).

    Returns:
        (themes loaded, [(path, reason)] for files that failed).
    """
    loaded: list[Theme] = []
    failed: list[tuple[Path, str]] = []
    if not directory.is_dir():
        return loaded, failed
    for path in sorted(directory.glob("*.toml")):
        try:
            loaded.append(load_theme_file(path))
        except ThemeFileError as exc:
            failed.append((path, str(exc)))
    return loaded, failed


def bundled_themes() -> list[Theme]:
    """The themes that ship with snapdeck (a broken bundled theme is a bug: it raises)."""
    themes, failed = load_theme_dir(bundled_themes_dir())
    if failed:
        path, why = failed[0]
        raise ThemeFileError(f"bundled theme {path.name}: {why}")
    return themes


def user_themes(directory: Path | None = None) -> tuple[list[Theme], list[tuple[Path, str]]]:
    """The user's themes (default: ``user_themes_dir()``), with the files that failed."""
    return load_theme_dir(directory or user_themes_dir())


def variable_defaults(theme: Theme) -> dict[str, str]:
    """Defaults of ``APP_VARIABLES`` derived from a theme's colour system (literal values)."""
    cs = theme.to_color_system().generate()

    def get(name: str, fallback: str) -> str:
        return cs.get(name, fallback)

    return {
        "diff-added-background": get("success-muted", "#00800040"),
        "diff-removed-background": get("error-muted", "#80000040"),
        "diff-changed-background": get("warning-muted", "#80800040"),
        "timeline-marker": get("accent", "#ffaa00"),
        "checkpoint-pin": get("error", "#ff0000"),
        "evict-reclaim": get("error-muted", "#80000040"),
        "graph-lane-1": get("primary", "#0178d4"),
        "graph-lane-2": get("secondary", "#a0a0ff"),
        "graph-lane-3": get("success", "#00ff00"),
        "graph-lane-4": get("accent", "#ffaa00"),
    }


def names(themes: Iterable[Theme]) -> list[str]:
    """The names of some themes."""
    return [t.name for t in themes]
