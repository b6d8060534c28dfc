"""kubenet.draw: diagrams from a fixed lab description (pure, plus graphviz's dot for SVG).

The fixtures in data/draw were captured once from a real article lab (root tier):
``article-inventory.json`` is what the agent's ``inventory`` op returned (``ip -4 -j -d``:
addresses, routes, every link and ``netns list-id`` per namespace), ``article-services.json``
is ``get services -o json -A``, ``article-node1.iptables-save-c.txt`` is ``lab.rules("node1",
counters=True)`` after 20 requests to the service, and ``article-userspace-node1.nat.txt`` is
node1's nat table in userspace mode. ``cluster-node.iptables-save-c.txt`` is written in
kube-proxy's own format for an ordinary cluster node (three endpoints, a NodePort, ip-masq).
``trace-clusterip.json`` is shaped like ``kubenet trace --json``, written by hand over the
fixture lab's interfaces (the ClusterIP request from kf4j2, DNAT to 10.0.2.2:8080 on node1);
``trace-clusterip-captured.json`` is ``lab.trace(kf4j2, "10.3.241.152:80", json=True)`` from
a real article lab (the same names and addresses as the inventory's lab).
"""

import copy
import dataclasses
import json
import random
import re
from pathlib import Path

import pytest

import kubenet
from kubenet import cli
from kubenet.draw import (
    Diagram,
    draw_rules,
    draw_topology,
    draw_trace,
    parse_iptables_save,
    read_dump,
    render,
    sanitize_svg,
    service_addresses,
    veth_pairs,
)
from kubenet.errors import BadRequest
from kubenet.inventory import Inventory

DATA = Path(__file__).parent / "data" / "draw"
IPTABLES = Path(__file__).parent / "data" / "iptables"


def raw_inventory():
    return json.loads((DATA / "article-inventory.json").read_text())


@pytest.fixture
def inventory():
    return Inventory(raw_inventory())


@pytest.fixture
def services():
    return (DATA / "article-services.json").read_text()


@pytest.fixture
def trace():
    return json.loads((DATA / "trace-clusterip.json").read_text())


def dump(name):
    return (DATA / name).read_text()


def cluster_body(source, name):
    """The text of ``subgraph NAME { ... }`` in DOT source (nested braces included)."""
    start = source.index(f"subgraph {name} {{")
    depth, i = 0, source.index("{", start)
    for j in range(i, len(source)):
        depth += {"{": 1, "}": -1}.get(source[j], 0)
        if depth == 0:
            return source[i:j + 1]
    raise AssertionError(f"unbalanced {name}")


def edges(source):
    """(tail, head, attributes) of every edge in DOT source."""
    return [(m[1], m[2], m[3] or "") for m in
            re.finditer(r'^\s*"?([^"\s]+)"?\s*->\s*"?([^"\s]+)"?\s*(?:\[(.*)\])?$', source, re.M)]


# -- the topology -----------------------------------------------------------------------

def test_veth_pairs_from_link_index_and_netnsid(inventory):
    pairs = veth_pairs(inventory)
    assert len(pairs) == 8
    assert (("gateway", "to-node1"), ("node1", "eth0")) in pairs
    assert (("gateway", "to-node2"), ("node2", "eth0")) in pairs
    assert (("external", "eth0"), ("gateway", "ext0")) in pairs
    assert (("default.service-test-6ffd9ddbbf-kf4j2", "eth0"), ("node1", "veth54fc3209")) in pairs
    assert (("default.service-test-6ffd9ddbbf-qs2j6", "eth0"), ("node2", "veth1a8ba22c")) in pairs
    assert (("kube-system.coredns-77bd64d469-t7st2", "eth0"), ("node2", "veth2c9bcb60")) in pairs
    # every pod's eth0 is paired with a port of its node's cbr0
    links = {(ns, link["ifname"]): link for ns in inventory.namespaces
             for link in inventory.links[ns]}
    for a, b in pairs:
        if "." in a[0]:
            assert links[b]["master"] == "cbr0"


def test_inventory_keeps_links_without_addresses(inventory):
    node1 = {link["ifname"]: link for link in inventory.links["node1"]}
    assert {"eth0", "cbr0", "veth54fc3209", "veth0d4ef83e", "veth9447a984"} <= set(node1)
    assert node1["veth54fc3209"]["addr_info"] == []
    assert node1["cbr0"]["addr_info"][0]["local"] == "10.0.1.1"
    assert inventory.nsids["node1"][0] == "gateway"


def test_veth_pairs_without_netns_ids_match_indexes_both_ways():
    raw = {
        "a": [[], [], [{"ifindex": 2, "ifname": "eth0", "link_index": 7, "link_netnsid": 0,
                        "linkinfo": {"info_kind": "veth"}}], []],
        "b": [[], [], [{"ifindex": 7, "ifname": "veth-a", "link_index": 2, "link_netnsid": 0,
                        "linkinfo": {"info_kind": "veth"}},
                       {"ifindex": 8, "ifname": "veth-x", "link_index": 3, "link_netnsid": 1,
                        "linkinfo": {"info_kind": "veth"}}], []],
    }
    assert veth_pairs(Inventory(raw)) == [(("a", "eth0"), ("b", "veth-a"))]


def test_topology_clusters_per_node_with_their_pods(inventory, services):
    source = draw_topology(inventory, services, service_cidr="10.3.240.0/20").source
    node1, node2 = cluster_body(source, "cluster_node1"), cluster_body(source, "cluster_node2")
    for pod in ("service-test-6ffd9ddbbf-kf4j2", "service-test-client1", "service-test-client2"):
        assert f'"default.{pod}/eth0"' in node1 and pod not in node2
    assert '"default.service-test-6ffd9ddbbf-qs2j6/eth0"' in node2
    assert "kube-system/coredns-77bd64d469-t7st2" in node2  # other namespaces say which
    assert "10.0.1.2/24" in node1 and "10.0.2.2/24" in node2
    assert '"node1/cbr0"' in node1 and "10.0.1.1/24" in node1
    assert '"node1/eth0"' in node1 and "10.100.0.2/24" in node1
    assert '"node1/veth54fc3209"' in node1
    gateway = cluster_body(source, "cluster_gateway")
    for iface in ("to-node1", "to-node2", "nodes0", "ext0"):
        assert f'"gateway/{iface}"' in gateway
    assert "10.100.0.1/24" in gateway
    external = cluster_body(source, "cluster_external")
    assert '"external/eth0"' in external and "203.0.113.10/24" in external


def test_topology_edges_are_the_kernels_veth_pairs_and_bridge_ports(inventory, services):
    found = {(t, h) for t, h, _ in edges(draw_topology(inventory, services).source)}
    assert ("default.service-test-6ffd9ddbbf-kf4j2/eth0", "node1/veth54fc3209") in found
    assert ("node1/veth54fc3209", "node1/cbr0") in found  # a port of cbr0
    assert ("node1/cbr0", "node1/eth0") in found  # the node routes between them
    assert ("node1/eth0", "gateway/to-node1") in found
    assert ("gateway/to-node1", "gateway/nodes0") in found
    assert ("gateway/ext0", "external/eth0") in found


def test_gateway_routes_are_drawn(inventory):
    gateway = cluster_body(draw_topology(inventory).source, "cluster_gateway")
    assert "gateway routes" in gateway
    for dst, via in (("10.0.1.0/24", "10.100.0.2"), ("10.0.2.0/24", "10.100.0.3")):
        assert re.search(rf"{re.escape(dst)}</td><td[^>]*>via {re.escape(via)}</td>"
                         r"<td[^>]*>dev nodes0", gateway)


def test_service_network_is_addresses_no_device_holds(inventory, services):
    source = draw_topology(inventory, services, service_cidr="10.3.240.0/20").source
    box = cluster_body(source, "cluster_service_network")
    assert "service network 10.3.240.0/20" in box and "no device holds" in box
    assert "style=dashed" in box
    assert "10.3.241.152" in box and "default/service-test" in box and "80/TCP" in box
    assert "10.3.240.10" in box and "kube-system/kube-dns" in box
    assert "held by" not in box
    # no interface carries a cluster IP, and nothing but an invisible line reaches the box
    outside = source.replace(box, "")
    assert "10.3.241.152" not in outside and "10.3.240.10" not in outside
    touching = [e for e in edges(source) if "service-network" in (e[0], e[1])]
    assert touching and all("style=invis" in attrs for _, _, attrs in touching)


def test_service_network_says_who_holds_a_cluster_ip(services):
    raw = raw_inventory()
    links = raw["node2"][0]
    cbr0 = next(link for link in links if link["ifname"] == "cbr0")
    cbr0["addr_info"].append({"family": "inet", "local": "10.3.241.152", "prefixlen": 32})
    box = cluster_body(draw_topology(Inventory(raw), services).source, "cluster_service_network")
    assert "held by node2/cbr0" in box


def test_service_addresses_accepts_list_items_and_text(services):
    doc = json.loads(services)
    rows = service_addresses(services)
    assert rows == service_addresses(doc) == service_addresses(doc["items"])
    assert [(r["name"], r["ips"], r["ports"]) for r in rows] == [
        ("kube-system/kube-dns", ["10.3.240.10"], ["53/UDP", "53/TCP"]),
        ("default/service-test", ["10.3.241.152"], ["80/TCP"]),
    ]
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}
    assert service_addresses([headless]) == []


def test_topology_is_the_same_whatever_order_the_kernel_listed(inventory, services):
    raw = raw_inventory()
    shuffled = {}
    rng = random.Random(7)
    for ns in sorted(raw, reverse=True):
        arrays = copy.deepcopy(raw[ns])
        for array in arrays:
            rng.shuffle(array)
        shuffled[ns] = arrays
    a = draw_topology(inventory, services, service_cidr="10.3.240.0/20").source
    b = draw_topology(Inventory(shuffled), services, service_cidr="10.3.240.0/20").source
    assert a == b


def test_svg_same_input_same_bytes(services):
    first = draw_topology(Inventory(raw_inventory()), services, service_cidr="10.3.240.0/20")
    second = draw_topology(Inventory(raw_inventory()), services, service_cidr="10.3.240.0/20")
    assert first.source == second.source
    a, b = first.svg(), second.svg()
    assert a == b
    assert a.startswith("<?xml") and "<svg" in a
    assert "Generated by graphviz" not in a and "<!-- Title:" not in a
    assert "0x" not in first.source  # no memory addresses in ids
    assert render(first.source) == render(second.source) == a.encode()


def test_sanitize_svg_removes_what_varies():
    svg = (b'<?xml version="1.0"?>\n<!-- Generated by graphviz version 9.0.0 (20230911.1827)\n'
           b' -->\n<!-- Title: %3 Pages: 1 -->\n<svg/>\n')
    assert sanitize_svg(svg) == b'<?xml version="1.0"?>\n<svg/>\n'


def test_diagram_shows_itself_in_a_notebook(inventory):
    diagram = draw_topology(inventory)
    bundle = diagram._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}
    assert bundle["image/svg+xml"] == diagram._repr_svg_() == diagram.svg()
    assert bundle["text/plain"] == repr(diagram) == (
        "<Diagram: topology, 9 namespaces, 5 pods, 0 services>")
    assert diagram.pipe("dot") == diagram.source.encode()


def test_diagram_save(tmp_path, inventory):
    diagram = draw_topology(inventory)
    assert diagram.save(tmp_path / "t.svg").read_text() == diagram.svg()
    assert diagram.save(tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert diagram.save(tmp_path / "t.dot").read_text() == diagram.source


def test_unknown_format_is_one_clear_error(inventory):
    with pytest.raises(BadRequest, match="cannot draw as 'nope'"):
        draw_topology(inventory).pipe("nope")


# -- a trace on the topology ----------------------------------------------------------

def test_trace_path_is_highlighted_in_order(inventory, services, trace):
    source = draw_trace(inventory, trace, services, service_cidr="10.3.240.0/20").source
    path = [
        ("default.service-test-6ffd9ddbbf-kf4j2/eth0", "node1/veth54fc3209", "forward"),
        ("node1/veth54fc3209", "node1/cbr0", "forward"),
        ("node1/cbr0", "node1/eth0", "forward"),
        ("node1/eth0", "gateway/to-node1", "forward"),
        ("gateway/to-node1", "gateway/nodes0", "forward"),
        ("gateway/to-node2", "gateway/nodes0", "back"),  # out through a port: against the line
        ("node2/eth0", "gateway/to-node2", "back"),
        ("node2/cbr0", "node2/eth0", "back"),
        ("node2/veth1a8ba22c", "node2/cbr0", "back"),
        ("default.service-test-6ffd9ddbbf-qs2j6/eth0", "node2/veth1a8ba22c", "back"),
    ]
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    for step, (tail, head, direction) in enumerate(path, 1):
        attrs = found[(tail, head)]
        assert f"<b>{step}</b>" in attrs, (step, attrs)
        assert f"dir={direction}" in attrs and "color=\"#d62728\"" in attrs
    red = [(t, h) for (t, h), attrs in found.items() if "penwidth=2.6" in attrs]
    assert len(red) == len(path)  # nothing else is highlighted; the layout is the topology's
    assert ("node1/veth0d4ef83e", "node1/cbr0") in found
    assert "penwidth=2.6" not in found[("node1/veth0d4ef83e", "node1/cbr0")]


def test_trace_marks_the_rewrite_with_addresses_before_and_after(inventory, trace):
    source = draw_trace(inventory, trace).source
    node1 = cluster_body(source, "cluster_node1")
    assert '"trace/rewrite1"' in node1  # the note sits in the node that rewrote the packet
    note = next(line for line in node1.splitlines() if '"trace/rewrite1"' in line)
    assert "rewritten in node1" in note
    assert "DNAT 10.3.241.152:80 → 10.0.2.2:8080" in note
    for chain in ("PREROUTING", "KUBE-SERVICES", "KUBE-SVC-GBTMB5ZTD56ECL5F",
                  "KUBE-SEP-CCUNI5TAEJBRFII7"):
        assert chain in note
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    # the address change is labelled where it is first seen: leaving node1's eth0
    assert "10.0.1.2:40000 → 10.0.2.2:8080" in found[("node1/cbr0", "node1/eth0")]
    assert "sends 10.0.1.2:40000 → 10.3.241.152:80" in source
    assert "receives 10.0.1.2:40000 → 10.0.2.2:8080" in source
    assert "trace: 10.0.1.2:40000 → 10.3.241.152:80; DNAT 10.3.241.152:80 → 10.0.2.2:8080" \
        in source
    assert ("trace/rewrite1", "node1/eth0") in found


def test_a_captured_trace_on_the_topology(inventory, services):
    doc = json.loads((DATA / "trace-clusterip-captured.json").read_text())
    source = draw_trace(inventory, doc, services, service_cidr="10.3.240.0/20").source
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    red = [attrs for attrs in found.values() if "penwidth=2.6" in attrs]
    assert len(red) == 10 and all("constraint=false" not in a for a in red)  # all on the map
    # bridge netfilter rewrote it as it crossed from the pod's veth into cbr0
    into_bridge = found[("node1/veth54fc3209", "node1/cbr0")]
    assert "<b>2</b>" in into_bridge and "→ 10.0.2.2:8080" in into_bridge
    note = next(line for line in source.splitlines() if '"trace/rewrite1" [' in line)
    walk = re.findall(r">(?:→ )?([A-Z][A-Z0-9-]+)</font>", note)
    assert walk == ["PREROUTING", "KUBE-SERVICES", "KUBE-SVC-GBTMB5ZTD56ECL5F",
                    "KUBE-SEP-CCUNI5TAEJBRFII7", "DNAT"]
    assert "receives 10.0.1.2:63531 → 10.0.2.2:8080" in source


def test_trace_accepts_json_text_and_objects(inventory, trace):
    expected = draw_trace(inventory, trace).source

    @dataclasses.dataclass
    class Hop:
        ns: str
        iface: str
        dir: str
        src: str
        dst: str

    class Trace:
        def __init__(self, doc):
            self.hops = [Hop(**{k: h[k] for k in ("ns", "iface", "dir", "src", "dst")})
                         for h in doc["hops"]]
            self.rules = doc["rules"]

    assert draw_trace(inventory, json.dumps(trace)).source == expected
    assert draw_trace(inventory, Trace(trace)).source == expected


def test_trace_with_snat_and_unknown_interfaces(inventory):
    doc = {"hops": [
        {"ns": "external", "iface": "eth0", "dir": "out", "src": "203.0.113.10:5555",
         "dst": "10.100.0.2:30080"},
        {"ns": "gateway", "iface": "ext0", "dir": "in", "src": "203.0.113.10:5555",
         "dst": "10.100.0.2:30080"},
        {"ns": "gateway", "iface": "nodes0", "dir": "out", "src": "203.0.113.10:5555",
         "dst": "10.100.0.2:30080"},
        {"ns": "gateway", "iface": "to-node1", "dir": "out", "src": "203.0.113.10:5555",
         "dst": "10.100.0.2:30080"},
        {"ns": "node1", "iface": "eth0", "dir": "in", "src": "203.0.113.10:5555",
         "dst": "10.100.0.2:30080"},
        {"ns": "node1", "iface": "eth0", "dir": "out", "src": "10.100.0.2:61000",
         "dst": "10.0.2.2:8080"},
        {"ns": "node1", "iface": "tun9", "dir": "out", "src": "10.100.0.2:61000",
         "dst": "10.0.2.2:8080"},
    ], "rules": [{"node": "node1", "table": "nat", "chain": "KUBE-SEP-X", "rule": "-j DNAT",
                  "verdict": "DNAT"}]}
    source = draw_trace(inventory, doc).source
    assert "DNAT 10.100.0.2:30080 → 10.0.2.2:8080" in source
    assert "SNAT 203.0.113.10:5555 → 10.100.0.2:61000" in source
    assert '"node1/tun9"' in cluster_body(source, "cluster_node1")  # drawn where it says
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    assert "constraint=false" in found[("node1/eth0", "node1/tun9")]
    # in and out of node1's eth0 with new addresses: the wire before still carries the old
    assert "10.0.2.2:8080" not in found[("node1/eth0", "gateway/to-node1")]
    assert "dir=back" in found[("node1/eth0", "gateway/to-node1")]
    assert "<b>5</b> <font color=\"#d62728\">10.100.0.2:61000 → 10.0.2.2:8080" in found[
        ("node1/eth0", "node1/tun9")]
    assert ("trace/rewrite1", "node1/eth0") in found


def test_trace_there_and_back_over_one_line(inventory):
    pod = "default.service-test-6ffd9ddbbf-kf4j2"
    before, after = ("10.0.1.2:40000", "10.3.241.152:80"), ("10.0.1.1:40000", "10.0.1.2:8080")
    hops = [(pod, "eth0", before), ("node1", "veth54fc3209", before), ("node1", "cbr0", before),
            ("node1", "cbr0", after), ("node1", "veth54fc3209", after), (pod, "eth0", after)]
    doc = {"hops": [{"ns": ns, "iface": i, "dir": "", "src": a[0], "dst": a[1]}
                    for ns, i, a in hops], "rules": []}
    source = draw_trace(inventory, doc).source
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    there = found[(f"{pod}/eth0", "node1/veth54fc3209")]
    assert "dir=both" in there and "<b>1</b>" in there and "<b>4</b>" in there
    assert "rewritten in node1" in source
    assert "SNAT 10.0.1.2:40000 → 10.0.1.1:40000" in source


def test_trace_in_userspace_mode_shows_the_second_connection(inventory):
    pod = "default.service-test-6ffd9ddbbf-kf4j2"
    first, second = ("10.0.1.2:40000", "10.3.241.152:80"), ("10.100.0.2:51000", "10.0.2.2:8080")
    hops = [(pod, "eth0", first, 1), ("node1", "veth54fc3209", first, 1),
            ("node1", "cbr0", first, 1), ("node1", "eth0", second, 2),
            ("gateway", "to-node1", second, 2)]
    doc = {"hops": [{"ns": ns, "iface": i, "dir": "", "src": a[0], "dst": a[1], "leg": leg}
                    for ns, i, a, leg in hops], "rules": []}
    source = draw_trace(inventory, doc).source
    assert "proxied in node1" in source and "DNAT" not in source
    assert "a new connection 10.100.0.2:51000 → 10.0.2.2:8080" in source
    assert "proxied in node1, on to 10.0.2.2:8080" in source


def test_trace_keeps_the_topologys_layout(inventory, trace):
    def declared(source):
        return [m for m in re.findall(r'^\t+"([^"]+)" \[', source, re.M)
                if not m.startswith("trace/")]
    assert declared(draw_trace(inventory, trace).source) == declared(
        draw_topology(inventory).source)


def test_trace_svg_is_stable(inventory, trace):
    assert draw_trace(inventory, trace).svg() == draw_trace(
        Inventory(raw_inventory()), copy.deepcopy(trace)).svg()


# -- the nat chains ---------------------------------------------------------------------

def test_rules_from_a_lab_node_with_counters():
    diagram = draw_rules(dump("article-node1.iptables-save-c.txt"), node="node1")
    source = diagram.source
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    svc, sep1, sep2 = ("chain/KUBE-SVC-GBTMB5ZTD56ECL5F", "chain/KUBE-SEP-SWDHQQVZNE4DIAR4",
                       "chain/KUBE-SEP-CCUNI5TAEJBRFII7")
    assert "24 pkts, 1444 B" in found[("chain/PREROUTING", "chain/KUBE-SERVICES")]
    assert ("chain/OUTPUT", "chain/KUBE-SERVICES") in found
    into = found[("chain/KUBE-SERVICES", svc)]
    assert "10.3.241.152:80/tcp" in into and "21 pkts, 1260 B" in into
    assert "<b>p=0.5</b> · 50%" in found[(svc, sep1)] and "9 pkts, 540 B" in found[(svc, sep1)]
    assert "<b>rest</b> · 50%" in found[(svc, sep2)] and "12 pkts, 720 B" in found[(svc, sep2)]
    assert "! from 10.0.0.0/14" in found[(svc, "chain/KUBE-MARK-MASQ")]
    assert "style=dashed" in found[(svc, "chain/KUBE-MARK-MASQ")]
    dnat = {h: attrs for (t, h), attrs in found.items() if t == sep2 and h.startswith("target/")}
    assert len(dnat) == 1
    assert re.search(rf'"{next(iter(dnat))}" \[label=<<b>DNAT</b> 10.0.2.2:8080>', source)
    assert "DNAT</b> 10.0.1.2:8080" in source and "DNAT</b> 10.0.2.254:53" in source
    # the Service each chain is for, from kube-proxy's comments
    assert re.search(r'"chain/KUBE-SVC-GBTMB5ZTD56ECL5F" \[label=<[^>]*>[^\n]*'
                     r"default/service-test<br/>[^\n]*10.3.241.152:80/tcp", source)
    assert ("chain/KUBE-SERVICES", "chain/KUBE-NODEPORTS") in found
    assert ("chain/POSTROUTING", "chain/KUBE-POSTROUTING") in found
    assert "MASQUERADE" in source
    assert "KUBE-FORWARD" not in source  # the filter table is not drawn
    assert repr(diagram) == ("<Diagram: node1: iptables nat chains (packet counters from "
                             "iptables-save -c): 14 chains, 3 services, 4 endpoints>")


def test_rules_three_endpoints_share_a_third_each():
    source = draw_rules(dump("cluster-node.iptables-save-c.txt")).source
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    svc = "chain/KUBE-SVC-LC5QY66VUV2HJ6WZ"
    shares = [found[(svc, f"chain/KUBE-SEP-{sep}")] for sep in
              ("OW5NBXRWY6YBZP7V", "2ZVLEZGN7NCDLR2G", "SNTJI2QEPHQH2PTM")]
    assert "<b>p=0.333333</b> · 33%" in shares[0] and "142 pkts, 8520 B" in shares[0]
    assert "<b>p=0.5</b> · 33%" in shares[1]
    assert "<b>rest</b> · 33%" in shares[2]
    # NodePort: KUBE-NODEPORTS -> KUBE-EXT -> KUBE-SVC, and the EXT chain marks for SNAT
    assert "port 31380/tcp" in found[("chain/KUBE-NODEPORTS", "chain/KUBE-EXT-LC5QY66VUV2HJ6WZ")]
    assert ("chain/KUBE-EXT-LC5QY66VUV2HJ6WZ", svc) in found
    assert ("chain/KUBE-EXT-LC5QY66VUV2HJ6WZ", "chain/KUBE-MARK-MASQ") in found
    assert "dst-type LOCAL" in found[("chain/KUBE-SERVICES", "chain/KUBE-NODEPORTS")]
    # chains that are not kube-proxy's are drawn too, their long comments cut short
    assert ("chain/POSTROUTING", "chain/IP-MASQ") in found
    assert "ip-masq: ensure nat POSTROUTING directs all…" in source
    assert "KUBE-PROXY-CANARY" not in source  # empty and never jumped to


def test_rules_without_counters():
    source = draw_rules((IPTABLES / "overall.raw.txt").read_text()).source
    assert not re.search(r"\d+ pkts?\b", source) and "counters" not in source
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    svc4 = "chain/KUBE-SVC-4SW47YFZTEDKD3PK"
    assert "<b>p=0.5</b> · 50%" in found[(svc4, "chain/KUBE-SEP-UKSFD7AGPMPPLUHC")]
    assert "<b>rest</b> · 50%" in found[(svc4, "chain/KUBE-SEP-C6EBXVWJJZMIWKLZ")]
    assert "<b>rest</b> · 100%" in found[("chain/KUBE-SVC-XPGD46QRK7WJZT7O",
                                          "chain/KUBE-SEP-SXIVWICOYRO3J4NJ")]
    assert "ns2/svc2:p80" in source and "KUBE-FW-NUKIZ6OKUXPJNT4C" in source


def test_rules_in_userspace_mode_redirect_to_the_proxy():
    source = draw_rules(dump("article-userspace-node1.nat.txt"), node="node1").source
    found = {(t, h): attrs for t, h, attrs in edges(source)}
    assert ("chain/PREROUTING", "chain/KUBE-PORTALS-CONTAINER") in found
    assert "REDIRECT</b> port 10400" in source
    assert "DNAT</b> 10.100.0.2:10400" in source
    redirect = [a for (t, _), a in found.items() if t == "chain/KUBE-PORTALS-CONTAINER"]
    assert any("10.3.241.152:80/tcp" in a and "default/service-test" in a for a in redirect)


def test_rules_parse_both_counter_forms():
    text = ("*nat\n:PREROUTING ACCEPT [5:300]\n:KUBE-SERVICES - [0:0]\n"
            "-A PREROUTING -j KUBE-SERVICES -c 7 420\n"
            "[3:180] -A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m tcp --dport 80 "
            "-m comment --comment \"a \\\"quoted\\\" name\" -j DNAT --to-destination 1.2.3.4:80\n"
            "COMMIT\n")
    chains = parse_iptables_save(text)["nat"]
    first, second = chains["PREROUTING"].rules[0], chains["KUBE-SERVICES"].rules[0]
    assert (first.pkts, first.bytes, first.target) == (7, 420, "KUBE-SERVICES")
    assert (second.pkts, second.bytes, second.to) == (3, 180, "1.2.3.4:80")
    assert second.comment == 'a "quoted" name'
    assert second.matches == "10.0.0.1:80/tcp"
    assert draw_rules(text).svg()  # quotes and backslashes survive into DOT


def test_rules_svg_is_stable():
    text = dump("article-node1.iptables-save-c.txt")
    assert draw_rules(text, node="node1").svg() == draw_rules(text, node="node1").svg()


def test_rules_errors_are_one_clear_line():
    filter_only = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
    with pytest.raises(BadRequest, match=r"^error: the dump has no nat table, only filter; "
                                         r"dump it with iptables-save -c -t nat$"):
        draw_rules(filter_only)
    with pytest.raises(BadRequest, match="not an iptables-save dump"):
        draw_rules("hello\nworld\n")
    with pytest.raises(BadRequest, match='the path "/no/such/dump" does not exist'):
        read_dump("/no/such/dump")


def test_draw_rules_from_a_path_or_text():
    path = DATA / "cluster-node.iptables-save-c.txt"
    by_path = kubenet.draw_rules_from(str(path), node="n")
    assert isinstance(by_path, Diagram)
    assert by_path.source == kubenet.draw_rules_from(path.read_text(), node="n").source
    assert by_path.source == kubenet.draw_rules_from(path, node="n").source


def test_cli_draw_rules_from_file(tmp_path, capfd):
    path = DATA / "article-node1.iptables-save-c.txt"
    assert cli.main(["draw-rules", "--from", str(path)]) == 0
    out, _ = capfd.readouterr()
    assert out.startswith("<?xml") and out == draw_rules(path.read_text()).svg()
    target = tmp_path / "rules.svg"
    assert cli.main(["draw-rules", "node1", "--from", str(path), "-o", str(target)]) == 0
    assert target.read_text() == draw_rules(path.read_text(), node="node1").svg()
    assert cli.main(["draw-rules", "--from", str(path), "--format", "dot"]) == 0
    assert capfd.readouterr().out.startswith("digraph rules {")


def test_cli_draw_rules_errors(tmp_path, capfd):
    filter_only = tmp_path / "filter.txt"
    filter_only.write_text("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    assert cli.main(["draw-rules", "--from", str(filter_only)]) == 1
    out, err = capfd.readouterr()
    assert out == "" and err == ("error: the dump has no nat table, only filter; dump it with "
                                 "iptables-save -c -t nat\n")
    assert cli.main(["draw-rules"]) == 1
    assert capfd.readouterr().err == "error: draw-rules needs a NODE of the lab, or --from FILE\n"
