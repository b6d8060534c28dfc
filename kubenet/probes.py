"""The kubelet's probes, run for real from the node's network namespace.

A kubelet lives in its node's network namespace and reaches pods by their IP, so an HTTP
or TCP probe arrives at the pod from the node's bridge address. Here each probe runs in a
short-lived thread that first joins the node's namespace (``setns`` affects only the
calling thread), so the probe's socket is the node's.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

from .manifests import Container, Probe

__all__ = ["in_netns", "run_probe", "resolve_port"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread that has joined the network namespace at ``path``."""
    box: dict[str, object] = {}

    def target() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({path}): {os.strerror(err)}")
        finally:
            os.close(fd)
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def resolve_port(probe: Probe, container: Container) -> int:
    if isinstance(probe.port, int):
        return probe.port
    for p in container.ports:
        if p.name == probe.port:
            return p.container_port
    raise ValueError(f"port {probe.port!r} is not a port of container {container.name}")


def _http(ip: str, port: int, path: str, timeout: float) -> bool:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "kube-probe/1.34"})
        status = conn.getresponse().status
        return 200 <= status < 400  # the kubelet's rule for httpGet
    finally:
        conn.close()


def _tcp(ip: str, port: int, timeout: float) -> bool:
    with socket.create_connection((ip, port), timeout=timeout):
        return True


def run_probe(probe: Probe, container: Container, pod_ip: str, node_netns: str,
              enter_pod: Callable[[list[str]], list[str]]) -> tuple[bool, str]:
    """One probe: (success, what happened, in the kubelet's words)."""
    try:
        if probe.action == "exec":
            done = subprocess.run(enter_pod(list(probe.command)), capture_output=True,
                                  timeout=probe.timeout, text=True)
            return done.returncode == 0, f"exec exited with {done.returncode}"
        port = resolve_port(probe, container)
        if probe.action == "httpGet":
            ok = in_netns(node_netns, lambda: _http(pod_ip, port, probe.path, probe.timeout))
            verdict = "succeeded" if ok else "failed"
            return ok, f"HTTP probe of {pod_ip}:{port}{probe.path} {verdict}"
        ok = in_netns(node_netns, lambda: _tcp(pod_ip, port, probe.timeout))
        return ok, f"TCP probe of {pod_ip}:{port} succeeded"
    except (OSError, subprocess.TimeoutExpired, http.client.HTTPException, ValueError) as err:
        return False, f"probe failed: {err}"
