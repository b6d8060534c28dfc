"""A packet's walk through the lab, as the kernel reported it (pure).

``kubenet trace FROM DEST:PORT`` sends one real TCP SYN from a pod (or a node, the gateway,
the external client) and records what happened to it. The capturing runs inside the lab
(:mod:`kubenet.packets`); this module only turns what was captured into a :class:`Trace`:

- the *hops*: every interface the SYN crossed, in order, with the addresses seen there
  (AF_PACKET captures in every network namespace of the lab);
- the *rules* it matched on each node, in the order the kernel reported them
  (``xtables-monitor --trace`` running in the node's namespace for iptables rules, ``nft
  monitor trace`` for the ``table ip kube-proxy`` of kube-proxy's nftables mode);
- the *conntrack* entries the nodes made for it (their ``/proc/net/nf_conntrack``,
  what ``conntrack -L -o extended`` prints);
- the *reply* (the SYN-ACK) and the interfaces it crossed on its way back;
- for a name, the DNS questions and answers that came first.

Nothing here is predicted: every field comes from captured text or packets. The module
also holds the small pure helpers the capturing side needs (destination parsing, resolver
search lists, the nftables scripts that switch tracing on for one packet, and which
captured packets belong to the traced connection), so they can be unit-tested.
"""

from __future__ import annotations

import html
import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .conntrack import parse_conntrack
from .errors import BadRequest

__all__ = [
    "Conntrack",
    "DnsQuery",
    "Hop",
    "MonitorPacket",
    "Packet",
    "Reply",
    "RuleHit",
    "Trace",
    "build",
    "flags_name",
    "nft_base_chains",
    "nft_nat_walk",
    "nft_script",
    "order",
    "parse_destination",
    "parse_nft_monitor",
    "parse_xtables_monitor",
    "search_names",
]

# The traced SYN leaves from a source port above the kernel's ephemeral range
# (net.ipv4.ip_local_port_range is 32768-60999 by default), so it never collides with a
# connection a program in the pod makes.
TRACE_PORTS = (61000, 65535)
NFT_TABLE = "kubenet-trace"
# The tools that report the kernel's trace of a node's rules, by the rules they can print.
XTABLES_MONITOR = "xtables-monitor --trace"  # iptables' rules (kube-proxy's iptables mode)
NFT_MONITOR = "nft monitor trace"  # any nftables table (kube-proxy's nftables mode)
NFT_FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")

TCP_FLAGS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
             ("URG", 0x20))
SYN, ACK, RST = 0x02, 0x10, 0x04

# xtables-monitor prints a verdict it has no name for as a number: NFT_RETURN is -5.
_VERDICTS = {"0xfffffffb": "RETURN", "0xfffffffd": "JUMP", "0xfffffffc": "GOTO",
             "0xffffffff": "CONTINUE", "0xfffffffe": "BREAK"}


# -- what the user asks ------------------------------------------------------------------------
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def parse_destination(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port). HOST is an IPv4 address or a DNS name."""
    host, sep, port_text = text.strip().rpartition(":")
    hint = "expected HOST:PORT, for example service-test:80 or 10.3.241.152:80"
    if not sep or not host or not port_text.isdigit():
        raise BadRequest(f'error: invalid destination "{text}": {hint}')
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise BadRequest(f'error: invalid destination "{text}": port {port} is not in '
                         "1-65535")
    if _is_ipv4(host):
        return host, port
    name = host.lower().rstrip(".")
    if ":" in host or not name or len(name) > 253 or \
            not all(_LABEL.match(label) for label in name.split(".")) or \
            re.fullmatch(r"[0-9.]+", name):
        raise BadRequest(f'error: invalid destination "{text}": "{host}" is neither an IPv4 '
                         f"address nor a DNS name ({hint})")
    return host.lower(), port


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def search_names(host: str, resolv_conf: str) -> tuple[str, list[str]]:
    """The nameserver, and the names a resolver with this resolv.conf asks, in order.

    glibc's rule: a name with at least ``ndots`` dots (or a trailing dot) is tried as it
    is first; otherwise each search domain is appended first and the name as it is last.
    """
    nameserver, search, ndots = "", [], 1
    for line in resolv_conf.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1 and not nameserver:
            nameserver = words[1]
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            for opt in words[1:]:
                if opt.startswith("ndots:") and opt[6:].isdigit():
                    ndots = min(int(opt[6:]), 15)
    if host.endswith("."):
        return nameserver, [host]
    absolute = host + "."
    expanded = [f"{host}.{domain.rstrip('.')}." for domain in search]
    if host.count(".") >= ndots:
        return nameserver, [absolute, *expanded]
    return nameserver, [*expanded, absolute]


def nft_script(*, trace_ids: Iterable[int] = (), trace_syns: bool = False,
               drop_rst: tuple[str, int, int] | None = None, local_source: bool = False,
               ) -> str:
    """The nftables rules that switch tracing on for the traced packets, in one node.

    ``trace_ids``: set ``nftrace`` on IPv4 packets with these IP IDs (the traced SYN keeps
    its ID through every rewrite and every hop, which its ports do not). ``trace_syns``:
    also on every TCP SYN the node sees or sends (a userspace proxy's second connection;
    they are told apart afterwards by their addresses). ``drop_rst``: ``(address, port,
    ip_id)``: drop the RST the client's kernel sends from ``address:port`` when the SYN-ACK
    finds no socket there, as it reaches the node (or leaves it, with ``local_source``: the
    node is the client); the tracer's own packets carry ``ip_id`` and pass. The server
    never sees that RST, so the connection stays half-open until the tracer resets it.

    The table is ``inet``: ``xtables-monitor -4`` reports only ``ip`` tables, so it shows
    the rules of iptables (kube-proxy's) and not these. Priority -350 runs before
    conntrack (-200) and iptables' raw table (-300): the whole path through iptables is
    traced, and a dropped RST is never tracked. The table and its chains stay between
    traces, empty (:func:`nft_off_script`): hooking a chain into the kernel, or unhooking
    it, waits for an RCU grace period (tens of milliseconds), changing rules does not.
    """
    pre, out = [], []
    ids = sorted(set(trace_ids))
    if ids:
        match = f"ip id {ids[0]}" if len(ids) == 1 else \
            "ip id { " + ", ".join(str(i) for i in ids) + " }"
        pre.append(f"{match} meta nftrace set 1")
        out.append(f"{match} meta nftrace set 1")
    if trace_syns:
        syn = "tcp flags & (fin | syn | rst | ack) == syn meta nftrace set 1"
        pre.append(syn)
        out.append(syn)
    if drop_rst is not None:
        address, port, ip_id = drop_rst
        rule = (f"ip saddr {address} tcp sport {port} tcp flags & rst == rst ip id != {ip_id} "
                "drop")
        (out if local_source else pre).append(rule)
    lines = [f"table inet {NFT_TABLE} {{",
             "  chain pre { type filter hook prerouting priority -350; policy accept; }",
             "  chain out { type filter hook output priority -350; policy accept; }",
             "}", f"flush table inet {NFT_TABLE}"]
    for name, rules in (("pre", pre), ("out", out)):
        lines += [f"add rule inet {NFT_TABLE} {name} {rule}" for rule in rules]
    return "\n".join(lines) + "\n"


def nft_off_script() -> str:
    """Tracing off: the rules go, the (empty) chains stay for the next trace."""
    return f"flush table inet {NFT_TABLE}\n"


# -- captured packets --------------------------------------------------------------------------
def flags_name(flags: int) -> str:
    """TCP flags as the course writes them: SYN, SYN-ACK, ACK, RST, RST-ACK, PSH-ACK..."""
    names = [n for n, bit in TCP_FLAGS if flags & bit and n != "ACK"]
    if flags & ACK:
        names.append("ACK")
    return "-".join(names) or "none"


@dataclass(frozen=True)
class Packet:
    """One IPv4 TCP/UDP packet seen by an AF_PACKET socket in one namespace."""

    ns: str
    iface: str
    dir: str  # "in" (received on iface) or "out" (sent from it)
    ts: int  # the kernel's timestamp, nanoseconds
    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    ip_id: int
    flags: int = 0
    seq: int = 0
    ack: int = 0
    ttl: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Packet:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def tuple(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)

    @property
    def is_syn(self) -> bool:
        return self.proto == "tcp" and self.flags & (SYN | ACK | RST) == SYN

    def answers(self, isn: int) -> bool:
        """A SYN-ACK (or RST) acknowledging a SYN whose sequence number was ``isn``."""
        return self.proto == "tcp" and bool(self.flags & ACK) and \
            bool(self.flags & (SYN | RST)) and self.ack == (isn + 1) & 0xFFFFFFFF


def parse_frame(data: bytes) -> dict[str, Any] | None:
    """An Ethernet frame -> the IPv4 TCP/UDP fields of :class:`Packet`, or None."""
    if len(data) < 34 or data[12:14] != b"\x08\x00":
        return None
    return parse_ipv4(data[14:])


def parse_ipv4(ip: bytes) -> dict[str, Any] | None:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    proto = {6: "tcp", 17: "udp"}.get(ip[9])
    if proto is None or len(ip) < ihl + (20 if proto == "tcp" else 8):
        return None
    l4 = ip[ihl:]
    out: dict[str, Any] = {
        "proto": proto, "src": ".".join(str(b) for b in ip[12:16]),
        "dst": ".".join(str(b) for b in ip[16:20]),
        "sport": int.from_bytes(l4[0:2], "big"), "dport": int.from_bytes(l4[2:4], "big"),
        "ip_id": int.from_bytes(ip[4:6], "big"), "ttl": ip[8]}
    if proto == "tcp":
        out.update(seq=int.from_bytes(l4[4:8], "big"), ack=int.from_bytes(l4[8:12], "big"),
                   flags=l4[13])
    return out


def order(packets: Iterable[Packet], masters: dict[str, dict[str, str]] | None = None,
          ) -> list[Packet]:
    """Packets in the order they crossed interfaces.

    By the kernel's timestamp; a frame a bridge port received and the bridge then passed
    up to its own device keeps the port's timestamp, so on a tie the port comes first (and
    on the way out, the bridge before its port), and a frame sent comes before the same
    frame received by the peer.
    """
    masters = masters or {}

    def rank(p: Packet) -> tuple[int, int]:
        enslaved = bool(masters.get(p.ns, {}).get(p.iface))
        if p.dir == "out":
            return (0, 1 if enslaved else 0)
        return (1, 0 if enslaved else 1)

    return sorted(packets, key=lambda p: (p.ts, rank(p)))


def leg2_syn(packets: Iterable[Packet], proxy_ns: str, ip_id: int, after: int) -> Packet | None:
    """The first connection a proxy in ``proxy_ns`` opened after ``after`` (its SYN, as it
    left that namespace): the userspace kube-proxy's connection to a pod."""
    found = [p for p in packets if p.ns == proxy_ns and p.dir == "out" and p.is_syn
             and p.ip_id != ip_id and p.ts >= after and not p.dst.startswith("127.")]
    return min(found, key=lambda p: p.ts) if found else None


def same_packet(p: Packet, first: Packet) -> bool:
    """``p`` is ``first`` seen elsewhere: NAT rewrites addresses and ports, never the IP ID,
    the flags or the sequence number."""
    return p.proto == first.proto and p.ip_id == first.ip_id and p.flags == first.flags \
        and p.seq == first.seq


# -- xtables-monitor --trace -------------------------------------------------------------------
@dataclass
class MonitorPacket:
    """A ``PACKET:`` line of ``xtables-monitor --trace`` and the ``TRACE:`` lines after it
    (or an ``nft monitor trace`` ``packet:`` line and the lines after it)."""

    trace_id: str
    fields: dict[str, str]
    flags: list[str]
    events: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    # (table, chain, kind, verdict, rule text)
    # nft only: the base chain whose walk printed the packet (its events follow), and its
    # table, named with its family ("ip kube-proxy", "nat-prerouting").
    table: str = ""
    chain: str = ""

    @property
    def tuple(self) -> tuple[str, int, str, int]:
        f = self.fields
        return (f.get("SRC", ""), int(f.get("SPORT", 0)), f.get("DST", ""),
                int(f.get("DPORT", 0)))

    @property
    def ip_id(self) -> int:
        return int(self.fields.get("ID", "-1"))

    @property
    def is_syn(self) -> bool:
        return "SYN" in self.flags and "ACK" not in self.flags and "RST" not in self.flags

    @property
    def hook(self) -> str:
        """Where netfilter saw it: the interfaces it came in on and goes out of."""
        f = self.fields
        parts = [f"in {f['IN']}" if f.get("IN") else "", f"out {f['OUT']}" if f.get("OUT")
                 else ""]
        return ", ".join(p for p in parts if p)


_PACKET = re.compile(r"^PACKET: (\d+) ([0-9a-f]+) (.*)$")
_TRACE = re.compile(r"^TRACE: (\d+) ([0-9a-f]+) (\S+?)(?:  (.*))?$")
_FLAG_WORDS = {"SYN", "ACK", "RST", "FIN", "PSH", "URG", "ECE", "CWR", "DF", "MF"}


def parse_xtables_monitor(text: str) -> list[MonitorPacket]:
    """``xtables-monitor --trace`` output -> packets with their rule events, in order.

    A ``TRACE:`` line belongs to the last ``PACKET:`` line with the same trace id (the
    kernel prints the packet again at each hook: nat PREROUTING, filter FORWARD...).
    """
    packets: list[MonitorPacket] = []
    last: dict[str, MonitorPacket] = {}
    for raw in text.splitlines():
        line = raw.strip()
        m = _PACKET.match(line)
        if m:
            fields, flags = {}, []
            for word in m.group(3).split():
                key, eq, value = word.partition("=")
                if eq:
                    fields.setdefault(key, value)
                elif word in _FLAG_WORDS:
                    flags.append(word)
            pkt = MonitorPacket(m.group(2), fields, flags)
            packets.append(pkt)
            last[m.group(2)] = pkt
            continue
        m = _TRACE.match(line)
        if not m or m.group(2) not in last:
            continue
        parts = m.group(3).split(":")
        if len(parts) < 3:
            continue
        table, chain, kind = parts[0], parts[1], parts[2]
        rest = parts[3:]
        if kind == "rule" and rest:
            rest = rest[1:]  # the rule's handle
        verdict = " ".join(_VERDICTS.get(r, r) for r in rest)
        last[m.group(2)].events.append((table, chain, kind, verdict, (m.group(4) or "").strip()))
    return packets


# -- nft monitor trace -------------------------------------------------------------------------
_NFT_LINE = re.compile(r"^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) ?(.*)$")
_NFT_RULE = re.compile(r"^(?:rule (.*?)|(unknown rule handle \d+)) \(verdict ([^()]*)\)$")
# The packet's fields an nft trace prints, under the names xtables-monitor gives them, so
# one MonitorPacket answers the same questions for both tools.
_NFT_FIELDS = {"iif": "IN", "oif": "OUT", "ip saddr": "SRC", "ip daddr": "DST",
               "ip id": "ID", "ip protocol": "PROTO", "ip ttl": "TTL", "tcp sport": "SPORT",
               "tcp dport": "DPORT", "udp sport": "SPORT", "udp dport": "DPORT",
               "meta mark": "MARK"}
_NFT_TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10,
                  "urg": 0x20, "ecn": 0x40, "cwr": 0x80}


def _nft_packet(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """The words after ``packet:`` -> xtables-monitor-style fields and TCP flag names."""
    fields: dict[str, str] = {}
    flags: list[str] = []
    i = 0
    while i < len(words):
        one, two = words[i], " ".join(words[i:i + 2])
        if one in ("iif", "oif") and i + 1 < len(words):
            fields.setdefault(_NFT_FIELDS[one], words[i + 1].strip('"'))
            i += 2
        elif two == "tcp flags" and words[i + 2:i + 3] == ["=="]:
            # "syn", "0x12" (nft 1.0.6 for several flags), or "syn | ack" (newer nft)
            bits, i = 0, i + 3
            while i < len(words) and (words[i] == "|" or words[i] in _NFT_TCP_FLAGS or
                                      re.fullmatch(r"0x[0-9a-f]+", words[i])):
                word = words[i]
                bits |= _NFT_TCP_FLAGS.get(word, 0) if not word.startswith("0x") else \
                    int(word, 16)
                i += 1
            flags = [name.upper() for name, bit in _NFT_TCP_FLAGS.items() if bits & bit]
        elif two in _NFT_FIELDS and i + 2 < len(words):
            fields.setdefault(_NFT_FIELDS[two], words[i + 2])
            i += 3
        else:
            i += 1
    return fields, flags


def parse_nft_monitor(text: str) -> list[MonitorPacket]:
    """``nft monitor trace`` output -> packets with their rule events, in order.

    The kernel prints the packet (``... packet: iif "cbr0" ... ip id 4242 ...``) at the
    first event of each base chain it walks, then one line per rule that matched (``rule
    TEXT (verdict jump services)``), and the base chain's ``policy`` if no rule decided. A
    line belongs to the last packet line with the same trace id: the id is a hash of the
    packet's buffer, so a later packet may reuse it, never while the first is still walked.
    Events are ``(table, chain, kind, verdict, rule text)``, the table named with its
    family (``ip kube-proxy``); ``kind`` is ``rule``, ``policy`` or ``return`` (a chain's
    end, printed by some kernels). A rule nft could not find in the ruleset it loaded at
    start (changed since) keeps nft's words, ``unknown rule handle N``.
    """
    packets: list[MonitorPacket] = []
    last: dict[str, MonitorPacket] = {}
    for raw in text.splitlines():
        m = _NFT_LINE.match(raw.strip())
        if not m:
            continue
        trace_id, family, table_name, chain, rest = m.groups()
        table = f"{family} {table_name}"
        if rest.startswith("packet:"):
            fields, flags = _nft_packet(rest[len("packet:"):].split())
            pkt = MonitorPacket(trace_id, fields, flags, table=table, chain=chain)
            packets.append(pkt)
            last[trace_id] = pkt
            continue
        if trace_id not in last:
            continue
        rule = _NFT_RULE.match(rest)
        if rule:
            text_ = rule.group(1) if rule.group(1) is not None else rule.group(2)
            event = (table, chain, "rule", rule.group(3).strip(), text_.strip())
        elif rest.startswith("policy "):
            event = (table, chain, "policy", rest.split()[1], "")
        else:  # a chain's end: "[verdict] continue|return [meta mark ...]"
            words = rest.split(" meta ")[0].split()
            verdict = " ".join(w for w in words if w != "verdict")
            event = (table, chain, "return", verdict, "")
        last[trace_id].events.append(event)
    return packets


def nft_base_chains(listing: str) -> dict[str, str]:
    """``nft -j list chains`` -> ``{"ip kube-proxy nat-prerouting": "nat", ...}``: the type of
    each base chain. The trace names the chain a walk began in, not its type (nat, filter),
    which says what the walk could do to the packet."""
    try:
        doc = json.loads(listing or "{}")
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out = {}
    for item in doc.get("nftables", []):
        chain = item.get("chain") if isinstance(item, dict) else None
        if chain and chain.get("type"):
            out[f"{chain.get('family')} {chain.get('table')} {chain.get('name')}"] = \
                str(chain["type"])
    return out


def _nft_action(rule: str) -> str:
    """What an nftables rule did to the packet: its terminal statement (``dnat to
    10.0.1.2:8080``, ``masquerade fully-random``, ``reject``...) without a comment."""
    m = re.search(r"(?:^| )((?:dnat|snat|masquerade|redirect|reject|drop|accept|queue)\b.*)",
                  rule)
    if not m:
        return rule
    return re.sub(r' comment ".*"$', "", m.group(1))


def nft_nat_walk(rules: Iterable[dict[str, Any]], node: str, kind: str = "DNAT") -> list[str]:
    """For a drawing of a trace (its ``--json`` rules): the nftables chains a walk on
    ``node`` went through to its first ``dnat``/``redirect`` (kind DNAT) or
    ``snat``/``masquerade`` (SNAT), ending with that statement; [] if there was none. The
    kernel's trace names no hooks: a walk begins after the verdict that ended the one
    before it (an ``accept``, a ``drop``, a policy). As :meth:`Trace.chain` shows it."""
    words = ("dnat", "redirect") if kind == "DNAT" else ("snat", "masquerade")
    mine = [r for r in rules if str(r.get("node")) in (node, node.split(".")[-1])]
    start = 0
    for k, r in enumerate(mine):
        rule, verdict = str(r.get("rule", "")), str(r.get("verdict", ""))
        action = _nft_action(rule)
        if verdict == "accept" and action.split()[:1] and action.split()[0] in words:
            names: list[str] = []
            for hit in mine[start:k + 1]:
                chain = str(hit.get("chain", ""))
                if chain in names:
                    del names[names.index(chain) + 1:]  # back from a side trip
                else:
                    names.append(chain)
                vmap = re.search(r"\bvmap (@\S+)", str(hit.get("rule", "")))
                if vmap and str(hit.get("verdict", "")).startswith(("jump ", "goto ")):
                    names.append(vmap.group(1))
            return [*names, action]
        if verdict in ("accept", "drop"):
            start = k + 1
    return []


def _nft_table(table: str) -> bool:
    """An nftables table: named with its family (``ip kube-proxy``), where iptables' tables
    are one word (``nat``)."""
    family, space, name = table.partition(" ")
    return bool(space and name) and family in NFT_FAMILIES


def _rule_text(table: str, chain: str, kind: str, verdict: str, text: str) -> str:
    """The rule as ``iptables-save`` writes it (``-A CHAIN ...``); ``-P CHAIN POLICY`` for
    a chain's policy, as ``iptables -S`` writes it. An nftables rule as ``nft list`` writes
    it, ``policy accept`` for its base chain's policy."""
    if _nft_table(table):
        if kind == "policy":
            return f"policy {verdict}"
        return f"(end of {chain})" if kind == "return" else text
    if kind == "policy":
        return f"-P {chain} {verdict}"
    if kind == "return":
        return f"(end of {chain})"
    words = text.split()
    if words[:1] in (["-4"], ["-6"]):
        words = words[1:]
    if words[:1] == ["-t"]:
        words = words[2:]
    return " ".join(words) if words else text


# -- the result --------------------------------------------------------------------------------
def _addr(ip: str, port: int) -> str:
    return f"{ip}:{port}"


@dataclass
class Hop:
    ns: str
    iface: str
    dir: str
    src: str
    dst: str
    packet: str = "SYN"
    leg: int = 1
    t: float = 0.0  # microseconds after the first capture

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuleHit:
    node: str
    table: str
    chain: str
    rule: str
    verdict: str
    leg: int = 1
    hook: str = ""  # netfilter's view of the packet: "in cbr0, out eth0"
    packet: str = ""  # its addresses at that point: "10.0.1.2:61000 > 10.3.241.152:80"
    kind: str = ""  # rule, policy (the base chain's), return (end of a chain)
    base_type: str = ""  # nftables: the type of the base chain the walk began in (nat...)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "table": self.table, "chain": self.chain,
                "rule": self.rule, "verdict": self.verdict}

    @property
    def is_nft(self) -> bool:
        return _nft_table(self.table)

    @property
    def target(self) -> str:
        """What the rule does: its ``-j`` target and arguments, or the chain's policy; for
        nftables its verdict (``goto service-...``) or what it did (``dnat to ...``)."""
        if self.kind == "policy" or self.rule.startswith("-P "):
            return f"policy {self.verdict}"
        if self.is_nft:
            if self.verdict.startswith(("jump ", "goto ")) or self.verdict == "return":
                return self.verdict
            return _nft_action(self.rule)
        m = re.search(r" -[jg] (.*)$", self.rule)
        return m.group(1) if m else self.verdict


@dataclass
class Conntrack:
    node: str
    proto: str
    state: str
    original: dict[str, str]
    reply: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reply:
    """The answer to the SYN, as the client saw it, and where it came from."""

    flags: str = ""
    src: str = ""  # as the client received it
    dst: str = ""
    sent_src: str = ""  # as the answering namespace sent it
    sent_dst: str = ""
    sent_by: str = ""  # that namespace
    hops: list[Hop] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        if not self.flags:
            return {}
        return {"flags": self.flags, "src": self.src, "dst": self.dst,
                "sent": {"ns": self.sent_by, "src": self.sent_src, "dst": self.sent_dst},
                "hops": [h.to_json() for h in self.hops]}


@dataclass
class DnsQuery:
    question: str
    qtype: str
    rcode: str
    answers: list[str]
    server: str
    client: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trace:
    """One traced connection attempt. ``to_json()`` is ``kubenet trace --json``'s document."""

    source: str
    source_ns: str
    source_ip: str
    destination: str
    hops: list[Hop] = field(default_factory=list)
    rules: list[RuleHit] = field(default_factory=list)
    conntrack: list[Conntrack] = field(default_factory=list)
    reply: Reply = field(default_factory=Reply)
    dns: list[DnsQuery] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    monitors: list[str] = field(default_factory=list)  # the tools that reported the rules

    # -- the document --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"hops", "rules", "conntrack", "reply"}``, and ``"dns"`` when DEST was a name."""
        doc: dict[str, Any] = {"hops": [h.to_json() for h in self.hops],
                               "rules": [r.to_json() for r in self.rules],
                               "conntrack": [c.to_json() for c in self.conntrack],
                               "reply": self.reply.to_json()}
        if self.dns:
            doc["dns"] = [q.to_json() for q in self.dns]
        return doc

    def to_wire(self) -> dict[str, Any]:
        """Everything, for the lab's socket (``from_wire`` rebuilds it)."""
        return {"source": self.source, "source_ns": self.source_ns, "source_ip": self.source_ip,
                "destination": self.destination, "hops": [asdict(h) for h in self.hops],
                "rules": [asdict(r) for r in self.rules],
                "conntrack": [asdict(c) for c in self.conntrack],
                "reply": {**asdict(self.reply), "hops": [asdict(h) for h in self.reply.hops]},
                "dns": [asdict(q) for q in self.dns], "notes": list(self.notes),
                "elapsed": self.elapsed, "monitors": list(self.monitors)}

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Trace:
        reply = dict(d.get("reply") or {})
        reply["hops"] = [Hop(**h) for h in reply.get("hops", [])]
        return cls(source=d["source"], source_ns=d["source_ns"], source_ip=d["source_ip"],
                   destination=d["destination"], hops=[Hop(**h) for h in d["hops"]],
                   rules=[RuleHit(**r) for r in d["rules"]],
                   conntrack=[Conntrack(**c) for c in d["conntrack"]], reply=Reply(**reply),
                   dns=[DnsQuery(**q) for q in d.get("dns", [])], notes=list(d.get("notes", [])),
                   elapsed=d.get("elapsed", 0.0), monitors=list(d.get("monitors", [])))

    def json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json(), indent=indent)

    # -- questions a reader asks ---------------------------------------------------------------
    def chain(self, node: str | None = None, table: str = "nat", leg: int = 1) -> list[str]:
        """The path the SYN took through ``table``'s chains at the first hook that saw it
        on ``node`` (the first node with rules by default), ending with what decided: the
        target of the rule that ended the walk, or the base chain's policy. Side trips (a
        chain jumped to and returned from, like KUBE-MARK-MASQ) are left out; the rules
        show them. The article's trace: ``PREROUTING, KUBE-SERVICES, KUBE-SVC-...,
        KUBE-SEP-..., DNAT``; to a pod IP: ``PREROUTING, ACCEPT`` (KUBE-SERVICES was
        entered, nothing in it matched, the policy let the packet pass).

        In nftables mode ``table`` is also the type of the base chain a walk began in (all
        of kube-proxy's chains are in one table), a verdict map the rule looked the next
        chain up in is a step (``@service-ips``), and the end is the statement itself:
        ``nat-prerouting, services, @service-ips, service-...-default/service-test/tcp/,
        endpoint-..., dnat to 10.0.2.2:8080``."""
        hits = [r for r in self.rules if table in (r.table, r.base_type or r.table)
                and r.leg == leg]
        if node is None and hits:
            node = hits[0].node
        out: list[str] = []
        for r in (r for r in hits if r.node == node):
            if r.kind == "return" or r.rule.startswith("(end of "):
                continue
            if r.chain in out:
                del out[out.index(r.chain) + 1:]  # back from a side trip
            else:
                out.append(r.chain)
            if r.kind == "policy" or r.rule.startswith("-P "):
                out.append(r.verdict)
                break
            if r.verdict.startswith(("JUMP ", "GOTO ", "jump ", "goto ")):
                vmap = re.search(r"\bvmap (@\S+)", r.rule)
                out += [vmap.group(1)] if vmap else []
                out.append(r.verdict.split()[1])
            elif r.verdict in ("ACCEPT", "DROP"):
                out.append(r.target.split()[0])
                break
            elif r.verdict in ("accept", "drop"):
                out.append(r.target)
                break
        return out

    def rewrites(self) -> list[tuple[Hop, Hop]]:
        """(before, after) for each place the request's addresses changed between hops."""
        out = []
        for leg in (1, 2):
            hops = [h for h in self.hops if h.leg == leg]
            out += [(a, b) for a, b in zip(hops, hops[1:], strict=False)
                    if (a.src, a.dst) != (b.src, b.dst)]
        return out

    @property
    def answered(self) -> bool:
        return self.reply.flags == "SYN-ACK"

    # -- rendering -----------------------------------------------------------------------------
    def _hop_rows(self, hops: list[Hop]) -> list[list[str]]:
        rows, before = [], None
        for i, h in enumerate(hops, 1):
            note = ""
            if before is not None and before.leg == h.leg and (before.src, before.dst) != \
                    (h.src, h.dst):
                changed = []
                if before.dst != h.dst:
                    changed.append(f"dst was {before.dst}")
                if before.src != h.src:
                    changed.append(f"src was {before.src}")
                note = "rewritten: " + ", ".join(changed)
            elif before is not None and before.leg != h.leg:
                note = "a second connection, opened by the proxy"
            if h.leg == 1 and i < len(hops) and hops[i].leg == 2 and h.dir == "in":
                note = (note + "; " if note else "") + f"delivered to a socket of {h.ns}"
            rows.append([str(i), h.ns, h.iface, h.dir, h.src, h.dst, note])
            before = h
        return rows

    def _sections(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, headers, rows) for each part of the rendering."""
        out = []
        if self.dns:
            out.append(("DNS (asked from the source before the SYN)",
                        ["QUESTION", "TYPE", "SERVER", "ANSWER"],
                        [[q.question, q.qtype, q.server,
                          ", ".join(q.answers) if q.answers else q.rcode] for q in self.dns]))
        headers = ["#", "NAMESPACE", "INTERFACE", "DIR", "SOURCE", "DESTINATION", ""]
        out.append(("The SYN, hop by hop (captured on every interface it crossed)", headers,
                    self._hop_rows(self.hops)))
        tools = " and ".join(self.monitors) or XTABLES_MONITOR
        out.append((f"Rules it matched (the kernel's own trace: {tools})",
                    ["NODE", "TABLE", "CHAIN", "VERDICT", "RULE"],
                    [[r.node, r.table, r.chain, r.verdict, r.rule] for r in self.rules]))
        out.append(("Connection tracking (each node's conntrack table)",
                    ["NODE", "PROTO", "STATE", "ORIGINAL SRC", "ORIGINAL DST", "REPLY SRC",
                     "REPLY DST"],
                    [[c.node, c.proto, c.state or "-", c.original["src"], c.original["dst"],
                      c.reply["src"], c.reply["dst"]] for c in self.conntrack]))
        if self.reply.flags:
            title = (f"The reply: {self.reply.flags} from {self.reply.src} to {self.reply.dst}"
                     f" (sent by {self.reply.sent_by} as {self.reply.sent_src} > "
                     f"{self.reply.sent_dst})")
        else:
            title = "The reply: none"
        out.append((title, headers, self._hop_rows(self.reply.hops)))
        return out

    def headline(self) -> str:
        dest = self.destination
        where = f"{self.source} ({self.source_ip})" if self.source_ip else self.source
        answer = f"answered by {self.reply.flags}" if self.reply.flags else "no answer"
        took = f" (traced in {self.elapsed * 1000:.0f} ms)" if self.elapsed else ""
        return f"trace from {where} to {dest}: TCP SYN, {answer}{took}"

    def text(self) -> str:
        lines = [self.headline()]
        for title, headers, rows in self._sections():
            lines += ["", title]
            if not rows:
                lines.append("  (none)")
                continue
            lines += ["  " + line for line in _table(headers, rows)]
        for note in self.notes:
            lines += ["", f"note: {note}"]
        return "\n".join(lines)

    __str__ = text

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        parts = [f"<p><b>{html.escape(self.headline())}</b></p>"]
        for title, headers, rows in self._sections():
            parts.append(f"<p>{html.escape(title)}</p>")
            if not rows:
                parts.append("<p><i>(none)</i></p>")
                continue
            head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(
                f"<td><code>{html.escape(c)}</code></td>" if h == "RULE" else
                f"<td>{html.escape(c)}</td>" for h, c in zip(headers, r, strict=True))
                + "</tr>" for r in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        parts += [f"<p><i>note: {html.escape(n)}</i></p>" for n in self.notes]
        return "\n".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Columns three spaces apart, like kubectl; the last column is not padded."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [headers, *rows]]


# -- from captured material to a Trace ---------------------------------------------------------
def build(raw: dict[str, Any]) -> Trace:
    """Turn what :mod:`kubenet.packets` captured into a :class:`Trace`.

    ``raw`` holds: ``source``, ``source_ns``, ``source_ip``, ``destination``, ``ip_id`` and
    ``isn`` of the traced SYN, ``packets`` (captures, see :class:`Packet`), ``masters``
    (namespace -> interface -> bridge), ``monitor`` (node -> xtables-monitor or nft
    monitor text), ``monitor_tool`` (node -> which of the two; xtables-monitor if missing),
    ``base_chains`` (node -> :func:`nft_base_chains`), ``conntrack`` (node -> ``conntrack
    -L -o extended`` text), ``asked`` (the address and port the SYN was sent to),
    ``sport``, ``dns``, ``notes``, ``elapsed``, and ``leg2`` (the IP ID and sequence
    number of a proxy's second SYN).
    """
    ip_id, isn = int(raw["ip_id"]), int(raw["isn"])
    packets = order((Packet.from_dict(p) for p in raw.get("packets", [])),
                    raw.get("masters"))
    leg1 = [p for p in packets if p.is_syn and p.ip_id == ip_id]
    replies1 = [p for p in packets if p.answers(isn)]
    leg2: list[Packet] = []
    replies2: list[Packet] = []
    if raw.get("leg2"):
        l2id, l2seq = int(raw["leg2"]["ip_id"]), int(raw["leg2"]["seq"])
        leg2 = [p for p in packets if p.is_syn and p.ip_id == l2id and p.seq == l2seq]
        replies2 = [p for p in packets if p.answers(l2seq)]
    t0 = packets[0].ts if packets else 0

    def hop(p: Packet, leg: int) -> Hop:
        return Hop(p.ns, p.iface, p.dir, _addr(p.src, p.sport), _addr(p.dst, p.dport),
                   flags_name(p.flags), leg, round((p.ts - t0) / 1000, 1))

    def legs(first: list[Packet], second: list[Packet]) -> list[Hop]:
        one, two = {id(p) for p in first}, {id(p) for p in second}
        return [hop(p, 1 if id(p) in one else 2) for p in packets if id(p) in one | two]

    hops = legs(leg1, leg2)
    reply = Reply()
    if replies1:
        sent = replies1[0]
        got = [p for p in replies1 if p.ns == raw["source_ns"] and p.dir == "in"]
        final = got[-1] if got else replies1[-1]
        reply = Reply(flags=flags_name(final.flags), src=_addr(final.src, final.sport),
                      dst=_addr(final.dst, final.dport), sent_src=_addr(sent.src, sent.sport),
                      sent_dst=_addr(sent.dst, sent.dport), sent_by=sent.ns,
                      hops=legs(replies1, replies2))

    # The rules: the monitor's packets that are the traced SYNs, as each node saw them.
    wanted1 = {p.tuple for p in leg1}
    wanted2 = {p.tuple for p in leg2}
    rules: list[RuleHit] = []
    tools: set[str] = set()
    stale: list[str] = []
    for node, text in sorted(raw.get("monitor", {}).items(), key=lambda kv: kv[0]):
        tool = raw.get("monitor_tool", {}).get(node, XTABLES_MONITOR)
        tools.add(tool)
        nft = tool == NFT_MONITOR
        bases = raw.get("base_chains", {}).get(node, {})
        for mp in (parse_nft_monitor if nft else parse_xtables_monitor)(text):
            if not mp.is_syn:
                continue
            if mp.ip_id == ip_id:
                leg = 1
            elif mp.tuple in wanted2:
                leg = 2
            else:
                continue
            src, sport, dst, dport = mp.tuple
            for table, chain, kind, verdict, text_ in mp.events:
                if table == f"inet {NFT_TABLE}":
                    continue  # the tracer's own table, which switched tracing on
                if nft and text_.startswith("unknown rule handle") and node not in stale:
                    stale.append(node)
                rules.append(RuleHit(node, table, chain,
                                     _rule_text(table, chain, kind, verdict, text_), verdict,
                                     leg, mp.hook, f"{src}:{sport} > {dst}:{dport}", kind,
                                     bases.get(f"{mp.table} {mp.chain}", "") if nft else ""))
    # Nodes are listed one after the other; a packet meets them in hop order.
    node_order = {}
    for h in hops:
        node_order.setdefault((h.leg, h.ns), len(node_order))
    rules.sort(key=lambda r: (r.leg, node_order.get((r.leg, r.node), len(node_order))))

    flows = wanted1 | wanted2 | {p.tuple for p in replies1 + replies2}
    asked = raw.get("asked", "")
    if asked and raw.get("sport"):
        # A node's own SYN is rewritten before any interface sees it: its entry's original
        # tuple is the one the tracer sent.
        flows.add((raw["source_ip"], int(raw["sport"]), *_split(asked)))
    conntrack = []
    for node, text in sorted(raw.get("conntrack", {}).items()):
        for e in parse_conntrack(text):
            orig = (*_split(e["orig_src"]), *_split(e["orig_dst"]))
            if orig in flows:
                conntrack.append(Conntrack(node, e["proto"], e["state"],
                                           {"src": e["orig_src"], "dst": e["orig_dst"]},
                                           {"src": e["reply_src"], "dst": e["reply_dst"]}))
    conntrack.sort(key=lambda c: node_order.get((1, c.node), node_order.get((2, c.node), 99)))
    dns = [DnsQuery(**q) for q in raw.get("dns", [])]
    notes = list(raw.get("notes", []))
    notes += [f"{NFT_MONITOR} on {node} did not know some of the rules it reported (the "
              "ruleset changed after it started): their text is missing" for node in stale]
    if hops and asked and hops[0].dst != asked:
        notes.insert(0, f"the SYN was sent to {asked}; the first interface it crossed already "
                     f"saw {hops[0].dst}: {hops[0].ns}'s own netfilter rewrote it on the way "
                     "out (see its rules)")
    undone = [c for c in conntrack if c.node == raw["source_ns"] and
              c.original["dst"] == asked and c.reply["src"] == reply.src != asked]
    if undone:
        notes.append(f"the reply reached {raw['source_ns']} from {reply.src}; its conntrack "
                     f"entry turns that back into {asked} on the way up to the socket, after "
                     "the last interface")
    return Trace(source=raw["source"], source_ns=raw["source_ns"], source_ip=raw["source_ip"],
                 destination=raw["destination"], hops=hops, rules=rules, conntrack=conntrack,
                 reply=reply, dns=dns, notes=notes,
                 elapsed=float(raw.get("elapsed", 0.0)), monitors=sorted(tools))


def _split(addr: str) -> tuple[str, int]:
    ip, _, port = addr.rpartition(":")
    return ip, int(port)
