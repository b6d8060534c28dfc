"""kubenet.printers for Services: ``get services|endpointslices|endpoints`` over a snapshot."""

import json

import pytest
import yaml

from kubenet.errors import BadRequest, NotFound
from kubenet.manifests import ServicePort, ServiceSpec
from kubenet.printers import RESOURCES, Table, render
from kubenet.services import endpoint_slice, service_object

# -- a hand-made snapshot, shaped like Cluster.snapshot() ------------------------------------


def pod(name, ip, node="node1", *, namespace="default", labels=None, ready=True):
    labels = {"app": "service_test_pod"} if labels is None else labels
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "creationTimestamp": "2024-01-01T00:00:00Z", "labels": labels},
        "spec": {"containers": [{"name": "simple-http", "image": "python:2.7",
                                 "command": ["/bin/sh"],
                                 "ports": [{"name": "http", "containerPort": 8080}]}],
                 "nodeName": node, "restartPolicy": "Always"},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "hostIP": "10.100.0.2", "podIP": ip, "podIPs": [{"ip": ip}],
                   "containerStatuses": [],
                   "kubenet": {"statusReason": "Running", "age": 60, "netns": name,
                               "ready": ready}},
    }


def service(name, spec, cluster_ip, *, namespace="default", node_ports=None, age=0,
            labels=None):
    obj = service_object(name, namespace, labels or {}, spec, cluster_ip,
                         node_ports or [0] * len(spec.ports), f"uid-{name}",
                         "2024-01-01T00:00:00Z")
    obj["status"]["kubenet"] = {"age": age}
    return obj


def slice_for(svc, pods, name, age=0):
    s = endpoint_slice(svc, pods, name)
    s["kubenet_age"] = age
    return s


ARTICLE = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, "http"),),
                      selector={"app": "service_test_pod"})
NODE_PORT = ServiceSpec(type="NodePort", ports=(ServicePort(80, 8080, name="http"),),
                        selector={"app": "web", "tier": "front"},
                        external_traffic_policy="Cluster")
DNS = ServiceSpec(type="ClusterIP",
                  ports=(ServicePort(53, 53, name="dns", protocol="UDP"),
                         ServicePort(53, 53, name="dns-tcp")),
                  selector={"k8s-app": "kube-dns"})
MANUAL = ServiceSpec(type="ClusterIP", ports=(ServicePort(80, 80),), selector=None)


def snapshot(pods=None):
    pods = pods if pods is not None else [
        pod("service-test-6ffd9ddbbf-qs2j6", "10.0.2.2", "node2"),
        pod("service-test-6ffd9ddbbf-kf4j2", "10.0.1.2"),
        pod("service-test-6ffd9ddbbf-zzzzz", "10.0.1.3", ready=False),
        pod("coredns-abcde", "10.0.2.3", "node2", namespace="kube-system",
            labels={"k8s-app": "kube-dns"}),
    ]
    svcs = [
        service("kube-dns", DNS, "10.3.240.10", namespace="kube-system", age=3 * 3600),
        service("manual", MANUAL, "10.3.240.30", age=5),
        service("service-test", ARTICLE, "10.3.241.152", age=123),
        service("web", NODE_PORT, "10.3.240.20", node_ports=[30080], age=17 * 60),
    ]
    slices = [slice_for(svcs[0], pods, "kube-dns-7b4xp", 3 * 3600),
              slice_for(svcs[2], pods, "service-test-h2k9x", 123),
              slice_for(svcs[3], pods, "web-q5rnb", 17 * 60)]
    return {"pods": pods, "deployments": [], "nodes": [], "services": svcs,
            "endpointslices": slices}


# -- get services ---------------------------------------------------------------------------

@pytest.mark.parametrize("resource", ["services", "service", "svc"])
def test_get_services(resource):
    out = render(snapshot(), resource)
    assert isinstance(out, Table)
    assert str(out) == (
        "NAME           TYPE        CLUSTER-IP     EXTERNAL-IP   PORT(S)        AGE\n"
        "manual         ClusterIP   10.3.240.30    <none>        80/TCP         5s\n"
        "service-test   ClusterIP   10.3.241.152   <none>        80/TCP         2m3s\n"
        "web            NodePort    10.3.240.20    <none>        80:30080/TCP   17m"
    )


def test_get_services_wide_adds_the_selector():
    out = render(snapshot(), "svc", output="wide")
    assert out.headers == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE",
                           "SELECTOR"]
    assert out.column("SELECTOR") == ["<none>", "app=service_test_pod", "app=web,tier=front"]
    assert str(out).splitlines()[2] == (
        "service-test   ClusterIP   10.3.241.152   <none>        80/TCP         2m3s   "
        "app=service_test_pod")


def test_get_services_in_another_namespace():
    out = render(snapshot(), "svc", namespace="kube-system")
    assert str(out) == (
        "NAME       TYPE        CLUSTER-IP    EXTERNAL-IP   PORT(S)         AGE\n"
        "kube-dns   ClusterIP   10.3.240.10   <none>        53/UDP,53/TCP   3h")


def test_get_services_all_namespaces():
    out = render(snapshot(), "svc", all_namespaces=True)
    assert out.headers[0] == "NAMESPACE"
    assert [(r[0], r[1]) for r in out.rows] == [
        ("kube-system", "kube-dns"), ("default", "manual"), ("default", "service-test"),
        ("default", "web")]


def test_get_services_all_namespaces_wide():
    out = render(snapshot(), "svc", output="wide", all_namespaces=True)
    assert out.headers == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                           "PORT(S)", "AGE", "SELECTOR"]
    assert out.rows[0][-1] == "k8s-app=kube-dns"


def test_external_ips_are_shown():
    snap = snapshot()
    snap["services"][2]["spec"]["externalIPs"] = ["192.0.2.1", "192.0.2.2"]
    assert render(snap, "svc").column("EXTERNAL-IP")[1] == "192.0.2.1,192.0.2.2"


def test_get_one_service():
    out = render(snapshot(), "svc", name="service-test")
    assert out.column("NAME") == ["service-test"]


def test_get_services_by_name():
    assert render(snapshot(), "svc", output="name") == (
        "service/manual\nservice/service-test\nservice/web")


def test_get_service_json_drops_kubenet_bookkeeping():
    snap = snapshot()
    doc = json.loads(render(snap, "svc", output="json", name="service-test"))
    assert doc["kind"] == "Service"
    assert doc["spec"]["clusterIP"] == "10.3.241.152"
    assert doc["status"] == {"loadBalancer": {}}
    assert "kubenet" in snap["services"][2]["status"]  # the snapshot is left alone


def test_get_services_yaml_is_a_list():
    doc = yaml.safe_load(render(snapshot(), "svc", output="yaml"))
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "List")
    assert [i["metadata"]["name"] for i in doc["items"]] == ["manual", "service-test", "web"]
    assert all("kubenet" not in i["status"] for i in doc["items"])


def test_service_not_found():
    with pytest.raises(NotFound) as err:
        render(snapshot(), "svc", name="nope")
    assert str(err.value) == 'Error from server (NotFound): services "nope" not found'


def test_service_of_another_namespace_is_not_found():
    with pytest.raises(NotFound):
        render(snapshot(), "svc", name="kube-dns")


def test_no_services():
    snap = snapshot()
    snap["services"] = []
    assert str(render(snap, "svc")) == "No resources found in default namespace."


# kubectl names the namespace it looked in, and says just "No resources found" for -A.
@pytest.mark.parametrize("resource", ["svc", "endpointslices", "endpoints"])
@pytest.mark.parametrize("kwargs, expected", [
    ({"namespace": "team"}, "No resources found in team namespace."),
    ({"all_namespaces": True}, "No resources found"),
])
def test_nothing_found_names_the_namespace_like_kubectl(resource, kwargs, expected):
    snap = {"pods": [], "deployments": [], "nodes": [], "services": [], "endpointslices": []}
    assert str(render(snap, resource, **kwargs)) == expected


def test_bad_output_format():
    with pytest.raises(BadRequest) as err:
        render(snapshot(), "svc", output="table")
    assert str(err.value) == ('error: unable to match a printer suitable for the output format '
                              '"table", allowed formats are: json,name,wide,yaml')


@pytest.mark.parametrize("alias, kind", [
    ("services", "services"), ("service", "services"), ("svc", "services"),
    ("endpointslices", "endpointslices"), ("endpointslice", "endpointslices"),
    ("endpointslices.discovery.k8s.io", "endpointslices"),
    ("endpoints", "endpoints"), ("endpoint", "endpoints"), ("ep", "endpoints"),
])
def test_service_resource_aliases(alias, kind):
    assert RESOURCES[alias] == kind


# -- get endpointslices ---------------------------------------------------------------------

def test_get_endpointslices():
    out = render(snapshot(), "endpointslices")
    assert str(out) == (
        "NAME                 ADDRESSTYPE   PORTS     ENDPOINTS                    AGE\n"
        "service-test-h2k9x   IPv4          8080      10.0.1.2,10.0.1.3,10.0.2.2   2m3s\n"
        "web-q5rnb            IPv4          <unset>   <none>                       17m")
    assert out.headers == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    assert out.rows == [
        ["service-test-h2k9x", "IPv4", "8080", "10.0.1.2,10.0.1.3,10.0.2.2", "2m3s"],
        ["web-q5rnb", "IPv4", "<unset>", "<none>", "17m"],
    ]


def test_endpointslices_list_not_ready_addresses_too():
    out = render(snapshot(), "endpointslice", name="service-test-h2k9x")
    assert "10.0.1.3" in out.column("ENDPOINTS")[0]  # the pod that is not ready


def test_endpointslices_show_three_addresses_then_more():
    pods = [pod(f"p{i}", f"10.0.1.{i}") for i in range(2, 7)]
    out = render(snapshot(pods), "endpointslices", name="service-test-h2k9x")
    assert out.column("ENDPOINTS") == ["10.0.1.2,10.0.1.3,10.0.1.4 + 2 more..."]


def test_endpointslices_of_a_multi_port_service():
    out = render(snapshot(), "endpointslices", namespace="kube-system")
    assert out.rows == [["kube-dns-7b4xp", "IPv4", "53,53", "10.0.2.3", "3h"]]


def test_endpointslices_all_namespaces():
    out = render(snapshot(), "endpointslices", all_namespaces=True)
    assert out.headers[0] == "NAMESPACE"
    assert out.column("NAMESPACE") == ["kube-system", "default", "default"]


def test_get_endpointslices_by_name():
    assert render(snapshot(), "endpointslices", output="name") == (
        "endpointslice.discovery.k8s.io/service-test-h2k9x\n"
        "endpointslice.discovery.k8s.io/web-q5rnb")


def test_get_endpointslice_yaml_drops_kubenet_age():
    doc = yaml.safe_load(render(snapshot(), "endpointslices", output="yaml",
                                name="service-test-h2k9x"))
    assert (doc["apiVersion"], doc["kind"]) == ("discovery.k8s.io/v1", "EndpointSlice")
    assert "kubenet_age" not in doc
    assert doc["metadata"]["labels"]["kubernetes.io/service-name"] == "service-test"


def test_endpointslice_not_found():
    with pytest.raises(NotFound) as err:
        render(snapshot(), "endpointslices", name="service-test")
    assert str(err.value) == ('Error from server (NotFound): '
                              'endpointslices.discovery.k8s.io "service-test" not found')


# -- get endpoints (derived from the slices) ------------------------------------------------

@pytest.mark.parametrize("resource", ["endpoints", "ep"])
def test_get_endpoints(resource):
    out = render(snapshot(), resource)
    assert str(out) == (
        "NAME           ENDPOINTS                     AGE\n"
        "service-test   10.0.1.2:8080,10.0.2.2:8080   2m3s\n"
        "web            <none>                        17m")


def test_endpoints_show_three_then_more():
    pods = [pod(f"p{i}", f"10.0.1.{i}") for i in range(10, 2, -1)]
    out = render(snapshot(pods), "endpoints", name="service-test")
    assert out.column("ENDPOINTS") == ["10.0.1.3:8080,10.0.1.4:8080,10.0.1.5:8080 + 5 more..."]


def test_endpoints_of_a_multi_port_service():
    out = render(snapshot(), "endpoints", namespace="kube-system")
    assert out.rows == [["kube-dns", "10.0.2.3:53", "3h"]]  # one entry per (ip, port)


def test_endpoints_all_namespaces():
    out = render(snapshot(), "endpoints", all_namespaces=True)
    assert out.headers == ["NAMESPACE", "NAME", "ENDPOINTS", "AGE"]
    assert out.column("NAME") == ["kube-dns", "service-test", "web"]


def test_get_endpoints_by_name():
    assert render(snapshot(), "endpoints", output="name") == (
        "endpoints/service-test\nendpoints/web")


def test_get_endpoints_json():
    doc = json.loads(render(snapshot(), "endpoints", output="json", name="service-test"))
    assert doc == {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "service-test", "namespace": "default"},
        "subsets": [{
            "addresses": [
                {"ip": "10.0.1.2", "nodeName": "node1",
                 "targetRef": {"kind": "Pod", "name": "service-test-6ffd9ddbbf-kf4j2",
                               "namespace": "default",
                               "uid": "uid-service-test-6ffd9ddbbf-kf4j2"}},
                {"ip": "10.0.2.2", "nodeName": "node2",
                 "targetRef": {"kind": "Pod", "name": "service-test-6ffd9ddbbf-qs2j6",
                               "namespace": "default",
                               "uid": "uid-service-test-6ffd9ddbbf-qs2j6"}},
            ],
            "notReadyAddresses": [
                {"ip": "10.0.1.3", "nodeName": "node1",
                 "targetRef": {"kind": "Pod", "name": "service-test-6ffd9ddbbf-zzzzz",
                               "namespace": "default",
                               "uid": "uid-service-test-6ffd9ddbbf-zzzzz"}},
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],  # the empty name is dropped
        }],
    }


def test_endpoints_without_endpoints_have_no_subsets():
    doc = yaml.safe_load(render(snapshot(), "endpoints", output="yaml", name="web"))
    assert doc["subsets"] == []
    assert "kubenet_slice" not in doc


def test_endpoints_of_named_ports_keep_their_names():
    doc = json.loads(render(snapshot(), "endpoints", output="json", name="kube-dns",
                            namespace="kube-system"))
    assert doc["subsets"][0]["ports"] == [{"name": "dns", "protocol": "UDP", "port": 53},
                                          {"name": "dns-tcp", "protocol": "TCP", "port": 53}]


def test_endpoints_list_as_yaml():
    doc = yaml.safe_load(render(snapshot(), "endpoints", output="yaml"))
    assert doc["kind"] == "List"
    assert [i["kind"] for i in doc["items"]] == ["Endpoints", "Endpoints"]
    assert all("kubenet_slice" not in i for i in doc["items"])


def test_endpoints_not_found():
    with pytest.raises(NotFound) as err:
        render(snapshot(), "endpoints", name="manual")  # no selector: no slice, no Endpoints
    assert str(err.value) == 'Error from server (NotFound): endpoints "manual" not found'
