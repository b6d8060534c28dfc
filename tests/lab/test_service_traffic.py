"""Services for real: the cluster IP, DNS, kube-proxy's rules and the traffic through them."""

import re
import textwrap

import pytest

from kubenet import KubenetError

SERVERS = ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]


def test_the_article_service_and_its_endpoints(article_lab):
    services = str(article_lab.get("services"))
    assert re.search(r"service-test\s+ClusterIP\s+10\.3\.241\.152\s+<none>\s+80/TCP", services)
    described = str(article_lab.describe("service", "service-test"))
    assert "Endpoints:               10.0.1.2:8080,10.0.2.2:8080" in described
    assert "Selector:                app=service_test_pod" in described
    slices = article_lab.get("endpointslices", output="json")
    assert '"kubernetes.io/service-name": "service-test"' in slices
    assert '"ready": true' in slices


def test_client2_reaches_the_service_by_name(article_lab):
    log = article_lab.logs("service-test-client2")
    assert log.startswith("HTTP/1.0 200 OK")
    assert re.search(r"<p>Hello from service-test-6ffd9ddbbf-(kf4j2|qs2j6)</p>", log)


def test_requests_through_the_service_split_between_both_pods(article_lab):
    split = article_lab.send_requests(SERVERS[0], "service-test:80", count=200)
    assert split.failed == 0
    for pod in SERVERS:
        assert 0.30 <= split.share(pod) <= 0.70, split


def test_no_interface_and_no_route_holds_a_service_address(article_lab):
    inventory = article_lab.inventory()
    assert len(inventory.namespaces) >= 9  # gateway, external, 2 nodes, 5 pods
    assert inventory.holders("10.3.241.152") == []
    assert inventory.holders("10.3.240.10") == []
    assert inventory.routes_to("10.3.240.0/20") == []
    assert inventory.holders("10.0.1.2")  # while pod addresses are on real devices


@pytest.mark.parametrize("name", ["service-test", "service-test.default",
                                  "service-test.default.svc.cluster.local"])
def test_dns_names_resolve_to_the_cluster_ip(article_lab, name):
    out = article_lab.exec(SERVERS[0], "getent", "ahostsv4", name)
    assert out.stdout.split()[0] == "10.3.241.152"


def test_dns_answers_like_a_cluster_dns(article_lab):
    script = textwrap.dedent("""\
        import sys
        from dnslib import DNSRecord
        for name, qtype, tcp in [("service-test.default.svc.cluster.local", "A", False),
                                 ("service-test.default.svc.cluster.local", "A", True),
                                 ("service-test.default.svc.cluster.local", "AAAA", False),
                                 ("nothing.default.svc.cluster.local", "A", False)]:
            reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(
                "10.3.240.10", 53, tcp=tcp, timeout=2))
            print(qtype, tcp, reply.header.rcode, [str(r.rdata) for r in reply.rr])
        """)
    import sys
    out = article_lab.exec(SERVERS[0], sys.executable, "-c", script)
    assert out.stdout.splitlines() == [
        "A False 0 ['10.3.241.152']",
        "A True 0 ['10.3.241.152']",
        "AAAA False 0 []",
        "A False 3 []",
    ], out.stderr


def test_rules_are_kube_proxys(article_lab):
    nat = str(article_lab.rules("node1", table="nat"))
    assert "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES" \
        in nat
    svc = re.search(r"-A KUBE-SERVICES -d 10\.3\.241\.152/32 .* -j (KUBE-SVC-\w+)", nat).group(1)
    assert re.search(rf"-A {svc} .*--probability 0\.5", nat)
    assert "--to-destination 10.0.1.2:8080" in nat and "--to-destination 10.0.2.2:8080" in nat


def test_same_node_and_hairpin_traffic(empty_lab):
    empty_lab.apply("notebooks/manifests/test-deployment.yaml")
    empty_lab.apply("notebooks/manifests/test-service.yaml")
    # the pod on node1 asks its own Service often enough to be sent to itself (hairpin)
    split = empty_lab.send_requests(SERVERS[0], "10.3.241.152:80", count=40)
    assert split.failed == 0 and split.counts[SERVERS[0]] > 0
    # the server saw the hairpinned request from the node's address (masqueraded)
    assert "10.0.1.1 - - " in empty_lab.logs(SERVERS[0])


def test_without_bridge_netfilter_same_node_service_traffic_breaks(empty_lab):
    empty_lab.apply("notebooks/manifests/test-deployment.yaml")
    empty_lab.apply("notebooks/manifests/test-service.yaml")
    empty_lab.scale("service-test", 1)  # only kf4j2, on node1
    empty_lab.apply(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: same-node-client}
        spec:
          nodeName: node1
          containers: [{name: c, image: busybox, command: [sleep, infinity]}]
        """))
    ask = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 service-test 80"
    assert "Hello from" in empty_lab.exec("same-node-client", "sh", "-c", ask).stdout
    off = "echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables"
    assert empty_lab.exec("node1", "sh", "-c", off).returncode == 0
    assert "Hello from" not in empty_lab.exec("same-node-client", "sh", "-c", ask).stdout


def test_traffic_keeps_flowing_while_kube_proxy_is_stopped(empty_lab):
    empty_lab.apply("notebooks/manifests/test-deployment.yaml")
    empty_lab.apply("notebooks/manifests/test-service.yaml")
    empty_lab.kube_proxy("stop", "node1")
    assert empty_lab.send_requests(SERVERS[0], "service-test:80", count=10).failed == 0
    # a change while it is down does not reach node1's rules...
    empty_lab.delete_pod(SERVERS[1])
    nat = str(empty_lab.rules("node1", table="nat"))
    assert "10.0.2.2:8080" in nat
    # ...until it comes back
    empty_lab.kube_proxy("start", "node1")
    nat = str(empty_lab.rules("node1", table="nat"))
    assert "10.0.2.2:8080" not in nat and "10.0.2.3:8080" in nat
    assert empty_lab.send_requests(SERVERS[0], "service-test:80", count=10).failed == 0


def test_a_service_without_endpoints_rejects(empty_lab):
    empty_lab.apply(textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: nobody}
        spec:
          selector: {app: nobody}
          ports: [{port: 80}]
        """))
    filter_rules = str(empty_lab.rules("node1", table="filter"))
    assert "has no endpoints" in filter_rules and "REJECT" in filter_rules
    out = empty_lab.exec("node1", "sh", "-c", "nc -z -w 2 nobody.default.svc.cluster.local 80")
    assert out.returncode != 0


@pytest.mark.parametrize("manifest, message", [
    ("spec: {clusterIP: 10.0.0.5, ports: [{port: 80}]}", "is not in the valid range"),
    ("spec: {clusterIP: 10.3.240.10, ports: [{port: 80}]}", "provided IP is already allocated"),
    ("spec: {type: NodePort, ports: [{port: 80, nodePort: 40000}]}", "30000-32767"),
    ("spec: {ports: [{port: 70000}]}", "must be between 1 and 65535"),
])
def test_bad_services_change_nothing(empty_lab, manifest, message):
    before = str(empty_lab.get("services", all_namespaces=True))
    with pytest.raises(KubenetError, match=message):
        empty_lab.apply(f"apiVersion: v1\nkind: Service\nmetadata: {{name: bad}}\n{manifest}\n")
    assert str(empty_lab.get("services", all_namespaces=True)) == before


def test_render_iptables_cli(run_cli, tmp_path):
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: service-test, namespace: default}
        spec:
          clusterIP: 10.3.241.152
          ports: [{port: 80, protocol: TCP, targetPort: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: service-test-abcde
          namespace: default
          labels: {kubernetes.io/service-name: service-test}
        addressType: IPv4
        endpoints:
        - {addresses: [10.0.1.2], conditions: {ready: true}, nodeName: node1}
        - {addresses: [10.0.2.2], conditions: {ready: true}, nodeName: node2}
        ports: [{port: 8080, protocol: TCP, name: ""}]
        """))
    out = run_cli("render-iptables", "-f", str(manifest), "--node-name", "node1",
                  "--node-ip", "10.100.0.2", check=True).stdout
    assert "*nat" in out and "*filter" in out
    assert "--probability 0.5000000000" in out
    assert "-j DNAT --to-destination 10.0.2.2:8080" in out


def test_session_affinity_client_ip_keeps_a_client_on_one_pod(empty_lab):
    empty_lab.apply("notebooks/manifests/test-deployment.yaml")
    empty_lab.apply(textwrap.dedent("""\
        kind: Service
        apiVersion: v1
        metadata: {name: service-test}
        spec:
          selector: {app: service_test_pod}
          sessionAffinity: ClientIP
          ports: [{port: 80, targetPort: http}]
        """))
    nat = str(empty_lab.rules("node1", table="nat"))
    assert "-m recent" in nat and "--rcheck --seconds 10800 --reap" in nat
    split = empty_lab.send_requests(SERVERS[0], "service-test:80", count=20)
    assert split.failed == 0 and len(split.counts) == 1  # one client address, one pod


def test_a_service_without_selector_uses_endpoint_slices_applied_by_hand(empty_lab):
    empty_lab.apply("notebooks/manifests/test-deployment.yaml")
    out = empty_lab.apply(textwrap.dedent("""\
        apiVersion: v1
        kind: Service
        metadata: {name: by-hand}
        spec:
          ports: [{port: 80, protocol: TCP}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: by-hand-1
          labels: {kubernetes.io/service-name: by-hand}
        addressType: IPv4
        endpoints:
        - addresses: [10.0.2.2]
        ports: [{port: 8080, protocol: TCP}]
        """))
    assert out == ["service/by-hand created", "endpointslice.discovery.k8s.io/by-hand-1 created"]
    assert "Endpoints:               10.0.2.2:8080" in str(empty_lab.describe("service", "by-hand"))
    split = empty_lab.send_requests(SERVERS[0], "by-hand:80", count=4)
    assert split.counts[SERVERS[1]] == 4
    empty_lab.delete("endpointslice", "by-hand-1")
    assert "Endpoints:               <none>" in str(empty_lab.describe("service", "by-hand"))
