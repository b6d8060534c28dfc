"""kubectl's output shapes, from Kubernetes-shaped objects (pure)."""

from __future__ import annotations

import html
import json
from typing import Any

import yaml

__all__ = ["Table", "human_duration", "pods_table", "deployments_table", "nodes_table",
           "render", "RESOURCES"]


def human_duration(seconds: float) -> str:
    """kubectl's AGE (apimachinery's HumanDuration): 15s, 2m3s, 17m, 3h5m, 2d5h, 3y10d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"  # a second of clock skew is "now"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        days = (h // 24) % 365
        return f"{h // 24 // 365}y{days}d" if days else f"{h // 24 // 365}y"
    return f"{h // 24 // 365}y"


class Table:
    """Rows under upper-case headers, printed like kubectl (columns 3 spaces apart)."""

    def __init__(self, headers: list[str], rows: list[list[str]], empty: str = "") -> None:
        self.headers = headers
        self.rows = rows
        self.empty = empty

    def __str__(self) -> str:
        if not self.rows:
            return self.empty
        widths = [max(len(str(r[i])) for r in [self.headers, *self.rows])
                  for i in range(len(self.headers))]
        lines = ["   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [self.headers, *self.rows]]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if not self.rows:
            return f"<pre>{html.escape(self.empty)}</pre>"
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def column(self, header: str) -> list[str]:
        i = self.headers.index(header)
        return [r[i] for r in self.rows]


def _kn(obj: dict[str, Any], key: str, default: Any = None) -> Any:
    return obj.get("status", {}).get("kubenet", {}).get(key, default)


def pods_table(pods: list[dict[str, Any]], wide: bool = False, namespace: str = "default",
               all_namespaces: bool = False) -> Table:
    headers = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers += ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    rows = []
    for p in pods:
        meta, status = p["metadata"], p["status"]
        if not all_namespaces and meta["namespace"] != namespace:
            continue
        cs = status.get("containerStatuses", [])
        row = [meta["name"], f"{sum(c['ready'] for c in cs)}/{len(cs)}",
               _kn(p, "statusReason", status["phase"]),
               str(sum(c["restartCount"] for c in cs)), human_duration(_kn(p, "age", 0))]
        if all_namespaces:
            row.insert(0, meta["namespace"])
        if wide:
            row += [status.get("podIP") or "<none>", p["spec"].get("nodeName") or "<none>",
                    "<none>", "<none>"]
        rows.append(row)
    where = "any namespace" if all_namespaces else f"{namespace} namespace"
    return Table(headers, rows, f"No resources found in {where}.")


def deployments_table(deps: list[dict[str, Any]], wide: bool = False,
                      namespace: str = "default") -> Table:
    headers = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    if wide:
        headers += ["CONTAINERS", "IMAGES", "SELECTOR"]
    rows = []
    for d in deps:
        if d["metadata"].get("namespace", "default") != namespace:
            continue
        st, spec = d["status"], d["spec"]
        row = [d["metadata"]["name"], f"{st['readyReplicas']}/{spec.get('replicas', 1)}",
               str(st["updatedReplicas"]), str(st["availableReplicas"]),
               human_duration(_kn(d, "age", 0))]
        if wide:
            cs = spec["template"]["spec"]["containers"]
            row += [",".join(c["name"] for c in cs), ",".join(c["image"] for c in cs),
                    ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())]
        rows.append(row)
    return Table(headers, rows, f"No resources found in {namespace} namespace.")


def nodes_table(nodes: list[dict[str, Any]], wide: bool = False) -> Table:
    headers = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    if wide:
        headers += ["INTERNAL-IP", "EXTERNAL-IP", "POD-CIDR"]
    rows = []
    for n in nodes:
        status = "Ready,SchedulingDisabled" if n["spec"].get("unschedulable") else "Ready"
        row = [n["metadata"]["name"], status, "<none>", human_duration(_kn(n, "age", 0)),
               "kubenet"]
        if wide:
            row += [n["status"]["addresses"][0]["address"], "<none>", n["spec"]["podCIDR"]]
        rows.append(row)
    return Table(headers, rows, "No resources found")


def _none_found(namespace: str, all_namespaces: bool) -> str:
    return "No resources found" if all_namespaces else \
        f"No resources found in {namespace} namespace."


def services_table(services: list[dict[str, Any]], wide: bool = False,
                   all_namespaces: bool = False, namespace: str = "default") -> Table:
    from .services import ports_column

    headers = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    if wide:
        headers.append("SELECTOR")
    rows = []
    for svc in services:
        spec = svc["spec"]
        external = ",".join(spec.get("externalIPs", [])) or "<none>"
        row = [svc["metadata"]["name"], spec["type"], spec["clusterIP"], external,
               ports_column(svc), human_duration(_kn(svc, "age", 0))]
        if all_namespaces:
            row.insert(0, svc["metadata"]["namespace"])
        if wide:
            selector = spec.get("selector")
            row.append(",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                       if selector else "<none>")
        rows.append(row)
    return Table(headers, rows, _none_found(namespace, all_namespaces))


def _first_three(items: list[str]) -> str:
    if not items:
        return "<none>"
    more = f" + {len(items) - 3} more..." if len(items) > 3 else ""
    return ",".join(items[:3]) + more


def endpointslices_table(slices: list[dict[str, Any]], all_namespaces: bool = False,
                         namespace: str = "default") -> Table:
    headers = ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for sl in slices:
        ports = [str(p["port"]) for p in sl["ports"] if "port" in p]
        addresses = [a for ep in sl["endpoints"] for a in ep["addresses"]]
        row = [sl["metadata"]["name"], sl["addressType"], ",".join(ports) or "<unset>",
               _first_three(addresses), human_duration(sl.get("kubenet_age", 0))]
        if all_namespaces:
            row.insert(0, sl["metadata"]["namespace"])
        rows.append(row)
    return Table(headers, rows, _none_found(namespace, all_namespaces))


def endpoints_table(slices: list[dict[str, Any]], all_namespaces: bool = False,
                    namespace: str = "default") -> Table:
    from .services import endpoints_of

    headers = ["NAME", "ENDPOINTS", "AGE"]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
    rows = []
    for sl in slices:
        row = [sl["metadata"]["labels"]["kubernetes.io/service-name"],
               _first_three(endpoints_of(sl)), human_duration(sl.get("kubenet_age", 0))]
        if all_namespaces:
            row.insert(0, sl["metadata"]["namespace"])
        rows.append(row)
    return Table(headers, rows, _none_found(namespace, all_namespaces))


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop kubenet's private bookkeeping before printing an object as JSON or YAML."""
    out = json.loads(json.dumps(obj))
    out.get("status", {}).pop("kubenet", None)
    out.pop("kubenet_age", None)
    out.pop("kubenet_slice", None)
    return out


RESOURCES = {
    "pods": "pods", "pod": "pods", "po": "pods",
    "deployments": "deployments", "deployment": "deployments", "deploy": "deployments",
    "deployments.apps": "deployments",
    "nodes": "nodes", "node": "nodes", "no": "nodes",
    "services": "services", "service": "services", "svc": "services",
    "endpointslices": "endpointslices", "endpointslice": "endpointslices",
    "endpointslices.discovery.k8s.io": "endpointslices",
    "endpoints": "endpoints", "endpoint": "endpoints", "ep": "endpoints",
}
_SINGULAR = {"pods": "pods", "deployments": "deployments.apps", "nodes": "nodes",
             "services": "services", "endpointslices": "endpointslices.discovery.k8s.io",
             "endpoints": "endpoints"}
_NAME_PREFIX = {"pods": "pod", "deployments": "deployment.apps", "nodes": "node",
                "services": "service", "endpointslices": "endpointslice.discovery.k8s.io",
                "endpoints": "endpoints"}


def render(snapshot: dict[str, Any], resource: str, output: str = "", name: str = "",
           namespace: str = "default", all_namespaces: bool = False) -> str | Table:
    """``kubectl get RESOURCE [NAME] [-o wide|json|yaml|name]`` over a lab snapshot."""
    from .errors import BadRequest, NotFound

    kind = RESOURCES.get(resource)
    if kind is None:
        raise BadRequest(f'error: the server doesn\'t have a resource type "{resource}"')
    items = snapshot["endpointslices" if kind == "endpoints" else kind]
    if kind == "endpoints":
        items = [endpoints_object(sl) for sl in items]
    if kind != "nodes" and not all_namespaces:
        items = [i for i in items if i["metadata"].get("namespace", "default") == namespace]
    if name:
        items = [i for i in items if i["metadata"]["name"] == name]
        if not items:
            raise NotFound(f'Error from server (NotFound): {_SINGULAR[kind]} "{name}" not found')
    if output in ("json", "yaml"):
        if name:
            doc: dict[str, Any] = _clean(items[0])
        else:
            doc = {"apiVersion": "v1", "kind": "List", "items": [_clean(i) for i in items]}
        if output == "json":
            return json.dumps(doc, indent=4)
        return yaml.safe_dump(doc, sort_keys=False).rstrip()
    if output == "name":
        return "\n".join(f"{_NAME_PREFIX[kind]}/{i['metadata']['name']}" for i in items)
    if output not in ("", "wide"):
        raise BadRequest(f'error: unable to match a printer suitable for the output format '
                         f'"{output}", allowed formats are: json,name,wide,yaml')
    wide = output == "wide"
    if kind == "pods":
        return pods_table(items, wide, namespace, all_namespaces)
    if kind == "deployments":
        return deployments_table(items, wide, namespace)
    if kind == "services":
        return services_table(items, wide, all_namespaces, namespace)
    if kind == "endpointslices":
        return endpointslices_table(items, all_namespaces, namespace)
    if kind == "endpoints":
        return endpoints_table([i["kubenet_slice"] for i in items], all_namespaces, namespace)
    return nodes_table(items, wide)


def endpoints_object(slice_: dict[str, Any]) -> dict[str, Any]:
    """The legacy v1 Endpoints of a Service, mirrored from its EndpointSlice."""
    ready, not_ready = [], []
    for ep in slice_["endpoints"]:
        for address in ep["addresses"]:
            entry = {"ip": address, "nodeName": ep.get("nodeName"),
                     "targetRef": ep.get("targetRef")}
            (ready if ep["conditions"].get("ready") else not_ready).append(entry)
    subset: dict[str, Any] = {}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    subset["ports"] = [{k: v for k, v in p.items() if v != ""} for p in slice_["ports"]
                       if "port" in p]
    meta = slice_["metadata"]
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta["labels"]["kubernetes.io/service-name"],
                         "namespace": meta["namespace"]},
            "subsets": [subset] if ready or not_ready else [],
            "kubenet_slice": slice_}
