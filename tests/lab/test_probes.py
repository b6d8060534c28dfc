"""The kubelet's probes: a pod failing readiness leaves the Service; failing liveness restarts.

Waits use deadlines from the probe settings (period x threshold plus a margin); the test
asserts what happens, never how fast.
"""

import time

import pytest

import kubenet

SERVERS = ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]


def _until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture
def probed_lab():
    with kubenet.Lab("empty") as lab:
        lab.apply("notebooks/manifests/test-deployment-probes.yaml")
        lab.apply("notebooks/manifests/test-service.yaml")
        yield lab


def _endpoints(lab) -> str:
    line = [x for x in str(lab.describe("service", "service-test")).splitlines()
            if x.startswith("Endpoints:")][0]
    return line.split(":", 1)[1].strip()


def _pod(lab, name):
    return next(p for p in lab.pods() if p["metadata"]["name"] == name)


def test_readiness_failure_removes_the_endpoint_and_healing_brings_it_back(probed_lab):
    lab = probed_lab
    assert _endpoints(lab) == "10.0.1.2:8080,10.0.2.2:8080"
    lab.probe("fail", SERVERS[1])
    # readiness: period 1 s, timeout 1 s, failureThreshold 1
    assert _until(lambda: _endpoints(lab) == "10.0.1.2:8080", timeout=10)
    pod = _pod(lab, SERVERS[1])
    assert pod["status"]["conditions"][0]["status"] == "False"
    # still listed in the slice, as not ready
    slices = lab.get("endpointslices", output="json")
    assert '"ready": false' in slices
    nat = str(lab.rules("node1", table="nat"))
    assert "10.0.2.2:8080" not in nat
    assert lab.send_requests(SERVERS[0], "service-test:80", count=10).counts[SERVERS[1]] == 0
    lab.probe("heal", SERVERS[1])
    assert _until(lambda: _endpoints(lab) == "10.0.1.2:8080,10.0.2.2:8080", timeout=10)
    assert _until(lambda: "10.0.2.2:8080" in str(lab.rules("node1", table="nat")), timeout=10)


def test_liveness_failure_restarts_the_container(probed_lab):
    lab = probed_lab
    lab.probe("fail", SERVERS[1])
    # liveness: period 1 s + timeout 1 s, failureThreshold 5 -> about 10 s; allow 30
    assert _until(lambda: _pod(lab, SERVERS[1])["status"]["containerStatuses"][0]
                  ["restartCount"] >= 1, timeout=30)
    lab.probe("heal", SERVERS[1])
    assert _until(lambda: _endpoints(lab) == "10.0.1.2:8080,10.0.2.2:8080", timeout=30)
    restarts = str(lab.get("pods")).splitlines()
    assert any(SERVERS[1] in line and line.split()[3] != "0" for line in restarts)


def test_probe_errors(probed_lab):
    with pytest.raises(kubenet.KubenetError, match='pods "nope" not found'):
        probed_lab.probe("fail", "nope")
    probed_lab.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n"
                     "  containers: [{name: c, image: i, command: [sleep, infinity]}]\n")
    with pytest.raises(kubenet.KubenetError, match="no httpGet or tcpSocket probe"):
        probed_lab.probe("fail", "plain")


def test_exec_readiness_probe():
    with kubenet.Lab("empty") as lab:
        lab.apply("""\
apiVersion: v1
kind: Pod
metadata: {name: flagged}
spec:
  containers:
  - name: c
    image: busybox
    command: [sh, -c, "touch ready; exec sleep infinity"]
    readinessProbe:
      exec: {command: [test, -f, ready]}
      periodSeconds: 1
""")
        ready = lambda: _pod(lab, "flagged")["status"]["conditions"][0]["status"]  # noqa: E731
        assert _until(lambda: ready() == "True", timeout=10)
        lab.exec("flagged", "rm", "ready")
        assert _until(lambda: ready() == "False", timeout=10)
        lab.exec("flagged", "touch", "ready")
        assert _until(lambda: ready() == "True", timeout=10)
