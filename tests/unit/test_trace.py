"""The packet walk's pure half: parsing what the kernel reported, building the document.

The fixtures in data/trace were captured once from real labs by data/trace/capture.py
(the tracer helper's raw output, and each node's ``xtables-monitor --trace`` text).
"""

import json
import struct
from pathlib import Path

import pytest

from kubenet import trace as tr
from kubenet.errors import BadRequest
from kubenet.packets import parse_links

DATA = Path(__file__).parent / "data" / "trace"
SERVICE = "10.3.241.152:80"
ENDPOINTS = {"10.0.1.2:8080": "default.service-test-6ffd9ddbbf-kf4j2",
             "10.0.2.2:8080": "default.service-test-6ffd9ddbbf-qs2j6"}
CLIENT_NS = "default.service-test-6ffd9ddbbf-kf4j2"


def raw(name: str) -> dict:
    data = json.loads((DATA / f"{name}.json").read_text())
    data["monitor"] = {f.name.split(".")[1]: f.read_text()
                       for f in sorted(DATA.glob(f"{name}.node*.txt"))}
    return data


def built(name: str) -> tr.Trace:
    return tr.build(raw(name))


# -- what the user asks ---------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("10.3.241.152:80", ("10.3.241.152", 80)),
    ("service-test:80", ("service-test", 80)),
    ("Service-Test.default.svc.cluster.local.:8080", ("service-test.default.svc.cluster.local.",
                                                      8080)),
    ("external-1:65535", ("external-1", 65535)),
])
def test_parse_destination(text, expected):
    assert tr.parse_destination(text) == expected


@pytest.mark.parametrize("text, message", [
    ("10.3.241.152", "expected HOST:PORT"),
    (":80", "expected HOST:PORT"),
    ("service-test:http", "expected HOST:PORT"),
    ("service-test:0", "port 0 is not in 1-65535"),
    ("10.3.241.152:65536", "port 65536 is not in 1-65535"),
    ("bad_name:80", "neither an IPv4 address nor a DNS name"),
    ("-bad:80", "neither an IPv4 address nor a DNS name"),
    ("10.3.241.300:80", "neither an IPv4 address nor a DNS name"),
    ("[::1]:80", "neither an IPv4 address nor a DNS name"),
])
def test_parse_destination_errors_are_one_line(text, message):
    with pytest.raises(BadRequest) as err:
        tr.parse_destination(text)
    assert message in str(err.value)
    assert str(err.value).startswith("error: ") and "\n" not in str(err.value)


POD_RESOLV = ("search default.svc.cluster.local svc.cluster.local cluster.local\n"
              "nameserver 10.3.240.10\noptions ndots:5\n")


def test_search_names_follow_the_pods_resolv_conf():
    server, names = tr.search_names("service-test", POD_RESOLV)
    assert server == "10.3.240.10"
    assert names == ["service-test.default.svc.cluster.local.",
                     "service-test.svc.cluster.local.", "service-test.cluster.local.",
                     "service-test."]
    # Five dots or more (ndots:5): tried as it is first; a trailing dot: only as it is.
    assert tr.search_names("a.b.c.d.e.f", POD_RESOLV)[1][0] == "a.b.c.d.e.f."
    assert tr.search_names("service-test.default.svc.cluster.local.", POD_RESOLV)[1] == \
        ["service-test.default.svc.cluster.local."]
    assert tr.search_names("x", "# nothing\n") == ("", ["x."])


def test_nft_script_traces_by_ip_id_and_drops_the_clients_rst_at_the_node():
    text = tr.nft_script(trace_ids=(7, 3), trace_syns=True, drop_rst=("10.0.1.2", 61234, 7))
    assert text.splitlines()[:4] == [
        "table inet kubenet-trace {",
        "  chain pre { type filter hook prerouting priority -350; policy accept; }",
        "  chain out { type filter hook output priority -350; policy accept; }",
        "}"]
    assert "flush table inet kubenet-trace" in text
    assert "add rule inet kubenet-trace pre ip id { 3, 7 } meta nftrace set 1" in text
    assert "add rule inet kubenet-trace out ip id { 3, 7 } meta nftrace set 1" in text
    assert "add rule inet kubenet-trace pre tcp flags & (fin | syn | rst | ack) == syn " \
        "meta nftrace set 1" in text
    assert ("add rule inet kubenet-trace pre ip saddr 10.0.1.2 tcp sport 61234 tcp flags & "
            "rst == rst ip id != 7 drop") in text
    # The node is the client: its RST is dropped on the way out.
    local = tr.nft_script(trace_ids=(7,), drop_rst=("10.100.0.2", 61234, 7), local_source=True)
    assert "add rule inet kubenet-trace out ip saddr 10.100.0.2 tcp sport 61234" in local
    assert "ip id 7 meta nftrace set 1" in local and "tcp flags & (fin" not in local
    assert tr.nft_off_script() == "flush table inet kubenet-trace\n"


# -- captured packets -------------------------------------------------------------------------
@pytest.mark.parametrize("flags, name", [
    (0x02, "SYN"), (0x12, "SYN-ACK"), (0x10, "ACK"), (0x04, "RST"), (0x14, "RST-ACK"),
    (0x18, "PSH-ACK"), (0x11, "FIN-ACK"), (0, "none")])
def test_flags_name(flags, name):
    assert tr.flags_name(flags) == name


def frame(src="10.0.1.2", dst="10.3.241.152", sport=61000, dport=80, ip_id=4242,
          flags=0x02, seq=1000, ack=0, proto=6, ethertype=b"\x08\x00") -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, ip_id, 0x4000, 64, proto, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 0x50, flags, 64240, 0, 0)
    return b"\x02" * 6 + b"\x04" * 6 + ethertype + ip + tcp


def test_parse_frame():
    fields = tr.parse_frame(frame())
    assert fields == {"proto": "tcp", "src": "10.0.1.2", "dst": "10.3.241.152", "sport": 61000,
                      "dport": 80, "ip_id": 4242, "ttl": 64, "seq": 1000, "ack": 0,
                      "flags": 0x02}
    assert tr.parse_frame(frame(ethertype=b"\x86\xdd")) is None  # IPv6
    assert tr.parse_frame(frame(proto=1)) is None  # ICMP
    assert tr.parse_frame(frame()[:30]) is None
    udp = tr.parse_frame(frame(proto=17))
    assert udp is not None and udp["proto"] == "udp" and "flags" not in udp


def packet(ns, iface, dir_, ts, flags=0x02, **kw) -> tr.Packet:
    base = {"proto": "tcp", "src": "10.0.1.2", "sport": 61000, "dst": "10.3.241.152",
            "dport": 80, "ip_id": 4242, "seq": 1000}
    return tr.Packet(ns=ns, iface=iface, dir=dir_, ts=ts, flags=flags, **{**base, **kw})


def test_packet_questions():
    syn = packet("pod", "eth0", "out", 1)
    assert syn.is_syn and not syn.answers(1000)
    synack = packet("pod", "eth0", "in", 2, flags=0x12, ack=1001, seq=5)
    assert synack.answers(1000) and not synack.is_syn and not synack.answers(999)
    assert packet("pod", "eth0", "in", 2, flags=0x14, ack=1001).answers(1000)  # RST-ACK
    wrapped = packet("pod", "eth0", "in", 2, flags=0x12, ack=0)
    assert wrapped.answers(0xFFFFFFFF)
    assert tr.same_packet(packet("node1", "eth0", "out", 3, dst="10.0.2.2", dport=8080), syn)


def test_order_uses_the_timestamp_then_the_bridge():
    # A bridge port's received frame and the same frame passed up to the bridge share a
    # timestamp: the port comes first. On the way out, the bridge before its port.
    masters = {"node1": {"veth1": "cbr0"}}
    got = tr.order([packet("node1", "cbr0", "in", 5), packet("node1", "veth1", "in", 5),
                    packet("pod", "eth0", "out", 1), packet("node1", "eth0", "out", 9),
                    packet("node1", "veth1", "out", 12), packet("node1", "cbr0", "out", 12)],
                   masters)
    assert [(p.ns, p.iface, p.dir) for p in got] == [
        ("pod", "eth0", "out"), ("node1", "veth1", "in"), ("node1", "cbr0", "in"),
        ("node1", "eth0", "out"), ("node1", "cbr0", "out"), ("node1", "veth1", "out")]


def test_leg2_syn_is_the_proxys_first_new_connection():
    ours = packet("node1", "cbr0", "in", 1)
    loop = packet("node1", "lo", "out", 3, ip_id=9, src="127.0.0.1", dst="127.0.0.1")
    second = packet("node1", "eth0", "out", 4, ip_id=77, src="10.100.0.2", sport=40000,
                    dst="10.0.2.2", dport=8080, seq=555)
    later = packet("node1", "eth0", "out", 6, ip_id=78, seq=9)
    early = packet("node1", "eth0", "out", 0, ip_id=79, seq=9)
    assert tr.leg2_syn([ours, loop, later, second, early], "node1", 4242, after=2) is second
    assert tr.leg2_syn([ours], "node1", 4242, after=0) is None


def test_parse_links_reads_names_and_masters():
    def attr(kind, value):
        length = 4 + len(value)
        return struct.pack("=HH", length, kind) + value + b"\0" * ((4 - length % 4) % 4)

    def link(index, name, master=None):
        attrs = attr(3, name.encode() + b"\0") + (attr(10, struct.pack("=I", master))
                                                  if master else b"")
        body = struct.pack("=BxHiII", 0, 1, index, 0, 0) + attrs
        return struct.pack("=IHHII", 16 + len(body), 16, 2, 1, 0) + body

    done = struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4
    names, masters, finished = parse_links(link(2, "cbr0") + link(5, "veth54fc3209", 2))
    assert names == {2: "cbr0", 5: "veth54fc3209"} and masters == {5: 2} and not finished
    assert parse_links(done)[2]


# -- xtables-monitor --trace -------------------------------------------------------------------
def test_parse_xtables_monitor_the_article_trace():
    data = raw("clusterip")
    packets = tr.parse_xtables_monitor(data["monitor"]["node1"])
    ours = [p for p in packets if p.ip_id == data["ip_id"]]
    first = ours[0]
    assert first.fields["IN"] == "cbr0" and first.fields["SRC"] == "10.0.1.2"
    assert first.fields["DST"] == "10.3.241.152" and first.is_syn
    assert first.tuple == ("10.0.1.2", data["sport"], "10.3.241.152", 80)
    table, chain, kind, verdict, rule = first.events[0]
    assert (table, chain, kind, verdict) == ("nat", "PREROUTING", "rule", "JUMP KUBE-SERVICES")
    assert rule == ('-4 -t nat -A PREROUTING -m comment --comment "kubernetes service portals" '
                    "-j KUBE-SERVICES")
    assert first.events[-1][3] == "ACCEPT" and "-j DNAT --to-destination" in first.events[-1][4]
    # After the DNAT the kernel prints the packet again (filter FORWARD, nat POSTROUTING),
    # now with the endpoint's address.
    assert {p.fields["DST"] for p in ours[1:]} <= {"10.0.1.2", "10.0.2.2"}
    verdicts = {e[3] for p in ours for e in p.events}
    assert "RETURN" in verdicts  # printed by xtables-monitor as 0xfffffffb


def test_parse_xtables_monitor_lines():
    text = (" TRACE: 2 aaaa0000 nat:OUTPUT:policy:ACCEPT \n"  # its PACKET line came before
            "PACKET: 2 12ab34cd IN=cbr0 OUT=eth0 MACSRC=5a:41:32:d:de:a6 SRC=10.0.1.2 "
            "DST=10.0.2.2 LEN=60 TOS=0x0 TTL=63 ID=4242 DF SPORT=61000 DPORT=8080 SYN "
            "MARK=0x4000 \n"
            " TRACE: 2 12ab34cd filter:FORWARD:rule:0xd:JUMP:KUBE-FORWARD  -4 -t filter -A "
            'FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD\n'
            " TRACE: 2 12ab34cd nat:KUBE-POSTROUTING:rule:0x26:0xfffffffb  -4 -t nat -A "
            "KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"
            " TRACE: 2 12ab34cd filter:FORWARD:policy:ACCEPT \n"
            "garbage\n")
    (p,) = tr.parse_xtables_monitor(text)
    assert p.flags == ["DF", "SYN"] and p.ip_id == 4242 and p.hook == "in cbr0, out eth0"
    assert p.fields["MARK"] == "0x4000"
    assert [e[:4] for e in p.events] == [
        ("filter", "FORWARD", "rule", "JUMP KUBE-FORWARD"),
        ("nat", "KUBE-POSTROUTING", "rule", "RETURN"),
        ("filter", "FORWARD", "policy", "ACCEPT")]


# -- the document ---------------------------------------------------------------------------------
def test_the_article_trace_cluster_ip():
    t = built("clusterip")
    first, last = t.hops[0], t.hops[-1]
    assert (first.ns, first.iface, first.dir) == (CLIENT_NS, "eth0", "out")
    assert first.dst == SERVICE and first.src == f"10.0.1.2:{raw('clusterip')['sport']}"
    assert last.dst in ENDPOINTS and (last.ns, last.iface, last.dir) == (
        ENDPOINTS[last.dst], "eth0", "in")
    # The packet on the client's side of node1 still goes to the cluster IP...
    assert any(h.ns == "node1" and h.iface.startswith("veth") and h.dst == SERVICE
               for h in t.hops)
    # ...and crosses node1's eth0, the gateway and node2 already rewritten.
    path = [(h.ns, h.iface, h.dir) for h in t.hops]
    assert path[3:11] == [("node1", "eth0", "out"), ("gateway", "to-node1", "in"),
                          ("gateway", "nodes0", "in"), ("gateway", "nodes0", "out"),
                          ("gateway", "to-node2", "out"), ("node2", "eth0", "in"),
                          ("node2", "cbr0", "out"), ("node2", "veth1a8ba22c", "out")]
    assert all(h.dst == last.dst for h in t.hops[2:])
    chain = t.chain("node1")
    assert chain[:2] == ["PREROUTING", "KUBE-SERVICES"] and chain[-1] == "DNAT"
    assert chain[2].startswith("KUBE-SVC-") and chain[3].startswith("KUBE-SEP-")
    assert t.chain("node2") == ["PREROUTING", "ACCEPT"]
    assert [r.node for r in t.rules] == sorted(r.node for r in t.rules)  # node1, then node2
    (node1,) = [c for c in t.conntrack if c.node == "node1"]
    assert node1.original == {"src": first.src, "dst": SERVICE}
    assert node1.reply == {"src": last.dst, "dst": first.src} and node1.state == "SYN_RECV"
    assert t.answered and t.reply.src == SERVICE and t.reply.dst == first.src
    assert t.reply.sent_src == last.dst and t.reply.sent_by == last.ns
    assert t.reply.hops[-1].ns == CLIENT_NS and t.reply.hops[-1].src == SERVICE
    assert [(a.dst, b.dst) for a, b in t.rewrites()] == [(SERVICE, last.dst)]


def test_the_document_has_exactly_the_issues_shape():
    doc = built("clusterip").to_json()
    assert list(doc) == ["hops", "rules", "conntrack", "reply"]
    assert {"ns", "iface", "dir", "src", "dst"} <= set(doc["hops"][0])
    assert all(set(r) == {"node", "table", "chain", "rule", "verdict"} for r in doc["rules"])
    assert doc["rules"][0] == {
        "node": "node1", "table": "nat", "chain": "PREROUTING", "verdict": "JUMP KUBE-SERVICES",
        "rule": '-A PREROUTING -m comment --comment "kubernetes service portals" '
                "-j KUBE-SERVICES"}
    assert set(doc["conntrack"][0]) == {"node", "proto", "state", "original", "reply"}
    assert doc["reply"]["flags"] == "SYN-ACK" and doc["reply"]["src"] == SERVICE
    assert json.loads(json.dumps(doc)) == doc


def test_wire_round_trip():
    t = built("userspace")
    again = tr.Trace.from_wire(json.loads(json.dumps(t.to_wire())))
    assert again == t and again.to_json() == t.to_json()


def test_a_name_is_resolved_first():
    t = built("name")
    (q,) = t.dns
    assert q.question == "service-test.default.svc.cluster.local." and q.answers == \
        ["10.3.241.152"] and q.rcode == "NOERROR" and q.server == "10.3.240.10:53"
    assert q.client.startswith("10.0.1.2:")
    doc = t.to_json()
    assert list(doc) == ["hops", "rules", "conntrack", "reply", "dns"]
    assert t.hops[0].dst == SERVICE and t.chain()[-1] == "DNAT"
    assert "DNS" in t.text().splitlines()[2]


def test_a_pod_ip_is_not_rewritten():
    t = built("podip")
    assert {h.dst for h in t.hops} == {"10.0.2.2:8080"} and not t.rewrites()
    assert not any("DNAT" in r.rule for r in t.rules)
    assert t.chain("node1") == ["PREROUTING", "ACCEPT"]
    assert t.reply.src == "10.0.2.2:8080" and t.reply.sent_src == "10.0.2.2:8080"


def test_a_node_port_from_outside_shows_dnat_and_snat():
    t = built("nodeport")
    assert t.hops[0].ns == "external" and t.hops[0].dst == "10.100.0.2:30080"
    chain = t.chain("node1")
    assert chain[:3] == ["PREROUTING", "KUBE-SERVICES", "KUBE-NODEPORTS"]
    assert chain[3].startswith("KUBE-EXT-") and chain[-1] == "DNAT"
    assert any("MASQUERADE" in r.rule and r.verdict == "ACCEPT" for r in t.rules
               if r.node == "node1")
    out = [h for h in t.hops if h.ns == "node1" and h.dir == "out"][0]
    assert out.src.startswith("10.100.0.2:") and out.dst in ENDPOINTS  # SNAT and DNAT
    assert t.reply.src == "10.100.0.2:30080" and t.reply.dst == t.hops[0].src
    assert t.reply.hops[-1].ns == "external"


def test_from_a_node_the_rewrite_happens_before_the_first_interface():
    t = built("fromnode")
    assert t.chain("node1")[0] == "OUTPUT" and t.chain("node1")[-1] == "DNAT"
    assert t.hops[0].dst in ENDPOINTS
    assert "node1's own netfilter rewrote it" in t.notes[0]
    # No interface saw the cluster IP, but node1's conntrack entry did.
    (entry,) = [c for c in t.conntrack if c.node == "node1"]
    assert entry.original["dst"] == SERVICE and entry.reply["src"] == t.reply.src
    assert f"turns that back into {SERVICE}" in t.notes[1]


def test_a_closed_port_answers_rst():
    t = built("closed")
    assert t.reply.flags == "RST-ACK" and not t.answered
    assert t.conntrack == []  # conntrack forgets a connection whose only reply is a RST
    assert "answered by RST-ACK" in t.headline()


def test_userspace_mode_shows_both_connections():
    t = built("userspace")
    leg1 = [h for h in t.hops if h.leg == 1]
    leg2 = [h for h in t.hops if h.leg == 2]
    assert leg1[-1].ns == "node1" and leg1[-1].dst.endswith(":10400")  # REDIRECT
    assert t.chain("node1") == ["PREROUTING", "KUBE-PORTALS-CONTAINER", "REDIRECT"]
    assert leg2[0].ns == "node1" and leg2[0].dir == "out"
    assert leg2[0].src.split(":")[0] in ("10.100.0.2", "10.0.1.1")
    assert leg2[-1].dst in ENDPOINTS and leg2[-1].ns == ENDPOINTS[leg2[-1].dst]
    assert t.chain("node1", leg=2)[0] == "OUTPUT"
    assert t.reply.sent_by == "node1" and t.reply.src == SERVICE
    assert {h.leg for h in t.reply.hops} == {1, 2}
    text = t.text()
    assert "a second connection, opened by the proxy" in text
    assert "delivered to a socket of node1" in text


def test_text_and_html():
    t = built("clusterip")
    text = repr(t)
    assert text == str(t) == t.text()
    assert text.splitlines()[0].startswith("trace from service-test-6ffd9ddbbf-kf4j2 (10.0.1.2)"
                                           " to 10.3.241.152:80: TCP SYN, answered by SYN-ACK")
    for title in ("hop by hop", "Rules it matched", "Connection tracking", "The reply"):
        assert title in text
    assert "rewritten: dst was 10.3.241.152:80" in text
    html = t._repr_html_()
    assert html.count("<table>") == 4 and "<code>-A PREROUTING" in html
    assert "&quot;kubernetes service portals&quot;" in html


def test_no_reply():
    data = raw("podip")
    data["packets"] = [p for p in data["packets"] if p["flags"] & 0x10 == 0]
    data["notes"] = ["no reply reached service-test-6ffd9ddbbf-kf4j2 within 1s"]
    t = tr.build(data)
    assert t.reply == tr.Reply() and t.to_json()["reply"] == {}
    assert "The reply: none" in t.text() and "note: no reply" in t.text()
