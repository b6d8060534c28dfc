"""draw-rules on a lab whose kube-proxy runs in nftables mode: table ip kube-proxy, live."""

import time

import pytest

import kubenet
from kubenet import cli
from kubenet.draw import draw_rules


@pytest.fixture(scope="module")
def nft_lab():
    with kubenet.Lab("article", proxy_mode="nftables") as lab:
        yield lab


def test_draw_rules_draws_kube_proxys_nftables_table(nft_lab):
    start = time.monotonic()
    diagram = nft_lab.draw_rules("node1")
    svg = diagram.svg()
    elapsed = time.monotonic() - start
    source = diagram.source
    assert source.splitlines()[1].count("node1: nftables ip kube-proxy nat chains") == 1
    assert "10.3.241.152 . tcp . 80" in source  # the service-ips element
    assert "<b>dnat to</b> 10.0.1.2:8080" in source and "<b>dnat to</b> 10.0.2.2:8080" in source
    assert source.count("<b>p=1/2</b> · 50%") == 2  # numgen random mod 2: one edge each
    for text in ("10.3.241.152", "10.0.1.2:8080", "10.0.2.2:8080", "p=1/2", "50%"):
        assert text in svg
    assert "firewall-check" not in source  # the filter chains only on request
    assert svg == nft_lab.draw_rules("node1").svg()  # the same state draws the same bytes
    assert elapsed < 1.0, elapsed


def test_the_same_graph_from_the_nodes_json(nft_lab):
    dump = nft_lab.exec("node1", "nft", "-j", "list", "table", "ip", "kube-proxy").stdout
    assert draw_rules(dump, node="node1").source == nft_lab.draw_rules("node1").source
    assert kubenet.draw_rules_from(dump, node="node1").source == draw_rules(
        dump, node="node1").source


def test_cli_rules_and_draw_rules_in_nftables_mode(nft_lab, tmp_path, capfd):
    assert cli.main(["--lab", nft_lab.name, "rules", "node1"]) == 0
    assert capfd.readouterr().out.startswith("table ip kube-proxy {")
    target = tmp_path / "node2.svg"
    assert cli.main(["--lab", nft_lab.name, "draw-rules", "node2", "-o", str(target)]) == 0
    assert capfd.readouterr().err.startswith(f"wrote {target} (node2: nftables ip kube-proxy "
                                             "nat chains")
    assert "10.3.241.152" in target.read_text()
    assert cli.main(["--lab", nft_lab.name, "draw-rules", "node1", "-t", "filter",
                     "--format", "dot"]) == 0
    out = capfd.readouterr().out
    assert "cluster-ips-check" in out and "dnat to" not in out
    assert cli.main(["--lab", nft_lab.name, "draw-rules", "node9"]) == 1
    assert capfd.readouterr().err == 'Error from server (NotFound): nodes "node9" not found\n'


def test_draw_rules_follows_the_proxy_mode(nft_lab):
    """Last in this module: it switches the lab's kube-proxy away and back."""
    nft_lab.set_proxy_mode("iptables")
    try:
        source = nft_lab.draw_rules("node1").source
        assert "node1: iptables nat chains" in source and "chain/KUBE-SVC-" in source
        assert "p=0.5" in source and "10.3.241.152:80/tcp" in source
        nft_lab.set_proxy_mode("userspace")
        source = nft_lab.draw_rules("node1").source
        assert "KUBE-PORTALS-CONTAINER" in source and "REDIRECT</b> port" in source
    finally:
        nft_lab.set_proxy_mode("nftables")
    assert "nftables ip kube-proxy nat chains" in nft_lab.draw_rules("node1").source
