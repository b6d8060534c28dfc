"""Names Kubernetes generates: pod-template hashes and ``generateName`` suffixes (pure)."""

from __future__ import annotations

import json
from typing import Any

from .draws import SAFE_ALPHABET

__all__ = ["fnv32a", "safe_encode", "template_hash"]


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(text: str) -> str:
    """Kubernetes' ``rand.SafeEncodeString``: each byte mapped into the vowel-free alphabet."""
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_hash(template: dict[str, Any]) -> str:
    """A pod-template-hash as the Deployment controller makes one: FNV-32a, safe-encoded.

    Kubernetes hashes its Go struct dump; we hash canonical JSON, so the value differs
    from a real cluster's but has the same shape and the same stability.
    """
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return safe_encode(str(fnv32a(data)))
