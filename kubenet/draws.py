"""Every random choice a lab makes, from one seeded source, so a lab can be replayed.

Kubernetes picks pod-name suffixes, pod-template hashes, cluster IPs and (for equal scores)
nodes at random. A lab makes the same picks from a generator seeded per lab, so the same
steps give the same names and addresses every run. A lab built for the article first
replays the draws the article's own cluster made (``ARTICLE``), then continues with the
seeded generator.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

__all__ = ["Draws", "ARTICLE", "SAFE_ALPHABET"]

# Kubernetes' rand.String alphabet: no vowels, no confusable 0/1/3.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# What the article's cluster drew, in the order it drew them, by kind of draw.
ARTICLE: dict[str, list[str]] = {
    "pod-template-hash": ["6ffd9ddbbf"],
    "suffix": ["kf4j2", "qs2j6"],
    "node": ["node1", "node1", "node1"],
    "cluster-ip": ["10.3.241.152"],
}


class Draws:
    """A seeded generator with optional recorded draws replayed first, one queue per kind."""

    def __init__(self, seed: int = 0, recorded: dict[str, list[str]] | None = None) -> None:
        self._rng = random.Random(seed)
        self._recorded = {kind: list(values) for kind, values in (recorded or {}).items()}

    def _replay(self, kind: str, allowed: Sequence[str] | None = None) -> str | None:
        queue = self._recorded.get(kind)
        while queue:
            value = queue.pop(0)
            if allowed is None or value in allowed:
                return value
        return None

    def suffix(self, length: int = 5) -> str:
        """The random tail of a generated name (``generateName``)."""
        recorded = self._replay("suffix")
        if recorded is not None:
            return recorded
        return "".join(self._rng.choice(SAFE_ALPHABET) for _ in range(length))

    def template_hash(self, computed: str) -> str:
        """A Deployment's pod-template-hash: recorded, else the hash computed from the template."""
        recorded = self._replay("pod-template-hash")
        return computed if recorded is None else recorded

    def choice(self, kind: str, options: Sequence[str]) -> str:
        """Pick one of ``options`` (sorted by the caller, so the pick is reproducible)."""
        if not options:
            raise ValueError("nothing to choose from")
        recorded = self._replay(kind, options)
        if recorded is not None:
            return recorded
        return options[self._rng.randrange(len(options))]

    def integer(self, kind: str, below: int) -> int:
        """A number in ``range(below)``, e.g. an offset into an address range."""
        return self._rng.randrange(below)

    def uid(self) -> str:
        """An object's metadata.uid: a version-4 UUID, drawn like everything else."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def recorded(self, kind: str) -> str | None:
        """The next recorded draw of ``kind``, if the lab replays one."""
        return self._replay(kind)
