"""The one place that changes the kernel: iproute2 and sysctls inside the lab's sandbox.

Runs only inside the sandbox (in the agent). Every command is recorded in a transcript,
so a reader can ask "which commands built this?" and replay them by hand.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import zlib
from dataclasses import dataclass

from .errors import KubenetError

__all__ = ["Net", "NETNS_DIR", "veth_name"]

NETNS_DIR = "/run/netns"


def veth_name(key: str) -> str:
    """A stable host-side veth name (at most 15 characters), like the CNI's ``vethXXXXXXXX``."""
    return f"veth{zlib.crc32(key.encode()):08x}"


@dataclass
class Command:
    argv: list[str]
    stdin: str = ""

    def __str__(self) -> str:
        line = shlex.join(self.argv)
        if self.stdin:
            body = "\n".join("    " + s for s in self.stdin.strip().splitlines())
            return f"{line} <<EOF\n{body}\nEOF"
        return line


class Net:
    """Runs iproute2 and sysctl writes in named network namespaces of the sandbox."""

    def __init__(self) -> None:
        self.transcript: list[str] = []
        self._lock = threading.Lock()

    def run(self, argv: list[str], stdin: str = "") -> str:
        cmd = Command(argv, stdin)
        with self._lock:
            self.transcript.append(str(cmd))
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            reason = detail[-1] if detail else f"exit status {proc.returncode}"
            raise KubenetError(f"error: {argv[0]} failed: {reason} "
                               f"(while running: {shlex.join(argv)[:200]})")
        return proc.stdout

    def add_netns(self, name: str) -> None:
        self.run(["ip", "netns", "add", name])

    def del_netns(self, name: str) -> None:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        with self._lock:
            self.transcript.append(f"ip netns del {name}")

    def batch(self, netns: str, lines: list[str]) -> None:
        """Many ``ip`` commands in one namespace with one process (``ip -batch``)."""
        self.run(["ip", "-n", netns, "-batch", "-"], "\n".join(lines) + "\n")

    def sysctls(self, netns: str, values: dict[str, str]) -> None:
        """Write per-namespace sysctls (``/proc/sys/net`` follows the writer's netns)."""
        script = "; ".join(f"echo {v} > /proc/sys/{k.replace('.', '/')}" for k, v in values.items())
        self.run(["nsenter", f"--net={NETNS_DIR}/{netns}", "sh", "-ec", script])
