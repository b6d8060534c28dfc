"""From outside the cluster: NodePort, the lost source address, externalTrafficPolicy: Local."""

import re

import pytest

import kubenet

SERVERS = ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]
ASK = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {node} 30080"


@pytest.fixture
def nodeport_lab():
    with kubenet.Lab("empty") as lab:
        lab.apply("notebooks/manifests/test-deployment.yaml")
        lab.apply("notebooks/manifests/test-service-nodeport.yaml")
        yield lab


def _clients(lab, pod):
    return set(re.findall(r"^(\S+) - - ", lab.logs(pod), re.M))


def test_nodeport_from_outside_hides_the_client_address(nodeport_lab):
    lab = nodeport_lab
    assert re.search(r"service-test\s+NodePort\s+10\.3\.241\.152\s+<none>\s+80:30080/TCP",
                     str(lab.get("services")))
    answered = set()
    for _ in range(12):
        for node in ("10.100.0.2", "10.100.0.3"):
            out = lab.exec("external", "sh", "-c", ASK.format(node=node))
            answered |= set(re.findall(r"Hello from (\S+)</p>", out.stdout))
    assert answered == set(SERVERS)  # any node reaches pods on every node
    seen = _clients(lab, SERVERS[0]) | _clients(lab, SERVERS[1])
    assert "203.0.113.10" not in seen  # the source was rewritten to a node's address
    assert seen <= {"10.100.0.2", "10.100.0.3", "10.0.1.1", "10.0.2.1"}


def test_external_traffic_policy_local_keeps_the_client_address(nodeport_lab):
    lab = nodeport_lab
    lab.apply("notebooks/manifests/test-service-local.yaml")
    for node, pod in (("10.100.0.2", SERVERS[0]), ("10.100.0.3", SERVERS[1])):
        for _ in range(4):
            out = lab.exec("external", "sh", "-c", ASK.format(node=node))
            assert f"Hello from {pod}<" in out.stdout  # only the node's own pod serves
    assert _clients(lab, SERVERS[0]) == {"203.0.113.10"}
    assert _clients(lab, SERVERS[1]) == {"203.0.113.10"}


def test_local_policy_node_without_endpoints_drops(nodeport_lab):
    lab = nodeport_lab
    lab.apply("notebooks/manifests/test-service-local.yaml")
    lab.delete_pod(SERVERS[1])  # node2's pod goes...
    lab.scale("service-test", 1)  # ...and is not replaced
    nodes = [p["spec"]["nodeName"] for p in lab.pods()]
    empty = "10.100.0.3" if nodes == ["node1"] else "10.100.0.2"
    out = lab.exec("external", "sh", "-c", ASK.format(node=empty))
    assert "Hello" not in out.stdout
