"""config.example.toml documents every setting with its default, and can never drift."""

from __future__ import annotations

import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from backend.config import Config, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def _key_tree(obj: Any) -> dict[str, Any]:
    """Section and key names of a settings dataclass, nested like the TOML file."""
    tree: dict[str, Any] = {}
    for spec in fields(obj):
        value = getattr(obj, spec.name)
        tree[spec.name] = _key_tree(value) if is_dataclass(value) else None
    return tree


def _names(table: dict[str, Any]) -> dict[str, Any]:
    """Section and key names of a TOML table."""
    return {key: _names(v) if isinstance(v, dict) else None for key, v in table.items()}


def test_example_parses_to_the_defaults() -> None:
    config, used = load_config(EXAMPLE, env={})
    assert used == EXAMPLE
    assert config == Config()


def test_example_sets_every_key() -> None:
    """Every field is present (uncommented), so the comparison above covers every default."""
    with EXAMPLE.open("rb") as handle:
        data = tomllib.load(handle)
    assert data.pop("keymap") == {}  # no bindings by default: the table is there, empty
    expected = _key_tree(Config())
    del expected["keymap"]
    assert _names(data) == expected
