"""kube-proxy's nftables mode, rendered as ``nft -f`` text without touching the kernel.

This mirrors ``pkg/proxy/nftables/proxier.go`` at kubernetes commit
531be81208e2274ef42e72525a26610a9622bcdf: :func:`render` produces the commands that
``setupNFTables`` and ``syncProxyRules`` put in the transaction of a *full* sync of
``table ip kube-proxy`` (IPv4 only). Everything lives in that one table: base chains
hooked into prerouting/input/forward/output/postrouting, the ``service-ips`` and
``service-nodeports`` verdict maps keyed on ``address . protocol . port``, per-service
chains named ``service-HASH-ns/name/proto/port``, ``numgen random`` endpoint selection,
per-endpoint ``dnat to`` chains, masquerading through a mark, the ``cluster-ips`` set,
and the ``no-endpoint-*`` maps that drop or reject traffic for services with no
(local) endpoints.

What a Service becomes (ports, endpoints, traffic-policy categories) is shared with
:mod:`kubenet.kubeproxy.iptables`, which mirrors the same ``pkg/proxy`` code. As there,
kube-proxy walks its service map in Go's random order; here service ports are taken
sorted (namespace, name, port name, protocol) so the text is reproducible.

By default the text is a fresh table's contents, one ``add`` command per object, in the
order kube-proxy adds them; load it into a node without the table (or after
``delete table ip kube-proxy``). ``flush=True`` also writes the ``flush chain`` and
``add``+``delete`` commands kube-proxy uses to overwrite a table that already exists.

The module is pure: no subprocess, no file access.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubenet.kubeproxy import iptables as _iptables
from kubenet.kubeproxy.iptables import (
    Categorized,
    Endpoint,
    ServicePort,
    categorize,
    endpoints_map,
    load_objects,
    masquerade_mark,
    service_ports,
    traffic_targets,
)

__all__ = [
    "BASE_CHAINS",
    "JUMP_CHAINS",
    "TABLE",
    "chain_name_base",
    "endpoint_chain_name_base",
    "hash_and_truncate",
    "render",
    "render_yaml",
]

FAMILY = "ip"
TABLE = "kube-proxy"
NAME_LENGTH_MAX = 256  # knftables.NameLengthMax
CHAIN_NAME_PREFIX_LENGTH_MAX = 16
CHAIN_NAME_BASE_LENGTH_MAX = NAME_LENGTH_MAX - CHAIN_NAME_PREFIX_LENGTH_MAX

# base chains
FILTER_PREROUTING_PRE_DNAT = "filter-prerouting-pre-dnat"
FILTER_OUTPUT_PRE_DNAT = "filter-output-pre-dnat"
FILTER_INPUT = "filter-input"
FILTER_FORWARD = "filter-forward"
FILTER_OUTPUT = "filter-output"
NAT_PREROUTING = "nat-prerouting"
NAT_OUTPUT = "nat-output"
NAT_POSTROUTING = "nat-postrouting"

# service dispatch, sets and maps, helper chains
SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_IPS = "firewall-ips"
FIREWALL_CHECK = "firewall-check"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"

# per-service / per-endpoint name prefixes
SERVICE_PREFIX = "service-"
LOCAL_PREFIX = "local-"
EXTERNAL_PREFIX = "external-"
ENDPOINT_PREFIX = "endpoint-"
AFFINITY_PREFIX = "affinity-"
FIREWALL_PREFIX = "firewall-"

# Priorities as numbers (knftables' dstnat = -100, filter = 0, srcnat = 100).
# (name, type, hook, priority), in nftablesBaseChains order.
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    (FILTER_PREROUTING_PRE_DNAT, "filter", "prerouting", -110),
    (FILTER_OUTPUT_PRE_DNAT, "filter", "output", -110),
    (FILTER_INPUT, "filter", "input", 0),
    (FILTER_FORWARD, "filter", "forward", 0),
    (FILTER_OUTPUT, "filter", "output", 0),
    (NAT_PREROUTING, "nat", "prerouting", -100),
    (NAT_OUTPUT, "nat", "output", -100),
    (NAT_POSTROUTING, "nat", "postrouting", 100),
)

# (destination chain, source base chain, extra match), in nftablesJumpChains order.
JUMP_CHAINS: tuple[tuple[str, str, str], ...] = (
    (NODEPORT_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, "ct state new"),
    (FIREWALL_CHECK, FILTER_PREROUTING_PRE_DNAT, "ct state new"),
    (FIREWALL_CHECK, FILTER_OUTPUT_PRE_DNAT, "ct state new"),
    (SERVICES, NAT_OUTPUT, ""),
    (SERVICES, NAT_PREROUTING, ""),
    (MASQUERADING, NAT_POSTROUTING, ""),
    (CLUSTER_IPS_CHECK, FILTER_FORWARD, "ct state new"),
    (CLUSTER_IPS_CHECK, FILTER_OUTPUT, "ct state new"),
)

NO_LOCALHOST = "ip daddr != 127.0.0.0/8"
DEST_TRIPLE = "ip daddr . meta l4proto . th dport"
DEST_PAIR = "meta l4proto . th dport"
VERDICT_TRIPLE = "ipv4_addr . inet_proto . inet_service : verdict"
VERDICT_PAIR = "inet_proto . inet_service : verdict"


# --- names ------------------------------------------------------------------------------

def hash_and_truncate(name: str) -> str:
    """``hashAndTruncate``: 8 base32 characters of sha256(name), ``-``, then name.

    The result is cut to 240 characters (ending ``...``) if it would be longer.
    """
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    name = f"{digest[:8]}-{name}"
    if len(name) > CHAIN_NAME_BASE_LENGTH_MAX:
        name = name[:CHAIN_NAME_BASE_LENGTH_MAX - 3] + "..."
    return name


def chain_name_base(namespace: str, name: str, protocol: str, port_name: str = "") -> str:
    """``servicePortChainNameBase``: ``HASH-ns/name/proto/portname`` (proto lower-case)."""
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}")


def endpoint_chain_name_base(namespace: str, name: str, protocol: str, port_name: str,
                             endpoint: str) -> str:
    """``servicePortEndpointChainNameBase``: ``HASH-ns/name/proto/port__IP/PORT``."""
    ip, _, port = endpoint.rpartition(":")
    ip = ip.strip("[]").replace(":", ".")
    return hash_and_truncate(
        f"{namespace}/{name}/{protocol.lower()}/{port_name}__{ip}/{port}")


def _svc_base(svc: ServicePort) -> str:
    return chain_name_base(svc.namespace, svc.name, svc.protocol, svc.port_name)


def _ep_base(svc: ServicePort, ep: Endpoint) -> str:
    return endpoint_chain_name_base(svc.namespace, svc.name, svc.protocol, svc.port_name,
                                    ep.endpoint)


# --- options ----------------------------------------------------------------------------

@dataclass
class Options:
    """kube-proxy's configuration as it affects the table (defaults: a real node)."""

    node_name: str
    node_ips: tuple[str, ...] = ()
    cluster_cidr: str | None = None
    mark: str = "0x4000"
    masquerade_all: bool = False
    nodeport_addresses: tuple[str, ...] | None = None
    service_cidrs: tuple[str, ...] = ()
    node_zone: str = ""
    flush: bool = False
    _ipt: _iptables.Options = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ipt = _iptables.Options(node_name=self.node_name, node_ips=self.node_ips,
                                     cluster_cidr=self.cluster_cidr,
                                     nodeport_addresses=self.nodeport_addresses)

    @property
    def node_ip(self) -> str | None:
        return self._ipt.node_ip

    @property
    def local_cidr(self) -> str | None:
        """The IPv4 ``--cluster-cidr`` of the ClusterCIDR local-traffic detector."""
        cidr = self._ipt.local_cidr
        return str(ipaddress.IPv4Network(cidr, strict=False)) if cidr else None

    def nodeport_cidrs(self) -> list[ipaddress.IPv4Network] | None:
        """``--nodeport-addresses`` for IPv4; None when it matches every address."""
        return self._ipt.nodeport_cidrs()

    def nodeport_ips(self) -> list[str]:
        """``GetNodeIPs``: node addresses inside ``--nodeport-addresses``, no loopback."""
        cidrs = self.nodeport_cidrs() or []
        found: list[str] = []
        for text in self.node_ips:
            try:
                ip = ipaddress.IPv4Address(text.strip())
            except ValueError:
                continue
            if ip.is_loopback or str(ip) in found:
                continue
            if any(ip in net for net in cidrs):
                found.append(str(ip))
        return found


# --- the transaction --------------------------------------------------------------------

def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


class _Tx:
    """A knftables-like transaction that writes ``nft -f`` lines for ``ip kube-proxy``."""

    def __init__(self, options: Options) -> None:
        self.o = options
        self.lines: list[str] = []
        self.chains: set[str] = set()

    def _obj(self, verb: str, kind: str, name: str, props: str = "") -> None:
        line = f"{verb} {kind} {FAMILY} {TABLE} {name}".rstrip()
        self.lines.append(f"{line} {{ {props} }}" if props else line)

    def table(self) -> None:
        comment = _quote("rules for kube-proxy")
        self.lines.append(f"add table {FAMILY} {TABLE} {{ comment {comment} ; }}")

    def base_chain(self, name: str, kind: str, hook: str, priority: int) -> None:
        self._obj("add", "chain", name, f"type {kind} hook {hook} priority {priority} ;")
        if self.o.flush:
            self._obj("flush", "chain", name)
        self.chains.add(name)

    def ensure_chain(self, name: str, comment: str | None = None) -> None:
        """``ensureChain``: add (and with ``flush``, empty) a chain once per transaction."""
        if name in self.chains:
            return
        self.chains.add(name)
        self._obj("add", "chain", name, f"comment {_quote(comment)} ;" if comment else "")
        if self.o.flush:
            self._obj("flush", "chain", name)

    def rule(self, chain: str, rule: str, comment: str | None = None) -> None:
        text = f"add rule {FAMILY} {TABLE} {chain} {rule}"
        self.lines.append(f"{text} comment {_quote(comment)}" if comment else text)

    def set(self, name: str, props: str) -> None:
        self._obj("add", "set", name, props)

    def map(self, name: str, props: str) -> None:
        self._obj("add", "map", name, props)

    def element(self, name: str, key: Sequence[str], value: Sequence[str] = (),
                comment: str | None = None) -> None:
        body = " . ".join(key)
        if comment:
            body += f" comment {_quote(comment)}"
        if value:
            body += " : " + " . ".join(value)
        self.lines.append(f"add element {FAMILY} {TABLE} {name} {{ {body} }}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _setup(tx: _Tx) -> None:
    """``setupNFTables``: the fixed part of the table."""
    o = tx.o
    tx.table()
    if o.flush:  # first sync of a kube-proxy process: recreate the base chains
        for name, *_ in BASE_CHAINS:
            tx._obj("add", "chain", name)
            tx._obj("delete", "chain", name)
    for name, kind, hook, priority in BASE_CHAINS:
        tx.base_chain(name, kind, hook, priority)
    for dst, src, extra in JUMP_CHAINS:
        tx.ensure_chain(dst)
        tx.rule(src, f"{extra} jump {dst}".strip())
    for name in (SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ):
        tx.ensure_chain(name)
    tx.rule(MARK_MASQ, f"mark set mark or {o.mark}")
    tx.rule(MASQUERADING, f"mark and {o.mark} == 0 return")
    tx.rule(MASQUERADING, f"mark set mark xor {o.mark}")
    tx.rule(MASQUERADING, "masquerade fully-random")

    tx.set(CLUSTER_IPS, f"type ipv4_addr ; comment {_quote('Active ClusterIPs')} ;")
    tx.rule(CLUSTER_IPS_CHECK, f"ip daddr @{CLUSTER_IPS} reject",
            "Reject traffic to invalid ports of ClusterIPs")
    if o.service_cidrs:
        tx.rule(CLUSTER_IPS_CHECK, f"ip daddr {{ {','.join(o.service_cidrs)} }} drop",
                "Drop traffic to unallocated ClusterIPs")

    match_all = o.nodeport_cidrs() is None
    if not match_all or o.flush:
        tx.set(NODEPORT_IPS,
               f"type ipv4_addr ; comment {_quote('IPs that accept NodePort traffic')} ;")
    if match_all and o.flush:
        tx._obj("delete", "set", NODEPORT_IPS)
    elif not match_all:
        if o.flush:
            tx._obj("flush", "set", NODEPORT_IPS)
        for ip in o.nodeport_ips():
            tx.element(NODEPORT_IPS, [ip])

    tx.map(NO_ENDPOINT_SERVICES, f"type {VERDICT_TRIPLE} ; comment "
           + _quote("vmap to drop or reject packets to services with no endpoints") + " ;")
    tx.map(NO_ENDPOINT_NODEPORTS, f"type {VERDICT_PAIR} ; comment "
           + _quote("vmap to drop or reject packets to service nodeports with no endpoints")
           + " ;")
    tx.ensure_chain(REJECT_CHAIN, "helper for @no-endpoint-services / @no-endpoint-nodeports")
    tx.rule(REJECT_CHAIN, "reject")
    tx.rule(SERVICE_ENDPOINTS_CHECK, f"{DEST_TRIPLE} vmap @{NO_ENDPOINT_SERVICES}")
    nodeport_dest = NO_LOCALHOST if match_all else f"ip daddr @{NODEPORT_IPS}"
    tx.rule(NODEPORT_ENDPOINTS_CHECK, f"{nodeport_dest} {DEST_PAIR} vmap @{NO_ENDPOINT_NODEPORTS}")

    tx.map(FIREWALL_IPS, f"type {VERDICT_TRIPLE} ; comment "
           + _quote("destinations that are subject to LoadBalancerSourceRanges") + " ;")
    tx.ensure_chain(FIREWALL_CHECK)
    tx.rule(FIREWALL_CHECK, f"{DEST_TRIPLE} vmap @{FIREWALL_IPS}")

    tx.map(SERVICE_IPS, f"type {VERDICT_TRIPLE} ; comment "
           + _quote("ClusterIP, ExternalIP and LoadBalancer IP traffic") + " ;")
    tx.map(SERVICE_NODEPORTS, f"type {VERDICT_PAIR} ; comment {_quote('NodePort traffic')} ;")
    tx.rule(SERVICES, f"{DEST_TRIPLE} vmap @{SERVICE_IPS}")
    if match_all:
        tx.rule(SERVICES, f"fib daddr type local {NO_LOCALHOST} {DEST_PAIR} "
                          f"vmap @{SERVICE_NODEPORTS}")
    else:
        tx.rule(SERVICES, f"ip daddr @{NODEPORT_IPS} {DEST_PAIR} vmap @{SERVICE_NODEPORTS}")
    if o.flush:  # readOrReset's reset path: start the element containers empty
        tx._obj("flush", "set", CLUSTER_IPS)
        for name in (SERVICE_IPS, FIREWALL_IPS, NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS,
                     SERVICE_NODEPORTS):
            tx._obj("flush", "map", name)


# --- one service port -------------------------------------------------------------------

@dataclass
class _Plan:
    """What ``syncProxyRules`` decides for one service port before writing anything."""

    svc: ServicePort
    eps: Categorized
    cluster_chain: str
    local_chain: str
    external_chain: str
    firewall_chain: str
    uses_cluster_chain: bool
    uses_local_chain: bool
    internal_chain: str
    has_internal: bool
    external_policy_chain: str
    has_external: bool
    uses_external_chain: bool
    uses_fw_chain: bool
    internal_verdict: str = ""
    external_verdict: str = ""


def _plan(svc: ServicePort, eps: Categorized) -> _Plan:
    base = _svc_base(svc)
    cluster, local = SERVICE_PREFIX + base, LOCAL_PREFIX + base
    has_endpoints = eps.has_any
    internal_local, has_internal, external_local, has_external = traffic_targets(svc, eps)
    internal_chain = local if internal_local else cluster
    external_policy_chain = local if external_local else cluster
    plan = _Plan(
        svc=svc, eps=eps, cluster_chain=cluster, local_chain=local,
        external_chain=EXTERNAL_PREFIX + base, firewall_chain=FIREWALL_PREFIX + base,
        uses_cluster_chain=bool(eps.cluster) and svc.uses_cluster_endpoints,
        uses_local_chain=bool(eps.local) and svc.uses_local_endpoints,
        internal_chain=internal_chain, has_internal=has_internal,
        external_policy_chain=external_policy_chain, has_external=has_external,
        uses_external_chain=has_endpoints and svc.externally_accessible,
        uses_fw_chain=bool(svc.load_balancer_vips) and bool(svc.source_ranges),
    )
    if not has_endpoints:
        plan.internal_verdict = plan.external_verdict = f"goto {REJECT_CHAIN}"
    else:
        plan.internal_verdict = "" if has_internal else "drop"
        plan.external_verdict = "" if has_external else "drop"
    return plan


class _ServiceWriter:
    """The body of the per-service loop of ``syncProxyRules``."""

    def __init__(self, tx: _Tx, plan: _Plan) -> None:
        self.tx = tx
        self.p = plan
        self.svc = plan.svc
        self.proto = plan.svc.proto
        self.port = str(plan.svc.port)
        self.name = plan.svc.name_string

    def write(self) -> None:
        self.ensure_chains()
        self.capture_cluster_ip()
        self.capture_external_ips()
        self.capture_load_balancer_ips()
        self.capture_node_port()
        self.internal_traffic()
        self.external_traffic()
        self.firewall_chain()
        self.affinity_sets()
        if self.p.uses_cluster_chain:
            self.service_to_endpoint_rules(self.p.cluster_chain, self.p.eps.cluster)
        if self.p.uses_local_chain:
            self.service_to_endpoint_rules(self.p.local_chain, self.p.eps.local)
        self.endpoint_chains()

    def ensure_chains(self) -> None:
        p, tx = self.p, self.tx
        for ep in p.eps.reachable:
            tx.ensure_chain(ENDPOINT_PREFIX + _ep_base(self.svc, ep))
        if p.uses_cluster_chain:
            tx.ensure_chain(p.cluster_chain)
        if p.uses_local_chain:
            tx.ensure_chain(p.local_chain)
        if p.uses_external_chain:
            tx.ensure_chain(p.external_chain)
        if p.uses_fw_chain:
            tx.ensure_chain(p.firewall_chain)

    def _key(self, ip: str) -> list[str]:
        return [ip, self.proto, self.port]

    def _no_endpoints(self, ip: str, verdict: str) -> None:
        self.tx.element(NO_ENDPOINT_SERVICES, self._key(ip), [verdict], self.name)

    def capture_cluster_ip(self) -> None:
        p, tx, ip = self.p, self.tx, self.svc.cluster_ip
        tx.element(CLUSTER_IPS, [ip])
        if p.has_internal:
            tx.element(SERVICE_IPS, self._key(ip), [f"goto {p.internal_chain}"])
        else:
            self._no_endpoints(ip, p.internal_verdict)

    def capture_external_ips(self) -> None:
        p = self.p
        for ip in self.svc.external_ips:
            if p.eps.has_any:
                self.tx.element(SERVICE_IPS, self._key(ip), [f"goto {p.external_chain}"])
            if not p.has_external:
                self._no_endpoints(ip, p.external_verdict)

    def capture_load_balancer_ips(self) -> None:
        p = self.p
        for ip in self.svc.load_balancer_vips:
            if p.eps.has_any:
                self.tx.element(SERVICE_IPS, self._key(ip), [f"goto {p.external_chain}"])
            if p.uses_fw_chain:
                self.tx.element(FIREWALL_IPS, self._key(ip), [f"goto {p.firewall_chain}"])
        if not p.has_external:
            for ip in self.svc.load_balancer_vips:
                self._no_endpoints(ip, p.external_verdict)

    def capture_node_port(self) -> None:
        p, svc = self.p, self.svc
        if not svc.node_port:
            return
        key = [self.proto, str(svc.node_port)]
        if p.eps.has_any:
            self.tx.element(SERVICE_NODEPORTS, key, [f"goto {p.external_chain}"])
        if not p.has_external:
            self.tx.element(NO_ENDPOINT_NODEPORTS, key, [p.external_verdict], self.name)

    def internal_traffic(self) -> None:
        p, o = self.p, self.tx.o
        if not p.has_internal:
            return
        dest = f"ip daddr {self.svc.cluster_ip}"
        if o.masquerade_all:
            self.tx.rule(p.internal_chain, f"{dest} jump {MARK_MASQ}")
        elif o.local_cidr:
            self.tx.rule(p.internal_chain, f"{dest} ip saddr != {o.local_cidr} jump {MARK_MASQ}")

    def external_traffic(self) -> None:
        p, tx = self.p, self.tx
        if not p.uses_external_chain:
            return
        ext = p.external_chain
        if not self.svc.external_policy_local:
            tx.rule(ext, f"jump {MARK_MASQ}")
        else:
            if tx.o.local_cidr:
                tx.rule(ext, f"ip saddr {tx.o.local_cidr} goto {p.cluster_chain}",
                        "short-circuit pod traffic")
            tx.rule(ext, f"fib saddr type local jump {MARK_MASQ}", "masquerade local traffic")
            tx.rule(ext, f"fib saddr type local goto {p.cluster_chain}",
                    "short-circuit local traffic")
        if p.has_external:
            tx.rule(ext, f"goto {p.external_policy_chain}")

    def firewall_chain(self) -> None:
        svc, tx = self.svc, self.tx
        if not self.p.uses_fw_chain:
            return
        sources = [str(cidr) for cidr in svc.source_ranges]
        node_ip = tx.o.node_ip
        if node_ip and any(ipaddress.IPv4Address(node_ip) in c for c in svc.source_ranges):
            sources += list(svc.load_balancer_vips)
        tx.rule(self.p.firewall_chain, f"ip saddr != {{ {' , '.join(sources)} }} drop")

    def affinity_sets(self) -> None:
        if not self.svc.client_ip_affinity:
            return
        for ep in self.p.eps.reachable:
            self.tx.set(AFFINITY_PREFIX + _ep_base(self.svc, ep),
                        "type ipv4_addr ; flags dynamic,timeout ; "
                        f"timeout {self.svc.sticky_seconds}s ;")

    def service_to_endpoint_rules(self, chain: str, endpoints: Sequence[Endpoint]) -> None:
        """``writeServiceToEndpointRules``: affinity lookups, then one numgen vmap."""
        if self.svc.client_ip_affinity:
            for ep in endpoints:
                base = _ep_base(self.svc, ep)
                self.tx.rule(chain, f"ip saddr @{AFFINITY_PREFIX}{base} "
                                    f"goto {ENDPOINT_PREFIX}{base}")
        entries = " , ".join(f"{i} : goto {ENDPOINT_PREFIX}{_ep_base(self.svc, ep)}"
                             for i, ep in enumerate(endpoints))
        self.tx.rule(chain, f"numgen random mod {len(endpoints)} vmap {{ {entries} }}")

    def endpoint_chains(self) -> None:
        for ep in self.p.eps.reachable:
            base = _ep_base(self.svc, ep)
            chain = ENDPOINT_PREFIX + base
            self.tx.rule(chain, f"ip saddr {ep.ip} jump {MARK_MASQ}")
            if self.svc.client_ip_affinity:
                self.tx.rule(chain, f"update @{AFFINITY_PREFIX}{base} {{ ip saddr }}")
            self.tx.rule(chain, f"meta l4proto {self.proto} dnat to {ep.endpoint}")


# --- entry points -----------------------------------------------------------------------

def _sync(ports: Sequence[ServicePort],
          eps_map: dict[tuple[str, str, str, str], list[Endpoint]], options: Options) -> str:
    tx = _Tx(options)
    _setup(tx)
    for svc in sorted(ports, key=lambda s: s.key):
        eps = categorize(eps_map.get(svc.key, []), svc, options.node_name, options.node_zone)
        _ServiceWriter(tx, _plan(svc, eps)).write()
    return tx.text()


def render(services: list[dict], endpoint_slices: list[dict], *, node_name: str,
           node_ips: list[str], cluster_cidr: str | None = None,
           masquerade_bit: int = 14, padded_mark: bool = False,
           masquerade_all: bool = False, nodeport_addresses: Sequence[str] | None = None,
           service_cidrs: Iterable[str] = (), node_zone: str = "",
           flush: bool = False) -> str:
    """``nft -f`` input for ``table ip kube-proxy`` after a full sync (IPv4 only).

    - ``node_name`` decides which endpoints are local (``endpoints[].nodeName``).
    - ``node_ips``: the node's IPv4 addresses; the first is the node IP that
      ``loadBalancerSourceRanges`` are checked against, and with ``nodeport_addresses``
      those inside the CIDRs fill the ``nodeport-ips`` set.
    - ``cluster_cidr``: ``--cluster-cidr``, the ClusterCIDR local-traffic detector
      (``ip saddr != CIDR jump mark-for-masquerade`` in service chains, pod
      short-circuit in external chains). None: no detector, no such rules.
    - ``masquerade_bit``: ``--masquerade-bit``; ``padded_mark=True`` prints the mark as
      NewProxier does (``0x00004000``), not as the test proxier (``0x4000``).
    - ``masquerade_all``: ``--masquerade-all``.
    - ``nodeport_addresses``: ``--nodeport-addresses`` CIDRs (or ``"primary"``); None
      accepts NodePorts on every local address but 127.0.0.0/8 (``fib daddr type local``).
    - ``service_cidrs``: the ServiceCIDRs; traffic to unallocated ClusterIPs inside them
      is dropped. Empty: no such rule.
    - ``node_zone``: the node's topology zone, for endpoint zone hints.
    - ``flush``: also write kube-proxy's ``flush``/``delete`` commands, so the text
      replaces the contents of an existing table (as kube-proxy's first sync does).
    """
    options = Options(
        node_name=node_name, node_ips=tuple(node_ips), cluster_cidr=cluster_cidr,
        mark=masquerade_mark(masquerade_bit, padded=padded_mark),
        masquerade_all=masquerade_all,
        nodeport_addresses=tuple(nodeport_addresses) if nodeport_addresses else None,
        service_cidrs=tuple(service_cidrs), node_zone=node_zone, flush=flush,
    )
    ports = [port for svc in services for port in service_ports(svc)]
    return _sync(ports, endpoints_map(endpoint_slices, node_name=node_name), options)


def render_yaml(text: str, *, node_name: str, node_ips: list[str],
                cluster_cidr: str | None = None, **kw: Any) -> str:
    """:func:`render` for YAML of v1 Services and discovery.k8s.io/v1 EndpointSlices.

    Slices are joined to Services by the ``kubernetes.io/service-name`` label (and the
    namespace); other kinds are ignored.
    """
    services, slices = load_objects(text)
    return render(services, slices, node_name=node_name, node_ips=node_ips,
                  cluster_cidr=cluster_cidr, **kw)
