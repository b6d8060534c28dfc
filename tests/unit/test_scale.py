"""The scale benchmark's pure part: synthetic Services, the probe's statistics, figures."""

import json

import pytest

from kubenet import scale
from kubenet.kubeproxy import iptables, nftables
from kubenet.scale import Point


def test_synthetic_services_have_two_endpoints_and_addresses_in_order():
    services, slices = scale.synthetic(3, ["10.0.2.2", "10.0.2.3"])
    assert [s["metadata"]["name"] for s in services] == ["svc-00000", "svc-00001", "svc-00002"]
    assert [s["spec"]["clusterIP"] for s in services] == ["10.4.0.1", "10.4.0.2", "10.4.0.3"]
    assert all(s["metadata"]["namespace"] == "scale" for s in services)
    for svc, sl in zip(services, slices, strict=True):
        assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == svc["metadata"]["name"]
        assert [e["addresses"][0] for e in sl["endpoints"]] == ["10.0.2.2", "10.0.2.3"]
    assert scale.synthetic(0, ["10.0.2.2"]) == ([], [])
    with pytest.raises(ValueError, match="negative"):
        scale.synthetic(-1, [])


def test_cluster_ips_stay_inside_the_range():
    assert scale.cluster_ip(9999) == "10.4.39.16"
    with pytest.raises(ValueError, match="no room"):
        scale.cluster_ip(70000)


def test_first_and_last_are_where_kube_proxy_writes_them():
    """The first synthetic Service's rule comes first in KUBE-SERVICES, the last one last
    (before the NodePorts jump); in nftables mode both are elements of one map."""
    services, slices = scale.synthetic(12, ["10.0.2.2", "10.0.2.3"])
    text = iptables.render(services, slices, node_name="node1", node_ips=["10.240.0.2"],
                           cluster_cidr="10.0.0.0/14")
    rules = [line for line in text.splitlines() if line.startswith("-A KUBE-SERVICES")]
    goal = scale.targets(12, "10.0.2.2")
    assert goal == {"direct": "10.0.2.2:8080", "first": "10.4.0.1:80", "last": "10.4.0.12:80"}
    assert "-d 10.4.0.1 " in rules[0]
    assert "-d 10.4.0.12 " in rules[-2] and "KUBE-NODEPORTS" in rules[-1]
    assert text.count("-j DNAT") == 24  # two endpoints each
    nft = nftables.render(services, slices, node_name="node1", node_ips=["10.240.0.2"],
                          cluster_cidr="10.0.0.0/14")
    assert nft.count("add element ip kube-proxy service-ips { 10.4.0.") == 12


def test_connect_stats_median_p99_and_failures():
    probe = {"samples": {"direct": [float(x) for x in range(1, 101)], "last": []},
             "failures": {"direct": 0, "last": 3}}
    stats = scale.connect_stats(probe)
    assert stats["direct"] == {"median_us": 50.5, "p99_us": 99.0, "n": 100, "failures": 0}
    assert stats["last"]["median_us"] is None and stats["last"]["failures"] == 3


def points() -> list[Point]:
    def conn(direct: float, first: float, last: float) -> dict:
        return {t: {"median_us": v, "p99_us": v * 2, "n": 2000, "failures": 0}
                for t, v in (("direct", direct), ("first", first), ("last", last))}
    return [Point("iptables", 100, 0.05, 0.04, connect=conn(95, 94, 100), rounds=2000),
            Point("iptables", 10000, 80.0, 4.0, connect=conn(400, 110, 410), rounds=2000),
            Point("nftables", 100, 0.06, 0.02, connect=conn(90, 91, 92), rounds=2000),
            Point("nftables", 10000, 90.0, 2.6, connect=conn(88, 90, 92), rounds=2000)]


def test_growth_and_summary_keys():
    pts = points()
    assert scale.growth(pts, "iptables") == 4.1
    assert scale.growth(pts, "nftables") == 1.0
    assert scale.growth(pts[:1], "iptables") is None
    assert scale.scale_summary(pts) == {
        "growth_iptables_10k": 4.1, "sync_iptables_10k_s": 80.0,
        "growth_nftables_10k": 1.0, "sync_nftables_10k_s": 90.0}
    assert scale.scale_summary(pts[:1])["growth_iptables_10k"] is None


def test_figures_are_json_lines_with_units():
    figs = scale.scale_figures(points())
    by = {f["name"]: f for f in figs}
    assert by["scale.iptables.10000.sync_s"]["value"] == 80.0
    assert by["scale.iptables.10000.sync_s"]["settings"]["what"] == "iptables-restore, full sync"
    assert by["scale.nftables.100.connect_last_us"]["p99"] == 184
    assert by["scale.iptables.growth"]["value"] == 4.1
    for f in figs:
        assert {"name", "value", "unit", "settings"} <= set(f)
        json.dumps(f)


def test_table_and_plots(tmp_path):
    pts = points()
    table = scale.format_scale_table(pts)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["mode", "services", "sync"]
    assert any(line.startswith("iptables") and "10,000" in line and "3.73x" in line
               for line in lines)
    assert "iptables: connect to the last-matched service grows 4.10x" in table
    files = scale.write_scale_plots(pts, tmp_path, "test")
    assert sorted(f.name for f in files) == ["scale_latency.png", "scale_latency.svg",
                                             "scale_sync.png", "scale_sync.svg"]
    assert (tmp_path / "scale_sync.svg").read_text().count("<svg") == 1


def test_points_round_trip_through_json():
    pts = points()
    again = scale.points_from(json.loads(json.dumps(scale.Scale(pts).to_json())))
    assert again == pts
