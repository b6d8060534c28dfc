"""``kubenet trace`` in kube-proxy's nftables mode: the kernel's ``nft monitor trace`` of
each node's ``table ip kube-proxy``, for a real SYN through a real lab."""

import json
import re
import time

import pytest
from article_facts import CLIENT, CLIENT_NS, ENDPOINTS, NODEPORT, SERVICE

import kubenet


@pytest.fixture(scope="module")
def nft_lab():
    with kubenet.Lab("article", proxy_mode="nftables") as lab:
        yield lab


def node_table(lab, node: str) -> str:
    return lab.exec(node, "nft", "list", "table", "ip", "kube-proxy").stdout


def assert_nft_cluster_ip_trace(lab, t, endpoints=ENDPOINTS):
    """The walk the kernel reported is the path kube-proxy's table gives a new connection,
    rule by rule as ``nft list`` prints them, ending in a DNAT to the pod that answered."""
    first, last = t.hops[0], t.hops[-1]
    assert (first.ns, first.dst) == (CLIENT_NS, SERVICE)
    assert last.dst in endpoints and (last.ns, last.dir) == (endpoints[last.dst], "in")
    assert t.monitors == ["nft monitor trace"]
    chain = t.chain("node1")
    assert chain[:3] == ["nat-prerouting", "services", "@service-ips"]
    assert re.fullmatch(r"service-[A-Z0-9]{8}-default/service-test/tcp/", chain[3])
    ip, port = last.dst.split(":")
    assert re.fullmatch(rf"endpoint-[A-Z0-9]{{8}}-default/service-test/tcp/__{ip}/{port}",
                        chain[4])
    assert chain[5:] == [f"dnat to {last.dst}"]
    (dnat,) = [r for r in t.rules if r.rule.startswith("meta l4proto tcp dnat to")]
    assert (dnat.node, dnat.table, dnat.chain, dnat.verdict) == \
        ("node1", "ip kube-proxy", chain[4], "accept")
    # Every rule shown is one of the node's rules now, as nft prints them (not stale).
    table = node_table(lab, "node1")
    for r in t.rules:
        assert r.table == "ip kube-proxy"
        if r.kind == "rule" and r.node == "node1":
            assert f"\t\t{r.rule}\n" in table, r.rule
    vmap = next(r for r in t.rules if r.chain == "services")
    assert vmap.rule == "ip daddr . meta l4proto . th dport vmap @service-ips"
    assert vmap.verdict == f"goto {chain[3]}"
    (entry,) = [c for c in t.conntrack if c.node == "node1"]
    assert entry.original == {"src": first.src, "dst": SERVICE}
    assert entry.reply["src"] == last.dst
    assert t.answered and t.reply.src == SERVICE and t.reply.sent_src == last.dst


def test_nft_trace_to_the_cluster_ip_reaches_both_pods(nft_lab):
    seen = {}
    for _ in range(30):
        t = nft_lab.trace(CLIENT, SERVICE)
        assert_nft_cluster_ip_trace(nft_lab, t)
        seen.setdefault(t.hops[-1].dst, t)
        if len(seen) == 2:
            break
    assert set(seen) == set(ENDPOINTS), "numgen never chose one of the pods"
    far = seen["10.0.2.2:8080"]
    assert far.chain("node2") == ["nat-prerouting", "accept"]  # node2 only forwards
    assert far.chain("node1", table="filter")[0] == "filter-prerouting-pre-dnat"
    # The client reached itself through the service: masqueraded, as the rules say.
    hairpin = seen["10.0.1.2:8080"]
    assert hairpin.hops[-1].src.startswith("10.0.1.1:")
    assert any(r.rule == "masquerade fully-random" and r.verdict == "accept"
               for r in hairpin.rules if r.node == "node1")
    assert any(r.chain == "mark-for-masquerade" for r in hairpin.rules)


def test_nft_trace_to_the_service_name(nft_lab, run_cli):
    t = nft_lab.trace(CLIENT, "service-test:80")
    (q,) = t.dns
    assert (q.question, q.answers) == ("service-test.default.svc.cluster.local.",
                                       ["10.3.241.152"])
    assert_nft_cluster_ip_trace(nft_lab, t)
    out = run_cli("trace", CLIENT, "service-test:80", lab=nft_lab.name)
    assert out.returncode == 0, out.stderr
    assert "Rules it matched (the kernel's own trace: nft monitor trace)" in out.stdout
    assert "xtables-monitor" not in out.stdout
    assert "vmap @service-ips" in out.stdout and "dnat to 10.0." in out.stdout
    doc = json.loads(run_cli("trace", CLIENT, SERVICE, "--json", lab=nft_lab.name).stdout)
    assert list(doc) == ["hops", "rules", "conntrack", "reply"]
    assert {r["table"] for r in doc["rules"]} == {"ip kube-proxy"}
    assert [r["chain"] for r in doc["rules"] if r["node"] == "node1"][2:4] == \
        ["nat-prerouting", "services"]
    assert any(r["rule"] == f"meta l4proto tcp dnat to {doc['hops'][-1]['dst']}"
               for r in doc["rules"])


def test_nft_trace_to_a_pod_ip_is_not_rewritten(nft_lab):
    t = nft_lab.trace(CLIENT, "10.0.2.2:8080")
    assert {h.dst for h in t.hops} == {"10.0.2.2:8080"} and not t.rewrites()
    assert t.chain("node1") == ["nat-prerouting", "accept"]
    assert not any("dnat" in r.rule for r in t.rules)


def test_nft_trace_from_a_node(nft_lab):
    t = nft_lab.trace("node1", SERVICE)
    chain = t.chain("node1")
    assert chain[:3] == ["nat-output", "services", "@service-ips"]
    assert chain[-1] == f"dnat to {t.hops[0].dst}" and t.hops[0].dst in ENDPOINTS


def test_nft_trace_draws_the_walk(nft_lab):
    t = nft_lab.trace(CLIENT, SERVICE)
    source = nft_lab.draw(t).source
    assert "rewritten in node1" in source
    for step in ("nat-prerouting", "→ @service-ips", f"→ dnat to {t.hops[-1].dst}"):
        assert step in source


def test_the_nft_trace_leaves_the_lab_as_it_was(nft_lab):
    before = [node_table(nft_lab, n) for n in ("node1", "node2")]
    nft_lab.trace(CLIENT, SERVICE)
    assert [node_table(nft_lab, n) for n in ("node1", "node2")] == before
    for ns in ("node1", "node2"):
        listing = nft_lab.exec(ns, "nft", "list", "table", "inet", "kubenet-trace").stdout
        assert "chain pre" in listing and "nftrace" not in listing and "drop" not in listing


def test_a_warm_nft_trace_takes_well_under_a_second(nft_lab):
    nft_lab.trace(CLIENT, SERVICE)
    times = []
    for _ in range(3):
        start = time.monotonic()
        nft_lab.trace(CLIENT, SERVICE)
        times.append(time.monotonic() - start)
    assert min(times) < 1.0, times


def test_nft_trace_follows_kube_proxy_rewriting_its_table(nft_lab):
    """kube-proxy replaces its table on every change; the trace still prints the rules the
    packet really met (nft monitor prints rules from the ruleset it read when it started)."""
    nft_lab.apply(NODEPORT)
    t = nft_lab.trace("external", "10.100.0.2:30080")
    chain = t.chain("node1")
    assert chain[:3] == ["nat-prerouting", "services", "@service-nodeports"]
    assert chain[3].startswith("external-") and chain[4].startswith("service-")
    assert chain[-1] == f"dnat to {t.hops[-1].dst}" and t.hops[-1].dst in ENDPOINTS
    assert any(r.rule == "masquerade fully-random" for r in t.rules if r.node == "node1")
    assert t.reply.src == "10.100.0.2:30080" and t.reply.hops[-1].ns == "external"
    # A pod replaced: a new endpoint, a new table. Its chain is in the trace, by name.
    nft_lab.delete("pod", "service-test-6ffd9ddbbf-qs2j6")
    deadline = time.monotonic() + 30
    while (set(nft_lab.endpoints("service-test")) == set(ENDPOINTS) or
           len(nft_lab.endpoints("service-test")) != 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    nft_lab.wait_until_endpoints("service-test", 2)
    (address,) = set(nft_lab.endpoints("service-test")) - {"10.0.1.2:8080"}
    (pod,) = [p["metadata"]["name"] for p in nft_lab.pods()
              if f"{p['status'].get('podIP')}:8080" == address]
    new = {address: f"default.{pod}"}
    endpoints = {"10.0.1.2:8080": CLIENT_NS, **new}
    seen = set()
    for _ in range(30):
        t = nft_lab.trace(CLIENT, SERVICE)
        assert not t.notes, t.notes
        assert_nft_cluster_ip_trace(nft_lab, t, endpoints)
        seen.add(t.hops[-1].dst)
        if set(new) <= seen:
            break
    assert set(new) <= seen


def test_switching_proxy_mode_switches_the_monitor():
    with kubenet.Lab("article", proxy_mode="nftables") as lab:
        assert lab.trace(CLIENT, SERVICE).chain("node1")[0] == "nat-prerouting"
        lab.set_proxy_mode("iptables")
        t = lab.trace(CLIENT, SERVICE)
        assert t.monitors == ["xtables-monitor --trace"]
        assert t.chain("node1")[:2] == ["PREROUTING", "KUBE-SERVICES"]
        assert t.chain("node1")[-1] == "DNAT"
        lab.set_proxy_mode("nftables")
        t = lab.trace(CLIENT, SERVICE)
        assert t.monitors == ["nft monitor trace"] and not t.notes
        assert t.chain("node1")[-1] == f"dnat to {t.hops[-1].dst}"
