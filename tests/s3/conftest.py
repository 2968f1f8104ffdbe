"""Fixtures for the S3 tests: a real SeaweedFS server per xdist worker (see ``server.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backend.storage.s3 import S3Storage
from tests.s3.server import BUCKET, SeaweedServer, new_prefix, s3_server  # noqa: F401


@pytest.fixture
def s3(s3_server: SeaweedServer) -> Iterator[S3Storage]:  # noqa: F811
    """A fresh, empty S3 storage: the shared test bucket under a new prefix."""
    storage = s3_server.storage(BUCKET, new_prefix())
    storage.create()
    yield storage
    storage.close()
