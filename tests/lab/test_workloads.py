"""Pods and Deployments in an empty lab: replacement, scaling, restart policies, errors."""

import textwrap

import pytest

from kubenet import KubenetError

SERVER = "tests/../notebooks/manifests/test-deployment.yaml"


def _names(lab):
    return sorted(p["metadata"]["name"] for p in lab.pods())


def test_following_the_article_step_by_step_gives_its_names(empty_lab):
    assert empty_lab.apply(SERVER) == ["deployment.apps/service-test created"]
    assert sorted(empty_lab.pod_ips(app="service_test_pod")) == ["10.0.1.2", "10.0.2.2"]
    assert _names(empty_lab) == ["service-test-6ffd9ddbbf-kf4j2", "service-test-6ffd9ddbbf-qs2j6"]
    assert empty_lab.apply(SERVER) == ["deployment.apps/service-test unchanged"]


def test_a_deleted_pod_is_replaced_with_a_new_name_and_address(empty_lab):
    empty_lab.apply(SERVER)
    old = {p["metadata"]["name"]: p["status"]["podIP"] for p in empty_lab.pods()}
    assert empty_lab.delete_pod("service-test-6ffd9ddbbf-qs2j6") == \
        ['pod "service-test-6ffd9ddbbf-qs2j6" deleted']
    new = {p["metadata"]["name"]: p["status"]["podIP"] for p in empty_lab.pods()}
    assert len(new) == 2
    (added,) = set(new) - set(old)
    assert added.startswith("service-test-6ffd9ddbbf-")
    assert new[added] == "10.0.2.3"  # host-local: the next address, not the freed one
    # the netns and veth of the old pod are gone from node2
    links = empty_lab.exec("node2", "ip", "-o", "link", "show", "master", "cbr0").stdout
    assert "qs2j6" not in links and added in links
    assert "qs2j6" not in empty_lab.exec("node2", "ip", "netns", "list").stdout
    # a client still using the old address now fails, as in the article
    out = empty_lab.exec(added, "sh", "-c", "printf 'GET /\\r\\n\\r\\n' | nc -w 1 10.0.2.2 8080")
    assert out.returncode != 0


def test_scale_spreads_over_nodes(empty_lab):
    empty_lab.apply(SERVER)
    empty_lab.scale("service-test", 4)
    nodes = sorted(p["spec"]["nodeName"] for p in empty_lab.pods())
    assert nodes == ["node1", "node1", "node2", "node2"]
    empty_lab.scale("service-test", 1)
    assert len(empty_lab.pods()) == 1


def test_restart_policies(empty_lab):
    empty_lab.apply(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata: {name: fails-once}
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: [sh, -c, "echo bye; exit 3"]}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: keeps-failing}
        spec:
          restartPolicy: Always
          containers: [{name: c, image: busybox, command: [sh, -c, "echo run; exit 1"]}]
        """))
    empty_lab.wait_for("fails-once", "Failed")
    assert empty_lab.logs("fails-once") == "bye\n"
    table = str(empty_lab.get("pods"))
    assert "fails-once" in table and "Error" in table
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pod = next(p for p in empty_lab.pods() if p["metadata"]["name"] == "keeps-failing")
        if pod["status"]["containerStatuses"][0]["restartCount"] >= 1:
            break
        time.sleep(0.1)
    assert pod["status"]["containerStatuses"][0]["restartCount"] >= 1
    assert empty_lab.logs("keeps-failing", previous=True) == "run\n"


@pytest.mark.parametrize("manifest, message", [
    ("kind: Pod\napiVersion: v1\nmetadata: {name: x\n", "error parsing"),
    ("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n",
     'no matches for kind "Deployment" in version "extensions/v1beta1"'),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  containers:\n"
     "  - {name: c, image: i, command: [true], ports: [{containerPort: 70000}]}\n",
     "must be between 1 and 65535"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: -1\n"
     "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n"
     "    spec: {containers: [{name: c, image: i, command: [true]}]}\n",
     "must be greater than or equal to 0"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  nodeName: node9\n"
     "  containers: [{name: c, image: i, command: [true]}]\n", "node9"),
])
def test_bad_manifests_change_nothing(empty_lab, manifest, message):
    empty_lab.apply(SERVER)
    before = _names(empty_lab)
    with pytest.raises(KubenetError, match=message) as err:
        empty_lab.apply(manifest)
    assert "\n" not in str(err.value)
    assert _names(empty_lab) == before


def test_unknown_pod_and_node(empty_lab):
    with pytest.raises(KubenetError, match='pods "nope" not found'):
        empty_lab.logs("nope")
    with pytest.raises(KubenetError, match='pods "nope" not found'):
        empty_lab.exec("nope", "true")
    with pytest.raises(KubenetError, match='pods "nope" not found'):
        empty_lab.delete_pod("nope")


def test_any_number_of_nodes():
    import kubenet
    with kubenet.Lab("empty", nodes=3) as lab:
        assert "10.0.3.0/24 via 10.100.0.4" in lab.exec("gateway", "ip", "route").stdout
        lab.apply(SERVER)
        lab.scale("service-test", 3)
        assert sorted(p["spec"]["nodeName"] for p in lab.pods()) == ["node1", "node2", "node3"]
