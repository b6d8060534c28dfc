"""kube-proxy's iptables mode, rendered as text without touching the kernel.

This mirrors ``pkg/proxy/iptables/proxier.go`` at kubernetes commit
531be81208e2274ef42e72525a26610a9622bcdf (the v1.34 era): :func:`render` produces the
``iptables-restore`` input that ``syncProxyRules`` writes on a *full* sync, and
:func:`jump_rules` lists the rules kube-proxy ensures with plain ``iptables`` first
(``iptablesJumpChains`` and kubelet's ``KUBE-FIREWALL`` jumps). It also mirrors the parts
of ``pkg/proxy`` that decide what gets written: how a Service becomes service ports
(``serviceport.go``), how EndpointSlices become endpoints (``endpointslicecache.go``),
how endpoints are split by traffic policy (``topology.go``), and how chain names are
hashed.

Every argument is written in the order proxier.go writes it (not iptables-save's
normalised order), with kube-proxy's comments. kube-proxy walks its service map in Go's
random map order; here service ports are taken in sorted order (namespace, name, port
name, protocol) so the text is reproducible. Endpoints are sorted by ``IP:port`` string,
exactly as kube-proxy sorts them.

The module is pure: no subprocess, no file access. It validates nothing and allocates
nothing; it renders what it is given, skipping what kube-proxy skips (headless and
ExternalName Services, IPv6 addresses and slices, ports without a number...).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

__all__ = [
    "Categorized",
    "Endpoint",
    "JumpRule",
    "ServicePort",
    "categorize",
    "endpoint_chain_name",
    "traffic_targets",
    "endpoints_map",
    "jump_rules",
    "load_objects",
    "masquerade_mark",
    "probability",
    "render",
    "render_yaml",
    "service_chain_name",
    "service_port_name",
    "service_ports",
]

# Chains kube-proxy owns (pkg/proxy/iptables/proxier.go constants).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"  # made empty in mangle, nat, filter by the monitor
KUBELET_FIREWALL = "KUBE-FIREWALL"

SVC, SVL, EXT, FW, SEP = "KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC, SVL, SEP, FW, EXT)

# pkg/proxy/metrics nfacct counter names.
NFACCT_CT_STATE_INVALID_DROPPED = "ct_state_invalid_dropped_pkts"
NFACCT_LOCALHOST_NODEPORT_ACCEPTED = "localhost_nps_accepted_pkts"

LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000
DEFAULT_STICKY_SECONDS = 10800  # the API default for sessionAffinityConfig.clientIP
LOOPBACK_NET = "127.0.0.0/8"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NODEPORTS_LAST_COMMENT = (
    '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"')

# (table, source chain, target chain, comment, extra args), in proxier.go's order.
_JUMP_CHAINS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports", ()),
    ("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules", ()),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall",
     ("-m", "conntrack", "--ctstate", "NEW")),
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", ()),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals", ()),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules", ()),
)
# kubelet's duplicates (iptablesKubeletJumpChains): no comment, no extra args.
_KUBELET_JUMP_CHAINS = (
    ("filter", "INPUT", KUBELET_FIREWALL, "", ()),
    ("filter", "OUTPUT", KUBELET_FIREWALL, "", ()),
)


# --- names, hashes, numbers -------------------------------------------------------------

def service_port_name(namespace: str, name: str, port_name: str = "") -> str:
    """``ServicePortName.String()``: ``ns/name`` plus ``:port`` when the port is named."""
    return f"{namespace}/{name}" + (f":{port_name}" if port_name else "")


def _hash16(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def _chain_prefix(prefix: str) -> str:
    prefix = prefix.upper()
    if not prefix.startswith("KUBE-"):
        prefix = "KUBE-" + prefix
    return prefix if prefix.endswith("-") else prefix + "-"


def service_chain_name(prefix: str, namespace: str, name: str, port_name: str,
                       protocol: str) -> str:
    """A per-service-port chain: ``KUBE-SVC-``/``SVL``/``EXT``/``FW`` + 16 hash characters.

    The hash is base32(sha256("ns/name:port" + "tcp"))[:16]; ``prefix`` may be given as
    ``"KUBE-SVC-"`` or just ``"SVC"``.
    """
    spn = service_port_name(namespace, name, port_name)
    return _chain_prefix(prefix) + _hash16(spn + protocol.lower())


def endpoint_chain_name(namespace: str, name: str, port_name: str, protocol: str,
                        endpoint: str) -> str:
    """``KUBE-SEP-`` + base32(sha256("ns/name:port" + "tcp" + "IP:port"))[:16]."""
    spn = service_port_name(namespace, name, port_name)
    return SEP + _hash16(spn + protocol.lower() + endpoint)


def probability(n: int) -> str:
    """kube-proxy's ``computeProbability``: 1/n printed with ``%0.10f``."""
    return f"{1.0 / n:.10f}"


def masquerade_mark(bit: int = 14, *, padded: bool = False) -> str:
    """The masquerade mark for ``--iptables-masquerade-bit``.

    ``padded=False`` gives ``0x4000``, as kube-proxy's own test proxier writes it.
    ``padded=True`` gives what ``NewProxier`` really writes: Go's ``%#08x`` pads the
    digits to eight, then adds ``0x`` (``0x00004000``). The kernel sees the same value.
    """
    value = 1 << bit
    return f"0x{value:08x}" if padded else f"{value:#x}"


def _is_service_chain(chain: str) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


# --- sloppy address parsing (netutils.ParseIPSloppy / ParseCIDRSloppy) ------------------

def _parse_ipv4(text: str | None) -> str | None:
    """An IPv4 address, accepting leading zeros as Go's ParseIPSloppy does; else None."""
    parts = str(text or "").strip().split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        return None
    octets = [int(p) for p in parts]
    return ".".join(map(str, octets)) if all(o <= 255 for o in octets) else None


def _parse_ipv4_cidr(text: str | None) -> ipaddress.IPv4Network | None:
    addr, _, bits = str(text or "").strip().partition("/")
    ip = _parse_ipv4(addr)
    if ip is None or not bits.isdigit() or int(bits) > 32:
        return None
    return ipaddress.IPv4Network(f"{ip}/{int(bits)}", strict=False)


def _in_net(ip: str | None, net: ipaddress.IPv4Network) -> bool:
    return ip is not None and ipaddress.IPv4Address(ip) in net


# --- the model: service ports and endpoints ---------------------------------------------

@dataclass(frozen=True)
class ServicePort:
    """One port of one Service, as kube-proxy's ``servicePortInfo`` sees it (IPv4)."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # as in the API: "TCP", "UDP", "SCTP"
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_vips: tuple[str, ...] = ()
    source_ranges: tuple[ipaddress.IPv4Network, ...] = ()
    health_check_node_port: int = 0
    client_ip_affinity: bool = False
    sticky_seconds: int = 0
    external_policy_local: bool = False
    internal_policy_local: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.name, self.port_name, self.protocol)

    @property
    def name_string(self) -> str:
        return service_port_name(self.namespace, self.name, self.port_name)

    @property
    def proto(self) -> str:
        return self.protocol.lower()

    def chain(self, prefix: str) -> str:
        return service_chain_name(prefix, self.namespace, self.name, self.port_name,
                                  self.protocol)

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.load_balancer_vips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (
            self.external_policy_local and self.externally_accessible)


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of one service port (``BaseEndpointInfo`` plus its SEP chain)."""

    ip: str
    port: int
    chain: str
    is_local: bool = False
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.port}"


def _meta(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "default", meta.get("name") or ""


def _cluster_ipv4(spec: dict) -> str | None:
    """``GetClusterIPByFamily`` for IPv4; None for headless or IPv6-only Services."""
    candidates = list(spec.get("clusterIPs") or []) or [spec.get("clusterIP")]
    if not candidates[0] or candidates[0] == "None":
        return None
    for candidate in candidates:
        ip = _parse_ipv4(candidate)
        if ip is not None:
            return ip
    return None


def _externally_accessible_type(spec: dict) -> bool:
    kind = spec.get("type") or "ClusterIP"
    return kind in ("LoadBalancer", "NodePort") or (
        kind == "ClusterIP" and bool(spec.get("externalIPs")))


def _lb_vips(status: dict) -> tuple[str, ...]:
    vips = []
    for ingress in (status.get("loadBalancer") or {}).get("ingress") or []:
        if ingress.get("ipMode") not in (None, "VIP"):  # "Proxy" LBs get no rules
            continue
        ip = _parse_ipv4(ingress.get("ip"))
        if ip is not None:
            vips.append(ip)
    return tuple(vips)


def _sticky_seconds(spec: dict) -> int:
    config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
    seconds = config.get("timeoutSeconds")
    return DEFAULT_STICKY_SECONDS if seconds is None else int(seconds)


def service_ports(service: dict) -> list[ServicePort]:
    """A v1 Service as kube-proxy's IPv4 service-change tracker turns it into ports."""
    spec = service.get("spec") or {}
    if (spec.get("type") or "ClusterIP") == "ExternalName":
        return []
    cluster_ip = _cluster_ipv4(spec)
    if cluster_ip is None:
        return []
    namespace, name = _meta(service)
    external_local = (_externally_accessible_type(spec)
                      and spec.get("externalTrafficPolicy") == "Local")
    needs_health_check = (spec.get("type") == "LoadBalancer" and external_local)
    client_ip = spec.get("sessionAffinity") == "ClientIP"
    common = dict(
        cluster_ip=cluster_ip,
        external_ips=tuple(ip for ip in map(_parse_ipv4, spec.get("externalIPs") or []) if ip),
        load_balancer_vips=_lb_vips(service.get("status") or {}),
        source_ranges=tuple(n for n in map(_parse_ipv4_cidr,
                                           spec.get("loadBalancerSourceRanges") or []) if n),
        health_check_node_port=int(spec.get("healthCheckNodePort") or 0)
        if needs_health_check else 0,
        client_ip_affinity=client_ip,
        sticky_seconds=_sticky_seconds(spec) if client_ip else 0,
        external_policy_local=external_local,
        internal_policy_local=spec.get("internalTrafficPolicy") == "Local",
    )
    return [
        ServicePort(namespace=namespace, name=name, port_name=p.get("name") or "",
                    protocol=p.get("protocol") or "TCP", port=int(p.get("port") or 0),
                    node_port=int(p.get("nodePort") or 0), **common)
        for p in spec.get("ports") or []
    ]


def _hint_names(hints: dict | None, key: str) -> frozenset[str]:
    return frozenset(h.get("name", "") for h in (hints or {}).get(key) or [])


def _slice_endpoints(eps: Sequence[dict], key: tuple[str, str, str, str], port: int,
                     node_name: str) -> list[Endpoint]:
    namespace, name, port_name, protocol = key
    found: list[Endpoint] = []
    for ep in eps:
        ip = _parse_ipv4((ep.get("addresses") or [None])[0])
        if ip is None:  # empty, or another family: kube-proxy ignores it
            continue
        cond = ep.get("conditions") or {}
        endpoint = f"{ip}:{port}"
        found.append(Endpoint(
            ip=ip, port=port,
            chain=endpoint_chain_name(namespace, name, port_name, protocol, endpoint),
            is_local=bool(node_name) and ep.get("nodeName") == node_name,
            ready=cond.get("ready") is not False,
            serving=cond.get("serving") is not False,
            terminating=cond.get("terminating") is True,
            zone_hints=_hint_names(ep.get("hints"), "forZones"),
            node_hints=_hint_names(ep.get("hints"), "forNodes"),
        ))
    return found


def endpoints_map(endpoint_slices: Iterable[dict], *,
                  node_name: str) -> dict[tuple[str, str, str, str], list[Endpoint]]:
    """IPv4 EndpointSlices merged per service port, deduplicated, sorted by ``IP:port``.

    Keyed by (namespace, service name, port name, protocol); the service name comes
    from the ``kubernetes.io/service-name`` label.
    """
    sets: dict[tuple[str, str, str, str], dict[str, Endpoint]] = {}
    for eps in endpoint_slices:
        if (eps.get("addressType") or "IPv4") != "IPv4":
            continue
        namespace, _ = _meta(eps)
        service = ((eps.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            continue
        for port in eps.get("ports") or []:
            if not port.get("port"):
                continue
            key = (namespace, service, port.get("name") or "", port.get("protocol") or "TCP")
            found = sets.setdefault(key, {})
            for ep in _slice_endpoints(eps.get("endpoints") or [], key, int(port["port"]),
                                       node_name):
                if ep.endpoint not in found or ep.is_local:
                    found[ep.endpoint] = ep
    return {key: sorted(found.values(), key=lambda e: e.endpoint)
            for key, found in sets.items() if found}


# --- traffic policy (pkg/proxy/topology.go) ---------------------------------------------

def _topology_mode(endpoints: Sequence[Endpoint], node_name: str, zone: str) -> str:
    ready = [ep for ep in endpoints if ep.ready]
    if not ready:
        return ""
    if all(ep.node_hints for ep in ready) and any(node_name in ep.node_hints for ep in ready):
        return "PreferSameNode"
    if all(ep.zone_hints for ep in ready) and any(zone in ep.zone_hints for ep in ready):
        return "PreferSameZone"
    return ""


def _available(ep: Endpoint, mode: str, node_name: str, zone: str) -> bool:
    if mode == "PreferSameNode":
        return node_name in ep.node_hints
    if mode == "PreferSameZone":
        return zone in ep.zone_hints
    return True


@dataclass
class Categorized:
    """Endpoints by traffic policy, and whether any usable endpoint exists anywhere."""

    cluster: list[Endpoint] = field(default_factory=list)
    local: list[Endpoint] = field(default_factory=list)
    reachable: list[Endpoint] = field(default_factory=list)
    has_any: bool = False


def _cluster_endpoints(endpoints: Sequence[Endpoint], mode: str, node_name: str,
                       zone: str) -> list[Endpoint]:
    chosen = [ep for ep in endpoints
              if ep.ready and _available(ep, mode, node_name, zone)]
    return chosen or [ep for ep in endpoints if ep.serving and ep.terminating]


def _local_endpoints(endpoints: Sequence[Endpoint]) -> tuple[list[Endpoint], bool, bool]:
    """(local endpoints, any usable endpoint anywhere, local ones are serving-terminating)."""
    usable = [ep for ep in endpoints if ep.ready or (ep.serving and ep.terminating)]
    local_ready = [ep for ep in endpoints if ep.is_local and ep.ready]
    if local_ready:
        return local_ready, bool(usable), False
    local_terminating = [ep for ep in endpoints
                         if ep.is_local and ep.serving and ep.terminating]
    return local_terminating, bool(usable), bool(local_terminating)


def categorize(endpoints: Sequence[Endpoint], svc: ServicePort, node_name: str,
               zone: str = "") -> Categorized:
    """``proxy.CategorizeEndpoints``: Cluster- and Local-policy endpoints, and the union."""
    result = Categorized()
    if not endpoints:
        return result
    mode = ""
    if svc.uses_cluster_endpoints:
        mode = _topology_mode(endpoints, node_name, zone)
        result.cluster = _cluster_endpoints(endpoints, mode, node_name, zone)
        result.has_any = bool(result.cluster)
    if not svc.uses_local_endpoints:
        result.reachable = result.cluster
        return result
    result.local, usable, terminating = _local_endpoints(endpoints)
    result.has_any = result.has_any or usable
    if not svc.uses_cluster_endpoints:
        result.reachable = result.local
    elif mode == "" and not terminating:
        result.reachable = result.cluster
    else:  # kube-proxy merges through a map (random order); we sort
        merged = {ep.endpoint: ep for ep in [*result.cluster, *result.local]}
        result.reachable = sorted(merged.values(), key=lambda e: e.endpoint)
    return result


# --- the restore text -------------------------------------------------------------------

def _line(*parts: str | Sequence[str]) -> str:
    """``LineBuffer.Write``: strings and string lists, all joined by single spaces."""
    words: list[str] = []
    for part in parts:
        if isinstance(part, str):
            words.append(part)
        else:
            words.append(" ".join(part))
    return " ".join(words)


def _chain_line(chain: str) -> str:
    return f":{chain} - [0:0]"


def _dest(proto: str, ip: str, port: int) -> list[str]:
    return ["-m", proto, "-p", proto, "-d", ip, "--dport", str(port)]


@dataclass
class Options:
    """kube-proxy's configuration as it affects the rules (defaults: its test proxier)."""

    node_name: str
    node_ips: tuple[str, ...] = ()
    cluster_cidr: str | None = None
    mark: str = "0x4000"
    localhost_nodeports: bool = True
    nfacct: bool = True
    masquerade_all: bool = False
    random_fully: bool = True
    conntrack_tcp_be_liberal: bool = False
    nodeport_addresses: tuple[str, ...] | None = None
    existing_nat_chains: tuple[str, ...] | None = None
    node_zone: str = ""

    @property
    def node_ip(self) -> str | None:
        """The primary IPv4 node IP (the first IPv4 address in ``node_ips``)."""
        return next((ip for ip in map(_parse_ipv4, self.node_ips) if ip), None)

    @property
    def local_cidr(self) -> str | None:
        """The IPv4 ``--cluster-cidr`` used by the ClusterCIDR local-traffic detector."""
        for cidr in (self.cluster_cidr or "").split(","):
            if _parse_ipv4_cidr(cidr):
                return cidr.strip()
        return None

    def nodeport_cidrs(self) -> list[ipaddress.IPv4Network] | None:
        """``--nodeport-addresses`` for IPv4, or None when it matches everything."""
        if not self.nodeport_addresses:
            return None
        cidrs = []
        for text in self.nodeport_addresses:
            if text == "primary" and self.node_ip:
                text = f"{self.node_ip}/32"
            net = _parse_ipv4_cidr(text)
            if net is not None and net.prefixlen == 0:
                return None
            if net is not None:
                cidrs.append(net)
        return cidrs or None

    @property
    def localhost_nodeports_enabled(self) -> bool:
        """NewProxier turns localhost NodePorts off unless nodeport-addresses has 127/8."""
        cidrs = self.nodeport_cidrs()
        loopback = ipaddress.IPv4Address("127.0.0.0")
        return self.localhost_nodeports and (
            cidrs is None or any(loopback in n or n.network_address.is_loopback for n in cidrs))


class _Restore:
    """The four line buffers of ``syncProxyRules`` and the rules written into them."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.filter_chains: list[str] = []
        self.filter_rules: list[str] = []
        self.nat_chains: list[str] = []
        self.nat_rules: list[str] = []
        self.active_nat_chains: set[str] = set()
        self.large_cluster = False

    # small helpers
    def nat_chain(self, chain: str) -> None:
        self.nat_chains.append(_chain_line(chain))
        self.active_nat_chains.add(chain)

    def comment(self, args: list[str], text: str) -> list[str]:
        return args if self.large_cluster else [*args, "-m", "comment", "--comment", text]

    def if_not_local(self) -> list[str] | None:
        cidr = self.o.local_cidr
        return ["!", "-s", cidr] if cidr else None

    def if_local(self) -> list[str] | None:
        cidr = self.o.local_cidr
        return ["-s", cidr] if cidr else None

    # the fixed parts
    def write_top_level(self) -> None:
        for chain in (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS,
                      KUBE_PROXY_FIREWALL):
            self.filter_chains.append(_chain_line(chain))
        for chain in (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ):
            self.nat_chains.append(_chain_line(chain))
        mark = self.o.mark
        self.nat_rules.append(_line("-A", KUBE_POSTROUTING, "-m", "mark", "!", "--mark",
                                    f"{mark}/{mark}", "-j", "RETURN"))
        self.nat_rules.append(_line("-A", KUBE_POSTROUTING, "-j", "MARK", "--xor-mark", mark))
        masq = ["-A", KUBE_POSTROUTING, "-m", "comment", "--comment",
                '"kubernetes service traffic requiring SNAT"', "-j", "MASQUERADE"]
        if self.o.random_fully:
            masq.append("--random-fully")
        self.nat_rules.append(_line(masq))
        self.nat_rules.append(_line("-A", KUBE_MARK_MASQ, "-j", "MARK", "--or-mark", mark))
        if self.o.localhost_nodeports_enabled:
            self.filter_chains.append(_chain_line(KUBELET_FIREWALL))
            self.filter_rules.append(_line(
                "-A", KUBELET_FIREWALL, "-m", "comment", "--comment",
                '"block incoming localnet connections"', "-d", LOOPBACK_NET,
                "!", "-s", LOOPBACK_NET, "-m", "conntrack",
                "!", "--ctstate", "RELATED,ESTABLISHED,DNAT", "-j", "DROP"))

    def write_nodeports_jump(self) -> None:
        cidrs = self.o.nodeport_cidrs()
        if cidrs is None:
            destinations = ["-m", "addrtype", "--dst-type", "LOCAL"]
            if not self.o.localhost_nodeports_enabled:
                destinations += ["!", "-d", LOOPBACK_NET]
            self.nat_rules.append(_line("-A", KUBE_SERVICES, "-m", "comment", "--comment",
                                        NODEPORTS_LAST_COMMENT, destinations,
                                        "-j", KUBE_NODEPORTS))
            return
        addresses = {ip for ip in map(_parse_ipv4, ("127.0.0.1", *self.o.node_ips)) if ip}
        for ip in sorted(addresses, key=ipaddress.IPv4Address):
            if not any(_in_net(ip, net) for net in cidrs):
                continue
            if ipaddress.IPv4Address(ip).is_loopback and not self.o.localhost_nodeports_enabled:
                continue
            self.nat_rules.append(_line("-A", KUBE_SERVICES, "-m", "comment", "--comment",
                                        NODEPORTS_LAST_COMMENT, "-d", ip,
                                        "-j", KUBE_NODEPORTS))

    def write_forward_rules(self) -> None:
        if not self.o.conntrack_tcp_be_liberal:
            rule = ["-A", KUBE_FORWARD, "-m", "conntrack", "--ctstate", "INVALID"]
            if self.o.nfacct:
                rule += ["-m", "nfacct", "--nfacct-name", NFACCT_CT_STATE_INVALID_DROPPED]
            self.filter_rules.append(_line(rule, "-j", "DROP"))
        mark = self.o.mark
        self.filter_rules.append(_line(
            "-A", KUBE_FORWARD, "-m", "comment", "--comment", '"kubernetes forwarding rules"',
            "-m", "mark", "--mark", f"{mark}/{mark}", "-j", "ACCEPT"))
        self.filter_rules.append(_line(
            "-A", KUBE_FORWARD, "-m", "comment", "--comment",
            '"kubernetes forwarding conntrack rule"', "-m", "conntrack",
            "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"))

    def write_stale_chain_deletions(self) -> None:
        if self.o.existing_nat_chains is None:
            return
        for chain in sorted(set(self.o.existing_nat_chains) - self.active_nat_chains):
            if _is_service_chain(chain):
                self.nat_chains.append(_chain_line(chain))
                self.nat_rules.append(_line("-X", chain))

    def text(self) -> str:
        lines = ["*filter", *self.filter_chains, *self.filter_rules, "COMMIT",
                 "*nat", *self.nat_chains, *self.nat_rules, "COMMIT"]
        return "\n".join(lines) + "\n"


@dataclass
class _Plan:
    """What ``syncProxyRules`` decides for one service port before writing anything."""

    svc: ServicePort
    eps: Categorized
    internal_chain: str
    has_internal: bool
    external_policy_chain: str
    has_external: bool
    uses_ext_chain: bool
    uses_fw_chain: bool
    lb_chain: str
    internal_filter: tuple[str, str] = ("", "")
    external_filter: tuple[str, str] = ("", "")


def traffic_targets(svc: ServicePort, eps: Categorized) -> tuple[bool, bool, bool, bool]:
    """kube-proxy's traffic-policy decision for one service port, the same in both of its
    rule-writing modes: (internal traffic goes to the local-endpoints chain, it has
    endpoints there, external traffic goes to the local-endpoints chain, it has endpoints)."""
    has = eps.has_any
    internal_local, external_local = svc.internal_policy_local, svc.external_policy_local
    return (internal_local, has and (bool(eps.local) or not internal_local),
            external_local, has and (bool(eps.local) or not external_local))


def _plan(svc: ServicePort, eps: Categorized) -> _Plan:
    has_endpoints = eps.has_any
    internal_local, has_internal, external_local, has_external = traffic_targets(svc, eps)
    internal_chain = svc.chain(SVL if internal_local else SVC)
    external_chain = svc.chain(SVL if external_local else SVC)
    uses_fw = has_endpoints and bool(svc.load_balancer_vips) and bool(svc.source_ranges)
    plan = _Plan(svc=svc, eps=eps, internal_chain=internal_chain, has_internal=has_internal,
                 external_policy_chain=external_chain, has_external=has_external,
                 uses_ext_chain=has_endpoints and svc.externally_accessible,
                 uses_fw_chain=uses_fw, lb_chain=svc.chain(FW if uses_fw else EXT))
    name = svc.name_string
    if not has_endpoints:
        plan.internal_filter = ("REJECT", f'"{name} has no endpoints"')
        plan.external_filter = plan.internal_filter
    else:
        if not has_internal:
            plan.internal_filter = ("DROP", f'"{name} has no local endpoints"')
        if not has_external:
            plan.external_filter = ("DROP", f'"{name} has no local endpoints"')
    return plan


class _ServiceWriter:
    """The body of the per-service loop of ``syncProxyRules``, one method per step."""

    def __init__(self, restore: _Restore, plan: _Plan) -> None:
        self.r = restore
        self.p = plan
        self.svc = plan.svc
        self.name = plan.svc.name_string
        self.proto = plan.svc.proto

    def write(self) -> None:
        self.capture_cluster_ip()
        self.capture_external_ips()
        self.capture_load_balancer_ips()
        self.capture_node_port()
        self.capture_health_check_node_port()
        self.internal_traffic()
        self.external_traffic()
        self.firewall_chain()
        self.policy_chains()
        self.endpoint_chains()

    def capture_cluster_ip(self) -> None:
        svc, p = self.svc, self.p
        dest = _dest(self.proto, svc.cluster_ip, svc.port)
        if p.has_internal:
            self.r.nat_rules.append(_line("-A", KUBE_SERVICES, "-m", "comment", "--comment",
                                          f'"{self.name} cluster IP"', dest,
                                          "-j", p.internal_chain))
        else:
            target, comment = p.internal_filter
            self.r.filter_rules.append(_line("-A", KUBE_SERVICES, "-m", "comment",
                                             "--comment", comment, dest, "-j", target))

    def _external_filter(self, *match: str | Sequence[str]) -> None:
        target, comment = self.p.external_filter
        self.r.filter_rules.append(_line("-A", KUBE_EXTERNAL_SERVICES, "-m", "comment",
                                         "--comment", comment, *match, "-j", target))

    def capture_external_ips(self) -> None:
        svc, p = self.svc, self.p
        for ip in svc.external_ips:
            dest = _dest(self.proto, ip, svc.port)
            if p.eps.has_any:
                self.r.nat_rules.append(_line("-A", KUBE_SERVICES, "-m", "comment",
                                              "--comment", f'"{self.name} external IP"', dest,
                                              "-j", svc.chain(EXT)))
            if not p.has_external:
                self._external_filter(dest)

    def capture_load_balancer_ips(self) -> None:
        svc, p = self.svc, self.p
        for ip in svc.load_balancer_vips:
            dest = _dest(self.proto, ip, svc.port)
            if p.eps.has_any:
                self.r.nat_rules.append(_line("-A", KUBE_SERVICES, "-m", "comment",
                                              "--comment", f'"{self.name} loadbalancer IP"',
                                              dest, "-j", p.lb_chain))
            if p.uses_fw_chain:
                self.r.filter_rules.append(_line(
                    "-A", KUBE_PROXY_FIREWALL, "-m", "comment", "--comment",
                    f'"{self.name} traffic not accepted by {svc.chain(FW)}"', dest,
                    "-j", "DROP"))
        if not p.has_external:
            for ip in svc.load_balancer_vips:
                self._external_filter(_dest(self.proto, ip, svc.port))

    def capture_node_port(self) -> None:
        svc, p, proto = self.svc, self.p, self.proto
        if not svc.node_port:
            return
        port = str(svc.node_port)
        if p.eps.has_any:
            if self.r.o.localhost_nodeports_enabled and self.r.o.nfacct:
                self.r.nat_rules.append(_line(
                    "-A", KUBE_NODEPORTS, "-m", "comment", "--comment", self.name,
                    "-m", proto, "-p", proto, "-d", LOOPBACK_NET, "--dport", port,
                    "-m", "nfacct", "--nfacct-name", NFACCT_LOCALHOST_NODEPORT_ACCEPTED,
                    "-j", svc.chain(EXT)))
            self.r.nat_rules.append(_line("-A", KUBE_NODEPORTS, "-m", "comment", "--comment",
                                          self.name, "-m", proto, "-p", proto,
                                          "--dport", port, "-j", svc.chain(EXT)))
        if not p.has_external:
            self._external_filter("-m", "addrtype", "--dst-type", "LOCAL",
                                  "-m", proto, "-p", proto, "--dport", port)

    def capture_health_check_node_port(self) -> None:
        if not self.svc.health_check_node_port:
            return
        self.r.filter_rules.append(_line(
            "-A", KUBE_NODEPORTS, "-m", "comment", "--comment",
            f'"{self.name} health check node port"', "-m", "tcp", "-p", "tcp",
            "--dport", str(self.svc.health_check_node_port), "-j", "ACCEPT"))

    def internal_traffic(self) -> None:
        svc, p = self.svc, self.p
        if not p.has_internal:
            return
        args = ["-m", "comment", "--comment", f'"{self.name} cluster IP"',
                *_dest(self.proto, svc.cluster_ip, svc.port)]
        if self.r.o.masquerade_all:
            self.r.nat_rules.append(_line("-A", p.internal_chain, args, "-j", KUBE_MARK_MASQ))
        elif (not_local := self.r.if_not_local()) is not None:
            self.r.nat_rules.append(_line("-A", p.internal_chain, args, not_local,
                                          "-j", KUBE_MARK_MASQ))

    def external_traffic(self) -> None:
        svc, p, r = self.svc, self.p, self.r
        if not p.uses_ext_chain:
            return
        ext = svc.chain(EXT)
        r.nat_chain(ext)
        if not svc.external_policy_local:
            r.nat_rules.append(_line(
                "-A", ext, "-m", "comment", "--comment",
                f'"masquerade traffic for {self.name} external destinations"',
                "-j", KUBE_MARK_MASQ))
        else:
            if (local := r.if_local()) is not None:
                r.nat_rules.append(_line(
                    "-A", ext, "-m", "comment", "--comment",
                    f'"pod traffic for {self.name} external destinations"', local,
                    "-j", svc.chain(SVC)))
            r.nat_rules.append(_line(
                "-A", ext, "-m", "comment", "--comment",
                f'"masquerade LOCAL traffic for {self.name} external destinations"',
                "-m", "addrtype", "--src-type", "LOCAL", "-j", KUBE_MARK_MASQ))
            r.nat_rules.append(_line(
                "-A", ext, "-m", "comment", "--comment",
                f'"route LOCAL traffic for {self.name} external destinations"',
                "-m", "addrtype", "--src-type", "LOCAL", "-j", svc.chain(SVC)))
        if p.has_external:
            r.nat_rules.append(_line("-A", ext, "-j", p.external_policy_chain))

    def firewall_chain(self) -> None:
        svc, r = self.svc, self.r
        if not self.p.uses_fw_chain:
            return
        fw, ext = svc.chain(FW), svc.chain(EXT)
        r.nat_chain(fw)
        args = ["-A", fw, "-m", "comment", "--comment", f'"{self.name} loadbalancer IP"']
        allow_from_node = False
        for cidr in svc.source_ranges:
            r.nat_rules.append(_line(args, "-s", str(cidr), "-j", ext))
            allow_from_node = allow_from_node or _in_net(r.o.node_ip, cidr)
        if allow_from_node:
            for ip in svc.load_balancer_vips:
                r.nat_rules.append(_line(args, "-s", ip, "-j", ext))
        r.nat_rules.append(_line(
            "-A", fw, "-m", "comment", "--comment",
            f'"other traffic to {self.name} will be dropped by KUBE-PROXY-FIREWALL"'))

    def policy_chains(self) -> None:
        svc, eps = self.svc, self.p.eps
        if eps.cluster and svc.uses_cluster_endpoints:
            self.r.nat_chain(svc.chain(SVC))
            self.service_to_endpoint_rules(svc.chain(SVC), eps.cluster)
        if eps.local and svc.uses_local_endpoints:
            self.r.nat_chain(svc.chain(SVL))
            self.service_to_endpoint_rules(svc.chain(SVL), eps.local)

    def service_to_endpoint_rules(self, chain: str, endpoints: Sequence[Endpoint]) -> None:
        """``writeServiceToEndpointRules``: affinity checks first, then 1/n, 1/(n-1)..."""
        svc, r = self.svc, self.r
        if svc.client_ip_affinity:
            for ep in endpoints:
                args = r.comment(["-A", chain], f'"{self.name} -> {ep.endpoint}"')
                r.nat_rules.append(_line(args, "-m", "recent", "--name", ep.chain, "--rcheck",
                                         "--seconds", str(svc.sticky_seconds), "--reap",
                                         "-j", ep.chain))
        n = len(endpoints)
        for i, ep in enumerate(endpoints):
            args = r.comment(["-A", chain], f'"{self.name} -> {ep.endpoint}"')
            if i < n - 1:
                args += ["-m", "statistic", "--mode", "random",
                         "--probability", probability(n - i)]
            r.nat_rules.append(_line(args, "-j", ep.chain))

    def endpoint_chains(self) -> None:
        svc, r, proto = self.svc, self.r, self.proto
        for ep in self.p.eps.reachable:
            r.nat_chain(ep.chain)
            args = r.comment(["-A", ep.chain], self.name)
            r.nat_rules.append(_line(args, "-s", ep.ip, "-j", KUBE_MARK_MASQ))
            if svc.client_ip_affinity:
                args = [*args, "-m", "recent", "--name", ep.chain, "--set"]
            r.nat_rules.append(_line(args, "-m", proto, "-p", proto, "-j", "DNAT",
                                     "--to-destination", ep.endpoint))


def _sync(ports: Sequence[ServicePort],
          eps_map: dict[tuple[str, str, str, str], list[Endpoint]], options: Options) -> str:
    restore = _Restore(options)
    restore.write_top_level()
    total = sum(len(eps_map.get(svc.key, ())) for svc in ports)
    restore.large_cluster = total > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    for svc in sorted(ports, key=lambda s: s.key):
        eps = categorize(eps_map.get(svc.key, []), svc, options.node_name, options.node_zone)
        _ServiceWriter(restore, _plan(svc, eps)).write()
    restore.write_stale_chain_deletions()
    restore.write_nodeports_jump()
    restore.write_forward_rules()
    return restore.text()


def render(services: list[dict], endpoint_slices: list[dict], *, node_name: str,
           node_ips: list[str], cluster_cidr: str | None = None,
           masquerade_bit: int = 14, localhost_nodeports: bool = True,
           nfacct: bool = True, masquerade_all: bool = False, random_fully: bool = True,
           conntrack_tcp_be_liberal: bool = False,
           nodeport_addresses: Sequence[str] | None = None,
           existing_nat_chains: Iterable[str] | None = None, node_zone: str = "",
           padded_mark: bool = False) -> str:
    """Full iptables-restore input (``*filter`` then ``*nat``, each ending ``COMMIT``).

    This is what kube-proxy's ``syncProxyRules`` writes on a full sync, for IPv4.

    - ``node_name`` decides which endpoints are local (``endpoints[].nodeName``).
    - ``node_ips``: the node's IPv4 addresses; the first is the node IP that
      ``loadBalancerSourceRanges`` are checked against; with ``nodeport_addresses`` they
      (and 127.0.0.1) are the addresses NodePorts may be bound to.
    - ``cluster_cidr``: ``--cluster-cidr``; enables the ClusterCIDR local-traffic
      detector (``! -s CIDR -j KUBE-MARK-MASQ`` in each KUBE-SVC chain, ``-s CIDR`` pod
      short-circuit in KUBE-EXT chains). None: no detector, no such rules.
    - ``masquerade_bit``: ``--iptables-masquerade-bit``; ``padded_mark=True`` prints the
      mark as NewProxier does (``0x00004000``) instead of the test proxier's ``0x4000``.
    - ``localhost_nodeports``: ``--iptables-localhost-nodeports`` (adds KUBE-FIREWALL).
    - ``nfacct``: the two nfacct counters exist, so rules count into them.
    - ``random_fully``: iptables supports ``MASQUERADE --random-fully``.
    - ``conntrack_tcp_be_liberal``: ``nf_conntrack_tcp_be_liberal`` is set, so no
      ``--ctstate INVALID -j DROP`` rule.
    - ``nodeport_addresses``: ``--nodeport-addresses`` CIDRs (or ``"primary"``).
    - ``existing_nat_chains``: chains already in the nat table; stale KUBE-SVC/SVL/EXT/
      FW/SEP chains among them get ``-X`` lines, as kube-proxy deletes them.
    - ``node_zone``: the node's topology zone, for endpoint zone hints.
    """
    options = Options(
        node_name=node_name, node_ips=tuple(node_ips), cluster_cidr=cluster_cidr,
        mark=masquerade_mark(masquerade_bit, padded=padded_mark),
        localhost_nodeports=localhost_nodeports, nfacct=nfacct, masquerade_all=masquerade_all,
        random_fully=random_fully, conntrack_tcp_be_liberal=conntrack_tcp_be_liberal,
        nodeport_addresses=tuple(nodeport_addresses) if nodeport_addresses else None,
        existing_nat_chains=tuple(existing_nat_chains)
        if existing_nat_chains is not None else None,
        node_zone=node_zone,
    )
    ports = [port for svc in services for port in service_ports(svc)]
    return _sync(ports, endpoints_map(endpoint_slices, node_name=node_name), options)


class JumpRule(NamedTuple):
    """A rule kube-proxy ensures with ``iptables -t TABLE -I CHAIN ARGS...``."""

    table: str
    chain: str
    args: list[str]


def jump_rules(*, include_kubelet_chains: bool = True) -> list[JumpRule]:
    """The rules kube-proxy ensures before each full restore, in kube-proxy's order.

    For each one kube-proxy first ensures the target chain exists (``-N``), then checks
    the rule (``-C``) and, if missing, *prepends* it (``-I CHAIN``, position 1). So on a
    fresh node the last one ensured ends up first in its built-in chain. The comment is
    one argv word (no quotes). ``include_kubelet_chains`` adds kubelet's duplicate
    ``KUBE-FIREWALL`` jumps, which kube-proxy also ensures.
    """
    chains = _JUMP_CHAINS + (_KUBELET_JUMP_CHAINS if include_kubelet_chains else ())
    rules = []
    for table, source, target, comment, extra in chains:
        args = list(extra)
        if comment:
            args += ["-m", "comment", "--comment", comment]
        rules.append(JumpRule(table, source, [*args, "-j", target]))
    return rules


def load_objects(text: str) -> tuple[list[dict], list[dict]]:
    """Services and EndpointSlices from multi-document YAML (``kind: List`` too)."""
    services: list[dict] = []
    slices: list[dict] = []

    def take(obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        kind = obj.get("kind") or ""
        if kind.endswith("List"):
            for item in obj.get("items") or []:
                take(item)
        elif kind == "Service":
            services.append(obj)
        elif kind == "EndpointSlice":
            slices.append(obj)

    for doc in yaml.safe_load_all(text):
        take(doc)
    return services, slices


def render_yaml(text: str, *, node_name: str, node_ips: list[str],
                cluster_cidr: str | None = None, **kw: Any) -> str:
    """:func:`render` for YAML of v1 Services and discovery.k8s.io/v1 EndpointSlices.

    Slices are joined to Services by the ``kubernetes.io/service-name`` label (and the
    namespace); other kinds are ignored.
    """
    services, slices = load_objects(text)
    return render(services, slices, node_name=node_name, node_ips=node_ips,
                  cluster_cidr=cluster_cidr, **kw)
