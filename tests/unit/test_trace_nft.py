"""The packet walk in kube-proxy's nftables mode: ``nft monitor trace``, parsed and built.

The ``nft_*`` fixtures in data/trace were captured from a real nftables-mode lab by
``data/trace/capture.py nftables`` (the tracer helper's raw output, and each node's
``nft monitor trace`` text).
"""

import json
import struct
from pathlib import Path

import pytest

from kubenet import trace as tr
from kubenet.draw import _nat_walk
from kubenet.packets import NFT_MSG_GETGEN, getgen_request, parse_newgen

DATA = Path(__file__).parent / "data" / "trace"
SERVICE = "10.3.241.152:80"
ENDPOINTS = {"10.0.1.2:8080": "default.service-test-6ffd9ddbbf-kf4j2",
             "10.0.2.2:8080": "default.service-test-6ffd9ddbbf-qs2j6"}
SVC_CHAIN = "service-EAFHE2E3-default/service-test/tcp/"
EP_CHAINS = {"10.0.1.2:8080": "endpoint-3WTJTVM4-default/service-test/tcp/__10.0.1.2/8080",
             "10.0.2.2:8080": "endpoint-TQ2NHXDT-default/service-test/tcp/__10.0.2.2/8080"}


def raw(name: str) -> dict:
    data = json.loads((DATA / f"{name}.json").read_text())
    data["monitor"] = {f.name.split(".")[1]: f.read_text()
                       for f in sorted(DATA.glob(f"{name}.node*.txt"))}
    return data


def built(name: str) -> tr.Trace:
    return tr.build(raw(name))


# -- the parser ----------------------------------------------------------------------------------
def test_parse_nft_monitor_the_article_trace():
    data = raw("nft_clusterip")
    packets = tr.parse_nft_monitor(data["monitor"]["node1"])
    ours = [p for p in packets if p.ip_id == data["ip_id"] and p.is_syn]
    # The kernel prints the packet at each base chain it walks, the tracer's own first.
    assert [(p.table, p.chain) for p in ours][:3] == [
        ("inet kubenet-trace", "pre"), ("ip kube-proxy", "filter-prerouting-pre-dnat"),
        ("ip kube-proxy", "nat-prerouting")]
    nat = ours[2]
    assert nat.fields["IN"] == "cbr0" and nat.hook == "in cbr0"
    assert nat.tuple == ("10.0.1.2", data["sport"], "10.3.241.152", 80)
    assert nat.flags == ["SYN"]
    assert nat.events[:2] == [
        ("ip kube-proxy", "nat-prerouting", "rule", "jump services", "jump services"),
        ("ip kube-proxy", "services", "rule", f"goto {SVC_CHAIN}",
         "ip daddr . meta l4proto . th dport vmap @service-ips")]
    table, chain, kind, verdict, rule = nat.events[-1]
    assert (table, kind, verdict) == ("ip kube-proxy", "rule", "accept")
    assert chain == EP_CHAINS["10.0.2.2:8080"] and rule == "meta l4proto tcp dnat to 10.0.2.2:8080"
    # After the DNAT: filter-forward and nat-postrouting see the endpoint's address.
    assert {p.fields["DST"] for p in ours[3:]} == {"10.0.2.2"}
    assert ours[3].hook == "in cbr0, out eth0"


def test_parse_nft_monitor_lines():
    text = (
        "trace id 0badc0de ip kube-proxy services rule jump x (verdict jump x)\n"  # no packet
        'trace id 12ab34cd ip kube-proxy nat-prerouting packet: iif "cbr0" ether saddr '
        "2a:d3:f6:af:c1:3e ip saddr 10.0.1.2 ip daddr 10.3.241.152 ip dscp cs0 ip ecn not-ect "
        "ip ttl 64 ip id 4242 ip protocol tcp ip length 60 tcp sport 61000 tcp dport 80 "
        "tcp flags == syn tcp window 64240 \n"
        "trace id 12ab34cd ip kube-proxy nat-prerouting rule jump services (verdict jump "
        "services)\n"
        "trace id 12ab34cd ip kube-proxy cluster-ips-check rule ip daddr @cluster-ips reject "
        'comment "Reject traffic to invalid ports of ClusterIPs" (verdict drop)\n'
        "trace id 12ab34cd ip kube-proxy endpoint-X unknown rule handle 55 (verdict accept)\n"
        "trace id 12ab34cd ip kube-proxy firewall-check continue \n"
        "trace id 12ab34cd ip kube-proxy filter-forward policy accept meta mark 0x00004000 \n"
        # The same trace id, a later packet: a new walk.
        'trace id 12ab34cd ip kube-proxy filter-forward packet: iif "eth0" oif "cbr0" '
        "ip saddr 10.0.2.2 ip daddr 10.0.1.2 ip id 7 tcp sport 8080 tcp dport 61000 "
        "tcp flags == 0x12 tcp window 64240 \n"
        'trace id 99 ip t c packet: oif "lo" ip id 8 tcp flags == syn | ack meta mark 0x1\n'
        "garbage\n")
    first, second, third = tr.parse_nft_monitor(text)
    assert first.ip_id == 4242 and first.is_syn and first.hook == "in cbr0"
    assert (first.table, first.chain) == ("ip kube-proxy", "nat-prerouting")
    assert first.fields["PROTO"] == "tcp" and first.fields["TTL"] == "64"
    assert first.events == [
        ("ip kube-proxy", "nat-prerouting", "rule", "jump services", "jump services"),
        ("ip kube-proxy", "cluster-ips-check", "rule", "drop",
         'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"'),
        ("ip kube-proxy", "endpoint-X", "rule", "accept", "unknown rule handle 55"),
        ("ip kube-proxy", "firewall-check", "return", "continue", ""),
        ("ip kube-proxy", "filter-forward", "policy", "accept", "")]
    assert second.flags == ["SYN", "ACK"] and not second.is_syn and second.ip_id == 7
    assert second.hook == "in eth0, out cbr0" and second.events == []
    assert third.flags == ["SYN", "ACK"] and third.fields["MARK"] == "0x1"


def test_nft_base_chains_are_the_kernels_listing():
    listing = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-prerouting",
                   "handle": 6, "type": "nat", "hook": "prerouting", "prio": -100}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "filter-forward",
                   "type": "filter", "hook": "forward", "prio": 0}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 9}}]})
    assert tr.nft_base_chains(listing) == {"ip kube-proxy nat-prerouting": "nat",
                                           "ip kube-proxy filter-forward": "filter"}
    assert tr.nft_base_chains("") == {} and tr.nft_base_chains("not json") == {}
    assert raw("nft_clusterip")["base_chains"]["node1"]["ip kube-proxy nat-output"] == "nat"


def test_the_ruleset_generation_request_and_answer():
    request = getgen_request(7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, seq) == (len(request), (10 << 8) | NFT_MSG_GETGEN, 1, 7)
    attrs = struct.pack("=HH", 8, 1) + struct.pack("!I", 4711) + \
        struct.pack("=HH", 8, 2) + struct.pack("!I", 99)
    answer = struct.pack("=IHHII", 20 + len(attrs), (10 << 8) | 15, 0, 7, 0) + \
        struct.pack("=BBH", 0, 0, 0) + attrs
    assert parse_newgen(answer) == 4711
    error = struct.pack("=IHHII", 36, 2, 0, 7, 0) + struct.pack("=i", -1) + b"\0" * 16
    assert parse_newgen(error) is None and parse_newgen(b"") is None


# -- the document ----------------------------------------------------------------------------------
def test_nft_trace_to_the_cluster_ip():
    t = built("nft_clusterip")
    last = t.hops[-1]
    assert t.hops[0].dst == SERVICE and last.dst == "10.0.2.2:8080"
    assert t.chain("node1") == ["nat-prerouting", "services", "@service-ips", SVC_CHAIN,
                                EP_CHAINS[last.dst], f"dnat to {last.dst}"]
    assert t.chain("node2") == ["nat-prerouting", "accept"]  # node2 only forwards
    assert t.chain() == t.chain("node1")
    assert t.chain("node1", table="filter") == ["filter-prerouting-pre-dnat", "accept"]
    assert t.monitors == ["nft monitor trace"]
    assert all(r.table == "ip kube-proxy" for r in t.rules)  # not the tracer's own table
    assert [r.node for r in t.rules] == sorted(r.node for r in t.rules)
    (dnat,) = [r for r in t.rules if "dnat to" in r.rule]
    assert (dnat.node, dnat.verdict, dnat.target, dnat.kind, dnat.base_type) == \
        ("node1", "accept", f"dnat to {last.dst}", "rule", "nat")
    assert dnat.is_nft and not tr.RuleHit("n", "nat", "X", "-A X -j DNAT", "ACCEPT").is_nft
    policy = next(r for r in t.rules if r.kind == "policy")
    assert (policy.rule, policy.target) == ("policy accept", "policy accept")
    (entry,) = [c for c in t.conntrack if c.node == "node1"]
    assert entry.original["dst"] == SERVICE and entry.reply["src"] == last.dst
    assert t.answered and t.reply.src == SERVICE and t.reply.sent_by == ENDPOINTS[last.dst]


def test_nft_document_keeps_the_shape():
    t = built("nft_clusterip")
    doc = t.to_json()
    assert list(doc) == ["hops", "rules", "conntrack", "reply"]
    assert all(set(r) == {"node", "table", "chain", "rule", "verdict"} for r in doc["rules"])
    assert doc["rules"][2] == {"node": "node1", "table": "ip kube-proxy",
                               "chain": "nat-prerouting", "rule": "jump services",
                               "verdict": "jump services"}
    again = tr.Trace.from_wire(json.loads(json.dumps(t.to_wire())))
    assert again == t and again.monitors == ["nft monitor trace"]


def test_nft_text_and_html_name_the_tool():
    t = built("nft_clusterip")
    text = t.text()
    assert "Rules it matched (the kernel's own trace: nft monitor trace)" in text
    assert "xtables-monitor" not in text
    assert "vmap @service-ips" in text and "dnat to 10.0.2.2:8080" in text
    assert "(the kernel&#x27;s own trace: nft monitor trace)" in t._repr_html_()
    # iptables mode is unchanged.
    assert "(the kernel's own trace: xtables-monitor --trace)" in built("clusterip").text()


def test_nft_hairpin_by_name_is_masqueraded():
    t = built("nft_name")
    assert t.dns[0].answers == ["10.3.241.152"]
    # The side trip to mark-for-masquerade is left out of the path; the rules show it.
    assert t.chain("node1") == ["nat-prerouting", "services", "@service-ips", SVC_CHAIN,
                                EP_CHAINS["10.0.1.2:8080"], "dnat to 10.0.1.2:8080"]
    chains = [r.chain for r in t.rules if r.node == "node1"]
    assert "mark-for-masquerade" in chains
    masq = [r for r in t.rules if r.rule == "masquerade fully-random"]
    assert masq and masq[0].verdict == "accept" and masq[0].chain == "masquerading"
    assert t.hops[-1].src.startswith("10.0.1.1:")  # the pod sees its node


def test_nft_pod_ip_is_not_rewritten():
    t = built("nft_podip")
    assert {h.dst for h in t.hops} == {"10.0.2.2:8080"} and not t.rewrites()
    assert t.chain("node1") == ["nat-prerouting", "accept"]  # services: nothing matched
    assert not any("dnat" in r.rule for r in t.rules)


def test_nft_node_port_from_outside():
    t = built("nft_nodeport")
    chain = t.chain("node1")
    assert chain[:4] == ["nat-prerouting", "services", "@service-nodeports",
                         "external-AO2SCC6I-default/service-test-np/tcp/"]
    assert chain[4] == "service-AO2SCC6I-default/service-test-np/tcp/"
    assert chain[5].startswith("endpoint-") and chain[-1] == f"dnat to {t.hops[-1].dst}"
    assert any(r.rule == "masquerade fully-random" for r in t.rules if r.node == "node1")
    assert t.reply.src == "10.100.0.2:30080" and t.reply.hops[-1].ns == "external"


def test_nft_from_a_node_walks_nat_output():
    t = built("nft_fromnode")
    assert t.chain("node1")[:3] == ["nat-output", "services", "@service-ips"]
    assert t.chain("node1")[-1] == f"dnat to {t.hops[0].dst}"
    assert "node1's own netfilter rewrote it" in t.notes[0]


def test_a_rule_nft_did_not_know_is_said():
    data = raw("nft_clusterip")
    node1 = data["monitor"]["node1"]
    chain = EP_CHAINS["10.0.2.2:8080"]
    data["monitor"]["node1"] = node1.replace(
        f"{chain} rule meta l4proto tcp dnat to 10.0.2.2:8080", f"{chain} unknown rule handle 55")
    t = tr.build(data)
    assert any(r.rule == "unknown rule handle 55" for r in t.rules)
    assert "nft monitor trace on node1 did not know some of the rules" in t.notes[-1]


@pytest.mark.parametrize("name, kind, expected", [
    ("nft_clusterip", "DNAT", ["nat-prerouting", "services", "@service-ips", SVC_CHAIN,
                               EP_CHAINS["10.0.2.2:8080"], "dnat to 10.0.2.2:8080"]),
    ("nft_name", "SNAT", ["nat-postrouting", "masquerading", "masquerade fully-random"]),
    ("nft_podip", "DNAT", []),
])
def test_the_drawing_finds_the_nft_walk(name, kind, expected):
    rules = built(name).to_json()["rules"]
    assert tr.nft_nat_walk(rules, "node1", kind) == expected
    assert _nat_walk(rules, "node1", kind) == expected  # what draw_trace labels a rewrite with
