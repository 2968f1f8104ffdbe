"""Regenerate the README screenshots (``make screenshots``): every part-A screen in every
bundled theme, from the committed demo repository with the frozen demo clock, 120x36."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tui.conftest import DEMO_DATA, SNAP_SIZE, build_app, settle  # noqa: E402
from tui import theming  # noqa: E402
from tui.demo import open_demo_copy  # noqa: E402


async def _timeline(pilot: Any) -> None:
    await pilot.press("down", "down")


async def _browser(pilot: Any) -> None:
    await pilot.press("enter")
    await settle(pilot)
    await pilot.press("space")
    await settle(pilot)
    await pilot.press("down")


async def _history(pilot: Any) -> None:
    await pilot.press("h")


async def _help(pilot: Any) -> None:
    await pilot.press("question_mark")


SCREENS: dict[str, Callable[[Any], Awaitable[None]]] = {
    "timeline": _timeline,
    "browser": _browser,
    "history": _history,
    "help": _help,
}


async def shoot(name: str, theme: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_demo_copy(DEMO_DATA, Path(tmp))
        try:
            app = build_app(store, Path(tmp), theme=theme)
            async with app.run_test(size=SNAP_SIZE) as pilot:
                await settle(pilot)
                await SCREENS[name](pilot)
                await settle(pilot)
                app.save_screenshot(filename=f"{name}-{theme}.svg", path=str(out))
        finally:
            store.close()


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    out = ROOT / "screenshots"
    for theme in [t.name for t in theming.bundled_themes()]:
        for name in SCREENS:
            asyncio.run(shoot(name, theme, out))
            print(f"screenshots/{name}-{theme}.svg")


if __name__ == "__main__":
    main()
