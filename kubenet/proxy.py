"""kube-proxy on each node of the lab: watch Services and EndpointSlices, write the rules.

Each node runs one ``KubeProxy`` thread in the agent. On every change it renders the
node's ruleset with the same pure renderer as ``kubenet render-iptables`` and applies it
atomically with ``iptables-restore`` inside the node's network namespace, as kube-proxy's
iptables mode does. Stopping it leaves the rules in place: the kernel keeps forwarding.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import TYPE_CHECKING

from .kubeproxy import iptables as renderer
from .net import NETNS_DIR

if TYPE_CHECKING:
    from .cluster import Cluster
    from .topology import NodeSpec

__all__ = ["KubeProxy", "NFACCT_COUNTERS"]

# The counters kube-proxy creates with nfnetlink_acct before its rules refer to them.
NFACCT_COUNTERS = ("localhost_nps_accepted_pkts", "ct_state_invalid_dropped_pkts")


class KubeProxy:
    """The iptables-mode kube-proxy of one node."""

    def __init__(self, cluster: Cluster, node: NodeSpec) -> None:
        self.cluster = cluster
        self.node = node
        self.running = False
        self.synced_version = -1
        self.rules = ""  # the last iptables-restore input applied
        self.syncs = 0
        self.notes: list[str] = []
        self.error = ""
        self._thread: threading.Thread | None = None
        self._prepared = False
        self.nfacct = True

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={NETNS_DIR}/{self.node.name}", "--", *argv],
                              input=stdin, capture_output=True, text=True)

    def _prepare(self) -> None:
        """What kube-proxy does once at start: sysctls, nfacct counters, the jump chains."""
        # Localhost NodePorts need route_localnet, which kube-proxy sets on its node.
        self._run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"])
        if shutil.which("nfacct") is None:
            self.nfacct = False
            self.notes.append("nfacct is not installed, so the rules leave out kube-proxy's "
                              "'-m nfacct' counter (apt-get install nfacct)")
        else:
            for name in NFACCT_COUNTERS:
                if self._run(["nfacct", "add", name]).returncode != 0 and \
                        name not in self._run(["nfacct", "list"]).stdout:
                    self.nfacct = False
                    self.notes.append("this kernel cannot make nfacct counters, so the rules "
                                      "leave out kube-proxy's '-m nfacct' counter")
        for table, chain, args in renderer.jump_rules():
            target = args[args.index("-j") + 1]
            self._run(["iptables", "-w", "-t", table, "-N", target])
            if self._run(["iptables", "-w", "-t", table, "-C", chain, *args]).returncode != 0:
                done = self._run(["iptables", "-w", "-t", table, "-I", chain, *args])
                if done.returncode != 0:
                    raise RuntimeError(f"{self.node.name}: {done.stderr.strip()}")
        self._prepared = True

    def sync(self) -> None:
        """One full sync: render everything, apply it in one iptables-restore."""
        version, services, slices = self.cluster.proxy_state()
        if not self._prepared:
            self._prepare()
        options = {"node_name": self.node.name, "node_ips": [self.node.ip],
                   "cluster_cidr": self.cluster.topology.pod_cidr, "nfacct": self.nfacct}
        text = renderer.render(services, slices, **options)
        if text != self.rules:
            # As kube-proxy does on a full sync: chains it no longer needs are deleted (-X).
            saved = self._run(["iptables-save", "-t", "nat"]).stdout
            existing = [line[1:].split()[0] for line in saved.splitlines()
                        if line.startswith(":")]
            apply = renderer.render(services, slices, existing_nat_chains=existing, **options)
            done = self._run(["iptables-restore", "-w", "--noflush", "--counters"], apply)
            if done.returncode != 0:
                self.error = done.stderr.strip()
                raise RuntimeError(f"{self.node.name}: iptables-restore: {self.error}")
            self.rules = text
            self.syncs += 1
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
                self.sync()
                self.error = ""
            except Exception as err:  # keep running, as kube-proxy does; retry on next change
                self.error = str(err)

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"kube-proxy-{self.node.name}")
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the rules already in the kernel stay, as with a real kube-proxy."""
        self.running = False
        with self.cluster.lock:
            self.cluster.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def synced(self) -> bool:
        return self.running and self.synced_version >= self.cluster.version
