"""kubenet.printers: kubectl's AGE, tables and ``get -o ...`` over a hand-made snapshot."""

import copy
import json

import pytest
import yaml

from kubenet.errors import BadRequest, NotFound
from kubenet.printers import (
    RESOURCES,
    Table,
    deployments_table,
    human_duration,
    nodes_table,
    pods_table,
    render,
)

# -- human_duration ------------------------------------------------------------------------


@pytest.mark.parametrize("seconds, expected", [
    (0, "0s"),
    (0.9, "0s"),
    (15, "15s"),
    (59, "59s"),
    (60, "60s"),
    (119, "119s"),
    (119.99, "119s"),
    (120, "2m"),
    (123, "2m3s"),
    (599, "9m59s"),
    (600, "10m"),
    (17 * 60 + 59, "17m"),
    (179 * 60 + 59, "179m"),
    (3 * 3600, "3h"),
    (3 * 3600 + 5 * 60, "3h5m"),
    (3 * 3600 + 5 * 60 + 59, "3h5m"),
    (7 * 3600 + 59 * 60, "7h59m"),
    (8 * 3600, "8h"),
    (8 * 3600 + 30 * 60, "8h"),
    (20 * 3600, "20h"),
    (47 * 3600 + 3599, "47h"),
    (48 * 3600, "2d"),
    (3 * 86400, "3d"),
    (7 * 86400, "7d"),
    (8 * 86400 + 5 * 3600, "8d"),
    (30 * 86400, "30d"),
    (2 * 365 * 86400 - 1, "729d"),
])
def test_human_duration_like_kubectl(seconds, expected):
    assert human_duration(seconds) == expected


@pytest.mark.parametrize("seconds", [-2, -60, -86400])
def test_human_duration_negative_is_invalid(seconds):
    assert human_duration(seconds) == "<invalid>"


# kubectl's HumanDuration (k8s.io/apimachinery/pkg/util/duration) prints days and hours
# below 8 days, years after 2 years, and tolerates a clock skew of one second.
@pytest.mark.parametrize("seconds, expected", [
    (2 * 86400 + 5 * 3600, "2d5h"),
    (7 * 86400 + 23 * 3600, "7d23h"),
    (2 * 365 * 86400, "2y"),
    (3 * 365 * 86400 + 10 * 86400, "3y10d"),
    (-1, "0s"),
])
def test_human_duration_matches_kubectl_beyond_two_days(seconds, expected):
    assert human_duration(seconds) == expected


# -- Table ----------------------------------------------------------------------------------

def test_table_columns_are_three_spaces_apart_and_lines_not_padded():
    t = Table(["NAME", "READY", "STATUS"], [["web-1", "1/1", "Running"],
                                            ["a-much-longer-name", "0/1", "Pending"]])
    assert str(t) == (
        "NAME                 READY   STATUS\n"
        "web-1                1/1     Running\n"
        "a-much-longer-name   0/1     Pending"
    )
    assert repr(t) == str(t)
    for line in str(t).splitlines():
        assert line == line.rstrip()


def test_table_header_wider_than_values():
    t = Table(["NOMINATED NODE", "X"], [["<none>", "1"]])
    assert str(t) == "NOMINATED NODE   X\n<none>           1"


def test_table_trailing_empty_cell_is_stripped():
    t = Table(["A", "B"], [["x", ""]])
    assert str(t).splitlines() == ["A   B", "x"]


def test_table_stringifies_cells():
    t = Table(["N", "COUNT"], [["a", 10], ["bb", 7]])
    assert str(t) == "N    COUNT\na    10\nbb   7"


def test_empty_table_prints_its_empty_message():
    t = Table(["NAME"], [], "No resources found in default namespace.")
    assert str(t) == "No resources found in default namespace."
    assert Table(["NAME"], []).__str__() == ""
    assert t._repr_html_() == "<pre>No resources found in default namespace.</pre>"


@pytest.mark.parametrize("row", [["only-one"], ["a", "b", "c"]])
def test_table_row_of_the_wrong_width_is_an_error(row):
    with pytest.raises((IndexError, ValueError)):
        str(Table(["A", "B"], [row]))


def test_table_column():
    t = Table(["NAME", "IP"], [["a", "10.0.1.2"], ["b", "10.0.2.2"]])
    assert t.column("IP") == ["10.0.1.2", "10.0.2.2"]
    assert t.column("NAME") == ["a", "b"]
    with pytest.raises(ValueError):
        t.column("NODE")


def test_table_html_is_escaped():
    t = Table(["NAME", "NODE"], [["<web>", "a&b"]])
    assert t._repr_html_() == ("<table><thead><tr><th>NAME</th><th>NODE</th></tr></thead>"
                               "<tbody><tr><td>&lt;web&gt;</td><td>a&amp;b</td></tr></tbody>"
                               "</table>")


# -- a hand-made snapshot, shaped like Cluster.snapshot() ------------------------------------

def pod(name, ip, node, host_ip, age, namespace="default", reason="Running", ready=True,
        restarts=0, phase="Running", labels=None):
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}",
            "creationTimestamp": "2024-01-01T00:00:00Z"}
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "simple-http", "image": "python:2.7",
                                 "command": ["/bin/sh"]}],
                 "nodeName": node, "restartPolicy": "Always"},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "hostIP": host_ip, "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": "2024-01-01T00:00:01Z",
            "containerStatuses": [{"name": "simple-http", "image": "python:2.7",
                                   "ready": ready, "restartCount": restarts,
                                   "started": ready, "state": {"running": {}}}],
            "kubenet": {"statusReason": reason, "age": age, "netns": f"{namespace}.{name}"},
        },
    }


def deployment(name, replicas, ready, age, namespace="default"):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"replicas": replicas,
                 "selector": {"matchLabels": {"app": "service_test_pod"}},
                 "template": {"metadata": {"labels": {"app": "service_test_pod"}},
                              "spec": {"containers": [{"name": "simple-http",
                                                       "image": "python:2.7",
                                                       "command": ["/bin/sh"]}]}}},
        "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
                   "availableReplicas": ready,
                   "kubenet": {"age": age, "replicaSet": f"{name}-6ffd9ddbbf"}},
    }


def node(name, ip, cidr, age):
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                     {"type": "Hostname", "address": name}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "kubenet": {"age": age}}}


def snapshot():
    return {
        "pods": [
            pod("service-test-6ffd9ddbbf-kf4j2", "10.0.1.2", "node1", "10.100.0.2", 123,
                labels={"app": "service_test_pod", "pod-template-hash": "6ffd9ddbbf"}),
            pod("service-test-client1", "10.0.2.2", "node2", "10.100.0.3", 15,
                reason="Completed", ready=False, restarts=2, phase="Succeeded"),
            pod("coredns-abcde", "10.0.2.3", "node2", "10.100.0.3", 3 * 3600 + 5 * 60,
                namespace="kube-system"),
        ],
        "deployments": [deployment("service-test", 2, 1, 17 * 60),
                        deployment("coredns", 1, 1, 20 * 3600, namespace="kube-system")],
        "nodes": [node("node1", "10.100.0.2", "10.0.1.0/24", 3 * 86400),
                  node("node2", "10.100.0.3", "10.0.2.0/24", 3 * 86400)],
    }


# -- render: pods -------------------------------------------------------------------------------

def test_get_pods():
    out = render(snapshot(), "pods")
    assert isinstance(out, Table)
    assert str(out) == (
        "NAME                            READY   STATUS      RESTARTS   AGE\n"
        "service-test-6ffd9ddbbf-kf4j2   1/1     Running     0          2m3s\n"
        "service-test-client1            0/1     Completed   2          15s"
    )


@pytest.mark.parametrize("alias", ["pods", "pod", "po"])
def test_pod_aliases(alias):
    assert str(render(snapshot(), alias)) == str(render(snapshot(), "pods"))


def test_get_pods_wide():
    out = render(snapshot(), "pods", output="wide")
    assert str(out) == (
        "NAME                            READY   STATUS      RESTARTS   AGE    IP         NODE"
        "    NOMINATED NODE   READINESS GATES\n"
        "service-test-6ffd9ddbbf-kf4j2   1/1     Running     0          2m3s   10.0.1.2   node1"
        "   <none>           <none>\n"
        "service-test-client1            0/1     Completed   2          15s    10.0.2.2   node2"
        "   <none>           <none>"
    )
    assert out.column("IP") == ["10.0.1.2", "10.0.2.2"]


def test_get_pods_wide_without_ip_or_node():
    snap = snapshot()
    snap["pods"][0]["status"]["podIP"] = ""
    del snap["pods"][0]["spec"]["nodeName"]
    out = render(snap, "pods", output="wide")
    assert out.column("IP")[0] == "<none>"
    assert out.column("NODE")[0] == "<none>"


def test_status_falls_back_to_the_phase():
    snap = snapshot()
    del snap["pods"][0]["status"]["kubenet"]
    out = render(snap, "pods")
    assert out.column("STATUS")[0] == "Running"
    assert out.column("AGE")[0] == "0s"


def test_get_pods_in_another_namespace():
    out = render(snapshot(), "pods", namespace="kube-system")
    assert str(out) == ("NAME            READY   STATUS    RESTARTS   AGE\n"
                        "coredns-abcde   1/1     Running   0          3h5m")


def test_get_pods_all_namespaces():
    out = render(snapshot(), "pods", all_namespaces=True)
    assert out.headers[0] == "NAMESPACE"
    assert out.column("NAMESPACE") == ["default", "default", "kube-system"]
    assert str(out).splitlines()[0] == ("NAMESPACE     NAME                            READY   "
                                        "STATUS      RESTARTS   AGE")


def test_get_pods_empty_namespace():
    out = render(snapshot(), "pods", namespace="nowhere")
    assert str(out) == "No resources found in nowhere namespace."
    snap = snapshot()
    snap["pods"] = []
    assert str(render(snap, "pods", all_namespaces=True)) == "No resources found in any namespace."


def test_get_one_pod_by_name():
    out = render(snapshot(), "pods", name="service-test-client1")
    assert out.column("NAME") == ["service-test-client1"]


def test_get_unknown_pod_is_not_found():
    with pytest.raises(NotFound) as info:
        render(snapshot(), "pods", name="nope")
    assert str(info.value) == 'Error from server (NotFound): pods "nope" not found'


def test_pod_in_another_namespace_is_not_found_by_name():
    with pytest.raises(NotFound):
        render(snapshot(), "pod", name="coredns-abcde")
    out = render(snapshot(), "pod", name="coredns-abcde", namespace="kube-system")
    assert out.column("NAME") == ["coredns-abcde"]


def test_get_pod_json_is_the_object_without_kubenet_bookkeeping():
    snap = snapshot()
    original = copy.deepcopy(snap)
    out = render(snap, "pods", output="json", name="service-test-6ffd9ddbbf-kf4j2")
    assert isinstance(out, str)
    assert out.startswith('{\n    "apiVersion": "v1",\n')  # kubectl indents JSON by 4
    doc = json.loads(out)
    expected = copy.deepcopy(original["pods"][0])
    del expected["status"]["kubenet"]
    assert doc == expected
    assert snap == original  # the snapshot itself keeps its bookkeeping


def test_get_pods_json_is_a_list():
    doc = json.loads(render(snapshot(), "pods", output="json"))
    assert doc["apiVersion"] == "v1"
    assert doc["kind"] == "List"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["service-test-6ffd9ddbbf-kf4j2",
                                                             "service-test-client1"]
    assert all("kubenet" not in i["status"] for i in doc["items"])


def test_get_pod_yaml():
    out = render(snapshot(), "pods", output="yaml", name="service-test-client1")
    assert out.startswith("apiVersion: v1\nkind: Pod\nmetadata:\n")
    assert not out.endswith("\n")
    doc = yaml.safe_load(out)
    assert doc["metadata"]["name"] == "service-test-client1"
    assert doc["status"]["podIP"] == "10.0.2.2"
    assert "kubenet" not in doc["status"]
    assert "kubenet" not in out


def test_get_pods_yaml_is_a_list_in_document_order():
    out = render(snapshot(), "pods", output="yaml")
    assert out.startswith("apiVersion: v1\nkind: List\nitems:\n")
    doc = yaml.safe_load(out)
    assert [i["metadata"]["name"] for i in doc["items"]] == ["service-test-6ffd9ddbbf-kf4j2",
                                                             "service-test-client1"]
    # Keys keep the object's own order (apiVersion, kind, metadata, spec, status).
    assert list(doc["items"][0]) == ["apiVersion", "kind", "metadata", "spec", "status"]


def test_get_pods_name_output():
    assert render(snapshot(), "pods", output="name") == (
        "pod/service-test-6ffd9ddbbf-kf4j2\npod/service-test-client1")
    assert render(snapshot(), "po", output="name", name="service-test-client1") == (
        "pod/service-test-client1")
    assert render(snapshot(), "pods", output="name", namespace="nowhere") == ""


def test_unknown_resource():
    with pytest.raises(BadRequest) as info:
        render(snapshot(), "configmaps")
    assert str(info.value) == 'error: the server doesn\'t have a resource type "configmaps"'


@pytest.mark.parametrize("output", ["jsonpath", "xml", "Wide", "custom-columns"])
def test_bad_output_format(output):
    with pytest.raises(BadRequest) as info:
        render(snapshot(), "pods", output=output)
    assert str(info.value) == (f'error: unable to match a printer suitable for the output format '
                               f'"{output}", allowed formats are: json,name,wide,yaml')


def test_render_errors_are_one_line():
    for call in (lambda: render(snapshot(), "cm"),
                 lambda: render(snapshot(), "pods", name="x"),
                 lambda: render(snapshot(), "pods", output="bad")):
        with pytest.raises((BadRequest, NotFound)) as info:
            call()
        assert "\n" not in str(info.value)


# -- render: deployments and nodes ---------------------------------------------------------

def test_resource_aliases():
    assert {k for k, v in RESOURCES.items() if v == "deployments"} == {
        "deployments", "deployment", "deploy", "deployments.apps"}
    assert {k for k, v in RESOURCES.items() if v == "nodes"} == {"nodes", "node", "no"}


def test_get_deployments():
    out = render(snapshot(), "deploy")
    assert str(out) == ("NAME           READY   UP-TO-DATE   AVAILABLE   AGE\n"
                        "service-test   1/2     2            1           17m")


def test_get_deployments_wide():
    out = render(snapshot(), "deployments.apps", output="wide")
    assert out.headers[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert out.rows == [["service-test", "1/2", "2", "1", "17m", "simple-http", "python:2.7",
                         "app=service_test_pod"]]


def test_get_deployment_not_found_uses_the_group():
    with pytest.raises(NotFound) as info:
        render(snapshot(), "deployment", name="nope")
    assert str(info.value) == 'Error from server (NotFound): deployments.apps "nope" not found'


def test_get_deployment_name_output():
    assert render(snapshot(), "deployments", output="name") == "deployment.apps/service-test"


def test_get_nodes_ignore_namespaces():
    out = render(snapshot(), "nodes", namespace="nowhere")
    assert str(out) == ("NAME    STATUS   ROLES    AGE   VERSION\n"
                        "node1   Ready    <none>   3d    kubenet\n"
                        "node2   Ready    <none>   3d    kubenet")


def test_get_nodes_wide():
    out = render(snapshot(), "no", output="wide")
    assert out.column("INTERNAL-IP") == ["10.100.0.2", "10.100.0.3"]
    assert out.column("POD-CIDR") == ["10.0.1.0/24", "10.0.2.0/24"]
    assert out.column("EXTERNAL-IP") == ["<none>", "<none>"]


def test_get_node_not_found_and_name_output():
    with pytest.raises(NotFound) as info:
        render(snapshot(), "node", name="node3")
    assert str(info.value) == 'Error from server (NotFound): nodes "node3" not found'
    assert render(snapshot(), "nodes", output="name") == "node/node1\nnode/node2"


def test_table_functions_directly():
    snap = snapshot()
    assert str(pods_table([])) == "No resources found in default namespace."
    assert str(deployments_table([], namespace="x")) == "No resources found in x namespace."
    assert str(nodes_table([])) == "No resources found"
    assert pods_table(snap["pods"], namespace="kube-system").column("NAME") == ["coredns-abcde"]
    assert deployments_table(snap["deployments"], namespace="kube-system").column("READY") == [
        "1/1"]
