"""conntrack's entries as a table: what the kernel rewrote, both ways (pure)."""

from __future__ import annotations

import re

from .printers import Table

__all__ = ["parse_conntrack", "conntrack_table"]

_KV = re.compile(r"(\w+)=(\S+)")


def parse_conntrack(text: str) -> list[dict[str, str]]:
    """``conntrack -L -o extended`` lines -> dicts with original and reply tuples."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != "ipv4":
            continue
        proto = fields[2]
        pairs = _KV.findall(line)
        tuples = [(k, v) for k, v in pairs if k in ("src", "dst", "sport", "dport")]
        if len(tuples) < 8:
            continue
        original = dict(tuples[:4])
        reply = dict(tuples[4:8])
        state = fields[5] if proto == "tcp" and not fields[5].startswith("src=") else ""
        entries.append({"proto": proto, "state": state,
                        "orig_src": f"{original['src']}:{original['sport']}",
                        "orig_dst": f"{original['dst']}:{original['dport']}",
                        "reply_src": f"{reply['src']}:{reply['sport']}",
                        "reply_dst": f"{reply['dst']}:{reply['dport']}"})
    return entries


def conntrack_table(text: str, address: str) -> Table:
    rows = [[e["proto"], e["orig_src"], e["orig_dst"], e["reply_src"], e["reply_dst"],
             e["state"] or "-"]
            for e in parse_conntrack(text)
            if address in (e["orig_src"].split(":")[0], e["orig_dst"].split(":")[0],
                           e["reply_src"].split(":")[0], e["reply_dst"].split(":")[0])]
    rows.sort()
    return Table(["PROTO", "ORIGINAL SRC", "ORIGINAL DST", "REPLY SRC", "REPLY DST", "STATE"],
                 rows, f"No tracked connections involve {address}.")
