#!/usr/bin/env python3
"""W2 repository size: snapdeck vs borg (zstd,3), with every byte accounted for.

Run from the repo root (the venv's Python: snapdeck's format module parses the repository)::

    .venv/bin/python bench/size.py                 # build both repos, print the accounting
    .venv/bin/python bench/size.py --reuse         # account the repos of the last run again
    .venv/bin/python bench/size.py --tools snapdeck --json out.json

The 16 Django 4.2.x releases of the W2 corpus are rsync'ed one after the other into one stage
directory and each tool takes one backup per version, exactly as ``bench/run.py w2`` does
(snapdeck through its CLI, with a private cache; ``borg create --compression zstd,3`` into a
repository made with ``borg init -e none``). Both tools back up the same staged state, one
after the other, so one rsync serves both. Size is ``du -sb`` of each repository.

The accounting splits snapdeck's repository into data blobs, tree blobs (each: payload, and
the per-blob framing: the 1-byte flag and the zstd frame header), pack headers and trailers,
index segments (with the part that indexes tree blobs), snapshot objects, refs, config, and the
directory inodes that ``du -sb`` counts; and borg's into file-content chunks, metadata chunks
(archive item streams, archive objects, manifest), segment entry headers and the repository
index/hints/integrity files. Borg's split needs its Python package (the interpreter of the
``borg`` script); without it only the segment-level figures are shown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (bench/run.py: corpus, du -sb, rsync, executable lookup)
import zstandard  # noqa: E402

from backend import format as fmt  # noqa: E402
from backend.ids import blob_id  # noqa: E402

MB = 1e6
TOOLS = ("snapdeck", "borg-zstd3")


# ------------------------------------------------------------------------------- building
def _snapdeck_env(run: Path) -> dict[str, str]:
    xdg = run / "xdg-snapdeck"
    env = dict(
        os.environ,
        XDG_CACHE_HOME=str(xdg / "cache"),
        XDG_DATA_HOME=str(xdg / "data"),
        XDG_CONFIG_HOME=str(xdg / "config"),
        XDG_STATE_HOME=str(xdg / "state"),
        PYTHONPYCACHEPREFIX=str(run / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _borg_env(run: Path) -> dict[str, str]:
    return dict(
        os.environ,
        BORG_BASE_DIR=str(run / "borgbase"),
        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
    )


def _run(argv: list[str], env: dict[str, str]) -> str:
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    if p.returncode not in (0, 3):
        sys.exit(f"{' '.join(argv)} failed (rc={p.returncode}): {p.stderr.strip()[-800:]}")
    return p.stdout


def _listing(repo: Path) -> set[str]:
    """Every file below a repository, relative (to see what one backup added)."""
    out = set()
    for root, _dirs, files in os.walk(repo):
        for f in files:
            out.add(os.path.relpath(os.path.join(root, f), repo))
    return out


def build(corpus: Path, run: Path, tools: list[str], exe: str | None) -> dict[str, Any]:
    """Fresh repositories, one backup per W2 version per tool; per-version sizes and files."""
    versions = sorted(p for p in (corpus / bench.WORKLOADS["w2"]).iterdir() if p.is_dir())
    stage = run / "stage"
    for p in (stage, run / "xdg-snapdeck", run / "borgbase", *(run / f"repo-{t}" for t in TOOLS)):
        bench.rmrf(p)
    stage.mkdir(parents=True)
    senv, benv = _snapdeck_env(run), _borg_env(run)
    repos = {t: run / f"repo-{t}" for t in tools}
    if "snapdeck" in tools:
        assert exe is not None
        _run([exe, "--repo", str(repos["snapdeck"]), "init"], senv)
    if "borg-zstd3" in tools:
        _run(["borg", "init", "-e", "none", str(repos["borg-zstd3"])], benv)
    per: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    seen: dict[str, set[str]] = {t: _listing(r) for t, r in repos.items()}
    for i, v in enumerate(versions, 1):
        bench.rsync_into(v, stage)
        for t in tools:
            t0 = time.monotonic()
            rec: dict[str, Any] = {"version": v.name}
            if t == "snapdeck":
                assert exe is not None
                out = _run([exe, "--json", "--repo", str(repos[t]), "snapshot", str(stage)], senv)
                obj = bench.last_json_object(out) or {}
                rec["stats"] = obj.get("stats", {})
            else:
                archive = f"{repos[t]}::s{i:03d}"
                _run(["borg", "create", "--compression", "zstd,3", archive, str(stage)], benv)
            rec["seconds"] = round(time.monotonic() - t0, 2)
            rec["repo_bytes"] = bench.du_sb(repos[t])
            now = _listing(repos[t])
            rec["new_files"] = sorted(now - seen[t])
            seen[t] = now
            per[t].append(rec)
        bench.log(
            f"  {v.name}: "
            + ", ".join(f"{t} {per[t][-1]['repo_bytes'] / MB:.2f} MB" for t in tools)
        )
    return {"versions": [v.name for v in versions], "per_version": per}


# ------------------------------------------------------------------------------- snapdeck
def _framing(stored: bytes) -> int:
    """Bytes of a stored blob that are not compressed payload: the flag, and for a zstd frame
    its header and block headers (3 bytes per block of up to 128 KiB)."""
    flag = stored[0]
    if flag == fmt.FLAG_RAW:
        return 1
    frame = stored[1:] if flag == fmt.FLAG_ZSTD else fmt.ZSTD_MAGIC + stored[1:]
    head = zstandard.frame_header_size(frame) - (0 if flag == fmt.FLAG_ZSTD else 4)
    blocks = 0
    pos = zstandard.frame_header_size(frame)
    while pos + 3 <= len(frame):
        bh = int.from_bytes(frame[pos : pos + 3], "little")
        last, btype, bsize = bh & 1, (bh >> 1) & 3, bh >> 3
        blocks += 1
        pos += 3 + (1 if btype == 1 else bsize)
        if last:
            break
    return 1 + head + 3 * blocks


def account_snapdeck(repo: Path, per_version: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every byte of a snapdeck repository, by what it is."""
    kinds: Counter[str] = Counter()
    files: Counter[str] = Counter()
    dirs = 0
    for root, _dnames, fnames in os.walk(repo):
        dirs += os.lstat(root).st_size
        for f in fnames:
            p = os.path.join(root, f)
            rel = os.path.relpath(p, repo)
            k = rel.split(os.sep)[0]
            kinds[k] += os.lstat(p).st_size
            files[k] += 1
    cfg = fmt.decode_config((repo / "config").read_bytes())
    if cfg.encrypted:
        sys.exit("bench/size.py accounts unencrypted repositories only")
    blob_kind = {fmt.BLOB_DATA: "data", fmt.BLOB_TREE: "tree"}
    b: dict[str, Counter[str]] = {"data": Counter(), "tree": Counter()}
    pack_kind: dict[str, str] = {}
    pack_versions: Counter[int] = Counter()
    blob_pack: dict[str, dict[str, int]] = {}
    for root, _dnames, fnames in os.walk(repo / "data"):
        for f in fnames:
            data = (Path(root) / f).read_bytes()
            entries = fmt.split_pack(data, hash_blob=lambda b: blob_id(cfg.id_key, b))
            kind = blob_kind[entries[0].type] if entries else "data"
            if len({e.type for e in entries}) > 1:
                kind = "mixed"
                b.setdefault("mixed", Counter())
            pack_kind[f] = kind
            pack_versions[data[-1]] += 1
            c = b[kind]
            c["packs"] += 1
            c["trailer"] += fmt.TRAILER.size
            c["header"] += len(data) - fmt.TRAILER.size - sum(e.length for e in entries)
            for e in entries:
                stored = data[e.offset : e.offset + e.length]
                bk = b[blob_kind[e.type]]
                bk["blobs"] += 1
                bk["raw"] += e.raw_length
                bk["stored"] += e.length
                bk["framing"] += _framing(stored)
                bk["compressed"] += stored[0] != fmt.FLAG_RAW
            blob_pack[f] = {
                k: sum(1 for e in entries if blob_kind[e.type] == k) for k in ("data", "tree")
            }
    # index segments, and what their tree entries cost (re-encoded apart: an estimate)
    idx: Counter[str] = Counter()
    idx_versions: Counter[int] = Counter()
    for p in sorted((repo / "index").iterdir()):
        data = p.read_bytes()
        idx_versions[data[4]] += 1
        segs = list(fmt.decode_index(data))
        idx["segments"] += 1
        idx["bytes"] += len(data)
        for _pid, es in segs:
            for e in es:
                idx[f"{blob_kind[e.type]} entries"] += 1
        for k, t in (("data", fmt.BLOB_DATA), ("tree", fmt.BLOB_TREE)):
            part = [(pid, [e for e in es if e.type == t]) for pid, es in segs]
            part = [(pid, es) for pid, es in part if es]
            if part:
                idx[f"{k} share (re-encoded alone)"] += len(fmt.encode_index(part))
    out: dict[str, Any] = {
        "total": bench.du_sb(repo),
        "files": dict(kinds),
        "file_counts": dict(files),
        "directory_inodes": dirs,
        "blobs": {k: dict(v) for k, v in b.items()},
        "index": dict(idx),
        "pack_versions": dict(pack_versions),
        "index_versions": dict(idx_versions),
    }
    if per_version:
        rows = []
        for rec in per_version:
            row: Counter[str] = Counter()
            for rel in rec["new_files"]:
                parts = rel.split(os.sep)
                size = (repo / rel).stat().st_size if (repo / rel).exists() else 0
                if parts[0] == "data":
                    kind = pack_kind.get(parts[-1], "?")
                    row[f"{kind} packs"] += size
                    for k, n in blob_pack.get(parts[-1], {}).items():
                        row[f"{k} blobs"] += n
                else:
                    row[parts[0]] += size
            st = rec.get("stats") or {}
            rows.append(
                {
                    "version": rec["version"],
                    "repo_bytes": rec["repo_bytes"],
                    "seconds": rec["seconds"],
                    "bytes_added": st.get("bytes_added"),
                    "bytes_stored": st.get("bytes_stored"),
                    **dict(row),
                }
            )
        out["per_version"] = rows
    return out


# ------------------------------------------------------------------------------- borg
_BORG_SPLIT = r"""
import json, os, struct, sys
from borg.logger import setup_logging
setup_logging()
from borg.repository import Repository
from borg.helpers import Manifest
from borg.archive import Archive
path = sys.argv[1]
sizes = {}
with Repository(path) as repo:
    manifest, key = Manifest.load(repo, (Manifest.Operation.READ,))
    meta, data = {Manifest.MANIFEST_ID}, set()
    for info in manifest.archives.list():
        a = Archive(repo, key, manifest, info.name)
        meta.add(a.id)
        meta.update(a.metadata.items)
        for item in a.iter_items():
            for c in item.get("chunks", []):
                data.add(c.id)
print(json.dumps({"meta": [i.hex() for i in meta], "data": [i.hex() for i in data]}))
"""


def _borg_python() -> str | None:
    exe = shutil.which("borg")
    if not exe:
        return None
    with open(exe, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    return first[2:].split()[0] if first.startswith("#!") else None


def account_borg(repo: Path, run: Path) -> dict[str, Any]:
    """Every byte of a borg 1.x repository: segment entries by kind, and the index files."""
    objs: dict[bytes, int] = {}
    seg: Counter[str] = Counter()
    top: Counter[str] = Counter()
    dirs = 0
    for root, _dnames, fnames in os.walk(repo):
        dirs += os.lstat(root).st_size
        for f in fnames:
            p = Path(root) / f
            if p.parent.parent.name == "data" or p.parent.name == "data":
                b = p.read_bytes()
                seg["segments"] += 1
                seg["segment magic"] += 8
                pos = 8
                while pos + 9 <= len(b):
                    _crc, size, tag = (
                        int.from_bytes(b[pos : pos + 4], "little"),
                        int.from_bytes(b[pos + 4 : pos + 8], "little"),
                        b[pos + 8],
                    )
                    if tag == 0:  # PUT: crc, size, tag, id, data
                        objs[b[pos + 9 : pos + 41]] = size - 41
                        seg["entry headers (PUT)"] += 41
                    elif tag == 1:
                        seg["DELETE entries"] += size
                    else:
                        seg["COMMIT entries"] += size
                    pos += size
            else:
                top[f.split(".")[0]] += p.stat().st_size
    out: dict[str, Any] = {
        "total": bench.du_sb(repo),
        "objects": len(objs),
        "object_bytes": sum(objs.values()),
        "segments": dict(seg),
        "files": dict(top),
        "directory_inodes": dirs,
    }
    py = _borg_python()
    if py:
        p = subprocess.run(
            [py, "-c", _BORG_SPLIT, str(repo)], env=_borg_env(run), capture_output=True, text=True
        )
        if p.returncode == 0:
            ids = json.loads(p.stdout)
            for k in ("data", "meta"):
                s = {bytes.fromhex(i) for i in ids[k]}
                out[f"{k} chunks"] = len(s)
                out[f"{k} bytes"] = sum(objs.get(i, 0) for i in s)
        else:
            out["split_error"] = p.stderr.strip()[-400:]
    info = subprocess.run(
        ["borg", "info", "--json", str(repo)], env=_borg_env(run), capture_output=True, text=True
    )
    if info.returncode == 0:
        out["borg_info"] = json.loads(info.stdout).get("cache", {}).get("stats", {})
    return out


# ------------------------------------------------------------------------------- report
def _mb(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / MB:.3f}" if n >= 1000 or n == 0 else f"{n / MB:.3f} ({n:.0f} B)"


def report(res: dict[str, Any]) -> str:
    lines: list[str] = []
    sd, bg = res.get("snapdeck"), res.get("borg-zstd3")
    if sd:
        bl = sd["blobs"]
        ix = sd["index"]
        lines += [
            "### snapdeck repository (W2, 16 versions)",
            "",
            "| part | MB | notes |",
            "|---|---|---|",
        ]
        for k in ("data", "tree"):
            c = bl.get(k, {})
            n = c.get("blobs", 0)
            lines.append(
                f"| {k} blobs: payload | {_mb(c.get('stored', 0) - c.get('framing', 0))} | "
                f"{n} blobs, {c.get('compressed', 0)} compressed, raw {_mb(c.get('raw', 0))} MB |"
            )
            lines.append(
                f"| {k} blobs: flag + zstd frame headers | {_mb(c.get('framing', 0))} | "
                f"{c.get('framing', 0) / max(1, n):.1f} B/blob |"
            )
            lines.append(
                f"| {k} packs: headers | {_mb(c.get('header', 0))} | {c.get('packs', 0)} packs, "
                f"{c.get('header', 0) / max(1, n):.1f} B/blob |"
            )
            lines.append(f"| {k} packs: trailers | {_mb(c.get('trailer', 0))} | 9 B/pack |")
        ent = ix.get("data entries", 0) + ix.get("tree entries", 0)
        lines.append(
            f"| index segments | {_mb(ix.get('bytes', 0))} | {ix.get('segments', 0)} segments, "
            f"{ix.get('bytes', 0) / max(1, ent):.1f} B/entry; tree entries alone "
            f"≈ {_mb(ix.get('tree share (re-encoded alone)'))} MB "
            "(re-encoded alone, current format) |"
        )
        for k in ("snapshots", "refs", "config", "keys", "locks"):
            if k in sd["files"]:
                lines.append(f"| {k} | {_mb(sd['files'][k])} | {sd['file_counts'][k]} objects |")
        lines.append(f"| directory inodes (du -sb) | {_mb(sd['directory_inodes'])} | |")
        lines.append(
            f"| **total (du -sb)** | **{_mb(sd['total'])}** | pack versions "
            f"{sd['pack_versions']}, index versions {sd['index_versions']} |"
        )
        if sd.get("per_version"):
            lines += [
                "",
                "| version | repo MB | +data packs MB | +data blobs | +tree packs MB | "
                "+tree blobs | +index KB | +snapshot B | bytes_added MB |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for r in sd["per_version"]:
                lines.append(
                    f"| {r['version']} | {_mb(r['repo_bytes'])} | {_mb(r.get('data packs', 0))} | "
                    f"{r.get('data blobs', 0)} | {_mb(r.get('tree packs', 0))} | "
                    f"{r.get('tree blobs', 0)} | {r.get('index', 0) / 1e3:.1f} | "
                    f"{r.get('snapshots', 0)} | {_mb(r.get('bytes_added'))} |"
                )
        lines.append("")
    if bg:
        lines += ["### borg (zstd,3) repository", "", "| part | MB | notes |", "|---|---|---|"]
        if "data bytes" in bg:
            lines.append(
                f"| file-content chunks | {_mb(bg['data bytes'])} | {bg['data chunks']} chunks |"
            )
            lines.append(
                f"| metadata chunks (item streams, archives, manifest) | {_mb(bg['meta bytes'])} | "
                f"{bg['meta chunks']} chunks |"
            )
        else:
            lines.append(
                f"| objects (content + metadata) | {_mb(bg['object_bytes'])} | "
                f"{bg['objects']} objects ({bg.get('split_error', 'no split')}) |"
            )
        for k, v in bg["segments"].items():
            if k != "segments":
                lines.append(
                    f"| segments: {k} | {_mb(v)} | {bg['segments']['segments']} segment files |"
                )
        for k, v in bg["files"].items():
            lines.append(f"| {k} | {_mb(v)} | |")
        lines.append(f"| directory inodes (du -sb) | {_mb(bg['directory_inodes'])} | |")
        lines.append(f"| **total (du -sb)** | **{_mb(bg['total'])}** | |")
        if res.get("per_version", {}).get("borg-zstd3"):
            sizes = [r["repo_bytes"] for r in res["per_version"]["borg-zstd3"]]
            lines.append("")
            lines.append(
                "borg repo MB after each version: " + ", ".join(f"{s / MB:.2f}" for s in sizes)
            )
        lines.append("")
    if sd and bg:
        lines.append(
            f"**W2 size ratio snapdeck / borg-zstd3: {sd['total'] / bg['total']:.3f}** "
            f"({sd['total'] / MB:.2f} MB vs {bg['total'] / MB:.2f} MB; goal ≤ 1)"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description="W2 repository size: snapdeck vs borg zstd,3")
    ap.add_argument(
        "--corpus", default=None, help="corpus dir (default $CORPUS or ~/.cache/snapdeck-corpus)"
    )
    ap.add_argument("--run-dir", default=None, help="scratch dir (default $CORPUS/run-size)")
    ap.add_argument("--tools", default=",".join(TOOLS), help="snapdeck,borg-zstd3 (default: both)")
    ap.add_argument("--reuse", action="store_true", help="account the repositories of the last run")
    ap.add_argument("--json", default=None, help="also write the accounting as JSON here")
    a = ap.parse_args()
    corpus = Path(
        a.corpus or os.environ.get("CORPUS") or Path.home() / ".cache" / "snapdeck-corpus"
    )
    run = Path(a.run_dir) if a.run_dir else corpus / "run-size"
    tools = [t for t in a.tools.split(",") if t]
    if bad := [t for t in tools if t not in TOOLS]:
        sys.exit(f"unknown tool(s) {bad}; choose from {', '.join(TOOLS)}")
    run.mkdir(parents=True, exist_ok=True)
    state = run / "build.json"
    if a.reuse:
        if not state.is_file():
            sys.exit(f"nothing to reuse in {run} (run without --reuse first)")
        built = json.loads(state.read_text())
    else:
        bench.ensure_corpus(corpus, ["w2"])
        exe = bench.find_snapdeck() if "snapdeck" in tools else None
        if "snapdeck" in tools and exe is None:
            sys.exit("snapdeck executable not found (run `make install`, or set SNAPDECK_BIN)")
        if "borg-zstd3" in tools and not shutil.which("borg"):
            sys.exit("borg is not on PATH: apt-get install -y borgbackup")
        if not shutil.which("rsync"):
            sys.exit("rsync is not on PATH: apt-get install -y rsync")
        bench.log(f"building W2 repositories for {', '.join(tools)} in {run} ...")
        built = build(corpus, run, tools, exe)
        built["tools"] = tools
        state.write_text(json.dumps(built))
    res: dict[str, Any] = {"per_version": built["per_version"]}
    for t in built["tools"]:
        repo = run / f"repo-{t}"
        if t == "snapdeck":
            res[t] = account_snapdeck(repo, built["per_version"].get(t))
        else:
            res[t] = account_borg(repo, run)
    print(report(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
