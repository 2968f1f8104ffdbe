"""Pilot tests of the diff screen on a seeded repository: the file list, markers and counts,
selection, hunk navigation, unified / side by side, folds, binary and large files, live diffs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.screen import Screen

from backend.model import Snapshot
from backend.textdiff import RowKind
from tests.tui.test_diff_seed import DiffPair, seed_diff
from tui.screens import diff as diff_module
from tui.screens.diff import DiffScreen
from tui.widgets.diff_files import BINARY, DiffFileList, FileItem
from tui.widgets.diffview import DiffView

SIZE = (120, 36)


class ScreenApp(App[None]):
    """A bare app that shows one screen (what the tests and screenshots drive)."""

    def __init__(self, make: Callable[[], Screen[None]], theme: str = "textual-dark") -> None:
        super().__init__()
        self._make = make
        self._theme = theme
        self.errors: list[BaseException] = []
        self.animation_level = "none"
        self.cursor_blink = False

    def on_mount(self) -> None:
        self.theme = self._theme
        self.push_screen(self._make())

    def show_error(self, error: BaseException) -> None:
        """What the real app does with a failed worker (here: remember it, and a toast)."""
        self.errors.append(error)
        self.notify(str(error), severity="error")


async def settle(app: App[None]) -> None:
    """Wait until every worker is done and the messages they posted are handled."""
    for _ in range(50):
        await app.workers.wait_for_complete()
        await app._animator.wait_until_complete()
        if not any(w.is_running for w in app.workers):
            break
    for _ in range(3):
        await app.workers.wait_for_complete()
        await _pause(app)


async def _pause(app: App[None]) -> None:
    import asyncio

    await asyncio.sleep(0.01)


@pytest.fixture
def pair(tmp_path: Path) -> DiffPair:
    p = seed_diff(tmp_path / "seed")
    yield p
    p.store.close()


def _items(screen: DiffScreen) -> dict[str, FileItem]:
    files = screen.query_one(DiffFileList)
    return {i.path: i for i in files.items if i is not None}


def _select(screen: DiffScreen, path: str) -> None:
    files = screen.query_one(DiffFileList)
    for n, it in enumerate(files.items):
        if it is not None and it.path == path:
            files.move_to(n)
            return
    raise AssertionError(path)


async def _open(pair: DiffPair, b: Snapshot | None = "same", **kw: object):  # type: ignore[assignment]
    other = pair.b if b == "same" else b
    app = ScreenApp(lambda: DiffScreen(pair.store, pair.a, other, **kw))  # type: ignore[arg-type]
    return app


async def test_file_list_markers_counts_and_first_file(pair: DiffPair) -> None:
    app = await _open(pair)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        items = _items(screen)
        assert {p: i.change.change for p, i in items.items()} == {
            "CHANGES.md": "A",
            "README.md": "M",
            "current": "M",
            "logo.png": "M",
            "old.txt": "D",
            "run.sh": "P",
            "src/app.py": "M",
        }
        counts = screen.query_one(DiffFileList).counts
        assert counts[items["CHANGES.md"].index] == (4, 0)
        assert counts[items["old.txt"].index] == (0, 1)
        assert counts[items["README.md"].index] == (1, 1)
        assert counts[items["src/app.py"].index] == (3, 2)
        assert counts[items["logo.png"].index] == (BINARY, BINARY)
        assert screen.counts_done
        summary = str(screen.query_one("#diff-summary").render())
        assert "7 changed" in summary and "+8 −4" in summary
        # The first file is selected and shown; the cursor is on its first hunk.
        view = screen.query_one(DiffView)
        assert view.text is not None and view.text.path == "CHANGES.md"
        await pilot.press("down")
        await settle(app)
        assert view.text is not None and view.text.path == "README.md"
        row = view.layout_.row(view.cursor)
        assert row.kind is RowKind.CHANGED
        assert view.text.a[row.a] == "Run it with `python -m app`."
        assert view.text.b[row.b] == "Run it with `python -m app --fast`."


async def test_hunk_navigation_modes_and_folds(pair: DiffPair) -> None:
    app = await _open(pair)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        _select(screen, "src/app.py")
        await settle(app)
        view = screen.query_one(DiffView)
        layout = view.layout_
        assert view.text is not None and view.text.path == "src/app.py"
        assert len(layout.hunks) == 3
        assert view.cursor == layout.hunks[0]
        header = str(screen.query_one("#diff-file-header").render())
        assert "hunk 1/3" in header and "side by side" in header
        await pilot.press("n")
        assert view.cursor == layout.hunks[1]
        r = layout.row(view.cursor)
        assert "x * 14 + 1" in view.text.b[r.b]
        await pilot.press("n")
        assert view.cursor == layout.hunks[2]
        assert "hunk 3/3" in str(screen.query_one("#diff-file-header").render())
        await pilot.press("N", "N")
        assert view.cursor == layout.hunks[0]
        # Unchanged runs are folded; the fold can be opened.
        assert layout.folds
        fold_id, fold_row = next(iter(layout.folds.items()))
        hidden = layout.row(fold_row).count
        height = layout.height
        view.focus()
        await pilot.press("n")  # onto hunk 2, then walk up to the fold above it
        while view.cursor > fold_row:
            await pilot.press("up")
        assert view.layout_.row(view.cursor).kind is RowKind.FOLD
        await pilot.press("enter")
        assert view.layout_.height == height + hidden - 1
        assert fold_id not in view.layout_.folds
        # Unified mode lists the removed line, then the added one.
        await pilot.press("u")
        assert view.layout_.mode == "unified"
        assert "unified" in str(screen.query_one("#diff-file-header").render())
        kinds = [view.layout_.row(y).kind for y in range(view.layout_.height)]
        assert RowKind.CHANGED not in kinds
        assert kinds.count(RowKind.DELETED) == 2 and kinds.count(RowKind.INSERTED) == 3
        await pilot.press("s")
        assert view.layout_.mode == "split"
        await pilot.press("e")
        assert not view.layout_.folds
        assert view.layout_.height == max(len(view.text.a), len(view.text.b))


async def test_n_past_the_last_hunk_moves_to_the_next_file(pair: DiffPair) -> None:
    app = await _open(pair)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        view = screen.query_one(DiffView)
        assert view.text is not None and view.text.path == "CHANGES.md"
        await pilot.press("n")  # CHANGES.md has one hunk: on to README.md
        await settle(app)
        assert view.text.path == "README.md"
        await pilot.press("right_square_bracket")
        await settle(app)
        assert screen.current is not None and screen.current.path == "current"
        assert "releases/v2" in "\n".join(view.message_lines)


async def test_binary_symlink_metadata_and_too_large(
    pair: DiffPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await _open(pair)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        view = screen.query_one(DiffView)
        _select(screen, "logo.png")
        await settle(app)
        msg = "\n".join(view.message_lines)
        assert "Binary files differ" in msg and "1,032 bytes" in msg and "sha256 " in msg
        _select(screen, "run.sh")
        await settle(app)
        msg = "\n".join(view.message_lines)
        assert "Only metadata changed" in msg and "-rw-r--r--" in msg and "-rwxr-xr-x" in msg
        # Above the size guard: no alignment, sizes and hashes instead.
        monkeypatch.setattr(diff_module, "MAX_DIFF_BYTES", 40)
        _select(screen, "CHANGES.md")
        await settle(app)
        _select(screen, "README.md")
        await settle(app)
        msg = "\n".join(view.message_lines)
        assert "Too large to compare" in msg and "sha256 " in msg
        await pilot.press("n")  # no hunks here: moves on without trouble
        await settle(app)
    assert not app.errors


async def test_huge_file_renders_virtually(tmp_path: Path) -> None:
    pair = seed_diff(tmp_path / "seed", huge_lines=20_000)
    app = ScreenApp(lambda: DiffScreen(pair.store, pair.a, pair.b))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        _select(screen, "huge.log")
        await settle(app)
        view = screen.query_one(DiffView)
        assert view.text is not None and len(view.text.a) == 20_000
        assert len(view.layout_.hunks) == 25
        assert view.layout_.height < 400  # folded: 25 hunks with context, not 20,000 rows
        view.focus()
        await pilot.press("G")  # the last row renders
        assert view.cursor == view.layout_.height - 1
        await pilot.press("e")  # every fold open: 20,000 rows, still only the visible drawn
        assert view.layout_.height == 20_000
        await pilot.press("g")
        for _ in range(5):
            await pilot.press("n")
        assert "CHANGED" in view.text.b[view.layout_.row(view.cursor).b]
        await pilot.pause()
    pair.store.close()


async def test_live_directory_diff(pair: DiffPair, tmp_path: Path) -> None:
    from tests.conftest import make_tree

    live = tmp_path / "live"
    make_tree(live, {"a.txt": "one\ntwo\nthree\n", "b.txt": "bee\n"})
    snap = pair.store.create_snapshot(live).snapshot
    (live / "a.txt").write_text("one\n2\nthree\n")
    (live / "b.txt").unlink()
    (live / "c.txt").write_text("sea\n")
    app = ScreenApp(lambda: DiffScreen(pair.store, snap, None))
    async with app.run_test(size=SIZE):
        await settle(app)
        screen = app.screen
        assert isinstance(screen, DiffScreen)
        items = _items(screen)
        assert {p: i.change.change for p, i in items.items()} == {
            "a.txt": "M",
            "b.txt": "D",
            "c.txt": "A",
        }
        assert "live" in str(screen.query_one("#diff-title").render())
        view = screen.query_one(DiffView)
        assert view.text is not None and view.text.path == "a.txt"
        assert view.text.b[1] == "2"
        assert screen.query_one(DiffFileList).counts[items["a.txt"].index] == (1, 1)
