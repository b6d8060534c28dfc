"""Capture the fixtures of tests/unit/test_trace.py again, from real labs (root or rootless).

    python tests/unit/data/trace/capture.py [iptables] [userspace] [nftables]

Starts an iptables-mode and a userspace-mode article lab, adds a NodePort Service to the
first, runs the tracer helper (``python -m kubenet.packets``) inside each lab on a few
requests and writes what it captured, unprocessed: the xtables-monitor text of each node
as ``<name>.<node>.txt``, the rest as ``<name>.json`` (with the texts put back under
"monitor", the input of ``kubenet.trace.build``). ``nftables`` does the same in an
nftables-mode lab (``nft monitor trace`` texts, ``nft_*`` fixtures). With no argument: the
iptables and userspace fixtures.
The random draws (source port, IP ID, sequence number, which endpoint) differ each run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "lab"))

from article_facts import CLIENT, CLIENT_NS, NODEPORT  # noqa: E402

import kubenet  # noqa: E402
from kubenet.runtime import resolv_conf  # noqa: E402


def request(source: str, source_ns: str, dest: str, monitor: str = "xtables") -> dict:
    host, _, port = dest.rpartition(":")
    return {"op": "trace", "source": source, "source_ns": source_ns, "destination": dest,
            "host": host, "port": int(port), "resolv": resolv_conf("default", "10.3.240.10"),
            "nodes": ["node1", "node2"], "dns_server": "10.3.240.10",
            "monitors": {"node1": monitor, "node2": monitor}}


def reached(raw: dict, address: str) -> bool:
    """The traced SYN (not a rewritten copy of something else) reached ``address``."""
    return any(p["dst"] == address and p["ip_id"] == raw["ip_id"] for p in raw["packets"])


def capture(lab: kubenet.Lab, cases: dict[str, dict], tries: int = 8) -> None:
    """Run each request until its case's ``want`` (if any) holds for what was captured."""
    names = [name for name in cases for _ in range(tries if "want" in cases[name] else 1)]
    lines = "".join(json.dumps(cases[name]["request"]) + "\n" for name in names)
    out = lab.exec("node1", "sh", "-c", f"cd {ROOT} && {sys.executable} -m kubenet.packets",
                   stdin=lines)
    replies = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    kept: dict[str, dict] = {}
    for name, reply in zip(names, replies, strict=True):
        assert reply["ok"], reply
        want = cases[name].get("want", lambda raw: True)
        if name not in kept and want(reply["result"]):
            kept[name] = reply["result"]
    assert set(kept) == set(cases), f"no run of {set(cases) - set(kept)} went as wanted"
    for name, raw in kept.items():
        for node, text in raw.pop("monitor").items():
            (HERE / f"{name}.{node}.txt").write_text(text + "\n")
        (HERE / f"{name}.json").write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
        print(name, "captured")


def main(which: list[str]) -> None:
    for mode in ("nftables", "iptables"):
        if mode in which:
            rules_mode(mode)
    if "userspace" in which:
        userspace()


def rules_mode(mode: str) -> None:
    """The iptables or nftables fixtures (``nft_`` names, ``nft monitor trace`` texts)."""
    prefix, monitor = ("nft_", "nft") if mode == "nftables" else ("", "xtables")
    with kubenet.Lab("article", proxy_mode=mode) as lab:
        lab.apply(NODEPORT)
        far, near = "10.0.2.2", "10.0.1.2"

        def req(source: str, ns: str, dest: str) -> dict:
            return request(source, ns, dest, monitor=monitor)

        cases = {
            # The article's picture: the other node's pod answers.
            "clusterip": {"request": req(CLIENT, CLIENT_NS, "10.3.241.152:80"),
                          "want": lambda raw: reached(raw, far)},
            # The client's own pod answers (hairpin: kube-proxy masquerades it).
            "name": {"request": req(CLIENT, CLIENT_NS, "service-test:80"),
                     "want": lambda raw: reached(raw, near)},
            "podip": {"request": req(CLIENT, CLIENT_NS, "10.0.2.2:8080")},
            "nodeport": {"request": req("external", "external", "10.100.0.2:30080"),
                         "want": lambda raw: reached(raw, far)},
            "fromnode": {"request": req("node1", "node1", "10.3.241.152:80"),
                         "want": lambda raw: reached(raw, near)},
        }
        if mode == "iptables":
            cases["closed"] = {"request": req(CLIENT, CLIENT_NS, "10.0.2.2:81")}
        capture(lab, {prefix + name: case for name, case in cases.items()})


def userspace() -> None:
    with kubenet.Lab("article", proxy_mode="userspace") as lab:
        capture(lab, {"userspace": {"request": request(CLIENT, CLIENT_NS, "10.3.241.152:80"),
                                    # the proxy's second connection goes to node2
                                    "want": lambda raw: any(p["dst"] == "10.0.2.2"
                                                            for p in raw["packets"])}})


if __name__ == "__main__":
    main(sys.argv[1:] or ["iptables", "userspace"])
