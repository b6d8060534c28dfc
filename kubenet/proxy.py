"""kube-proxy on each node of the lab: watch Services and EndpointSlices, program the node.

Each node runs one proxy in the agent, in one of two modes:
- ``IptablesProxy``: renders the node's ruleset with the same pure renderer as
  ``kubenet render-iptables`` and applies it atomically with ``iptables-restore``, as
  kube-proxy's iptables mode does. Stopping it leaves the rules: the kernel keeps forwarding.
- ``UserspaceProxy``: the 2015 design. A proxy process in the node listens on a port per
  service port; netfilter redirects the cluster IP there; the process opens a second
  connection to a pod. Stopping it stops the traffic.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batches
from .kubeproxy import iptables as renderer
from .kubeproxy import nftables as nft_renderer
from .kubeproxy import userspace as portals
from .net import NETNS_DIR
from .runtime import listening_tcp_ports, node_environment, stop_process_group

if TYPE_CHECKING:
    from .cluster import Cluster
    from .topology import NodeSpec

__all__ = ["Proxy", "IptablesProxy", "UserspaceProxy", "NFACCT_COUNTERS", "PROXY_MODES",
           "PROXY_PORTS"]

# The counters kube-proxy creates with nfnetlink_acct before its rules refer to them.
NFACCT_COUNTERS = ("localhost_nps_accepted_pkts", "ct_state_invalid_dropped_pkts")
PROXY_MODES = ("iptables", "userspace", "nftables")
# The userspace proxy's ports (its --proxy-port-range): the article's service-test got 10400.
PROXY_PORTS = (10400, 10999)


class Proxy:
    """What both modes share: a thread that syncs the node on every change of the lab."""

    mode = ""

    def __init__(self, cluster: Cluster, node: NodeSpec) -> None:
        self.cluster = cluster
        self.node = node
        self.running = False
        self.synced_version = -1
        self.syncs = 0
        self.notes: list[str] = []
        self.error = ""
        self.rules = ""
        self._thread: threading.Thread | None = None
        # Services and EndpointSlices this kube-proxy sees beside the lab's own, as if the
        # API server held them (the scale benchmark's thousands); see :meth:`resync`.
        self.extra: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
        # Wall times of the last sync's steps: render (kubenet's Python), save, apply (the
        # tool that hands the rules to the kernel: iptables-restore or nft -f).
        self.timings: dict[str, float] = {}
        self._sync_lock = threading.Lock()
        self._split = False  # this tier cannot send a whole ruleset in one netlink message
        self._batch = batches.BATCH_LINES  # lines per transaction once it is split

    def state(self) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """The lab's Services and EndpointSlices at a version, plus :attr:`extra`."""
        version, services, slices = self.cluster.proxy_state()
        return version, services + self.extra[0], slices + self.extra[1]

    def resync(self, services: list[dict[str, Any]],
               slices: list[dict[str, Any]]) -> dict[str, float]:
        """Replace :attr:`extra` and sync now; returns the sync's :attr:`timings`."""
        if self.mode not in ("iptables", "nftables"):
            raise ValueError(f"kube-proxy on {self.node.name} runs in {self.mode} mode; "
                             "extra services need the iptables or nftables mode")
        with self._sync_lock:
            self.extra = (services, slices)
            self.timings = {}
            self.sync()
            return dict(self.timings)

    def _timed(self, step: str, start: float) -> None:
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - start

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={NETNS_DIR}/{self.node.name}", "--", *argv],
                              input=stdin, capture_output=True, text=True)

    def _ensure_rule(self, table: str, chain: str, args: list[str], op: str = "-I") -> None:
        """kube-proxy's EnsureRule: check with -C, add only when missing."""
        if self._run(["iptables", "-w", "-t", table, "-C", chain, *args]).returncode != 0:
            done = self._run(["iptables", "-w", "-t", table, op, chain, *args])
            if done.returncode != 0:
                raise RuntimeError(f"{self.node.name}: {done.stderr.strip()}")

    def _restore(self, text: str) -> None:
        self._transact(["iptables-restore", "-w", "--noflush", "--counters"], text,
                       batches.split_restore, "iptables-restore")

    def _transact(self, argv: list[str], text: str, split: Any, tool: str) -> None:
        """Hand ``text`` to ``argv`` in one transaction, as kube-proxy does; if this tier's
        netlink buffer cannot carry it (see :mod:`kubenet.batches`), in several."""
        if not self._split:
            done = self._run(argv, text)
            if done.returncode == 0:
                return
            if batches.MESSAGE_TOO_LONG not in done.stderr:
                raise RuntimeError(f"{self.node.name}: {tool}: {done.stderr.strip()}")
            self._split = True
        while True:
            parts = split(text, self._batch)
            for part in parts:
                done = self._run(argv, part)
                if done.returncode != 0:
                    break
            else:
                break
            if batches.MESSAGE_TOO_LONG not in done.stderr or self._batch <= 8:
                raise RuntimeError(f"{self.node.name}: {tool}: {done.stderr.strip()}")
            # Smaller parts, from the start again: the first part flushes what the earlier
            # ones wrote (chain declarations; nft's delete table), so nothing is doubled.
            self._batch //= 2
        self.timings["transactions"] = self.timings.get("transactions", 0) + len(parts)
        note = (f"{tool} could not take the whole ruleset in one transaction here (the "
                "netlink buffer only grows with CAP_NET_ADMIN on the host), so the rules "
                "were written in parts, in order, not atomically")
        if note not in self.notes:
            self.notes.append(note)

    def sync(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove every KUBE-* chain and the jumps to them, as ``kube-proxy --cleanup`` does
        when a node changes proxy mode. One atomic iptables-restore per table."""
        for table in ("nat", "filter"):
            saved = self._run(["iptables-save", "-t", table]).stdout
            chains = [line[1:].split()[0] for line in saved.splitlines()
                      if line.startswith(":KUBE-")]
            if not chains:
                continue
            jumps = [line.replace("-A ", "-D ", 1) for line in saved.splitlines()
                     if line.startswith("-A ") and not line.startswith("-A KUBE-")
                     and any(line.endswith(f"-j {c}") for c in chains)]
            text = "\n".join([f"*{table}", *(f":{c} - [0:0]" for c in chains), *jumps,
                              *(f"-X {c}" for c in chains), "COMMIT", ""])
            self._restore(text)
        self.rules = ""

    def _mark_synced(self, version: int) -> None:
        with self.cluster.lock:
            self.synced_version = version
            self.cluster.changed.notify_all()

    def _loop(self) -> None:
        seen = -1
        while self.running and not self.cluster.closing:
            with self.cluster.lock:
                while self.running and self.cluster.version == seen and \
                        not self.cluster.closing:
                    self.cluster.changed.wait(1.0)
                seen = self.cluster.version
            if not self.running:
                break
            try:
                with self._sync_lock:
                    self.sync()
                self.error = ""
            except Exception as err:  # keep running, as kube-proxy does; retry on next change
                self.error = str(err)

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.synced_version = -1  # not synced until the first sync of this run is done
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"kube-proxy-{self.node.name}")
        self._thread.start()

    def stop(self) -> None:
        """Stop watching the lab; what is already in the kernel stays."""
        self.running = False
        with self.cluster.lock:
            self.cluster.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def synced(self) -> bool:
        return self.running and self.synced_version >= self.cluster.version


class IptablesProxy(Proxy):
    """The iptables-mode kube-proxy of one node."""

    mode = "iptables"

    def __init__(self, cluster: Cluster, node: NodeSpec) -> None:
        super().__init__(cluster, node)
        self.rules = ""  # the last ruleset applied (before stale-chain deletions)
        self.nfacct = True
        self._prepared = False

    def _prepare(self) -> None:
        """What kube-proxy does once at start: sysctls, nfacct counters, the jump chains."""
        # Localhost NodePorts need route_localnet, which kube-proxy sets on its node.
        self._run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"])
        if shutil.which("nfacct") is None:
            self.nfacct = False
            self.notes.append("nfacct is not installed, so the rules leave out kube-proxy's "
                              "'-m nfacct' counters (apt-get install nfacct)")
        else:
            for name in NFACCT_COUNTERS:
                if self._run(["nfacct", "add", name]).returncode != 0 and \
                        name not in self._run(["nfacct", "list"]).stdout:
                    self.nfacct = False
                    self.notes.append("this kernel cannot make nfacct counters, so the rules "
                                      "leave out kube-proxy's '-m nfacct' counters")
        for table, chain, args in renderer.jump_rules():
            target = args[args.index("-j") + 1]
            self._run(["iptables", "-w", "-t", table, "-N", target])
            self._ensure_rule(table, chain, args)
        self._prepared = True

    def sync(self) -> None:
        """One full sync: render everything, apply it in one iptables-restore."""
        version, services, slices = self.state()
        if not self._prepared:
            self._prepare()
        options = {"node_name": self.node.name, "node_ips": [self.node.ip],
                   "cluster_cidr": self.cluster.topology.pod_cidr, "nfacct": self.nfacct}
        start = time.perf_counter()
        text = renderer.render(services, slices, **options)
        self._timed("render", start)
        if text != self.rules:
            # As kube-proxy does on a full sync: chains it no longer needs are deleted (-X).
            start = time.perf_counter()
            saved = self._run(["iptables-save", "-t", "nat"]).stdout
            existing = [line[1:].split()[0] for line in saved.splitlines()
                        if line.startswith(":")]
            self._timed("save", start)
            start = time.perf_counter()
            full = renderer.render(services, slices, existing_nat_chains=existing, **options)
            self._timed("render", start)
            start = time.perf_counter()
            self._restore(full)
            self._timed("apply", start)
            self.rules = text
            self.syncs += 1
        self._mark_synced(version)


class NftablesProxy(Proxy):
    """The nftables-mode kube-proxy of one node: its own ``table ip kube-proxy``."""

    mode = "nftables"

    def sync(self) -> None:
        """A full sync: replace the table in one ``nft -f`` transaction (declaring it first,
        so the delete works on the first sync too)."""
        version, services, slices = self.state()
        start = time.perf_counter()
        text = nft_renderer.render(services, slices, node_name=self.node.name,
                                   node_ips=[self.node.ip],
                                   cluster_cidr=self.cluster.topology.pod_cidr,
                                   service_cidrs=[self.cluster.topology.service_cidr])
        self._timed("render", start)
        if text != self.rules:
            batch = "add table ip kube-proxy\ndelete table ip kube-proxy\n" + text
            start = time.perf_counter()
            self._transact(["nft", "-f", "-"], batch, batches.split_nft, "nft")
            self._timed("apply", start)
            self.rules = text
            self.syncs += 1
        self._mark_synced(version)

    def cleanup(self) -> None:
        self._run(["nft", "delete", "table", "ip", "kube-proxy"])
        self.rules = ""


class UserspaceProxy(Proxy):
    """The userspace-mode kube-proxy of one node: rules to a port, and a proxy process."""

    mode = "userspace"

    def __init__(self, cluster: Cluster, node: NodeSpec) -> None:
        super().__init__(cluster, node)
        self.state_path = cluster.workroot / "userspace" / f"{node.name}.json"
        self.log_path = cluster.workroot / "userspace" / f"{node.name}.log"
        self.ports: dict[tuple[str, str, str, str], int] = {}  # (ns, svc, port, proto) -> port
        self.process: subprocess.Popen | None = None
        self.rules = ""
        self._prepared = False

    def _proxy_port(self, key: tuple[str, str, str, str]) -> int:
        """The proxy port of a service port: the article's ports count up from 10400; the
        lab's own system services count down from the top of the range."""
        if key not in self.ports:
            taken = set(self.ports.values())
            low, high = PROXY_PORTS
            candidates = range(high, low - 1, -1) if key[0] == "kube-system" else \
                range(low, high + 1)
            self.ports[key] = next(p for p in candidates if p not in taken)
        return self.ports[key]

    def _prepare(self) -> None:
        for rule in portals.init_rules():
            if rule.op == "-N":
                self._run(["iptables", "-w", "-t", rule.table, "-N", rule.chain])
            else:
                self._ensure_rule(rule.table, rule.chain, list(rule.args), rule.op)
        self._prepared = True

    def _start_process(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.state_path.parent.mkdir(exist_ok=True)
        if not self.state_path.exists():
            self.state_path.write_text('{"services": []}')
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR}/{self.node.name}", "--",
                 node_environment()["KUBENET_PYTHON"], "-m", "kubenet.userspace_proxy",
                 "--state", str(self.state_path), "--poll", "0.05"],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **node_environment()},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()

    def plan(self, services: list[dict[str, Any]], slices: list[dict[str, Any]],
             ) -> tuple[dict[str, Any], list[portals.Rule]]:
        """The proxy process's state and the portal rules, for the current services."""
        by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for sl in slices:
            key = (sl["metadata"]["namespace"],
                   sl["metadata"]["labels"]["kubernetes.io/service-name"])
            by_service.setdefault(key, []).append(sl)
        state: list[dict[str, Any]] = []
        rules: list[portals.Rule] = []
        for svc in services:
            meta, spec = svc["metadata"], svc["spec"]
            for port in spec["ports"]:
                pname, proto = port.get("name", ""), port["protocol"]
                key = (meta["namespace"], meta["name"], pname, proto)
                proxy_port = self._proxy_port(key)
                name = portals.service_port_name(meta["namespace"], meta["name"], pname)
                endpoints = [f"{address}:{p['port']}"
                             for sl in by_service.get((meta["namespace"], meta["name"]), [])
                             for p in sl["ports"]
                             if p.get("name", "") == pname and "port" in p
                             for ep in sl["endpoints"] if ep["conditions"].get("ready")
                             for address in ep["addresses"]]
                affinity = spec.get("sessionAffinity", "None")
                timeout = spec.get("sessionAffinityConfig", {}).get("clientIP", {}).get(
                    "timeoutSeconds", 10800)
                state.append({"name": name, "protocol": proto, "proxy_port": proxy_port,
                              "endpoints": endpoints, "session_affinity": affinity,
                              "affinity_timeout": timeout})
                rules += portals.service_rules(name, spec["clusterIP"], port["port"], proto,
                                               proxy_port, self.node.ip,
                                               node_port=port.get("nodePort", 0))
        return {"services": state}, rules

    def sync(self) -> None:
        version, services, slices = self.cluster.proxy_state()
        if not self._prepared:
            self._prepare()
        self._start_process()
        state, rules = self.plan(services, slices)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)
        chains = [r for r in portals.init_rules() if r.op == "-N"]
        text = portals.restore_text(chains, rules)
        if text != self.rules:
            self._restore(text)
            self.rules = text
            self.syncs += 1
        self._wait_listening(state)
        self._mark_synced(version)

    def _wait_listening(self, state: dict[str, Any], timeout: float = 5.0) -> None:
        """Until the process listens on every TCP proxy port (it reads its state file)."""
        import time

        wanted = {s["proxy_port"] for s in state["services"] if s["protocol"] == "TCP"}
        deadline = time.monotonic() + timeout
        while self.process is not None and self.process.poll() is None:
            if wanted <= listening_tcp_ports(self.process.pid) or time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the proxy: its process ends, so traffic to cluster IPs stops on this node."""
        super().stop()
        if self.process is not None:
            stop_process_group(self.process, grace=1)
            self.process = None

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""
