"""Services' pure parts: address and port allocation, EndpointSlices, and how they print.

The cluster (in the agent) calls these with plain data; nothing here touches a kernel.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from .draws import Draws
from .errors import InvalidManifest
from .manifests import ServiceSpec

__all__ = ["ServiceIPs", "NodePorts", "endpoint_slice", "service_object", "ports_column",
           "endpoints_of", "describe_service", "NODE_PORT_RANGE"]

NODE_PORT_RANGE = (30000, 32767)


class ServiceIPs:
    """Cluster IPs from the service CIDR, as the API server allocates them.

    The range is split in two bands (KEP-3070): addresses asked for by name usually come
    from the lower band (kube-dns's 10.3.240.10), random ones from the upper band first.
    """

    def __init__(self, cidr: str, draws: Draws) -> None:
        self.network = ipaddress.ip_network(cidr)
        self.draws = draws
        size = self.network.num_addresses
        # The static band's size, as the API server computes it (0 for tiny ranges).
        self.static_band = 0 if size < 16 else min(max(16, size // 16), 256)
        self.used: set[str] = set()

    def allocate(self, service: str, requested: str = "") -> str:
        if requested:
            return self._claim(service, requested)
        recorded = self.draws.recorded("cluster-ip")
        if recorded is not None and recorded not in self.used:
            return self._claim(service, recorded)
        last = self.network.num_addresses - 1  # the broadcast address is never handed out
        for band in ((max(self.static_band, 1), last), (1, min(self.static_band, last))):
            free = band[1] - band[0]
            if free <= 0:
                continue
            start = self.draws.integer("cluster-ip", free)
            for step in range(free):
                candidate = str(self.network[band[0] + (start + step) % free])
                if candidate not in self.used:
                    self.used.add(candidate)
                    return candidate
        raise InvalidManifest(f'The Service "{service}" is invalid: spec.clusterIPs: Internal '
                              f"error: range is full ({self.network})")

    def _claim(self, service: str, address: str) -> str:
        prefix = f'The Service "{service}" is invalid: spec.clusterIPs: Invalid value: ' \
                 f'[]string{{"{address}"}}: failed to allocate IP {address}: '
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise InvalidManifest(f'The Service "{service}" is invalid: spec.clusterIPs[0]: '
                                  f'Invalid value: "{address}": must be a valid IP address') \
                from None
        if ip not in self.network or ip in (self.network.network_address,
                                            self.network.broadcast_address):
            raise InvalidManifest(prefix + f"the provided IP ({address}) is not in the valid "
                                  f"range. The range of valid IPs is {self.network}")
        if address in self.used:
            raise InvalidManifest(prefix + "provided IP is already allocated")
        self.used.add(address)
        return address

    def check(self, service: str, requested: str) -> None:
        """Would ``requested`` be accepted? (raise as ``allocate`` would, change nothing)"""
        self._claim(service, requested)
        self.used.discard(requested)

    def release(self, address: str) -> None:
        self.used.discard(address)


class NodePorts:
    """Node ports from 30000-32767, random unless asked for."""

    def __init__(self, draws: Draws) -> None:
        self.draws = draws
        self.used: set[int] = set()

    def allocate(self, service: str, index: int, requested: int = 0) -> int:
        if requested:
            if requested in self.used:
                raise InvalidManifest(f'The Service "{service}" is invalid: spec.ports[{index}]'
                                      f".nodePort: Invalid value: {requested}: provided port is "
                                      "already allocated")
            self.used.add(requested)
            return requested
        low, high = NODE_PORT_RANGE
        span = high - low + 1
        start = self.draws.integer("node-port", span)
        for step in range(span):
            port = low + (start + step) % span
            if port not in self.used:
                self.used.add(port)
                return port
        raise InvalidManifest(f'The Service "{service}" is invalid: no node port left')

    def release(self, ports: Iterable[int]) -> None:
        self.used.difference_update(ports)


def service_object(name: str, namespace: str, labels: dict[str, str], spec: ServiceSpec,
                   cluster_ip: str, node_ports: list[int], uid: str,
                   created_at: str) -> dict[str, Any]:
    """The v1 Service as the API server would return it, defaults filled in."""
    ports = []
    for port, node_port in zip(spec.ports, node_ports, strict=True):
        entry: dict[str, Any] = {}
        if port.name:
            entry["name"] = port.name
        entry.update({"protocol": port.protocol, "port": port.port,
                      "targetPort": port.target_port})
        if node_port:
            entry["nodePort"] = node_port
        ports.append(entry)
    body: dict[str, Any] = {
        "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
        "internalTrafficPolicy": spec.internal_traffic_policy,
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "ports": ports,
    }
    if spec.selector is not None:
        body["selector"] = dict(spec.selector)
    body["sessionAffinity"] = spec.session_affinity
    if spec.session_affinity == "ClientIP":
        body["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": spec.affinity_timeout}}
    if spec.external_traffic_policy:
        body["externalTrafficPolicy"] = spec.external_traffic_policy
    body["type"] = spec.type
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid,
                            "creationTimestamp": created_at}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": body,
            "status": {"loadBalancer": {}}}


def _resolve(target: int | str, pod: dict[str, Any], protocol: str) -> int | None:
    if isinstance(target, int):
        return target
    for c in pod["spec"].get("containers", []):
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == protocol:
                return int(p["containerPort"])
    return None


def endpoint_slice(service: dict[str, Any], pods: list[dict[str, Any]], slice_name: str,
                   ) -> dict[str, Any]:
    """The first EndpointSlice of a Service (the only one unless pods disagree on ports)."""
    return endpoint_slices(service, pods, slice_name)[0]


def endpoint_slices(service: dict[str, Any], pods: list[dict[str, Any]], slice_name: str,
                    ) -> list[dict[str, Any]]:
    """The EndpointSlices the controller keeps for a Service with a selector.

    Every pod that matches and has an address is listed, ready or not: readiness is a
    condition of the endpoint, so consumers (kube-proxy) decide what to do with it.
    Pods whose named target ports resolve to different numbers go in different slices
    (the first keeps ``slice_name``, others get ``-2``, ``-3``...); a pod that cannot
    resolve a named target port is left out.
    """
    spec = service["spec"]
    selector = spec.get("selector") or {}
    ns = service["metadata"]["namespace"]
    matching = [p for p in pods if p["metadata"]["namespace"] == ns
                and p["status"].get("podIP")
                and p["status"]["phase"] not in ("Succeeded", "Failed")
                and all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
    groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for pod in sorted(matching, key=lambda p: ipaddress.ip_address(p["status"]["podIP"])):
        numbers = [_resolve(sp["targetPort"], pod, sp["protocol"]) for sp in spec["ports"]]
        if all(n is not None for n in numbers):
            groups.setdefault(tuple(n for n in numbers if n is not None), []).append(pod)
    if not groups:
        return [_slice(service, slice_name, [], [None] * len(spec["ports"]))]
    return [_slice(service, slice_name if i == 0 else f"{slice_name}-{i + 1}", members,
                   list(numbers)) for i, (numbers, members) in enumerate(groups.items())]


def _slice(service: dict[str, Any], slice_name: str, pods: list[dict[str, Any]],
           resolved_ports: list[int | None]) -> dict[str, Any]:
    spec = service["spec"]
    ns = service["metadata"]["namespace"]
    ports, endpoints = [], []
    for pod in pods:
        ready = pod["status"]["kubenet"].get("ready", False)
        terminating = "deletionTimestamp" in pod["metadata"]
        endpoints.append({
            "addresses": [pod["status"]["podIP"]],
            "conditions": {"ready": ready and not terminating, "serving": ready,
                           "terminating": terminating},
            "nodeName": pod["spec"]["nodeName"],
            "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": ns,
                          "uid": pod["metadata"]["uid"]},
        })
    for sp, number in zip(spec["ports"], resolved_ports, strict=True):
        port: dict[str, Any] = {"name": sp.get("name", ""), "protocol": sp["protocol"]}
        if number is not None:
            port["port"] = number
        ports.append(port)
    name = service["metadata"]["name"]
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": slice_name, "namespace": ns,
                     "labels": {"endpointslice.kubernetes.io/managed-by":
                                "endpointslice-controller.k8s.io",
                                "kubernetes.io/service-name": name},
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                          "uid": service["metadata"]["uid"],
                                          "controller": True, "blockOwnerDeletion": True}]},
        "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
    }


def endpoints_of(slice_: dict[str, Any] | None, ready_only: bool = True) -> list[str]:
    """``IP:port`` of each endpoint, sorted by IP, as `describe` and `get endpoints` list them."""
    if not slice_:
        return []
    out = []
    for ep in slice_["endpoints"]:
        if ready_only and not ep["conditions"].get("ready"):
            continue
        for address in ep["addresses"]:
            for port in slice_["ports"]:
                if "port" in port:
                    out.append((ipaddress.ip_address(address), port["port"], address))
    return [f"{a}:{p}" for _, p, a in sorted(set(out))]


def ports_column(service: dict[str, Any]) -> str:
    """PORT(S) of ``kubectl get services``: 80/TCP, or 80:30080/TCP for a NodePort."""
    parts = []
    for p in service["spec"]["ports"]:
        if p.get("nodePort"):
            parts.append(f"{p['port']}:{p['nodePort']}/{p['protocol']}")
        else:
            parts.append(f"{p['port']}/{p['protocol']}")
    return ",".join(parts)


def _labels(labels: dict[str, str] | None) -> str:
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def describe_service(service: dict[str, Any], slice_: dict[str, Any] | None) -> str:
    """``kubectl describe service``, in a current kubectl's layout."""
    meta, spec = service["metadata"], service["spec"]
    rows: list[tuple[str, str]] = [
        ("Name", meta["name"]), ("Namespace", meta["namespace"]),
        ("Labels", _labels(meta.get("labels"))), ("Annotations", "<none>"),
        ("Selector", _labels(spec.get("selector"))), ("Type", spec["type"]),
        ("IP Family Policy", spec["ipFamilyPolicy"]),
        ("IP Families", ",".join(spec["ipFamilies"])),
        ("IP", spec["clusterIP"]), ("IPs", ",".join(spec["clusterIPs"])),
    ]
    all_endpoints = endpoints_of(slice_)
    for p in spec["ports"]:
        name = p.get("name") or "<unset>"
        rows.append(("Port", f"{name}  {p['port']}/{p['protocol']}"))
        rows.append(("TargetPort", f"{p['targetPort']}/{p['protocol']}"))
        if p.get("nodePort"):
            rows.append(("NodePort", f"{name}  {p['nodePort']}/{p['protocol']}"))
        port_eps = _endpoints_for_port(slice_, p.get("name", ""))
        rows.append(("Endpoints", ",".join(port_eps) if port_eps else
                     ("<none>" if not all_endpoints else "")))
    rows.append(("Session Affinity", spec["sessionAffinity"]))
    if spec.get("externalTrafficPolicy"):
        rows.append(("External Traffic Policy", spec["externalTrafficPolicy"]))
    rows.append(("Internal Traffic Policy", spec["internalTrafficPolicy"]))
    rows.append(("Events", "<none>"))
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{k + ':':<{width}}{v}".rstrip() for k, v in rows)


def _endpoints_for_port(slice_: dict[str, Any] | None, port_name: str) -> list[str]:
    if not slice_:
        return []
    numbers = [p["port"] for p in slice_["ports"] if p.get("name", "") == port_name
               and "port" in p]
    out = []
    for ep in slice_["endpoints"]:
        if ep["conditions"].get("ready"):
            out += [(ipaddress.ip_address(a), n, a) for a in ep["addresses"] for n in numbers]
    return [f"{a}:{n}" for _, n, a in sorted(out)]


def service_env(services: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """The variables the kubelet gives every container for each Service of its namespace
    (``enableServiceLinks``): ``SERVICE_TEST_SERVICE_HOST=10.3.241.152`` and kin."""
    env: dict[str, str] = {}
    for svc in services:
        meta, spec = svc["metadata"], svc["spec"]
        ip = spec.get("clusterIP")
        if meta["namespace"] != namespace or not ip or ip == "None" or not spec["ports"]:
            continue
        prefix = meta["name"].upper().replace("-", "_")
        first = spec["ports"][0]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
        for port in spec["ports"]:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = \
                    str(port["port"])
        env[f"{prefix}_PORT"] = f"{first['protocol'].lower()}://{ip}:{first['port']}"
        for port in spec["ports"]:
            proto = port["protocol"]
            base = f"{prefix}_PORT_{port['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{base}_PROTO"] = proto.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = ip
    return env
