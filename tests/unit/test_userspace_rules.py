"""kubenet.kubeproxy.userspace: the iptables rules of kube-proxy's userspace mode.

Expected arguments are copied from pkg/proxy/userspace/proxier.go (iptablesInit,
iptablesCommonPortalArgs, iptablesContainerPortalArgs, iptablesHostPortalArgs,
iptablesHostNodePortArgs, iptablesNonLocalNodePortArgs, CleanupLeftovers). Its
proxier_test.go checks no iptables arguments (it runs against a fake iptables), so the
article's service is the worked example: default/service-test, cluster IP
10.3.241.152:80/TCP, proxy port 10400, node IP 10.100.0.2.
"""

import pytest

from kubenet.kubeproxy import userspace as us
from kubenet.kubeproxy.userspace import Rule

SVC = "default/service-test:"
PORTALS = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
NODEPORTS = "handle service NodePorts; NOTE: this must be the last rule in the chain"
NON_LOCAL = "Ensure that non-local NodePort traffic can flow"
COMMON_80 = ["-m", "comment", "--comment", SVC, "-p", "tcp", "-m", "tcp", "--dport", "80"]


def article_portal(**kwargs):
    return us.portal_rules(SVC, "10.3.241.152", 80, "TCP", 10400, "10.100.0.2", **kwargs)


def test_service_port_name_in_both_eras():
    assert us.service_port_name("default", "service-test") == SVC
    assert us.service_port_name("default", "service-test", "http") == "default/service-test:http"
    assert us.service_port_name("default", "service-test", always_colon=False) == \
        "default/service-test"
    assert us.service_port_name("ns", "svc", "p", always_colon=False) == "ns/svc:p"


def test_init_rules_are_iptables_init_in_order():
    assert us.init_rules() == [
        ("nat", "KUBE-PORTALS-CONTAINER", [], "-N"),
        ("nat", "PREROUTING", ["-m", "comment", "--comment", PORTALS,
                               "-j", "KUBE-PORTALS-CONTAINER"], "-I"),
        ("nat", "KUBE-PORTALS-HOST", [], "-N"),
        ("nat", "OUTPUT", ["-m", "comment", "--comment", PORTALS,
                           "-j", "KUBE-PORTALS-HOST"], "-I"),
        ("nat", "KUBE-NODEPORT-CONTAINER", [], "-N"),
        ("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL",
                               "-m", "comment", "--comment", NODEPORTS,
                               "-j", "KUBE-NODEPORT-CONTAINER"], "-A"),
        ("nat", "KUBE-NODEPORT-HOST", [], "-N"),
        ("nat", "OUTPUT", ["-m", "addrtype", "--dst-type", "LOCAL",
                           "-m", "comment", "--comment", NODEPORTS,
                           "-j", "KUBE-NODEPORT-HOST"], "-A"),
        ("filter", "KUBE-NODEPORT-NON-LOCAL", [], "-N"),
        ("filter", "INPUT", ["-m", "comment", "--comment", NON_LOCAL,
                             "-j", "KUBE-NODEPORT-NON-LOCAL"], "-I"),
    ]


def test_rule_is_a_tuple_with_argv():
    table, chain, args, op = us.init_rules()[1]
    assert (table, chain, op) == ("nat", "PREROUTING", "-I")
    rule = Rule("nat", "KUBE-PORTALS-HOST", ["-j", "ACCEPT"])
    assert rule.op == "-A"
    assert rule.argv() == ["-t", "nat", "-A", "KUBE-PORTALS-HOST", "-j", "ACCEPT"]
    assert Rule("nat", "X", [], "-N").argv() == ["-t", "nat", "-N", "X"]


def test_article_cluster_ip_portal():
    assert article_portal() == [
        ("nat", "KUBE-PORTALS-CONTAINER",
         [*COMMON_80, "-d", "10.3.241.152/32", "-j", "REDIRECT", "--to-ports", "10400"], "-A"),
        ("nat", "KUBE-PORTALS-HOST",
         [*COMMON_80, "-d", "10.3.241.152/32",
          "-j", "DNAT", "--to-destination", "10.100.0.2:10400"], "-A"),
    ]


def test_article_rules_as_iptables_save_prints_them():
    container, host = article_portal()
    assert us.save_line(container) == (
        '-A KUBE-PORTALS-CONTAINER -d 10.3.241.152/32 -p tcp -m comment --comment '
        '"default/service-test:" -m tcp --dport 80 -j REDIRECT --to-ports 10400')
    assert us.save_line(host) == (
        '-A KUBE-PORTALS-HOST -d 10.3.241.152/32 -p tcp -m comment --comment '
        '"default/service-test:" -m tcp --dport 80 -j DNAT --to-destination 10.100.0.2:10400')


def test_bound_listen_ip_uses_dnat_to_it_for_both_chains():
    container, host = article_portal(listen_ip="10.100.0.2")
    assert container.args[-4:] == ["-j", "DNAT", "--to-destination", "10.100.0.2:10400"]
    container, host = us.portal_rules(SVC, "10.3.241.152", 80, "TCP", 10400, "10.100.0.2",
                                      listen_ip="192.0.2.9")
    assert container.args[-2:] == host.args[-2:] == ["--to-destination", "192.0.2.9:10400"]


@pytest.mark.parametrize("listen_ip", ["127.0.0.1", "::1"])
def test_proxy_on_localhost_is_refused(listen_ip):
    with pytest.raises(ValueError, match="localhost"):
        article_portal(listen_ip=listen_ip)
    with pytest.raises(ValueError, match="localhost"):
        us.node_port_rules(SVC, 30080, "TCP", 10400, "10.100.0.2", listen_ip=listen_ip)


def test_udp_and_ipv6():
    container, host = us.portal_rules("kube-system/kube-dns:dns", "fd00::a", 53, "UDP", 10401,
                                      "fd00::2", listen_ip="::")
    assert container.args == ["-m", "comment", "--comment", "kube-system/kube-dns:dns",
                              "-p", "udp", "-m", "udp", "--dport", "53", "-d", "fd00::a/128",
                              "-j", "REDIRECT", "--to-ports", "10401"]
    assert host.args[-3:] == ["DNAT", "--to-destination", "[fd00::2]:10401"]


def test_external_ip_portal_has_three_rules():
    rules = us.portal_rules(SVC, "203.0.113.7", 80, "TCP", 10400, "10.100.0.2", external=True)
    common = [*COMMON_80, "-d", "203.0.113.7/32"]
    assert rules == [
        ("nat", "KUBE-PORTALS-CONTAINER", [*common, "-m", "physdev", "!", "--physdev-is-in",
                                           "-j", "REDIRECT", "--to-ports", "10400"], "-A"),
        ("nat", "KUBE-PORTALS-CONTAINER", [*common, "-m", "addrtype", "--dst-type", "LOCAL",
                                           "-j", "REDIRECT", "--to-ports", "10400"], "-A"),
        ("nat", "KUBE-PORTALS-HOST", [*common, "-m", "addrtype", "--dst-type", "LOCAL",
                                      "-j", "DNAT", "--to-destination", "10.100.0.2:10400"],
         "-A"),
    ]


def test_node_port_rules():
    common = ["-m", "comment", "--comment", SVC, "-p", "tcp", "-m", "tcp", "--dport"]
    assert us.node_port_rules(SVC, 30080, "TCP", 10400, "10.100.0.2") == [
        ("nat", "KUBE-NODEPORT-CONTAINER",
         [*common, "30080", "-j", "REDIRECT", "--to-ports", "10400"], "-A"),
        ("nat", "KUBE-NODEPORT-HOST",
         [*common, "30080", "-j", "DNAT", "--to-destination", "10.100.0.2:10400"], "-A"),
        # matches the proxy port: nat PREROUTING already redirected the packet
        ("filter", "KUBE-NODEPORT-NON-LOCAL",
         [*common, "10400", "-m", "state", "--state", "NEW", "-j", "ACCEPT"], "-A"),
    ]


def test_service_rules_follow_open_portal_order():
    rules = us.service_rules(SVC, "10.3.241.152", 80, "TCP", 10400, "10.100.0.2",
                             external_ips=["203.0.113.7"], load_balancer_ips=["198.51.100.1"],
                             node_port=30080)
    summary = [(r.chain, r.args[r.args.index("-d") + 1] if "-d" in r.args else None)
               for r in rules]
    assert summary == [
        ("KUBE-PORTALS-CONTAINER", "10.3.241.152/32"), ("KUBE-PORTALS-HOST", "10.3.241.152/32"),
        ("KUBE-PORTALS-CONTAINER", "203.0.113.7/32"), ("KUBE-PORTALS-CONTAINER", "203.0.113.7/32"),
        ("KUBE-PORTALS-HOST", "203.0.113.7/32"),
        ("KUBE-PORTALS-CONTAINER", "198.51.100.1/32"), ("KUBE-PORTALS-HOST", "198.51.100.1/32"),
        ("KUBE-NODEPORT-CONTAINER", None), ("KUBE-NODEPORT-HOST", None),
        ("KUBE-NODEPORT-NON-LOCAL", None),
    ]
    assert "physdev" not in rules[5].args  # a load-balancer IP is not an external portal
    assert us.service_rules(SVC, "10.3.241.152", 80, "TCP", 10400, "10.100.0.2") == \
        article_portal()


def test_cleanup_leftovers():
    rules = us.cleanup_rules()
    jumps = {rule.args[-1]: rule for rule in us.init_rules() if rule.op != "-N"}
    assert [(r.table, r.chain, r.args, r.op) for r in rules[:5]] == [
        (jumps[t].table, jumps[t].chain, jumps[t].args, "-D") for t in (
            "KUBE-PORTALS-HOST", "KUBE-PORTALS-CONTAINER", "KUBE-NODEPORT-HOST",
            "KUBE-NODEPORT-CONTAINER", "KUBE-NODEPORT-NON-LOCAL")]
    assert [(r.table, r.op, r.chain) for r in rules[5:7]] == [
        ("nat", "-F", "KUBE-PORTALS-CONTAINER"), ("nat", "-X", "KUBE-PORTALS-CONTAINER")]
    assert rules[-1] == ("filter", "KUBE-NODEPORT-NON-LOCAL", [], "-X")
    assert len(rules) == 15


def test_restore_text_for_the_article():
    text = us.restore_text(us.init_rules(),
                           article_portal() + us.node_port_rules(SVC, 30080, "TCP", 10400,
                                                                 "10.100.0.2"))
    assert text == f"""*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
-I PREROUTING -m comment --comment "{PORTALS}" -j KUBE-PORTALS-CONTAINER
-I OUTPUT -m comment --comment "{PORTALS}" -j KUBE-PORTALS-HOST
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "{NODEPORTS}" \
-j KUBE-NODEPORT-CONTAINER
-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "{NODEPORTS}" -j KUBE-NODEPORT-HOST
-A KUBE-PORTALS-CONTAINER -m comment --comment "{SVC}" -p tcp -m tcp --dport 80 \
-d 10.3.241.152/32 -j REDIRECT --to-ports 10400
-A KUBE-PORTALS-HOST -m comment --comment "{SVC}" -p tcp -m tcp --dport 80 \
-d 10.3.241.152/32 -j DNAT --to-destination 10.100.0.2:10400
-A KUBE-NODEPORT-CONTAINER -m comment --comment "{SVC}" -p tcp -m tcp --dport 30080 \
-j REDIRECT --to-ports 10400
-A KUBE-NODEPORT-HOST -m comment --comment "{SVC}" -p tcp -m tcp --dport 30080 \
-j DNAT --to-destination 10.100.0.2:10400
COMMIT
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
-I INPUT -m comment --comment "{NON_LOCAL}" -j KUBE-NODEPORT-NON-LOCAL
-A KUBE-NODEPORT-NON-LOCAL -m comment --comment "{SVC}" -p tcp -m tcp --dport 10400 \
-m state --state NEW -j ACCEPT
COMMIT
"""


def test_comment_quoting():
    plain = Rule("nat", "X", ["-m", "comment", "--comment", "plain_word-1", "-j", "ACCEPT"])
    assert us.save_line(plain) == "-A X -m comment --comment plain_word-1 -j ACCEPT"
    odd = Rule("nat", "X", ["-m", "comment", "--comment", "say \"hi\" it's", "-j", "ACCEPT"])
    assert us.save_line(odd) == '-A X -m comment --comment "say \\"hi\\" it\\\'s" -j ACCEPT'
    slash = Rule("nat", "X", ["-m", "comment", "--comment", "a\\b", "-j", "ACCEPT"])
    assert us.save_line(slash) == '-A X -m comment --comment "a\\\\b" -j ACCEPT'
