"""kubenet.manifests, ``kind: Service``: defaults, validation and kubectl's one-line messages."""

from pathlib import Path

import pytest
import yaml

from kubenet.errors import InvalidManifest, KubenetError
from kubenet.manifests import SUPPORTED, ServicePort, ServiceSpec, parse_manifests

MANIFESTS = Path(__file__).resolve().parents[2] / "notebooks" / "manifests"


# -- helpers --------------------------------------------------------------------------------

def service_doc(name="web", **spec):
    """A minimal valid Service; keyword arguments replace (or, set to ..., drop) spec fields."""
    body = {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    for key, value in spec.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body}


def parse(doc, source="svc.yaml"):
    (m,) = parse_manifests(yaml.safe_dump(doc, sort_keys=False), source)
    return m


def service(**spec):
    return parse(service_doc(**spec)).service


def rejection(doc):
    with pytest.raises(InvalidManifest) as err:
        parse(doc)
    message = str(err.value)
    assert "\n" not in message, "kubectl prints one line"
    return message


def rejects(**spec):
    return rejection(service_doc(**spec))


PREFIX = 'The Service "web" is invalid: '


# -- the article's Service ------------------------------------------------------------------

def test_article_service_parses_with_every_default():
    text = (MANIFESTS / "test-service.yaml").read_text()
    (m,) = parse_manifests(text, "test-service.yaml")
    assert (m.kind, m.api_version, m.name, m.namespace) == ("Service", "v1", "service-test",
                                                            "default")
    assert m.labels == {}
    assert m.source == "test-service.yaml"
    assert m.pod_spec is None
    assert m.service == ServiceSpec(
        type="ClusterIP",
        ports=(ServicePort(port=80, target_port="http", name="", protocol="TCP", node_port=0),),
        selector={"app": "service_test_pod"},
        cluster_ip="",
        session_affinity="None",
        affinity_timeout=10800,
        external_traffic_policy="",
        internal_traffic_policy="Cluster",
    )
    assert m.raw == yaml.safe_load(text)


def test_article_service_and_deployment_in_one_stream():
    text = "---\n".join((MANIFESTS / f).read_text()
                        for f in ("test-deployment.yaml", "test-service.yaml"))
    kinds = [(m.kind, m.name) for m in parse_manifests(text)]
    assert kinds == [("Deployment", "service-test"), ("Service", "service-test")]


def test_service_is_supported_in_v1_only():
    assert ("v1", "Service") in SUPPORTED
    doc = service_doc()
    doc["apiVersion"] = "apps/v1"
    assert rejection(doc) == (
        'error: resource mapping not found for name: "web" namespace: "" from "svc.yaml": '
        'no matches for kind "Service" in version "apps/v1"')


def test_raw_is_a_copy_of_the_document():
    doc = service_doc()
    m = parse(doc)
    assert m.raw == doc
    m.raw["spec"]["ports"][0]["port"] = 1
    assert m.service.ports[0].port == 80


def test_namespace_and_labels_of_a_service():
    doc = service_doc()
    doc["metadata"].update(namespace="kube-system", labels={"k8s-app": "kube-dns"})
    m = parse(doc)
    assert (m.namespace, m.labels) == ("kube-system", {"k8s-app": "kube-dns"})


def test_service_without_spec_is_rejected():
    doc = service_doc()
    del doc["spec"]
    assert rejection(doc) == PREFIX + "spec: Required value"


def test_invalid_manifest_is_a_kubenet_error():
    with pytest.raises(KubenetError):
        parse(service_doc(type="LoadBalancer"))


# -- defaults -------------------------------------------------------------------------------

def test_defaults():
    s = service()
    assert s.type == "ClusterIP"
    assert s.session_affinity == "None"
    assert s.affinity_timeout == 10800
    assert s.external_traffic_policy == ""
    assert s.internal_traffic_policy == "Cluster"
    assert s.cluster_ip == ""
    assert s.ports == (ServicePort(port=80, target_port=8080, name="", protocol="TCP",
                                   node_port=0),)


@pytest.mark.parametrize("field", ["type", "sessionAffinity", "externalTrafficPolicy",
                                   "internalTrafficPolicy", "clusterIP"])
def test_fields_written_but_null_take_their_defaults(field):
    assert service(**{field: None}) == service()


@pytest.mark.parametrize("port", [{"port": 80}, {"port": 80, "targetPort": None}])
def test_target_port_defaults_to_port(port):
    assert service(ports=[port]).ports[0].target_port == 80


def test_protocol_defaults_to_tcp_even_when_null():
    assert service(ports=[{"port": 80, "protocol": None}]).ports[0].protocol == "TCP"


def test_node_port_service_defaults_external_traffic_policy_to_cluster():
    s = service(type="NodePort")
    assert s.type == "NodePort"
    assert s.external_traffic_policy == "Cluster"
    assert s.ports[0].node_port == 0  # allocated later


@pytest.mark.parametrize("policy", ["Cluster", "Local"])
def test_node_port_service_keeps_its_external_traffic_policy(policy):
    assert service(type="NodePort",
                   externalTrafficPolicy=policy).external_traffic_policy == policy


def test_cluster_ip_service_has_no_external_traffic_policy():
    assert service(type="ClusterIP").external_traffic_policy == ""


@pytest.mark.parametrize("policy", ["Cluster", "Local"])
def test_internal_traffic_policy(policy):
    assert service(internalTrafficPolicy=policy).internal_traffic_policy == policy


@pytest.mark.parametrize("address", ["10.3.240.10", "None"])
def test_cluster_ip_is_kept_as_written(address):
    assert service(clusterIP=address).cluster_ip == address


def test_no_selector_means_endpoints_by_hand():
    assert service(selector=...).selector is None


def test_selector_is_kept():
    assert service(selector={"app": "web", "tier": "front"}).selector == {"app": "web",
                                                                         "tier": "front"}


# -- targetPort -----------------------------------------------------------------------------

@pytest.mark.parametrize("target, expected", [
    (8080, 8080),
    ("8080", 8080),  # a string of digits is a number
    (1, 1),
    (65535, 65535),
    ("http", "http"),
    ("web-2", "web-2"),
    ("a" * 15, "a" * 15),
])
def test_target_port_by_number_or_by_name(target, expected):
    port = service(ports=[{"port": 80, "targetPort": target}]).ports[0]
    assert port.target_port == expected
    assert type(port.target_port) is type(expected)


@pytest.mark.parametrize("target, problem", [
    (70000, "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("70000", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("HTTP", 'Invalid value: "HTTP": must be no more than 15 characters, lower case letters, '
             "digits and '-'"),
    ("a" * 16, f'Invalid value: "{"a" * 16}": must be no more than 15 characters, lower case '
               "letters, digits and '-'"),
    ("-http", 'Invalid value: "-http": must be no more than 15 characters, lower case '
              "letters, digits and '-'"),
    ("http_x", 'Invalid value: "http_x": must be no more than 15 characters, lower case '
               "letters, digits and '-'"),
])
def test_bad_target_port(target, problem):
    assert rejects(ports=[{"port": 80, "targetPort": target}]) == (
        PREFIX + "spec.ports[0].targetPort: " + problem)


# Kubernetes' SetDefaults_Service: a targetPort of 0 or "" is defaulted to the port, so kubectl
# accepts both.
@pytest.mark.parametrize("target", [0, ""])
def test_zero_or_empty_target_port_defaults_to_port_like_kubernetes(target):
    assert service(ports=[{"port": 80, "targetPort": target}]).ports[0].target_port == 80


# YAML booleans and fractions are not port numbers: the API server fails to decode them
# (IntOrString / int32) instead of rounding them to a port.
@pytest.mark.parametrize("target", [True, 8080.5])
def test_target_port_that_is_not_an_integer_is_rejected(target):
    with pytest.raises(InvalidManifest, match=r"spec\.ports\[0\]\.targetPort: "):
        parse(service_doc(ports=[{"port": 80, "targetPort": target}]))


def test_boolean_affinity_timeout_is_rejected():
    with pytest.raises(InvalidManifest, match="timeoutSeconds: Invalid value: True"):
        parse(service_doc(sessionAffinity="ClientIP",
                          sessionAffinityConfig={"clientIP": {"timeoutSeconds": True}}))


# -- ports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("number", [1, 80, 65535])
def test_port_range_edges(number):
    assert service(ports=[{"port": number}]).ports[0].port == number


@pytest.mark.parametrize("number, shown", [
    (0, "0"), (70000, "70000"), (65536, "65536"), (-1, "-1"), ("80", '"80"'), (True, "True"),
])
def test_bad_port(number, shown):
    assert rejects(ports=[{"port": number}]) == (
        PREFIX + f"spec.ports[0].port: Invalid value: {shown}: must be between 1 and 65535, "
        "inclusive")


def test_port_is_required():
    assert rejects(ports=[{"targetPort": 80}]) == PREFIX + "spec.ports[0].port: Required value"


@pytest.mark.parametrize("ports", [..., None, [], "80", {"port": 80}])
def test_ports_are_required(ports):
    assert rejects(ports=ports) == PREFIX + "spec.ports: Required value"


def test_a_port_must_be_a_mapping():
    assert rejects(ports=[80]) == PREFIX + "spec.ports[0]: Invalid value: must be a mapping"


def test_several_named_ports():
    s = service(ports=[{"name": "http", "port": 80, "targetPort": "http"},
                       {"name": "metrics", "port": 9100}])
    assert [(p.name, p.port, p.target_port) for p in s.ports] == [
        ("http", 80, "http"), ("metrics", 9100, 9100)]


def test_a_single_port_may_be_unnamed():
    assert service(ports=[{"port": 80}]).ports[0].name == ""


@pytest.mark.parametrize("ports, index", [
    ([{"port": 80}, {"name": "b", "port": 81}], 0),
    ([{"name": "a", "port": 80}, {"port": 81}], 1),
    ([{"name": "a", "port": 80}, {"name": None, "port": 81}], 1),
    ([{"name": "a", "port": 80}, {"name": "", "port": 81}], 1),
])
def test_several_ports_must_all_be_named(ports, index):
    assert rejects(ports=ports) == PREFIX + f"spec.ports[{index}].name: Required value"


def test_duplicate_port_names():
    assert rejects(ports=[{"name": "http", "port": 80}, {"name": "http", "port": 81}]) == (
        PREFIX + 'spec.ports[1].name: Duplicate value: "http"')


@pytest.mark.parametrize("name", ["HTTP", "http_x", "-http", "http-"])
def test_bad_port_name(name):
    assert rejects(ports=[{"name": name, "port": 80}]) == (
        PREFIX + f'spec.ports[0].name: Invalid value: "{name}": a lowercase RFC 1123 label '
        "must consist of lower case alphanumeric characters or '-'")


# Kubernetes validates a Service port's name as a DNS-1123 label (up to 63 characters); only
# container port names (and so named targetPorts) are IANA service names of 15 at most.
def test_long_service_port_name_is_accepted_like_kubernetes():
    name = "prometheus-metrics"  # 18 characters
    assert service(ports=[{"name": name, "port": 9100}]).ports[0].name == name


def test_same_port_and_protocol_twice():
    assert rejects(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 80}]) == (
        PREFIX + 'spec.ports[1]: Duplicate value: core.ServicePort{Port: 80, Protocol: "TCP"}')


def test_same_port_with_two_protocols_is_fine():
    s = service(ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                       {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    assert [(p.port, p.protocol) for p in s.ports] == [(53, "UDP"), (53, "TCP")]


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_protocols(protocol):
    assert service(ports=[{"port": 80, "protocol": protocol}]).ports[0].protocol == protocol


@pytest.mark.parametrize("protocol", ["tcp", "HTTP", "ICMP"])
def test_bad_protocol(protocol):
    assert rejects(ports=[{"port": 80, "protocol": protocol}]) == (
        PREFIX + f'spec.ports[0].protocol: Unsupported value: "{protocol}": supported values: '
        '"SCTP", "TCP", "UDP"')


def test_errors_name_the_offending_port_index():
    message = rejects(ports=[{"name": "a", "port": 80}, {"name": "b", "port": 81},
                             {"name": "c", "port": 0}])
    assert message.startswith(PREFIX + "spec.ports[2].port: ")


# -- nodePort -------------------------------------------------------------------------------

@pytest.mark.parametrize("node_port", [30000, 30080, 32767])
def test_node_port_in_range(node_port):
    s = service(type="NodePort", ports=[{"port": 80, "nodePort": node_port}])
    assert s.ports[0].node_port == node_port


@pytest.mark.parametrize("node_port", [29999, 32768, 80, 65535, -1])
def test_node_port_out_of_range(node_port):
    assert rejects(type="NodePort", ports=[{"port": 80, "nodePort": node_port}]) == (
        PREFIX + f"spec.ports[0].nodePort: Invalid value: {node_port}: provided port is not in "
        "the valid range. The range of valid ports is 30000-32767")


def test_node_port_not_a_number():
    assert rejects(type="NodePort", ports=[{"port": 80, "nodePort": "30080"}]) == (
        PREFIX + 'spec.ports[0].nodePort: Invalid value: "30080": provided port is not in '
        "the valid range. The range of valid ports is 30000-32767")


@pytest.mark.parametrize("stype", [None, "ClusterIP"])
def test_node_port_on_a_cluster_ip_service(stype):
    spec = {"ports": [{"port": 80, "nodePort": 30080}]}
    if stype:
        spec["type"] = stype
    assert rejects(**spec) == (
        PREFIX + "spec.ports[0].nodePort: Forbidden: may not be used when `type` is "
        "'ClusterIP'")


@pytest.mark.parametrize("node_port", [0, None])
def test_node_port_zero_or_null_means_allocate(node_port):
    s = service(type="NodePort", ports=[{"port": 80, "nodePort": node_port}])
    assert s.ports[0].node_port == 0
    assert service(ports=[{"port": 80, "nodePort": node_port}]).ports[0].node_port == 0


# -- type -----------------------------------------------------------------------------------

@pytest.mark.parametrize("stype", ["LoadBalancer", "ExternalName", "nodeport", "Bogus"])
def test_unsupported_type(stype):
    assert rejects(type=stype) == (
        PREFIX + f'spec.type: Unsupported value: "{stype}": the lab runs "ClusterIP" and '
        '"NodePort" services (render-iptables takes any type)')


# -- session affinity -----------------------------------------------------------------------

def test_client_ip_affinity_defaults_its_timeout():
    s = service(sessionAffinity="ClientIP")
    assert (s.session_affinity, s.affinity_timeout) == ("ClientIP", 10800)


@pytest.mark.parametrize("timeout", [1, 60, 86400])
def test_client_ip_affinity_timeout(timeout):
    s = service(sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": timeout}})
    assert s.affinity_timeout == timeout


@pytest.mark.parametrize("config", [{"clientIP": {}}, {"clientIP": None},
                                    {"clientIP": {"timeoutSeconds": None}}])
def test_client_ip_affinity_config_without_timeout(config):
    s = service(sessionAffinity="ClientIP", sessionAffinityConfig=config)
    assert s.affinity_timeout == 10800


@pytest.mark.parametrize("timeout, shown", [(0, "0"), (86401, "86401"), (-5, "-5"),
                                            ("60", '"60"')])
def test_bad_client_ip_affinity_timeout(timeout, shown):
    assert rejects(sessionAffinity="ClientIP",
                   sessionAffinityConfig={"clientIP": {"timeoutSeconds": timeout}}) == (
        PREFIX + f"spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: {shown}: "
        "must be greater than 0 and less than 86400")


@pytest.mark.parametrize("affinity", ["Sticky", "clientip", "none"])
def test_bad_session_affinity(affinity):
    assert rejects(sessionAffinity=affinity) == (
        PREFIX + f'spec.sessionAffinity: Unsupported value: "{affinity}": supported values: '
        '"ClientIP", "None"')


def test_affinity_config_without_client_ip_affinity():
    assert rejects(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}) == (
        PREFIX + "spec.sessionAffinityConfig: Invalid value: must not be set when session "
        "affinity is None")


# -- traffic policies -----------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["Local", "Cluster"])
def test_external_traffic_policy_on_a_cluster_ip_service(policy):
    assert rejects(externalTrafficPolicy=policy) == (
        PREFIX + f'spec.externalTrafficPolicy: Invalid value: "{policy}": may only be set for '
        "externally-accessible services")


@pytest.mark.parametrize("stype", ["ClusterIP", "NodePort"])
def test_bad_external_traffic_policy(stype):
    assert rejects(type=stype, externalTrafficPolicy="Global") == (
        PREFIX + 'spec.externalTrafficPolicy: Unsupported value: "Global": supported values: '
        '"Cluster", "Local"')


def test_bad_internal_traffic_policy():
    assert rejects(internalTrafficPolicy="Node") == (
        PREFIX + 'spec.internalTrafficPolicy: Unsupported value: "Node": supported values: '
        '"Cluster", "Local"')


# -- selector and metadata ------------------------------------------------------------------

def test_bad_selector_value():
    message = rejects(selector={"app": "bad value"})
    assert message.startswith(PREFIX + 'spec.selector: Invalid value: "bad value": ')


def test_selector_must_be_a_mapping():
    assert rejects(selector=["app=web"]) == (
        PREFIX + "spec.selector: Invalid value: labels must be a mapping")


def test_bad_service_name():
    message = rejection(service_doc(name="Web"))
    assert message.startswith('The Service "Web" is invalid: metadata.name: Invalid value: "Web"')


def test_first_problem_in_document_order_wins():
    doc = service_doc(type="LoadBalancer", ports=[{"port": 0}])
    assert rejection(doc).startswith(PREFIX + "spec.type: ")
