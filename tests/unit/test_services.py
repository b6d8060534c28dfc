"""kubenet.services: cluster IPs, node ports, the Service object, EndpointSlices, describe."""

import copy
import ipaddress

import pytest

from kubenet.draws import Draws
from kubenet.errors import InvalidManifest
from kubenet.manifests import ServicePort, ServiceSpec
from kubenet.services import (
    NODE_PORT_RANGE,
    NodePorts,
    ServiceIPs,
    describe_service,
    endpoint_slice,
    endpoints_of,
    ports_column,
    service_object,
)

CIDR = "10.3.240.0/20"
NETWORK = ipaddress.ip_network(CIDR)


def offset(address):
    return int(ipaddress.ip_address(address)) - int(NETWORK.network_address)


# -- ServiceIPs -----------------------------------------------------------------------------

def test_recorded_cluster_ip_is_replayed_first():
    ips = ServiceIPs(CIDR, Draws(0, {"cluster-ip": ["10.3.241.152"]}))
    assert ips.allocate("service-test") == "10.3.241.152"
    assert "10.3.241.152" in ips.used
    second = ips.allocate("other")
    assert second != "10.3.241.152"
    assert ipaddress.ip_address(second) in NETWORK


def test_recorded_draws_are_replayed_in_order():
    ips = ServiceIPs(CIDR, Draws(0, {"cluster-ip": ["10.3.241.152", "10.3.250.7"]}))
    assert [ips.allocate("a"), ips.allocate("b")] == ["10.3.241.152", "10.3.250.7"]


def test_recorded_cluster_ip_already_taken_is_skipped():
    ips = ServiceIPs(CIDR, Draws(0, {"cluster-ip": ["10.3.241.152"]}))
    assert ips.allocate("mine", "10.3.241.152") == "10.3.241.152"
    got = ips.allocate("service-test")
    assert got != "10.3.241.152"
    assert offset(got) >= 256
    assert ips.draws.recorded("cluster-ip") is None  # the draw was used up


def test_an_explicit_address_does_not_consume_the_recorded_draw():
    ips = ServiceIPs(CIDR, Draws(0, {"cluster-ip": ["10.3.241.152"]}))
    assert ips.allocate("kube-dns", "10.3.240.10") == "10.3.240.10"
    assert ips.allocate("service-test") == "10.3.241.152"


def test_random_cluster_ips_come_from_the_upper_band():
    ips = ServiceIPs(CIDR, Draws(7))
    got = [ips.allocate(f"s{i}") for i in range(300)]
    assert len(set(got)) == len(got)
    assert all(256 <= offset(a) < NETWORK.num_addresses - 1 for a in got)
    assert set(got) == ips.used


def test_random_cluster_ips_are_reproducible_per_seed():
    def first(seed):
        ips = ServiceIPs(CIDR, Draws(seed))
        return [ips.allocate(f"s{i}") for i in range(5)]

    assert first(3) == first(3)
    assert first(3) != first(4)


def test_static_band_of_a_20_is_256_addresses():
    assert ServiceIPs(CIDR, Draws(0)).static_band == 256
    assert ServiceIPs("10.3.240.0/24", Draws(0)).static_band == 16
    assert ServiceIPs("10.0.0.0/12", Draws(0)).static_band == 256


def test_lower_band_is_used_once_the_upper_band_is_full_then_the_range_is_full():
    ips = ServiceIPs("10.3.240.0/24", Draws(1))  # offsets 16..254 upper, 1..15 lower
    upper = [ips.allocate(f"s{i}") for i in range(239)]
    assert sorted(int(a.split(".")[3]) for a in upper) == list(range(16, 255))
    lower = [ips.allocate(f"t{i}") for i in range(15)]
    assert sorted(int(a.split(".")[3]) for a in lower) == list(range(1, 16))
    with pytest.raises(InvalidManifest) as err:
        ips.allocate("full")
    assert str(err.value) == ('The Service "full" is invalid: spec.clusterIPs: Internal error: '
                              "range is full (10.3.240.0/24)")


def test_random_allocation_skips_explicitly_taken_addresses():
    ips = ServiceIPs("10.3.240.0/24", Draws(0))
    for last in range(16, 255):
        if last != 100:
            ips.allocate("taken", f"10.3.240.{last}")
    assert ips.allocate("web") == "10.3.240.100"


# A range smaller than the static band (/28 and smaller) still must never hand out its
# network or broadcast address, nor crash.
@pytest.mark.parametrize("cidr", ["10.3.240.0/28", "10.3.240.0/29"])
def test_small_ranges_allocate_only_host_addresses(cidr):
    network = ipaddress.ip_network(cidr)
    ips = ServiceIPs(cidr, Draws(0))
    got = []
    with pytest.raises(InvalidManifest, match="range is full"):
        for i in range(network.num_addresses + 1):
            got.append(ips.allocate(f"s{i}"))
    assert sorted(got, key=ipaddress.ip_address) == [str(h) for h in network.hosts()]


@pytest.mark.parametrize("address", ["10.3.240.10", "10.3.240.1", "10.3.255.254",
                                     "10.3.241.152"])
def test_explicit_cluster_ip(address):
    ips = ServiceIPs(CIDR, Draws(0))
    assert ips.allocate("web", address) == address
    assert ips.used == {address}


def test_explicit_cluster_ip_already_taken():
    ips = ServiceIPs(CIDR, Draws(0))
    ips.allocate("kube-dns", "10.3.240.10")
    with pytest.raises(InvalidManifest) as err:
        ips.allocate("web", "10.3.240.10")
    assert str(err.value) == (
        'The Service "web" is invalid: spec.clusterIPs: Invalid value: []string{"10.3.240.10"}: '
        "failed to allocate IP 10.3.240.10: provided IP is already allocated")


def test_explicit_cluster_ip_taken_by_a_random_allocation():
    ips = ServiceIPs(CIDR, Draws(0, {"cluster-ip": ["10.3.241.152"]}))
    ips.allocate("service-test")
    with pytest.raises(InvalidManifest, match="provided IP is already allocated"):
        ips.allocate("web", "10.3.241.152")


@pytest.mark.parametrize("address", ["10.0.0.5", "10.3.240.0", "10.3.255.255", "10.4.0.1",
                                     "192.168.1.1", "fd00::1"])
def test_explicit_cluster_ip_outside_the_range(address):
    ips = ServiceIPs(CIDR, Draws(0))
    with pytest.raises(InvalidManifest) as err:
        ips.allocate("web", address)
    assert str(err.value) == (
        f'The Service "web" is invalid: spec.clusterIPs: Invalid value: []string{{"{address}"}}: '
        f"failed to allocate IP {address}: the provided IP ({address}) is not in the valid "
        "range. The range of valid IPs is 10.3.240.0/20")
    assert ips.used == set()


def test_the_briefs_example_message():
    with pytest.raises(InvalidManifest) as err:
        ServiceIPs(CIDR, Draws(0)).allocate("web", "10.0.0.5")
    assert "failed to allocate IP 10.0.0.5: the provided IP (10.0.0.5) is not in the valid " \
           "range. The range of valid IPs is 10.3.240.0/20" in str(err.value)


@pytest.mark.parametrize("address", ["banana", "10.3.240.300", "10.3.240", "10.3.240.010"])
def test_explicit_cluster_ip_that_is_no_address(address):
    with pytest.raises(InvalidManifest) as err:
        ServiceIPs(CIDR, Draws(0)).allocate("web", address)
    assert str(err.value) == (f'The Service "web" is invalid: spec.clusterIPs[0]: Invalid value: '
                              f'"{address}": must be a valid IP address')


def test_check_accepts_a_free_address_and_changes_nothing():
    ips = ServiceIPs(CIDR, Draws(0, {"cluster-ip": ["10.3.241.152"]}))
    ips.allocate("kube-dns", "10.3.240.10")
    ips.check("web", "10.3.240.20")
    assert ips.used == {"10.3.240.10"}
    assert ips.allocate("web", "10.3.240.20") == "10.3.240.20"
    assert ips.allocate("next") == "10.3.241.152"  # check consumed no draw


def test_check_refuses_as_allocate_would_and_changes_nothing():
    ips = ServiceIPs(CIDR, Draws(0))
    ips.allocate("kube-dns", "10.3.240.10")
    with pytest.raises(InvalidManifest, match="provided IP is already allocated"):
        ips.check("web", "10.3.240.10")
    assert ips.used == {"10.3.240.10"}  # the taken address stays taken
    with pytest.raises(InvalidManifest, match=r"is not in the valid range"):
        ips.check("web", "10.0.0.5")
    with pytest.raises(InvalidManifest, match="must be a valid IP address"):
        ips.check("web", "nope")
    assert ips.used == {"10.3.240.10"}


def test_release_frees_an_address():
    ips = ServiceIPs(CIDR, Draws(0))
    ips.allocate("web", "10.3.240.20")
    ips.release("10.3.240.20")
    assert ips.used == set()
    assert ips.allocate("again", "10.3.240.20") == "10.3.240.20"


def test_release_of_an_unknown_address_is_harmless():
    ips = ServiceIPs(CIDR, Draws(0))
    ips.release("10.3.240.20")
    assert ips.used == set()


# -- NodePorts ------------------------------------------------------------------------------

def test_node_port_range():
    assert NODE_PORT_RANGE == (30000, 32767)


def test_random_node_ports_are_in_range_and_unique():
    ports = NodePorts(Draws(0))
    got = [ports.allocate("web", 0) for _ in range(500)]
    assert all(30000 <= p <= 32767 for p in got)
    assert len(set(got)) == 500
    assert ports.used == set(got)


def test_random_node_ports_are_reproducible_per_seed():
    assert [NodePorts(Draws(5)).allocate("web", 0) for _ in range(2)] == \
        [NodePorts(Draws(5)).allocate("web", 0)] * 2


def test_explicit_node_port():
    ports = NodePorts(Draws(0))
    assert ports.allocate("web", 0, 30080) == 30080
    assert ports.used == {30080}


def test_explicit_node_port_taken():
    ports = NodePorts(Draws(0))
    ports.allocate("a", 0, 30080)
    with pytest.raises(InvalidManifest) as err:
        ports.allocate("web", 1, 30080)
    assert str(err.value) == ('The Service "web" is invalid: spec.ports[1].nodePort: Invalid '
                              "value: 30080: provided port is already allocated")


def test_random_node_port_skips_taken_ones_then_runs_out():
    ports = NodePorts(Draws(0))
    for port in range(30000, 32768):
        if port != 31234:
            ports.allocate("taken", 0, port)
    assert ports.allocate("web", 0) == 31234
    with pytest.raises(InvalidManifest) as err:
        ports.allocate("web", 0)
    assert str(err.value) == 'The Service "web" is invalid: no node port left'


def test_release_node_ports():
    ports = NodePorts(Draws(0))
    ports.allocate("web", 0, 30080)
    ports.allocate("web", 1, 30081)
    ports.release([30080, 30081, 30999])
    assert ports.used == set()
    assert ports.allocate("again", 0, 30080) == 30080


# -- service_object -------------------------------------------------------------------------

ARTICLE_SPEC = ServiceSpec(type="ClusterIP",
                           ports=(ServicePort(port=80, target_port="http"),),
                           selector={"app": "service_test_pod"})


def article_service(**kw):
    args = {"name": "service-test", "namespace": "default", "labels": {}, "spec": ARTICLE_SPEC,
            "cluster_ip": "10.3.241.152", "node_ports": [0], "uid": "uid-svc",
            "created_at": "2024-01-01T00:00:00Z"}
    args.update(kw)
    return service_object(**args)


def test_service_object_of_the_article():
    assert article_service() == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "service-test", "namespace": "default", "uid": "uid-svc",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "clusterIP": "10.3.241.152",
            "clusterIPs": ["10.3.241.152"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"protocol": "TCP", "port": 80, "targetPort": "http"}],
            "selector": {"app": "service_test_pod"},
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }


def test_service_object_of_a_node_port_service():
    spec = ServiceSpec(type="NodePort",
                       ports=(ServicePort(port=80, target_port=8080, name="http"),
                              ServicePort(port=443, target_port=8443, name="https")),
                       selector={"app": "web"}, external_traffic_policy="Local")
    obj = service_object("web", "default", {"app": "web"}, spec, "10.3.240.20",
                         [30080, 30443], "uid", "now")
    assert obj["metadata"]["labels"] == {"app": "web"}
    assert obj["spec"]["type"] == "NodePort"
    assert obj["spec"]["externalTrafficPolicy"] == "Local"
    assert obj["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
        {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8443,
         "nodePort": 30443},
    ]
    assert list(obj["spec"]["ports"][0]) == ["name", "protocol", "port", "targetPort",
                                             "nodePort"]


def test_service_object_has_no_node_port_unless_set():
    obj = article_service()
    assert "nodePort" not in obj["spec"]["ports"][0]
    assert "externalTrafficPolicy" not in obj["spec"]
    assert "sessionAffinityConfig" not in obj["spec"]
    assert "labels" not in obj["metadata"]


def test_service_object_without_selector():
    spec = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, 80),), selector=None)
    assert "selector" not in article_service(spec=spec)["spec"]


def test_service_object_with_client_ip_affinity():
    spec = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, 80),), selector={"a": "b"},
                       session_affinity="ClientIP", affinity_timeout=60)
    body = article_service(spec=spec)["spec"]
    assert body["sessionAffinity"] == "ClientIP"
    assert body["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 60}}


def test_service_object_copies_labels_and_selector():
    labels = {"app": "web"}
    obj = article_service(labels=labels)
    obj["metadata"]["labels"]["app"] = "changed"
    obj["spec"]["selector"]["app"] = "changed"
    assert labels == {"app": "web"}
    assert ARTICLE_SPEC.selector == {"app": "service_test_pod"}


def test_service_object_needs_one_node_port_entry_per_port():
    with pytest.raises(ValueError):
        article_service(node_ports=[])


# -- pods, shaped like Cluster._pod_object ----------------------------------------------------

def pod(name, ip, node="node1", *, namespace="default", labels=None, ready=True,
        phase="Running", terminating=False, ports=None, containers=None):
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}",
            "creationTimestamp": "2024-01-01T00:00:00Z"}
    labels = {"app": "service_test_pod"} if labels is None else labels
    if labels:
        meta["labels"] = labels
    if terminating:
        meta["deletionTimestamp"] = "2024-01-01T00:05:00Z"
    if containers is None:
        ports = [{"name": "http", "containerPort": 8080}] if ports is None else ports
        containers = [{"name": "simple-http", "image": "python:2.7", "command": ["/bin/sh"],
                       "ports": ports}]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": containers, "nodeName": node, "restartPolicy": "Always"},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "hostIP": "10.100.0.2", "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": "2024-01-01T00:00:01Z", "containerStatuses": [],
            "kubenet": {"statusReason": phase, "age": 10, "netns": f"{namespace}.{name}",
                        "ready": ready},
        },
    }


def article_pods():
    return [pod("service-test-6ffd9ddbbf-qs2j6", "10.0.2.2", "node2"),
            pod("service-test-6ffd9ddbbf-kf4j2", "10.0.1.2", "node1")]


def slice_of(pods, service=None, name="service-test-abcde"):
    return endpoint_slice(service or article_service(), pods, name)


def addresses(slice_):
    return [a for ep in slice_["endpoints"] for a in ep["addresses"]]


# -- endpoint_slice -------------------------------------------------------------------------

def test_endpoint_slice_of_the_article():
    assert slice_of(article_pods()) == {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "service-test-abcde",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/managed-by":
                       "endpointslice-controller.k8s.io",
                       "kubernetes.io/service-name": "service-test"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                                 "name": "service-test", "uid": "uid-svc",
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.1.2"],
             "conditions": {"ready": True, "serving": True, "terminating": False},
             "nodeName": "node1",
             "targetRef": {"kind": "Pod", "name": "service-test-6ffd9ddbbf-kf4j2",
                           "namespace": "default", "uid": "uid-service-test-6ffd9ddbbf-kf4j2"}},
            {"addresses": ["10.0.2.2"],
             "conditions": {"ready": True, "serving": True, "terminating": False},
             "nodeName": "node2",
             "targetRef": {"kind": "Pod", "name": "service-test-6ffd9ddbbf-qs2j6",
                           "namespace": "default", "uid": "uid-service-test-6ffd9ddbbf-qs2j6"}},
        ],
        "ports": [{"name": "", "protocol": "TCP", "port": 8080}],
    }


def test_endpoints_are_sorted_by_ip_numerically():
    pods = [pod("a", "10.0.1.10"), pod("b", "10.0.1.9"), pod("c", "10.0.2.1"),
            pod("d", "10.0.1.100")]
    assert addresses(slice_of(pods)) == ["10.0.1.9", "10.0.1.10", "10.0.1.100", "10.0.2.1"]


def test_endpoint_slice_does_not_modify_its_inputs():
    svc, pods = article_service(), article_pods()
    before = copy.deepcopy((svc, pods))
    slice_of(pods, svc)
    assert (svc, pods) == before


def test_pods_of_other_namespaces_are_excluded():
    pods = [*article_pods(), pod("elsewhere", "10.0.1.3", namespace="kube-system")]
    assert addresses(slice_of(pods)) == ["10.0.1.2", "10.0.2.2"]


def test_slice_of_a_service_in_another_namespace():
    svc = article_service(namespace="team")
    pods = [*article_pods(), pod("mine", "10.0.1.3", namespace="team")]
    slice_ = slice_of(pods, svc)
    assert addresses(slice_) == ["10.0.1.3"]
    assert slice_["metadata"]["namespace"] == "team"
    assert slice_["endpoints"][0]["targetRef"]["namespace"] == "team"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_finished_pods_are_excluded(phase):
    pods = [*article_pods(), pod("done", "10.0.1.3", phase=phase, ready=False)]
    assert addresses(slice_of(pods)) == ["10.0.1.2", "10.0.2.2"]


@pytest.mark.parametrize("ip", [None, ""])
def test_pods_without_an_address_are_excluded(ip):
    pods = [*article_pods(), pod("pending", ip, phase="Pending", ready=False)]
    assert addresses(slice_of(pods)) == ["10.0.1.2", "10.0.2.2"]


@pytest.mark.parametrize("labels", [{}, {"app": "other"}, {"tier": "service_test_pod"},
                                    {"App": "service_test_pod"}])
def test_pods_whose_labels_do_not_match_are_excluded(labels):
    pods = [*article_pods(), pod("other", "10.0.1.3", labels=labels)]
    assert addresses(slice_of(pods)) == ["10.0.1.2", "10.0.2.2"]


def test_every_selector_label_must_match():
    spec = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, 8080),),
                       selector={"app": "web", "tier": "front"})
    svc = article_service(spec=spec)
    pods = [pod("both", "10.0.1.2", labels={"app": "web", "tier": "front", "x": "y"}),
            pod("one", "10.0.1.3", labels={"app": "web"})]
    assert addresses(slice_of(pods, svc)) == ["10.0.1.2"]


def test_a_not_ready_pod_is_listed_not_ready():
    pods = [*article_pods(), pod("starting", "10.0.1.3", ready=False)]
    slice_ = slice_of(pods)
    assert addresses(slice_) == ["10.0.1.2", "10.0.1.3", "10.0.2.2"]
    assert slice_["endpoints"][1]["conditions"] == {"ready": False, "serving": False,
                                                    "terminating": False}
    assert slice_["ports"] == [{"name": "", "protocol": "TCP", "port": 8080}]


def test_a_terminating_ready_pod_is_serving_but_not_ready():
    slice_ = slice_of([pod("leaving", "10.0.1.2", terminating=True)])
    assert slice_["endpoints"][0]["conditions"] == {"ready": False, "serving": True,
                                                    "terminating": True}


def test_a_terminating_not_ready_pod():
    slice_ = slice_of([pod("leaving", "10.0.1.2", terminating=True, ready=False)])
    assert slice_["endpoints"][0]["conditions"] == {"ready": False, "serving": False,
                                                    "terminating": True}


def test_named_target_port_is_resolved_from_any_container():
    containers = [{"name": "sidecar", "image": "x", "ports": None},
                  {"name": "web", "image": "x",
                   "ports": [{"name": "metrics", "containerPort": 9100},
                             {"name": "http", "containerPort": 9090}]}]
    slice_ = slice_of([pod("a", "10.0.1.2", containers=containers)])
    assert slice_["ports"] == [{"name": "", "protocol": "TCP", "port": 9090}]


def test_named_target_port_must_match_the_protocol():
    spec = ServiceSpec(type="ClusterIP",
                       ports=(ServicePort(53, "dns", name="dns", protocol="UDP"),),
                       selector={"app": "service_test_pod"})
    svc = article_service(spec=spec)
    tcp_only = pod("tcp", "10.0.1.2", ports=[{"name": "dns", "containerPort": 53}])
    udp = pod("udp", "10.0.1.3", ports=[{"name": "dns", "containerPort": 5353,
                                         "protocol": "UDP"}])
    slice_ = slice_of([tcp_only, udp], svc)
    assert addresses(slice_) == ["10.0.1.3"]
    assert slice_["ports"] == [{"name": "dns", "protocol": "UDP", "port": 5353}]


def test_a_pod_that_cannot_resolve_the_named_port_is_left_out():
    pods = [*article_pods(), pod("no-http", "10.0.1.3", ports=[{"containerPort": 8080}])]
    assert addresses(slice_of(pods)) == ["10.0.1.2", "10.0.2.2"]


def test_no_pod_resolves_the_named_port_leaves_the_port_unset():
    slice_ = slice_of([pod("a", "10.0.1.2", ports=[])])
    assert slice_["endpoints"] == []
    assert slice_["ports"] == [{"name": "", "protocol": "TCP"}]


def test_slice_without_pods():
    slice_ = slice_of([])
    assert slice_["endpoints"] == []
    assert slice_["ports"] == [{"name": "", "protocol": "TCP"}]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == "service-test"


def test_numeric_target_port_needs_no_container_port():
    spec = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, 8080),),
                       selector={"app": "service_test_pod"})
    slice_ = slice_of([pod("a", "10.0.1.2", ports=[])], article_service(spec=spec))
    assert addresses(slice_) == ["10.0.1.2"]
    assert slice_["ports"] == [{"name": "", "protocol": "TCP", "port": 8080}]


def test_multi_port_slice():
    spec = ServiceSpec(type="ClusterIP",
                       ports=(ServicePort(80, "http", name="http"),
                              ServicePort(9100, 9100, name="metrics")),
                       selector={"app": "service_test_pod"})
    slice_ = slice_of(article_pods(), article_service(spec=spec, node_ports=[0, 0]))
    assert slice_["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080},
                               {"name": "metrics", "protocol": "TCP", "port": 9100}]


# The EndpointSlice controller groups endpoints by their resolved ports (one slice per port
# mapping). One slice carries one number per port, so a pod whose named port resolves to
# another number must not be listed under the first pod's number.
def test_pods_resolving_a_named_port_differently_are_not_given_the_wrong_port():
    pods = [pod("a", "10.0.1.2", ports=[{"name": "http", "containerPort": 8080}]),
            pod("b", "10.0.1.3", ports=[{"name": "http", "containerPort": 9090}])]
    assert "10.0.1.3:8080" not in endpoints_of(slice_of(pods))


# -- endpoints_of ---------------------------------------------------------------------------

@pytest.mark.parametrize("slice_", [None, {}])
def test_endpoints_of_nothing(slice_):
    assert endpoints_of(slice_) == []


def test_endpoints_of_lists_ready_endpoints_sorted_by_ip():
    pods = [pod("a", "10.0.2.2"), pod("b", "10.0.1.10"), pod("c", "10.0.1.9", ready=False),
            pod("d", "10.0.1.2", terminating=True)]
    slice_ = slice_of(pods)
    assert endpoints_of(slice_) == ["10.0.1.10:8080", "10.0.2.2:8080"]
    assert endpoints_of(slice_, ready_only=False) == [
        "10.0.1.2:8080", "10.0.1.9:8080", "10.0.1.10:8080", "10.0.2.2:8080"]


def test_endpoints_of_every_port():
    spec = ServiceSpec(type="ClusterIP",
                       ports=(ServicePort(80, 8080, name="http"),
                              ServicePort(443, 8443, name="https")),
                       selector={"app": "service_test_pod"})
    slice_ = slice_of(article_pods(), article_service(spec=spec, node_ports=[0, 0]))
    assert endpoints_of(slice_) == ["10.0.1.2:8080", "10.0.1.2:8443", "10.0.2.2:8080",
                                    "10.0.2.2:8443"]


def test_endpoints_of_skips_unset_ports_and_duplicates():
    slice_ = {"endpoints": [{"addresses": ["10.0.1.2", "10.0.1.2"],
                             "conditions": {"ready": True}}],
              "ports": [{"name": "a", "protocol": "TCP", "port": 80},
                        {"name": "b", "protocol": "TCP"}]}
    assert endpoints_of(slice_) == ["10.0.1.2:80"]


def test_endpoints_of_a_slice_without_pods():
    assert endpoints_of(slice_of([])) == []


# -- ports_column ---------------------------------------------------------------------------

@pytest.mark.parametrize("ports, expected", [
    ([{"protocol": "TCP", "port": 80, "targetPort": "http"}], "80/TCP"),
    ([{"protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}], "80:30080/TCP"),
    ([{"name": "dns", "protocol": "UDP", "port": 53, "targetPort": 53},
      {"name": "dns-tcp", "protocol": "TCP", "port": 53, "targetPort": 53}],
     "53/UDP,53/TCP"),
    ([{"name": "a", "protocol": "TCP", "port": 80, "targetPort": 80, "nodePort": 30080},
      {"name": "b", "protocol": "SCTP", "port": 443, "targetPort": 443, "nodePort": 30443}],
     "80:30080/TCP,443:30443/SCTP"),
])
def test_ports_column(ports, expected):
    assert ports_column({"spec": {"ports": ports}}) == expected


def test_ports_column_of_service_objects():
    assert ports_column(article_service()) == "80/TCP"
    spec = ServiceSpec(type="NodePort", ports=(ServicePort(80, 8080),), selector={},
                       external_traffic_policy="Cluster")
    assert ports_column(article_service(spec=spec, node_ports=[30080])) == "80:30080/TCP"


# -- describe_service -----------------------------------------------------------------------

ARTICLE_DESCRIBE = """\
Name:                    service-test
Namespace:               default
Labels:                  <none>
Annotations:             <none>
Selector:                app=service_test_pod
Type:                    ClusterIP
IP Family Policy:        SingleStack
IP Families:             IPv4
IP:                      10.3.241.152
IPs:                     10.3.241.152
Port:                    <unset>  80/TCP
TargetPort:              http/TCP
Endpoints:               10.0.1.2:8080,10.0.2.2:8080
Session Affinity:        None
Internal Traffic Policy: Cluster
Events:                  <none>"""


def test_describe_the_article_service():
    assert describe_service(article_service(), slice_of(article_pods())) == ARTICLE_DESCRIBE


def test_describe_lists_only_ready_endpoints_sorted_by_ip():
    pods = [pod("c", "10.0.2.2"), pod("a", "10.0.1.10"), pod("b", "10.0.1.9"),
            pod("x", "10.0.1.3", ready=False), pod("y", "10.0.1.4", terminating=True)]
    out = describe_service(article_service(), slice_of(pods))
    assert "Endpoints:               10.0.1.9:8080,10.0.1.10:8080,10.0.2.2:8080\n" in out


@pytest.mark.parametrize("pods", [None, [], [pod("x", "10.0.1.3", ready=False)]])
def test_describe_without_ready_endpoints(pods):
    slice_ = None if pods is None else slice_of(pods)
    out = describe_service(article_service(), slice_)
    assert out == ARTICLE_DESCRIBE.replace("10.0.1.2:8080,10.0.2.2:8080", "<none>")


def test_describe_a_node_port_service_with_two_ports():
    spec = ServiceSpec(type="NodePort",
                       ports=(ServicePort(80, "http", name="http"),
                              ServicePort(9100, 9100, name="metrics")),
                       selector={"app": "service_test_pod", "tier": "web"},
                       session_affinity="ClientIP", external_traffic_policy="Local")
    svc = service_object("web", "team", {"app": "web", "a": "b"}, spec, "10.3.240.20",
                         [30080, 30910], "uid", "now")
    pods = [pod("p1", "10.0.2.2", namespace="team",
                labels={"app": "service_test_pod", "tier": "web"}),
            pod("p2", "10.0.1.2", namespace="team",
                labels={"app": "service_test_pod", "tier": "web"})]
    assert describe_service(svc, slice_of(pods, svc)) == """\
Name:                    web
Namespace:               team
Labels:                  a=b,app=web
Annotations:             <none>
Selector:                app=service_test_pod,tier=web
Type:                    NodePort
IP Family Policy:        SingleStack
IP Families:             IPv4
IP:                      10.3.240.20
IPs:                     10.3.240.20
Port:                    http  80/TCP
TargetPort:              http/TCP
NodePort:                http  30080/TCP
Endpoints:               10.0.1.2:8080,10.0.2.2:8080
Port:                    metrics  9100/TCP
TargetPort:              9100/TCP
NodePort:                metrics  30910/TCP
Endpoints:               10.0.1.2:9100,10.0.2.2:9100
Session Affinity:        ClientIP
External Traffic Policy: Local
Internal Traffic Policy: Cluster
Events:                  <none>"""


def test_describe_a_service_without_selector():
    spec = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, 80),), selector=None)
    out = describe_service(article_service(spec=spec), None)
    assert "\nSelector:                <none>\n" in out
    assert "\nEndpoints:               <none>\n" in out


def test_describe_lines_are_aligned_and_not_padded():
    out = describe_service(article_service(), slice_of(article_pods()))
    columns = set()
    for line in out.splitlines():
        key, _, value = line.partition(":")
        columns.add(len(key) + 1 + len(value) - len(value.lstrip()))
    assert len(columns) == 1
    assert all(line == line.rstrip() for line in out.splitlines())


def test_service_env_is_kubernetes_service_links():
    from kubenet.services import service_env

    svc = {"metadata": {"name": "service-test", "namespace": "default"},
           "spec": {"clusterIP": "10.3.241.152",
                    "ports": [{"port": 80, "protocol": "TCP"},
                              {"name": "dns-tcp", "port": 53, "protocol": "UDP"}]}}
    other = {"metadata": {"name": "kube-dns", "namespace": "kube-system"},
             "spec": {"clusterIP": "10.3.240.10", "ports": [{"port": 53, "protocol": "UDP"}]}}
    env = service_env([svc, other], "default")
    assert env["SERVICE_TEST_SERVICE_HOST"] == "10.3.241.152"
    assert env["SERVICE_TEST_SERVICE_PORT"] == "80"
    assert env["SERVICE_TEST_SERVICE_PORT_DNS_TCP"] == "53"
    assert env["SERVICE_TEST_PORT"] == "tcp://10.3.241.152:80"
    assert env["SERVICE_TEST_PORT_53_UDP_ADDR"] == "10.3.241.152"
    assert not any(k.startswith("KUBE_DNS") for k in env)
