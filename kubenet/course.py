"""Exercise checks for the notebooks: each looks at the live lab and says what it sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Check", "client_reached"]


@dataclass
class Check:
    passed: bool
    message: str

    def __repr__(self) -> str:
        return ("Well done: " if self.passed else "Not yet: ") + self.message


def client_reached(lab: Lab, server_prefix: str = "service-test-") -> Check:
    """Has some finished client pod received a greeting from a server pod that runs now?"""
    pods = lab.pods()
    servers = {p["metadata"]["name"] for p in pods
               if p["metadata"]["name"].startswith(server_prefix)
               and p["status"]["phase"] == "Running"}
    for p in pods:
        name = p["metadata"]["name"]
        if p["status"]["phase"] != "Succeeded":
            continue
        log = lab.logs(name)
        for server in servers:
            if f"Hello from {server}" in log:
                return Check(True, f"{name} got an answer from {server}.")
    return Check(False, "no finished client pod has an answer from a running server pod yet. "
                 "Apply a client that asks a server pod's current IP.")


def endpoints_count(lab: Lab, service: str, expected: int) -> Check:
    """Does the Service list ``expected`` ready endpoints?"""
    found = lab.endpoints(service)
    if len(found) == expected:
        return Check(True, f"{service} lists {expected} endpoints: {', '.join(found)}.")
    return Check(False, f"{service} lists {len(found)} endpoint(s), not {expected}. "
                 "Scale the Deployment, then look again.")


def probabilities(lab: Lab, node: str, chain: str) -> Check:
    """Do the probabilities in ``chain`` give every endpoint the same share?"""
    import re

    rules = str(lab.rules(node, table="nat").grep(f"-A {chain} ")).splitlines()
    jumps = [r for r in rules if "-j KUBE-SEP-" in r]
    found = [float(m.group(1)) if (m := re.search(r"--probability (\S+)", r)) else 1.0
             for r in jumps]
    n = len(jumps)
    expected = [1 / (n - i) for i in range(n)]
    if n < 4:
        return Check(False, f"{chain} has {n} endpoint rule(s); scale the Deployment to 4.")
    if all(abs(a - b) < 1e-6 for a, b in zip(found, expected, strict=True)):
        shown = ", ".join(f"{p:.4f}" for p in found)
        return Check(True, f"{n} endpoints with probabilities {shown}: each gets 1/{n}.")
    return Check(False, f"unexpected probabilities {found}")
