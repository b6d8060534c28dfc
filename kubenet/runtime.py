"""The kubelet's hands: a pod's namespaces, its "pause" holder, its containers and logs.

A pod is a network namespace (plumbed like the CNI bridge plugin does) plus a UTS and a
mount namespace held open by a sleeping pause process, as in Kubernetes. Containers are
host processes that enter those namespaces; there are no images.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .net import NETNS_DIR

__all__ = ["expand", "node_environment", "PodSandbox", "start_container", "stop_process_group",
           "listening_tcp_ports", "resolv_conf", "hosts_file", "POD_PATH"]

POD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def node_environment() -> dict[str, str]:
    """What the lab's kubelet adds to every container: the course's own Python.

    Pods run host programs (there are no images); the lab's system pods need the Python
    that has kubenet and its libraries.
    """
    return {"KUBENET_PYTHON": sys.executable,
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args (``$$`` escapes a ``$``)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, arg)


def resolv_conf(namespace: str, nameserver: str) -> str:
    """What the kubelet writes for ``dnsPolicy: ClusterFirst``."""
    return (f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {nameserver}\noptions ndots:5\n")


def hosts_file(ip: str, hostname: str) -> str:
    """The kubelet-managed /etc/hosts of a pod."""
    return ("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
            "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            f"{ip}\t{hostname}\n")


_PAUSE = (
    'hostname "$1" && cd "$2" && '
    'mount --bind "$2/etc/hosts" /etc/hosts && '
    'mount --bind "$2/etc/resolv.conf" /etc/resolv.conf && '
    'mount --bind "$2/etc/hostname" /etc/hostname && '
    "exec sleep infinity"
)


class PodSandbox:
    """The namespaces of one pod, held open by its pause process."""

    def __init__(self, netns: str, hostname: str, workdir: Path, ip: str, nameserver: str,
                 namespace: str) -> None:
        self.netns = netns
        self.workdir = workdir
        etc = workdir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        (etc / "hosts").write_text(hosts_file(ip, hostname))
        (etc / "resolv.conf").write_text(resolv_conf(namespace, nameserver))
        (etc / "hostname").write_text(hostname + "\n")
        self.pause = subprocess.Popen(
            ["nsenter", f"--net={NETNS_DIR}/{netns}", "unshare", "--uts", "--mount",
             "--propagation", "slave", "sh", "-c", _PAUSE, "pause", hostname, str(workdir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._wait_ready(hostname)

    def _wait_ready(self, hostname: str) -> None:
        # The pause process is ready once it is `sleep` with the pod's hostname set.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.pause.poll() is not None:
                err = self.pause.stderr.read().decode().strip() if self.pause.stderr else ""
                raise RuntimeError(f"pod sandbox failed: {err}")
            try:
                if Path(f"/proc/{self.pause.pid}/comm").read_text().strip() == "sleep":
                    return
            except OSError:
                pass
            time.sleep(0.002)
        raise RuntimeError("pod sandbox did not start within 5s")

    def enter_argv(self, argv: list[str], workdir: str | None = None) -> list[str]:
        """``argv`` run inside the pod's network, UTS and mount namespaces."""
        return ["nsenter", f"--target={self.pause.pid}", "--net", "--uts", "--mount",
                f"--wd={workdir or self.workdir}", "--", *argv]

    def stop(self) -> None:
        stop_process_group(self.pause, grace=0)


def start_container(sandbox: PodSandbox, argv: list[str], env: dict[str, str],
                    log_path: Path, workdir: str | None = None) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            sandbox.enter_argv(argv, workdir), env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        log.close()


def stop_process_group(proc: subprocess.Popen, grace: float = 2.0) -> int | None:
    """SIGTERM the process group, then SIGKILL after ``grace`` seconds, as the kubelet does."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM if grace else signal.SIGKILL)
        try:
            proc.wait(timeout=grace or 2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent
    return proc.returncode


def listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state in the network namespace of ``pid`` (from /proc)."""
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
