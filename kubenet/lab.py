"""``kubenet.Lab``: the Python face of a lab, mirroring the command line."""

from __future__ import annotations

import atexit
import itertools
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sandbox, state
from .errors import BadRequest, NotFound
from .inventory import Inventory
from .printers import Table, render
from .responses import Responses

__all__ = ["Lab", "ExecResult"]

_counter = itertools.count(1)


class Text(str):
    """A string that shows itself as plain text in a notebook, without quotes."""

    def __repr__(self) -> str:
        return str(self)

    def grep(self, pattern: str) -> Text:
        """The lines that contain ``pattern`` (plain text, not a regular expression)."""
        return Text("\n".join(line for line in self.splitlines() if pattern in line))

    def tail(self, n: int = 10) -> Text:
        return Text("\n".join(self.splitlines()[-n:]))


@dataclass
class ExecResult:
    """What a command run in the lab printed, and how it ended."""

    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return self.stdout + self.stderr

    __repr__ = __str__

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Lab:
    """A running lab: the article's cluster in a private sandbox of namespaces.

    ``Lab()`` builds a new lab with a unique name; it ends with ``close()``, at the end of
    a ``with`` block, or when this Python process ends. ``Lab.attach(NAME)`` uses a lab
    started by ``kubenet up`` without owning it.
    """

    def __init__(self, scenario: str = "article", *, name: str | None = None, nodes: int = 2,
                 seed: int = 0, proxy_mode: str = "iptables") -> None:
        self.name = state.valid_name(name or f"lab-{os.getpid()}-{next(_counter)}")
        self._owner_fd: int | None = None
        self._record, self._owner_fd = sandbox.start(self.name, owned=True, nodes=nodes,
                                                     seed=seed, proxy_mode=proxy_mode)
        atexit.register(self.close)
        try:
            self.output = sandbox.call(self._record, "up", scenario=scenario)
        except BaseException:
            self.close()
            raise

    @classmethod
    def attach(cls, name: str = state.DEFAULT_LAB) -> Lab:
        lab = cls.__new__(cls)
        lab.name = name
        lab._owner_fd = None
        lab._record = state.read_record(name)
        lab.output = []
        return lab

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """End the lab: every namespace, link, rule and process of it is gone on return."""
        if self._owner_fd is None:
            return
        sandbox.stop(self._record)
        os.close(self._owner_fd)
        self._owner_fd = None
        atexit.unregister(self.close)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, op: str, **args: Any) -> Any:
        return sandbox.call(self._record, op, **args)

    # -- kubectl-shaped verbs ---------------------------------------------------------
    def apply(self, manifest: str | Path) -> list[str]:
        """Apply a manifest file, or YAML text; returns kubectl's lines."""
        text, source = _manifest(manifest)
        return self._call("apply", text=text, source=source)

    def delete(self, kind: str, name: str = "", namespace: str = "default") -> list[str]:
        """``delete pod NAME``, ``delete deployment NAME``, or ``delete("-f", path)``."""
        if kind in ("-f", "file"):
            text, source = _manifest(name)
            return self._call("delete", text=text, source=source)
        return self._call("delete", kind=kind, name=name, namespace=namespace)

    def delete_pod(self, name: str) -> list[str]:
        return self.delete("pod", name)

    def scale(self, deployment: str, replicas: int) -> str:
        return self._call("scale", name=deployment, replicas=replicas)

    def get(self, resource: str = "pods", name: str = "", output: str = "",
            namespace: str = "default", all_namespaces: bool = False) -> Table | str:
        return render(self._call("snapshot"), resource, output, name, namespace, all_namespaces)

    def get_pods(self, wide: bool = True) -> Table:
        table = self.get("pods", output="wide" if wide else "")
        assert isinstance(table, Table)
        return table

    def pods(self) -> list[dict[str, Any]]:
        """The pods as Kubernetes-shaped dictionaries (``get pods -o json``'s items)."""
        return [p for p in self._call("snapshot")["pods"]
                if p["metadata"]["namespace"] == "default"]

    def pod_ips(self, **labels: str) -> list[str]:
        """Like ``get pods --selector=... -o jsonpath='{.items[*].status.podIP}'``."""
        return [p["status"]["podIP"] for p in self.pods()
                if all(p["metadata"].get("labels", {}).get(k) == v for k, v in labels.items())]

    def describe(self, kind: str, name: str, namespace: str = "default") -> Text:
        """``kubectl describe service NAME``."""
        return Text(self._call("describe", kind=kind, name=name, namespace=namespace))

    def rules(self, node: str, table: str = "", counters: bool = False) -> Text:
        """``iptables-save`` of a node: the rules its kube-proxy wrote."""
        return Text(self._call("rules", node=node, table=table, counters=counters)["text"])

    def set_proxy_mode(self, mode: str) -> str:
        """Run kube-proxy in ``iptables`` or ``userspace`` mode on every node from now on."""
        return self._call("proxy_mode", mode=mode)

    def drain(self, node: str) -> list[str]:
        """``kubectl drain NODE``: no new pods there, and its pods move elsewhere."""
        return self._call("drain", node=node)

    def uncordon(self, node: str) -> str:
        return self._call("uncordon", node=node)

    def probe(self, action: str, pod: str) -> str:
        """``fail`` or ``heal`` a pod's httpGet/tcpSocket probes (its kubelet's packets are
        dropped in the pod, so the probes time out for real)."""
        return self._call("probe", action=action, name=pod)

    def proxy_log(self, node: str) -> Text:
        """What the userspace proxy process of ``node`` logged: one line per connection."""
        return Text(self._call("proxy_log", node=node))

    def conntrack(self, node: str, address: str) -> Table:
        """The connections ``node``'s kernel tracks to or from ``address``."""
        from .conntrack import conntrack_table

        out = self.exec(node, "conntrack", "-L", "-o", "extended")
        return conntrack_table(out.stdout, address)

    def export(self, *resources: str) -> Text:
        """Objects as multi-document YAML, like ``kubectl get svc,endpointslices -A -o yaml``."""
        import json

        import yaml

        snapshot = self._call("snapshot")
        docs = []
        for resource in resources:
            docs += json.loads(str(render(snapshot, resource, "json",
                                          all_namespaces=True)))["items"]
        return Text(yaml.safe_dump_all(docs, sort_keys=False))

    def kube_proxy(self, action: str, node: str) -> str:
        """Stop or start the kube-proxy of ``node`` (its rules stay while it is stopped)."""
        return self._call("kube_proxy", action=action, node=node)

    def extra_services(self, node: str, count: int, endpoints: list[str]) -> dict[str, float]:
        """Hand ``node``'s kube-proxy ``count`` more Services (``scale/svc-00000`` ...,
        two endpoints each: ``endpoints``), as if the API server held them, and sync it
        now. Returns the sync's wall times in seconds: ``render`` (kubenet's Python),
        ``save`` and ``apply`` (iptables-restore, or nft -f). ``count=0`` removes them."""
        return self._call("extra_services", node=node, count=count, endpoints=list(endpoints))

    def logs(self, pod: str, container: str | None = None, previous: bool = False) -> Text:
        return Text(self._call("logs", name=pod, container=container, previous=previous))

    def exec(self, target: str, *argv: str, stdin: str | None = None,
             timeout: float = 60.0) -> ExecResult:
        """Run a command in a running pod, a node (``node1``), ``gateway`` or ``external``."""
        if len(argv) == 1 and " " in argv[0]:
            argv = ("sh", "-c", argv[0])
        reply = self._call("exec", target=target, argv=list(argv), stdin=stdin, timeout=timeout)
        return ExecResult(reply["returncode"], reply["stdout"], reply["stderr"])

    def wait(self, timeout: float = 30.0) -> None:
        """Until every pod is Ready or finished."""
        if not self._call("wait", timeout=timeout):
            raise BadRequest(f"error: timed out after {timeout:g}s waiting for pods")

    def wait_for(self, pod: str, phase: str = "Succeeded", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in self.pods() if p["metadata"]["name"] == pod]
            if found and found[0]["status"]["phase"] == phase:
                return
            time.sleep(0.05)
        raise BadRequest(f'error: timed out waiting for pod "{pod}" to be {phase}')

    def inventory(self) -> Inventory:
        """Every namespace's links, addresses and routes, as the kernel reports them now."""
        return Inventory(self._call("inventory"))

    def draw(self, trace: Any = None) -> Any:
        """The lab as the kernel reports it now, as a diagram (a ``kubenet.draw.Diagram``):
        nodes, bridges, veth pairs, pods, the gateway's routes, and the Services' cluster IPs
        that no device holds. Given a trace (its ``--json`` dict), its path drawn on it."""
        from .draw import draw_topology, draw_trace

        services = str(self.get("services", output="json", all_namespaces=True))
        cidr = self.info()["service_cidr"]
        if trace is None:
            return draw_topology(self.inventory(), services, service_cidr=cidr)
        return draw_trace(self.inventory(), trace, services, service_cidr=cidr)

    def draw_rules(self, node: str, table: str = "nat") -> Any:
        """``node``'s nat chains as a diagram: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP -> DNAT,
        each jump with its probability and its packet counters. In nftables mode, kube-proxy's
        ``table ip kube-proxy`` (read as ``nft -j`` JSON): services -> the service-ips map ->
        service-... -> numgen, p=1/N -> endpoint-... -> dnat. ``table="filter"`` draws the
        filter chains instead (nftables mode: also ``"all"``)."""
        from .draw import draw_rules

        info = self.info()
        if info["proxy_mode"] != "nftables":
            return draw_rules(self.rules(node, counters=True), node=node, table=table)
        if node not in [n["name"] for n in info["nodes"]]:
            raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
        out = self.exec(node, "nft", "-j", "list", "table", "ip", "kube-proxy")
        if not out.ok:
            raise BadRequest(f"error: nft failed on {node}: {out.stderr.strip()}")
        return draw_rules(out.stdout, node=node, table=table)

    def send_requests(self, pod: str, target: str, count: int = 100) -> Responses:
        """``count`` HTTP requests from ``pod`` to ``target`` (``host:port``), one connection
        each, with nc; returns who answered."""
        host, _, port = target.rpartition(":")
        script = (f"for i in $(seq {int(count)}); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | "
                  f"nc -w 2 {shlex.quote(host)} {int(port)}; echo; done")
        out = self.exec(pod, "sh", "-c", script, timeout=max(60.0, count * 0.5))
        return Responses.from_output(out.stdout, count)

    def endpoints(self, service: str, namespace: str = "default") -> list[str]:
        """The ready ``IP:port`` endpoints of a Service, sorted by IP as ``describe`` lists
        them."""
        from .services import endpoints_of

        slices = [sl for sl in self._call("snapshot")["endpointslices"]
                  if sl["metadata"]["namespace"] == namespace
                  and sl["metadata"]["labels"]["kubernetes.io/service-name"] == service]
        return sorted({e for sl in slices for e in endpoints_of(sl)},
                      key=lambda e: tuple(int(x) for x in e.replace(":", ".").split(".")))

    def wait_until_endpoints(self, service: str, count: int, timeout: float = 30.0) -> None:
        """Until the Service lists ``count`` ready endpoints and every kube-proxy has synced
        (for readiness changes, which come from probes on their own period)."""
        deadline = time.monotonic() + timeout
        while len(self.endpoints(service)) != count:
            if time.monotonic() > deadline:
                raise BadRequest(f'error: timed out waiting for service "{service}" to have '
                                 f"{count} ready endpoint(s)")
            time.sleep(0.1)
        self.wait(timeout)

    def trace(self, source: str, dest: str, json: bool = False, namespace: str = "default",
              ) -> Any:
        """Send a real TCP SYN from ``source`` (a running pod, a node, ``gateway`` or
        ``external``) to ``dest`` (``HOST:PORT``; HOST an address or a Service name) and
        show its walk: every interface it crossed, the rules it matched on each node (the
        kernel's own trace), the conntrack entries and the reply. Returns a
        :class:`kubenet.trace.Trace` (shown as tables), or with ``json=True`` the document
        ``kubenet trace --json`` prints."""
        from .trace import Trace

        result = Trace.from_wire(self._call("trace", source=source, dest=dest,
                                            namespace=namespace))
        return result.to_json() if json else result

    def transcript(self) -> str:
        """Every iproute2 command and sysctl write that built this lab, in order."""
        return "\n".join(self._call("transcript"))

    def info(self) -> dict[str, Any]:
        return self._call("info")

    def __repr__(self) -> str:
        try:
            info = self.info()
        except Exception:  # an ended lab still prints
            return f"<kubenet.Lab {self.name!r}: not running>"
        lines = [f"Lab {self.name} ({info['tier']} tier, kube-proxy in {info['proxy_mode']} mode)",
                 f"  node network    {info['node_cidr']}   gateway {info['gateway']}",
                 f"  pod network     {info['pod_cidr']}",
                 f"  service network {info['service_cidr']}   (no device holds these)"]
        for n in info["nodes"]:
            lines.append(f"  {n['name']:<6} eth0 {n['ip']:<11} cbr0 {n['bridge_ip']}"
                         f"  pods {n['pod_cidr']}")
        lines.append(f"  external client {info['external']} (beyond the gateway)")
        return "\n".join(lines)


def _manifest(manifest: str | Path) -> tuple[str, str]:
    if isinstance(manifest, Path) or "\n" not in str(manifest):
        path = Path(manifest)
        try:
            return path.read_text(), str(manifest)
        except OSError as err:
            raise BadRequest(f'error: the path "{manifest}" does not exist') from err
    return str(manifest), "STDIN"
