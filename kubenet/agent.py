"""The lab's agent: PID 1 of the sandbox, holder of the lab's state, server of its socket.

Started by ``sandbox.start`` as ``unshare ... python -m kubenet.agent``. It forks once:
the parent stays PID 1 and only reaps orphans; the child serves requests. When the child
ends, PID 1 ends, and the kernel ends every process of the lab's PID namespace with it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import rpc, scenarios
from .cluster import Cluster
from .draws import ARTICLE, Draws
from .errors import BadRequest, KubenetError, NotFound
from .net import Net
from .topology import NodeSpec, Topology, article_topology

WORKROOT = Path("/run/kubenet")


def _reaper(agent_pid: int) -> None:
    """PID 1: reap every orphan; leave (ending the lab) when the agent leaves."""
    def forward(signum: int, _frame: Any) -> None:
        os.kill(agent_pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == agent_pid:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _private_run() -> None:
    """A tmpfs on /run: the lab's own /run/netns, invisible to the host."""
    resolv = Path("/etc/resolv.conf")
    target = resolv.resolve() if resolv.is_symlink() else None
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "kubenet-run", "/run"], check=True)
    Path("/run/netns").mkdir()
    WORKROOT.mkdir()
    if target is not None and str(target).startswith("/run/"):
        # resolv.conf points into the host's /run: give the bind mounts a file to land on.
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def make_topology(nodes: int) -> Topology:
    if nodes == 2:
        return article_topology()
    if not 1 <= nodes <= 200:
        raise BadRequest("error: a lab has between 1 and 200 nodes")
    return Topology(nodes=[NodeSpec(f"node{i}", f"10.100.0.{i + 1}", f"10.0.{i}.0/24")
                           for i in range(1, nodes + 1)])


class Agent:
    def __init__(self, name: str, tier: str, cluster: Cluster) -> None:
        self.name = name
        self.tier = tier
        self.cluster = cluster
        self.started = time.time()

    # Each op takes keyword arguments and returns JSON-able data.
    def op_info(self) -> dict[str, Any]:
        topo = self.cluster.topology
        return {"name": self.name, "tier": self.tier, "pid": os.getpid(),
                "proxy_mode": self.cluster.proxy_mode,
                "started": self.started, "gateway": topo.gateway_ip,
                "external": topo.external_ip, "service_cidr": topo.service_cidr,
                "pod_cidr": topo.pod_cidr, "node_cidr": topo.node_cidr,
                "nodes": [{"name": n.name, "ip": n.ip, "pod_cidr": n.pod_cidr,
                           "bridge_ip": n.bridge_ip} for n in topo.nodes]}

    def op_up(self, scenario: str) -> list[str]:
        return scenarios.run(self.cluster, scenario)

    def op_apply(self, text: str, source: str, wait: float = 30.0) -> list[str]:
        out = self.cluster.apply(text, source)
        self.cluster.wait(self.cluster.usable, wait)
        return out

    def op_describe(self, kind: str, name: str, namespace: str = "default") -> str:
        return self.cluster.describe(kind, name, namespace)

    def op_rules(self, node: str, table: str = "", counters: bool = False) -> dict[str, Any]:
        return self.cluster.rules(node, table, counters)

    def op_proxy_mode(self, mode: str) -> str:
        return self.cluster.set_proxy_mode(mode)

    def op_drain(self, node: str) -> list[str]:
        out = self.cluster.drain(node)
        self.cluster.wait(self.cluster.usable, 30)
        return out

    def op_uncordon(self, node: str) -> str:
        return self.cluster.uncordon(node)

    def op_probe(self, action: str, name: str, namespace: str = "default") -> str:
        return self.cluster.probe(action, name, namespace)

    def op_proxy_log(self, node: str) -> str:
        proxy = self.cluster.proxies.get(node)
        if proxy is None:
            raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
        if not hasattr(proxy, "log"):
            raise BadRequest(f"error: kube-proxy on {node} runs in {proxy.mode} mode: there "
                             "is no proxy process (and no log) in that mode")
        return proxy.log()

    def op_extra_services(self, node: str, count: int, endpoints: list[str]) -> dict[str, Any]:
        """Hand ``node``'s kube-proxy ``count`` synthetic Services (kubenet.scale) and sync
        it now; returns the sync's timings. ``count=0`` takes them away again."""
        from . import scale

        proxy = self.cluster.proxies.get(node)
        if proxy is None:
            raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
        try:
            services, slices = scale.synthetic(count, endpoints)
            return proxy.resync(services, slices)
        except ValueError as err:
            raise BadRequest(str(err) if str(err).startswith("error:")
                             else f"error: {err}") from None

    def op_kube_proxy(self, action: str, node: str) -> str:
        return self.cluster.kube_proxy(action, node)

    def op_delete(self, kind: str = "", name: str = "", namespace: str = "default",
                  text: str = "", source: str = "") -> list[str]:
        if text:
            return self.cluster.delete_manifests(text, source)
        out = [self.cluster.delete(kind, name, namespace)]
        self.cluster.wait(self.cluster.usable, 30)
        return out

    def op_scale(self, name: str, replicas: int, namespace: str = "default") -> str:
        out = self.cluster.scale(name, replicas, namespace)
        self.cluster.wait(self.cluster.usable, 30)
        return out

    def op_snapshot(self) -> dict[str, Any]:
        return self.cluster.snapshot()

    def op_logs(self, name: str, namespace: str = "default", container: str | None = None,
                previous: bool = False) -> str:
        return self.cluster.logs(name, namespace, container, previous)

    def op_wait(self, timeout: float = 30.0) -> bool:
        return self.cluster.wait(self.cluster.usable, timeout)

    def op_inventory(self) -> dict[str, Any]:
        """``ip -j`` links, addresses and routes of every network namespace of the lab."""
        from .inventory import IP_BATCH, parse_batch

        def read(ns: str) -> subprocess.CompletedProcess:
            return subprocess.run(["ip", "-4", "-n", ns, "-j", "-d", "-batch", "-"],
                                  input=IP_BATCH, capture_output=True, text=True)

        names = sorted(os.listdir("/run/netns"))
        with ThreadPoolExecutor(max_workers=8) as pool:  # one `ip` per namespace, at once
            done = dict(zip(names, pool.map(read, names), strict=True))
        return {ns: parse_batch(d.stdout) for ns, d in done.items() if d.returncode == 0}

    def op_transcript(self) -> list[str]:
        return list(self.cluster.net.transcript)

    def op_trace(self, source: str, dest: str, namespace: str = "default") -> dict[str, Any]:
        """A real SYN from ``source`` to ``dest`` (HOST:PORT), captured hop by hop."""
        from .packets import tracer

        return tracer(self.cluster).trace(source, dest, namespace).to_wire()

    def op_exec(self, target: str, argv: list[str], namespace: str = "default",
                stdin: str | None = None, timeout: float = 60.0,
                _fds: list[int] | None = None, _sock: socket.socket | None = None,
                ) -> dict[str, Any]:
        full, env = self.cluster.exec_argv(target, argv, namespace)
        if _fds:
            proc = subprocess.Popen(full, env=env, stdin=_fds[0], stdout=_fds[1],
                                    stderr=_fds[2], start_new_session=True)
            for fd in _fds:
                os.close(fd)
            while proc.poll() is None:
                readable, _, _ = select.select([_sock], [], [], 0.2)
                if readable and _sock is not None and not _sock.recv(1, socket.MSG_PEEK):
                    os.killpg(proc.pid, signal.SIGKILL)  # the caller went away
                    proc.wait()
            return {"returncode": proc.returncode}
        try:
            done = subprocess.run(full, env=env, input=stdin, capture_output=True, text=True,
                                  timeout=timeout, errors="replace")
        except subprocess.TimeoutExpired:
            raise BadRequest(f"error: command timed out after {timeout:g}s") from None
        return {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}

    def op_shutdown(self) -> bool:
        self.cluster.close()
        return True

    def handle(self, sock: socket.socket) -> None:
        try:
            request, fds = rpc.receive(sock, with_fds=True)
        except (ConnectionError, ValueError):
            sock.close()
            return
        op = request.get("op", "")
        args = request.get("args", {})
        handler = getattr(self, f"op_{op}", None)
        try:
            if handler is None:
                raise BadRequest(f"error: unknown request {op!r}")
            if op == "exec":
                args.update(_fds=fds, _sock=sock)
            reply = {"ok": True, "result": handler(**args)}
        except KubenetError as err:
            reply = {"ok": False, "error": type(err).__name__, "message": str(err)}
        except Exception as err:  # a bug: keep the lab alive, tell the caller
            traceback.print_exc()
            reply = {"ok": False, "error": "KubenetError",
                     "message": f"error: internal error in the lab agent: {err!r}"}
        with contextlib.suppress(OSError):
            rpc.send(sock, reply)
        sock.close()
        if op == "shutdown" and reply["ok"]:
            os._exit(0)


def _serve(agent: Agent, listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=agent.handle, args=(conn,), daemon=True).start()


def _watch_owner(fd: int, agent: Agent) -> None:
    """The lab's owner (a Python process) holds the other end: EOF means it is gone."""
    while os.read(fd, 1):
        pass
    agent.cluster.close()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kubenet.agent")
    parser.add_argument("--lab", required=True)
    parser.add_argument("--tier", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--owner-fd", type=int)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proxy-mode", default="iptables")
    args = parser.parse_args(argv)

    child = os.fork()
    if child:
        _reaper(child)
    ready = os.fdopen(args.ready_fd, "w")
    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        Path(args.socket).unlink(missing_ok=True)
        listener.bind(args.socket)
        listener.listen(64)
        _private_run()
        cluster = Cluster(make_topology(args.nodes), Draws(args.seed, ARTICLE), WORKROOT, Net(),
                          proxy_mode=args.proxy_mode)
        cluster.build()  # the DNS pod starts in the background; `up` waits for it
    except Exception as err:
        message = str(err) if isinstance(err, KubenetError) else f"error: {err}"
        ready.write(message.replace("\n", " ") + "\n")
        ready.close()
        traceback.print_exc()
        os._exit(1)
    agent = Agent(args.lab, args.tier, cluster)
    signal.signal(signal.SIGTERM, lambda *_: (cluster.close(), os._exit(0)))
    if args.owner_fd is not None:
        threading.Thread(target=_watch_owner, args=(args.owner_fd, agent), daemon=True).start()
    ready.write("ready\n")
    ready.close()
    sys.stdout.flush()
    _serve(agent, listener)


if __name__ == "__main__":
    main()
