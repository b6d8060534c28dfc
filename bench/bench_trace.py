"""How long `kubenet trace` takes: the first trace of a lab (cold) and the next ones (warm).

The first trace of a lab starts its tracer helper (which imports scapy, about 0.4 s) and an
``xtables-monitor --trace`` in each node (``nft monitor trace`` in nftables mode); later
traces reuse them. Prints one line per figure (median, min and max over N runs). Run:
    .venv/bin/python bench/bench_trace.py [--runs N] [--proxy-mode userspace|nftables]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kubenet  # noqa: E402

CLIENT = "service-test-6ffd9ddbbf-kf4j2"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, samples: list[float]) -> None:
    print(f"{name:<46} median {statistics.median(samples):6.3f} s   "
          f"min {min(samples):6.3f} s   max {max(samples):6.3f} s   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5, help="labs for the cold figure")
    parser.add_argument("--warm", type=int, default=20, help="traces per lab once warm")
    parser.add_argument("--proxy-mode", default="iptables", choices=["iptables", "userspace",
                                                                   "nftables"])
    args = parser.parse_args()
    print(f"tier: {kubenet.doctor().tier}, kube-proxy in {args.proxy_mode} mode")

    cold, inside, ip, name, pod, cli = [], [], [], [], [], []
    for run in range(args.runs):
        with kubenet.Lab("article", proxy_mode=args.proxy_mode) as lab:
            cold.append(timed(lambda lab=lab: lab.trace(CLIENT, "10.3.241.152:80")))
            for _ in range(args.warm):
                box = []
                ip.append(timed(lambda lab=lab, box=box: box.append(
                    lab.trace(CLIENT, "10.3.241.152:80"))))
                inside.append(box[0].elapsed)
                name.append(timed(lambda lab=lab: lab.trace(CLIENT, "service-test:80")))
                pod.append(timed(lambda lab=lab: lab.trace(CLIENT, "10.0.2.2:8080")))
            if run == 0:
                argv = [sys.executable, "-m", "kubenet.cli", "--lab", lab.name, "trace", CLIENT,
                        "10.3.241.152:80", "--json"]
                for _ in range(5):
                    cli.append(timed(lambda argv=argv: subprocess.run(argv, check=True,
                                                                      capture_output=True)))
    report("first trace of a lab (cold: helper + scapy)", cold)
    report("lab.trace(pod, '10.3.241.152:80') (warm)", ip)
    report("  of which inside the lab (Trace.elapsed)", inside)
    report("lab.trace(pod, 'service-test:80') (warm)", name)
    report("lab.trace(pod, '10.0.2.2:8080') (warm)", pod)
    report("kubenet trace ... --json (whole command)", cli)


if __name__ == "__main__":
    main()
