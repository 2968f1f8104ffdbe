"""Regenerate the README screenshots (``make screenshots``): every screen (welcome, timeline,
browser, diff, history, eviction, help) in every bundled theme, from the committed demo
repository (the welcome screen: an empty one) with the frozen demo clock, 120x36.

``python screenshots/make_screenshots.py [SCREEN...]`` regenerates only those screens."""

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

from backend.clock import FixedClock  # noqa: E402
from backend.store import Store  # noqa: E402
from tests.tui.conftest import DEMO_DATA, SNAP_SIZE, build_app, settle  # noqa: E402
from tui import theming  # noqa: E402
from tui.app import SnapApp  # noqa: E402
from tui.demo import DEMO_NOW, open_demo_copy  # noqa: E402


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


async def _diff(pilot: Any) -> None:
    # mark the oldest snapshot, diff it with the newest, show README.md side by side
    await pilot.press("G", "m", "g", "d")
    await settle(pilot)
    await pilot.press("down")


async def _eviction(pilot: Any) -> None:
    await pilot.press("E")


async def _welcome(pilot: Any) -> None:
    pass


SCREENS: dict[str, Callable[[Any], Awaitable[None]]] = {
    "welcome": _welcome,
    "timeline": _timeline,
    "browser": _browser,
    "diff": _diff,
    "history": _history,
    "eviction": _eviction,
    "help": _help,
}


def _welcome_app(tmp: Path, theme: str) -> tuple[SnapApp, Store]:
    """An empty repository about to watch the demo project: the welcome screen."""
    store = Store.init(tmp / "empty", clock=FixedClock(DEMO_NOW))
    app = build_app(store, tmp, theme=theme, dirs=("/tmp/snapdeck-demo/project",))
    app.watch_enabled = True  # say what watching will do...
    app.start_watching = lambda: None  # type: ignore[method-assign]  # ...without starting it
    return app, store


async def shoot(name: str, theme: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if name == "welcome":
            app, store = _welcome_app(Path(tmp), theme)
        else:
            store = open_demo_copy(DEMO_DATA, Path(tmp))
            app = build_app(store, Path(tmp), theme=theme)
        try:
            async with app.run_test(size=SNAP_SIZE) as pilot:
                await settle(pilot)
                await SCREENS[name](pilot)
                await settle(pilot)
                svg = portable_svg(app.export_screenshot())
                (out / f"{name}-{theme}.svg").write_text(svg, encoding="utf-8")
        finally:
            store.close()


def portable_svg(svg: str) -> str:
    """The screenshot with a font every SVG renderer draws on the cell grid.

    Textual's SVG names the web font Fira Code, then ``monospace``. Where Fira Code cannot be
    loaded (GitHub shows README images without fetching fonts; cairosvg, image viewers) and the
    renderer ignores ``textLength`` or takes only the first family, the text falls back to a
    proportional font whose glyphs are wider than the cells: a 64-digit id runs into the date
    after it, size labels into the bars before them. The generic ``monospace`` is always there
    and fixed-width."""
    return svg.replace("font-family: Fira Code, monospace;", "font-family: monospace;")


def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    out = ROOT / "screenshots"
    names = sys.argv[1:] or list(SCREENS)
    for theme in [t.name for t in theming.bundled_themes()]:
        for name in names:
            asyncio.run(shoot(name, theme, out))
            print(f"screenshots/{name}-{theme}.svg")


if __name__ == "__main__":
    main()
