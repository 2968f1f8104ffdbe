"""The TUI on an S3 repository: the timeline lists its snapshots, the browser opens one."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.store import Store
from tests.conftest import make_tree
from tests.s3.server import BUCKET, SeaweedServer, new_prefix
from tests.tui.conftest import SNAP_SIZE, build_app, settle
from tui.screens.browser import BrowserScreen
from tui.widgets.snapshot_list import SnapshotList


async def test_tui_opens_an_s3_repository(
    s3_server: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    location = f"s3://{BUCKET}/{new_prefix()}"
    src = tmp_path / "src"
    make_tree(src, {"notes.txt": "one\n", "dir": {"x.py": "print(1)\n"}})
    with Store.init(location, cache_dir=tmp_path / "cache") as store:
        store.create_snapshot(src)
        (src / "notes.txt").write_text("two\n")
        store.create_snapshot(src)
    store = Store.open(location, cache_dir=tmp_path / "cache")
    try:
        app = build_app(store, tmp_path)
        async with app.run_test(size=SNAP_SIZE) as pilot:
            await settle(pilot)
            snaps = [s for s in app.screen.query_one(SnapshotList).items if s is not None]
            assert len(snaps) == 2
            assert all(s.source == str(src) for s in snaps)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, BrowserScreen)
            assert app.screen.snapshot.id == snaps[0].id
            assert not [n.message for n in app._notifications if n.severity == "error"]
    finally:
        store.close()
