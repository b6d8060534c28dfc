"""Manifests in, typed objects out: parsing and validation with kubectl's own wording.

Pure: no lab, no kernel. Anything Kubernetes would reject is rejected here, before the lab
changes, with the one-line message kubectl prints.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import InvalidManifest

__all__ = ["Manifest", "ContainerPort", "Container", "PodSpec", "Probe", "ServicePort",
           "ServiceSpec", "parse_manifests", "SUPPORTED"]

SUPPORTED = {("v1", "Pod"), ("apps/v1", "Deployment"), ("v1", "Service"),
             ("discovery.k8s.io/v1", "EndpointSlice")}
SERVICE_TYPES = ("ClusterIP", "NodePort")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                         r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
RESTART_POLICIES = ("Always", "OnFailure", "Never")


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Probe:
    """A readiness or liveness probe; exactly one of http_path/tcp/exec_command is used."""

    action: str  # httpGet | tcpSocket | exec
    port: int | str = 0  # number, or a container port's name
    path: str = "/"
    command: tuple[str, ...] = ()
    initial_delay: int = 0
    period: int = 10
    timeout: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    working_dir: str = ""
    readiness: Probe | None = None
    liveness: Probe | None = None


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[Container, ...]
    restart_policy: str = "Always"
    node_name: str = ""


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int | str  # a number, or the name of a container port
    name: str = ""
    protocol: str = "TCP"
    node_port: int = 0  # 0: allocate one (NodePort services)


@dataclass(frozen=True)
class ServiceSpec:
    type: str
    ports: tuple[ServicePort, ...]
    selector: dict[str, str] | None  # None: endpoints are managed by hand
    cluster_ip: str = ""  # "": allocate one; "None": headless
    session_affinity: str = "None"
    affinity_timeout: int = 10800
    external_traffic_policy: str = ""
    internal_traffic_policy: str = "Cluster"


@dataclass
class Manifest:
    """One validated object from a manifest, plus its raw form for ``-o yaml``."""

    kind: str
    api_version: str
    name: str
    namespace: str
    labels: dict[str, str]
    raw: dict[str, Any]
    pod_spec: PodSpec | None = None  # Pod: its spec; Deployment: the template's
    template_labels: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    selector: dict[str, str] = field(default_factory=dict)
    service: ServiceSpec | None = None
    source: str = ""


def _invalid(kind: str, name: str, path: str, problem: str) -> InvalidManifest:
    return InvalidManifest(f'The {kind} "{name}" is invalid: {path}: {problem}')


def _default(value: Any, default: Any) -> Any:
    """A field written but left empty (YAML null) takes its default, as in Kubernetes."""
    return default if value is None else value


def _go_map(labels: dict[str, str]) -> str:
    """Labels as Go's %#v prints a map, the way the API server's messages show them."""
    items = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return f"map[string]string{{{items}}}"


def _value(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v)


def parse_manifests(text: str, source: str = "STDIN") -> list[Manifest]:
    """Parse multi-document YAML; raise on the first document Kubernetes would reject."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InvalidManifest(
            f"error: error parsing {source}: error converting YAML to JSON: yaml: {where}{problem}"
        ) from None
    out: list[Manifest] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and \
                isinstance(doc.get("items"), list):
            out.extend(_parse_one(item, source) for item in doc["items"])
        else:
            out.append(_parse_one(doc, source))
    if not out:
        raise InvalidManifest(f"error: no objects passed to apply ({source} is empty)")
    return out


def _parse_one(doc: Any, source: str) -> Manifest:
    if not isinstance(doc, dict):
        raise InvalidManifest(f"error: error validating {source}: a manifest must be a mapping")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not kind:
        raise InvalidManifest(f'error: error validating "{source}": kind not set')
    if not api_version:
        raise InvalidManifest(f'error: error validating "{source}": apiVersion not set')
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise InvalidManifest(f'error: error validating "{source}": metadata must be a mapping')
    name = meta.get("name") or ""
    namespace = meta.get("namespace") or "default"
    if (api_version, kind) not in SUPPORTED:
        raise InvalidManifest(
            f'error: resource mapping not found for name: "{name}" namespace: "" from '
            f'"{source}": no matches for kind "{kind}" in version "{api_version}"'
        )
    if not name:
        raise _invalid(kind, "", "metadata.name",
                       "Required value: name or generateName is required")
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        raise _invalid(kind, name, "metadata.name", f"Invalid value: {_value(name)}: a lowercase "
                       "RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                       "'-' or '.', and must start and end with an alphanumeric character")
    if not _DNS1123_LABEL.match(str(namespace)):
        raise _invalid(kind, name, "metadata.namespace", f"Invalid value: {_value(namespace)}")
    labels = _labels(kind, name, "metadata.labels", meta.get("labels"))
    manifest = Manifest(kind=kind, api_version=api_version, name=name, namespace=namespace,
                        labels=labels, raw=copy.deepcopy(doc), source=source)
    if kind == "EndpointSlice":
        _endpoint_slice(manifest, doc)
        return manifest
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise _invalid(kind, name, "spec", "Required value")
    if kind == "Pod":
        manifest.pod_spec = _pod_spec(kind, name, "spec", spec)
    elif kind == "Service":
        manifest.service = _service(kind, name, spec)
    else:
        _deployment(manifest, spec)
    return manifest


def _endpoint_slice(manifest: Manifest, doc: dict[str, Any]) -> None:
    """A hand-made EndpointSlice, for a Service without a selector (as in Kubernetes)."""
    kind, name = manifest.kind, manifest.name
    if doc.get("addressType") != "IPv4":
        raise _invalid(kind, name, "addressType", f"Unsupported value: "
                       f"{_value(doc.get('addressType'))}: the lab's network is IPv4 only")
    if not manifest.labels.get("kubernetes.io/service-name"):
        raise _invalid(kind, name, "metadata.labels", "Required value: "
                       "kubernetes.io/service-name names the Service these endpoints serve")
    for i, ep in enumerate(doc.get("endpoints") or []):
        addresses = ep.get("addresses") if isinstance(ep, dict) else None
        if not addresses or not isinstance(addresses, list):
            raise _invalid(kind, name, f"endpoints[{i}].addresses", "Required value")
        for j, address in enumerate(addresses):
            try:
                ipaddress.IPv4Address(str(address))
            except ValueError:
                raise _invalid(kind, name, f"endpoints[{i}].addresses[{j}]", f"Invalid value: "
                               f"{_value(address)}: must be a valid IPv4 address") from None
    for i, port in enumerate(doc.get("ports") or []):
        if not isinstance(port, dict):
            raise _invalid(kind, name, f"ports[{i}]", "Invalid value: must be a mapping")
        if port.get("port") is not None:
            _port_number(kind, name, f"ports[{i}].port", port["port"])
        _protocol(kind, name, f"ports[{i}].protocol", port.get("protocol"))


def _port_number(kind: str, name: str, path: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise _invalid(kind, name, path, f"Invalid value: {_value(value)}: must be between 1 "
                       "and 65535, inclusive")
    return value


def _protocol(kind: str, name: str, path: str, value: Any) -> str:
    protocol = _default(value, "TCP")
    if protocol not in ("TCP", "UDP", "SCTP"):
        raise _invalid(kind, name, path, f"Unsupported value: {_value(protocol)}: supported "
                       'values: "SCTP", "TCP", "UDP"')
    return protocol


def _port_name(kind: str, name: str, path: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 15 or not _IANA_SVC_NAME.match(value) \
            or not re.search("[a-z]", value):
        raise _invalid(kind, name, path, f"Invalid value: {_value(value)}: must be no more "
                       "than 15 characters, lower case letters, digits and '-'")
    return value


def _service(kind: str, name: str, spec: dict[str, Any]) -> ServiceSpec:
    stype = _default(spec.get("type"), "ClusterIP")
    if stype not in SERVICE_TYPES:
        raise _invalid(kind, name, "spec.type", f"Unsupported value: {_value(stype)}: the lab "
                       'runs "ClusterIP" and "NodePort" services (render-iptables takes any type)')
    ports = spec.get("ports")
    if not ports or not isinstance(ports, list):
        raise _invalid(kind, name, "spec.ports", "Required value")
    parsed: list[ServicePort] = []
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not isinstance(p, dict):
            raise _invalid(kind, name, path, "Invalid value: must be a mapping")
        pname = _default(p.get("name"), "")
        if len(ports) > 1 and not pname:
            raise _invalid(kind, name, f"{path}.name", "Required value")
        if pname:
            if not isinstance(pname, str) or len(pname) > 63 or not _DNS1123_LABEL.match(pname):
                raise _invalid(kind, name, f"{path}.name", f"Invalid value: {_value(pname)}: a "
                               "lowercase RFC 1123 label must consist of lower case "
                               "alphanumeric characters or '-'")
            if pname in names:
                raise _invalid(kind, name, f"{path}.name", f"Duplicate value: {_value(pname)}")
            names.add(pname)
        protocol = _protocol(kind, name, f"{path}.protocol", p.get("protocol"))
        if p.get("port") is None:
            raise _invalid(kind, name, f"{path}.port", "Required value")
        number = _port_number(kind, name, f"{path}.port", p["port"])
        if (number, protocol) in seen:
            raise _invalid(kind, name, path, f"Duplicate value: core.ServicePort{{Port: "
                           f"{number}, Protocol: \"{protocol}\"}}")
        seen.add((number, protocol))
        target = p.get("targetPort")
        if target in (None, 0, ""):
            target = number  # as the API server defaults it
        elif isinstance(target, str) and not target.isdigit():
            _port_name(kind, name, f"{path}.targetPort", target)
        elif isinstance(target, str):
            target = _port_number(kind, name, f"{path}.targetPort", int(target))
        else:
            target = _port_number(kind, name, f"{path}.targetPort", target)
        node_port = _default(p.get("nodePort"), 0)
        if node_port:
            if stype != "NodePort":
                raise _invalid(kind, name, f"{path}.nodePort", "Forbidden: may not be used "
                               "when `type` is 'ClusterIP'")
            if not isinstance(node_port, int) or not 30000 <= node_port <= 32767:
                raise _invalid(kind, name, f"{path}.nodePort", f"Invalid value: "
                               f"{_value(node_port)}: provided port is not in the valid range. "
                               "The range of valid ports is 30000-32767")
        parsed.append(ServicePort(port=number, target_port=target, name=pname,
                                  protocol=protocol, node_port=node_port))
    selector = spec.get("selector")
    if selector is not None:
        selector = _labels(kind, name, "spec.selector", selector)
    cluster_ip = str(_default(spec.get("clusterIP"), ""))
    affinity = _default(spec.get("sessionAffinity"), "None")
    if affinity not in ("None", "ClientIP"):
        raise _invalid(kind, name, "spec.sessionAffinity", f"Unsupported value: "
                       f'{_value(affinity)}: supported values: "ClientIP", "None"')
    timeout = 10800
    config = spec.get("sessionAffinityConfig") or {}
    if config:
        if affinity != "ClientIP":
            raise _invalid(kind, name, "spec.sessionAffinityConfig", "Invalid value: must not "
                           "be set when session affinity is None")
        timeout = _default((config.get("clientIP") or {}).get("timeoutSeconds"), 10800)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or \
                not 0 < timeout <= 86400:
            raise _invalid(kind, name, "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                           f"Invalid value: {_value(timeout)}: must be greater than 0 and less "
                           "than 86400")
    etp = _default(spec.get("externalTrafficPolicy"), "")
    if etp:
        if etp not in ("Cluster", "Local"):
            raise _invalid(kind, name, "spec.externalTrafficPolicy", f"Unsupported value: "
                           f'{_value(etp)}: supported values: "Cluster", "Local"')
        if stype == "ClusterIP":
            raise _invalid(kind, name, "spec.externalTrafficPolicy", f"Invalid value: "
                           f"{_value(etp)}: may only be set for externally-accessible services")
    elif stype == "NodePort":
        etp = "Cluster"
    itp = _default(spec.get("internalTrafficPolicy"), "Cluster")
    if itp not in ("Cluster", "Local"):
        raise _invalid(kind, name, "spec.internalTrafficPolicy", f"Unsupported value: "
                       f'{_value(itp)}: supported values: "Cluster", "Local"')
    return ServiceSpec(type=stype, ports=tuple(parsed), selector=selector,
                       cluster_ip=cluster_ip, session_affinity=affinity,
                       affinity_timeout=timeout, external_traffic_policy=etp,
                       internal_traffic_policy=itp)


def _labels(kind: str, name: str, path: str, labels: Any) -> dict[str, str]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise _invalid(kind, name, path, "Invalid value: labels must be a mapping")
    out = {}
    for key, value in labels.items():
        value = "" if value is None else value
        if not isinstance(key, str) or not _LABEL_NAME.match(key):
            raise _invalid(kind, name, path, f"Invalid value: {_value(key)}: name part must "
                           "consist of alphanumeric characters, '-', '_' or '.'")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            raise _invalid(kind, name, path, f"Invalid value: {_value(value)}: a valid label "
                           "must be an empty string or consist of alphanumeric characters, '-', "
                           "'_' or '.', and must start and end with an alphanumeric character")
        out[key] = value
    return out


def _strings(kind: str, name: str, path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise _invalid(kind, name, path, "Invalid value: must be a list of strings")
    return tuple(str(v) for v in value)


def _pod_spec(kind: str, name: str, path: str, spec: dict[str, Any]) -> PodSpec:
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        raise _invalid(kind, name, f"{path}.containers", "Required value")
    restart = _default(spec.get("restartPolicy"), "Always")
    if restart not in RESTART_POLICIES:
        raise _invalid(kind, name, f"{path}.restartPolicy",
                       f"Unsupported value: {_value(restart)}: "
                       'supported values: "Always", "OnFailure", "Never"')
    parsed, seen = [], set()
    for i, c in enumerate(containers):
        cpath = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            raise _invalid(kind, name, cpath, "Invalid value: must be a mapping")
        cname = c.get("name")
        if not cname:
            raise _invalid(kind, name, f"{cpath}.name", "Required value")
        if not isinstance(cname, str) or not _DNS1123_LABEL.match(cname):
            raise _invalid(kind, name, f"{cpath}.name", f"Invalid value: {_value(cname)}: a "
                           "lowercase RFC 1123 label must consist of lower case alphanumeric "
                           "characters or '-'")
        if cname in seen:
            raise _invalid(kind, name, f"{cpath}.name", f"Duplicate value: {_value(cname)}")
        seen.add(cname)
        if not c.get("image"):
            raise _invalid(kind, name, f"{cpath}.image", "Required value")
        command = _strings(kind, name, f"{cpath}.command", c.get("command"))
        args = _strings(kind, name, f"{cpath}.args", c.get("args"))
        if not command and not args:
            raise _invalid(kind, name, f"{cpath}.command", "Required value: kubenet runs no "
                           "images, so a container needs a command (or args) to run")
        parsed.append(Container(
            name=cname, image=str(c["image"]), command=command, args=args,
            env=_env(kind, name, f"{cpath}.env", c.get("env")),
            ports=_ports(kind, name, f"{cpath}.ports", c.get("ports")),
            working_dir=str(c.get("workingDir") or ""),
            readiness=_probe(kind, name, f"{cpath}.readinessProbe", c.get("readinessProbe")),
            liveness=_probe(kind, name, f"{cpath}.livenessProbe", c.get("livenessProbe")),
        ))
    node_name = spec.get("nodeName") or ""
    return PodSpec(containers=tuple(parsed), restart_policy=restart, node_name=str(node_name))


def _probe(kind: str, name: str, path: str, spec: Any) -> Probe | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise _invalid(kind, name, path, "Invalid value: must be a mapping")
    actions = [a for a in ("httpGet", "tcpSocket", "exec", "grpc") if spec.get(a) is not None]
    if len(actions) != 1:
        raise _invalid(kind, name, path, "Required value: must specify a handler type"
                       if not actions else "Forbidden: may not specify more than 1 handler type")
    action = actions[0]
    if action == "grpc":
        raise _invalid(kind, name, f"{path}.grpc", "Unsupported value: the lab's kubelet runs "
                       "httpGet, tcpSocket and exec probes")
    handler = spec[action]
    timing = {}
    for field_name, key, default, low in (("initial_delay", "initialDelaySeconds", 0, 0),
                                          ("period", "periodSeconds", 10, 1),
                                          ("timeout", "timeoutSeconds", 1, 1),
                                          ("success_threshold", "successThreshold", 1, 1),
                                          ("failure_threshold", "failureThreshold", 3, 1)):
        value = _default(spec.get(key), default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise _invalid(kind, name, f"{path}.{key}", f"Invalid value: {_value(value)}: must "
                           f"be greater than or equal to {low}")
        timing[field_name] = value
    if action == "exec":
        command = _strings(kind, name, f"{path}.exec.command", (handler or {}).get("command"))
        if not command:
            raise _invalid(kind, name, f"{path}.exec.command", "Required value")
        return Probe("exec", command=command, **timing)
    port = (handler or {}).get("port")
    if port is None:
        raise _invalid(kind, name, f"{path}.{action}.port", "Required value")
    if isinstance(port, str) and not port.isdigit():
        _port_name(kind, name, f"{path}.{action}.port", port)
    else:
        port = _port_number(kind, name, f"{path}.{action}.port", int(port)
                            if isinstance(port, str) else port)
    probe_path = str(_default((handler or {}).get("path"), "/")) if action == "httpGet" else "/"
    return Probe(action, port=port, path=probe_path, **timing)


def _env(kind: str, name: str, path: str, env: Any) -> tuple[tuple[str, str], ...]:
    if env is None:
        return ()
    if not isinstance(env, list):
        raise _invalid(kind, name, path, "Invalid value: must be a list")
    out = []
    for i, item in enumerate(env):
        if not isinstance(item, dict) or not item.get("name"):
            raise _invalid(kind, name, f"{path}[{i}].name", "Required value")
        out.append((str(item["name"]), str(_default(item.get("value"), ""))))
    return tuple(out)


def _ports(kind: str, name: str, path: str, ports: Any) -> tuple[ContainerPort, ...]:
    if ports is None:
        return ()
    if not isinstance(ports, list):
        raise _invalid(kind, name, path, "Invalid value: must be a list")
    out, names = [], set()
    for i, p in enumerate(ports):
        ppath = f"{path}[{i}]"
        if not isinstance(p, dict):
            raise _invalid(kind, name, ppath, "Invalid value: must be a mapping")
        number = p.get("containerPort")
        if number is None:
            raise _invalid(kind, name, f"{ppath}.containerPort", "Required value")
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= 65535:
            raise _invalid(kind, name, f"{ppath}.containerPort", f"Invalid value: {_value(number)}:"
                           " must be between 1 and 65535, inclusive")
        pname = p.get("name") or ""
        if pname:
            _port_name(kind, name, f"{ppath}.name", pname)
            if pname in names:
                raise _invalid(kind, name, f"{ppath}.name", f"Duplicate value: {_value(pname)}")
            names.add(pname)
        protocol = _protocol(kind, name, f"{ppath}.protocol", p.get("protocol"))
        out.append(ContainerPort(container_port=number, name=pname, protocol=protocol))
    return tuple(out)


def _deployment(manifest: Manifest, spec: dict[str, Any]) -> None:
    kind, name = manifest.kind, manifest.name
    replicas = _default(spec.get("replicas"), 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise _invalid(kind, name, "spec.replicas", f"Invalid value: {_value(replicas)}: "
                       "must be an integer")
    if replicas < 0:
        raise _invalid(kind, name, "spec.replicas", f"Invalid value: {replicas}: must be greater "
                       "than or equal to 0")
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not selector.get("matchLabels"):
        raise _invalid(kind, name, "spec.selector", "Required value")
    if set(selector) - {"matchLabels"}:
        raise _invalid(kind, name, "spec.selector", "Unsupported value: kubenet supports "
                       "matchLabels selectors only")
    match = _labels(kind, name, "spec.selector.matchLabels", selector["matchLabels"])
    template = spec.get("template")
    if not isinstance(template, dict):
        raise _invalid(kind, name, "spec.template", "Required value")
    tmeta = template.get("metadata") or {}
    tlabels = _labels(kind, name, "spec.template.metadata.labels", tmeta.get("labels"))
    if any(tlabels.get(k) != v for k, v in match.items()):
        raise _invalid(kind, name, "spec.template.metadata.labels", f"Invalid value: "
                       f"{_go_map(tlabels)}: `selector` does not match template `labels`")
    tspec = template.get("spec")
    if not isinstance(tspec, dict):
        raise _invalid(kind, name, "spec.template.spec", "Required value")
    pod_spec = _pod_spec(kind, name, "spec.template.spec", tspec)
    if pod_spec.restart_policy != "Always":
        raise _invalid(kind, name, "spec.template.spec.restartPolicy", f'Unsupported value: '
                       f'"{pod_spec.restart_policy}": supported values: "Always"')
    manifest.pod_spec = pod_spec
    manifest.template_labels = tlabels
    manifest.replicas = replicas
    manifest.selector = match
