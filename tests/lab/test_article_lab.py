"""The article's cluster, built for real: pods, addresses, traffic across nodes."""

import pytest

from kubenet import KubenetError


def test_article_pods_have_the_articles_names_addresses_and_nodes(article_lab):
    pods = {p["metadata"]["name"]: p for p in article_lab.pods()}
    expected = {
        "service-test-6ffd9ddbbf-kf4j2": ("10.0.1.2", "node1"),
        "service-test-6ffd9ddbbf-qs2j6": ("10.0.2.2", "node2"),
        "service-test-client1": ("10.0.1.3", "node1"),
    }
    for name, (ip, node) in expected.items():
        assert pods[name]["status"]["podIP"] == ip
        assert pods[name]["spec"]["nodeName"] == node
    assert pods["service-test-6ffd9ddbbf-kf4j2"]["status"]["phase"] == "Running"
    assert pods["service-test-client1"]["status"]["phase"] == "Succeeded"


def test_client1_reaches_the_pod_on_the_other_node(article_lab):
    log = article_lab.logs("service-test-client1")
    assert log.startswith("HTTP/1.0 200 OK")
    assert "<p>Hello from service-test-6ffd9ddbbf-qs2j6</p>" in log
    # and the server saw the client's own pod address: no rewriting on the pod network
    assert '10.0.1.3 - - ' in article_lab.logs("service-test-6ffd9ddbbf-qs2j6")


def test_get_pods_wide_looks_like_kubectl(article_lab):
    table = str(article_lab.get("pods", output="wide"))
    header = table.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "service-test-6ffd9ddbbf-kf4j2   1/1     Running" in table
    assert "Completed" in table


def test_exec_runs_inside_the_pods_namespaces(article_lab):
    out = article_lab.exec("service-test-6ffd9ddbbf-kf4j2", "ip", "-4", "-o", "addr", "show",
                           "eth0")
    assert "10.0.1.2/24" in out.stdout
    assert article_lab.exec("service-test-6ffd9ddbbf-kf4j2", "hostname").stdout.strip() == \
        "service-test-6ffd9ddbbf-kf4j2"
    resolv = article_lab.exec("service-test-6ffd9ddbbf-kf4j2", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.3.240.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    assert article_lab.exec("service-test-6ffd9ddbbf-kf4j2", "sh", "-c", "exit 7").returncode == 7


def test_exec_on_nodes_and_gateway(article_lab):
    routes = article_lab.exec("gateway", "ip", "route").stdout
    assert "10.0.1.0/24 via 10.100.0.2" in routes
    assert "10.0.2.0/24 via 10.100.0.3" in routes
    node = article_lab.exec("node1", "ip", "-o", "addr").stdout
    assert "10.100.0.2/24" in node and "10.0.1.1/24" in node
    bridge = article_lab.exec("node1", "ip", "-d", "link", "show", "master", "cbr0").stdout
    assert "hairpin on" in bridge
    assert article_lab.exec("node1", "cat", "/proc/sys/net/ipv4/ip_forward").stdout == "1\n"
    assert article_lab.exec(
        "node1", "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").stdout == "1\n"


def test_exec_into_a_completed_pod_is_refused(article_lab):
    with pytest.raises(KubenetError, match="completed pod"):
        article_lab.exec("service-test-client1", "true")


def test_pod_can_reach_pods_on_both_nodes_and_the_external_client(article_lab):
    for ip in ("10.0.1.2", "10.0.2.2"):
        out = article_lab.exec("service-test-6ffd9ddbbf-kf4j2", "sh", "-c",
                               f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 8080")
        assert "Hello from service-test-6ffd9ddbbf-" in out.stdout
    assert article_lab.exec("external", "ping", "-c1", "-W2", "10.100.0.2").returncode == 0


def test_pods_started_after_the_service_get_its_environment(article_lab):
    # client2 was started after the Service existed: it had the service links
    out = article_lab.exec("service-test-6ffd9ddbbf-kf4j2", "sh", "-c", "echo $HOSTNAME")
    assert out.stdout.strip() == "service-test-6ffd9ddbbf-kf4j2"
    article_lab.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: env-reader}\nspec:\n"
                      "  containers: [{name: c, image: busybox, command: [sleep, infinity]}]\n")
    env = article_lab.exec("env-reader", "env").stdout
    assert "SERVICE_TEST_SERVICE_HOST=10.3.241.152" in env
    assert "SERVICE_TEST_PORT=tcp://10.3.241.152:80" in env
    article_lab.delete("pod", "env-reader")
