"""The lab's control plane and kubelets, living in the agent inside the sandbox.

It keeps the objects (Pods, Deployments), schedules pods onto nodes, allocates their
addresses, runs their containers, and keeps each Deployment at its replica count. Every
change happens under one lock; waiters use the condition ``changed``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .dns import records_for
from .draws import Draws
from .errors import BadRequest, InvalidManifest, NotFound
from .ipam import HostLocal
from .manifests import Container, Manifest, PodSpec, parse_manifests
from .naming import template_hash
from .net import Net, veth_name
from .probes import resolve_port, run_probe
from .proxy import PROXY_MODES, IptablesProxy, NftablesProxy, Proxy, UserspaceProxy
from .runtime import (
    POD_PATH,
    PodSandbox,
    expand,
    listening_tcp_ports,
    node_environment,
    start_container,
    stop_process_group,
)
from .services import (
    NodePorts,
    ServiceIPs,
    describe_service,
    endpoint_slices,
    service_env,
    service_object,
)
from .system import dns_manifests
from .topology import NodeSpec, PodPlumbing, Topology

__all__ = ["Cluster"]

# kubectl's names for what `delete KIND NAME` takes, to the lab's own
DELETE_KINDS = {"po": "pod", "pods": "pod", "deploy": "deployment", "deployments": "deployment",
                "deployments.apps": "deployment", "svc": "service", "services": "service",
                "endpointslices": "endpointslice",
                "endpointslices.discovery.k8s.io": "endpointslice"}
PROXY_CLASSES: dict[str, type[Proxy]] = {"iptables": IptablesProxy, "userspace": UserspaceProxy,
                                         "nftables": NftablesProxy}

CLUSTER_DNS = "10.3.240.10"
BACKOFF_START, BACKOFF_MAX = 1.0, 20.0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerState:
    spec: Container
    proc: subprocess.Popen | None = None
    restarts: int = 0
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    exit_code: int | None = None
    started_at: str = ""
    finished_at: str = ""
    generation: int = 0
    probe_ready: bool = False  # the readiness probe's verdict (no probe: see _is_ready)
    was_ready: bool = False  # the readiness probe succeeded at least once in this run
    last_probe: dict[str, str] = field(default_factory=dict)  # kind -> what happened


@dataclass
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]
    spec: PodSpec
    raw_spec: dict[str, Any]
    node: NodeSpec
    ip: str
    uid: str
    owner: tuple[str, str] | None = None  # (kind, name) of the controller
    created: float = field(default_factory=time.time)
    created_at: str = field(default_factory=_now)
    start_time: str = ""
    containers: list[ContainerState] = field(default_factory=list)
    sandbox: PodSandbox | None = None
    deleting: bool = False
    ready: bool = False
    ready_since: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def netns(self) -> str:
        return f"{self.namespace}.{self.name}"

    @property
    def phase(self) -> str:
        states = [c.state for c in self.containers]
        if self.sandbox is None or "waiting" in states and not any(c.restarts for c in
                                                                     self.containers):
            return "Pending"
        if "running" in states:
            return "Running"
        if all(s == "terminated" for s in states):
            codes = [c.exit_code for c in self.containers]
            policy = self.spec.restart_policy
            if policy == "Never" or (policy == "OnFailure" and all(c == 0 for c in codes)):
                return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        return "Running"

    @property
    def status_reason(self) -> str:
        """The STATUS column of ``kubectl get pods``."""
        if self.deleting:
            return "Terminating"
        for c in self.containers:
            if c.state == "waiting":
                return c.reason
        for c in self.containers:
            if c.state == "terminated" and self.phase != "Running":
                return "Completed" if c.exit_code == 0 else "Error"
        return self.phase


class _Applied:
    """An object kept from a manifest: its name and namespace are the manifest's."""

    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def namespace(self) -> str:
        return self.manifest.namespace


@dataclass
class Deployment(_Applied):
    manifest: Manifest
    hash: str
    uid: str
    created: float = field(default_factory=time.time)
    created_at: str = field(default_factory=_now)

    @property
    def replicaset(self) -> str:
        return f"{self.name}-{self.hash}"


@dataclass
class Service(_Applied):
    manifest: Manifest
    cluster_ip: str
    node_ports: list[int]
    uid: str
    slice_name: str
    created: float = field(default_factory=time.time)
    created_at: str = field(default_factory=_now)

    def object(self) -> dict[str, Any]:
        assert self.manifest.service is not None
        obj = service_object(self.name, self.namespace, self.manifest.labels,
                             self.manifest.service, self.cluster_ip, self.node_ports, self.uid,
                             self.created_at)
        obj["status"]["kubenet"] = {"age": time.time() - self.created}
        return obj


class Cluster:
    """Objects, scheduler, IPAM, kubelets and the Deployment controller of one lab."""

    def __init__(self, topology: Topology, draws: Draws, workroot: Path, net: Net,
                 with_dns: bool = True, proxy_mode: str = "iptables") -> None:
        if proxy_mode not in PROXY_MODES:
            raise BadRequest(f'error: unknown proxy mode "{proxy_mode}" (choose from: '
                             f'{", ".join(PROXY_MODES)})')
        self.with_dns = with_dns
        self.proxy_mode = proxy_mode
        self.proxies: dict[str, Proxy] = {}
        self.cordoned: set[str] = set()
        self.manual_slices: dict[tuple[str, str], dict[str, Any]] = {}
        self.topology = topology
        self.draws = draws
        self.system_draws = Draws(seed=1)  # kube-system never consumes the article's draws
        self.workroot = workroot
        self.net = net
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.nodes = {n.name: n for n in topology.nodes}
        self.ipam = {n.name: HostLocal(n.pod_cidr) for n in topology.nodes}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.service_ips = ServiceIPs(topology.service_cidr, draws)
        self.node_ports = NodePorts(draws)
        self.slice_draws = Draws(seed=2)  # slice names never consume the article's draws
        self.version = 0  # bumped on every change; kube-proxies sync up to it
        self.closing = False
        self._started = time.time()
        self._kubelet = threading.Thread(target=self._kubelet_loop, daemon=True)

    def _bump(self) -> None:
        self.version += 1
        self.changed.notify_all()

    # -- the network ---------------------------------------------------------------
    def build(self) -> None:
        """Gateway, external client and nodes, plumbed in a fixed order."""
        topo = self.topology
        for ns in topo.namespaces():
            self.net.add_netns(ns)
        self.net.batch(topo.gateway_ns, topo.gateway_commands())
        self.net.sysctls(topo.gateway_ns, topo.gateway_sysctls())
        self.net.batch(topo.external_ns, topo.external_commands())
        for node in topo.nodes:
            self.net.batch(node.name, topo.node_commands(node))
            self.net.sysctls(node.name, topo.node_sysctls())
        self._wait_for_carrier()
        self._kubelet.start()
        proxy_class = PROXY_CLASSES[self.proxy_mode]
        self.proxies = {n.name: proxy_class(self, n) for n in topo.nodes}
        for proxy in self.proxies.values():
            proxy.start()
        if self.with_dns:
            self.apply(dns_manifests(self.workroot / "dns" / "records.json"), "kube-dns.yaml")

    def usable(self) -> bool:
        """Pods settled and every running kube-proxy has synced the latest state."""
        return self.settled() and all(p.synced for p in self.proxies.values() if p.running)

    def _wait_for_carrier(self, timeout: float = 3.0) -> None:
        """Return once every route's link has carrier (the kernel reports it a moment late)."""
        deadline = time.monotonic() + timeout
        for ns in self.topology.namespaces():
            while "linkdown" in subprocess.run(["ip", "-n", ns, "route"], capture_output=True,
                                               text=True).stdout:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)

    # -- apply / delete --------------------------------------------------------------
    def apply(self, text: str, source: str) -> list[str]:
        manifests = parse_manifests(text, source)
        with self.lock:
            for m in manifests:
                self._check(m)
            return [self._apply_one(m) for m in manifests]

    def _check(self, m: Manifest) -> None:
        """Refuse, before anything changes, what the API server would refuse."""
        if m.kind == "Service":
            self._check_service(m)
            return
        if m.kind == "EndpointSlice":
            return
        assert m.pod_spec is not None
        node = m.pod_spec.node_name
        if node and node not in self.nodes:
            raise InvalidManifest(f'The {m.kind} "{m.name}" is invalid: spec.nodeName: Invalid '
                                  f'value: "{node}": no such node (nodes: {", ".join(self.nodes)})')
        if m.kind == "Pod":
            pod = self.pods.get((m.namespace, m.name))
            if pod and (pod.spec != m.pod_spec or pod.labels != m.labels):
                raise InvalidManifest(f'The Pod "{m.name}" is invalid: spec: Forbidden: pod '
                                      "updates may not change fields other than "
                                      "`spec.containers[*].image`")

    def _check_service(self, m: Manifest) -> None:
        spec = m.service
        assert spec is not None
        old = self.services.get((m.namespace, m.name))
        if spec.cluster_ip == "None":
            raise InvalidManifest(f'The Service "{m.name}" is invalid: spec.clusterIP: '
                                  'Unsupported value: "None": the lab has no headless services')
        if spec.cluster_ip:
            if old is not None and spec.cluster_ip != old.cluster_ip:
                raise InvalidManifest(f'The Service "{m.name}" is invalid: spec.clusterIPs[0]: '
                                      f'Invalid value: []string{{"{spec.cluster_ip}"}}: may not '
                                      "change once set")
            if old is None:
                self.service_ips.check(m.name, spec.cluster_ip)
        mine = set(old.node_ports) if old else set()
        for i, port in enumerate(spec.ports):
            if port.node_port and port.node_port in self.node_ports.used - mine:
                raise InvalidManifest(f'The Service "{m.name}" is invalid: spec.ports[{i}]'
                                      f".nodePort: Invalid value: {port.node_port}: provided "
                                      "port is already allocated")

    def _apply_service(self, m: Manifest) -> str:
        spec = m.service
        assert spec is not None
        key = (m.namespace, m.name)
        old = self.services.get(key)
        if old is not None and old.manifest.raw == m.raw:
            return f"service/{m.name} unchanged"
        system = m.namespace == "kube-system"
        draws = self.system_draws if system else self.draws
        kept = {}
        if old is not None:
            assert old.manifest.service is not None
            kept = {(p.port, p.protocol): n for p, n in zip(old.manifest.service.ports,
                                                           old.node_ports, strict=True) if n}
            self.node_ports.release(old.node_ports)
        node_ports = []
        for i, port in enumerate(spec.ports):
            if spec.type != "NodePort":
                node_ports.append(0)
                continue
            wanted = port.node_port or kept.get((port.port, port.protocol), 0)
            node_ports.append(self.node_ports.allocate(m.name, i, wanted))
        if old is None:
            ip = self.service_ips.allocate(m.name, spec.cluster_ip)
            slice_name = f"{m.name}-{self.slice_draws.suffix()}"
            self.services[key] = Service(m, ip, node_ports, draws.uid(), slice_name)
            verb = "created"
        else:
            old.manifest, old.node_ports = m, node_ports
            verb = "configured"
        self._write_dns_records()
        self._bump()
        return f"service/{m.name} {verb}"

    def _write_dns_records(self) -> None:
        records = records_for([s.object() for s in self.services.values()])
        path = self.workroot / "dns" / "records.json"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        tmp.replace(path)

    def _apply_one(self, m: Manifest) -> str:
        if m.kind == "Service":
            return self._apply_service(m)
        if m.kind == "EndpointSlice":
            key = (m.namespace, m.name)
            old = self.manual_slices.get(key)
            if old is not None and old == m.raw:
                return f"endpointslice.discovery.k8s.io/{m.name} unchanged"
            raw = copy.deepcopy(m.raw)
            raw.setdefault("metadata", {})["namespace"] = m.namespace
            for port in raw.get("ports") or []:
                port.setdefault("name", "")
                port.setdefault("protocol", "TCP")
            for ep in raw.get("endpoints") or []:
                ep.setdefault("conditions", {}).setdefault("ready", True)
            raw.setdefault("endpoints", [])
            raw.setdefault("ports", [])
            self.manual_slices[key] = raw
            self._bump()
            return f"endpointslice.discovery.k8s.io/{m.name} {'configured' if old else 'created'}"
        if m.kind == "Pod":
            if (m.namespace, m.name) in self.pods:
                return f"pod/{m.name} unchanged"
            assert m.pod_spec is not None
            self._create_pod(m.name, m.namespace, m.labels, m.pod_spec,
                             m.raw.get("spec", {}), owner=None)
            return f"pod/{m.name} created"
        key = (m.namespace, m.name)
        old = self.deployments.get(key)
        raw_template = m.raw["spec"]["template"]
        if old is None:
            draws = self.system_draws if m.namespace == "kube-system" else self.draws
            self.deployments[key] = Deployment(m, draws.template_hash(template_hash(raw_template)),
                                               draws.uid())
            verb = "created"
        elif old.manifest.raw == m.raw:
            return f"deployment.apps/{m.name} unchanged"
        else:
            if old.manifest.raw["spec"]["template"] != raw_template:
                # A new template: replace every pod (the Recreate strategy).
                for pod in self._owned(old):
                    self._delete_pod(pod)
                old.hash = template_hash(raw_template)
            old.manifest = m
            verb = "configured"
        self._reconcile(self.deployments[key])
        return f"deployment.apps/{m.name} {verb}"

    def delete(self, kind: str, name: str, namespace: str = "default") -> str:
        kind = DELETE_KINDS.get(kind, kind)
        with self.lock:
            if kind == "pod":
                pod = self._pod(name, namespace)
                self._delete_pod(pod)
                for dep in self.deployments.values():
                    if pod.owner == ("ReplicaSet", dep.replicaset):
                        self._reconcile(dep)
                return f'pod "{name}" deleted'
            if kind == "service":
                svc = self.services.pop((namespace, name), None)
                if svc is None:
                    raise NotFound(f'Error from server (NotFound): services "{name}" not found')
                self.service_ips.release(svc.cluster_ip)
                self.node_ports.release(svc.node_ports)
                self._write_dns_records()
                self._bump()
                return f'service "{name}" deleted'
            if kind == "endpointslice":
                if self.manual_slices.pop((namespace, name), None) is None:
                    raise NotFound(f'Error from server (NotFound): endpointslices.discovery.k8s.io'
                                   f' "{name}" not found')
                self._bump()
                return f'endpointslice.discovery.k8s.io "{name}" deleted'
            if kind == "deployment":
                dep = self.deployments.pop((namespace, name), None)
                if dep is None:
                    raise NotFound(f'Error from server (NotFound): deployments.apps "{name}" '
                                   "not found")
                for pod in self._owned(dep):
                    self._delete_pod(pod)
                return f'deployment.apps "{name}" deleted'
        raise BadRequest(f'error: the server doesn\'t have a resource type "{kind}"')

    def delete_manifests(self, text: str, source: str) -> list[str]:
        out = []
        for m in parse_manifests(text, source):
            try:
                out.append(self.delete(m.kind.lower(), m.name, m.namespace))
            except NotFound as err:
                out.append(str(err))
        return out

    def scale(self, name: str, replicas: int, namespace: str = "default") -> str:
        if replicas < 0:
            raise BadRequest(f'The Deployment "{name}" is invalid: spec.replicas: Invalid value: '
                             f"{replicas}: must be greater than or equal to 0")
        with self.lock:
            dep = self.deployments.get((namespace, name))
            if dep is None:
                raise NotFound(f'Error from server (NotFound): deployments.apps "{name}" not found')
            dep.manifest.replicas = replicas
            dep.manifest.raw["spec"]["replicas"] = replicas
            self._reconcile(dep)
        return f"deployment.apps/{name} scaled"

    # -- the Deployment controller and the scheduler ---------------------------------
    def _owned(self, dep: Deployment) -> list[Pod]:
        return sorted((p for p in self.pods.values()
                       if p.owner == ("ReplicaSet", dep.replicaset) and not p.deleting),
                      key=lambda p: p.created)

    def _reconcile(self, dep: Deployment) -> None:
        pods = self._owned(dep)
        while len(pods) > dep.manifest.replicas:
            self._delete_pod(pods.pop())  # the newest goes first
        draws = self.system_draws if dep.namespace == "kube-system" else self.draws
        while len(pods) < dep.manifest.replicas:
            name = f"{dep.replicaset}-{draws.suffix()}"
            if (dep.namespace, name) in self.pods:
                continue
            assert dep.manifest.pod_spec is not None
            labels = {**dep.manifest.template_labels, "pod-template-hash": dep.hash}
            pods.append(self._create_pod(name, dep.namespace, labels, dep.manifest.pod_spec,
                                         dep.manifest.raw["spec"]["template"].get("spec", {}),
                                         owner=("ReplicaSet", dep.replicaset), spread=pods))

    def _schedule(self, spec: PodSpec, namespace: str, spread: list[Pod] | None) -> NodeSpec:
        if spec.node_name:
            return self.nodes[spec.node_name]
        names = sorted(n for n in self.nodes if n not in self.cordoned)
        if not names:
            raise BadRequest("error: no node can take the pod: every node is cordoned "
                             "(kubenet uncordon NODE)")
        draws = self.system_draws if namespace == "kube-system" else self.draws
        if spread is not None:
            # Replicas of one workload spread out, as the default topology spread does.
            counts = {n: sum(1 for p in spread if p.node.name == n) for n in names}
            low = min(counts.values())
            names = [n for n in names if counts[n] == low]
        if len(names) == 1:
            return self.nodes[names[0]]
        # Equal scores: the scheduler picks among them at random.
        return self.nodes[draws.choice("node", names)]

    # -- the kubelet -------------------------------------------------------------------
    def _create_pod(self, name: str, namespace: str, labels: dict[str, str], spec: PodSpec,
                    raw_spec: dict[str, Any], owner: tuple[str, str] | None,
                    spread: list[Pod] | None = None) -> Pod:
        node = self._schedule(spec, namespace, spread)
        ipam = self.ipam[node.name]
        ip = ipam.allocate_from_top() if namespace == "kube-system" else ipam.allocate()
        draws = self.system_draws if namespace == "kube-system" else self.draws
        pod = Pod(name=name, namespace=namespace, labels=dict(labels), spec=spec,
                  raw_spec=copy.deepcopy(raw_spec), node=node, ip=ip, uid=draws.uid(),
                  owner=owner)
        pod.containers = [ContainerState(c) for c in spec.containers]
        self.pods[pod.key] = pod
        try:
            plumbing = PodPlumbing(pod.netns, node, veth_name(pod.netns), ip)
            self.net.add_netns(pod.netns)
            self.net.batch(node.name, plumbing.node_commands())
            self.net.batch(pod.netns, plumbing.pod_commands())
            workdir = self.workroot / "pods" / pod.netns
            pod.sandbox = PodSandbox(pod.netns, name, workdir, ip, CLUSTER_DNS, namespace)
        except Exception:
            self._teardown(pod)
            raise
        pod.start_time = _now()
        for c in pod.containers:
            self._start_container(pod, c)
        self._bump()
        return pod

    def _container_env(self, pod: Pod, c: Container) -> dict[str, str]:
        """What a container's processes see: PATH, HOSTNAME, the Services of its namespace
        (as Kubernetes' service links), then its own env, with $(VAR) expanded."""
        services = [svc.object() for svc in self.services.values()]
        env = {"PATH": POD_PATH, "HOSTNAME": pod.name, "HOME": str(pod.sandbox.workdir)
               if pod.sandbox else "/", **node_environment(),
               **service_env(services, pod.namespace)}
        for name, value in c.env:
            env[name] = expand(value, env)
        return env

    def _log_path(self, pod: Pod, c: ContainerState, generation: int | None = None) -> Path:
        assert pod.sandbox is not None
        gen = c.generation if generation is None else generation
        return pod.sandbox.workdir / "logs" / f"{c.spec.name}-{gen}.log"

    def _start_container(self, pod: Pod, c: ContainerState) -> None:
        assert pod.sandbox is not None
        env = self._container_env(pod, c.spec)
        argv = [expand(a, env) for a in (*c.spec.command, *c.spec.args)]
        c.proc = start_container(pod.sandbox, argv, env, self._log_path(pod, c),
                                 c.spec.working_dir or None)
        c.state, c.reason, c.exit_code = "running", "", None
        c.started_at, c.finished_at = _now(), ""
        c.probe_ready = c.was_ready = False
        threading.Thread(target=self._watch, args=(pod, c, c.proc), daemon=True).start()
        for kind in ("readiness", "liveness"):
            if getattr(c.spec, kind) is not None:
                threading.Thread(target=self._probe_loop, args=(pod, c, c.proc, kind),
                                 daemon=True).start()

    def _probe_loop(self, pod: Pod, c: ContainerState, proc: subprocess.Popen,
                    kind: str) -> None:
        """The kubelet's prober for one probe of one container run, on its period."""
        probe = getattr(c.spec, kind)
        successes = failures = 0
        time.sleep(probe.initial_delay)
        while not self.closing and not pod.deleting and c.proc is proc and proc.poll() is None:
            assert pod.sandbox is not None
            ok, what = run_probe(probe, c.spec, pod.ip, f"/run/netns/{pod.node.name}",
                                 pod.sandbox.enter_argv)
            with self.lock:
                if c.proc is not proc:
                    return
                c.last_probe[kind] = what
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                if kind == "readiness":
                    if ok and successes >= probe.success_threshold and not c.probe_ready:
                        c.probe_ready = c.was_ready = True
                        self._bump()
                    elif not ok and failures >= probe.failure_threshold and c.probe_ready:
                        c.probe_ready = False
                        self._bump()
                elif failures >= probe.failure_threshold:
                    # Liveness failed: the kubelet kills the container; restartPolicy decides.
                    c.last_probe[kind] = f"{what}; container killed to be restarted"
                    threading.Thread(target=stop_process_group, args=(proc,),
                                     daemon=True).start()
                    return
            time.sleep(probe.period)

    def probe(self, action: str, name: str, namespace: str = "default") -> str:
        """Break or heal a pod's probes for real: drop the kubelet's probe traffic in the pod.

        The kubelet probes from the node, so its packets reach the pod from the node's
        bridge address; a DROP rule for them in the pod's own netfilter makes httpGet and
        tcpSocket probes time out, as a hung server would.
        """
        if action not in ("fail", "heal"):
            raise BadRequest(f'error: unknown action "{action}" (use fail or heal)')
        with self.lock:
            pod = self._pod(name, namespace)
            ports = sorted({resolve_port(pr, c.spec) for c in pod.containers
                            for pr in (c.spec.readiness, c.spec.liveness)
                            if pr is not None and pr.action != "exec"})
            if not ports:
                raise BadRequest(f'error: pod "{name}" has no httpGet or tcpSocket probe '
                                 "to break")
            source = pod.node.bridge_ip
        for port in ports:
            rule = ["INPUT", "-s", source, "-p", "tcp", "--dport", str(port), "-m", "comment",
                    "--comment", "kubenet: kubelet probes dropped", "-j", "DROP"]
            present = subprocess.run(["nsenter", f"--net=/run/netns/{pod.netns}", "iptables",
                                      "-w", "-C", *rule], capture_output=True).returncode == 0
            op = "-I" if action == "fail" else "-D"
            if (action == "fail") != present:
                subprocess.run(["nsenter", f"--net=/run/netns/{pod.netns}", "iptables", "-w",
                                op, *rule], capture_output=True, check=True)
        ports_text = ",".join(map(str, ports))
        if action == "fail":
            return (f"pod/{name}: probes from {source} to port {ports_text} are now dropped "
                    "(they will time out)")
        return f"pod/{name}: probes reach port {ports_text} again"

    def _watch(self, pod: Pod, c: ContainerState, proc: subprocess.Popen) -> None:
        code = proc.wait()
        with self.lock:
            if c.proc is not proc:
                return
            c.state, c.exit_code, c.finished_at = "terminated", code, _now()
            c.reason = "Completed" if code == 0 else "Error"
            pod.ready = False
            self._bump()
            policy = pod.spec.restart_policy
            if pod.deleting or self.closing or policy == "Never" or (
                    policy == "OnFailure" and code == 0):
                return
            delay = min(BACKOFF_START * 2 ** min(c.restarts, 10), BACKOFF_MAX)
            c.state, c.reason = "waiting", "CrashLoopBackOff"
        time.sleep(delay)
        with self.lock:
            if pod.deleting or self.closing or c.proc is not proc:
                return
            c.restarts += 1
            c.generation += 1
            self._start_container(pod, c)
            self._bump()

    def _kubelet_loop(self) -> None:
        """Readiness: running containers whose declared TCP ports are listening."""
        while not self.closing:
            with self.lock:
                for pod in list(self.pods.values()):
                    ready = self._is_ready(pod)
                    if ready != pod.ready:
                        pod.ready = ready
                        pod.ready_since = _now()
                        self._bump()
            time.sleep(0.02)

    @staticmethod
    def _is_ready(pod: Pod) -> bool:
        if pod.deleting or pod.sandbox is None:
            return False
        if not all(c.state == "running" for c in pod.containers):
            return False
        if any(c.spec.readiness for c in pod.containers):
            return all(c.probe_ready or not c.spec.readiness for c in pod.containers)
        # No readiness probe: Ready once the declared TCP ports listen, and from then on
        # while its containers run. (A kubelet would say Ready at once; there is no image
        # pull here to hide a server's start-up time.)
        if pod.ready:
            return True
        wanted = {p.container_port for c in pod.containers for p in c.spec.ports
                  if p.protocol == "TCP"}
        return not wanted or wanted <= listening_tcp_ports(pod.sandbox.pause.pid)

    def _delete_pod(self, pod: Pod) -> None:
        pod.deleting = True
        pod.ready = False
        self._bump()
        for c in pod.containers:
            if c.proc is not None:
                stop_process_group(c.proc)
        self._teardown(pod)
        self.pods.pop(pod.key, None)
        self._bump()

    def _teardown(self, pod: Pod) -> None:
        if pod.sandbox is not None:
            pod.sandbox.stop()
        self.net.del_netns(pod.netns)  # its veth pair goes with it
        self.ipam[pod.node.name].release(pod.ip)
        self.pods.pop(pod.key, None)

    # -- reading -------------------------------------------------------------------------
    def _pod(self, name: str, namespace: str = "default") -> Pod:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise NotFound(f'Error from server (NotFound): pods "{name}" not found')
        return pod

    def wait(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True

    def settled(self) -> bool:
        """Servers (restartPolicy Always) are Ready or crash-looping; run-once pods finished."""
        def done(p: Pod) -> bool:
            if p.phase in ("Succeeded", "Failed"):
                return True
            if p.spec.restart_policy != "Always":
                return False
            # Ready, crash-looping, or ready once and now failing its readiness probe.
            return p.ready or any(c.restarts or c.reason == "CrashLoopBackOff" or
                                  (c.was_ready and not c.probe_ready) for c in p.containers)
        return all(done(p) for p in self.pods.values())

    def logs(self, name: str, namespace: str = "default", container: str | None = None,
             previous: bool = False) -> str:
        with self.lock:
            pod = self._pod(name, namespace)
            names = [c.spec.name for c in pod.containers]
            if container is None:
                c = pod.containers[0]
            elif container in names:
                c = pod.containers[names.index(container)]
            else:
                raise BadRequest(f"error: container {container} is not valid for pod {name}")
            if previous and c.generation == 0:
                raise BadRequest(f'Error from server (BadRequest): previous terminated container '
                                 f'"{c.spec.name}" in pod "{name}" not found')
            path = self._log_path(pod, c, c.generation - 1 if previous else None)
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def exec_argv(self, target: str, argv: list[str],
                  namespace: str = "default") -> tuple[list[str], dict[str, str]]:
        """The command line that runs ``argv`` in a running pod, a node or the gateway."""
        if not argv:
            raise BadRequest("error: you must specify at least one command for the container")
        with self.lock:
            if target in self.nodes or target in (self.topology.gateway_ns,
                                                  self.topology.external_ns):
                return ["nsenter", f"--net=/run/netns/{target}", "--", *argv], {"PATH": POD_PATH}
            pod = self._pod(target, namespace)
            running = [c for c in pod.containers if c.state == "running"]
            if pod.deleting or not running or pod.sandbox is None:
                raise BadRequest("error: cannot exec into a container in a completed pod; "
                                 f"current phase is {pod.phase}" if pod.phase in
                                 ("Succeeded", "Failed") else
                                 f"error: unable to upgrade connection: container not found "
                                 f'("{pod.containers[0].spec.name}")')
            return pod.sandbox.enter_argv(argv), self._container_env(pod, running[0].spec)

    def snapshot(self) -> dict[str, Any]:
        """Every object, Kubernetes-shaped, for ``get`` and ``describe``."""
        with self.lock:
            pods = [self._pod_object(p) for p in sorted(self.pods.values(), key=lambda p: p.key)]
            services = [s.object() for _, s in sorted(self.services.items())]
            slices = self._slices(services, pods)
            return {
                "pods": pods,
                "deployments": [self._deployment_object(d) for d in self.deployments.values()],
                "nodes": [self._node_object(n) for n in self.nodes.values()],
                "services": services,
                "endpointslices": slices,
            }

    def _slices(self, services: list[dict[str, Any]], pods: list[dict[str, Any]],
                ) -> list[dict[str, Any]]:
        """The endpoints controller: one slice per Service that has a selector; a Service
        without one gets the slices applied by hand (they name it in their label)."""
        out = [copy.deepcopy(sl) for _, sl in sorted(self.manual_slices.items())]
        for obj in services:
            if obj["spec"].get("selector") is None:
                continue
            svc = self.services[(obj["metadata"]["namespace"], obj["metadata"]["name"])]
            for slice_ in endpoint_slices(obj, pods, svc.slice_name):
                slice_["kubenet_age"] = time.time() - svc.created
                out.append(slice_)
        return out

    def describe(self, kind: str, name: str, namespace: str = "default") -> str:
        kind = {"svc": "service", "services": "service"}.get(kind, kind)
        if kind != "service":
            raise BadRequest(f'error: kubenet describes services only (not "{kind}")')
        with self.lock:
            svc = self.services.get((namespace, name))
            if svc is None:
                raise NotFound(f'Error from server (NotFound): services "{name}" not found')
            obj = svc.object()
            pods = [self._pod_object(p) for p in self.pods.values()]
            slices = [sl for sl in self._slices([obj], pods)
                      if sl["metadata"]["namespace"] == namespace
                      and sl["metadata"]["labels"].get("kubernetes.io/service-name") == name]
        return describe_service(obj, slices[0] if slices else None)

    def rules(self, node: str, table: str = "", counters: bool = False) -> dict[str, Any]:
        """``iptables-save`` of a node, and what its kube-proxy wants the reader to know."""
        if node not in self.nodes:
            raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
        if self.proxy_mode == "nftables":
            # kube-proxy's own table, as `nft list table ip kube-proxy` shows it
            argv = ["nsenter", f"--net=/run/netns/{node}", "nft", "list", "table", "ip",
                    "kube-proxy"]
        else:
            argv = ["nsenter", f"--net=/run/netns/{node}", "iptables-save"]
            if table:
                argv += ["-t", table]
            if counters:
                argv.append("-c")
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise BadRequest(f"error: {argv[2]} failed on {node}: {done.stderr.strip()}")
        proxy = self.proxies.get(node)
        return {"text": done.stdout, "notes": list(proxy.notes) if proxy else [],
                "running": bool(proxy and proxy.running), "error": proxy.error if proxy else ""}

    def set_proxy_mode(self, mode: str) -> str:
        """Switch every node's kube-proxy to ``mode``: stop it, clean its rules up, start
        the other kind, and wait until all nodes have synced."""
        if mode not in PROXY_MODES:
            raise BadRequest(f'error: unknown proxy mode "{mode}" (choose from: '
                             f'{", ".join(PROXY_MODES)})')
        if mode == self.proxy_mode:
            return f"kube-proxy already runs in {mode} mode"
        proxy_class = PROXY_CLASSES[mode]
        for name, old in list(self.proxies.items()):
            old.stop()
            old.cleanup()
            self.proxies[name] = proxy_class(self, self.nodes[name])
        self.proxy_mode = mode
        for proxy in self.proxies.values():
            proxy.start()
        self.wait(lambda: all(p.synced for p in self.proxies.values()), 30)
        return f"kube-proxy now runs in {mode} mode on every node"

    def kube_proxy(self, action: str, node: str) -> str:
        if node not in self.proxies:
            raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
        proxy = self.proxies[node]
        if action == "stop":
            proxy.stop()
            if proxy.mode == "userspace":
                return (f"kube-proxy on {node} stopped: its proxy process is gone, so "
                        "connections to cluster IPs from this node fail")
            return f"kube-proxy on {node} stopped (its rules stay in the kernel)"
        if action == "start":
            proxy.start()
            self.wait(lambda: proxy.synced, 10)
            return f"kube-proxy on {node} started and synced"
        raise BadRequest(f'error: unknown action "{action}" (use start or stop)')

    def proxy_state(self) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
        """What every kube-proxy watches: Services and EndpointSlices, at a version."""
        with self.lock:
            pods = [self._pod_object(p) for p in self.pods.values()]
            services = [s.object() for _, s in sorted(self.services.items())]
            return self.version, services, self._slices(services, pods)

    def _pod_object(self, p: Pod) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": p.name, "namespace": p.namespace, "uid": p.uid,
                                "creationTimestamp": p.created_at}
        if p.labels:
            meta["labels"] = dict(p.labels)
        if p.owner:
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": p.owner[0],
                                        "name": p.owner[1], "controller": True}]
        if p.deleting:
            meta["deletionTimestamp"] = _now()
        spec = copy.deepcopy(p.raw_spec)
        spec["nodeName"] = p.node.name
        spec.setdefault("restartPolicy", p.spec.restart_policy)
        statuses = []
        for c in p.containers:
            if c.state == "running":
                state: dict[str, Any] = {"running": {"startedAt": c.started_at}}
            elif c.state == "terminated":
                state = {"terminated": {"exitCode": c.exit_code, "reason": c.reason,
                                        "startedAt": c.started_at, "finishedAt": c.finished_at}}
            else:
                state = {"waiting": {"reason": c.reason}}
            statuses.append({"name": c.spec.name, "image": c.spec.image, "ready":
                             p.ready and c.state == "running", "restartCount": c.restarts,
                             "started": c.state == "running", "state": state})
        status = {
            "phase": p.phase,
            "conditions": [{"type": "Ready", "status": "True" if p.ready else "False",
                            **({"lastTransitionTime": p.ready_since} if p.ready_since else {})}],
            "hostIP": p.node.ip, "podIP": p.ip, "podIPs": [{"ip": p.ip}],
            "startTime": p.start_time, "containerStatuses": statuses,
            "kubenet": {"statusReason": p.status_reason, "age": time.time() - p.created,
                        "netns": p.netns, "ready": p.ready,
                        "probes": {c.spec.name: dict(c.last_probe) for c in p.containers}},
        }
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                "status": status}

    def _deployment_object(self, d: Deployment) -> dict[str, Any]:
        pods = self._owned(d)
        raw = copy.deepcopy(d.manifest.raw)
        raw.setdefault("metadata", {}).update({"namespace": d.namespace, "uid": d.uid,
                                               "creationTimestamp": d.created_at})
        raw["status"] = {"replicas": len(pods), "readyReplicas": sum(p.ready for p in pods),
                         "updatedReplicas": len(pods),
                         "availableReplicas": sum(p.ready for p in pods),
                         "kubenet": {"age": time.time() - d.created, "replicaSet": d.replicaset}}
        return raw

    def drain(self, node: str) -> list[str]:
        """``kubectl drain``: cordon the node, then evict its pods (controllers replace them)."""
        with self.lock:
            if node not in self.nodes:
                raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
            self.cordoned.add(node)
            out = [f"node/{node} cordoned"]
            for pod in sorted((p for p in self.pods.values() if p.node.name == node),
                              key=lambda p: p.key):
                out.append(f"evicting pod {pod.namespace}/{pod.name}")
                self._delete_pod(pod)
                out.append(f"pod/{pod.name} evicted")
            for dep in list(self.deployments.values()):
                self._reconcile(dep)
            self._bump()
            out.append(f"node/{node} drained")
            return out

    def uncordon(self, node: str) -> str:
        with self.lock:
            if node not in self.nodes:
                raise NotFound(f'Error from server (NotFound): nodes "{node}" not found')
            self.cordoned.discard(node)
            self._bump()
            return f"node/{node} uncordoned"

    def _node_object(self, n: NodeSpec) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name}},
                "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr],
                         **({"unschedulable": True} if n.name in self.cordoned else {})},
                "status": {"addresses": [{"type": "InternalIP", "address": n.ip},
                                         {"type": "Hostname", "address": n.name}],
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "kubenet": {"age": time.time() - self._started}}}

    def close(self) -> None:
        """Stop every pod process (the sandbox's end would kill them anyway)."""
        with self.lock:
            self.closing = True
            self.changed.notify_all()
            for proxy in self.proxies.values():
                if isinstance(proxy, UserspaceProxy) and proxy.process is not None:
                    stop_process_group(proxy.process, grace=0)
            for pod in list(self.pods.values()):
                for c in pod.containers:
                    if c.proc is not None:
                        stop_process_group(c.proc, grace=0)
                if pod.sandbox is not None:
                    pod.sandbox.stop()
