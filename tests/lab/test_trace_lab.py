"""``kubenet trace``: a real SYN through real labs, and what the kernel reported about it."""

import json
import time

import pytest
from article_facts import CLIENT, CLIENT_NS, ENDPOINTS, NODEPORT, SERVICE

import kubenet
from kubenet.errors import BadRequest, NotFound


@pytest.fixture(scope="module")
def lab():
    with kubenet.Lab("article") as lab:
        yield lab


@pytest.fixture(scope="module")
def userspace_lab():
    with kubenet.Lab("article", proxy_mode="userspace") as lab:
        yield lab


def tracer_running(lab) -> bool:
    return "kubenet.packets" in lab.exec("node1", "ps", "-eo", "args").stdout


def test_the_tracer_starts_on_the_first_trace_only(lab):
    assert not tracer_running(lab)  # `kubenet up` never pays for scapy
    lab.trace(CLIENT, "10.0.2.2:8080")
    assert tracer_running(lab)


def assert_cluster_ip_trace(t, node1_chain_start=("PREROUTING", "KUBE-SERVICES")):
    first, last = t.hops[0], t.hops[-1]
    assert (first.ns, first.iface, first.dir, first.dst) == (CLIENT_NS, "eth0", "out", SERVICE)
    assert first.src.startswith("10.0.1.2:")
    assert last.dst in ENDPOINTS and (last.ns, last.iface, last.dir) == \
        (ENDPOINTS[last.dst], "eth0", "in")
    node1 = [h for h in t.hops if h.ns == "node1"]
    assert node1[0].iface.startswith("veth") and node1[0].dir == "in" and \
        node1[0].dst == SERVICE
    chain = t.chain("node1")
    assert tuple(chain[:2]) == node1_chain_start
    assert chain[2].startswith("KUBE-SVC-") and chain[3].startswith("KUBE-SEP-")
    assert chain[4:] == ["DNAT"]
    (dnat,) = [r for r in t.rules if "-j DNAT" in r.rule]
    assert dnat.node == "node1" and dnat.rule.endswith(f"--to-destination {last.dst}")
    (entry,) = [c for c in t.conntrack if c.node == "node1"]
    assert entry.original == {"src": first.src, "dst": SERVICE}
    assert entry.reply["src"] == last.dst
    assert t.answered and t.reply.src == SERVICE and t.reply.dst == first.src
    assert t.reply.sent_src == last.dst and t.reply.sent_by == last.ns
    assert t.reply.hops[-1].ns == CLIENT_NS and t.reply.hops[-1].dir == "in"


def test_trace_to_the_cluster_ip_reaches_both_pods(lab):
    seen = {}
    for _ in range(30):
        t = lab.trace(CLIENT, SERVICE)
        assert_cluster_ip_trace(t)
        seen.setdefault(t.hops[-1].dst, t)
        if len(seen) == 2:
            break
    assert set(seen) == set(ENDPOINTS), "the statistic rule never chose one of the pods"
    far = seen["10.0.2.2:8080"]
    path = [(h.ns, h.iface, h.dir) for h in far.hops]
    assert ("gateway", "to-node1", "in") in path and ("gateway", "to-node2", "out") in path
    assert path.index(("node1", "eth0", "out")) < path.index(("node2", "eth0", "in"))
    assert all(h.dst == "10.0.2.2:8080" for h in far.hops if h.ns in ("gateway", "node2"))
    assert far.chain("node2") == ["PREROUTING", "ACCEPT"]  # node2 only forwards
    # The client asked itself through the service: the node rewrote both addresses
    # (kube-proxy's masquerade for hairpin traffic).
    hairpin = seen["10.0.1.2:8080"]
    assert hairpin.hops[-1].src.startswith("10.0.1.1:")
    assert any("MASQUERADE" in r.rule for r in hairpin.rules)


def test_trace_to_the_service_name_asks_dns_first(lab):
    t = lab.trace(CLIENT, "service-test:80")
    (q,) = t.dns
    assert (q.question, q.answers, q.server) == \
        ("service-test.default.svc.cluster.local.", ["10.3.241.152"], "10.3.240.10:53")
    assert_cluster_ip_trace(t)
    doc = lab.trace(CLIENT, "service-test:80", json=True)
    assert list(doc) == ["hops", "rules", "conntrack", "reply", "dns"]


def test_trace_to_a_pod_ip_is_not_rewritten(lab):
    t = lab.trace(CLIENT, "10.0.2.2:8080")
    assert {h.dst for h in t.hops} == {"10.0.2.2:8080"} and not t.rewrites()
    assert not any("DNAT" in r.rule for r in t.rules)
    assert t.chain("node1") == ["PREROUTING", "ACCEPT"]
    assert [h.ns for h in t.hops][0] == CLIENT_NS and t.hops[-1].ns == ENDPOINTS["10.0.2.2:8080"]
    assert t.reply.src == "10.0.2.2:8080"


def test_trace_to_a_node_port_from_outside(lab):
    lab.apply(NODEPORT)
    t = lab.trace("external", "10.100.0.2:30080")
    assert t.hops[0].ns == "external" and t.hops[0].src.startswith("203.0.113.10:")
    chain = t.chain("node1")
    assert chain[:3] == ["PREROUTING", "KUBE-SERVICES", "KUBE-NODEPORTS"] and \
        chain[-1] == "DNAT"
    assert any("-j MASQUERADE" in r.rule for r in t.rules if r.node == "node1")
    last = t.hops[-1]
    assert last.dst in ENDPOINTS
    # DNAT and SNAT: the pod sees the node, not the external client.
    assert last.src.startswith(("10.100.0.2:", "10.0.1.1:"))
    assert t.reply.src == "10.100.0.2:30080" and t.reply.hops[-1].ns == "external"


def test_trace_from_a_node(lab):
    t = lab.trace("node1", SERVICE)
    assert t.chain("node1")[0] == "OUTPUT" and t.chain("node1")[-1] == "DNAT"
    assert t.hops[0].ns == "node1" and t.hops[0].dst in ENDPOINTS
    # node1 rewrites its own packets inside: no interface ever sees the cluster IP.
    assert "node1's own netfilter rewrote it" in t.notes[0]
    assert t.answered and t.reply.src == t.hops[-1].dst
    assert t.conntrack[0].original["dst"] == SERVICE and "turns that back into" in t.notes[1]


def test_the_trace_leaves_the_lab_as_it_was(lab):
    servers = [ns.split(".", 1)[1] for ns in ENDPOINTS.values()]

    def state():
        rules = [line for node in ("node1", "node2") for line in
                 str(lab.rules(node)).splitlines() if not line.startswith("#")]
        return rules, [lab.logs(pod) for pod in servers]

    before = state()
    lab.trace(CLIENT, SERVICE)
    # No TRACE rule, no raw table; and the servers never saw a request: the connection
    # was reset before it was accepted.
    assert state() == before
    for ns in ("node1", "node2"):
        listing = lab.exec(ns, "nft", "list", "table", "inet", "kubenet-trace").stdout
        assert "chain pre" in listing and "nftrace" not in listing and "drop" not in listing


def test_errors_are_one_line(lab, run_cli):
    with pytest.raises(NotFound, match='pods "nope" not found'):
        lab.trace("nope", SERVICE)
    with pytest.raises(BadRequest, match="cannot trace from a completed pod"):
        lab.trace("service-test-client1", SERVICE)
    with pytest.raises(BadRequest, match="expected HOST:PORT"):
        lab.trace(CLIENT, "10.3.241.152")
    with pytest.raises(NotFound, match="lookup nosuch on 10.3.240.10:53: no such host"):
        lab.trace(CLIENT, "nosuch:80")
    out = run_cli("trace", CLIENT, "nosuch:80", "--json", lab=lab.name)
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1


def test_cli_json_is_one_document(lab, run_cli):
    out = run_cli("trace", CLIENT, SERVICE, "--json", lab=lab.name)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # the whole of stdout
    assert list(doc) == ["hops", "rules", "conntrack", "reply"]
    assert doc["hops"][0]["dst"] == SERVICE and doc["reply"]["src"] == SERVICE
    assert [r["chain"] for r in doc["rules"]][:2] == ["PREROUTING", "KUBE-SERVICES"]
    assert out.stderr.startswith(f"trace from {CLIENT} (10.0.1.2) to {SERVICE}")
    text = run_cli("trace", CLIENT, "service-test:80", lab=lab.name)
    assert text.returncode == 0 and "service-test.default.svc.cluster.local." in text.stdout
    assert "Rules it matched" in text.stdout


def test_a_warm_trace_takes_well_under_a_second(lab):
    lab.trace(CLIENT, SERVICE)
    times = []
    for _ in range(3):
        start = time.monotonic()
        lab.trace(CLIENT, SERVICE)
        times.append(time.monotonic() - start)
    assert min(times) < 1.0, times


def test_userspace_trace_shows_the_proxy_and_its_second_connection(userspace_lab):
    t = userspace_lab.trace(CLIENT, SERVICE)
    leg1 = [h for h in t.hops if h.leg == 1]
    leg2 = [h for h in t.hops if h.leg == 2]
    assert leg1[0].dst == SERVICE and leg1[-1].ns == "node1"
    assert leg1[-1].dst.endswith(":10400")  # REDIRECT to the proxy's port
    assert t.chain("node1") == ["PREROUTING", "KUBE-PORTALS-CONTAINER", "REDIRECT"]
    assert any("--to-ports 10400" in r.rule for r in t.rules)
    # The second connection leaves the node from its own address, to a pod.
    assert leg2[0].ns == "node1" and leg2[0].dir == "out"
    assert leg2[0].src.split(":")[0] in ("10.100.0.2", "10.0.1.1")
    assert leg2[-1].dst in ENDPOINTS and leg2[-1].ns == ENDPOINTS[leg2[-1].dst]
    assert t.chain("node1", leg=2)[0] == "OUTPUT"
    # The client's answer came from node1's proxy, as the cluster IP.
    assert t.reply.sent_by == "node1" and t.reply.src == SERVICE
    assert {h.leg for h in t.reply.hops} == {1, 2}
    states = {(c.node, c.original["dst"]): c.state for c in t.conntrack}
    assert states[("node1", SERVICE)] == "ESTABLISHED"


def test_userspace_trace_by_name(userspace_lab):
    t = userspace_lab.trace(CLIENT, "service-test:80")
    assert t.dns[0].answers == ["10.3.241.152"]
    assert t.chain("node1")[-1] == "REDIRECT" and any(h.leg == 2 for h in t.hops)


def test_userspace_trace_to_a_pod_ip(userspace_lab):
    t = userspace_lab.trace(CLIENT, "10.0.2.2:8080")
    assert {h.dst for h in t.hops} == {"10.0.2.2:8080"} and all(h.leg == 1 for h in t.hops)
    assert not any("REDIRECT" in r.rule or "DNAT" in r.rule for r in t.rules)
