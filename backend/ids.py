"""Identifiers: the one place the hash algorithm is chosen.

Blob ids are keyed BLAKE3 hashes (32 bytes) of the blob's plaintext, keyed by the repository's
id key, so names reveal nothing about content to someone without the key. Pack ids and object
names are plain BLAKE3 of the stored bytes, so any object can be checked against its name.
"""

from __future__ import annotations

from typing import NewType

import blake3

BlobId = NewType("BlobId", bytes)
"""32-byte keyed hash of a blob's plaintext."""
PackId = NewType("PackId", str)
"""64-char hex BLAKE3 of a pack's stored bytes."""
SnapshotId = NewType("SnapshotId", str)
"""64-char hex BLAKE3 of a snapshot object's stored bytes."""

ID_LEN = 32
SHORT_LEN = 8


def blob_id(key: bytes, data: bytes | memoryview) -> BlobId:
    """The keyed id of a blob's plaintext."""
    return BlobId(blake3.blake3(data, key=key).digest())


def object_name(data: bytes | bytearray | memoryview) -> str:
    """The name of a stored object: hex BLAKE3 of its bytes."""
    return blake3.blake3(data).hexdigest()


def short_id(hex_id: str) -> str:
    """The short form shown to people."""
    return hex_id[:SHORT_LEN]
