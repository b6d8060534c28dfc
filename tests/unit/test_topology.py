"""kubenet.topology: the article's cluster as data and the iproute2 commands that build it."""

import ipaddress
import re

import pytest

from kubenet.net import veth_name
from kubenet.topology import NodeSpec, PodPlumbing, Topology, article_topology

IFNAMSIZ = 15  # Linux interface names: at most 15 characters


def interface_names(commands):
    """Every interface name an iproute2 batch line creates or names."""
    names = set()
    for line in commands:
        words = line.split()
        if words[0] == "link" and words[1] in ("add", "set"):
            names.add(words[2])
        names.update(words[i + 1] for i, w in enumerate(words[:-1])
                     if w in ("dev", "name", "master"))
    return names


def all_commands(topo):
    lines = topo.gateway_commands() + topo.external_commands()
    for n in topo.nodes:
        lines += topo.node_commands(n)
    return lines


def test_article_nodes():
    topo = article_topology()
    assert [(n.name, n.ip, n.pod_cidr) for n in topo.nodes] == [
        ("node1", "10.100.0.2", "10.0.1.0/24"),
        ("node2", "10.100.0.3", "10.0.2.0/24"),
    ]
    assert [n.bridge_ip for n in topo.nodes] == ["10.0.1.1", "10.0.2.1"]


def test_article_networks():
    topo = article_topology()
    assert topo.node_cidr == "10.100.0.0/24"
    assert topo.gateway_ip == "10.100.0.1"
    assert topo.service_cidr == "10.3.240.0/20"
    assert topo.external_ip == "203.0.113.10"
    assert topo.external_gateway_ip == "203.0.113.1"
    pod_range = ipaddress.ip_network(topo.pod_cidr)
    for n in topo.nodes:
        assert ipaddress.ip_network(n.pod_cidr).subnet_of(pod_range)
        assert ipaddress.ip_address(n.ip) in ipaddress.ip_network(topo.node_cidr)
    # The article's cluster IP lies in the service range, which no node's pods use
    # (as on GKE, the service range is carved out of the top of the /14).
    services = ipaddress.ip_network(topo.service_cidr)
    assert ipaddress.ip_address("10.3.241.152") in services
    assert not any(services.overlaps(ipaddress.ip_network(n.pod_cidr)) for n in topo.nodes)


def test_namespaces():
    assert article_topology().namespaces() == ["gateway", "external", "node1", "node2"]


def test_each_call_builds_a_fresh_topology():
    a, b = article_topology(), article_topology()
    assert a == b
    a.extra["x"] = "y"
    assert b.extra == {}


def test_gateway_commands():
    assert article_topology().gateway_commands() == [
        "link set lo up",
        "link add nodes0 type bridge",
        "addr add 10.100.0.1/24 dev nodes0",
        "link set nodes0 up",
        "link add to-node1 type veth peer name eth0 netns node1",
        "link set to-node1 master nodes0 up",
        "link add to-node2 type veth peer name eth0 netns node2",
        "link set to-node2 master nodes0 up",
        "link add ext0 type veth peer name eth0 netns external",
        "addr add 203.0.113.1/24 dev ext0",
        "link set ext0 up",
        "route add 10.0.1.0/24 via 10.100.0.2",
        "route add 10.0.2.0/24 via 10.100.0.3",
    ]


def test_gateway_routes_each_pod_range_to_its_node():
    lines = article_topology().gateway_commands()
    assert "route add 10.0.1.0/24 via 10.100.0.2" in lines
    assert "route add 10.0.2.0/24 via 10.100.0.3" in lines
    # Routes come after the links they use.
    assert lines.index("route add 10.0.1.0/24 via 10.100.0.2") > lines.index("link set nodes0 up")


def test_node_commands():
    topo = article_topology()
    node1, node2 = topo.nodes
    assert topo.node_commands(node1) == [
        "link set lo up",
        "addr add 10.100.0.2/24 dev eth0",
        "link set eth0 up",
        "route add default via 10.100.0.1",
        "link add cbr0 type bridge",
        "addr add 10.0.1.1/24 dev cbr0",
        "link set cbr0 up",
    ]
    assert "addr add 10.0.2.1/24 dev cbr0" in topo.node_commands(node2)
    assert "addr add 10.100.0.3/24 dev eth0" in topo.node_commands(node2)


def test_external_commands():
    assert article_topology().external_commands() == [
        "link set lo up",
        "addr add 203.0.113.10/24 dev eth0",
        "link set eth0 up",
        "route add default via 203.0.113.1",
    ]


def test_sysctls():
    gw = Topology.gateway_sysctls()
    assert gw["net.ipv4.ip_forward"] == "1"
    assert gw["net.ipv4.conf.all.send_redirects"] == "0"
    assert gw["net.ipv4.conf.nodes0.send_redirects"] == "0"
    node = Topology.node_sysctls()
    assert node == {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}


def test_commands_are_iproute2_batch_lines():
    for line in all_commands(article_topology()):
        assert line.split()[0] in ("link", "addr", "route")
        assert "\n" not in line


def test_interface_names_fit_in_ifnamsiz():
    topo = article_topology()
    names = interface_names(all_commands(topo))
    assert {"nodes0", "to-node1", "to-node2", "ext0", "eth0", "cbr0", "lo"} <= names
    assert all(len(n) <= IFNAMSIZ for n in names), names


def test_long_node_names_are_truncated_to_ifnamsiz():
    topo = Topology(nodes=[NodeSpec("a-rather-long-node-name", "10.100.0.2", "10.0.1.0/24")])
    names = interface_names(topo.gateway_commands())
    assert Topology.gateway_port(topo.nodes[0]) in names
    assert Topology.gateway_port(topo.nodes[0]).startswith("to-")
    assert all(len(n) <= IFNAMSIZ for n in names)


def test_gateway_veth_names_stay_distinct_for_long_node_names():
    topo = Topology(nodes=[NodeSpec("worker-node-a-1", "10.100.0.2", "10.0.1.0/24"),
                           NodeSpec("worker-node-a-2", "10.100.0.3", "10.0.2.0/24")])
    ports = [line.split()[2] for line in topo.gateway_commands()
             if line.startswith("link add to-")]
    assert len(set(ports)) == 2


def test_custom_topology_prefixes():
    topo = Topology(nodes=[NodeSpec("n1", "192.168.0.10", "172.16.5.0/25")],
                    node_cidr="192.168.0.0/16", external_cidr="198.51.100.0/24",
                    external_ip="198.51.100.7")
    assert topo.gateway_ip == "192.168.0.1"
    assert "addr add 192.168.0.1/16 dev nodes0" in topo.gateway_commands()
    assert "route add 172.16.5.0/25 via 192.168.0.10" in topo.gateway_commands()
    assert "addr add 172.16.5.1/25 dev cbr0" in topo.node_commands(topo.nodes[0])
    assert "addr add 198.51.100.7/24 dev eth0" in topo.external_commands()


# -- PodPlumbing -----------------------------------------------------------------------------

def plumbing():
    node1 = article_topology().nodes[0]
    return PodPlumbing("default.service-test-6ffd9ddbbf-kf4j2", node1,
                       veth_name("0b0e1f4a-uid"), "10.0.1.2")


def test_pod_plumbing_node_commands_set_hairpin_on():
    p = plumbing()
    veth = p.host_veth
    assert p.node_commands() == [
        f"link add {veth} type veth peer name eth0 netns default.service-test-6ffd9ddbbf-kf4j2",
        f"link set {veth} master cbr0",
        f"link set {veth} type bridge_slave hairpin on",
        f"link set {veth} up",
    ]
    # Hairpin is set once the port is on the bridge.
    lines = p.node_commands()
    assert lines.index(f"link set {veth} master cbr0") < lines.index(
        f"link set {veth} type bridge_slave hairpin on")


def test_pod_plumbing_pod_commands():
    assert plumbing().pod_commands() == [
        "link set lo up",
        "addr add 10.0.1.2/24 dev eth0",
        "link set eth0 up",
        "route add default via 10.0.1.1",
    ]


def test_pod_plumbing_interface_names_fit():
    p = plumbing()
    names = interface_names(p.node_commands() + p.pod_commands())
    assert names == {p.host_veth, "eth0", "cbr0", "lo"}
    assert all(len(n) <= IFNAMSIZ for n in names)


@pytest.mark.parametrize("key", ["", "x", "0b0e1f4a-6c1d-4c1e-9a55-2f7a5b4f0a11", "k" * 500])
def test_veth_names_are_short_and_stable(key):
    name = veth_name(key)
    assert re.fullmatch(r"veth[0-9a-f]{8}", name)
    assert len(name) <= IFNAMSIZ
    assert veth_name(key) == name
