"""App-wide behaviour: themes (bundled, user, broken, remembered), help, keymap, palette."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import load_state
from tests.tui.conftest import SNAP_SIZE, build_app, settle
from tui import theming
from tui.screens.help import HelpScreen
from tui.screens.timeline import TimelineScreen
from tui.widgets.snapshot_list import SnapshotList


def test_bundled_themes_load_and_include_light_and_high_contrast() -> None:
    themes = {t.name: t for t in theming.bundled_themes()}
    assert len(themes) >= 4
    assert not themes["snapdeck-light"].dark
    assert "snapdeck-high-contrast" in themes
    for t in themes.values():
        assert set(theming.APP_VARIABLES) <= set(t.variables), t.name


def test_broken_user_themes_are_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text('name = "mine"\nprimary = "#112233"\n')
    (tmp_path / "bad.toml").write_text('name = "x"\nprimary = "notacolour"\n')
    (tmp_path / "ref.toml").write_text(
        'name = "y"\nprimary = "#112233"\n[variables]\ntimeline-marker = "$accent"\n'
    )
    (tmp_path / "junk.toml").write_text("name = [")
    loaded, failed = theming.user_themes(tmp_path)
    assert [t.name for t in loaded] == ["mine"]
    assert sorted(p.name for p, _ in failed) == ["bad.toml", "junk.toml", "ref.toml"]


async def test_theme_cycles_and_is_remembered(make_app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        assert app.theme == "snapdeck-dark"
        await pilot.press("ctrl+t")
        await settle(pilot)
        new = app.theme
        assert new != "snapdeck-dark" and new in app.cycle_themes
    assert load_state(tmp_path / "state.toml")["theme"] == new
    again = make_app()
    async with again.run_test(size=SNAP_SIZE) as pilot:
        assert again.theme == new


async def test_user_theme_dir_and_unknown_config_theme_fall_back(
    demo_store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    themes = tmp_path / "user-themes"
    themes.mkdir()
    (themes / "mine.toml").write_text('name = "mine"\nprimary = "#aa3366"\ndark = false\n')
    (themes / "broken.toml").write_text("oops")
    app = build_app(demo_store, tmp_path, theme="no-such-theme")
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        assert app.theme == theming.DEFAULT_THEME
        assert "mine" in app.cycle_themes
        assert any("broken.toml" in n.message for n in app._notifications)


async def test_help_lists_the_screen_bindings(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = " ".join(" ".join(r) for r in app.screen.rows)
        for word in ("Diff", "Mark", "Restore", "Tag", "Pin", "Forget", "timeline_forget"):
            assert word in text
        await pilot.press("escape")
        assert isinstance(app.screen, TimelineScreen)


async def test_keymap_rebinds_by_id(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(keymap={"timeline_mark": "M", "no_such_binding": "z"})
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        lst = app.screen.query_one(SnapshotList)
        await pilot.press("m")
        assert lst.marked is None
        await pilot.press("M")
        assert lst.marked == lst.highlighted.id
        assert any("no_such_binding" in n.message for n in app._notifications)


async def test_command_palette_offers_every_screen_action(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()

    def titles() -> list[str]:
        return [c.title for c in app.get_system_commands(app.screen)]

    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        here = titles()
        assert len(here) == len(set(here)), here  # no command twice
        for t in (
            "Browse",  # shadowed by the list's own enter, still an action
            "Diff",
            "Mark",
            "Restore",
            "Tag",
            "Pin",
            "Forget",
            "History",
            "Filter",
            "Snapshot now",
            "Next theme",
            "Help",
            "Eviction",
        ):
            assert t in here, t
        assert "Up" not in here and "Page down" not in here  # navigation is not an action
        # the diff screen's actions (diff.* ids)
        lst = app.screen.query_one(SnapshotList)
        old, new = [s for s in lst.items if s is not None][-1], lst.highlighted
        app.open_diff(old, new)
        await settle(pilot)
        here = titles()
        for t in ("Next hunk", "Prev hunk", "Unified", "Side by side", "Expand folds"):
            assert t in here, t
        assert "Next file" in here and "Timeline" in here
        # run one from the palette: it acts on the diff screen
        screen = app.screen
        cmd = next(c for c in app.get_system_commands(screen) if c.title == "Unified")
        cmd.callback()
        await settle(pilot)
        from tui.widgets.diffview import DiffView

        assert screen.query_one(DiffView).mode == "unified"
        # the eviction screen's (evict.* ids); Eviction itself is not offered there
        app.action_eviction()
        await settle(pilot)
        here = titles()
        for t in ("Edit policy", "Run plan", "Cancel run", "Reload", "Timeline"):
            assert t in here, t
        assert "Eviction" not in here
        next(c for c in app.get_system_commands(app.screen) if c.title == "Timeline").callback()
        await settle(pilot)
        assert isinstance(app.screen, TimelineScreen)


@pytest.mark.parametrize(
    "name", ["snapdeck-dark", "snapdeck-light", "snapdeck-high-contrast", "snapdeck-dusk"]
)
async def test_every_bundled_theme_renders(make_app, name: str) -> None:  # type: ignore[no-untyped-def]
    app = make_app(theme=name)
    async with app.run_test(size=SNAP_SIZE) as pilot:
        await settle(pilot)
        assert app.theme == name
        assert app.theme_variables["timeline-marker"]
