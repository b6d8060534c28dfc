"""Host side of a lab: start its anchor, talk to its agent, end it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import rpc
from .errors import AlreadyExists, KubenetError, from_wire
from .state import LabRecord, lab_dir, pid_alive, read_record
from .tiers import require_tier, sandbox_flags

__all__ = ["start", "call", "stop"]


def start(name: str, *, owned: bool, nodes: int = 2, seed: int = 0,
          proxy_mode: str = "iptables") -> tuple[LabRecord, int | None]:
    """Start a lab's anchor and wait until its network is built.

    ``owned``: the lab ends when this process ends (the agent watches a pipe whose write
    end only this process holds). Returns the record and that write end.
    """
    tier = require_tier()
    directory = lab_dir(name)
    directory.mkdir(mode=0o700, exist_ok=True)
    try:
        read_record(name)
    except KubenetError:
        pass
    else:
        raise AlreadyExists(f'error: lab "{name}" is already running (use it, or end it with: '
                            f"kubenet down --lab {name})")
    sock_path = directory / "agent.sock"
    ready_r, ready_w = os.pipe()
    owner_r, owner_w = os.pipe() if owned else (None, None)
    argv = ["unshare", *sandbox_flags(tier), sys.executable, "-m", "kubenet.agent",
            "--lab", name, "--tier", tier, "--socket", str(sock_path),
            "--ready-fd", str(ready_w), "--nodes", str(nodes), "--seed", str(seed),
            "--proxy-mode", proxy_mode]
    pass_fds = [ready_w]
    if owner_r is not None:
        argv += ["--owner-fd", str(owner_r)]
        pass_fds.append(owner_r)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)
               + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(directory / "agent.log", "wb") as log:
        proc = subprocess.Popen(argv, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, env=env)
    os.close(ready_w)
    if owner_r is not None:
        os.close(owner_r)
    with os.fdopen(ready_r) as ready:
        status = ready.readline().strip()
    if status != "ready":
        proc.kill()
        proc.wait()
        detail = status or (directory / "agent.log").read_text(errors="replace").strip()
        raise KubenetError(detail.splitlines()[-1] if detail else
                           "error: the lab's sandbox did not start (see agent.log)")
    record = LabRecord(name=name, tier=tier, anchor_pid=proc.pid, socket=str(sock_path),
                       created=time.time(), owner_pid=os.getpid() if owned else None)
    record.save()
    # The Popen object is dropped on purpose: the anchor outlives this function.
    proc.returncode = 0
    return record, owner_w


def call(record: LabRecord, op: str, fds: list[int] | None = None, **args: Any) -> Any:
    """One request to the lab's agent; its errors come back as our exceptions."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(record.socket)
        except OSError:
            raise KubenetError(f'error: lab "{record.name}" does not answer (end it with: '
                               f"kubenet down --lab {record.name})") from None
        rpc.send(sock, {"op": op, "args": args}, fds)
        reply, _ = rpc.receive(sock)
    if not reply["ok"]:
        raise from_wire(reply["error"], reply["message"])
    return reply["result"]


def stop(record: LabRecord, timeout: float = 10.0) -> None:
    """End a lab and return once its anchor (and with it every lab process) is gone."""
    with contextlib.suppress(KubenetError, OSError):
        call(record, "shutdown")
    deadline = time.monotonic() + timeout
    while pid_alive(record.anchor_pid) and time.monotonic() < deadline:
        _reap(record.anchor_pid)
        time.sleep(0.01)
    if pid_alive(record.anchor_pid):
        os.kill(record.anchor_pid, signal.SIGKILL)  # --kill-child takes the sandbox with it
        while pid_alive(record.anchor_pid):
            _reap(record.anchor_pid)
            time.sleep(0.01)
    directory = Path(record.socket).parent
    for leftover in ("lab.json", "agent.sock"):
        (directory / leftover).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    """Collect the anchor's exit status if we started it (else it would linger as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
