"""forget, evict, prune and stats through the real CLI: --json shapes, exit codes, restic oracle."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.clock import FixedClock
from backend.snapshots import SnapshotOptions
from backend.store import Store
from tests.conftest import isolated_environ
from tests.test_cli import assert_error, run

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def make_repo(root: Path, times: list[datetime], *, size: int = 4000) -> tuple[Path, list[str]]:
    """A repository with one snapshot per time (the file changes each time)."""
    repo, src = root / "repo", root / "src"
    src.mkdir(parents=True)
    rng = random.Random(7)
    ids = []
    with Store.init(repo, cache_dir=root / "cache", clock=FixedClock(T0)) as s:
        for i, t in enumerate(times):
            (src / "f").write_bytes(rng.randbytes(size + i))
            (src / "same").write_bytes(b"unchanged" * 100)
            tags = ("old",) if i == 0 else ()  # the oldest is tagged: a group without HEAD
            opts = SnapshotOptions(time=t, tags=tags)
            ids.append(s.create_snapshot(src, options=opts).snapshot.id)
    return repo, ids


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = isolated_environ(tmp_path / "_env")
    e["TZ"] = "UTC"
    return e


def test_forget_dry_run_json_then_execute_with_prune(tmp_path: Path, env: dict[str, str]) -> None:
    times = [T0 + timedelta(hours=5 * i) for i in range(10)]
    repo, ids = make_repo(tmp_path, times, size=30_000)
    r = run(env, "forget", "-r", repo, "--keep-last", "3", "--dry-run", "--json")
    assert r.code == 0, r.err
    doc = r.json
    assert set(doc) >= {"keep", "remove", "groups", "dry_run"}
    assert [k["id"] for k in doc["keep"]] == ids[:-4:-1]
    assert doc["keep"][0]["reasons"] == ["HEAD", "last #1"]
    assert doc["keep"][2]["reasons"] == ["last #3"]
    assert {x["id"] for x in doc["remove"]} == set(ids[:7])
    assert len(doc["groups"]) == 1 and doc["groups"][0]["source"] == str(tmp_path / "src")
    assert len(run(env, "list", "-r", repo, "--json").json) == 10  # dry run: nothing removed

    before = run(env, "stats", "-r", repo, "--json").json["stored_bytes"]
    r = run(env, "forget", "-r", repo, "--keep-last", "3", "--prune", "--json")
    assert r.code == 0, r.err
    assert set(r.json["removed"]) == set(ids[:7])
    assert r.json["prune"]["packs_deleted"] + r.json["prune"]["packs_repacked"] > 0
    st = run(env, "stats", "-r", repo, "--json").json
    assert st["snapshots"] == 3 and st["stored_bytes"] < before - 6 * 30_000
    usage = {u["id"]: u for u in st["snapshot_usage"]}
    assert set(usage) == set(ids[-3:])
    assert all(u["exclusive_bytes"] > 30_000 for u in usage.values())  # each has its own f
    for k in ("raw_bytes", "stored_bytes", "dedup_ratio", "compression_ratio"):
        assert st[k] > 0

    r = run(env, "forget", "-r", repo, ids[-1][:10])
    assert_error(r, 2, "protected (HEAD)")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "no policy"),
        (["--keep-tag", "nope", "--group-by", "tags"], "all 1 snapshots of tags [old]"),
        (["--keep-last", "-1"], "--keep-last"),
        (["--keep-within", "3x"], "3x"),
        (["--keep-last", "1", "--group-by", "color"], "color"),
        (["--keep-last", "1", "deadbeef00"], "not both"),
        (["--keep-last", "1", "--prune", "--max-repack-ratio", "2"], "between 0 and 1"),
    ],
)
def test_forget_refusals(tmp_path: Path, env: dict[str, str], args: list[str], needle: str) -> None:
    repo, _ids = make_repo(tmp_path, [T0, T0 + timedelta(days=1)])
    assert_error(run(env, "forget", "-r", repo, *args), 2, needle)


def test_evict_json_exit_codes_and_promise(tmp_path: Path, env: dict[str, str]) -> None:
    times = [T0 + timedelta(hours=i) for i in range(6)]
    repo, ids = make_repo(tmp_path, times, size=40_000)
    none = ["--max-size", "none", "--max-age", "none"]
    assert_error(run(env, "evict", "-r", repo, *none), 2, "--max-size")
    assert_error(run(env, "evict", "-r", repo, "--max-size", "lots"), 2, "lots")
    # No options: the [evict] defaults, 1 GiB and 7 days (these snapshots are months old).
    r = run(env, "evict", "-r", repo, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert r.json["budget"] == 1024**3 and r.json["max_age"] == "7d"
    assert [x["id"] for x in r.json["remove"]] == ids[:-1]
    assert all("not accessed for 7d" in x["reason"] for x in r.json["remove"])
    r = run(env, "evict", "-r", repo, "--max-age", "none", "--dry-run", "--json")
    assert r.code == 0 and r.json["remove"] == [] and r.json["max_age"] is None

    r = run(
        env, "evict", "-r", repo, "--max-age", "none", "--max-size", "120K", "--dry-run", "--json"
    )
    assert r.code == 0, r.err
    plan = r.json
    assert set(plan) >= {"remove", "bytes_reclaimed", "size_before", "size_after", "budget"}
    assert plan["budget"] == 120 * 1024 and plan["size_after"] <= plan["budget"]
    assert [x["id"] for x in plan["remove"]] == ids[: len(plan["remove"])]  # LRU: oldest first
    for x in plan["remove"]:
        assert set(x) >= {"id", "exclusive_bytes", "last_access", "reason"}
        assert x["exclusive_bytes"] > 40_000 and "over budget" in x["reason"]
    assert plan["remove"][-1]["cumulative_bytes"] == plan["bytes_reclaimed"]

    r = run(env, "evict", "-r", repo, "--max-age", "none", "--max-size", "120K", "--json")
    assert r.code == 0, r.err
    assert r.json["removed"] == [x["id"] for x in plan["remove"]]
    assert abs(r.json["size_on_disk"] - plan["size_after"]) <= 0.01 * plan["size_after"]

    # Only the newest (HEAD) is left to protect: a budget of 1 byte cannot be met.
    r = run(env, "evict", "-r", repo, "--max-age", "none", "--max-size", "1", "--json")
    assert r.code == 3, r.err
    assert r.json["budget_met"] is False and "cannot be met" in r.err
    assert [s["id"] for s in run(env, "list", "-r", repo, "--json").json] == [ids[-1]]
    r = run(env, "restore", "-r", repo, "latest", "--target", tmp_path / "out")
    assert r.code == 0, r.err


def test_evict_uses_config_and_max_age_text(tmp_path: Path, env: dict[str, str]) -> None:
    old = datetime.now(UTC) - timedelta(days=20)
    repo, _ids = make_repo(tmp_path, [old, old + timedelta(hours=1), datetime.now(UTC)])
    cfg = tmp_path / "config.toml"
    cfg.write_text('[evict]\nmax_age = "7d"\n')
    r = run(env, "evict", "-r", repo, "--config", cfg, "--dry-run")
    assert r.code == 0, r.err
    assert "would remove 2 snapshots" in r.text
    assert r.text.count("not accessed for 7d") == 2


def test_prune_json_and_dry_run(tmp_path: Path, env: dict[str, str]) -> None:
    repo, ids = make_repo(tmp_path, [T0 + timedelta(hours=i) for i in range(4)], size=20_000)
    assert run(env, "forget", "-r", repo, ids[0], ids[1], "-q").code == 0
    r = run(env, "prune", "-r", repo, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert r.json["dry_run"] is True and r.json["bytes_reclaimed"] > 2 * 20_000
    r = run(env, "prune", "-r", repo, "--json")
    assert r.code == 0, r.err
    assert r.json["bytes_before"] - r.json["bytes_after"] > 2 * 20_000
    r = run(env, "prune", "-r", repo)
    assert r.code == 0 and "nothing to prune" in r.text
    assert_error(run(env, "prune", "-r", repo, "--max-repack-ratio", "-0.5"), 2, "between 0 and 1")
    assert_error(run(env, "prune", "-r", tmp_path / "nowhere"), 10)


def test_forget_matches_restic_through_the_cli(tmp_path: Path, env: dict[str, str]) -> None:
    """The CLI path to restic 0.14 as the oracle (test_retention covers the policy itself)."""
    exe = shutil.which("restic")
    if exe is None:
        pytest.skip("restic is not installed")
    rng = random.Random(42)
    times = sorted(T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 60)) for _ in range(12))
    repo, _ids = make_repo(tmp_path, times)
    flags = [
        "--keep-daily",
        "4",
        "--keep-weekly",
        "3",
        "--keep-monthly",
        "1",
        "--keep-within",
        "2d",
    ]
    r = run(env, "forget", "-r", repo, *flags, "--dry-run", "--json")
    assert r.code == 0, r.err
    ours = {datetime.fromisoformat(k["time"]) for k in r.json["keep"]}

    renv = {
        "PATH": env["PATH"],
        "HOME": str(tmp_path),
        "TZ": "UTC",
        "RESTIC_PASSWORD": "x",
        "RESTIC_REPOSITORY": str(tmp_path / "restic"),
        "RESTIC_CACHE_DIR": str(tmp_path / "rcache"),
    }

    def restic(*args: str) -> Any:
        p = subprocess.run([exe, *args], env=renv, capture_output=True, text=True, check=True)
        return p.stdout

    restic("init", "-q")
    data = tmp_path / "rdata"
    data.mkdir()
    (data / "x").write_text("x")
    with ThreadPoolExecutor(4) as pool:  # restic backs up concurrently under shared locks
        list(
            pool.map(
                lambda t: restic(
                    "backup", "-q", "--host", "h", "--time", f"{t:%Y-%m-%d %H:%M:%S}", str(data)
                ),
                times,
            )
        )
    groups = json.loads(restic("forget", "--dry-run", "--json", "--no-lock", *flags))
    theirs = {datetime.fromisoformat(k["time"]).astimezone(UTC) for k in groups[0]["keep"]}
    assert ours == theirs


HEAVY = (
    "backend.snapshots",
    "backend.check",
    "backend.restore",
    "backend.history",
    "backend.watch",
    "backend.copying",
    "multiprocessing",
    "pathspec",
    "rich",
    "textual",
)
"""What the maintenance commands never need: imported only by the commands that do."""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["forget", "--keep-last", "1", "--dry-run", "--json"],
        ["evict", "--max-size", "1", "--dry-run", "--json"],
        ["prune", "--dry-run", "--json"],
    ],
)
def test_start_up_imports_only_what_the_command_needs(
    tmp_path: Path, env: dict[str, str], args: list[str]
) -> None:
    """(issue 4) Start-up time: a maintenance command loads neither the snapshot pipeline nor
    check, restore, watch, rich or Textual (each run of the CLI paid ~0.05 s CPU for them)."""
    repo, _ids = make_repo(tmp_path, [T0, T0 + timedelta(hours=1)])
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules"
        f" if m.split('.')[0] in {sorted({h.split('.')[0] for h in HEAVY})!r}"
        f" and (m in {list(HEAVY)!r} or m.split('.')[0] != 'backend')), file=sys.stderr))\n"
        "from tui.cli import main\n"
        f"sys.argv = ['snapdeck', *{[*args[:1], '-r', str(repo), *args[1:]]!r}]\n"
        "main()\n"
    )
    if args == ["--help"]:
        code = code.replace(f"'-r', {str(repo)!r}, ", "")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode in (0, 3), proc.stderr
    loaded = [line for line in proc.stderr.splitlines() if line.startswith("LOADED")]
    assert loaded == ["LOADED []"], proc.stderr
