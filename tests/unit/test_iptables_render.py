"""kubenet.kubeproxy.iptables against kube-proxy's own tests.

Goldens and packet-flow cases come from pkg/proxy/iptables/proxier_test.go at kubernetes
commit 531be81208e2274ef42e72525a26610a9622bcdf. The Go tests compare a *sorted* form of
the restore input (``sortIPTablesRules``), because kube-proxy walks its services in Go's
random map order; ``sort_rules`` below is a port of that helper, ``check_rule_jumps`` of
``checkIPTablesRuleJumps`` and ``trace_packet`` of ``tracePacket``. Where the renderer's
own (deterministic) order matters, the raw text is compared too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubenet.kubeproxy.iptables import (
    endpoint_chain_name,
    jump_rules,
    load_objects,
    masquerade_mark,
    probability,
    render,
    render_yaml,
    service_chain_name,
)

DATA = Path(__file__).parent / "data" / "iptables"

TEST_NODE_NAME = "test-node"
TEST_NODE_IP = "192.168.0.2"
TEST_NODE_IP_ALT = "192.168.1.2"
TEST_EXTERNAL_IP = "192.168.99.11"
TEST_EXTERNAL_CLIENT = "203.0.113.2"
TEST_EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
TEST_NODE_IPS = [TEST_NODE_IP, TEST_NODE_IP_ALT, TEST_EXTERNAL_IP]

# NewFakeProxier: node test-node / 192.168.0.2, pod CIDR 10.0.0.0/8 for the local-traffic
# detector, mark 0x4000, localhost NodePorts and both nfacct counters on, masquerade-all
# off, and a fake iptables without --random-fully.
FAKE = dict(node_name=TEST_NODE_NAME, node_ips=TEST_NODE_IPS, cluster_cidr="10.0.0.0/8",
            random_fully=False)


# --- ports of the proxier_test.go helpers -----------------------------------------------

_WORD = re.compile(r'(?:^|\s)("[^"]*"|[^"]\S*)')
_VALUE_PARAMS = {
    "-A": "chain", "--comment": "comment", "-p": "protocol", "-s": "source",
    "--src-type": "source_type", "--sport": "source_port", "-d": "destination",
    "--dst-type": "destination_type", "--dport": "destination_port", "-j": "jump",
    "--probability": "probability", "--to-destination": "dnat", "--mark": "mark",
    "--ctstate": "ctstate", "--name": "affinity_name", "--seconds": "affinity_seconds",
    "--mode": "statistic_mode",
}
_BOOL_PARAMS = {"--rcheck": "rcheck", "--set": "affinity_set", "--reap": "reap",
                "--random-fully": "random_fully"}


@dataclass
class Rule:
    raw: str
    values: dict[str, tuple[bool, str]] = field(default_factory=dict)  # name -> (negated, v)
    flags: dict[str, bool] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.values[name][1] if name in self.values else None


def parse_rule(line: str) -> Rule:
    """``iptablestest.ParseRule`` (non-strict): known parameters, ``-m MODULE`` skipped."""
    words = [m.group(1).strip('"') for m in _WORD.finditer(line)]
    rule, negated, i = Rule(raw=line), False, 0
    while i < len(words):
        word = words[i]
        if word == "-m" and i < len(words) - 1:
            i += 2
            continue
        if word == "!":
            negated, i = True, i + 1
            continue
        if word in _VALUE_PARAMS:
            rule.values[_VALUE_PARAMS[word]] = (negated, words[i + 1])
            i += 2
        elif word in _BOOL_PARAMS:
            rule.flags[_BOOL_PARAMS[word]] = not negated
            i += 1
        else:
            i += 1
        negated = False
    return rule


@dataclass
class Chain:
    name: str
    rules: list[Rule] = field(default_factory=list)
    deleted: bool = False


@dataclass
class Table:
    name: str
    chains: list[Chain] = field(default_factory=list)

    def chain(self, name: str) -> Chain | None:
        return next((c for c in self.chains if c.name == name), None)


def parse_dump(text: str) -> dict[str, Table]:
    """``iptablestest.ParseIPTablesDump``: tables -> declared chains -> rules."""
    tables: dict[str, Table] = {}
    table: Table | None = None
    for line in (raw.strip() for raw in text.strip("\n").split("\n")):
        if not line or line.startswith("#"):
            continue
        if table is None:
            assert line.startswith("*"), line
            table = tables.setdefault(line[1:], Table(line[1:]))
        elif line == "COMMIT":
            table = None
        elif m := re.fullmatch(r":(\S*) - \[\d+:\d+\]", line):
            table.chains.append(Chain(m.group(1)))
        elif m := re.fullmatch(r"-X (.*)", line):
            chain = table.chain(m.group(1))
            assert chain is not None and not chain.rules, line
            chain.deleted = True
        else:
            assert line.startswith("-A "), line
            chain = table.chain(line.split()[1])
            assert chain is not None and not chain.deleted, f"undeclared chain: {line}"
            chain.rules.append(parse_rule(line))
    assert table is None, "no COMMIT"
    return tables


def _service_of(rule: Rule) -> str:
    comment = rule.get("comment") or ""
    return re.split(r"[ :]", comment, maxsplit=1)[0]


def _chain_rank(name: str) -> tuple[int, str]:
    if name == "KUBE-NODEPORTS":
        return (0, name)
    if name == "KUBE-SERVICES":
        return (1, name)
    return (2 if name.startswith("KUBE-") else 3, name)


def sort_rules(text: str) -> str:
    """``sortIPTablesRules``: chains sorted, service chains' rules by service name."""
    tables = parse_dump(text)
    out = []
    for name in sorted(tables):
        table = tables[name]
        table.chains.sort(key=lambda c: _chain_rank(c.name))
        for chain in table.chains:
            if chain.name == "KUBE-NODEPORTS" or (chain.name == "KUBE-SERVICES"
                                                  and name == "filter"):
                chain.rules.sort(key=_service_of)
            elif chain.name == "KUBE-SERVICES":
                chain.rules.sort(key=lambda r: ("must be the last rule" in (r.get("comment") or ""),
                                                _service_of(r)))
        out.append(f"*{name}")
        out += [f":{c.name} - [0:0]" for c in table.chains]
        out += [r.raw for c in table.chains for r in c.rules]
        out += [f"-X {c.name}" for c in table.chains if c.deleted]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


BUILTIN_TARGETS = {"ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "SNAT", "MASQUERADE"}
FIXED_CHAINS = {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING",
                "KUBE-FORWARD", "KUBE-MARK-MASQ", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL"}


def check_rule_jumps(text: str) -> None:
    """``checkIPTablesRuleJumps``: every jump goes to a created, non-empty chain, etc."""
    for name, table in parse_dump(text).items():
        created = {c.name for c in table.chains if not c.deleted}
        filled = {c.name for c in table.chains if c.rules}
        jumped = {r.get("jump") for c in table.chains for r in c.rules if r.get("jump")}
        jumped -= BUILTIN_TARGETS
        assert not (jumped | filled) - created, f"{name}: used but not created"
        assert not jumped - filled - {"KUBE-NODEPORTS"}, f"{name}: jumped to but empty"
        assert not created - jumped - FIXED_CHAINS, f"{name}: created but not used"


def expected(name: str) -> str:
    return (DATA / name).read_text()


def assert_rules_equal(want: str, got: str, *, consistent: bool = True) -> None:
    """``assertIPTablesRulesEqual``: compare the sorted form; check the expectation."""
    assert sort_rules(got) == want
    if consistent:
        check_rule_jumps(want)


def chain_rules(text: str, table: str, chain: str) -> list[str]:
    """``assertIPTablesChainEqual``'s view: the raw rules of one chain, in order."""
    found = parse_dump(text)[table].chain(chain)
    return [r.raw for r in found.rules] if found else []


# --- the packet tracer (tracePacket) ----------------------------------------------------

def _address_matches(value: tuple[bool, str], ip: str) -> bool:
    import ipaddress
    negated, text = value
    if "/" in text:
        matches = ipaddress.ip_address(ip) in ipaddress.ip_network(text, strict=False)
    else:
        matches = ipaddress.ip_address(ip) == ipaddress.ip_address(text)
    return matches != negated


def _value_matches(value: tuple[bool, str], other: str) -> bool:
    negated, text = value
    return (text == other) != negated


@dataclass
class Tracer:
    dump: dict[str, Table]
    local_ips: set[str]
    matches: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    masq: bool = False

    def rule_matches(self, rule: Rule, src: str, proto: str, dst: str, dport: str) -> bool:
        v = rule.values
        if "source" in v and not _address_matches(v["source"], src):
            return False
        if "source_type" in v and not _value_matches(
                v["source_type"], "LOCAL" if src in self.local_ips else "not-matched"):
            return False
        if "protocol" in v and not _value_matches(v["protocol"], proto):
            return False
        if "destination" in v and not _address_matches(v["destination"], dst):
            return False
        if "destination_type" in v and not _value_matches(
                v["destination_type"], "LOCAL" if dst in self.local_ips else "not-matched"):
            return False
        if "destination_port" in v and not _value_matches(v["destination_port"], dport):
            return False
        # anything that checks past state never matches
        return not ("rcheck" in rule.flags or "mark" in v or "ctstate" in v)

    def run(self, table: str, chain_name: str, src: str, proto: str, dst: str,
            dport: str) -> bool:
        chain = self.dump[table].chain(chain_name)
        for rule in chain.rules if chain else []:
            jump = rule.get("jump")
            if jump is None or not self.rule_matches(rule, src, proto, dst, dport):
                continue
            self.matches.append(rule.raw)
            if jump == "KUBE-MARK-MASQ":
                self.masq = True
            elif jump in ("ACCEPT", "REJECT", "DROP"):
                self.outputs.append(jump)
                return True
            elif jump == "DNAT":
                self.outputs.append(rule.get("dnat"))
                return True
            elif self.run(table, jump, src, proto, dst, dport) and \
                    rule.get("probability") is None:
                return True
        return False


def trace_packet(text: str, src: str, dst: str, dport: int,
                 proto: str = "tcp") -> tuple[list[str], str, bool]:
    """What happens to a packet: (matched rules, destinations or verdict, masqueraded)."""
    tracer = Tracer(parse_dump(text), {"127.0.0.1", "::1", *TEST_NODE_IPS})
    # nat PREROUTING only jumps to KUBE-SERVICES, so start there.
    tracer.run("nat", "KUBE-SERVICES", src, proto, dst, str(dport))
    if tracer.outputs:
        dst = tracer.outputs[0].split(":")[0]
    for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS",
                  "KUBE-PROXY-FIREWALL"):
        tracer.run("filter", chain, src, proto, dst, str(dport))
    return tracer.matches, ", ".join(tracer.outputs), tracer.masq


def run_flows(text: str, flows: list[tuple]) -> None:
    """``runPacketFlowTests``: (name, source, dest, port, output, masq[, protocol])."""
    failures = []
    for name, src, dst, port, output, masq, *proto in flows:
        matches, got, got_masq = trace_packet(text, src, dst, port, *(p.lower() for p in proto))
        if (got, got_masq) != (output, masq):
            failures.append(f"{name}: expected {output!r} masq={masq}, got {got!r} "
                            f"masq={got_masq}\n  " + "\n  ".join(matches))
    assert not failures, "\n".join(failures)


# --- object builders (makeTestService / makeTestEndpointSlice) --------------------------

def service(ns: str, name: str, cluster_ip: str, ports: list[dict], *, type_: str = "ClusterIP",
            status_ips: list[str] | None = None, **spec) -> dict:
    obj = {"kind": "Service", "metadata": {"namespace": ns, "name": name},
           "spec": {"type": type_, "clusterIP": cluster_ip, "ports": ports, **spec}}
    if status_ips is not None:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in status_ips]}}
    return obj


def port(name: str = "p80", number: int = 80, node_port: int = 0, protocol: str = "TCP") -> dict:
    result = {"name": name, "port": number, "protocol": protocol}
    if node_port:
        result["nodePort"] = node_port
    return result


def endpoint(ip: str, node: str | None = None, *, ready: bool | None = None,
             serving: bool | None = None, terminating: bool | None = None) -> dict:
    result: dict = {"addresses": [ip]}
    if node is not None:
        result["nodeName"] = node
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving),
                                    ("terminating", terminating)) if v is not None}
    if conditions:
        result["conditions"] = conditions
    return result


def endpoint_slice(ns: str, svc: str, endpoints: list[dict], ports: list[dict], *,
                   address_type: str = "IPv4", slice_name: str | None = None) -> dict:
    return {"kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": slice_name or f"{svc}-1",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "endpoints": endpoints, "ports": ports}


def fake_render(services: list[dict], slices: list[dict], **kw) -> str:
    return render(services, slices, **{**FAKE, **kw})


# --- golden outputs ---------------------------------------------------------------------

@pytest.mark.parametrize("case, kw", [
    ("overall", {}),          # TestOverallIPTablesRules
    ("repeated", {}),         # TestSyncProxyRulesRepeated, first sync
    ("bad_ips", {}),          # TestBadIPs
])
def test_golden_outputs_from_proxier_test(case, kw):
    got = render_yaml((DATA / f"{case}.yaml").read_text(), **{**FAKE, **kw})
    assert_rules_equal(expected(f"{case}.sorted.txt"), got)


def test_full_resync_deletes_stale_service_chains():
    # The final full resync of TestSyncProxyRulesRepeated: svc4 was deleted, its chains
    # are still in the kernel, so they get a chain line and a -X line.
    existing = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ",
                "PREROUTING", "KUBE-SVC-XPGD46QRK7WJZT7O", "KUBE-SEP-SNQ3ZNILQDEJNDQO",
                "KUBE-SVC-X27LE4BHSL4DOUIK", "KUBE-SEP-DKCFIS26GWF2WLWC",
                "KUBE-SEP-JVVZVJ7BSEPPRNBS", "KUBE-SVC-4SW47YFZTEDKD3PK",
                "KUBE-SEP-AYCN5HPXMIRJNJXU", "KUBE-MARK-DROP"]
    got = render_yaml((DATA / "resync.yaml").read_text(), existing_nat_chains=existing, **FAKE)
    assert_rules_equal(expected("resync.sorted.txt"), got, consistent=False)
    # raw order: the -X lines follow the service rules, before the last KUBE-SERVICES rule
    assert got.splitlines()[-4:-2] == ["-X KUBE-SEP-AYCN5HPXMIRJNJXU",
                                       "-X KUBE-SVC-4SW47YFZTEDKD3PK"]


def test_raw_order_is_proxier_go_write_order():
    # Unsorted: the filter/nat chain lines first (top-level chains in proxier.go's
    # order), then the rules in the order syncProxyRules writes them, one service port
    # after another (sorted by namespace/name here, Go map order in kube-proxy).
    got = render_yaml((DATA / "overall.yaml").read_text(), **FAKE)
    assert got == expected("overall.raw.txt")


def test_sort_helper_matches_go_example():
    # TestSortIPTablesRules "unexpected junk lines are preserved"
    data = """*filter
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-AAAAA - [0:0]
:KUBE-ZZZZZ - [0:0]
:WHY-IS-THIS-CHAIN-HERE - [0:0]
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" svc2 line 1
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-ZZZZZ -m comment --comment "mystery chain number 1"
-A KUBE-SERVICES -m comment --comment ns2/svc2 svc2 line 2
-A WHY-IS-THIS-CHAIN-HERE -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns2/svc2 blah" svc2 line 3
-A KUBE-AAAAA -m comment --comment "mystery chain number 2"
COMMIT
"""  # noqa: E501
    assert sort_rules(data) == """*filter
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-AAAAA - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-ZZZZZ - [0:0]
:WHY-IS-THIS-CHAIN-HERE - [0:0]
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" svc2 line 1
-A KUBE-SERVICES -m comment --comment ns2/svc2 svc2 line 2
-A KUBE-SERVICES -m comment --comment "ns2/svc2 blah" svc2 line 3
-A KUBE-AAAAA -m comment --comment "mystery chain number 2"
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-ZZZZZ -m comment --comment "mystery chain number 1"
-A WHY-IS-THIS-CHAIN-HERE -j ACCEPT
COMMIT
"""  # noqa: E501


# --- single chains (assertIPTablesChainEqual cases) -------------------------------------

@pytest.mark.parametrize("random_fully, suffix", [(False, ""), (True, " --random-fully")])
def test_masquerade_rule(random_fully, suffix):
    # TestMasqueradeRule
    got = fake_render([], [], random_fully=random_fully)
    assert chain_rules(got, "nat", "KUBE-POSTROUTING") == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE" + suffix,
    ]


def test_random_fully_is_on_by_default():
    got = render([], [], node_name="n", node_ips=["10.1.1.1"])
    assert '"kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully\n' in got


@pytest.mark.parametrize("nfacct, liberal, drop_rule", [
    (False, False, ["-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"]),
    (True, False, ["-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct "
                   "--nfacct-name ct_state_invalid_dropped_pkts -j DROP"]),
    (False, True, []),
])
def test_drop_invalid_rule(nfacct, liberal, drop_rule):
    # TestDropInvalidRule
    got = fake_render([], [], nfacct=nfacct, conntrack_tcp_be_liberal=liberal)
    assert chain_rules(got, "filter", "KUBE-FORWARD") == [
        *drop_rule,
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        "-m mark --mark 0x4000/0x4000 -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]


def test_masquerade_bit_sets_the_mark():
    got = fake_render([], [], masquerade_bit=5)
    assert chain_rules(got, "nat", "KUBE-MARK-MASQ") == [
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x20"]
    assert masquerade_mark(14) == "0x4000"
    assert masquerade_mark(14, padded=True) == "0x00004000"  # Go's %#08x, as NewProxier
    padded = fake_render([], [], padded_mark=True)
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n" in padded
    assert "--mark 0x00004000/0x00004000" in padded


def test_no_nfacct_means_no_localhost_counting_rule():
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type_="NodePort")
    eps = endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1")], [port()])
    got = fake_render([svc], [eps], nfacct=False)
    assert chain_rules(got, "nat", "KUBE-NODEPORTS") == [
        "-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 3001 "
        "-j KUBE-EXT-XPGD46QRK7WJZT7O"]
    # ...and localhost still reaches the NodePort, through the general rule.
    run_flows(got, [("localhost to NodePort", "127.0.0.1", "127.0.0.1", 3001,
                     "10.180.0.1:80", True)])


# --- hashing and probabilities ----------------------------------------------------------

@pytest.mark.parametrize("prefix, ns, name, port_name, expected_chain", [
    ("KUBE-SVC-", "ns1", "svc1", "p80", "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ("SVC", "ns2", "svc2", "p80", "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
    ("KUBE-EXT-", "ns2", "svc2", "p80", "KUBE-EXT-GNZBNJ2PO5MGZ6GT"),
    ("SVL", "ns2", "svc2", "p80", "KUBE-SVL-GNZBNJ2PO5MGZ6GT"),
    ("KUBE-FW", "ns5", "svc5", "p80", "KUBE-FW-NUKIZ6OKUXPJNT4C"),
    ("KUBE-SVC-", "ns2", "svc2", "p8080", "KUBE-SVC-2VJB64SDSIJUP5T6"),
    ("KUBE-SVC-", "ns4", "svc4", "p8082", "KUBE-SVC-EBDQOQU5SJFXRIL3"),
])
def test_service_chain_names_match_kube_proxy(prefix, ns, name, port_name, expected_chain):
    assert service_chain_name(prefix, ns, name, port_name, "TCP") == expected_chain


@pytest.mark.parametrize("ns, name, port_name, ep, expected_chain", [
    ("ns1", "svc1", "p80", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    ("ns1", "svc1", "p80", "10.0.0.0:80", "KUBE-SEP-DKGQUZGBKLTPAR56"),
    ("ns3", "svc3", "p8081", "203.0.113.4:8081", "KUBE-SEP-RUVVH7YV3PHQBDOS"),
    ("ns4", "svc4", "p8082", "10.4.0.1:8082", "KUBE-SEP-SU5STNODRYEWJAUF"),
    ("ns5", "svc5", "p80", "10.180.0.3:80", "KUBE-SEP-I77PXRDZVX7PMWMN"),
])
def test_endpoint_chain_names_match_kube_proxy(ns, name, port_name, ep, expected_chain):
    assert endpoint_chain_name(ns, name, port_name, "tcp", ep) == expected_chain


def test_unnamed_port_hashes_without_colon():
    assert service_chain_name("SVC", "default", "service-test", "", "TCP") == \
        "KUBE-SVC-" + _b32("default/service-testtcp")


def _b32(text: str) -> str:
    import base64
    import hashlib
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


@pytest.mark.parametrize("n, expected_p", [
    # TestComputeProbability
    (1, "1.0000000000"), (2, "0.5000000000"), (10, "0.1000000000"), (100, "0.0100000000"),
    (1000, "0.0010000000"), (10000, "0.0001000000"), (100000, "0.0000100000"),
    (100001, "0.0000099999"), (3, "0.3333333333"),
])
def test_probability_format(n, expected_p):
    assert probability(n) == expected_p


@pytest.mark.parametrize("n, probabilities", [
    (1, []),
    (2, ["0.5000000000"]),
    (3, ["0.3333333333", "0.5000000000"]),
    (4, ["0.2500000000", "0.3333333333", "0.5000000000"]),
    (5, ["0.2000000000", "0.2500000000", "0.3333333333", "0.5000000000"]),
])
def test_probabilities_for_one_to_five_endpoints(n, probabilities):
    svc = service("ns1", "svc1", "172.30.0.41", [port()])
    eps = endpoint_slice("ns1", "svc1", [endpoint(f"10.180.0.{i}") for i in range(1, n + 1)],
                         [port()])
    rules = chain_rules(fake_render([svc], [eps]), "nat", "KUBE-SVC-XPGD46QRK7WJZT7O")[1:]
    assert len(rules) == n
    got = [re.search(r"--probability (\S+)", r) for r in rules]
    assert [m.group(1) for m in got if m] == probabilities
    assert got[-1] is None  # the last endpoint always matches
    assert [r.split("-> ")[1].split('"')[0] for r in rules] == \
        [f"10.180.0.{i}:80" for i in range(1, n + 1)]


def test_endpoints_are_sorted_as_strings():
    # byEndpoint: "10.1.1.11:11" sorts before "10.1.1.1:11" ('1' < ':').
    svc = service("ns1", "ep1", "172.30.0.41", [port("p11", 11, protocol="UDP")])
    eps = endpoint_slice("ns1", "ep1", [endpoint("10.1.1.1"), endpoint("10.1.1.11")],
                         [port("p11", 11, protocol="UDP")])
    rules = chain_rules(fake_render([svc], [eps]), "nat",
                        service_chain_name("SVC", "ns1", "ep1", "p11", "UDP"))
    assert "10.1.1.11:11" in rules[1] and "0.5000000000" in rules[1]
    assert "10.1.1.1:11" in rules[2] and "--probability" not in rules[2]
    assert "-m udp -p udp" in rules[0]


def test_large_cluster_mode_drops_endpoint_comments():
    # TestSyncProxyRulesLargeClusterMode: more than 1000 endpoints -> no SEP comments.
    svcs = [service("ns1", "svc1", "172.30.0.41", [port()]),
            service("ns2", "svc2", "172.30.0.42", [port("p8080", 8080)]),
            service("ns3", "svc3", "172.30.0.43", [port("p8081", 8081)])]

    def many(prefix: str) -> list[dict]:
        return [endpoint(f"{prefix}.{i % 256}.{i // 256}") for i in range(499)]

    slices = [endpoint_slice("ns1", "svc1", many("10.0"), [port()]),
              endpoint_slice("ns2", "svc2", many("10.1"), [port("p8080", 8080)])]
    small = fake_render(svcs, slices, masquerade_all=True)
    assert ("-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp "
            "-j DNAT --to-destination 10.0.0.0:80\n") in small
    slices.append(endpoint_slice("ns3", "svc3", [endpoint(f"203.0.113.{i}") for i in (4, 8, 12)],
                                 [port("p8081", 8081)]))
    large = fake_render(svcs, slices, masquerade_all=True)
    assert ("-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80\n"
            in large)
    assert ("-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT "
            "--to-destination 203.0.113.4:8081\n") in large
    assert not re.search(r"^-A KUBE-SEP-\S+ -m comment", large, re.M)
    assert '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP"' in large


# --- the article's case -----------------------------------------------------------------

ARTICLE = """
apiVersion: v1
kind: Service
metadata: {name: service-test, namespace: default}
spec:
  clusterIP: 10.3.241.152
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: service-test-x7k2p
  namespace: default
  labels: {kubernetes.io/service-name: service-test}
addressType: IPv4
ports: [{port: 8080, protocol: TCP, name: ""}]
endpoints:
- {addresses: [10.0.1.2], nodeName: node1, conditions: {ready: true}}
- {addresses: [10.0.2.2], nodeName: node2, conditions: {ready: true}}
"""


def test_article_service_test():
    got = render_yaml(ARTICLE, node_name="node1", node_ips=["10.100.0.2"])
    svc = service_chain_name("SVC", "default", "service-test", "", "TCP")
    sep1 = endpoint_chain_name("default", "service-test", "", "TCP", "10.0.1.2:8080")
    sep2 = endpoint_chain_name("default", "service-test", "", "TCP", "10.0.2.2:8080")
    assert (f'-A KUBE-SERVICES -m comment --comment "default/service-test cluster IP" '
            f"-m tcp -p tcp -d 10.3.241.152 --dport 80 -j {svc}\n") in got
    assert chain_rules(got, "nat", svc) == [
        f'-A {svc} -m comment --comment "default/service-test -> 10.0.1.2:8080" '
        f"-m statistic --mode random --probability 0.5000000000 -j {sep1}",
        f'-A {svc} -m comment --comment "default/service-test -> 10.0.2.2:8080" -j {sep2}',
    ]
    assert chain_rules(got, "nat", sep1) == [
        f"-A {sep1} -m comment --comment default/service-test -s 10.0.1.2 -j KUBE-MARK-MASQ",
        f"-A {sep1} -m comment --comment default/service-test -m tcp -p tcp "
        "-j DNAT --to-destination 10.0.1.2:8080",
    ]
    assert chain_rules(got, "nat", sep2)[-1].endswith("-j DNAT --to-destination 10.0.2.2:8080")
    check_rule_jumps(got)
    # No --cluster-cidr: no "! -s CIDR -j KUBE-MARK-MASQ" rule in the service chain.
    assert "KUBE-MARK-MASQ" not in "\n".join(chain_rules(got, "nat", svc))
    run_flows(got, [("pod to ClusterIP", "10.0.1.9", "10.3.241.152", 80,
                     "10.0.1.2:8080, 10.0.2.2:8080", False),
                    ("hairpin", "10.0.1.2", "10.3.241.152", 80,
                     "10.0.1.2:8080, 10.0.2.2:8080", True)])


def test_cluster_cidr_adds_masquerade_rule():
    got = render_yaml(ARTICLE, node_name="node1", node_ips=["10.100.0.2"],
                      cluster_cidr="10.0.0.0/14")
    svc = service_chain_name("SVC", "default", "service-test", "", "TCP")
    assert chain_rules(got, "nat", svc)[0] == (
        f'-A {svc} -m comment --comment "default/service-test cluster IP" -m tcp -p tcp '
        "-d 10.3.241.152 --dport 80 ! -s 10.0.0.0/14 -j KUBE-MARK-MASQ")
    # dual-stack --cluster-cidr: the IPv4 one is used
    dual = render_yaml(ARTICLE, node_name="node1", node_ips=["10.100.0.2"],
                       cluster_cidr="fd00:10::/48,10.0.0.0/14")
    assert dual == got


def test_masquerade_all_masquerades_every_cluster_ip_packet():
    got = render_yaml(ARTICLE, node_name="node1", node_ips=["10.100.0.2"],
                      cluster_cidr="10.0.0.0/14", masquerade_all=True)
    svc = service_chain_name("SVC", "default", "service-test", "", "TCP")
    assert chain_rules(got, "nat", svc)[0].endswith("--dport 80 -j KUBE-MARK-MASQ")


# --- jump rules -------------------------------------------------------------------------

def test_jump_rules_in_kube_proxy_order():
    new = ["-m", "conntrack", "--ctstate", "NEW"]

    def c(text: str) -> list[str]:
        return ["-m", "comment", "--comment", text]

    assert [tuple(r) for r in jump_rules()] == [
        ("filter", "INPUT",
         [*new, *c("kubernetes externally-visible service portals"), "-j",
          "KUBE-EXTERNAL-SERVICES"]),
        ("filter", "FORWARD",
         [*new, *c("kubernetes externally-visible service portals"), "-j",
          "KUBE-EXTERNAL-SERVICES"]),
        ("filter", "INPUT", [*c("kubernetes health check service ports"), "-j",
                             "KUBE-NODEPORTS"]),
        ("filter", "FORWARD", [*new, *c("kubernetes service portals"), "-j", "KUBE-SERVICES"]),
        ("filter", "OUTPUT", [*new, *c("kubernetes service portals"), "-j", "KUBE-SERVICES"]),
        ("filter", "FORWARD", [*c("kubernetes forwarding rules"), "-j", "KUBE-FORWARD"]),
        ("filter", "INPUT", [*new, *c("kubernetes load balancer firewall"), "-j",
                             "KUBE-PROXY-FIREWALL"]),
        ("filter", "OUTPUT", [*new, *c("kubernetes load balancer firewall"), "-j",
                              "KUBE-PROXY-FIREWALL"]),
        ("filter", "FORWARD", [*new, *c("kubernetes load balancer firewall"), "-j",
                               "KUBE-PROXY-FIREWALL"]),
        ("nat", "OUTPUT", [*c("kubernetes service portals"), "-j", "KUBE-SERVICES"]),
        ("nat", "PREROUTING", [*c("kubernetes service portals"), "-j", "KUBE-SERVICES"]),
        ("nat", "POSTROUTING", [*c("kubernetes postrouting rules"), "-j", "KUBE-POSTROUTING"]),
        ("filter", "INPUT", ["-j", "KUBE-FIREWALL"]),
        ("filter", "OUTPUT", ["-j", "KUBE-FIREWALL"]),
    ]
    assert len(jump_rules(include_kubelet_chains=False)) == 12
    assert jump_rules()[0].table == "filter" and jump_rules()[0].chain == "INPUT"


# --- input handling ---------------------------------------------------------------------

def test_skips_what_kube_proxy_skips():
    objs = [
        service("ns1", "headless", "None", [port()]),
        service("ns1", "ext", "172.30.0.9", [port()], type_="ExternalName",
                externalName="foo.example.com"),
        service("ns1", "v6only", "fd00::1", [port()]),
        service("ns1", "svc1", "172.30.0.41", [port()]),
    ]
    slices = [
        endpoint_slice("ns1", "headless", [endpoint("10.180.0.9")], [port()]),
        endpoint_slice("ns1", "svc1", [endpoint("fd00:10::1")], [port()],
                       address_type="IPv6", slice_name="svc1-v6"),
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"), {"addresses": []}], [port()]),
        endpoint_slice("ns2", "svc1", [endpoint("10.180.9.9")], [port()]),  # other namespace
    ]
    got = fake_render(objs, slices)
    assert "headless" not in got and "ns1/ext" not in got and "v6only" not in got
    assert "fd00" not in got and "10.180.9.9" not in got
    assert "-j DNAT --to-destination 10.180.0.1:80" in got
    check_rule_jumps(got)


def test_load_objects_accepts_lists_and_ignores_other_kinds():
    text = """
kind: List
items:
- {kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.1, ports: [{port: 53}]}}
- {kind: Pod, metadata: {name: p}}
---
kind: EndpointSlice
metadata: {name: a-1, labels: {kubernetes.io/service-name: a}}
endpoints: [{addresses: [10.1.0.5]}]
ports: [{port: 5353}]
---
"""
    services, slices = load_objects(text)
    assert [s["metadata"]["name"] for s in services] == ["a"]
    assert len(slices) == 1
    got = render_yaml(text, node_name="n", node_ips=["10.0.0.1"])
    # defaults: namespace "default", port name "", protocol TCP
    assert '--comment "default/a -> 10.1.0.5:5353"' in got
    assert "-A KUBE-SERVICES -m comment --comment \"default/a cluster IP\" -m tcp -p tcp " \
           "-d 10.96.0.1 --dport 53" in got


def test_load_balancer_proxy_ip_mode_gets_no_rules():
    # TestLoadBalancerIngressRouteTypeProxy
    svc = service("ns1", "svc1", "10.20.30.41", [port(node_port=3001)], type_="LoadBalancer")
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "Proxy"},
                                                  {"ip": "1.2.3.5", "ipMode": "VIP"},
                                                  {"ip": "1.2.3.6"}]}}
    eps = endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1")], [port()])
    got = fake_render([svc], [eps])
    assert "-d 1.2.3.4" not in got
    assert "-d 1.2.3.5 --dport 80" in got and "-d 1.2.3.6 --dport 80" in got


# --- packet flows (runPacketFlowTests cases) --------------------------------------------

def test_no_endpoints_reject():
    # TestNoEndpointsReject
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type_="LoadBalancer",
                  externalIPs=["192.168.99.11"], status_ips=["1.2.3.4"])
    got = fake_render([svc], [])
    run_flows(got, [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "REJECT", False),
        ("external to external IP", TEST_EXTERNAL_CLIENT, "192.168.99.11", 80, "REJECT", False),
        ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, "REJECT", False),
        ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, "REJECT", False),
        ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, "REJECT", False),
        ("external to LB IP", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT", False),
    ])
    assert parse_dump(got)["nat"].chains[4:] == []  # no per-service nat chains at all


def test_cluster_ip_general():
    # TestClusterIPGeneral
    svcs = [
        service("ns1", "svc1", "172.30.0.41", [port("http")]),
        service("ns2", "svc2", "172.30.0.42", [
            port("http"), {**port("https", 443), "targetPort": 8443},
            port("dns-udp", 53, protocol="UDP"), {**port("dns-tcp", 53), "targetPort": 5353},
            port("dns-sctp", 53, protocol="SCTP")]),
    ]
    slices = [
        endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1", TEST_NODE_NAME)], [port("http")]),
        endpoint_slice("ns2", "svc2", [endpoint("10.180.0.1", TEST_NODE_NAME),
                                       endpoint("10.180.2.1", "node2")],
                       [port("http"), port("https", 8443), port("dns-udp", 53, protocol="UDP"),
                        port("dns-tcp", 5353), port("dns-sctp", 53, protocol="SCTP")]),
    ]
    got = fake_render(svcs, slices)
    both = "10.180.0.1:{0}, 10.180.2.1:{0}".format
    run_flows(got, [
        ("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
        ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
        ("multiple endpoints", "10.180.0.2", "172.30.0.42", 80, both(80), False),
        ("TargetPort", "10.180.0.2", "172.30.0.42", 443, both(8443), False),
        ("TCP on 53", "10.180.0.2", "172.30.0.42", 53, both(5353), False, "TCP"),
        ("UDP on 53", "10.180.0.2", "172.30.0.42", 53, both(53), False, "UDP"),
        ("SCTP on 53", "10.180.0.2", "172.30.0.42", 53, both(53), False, "SCTP"),
        ("TCP-only port", "10.180.0.2", "172.30.0.42", 80, "", False, "UDP"),
        ("svc1 not svc2's port", "10.180.0.2", "172.30.0.41", 443, "", False),
    ])
    check_rule_jumps(got)


def test_load_balancer_source_ranges():
    # TestLoadBalancer
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type_="LoadBalancer",
                  status_ips=["1.2.3.4", "5.6.7.8"],
                  loadBalancerSourceRanges=["192.168.0.0/24", " 203.0.113.0/25"])
    eps = endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1")], [port()])
    got = fake_render([svc], [eps])
    ep = "10.180.0.1:80"
    run_flows(got, [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, ep, False),
        ("external to nodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, ep, True),
        ("nodePort bypasses source ranges", TEST_EXTERNAL_CLIENT_BLOCKED, TEST_NODE_IP, 3001,
         ep, True),
        ("accepted external to LB1", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, ep, True),
        ("accepted external to LB2", TEST_EXTERNAL_CLIENT, "5.6.7.8", 80, ep, True),
        ("blocked external to LB1", TEST_EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP", False),
        ("blocked external to LB2", TEST_EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP", False),
        ("pod to LB1 (blocked)", "10.0.0.2", "1.2.3.4", 80, "DROP", False),
        ("pod to LB2 (blocked)", "10.0.0.2", "5.6.7.8", 80, "DROP", False),
        ("node to LB1 (allowed)", TEST_NODE_IP, "1.2.3.4", 80, ep, True),
        ("node to LB2 (allowed)", TEST_NODE_IP, "5.6.7.8", 80, ep, True),
        ("same node to LB1, SNATted to LB1", "1.2.3.4", "1.2.3.4", 80, ep, True),
        ("same node to LB2, SNATted to LB2", "5.6.7.8", "5.6.7.8", 80, ep, True),
    ])
    fw = service_chain_name("FW", "ns1", "svc1", "p80", "TCP")
    ext = service_chain_name("EXT", "ns1", "svc1", "p80", "TCP")
    comment = '-m comment --comment "ns1/svc1:p80 loadbalancer IP"'
    assert chain_rules(got, "nat", fw) == [
        f"-A {fw} {comment} -s 192.168.0.0/24 -j {ext}",
        f"-A {fw} {comment} -s 203.0.113.0/25 -j {ext}",
        f"-A {fw} {comment} -s 1.2.3.4 -j {ext}",
        f"-A {fw} {comment} -s 5.6.7.8 -j {ext}",
        f'-A {fw} -m comment --comment "other traffic to ns1/svc1:p80 will be dropped by '
        'KUBE-PROXY-FIREWALL"',
    ]
    assert chain_rules(got, "filter", "KUBE-PROXY-FIREWALL") == [
        f'-A KUBE-PROXY-FIREWALL -m comment --comment "ns1/svc1:p80 traffic not accepted by '
        f'{fw}" -m tcp -p tcp -d {ip} --dport 80 -j DROP' for ip in ("1.2.3.4", "5.6.7.8")]


def _nodeport_case(**kw) -> str:
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type_="NodePort")
    eps = endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"),
                                         endpoint("10.180.2.1", TEST_NODE_NAME)], [port()])
    return fake_render([svc], [eps], **kw)


FIREWALL_RULE = ('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" '
                 "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate "
                 "RELATED,ESTABLISHED,DNAT -j DROP")


@pytest.mark.parametrize("localhost, addresses, allow_alt, firewall", [
    (True, None, True, True),
    (False, None, True, False),
    (False, ["192.168.0.0/24", "127.0.0.1/32"], False, False),
    (False, ["192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"], True, False),
])
def test_node_ports(localhost, addresses, allow_alt, firewall):
    # TestNodePorts (the IPv4 cases)
    got = _nodeport_case(localhost_nodeports=localhost, nodeport_addresses=addresses)
    both = "10.180.0.1:80, 10.180.2.1:80"
    run_flows(got, [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
        ("external to nodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, both, True),
        ("node to nodePort", TEST_NODE_IP, TEST_NODE_IP, 3001, both, True),
        ("localhost to nodePort", "127.0.0.1", "127.0.0.1", 3001,
         both if localhost else "", localhost),
        ("external to alt node IP", TEST_EXTERNAL_CLIENT, TEST_NODE_IP_ALT, 3001,
         both if allow_alt else "", allow_alt),
    ])
    assert chain_rules(got, "filter", "KUBE-FIREWALL") == ([FIREWALL_RULE] if firewall else [])


def test_node_port_jump_variants():
    last = '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this ' \
           'must be the last rule in this chain"'
    assert chain_rules(_nodeport_case(), "nat", "KUBE-SERVICES")[-1] == \
        f"{last} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    assert chain_rules(_nodeport_case(localhost_nodeports=False), "nat",
                       "KUBE-SERVICES")[-1] == \
        f"{last} -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"
    listed = _nodeport_case(nodeport_addresses=["192.168.0.0/24", "192.168.1.0/24"])
    assert chain_rules(listed, "nat", "KUBE-SERVICES")[-2:] == [
        f"{last} -d 192.168.0.2 -j KUBE-NODEPORTS", f"{last} -d 192.168.1.2 -j KUBE-NODEPORTS"]
    # without loopback in --nodeport-addresses, localhost NodePorts are off (NewProxier)
    assert "KUBE-FIREWALL" not in listed and "nfacct-name localhost" not in listed


def test_health_check_node_port():
    # TestHealthCheckNodePort
    svc = service("ns1", "svc1", "172.30.0.42", [port(node_port=3001)], type_="LoadBalancer",
                  healthCheckNodePort=30000, externalTrafficPolicy="Local")
    got = fake_render([svc], [], nodeport_addresses=["127.0.0.0/8"])
    run_flows(got, [("firewall accepts HealthCheckNodePort", "1.2.3.4", TEST_NODE_IP, 30000,
                     "ACCEPT", False)])
    assert chain_rules(got, "nat", "KUBE-SERVICES")[-1].endswith(
        "-d 127.0.0.1 -j KUBE-NODEPORTS")
    # Cluster policy: no health check port at all
    svc["spec"]["externalTrafficPolicy"] = "Cluster"
    assert chain_rules(fake_render([svc], []), "filter", "KUBE-NODEPORTS") == []


def _etp_case(policy: str) -> str:
    svc = service("ns1", "svc1", "172.30.0.41", [{**port(node_port=3001), "targetPort": 80}],
                  type_="LoadBalancer", externalTrafficPolicy=policy,
                  externalIPs=["192.168.99.11"], healthCheckNodePort=30000,
                  status_ips=["1.2.3.4"])
    eps = endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1"),
                                         endpoint("10.180.2.1", TEST_NODE_NAME)], [port()])
    return fake_render([svc], [eps])


def test_external_traffic_policy_local():
    # TestExternalTrafficPolicyLocal
    got = _etp_case("Local")
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    run_flows(got, [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
        ("pod to external IP", "10.0.0.2", "192.168.99.11", 80, both, False),
        ("external to external IP", TEST_EXTERNAL_CLIENT, "192.168.99.11", 80, local, False),
        ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, False),
        ("external to LB IP", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, local, False),
        ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, both, False),
        ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, local, False),
    ])
    ext = service_chain_name("EXT", "ns1", "svc1", "p80", "TCP")
    svc = service_chain_name("SVC", "ns1", "svc1", "p80", "TCP")
    svl = service_chain_name("SVL", "ns1", "svc1", "p80", "TCP")
    assert chain_rules(got, "nat", ext) == [
        f'-A {ext} -m comment --comment "pod traffic for ns1/svc1:p80 external destinations" '
        f"-s 10.0.0.0/8 -j {svc}",
        f'-A {ext} -m comment --comment "masquerade LOCAL traffic for ns1/svc1:p80 external '
        'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ',
        f'-A {ext} -m comment --comment "route LOCAL traffic for ns1/svc1:p80 external '
        f'destinations" -m addrtype --src-type LOCAL -j {svc}',
        f"-A {ext} -j {svl}",
    ]
    sep = endpoint_chain_name("ns1", "svc1", "p80", "TCP", "10.180.2.1:80")
    assert chain_rules(got, "nat", svl) == [
        f'-A {svl} -m comment --comment "ns1/svc1:p80 -> 10.180.2.1:80" -j {sep}']
    assert chain_rules(got, "filter", "KUBE-NODEPORTS") == [
        '-A KUBE-NODEPORTS -m comment --comment "ns1/svc1:p80 health check node port" '
        "-m tcp -p tcp --dport 30000 -j ACCEPT"]


def test_external_traffic_policy_cluster():
    # TestExternalTrafficPolicyCluster
    got = _etp_case("Cluster")
    both = "10.180.0.1:80, 10.180.2.1:80"
    run_flows(got, [
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
        ("pod to external IP", "10.0.0.2", "192.168.99.11", 80, both, True),
        ("external to external IP", TEST_EXTERNAL_CLIENT, "192.168.99.11", 80, both, True),
        ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, True),
        ("external to LB IP", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, both, True),
        ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, both, True),
        ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, both, True),
    ])


def test_external_traffic_policy_local_without_local_endpoints_drops():
    svc = service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type_="NodePort",
                  externalTrafficPolicy="Local")
    eps = endpoint_slice("ns1", "svc1", [endpoint("10.180.0.1", "elsewhere")], [port()])
    got = fake_render([svc], [eps])
    run_flows(got, [
        ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, "DROP", False),
        ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, "10.180.0.1:80", False),
        ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
    ])
    assert chain_rules(got, "filter", "KUBE-EXTERNAL-SERVICES") == [
        '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" '
        "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP"]


@pytest.mark.parametrize("policy, nodes, output", [
    ("Cluster", [TEST_NODE_NAME, "node1", "node2"], "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
    ("Local", [TEST_NODE_NAME, "node1", "node2"], "10.0.1.1:80"),
    ("Local", [TEST_NODE_NAME, TEST_NODE_NAME, "node2"], "10.0.1.1:80, 10.0.1.2:80"),
    ("Local", ["node0", "node1", "node2"], "DROP"),
])
def test_internal_traffic_policy(policy, nodes, output):
    # TestInternalTrafficPolicy
    svc = service("ns1", "svc1", "172.30.1.1", [{"name": "", "port": 80, "protocol": "TCP"}],
                  internalTrafficPolicy=policy)
    eps = endpoint_slice("ns1", "svc1", [endpoint(f"10.0.1.{i}", node, ready=True)
                                         for i, node in enumerate(nodes, 1)],
                         [{"name": "", "port": 80, "protocol": "TCP"}])
    got = fake_render([svc], [eps])
    run_flows(got, [("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, output, False)])
    if output == "DROP":
        assert chain_rules(got, "filter", "KUBE-SERVICES") == [
            '-A KUBE-SERVICES -m comment --comment "ns1/svc1 has no local endpoints" '
            "-m tcp -p tcp -d 172.30.1.1 --dport 80 -j DROP"]
    run_flows(fake_render([svc], []), [
        ("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT", False)])


def _terminating_case(policy: str, eps: list[dict]) -> str:
    svc = service("ns1", "svc1", "172.30.1.1",
                  [{"name": "", "port": 80, "protocol": "TCP", "targetPort": 80}],
                  type_="LoadBalancer", externalTrafficPolicy=policy,
                  healthCheckNodePort=30000, status_ips=["1.2.3.4"])
    return fake_render([svc], [endpoint_slice("ns1", "svc1", eps,
                                              [{"name": "", "port": 80, "protocol": "TCP"}])])


READY = dict(ready=True, serving=True, terminating=False)
TERMINATING = dict(ready=False, serving=True, terminating=True)
GONE = dict(ready=False, serving=False, terminating=True)


@pytest.mark.parametrize("eps, to_cluster_ip, to_lb", [
    ([endpoint("10.0.1.1", TEST_NODE_NAME, **READY), endpoint("10.0.1.2", TEST_NODE_NAME, **READY),
      endpoint("10.0.1.3", TEST_NODE_NAME, **TERMINATING),
      endpoint("10.0.1.4", TEST_NODE_NAME, **GONE), endpoint("10.0.1.5", "node-1", **READY)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80", "10.0.1.1:80, 10.0.1.2:80"),
    ([endpoint("10.0.1.2", TEST_NODE_NAME, **TERMINATING),
      endpoint("10.0.1.3", TEST_NODE_NAME, **TERMINATING),
      endpoint("10.0.1.4", TEST_NODE_NAME, **GONE), endpoint("10.0.1.5", "node-1", **READY)],
     "10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80"),
    ([endpoint("10.0.1.5", "node-1", **TERMINATING)], "10.0.1.5:80", "DROP"),
    ([endpoint("10.0.1.5", TEST_NODE_NAME, **GONE), endpoint("10.0.1.5", "node-1", **GONE)],
     "REJECT", "REJECT"),
], ids=["ready exist", "only terminating", "terminating remote", "none usable"])
def test_terminating_endpoints_traffic_policy_local(eps, to_cluster_ip, to_lb):
    # TestTerminatingEndpointsTrafficPolicyLocal
    got = _terminating_case("Local", eps)
    run_flows(got, [
        ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, to_cluster_ip, False),
        ("external to LB", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, to_lb, False),
    ])
    check_rule_jumps(got)


@pytest.mark.parametrize("eps, output", [
    ([endpoint("10.0.1.1", TEST_NODE_NAME, **READY), endpoint("10.0.1.2", TEST_NODE_NAME, **READY),
      endpoint("10.0.1.3", "another-node", **TERMINATING),
      endpoint("10.0.1.4", "another-node", **GONE),
      endpoint("10.0.1.5", "another-node", **READY)],
     "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80"),
    ([endpoint("10.0.1.2", TEST_NODE_NAME, **TERMINATING),
      endpoint("10.0.1.3", TEST_NODE_NAME, **TERMINATING),
      endpoint("10.0.1.4", "another-node", **GONE),
      endpoint("10.0.1.5", "another-node", **TERMINATING)],
     "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80"),
    ([endpoint("10.0.1.5", "node-1", **TERMINATING)], "10.0.1.5:80"),
    ([endpoint("10.0.1.5", TEST_NODE_NAME, **GONE), endpoint("10.0.1.5", "node-1", **GONE)],
     "REJECT"),
], ids=["ready exist", "only terminating", "terminating remote", "none usable"])
def test_terminating_endpoints_traffic_policy_cluster(eps, output):
    # TestTerminatingEndpointsTrafficPolicyCluster
    got = _terminating_case("Cluster", eps)
    run_flows(got, [
        ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, output, False),
        ("external to LB", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, output, output != "REJECT"),
    ])


def _internal_external_setup(**kw) -> str:
    svcs = [
        service("ns1", "svc1", "172.30.0.41", [port(node_port=3001)], type_="LoadBalancer",
                healthCheckNodePort=30001, status_ips=["1.2.3.4"]),
        service("ns2", "svc2", "172.30.0.42", [port(node_port=3002)], type_="LoadBalancer",
                healthCheckNodePort=30002, externalTrafficPolicy="Local",
                status_ips=["5.6.7.8"]),
        service("ns3", "svc3", "172.30.0.43", [port(node_port=3003)], type_="LoadBalancer",
                healthCheckNodePort=30003, internalTrafficPolicy="Local",
                status_ips=["9.10.11.12"]),
    ]
    slices = [endpoint_slice(f"ns{i}", f"svc{i}", [endpoint(f"10.180.0.{i}", TEST_NODE_NAME),
                                                   endpoint(f"10.180.1.{i}", "remote")],
                             [port()]) for i in (1, 2, 3)]
    return fake_render(svcs, slices, **kw)


_ALL1, _ALL2, _ALL3 = (f"10.180.0.{i}:80, 10.180.1.{i}:80" for i in (1, 2, 3))
INTERNAL_EXTERNAL_FLOWS = [
    ("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, _ALL1, False),
    ("pod to NodePort", "10.0.0.2", TEST_NODE_IP, 3001, _ALL1, True),
    ("pod to LB", "10.0.0.2", "1.2.3.4", 80, _ALL1, True),
    ("node to ClusterIP", TEST_NODE_IP, "172.30.0.41", 80, _ALL1, True),
    ("node to NodePort", TEST_NODE_IP, TEST_NODE_IP, 3001, _ALL1, True),
    ("localhost to NodePort", "127.0.0.1", "127.0.0.1", 3001, _ALL1, True),
    ("node to LB", TEST_NODE_IP, "1.2.3.4", 80, _ALL1, True),
    ("external to ClusterIP", TEST_EXTERNAL_CLIENT, "172.30.0.41", 80, _ALL1, True),
    ("external to NodePort", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3001, _ALL1, True),
    ("external to LB", TEST_EXTERNAL_CLIENT, "1.2.3.4", 80, _ALL1, True),
    ("pod to ClusterIP with eTP:Local", "10.0.0.2", "172.30.0.42", 80, _ALL2, False),
    ("pod to NodePort with eTP:Local", "10.0.0.2", TEST_NODE_IP, 3002, _ALL2, False),
    ("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, _ALL2, False),
    ("node to ClusterIP with eTP:Local", TEST_NODE_IP, "172.30.0.42", 80, _ALL2, True),
    ("node to NodePort with eTP:Local", TEST_NODE_IP, TEST_NODE_IP, 3001, _ALL1, True),
    ("localhost to NodePort with eTP:Local", "127.0.0.1", "127.0.0.1", 3002, _ALL2, True),
    ("node to LB with eTP:Local", TEST_NODE_IP, "5.6.7.8", 80, _ALL2, True),
    ("external to ClusterIP with eTP:Local", TEST_EXTERNAL_CLIENT, "172.30.0.42", 80, _ALL2,
     True),
    ("external to NodePort with eTP:Local", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3002,
     "10.180.0.2:80", False),
    ("external to LB with eTP:Local", TEST_EXTERNAL_CLIENT, "5.6.7.8", 80, "10.180.0.2:80",
     False),
    ("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    ("pod to NodePort with iTP:Local", "10.0.0.2", TEST_NODE_IP, 3003, _ALL3, True),
    ("pod to LB with iTP:Local", "10.0.0.2", "9.10.11.12", 80, _ALL3, True),
    ("node to ClusterIP with iTP:Local", TEST_NODE_IP, "172.30.0.43", 80, "10.180.0.3:80",
     True),
    ("node to NodePort with iTP:Local", TEST_NODE_IP, TEST_NODE_IP, 3003, _ALL3, True),
    ("localhost to NodePort with iTP:Local", "127.0.0.1", "127.0.0.1", 3003, _ALL3, True),
    ("node to LB with iTP:Local", TEST_NODE_IP, "9.10.11.12", 80, _ALL3, True),
    ("external to ClusterIP with iTP:Local", TEST_EXTERNAL_CLIENT, "172.30.0.43", 80,
     "10.180.0.3:80", True),
    ("external to NodePort with iTP:Local", TEST_EXTERNAL_CLIENT, TEST_NODE_IP, 3003, _ALL3,
     True),
    ("external to LB with iTP:Local", TEST_EXTERNAL_CLIENT, "9.10.11.12", 80, _ALL3, True),
]


@pytest.mark.parametrize("masquerade_all, detector, overrides", [
    (False, True, {}),
    (False, False, {
        "node to ClusterIP": False, "node to ClusterIP with eTP:Local": False,
        "node to ClusterIP with iTP:Local": False, "external to ClusterIP": False,
        "external to ClusterIP with eTP:Local": False,
        "external to ClusterIP with iTP:Local": False,
        "pod to NodePort with eTP:Local": "10.180.0.2:80",
        "pod to LB with eTP:Local": "10.180.0.2:80"}),
    (True, True, {
        "pod to ClusterIP": True, "pod to ClusterIP with eTP:Local": True,
        "pod to ClusterIP with iTP:Local": True}),
    (True, False, {
        "pod to ClusterIP": True, "pod to ClusterIP with eTP:Local": True,
        "pod to ClusterIP with iTP:Local": True,
        "pod to NodePort with eTP:Local": "10.180.0.2:80",
        "pod to LB with eTP:Local": "10.180.0.2:80"}),
], ids=["base", "no LocalTrafficDetector", "masqueradeAll", "masqueradeAll, no detector"])
def test_internal_external_masquerade(masquerade_all, detector, overrides):
    # TestInternalExternalMasquerade; overrides are a new output (str) or masq (bool).
    got = _internal_external_setup(masquerade_all=masquerade_all,
                                   cluster_cidr="10.0.0.0/8" if detector else None)
    flows = []
    for name, src, dst, dport, output, masq in INTERNAL_EXTERNAL_FLOWS:
        override = overrides.get(name)
        if isinstance(override, bool):
            masq = override
        elif isinstance(override, str):
            output = override
        flows.append((name, src, dst, dport, output, masq))
    run_flows(got, flows)


def test_session_affinity_rules():
    svc = service("ns5", "svc5", "172.30.0.45", [port()], sessionAffinity="ClientIP",
                  sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    eps = endpoint_slice("ns5", "svc5", [endpoint("10.180.0.3"), endpoint("10.180.0.4")],
                         [port()])
    got = fake_render([svc], [eps])
    chain = service_chain_name("SVC", "ns5", "svc5", "p80", "TCP")
    seps = [endpoint_chain_name("ns5", "svc5", "p80", "TCP", f"10.180.0.{i}:80") for i in (3, 4)]
    rules = chain_rules(got, "nat", chain)
    assert rules[1:3] == [
        f'-A {chain} -m comment --comment "ns5/svc5:p80 -> 10.180.0.{i}:80" -m recent '
        f"--name {sep} --rcheck --seconds 60 --reap -j {sep}"
        for i, sep in zip((3, 4), seps, strict=True)]
    assert "--probability 0.5000000000" in rules[3] and rules[4].endswith(f"-j {seps[1]}")
    assert chain_rules(got, "nat", seps[0])[1] == (
        f"-A {seps[0]} -m comment --comment ns5/svc5:p80 -m recent --name {seps[0]} --set "
        "-m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80")
    # the API default timeout when none is given
    del svc["spec"]["sessionAffinityConfig"]
    assert "--rcheck --seconds 10800 --reap" in fake_render([svc], [eps])


def test_render_is_deterministic_and_order_independent():
    text = (DATA / "overall.yaml").read_text()
    services, slices = load_objects(text)
    one = render(services, slices, **FAKE)
    two = render(list(reversed(services)), list(reversed(slices)), **FAKE)
    assert one == two


@pytest.mark.parametrize("hints, zone, chosen", [
    ({"forNodes": [{"name": TEST_NODE_NAME}]}, "", ["10.180.0.1:80"]),
    ({"forZones": [{"name": "zone-a"}]}, "zone-a", ["10.180.0.1:80"]),
    ({"forZones": [{"name": "zone-a"}]}, "zone-b", ["10.180.0.1:80", "10.180.0.2:80"]),
])
def test_topology_hints(hints, zone, chosen):
    # topology.go: if every ready endpoint has a hint and one is for this node (zone),
    # only the hinted endpoints are used; otherwise hints are ignored.
    other = ({"forNodes": [{"name": "node-2"}]} if "forNodes" in hints
             else {"forZones": [{"name": "zone-c"}]})
    svc = service("ns1", "svc1", "172.30.0.41", [port()])
    eps = endpoint_slice("ns1", "svc1", [{**endpoint("10.180.0.1"), "hints": hints},
                                         {**endpoint("10.180.0.2"), "hints": other}], [port()])
    got = fake_render([svc], [eps], node_zone=zone)
    assert re.findall(r"-> (\S+)\"", got) == chosen
    check_rule_jumps(got)


def test_overall_without_nfacct_or_localhost_nodeports_is_consistent():
    got = render_yaml((DATA / "overall.yaml").read_text(),
                      **{**FAKE, "nfacct": False, "localhost_nodeports": False})
    check_rule_jumps(got)
    assert "nfacct" not in got and "KUBE-FIREWALL" not in got and "127.0.0.0/8" in got
