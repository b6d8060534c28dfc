"""kubenet.draw_nft: kube-proxy's nftables table drawn from ``nft -j`` output (pure).

The fixtures in data/draw are real ``nft -j list table ip kube-proxy`` output (nft 1.0.6):
``article-node1.nft.json`` from node1 of ``kubenet.Lab("article", proxy_mode="nftables")``;
``overall.nft.json`` is our renderer's text for kube-proxy's TestOverallNFTablesRules
(data/nftables/overall.yaml, the FAKE options of test_nftables_render) loaded with ``nft -f``
into a throwaway ``unshare -n`` namespace; ``article-node1-counters.nft.json`` is the lab's
table with ``counter`` added to the service-ips map, both ``jump services`` rules, the
numgen rules and the dnat rules, loaded the same way, after 10 TCP connects to
10.3.241.152:80 and 2 UDP datagrams to 10.3.240.10:53 left a veth in that namespace.
"""

import json
import random
import re
from pathlib import Path

import pytest

import kubenet
from kubenet import cli
from kubenet.draw import Diagram, draw_rules, read_dump
from kubenet.draw_nft import draw_nft_rules, expr_text, parse_nft_json
from kubenet.errors import BadRequest

DATA = Path(__file__).parent / "data" / "draw"
SVC = "service-EAFHE2E3-default/service-test/tcp/"
EP1 = "endpoint-3WTJTVM4-default/service-test/tcp/__10.0.1.2/8080"
EP2 = "endpoint-TQ2NHXDT-default/service-test/tcp/__10.0.2.2/8080"


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def edges(source: str) -> dict[tuple[str, str], str]:
    """(tail, head) -> attributes of the edges in DOT source (of all edges between the two,
    one per line); a tail's port is kept."""
    found: dict[tuple[str, str], str] = {}
    for m in re.finditer(r'^\s*"([^"]+)"((?::\w+)*)\s*->\s*"([^"]+)"\s*(?:\[(.*)\])?$',
                         source, re.M):
        key = (m[1] + m[2], m[3])
        found[key] = "\n".join(filter(None, [found.get(key, ""), m[4] or ""]))
    return found


def node_label(source: str, node_id: str) -> str:
    m = re.search(rf'^\s*"{re.escape(node_id)}" \[label=(<.*?>) fillcolor=', source, re.M)
    assert m, node_id
    return m[1]


# -- parsing -------------------------------------------------------------------------------

def test_parse_the_lab_table():
    (table,) = parse_nft_json(fixture("article-node1.nft.json"))
    assert (table.family, table.name) == ("ip", "kube-proxy")
    prerouting = table.chains["nat-prerouting"]
    assert (prerouting.type, prerouting.hook, prerouting.prio, prerouting.policy) == (
        "nat", "prerouting", -100, "accept")
    assert not table.chains["services"].base
    service_ips = table.maps["service-ips"]
    assert (service_ips.kind, service_ips.type, service_ips.data) == (
        "map", "ipv4_addr . inet_proto . inet_service", "verdict")
    assert [(e.key, e.verdict, e.target) for e in service_ips.elements][-1] == (
        "10.3.241.152 . tcp . 80", "goto", SVC)
    assert table.maps["cluster-ips"].kind == "set"
    assert [e.key for e in table.maps["cluster-ips"].elements] == ["10.3.240.10", "10.3.241.152"]
    assert table.maps["service-nodeports"].elements == []

    mark, choose = table.chains[SVC].rules
    assert mark.text == ("ip daddr 10.3.241.152 ip saddr != 10.0.0.0/14 "
                         "jump mark-for-masquerade")
    assert (mark.verdict, mark.target, mark.index) == ("jump", "mark-for-masquerade", 1)
    assert (choose.verdict, choose.numgen, choose.key) == ("vmap", 2, "numgen random mod 2")
    assert [(b.key, b.verdict, b.target) for b in choose.branches] == [
        ("0", "goto", EP1), ("1", "goto", EP2)]
    assert choose.text == f"numgen random mod 2 vmap {{ 0 : goto {EP1}, 1 : goto {EP2} }}"
    dnat = table.chains[EP1].rules[1]
    assert (dnat.verdict, dnat.to, dnat.text) == (
        "dnat", "10.0.1.2:8080", "meta l4proto tcp dnat to 10.0.1.2:8080")
    services = table.chains["services"].rules
    assert services[0].text == "ip daddr . meta l4proto . th dport vmap @service-ips"
    assert services[1].matches == ("fib daddr type local", "ip daddr != 127.0.0.0/8")
    masq = [r.text for r in table.chains["masquerading"].rules]
    assert masq == ["meta mark & 0x4000 == 0 return", "meta mark set meta mark ^ 0x4000",
                    "masquerade fully-random"]
    reject = table.chains["cluster-ips-check"].rules[0]
    assert (reject.verdict, reject.comment) == (
        "reject", "Reject traffic to invalid ports of ClusterIPs")
    assert all(r.pkts is None for c in table.chains.values() for r in c.rules)


def test_parse_counters_elements_and_sets():
    (table,) = parse_nft_json(fixture("article-node1-counters.nft.json"))
    output = table.chains["nat-output"].rules[0]
    assert (output.pkts, output.bytes, output.text) == (
        12, 658, "counter packets 12 bytes 658 jump services")
    svc = {e.key: e for e in table.maps["service-ips"].elements}["10.3.241.152 . tcp . 80"]
    assert (svc.pkts, svc.bytes) == (10, 600)
    (overall,) = parse_nft_json(fixture("overall.nft.json"))
    no_endpoints = {e.key: e for e in overall.maps["no-endpoint-services"].elements}
    assert no_endpoints["1.2.3.4 . tcp . 80"].verdict == "drop"
    assert no_endpoints["1.2.3.4 . tcp . 80"].comment == "ns2/svc2:p80"
    assert no_endpoints["172.30.0.46 . tcp . 80"].target == "reject-chain"
    _, affinity, _ = overall.chains["endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"].rules
    assert affinity.statements == (
        "update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }",)
    assert affinity.verdict == ""


@pytest.mark.parametrize(("expr", "text"), [
    ({"payload": {"protocol": "ip", "field": "saddr"}}, "ip saddr"),
    ({"ct": {"key": "state"}}, "ct state"),
    ({"ct": {"key": "mark", "dir": "original"}}, "ct original mark"),
    ({"fib": {"result": "type", "flags": ["daddr"]}}, "fib daddr type"),
    ({"prefix": {"addr": "10.0.0.0", "len": 14}}, "10.0.0.0/14"),
    ({"range": [30000, 32767]}, "30000-32767"),
    ({"set": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}]},
     "{ 10.0.0.1, 10.1.0.0/16 }"),
    ({"&": [{"meta": {"key": "mark"}}, 16384]}, "meta mark & 0x4000"),
    ({"numgen": {"mode": "random", "mod": 3, "offset": 0}}, "numgen random mod 3"),
    (["established", "related"], "established,related"),
    ({"payload": {"base": "th", "offset": 16, "len": 16}}, "@th,16,16"),
    ({"osf": {"key": "name"}}, '{"osf":{"key":"name"}}'),  # unknown: compact JSON
])
def test_expressions_in_nft_syntax(expr, text):
    assert expr_text(expr) == text


# -- the graph -----------------------------------------------------------------------------

def test_the_lab_table_as_a_graph():
    diagram = draw_rules(fixture("article-node1.nft.json"), node="node1")
    source = diagram.source
    found = edges(source)
    assert ("chain/nat-prerouting", "chain/services") in found
    assert ("chain/nat-output", "chain/services") in found
    assert ("chain/nat-postrouting", "chain/masquerading") in found
    into_map = found[("chain/services", "map/service-ips")]
    assert "ip daddr . meta l4proto . th dport vmap" in into_map
    assert ("chain/services", "map/service-nodeports") in found
    # the map: one row and one edge per element, in address order
    rows = re.findall(r'<td port="(e\d)" align="left">([^<]*)', node_label(source,
                                                                           "map/service-ips"))
    assert rows == [("e0", "10.3.240.10 . tcp . 53 "), ("e1", "10.3.240.10 . udp . 53 "),
                    ("e2", "10.3.241.152 . tcp . 80 ")]
    assert f"service-ips: 10.3.241.152 . tcp . 80 : goto {SVC}" in found[
        ("map/service-ips:e2:e", f"chain/{SVC}")]
    assert "(no elements)" in node_label(source, "map/service-nodeports")
    # numgen: each endpoint 1/2
    for i, ep in enumerate((EP1, EP2)):
        label = found[(f"chain/{SVC}", f"chain/{ep}")]
        assert "<b>p=1/2</b> · 50%" in label and f"numgen random mod 2 = {i} : goto" in label
    assert "style=dashed" in found[(f"chain/{SVC}", "chain/mark-for-masquerade")]
    assert "ip saddr != 10.0.0.0/14" in found[(f"chain/{SVC}", "chain/mark-for-masquerade")]
    assert node_label(source, f"target/{EP1}/2") == "<<b>dnat to</b> 10.0.1.2:8080>"
    assert node_label(source, f"target/{EP2}/2") == "<<b>dnat to</b> 10.0.2.2:8080>"
    assert "<b>masquerade</b> fully-random" in source
    assert "meta mark set meta mark | 0x4000" in source
    assert "type nat hook prerouting" in node_label(source, "chain/nat-prerouting")
    # only what the nat hooks reach: no filter chains, no counters
    for name in ("filter-input", "firewall-check", "cluster-ips-check", "reject-chain",
                 "no-endpoint-services"):
        assert name not in source
    assert not re.search(r"\d+ pkts?\b", source) and "counters" not in source
    assert repr(diagram) == ("<Diagram: node1: nftables ip kube-proxy nat chains: 13 chains, "
                             "2 maps, 3 services, 4 endpoints>")


def test_counters_are_drawn_where_nft_counted():
    source = draw_rules(fixture("article-node1-counters.nft.json"), node="node1").source
    found = edges(source)
    assert "(packet counters from nft counters)" in source
    output = found[("chain/nat-output", "chain/services")]
    assert "12 pkts, 658 B" in output and "penwidth=" in output
    assert "0 pkts" in found[("chain/nat-prerouting", "chain/services")]
    assert "10 pkts, 600 B" in node_label(source, "map/service-ips")
    assert "penwidth=" in found[("map/service-ips:e2:e", f"chain/{SVC}")]
    assert "2 pkts, 120 B" in found[(f"chain/{EP1}", f"target/{EP1}/2")]
    assert "8 pkts, 480 B" in found[(f"chain/{EP2}", f"target/{EP2}/2")]
    # the numgen rule counts what reached it, not what each branch took
    assert "pkts" not in found[(f"chain/{SVC}", f"chain/{EP1}")]


def test_kube_proxys_overall_rules_nat_view():
    source = draw_nft_rules(fixture("overall.nft.json")).source
    found = edges(source)
    rows = re.findall(r'<td port="e\d+" align="left">([^<]*)', node_label(source,
                                                                          "map/service-ips"))
    assert [r.split(" . ")[0] for r in rows] == [
        "1.2.3.4", "5.6.7.8", "172.30.0.41", "172.30.0.42", "172.30.0.43", "172.30.0.44",
        "172.30.0.45", "192.168.99.22", "192.168.99.33"]
    nodeports = node_label(source, "map/service-nodeports")
    assert nodeports.index("tcp . 3001") < nodeports.index("tcp . 3002") < nodeports.index(
        "tcp . 3003")
    assert "ip daddr @nodeport-ips" in found[("chain/services", "map/service-nodeports")]
    ext = "chain/external-42NFTM6N-ns2/svc2/tcp/p80"
    short = found[(ext, "chain/service-42NFTM6N-ns2/svc2/tcp/p80")]
    assert "short-circuit" in short and "goto" in short
    svc4 = "chain/service-LAUZTJTB-ns4/svc4/tcp/p80"
    assert "<b>p=1/2</b> · 50%" in found[(svc4,
                                          "chain/endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80")]
    svc5 = "chain/service-HVFWP5L3-ns5/svc5/tcp/p80"
    ep5 = "chain/endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
    assert "ip saddr @affinity-GTK6MW7G" in found[(svc5, ep5)]  # session affinity first
    assert "update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }" in node_label(
        source, "target/endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80/2")
    assert "firewall-HVFWP5L3" not in source and "no-endpoint" not in source
    assert "rules" in source.splitlines()[0]  # no node: the graph's plain name


def test_filter_and_all_views():
    text = fixture("overall.nft.json")
    source = draw_rules(text, table="filter").source
    found = edges(source)
    assert "nftables ip kube-proxy filter chains" in source
    assert ("chain/filter-prerouting-pre-dnat", "chain/firewall-check") in found
    assert ("chain/firewall-check", "map/firewall-ips") in found
    assert ("map/firewall-ips:e0:e", "chain/firewall-HVFWP5L3-ns5/svc5/tcp/p80") in found
    assert "ip saddr != 203.0.113.0/25" in found[("chain/firewall-HVFWP5L3-ns5/svc5/tcp/p80",
                                                  "target/firewall-HVFWP5L3-ns5/svc5/tcp/p80/1")]
    no_endpoints = node_label(source, "map/no-endpoint-services")
    assert "ns2/svc2:p80" in no_endpoints
    drops = [k for k in found if k[0].startswith("map/no-endpoint-services:")]
    assert ("map/no-endpoint-services:e0:e", "verdict/no-endpoint-services/drop") in drops
    assert any(head == "chain/reject-chain" for _, head in drops)
    assert "Drop traffic to unallocated ClusterIPs" in source
    assert "nat-prerouting" not in source and "dnat to" not in source
    everything = draw_rules(text, table="all")
    assert "nat-prerouting" in everything.source and "firewall-ips" in everything.source
    assert repr(everything) == ("<Diagram: nftables ip kube-proxy all chains: 32 chains, "
                                "5 maps, 5 services, 6 endpoints>")


def test_three_endpoints_a_third_each():
    branches = [[i, {"goto": {"target": f"endpoint-{i}"}}] for i in range(3)]
    doc = {"nftables": [
        {"table": {"family": "ip", "name": "kube-proxy"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-output",
                   "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "kube-proxy", "chain": "nat-output",
                  "expr": [{"jump": {"target": "svc"}}]}},
        {"rule": {"family": "ip", "table": "kube-proxy", "chain": "svc",
                  "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 3}},
                                     "data": {"set": branches}}}]}},
        *[{"rule": {"family": "ip", "table": "kube-proxy", "chain": f"endpoint-{i}",
                    "expr": [{"dnat": {"addr": f"10.0.0.{i}", "port": 80}}]}} for i in range(3)],
    ]}
    found = edges(draw_rules(json.dumps(doc)).source)
    for i in range(3):
        assert "<b>p=1/3</b> · 33%" in found[("chain/svc", f"chain/endpoint-{i}")]
        assert (f"chain/endpoint-{i}", f"target/endpoint-{i}/1") in found


def test_same_table_same_svg_whatever_the_element_order():
    text = fixture("overall.nft.json")
    doc = json.loads(text)
    for item in doc["nftables"]:
        if "map" in item and item["map"].get("elem"):
            random.Random(7).shuffle(item["map"]["elem"])
    shuffled = json.dumps(doc, indent=1)  # nft -j's own one line, or pretty-printed
    assert draw_rules(shuffled, node="n").source == draw_rules(text, node="n").source
    assert draw_rules(text, node="n").svg() == draw_rules(text, node="n").svg()


def test_a_whole_ruleset_draws_kube_proxys_table():
    doc = json.loads(fixture("article-node1.nft.json"))
    doc["nftables"] += [
        {"table": {"family": "ip", "name": "nat"}},
        {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING", "type": "nat",
                   "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "ip", "table": "nat", "chain": "POSTROUTING",
                  "expr": [{"masquerade": None}]}},
    ]
    source = draw_rules(json.dumps(doc)).source
    assert f"chain/{SVC}" in source and "POSTROUTING" not in source
    other = draw_nft_rules(json.dumps(doc), name="nat", family="ip").source
    assert "POSTROUTING" in other and "services" not in other


def test_errors_are_one_clear_line():
    with pytest.raises(BadRequest, match=r"^error: this is not nft -j output: Expecting "):
        draw_rules('{"nftables": [')
    with pytest.raises(BadRequest, match=r'^error: this JSON is not nft -j output \(no '
                                         r'"nftables" list\)'):
        draw_rules('{"items": []}')
    with pytest.raises(BadRequest, match=r"^error: this is nft's text; draw-rules reads its "
                                         r"JSON: nft -j list table ip kube-proxy$"):
        draw_rules("table ip kube-proxy {\n}\n")
    with pytest.raises(BadRequest, match=r"^error: this is not an iptables-save dump .* nor "
                                         r"nft -j output"):
        draw_rules("hello\nworld\n")
    two = {"nftables": [{"table": {"family": "ip", "name": "a"}},
                        {"table": {"family": "ip6", "name": "b"}}]}
    with pytest.raises(BadRequest, match=r"^error: the ruleset has no table ip kube-proxy "
                                         r"\(it has ip a, ip6 b\)"):
        draw_rules(json.dumps(two))
    with pytest.raises(BadRequest, match=r"^error: table ip a has no nat base chains "
                                         r"\(no base chains\)$"):
        draw_rules(json.dumps({"nftables": two["nftables"][:1]}))
    with pytest.raises(BadRequest, match='not "mangle"'):
        draw_rules(fixture("article-node1.nft.json"), table="mangle")


def test_read_dump_and_draw_rules_from_take_nft_json(tmp_path):
    text = fixture("article-node1.nft.json")
    assert "\n" not in text.strip()  # nft -j prints one line
    assert read_dump(text) == text
    by_path = kubenet.draw_rules_from(str(DATA / "article-node1.nft.json"), node="n")
    assert isinstance(by_path, Diagram)
    assert by_path.source == kubenet.draw_rules_from(text, node="n").source


def test_cli_draw_rules_from_nft_json(tmp_path, capfd, monkeypatch):
    path = DATA / "overall.nft.json"
    target = tmp_path / "rules.svg"
    assert cli.main(["draw-rules", "node1", "--from", str(path), "-o", str(target)]) == 0
    assert target.read_text() == draw_rules(path.read_text(), node="node1").svg()
    assert capfd.readouterr().err.startswith(f"wrote {target} (node1: nftables ip kube-proxy "
                                             "nat chains: 21 chains, 2 maps")
    assert cli.main(["draw-rules", "--from", str(path), "-t", "filter", "--format", "dot"]) == 0
    assert "firewall-check" in capfd.readouterr().out
    monkeypatch.setattr("sys.stdin", open(path))  # noqa: SIM115 - closed with the test
    assert cli.main(["draw-rules", "--from", "-", "--format", "dot"]) == 0
    assert capfd.readouterr().out.startswith("digraph rules {")
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"kind": "List"}')
    assert cli.main(["draw-rules", "--from", str(garbage)]) == 1
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: this JSON is not nft")
