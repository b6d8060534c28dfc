"""``kubenet bench``'s lab: nginx and iperf3 run as pods (in this tier too), and one run of
each kind gives a figure, direct and through the cluster IP."""

import shutil

import pytest

from kubenet.bench import Bench, Settings

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
    assert sorted(names) == ["bench-iperf", "bench-nginx"]
