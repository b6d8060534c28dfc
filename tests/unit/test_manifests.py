"""kubenet.manifests: parsing and validation, with kubectl's one-line messages."""

import copy
from pathlib import Path

import pytest
import yaml

from kubenet.errors import InvalidManifest, KubenetError
from kubenet.manifests import (
    SUPPORTED,
    Container,
    ContainerPort,
    Manifest,
    PodSpec,
    parse_manifests,
)

MANIFESTS = Path(__file__).resolve().parents[2] / "notebooks" / "manifests"


# -- helpers --------------------------------------------------------------------------------

def pod_doc(name="web"):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "containers": [{
                "name": "web",
                "image": "python:3",
                "command": ["python3", "-m", "http.server", "8080"],
                "ports": [{"containerPort": 8080, "name": "http"}],
            }],
        },
    }


def deployment_doc(name="web", replicas=2):
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "python:3",
                        "command": ["/bin/sh"],
                        "args": ["-c", "exec python3 -m http.server 8080"],
                        "ports": [{"containerPort": 8080, "name": "http"}],
                    }],
                },
            },
        },
    }


def dump(*docs):
    return yaml.safe_dump_all(docs, sort_keys=False)


def parse(*docs, source="x.yaml"):
    return parse_manifests(dump(*docs), source)


def rejection(text, source="x.yaml"):
    """The message parse_manifests raises for ``text``; it must be exactly one line."""
    with pytest.raises(InvalidManifest) as info:
        parse_manifests(text, source)
    message = str(info.value)
    assert message, "an empty error message"
    assert "\n" not in message, f"not one line: {message!r}"
    assert message == message.strip()
    return message


def rejection_of(doc, source="x.yaml"):
    return rejection(dump(doc), source)


def pod_container(doc):
    return doc["spec"]["containers"][0]


def dep_container(doc):
    return doc["spec"]["template"]["spec"]["containers"][0]


# -- valid objects ---------------------------------------------------------------------------

def test_supported_kinds():
    assert {("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service"),
            ("discovery.k8s.io/v1", "EndpointSlice")} == SUPPORTED


def test_pod_parses_into_typed_objects():
    (m,) = parse(pod_doc())
    assert isinstance(m, Manifest)
    assert (m.kind, m.api_version, m.name, m.namespace) == ("Pod", "v1", "web", "default")
    assert m.labels == {"app": "web"}
    assert m.source == "x.yaml"
    assert m.pod_spec == PodSpec(containers=(Container(
        name="web", image="python:3", command=("python3", "-m", "http.server", "8080"),
        ports=(ContainerPort(container_port=8080, name="http", protocol="TCP"),),
    ),), restart_policy="Always", node_name="")
    # A Pod has no Deployment fields.
    assert m.template_labels == {}
    assert m.selector == {}
    assert m.replicas == 1


def test_pod_raw_is_the_document_and_a_deep_copy():
    doc = pod_doc()
    text = dump(doc)
    (m,) = parse_manifests(text)
    assert m.raw == doc
    m.raw["metadata"]["labels"]["app"] = "changed"
    (again,) = parse_manifests(text)
    assert again.raw["metadata"]["labels"]["app"] == "web"


def test_default_source_is_stdin():
    (m,) = parse_manifests(dump(pod_doc()))
    assert m.source == "STDIN"


def test_pod_optional_fields():
    doc = pod_doc()
    doc["metadata"]["namespace"] = "team-a"
    doc["spec"]["restartPolicy"] = "Never"
    doc["spec"]["nodeName"] = "node2"
    c = pod_container(doc)
    c["env"] = [{"name": "GREETING", "value": "hi"}, {"name": "PORT", "value": 8080},
                {"name": "UNSET"}]
    c["workingDir"] = "/srv"
    c["ports"].append({"containerPort": 53, "name": "dns", "protocol": "UDP"})
    (m,) = parse(doc)
    assert m.namespace == "team-a"
    assert m.pod_spec.restart_policy == "Never"
    assert m.pod_spec.node_name == "node2"
    (container,) = m.pod_spec.containers
    assert container.env == (("GREETING", "hi"), ("PORT", "8080"), ("UNSET", ""))
    assert container.working_dir == "/srv"
    assert container.ports == (ContainerPort(8080, "http", "TCP"), ContainerPort(53, "dns", "UDP"))


@pytest.mark.parametrize("policy", ["Always", "OnFailure", "Never"])
def test_pod_restart_policies(policy):
    doc = pod_doc()
    doc["spec"]["restartPolicy"] = policy
    (m,) = parse(doc)
    assert m.pod_spec.restart_policy == policy


def test_command_items_are_stringified_and_args_alone_suffice():
    doc = pod_doc()
    c = pod_container(doc)
    del c["command"]
    c["args"] = ["sleep", 10, 1.5]
    (m,) = parse(doc)
    (container,) = m.pod_spec.containers
    assert container.command == ()
    assert container.args == ("sleep", "10", "1.5")


def test_unnamed_ports_and_several_containers():
    doc = pod_doc()
    doc["spec"]["containers"] = [
        {"name": "a", "image": "i", "command": ["true"], "ports": [{"containerPort": 1},
                                                                  {"containerPort": 65535}]},
        {"name": "b", "image": "i", "command": ["true"]},
    ]
    (m,) = parse(doc)
    a, b = m.pod_spec.containers
    assert [p.container_port for p in a.ports] == [1, 65535]
    assert all(p.name == "" for p in a.ports)
    assert b.ports == ()


def test_deployment_parses():
    (m,) = parse(deployment_doc(replicas=3))
    assert (m.kind, m.api_version, m.name, m.namespace) == ("Deployment", "apps/v1", "web",
                                                            "default")
    assert m.replicas == 3
    assert m.selector == {"app": "web"}
    assert m.template_labels == {"app": "web", "tier": "front"}
    assert m.labels == {}
    (container,) = m.pod_spec.containers
    assert container.command == ("/bin/sh",)
    assert container.args == ("-c", "exec python3 -m http.server 8080")
    assert m.pod_spec.restart_policy == "Always"


def test_deployment_replicas_default_to_one_and_zero_is_allowed():
    doc = deployment_doc()
    del doc["spec"]["replicas"]
    (m,) = parse(doc)
    assert m.replicas == 1
    (m,) = parse(deployment_doc(replicas=0))
    assert m.replicas == 0


def test_deployment_template_may_say_always_explicitly():
    doc = deployment_doc()
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    (m,) = parse(doc)
    assert m.pod_spec.restart_policy == "Always"


def test_article_deployment_manifest():
    (m,) = parse_manifests((MANIFESTS / "test-deployment.yaml").read_text(),
                           "test-deployment.yaml")
    assert (m.kind, m.name, m.replicas) == ("Deployment", "service-test", 2)
    assert m.selector == {"app": "service_test_pod"}
    assert m.template_labels == {"app": "service_test_pod"}
    (container,) = m.pod_spec.containers
    assert container.name == "simple-http"
    assert container.ports == (ContainerPort(8080, "http"),)


def test_article_client_pod_manifest():
    (m,) = parse_manifests((MANIFESTS / "test-client1.yaml").read_text())
    assert (m.kind, m.name) == ("Pod", "service-test-client1")
    assert m.pod_spec.restart_policy == "Never"
    assert m.pod_spec.containers[0].command == ("/bin/sh",)


def test_multi_document_yaml_keeps_order_and_skips_empty_documents():
    text = "---\n" + dump(deployment_doc("first")) + "---\n---\n" + dump(pod_doc("second"))
    ms = parse_manifests(text)
    assert [(m.kind, m.name) for m in ms] == [("Deployment", "first"), ("Pod", "second")]


def test_kind_list_is_flattened():
    text = dump({"apiVersion": "v1", "kind": "List",
                 "items": [pod_doc("a"), deployment_doc("b")]}, pod_doc("c"))
    ms = parse_manifests(text)
    assert [(m.kind, m.name) for m in ms] == [("Pod", "a"), ("Deployment", "b"), ("Pod", "c")]


def test_invalid_item_in_a_list_is_rejected():
    bad = pod_doc("a")
    bad["spec"]["restartPolicy"] = "Sometimes"
    message = rejection(dump({"apiVersion": "v1", "kind": "List", "items": [pod_doc("ok"), bad]}))
    assert message.startswith('The Pod "a" is invalid: spec.restartPolicy')


def test_first_invalid_document_rejects_the_whole_input():
    bad = deployment_doc("bad", replicas=-1)
    message = rejection(dump(pod_doc("fine"), bad))
    assert message.startswith('The Deployment "bad" is invalid')


def test_errors_are_kubenet_errors():
    assert issubclass(InvalidManifest, KubenetError)


# -- rejections before validation: YAML, empty input, kind and apiVersion ------------------

@pytest.mark.parametrize("text, where, problem", [
    ("a: b: c\n", "line 1: ", "mapping values are not allowed here"),
    ("apiVersion: v1\nkind: Pod\nmetadata:\n\tname: x\n", "line 4: ",
     "found character '\\t' that cannot start any token"),
    ("[unclosed\n", "line 2: ", "expected ',' or ']', but got '<stream end>'"),
])
def test_bad_yaml(text, where, problem):
    message = rejection(text, "bad.yaml")
    assert message == ("error: error parsing bad.yaml: error converting YAML to JSON: yaml: "
                       f"{where}{problem}")


def test_bad_yaml_in_a_later_document_reports_its_line():
    text = dump(pod_doc()) + "---\nkind: Pod\n  oops: [\n"
    message = rejection(text)
    assert message.startswith("error: error parsing x.yaml: error converting YAML to JSON: yaml: "
                              "line ")
    line = int(message.split("line ")[1].split(":")[0])
    assert line > text.count("\n", 0, text.index("---"))


@pytest.mark.parametrize("text", ["", "\n", "---\n---\n", "# just a comment\n",
                                  "apiVersion: v1\nkind: List\nitems: []\n"])
def test_nothing_to_apply(text):
    assert rejection(text, "empty.yaml") == (
        "error: no objects passed to apply (empty.yaml is empty)")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_document_that_is_not_a_mapping(text):
    message = rejection(text)
    assert message.startswith("error: error validating ")
    assert "x.yaml" in message
    assert message.endswith("a manifest must be a mapping")


def test_missing_kind():
    doc = pod_doc()
    del doc["kind"]
    assert rejection_of(doc) == 'error: error validating "x.yaml": kind not set'


def test_missing_api_version():
    doc = pod_doc()
    del doc["apiVersion"]
    assert rejection_of(doc) == 'error: error validating "x.yaml": apiVersion not set'


def test_kind_is_checked_before_api_version():
    assert rejection("metadata: {name: x}\n") == 'error: error validating "x.yaml": kind not set'


def test_metadata_must_be_a_mapping():
    doc = pod_doc()
    doc["metadata"] = ["web"]
    assert rejection_of(doc) == 'error: error validating "x.yaml": metadata must be a mapping'


@pytest.mark.parametrize("api_version, kind, name", [
    ("extensions/v1beta1", "Deployment", "service-test"),  # the article's original
    ("apps/v1beta1", "Deployment", "web"),
    ("v1", "Deployment", "web"),
    ("apps/v1", "Pod", "web"),
    ("v1", "ConfigMap", "web"),
    ("apps/v1", "ReplicaSet", "web"),
    ("v1", "Pod ", "web"),
])
def test_unknown_kind_or_api_version(api_version, kind, name):
    doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": {}}
    assert rejection_of(doc, "test-deployment.yaml") == (
        f'error: resource mapping not found for name: "{name}" namespace: "" from '
        f'"test-deployment.yaml": no matches for kind "{kind}" in version "{api_version}"'
    )


def test_unknown_kind_without_a_name():
    assert rejection("apiVersion: v1\nkind: ConfigMap\n") == (
        'error: resource mapping not found for name: "" namespace: "" from "x.yaml": '
        'no matches for kind "ConfigMap" in version "v1"'
    )


def test_the_article_original_deployment_is_refused():
    text = (MANIFESTS / "test-deployment.yaml").read_text().replace("apps/v1",
                                                                     "extensions/v1beta1")
    assert rejection(text, "test-deployment.yaml") == (
        'error: resource mapping not found for name: "service-test" namespace: "" from '
        '"test-deployment.yaml": no matches for kind "Deployment" in version '
        '"extensions/v1beta1"'
    )


# -- names and labels ------------------------------------------------------------------------

SUBDOMAIN_RULE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character")


@pytest.mark.parametrize("kind_doc", [pod_doc, deployment_doc])
def test_missing_name(kind_doc):
    doc = kind_doc()
    del doc["metadata"]["name"]
    kind = doc["kind"]
    assert rejection_of(doc) == (f'The {kind} "" is invalid: metadata.name: Required value: '
                                 "name or generateName is required")


def test_missing_metadata_means_missing_name():
    doc = pod_doc()
    del doc["metadata"]
    assert rejection_of(doc) == ('The Pod "" is invalid: metadata.name: Required value: '
                                 "name or generateName is required")


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "web-", "web..x", "we b", "x" * 254])
def test_invalid_name(name):
    assert rejection_of(pod_doc(name)) == (f'The Pod "{name}" is invalid: metadata.name: '
                                           f'Invalid value: "{name}": {SUBDOMAIN_RULE}')


def test_non_string_name():
    doc = pod_doc()
    doc["metadata"]["name"] = 123
    assert rejection_of(doc) == ('The Pod "123" is invalid: metadata.name: Invalid value: 123: '
                                 f"{SUBDOMAIN_RULE}")


@pytest.mark.parametrize("name", ["a", "web-1", "web.example.com", "0abc", "x" * 253])
def test_valid_names(name):
    (m,) = parse(pod_doc(name))
    assert m.name == name


def test_invalid_namespace():
    doc = pod_doc()
    doc["metadata"]["namespace"] = "Team_A"
    assert rejection_of(doc) == ('The Pod "web" is invalid: metadata.namespace: Invalid value: '
                                 '"Team_A"')


@pytest.mark.parametrize("labels", [
    {"app": "web", "example.com/tier": "front", "empty": "", "v": "1.2_3-x"},
    {"a": None},
])
def test_valid_labels(labels):
    doc = pod_doc()
    doc["metadata"]["labels"] = labels
    (m,) = parse(doc)
    assert m.labels == {k: ("" if v is None else v) for k, v in labels.items()}


def test_labels_must_be_a_mapping():
    doc = pod_doc()
    doc["metadata"]["labels"] = ["app=web"]
    assert rejection_of(doc) == ('The Pod "web" is invalid: metadata.labels: Invalid value: '
                                 "labels must be a mapping")


@pytest.mark.parametrize("key", ["-app", "app-", "a b", "Bad_Domain/app", "/app"])
def test_invalid_label_key(key):
    doc = pod_doc()
    doc["metadata"]["labels"] = {key: "web"}
    assert rejection_of(doc) == (f'The Pod "web" is invalid: metadata.labels: Invalid value: '
                                 f"\"{key}\": name part must consist of alphanumeric characters, "
                                 "'-', '_' or '.'")


@pytest.mark.parametrize("value, shown", [
    ("-web", '"-web"'), ("web-", '"web-"'), ("a b", '"a b"'), ("x" * 64, f'"{"x" * 64}"'),
    (1, "1"),
])
def test_invalid_label_value(value, shown):
    doc = pod_doc()
    doc["metadata"]["labels"] = {"app": value}
    assert rejection_of(doc) == (f'The Pod "web" is invalid: metadata.labels: Invalid value: '
                                 f"{shown}: a valid label must be an empty string or consist of "
                                 "alphanumeric characters, '-', '_' or '.', and must start and "
                                 "end with an alphanumeric character")


# -- pod spec ----------------------------------------------------------------------------------

def test_spec_required():
    doc = pod_doc()
    del doc["spec"]
    assert rejection_of(doc) == 'The Pod "web" is invalid: spec: Required value'


@pytest.mark.parametrize("containers", [None, [], "web"])
def test_containers_required(containers):
    doc = pod_doc()
    doc["spec"]["containers"] = containers
    assert rejection_of(doc) == 'The Pod "web" is invalid: spec.containers: Required value'


@pytest.mark.parametrize("policy, shown", [("Sometimes", '"Sometimes"'), ("always", '"always"'),
                                           (1, "1")])
def test_bad_restart_policy(policy, shown):
    doc = pod_doc()
    doc["spec"]["restartPolicy"] = policy
    assert rejection_of(doc) == (f'The Pod "web" is invalid: spec.restartPolicy: Unsupported '
                                 f'value: {shown}: supported values: "Always", "OnFailure", '
                                 '"Never"')


def test_container_must_be_a_mapping():
    doc = pod_doc()
    doc["spec"]["containers"] = ["web"]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0]: Invalid value: '
                                 "must be a mapping")


def test_container_name_required():
    doc = pod_doc()
    del pod_container(doc)["name"]
    assert rejection_of(doc) == 'The Pod "web" is invalid: spec.containers[0].name: Required value'


@pytest.mark.parametrize("cname", ["Web", "web.1", "web_1", "-web"])
def test_container_name_invalid(cname):
    doc = pod_doc()
    pod_container(doc)["name"] = cname
    assert rejection_of(doc) == (f'The Pod "web" is invalid: spec.containers[0].name: Invalid '
                                 f'value: "{cname}": a lowercase RFC 1123 label must consist of '
                                 "lower case alphanumeric characters or '-'")


def test_duplicate_container_name():
    doc = pod_doc()
    doc["spec"]["containers"].append(copy.deepcopy(pod_container(doc)))
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[1].name: Duplicate '
                                 'value: "web"')


def test_image_required():
    doc = pod_doc()
    del pod_container(doc)["image"]
    assert rejection_of(doc) == 'The Pod "web" is invalid: spec.containers[0].image: Required value'


def test_container_without_command():
    doc = pod_doc()
    del pod_container(doc)["command"]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].command: Required '
                                 "value: kubenet runs no images, so a container needs a command "
                                 "(or args) to run")


def test_container_with_empty_command_and_args():
    doc = pod_doc()
    pod_container(doc)["command"] = []
    pod_container(doc)["args"] = []
    message = rejection_of(doc)
    assert message.startswith('The Pod "web" is invalid: spec.containers[0].command: '
                              "Required value")


@pytest.mark.parametrize("field", ["command", "args"])
@pytest.mark.parametrize("value", ["sleep 10", ["sleep", {"n": 10}], ["sleep", [10]]])
def test_command_and_args_must_be_lists_of_strings(field, value):
    doc = pod_doc()
    pod_container(doc)[field] = value
    assert rejection_of(doc) == (f'The Pod "web" is invalid: spec.containers[0].{field}: Invalid '
                                 "value: must be a list of strings")


def test_env_must_be_a_list():
    doc = pod_doc()
    pod_container(doc)["env"] = {"A": "1"}
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].env: Invalid '
                                 "value: must be a list")


@pytest.mark.parametrize("item", [{"value": "1"}, "A=1", {"name": ""}])
def test_env_name_required(item):
    doc = pod_doc()
    pod_container(doc)["env"] = [{"name": "OK", "value": "1"}, item]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].env[1].name: '
                                 "Required value")


def test_env_value_null_is_empty_string():
    doc = pod_doc()
    pod_container(doc)["env"] = [{"name": "EMPTY", "value": None}]
    (m,) = parse(doc)
    assert m.pod_spec.containers[0].env == (("EMPTY", ""),)


# -- ports ---------------------------------------------------------------------------------------

PORT_RANGE = "must be between 1 and 65535, inclusive"


@pytest.mark.parametrize("number, shown", [(0, "0"), (70000, "70000"), (65536, "65536"),
                                           (-80, "-80"), ("8080", '"8080"'), (80.5, "80.5")])
def test_container_port_out_of_range_or_not_an_integer(number, shown):
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"containerPort": number}]
    assert rejection_of(doc) == (f'The Pod "web" is invalid: spec.containers[0].ports[0].'
                                 f"containerPort: Invalid value: {shown}: {PORT_RANGE}")


def test_boolean_container_port_is_not_an_integer():
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"containerPort": True}]
    message = rejection_of(doc)
    assert message.startswith('The Pod "web" is invalid: spec.containers[0].ports[0].'
                              "containerPort: Invalid value: ")
    assert message.endswith(PORT_RANGE)


def test_container_port_zero_in_a_deployment():
    doc = deployment_doc()
    dep_container(doc)["ports"] = [{"containerPort": 0}]
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.template.spec.containers'
                                 f"[0].ports[0].containerPort: Invalid value: 0: {PORT_RANGE}")


def test_container_port_required():
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"name": "http"}]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].ports[0].'
                                 "containerPort: Required value")


def test_ports_must_be_a_list_of_mappings():
    doc = pod_doc()
    pod_container(doc)["ports"] = {"containerPort": 80}
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].ports: Invalid '
                                 "value: must be a list")
    pod_container(doc)["ports"] = [8080]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].ports[0]: Invalid '
                                 "value: must be a mapping")


def test_duplicate_port_names():
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"containerPort": 8080, "name": "http"},
                                   {"containerPort": 8081, "name": "http"}]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].ports[1].name: '
                                 'Duplicate value: "http"')


def test_duplicate_port_names_in_a_deployment():
    doc = deployment_doc()
    dep_container(doc)["ports"].append({"containerPort": 9090, "name": "http"})
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.template.spec.'
                                 'containers[0].ports[1].name: Duplicate value: "http"')


@pytest.mark.parametrize("pname", ["HTTP", "http_alt", "8080", "a-very-long-port-name", "-http",
                                   "http-"])
def test_invalid_port_name(pname):
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"containerPort": 8080, "name": pname}]
    assert rejection_of(doc) == (f'The Pod "web" is invalid: spec.containers[0].ports[0].name: '
                                 f'Invalid value: "{pname}": must be no more than 15 characters, '
                                 "lower case letters, digits and '-'")


@pytest.mark.parametrize("pname", ["http", "h2c", "metrics-8080", "a" * 15])
def test_valid_port_names(pname):
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"containerPort": 8080, "name": pname}]
    (m,) = parse(doc)
    assert m.pod_spec.containers[0].ports[0].name == pname


def test_unsupported_protocol():
    doc = pod_doc()
    pod_container(doc)["ports"] = [{"containerPort": 8080, "protocol": "tcp"}]
    assert rejection_of(doc) == ('The Pod "web" is invalid: spec.containers[0].ports[0].protocol: '
                                 'Unsupported value: "tcp": supported values: "SCTP", "TCP", "UDP"')


# -- deployments ---------------------------------------------------------------------------------

def test_negative_replicas():
    assert rejection_of(deployment_doc("x", replicas=-1)) == (
        'The Deployment "x" is invalid: spec.replicas: Invalid value: -1: must be greater than '
        "or equal to 0"
    )


@pytest.mark.parametrize("replicas, shown", [("2", '"2"'), (1.5, "1.5"), (2.0, "2.0"),
                                             ([2], "[2]")])
def test_non_integer_replicas(replicas, shown):
    assert rejection_of(deployment_doc("x", replicas=replicas)) == (
        f'The Deployment "x" is invalid: spec.replicas: Invalid value: {shown}: must be an integer'
    )


def test_boolean_replicas_are_not_integers():
    message = rejection_of(deployment_doc("x", replicas=True))
    assert message.startswith('The Deployment "x" is invalid: spec.replicas: Invalid value: ')
    assert message.endswith(": must be an integer")


@pytest.mark.parametrize("where", ["replicas", "restartPolicy", "protocol"])
def test_null_means_default(where):
    doc = deployment_doc()
    if where == "replicas":
        doc["spec"]["replicas"] = None
    elif where == "restartPolicy":
        doc["spec"]["template"]["spec"]["restartPolicy"] = None
    else:
        dep_container(doc)["ports"][0]["protocol"] = None
    (m,) = parse(doc)
    if where == "replicas":
        assert m.replicas == 1
    elif where == "restartPolicy":
        assert m.pod_spec.restart_policy == "Always"
    else:
        assert m.pod_spec.containers[0].ports[0].protocol == "TCP"


@pytest.mark.parametrize("selector", [None, {}, {"matchLabels": {}}, "app=web"])
def test_selector_required(selector):
    doc = deployment_doc()
    doc["spec"]["selector"] = selector
    assert rejection_of(doc) == 'The Deployment "web" is invalid: spec.selector: Required value'


def test_match_expressions_are_unsupported():
    doc = deployment_doc()
    doc["spec"]["selector"]["matchExpressions"] = [{"key": "app", "operator": "Exists"}]
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.selector: Unsupported '
                                 "value: kubenet supports matchLabels selectors only")


def test_selector_labels_are_validated():
    doc = deployment_doc()
    doc["spec"]["selector"]["matchLabels"] = {"app": "-web"}
    message = rejection_of(doc)
    assert message.startswith('The Deployment "web" is invalid: spec.selector.matchLabels: '
                              'Invalid value: "-web": a valid label')


def test_template_required():
    doc = deployment_doc()
    del doc["spec"]["template"]
    assert rejection_of(doc) == 'The Deployment "web" is invalid: spec.template: Required value'


@pytest.mark.parametrize("labels", [{"app": "other"}, {}, None, {"tier": "front"}])
def test_selector_not_matching_template_labels(labels):
    doc = deployment_doc()
    doc["spec"]["template"]["metadata"]["labels"] = labels
    message = rejection_of(doc)
    assert message.startswith('The Deployment "web" is invalid: spec.template.metadata.labels: '
                              "Invalid value: map[string]string{")
    assert message.endswith("}: `selector` does not match template `labels`")


def test_selector_not_matching_when_template_has_no_metadata():
    doc = deployment_doc()
    del doc["spec"]["template"]["metadata"]
    assert rejection_of(doc) == (
        'The Deployment "web" is invalid: spec.template.metadata.labels: Invalid value: '
        "map[string]string{}: `selector` does not match template `labels`"
    )


def test_selector_mismatch_prints_labels_like_go():
    doc = deployment_doc()
    doc["spec"]["template"]["metadata"]["labels"] = {"tier": "front", "app": "other"}
    assert rejection_of(doc) == (
        'The Deployment "web" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"other", "tier":"front"}: `selector` does not match template '
        "`labels`"
    )


def test_template_labels_are_validated():
    doc = deployment_doc()
    doc["spec"]["template"]["metadata"]["labels"]["bad key"] = "x"
    message = rejection_of(doc)
    assert message.startswith('The Deployment "web" is invalid: spec.template.metadata.labels: '
                              'Invalid value: "bad key"')


def test_template_spec_required():
    doc = deployment_doc()
    del doc["spec"]["template"]["spec"]
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.template.spec: Required '
                                 "value")


@pytest.mark.parametrize("policy", ["Never", "OnFailure"])
def test_deployment_template_must_restart_always(policy):
    doc = deployment_doc()
    doc["spec"]["template"]["spec"]["restartPolicy"] = policy
    assert rejection_of(doc) == (f'The Deployment "web" is invalid: spec.template.spec.'
                                 f'restartPolicy: Unsupported value: "{policy}": supported '
                                 'values: "Always"')


def test_deployment_template_bad_restart_policy():
    doc = deployment_doc()
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Sometimes"
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.template.spec.'
                                 'restartPolicy: Unsupported value: "Sometimes": supported '
                                 'values: "Always", "OnFailure", "Never"')


def test_deployment_container_without_command():
    doc = deployment_doc()
    del dep_container(doc)["command"]
    del dep_container(doc)["args"]
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.template.spec.'
                                 "containers[0].command: Required value: kubenet runs no images, "
                                 "so a container needs a command (or args) to run")


def test_deployment_without_containers():
    doc = deployment_doc()
    doc["spec"]["template"]["spec"]["containers"] = []
    assert rejection_of(doc) == ('The Deployment "web" is invalid: spec.template.spec.containers: '
                                 "Required value")


def test_deployment_spec_required():
    doc = deployment_doc()
    doc["spec"] = "nope"
    assert rejection_of(doc) == 'The Deployment "web" is invalid: spec: Required value'
