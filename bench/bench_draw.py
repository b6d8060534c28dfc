"""How long drawing takes: the article's topology (target: under 0.3 s) and a node's chains.

Builds a real article lab, then times each step over N runs and prints one line per figure
(median, min and max). Run:
    .venv/bin/python bench/bench_draw.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kubenet  # noqa: E402
from kubenet.draw import draw_rules, draw_topology  # noqa: E402

TARGET = 0.3  # seconds, for lab.draw() rendered to SVG


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, samples: list[float]) -> None:
    print(f"{name:<44} median {statistics.median(samples):6.3f} s   "
          f"min {min(samples):6.3f} s   max {max(samples):6.3f} s   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    print(f"tier: {kubenet.doctor().tier}")
    with kubenet.Lab("article") as lab:
        lab.wait()
        lab.send_requests("service-test-6ffd9ddbbf-kf4j2", "10.3.241.152:80", 10)
        services = str(lab.get("services", output="json", all_namespaces=True))
        cidr = lab.info()["service_cidr"]
        inventory = lab.inventory()
        rules = lab.rules("node1", counters=True)

        read, build, svg, total, chains = [], [], [], [], []
        for _ in range(runs):
            read.append(timed(lab.inventory))
            start = time.perf_counter()
            diagram = draw_topology(inventory, services, service_cidr=cidr)
            build.append(time.perf_counter() - start)
            svg.append(timed(diagram.svg))
            total.append(timed(lambda: lab.draw().svg()))
            chains.append(timed(lambda: draw_rules(rules, node="node1").svg()))
        report("lab.inventory() (ip -j in 9 namespaces)", read)
        report("draw_topology(...) (DOT, pure)", build)
        report("Diagram.svg() (dot -Tsvg)", svg)
        report("lab.draw().svg() (all of it)", total)
        report("draw_rules(node1 dump).svg()", chains)
        verdict = "meets" if statistics.median(total) < TARGET else "MISSES"
        print(f"lab.draw().svg() {verdict} the {TARGET:g} s target "
              f"(median {statistics.median(total):.3f} s)")


if __name__ == "__main__":
    main()
