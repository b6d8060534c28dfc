"""kube-proxy's userspace mode: a proxy process per node and a second connection."""

import re

import pytest

import kubenet

SERVERS = ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]


@pytest.fixture(scope="module")
def userspace_lab():
    with kubenet.Lab("article", proxy_mode="userspace") as lab:
        yield lab


def test_the_cluster_ip_is_redirected_to_the_proxy_port(userspace_lab):
    nat = str(userspace_lab.rules("node1", table="nat"))
    assert ('-A KUBE-PORTALS-CONTAINER -d 10.3.241.152/32 -p tcp -m comment --comment '
            '"default/service-test:" -m tcp --dport 80 -j REDIRECT --to-ports 10400') in nat
    assert ('-A KUBE-PORTALS-HOST -d 10.3.241.152/32 -p tcp -m comment --comment '
            '"default/service-test:" -m tcp --dport 80 -j DNAT --to-destination '
            '10.100.0.2:10400') in nat
    assert "KUBE-SVC-" not in nat


def test_the_proxy_is_a_process_listening_on_10400(userspace_lab):
    listening = userspace_lab.exec("node1", "ss", "-lntup").stdout
    assert re.search(r"0\.0\.0\.0:10400 .*python", listening)


def test_client2_gets_an_answer_by_name_through_the_proxy(userspace_lab):
    # DNS (UDP) went through the proxy too: kube-dns is a Service like any other
    assert "Hello from service-test-6ffd9ddbbf-" in userspace_lab.logs("service-test-client2")


def test_the_server_sees_the_proxys_second_connection(userspace_lab):
    split = userspace_lab.send_requests(SERVERS[0], "service-test:80", count=10)
    assert split.failed == 0
    # round robin: both pods answer, alternately
    assert split.counts[SERVERS[0]] == split.counts[SERVERS[1]] == 5
    # the far pod was asked by node1 itself, not by the client pod
    assert "10.100.0.2 - - " in userspace_lab.logs(SERVERS[1])


def test_the_proxy_port_answers_directly(userspace_lab):
    out = userspace_lab.exec(SERVERS[0], "sh", "-c",
                             "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.0.1.1 10400")
    assert "Hello from service-test-6ffd9ddbbf-" in out.stdout


def test_stopping_the_userspace_proxy_stops_traffic():
    with kubenet.Lab("article", proxy_mode="userspace") as lab:
        lab.kube_proxy("stop", "node1")
        split = lab.send_requests(SERVERS[0], "10.3.241.152:80", count=4)
        assert split.answered == 0
        lab.kube_proxy("start", "node1")
        assert lab.send_requests(SERVERS[0], "10.3.241.152:80", count=4).failed == 0


def test_switching_proxy_mode_both_ways(run_cli, lab_name):
    run_cli("up", lab=lab_name, check=True)
    assert "userspace mode" in run_cli("proxy-mode", "userspace", lab=lab_name, check=True).stdout
    nat = run_cli("rules", "node1", "-t", "nat", lab=lab_name, check=True).stdout
    assert "KUBE-PORTALS-CONTAINER" in nat and "KUBE-SVC-" not in nat
    ask = ["exec", "--lab", lab_name, SERVERS[0], "--", "sh", "-c",
           "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 service-test 80"]
    assert "Hello from" in run_cli(*ask).stdout
    run_cli("proxy-mode", "iptables", lab=lab_name, check=True)
    nat = run_cli("rules", "node1", "-t", "nat", lab=lab_name, check=True).stdout
    assert "KUBE-PORTALS" not in nat and "KUBE-SVC-" in nat
    assert "10400" not in run_cli("exec", "--lab", lab_name, "node1", "--", "ss", "-lnt").stdout
    assert "Hello from" in run_cli(*ask).stdout


def test_userspace_nodeport_from_outside():
    with kubenet.Lab("article", proxy_mode="userspace") as lab:
        lab.apply("notebooks/manifests/test-service-nodeport.yaml")
        nat = str(lab.rules("node1", table="nat"))
        assert "-A KUBE-NODEPORT-CONTAINER" in nat and "--dport 30080 -j REDIRECT" in nat
        ask = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.100.0.3 30080"
        answers = {lab.exec("external", "sh", "-c", ask).stdout.split("Hello from ")[-1][:29]
                   for _ in range(4)}
        assert answers == set(SERVERS)  # round robin from node2's proxy
