"""The article's cluster as data, and the iproute2 commands that build it (pure)."""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field

__all__ = ["NodeSpec", "Topology", "article_topology", "PodPlumbing"]

NODE_CIDR = "10.100.0.0/24"
POD_CIDR = "10.0.0.0/14"
SERVICE_CIDR = "10.3.240.0/20"
EXTERNAL_CIDR = "203.0.113.0/24"
EXTERNAL_IP = "203.0.113.10"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str  # eth0 on the node network
    pod_cidr: str  # the /24 behind cbr0

    @property
    def bridge_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))


@dataclass
class Topology:
    """Gateway, nodes and external client; the kernel objects follow from it."""

    nodes: list[NodeSpec]
    node_cidr: str = NODE_CIDR
    pod_cidr: str = POD_CIDR
    service_cidr: str = SERVICE_CIDR
    external_ip: str = EXTERNAL_IP
    external_cidr: str = EXTERNAL_CIDR
    gateway_ns: str = "gateway"
    external_ns: str = "external"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def gateway_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.node_cidr).hosts()))

    @property
    def external_gateway_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.external_cidr).hosts()))

    def namespaces(self) -> list[str]:
        return [self.gateway_ns, self.external_ns, *(n.name for n in self.nodes)]

    def gateway_commands(self) -> list[str]:
        """Run in the gateway: the node network's bridge, the veths to nodes, the pod routes."""
        prefix = ipaddress.ip_network(self.node_cidr).prefixlen
        ext_prefix = ipaddress.ip_network(self.external_cidr).prefixlen
        lines = [
            "link set lo up",
            "link add nodes0 type bridge",
            f"addr add {self.gateway_ip}/{prefix} dev nodes0",
            "link set nodes0 up",
        ]
        for node in self.nodes:
            port = self.gateway_port(node)
            lines += [
                f"link add {port} type veth peer name eth0 netns {node.name}",
                f"link set {port} master nodes0 up",
            ]
        lines += [
            f"link add ext0 type veth peer name eth0 netns {self.external_ns}",
            f"addr add {self.external_gateway_ip}/{ext_prefix} dev ext0",
            "link set ext0 up",
        ]
        lines += [f"route add {n.pod_cidr} via {n.ip}" for n in self.nodes]
        return lines

    @staticmethod
    def gateway_port(node: NodeSpec) -> str:
        """The gateway's side of the link to ``node``: readable, and at most 15 characters."""
        name = f"to-{node.name}"
        return name if len(name) <= 15 else f"to-{zlib.crc32(node.name.encode()):08x}"

    def node_commands(self, node: NodeSpec) -> list[str]:
        prefix = ipaddress.ip_network(self.node_cidr).prefixlen
        pod_prefix = ipaddress.ip_network(node.pod_cidr).prefixlen
        return [
            "link set lo up",
            f"addr add {node.ip}/{prefix} dev eth0",
            "link set eth0 up",
            f"route add default via {self.gateway_ip}",
            "link add cbr0 type bridge",
            f"addr add {node.bridge_ip}/{pod_prefix} dev cbr0",
            "link set cbr0 up",
        ]

    def external_commands(self) -> list[str]:
        prefix = ipaddress.ip_network(self.external_cidr).prefixlen
        return [
            "link set lo up",
            f"addr add {self.external_ip}/{prefix} dev eth0",
            "link set eth0 up",
            f"route add default via {self.external_gateway_ip}",
        ]

    @staticmethod
    def gateway_sysctls() -> dict[str, str]:
        # The gateway routes node-to-node traffic back out of the port it came in on:
        # without this it would also tell the nodes to go direct (ICMP redirects).
        return {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.nodes0.send_redirects": "0",
        }

    @staticmethod
    def node_sysctls() -> dict[str, str]:
        # What a kubelet/kube-proxy node needs: routing, and bridged pod traffic seen by
        # iptables (br_netfilter), so a service reached from the same bridge is rewritten.
        return {
            "net.ipv4.ip_forward": "1",
            "net.bridge.bridge-nf-call-iptables": "1",
        }


def article_topology() -> Topology:
    return Topology(nodes=[
        NodeSpec("node1", "10.100.0.2", "10.0.1.0/24"),
        NodeSpec("node2", "10.100.0.3", "10.0.2.0/24"),
    ])


@dataclass(frozen=True)
class PodPlumbing:
    """What the CNI bridge plugin does for one pod: a veth into cbr0, an address, a route."""

    netns: str
    node: NodeSpec
    host_veth: str
    ip: str

    def node_commands(self) -> list[str]:
        return [
            f"link add {self.host_veth} type veth peer name eth0 netns {self.netns}",
            f"link set {self.host_veth} master cbr0",
            f"link set {self.host_veth} type bridge_slave hairpin on",
            f"link set {self.host_veth} up",
        ]

    def pod_commands(self) -> list[str]:
        prefix = ipaddress.ip_network(self.node.pod_cidr).prefixlen
        return [
            "link set lo up",
            f"addr add {self.ip}/{prefix} dev eth0",
            "link set eth0 up",
            f"route add default via {self.node.bridge_ip}",
        ]
