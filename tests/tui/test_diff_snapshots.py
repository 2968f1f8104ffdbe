"""Screenshots of the diff screen (seeded repository, fixed size, built-in dark and light
themes, UTC). Regenerate with ``pytest tests/tui/test_diff_snapshots.py --snapshot-update``
(serially)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.test_diff_screen import ScreenApp, _select, settle
from tests.tui.test_diff_seed import seed_diff
from tui.screens.diff import DiffScreen

SNAP_SIZE = (120, 36)


def _app(tmp_path: Path, theme: str) -> ScreenApp:
    pair = seed_diff(tmp_path / "seed")
    return ScreenApp(lambda: DiffScreen(pair.store, pair.a, pair.b), theme=theme)


def _select_then(path: str, *keys: str) -> Any:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot.app)
        _select(pilot.app.screen, path)  # type: ignore[arg-type]
        await settle(pilot.app)
        for k in keys:
            await pilot.press(k)
        await settle(pilot.app)

    return run_before


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_side_by_side(snap_compare: Any, tmp_path: Path, theme: str) -> None:
    """src/app.py side by side: A/D/M/P markers and +/- counts in the list, folds, the second
    hunk under the cursor, word emphasis on `x * 14 + 1`, syntax colours."""
    assert snap_compare(
        _app(tmp_path, theme), terminal_size=SNAP_SIZE, run_before=_select_then("src/app.py", "n")
    )


def test_unified(snap_compare: Any, tmp_path: Path) -> None:
    """src/app.py unified: removed then added lines, two line-number columns, one fold opened."""
    assert snap_compare(
        _app(tmp_path, "textual-dark"),
        terminal_size=SNAP_SIZE,
        run_before=_select_then("src/app.py", "u", "tab", "n", "up", "up", "up", "up", "enter"),
    )


def test_binary(snap_compare: Any, tmp_path: Path) -> None:
    """logo.png: "Binary files differ" with both sizes and SHA-256 hashes."""
    assert snap_compare(
        _app(tmp_path, "textual-light"),
        terminal_size=SNAP_SIZE,
        run_before=_select_then("logo.png"),
    )
