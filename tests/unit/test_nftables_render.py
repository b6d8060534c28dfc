"""kubenet.kubeproxy.nftables against kube-proxy's own nftables tests.

The golden comes from ``TestOverallNFTablesRules`` (``baseRules`` plus its expected text)
in pkg/proxy/nftables/proxier_test.go; that file is not stored at kubernetes commit
531be81208e2274ef42e72525a26610a9622bcdf, so the stored version
030880a5dc5449403c6d1f0aa146a7dc21d6c6dc was used; the proxier itself was read at
531be812. The Go test compares knftables' ``Fake.Dump()`` after
``sortNFTablesTransaction`` (helpers_test.go), because kube-proxy walks its services in
Go's random map order; ``sort_transaction`` below is a port of that helper.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kubenet.kubeproxy.iptables import load_objects
from kubenet.kubeproxy.nftables import (
    chain_name_base,
    endpoint_chain_name_base,
    hash_and_truncate,
    render,
    render_yaml,
)

DATA = Path(__file__).parent / "data" / "nftables"
NFT = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)

TEST_NODE_NAME = "test-node"
TEST_NODE_IPS = ["192.168.0.2", "192.168.1.2", "192.168.99.11"]

# NewFakeProxier (IPv4): pod CIDR 10.0.0.0/8 for the local-traffic detector, mark 0x4000,
# --nodeport-addresses 192.168.0.2/32, ServiceCIDR 172.30.0.0/16.
FAKE = dict(node_name=TEST_NODE_NAME, node_ips=TEST_NODE_IPS, cluster_cidr="10.0.0.0/8",
            nodeport_addresses=["192.168.0.2/32"], service_cidrs=["172.30.0.0/16"])
# A plain node: no detector, NodePorts on every local address, no ServiceCIDRs known.
PLAIN = dict(node_name=TEST_NODE_NAME, node_ips=["192.168.0.2"])

_OBJECT_ORDER = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}


def sort_transaction(text: str) -> list[str]:
    """``sortNFTablesTransaction``: drop blank and ``#`` lines, then a stable sort.

    Object type first (table, chain, rule, set, map, element), then object name; rules
    keep their order within a chain, other lines of the same object sort as text.
    """
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]

    def key(line: str) -> tuple[int, str, str]:
        words = line.split(" ")
        return (-_OBJECT_ORDER.get(words[1], 0), words[4], "" if words[1] == "rule" else line)

    return sorted(lines, key=key)


def overall(**kw: object) -> str:
    return render_yaml((DATA / "overall.yaml").read_text(), **{**FAKE, **kw})


def svc(name: str, ip: str, *, ns: str = "ns1", port: int = 80, node_port: int = 0,
        **spec: object) -> dict:
    p: dict = {"name": "p80", "port": port, "protocol": "TCP"}
    if node_port:
        p["nodePort"] = node_port
    status = spec.pop("status", {})
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": ip, "ports": [p], **spec}, "status": status}


def eps(name: str, *endpoints: dict, ns: str = "ns1", port: int = 80) -> dict:
    return {"kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": ns, "name": f"{name}-1",
                         "labels": {"kubernetes.io/service-name": name}},
            "endpoints": list(endpoints),
            "ports": [{"name": "p80", "port": port, "protocol": "TCP"}]}


def rules_of(text: str, chain: str) -> list[str]:
    prefix = f"add rule ip kube-proxy {chain} "
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def elements_of(text: str, name: str) -> list[str]:
    prefix = f"add element ip kube-proxy {name} "
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


# --- names ------------------------------------------------------------------------------

def test_service_chain_name_base_matches_kube_proxy() -> None:
    assert chain_name_base("ns1", "svc1", "TCP", "p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert chain_name_base("ns5", "svc5", "tcp", "p80") == "HVFWP5L3-ns5/svc5/tcp/p80"


def test_endpoint_chain_name_base_matches_kube_proxy() -> None:
    assert (endpoint_chain_name_base("ns1", "svc1", "TCP", "p80", "10.180.0.1:80")
            == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80")
    assert (endpoint_chain_name_base("ns4", "svc4", "tcp", "p80", "10.180.0.5:80")
            == "5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80")


def test_hash_and_truncate_limits_length() -> None:
    long = hash_and_truncate("x" * 300)
    assert len(long) == 240 and long.endswith("...") and long[8] == "-"
    assert len(hash_and_truncate("short")) == len("short") + 9


# --- the golden -------------------------------------------------------------------------

def test_overall_rules_match_kube_proxy_golden() -> None:
    expected = sort_transaction((DATA / "overall.expected.txt").read_text())
    assert sort_transaction(overall()) == expected


def test_sort_transaction_keeps_rule_order_and_drops_comments() -> None:
    text = ("# c\n\nadd rule ip kube-proxy b z\nadd rule ip kube-proxy b a\n"
            "add element ip kube-proxy m { 2 }\nadd element ip kube-proxy m { 1 }\n"
            "add chain ip kube-proxy b\nadd table ip kube-proxy { x }\n")
    assert sort_transaction(text) == [
        "add table ip kube-proxy { x }", "add chain ip kube-proxy b",
        "add rule ip kube-proxy b z", "add rule ip kube-proxy b a",
        "add element ip kube-proxy m { 1 }", "add element ip kube-proxy m { 2 }"]


def test_raw_order_defines_before_use() -> None:
    """``nft -f`` needs every chain, set and map added before a line refers to it."""
    defined: set[str] = set()
    for line in overall(flush=True).splitlines():
        line = re.sub(r' comment "[^"]*"', "", line)
        words = line.split()
        if words[0] == "add" and words[1] in ("chain", "set", "map"):
            defined.add(words[4])
        for target in re.findall(r"(?:goto|jump) (\S+)", line):
            assert target in defined, line
        for ref in re.findall(r"@(\S+)", line):
            assert ref.rstrip(",") in defined, line


def test_render_yaml_equals_render() -> None:
    services, slices = load_objects((DATA / "overall.yaml").read_text())
    assert render(services, slices, **FAKE) == overall()


# --- options and cases outside the golden -----------------------------------------------

def test_plain_node_uses_fib_for_nodeports_and_no_detector_rules() -> None:
    text = overall(**PLAIN, cluster_cidr=None, nodeport_addresses=None, service_cidrs=())
    assert "nodeport-ips" not in text
    assert rules_of(text, "services")[1] == (
        "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
        "vmap @service-nodeports")
    assert rules_of(text, "nodeport-endpoints-check") == [
        "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports"]
    assert rules_of(text, "cluster-ips-check") == [
        'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"']
    assert "ip saddr != 10.0.0.0/8" not in text
    assert rules_of(text, "external-42NFTM6N-ns2/svc2/tcp/p80")[0].startswith("fib saddr")


def test_masquerade_all_and_padded_mark() -> None:
    text = overall(masquerade_all=True, padded_mark=True)
    assert rules_of(text, "service-ULMVA6XW-ns1/svc1/tcp/p80")[0] == (
        "ip daddr 172.30.0.41 jump mark-for-masquerade")
    assert rules_of(text, "mark-for-masquerade") == ["mark set mark or 0x00004000"]
    assert rules_of(text, "masquerading")[0] == "mark and 0x00004000 == 0 return"


def test_flush_mode_resets_chains_and_maps() -> None:
    text = overall(flush=True)
    assert "flush chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80" in text
    assert "delete chain ip kube-proxy filter-input" in text
    assert "flush map ip kube-proxy service-ips" in text
    assert "flush set ip kube-proxy nodeport-ips" in text
    assert "delete set" not in text
    plain = overall(flush=True, nodeport_addresses=None)
    assert "delete set ip kube-proxy nodeport-ips" in plain


def test_internal_traffic_policy_local_without_local_endpoints_drops() -> None:
    text = render([svc("svc1", "172.30.0.41", internalTrafficPolicy="Local")],
                  [eps("svc1", {"addresses": ["10.180.0.1"], "nodeName": "other"})], **FAKE)
    assert elements_of(text, "no-endpoint-services") == [
        '{ 172.30.0.41 . tcp . 80 comment "ns1/svc1:p80" : drop }']
    assert elements_of(text, "service-ips") == []
    assert "add chain ip kube-proxy endpoint-" not in text


def test_local_policy_with_local_endpoint_uses_local_chain() -> None:
    service = svc("svc1", "172.30.0.41", type="NodePort", node_port=3001,
                  externalTrafficPolicy="Local")
    slices = [eps("svc1", {"addresses": ["10.180.0.1"], "nodeName": TEST_NODE_NAME},
                  {"addresses": ["10.180.0.2"], "nodeName": "other"})]
    text = render([service], slices, **FAKE)
    base = chain_name_base("ns1", "svc1", "tcp", "p80")
    assert rules_of(text, f"external-{base}")[-1] == f"goto local-{base}"
    local = rules_of(text, f"local-{base}")
    assert local == [f"numgen random mod 1 vmap {{ 0 : goto endpoint-"
                     f"{endpoint_chain_name_base('ns1', 'svc1', 'tcp', 'p80', '10.180.0.1:80')}"
                     " }"]
    assert "mod 2" in rules_of(text, f"service-{base}")[-1]
    assert elements_of(text, "no-endpoint-nodeports") == []


def test_firewall_allows_lb_ips_when_node_ip_in_source_ranges() -> None:
    service = svc("svc1", "172.30.0.41", type="LoadBalancer", node_port=3001,
                  loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"],
                  status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8"}]}})
    text = render([service], [eps("svc1", {"addresses": ["10.180.0.1"]})], **FAKE)
    base = chain_name_base("ns1", "svc1", "tcp", "p80")
    assert rules_of(text, f"firewall-{base}") == [
        "ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 1.2.3.4 , 5.6.7.8 } drop"]
    assert elements_of(text, "firewall-ips") == [
        f"{{ 1.2.3.4 . tcp . 80 : goto firewall-{base} }}",
        f"{{ 5.6.7.8 . tcp . 80 : goto firewall-{base} }}"]


def test_session_affinity_default_timeout_and_order() -> None:
    service = svc("svc1", "172.30.0.41", sessionAffinity="ClientIP")
    slices = [eps("svc1", {"addresses": ["10.180.0.2"]}, {"addresses": ["10.180.0.1"]})]
    text = render([service], slices, **FAKE)
    sets = [line for line in text.splitlines() if line.startswith("add set ip kube-proxy aff")]
    assert len(sets) == 2 and all("timeout 10800s" in line for line in sets)
    rules = rules_of(text, f"service-{chain_name_base('ns1', 'svc1', 'tcp', 'p80')}")
    assert [r.split()[2] for r in rules[1:3]] == [
        "@affinity-" + endpoint_chain_name_base("ns1", "svc1", "tcp", "p80", ip)
        for ip in ("10.180.0.1:80", "10.180.0.2:80")]
    assert rules[3].startswith("numgen random mod 2 vmap { 0 : goto endpoint-")


def test_headless_and_external_name_services_are_skipped() -> None:
    text = render([svc("h", "None"), {"kind": "Service", "metadata": {"name": "e"},
                                      "spec": {"type": "ExternalName"}}], [], **PLAIN)
    assert elements_of(text, "cluster-ips") == []


# --- the real parser --------------------------------------------------------------------

@pytest.mark.skipif(NFT is None, reason="nft binary not installed")
def test_nft_accepts_output(tmp_path: Path) -> None:
    """``nft -c -f``: the text parses and validates (nothing is committed)."""
    for i, text in enumerate([overall(), overall(flush=True, padded_mark=True),
                              overall(**PLAIN, cluster_cidr=None, nodeport_addresses=None,
                                      service_cidrs=(), masquerade_all=True)]):
        path = tmp_path / f"rules{i}.nft"
        path.write_text(text)
        done = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr


def test_cli_render_nftables_prints_the_transaction(capsys: pytest.CaptureFixture[str]) -> None:
    from kubenet import cli

    code = cli.main(["render-nftables", "-f", str(DATA / "overall.yaml"), "--node-name",
                     TEST_NODE_NAME, "--node-ip", TEST_NODE_IPS[0], "--cluster-cidr",
                     "10.0.0.0/8", "--service-cidr", "172.30.0.0/16"])
    out = capsys.readouterr().out
    assert code == 0
    assert out == render_yaml((DATA / "overall.yaml").read_text(), node_name=TEST_NODE_NAME,
                              node_ips=TEST_NODE_IPS[:1], cluster_cidr="10.0.0.0/8",
                              service_cidrs=["172.30.0.0/16"])
    assert "add map ip kube-proxy service-ips" in out
