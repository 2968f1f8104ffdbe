"""Encryption at rest: sealed blobs and metadata, keyed ids, passwords, tampering.

Every repository here is real (on disk) and encrypted with a deliberately cheap Argon2id cost
(the key object records its parameters, so opening is cheap too); the default cost is
exercised by the CLI test of ``init --encrypt``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend import format as fmt
from backend.crypto import CHACHA20_POLY1305, OVERHEAD, Crypto
from backend.errors import IntegrityError, PasswordRequired, UsageError, WrongPassword
from backend.ids import BlobId, PackId, object_name
from backend.index import Location
from backend.keys import KdfParams, configured_password
from backend.meta import head_name
from backend.model import EntryKind
from backend.repository import Repository
from backend.storage import open_storage
from backend.store import Store
from tests.conftest import make_tree, read_tree

CHEAP = KdfParams(memory_kib=64, iterations=1, lanes=1)
PW = "correct horse battery staple"

# Distinctive plaintext that must appear nowhere in the repository's bytes.
TEXT_MARKER = b"PLAINTEXT-MARKER-QUUX"
NAME_MARKER = "secret-name-zork"
TAG_MARKER = "tag-marker-frobnitz"


def _open(path: Path, password: object = PW, cache: str = "cache2") -> Store:
    return Store.open(path / "repo", cache_dir=path / cache, password=password)  # type: ignore[arg-type]


@pytest.fixture
def enc(tmp_path: Path) -> Iterator[Store]:
    s = Store.init(tmp_path / "repo", cache_dir=tmp_path / "cache", password=PW, kdf=CHEAP)
    try:
        yield s
    finally:
        s.close()


def _source(tmp_path: Path, name: str = "src") -> Path:
    src = tmp_path / name
    make_tree(
        src,
        {
            "notes.txt": TEXT_MARKER * 2000,  # compressible: stored as zstd, then sealed
            "random.bin": os.urandom(300_000),  # incompressible: stored raw, then sealed
            NAME_MARKER: {"inner.txt": b"short " + TEXT_MARKER},
            "link": None,
        },
    )
    return src


def _all_bytes(root: Path) -> Iterator[tuple[Path, bytes]]:
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            yield p, p.read_bytes()


# ---------------------------------------------------------------- round trip


def test_round_trip_snapshot_restore_diff_on_encrypted_repo(tmp_path: Path, enc: Store) -> None:
    src = _source(tmp_path)
    first = enc.create_snapshot(src).snapshot
    (src / "notes.txt").write_bytes(b"changed")
    second = enc.create_snapshot(src).snapshot
    enc.close()

    s = _open(tmp_path)  # a fresh process's view: keys from the password, catalog rebuilt
    assert [x.id for x in s.list_snapshots()] == [first.id, second.id]
    assert s.repo.crypto is not None and s.repo.config.encrypted
    res = s.restore(s.resolve(first.id), tmp_path / "out")
    assert not res.problems
    want = read_tree(src)
    want[b"notes.txt"] = TEXT_MARKER * 2000
    assert read_tree(tmp_path / "out") == want
    changes = s.diff(s.resolve(first.id), s.resolve(second.id)).changes
    assert [(c.change, c.path) for c in changes] == [("M", b"notes.txt")]
    assert b"".join(s.read_file(s.resolve("latest"), "notes.txt")) == b"changed"
    assert s.head(str(src)) is not None and s.head(str(src)).id == second.id  # type: ignore[union-attr]
    s.close()


def test_metadata_refs_notes_heads_round_trip_sealed(tmp_path: Path, enc: Store) -> None:
    src = _source(tmp_path)
    snap = enc.create_snapshot(src).snapshot
    enc.add_ref("keep", snap)
    enc.set_tags(snap, add=[TAG_MARKER])
    enc.set_pinned(snap, True)
    enc.close()
    s = _open(tmp_path)
    got = s.get(snap.id)
    assert got.tags == (TAG_MARKER,) and got.pinned
    assert s.refs() == {"keep": snap.id}
    assert s.protection()[snap.id] == ["HEAD", "ref keep", "pinned"]
    # The HEAD object's name is keyed: it cannot be matched against a guessed source path.
    names = [i.name for i in s.storage.list("refs")]
    assert head_name(snap.host, snap.source) not in names
    assert any(n.startswith("heads/") for n in names)
    for n in names:
        assert s.storage.get("refs", n)[:4] == fmt.REF_MAGIC_SEALED
    s.close()


def test_chacha20_poly1305_repository_round_trips(tmp_path: Path) -> None:
    s = Store.init(
        tmp_path / "repo",
        cache_dir=tmp_path / "c",
        password=PW,
        kdf=CHEAP,
        cipher=CHACHA20_POLY1305,
    )
    src = _source(tmp_path)
    s.create_snapshot(src)
    s.close()
    s = _open(tmp_path)
    assert s.repo.config.cipher == CHACHA20_POLY1305
    s.restore(s.resolve("latest"), tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    s.close()


# ---------------------------------------------------------------- nothing readable at rest


def test_no_plaintext_and_no_names_anywhere_in_the_repository(tmp_path: Path, enc: Store) -> None:
    src = _source(tmp_path)
    snap = enc.create_snapshot(src).snapshot
    enc.set_tags(snap, add=[TAG_MARKER])
    enc.close()
    needles = [
        TEXT_MARKER,
        TEXT_MARKER[:12],
        NAME_MARKER.encode(),
        TAG_MARKER.encode(),
        str(src).encode(),
        b"notes.txt",
        b"random.bin",
    ]
    random_part = (src / "random.bin").read_bytes()
    files = list(_all_bytes(tmp_path / "repo"))
    assert any(p.parent.name == "keys" for p, _ in files) and len(files) >= 5
    for path, data in files:
        for n in needles:
            assert n not in data, f"{n!r} readable in {path}"
        assert random_part[1000:1032] not in data, f"file content readable in {path}"
    config = json.loads((tmp_path / "repo" / "config").read_bytes())
    assert "id_key" not in config and config["chunker"]["seed"] == 0
    assert config["encryption"] == {"cipher": "aes-256-gcm"} and config["version"] == 2


def test_same_content_in_two_encrypted_repositories_has_unrelated_ids(tmp_path: Path) -> None:
    src = _source(tmp_path)
    data_ids = []
    packs = []
    for name in ("r1", "r2"):
        s = Store.init(tmp_path / name, cache_dir=tmp_path / f"c{name}", password=PW, kdf=CHEAP)
        snap = s.create_snapshot(src).snapshot
        notes = s.entry(snap, "notes.txt")
        assert notes is not None and notes.kind is EntryKind.FILE
        data_ids.append((snap.tree, notes.content, s.repo.config.chunker.seed))
        packs.append({i.name for i in s.storage.list("data")})
        s.close()
    (t1, c1, seed1), (t2, c2, seed2) = data_ids
    assert t1 != t2 and not set(c1) & set(c2)
    assert seed1 != seed2  # chunker seeds derived from different master keys
    assert not packs[0] & packs[1]


# ---------------------------------------------------------------- tampering


def _blob_location(s: Store, path: str) -> tuple[BlobId, Location]:
    e = s.entry(s.resolve("latest"), path)
    assert e is not None and e.content
    bid = e.content[0]
    return bid, s.repo.locate(bid)


def _pack_file(repo_dir: Path, pack: str) -> Path:
    hits = list((repo_dir / "data").rglob(pack))
    assert len(hits) == 1
    return hits[0]


def _flip(path: Path, offset: int) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


def test_a_flipped_bit_in_a_sealed_blob_is_an_integrity_error(tmp_path: Path, enc: Store) -> None:
    src = _source(tmp_path)
    enc.create_snapshot(src)
    _bid, loc = _blob_location(enc, "random.bin")
    enc.close()
    _flip(_pack_file(tmp_path / "repo", loc.pack), loc.offset + loc.length // 2)
    s = _open(tmp_path)
    with pytest.raises(IntegrityError, match="does not authenticate"):
        b"".join(s.read_file(s.resolve("latest"), "random.bin"))
    res = s.restore(s.resolve("latest"), tmp_path / "out")
    assert [p.path for p in res.problems] == ["random.bin"]
    assert not (tmp_path / "out" / "random.bin").exists()  # never restored as content
    assert (tmp_path / "out" / "notes.txt").read_bytes() == TEXT_MARKER * 2000
    s.close()


def test_swapped_sealed_blobs_are_detected_by_the_associated_data(
    tmp_path: Path, enc: Store
) -> None:
    # Two incompressible files of one size: their sealed blobs have the same length, so
    # swapping their bytes inside the pack keeps every offset valid.
    src = tmp_path / "src"
    make_tree(src, {"a.bin": os.urandom(5000), "b.bin": os.urandom(5000)})
    enc.create_snapshot(src)
    _, la = _blob_location(enc, "a.bin")
    _, lb = _blob_location(enc, "b.bin")
    assert la.pack == lb.pack and la.length == lb.length
    enc.close()
    pack = _pack_file(tmp_path / "repo", la.pack)
    data = bytearray(pack.read_bytes())
    a = data[la.offset : la.offset + la.length]
    b = data[lb.offset : lb.offset + lb.length]
    data[la.offset : la.offset + la.length] = b
    data[lb.offset : lb.offset + lb.length] = a
    os.chmod(pack, stat.S_IRUSR | stat.S_IWUSR)
    pack.write_bytes(bytes(data))
    s = _open(tmp_path)
    for name in ("a.bin", "b.bin"):
        with pytest.raises(IntegrityError, match="does not authenticate"):
            b"".join(s.read_file(s.resolve("latest"), name))
    s.close()


def test_a_blob_opened_under_another_id_fails(tmp_path: Path, enc: Store) -> None:
    repo = enc.repo
    one, two = b"one" * 100, b"two" * 100
    id1, id2 = repo.hash_blob(one), repo.hash_blob(two)
    sealed = repo.crypto.seal_blob(id1, fmt.encode_blob(one, None))  # type: ignore[union-attr]
    assert repo.open_stored_blob(id1, sealed, len(one)) == one
    with pytest.raises(IntegrityError, match="does not authenticate"):
        repo.open_stored_blob(id2, sealed, len(one))
    assert len(sealed) == 1 + len(one) + OVERHEAD


def test_sealed_pack_header_index_and_snapshot(tmp_path: Path, enc: Store) -> None:
    src = _source(tmp_path)
    snap = enc.create_snapshot(src).snapshot
    repo = enc.repo
    pack = next(iter(repo.storage.list("data"))).name
    data = repo.storage.get("data", pack)
    assert data[-5:-1] == fmt.PACK_MAGIC_SEALED
    with pytest.raises(IntegrityError, match="encrypted"):
        fmt.split_pack(data)  # the plain format reader cannot see inside
    entries = repo.pack_entries(data)
    assert entries == repo.read_pack_header(pack)
    assert all(
        repo.open_stored_blob(e.id, data[e.offset : e.offset + e.length], e.raw_length)
        for e in entries
    )
    seg = repo.index_segments()[0]
    raw = repo.storage.get("index", seg)
    assert raw[:4] == fmt.INDEX_MAGIC_SEALED
    assert repo.decode_index_segment(raw) == repo.read_index_segment(seg)
    sraw = repo.storage.get("snapshots", snap.id)
    assert sraw[:4] == fmt.SNAPSHOT_MAGIC_SEALED and object_name(sraw) == snap.id
    assert repo.decode_snapshot_object(snap.id, sraw).tree == snap.tree
    # A damaged header, index or snapshot never parses.
    bad = bytearray(data)
    bad[-20] ^= 1
    with pytest.raises(IntegrityError, match="does not authenticate"):
        repo.pack_entries(bytes(bad))
    with pytest.raises(IntegrityError, match="does not authenticate"):
        repo.decode_index_segment(raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:])
    # A snapshot sealed by another repository (other keys) under its right name is refused.
    other = Store.init(tmp_path / "other", password=PW, kdf=CHEAP)
    foreign = other.repo.crypto.seal(b"{}", b"snapdeck/snapshot")  # type: ignore[union-attr]
    blob = fmt.wrap_sealed(fmt.SNAPSHOT_MAGIC_SEALED, foreign)
    with pytest.raises(IntegrityError, match="does not authenticate"):
        repo.decode_snapshot_object(object_name(blob), blob)
    other.close()


def test_a_plain_snapshot_planted_in_an_encrypted_repository_is_refused(
    tmp_path: Path, enc: Store
) -> None:
    src = _source(tmp_path)
    snap = enc.create_snapshot(src).snapshot
    plain = fmt.encode_snapshot(snap)
    enc.storage.put("snapshots", object_name(plain), plain)
    enc.close()
    s = _open(tmp_path)
    assert [x.id for x in s.list_snapshots()] == [snap.id]  # the planted one is skipped
    with pytest.raises(IntegrityError):
        s.repo.load_snapshot(object_name(plain))
    s.close()


# ---------------------------------------------------------------- passwords and keys


def test_password_required_wrong_password_and_lazy_provider(tmp_path: Path, enc: Store) -> None:
    enc.close()
    with pytest.raises(PasswordRequired, match="encrypted: set SNAPDECK_PASSWORD") as info:
        _open(tmp_path, password=None)
    assert info.value.exit_code == 15
    with pytest.raises(PasswordRequired):
        _open(tmp_path, password=lambda: None)
    with pytest.raises(WrongPassword, match="wrong password") as info2:
        _open(tmp_path, password="not it")
    assert info2.value.exit_code == 15
    assert "\n" not in str(info2.value)
    _open(tmp_path, password=PW.encode()).close()
    # An unencrypted repository never asks.
    calls: list[int] = []
    Store.init(tmp_path / "plain").close()
    s = Store.open(tmp_path / "plain", password=lambda: calls.append(1) or "x")  # type: ignore[func-returns-value]
    assert calls == [] and s.repo.crypto is None
    s.close()


def test_change_password_rewraps_without_rewriting_data(tmp_path: Path, enc: Store) -> None:
    src = _source(tmp_path)
    enc.create_snapshot(src)
    repo_dir = tmp_path / "repo"
    before = {
        p: d for p, d in _all_bytes(repo_dir) if p.parent.name != "keys" and "locks" not in p.parts
    }
    key_before = list((repo_dir / "keys").iterdir())
    name = enc.repo.change_password("new secret", kdf=CHEAP)
    enc.close()
    assert list((repo_dir / "keys").iterdir()) == key_before  # replaced in place
    assert key_before[0].name == name
    after = {
        p: d for p, d in _all_bytes(repo_dir) if p.parent.name != "keys" and "locks" not in p.parts
    }
    assert {p: d for p, d in after.items() if "refs" not in p.parts} == {
        p: d for p, d in before.items() if "refs" not in p.parts
    }
    with pytest.raises(WrongPassword):
        _open(tmp_path, password=PW)
    s = _open(tmp_path, password="new secret")
    s.restore(s.resolve("latest"), tmp_path / "out")
    assert read_tree(tmp_path / "out") == read_tree(src)
    s.close()


def test_unencrypted_repository_cannot_change_password(store: Store) -> None:
    with pytest.raises(UsageError, match="not encrypted"):
        store.repo.change_password("x")


def test_config_replaced_by_a_plain_one_is_refused(tmp_path: Path, enc: Store) -> None:
    """A downgrade: someone swaps the readable config for an unencrypted one."""
    enc.close()
    Store.init(tmp_path / "plain").close()
    plain_config = (tmp_path / "plain" / "config").read_bytes()
    cfg = tmp_path / "repo" / "config"
    os.chmod(cfg, stat.S_IRUSR | stat.S_IWUSR)
    cfg.write_bytes(plain_config)
    with pytest.raises(IntegrityError, match="config was altered"):
        _open(tmp_path, password=None)


def test_config_cipher_edit_is_detected(tmp_path: Path, enc: Store) -> None:
    enc.close()
    cfg = tmp_path / "repo" / "config"
    doc = json.loads(cfg.read_bytes())
    doc["encryption"]["cipher"] = CHACHA20_POLY1305
    os.chmod(cfg, stat.S_IRUSR | stat.S_IWUSR)
    cfg.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="config was altered"):
        _open(tmp_path)


def test_a_stray_key_from_an_interrupted_init_is_ignored(tmp_path: Path, enc: Store) -> None:
    enc.close()
    other = Store.init(tmp_path / "other", password=PW, kdf=CHEAP)
    stray = next(iter(other.storage.list("keys"))).name
    other.close()
    data = (tmp_path / "other" / "keys" / stray).read_bytes()
    (tmp_path / "repo" / "keys" / ("0" * 32)).write_bytes(data)  # sorts first: tried first
    s = _open(tmp_path)  # same password, other repository id: skipped, the real key opens
    assert s.repo.key_name != "0" * 32
    s.close()


def test_crypto_keys_are_per_purpose_and_per_repository() -> None:
    master = bytes(range(32))
    a, b = Crypto(master, "repo-a"), Crypto(master, "repo-b")
    assert a.id_key != b.id_key
    assert len({a.id_key, a.ref_name_key, a.master}) == 3
    sealed = a.seal(b"x", b"snapdeck/index")
    assert a.open(sealed, b"snapdeck/index", "it") == b"x"
    with pytest.raises(IntegrityError):
        a.open(sealed, b"snapdeck/snapshot", "it")  # purpose bound
    with pytest.raises(IntegrityError):
        b.open(sealed, b"snapdeck/index", "it")  # repository bound
    with pytest.raises(IntegrityError):
        a.open(b"short", b"snapdeck/index", "it")


def test_unknown_cipher_and_empty_password_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown cipher"):
        Store.init(tmp_path / "r1", password=PW, cipher="rot13")
    with pytest.raises(UsageError, match="empty"):
        Store.init(tmp_path / "r2", password="")
    assert not (tmp_path / "r1" / "config").exists()


# ---------------------------------------------------------------- password sources


def test_password_sources_and_their_order(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"from-file\nsecond line\n")
    cmd = f"{sys.executable} -c \"print('from-command')\""
    env = {"SNAPDECK_PASSWORD": "from-env"}
    assert configured_password(environ={}) is None
    assert configured_password(environ=env) == b"from-env"
    assert configured_password(environ={**env, "SNAPDECK_PASSWORD_FILE": str(f)}) == b"from-file"
    assert configured_password(environ={**env, "SNAPDECK_PASSWORD_COMMAND": cmd}) == b"from-command"
    assert configured_password(file=str(f), environ={"SNAPDECK_PASSWORD_COMMAND": cmd}) == (
        b"from-file"
    )
    assert configured_password(command=cmd, environ=env) == b"from-command"
    with pytest.raises(UsageError, match="not both"):
        configured_password(file=str(f), command=cmd, environ={})
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(UsageError, match="is empty"):
        configured_password(file=str(tmp_path / "empty"), environ={})
    with pytest.raises(UsageError, match="cannot read password file"):
        configured_password(file=str(tmp_path / "missing"), environ={})
    with pytest.raises(UsageError, match="exited with status 3"):
        configured_password(command=f"{sys.executable} -c 'raise SystemExit(3)'", environ={})
    with pytest.raises(UsageError, match="failed"):
        configured_password(command="/nonexistent/askpass", environ={})


def test_storage_view_without_the_key_shows_only_config_and_key(tmp_path: Path, enc: Store) -> None:
    """Without the password one can tell the repository is encrypted, and nothing more."""
    enc.create_snapshot(_source(tmp_path))
    enc.close()
    storage = open_storage(str(tmp_path / "repo"))
    cfg = fmt.decode_config(storage.get("config", "config"))
    assert cfg.encrypted and cfg.id_key == b""
    with pytest.raises(PasswordRequired):
        Repository.open(storage)
    storage.close()


def test_subprocess_password_command_gets_no_stdin(tmp_path: Path) -> None:
    # The command must not steal the terminal or a piped archive: stdin is /dev/null.
    cmd = f"{sys.executable} -c \"import sys; print(repr(sys.stdin.read()) + 'x')\""
    assert configured_password(command=cmd, environ={}) == b"''x"


def test_check_read_data_on_an_encrypted_repository(tmp_path: Path, enc: Store) -> None:
    from backend.check import check_repository

    src = _source(tmp_path)
    enc.create_snapshot(src)
    clean = check_repository(enc.repo, read_data=True)
    assert clean.ok and clean.blobs_read >= 3, clean.errors
    _bid, loc = _blob_location(enc, "random.bin")
    enc.close()
    _flip(_pack_file(tmp_path / "repo", loc.pack), loc.offset + 40)
    s = _open(tmp_path)
    found = check_repository(s.repo, read_data=True)
    assert not found.ok
    assert any("random.bin" in p for e in found.errors for p in e.paths), found.errors
    s.close()


def test_plain_index_and_pack_headers_are_refused_in_an_encrypted_repo(
    tmp_path: Path, enc: Store
) -> None:
    """Objects written without sealing (by a tool that bypassed the repository) are garbage."""
    plain = Store.init(tmp_path / "plain")
    plain.create_snapshot(_source(tmp_path))
    seg = plain.repo.index_segments()[0]
    pack = next(iter(plain.storage.list("data"))).name
    seg_bytes = plain.storage.get("index", seg)
    pack_bytes = plain.storage.get("data", pack)
    with pytest.raises(IntegrityError, match="not encrypted, in an encrypted repository"):
        enc.repo.decode_index_segment(seg_bytes)
    with pytest.raises(IntegrityError, match="not encrypted, in an encrypted repository"):
        enc.repo.pack_entries(pack_bytes)
    enc.storage.put("data", pack, pack_bytes)
    with pytest.raises(IntegrityError, match="not encrypted, in an encrypted repository"):
        enc.repo.read_pack_header(PackId(pack))
    # and the other way round
    enc.create_snapshot(_source(tmp_path, "src2"))
    enc_pack = next(i.name for i in enc.storage.list("data") if i.name != pack)
    with pytest.raises(IntegrityError, match="encrypted"):
        plain.repo.pack_entries(enc.storage.get("data", enc_pack))
    plain.close()


def test_an_unlocked_config_never_serialises_its_derived_secrets(enc: Store) -> None:
    cfg = enc.repo.config  # holds the derived id key and chunker seed in memory
    assert cfg.id_key and cfg.chunker.seed
    doc = json.loads(fmt.encode_config(cfg))
    assert "id_key" not in doc and doc["chunker"]["seed"] == 0
    assert fmt.decode_config(fmt.encode_config(cfg)).cipher == "aes-256-gcm"
