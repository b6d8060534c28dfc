"""kube-proxy's nftables mode, live: its own table, numgen, DNAT, NodePorts, switching."""

import pytest

import kubenet

SERVERS = ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]


@pytest.fixture(scope="module")
def nft_lab():
    with kubenet.Lab("article", proxy_mode="nftables") as lab:
        yield lab


def test_the_article_works_in_nftables_mode(nft_lab):
    assert "Hello from service-test-6ffd9ddbbf-" in nft_lab.logs("service-test-client2")
    split = nft_lab.send_requests(SERVERS[0], "service-test:80", count=200)
    assert split.failed == 0
    for pod in SERVERS:
        assert 0.30 <= split.share(pod) <= 0.70, split


def test_the_rules_are_kube_proxys_nftables_table(nft_lab):
    table = str(nft_lab.rules("node1"))
    assert table.startswith("table ip kube-proxy")
    assert "map service-ips" in table
    assert "numgen random mod 2 vmap" in table
    assert "dnat to 10.0.2.2:8080" in table and "dnat to 10.0.1.2:8080" in table
    nat = nft_lab.exec("node1", "iptables-save", "-t", "nat").stdout
    assert "KUBE-SVC-" not in nat  # no iptables-mode rules at all


def test_nodeport_from_outside_in_nftables_mode():
    with kubenet.Lab("article", proxy_mode="nftables") as lab:
        lab.apply("notebooks/manifests/test-service-nodeport.yaml")
        ask = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.100.0.3 30080"
        assert "Hello from" in lab.exec("external", "sh", "-c", ask).stdout
        # switching away removes the table; switching back brings it again
        lab.set_proxy_mode("iptables")
        assert "kube-proxy" not in lab.exec("node1", "nft", "list", "tables").stdout
        assert lab.send_requests(SERVERS[0], "service-test:80", count=10).failed == 0
        lab.set_proxy_mode("nftables")
        assert "KUBE-SVC-" not in lab.exec("node1", "iptables-save", "-t", "nat").stdout
        assert lab.send_requests(SERVERS[0], "service-test:80", count=10).failed == 0
