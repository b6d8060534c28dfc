"""``kubenet bench``: what a Service costs on the data path, measured on this machine.

The benchmark builds its own lab (a unique name, always closed), puts a light server on
node2 and a client on node1, and measures with real load tools so that the figures are
the kernel's and the proxy's, not Python's:

- ``wrk`` (Debian's package) in the client pod, against nginx (one process) in a server
  pod: requests per second and latency p50/p99 (from ``wrk --latency``), once with a new
  TCP connection per request (``-H 'Connection: close'``) and once over keep-alive
  connections;
- ``iperf3`` in the client pod against an ``iperf3 -s`` pod: bulk throughput.

Each is measured **direct** (to the server pod's IP) and **through the Service's cluster
IP**, with kube-proxy in iptables mode, then in nftables mode, then in userspace mode (the
article's 2015 design). Then the same lab measures **scale** (:mod:`kubenet.scale`):
node1's kube-proxy is handed 100, 1,000, 5,000 and 10,000 Services of two endpoints each,
in iptables and in nftables mode; each size gives the time of the full sync and the TCP
connect latency to the Service kube-proxy matches first and to the one it matches last.
And **the lab itself**: ``kubenet up --scenario article`` (median of several runs), a warm
``trace`` and a diagram in the benchmark's lab, and 10 / 50 / 100 pods per node (a light
server, ``nc -lk``, in each) from apply to all Ready.

Method, for a shared 2-core machine
-----------------------------------
- Direct and service runs alternate, in ABBA order (direct first in even repetitions,
  the service first in odd ones), each repeated ``--reps`` times (6; 2 with ``--quick``).
  Every figure is the median of its runs, with the lowest and highest run as its spread.
  A ratio is the median of the per-repetition ratios service/direct, each pair measured
  back to back, so a neighbour's load that comes and goes hits both sides of a pair.
- At least 2,000 connections per new-connection run (500 with ``--quick``): a run that
  falls short is run again for longer, and so are the later runs of its kind.
- Fresh state for every run: a new client pod (so a new pod IP: host-local IPAM does not
  hand back an address it just freed), ``conntrack -F`` on node1 and node2, and in the
  client ``ip_local_port_range`` 1024-65535 and ``tcp_tw_reuse=1``. The client's SYN
  retransmit counter (``TcpExt:TCPSynRetrans`` of its network namespace, as a share of
  its ``Tcp:ActiveOpens``) is reported beside every figure: with fresh state it is 0.
- wrk's latency starts when the request is written on a connected socket, so the TCP
  handshake is outside p50/p99; a new connection's extra cost shows in requests/s.

Why a connection-per-request benchmark from one client address hurts the DNAT path
-----------------------------------------------------------------------------------
A naive benchmark (one client, runs alternating direct then through the cluster IP) sees
the DNAT path lose far more than a rule lookup costs, with SYN retransmits, and degrade
run after run. The *port reuse* experiment (``reuse.*`` figures, the ``port_reuse``
plot) reproduces it and takes it apart, in iptables mode: one client pod per series, its
port range narrowed to 1,024 ports so that every run wraps it several times (the default
28,232 ports wrap the same way after ~14,000 connections: connect() takes every other
port), and conntrack left alone between runs except in ``flushed``. The client keeps no
TIME_WAIT of its own (``tcp_max_tw_buckets=0`` in its namespace): with its 1,024 ports
they would run out within a run, which is a client's problem, not the path's.

1. The server keeps a TIME_WAIT. With ``Connection: close`` nginx closes right after
   its response; whichever side closes first keeps the TIME_WAIT, the server whenever
   its FIN reaches the client before wrk has read the response (how often depends on
   the machine's timing: ``server_time_wait_before`` counts them before each run).
   Each stays 60 s, keyed by the tuple the server sees (client IP:port, pod
   IP:8080). The client knows nothing of it and reuses the port.
2. A SYN may reopen a TIME_WAIT socket only if it is newer: its TCP timestamp must not
   be older than the last one the server saw on that tuple (PAWS). Else the server
   drops it (``TcpExt:PAWSTimewait``) and answers with an ACK of the old connection;
   the client resets that and sends its SYN again (``TcpExt:TCPSynRetrans``: the two
   counters match one for one). On this kernel the client's timestamp clock, like its
   initial sequence number, is offset by a hash of the **4-tuple the client sees**
   (a tcpdump shows unrelated timestamps on SYNs from one client to one server on
   neighbouring ports).
3. Without NAT the client's tuple is the server's tuple: the reused port's clock runs on
   from the old connection, the SYN is always newer, the reuse always works.
   ``same-path`` (the cluster IP only, the port range wrapped ~7 times a run) has no
   retransmit at all: port reuse by itself is harmless, and so is one DNAT to one pod.
4. DNAT gives one server tuple two client tuples: ``client:p -> pod:8080`` direct and
   ``client:p -> cluster-IP:80`` through the Service. A SYN on one path that lands on
   a TIME_WAIT left by the other carries an unrelated clock, older half of the time: a
   PAWS drop. ``flushed`` (conntrack flushed before every run) shows it bare: after the
   first run, both paths lose some of their SYNs (1-9 % here; 27-30 % in a run of this
   lab with the default port range at ~3,700 connections/s). It costs little: the
   client's first retransmission after such an ACK comes after the minimum timeout,
   ~10 ms, on the same tuple, and its reset has removed the TIME_WAIT.
5. Conntrack on the node makes it one-sided, cumulative and expensive. The node keeps
   each closed connection for 120 s (``nf_conntrack_tcp_timeout_time_wait``), twice
   the server's TIME_WAIT. A new connection whose reply tuple ``pod:8080 -> client:p``
   is still held by an entry of the *other* path cannot have it (reply tuples are
   unique), so NAT rewrites its source port to a random free one in 1024-65535 (the
   null binding for SNAT; ``conntrack -L --src-nat`` counts them: all 512 ports in
   use). Whichever path runs *second* is rewritten, every time: in ``direct-first``
   the cluster-IP runs lose SYNs and the direct ones none; ``service-first`` is the
   mirror image. The random ports collide, at the server, with the TIME_WAIT sockets of
   earlier rewritten connections (other client tuples, other clocks), more of them each
   run as those pile up. And the retry is no longer safe: after the reset the node
   reopens the conntrack entry and rewrites the port again, to a new random one that
   may collide too, and a second failure waits the full 1 s retransmission timeout
   (a tcpdump in the client pod: most retransmitted SYNs 10 ms after the first, a few
   per cent 10 ms and then 1,010 ms, ~10 one-second stalls in a 3 s run on 8
   connections). Those stalls, not the 10 ms ones, cut the rate by half and more.

So: the DNAT rule itself is cheap (with fresh state the cluster-IP path is close to
direct, with no retransmit), but DNAT plus TIME_WAIT reuse from one client address is
not, and the path that runs after the other one pays. A benchmark that runs direct
first and then the Service blames the Service. Fresh state per run removes it: a new
client address; flushing conntrack alone does not (see 4). Keep-alive and bulk runs open
a handful of connections and never meet it.

Output
------
A table (or with ``--json`` JSON Lines on stdout: one object per figure with ``name``,
``value``, ``unit`` and ``settings``, the last line the summary), progress on stderr
(tqdm if installed), and plots (matplotlib, PNG and SVG: ``datapath``, ``latency``,
``port_reuse``, ``scale_sync``, ``scale_latency``) plus ``results.jsonl``,
``runs.json``, ``machine.json`` and ``README.md`` in ``--out`` (``bench/results/``, or
``bench/results/quick/`` with ``--quick``, so a quick run never overwrites the committed
full run).

The parsing, statistics, summary and table (``parse_*``, ``Stat``, ``figures``,
``summary``, ``format_table``) are pure and unit-tested; :class:`Bench` runs things.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .scale import (
    QUICK_SIZES,
    SIZES,
    Point,
    ScaleRun,
    format_scale_table,
    nginx_pod,
    scale_figures,
    scale_manifest,
    simple_pod,
    write_scale_plots,
)

__all__ = [
    "MODES", "KINDS", "Settings", "WrkResult", "IperfResult", "Run", "Stat",
    "parse_wrk", "parse_duration_ms", "parse_iperf3", "parse_proc_net", "split_sections",
    "syn_retrans_pct", "figures", "summary", "format_table", "machine", "Bench", "main",
    "add_arguments", "run_cli", "default_out",
]

MODES = ("iptables", "nftables", "userspace")  # kube-proxy modes, in the order shown
KINDS = ("close", "keepalive", "bulk")
KIND_TITLES = {"close": "new connection per request", "keepalive": "keep-alive",
               "bulk": "bulk (iperf3)"}
# kubernetes PR #16344 (2015): throughput through the proxy as a share of pod-to-pod.
REFERENCE = {"source": "kubernetes PR #16344 (2015), throughput as a share of pod-to-pod",
             "ratio_userspace_direct": 0.36, "ratio_iptables_direct": 0.96}
SCALE_KEYS = ("growth_iptables_10k", "growth_nftables_10k", "sync_iptables_10k_s",
              "sync_nftables_10k_s")

# ----------------------------------------------------------------------------------
# Pure part: parsing, statistics, figures, summary, table.
# ----------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str) -> float:
    """wrk's durations (``524.00us``, ``2.84ms``, ``1.02s``, ``2.00m``) in milliseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)  # connect, read, write, timeout
    non_2xx: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.non_2xx


def parse_wrk(text: str) -> WrkResult:
    """The summary of ``wrk --latency``: requests, rate, the latency distribution and
    errors. Raises ValueError when the output is not a finished wrk run."""
    done = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", text, re.M)
    rate = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if not done or not rate:
        raise ValueError("wrk did not finish: " + (text.strip().splitlines() or ["no output"])[-1])
    section = text.split("Latency Distribution", 1)
    if len(section) != 2:
        raise ValueError("wrk output has no latency distribution (run it with --latency)")
    dist = {int(p): parse_duration_ms(v) for p, v in
            re.findall(r"^\s+(50|75|90|99)%\s+([0-9.]+(?:us|ms|s|m|h))\s*$", section[1], re.M)}
    if set(dist) != {50, 75, 90, 99}:
        raise ValueError("wrk latency distribution is incomplete")
    errors = {}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    if sock:
        errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()),
                          strict=True))
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(done.group(1)),
        duration_s=parse_duration_ms(done.group(2) + done.group(3)) / 1000.0,
        requests_per_s=float(rate.group(1)),
        p50_ms=dist[50], p75_ms=dist[75], p90_ms=dist[90], p99_ms=dist[99],
        errors=errors, non_2xx=int(non.group(1)) if non else 0)


@dataclass
class IperfResult:
    bits_per_second: float  # what the receiver got
    sender_bits_per_second: float
    retransmits: int
    seconds: float

    @property
    def gbit_per_s(self) -> float:
        return self.bits_per_second / 1e9


def parse_iperf3(text: str) -> IperfResult:
    """``iperf3 -c ... -J``: the receiver's throughput, the sender's retransmits."""
    start = text.find("{")
    if start < 0:
        raise ValueError("iperf3 printed no JSON: " + text.strip()[:200])
    data = json.loads(text[start:])
    if data.get("error"):
        raise ValueError(f"iperf3: {data['error']}")
    end = data["end"]
    received, sent = end["sum_received"], end["sum_sent"]
    return IperfResult(bits_per_second=float(received["bits_per_second"]),
                       sender_bits_per_second=float(sent["bits_per_second"]),
                       retransmits=int(sent.get("retransmits", 0)),
                       seconds=float(received["seconds"]))


def parse_proc_net(text: str) -> dict[str, int]:
    """``/proc/net/snmp`` and ``/proc/net/netstat`` (header line, value line, ...) as
    ``{"Tcp:ActiveOpens": n, "TcpExt:TCPSynRetrans": n, ...}``."""
    counters: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if ":" in line]
    for head, values in zip(lines, lines[1:], strict=False):
        if head[0] != values[0] or not values[1:] or not values[1].lstrip("-").isdigit():
            continue
        if not head[1][:1].isalpha():
            continue
        for key, value in zip(head[1:], values[1:], strict=False):
            counters[head[0] + key] = int(value)
    return counters


def split_sections(text: str, marker: str = "@@") -> dict[str, str]:
    """Output of a script that prints ``@@name`` lines before each part."""
    parts: dict[str, str] = {}
    name = ""
    for line in text.splitlines(keepends=True):
        if line.startswith(marker):
            name = line[len(marker):].strip()
            parts[name] = ""
        elif name:
            parts[name] += line
    return parts


def counter_delta(before: dict[str, int], after: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def syn_retrans_pct(syn_retrans: int, active_opens: int) -> float:
    """SYN retransmits as a share of the connections the client opened, in percent."""
    return 100.0 * syn_retrans / active_opens if active_opens else 0.0


@dataclass
class Run:
    """One measurement: a tool run from a fresh client pod."""

    mode: str  # kube-proxy's mode during the run
    path: str  # "direct" or "service"
    kind: str  # close | keepalive | bulk
    rep: int
    value: float  # requests/s, or Gbit/s for bulk
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    errors: int = 0
    active_opens: int = 0
    syn_retrans: int = 0
    retransmits: int = 0  # iperf3 sender's retransmitted segments
    seconds: float = 0.0
    argv: str = ""

    @property
    def syn_pct(self) -> float:
        return syn_retrans_pct(self.syn_retrans, self.active_opens)


@dataclass
class Stat:
    """The median of some runs, with the lowest and highest as its spread."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stat | None:
        values = [float(v) for v in samples if v is not None]
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def spread_pct(self) -> float:
        """(highest - lowest) / median, in percent."""
        return 100.0 * (self.high - self.low) / self.median if self.median else 0.0


def paired_ratios(runs: Sequence[Run], mode: str, kind: str,
                  attr: str = "value") -> list[float]:
    """service/direct for each repetition of ``kind`` in ``mode``: the two runs measured
    back to back."""
    by_rep: dict[int, dict[str, Run]] = {}
    for r in runs:
        if r.mode == mode and r.kind == kind:
            by_rep.setdefault(r.rep, {})[r.path] = r
    out = []
    for rep in sorted(by_rep):
        pair = by_rep[rep]
        if "direct" in pair and "service" in pair:
            d, s = getattr(pair["direct"], attr), getattr(pair["service"], attr)
            if d:
                out.append(s / d)
    return out


def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None:
        return None
    return float(f"{x:.{digits}g}")


def _figure(name: str, stat: Stat | None, unit: str, settings: dict[str, Any],
            **extra: Any) -> dict[str, Any]:
    fig: dict[str, Any] = {"name": name, "value": _round(stat.median) if stat else None,
                           "unit": unit, "settings": settings}
    if stat is not None:
        fig.update(min=_round(stat.low), max=_round(stat.high), n=stat.n)
    fig.update({k: v for k, v in extra.items() if v is not None})
    return fig


def _path_label(path: str) -> str:
    return "direct" if path == "direct" else f"{path} (cluster IP)"


def figures(runs: Sequence[Run], settings: dict[str, Any],
            up_samples: Sequence[float] = (),
            reuse_runs: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One object per figure, from the runs. ``settings`` holds, per kind, how the tool
    ran (``settings["close"]`` ...) and the common method (``settings["method"]``)."""
    out: list[dict[str, Any]] = []
    method = settings.get("method", {})
    metrics = {
        "close": [("requests_per_s", "value", "requests/s"), ("latency_p50", "p50_ms", "ms"),
                  ("latency_p99", "p99_ms", "ms")],
        "keepalive": [("requests_per_s", "value", "requests/s"),
                      ("latency_p50", "p50_ms", "ms"), ("latency_p99", "p99_ms", "ms")],
        "bulk": [("throughput", "value", "Gbit/s")],
    }
    for kind in KINDS:
        tool = settings.get(kind, {})
        for path in ("direct", *MODES):
            if path == "direct":
                chosen = [r for r in runs if r.kind == kind and r.path == "direct"]
                target = "server pod IP"
            else:
                chosen = [r for r in runs if r.kind == kind and r.path == "service"
                          and r.mode == path]
                target = f"Service cluster IP, kube-proxy in {path} mode"
            syn = Stat.of(r.syn_pct for r in chosen)
            for metric, attr, unit in metrics[kind]:
                stat = Stat.of(getattr(r, attr) for r in chosen)
                extra: dict[str, Any] = {}
                if kind != "bulk":
                    extra["syn_retrans_pct"] = _round(syn.median, 3) if syn else None
                    extra["syn_retrans_pct_max"] = _round(syn.high, 3) if syn else None
                    extra["requests_min"] = min((r.requests for r in chosen), default=None)
                    extra["errors"] = sum(r.errors for r in chosen) if chosen else None
                else:
                    extra["tcp_retransmits"] = sum(r.retransmits for r in chosen) \
                        if chosen else None
                out.append(_figure(f"{kind}.{metric}.{path}", stat, unit,
                                   {**tool, **method, "path": _path_label(path),
                                    "target": target}, **extra))
        for mode in MODES:
            ratios = paired_ratios(runs, mode, kind)
            stat = Stat.of(ratios)
            metric = "throughput" if kind == "bulk" else "requests_per_s"
            out.append(_figure(f"{kind}.{metric}.ratio.{mode}", stat, "x direct",
                               {**tool, **method, "path": _path_label(mode),
                                "ratio": "median over repetitions of service/direct, "
                                         "each pair measured back to back"}))
    if up_samples:
        out.append(_figure("lab.up_article_s", Stat.of(up_samples), "s",
                           {"command": "kubenet up --scenario article", "runs": len(up_samples),
                            "measured": "wall time of the command, then kubenet down"}))
    out += reuse_figures(reuse_runs, settings.get("reuse", {}))
    return out


def _series_order(reuse_runs: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["series"] for r in reuse_runs))


def reuse_figures(reuse_runs: Sequence[dict[str, Any]],
                  settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The port reuse experiment: per series and path, requests/s and SYN retransmits,
    with every run in order (``runs``) and the server's PAWS drops and the node's
    rewritten source ports beside them."""
    out = []
    for series in _series_order(reuse_runs):
        for path in ("direct", "service"):
            chosen = [r for r in reuse_runs if r["series"] == series and r["path"] == path]
            if not chosen:
                continue
            common = {**settings, "series": series,
                      "order": [r["path"] for r in reuse_runs if r["series"] == series],
                      "path": _path_label("iptables" if path == "service" else "direct")}
            pcts = [syn_retrans_pct(r["syn_retrans"], r["active_opens"]) for r in chosen]
            out.append(_figure(f"reuse.{series}.requests_per_s.{path}",
                               Stat.of(r["requests_per_s"] for r in chosen), "requests/s",
                               common, runs=[_round(r["requests_per_s"]) for r in chosen]))
            out.append(_figure(
                f"reuse.{series}.syn_retrans_pct.{path}", Stat.of(pcts), "%", common,
                runs=[_round(x, 3) for x in pcts],
                client_syn_retrans=[r["syn_retrans"] for r in chosen],
                server_paws_timewait=[r.get("paws_timewait", 0) for r in chosen],
                conntrack_src_nat=[r.get(f"src_nat_{path}", 0) for r in chosen]))
    return out


def summary(runs: Sequence[Run], up_samples: Sequence[float] = (),
            trace_samples: Sequence[float] = (), scale_points: Sequence[Any] = (),
            **extra: Any) -> dict[str, Any]:
    """The last JSON line: the headline figures any script can read."""
    from .scale import scale_summary

    def ratio(mode: str, kind: str) -> float | None:
        stat = Stat.of(paired_ratios(runs, mode, kind))
        return _round(stat.median) if stat else None

    up = Stat.of(up_samples)
    out: dict[str, Any] = {"name": "summary", "up_article_s": _round(up.median) if up else None}
    for mode in ("iptables", "nftables", "userspace"):
        out[f"ratio_{mode}_direct"] = ratio(mode, "close")
    trace = Stat.of(trace_samples)
    out["trace_s"] = _round(trace.median) if trace else None
    out.update(scale_summary(scale_points))
    for mode in ("iptables", "nftables", "userspace"):
        out[f"ratio_{mode}_direct_keepalive"] = ratio(mode, "keepalive")
        out[f"ratio_{mode}_direct_bulk"] = ratio(mode, "bulk")
    syn = {}
    for path in ("direct", *MODES):
        chosen = [r for r in runs if r.kind == "close" and
                  (r.path == "direct" if path == "direct" else
                   (r.path == "service" and r.mode == path))]
        stat = Stat.of(r.syn_pct for r in chosen)
        syn[path] = _round(stat.high, 3) if stat else None
    out["syn_retrans_pct_max"] = syn
    out["reference"] = REFERENCE
    missing = {k: "not measured in this run (--quick measures 100 and 1,000 services)"
               for k in SCALE_KEYS if out[k] is None}
    if missing:
        out["not_measured"] = missing
    out.update(extra)
    return out


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{x:.2f}" if x < 10 else f"{x:.1f}"
    if unit == "Gbit/s":
        return f"{x:.2f}"
    if unit == "x direct":
        return f"{x:.2f}x"
    if unit == "s":
        return f"{x:.3f}"
    if unit == "%":
        return f"{x:.1f}"
    return f"{x:,.0f}"


def format_table(figs: Sequence[dict[str, Any]], summ: dict[str, Any] | None = None) -> str:
    """The figures as the table ``kubenet bench`` prints."""
    by = {f["name"]: f for f in figs}
    cols = ("direct", *MODES)
    heads = ["direct (pod IP)", "iptables", "nftables", "userspace"]
    rows: list[list[str]] = []

    def cell(name: str, spread: bool = True) -> str:
        f = by.get(name)
        if f is None or f["value"] is None:
            return "-"
        text = _fmt(f["value"], f["unit"])
        if spread and f.get("n", 0) > 1:
            text += f" [{_fmt(f['min'], f['unit'])}-{_fmt(f['max'], f['unit'])}]"
        return text

    for kind in KINDS:
        metric = "throughput" if kind == "bulk" else "requests_per_s"
        unit = "Gbit/s" if kind == "bulk" else "req/s"
        rows.append([f"{KIND_TITLES[kind]}, {unit}", *(cell(f"{kind}.{metric}.{c}")
                                                        for c in cols)])
        rows.append(["  ratio to direct", "1", *(cell(f"{kind}.{metric}.ratio.{m}", False)
                                                 for m in MODES)])
        if kind != "bulk":
            for p in ("50", "99"):
                rows.append([f"  latency p{p}, ms", *(cell(f"{kind}.latency_p{p}.{c}")
                                                      for c in cols)])
            syn = []
            for c in cols:
                f = by.get(f"{kind}.requests_per_s.{c}")
                syn.append("-" if not f or f.get("syn_retrans_pct") is None else
                           f"{f['syn_retrans_pct']:.1f} (max {f['syn_retrans_pct_max']:.1f})")
            rows.append(["  SYN retransmits, %", *syn])
        else:
            rows.append(["  TCP retransmits (all runs)",
                         *("-" if (f := by.get(f"bulk.throughput.{c}")) is None or
                           f.get("tcp_retransmits") is None else str(f["tcp_retransmits"])
                           for c in cols)])
    widths = [max(len(r[i]) for r in [["", *heads], *rows]) for i in range(5)]
    lines = ["Data path: client pod on node1, server pod on node2; median [lowest-highest] "
             "of the runs"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(["", *heads], widths, strict=True)))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    lines.append(f"reference, {REFERENCE['source']}: iptables "
                 f"{REFERENCE['ratio_iptables_direct']:.2f}x, userspace "
                 f"{REFERENCE['ratio_userspace_direct']:.2f}x")
    up = by.get("lab.up_article_s")
    if up:
        lines.append(f"kubenet up --scenario article: {cell('lab.up_article_s')} s "
                     f"(median of {up['n']} runs)")
    for name, what in (("lab.trace_s", "a warm trace (client pod -> cluster IP)"),
                       ("lab.draw_s", "the lab's diagram, lab.draw().svg()")):
        f = by.get(name)
        if f:
            lines.append(f"{what}: {cell(name)} s (median of {f['n']} runs)")
    pods = [f for f in figs if f["name"].startswith("lab.pods_")]
    if pods:
        lines.append("pods per node, apply to all Ready (a light server in each): " + ", ".join(
            f"{f['settings']['pods_per_node']} per node {_fmt(f['value'], 's')} s"
            for f in pods))
    reuse = [f for f in figs if f["name"].startswith("reuse.")]
    if reuse:
        lines.append("Port reuse, iptables mode: one client pod per series, a 1,024-port "
                     "range, conntrack flushed only in 'flushed'; each run in order:")
        for series in dict.fromkeys(f["settings"]["series"] for f in reuse):
            for path in ("direct", "service"):
                rps = by.get(f"reuse.{series}.requests_per_s.{path}")
                syn = by.get(f"reuse.{series}.syn_retrans_pct.{path}")
                if not rps or not syn:
                    continue
                runs = ", ".join(f"{v:,.0f}" for v in rps.get("runs", []))
                pct = ", ".join(f"{v:.1f}" for v in syn.get("runs", []))
                paws = ", ".join(str(v) for v in syn.get("server_paws_timewait", []))
                nat = ", ".join(str(v) for v in syn.get("conntrack_src_nat", []))
                lines.append(f"  {series:<13} {path:<7} req/s {runs}")
                lines.append(f"  {'':<13} {'':<7} SYN retransmits % {pct}; server PAWS drops "
                             f"{paws}; node1 rewritten ports {nat}")
    if summ:
        keys = ("up_article_s", "trace_s", "ratio_iptables_direct", "ratio_nftables_direct",
                "ratio_userspace_direct", *SCALE_KEYS)
        lines.append("summary: " + ", ".join(f"{k} {summ.get(k)}" for k in keys))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, kernel, distribution, tools."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(),
                            "cores": os.cpu_count(), "kernel": platform.release(),
                            "arch": platform.machine(), "python": platform.python_version()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        if model:
            info["cpu"] = model.group(1).strip()
        info["virtualized"] = bool(re.search(r"^flags\s*:.*\bhypervisor\b", cpuinfo, re.M))
    except OSError:
        pass
    try:
        mem = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if mem:
            info["memory_gib"] = round(int(mem.group(1)) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)', Path("/etc/os-release").read_text(),
                           re.M)
        if pretty:
            info["os"] = pretty.group(1)
    except OSError:
        pass
    tools = {}
    for name, argv in (("wrk", ["wrk", "-v"]), ("iperf3", ["iperf3", "--version"]),
                       ("nginx", ["nginx", "-v"])):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            first = (done.stdout + done.stderr).strip().splitlines()
            tools[name] = first[0] if first else ""
        except (OSError, subprocess.TimeoutExpired):
            tools[name] = None
    info["tools"] = tools
    return info


# ----------------------------------------------------------------------------------
# Running part: the lab, the pods, the tools.
# ----------------------------------------------------------------------------------

BENCH_TOOLS = {"wrk": "wrk", "iperf3": "iperf3", "nginx": "nginx", "conntrack": "conntrack",
               "nc": "netcat-openbsd", "nft": "nftables"}
HTTP_PORT, IPERF_PORT = 8080, 5201

SERVER_MANIFEST = ("# kubenet bench: the servers, on node2. No images: nginx and iperf3 are "
                   "the host's.\n" + nginx_pod("bench-nginx", "bench-nginx", port=HTTP_PORT)
                   + """\
---
apiVersion: v1
kind: Pod
metadata:
  name: bench-iperf
  labels: {app: bench-iperf}
spec:
  nodeName: node2
  containers:
  - name: iperf3
    image: networkstatic/iperf3
    command: ["iperf3", "-s", "-p", "5201"]
    ports:
    - {name: iperf, containerPort: 5201}
---
kind: Service
apiVersion: v1
metadata: {name: bench-http}
spec:
  selector: {app: bench-nginx}
  ports: [{port: 80, targetPort: http}]
---
kind: Service
apiVersion: v1
metadata: {name: bench-iperf}
spec:
  selector: {app: bench-iperf}
  ports: [{port: 5201, targetPort: iperf}]
""" + "---\n" + scale_manifest())

FRESH_SYSCTLS = ("net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
REUSE_PORT_RANGE = (40000, 41023)


@dataclass
class Settings:
    reps: int = 6
    close_s: float = 3.0
    keepalive_s: float = 2.0
    bulk_s: int = 3
    bulk_omit_s: int = 1
    min_connections: int = 2000
    connections: int = 8
    threads: int = 1
    up_runs: int = 5
    reuse_pairs: int = 3
    reuse_same_path_runs: int = 3
    reuse_s: float = 3.0
    scale_sizes: tuple[int, ...] = SIZES
    scale_rounds: int = 2000
    pods_per_node: tuple[int, ...] = (10, 50, 100)
    trace_runs: int = 10
    draw_runs: int = 5
    quick: bool = False

    @classmethod
    def for_run(cls, quick: bool, reps: int | None = None) -> Settings:
        s = cls(reps=2, close_s=1.0, keepalive_s=1.0, bulk_s=1, bulk_omit_s=0,
                min_connections=500, up_runs=3, reuse_pairs=2, reuse_same_path_runs=2,
                reuse_s=1.0, scale_sizes=QUICK_SIZES, scale_rounds=500, pods_per_node=(10,),
                trace_runs=5, draw_runs=3, quick=True) if quick else cls()
        if reps is not None:
            s.reps = reps
        return s


def default_out(quick: bool) -> Path:
    """``bench/results`` of the course's tree (of the working directory when kubenet is
    installed elsewhere); ``bench/results/quick`` for a quick run."""
    repo = Path(__file__).resolve().parent.parent
    base = repo / "bench" if (repo / "bench").is_dir() else Path.cwd() / "bench"
    return base / "results" / ("quick" if quick else "")


class Progress:
    """A tqdm bar on stderr when tqdm is installed, else one plain line per step."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True,
                                desc="kubenet bench")
            except ImportError:
                self.bar = None

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
        else:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def step(self, text: str = "") -> None:
        self.done += 1
        if self.bar is not None:
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.enabled and text:
            print(f"[{self.done}/{self.total}] {text}", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Bench:
    """Builds the benchmark's lab, runs the tools, and collects :class:`Run` records."""

    def __init__(self, settings: Settings, progress: Progress | None = None,
                 name: str | None = None) -> None:
        self.s = settings
        self.name = name or f"bench-{os.getpid()}-{secrets.token_hex(3)}"
        self.progress = progress or Progress(0, enabled=False)
        self.runs: list[Run] = []
        self.reuse_runs: list[dict[str, Any]] = []
        self.up_samples: list[float] = []
        self.lab: Any = None
        self._clients = 0
        self.warnings: list[str] = []
        self._seconds: dict[tuple[str, str, str], float] = {}
        self.targets: dict[str, str] = {}
        self.trace_samples: list[float] = []
        self.draw_samples: list[float] = []
        self.pod_runs: list[dict[str, Any]] = []
        self.scale_points: list[Any] = []

    # -- plan ---------------------------------------------------------------------
    def steps(self) -> int:
        s = self.s
        return (s.up_runs + 1 + len(MODES) * s.reps * 2 * len(KINDS)
                + sum(len(paths) for _, paths, _ in self.reuse_series())
                + 2 + 2 * len(s.scale_sizes) + len(s.pods_per_node))

    # -- kubenet up --scenario article ---------------------------------------------
    def measure_up(self) -> None:
        cli = [sys.executable, "-m", "kubenet.cli"]
        for i in range(self.s.up_runs):
            name = f"{self.name}-up{i}"
            try:
                start = time.perf_counter()
                done = subprocess.run([*cli, "--lab", name, "up", "--scenario", "article"],
                                      capture_output=True, text=True, timeout=120)
                elapsed = time.perf_counter() - start
            finally:
                subprocess.run([*cli, "--lab", name, "down"], capture_output=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"kubenet up failed: {done.stderr.strip()}")
            self.up_samples.append(elapsed)
            self.progress.step(f"up --scenario article {elapsed:.2f}s")

    # -- the lab ----------------------------------------------------------------------
    def open(self) -> None:
        from .errors import KubenetError
        from .lab import Lab

        self.progress.note(f"building lab {self.name}")
        self.lab = Lab("empty", name=self.name, proxy_mode="iptables")
        self.lab.apply(SERVER_MANIFEST)
        for pod in self.lab.pods():
            ready = [c for c in pod["status"].get("conditions", []) if c["type"] == "Ready"]
            if not ready or ready[0]["status"] != "True":
                name = pod["metadata"]["name"]
                log = str(self.lab.logs(name)).strip().splitlines()
                raise KubenetError(f"error: kubenet bench: pod {name} is not ready: "
                                   + (log[-1] if log else "no output"))
        self.lab.wait()
        pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in self.lab.pods()}
        services = json.loads(str(self.lab.get("services", output="json")))["items"]
        vips = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in services}
        self.targets = {
            "http.direct": f"http://{pods['bench-nginx']}:{HTTP_PORT}/",
            "http.service": f"http://{vips['bench-http']}:80/",
            "ip.direct": pods["bench-nginx"],
            "ip.service": vips["bench-http"],
            "iperf.direct": pods["bench-iperf"],
            "iperf.service": vips["bench-iperf"],
        }
        self.progress.step("lab up")

    def close(self) -> None:
        if self.lab is not None:
            self.lab.close()
            self.lab = None

    def set_mode(self, mode: str) -> None:
        self.progress.note(f"kube-proxy -> {mode} mode")
        self.lab.set_proxy_mode(mode)
        self.lab.wait_until_endpoints("bench-http", 1)
        self.lab.wait_until_endpoints("bench-iperf", 1)

    def new_client(self) -> str:
        self._clients += 1
        name = f"bench-client-{self._clients}"
        self.lab.apply(simple_pod(name, "bench-client", "node1", "wrk", ["sleep", "infinity"]))
        return name

    def delete_client(self, name: str) -> None:
        self.lab.delete("pod", name)

    def flush_conntrack(self) -> None:
        for node in ("node1", "node2"):
            self.lab.exec(node, "conntrack", "-F")

    def _sh(self, target: str, script: str, timeout: float) -> str:
        result = self.lab.exec(target, "sh", "-c", script, timeout=timeout)
        return result.stdout + result.stderr

    def _tool(self, client: str, command: str, timeout: float,
              fresh: bool = True) -> dict[str, str]:
        """Run ``command`` in the client pod between two reads of its TCP counters."""
        sysctls = ""
        if fresh:
            sysctls = "sysctl -q -w " + " ".join(shlex.quote(x) for x in FRESH_SYSCTLS) + \
                " >/dev/null 2>&1 || echo @@sysctl-failed\n"
        script = (f"{sysctls}echo @@before; cat /proc/net/snmp /proc/net/netstat\n"
                  f"echo @@out; {command} 2>&1\necho @@after; cat /proc/net/snmp "
                  "/proc/net/netstat\n")
        parts = split_sections(self._sh(client, script, timeout))
        if "sysctl-failed" in parts:
            self.warn("could not set the client's sysctls: " + ", ".join(FRESH_SYSCTLS))
        return parts

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
            self.progress.write(f"kubenet bench: warning: {text}")

    def wrk_argv(self, kind: str, url: str, seconds: float) -> str:
        s = self.s
        argv = ["wrk", f"-t{s.threads}", f"-c{s.connections}", f"-d{seconds:.0f}s", "--latency",
                "--timeout", "5s"]
        if kind == "close":
            argv += ["-H", "Connection: close"]
        return shlex.join([*argv, url])

    def iperf_argv(self, host: str) -> str:
        s = self.s
        argv = ["iperf3", "-c", host, "-p", str(IPERF_PORT), "-t", str(s.bulk_s), "-J",
                "--connect-timeout", "3000"]
        if s.bulk_omit_s:
            argv += ["-O", str(s.bulk_omit_s)]
        return shlex.join(argv)

    def measure(self, mode: str, path: str, kind: str, rep: int) -> Run:
        """One run from a fresh client pod, with conntrack flushed on both nodes. A
        new-connection run with too few connections for a latency point is run again,
        longer (and later runs of the same kind start with that duration)."""
        key = (mode, path, kind)
        base = {"close": self.s.close_s, "keepalive": self.s.keepalive_s}.get(kind, 0.0)
        seconds = self._seconds.get(key, base)
        for attempt in range(2):
            client = self.new_client()
            try:
                self.flush_conntrack()
                if kind == "bulk":
                    return self._bulk(client, mode, path, rep)
                run = self._http(client, mode, path, kind, rep, seconds)
            finally:
                self.delete_client(client)
            if kind != "close" or run.requests >= self.s.min_connections or attempt:
                return run
            seconds = min(30.0, max(seconds + 1, seconds * 1.3 * self.s.min_connections
                                    / max(run.requests, 1)))
            self._seconds[key] = seconds
            self.progress.note(f"{run.requests} connections < {self.s.min_connections}: "
                               f"again for {seconds:.0f}s")
        return run

    def _http(self, client: str, mode: str, path: str, kind: str, rep: int,
              seconds: float) -> Run:
        url = self.targets[f"http.{path}"]
        command = self.wrk_argv(kind, url, seconds)
        parts = self._tool(client, command, timeout=seconds + 60)
        wrk = parse_wrk(parts.get("out", ""))
        before = parse_proc_net(parts.get("before", ""))
        after = parse_proc_net(parts.get("after", ""))
        return Run(mode=mode, path=path, kind=kind, rep=rep, value=wrk.requests_per_s,
                   p50_ms=wrk.p50_ms, p99_ms=wrk.p99_ms, requests=wrk.requests,
                   errors=wrk.error_count,
                   active_opens=counter_delta(before, after, "Tcp:ActiveOpens"),
                   syn_retrans=counter_delta(before, after, "TcpExt:TCPSynRetrans"),
                   seconds=wrk.duration_s, argv=command)

    def _bulk(self, client: str, mode: str, path: str, rep: int) -> Run:
        command = self.iperf_argv(self.targets[f"iperf.{path}"])
        for attempt in range(3):
            parts = self._tool(client, command, timeout=self.s.bulk_s + 60)
            try:
                result = parse_iperf3(parts.get("out", ""))
                break
            except ValueError as err:
                if "busy" not in str(err) or attempt == 2:
                    raise
                time.sleep(1.0)  # the server still ends the previous test
        before = parse_proc_net(parts.get("before", ""))
        after = parse_proc_net(parts.get("after", ""))
        return Run(mode=mode, path=path, kind="bulk", rep=rep, value=result.gbit_per_s,
                   retransmits=result.retransmits, seconds=result.seconds,
                   active_opens=counter_delta(before, after, "Tcp:ActiveOpens"),
                   syn_retrans=counter_delta(before, after, "TcpExt:TCPSynRetrans"),
                   argv=command)

    def measure_modes(self) -> None:
        for mode in MODES:
            self.set_mode(mode)
            for rep in range(self.s.reps):
                order = ("direct", "service") if rep % 2 == 0 else ("service", "direct")
                for kind in KINDS:
                    for path in order:
                        self.progress.note(f"{mode} {rep + 1}/{self.s.reps} {kind} {path}")
                        run = self.measure(mode, path, kind, rep)
                        self.runs.append(run)
                        unit = "Gbit/s" if kind == "bulk" else "req/s"
                        syn = f", SYN retrans {run.syn_pct:.1f}%" if kind != "bulk" else ""
                        self.progress.step(f"{mode} {kind} {path}: {run.value:,.2f} {unit}{syn}")

    # -- the lab itself -----------------------------------------------------------------
    def measure_lab(self) -> None:
        """A warm trace (one cold one first) and the lab's diagram, in this lab."""
        self.set_mode("iptables")
        self.lab.trace("scale-client", "bench-http:80")
        for _ in range(self.s.trace_runs):
            start = time.perf_counter()
            trace = self.lab.trace("scale-client", "bench-http:80")
            self.trace_samples.append(time.perf_counter() - start)
            if not trace.answered:
                self.warn("a trace to bench-http got no answer")
        self.progress.step(f"trace {statistics.median(self.trace_samples):.3f}s")
        for _ in range(self.s.draw_runs):
            start = time.perf_counter()
            self.lab.draw().svg()
            self.draw_samples.append(time.perf_counter() - start)
        self.progress.step(f"diagram {statistics.median(self.draw_samples):.3f}s")

    def measure_pods(self) -> None:
        """``n`` pods per node (a light server: ``nc -lk``) in a lab of their own: the time
        from apply to all Ready, and from delete to all gone."""
        from .lab import Lab

        for per_node in self.s.pods_per_node:
            self.progress.note(f"{per_node} pods per node")
            with Lab("empty", name=f"{self.name}-pods") as lab:
                docs = [simple_pod(f"light-{node}-{i}", "light", node, "netcat",
                                   ["nc", "-lk", "8080"])
                        for node in ("node1", "node2") for i in range(per_node)]
                start = time.perf_counter()
                lab.apply("---\n".join(docs))
                lab.wait(timeout=300)
                ready_s = time.perf_counter() - start
                ready = sum(1 for p in lab.pods()
                            if p["metadata"]["name"].startswith("light-") and
                            p["status"].get("phase") == "Running")
                start = time.perf_counter()
                lab.delete("-f", "---\n".join(docs))
                while any(p["metadata"]["name"].startswith("light-") for p in lab.pods()):
                    time.sleep(0.05)
                gone_s = time.perf_counter() - start
            self.pod_runs.append({"pods_per_node": per_node, "pods": 2 * per_node,
                                  "running": ready, "ready_s": ready_s, "delete_s": gone_s})
            self.progress.step(f"{per_node} pods per node: Ready in {ready_s:.2f}s")

    # -- scale ---------------------------------------------------------------------------
    def measure_scale(self) -> None:
        run = ScaleRun(self.lab, rounds=self.s.scale_rounds, note=self.progress.note,
                       step=self.progress.step)
        for mode in ("iptables", "nftables"):
            run.measure(mode, self.s.scale_sizes)
        self.scale_points = run.points
        self.set_mode("iptables")

    # -- the port reuse experiment ----------------------------------------------------
    def _server_counters(self) -> dict[str, int]:
        return parse_proc_net(self._sh("bench-nginx", "cat /proc/net/snmp /proc/net/netstat",
                                       30))

    def _src_nat_count(self, destination: str) -> int:
        """Connections to ``destination`` in node1's conntrack table whose source port NAT
        rewrote (``--src-nat``: the reply goes to another port than the client chose)."""
        out = self._sh("node1", f"conntrack -L -p tcp -d {destination} --src-nat 2>/dev/null "
                       "| wc -l", 60)
        try:
            return int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def _server_time_wait(self) -> int:
        out = self._sh("bench-nginx", "ss -Htan state time-wait | wc -l", 60)
        try:
            return int(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    def reuse_series(self) -> list[tuple[str, list[str], bool]]:
        """(name, paths in order, conntrack flushed before every run)."""
        pairs = self.s.reuse_pairs
        return [("same-path", ["service"] * self.s.reuse_same_path_runs, False),
                ("direct-first", ["direct", "service"] * pairs, False),
                ("service-first", ["service", "direct"] * pairs, False),
                ("flushed", ["direct", "service"] * pairs, True)]

    def reuse_experiment(self) -> None:
        """Shared state on purpose, as a naive benchmark has it: one client pod for a whole
        series, conntrack never flushed between its runs, and the client's port range
        narrowed to 1,024 ports so that every run wraps it (the default 28,232 ports wrap
        the same way after some 14,000 connections: connect() takes every other port).
        ``same-path``: the cluster IP only. ``direct-first`` and ``service-first``: the
        two paths in turn, in either order. ``flushed``: in turn, with conntrack flushed on
        both nodes before every run (the client pod still the same). iptables mode."""
        self.set_mode("iptables")
        low, high = REUSE_PORT_RANGE
        for name, paths, flush_each in self.reuse_series():
            self.flush_conntrack()
            client = self.new_client()
            try:
                narrowed = self._sh(client, "sysctl -q -w 'net.ipv4.ip_local_port_range="
                                    f"{low} {high}' net.ipv4.tcp_max_tw_buckets=0 && "
                                    "echo narrowed", 30)
                if "narrowed" not in narrowed:
                    self.warn(f"could not narrow the client's port range: {narrowed.strip()}")
                for i, path in enumerate(paths):
                    self.progress.note(f"port reuse {name} {path}")
                    if flush_each and i:
                        self.flush_conntrack()
                    tw_before = self._server_time_wait()
                    s0 = self._server_counters()
                    command = self.wrk_argv("close", self.targets[f"http.{path}"],
                                            self.s.reuse_s)
                    parts = self._tool(client, command, timeout=self.s.reuse_s + 60,
                                       fresh=False)
                    s1 = self._server_counters()
                    wrk = parse_wrk(parts.get("out", ""))
                    before = parse_proc_net(parts.get("before", ""))
                    after = parse_proc_net(parts.get("after", ""))
                    record = {
                        "series": name, "index": i, "path": path,
                        "requests_per_s": wrk.requests_per_s, "requests": wrk.requests,
                        "p50_ms": wrk.p50_ms, "p99_ms": wrk.p99_ms,
                        "active_opens": counter_delta(before, after, "Tcp:ActiveOpens"),
                        "syn_retrans": counter_delta(before, after, "TcpExt:TCPSynRetrans"),
                        "paws_timewait": counter_delta(s0, s1, "TcpExt:PAWSTimewait"),
                        "server_time_wait_before": tw_before,
                        "flushed": flush_each, "argv": command,
                        "src_nat_direct": self._src_nat_count(self.targets["ip.direct"]),
                        "src_nat_service": self._src_nat_count(self.targets["ip.service"]),
                    }
                    self.reuse_runs.append(record)
                    pct = syn_retrans_pct(record["syn_retrans"], record["active_opens"])
                    self.progress.step(f"reuse {name} {path}: {wrk.requests_per_s:,.0f} req/s, "
                                       f"SYN retrans {pct:.1f}%")
            finally:
                self.delete_client(client)
        self.flush_conntrack()

    def settings_record(self) -> dict[str, Any]:
        s = self.s
        state = ("fresh client pod (new IP) per run; conntrack -F on node1 and node2 before "
                 "each run; client sysctls " + ", ".join(FRESH_SYSCTLS))
        method = {"reps": s.reps, "order": "direct and service alternate, ABBA",
                  "client": "pod on node1", "server": "pod on node2", "state": state}
        return {
            "method": method,
            "close": {"tool": "wrk", "argv": self.wrk_argv("close", "URL", s.close_s),
                      "server": "nginx 1 process", "min_connections": s.min_connections},
            "keepalive": {"tool": "wrk", "argv": self.wrk_argv("keepalive", "URL",
                                                               s.keepalive_s),
                          "server": "nginx 1 process"},
            "bulk": {"tool": "iperf3", "argv": self.iperf_argv("HOST"),
                     "server": "iperf3 -s"},
            "reuse": {"tool": "wrk", "argv": self.wrk_argv("close", "URL", s.reuse_s),
                      "state": "one client pod per series, conntrack flushed only before "
                               "the series, client ip_local_port_range "
                               f"{REUSE_PORT_RANGE[0]}-{REUSE_PORT_RANGE[1]}",
                      "mode": "iptables"},
        }


# ----------------------------------------------------------------------------------
# Plots and files.
# ----------------------------------------------------------------------------------

PATH_COLORS = {"direct": "#4c72b0", "iptables": "#55a868", "nftables": "#8172b2",
               "userspace": "#c44e52"}


def write_plots(figs: Sequence[dict[str, Any]], reuse_runs: Sequence[dict[str, Any]],
                out: Path, title: str) -> list[Path]:
    """datapath, latency and port_reuse, each as PNG and SVG. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {f["name"]: f for f in figs}
    cols = ("direct", *MODES)
    written: list[Path] = []

    def save(fig: Any, stem: str) -> None:
        for ext in ("png", "svg"):
            path = out / f"{stem}.{ext}"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    def bars(ax: Any, names: list[str], ylabel: str, heading: str,
             ratios: list[str | None] | None = None) -> None:
        for i, (col, name) in enumerate(zip(cols, names, strict=True)):
            f = by.get(name)
            if not f or f["value"] is None:
                ax.bar(i, 0, color="none", edgecolor=PATH_COLORS[col], hatch="//")
                ax.text(i, 0, "not\nmeasured", ha="center", va="bottom", fontsize=8,
                        color="#666666")
                continue
            err = [[f["value"] - f.get("min", f["value"])], [f.get("max", f["value"]) -
                                                              f["value"]]]
            ax.bar(i, f["value"], color=PATH_COLORS[col], yerr=err, capsize=4)
            label = _fmt(f["value"], f["unit"])
            if ratios and ratios[i] and (r := by.get(ratios[i])) and r["value"] is not None:
                label += f"\n{r['value']:.2f}x"
            ax.annotate(label, (i, f.get("max", f["value"])), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(cols)), ["direct", "iptables", "nftables", "userspace"])
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        ax.margins(y=0.25)

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, kind in zip(axes, KINDS, strict=True):
        metric = "throughput" if kind == "bulk" else "requests_per_s"
        names = [f"{kind}.{metric}.{c}" for c in cols]
        ratios = [None, *(f"{kind}.{metric}.ratio.{m}" for m in MODES)]
        bars(ax, names, "Gbit/s" if kind == "bulk" else "requests/s", KIND_TITLES[kind], ratios)
    fig.suptitle(f"{title}: direct to the pod vs through the cluster IP "
                 "(median, bars: lowest-highest run; label: ratio to direct)", fontsize=10)
    save(fig, "datapath")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, kind in zip(axes, ("close", "keepalive"), strict=True):
        width = 0.38
        for j, p in enumerate(("50", "99")):
            for i, col in enumerate(cols):
                f = by.get(f"{kind}.latency_p{p}.{col}")
                if not f or f["value"] is None:
                    continue
                ax.bar(i + (j - 0.5) * width, f["value"], width, color=PATH_COLORS[col],
                       alpha=1.0 if p == "50" else 0.55,
                       yerr=[[f["value"] - f["min"]], [f["max"] - f["value"]]], capsize=3)
                ax.annotate(f"p{p}\n{_fmt(f['value'], 'ms')}",
                            (i + (j - 0.5) * width, f["max"]), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(cols)), ["direct", "iptables", "nftables", "userspace"])
        ax.set_ylabel("ms")
        ax.set_title(f"latency, {KIND_TITLES[kind]} (wrk: request to response)", fontsize=10)
        ax.margins(y=0.25)
    fig.suptitle(f"{title}: latency p50 (solid) and p99 (light)", fontsize=10)
    save(fig, "latency")

    if reuse_runs:
        series_names = _series_order(reuse_runs)
        ncols = 2 if len(series_names) > 1 else 1
        nrows = (len(series_names) + ncols - 1) // ncols
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows),
                                 squeeze=False)
        for ax in axes.flat[len(series_names):]:
            ax.set_visible(False)
        top = max(5.0, *(syn_retrans_pct(r["syn_retrans"], r["active_opens"]) * 1.3
                         for r in reuse_runs))
        for ax, series in zip(axes.flat, series_names, strict=False):
            chosen = [r for r in reuse_runs if r["series"] == series]
            xs = list(range(1, len(chosen) + 1))
            colors = [PATH_COLORS["direct" if r["path"] == "direct" else "iptables"]
                      for r in chosen]
            ax.bar(xs, [r["requests_per_s"] for r in chosen], color=colors)
            ax.set_xticks(xs, ["direct" if r["path"] == "direct" else "cluster\nIP"
                               for r in chosen], fontsize=8)
            ax.set_ylabel("requests/s (bars)")
            ax2 = ax.twinx()
            ax2.plot(xs, [syn_retrans_pct(r["syn_retrans"], r["active_opens"])
                          for r in chosen], "ko-")
            ax2.set_ylabel("SYN retransmits, % (line)")
            ax2.set_ylim(0, top)
            flushed = any(r.get("flushed") for r in chosen)
            ax.set_title(series + (": conntrack -F before each run" if flushed else
                                   ": conntrack never flushed"), fontsize=10)
        fig.suptitle(f"{title}: port reuse from one client address, new connection per "
                     "request (runs in order)", fontsize=10)
        fig.tight_layout()
        save(fig, "port_reuse")
    return written


def _doc_section(heading: str) -> str:
    """A section of this module's docstring, without its underline."""
    lines = (__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 2
    end = next((i for i in range(start, len(lines) - 1)
                if lines[i + 1].startswith("---") and lines[i]), len(lines))
    return "\n".join(lines[start:end]).strip().replace("``", "`")


def _scale_method(doc: str) -> str:
    """The scale module's docstring from its second paragraph to its last."""
    paras = doc.strip().split("\n\n")
    return "\n\n".join(paras[1:-1]).replace("``", "`").replace(":meth:", "").replace(
        ":data:", "")


def lab_figures(trace_samples: Sequence[float], draw_samples: Sequence[float],
                pod_runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lab's own speed: a warm trace, a diagram, pods per node."""
    out = []
    if trace_samples:
        out.append(_figure("lab.trace_s", Stat.of(trace_samples), "s",
                           {"call": "lab.trace('scale-client', 'bench-http:80')",
                            "warm": "after one trace that is not counted"}))
    if draw_samples:
        out.append(_figure("lab.draw_s", Stat.of(draw_samples), "s",
                           {"call": "lab.draw().svg()"}))
    for r in pod_runs:
        settings = {"pods_per_node": r["pods_per_node"], "nodes": 2,
                    "server": "nc -lk 8080 in each pod", "lab": "its own, empty"}
        out.append(_figure(f"lab.pods_{r['pods_per_node']}_per_node.ready_s",
                           Stat.of([r["ready_s"]]), "s", settings, running=r["running"],
                           delete_s=_round(r["delete_s"])))
    return out


def write_results(out: Path, lines: Sequence[dict[str, Any]], table: str, command: str,
                  mach: dict[str, Any], elapsed: float, reuse_runs: Sequence[dict[str, Any]],
                  runs: Sequence[Run], scale_points: Sequence[Point] = (),
                  pod_runs: Sequence[dict[str, Any]] = ()) -> None:
    """results.jsonl (the JSON Lines), runs.json (every run), machine.json, README.md."""
    from . import scale

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "runs.json").write_text(json.dumps({"runs": [asdict(r) for r in runs],
                                               "reuse": list(reuse_runs),
                                               "scale": [asdict(p) for p in scale_points],
                                               "pods": list(pod_runs)}, indent=1) + "\n")
    (out / "machine.json").write_text(json.dumps(mach, indent=1) + "\n")
    tools = ", ".join(f"{v}" for v in mach.get("tools", {}).values() if v)
    readme = [
        "# kubenet bench results", "",
        f"Command: `{command}` ({elapsed:.0f} s, {time.strftime('%Y-%m-%d', time.gmtime())}).",
        "",
        f"Machine: {mach.get('cpu')}, {mach.get('cores')} cores"
        + (" (virtual machine)" if mach.get("virtualized") else "")
        + f", {mach.get('memory_gib')} GiB; kernel {mach.get('kernel')}; {mach.get('os')}; "
        f"load average {mach.get('loadavg_start')} at the start, {mach.get('loadavg_end')} "
        f"at the end; {mach.get('tier')} tier.", "",
        f"Tools: {tools}.", "",
        "```", table, "```", "",
        "Files: `results.jsonl` (what `kubenet bench --json` printed: one figure a line, the "
        "summary last), `runs.json` (every run), `machine.json`, and the plots "
        "`datapath`, `latency`, `port_reuse`, `scale_sync` and `scale_latency` (PNG and "
        "SVG).", "",
        "## Method", "", _doc_section("Method, for a shared 2-core machine"), "",
        "## Why a connection-per-request benchmark from one client address hurts the DNAT "
        "path", "", _doc_section("Why a connection-per-request benchmark"), "",
        "(From the docstring of `kubenet/bench.py`.)", "",
        "## Scale", "", _scale_method(scale.__doc__ or ""), "",
        "(From the docstring of `kubenet/scale.py`.)", "",
    ]
    (out / "README.md").write_text("\n".join(readme))


# ----------------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------------

def add_arguments(parser: Any) -> None:
    parser.add_argument("--json", action="store_true",
                        help="JSON Lines on stdout: one object per figure, the summary last")
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter runs (about a minute)")
    parser.add_argument("--out", metavar="DIR",
                        help="where the plots and results go (default: bench/results, or "
                             "bench/results/quick with --quick)")
    parser.add_argument("--reps", type=int, help="repetitions of each run (default 6, 2 "
                        "with --quick)")
    parser.add_argument("--no-plots", action="store_true", help="write no plots")


def run_cli(args: Any) -> int:
    from . import tiers
    from .errors import BadRequest, ToolMissing

    started = time.monotonic()
    tier = tiers.require_tier()
    missing = [t for t in BENCH_TOOLS if shutil.which(t) is None]
    if missing:
        pkgs = " ".join(sorted({BENCH_TOOLS[t] for t in missing}))
        raise ToolMissing(f"error: kubenet bench needs {', '.join(missing)}: "
                          f"apt-get install {pkgs}")
    if args.reps is not None and args.reps < 1:
        raise BadRequest("error: --reps must be at least 1")
    settings = Settings.for_run(args.quick, args.reps)
    out = Path(args.out) if args.out else default_out(args.quick)
    mach = machine()
    mach["tier"] = tier
    mach["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    bench = Bench(settings)
    progress = Progress(bench.steps())
    bench.progress = progress
    try:
        bench.measure_up()
        bench.open()
        bench.measure_modes()
        bench.measure_lab()
        bench.measure_scale()
        bench.reuse_experiment()
        bench.close()
        bench.measure_pods()
    finally:
        bench.close()
        progress.close()
    mach["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    elapsed = time.monotonic() - started
    command = "kubenet bench" + (" --quick" if args.quick else "") + \
        (f" --reps {args.reps}" if args.reps else "")
    figs = [*figures(bench.runs, bench.settings_record(), bench.up_samples, bench.reuse_runs),
            *lab_figures(bench.trace_samples, bench.draw_samples, bench.pod_runs),
            *scale_figures(bench.scale_points)]
    summ = summary(bench.runs, bench.up_samples, bench.trace_samples, bench.scale_points,
                   quick=settings.quick, warnings=bench.warnings,
                   elapsed_s=round(elapsed, 1), lab=bench.name, out=str(out),
                   machine={k: mach.get(k) for k in ("cpu", "cores", "kernel", "os",
                                                     "virtualized", "tier")})
    table = format_table(figs, summ)
    if bench.scale_points:
        table += "\n\nScale: node1's kube-proxy with N more Services, 2 endpoints each; TCP " \
            "connect from a pod on node1, median\n" + format_scale_table(bench.scale_points)
    lines = [*figs, summ]
    write_results(out, lines, table, command, mach, elapsed, bench.reuse_runs, bench.runs,
                  bench.scale_points, bench.pod_runs)
    if args.quick and not args.out:
        (out / ".gitignore").write_text("# quick runs are not committed\n*\n")
    if not args.no_plots:
        try:
            write_plots(figs, bench.reuse_runs, out, command)
            if bench.scale_points:
                write_scale_plots(bench.scale_points, out, command)
        except ImportError:
            print("kubenet bench: matplotlib is not installed; no plots", file=sys.stderr)
    if args.json:
        for x in lines:
            print(json.dumps(x), flush=True)
    else:
        print(table)
    print(f"kubenet bench: {elapsed:.0f}s; results and plots in {out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="kubenet bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------------
# Reading committed results (notebook 08).
# ----------------------------------------------------------------------------------

RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"


@dataclass
class Results:
    """A finished run, read back from its ``results.jsonl`` and ``machine.json``."""

    figures: list[dict[str, Any]]
    summary: dict[str, Any]
    machine: dict[str, Any]
    directory: Path

    @classmethod
    def load(cls, directory: Path | str = RESULTS_DIR) -> Results:
        directory = Path(directory)
        lines = [json.loads(line) for line in
                 (directory / "results.jsonl").read_text().splitlines() if line.strip()]
        machine = json.loads((directory / "machine.json").read_text())
        return cls(lines[:-1], lines[-1], machine, directory)

    def machine_line(self) -> str:
        m = self.machine
        virtual = " (virtual machine)" if m.get("virtualized") else ""
        return (f"{m.get('cpu')}, {m.get('cores')} cores{virtual}, {m.get('memory_gib')} GiB, "
                f"kernel {m.get('kernel')}, {m.get('os')}, {m.get('tier')} tier")

    def ratio(self, mode: str, kind: str = "") -> float | None:
        """``mode`` over direct: requests/s with a new connection per request by default,
        ``kind="keepalive"`` or ``"bulk"`` for the others."""
        return self.summary.get(f"ratio_{mode}_direct" + (f"_{kind}" if kind else ""))

    def scale(self) -> Any:
        """The scale points of this run (a :class:`kubenet.scale.Scale`), from runs.json."""
        from .scale import Scale, points_from

        runs = json.loads((self.directory / "runs.json").read_text())
        return Scale(points_from(runs.get("scale", [])))

    def plot(self, name: str) -> Any:
        """A saved plot (``datapath``, ``latency``, ``port_reuse``, ``scale_sync``,
        ``scale_latency``), shown inline."""
        from IPython.display import SVG

        return SVG(filename=str(self.directory / f"{name}.svg"))

    def __repr__(self) -> str:
        return format_table(self.figures, self.summary)
