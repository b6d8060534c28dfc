"""What the kernel says the lab is: every namespace's links, addresses and routes (pure).

The agent reads ``ip -j`` output from each network namespace; this module turns it into
rows a reader can scan, and answers "does anything hold or route this address?" from the
kernel's own answer rather than from the lab's model.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from .printers import Table

__all__ = ["Inventory", "parse_batch", "IP_BATCH"]

# One `ip -j -d -batch -` per namespace: these commands, JSON arrays back to back. `-4` hides
# links without an IPv4 address from `addr show`; `link show` lists them all (bridge ports,
# host-side veths), and `netns list-id` names the namespaces a veth's `link_netnsid` means.
IP_BATCH = "addr show\nroute show table all\nlink show\nnetns list-id\n"


def parse_batch(text: str) -> list[list[dict[str, Any]]]:
    """Split back-to-back JSON arrays (one per batch command)."""
    decoder = json.JSONDecoder()
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        out.append(value)
    return out


@dataclass(frozen=True)
class Address:
    ns: str
    iface: str
    cidr: str
    kind: str  # veth, bridge, loopback ...
    master: str


@dataclass(frozen=True)
class Route:
    ns: str
    dst: str
    via: str
    dev: str
    table: str


class Inventory:
    """Links, addresses and routes of every namespace of a lab, as the kernel reports them."""

    def __init__(self, raw: dict[str, list[list[dict[str, Any]]]]) -> None:
        self.namespaces = sorted(raw, key=_ns_order)
        self.addresses: list[Address] = []
        self.routes: list[Route] = []
        self.links: dict[str, list[dict[str, Any]]] = {}
        # Per namespace: the netnsid a link's `link_netnsid` uses -> the namespace's name.
        self.nsids: dict[str, dict[int, str]] = {}
        for ns in self.namespaces:
            links, routes = raw[ns][0], raw[ns][1]
            if len(raw[ns]) > 2:  # every link, with the addresses `addr show` gave
                addrs = {link["ifindex"]: link.get("addr_info", []) for link in links}
                links = [{**link, "addr_info": addrs.get(link["ifindex"], [])}
                         for link in raw[ns][2]]
            self.links[ns] = links
            self.nsids[ns] = {int(n["nsid"]): n["name"] for n in
                              (raw[ns][3] if len(raw[ns]) > 3 else []) if "name" in n}
            for link in links:
                kind = link.get("linkinfo", {}).get("info_kind") or link.get("link_type", "")
                for a in link.get("addr_info", []):
                    if a.get("family") == "inet":
                        self.addresses.append(Address(ns, link["ifname"],
                                                      f"{a['local']}/{a['prefixlen']}", kind,
                                                      link.get("master", "")))
            for r in routes:
                if r.get("type", "unicast") != "unicast" or r.get("table") == "local":
                    continue
                self.routes.append(Route(ns, r["dst"], r.get("gateway", ""), r.get("dev", ""),
                                         r.get("table", "main")))

    def holders(self, ip: str) -> list[Address]:
        """Interfaces whose own address is ``ip``."""
        return [a for a in self.addresses if a.cidr.split("/")[0] == ip]

    def routes_to(self, network: str) -> list[Route]:
        """Routes naming ``network`` or a part of it (a default route names nothing)."""
        net = ipaddress.ip_network(network)
        out = []
        for r in self.routes:
            if r.dst == "default":
                continue
            dst = ipaddress.ip_network(r.dst if "/" in r.dst else f"{r.dst}/32", strict=False)
            if dst.overlaps(net):
                out.append(r)
        return out

    def addresses_table(self) -> Table:
        rows = [[a.ns, a.iface, a.kind or "-", a.cidr]
                for a in sorted(self.addresses, key=lambda a: (_ns_order(a.ns), a.iface))
                if a.iface != "lo"]
        return Table(["NAMESPACE", "INTERFACE", "KIND", "ADDRESS"], rows)

    def routes_table(self) -> Table:
        rows = [[r.ns, r.dst, r.via or "-", r.dev] for r in
                sorted(self.routes, key=lambda r: (_ns_order(r.ns), r.dst != "default", r.dst))]
        return Table(["NAMESPACE", "DESTINATION", "VIA", "DEVICE"], rows)

    def who_holds(self, network: str) -> Table:
        """A one-look proof: which interface or route, in which namespace, holds ``network``."""
        net = ipaddress.ip_network(network, strict=False)
        rows = [[a.ns, "address", f"{a.iface} {a.cidr}"] for a in self.addresses
                if ipaddress.ip_address(a.cidr.split("/")[0]) in net]
        rows += [[r.ns, "route", f"{r.dst} via {r.via or '-'} dev {r.dev}"]
                 for r in self.routes_to(network)]
        checked = f"{len(self.namespaces)} namespaces checked: {', '.join(self.namespaces)}"
        return Table(["NAMESPACE", "WHAT", "DETAIL"], rows,
                     f"Nothing holds or routes {network}.\n{checked}")


def _ns_order(ns: str) -> tuple[int, str]:
    rank = 0 if ns == "gateway" else 1 if ns.startswith("node") else 2 if ns == "external" else 3
    return (rank, ns)
