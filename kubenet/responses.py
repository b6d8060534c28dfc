"""Who answered a batch of requests: counts per pod, shown as a small bar chart (pure)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Responses"]

_HELLO = re.compile(r"<p>Hello from ([a-z0-9.-]+)</p>")


@dataclass
class Responses:
    sent: int
    counts: Counter = field(default_factory=Counter)

    @classmethod
    def from_output(cls, text: str, sent: int) -> Responses:
        return cls(sent, Counter(_HELLO.findall(text)))

    @property
    def answered(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.sent - self.answered

    def share(self, pod: str) -> float:
        return self.counts[pod] / self.sent if self.sent else 0.0

    def __repr__(self) -> str:
        width = max((len(p) for p in self.counts), default=10)
        lines = [f"{self.sent} requests, {self.answered} answered, {self.failed} failed"]
        for pod, n in sorted(self.counts.items()):
            bar = "#" * round(40 * n / self.sent) if self.sent else ""
            lines.append(f"{pod:<{width}}  {n:>4}  {100 * n / self.sent:5.1f}%  {bar}")
        return "\n".join(lines)
