"""What kube-proxy's rules cost as a cluster grows: 100 to 10,000 Services.

kube-proxy's iptables mode matches a packet to a Service by walking ``KUBE-SERVICES``
rule by rule, one rule per service port; its nftables mode looks the destination up in
one verdict map (``service-ips``). So the first packet of a connection to the Service
matched *last* should slow down with the number of Services in iptables mode and not in
nftables mode, and rewriting the whole ruleset should take longer as it grows in both.

How it is measured, in a lab of its own or in the benchmark's:

- Node1's kube-proxy is handed N extra Services, as if the API server held them
  (:meth:`kubenet.proxy.Proxy.resync`): ``scale/svc-00000`` ... each with a cluster IP
  from 10.4.0.0/16 (a /20 like the lab's service range holds only 4,094 of them),
  port 80, and an EndpointSlice of **two** endpoints, the two server pods on node2
  (nginx on 8080). kube-proxy renders and applies its full ruleset, as on any full sync.
- **Sync time** is the wall time of the tool that hands the rules to the kernel on that
  sync: ``iptables-restore`` (iptables mode) or ``nft -f`` (nftables mode), on the same
  kernel with the same input kube-proxy would give it. Each size is synced onto the
  previous size's ruleset, as when a cluster grows; kubenet's own rendering (Python) is
  reported beside it, not in it.
- **Connect latency**: a client pod on node1 opens TCP connections (connect() only, closed
  with a reset so no TIME_WAIT is left) in turn to the server pod's IP (``direct``), to
  the first synthetic Service in kube-proxy's order (``first``: its rule comes right after
  the lab's own few Services) and to the last one (``last``: N rules later in iptables
  mode). Interleaving the three makes a neighbour's load hit them alike. Only the SYN
  walks the nat rules (conntrack takes over from there), so the extra time is the cost of
  the rule walk. ``rounds`` connections to each, the median and p99 in microseconds;
  conntrack is flushed on both nodes before each size.
- **Growth**: the median connect latency to ``last`` at the largest size over the same at
  the smallest, per mode. Expected (KEP-3866): iptables grows with N, nftables stays flat.

The pure part (:func:`synthetic`, :func:`points_from`, :func:`scale_figures`,
:func:`scale_summary`, :func:`format_scale_table`) is unit-tested; :class:`ScaleRun`
drives a lab; :func:`measure` is the notebook's small live run.
"""

from __future__ import annotations

import ipaddress
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCALE_CIDR", "SIZES", "QUICK_SIZES", "SCALE_MODES", "NAMESPACE", "synthetic",
           "cluster_ip", "Point", "points_from", "scale_figures", "scale_summary",
           "format_scale_table", "write_scale_plots", "ScaleRun", "Scale", "measure",
           "prepare", "nginx_pod", "simple_pod"]

SCALE_CIDR = "10.4.0.0/16"  # outside the pod range 10.0.0.0/14 and the lab's 10.3.240.0/20
NAMESPACE = "scale"
SIZES = (100, 1000, 5000, 10000)
QUICK_SIZES = (100, 1000)
SCALE_MODES = ("iptables", "nftables")
SERVICE_PORT, SERVER_PORT = 80, 8080
TARGETS = ("direct", "first", "last")

# nginx as a pod's program on the host (no images in the lab): its files live in the pod's
# working directory. master_process off: one process that never switches user, so it runs
# the same in the root tier and the rootless one (where "root" is a mapped user and nginx
# could neither setgid to nobody nor chown its directories to it).
NGINX_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {app}}}
spec:
  nodeName: {node}
  containers:
  - name: nginx
    image: nginx
    command: ["/bin/sh", "-c"]
    args:
    - |
      mkdir -p www tmp && echo ok > www/index.html
      cat > nginx.conf <<CONF
      daemon off;
      master_process off;
      user $(id -un) $(id -gn);
      worker_processes 1;
      pid $PWD/nginx.pid;
      error_log stderr warn;
      events {{ worker_connections 1000; }}
      http {{
        access_log off;
        client_body_temp_path $PWD/tmp/body;
        proxy_temp_path $PWD/tmp/proxy;
        fastcgi_temp_path $PWD/tmp/fastcgi;
        uwsgi_temp_path $PWD/tmp/uwsgi;
        scgi_temp_path $PWD/tmp/scgi;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
        server {{ listen {port} backlog=4096; root $PWD/www; }}
      }}
      CONF
      exec nginx -e stderr -p "$PWD" -c "$PWD/nginx.conf"
    ports:
    - {{name: http, containerPort: {port}}}
"""

SCALE_PODS = ("scale-server-1", "scale-server-2")
SCALE_CLIENT = "scale-client"
def simple_pod(name: str, app: str, node: str, image: str, command: list[str]) -> str:
    """A Pod manifest with one container running ``command`` on ``node``. ``image`` is
    only recorded: the lab runs the host's own programs."""
    import yaml

    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": app, "image": image,
                                                     "command": list(command)}]},
    }, sort_keys=False)


def nginx_pod(name: str, app: str, node: str = "node2", port: int = SERVER_PORT) -> str:
    """A Pod manifest running nginx (one process) on ``port`` of ``node``."""
    return NGINX_POD.format(name=name, app=app, node=node, port=port)


def scale_manifest() -> str:
    """The two servers on node2 (no Service selects them) and the client on node1."""
    docs = [nginx_pod(name, "scale-server") for name in SCALE_PODS]
    docs.append(simple_pod(SCALE_CLIENT, "scale-client", "node1", "python",
                           ["sleep", "infinity"]))
    return "---\n".join(docs)


# ----------------------------------------------------------------------------------
# Pure part.
# ----------------------------------------------------------------------------------

def cluster_ip(i: int, cidr: str = SCALE_CIDR) -> str:
    """The cluster IP of the ``i``-th synthetic Service: the ``i + 1``-th address."""
    net = ipaddress.ip_network(cidr)
    if not 0 <= i < net.num_addresses - 2:
        raise ValueError(f"error: {cidr} has no room for service number {i}")
    return str(net.network_address + 1 + i)


def service_name(i: int) -> str:
    return f"svc-{i:05d}"


def synthetic(count: int, endpoints: Sequence[str], *, port: int = SERVICE_PORT,
              target_port: int = SERVER_PORT, cidr: str = SCALE_CIDR,
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``count`` ClusterIP Services in namespace ``scale`` and one EndpointSlice each,
    every slice holding all of ``endpoints`` (ready, on node2). Names sort in creation
    order, so ``svc-00000`` is the first kube-proxy writes and the last one is last."""
    if count < 0:
        raise ValueError("error: the number of services must not be negative")
    services: list[dict[str, Any]] = []
    slices: list[dict[str, Any]] = []
    eps = [{"addresses": [ip], "conditions": {"ready": True, "serving": True,
                                              "terminating": False}, "nodeName": "node2"}
           for ip in endpoints]
    for i in range(count):
        name = service_name(i)
        services.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(i, cidr),
                     "clusterIPs": [cluster_ip(i, cidr)],
                     "ports": [{"name": "http", "port": port, "protocol": "TCP",
                                "targetPort": target_port}]}})
        slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-scale", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": target_port, "protocol": "TCP"}],
            "endpoints": eps})
    return services, slices


def targets(count: int, direct: str, *, port: int = SERVICE_PORT,
            target_port: int = SERVER_PORT) -> dict[str, str]:
    """``direct``, ``first`` and ``last`` as HOST:PORT for the connect probe."""
    return {"direct": f"{direct}:{target_port}", "first": f"{cluster_ip(0)}:{port}",
            "last": f"{cluster_ip(count - 1)}:{port}"}


# Runs in the client pod (any Python 3): connect() to each target in turn, timed around
# the system call alone; SO_LINGER 0 closes with a reset, so no TIME_WAIT is left behind.
CONNECT_PROBE = r"""
import json, socket, struct, sys, time
rounds, timeout = int(sys.argv[1]), float(sys.argv[2])
names = sys.argv[3::2]
addrs = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[4::2]]
samples = {n: [] for n in names}
failures = {n: 0 for n in names}
linger = struct.pack("ii", 1, 0)
for r in range(rounds):
    k = r % len(names)
    for name, addr in zip(names[k:] + names[:k], addrs[k:] + addrs[:k]):
        s = socket.socket()
        s.settimeout(timeout)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        t = time.perf_counter_ns()
        try:
            s.connect(addr)
            samples[name].append((time.perf_counter_ns() - t) / 1000.0)
        except OSError:
            failures[name] += 1
        s.close()
print(json.dumps({"samples": samples, "failures": failures}))
"""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class Point:
    """One size in one mode: the sync, and connect latency to each target."""

    mode: str
    services: int
    sync_s: float | None
    render_s: float | None
    save_s: float | None = None
    connect: dict[str, dict[str, float]] = field(default_factory=dict)
    rounds: int = 0
    transactions: int = 1  # more when this tier could not send the ruleset in one batch


def connect_stats(probe: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The probe's samples -> median and p99 (µs), count and failures per target."""
    out: dict[str, dict[str, float]] = {}
    for name, values in probe["samples"].items():
        fails = probe.get("failures", {}).get(name, 0)
        if not values:
            out[name] = {"median_us": None, "p99_us": None, "n": 0, "failures": fails}
            continue
        out[name] = {"median_us": round(statistics.median(values), 1),
                     "p99_us": round(percentile(values, 99), 1), "n": len(values),
                     "failures": fails}
    return out


def points_from(records: Sequence[dict[str, Any]]) -> list[Point]:
    return [Point(**r) for r in records]


def _settings(p: Point) -> dict[str, Any]:
    return {"mode": p.mode, "services": p.services, "endpoints_per_service": 2,
            "client": "pod on node1", "servers": "2 nginx pods on node2",
            "rounds": p.rounds, "transactions": p.transactions}


def growth(points: Sequence[Point], mode: str, target: str = "last") -> float | None:
    """Median connect latency to ``target`` at the largest size over the smallest."""
    chosen = sorted((p for p in points if p.mode == mode and
                     p.connect.get(target, {}).get("median_us")), key=lambda p: p.services)
    if len(chosen) < 2:
        return None
    return round(chosen[-1].connect[target]["median_us"] /
                 chosen[0].connect[target]["median_us"], 3)


def scale_figures(points: Sequence[Point]) -> list[dict[str, Any]]:
    """One JSON Lines object per figure, like the benchmark's others."""
    figs: list[dict[str, Any]] = []
    for p in points:
        base = f"scale.{p.mode}.{p.services}"
        settings = _settings(p)
        tool = "iptables-restore" if p.mode == "iptables" else "nft -f"
        figs.append({"name": f"{base}.sync_s", "value": p.sync_s, "unit": "s",
                     "settings": {**settings, "what": f"{tool}, full sync"}})
        figs.append({"name": f"{base}.render_s", "value": p.render_s, "unit": "s",
                     "settings": {**settings, "what": "kubenet's renderer (Python)"}})
        for target in TARGETS:
            st = p.connect.get(target)
            if not st:
                continue
            figs.append({"name": f"{base}.connect_{target}_us", "value": st["median_us"],
                         "unit": "us", "p99": st["p99_us"], "n": st["n"],
                         "failures": st["failures"],
                         "settings": {**settings, "what": f"TCP connect to {target}"}})
    for mode in sorted({p.mode for p in points}):
        sizes = sorted(p.services for p in points if p.mode == mode)
        figs.append({"name": f"scale.{mode}.growth", "value": growth(points, mode),
                     "unit": "x", "settings": {"mode": mode, "from": sizes[0],
                                               "to": sizes[-1], "target": "last"}})
    return figs


def _at(points: Sequence[Point], mode: str, services: int) -> Point | None:
    return next((p for p in points if p.mode == mode and p.services == services), None)


def scale_summary(points: Sequence[Point]) -> dict[str, Any]:
    """The summary keys of the scale level: growth and sync at 10,000 services."""
    out: dict[str, Any] = {}
    for mode in SCALE_MODES:
        at100, at10k = _at(points, mode, 100), _at(points, mode, 10000)
        ok = at100 and at10k and at100.connect.get("last") and at10k.connect.get("last")
        out[f"growth_{mode}_10k"] = round(at10k.connect["last"]["median_us"] /
                                          at100.connect["last"]["median_us"], 3) if ok else None
        out[f"sync_{mode}_10k_s"] = at10k.sync_s if at10k else None
    return out


def _us(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def format_scale_table(points: Sequence[Point]) -> str:
    """A table a reader can scan: one row per mode and size."""
    head = ["mode", "services", "sync s", "render s", "direct us", "first us", "last us",
            "last p99 us", "last/first"]
    rows = [head]
    for p in sorted(points, key=lambda p: (SCALE_MODES.index(p.mode)
                                           if p.mode in SCALE_MODES else 9, p.services)):
        c = p.connect
        med = {t: c.get(t, {}).get("median_us") for t in TARGETS}
        ratio = f"{med['last'] / med['first']:.2f}x" if med["last"] and med["first"] else "-"
        rows.append([p.mode, f"{p.services:,}", _s(p.sync_s), _s(p.render_s),
                     _us(med["direct"]), _us(med["first"]), _us(med["last"]),
                     _us(c.get("last", {}).get("p99_us")), ratio])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    split = [p for p in points if p.transactions > 1]
    if split:
        most = max(split, key=lambda p: p.transactions)
        lines.append(f"not atomic here: from {min(p.services for p in split):,} services the "
                     f"rules went to the kernel in parts (up to {most.transactions} "
                     "transactions), as this tier cannot send them in one netlink message")
    for mode in SCALE_MODES:
        g = growth(points, mode)
        if g is not None:
            lines.append(f"{mode}: connect to the last-matched service grows {g:.2f}x "
                         "from the smallest size to the largest")
    return "\n".join(lines)


MODE_COLORS = {"iptables": "#55a868", "nftables": "#8172b2", "direct": "#4c72b0"}


def write_scale_plots(points: Sequence[Point], out: Path, title: str) -> list[Path]:
    """scale_sync and scale_latency, each as PNG and SVG. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    modes = [m for m in SCALE_MODES if any(p.mode == m for p in points)]

    def save(fig: Any, stem: str) -> None:
        for ext in ("png", "svg"):
            path = out / f"{stem}.{ext}"
            fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Date": None}
                        if ext == "svg" else None)
            written.append(path)
        plt.close(fig)

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for mode in modes:
        chosen = sorted((p for p in points if p.mode == mode and p.sync_s is not None),
                        key=lambda p: p.services)
        tool = "iptables-restore" if mode == "iptables" else "nft -f"
        ax.plot([p.services for p in chosen], [p.sync_s for p in chosen], "o-",
                color=MODE_COLORS[mode], label=f"{mode} ({tool})")
        above = mode == "iptables"  # one mode's labels above its points, the other's below
        for p in chosen:
            ax.annotate(_s(p.sync_s) + " s", (p.services, p.sync_s),
                        xytext=(-6, 6) if above else (6, -12), ha="right" if above else "left",
                        textcoords="offset points", fontsize=7, color=MODE_COLORS[mode])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("services (2 endpoints each)")
    ax.set_ylabel("full sync, seconds")
    ax.margins(x=0.15, y=0.15)
    ax.set_title(f"{title}: time to write the whole ruleset", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "scale_sync")

    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), sharey=True,
                             squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        chosen = sorted((p for p in points if p.mode == mode), key=lambda p: p.services)
        xs = [p.services for p in chosen]
        for target, style in (("direct", ":"), ("first", "--"), ("last", "-")):
            ys = [p.connect.get(target, {}).get("median_us") for p in chosen]
            color = MODE_COLORS["direct"] if target == "direct" else MODE_COLORS[mode]
            ax.plot(xs, ys, "o" + style, color=color,
                    label={"direct": "pod IP (no Service)", "first": "first-matched service",
                           "last": "last-matched service"}[target])
        ax.set_xscale("log")
        ax.set_xlabel("services (2 endpoints each)")
        ax.set_title(f"{mode} mode", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("TCP connect, median µs")
    axes[0][0].set_ylim(bottom=0)
    fig.suptitle(f"{title}: connect latency from a pod on node1", fontsize=10)
    save(fig, "scale_latency")
    return written


# ----------------------------------------------------------------------------------
# Running part.
# ----------------------------------------------------------------------------------

class ScaleRun:
    """Feeds node1's kube-proxy N Services in a lab that runs :func:`scale_manifest`'s
    pods, and measures each size."""

    def __init__(self, lab: Any, *, rounds: int = 2000, node: str = "node1",
                 note: Callable[[str], None] | None = None,
                 step: Callable[[str], None] | None = None) -> None:
        self.lab, self.rounds, self.node = lab, rounds, node
        self.note = note or (lambda text: None)
        self.step = step or (lambda text: None)
        self.points: list[Point] = []
        pods = {p["metadata"]["name"]: p["status"].get("podIP") for p in lab.pods()}
        missing = [n for n in (*SCALE_PODS, SCALE_CLIENT) if not pods.get(n)]
        if missing:
            raise RuntimeError(f"error: the scale pods are not running: {', '.join(missing)}")
        self.endpoints = [pods[n] for n in SCALE_PODS]

    def probe(self, count: int) -> dict[str, dict[str, float]]:
        goal = targets(count, self.endpoints[0])
        argv = [sys.executable, "-c", CONNECT_PROBE, str(self.rounds), "2"]
        for name in TARGETS:
            argv += [name, goal[name]]
        done = self.lab.exec(SCALE_CLIENT, *argv, timeout=60 + self.rounds * 0.05)
        if done.returncode != 0:
            raise RuntimeError(f"error: the connect probe failed: {done.stderr.strip()}")
        return connect_stats(json.loads(done.stdout))

    def flush_conntrack(self) -> None:
        for node in ("node1", "node2"):
            self.lab.exec(node, "conntrack", "-F")

    def measure(self, mode: str, sizes: Sequence[int]) -> list[Point]:
        """Switch kube-proxy to ``mode``, then each size in turn, smallest first."""
        self.note(f"kube-proxy -> {mode} mode")
        self.lab.set_proxy_mode(mode)
        out: list[Point] = []
        try:
            for n in sizes:
                self.note(f"{mode}: syncing {n:,} services")
                timings = self.lab.extra_services(self.node, n, self.endpoints)
                self.flush_conntrack()
                self.note(f"{mode}: {n:,} services, connecting")
                point = Point(mode=mode, services=n, sync_s=_r(timings.get("apply")),
                              render_s=_r(timings.get("render")), save_s=_r(timings.get("save")),
                              connect=self.probe(n), rounds=self.rounds,
                              transactions=int(timings.get("transactions", 1)))
                out.append(point)
                last = point.connect["last"]["median_us"]
                self.step(f"{mode} {n:,} services: sync {_s(point.sync_s)} s, connect to the "
                          f"last {_us(last)} us")
        finally:
            self.lab.extra_services(self.node, 0, self.endpoints)
        self.points += out
        return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class Scale:
    """A finished scale run: its points as a table (its repr) and as plots."""

    points: list[Point]
    seconds: float = 0.0

    def figures(self) -> list[dict[str, Any]]:
        return scale_figures(self.points)

    def growth(self, mode: str) -> float | None:
        return growth(self.points, mode)

    def point(self, mode: str, services: int) -> Point | None:
        return _at(self.points, mode, services)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.points]

    def plot(self, title: str = "this machine, now") -> Any:
        """Both plots side by side, inline (SVG)."""
        import tempfile

        from IPython.display import SVG, display

        with tempfile.TemporaryDirectory() as tmp:
            write_scale_plots(self.points, Path(tmp), title)
            shown = [SVG(filename=str(Path(tmp) / f"{stem}.svg"))
                     for stem in ("scale_sync", "scale_latency")]
        for svg in shown[:-1]:
            display(svg)
        return shown[-1]

    def __repr__(self) -> str:
        return format_scale_table(self.points)


def prepare(lab: Any) -> None:
    """Start the scale pods (two nginx servers on node2, a client on node1) in ``lab``
    unless they already run there."""
    names = {p["metadata"]["name"] for p in lab.pods()}
    if not {*SCALE_PODS, SCALE_CLIENT} <= names:
        lab.apply(scale_manifest())
    lab.wait()


def measure(sizes: Sequence[int] = (100, 500), rounds: int = 500,
            modes: Sequence[str] = SCALE_MODES, progress: bool = True,
            lab: Any = None) -> Scale:
    """The small live run for notebook 08, in ``lab`` (given the scale pods with
    :func:`prepare`), or in a lab of its own that is closed at the end. The lab's
    kube-proxy ends in the last of ``modes``."""
    from .lab import Lab

    started = time.monotonic()
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(sizes) * len(modes), desc="scale", unit="size")
        except ImportError:
            bar = None
    own = lab is None
    if own:
        lab = Lab("empty")
    try:
        prepare(lab)
        run = ScaleRun(lab, rounds=rounds, step=(lambda text: bar.update(1)) if bar else None)
        for mode in modes:
            run.measure(mode, sizes)
    finally:
        if own:
            lab.close()
        if bar is not None:
            bar.close()
    return Scale(run.points, round(time.monotonic() - started, 1))
