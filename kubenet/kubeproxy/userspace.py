"""kube-proxy's historical *userspace* mode, as the iptables rules it installed.

This is the design of 2015 that "Understanding Kubernetes networking: services" walks
through, removed from Kubernetes in v1.26. kube-proxy itself listened on one port per
service port (the *proxy port*, e.g. 10400) and netfilter only steered packets for the
cluster IP to that port; kube-proxy then opened a second connection to a pod. The
process half lives in :mod:`kubenet.userspace_proxy`; this module is the netfilter half.

It mirrors ``pkg/proxy/userspace/proxier.go`` (kubernetes commit
0096f4a4d137aa03ee1f5d168dadb325833b3a57): :func:`init_rules` is ``iptablesInit``,
:func:`portal_rules` is ``openOnePortal``, :func:`node_port_rules` is ``openNodePort``,
:func:`service_rules` is ``openPortal`` and :func:`cleanup_rules` is
``CleanupLeftovers``. Every argument list is in the order proxier.go builds it (which
is *not* iptables-save's order; :func:`save_line` gives that form, as the article
prints it). Each rule carries the operation kube-proxy used: ``-N`` (``EnsureChain``),
``-I`` (``EnsureRule(Prepend)``: insert at position 1), ``-A`` (``EnsureRule(Append)``),
and for cleanup ``-D``, ``-F``, ``-X``. kube-proxy ran each one as its own ``iptables``
command after checking it was missing (``-C``); :func:`restore_text` gives an equivalent
``iptables-restore --noflush`` input for one atomic apply on a fresh node.

The module is pure: no subprocess, no files.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = [
    "CONTAINER_NODEPORT_CHAIN",
    "CONTAINER_PORTAL_CHAIN",
    "DEFAULT_UDP_IDLE_TIMEOUT",
    "ENDPOINT_DIAL_TIMEOUTS",
    "HOST_NODEPORT_CHAIN",
    "HOST_PORTAL_CHAIN",
    "NON_LOCAL_NODEPORT_CHAIN",
    "Rule",
    "cleanup_rules",
    "init_rules",
    "node_port_rules",
    "portal_rules",
    "restore_text",
    "save_line",
    "service_port_name",
    "service_rules",
]

# The five chains the userspace proxier owns.
CONTAINER_PORTAL_CHAIN = "KUBE-PORTALS-CONTAINER"
HOST_PORTAL_CHAIN = "KUBE-PORTALS-HOST"
CONTAINER_NODEPORT_CHAIN = "KUBE-NODEPORT-CONTAINER"
HOST_NODEPORT_CHAIN = "KUBE-NODEPORT-HOST"
NON_LOCAL_NODEPORT_CHAIN = "KUBE-NODEPORT-NON-LOCAL"

PORTALS_COMMENT = "handle ClusterIPs; NOTE: this must be before the NodePort rules"
NODEPORTS_COMMENT = "handle service NodePorts; NOTE: this must be the last rule in the chain"
NON_LOCAL_COMMENT = "Ensure that non-local NodePort traffic can flow"

# Facts of the proxy process, kept here so the course can quote them: kube-proxy's
# --udp-timeout default, and the per-attempt dial timeouts of proxysocket.go tryConnect.
DEFAULT_UDP_IDLE_TIMEOUT = 0.25
ENDPOINT_DIAL_TIMEOUTS = (0.25, 0.5, 1.0, 2.0)

_ANY = ("0.0.0.0", "::")
_LOCALHOST = ("127.0.0.1", "::1")


class Rule(NamedTuple):
    """One iptables operation: ``iptables -t TABLE OP CHAIN ARGS...``.

    ``op`` is ``-N`` (ensure the chain exists; ``args`` is empty), ``-I`` (prepend: the
    rule goes to position 1), ``-A`` (append), or for cleanup ``-D``, ``-F``, ``-X``.
    """

    table: str
    chain: str
    args: list[str]
    op: str = "-A"

    def argv(self) -> list[str]:
        """The arguments after ``iptables`` (kube-proxy also passed ``-w`` for the lock)."""
        return ["-t", self.table, self.op, self.chain, *self.args]


def service_port_name(namespace: str, name: str, port_name: str = "", *,
                      always_colon: bool = True) -> str:
    """``ServicePortName.String()``, the comment on every portal rule.

    In the userspace era it was ``"%s:%s"``, so an unnamed port still gives a trailing
    colon: ``default/service-test:`` as in the article. Later releases (the stored
    proxier.go among them) drop the colon when the port has no name: pass
    ``always_colon=False`` for that form.
    """
    if always_colon or port_name:
        return f"{namespace}/{name}:{port_name}"
    return f"{namespace}/{name}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _to_cidr(ip: str) -> str:
    """``utilproxy.ToCIDR``: the host address with /32 (IPv4) or /128 (IPv6)."""
    addr = _ip(ip)
    return f"{addr}/{32 if addr.version == 4 else 128}"


def _join_host_port(ip: str, port: int) -> str:
    """``net.JoinHostPort``: IPv6 hosts get brackets."""
    addr = _ip(ip)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _check_listen_ip(listen_ip: str) -> None:
    if str(_ip(listen_ip)) in _LOCALHOST:
        raise ValueError("cannot proxy on localhost")  # ErrProxyOnLocalhost


def _is_any(ip: str) -> bool:
    return str(_ip(ip)) in _ANY


def _common_args(dest_ip: str | None, physdev: bool, dst_local: bool, dest_port: int,
                 protocol: str, service: str) -> list[str]:
    """``iptablesCommonPortalArgs``."""
    proto = protocol.lower()
    args = ["-m", "comment", "--comment", service, "-p", proto, "-m", proto,
            "--dport", str(dest_port)]
    if dest_ip is not None:
        args += ["-d", _to_cidr(dest_ip)]
    if physdev:
        args += ["-m", "physdev", "!", "--physdev-is-in"]
    if dst_local:
        args += ["-m", "addrtype", "--dst-type", "LOCAL"]
    return args


def _container_args(dest_ip: str | None, physdev: bool, dst_local: bool, dest_port: int,
                    protocol: str, listen_ip: str, proxy_port: int, service: str) -> list[str]:
    """``iptablesContainerPortalArgs``: REDIRECT when listening on any address, else DNAT."""
    args = _common_args(dest_ip, physdev, dst_local, dest_port, protocol, service)
    if _is_any(listen_ip):
        return [*args, "-j", "REDIRECT", "--to-ports", str(proxy_port)]
    return [*args, "-j", "DNAT", "--to-destination", _join_host_port(listen_ip, proxy_port)]


def _host_args(dest_ip: str | None, dst_local: bool, dest_port: int, protocol: str,
               listen_ip: str, proxy_port: int, node_ip: str, service: str) -> list[str]:
    """``iptablesHostPortalArgs`` / ``iptablesHostNodePortArgs``: always DNAT.

    With the proxy on any address the target is the node's own IP (``hostIP``), since a
    REDIRECT of locally generated packets goes to 127.0.0.1 and breaks UDP replies.
    """
    args = _common_args(dest_ip, False, dst_local, dest_port, protocol, service)
    target = node_ip if _is_any(listen_ip) else listen_ip
    return [*args, "-j", "DNAT", "--to-destination", _join_host_port(target, proxy_port)]


def init_rules() -> list[Rule]:
    """What ``iptablesInit`` ensures, in its order (run again on every sync).

    1. ``-N`` nat ``KUBE-PORTALS-CONTAINER``, then ``-I`` (prepend) its jump from PREROUTING
    2. ``-N`` nat ``KUBE-PORTALS-HOST``, then ``-I`` (prepend) its jump from OUTPUT
    3. ``-N`` nat ``KUBE-NODEPORT-CONTAINER``, then ``-A`` (append) its jump from PREROUTING,
       matching ``-m addrtype --dst-type LOCAL``
    4. ``-N`` nat ``KUBE-NODEPORT-HOST``, then ``-A`` (append) its jump from OUTPUT, same match
    5. ``-N`` filter ``KUBE-NODEPORT-NON-LOCAL``, then ``-I`` (prepend) its jump from INPUT

    Portal jumps first and NodePort jumps last: the NodePort match is broad (any local
    address), so it must not shadow a portal. At start the proxier then flushes the five
    chains (``iptablesFlush``), since old rules point at proxy ports no longer bound.
    """
    portals = ["-m", "comment", "--comment", PORTALS_COMMENT]
    nodeports = ["-m", "addrtype", "--dst-type", "LOCAL",
                 "-m", "comment", "--comment", NODEPORTS_COMMENT]
    non_local = ["-m", "comment", "--comment", NON_LOCAL_COMMENT]
    return [
        Rule("nat", CONTAINER_PORTAL_CHAIN, [], "-N"),
        Rule("nat", "PREROUTING", [*portals, "-j", CONTAINER_PORTAL_CHAIN], "-I"),
        Rule("nat", HOST_PORTAL_CHAIN, [], "-N"),
        Rule("nat", "OUTPUT", [*portals, "-j", HOST_PORTAL_CHAIN], "-I"),
        Rule("nat", CONTAINER_NODEPORT_CHAIN, [], "-N"),
        Rule("nat", "PREROUTING", [*nodeports, "-j", CONTAINER_NODEPORT_CHAIN], "-A"),
        Rule("nat", HOST_NODEPORT_CHAIN, [], "-N"),
        Rule("nat", "OUTPUT", [*nodeports, "-j", HOST_NODEPORT_CHAIN], "-A"),
        Rule("filter", NON_LOCAL_NODEPORT_CHAIN, [], "-N"),
        Rule("filter", "INPUT", [*non_local, "-j", NON_LOCAL_NODEPORT_CHAIN], "-I"),
    ]


def cleanup_rules() -> list[Rule]:
    """``CleanupLeftovers``: delete the five jumps, then flush and delete the chains.

    kube-proxy ignored "not found" errors for each, so every step may fail harmlessly.
    (It walked the chains in Go map order; here nat comes first, then filter.)
    """
    jumps = [rule for rule in init_rules() if rule.op != "-N"]
    by_target = {rule.args[-1]: rule for rule in jumps}
    deletes = [by_target[chain]._replace(op="-D") for chain in (
        HOST_PORTAL_CHAIN, CONTAINER_PORTAL_CHAIN, HOST_NODEPORT_CHAIN,
        CONTAINER_NODEPORT_CHAIN, NON_LOCAL_NODEPORT_CHAIN)]
    chains = [("nat", CONTAINER_PORTAL_CHAIN), ("nat", HOST_PORTAL_CHAIN),
              ("nat", HOST_NODEPORT_CHAIN), ("nat", CONTAINER_NODEPORT_CHAIN),
              ("filter", NON_LOCAL_NODEPORT_CHAIN)]
    flushes = []
    for table, chain in chains:
        flushes += [Rule(table, chain, [], "-F"), Rule(table, chain, [], "-X")]
    return deletes + flushes


def portal_rules(service: str, ip: str, port: int, protocol: str, proxy_port: int,
                 node_ip: str, *, listen_ip: str = "0.0.0.0",
                 external: bool = False) -> list[Rule]:
    """``openOnePortal``: the rules that steer ``ip:port/protocol`` to the proxy port.

    ``service`` is the comment (see :func:`service_port_name`), ``node_ip`` the
    proxier's ``hostIP`` and ``listen_ip`` its ``--bind-address``. A cluster IP or
    load-balancer ingress IP (``external=False``) gets two appended rules:

    * nat ``KUBE-PORTALS-CONTAINER`` (packets arriving from pods, via PREROUTING):
      ``REDIRECT --to-ports PROXYPORT`` (``DNAT`` to ``listen_ip:PROXYPORT`` if the proxy
      is bound to one address);
    * nat ``KUBE-PORTALS-HOST`` (packets the node itself sends, via OUTPUT):
      ``DNAT --to-destination NODEIP:PROXYPORT``.

    An external IP (``external=True``) gets three: from containers except bridged
    traffic (``-m physdev ! --physdev-is-in``), from containers to a local address
    (``-m addrtype --dst-type LOCAL``), and from the host to a local address.

    (When ``ip`` is one of the node's own addresses kube-proxy also held that port open
    with a socket; that is not an iptables rule and is not reproduced here.)
    """
    _check_listen_ip(listen_ip)
    if not external:
        return [
            Rule("nat", CONTAINER_PORTAL_CHAIN, _container_args(
                ip, False, False, port, protocol, listen_ip, proxy_port, service)),
            Rule("nat", HOST_PORTAL_CHAIN, _host_args(
                ip, False, port, protocol, listen_ip, proxy_port, node_ip, service)),
        ]
    return [
        Rule("nat", CONTAINER_PORTAL_CHAIN, _container_args(
            ip, True, False, port, protocol, listen_ip, proxy_port, service)),
        Rule("nat", CONTAINER_PORTAL_CHAIN, _container_args(
            ip, False, True, port, protocol, listen_ip, proxy_port, service)),
        Rule("nat", HOST_PORTAL_CHAIN, _host_args(
            ip, True, port, protocol, listen_ip, proxy_port, node_ip, service)),
    ]


def node_port_rules(service: str, node_port: int, protocol: str, proxy_port: int,
                    node_ip: str, *, listen_ip: str = "0.0.0.0") -> list[Rule]:
    """``openNodePort``: three appended rules, none with ``-d`` (any local address).

    * nat ``KUBE-NODEPORT-CONTAINER``: ``--dport NODEPORT -j REDIRECT --to-ports PROXYPORT``
      (or DNAT to ``listen_ip``), like the container portal rule;
    * nat ``KUBE-NODEPORT-HOST``: ``--dport NODEPORT -j DNAT --to-destination
      NODEIP:PROXYPORT``;
    * filter ``KUBE-NODEPORT-NON-LOCAL``: ``--dport PROXYPORT -m state --state NEW
      -j ACCEPT``. It matches the *proxy* port, not the NodePort: by the time a packet
      reaches filter INPUT, nat PREROUTING has already redirected it.

    (kube-proxy also held the NodePort itself open with a socket; not reproduced here.)
    """
    _check_listen_ip(listen_ip)
    return [
        Rule("nat", CONTAINER_NODEPORT_CHAIN, _container_args(
            None, False, False, node_port, protocol, listen_ip, proxy_port, service)),
        Rule("nat", HOST_NODEPORT_CHAIN, _host_args(
            None, False, node_port, protocol, listen_ip, proxy_port, node_ip, service)),
        Rule("filter", NON_LOCAL_NODEPORT_CHAIN, [
            *_common_args(None, False, False, proxy_port, protocol, service),
            "-m", "state", "--state", "NEW", "-j", "ACCEPT"]),
    ]


def service_rules(service: str, cluster_ip: str, port: int, protocol: str, proxy_port: int,
                  node_ip: str, *, external_ips: Sequence[str] = (),
                  load_balancer_ips: Sequence[str] = (), node_port: int = 0,
                  listen_ip: str = "0.0.0.0") -> list[Rule]:
    """``openPortal``: every rule of one service port, in kube-proxy's order.

    The cluster IP portal, then each external IP (as an external portal), then each
    load-balancer ingress IP (as a plain portal), then the NodePort if there is one.
    """
    rules = portal_rules(service, cluster_ip, port, protocol, proxy_port, node_ip,
                         listen_ip=listen_ip)
    for ip in external_ips:
        rules += portal_rules(service, ip, port, protocol, proxy_port, node_ip,
                              listen_ip=listen_ip, external=True)
    for ip in load_balancer_ips:
        rules += portal_rules(service, ip, port, protocol, proxy_port, node_ip,
                              listen_ip=listen_ip)
    if node_port:
        rules += node_port_rules(service, node_port, protocol, proxy_port, node_ip,
                                 listen_ip=listen_ip)
    return rules


_PLAIN = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _quote(value: str) -> str:
    """``xtables_save_string``: a comment is quoted unless it is all letters, digits, _ -."""
    if value and set(value) <= _PLAIN:
        return value
    escaped = "".join("\\" + c if c in "\"\\'" else c for c in value)
    return f'"{escaped}"'


def _words(args: Sequence[str]) -> str:
    """One line of iptables-save / iptables-restore text: only comments need quoting."""
    return " ".join(_quote(word) if at and args[at - 1] == "--comment" else word
                    for at, word in enumerate(args))


def save_line(rule: Rule) -> str:
    """The rule as ``iptables-save`` prints it (``-A CHAIN -d ... -p ... matches -j ...``).

    iptables-save moves the address and protocol matches to the front; the ``-m``
    matches and the target stay in the order given. This is the form the article shows.
    """
    args = list(rule.args)
    front: list[str] = []
    for flag in ("-s", "-d", "-i", "-o", "-p"):
        if flag in args:
            at = args.index(flag)
            negated = at > 0 and args[at - 1] == "!" and (at < 2 or args[at - 2] != "-m")
            start = at - 1 if negated else at
            front += args[start:at + 2]
            del args[start:at + 2]
    return _words(["-A", rule.chain, *front, *args])


def restore_text(init: Iterable[Rule], portals: Iterable[Rule]) -> str:
    """``iptables-restore --noflush`` input equivalent to applying ``init`` then ``portals``.

    Each table declares the chains created with ``-N`` (with ``--noflush`` a declared
    chain is created, or flushed if it exists, as ``iptablesFlush`` does at start), then
    lists the rules with their own ``-I``/``-A``/``-D``. Built-in chains are never
    declared, so PREROUTING, OUTPUT and INPUT keep their other rules. Meant for a fresh
    node: unlike kube-proxy's check-then-insert, a second apply adds the jumps again.
    Tables come in the order first seen (nat before filter for :func:`init_rules`).
    """
    tables: dict[str, tuple[list[str], list[str]]] = {}
    for rule in [*init, *portals]:
        chains, lines = tables.setdefault(rule.table, ([], []))
        if rule.op == "-N":
            if rule.chain not in chains:
                chains.append(rule.chain)
        elif rule.op in ("-F", "-X"):
            lines.append(f"{rule.op} {rule.chain}")
        else:
            lines.append(_words([rule.op, rule.chain, *rule.args]))
    out: list[str] = []
    for table, (chains, lines) in tables.items():
        out.append(f"*{table}")
        out += [f":{chain} - [0:0]" for chain in chains]
        out += lines
        out.append("COMMIT")
    return "\n".join(out) + "\n"
