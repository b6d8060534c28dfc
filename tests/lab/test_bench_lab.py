"""``kubenet bench``'s lab: nginx and iperf3 run as pods (in this tier too), one run of
each kind gives a figure, direct and through the cluster IP; the scale level feeds node1's
kube-proxy synthetic Services in both rule modes; the lab's own figures."""

import shutil

import pytest

from kubenet import scale
from kubenet.bench import Bench, Settings
from kubenet.errors import BadRequest, NotFound

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def bench():
    missing = [t for t in ("wrk", "iperf3", "nginx") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (./setup.sh installs them)")
    settings = Settings.for_run(True)
    settings.min_connections = 100
    b = Bench(settings)
    b.open()
    yield b
    b.close()


@pytest.mark.parametrize("path", ["direct", "service"])
def test_one_run_of_each_kind(bench, path):
    close = bench.measure("iptables", path, "close", 0)
    assert close.value > 0 and close.requests >= 100 and close.errors == 0
    assert close.active_opens >= close.requests and close.syn_retrans == 0
    assert 0 < close.p50_ms <= close.p99_ms
    keepalive = bench.measure("iptables", path, "keepalive", 0)
    assert keepalive.value > 0 and keepalive.errors == 0
    assert keepalive.active_opens <= 2 * bench.s.connections
    bulk = bench.measure("iptables", path, "bulk", 0)
    assert bulk.value > 0.01  # Gbit/s


def test_every_client_pod_is_gone_after_its_run(bench):
    names = [p["metadata"]["name"] for p in bench.lab.pods()]
    assert sorted(names) == sorted(["bench-iperf", "bench-nginx", *scale.SCALE_PODS,
                                   scale.SCALE_CLIENT])


def test_scale_in_both_rule_modes(bench):
    bench.s.scale_sizes, bench.s.scale_rounds = (10, 300), 40
    bench.measure_scale()
    got = [(p.mode, p.services) for p in bench.scale_points]
    assert got == [("iptables", 10), ("iptables", 300), ("nftables", 10), ("nftables", 300)]
    for p in bench.scale_points:
        assert p.sync_s > 0 and p.render_s > 0 and p.rounds == 40
        for target in scale.TARGETS:  # every connection answered, by a real server
            assert p.connect[target]["n"] == 40 and p.connect[target]["failures"] == 0
    # the synthetic Services are gone again, and the lab is back in iptables mode
    rules = str(bench.lab.rules("node1"))
    assert "KUBE-SERVICES" in rules and "10.4.0.1/32" not in rules and "scale/svc-" not in rules
    summ = scale.scale_summary(bench.scale_points)
    assert summ["growth_iptables_10k"] is None  # 10,000 was not measured


def test_the_last_service_is_matched_after_every_other_rule(bench):
    """With 300 extra Services, node1's KUBE-SERVICES holds them in order."""
    endpoints = [p["status"]["podIP"] for p in bench.lab.pods()
                 if p["metadata"]["name"] in scale.SCALE_PODS]
    try:
        timings = bench.lab.extra_services("node1", 300, endpoints)
        assert timings["apply"] > 0 and timings["render"] > 0
        rules = [line for line in str(bench.lab.rules("node1", table="nat")).splitlines()
                 if line.startswith("-A KUBE-SERVICES") and "scale/" in line]
        assert len(rules) == 300
        assert "-d 10.4.0.1/32 " in rules[0] and "-d 10.4.1.44/32 " in rules[-1]
    finally:
        bench.lab.extra_services("node1", 0, endpoints)


def test_extra_services_need_a_rule_mode_and_a_node(bench):
    with pytest.raises(NotFound, match='nodes "node9" not found'):
        bench.lab.extra_services("node9", 10, ["10.0.2.2"])
    bench.set_mode("userspace")
    try:
        with pytest.raises(BadRequest, match="userspace mode"):
            bench.lab.extra_services("node1", 10, ["10.0.2.2"])
    finally:
        bench.set_mode("iptables")


def test_the_labs_own_figures(bench):
    bench.s.trace_runs, bench.s.draw_runs, bench.s.pods_per_node = 2, 1, (3,)
    bench.measure_lab()
    assert len(bench.trace_samples) == 2 and len(bench.draw_samples) == 1
    bench.measure_pods()
    assert bench.pod_runs[0]["pods"] == 6 and bench.pod_runs[0]["running"] == 6
    assert bench.pod_runs[0]["ready_s"] > 0
