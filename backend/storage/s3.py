"""Object storage in an S3-compatible bucket (layer: storage).

Any S3-compatible service works (AWS S3, MinIO, Ceph RGW, SeaweedFS). The client is obstore
(Rust ``object_store``): it releases the GIL for every request, signs with SigV4, and retries
5xx, throttling and dropped connections with exponential backoff and jitter.

Object keys under ``s3://bucket/prefix`` are the local layout's paths::

    prefix/config   prefix/keys/<n>   prefix/data/<ab>/<n>   prefix/index/<n>
    prefix/snapshots/<n>   prefix/locks/<n>   prefix/refs/<a>/<b>

Invariants:

* An object is visible only once complete. Objects go in one PUT (a pack's parts are sent as
  they are, never joined into one buffer); objects of 64 MiB and more go as a multipart
  upload streamed from the parts (parts upload in parallel), which S3 makes visible only at
  ``CompleteMultipartUpload``. A client or server that dies midway leaves nothing under the
  name.
* ``put(..., overwrite=False)`` of a single-PUT object sends ``If-None-Match: *``: the server
  creates the object only if the key is free, so of several racing writers exactly one wins
  (lock objects rely on this). When a retried create finds the name taken by identical bytes
  (our own first attempt whose reply was lost), it counts as written.
* ``replace_if`` sends ``If-Match: <etag>`` (compare-and-swap).
* Small ranged reads of packs fetch the aligned 4 MiB window around them and keep the last
  few windows (32 MiB at most, read-ahead included), so a restore pays neither one round
  trip per small blob nor a second download of the same bytes; a sequential walk reads the
  next window ahead in the background, and ``prefetch`` lets a reader ask for ranges early.
* A process forked after S3 requests were made gets a clear error from any request instead
  of waiting forever (obstore's runtime threads do not survive ``fork``).
* Every client error becomes a ``StoreError`` with a one-line message.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from backend.errors import (
    ObjectExists,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    UsageError,
)
from backend.storage.base import Data, ObjectInfo, check_prefix  # issue 4: check_prefix
from backend.storage.local import check_address

if TYPE_CHECKING:
    from backend.config import S3Config

__all__ = ["S3Settings", "S3Storage", "parse_s3_location"]

logger = logging.getLogger(__name__)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_ERROR_CODE = re.compile(r"<Code>([^<]+)</Code>")
_STATUS = re.compile(r"status code: (\d{3})")

ENDPOINT_ENV = ("SNAPDECK_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Environment variables naming the endpoint, strongest first (over ``[s3] endpoint``)."""
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
"""Environment variables naming the region, strongest first (over ``[s3] region``)."""
DEFAULT_REGION = "us-east-1"

READ_AHEAD = 4 * 1024 * 1024
"""Window size: a short ranged pack read fetches the aligned window of this size around it
(clipped at the object's end)."""
READ_CACHE_BYTES = 32 * 1024 * 1024
"""At most this many bytes of windows are kept (and being fetched)."""
READ_AHEAD_WINDOWS = 1
"""Sequential read-ahead: reading window i of a pack right after window i-1 (or a window
that was read ahead) fetches windows i+1.. i+this in the background. A restore walks packs
roughly in the order the snapshot wrote them; a lone read (a file preview) fetches nothing
more."""
READ_AHEAD_THREADS = 2
"""Background window fetches at once (per storage object)."""
MULTIPART_MIN = 64 * 1024 * 1024
"""Packs at least this big are sent as a multipart upload. Smaller ones (every pack of the
default 16 MiB target) go in one conditional PUT: one request instead of HEAD + create +
parts + complete, create-if-absent done by the server, nothing left behind by a crash, and
as fast on SeaweedFS (measured: a multipart upload of a 16 MiB pack was no faster)."""
PART_SIZE = 8 * 1024 * 1024
"""Multipart part size (S3's minimum is 5 MiB for every part but the last)."""
PART_CONCURRENCY = 4
"""Parts of one upload in flight at once."""
UPLOAD_THREADS = 2
"""Pack uploads a repository runs in parallel, in background threads (measured: bench/s3.py)."""
COMPARE_LIMIT = 1024 * 1024
"""A create that finds its name taken compares contents only for objects up to this size."""


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Settings:
    """How to reach an S3-compatible service."""

    endpoint: str = ""
    """Endpoint URL (``http://127.0.0.1:8333``); empty: AWS for the region."""
    region: str = DEFAULT_REGION
    """Region name (used for signing)."""
    path_style: bool = True
    """``endpoint/bucket/key`` (true) rather than ``bucket.endpoint/key``."""
    access_key_id: str = ""
    """Static access key id; empty: obstore's own credential chain (instance roles, …)."""
    secret_access_key: str = ""
    """Static secret key."""
    session_token: str = ""
    """Temporary session token (``AWS_SESSION_TOKEN``)."""
    retry_timeout_s: float = 60.0
    """Give up retrying a failing request after this long."""
    max_retries: int = 8
    """Retries per request (5xx, throttling, connection errors)."""
    request_timeout_s: float = 300.0
    """Longest a single request may take (a 64 MiB pack on a slow link)."""

    @classmethod
    def resolve(
        cls, config: S3Config | None = None, env: Mapping[str, str] | None = None
    ) -> S3Settings:
        """Settings from the environment, then ``[s3]`` of the config file, then defaults.

        Environment variables win over the config file (as for the AWS CLI and restic):
        ``SNAPDECK_S3_ENDPOINT``/``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``,
        ``AWS_REGION``/``AWS_DEFAULT_REGION``, and the pair ``AWS_ACCESS_KEY_ID`` +
        ``AWS_SECRET_ACCESS_KEY`` (+ ``AWS_SESSION_TOKEN``).
        """
        environ: Mapping[str, str] = os.environ if env is None else env

        def first(names: tuple[str, ...], fallback: str) -> str:
            for name in names:
                value = environ.get(name, "").strip()
                if value:
                    return value
            return fallback

        endpoint = first(ENDPOINT_ENV, config.endpoint if config else "")
        region = first(REGION_ENV, (config.region if config else "") or DEFAULT_REGION)
        key_id = environ.get("AWS_ACCESS_KEY_ID", "")
        secret = environ.get("AWS_SECRET_ACCESS_KEY", "")
        token = environ.get("AWS_SESSION_TOKEN", "")
        if not (key_id and secret) and config is not None:
            key_id, secret, token = config.access_key_id, config.secret_access_key, ""
        return cls(
            endpoint=endpoint.rstrip("/"),
            region=region,
            path_style=config.path_style if config is not None else True,
            access_key_id=key_id,
            secret_access_key=secret,
            session_token=token,
        )


def parse_s3_location(rest: str) -> tuple[str, str]:
    """Split what follows ``s3://`` into bucket and prefix (no leading/trailing '/').

    Raises:
        UsageError: A missing or invalid bucket name, or an invalid prefix.
    """
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UsageError(
            f"invalid S3 bucket name {bucket!r} in s3://{rest}: use s3://bucket/prefix "
            "(3-63 characters: a-z, 0-9, '.', '-')"
        )
    if prefix and not all(_SEGMENT.match(seg) for seg in prefix.split("/")):
        raise UsageError(
            f"invalid S3 prefix {prefix!r}: use segments of [A-Za-z0-9._-] joined by '/'"
        )
    return bucket, prefix


def _one_line(exc: BaseException) -> str:
    """The useful first line of an obstore error, without its debug dump."""
    text = str(exc)
    code = _ERROR_CODE.search(text)
    first = text.split("\n", 1)[0].strip()
    first = first.split(": <?xml", 1)[0]
    if code and code.group(1) not in first:
        first = f"{first} ({code.group(1)})"
    return first[:300] or type(exc).__name__


def _status(exc: BaseException) -> int | None:
    match = _STATUS.search(str(exc))
    return int(match.group(1)) if match else None


_runtime_started = False
"""Whether this process has sent a request (which starts obstore's runtime threads)."""
_forked = False
"""Set in a child forked after the runtime started: its threads do not survive ``fork``, so
a request from the child would wait forever (any S3Storage, old or new)."""


def _after_fork_in_child() -> None:
    global _forked
    _forked = _forked or _runtime_started


os.register_at_fork(after_in_child=_after_fork_in_child)


class _ReadCache:
    """Aligned windows of immutable packs, bounded by total bytes, fetched once, read ahead.

    A window is ``[i * size, (i + 1) * size)`` of one object, so windows never overlap and
    every byte is downloaded once while it stays cached. Threads asking for a window that is
    being fetched wait for that fetch instead of starting their own. Windows being fetched
    count against the capacity, so the cache (with the read-ahead) stays within it.

    Sequential read-ahead: reading window i when window i-1 is cached, or when window i was
    itself read ahead, fetches windows i+1..i+ahead (within the object's known size) on a
    couple of background threads; a walk through a pack then finds its next window there.

    Args:
        capacity: Bytes of windows kept at most.
        window: Window size.
        fetch: ``fetch(key, start, length) -> (bytes, object size)``; raises on errors.
        ahead: Windows fetched in the background after a sequential window read.
        threads: Background fetches at once.
    """

    def __init__(
        self,
        capacity: int,
        window: int,
        fetch: Callable[[str, int, int], tuple[memoryview, int]],
        *,
        ahead: int = READ_AHEAD_WINDOWS,
        threads: int = READ_AHEAD_THREADS,
    ) -> None:
        self.capacity = capacity
        self.window = window
        self._fetch = fetch
        self.ahead = ahead if window > 0 else 0
        self.threads = threads
        self._lock = threading.Lock()
        self._windows: OrderedDict[tuple[str, int], memoryview] = OrderedDict()
        self._pending: dict[tuple[str, int], threading.Event] = {}
        self._sizes: dict[str, int] = {}
        self._ahead_loaded: set[tuple[str, int]] = set()
        """Windows fetched in the background and not read yet."""
        self._size = 0
        self._background = 0
        self._pool: ThreadPoolExecutor | None = None

    def read(self, key: str, offset: int, length: int) -> bytes | None:
        """``length`` bytes of ``key`` from ``offset`` out of at most two windows, or None
        when the range needs more (the caller reads it directly)."""
        w = self.window
        first, last = offset // w, (offset + length - 1) // w
        if last - first > 1 or 2 * w > self.capacity:
            return None
        size = self._sizes.get(key)
        if size is not None and offset >= size:
            return b""
        with self._lock:
            streaming = (key, first - 1) in self._windows or (key, first) in self._ahead_loaded
            self._ahead_loaded.discard((key, first))
        out = []
        for i in range(first, last + 1):
            data = self._get(key, i)
            lo = max(offset, i * w) - i * w
            hi = min(offset + length, (i + 1) * w) - i * w
            out.append(data[lo:hi])
        if streaming:
            self._read_ahead(key, last)
        if len(out) == 1:
            return bytes(out[0])
        return b"".join(out)

    def prefetch(self, key: str, offset: int, length: int) -> None:
        """Start fetching the windows of a range that is about to be read (a hint)."""
        w = self.window
        if w <= 0 or length <= 0:
            return
        for i in range(offset // w, (offset + length - 1) // w + 1):
            if not self._start_background(key, i):
                break

    def _get(self, key: str, i: int) -> memoryview:
        """Window ``i`` of ``key``, from the cache or fetched in this thread."""
        wkey = (key, i)
        while True:
            with self._lock:
                data = self._windows.get(wkey)
                if data is not None:
                    self._windows.move_to_end(wkey)
                    return data
                waiting = self._pending.get(wkey)
                if waiting is None:
                    done = self._pending[wkey] = threading.Event()
                    self._make_room_locked()
                    break
            waiting.wait()  # then look again (the fetch may have failed: try ourselves)
        return self._load(wkey, done)

    def _load(self, wkey: tuple[str, int], done: threading.Event) -> memoryview:
        key, i = wkey
        try:
            data, size = self._fetch(key, i * self.window, self.window)
            with self._lock:
                self._sizes[key] = size
                self._windows[wkey] = data
                self._size += len(data)
            return data
        finally:
            with self._lock:
                self._pending.pop(wkey, None)
            done.set()

    def _make_room_locked(self) -> None:
        """Evict the least recently used windows until those kept plus those being fetched
        fit in the capacity."""
        while self._windows and self._size + self.window * len(self._pending) > self.capacity:
            k, dropped = self._windows.popitem(last=False)
            self._size -= len(dropped)
            self._ahead_loaded.discard(k)

    def _read_ahead(self, key: str, i: int) -> None:
        for j in range(i + 1, i + 1 + self.ahead):
            if not self._start_background(key, j):
                break

    def _start_background(self, key: str, i: int) -> bool:
        """Fetch window ``i`` of ``key`` in the background unless it is cached, being
        fetched, past the object's end, or the cache is busy; False to stop looking further."""
        wkey = (key, i)
        with self._lock:
            size = self._sizes.get(key)
            if size is not None and i * self.window >= size:
                return False
            if wkey in self._windows or wkey in self._pending:
                return True
            if self._background >= self.threads or (
                self.window * (len(self._pending) + 1) > self.capacity
            ):
                return False
            done = self._pending[wkey] = threading.Event()
            self._make_room_locked()
            self._background += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="s3-read-ahead")
            pool = self._pool
        try:
            pool.submit(self._background_load, wkey, done)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._pending.pop(wkey, None)
                self._background -= 1
            done.set()
            return False
        return True

    def _background_load(self, wkey: tuple[str, int], done: threading.Event) -> None:
        try:
            self._load(wkey, done)
            with self._lock:
                if wkey in self._windows:
                    self._ahead_loaded.add(wkey)
        except Exception as exc:  # a reader that needs it fetches it again and sees the error
            logger.debug("read-ahead of %s window %d failed: %s", wkey[0], wkey[1], exc)
        finally:
            with self._lock:
                self._background -= 1

    def forget(self, key: str) -> None:
        """Drop the cached windows of ``key`` (it was rewritten or deleted)."""
        with self._lock:
            for k in [k for k in self._windows if k[0] == key]:
                self._size -= len(self._windows.pop(k))
                self._ahead_loaded.discard(k)
            self._sizes.pop(key, None)

    def close(self) -> None:
        """Drop every window and stop the background threads (a reader still waiting for a
        cancelled fetch is woken up and fetches for itself)."""
        with self._lock:
            self._windows.clear()
            self._ahead_loaded.clear()
            self._sizes.clear()
            self._size = 0
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            stranded = list(self._pending.values())
            self._pending.clear()
            self._background = 0
        for event in stranded:
            event.set()


class S3Storage:
    """An ``ObjectStorage`` in an S3 bucket, under an optional key prefix.

    Thread-safe: one HTTP connection pool (keep-alive, reused) serves every thread, and
    requests run without the GIL. The repository uploads packs from ``upload_threads``
    background threads (``backend/uploader.py``), so at most that many packs are in flight.

    Args:
        bucket: The bucket name.
        prefix: Key prefix of the repository inside the bucket ("" for the bucket root).
        settings: Endpoint, region and credentials (``S3Settings.resolve()`` by default).
        read_ahead: Size of the window a short pack read fetches (0: exact ranges only).
    """

    location: str
    """``s3://bucket/prefix``."""
    upload_threads = UPLOAD_THREADS
    """Packs the repository uploads at once (its background uploader reads this)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: S3Settings | None = None,
        read_ahead: int = READ_AHEAD,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = settings if settings is not None else S3Settings.resolve()
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.read_ahead = read_ahead
        self.requests: Counter[str] = Counter()
        """Requests sent, by operation (``GET``, ``PUT``, ``LIST``…) and by operation and kind
        (``GET snapshots``); for tests and profiling."""
        self._count_lock = threading.Lock()
        self._cache = self._new_cache()
        s = self.settings
        config: dict[str, Any] = {
            "region": s.region,
            "virtual_hosted_style_request": not s.path_style,
            "conditional_put": "etag",
        }
        if s.endpoint:
            config["endpoint"] = s.endpoint
        if s.access_key_id and s.secret_access_key:
            config["access_key_id"] = s.access_key_id
            config["secret_access_key"] = s.secret_access_key
            if s.session_token:
                config["session_token"] = s.session_token
        client: dict[str, Any] = {
            "allow_http": s.endpoint.startswith("http://"),
            "timeout": timedelta(seconds=s.request_timeout_s),
            "connect_timeout": timedelta(seconds=5),
        }
        retry: dict[str, Any] = {
            "max_retries": s.max_retries,
            "retry_timeout": timedelta(seconds=s.retry_timeout_s),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=5),
                "base": 2,
            },
        }
        self._options = (config, client, retry)
        self._store = self._make_store(self.prefix)

    def _make_store(self, prefix: str) -> Any:
        from obstore.store import S3Store

        config, client, retry = self._options
        try:
            return S3Store(
                self.bucket,
                prefix=prefix or None,
                config=cast("Any", config),
                client_options=cast("Any", client),
                retry_config=cast("Any", retry),
            )
        except Exception as exc:  # obstore raises on malformed settings
            raise UsageError(f"invalid S3 settings for {self.location}: {_one_line(exc)}") from None

    def __repr__(self) -> str:
        return f"S3Storage({self.location!r}, endpoint={self.settings.endpoint or 'AWS'!r})"

    # -- helpers -------------------------------------------------------------------------------

    def _count(self, op: str, kind: str = "") -> None:
        """Count a request about to be sent (every request path calls this first)."""
        global _runtime_started
        if _forked:
            raise StoreError(
                f"cannot reach {self.location} from a process forked after S3 requests were "
                "made (the S3 client's threads do not survive fork): read in the parent"
            )
        _runtime_started = True
        with self._count_lock:
            self.requests[op] += 1
            if kind:
                self.requests[f"{op} {kind}"] += 1

    @staticmethod
    def _key(kind: str, name: str) -> str:
        if kind == "config":
            return "config"
        if kind == "data":
            return f"data/{name[:2]}/{name}"
        return f"{kind}/{name}"

    def _where(self) -> str:
        return f"{self.location} at {self.settings.endpoint or 'AWS S3'}"

    def _error(self, exc: Exception, action: str, kind: str = "", name: str = "") -> StoreError:
        """Translate an obstore error into our hierarchy, with one line of text."""
        from obstore import exceptions as oe

        text = str(exc)
        if isinstance(exc, oe.NotFoundError | FileNotFoundError) or "NoSuchKey" in text:
            if "NoSuchBucket" in text:
                return RepositoryNotFound(
                    f"S3 bucket {self.bucket!r} does not exist at "
                    f"{self.settings.endpoint or 'AWS S3'} (run 'snapdeck init')"
                )
            return ObjectNotFound(f"no {kind} object {name!r} in {self.location}")
        if "NoSuchBucket" in text:
            return RepositoryNotFound(
                f"S3 bucket {self.bucket!r} does not exist at "
                f"{self.settings.endpoint or 'AWS S3'} (run 'snapdeck init')"
            )
        if isinstance(exc, oe.AlreadyExistsError | oe.PreconditionError):
            return ObjectExists(f"object already exists: {kind}/{name} in {self.location}")
        if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError) or _status(exc) in (
            401,
            403,
        ):
            code = _ERROR_CODE.search(text)
            why = code.group(1) if code else "access denied"
            return StoreError(
                f"S3 refused access to {self._where()} ({why}): check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or [s3] access_key_id/secret_access_key in the config)"
            )
        if "error sending request" in text or "onnection refused" in text:
            return StoreError(
                f"cannot reach S3 endpoint {self.settings.endpoint or 'AWS S3'} to {action} "
                f"{self.location}: {_one_line(exc)}"
            )
        return StoreError(f"S3 {action} {self.location}/{kind}/{name}: {_one_line(exc)}")

    # -- layout --------------------------------------------------------------------------------

    def create(self) -> None:
        """Create the bucket when it does not exist (idempotent). S3 needs no directories.

        Raises:
            StoreError: The bucket cannot be created or reached (wrong credentials…).
        """
        try:
            self._list_page("config")
            return
        except RepositoryNotFound:
            pass
        self._create_bucket()
        self._list_page("config")  # now it must answer

    def _list_page(self, prefix: str) -> list[dict[str, Any]]:
        import obstore

        self._count("LIST")
        try:
            stream = obstore.list(self._store, prefix, chunk_size=1)
            return [dict(m) for m in next(iter(stream), [])]
        except Exception as exc:
            raise self._error(exc, "list") from None

    def _create_bucket(self) -> None:
        """CreateBucket through a presigned PUT on the bucket URL.

        obstore has no bucket API, but it signs URLs with whatever credentials it resolved,
        and a PUT on the bucket's root URL is exactly S3's CreateBucket.
        """
        import obstore

        try:  # the empty path of a prefix-less store is the bucket's root URL
            url = obstore.sign(self._make_store(""), "PUT", "", timedelta(minutes=5))
        except Exception as exc:
            raise self._error(exc, "sign a create-bucket request for") from None
        body = b""
        if self.settings.region != DEFAULT_REGION and not self.settings.endpoint:
            body = (
                '<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<LocationConstraint>{self.settings.region}</LocationConstraint>"
                "</CreateBucketConfiguration>"
            ).encode()
        self._count("CREATE_BUCKET")
        request = urllib.request.Request(url, data=body, method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            code = _ERROR_CODE.search(detail)
            why = code.group(1) if code else f"HTTP {exc.code}"
            if why in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists") and exc.code == 409:
                return
            if exc.code in (401, 403):
                raise StoreError(
                    f"S3 refused to create bucket {self.bucket!r} at "
                    f"{self.settings.endpoint or 'AWS S3'} ({why}): check the credentials"
                ) from None
            raise StoreError(f"cannot create S3 bucket {self.bucket!r}: {why}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreError(
                f"cannot reach S3 endpoint {self.settings.endpoint or 'AWS S3'} to create "
                f"bucket {self.bucket!r}: {reason}"
            ) from None
        logger.info("created S3 bucket %s", self.bucket)

    def is_initialized(self) -> bool:
        """True when the ``config`` object exists (False if the bucket does not)."""
        try:
            return self.exists("config", "config")
        except RepositoryNotFound:
            return False

    # -- writing -------------------------------------------------------------------------------

    def put(self, kind: str, name: str, data: Data, *, overwrite: bool = False) -> None:
        """Write an object with one PUT (atomic: visible only once complete).

        Raises:
            ObjectExists: ``overwrite`` is false and the name is taken (by other content).
            UsageError: An invalid address, or a ref name that clashes with a ref folder.
            StoreError: The request failed after retries.
        """
        import obstore

        check_address(kind, name)
        if kind == "refs":
            self._check_ref_clash(name)
        key = self._key(kind, name)
        parts = data if isinstance(data, list) else [data]
        total = sum(len(p) for p in parts)
        if kind == "data" and total >= MULTIPART_MIN:
            self._put_multipart(kind, name, key, parts, overwrite)
            return
        # A list of parts goes as it is: obstore sends the buffers without joining them.
        content: bytes | list[Any] = parts if len(parts) > 1 else bytes(parts[0])
        self._count("PUT", kind)
        try:
            obstore.put(
                self._store,
                key,
                content,
                mode="overwrite" if overwrite else "create",
                use_multipart=False,
            )
        except Exception as exc:
            err = self._error(exc, "write", kind, name)
            if (
                isinstance(err, ObjectExists)
                and total <= COMPARE_LIMIT
                and self._holds(kind, name, b"".join(parts))
            ):
                return  # our own earlier attempt landed; its reply was lost
            raise err from None
        if kind == "data":
            self._cache.forget(key)

    def _put_multipart(
        self, kind: str, name: str, key: str, parts: list[Any], overwrite: bool
    ) -> None:
        """A big pack as a multipart upload, streamed from its parts without joining them.

        Only ``CompleteMultipartUpload`` makes the object visible, so a failure midway leaves
        nothing under the name (obstore aborts the upload; after a crash an incomplete upload
        may linger invisibly until a bucket lifecycle rule removes it). S3 cannot make a
        multipart upload conditional, so create-if-absent is a HEAD first: pack names are
        content hashes, so two racing writers of one name write the same bytes.
        """
        import obstore

        if not overwrite and self.exists(kind, name):
            raise ObjectExists(f"object already exists: {kind}/{name} in {self.location}")
        self._count("PUT", kind)
        try:
            obstore.put(
                self._store,
                key,
                parts,
                use_multipart=True,
                chunk_size=PART_SIZE,
                max_concurrency=PART_CONCURRENCY,
            )
        except Exception as exc:
            raise self._error(exc, "write", kind, name) from None
        self._cache.forget(key)

    def replace_if(self, kind: str, name: str, data: bytes, etag: str) -> str:
        """Replace an object only if its ETag is still ``etag`` (compare-and-swap).

        Returns:
            The new ETag.

        Raises:
            ObjectExists: The object changed (or vanished) since ``etag`` was read.
        """
        import obstore

        check_address(kind, name)
        self._count("PUT", kind)
        try:
            result = obstore.put(
                self._store, self._key(kind, name), bytes(data), mode={"e_tag": etag}
            )
        except Exception as exc:
            err = self._error(exc, "replace", kind, name)
            if isinstance(err, ObjectNotFound):
                raise ObjectExists(f"{kind}/{name} vanished in {self.location}") from None
            raise err from None
        return result["e_tag"] or ""

    def etag(self, kind: str, name: str) -> str:
        """The current ETag of an object (for ``replace_if``).

        Raises:
            ObjectNotFound: No such object.
        """
        return str(self._head(kind, name)["e_tag"] or "")

    def _holds(self, kind: str, name: str, content: bytes) -> bool:
        if len(content) > COMPARE_LIMIT:
            return False
        try:
            return self.get(kind, name) == content
        except StoreError:
            return False

    def _check_ref_clash(self, name: str) -> None:
        """Refuse what a directory tree refuses: ``a/b`` next to ``a``, or ``a`` next to ``a/b``."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            if self.exists("refs", "/".join(parts[:i])):
                break
        else:
            if not self._list_page(self._key("refs", name) + "/"):
                return
        raise UsageError(
            f"ref {name!r} clashes with an existing ref (a ref cannot also be a folder)"
        )

    def delete(self, kind: str, name: str) -> None:
        """Remove an object; a missing object is not an error.

        Raises:
            UsageError: An invalid address.
            StoreError: The request failed.
        """
        import obstore

        check_address(kind, name)
        key = self._key(kind, name)
        if kind == "data":
            self._cache.forget(key)
        self._count("DELETE", kind)
        try:
            obstore.delete(self._store, key)
        except Exception as exc:
            err = self._error(exc, "delete", kind, name)
            if isinstance(err, ObjectNotFound):
                return
            raise err from None

    # -- reading -------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> bytes:
        """The whole object.

        Raises:
            ObjectNotFound: No such object.
            StoreError: The request failed.
        """
        import obstore

        check_address(kind, name)
        self._count("GET", kind)
        try:
            return bytes(obstore.get(self._store, self._key(kind, name)).bytes())
        except Exception as exc:
            raise self._error(exc, "read", kind, name) from None

    def get_range(self, kind: str, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at the end of the object.

        Pack reads shorter than the read-ahead window fetch the whole window and serve later
        reads inside it from memory (packs are immutable, so the cache cannot go stale).

        Raises:
            UsageError: A negative offset or length.
            ObjectNotFound: No such object.
            StoreError: The request failed.
        """
        check_address(kind, name)
        if offset < 0 or length < 0:
            raise UsageError(f"invalid range: offset {offset}, length {length}")
        key = self._key(kind, name)
        if length == 0:
            self._head(kind, name)  # still report a missing object
            return b""
        if kind == "data" and self.read_ahead > 0 and length < self.read_ahead:
            data = self._cache.read(key, offset, length)
            if data is not None:
                return data
        return self._fetch(kind, name, key, offset, length)

    def prefetch(self, kind: str, name: str, offset: int, length: int) -> None:
        """A hint that ``length`` bytes at ``offset`` of a pack will be read soon: their
        windows are fetched in the background (while the read-ahead cache has room).

        Readers that know their next packs (a restore) call this to overlap downloads with
        their work; a read of the range then waits for the fetch instead of starting another.
        Nothing happens for other kinds, invalid addresses or with read-ahead off.
        """
        if kind != "data" or self.read_ahead <= 0 or offset < 0 or length <= 0:
            return
        try:
            check_address(kind, name)
        except UsageError:
            return
        self._cache.prefetch(self._key(kind, name), offset, length)

    def _new_cache(self) -> _ReadCache:
        return _ReadCache(READ_CACHE_BYTES, self.read_ahead, self._fetch_window)

    def _fetch_window(self, key: str, start: int, length: int) -> tuple[memoryview, int]:
        """One window of a pack as a view of obstore's buffer (no copy), and the pack's size."""
        import obstore

        self._count("GET", "data")
        try:
            res = obstore.get(self._store, key, options={"range": (start, start + length)})
            return memoryview(res.bytes()), int(res.meta["size"])
        except Exception as exc:
            if _status(exc) == 416:  # the window starts at or past the end
                return memoryview(b""), start
            name = key.rpartition("/")[2]
            raise self._error(exc, "read", "data", name) from None

    def _fetch(self, kind: str, name: str, key: str, offset: int, length: int) -> bytes:
        import obstore

        self._count("GET", kind)
        try:
            buf = obstore.get_range(self._store, key, start=offset, end=offset + length)
        except Exception as exc:
            if _status(exc) == 416:  # the range starts at or past the end
                return b""
            raise self._error(exc, "read", kind, name) from None
        return bytes(buf)

    def _head(self, kind: str, name: str) -> Mapping[str, Any]:
        import obstore

        check_address(kind, name)
        self._count("HEAD", kind)
        try:
            return cast("Mapping[str, Any]", obstore.head(self._store, self._key(kind, name)))
        except Exception as exc:
            raise self._error(exc, "stat", kind, name) from None

    def exists(self, kind: str, name: str) -> bool:
        """Whether the object exists.

        Raises:
            UsageError: An invalid address.
            StoreError: Its presence cannot be determined (e.g. access denied).
        """
        try:
            self._head(kind, name)
        except ObjectNotFound:
            return False
        return True

    def stat(self, kind: str, name: str) -> ObjectInfo:
        """Size and mtime of an object.

        Raises:
            ObjectNotFound: No such object.
        """
        meta = self._head(kind, name)
        return ObjectInfo(
            name=name, size=int(meta["size"]), mtime=meta["last_modified"].timestamp()
        )

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of a kind whose name starts with ``prefix`` (a paged listing; objects
        that are not ours are skipped).

        Raises:
            UsageError: An unknown kind or an invalid prefix (at once, not on iteration).
            StoreError: The listing failed (on iteration).
        """
        check_prefix(kind, prefix)  # issue 4: listing prefix
        return self._iter_kind(kind, prefix)

    def _iter_kind(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        import obstore

        if kind == "config":
            if "config".startswith(prefix):
                try:
                    yield self.stat("config", "config")
                except ObjectNotFound:
                    pass
            return
        base = f"{kind}/"
        # issue 4: S3 lists by key prefix, but obstore matches whole path segments only, so
        # list the deepest folder every match is in (a data fan-out dir, a ref folder) and
        # filter the last, partial segment here.
        if kind == "data" and len(prefix) >= 2:
            folder = f"{base}{prefix[:2]}/"
        elif kind == "refs" and "/" in prefix:
            folder = f"{base}{prefix.rpartition('/')[0]}/"
        else:
            folder = base
        self._count("LIST", kind)
        try:
            stream = obstore.list(self._store, folder, chunk_size=1000)
            for chunk in stream:
                for meta in chunk:
                    info = self._listed(kind, meta["path"][len(base) :], meta)
                    if info is not None and info.name.startswith(prefix):
                        yield info
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, "list", kind) from None

    @staticmethod
    def _listed(kind: str, rest: str, meta: Mapping[str, Any]) -> ObjectInfo | None:
        if kind == "data":
            fan, _, name = rest.partition("/")
            if len(fan) != 2 or not name.startswith(fan) or "/" in name:
                return None
        else:
            name = rest
        try:
            check_address(kind, name)
        except UsageError:
            return None  # not an object of ours (a stray key someone put in the bucket)
        return ObjectInfo(
            name=name, size=int(meta["size"]), mtime=meta["last_modified"].timestamp()
        )

    def close(self) -> None:
        """Drop cached windows and stop read-ahead (the connection pool goes with the
        object)."""
        old, self._cache = self._cache, self._new_cache()
        old.close()
