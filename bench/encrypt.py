"""The cost of encryption at rest: W1 first snapshot (and restore), unencrypted vs encrypted.

    .venv/bin/python bench/encrypt.py                 # W1, 3 reps of each, alternating
    .venv/bin/python bench/encrypt.py --reps 5 --workload w3 --restore

Each rep starts from a fresh repository (init untimed); the two variants alternate (plain,
encrypted, encrypted, plain, ...) so drift on a shared machine hits both alike. The timed
process includes everything a user waits for, so the encrypted figure includes unlocking the
key (one Argon2id derivation, ~0.25 s). The goal (issue 6): encrypted ≤ 1.15 × unencrypted.
Uses the runner, corpus and snapdeck lookup of ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # type: ignore[import-not-found]
    WORKLOADS,
    Runner,
    ensure_corpus,
    find_snapdeck,
    last_json_object,
    rmrf,
    same_bytes,
)

PASSWORD = "bench-password"
GOAL = 1.15


def one(runner: Runner, exe: str, src: Path, encrypted: bool, restore: bool) -> dict[str, Any]:
    repo = runner.run / ("repo-enc" if encrypted else "repo-plain")
    rmrf(repo)
    runner.wipe_tool_state()
    env = dict(runner.snapdeck_env)
    env.pop("SNAPDECK_PASSWORD", None)
    if encrypted:
        env["SNAPDECK_PASSWORD"] = PASSWORD
    init = [exe, "--repo", str(repo), "init", *(["--encrypt"] if encrypted else [])]
    res = runner.untimed(init, env=env)
    if res["rc"] != 0:
        sys.exit(f"init failed: {res.get('error')}")
    snap = runner.timed([exe, "--repo", str(repo), "snapshot", str(src), "--json"], env=env)
    if snap["rc"] != 0:
        sys.exit(f"snapshot failed: {snap.get('error')}")
    out: dict[str, Any] = {
        "encrypted": encrypted,
        "snapshot_s": snap["wall"],
        "snapshot_cpu_s": snap["cpu"],
        "snapshot_rss_mib": snap["rss_mib"],
        "stats": (last_json_object(snap["_stdout"]) or {}).get("stats"),
        "repo_bytes": sum(p.stat().st_size for p in repo.rglob("*") if p.is_file()),
    }
    # The fixed cost of one command (start-up, plus unlocking the key when encrypted).
    lst = runner.timed([exe, "--repo", str(repo), "list", "--json"], env=env)
    out["list_s"] = lst["wall"]
    if restore:
        target = runner.run / "restore-target"
        rmrf(target)
        target.mkdir(parents=True)
        r = runner.timed(
            [exe, "--repo", str(repo), "restore", "latest", "--target", str(target)], env=env
        )
        if r["rc"] != 0:
            sys.exit(f"restore failed: {r.get('error')}")
        out["restore_s"] = r["wall"]
        probe = next(p for p in sorted(src.rglob("*.py")) if p.is_file())
        out["restore_probe_ok"] = same_bytes(probe, target / probe.relative_to(src))
        rmrf(target)
    rmrf(repo)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workload", default="w1", choices=["w1", "w3", "w4"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--restore", action="store_true", help="also time a restore of each")
    ap.add_argument("--corpus", help="corpus dir (default: $CORPUS or ~/.cache/snapdeck-corpus)")
    ap.add_argument("--run-dir", help="scratch dir (default: <corpus>/run-encrypt)")
    ap.add_argument("--results", help="append JSON lines here (default: print only)")
    a = ap.parse_args()
    exe = find_snapdeck()
    if exe is None:
        sys.exit("snapdeck executable not found (run `make install`, or set SNAPDECK_BIN)")
    corpus = Path(
        a.corpus or os.environ.get("CORPUS") or Path.home() / ".cache" / "snapdeck-corpus"
    ).expanduser()
    ensure_corpus(corpus, [a.workload])
    src = corpus / WORKLOADS[a.workload]
    runner = Runner(Path(a.run_dir or corpus / "run-encrypt").resolve(), 3600)
    rows: list[dict[str, Any]] = []
    for rep in range(a.reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for enc in order:
            r = one(runner, exe, src, enc, a.restore)
            r["rep"] = rep
            rows.append(r)
            print(
                f"rep {rep} {'encrypted' if enc else 'plain    '}: snapshot {r['snapshot_s']:.2f} s "
                f"(cpu {r['snapshot_cpu_s']:.2f} s, rss {r['snapshot_rss_mib']:.0f} MiB, "
                f"repo {r['repo_bytes'] / 1e6:.1f} MB)"
                + (f", restore {r['restore_s']:.2f} s" if "restore_s" in r else ""),
                flush=True,
            )
    plain = [r for r in rows if not r["encrypted"]]
    enc_rows = [r for r in rows if r["encrypted"]]

    def med(rs: list[dict[str, Any]], k: str) -> float:
        return statistics.median(r[k] for r in rs)

    ratio = med(enc_rows, "snapshot_s") / med(plain, "snapshot_s")
    unlock = med(enc_rows, "list_s") - med(plain, "list_s")
    ratio_wo = (med(enc_rows, "snapshot_s") - unlock) / med(plain, "snapshot_s")
    print()
    print(f"### {a.workload.upper()} snapshot, unencrypted vs encrypted (median of {a.reps})")
    print()
    print(
        "| variant | snapshot s | CPU s | peak RSS MiB | repo MB | `list` s |"
        + (" restore s |" if a.restore else "")
    )
    print("|---|---|---|---|---|---|" + ("---|" if a.restore else ""))
    for name, rs in (("unencrypted", plain), ("encrypted (aes-256-gcm)", enc_rows)):
        line = (
            f"| {name} | {med(rs, 'snapshot_s'):.2f} | {med(rs, 'snapshot_cpu_s'):.2f} | "
            f"{med(rs, 'snapshot_rss_mib'):.0f} | {med(rs, 'repo_bytes') / 1e6:.1f} | "
            f"{med(rs, 'list_s'):.2f} |"
        )
        if a.restore:
            line += f" {med(rs, 'restore_s'):.2f} |"
        print(line)
    verdict = "PASS" if ratio <= GOAL else "miss"
    print(f"\nencrypted / unencrypted = {ratio:.3f} (goal ≤ {GOAL}): {verdict}")
    print(
        f"fixed cost of unlocking (encrypted - plain `list`): {unlock:.2f} s; "
        f"ratio without it: {ratio_wo:.3f}"
    )
    if a.results:
        with open(a.results, "a") as f:
            for r in rows:
                f.write(json.dumps({"workload": a.workload, **r}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
