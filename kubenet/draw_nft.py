"""kube-proxy's nftables table as a graph, read from ``nft -j`` (JSON) output.

In nftables mode kube-proxy keeps everything in one table, ``table ip kube-proxy``: base
chains hooked into netfilter (``nat-prerouting``, ``nat-output``...) jump to ``services``,
which looks the packet's ``daddr . l4proto . dport`` up in the ``service-ips`` verdict map;
each element sends it to a Service's chain, which picks an endpoint with ``numgen random mod
N vmap {...}``; each endpoint's chain ``dnat``s to the pod. The graph draws that walk the way
:func:`kubenet.draw.draw_rules` draws the iptables chains: maps are tables with one row (one
edge) per element, numgen choices carry their probability 1/N, and rules with ``counter``
statements carry their packets.

``nft -j`` is parsed with the json module rather than ``nft list``'s text: the text is meant
for people and changes between nft versions, the JSON schema is stable. Parsing and drawing
are pure (text in, :class:`~kubenet.draw.Diagram` out); only ``Diagram.svg()`` runs dot.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .draw import (
    Diagram,
    _clip,
    _count,
    _digraph,
    _h,
    _html_label,
    _q,
    _share,
    _small,
    same_rank,
)
from .errors import BadRequest

__all__ = ["NftBranch", "NftRule", "NftChain", "NftMap", "NftTable", "looks_like_json",
           "expr_text", "parse_nft_json", "draw_nft_rules", "CHAIN_KINDS"]

# Which base chains a drawing starts from: their nftables chain type ("all": every chain).
CHAIN_KINDS = ("nat", "filter", "all")

_BINOPS = ("&", "|", "^", "<<", ">>")
_VERDICTS = ("accept", "drop", "continue", "return", "queue")
_NAT = ("dnat", "snat", "masquerade", "redirect")


@dataclass(frozen=True)
class NftBranch:
    """One element of a map or set: its key, and for a verdict map where it sends packets."""

    key: str  # "10.3.241.152 . tcp . 80", or "0" in a numgen vmap
    verdict: str = ""  # goto, jump, drop, reject, accept... ("" in a set)
    target: str = ""  # the chain of a goto/jump
    comment: str = ""
    pkts: int | None = None
    bytes: int | None = None


@dataclass(frozen=True)
class NftRule:
    chain: str
    index: int  # 1-based, within its chain
    matches: tuple[str, ...]  # each match in nft's syntax: "ip daddr 10.3.241.152"
    statements: tuple[str, ...]  # what is neither a match nor the verdict: "meta mark set ..."
    verdict: str  # jump, goto, vmap, dnat, masquerade, return, drop... or ""
    target: str  # the chain of a jump/goto, the map of "vmap @map"
    to: str  # dnat/snat: address:port; masquerade: its flags; redirect: its port
    key: str  # what a vmap looks up: "ip daddr . meta l4proto . th dport"
    branches: tuple[NftBranch, ...]  # an anonymous vmap's elements
    numgen: int | None  # N of "numgen random mod N vmap {...}"
    comment: str
    pkts: int | None
    bytes: int | None
    text: str  # the whole rule, as nft would print it (near enough)


@dataclass
class NftChain:
    name: str
    type: str = ""  # base chains: filter, nat, route
    hook: str = ""
    prio: int | str = ""
    policy: str = ""
    comment: str = ""
    rules: list[NftRule] = field(default_factory=list)

    @property
    def base(self) -> bool:
        return bool(self.hook)


@dataclass
class NftMap:
    """A named set or map (``kind``), with its elements."""

    name: str
    kind: str  # "set" or "map"
    type: str  # "ipv4_addr . inet_proto . inet_service"
    data: str = ""  # a map's value type: "verdict"
    comment: str = ""
    elements: list[NftBranch] = field(default_factory=list)


@dataclass
class NftTable:
    family: str
    name: str
    comment: str = ""
    chains: dict[str, NftChain] = field(default_factory=dict)
    maps: dict[str, NftMap] = field(default_factory=dict)  # sets too


# -- nft's JSON expressions as nft's text --------------------------------------------------

def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _binop_operand(value: Any) -> str:
    return f"0x{value:x}" if isinstance(value, int) and not isinstance(value, bool) else \
        expr_text(value)


def expr_text(e: Any) -> str:
    """An expression of nft's JSON schema in nft's own syntax (``ip daddr``, ``10.0.0.0/14``,
    ``a . b . c``, ``numgen random mod 2``); anything unknown as compact JSON."""
    if isinstance(e, bool):
        return str(e).lower()
    if isinstance(e, (int, float, str)):
        return str(e)
    if isinstance(e, list):  # flags, such as ct state's
        return ",".join(expr_text(x) for x in e)
    if not isinstance(e, dict) or len(e) != 1:
        return _compact(e)
    ((kind, v),) = e.items()
    if kind == "payload" and isinstance(v, dict):
        if "protocol" in v:
            return f"{v['protocol']} {v.get('field', '')}".strip()
        return f"@{v.get('base')},{v.get('offset')},{v.get('len')}"
    if kind == "meta" and isinstance(v, dict):
        return f"meta {v.get('key', '')}"
    if kind == "ct" and isinstance(v, dict):
        return " ".join(["ct", *([v["dir"]] if v.get("dir") else []), str(v.get("key", ""))])
    if kind == "fib" and isinstance(v, dict):
        flags = v.get("flags", [])
        flags = flags if isinstance(flags, list) else [flags]
        return f"fib {' . '.join(flags)} {v.get('result', '')}"
    if kind == "prefix" and isinstance(v, dict):
        return f"{expr_text(v.get('addr'))}/{v.get('len')}"
    if kind == "range" and isinstance(v, list) and len(v) == 2:
        return f"{expr_text(v[0])}-{expr_text(v[1])}"
    if kind == "concat" and isinstance(v, list):
        return " . ".join(expr_text(x) for x in v)
    if kind == "set":
        items = v if isinstance(v, list) else [v]
        return "{ " + ", ".join(_element_text(x) for x in items) + " }"
    if kind == "elem" and isinstance(v, dict):
        return expr_text(v.get("val"))
    if kind == "map" and isinstance(v, dict):
        return f"{expr_text(v.get('key'))} map {expr_text(v.get('data'))}"
    if kind == "numgen" and isinstance(v, dict):
        text = f"numgen {v.get('mode', 'random')} mod {v.get('mod')}"
        return text + (f" offset {v['offset']}" if v.get("offset") else "")
    if kind in _BINOPS and isinstance(v, list) and len(v) == 2:
        return f"{expr_text(v[0])} {kind} {_binop_operand(v[1])}"
    if kind in ("jump", "goto") and isinstance(v, dict):
        return f"{kind} {v.get('target', '')}"
    if kind in _VERDICTS or kind == "reject":
        return kind
    return _compact(e)


def _element_text(item: Any) -> str:
    if isinstance(item, list) and len(item) == 2:  # an anonymous map's "key : value"
        return f"{expr_text(item[0])} : {expr_text(item[1])}"
    return expr_text(item)


def _verdict(value: Any) -> tuple[str, str]:
    """(verdict, chain) of a map's value: ("goto", "service-..."), ("drop", "")."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, v),) = value.items()
        if kind in ("jump", "goto") and isinstance(v, dict):
            return kind, str(v.get("target", ""))
        if kind in _VERDICTS or kind == "reject":
            return kind, ""
    return ("", expr_text(value)) if value is not None else ("", "")


def _counter(value: Any) -> tuple[int | None, int | None]:
    if isinstance(value, dict) and "packets" in value:
        try:
            return int(value["packets"]), int(value.get("bytes", 0))
        except (TypeError, ValueError):
            pass
    return None, None


def _branch(item: Any) -> NftBranch:
    """An element of a map (``[key, value]``) or a set (``key``), with its comment and
    counter (``{"elem": {"val": ..., "comment": ..., "counter": ...}}``)."""
    key, value = (item[0], item[1]) if isinstance(item, list) and len(item) == 2 else (item, None)
    comment, pkts, nbytes = "", None, None
    if isinstance(key, dict) and isinstance(key.get("elem"), dict):
        elem = key["elem"]
        comment = str(elem.get("comment", ""))
        pkts, nbytes = _counter(elem.get("counter"))
        key = elem.get("val")
    verdict, target = _verdict(value)
    return NftBranch(expr_text(key), verdict, target, comment, pkts, nbytes)


def _match_text(m: dict[str, Any]) -> str:
    left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
    binop = isinstance(left, dict) and len(left) == 1 and next(iter(left)) in _BINOPS
    if op == "in" or (op == "==" and not binop):  # nft prints neither
        return f"{expr_text(left)} {expr_text(right)}"
    return f"{expr_text(left)} {op} {expr_text(right)}"


def _nat_to(kind: str, v: Any) -> str:
    if not isinstance(v, dict):
        return ""
    if kind in ("masquerade", "redirect"):
        port = f"to :{expr_text(v['port'])}" if "port" in v else ""
        flags = v.get("flags", "")
        return " ".join(x for x in (port, expr_text(flags) if flags else "") if x)
    addr = expr_text(v["addr"]) if "addr" in v else ""
    port = f":{expr_text(v['port'])}" if "port" in v else ""
    return addr + port


def _rule(chain: str, index: int, obj: dict[str, Any]) -> NftRule:
    matches: list[str] = []
    statements: list[str] = []
    verdict = target = to = key = ""
    branches: tuple[NftBranch, ...] = ()
    numgen: int | None = None
    pkts = nbytes = None
    for stmt in obj.get("expr", []) or []:
        if not isinstance(stmt, dict) or len(stmt) != 1:
            statements.append(expr_text(stmt))
            continue
        ((kind, v),) = stmt.items()
        if kind == "match" and isinstance(v, dict):
            matches.append(_match_text(v))
        elif kind == "counter":
            pkts, nbytes = _counter(v)
            if pkts is None and v is not None:  # a named counter object
                statements.append(f"counter name {expr_text(v)}")
        elif kind in ("jump", "goto") and isinstance(v, dict):
            verdict, target = kind, str(v.get("target", ""))
        elif kind in _VERDICTS or kind == "reject":
            verdict = kind
        elif kind in _NAT:
            verdict, to = kind, _nat_to(kind, v)
        elif kind == "vmap" and isinstance(v, dict):
            verdict, key = "vmap", expr_text(v.get("key"))
            data = v.get("data")
            if isinstance(data, str):
                target = data.lstrip("@")
            elif isinstance(data, dict) and isinstance(data.get("set"), list):
                branches = tuple(_branch(x) for x in data["set"])
            k = v.get("key")
            if isinstance(k, dict) and isinstance(k.get("numgen"), dict):
                try:
                    numgen = int(k["numgen"]["mod"])
                except (KeyError, TypeError, ValueError):
                    numgen = None
        elif kind == "mangle" and isinstance(v, dict):
            statements.append(f"{expr_text(v.get('key'))} set {expr_text(v.get('value'))}")
        elif kind == "set" and isinstance(v, dict):
            statements.append(f"{v.get('op', '')} {v.get('set', '')} {{ "
                              f"{expr_text(v.get('elem'))} }}")
        else:
            statements.append(kind if v is None else f"{kind} {_compact(v)}")
    comment = str(obj.get("comment", ""))
    if verdict == "vmap":
        tail = f"{key} vmap " + (f"@{target}" if target else
                                 expr_text({"set": [[b.key, _verdict_value(b)] for b in branches]}))
    elif verdict in ("jump", "goto"):
        tail = f"{verdict} {target}"
    elif verdict in _NAT:
        tail = f"{verdict} {'to ' if verdict in ('dnat', 'snat') and to else ''}{to}".strip()
    else:
        tail = verdict
    words = [*matches, *([f"counter packets {pkts} bytes {nbytes}"] if pkts is not None else []),
             *statements, tail]
    text = " ".join(w for w in words if w) + (f' comment "{comment}"' if comment else "")
    return NftRule(chain, index, tuple(matches), tuple(statements), verdict, target, to, key,
                   branches, numgen, comment, pkts, nbytes, text)


def _verdict_value(b: NftBranch) -> Any:
    return {b.verdict: {"target": b.target}} if b.target else {b.verdict or "?": None}


# -- parsing -------------------------------------------------------------------------------

def looks_like_json(text: str) -> bool:
    """Whether a dump is JSON (``nft -j``) rather than ``iptables-save`` text."""
    return text.lstrip().startswith(("{", "["))


def parse_nft_json(text: str) -> list[NftTable]:
    """The tables of ``nft -j list table ...`` / ``nft -j list ruleset`` output, in order,
    with their chains (rules in order) and named sets and maps."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadRequest(f"error: this is not nft -j output: {err.msg} at line {err.lineno} "
                         f"column {err.colno}") from None
    objects = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(objects, list):
        raise BadRequest('error: this JSON is not nft -j output (no "nftables" list); list '
                         "the rules with nft -j list table ip kube-proxy")
    tables: dict[tuple[str, str], NftTable] = {}

    def table_of(obj: dict[str, Any]) -> NftTable:
        ref = (str(obj.get("family", "")), str(obj.get("table", "")))
        return tables.setdefault(ref, NftTable(*ref))

    for item in objects:
        if not isinstance(item, dict) or len(item) != 1:
            continue
        ((kind, obj),) = item.items()
        if not isinstance(obj, dict):
            continue
        if kind == "table":
            ref = (str(obj.get("family", "")), str(obj.get("name", "")))
            tables.setdefault(ref, NftTable(*ref)).comment = str(obj.get("comment", ""))
        elif kind == "chain":
            name = str(obj.get("name", ""))
            chain = table_of(obj).chains.setdefault(name, NftChain(name))
            chain.type, chain.hook = str(obj.get("type", "")), str(obj.get("hook", ""))
            chain.prio, chain.policy = obj.get("prio", ""), str(obj.get("policy", ""))
            chain.comment = str(obj.get("comment", ""))
        elif kind == "rule":
            name = str(obj.get("chain", ""))
            chain = table_of(obj).chains.setdefault(name, NftChain(name))
            chain.rules.append(_rule(name, len(chain.rules) + 1, obj))
        elif kind in ("set", "map"):
            types = obj.get("type", "")
            type_text = " . ".join(types) if isinstance(types, list) else str(types)
            data = obj.get("map", "") if kind == "map" else ""
            data_text = " . ".join(data) if isinstance(data, list) else str(data)
            table_of(obj).maps[str(obj.get("name", ""))] = NftMap(
                str(obj.get("name", "")), kind, type_text, data_text,
                str(obj.get("comment", "")), [_branch(e) for e in obj.get("elem", []) or []])
    return list(tables.values())


# -- the graph -----------------------------------------------------------------------------

_SERVICE_CHAIN = re.compile(r"^service-[A-Z0-9]{8}-")
_ENDPOINT_CHAIN = re.compile(r"^endpoint-[A-Z0-9]{8}-")
_CHAIN_FILL = {"services": "#dae8fc", "mark-for-masquerade": "#f5f5f5",
               "masquerading": "#f5f5f5"}
_PREFIX_FILL = [(_SERVICE_CHAIN, "#d5e8d4"), (re.compile(r"^endpoint-"), "#ffe6cc"),
                (re.compile(r"^(external|firewall)-[A-Z0-9]{8}-"), "#e1d5e7")]
_MAP_FILL = {"service-ips": "#dae8fc", "service-nodeports": "#dae8fc",
             "firewall-ips": "#e1d5e7"}
_TERMINAL_FILL = {"dnat": "#f8cecc", "snat": "#f8cecc", "masquerade": "#f8cecc",
                  "redirect": "#f8cecc", "drop": "#eeeeee", "reject": "#eeeeee"}


def _chain_fill(name: str) -> str:
    if name in _CHAIN_FILL:
        return _CHAIN_FILL[name]
    return next((fill for pattern, fill in _PREFIX_FILL if pattern.match(name)), "white")


def _pick(tables: list[NftTable], family: str, name: str) -> NftTable:
    """The table to draw: ``family name``, else one of that name, else the only table."""
    for table in tables:
        if (table.family, table.name) == (family, name):
            return table
    named = [t for t in tables if t.name == name]
    if named:
        return named[0]
    if len(tables) == 1:
        return tables[0]
    have = ", ".join(f"{t.family} {t.name}" for t in tables) or "no tables at all"
    raise BadRequest(f"error: the ruleset has no table {family} {name} (it has {have}); list "
                     f"it with nft -j list table {family} {name}")


def _reachable(table: NftTable, roots: list[str]) -> tuple[list[str], list[str]]:
    """The chains and verdict maps a walk from ``roots`` can reach, in the table's order."""
    chains: set[str] = set()
    maps: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in chains or name not in table.chains:
            continue
        chains.add(name)
        for r in table.chains[name].rules:
            if r.verdict in ("jump", "goto"):
                todo.append(r.target)
            todo += [b.target for b in r.branches if b.target]
            if r.verdict == "vmap" and r.target in table.maps:
                maps.add(r.target)
                todo += [b.target for b in table.maps[r.target].elements if b.target]
    return ([c for c in table.chains if c in chains], [m for m in table.maps if m in maps])


def _key_order(key: str) -> tuple[tuple[int, int, str], ...]:
    """Elements in a reader's order: addresses and numbers by value (10.3.240.10 before
    10.3.241.152, port 80 before 3001), words as text."""
    order = []
    for part in key.split(" . "):
        try:
            order.append((0, int(ipaddress.ip_network(part, strict=False).network_address),
                          part))
        except ValueError:
            order.append((1, int(part), part) if part.isdigit() else (2, 0, part))
    return tuple(order)


def _edge_attrs(label: list[str], tooltip: str, pkts: int | None, dashed: bool = False
                ) -> dict[str, str]:
    attrs = {"tooltip": _q(tooltip)}
    if label:
        attrs["label"] = _html_label(*label)
    if dashed:
        attrs.update(style="dashed", color="#999999", fontcolor="#777777")
    elif pkts:  # traffic went this way: draw it heavier
        attrs.update(penwidth=f"{min(4.0, 1.4 + math.log10(pkts + 1)):.1f}", color="#1f4e8c")
    return attrs


def _terminal(graph: Any, node_id: str, verdict: str, to: str, tooltip: str) -> None:
    """A box for where a rule ends: dnat to IP:port, masquerade, drop, a statement..."""
    if verdict in ("dnat", "snat"):
        what = f"<b>{verdict} to</b> {_h(to)}" if to else f"<b>{verdict}</b>"
    elif verdict:
        what = f"<b>{_h(verdict)}</b>" + (f" {_h(to)}" if to else "")
    else:
        what = _h(_clip(to, 80))
    graph.node(node_id, _html_label(what), shape="box", style="filled",
               fillcolor=_TERMINAL_FILL.get(verdict, "white"), fontsize="9",
               margin="0.06,0.02", tooltip=_q(tooltip))


def _map_node(graph: Any, table: NftTable, m: NftMap) -> list[NftBranch]:
    """A verdict map as a table with one row (one port) per element, sorted by key."""
    elements = sorted(m.elements, key=lambda b: _key_order(b.key))
    rows = [f'<tr><td align="left"><b>map {_h(m.name)}</b></td></tr>',
            f'<tr><td align="left">{_small(f"{m.type} : {m.data}")}</td></tr>']
    if m.comment:
        rows.append(f'<tr><td align="left">{_small(_clip(m.comment, 56))}</td></tr>')
    for i, b in enumerate(elements):
        extra = [_small(b.comment)] if b.comment else []
        if b.pkts is not None:
            extra.append(_small(_count(b.pkts, b.bytes), 8, "#1f4e8c"))
        cell = " ".join([_h(b.key), _small(f": {b.verdict}")] + extra)
        rows.append(f'<tr><td port="e{i}" align="left">{cell}</td></tr>')
    if not elements:
        rows.append(f'<tr><td align="left">{_small("(no elements)", 8, "#999999")}</td></tr>')
    label = ('<<table border="0" cellborder="0" cellspacing="0" cellpadding="2">'
             + "".join(rows) + "</table>>")
    graph.node(f"map/{m.name}", label, shape="tab", style="filled",
               fillcolor=_MAP_FILL.get(m.name, "#f5f5f5"),
               tooltip=_q(f"map {m.name} in table {table.family} {table.name}"))
    return elements


def _rule_label(r: NftRule, statements: bool = True) -> list[str]:
    """An edge's label: what the rule matches (and does on the way), its comment, goto, and
    its counter."""
    label = [_h(m) for m in r.matches]
    if statements:
        label += [_h(_clip(s)) for s in r.statements]
    if r.comment:
        label.append(_small(_clip(r.comment), 8, "#333333"))
    if r.verdict == "goto":
        label.append(_small("goto"))
    if r.pkts is not None:
        label.append(_h(_count(r.pkts, r.bytes)))
    return label


def draw_nft_rules(text: str, node: str | None = None, *, table: str = "nat",
                   family: str = "ip", name: str = "kube-proxy") -> Diagram:
    """kube-proxy's nftables table, from ``nft -j list table ip kube-proxy`` (or ``nft -j
    list ruleset``) output, as a graph.

    ``table`` picks the base chains the walk starts from, by their type: ``nat`` (the
    default: nat-prerouting/nat-output -> services -> @service-ips -> service-... ->
    endpoint-... -> dnat, and nat-postrouting -> masquerading), ``filter`` (the firewall
    and no-endpoint checks), or ``all`` (every chain and map of the table).
    """
    if table not in CHAIN_KINDS:
        raise BadRequest(f'error: nftables chains are drawn by their type: nat, filter or all '
                         f'(not "{table}")')
    t = _pick(parse_nft_json(text), family, name)
    bases = [c for c in t.chains.values() if c.base and table in ("all", c.type)]
    if not bases:
        kinds = sorted({c.type for c in t.chains.values() if c.base})
        raise BadRequest(f"error: table {t.family} {t.name} has no {table} base chains"
                         + (f", only {', '.join(kinds)}" if kinds else " (no base chains)"))
    if table == "all":
        chain_names = list(t.chains)
        map_names = [m for m, v in t.maps.items() if v.data == "verdict"]
    else:
        chain_names, map_names = _reachable(t, [c.name for c in bases])
    chains = [t.chains[c] for c in chain_names]
    counters = any(r.pkts is not None for c in chains for r in c.rules) or any(
        b.pkts is not None for m in map_names for b in t.maps[m].elements)

    title = f"nftables {t.family} {t.name} {table} chains"
    title = f"{node}: {title}" if node else title
    if counters:
        title += " (packet counters from nft counters)"
    graph = _digraph(f"rules-{node}" if node else "rules", rankdir="LR", nodesep="0.18",
                     ordering="out", ranksep="0.5", labelloc="t", label=_q(title))

    for c in chains:
        lines = [f"<b>{_h(c.name)}</b>"]
        if c.base:
            lines.append(_small(f"type {c.type} hook {c.hook}"))
            lines.append(_small(f"priority {c.prio}, policy {c.policy or 'accept'}"))
        if c.comment:
            lines.append(_small(_clip(c.comment)))
        attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": _chain_fill(c.name),
                 "tooltip": _q(c.name)}
        if c.base:
            attrs.update(shape="cds", style="filled", fillcolor="#eeeeee")
        graph.node(f"chain/{c.name}", _html_label(*lines), **attrs)
    based = [c.name for c in chains if c.base]
    if len(based) > 1:
        same_rank(graph, [f"chain/{base}" for base in based])

    for m in map_names:
        elements = _map_node(graph, t, t.maps[m])
        for i, b in enumerate(elements):
            tooltip = f"{m}: {b.key} : {b.verdict} {b.target}".rstrip()
            if b.target in t.chains:
                head = f"chain/{b.target}"
            else:
                head = f"verdict/{m}/{b.verdict or 'value'}"
                _terminal(graph, head, b.verdict, "" if b.verdict else b.target, tooltip)
            graph.edge(f"map/{m}:e{i}:e", head, **_edge_attrs([], tooltip, b.pkts))

    for c in chains:
        for r in c.rules:
            tooltip = f"{r.chain} #{r.index}: {r.text}"
            label = _rule_label(r)
            tail = f"chain/{c.name}"
            if r.verdict == "vmap" and r.target:
                if r.target in t.maps:
                    graph.edge(tail, f"map/{r.target}",
                               **_edge_attrs(label + [_h(f"{r.key} vmap")], tooltip, r.pkts))
                continue
            if r.verdict == "vmap":
                label = _rule_label(dataclasses.replace(r, pkts=None))  # not per branch
                for b in sorted(r.branches, key=lambda b: _key_order(b.key)):
                    if r.numgen:
                        share = f"<b>p=1/{r.numgen}</b> · {_share(1 / r.numgen)}"
                        what = label + [share, _small(f"{r.key} = {b.key} : {b.verdict}")]
                    else:
                        what = label + [_h(f"{r.key} = {b.key}"), _small(b.verdict)]
                    if b.target in t.chains:
                        head = f"chain/{b.target}"
                    else:
                        head = f"target/{r.chain}/{r.index}/{b.key}"
                        _terminal(graph, head, b.verdict, "", tooltip)
                    graph.edge(tail, head, **_edge_attrs(what, tooltip, b.pkts))
                continue
            if r.verdict in ("jump", "goto") and r.target in t.chains:
                head = f"chain/{r.target}"
            elif r.verdict or r.statements:  # dnat, masquerade, return, a mark set...
                head = f"target/{r.chain}/{r.index}"
                verdict = f"{r.verdict} {r.target}" if r.verdict in ("jump", "goto") else \
                    r.verdict
                _terminal(graph, head, verdict, r.to if r.verdict else "; ".join(r.statements),
                          r.text)
                label = _rule_label(r, statements=bool(r.verdict))
            else:  # a rule that only matches or counts: nowhere to go
                continue
            graph.edge(tail, head, **_edge_attrs(label, tooltip, r.pkts,
                                                 dashed=r.target == "mark-for-masquerade"))

    services_n = sum(1 for c in chains if _SERVICE_CHAIN.match(c.name))
    endpoints_n = sum(1 for c in chains if _ENDPOINT_CHAIN.match(c.name))
    return Diagram(graph, f"{title}: {len(chains)} chains, {len(map_names)} maps, "
                          f"{services_n} services, {endpoints_n} endpoints")
