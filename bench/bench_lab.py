"""How long the lab takes: `kubenet up --scenario article`, `down`, and a few cell-sized calls.

Prints one line per figure (median, min and max over N runs). Run:
    .venv/bin/python bench/bench_lab.py [--runs N]
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

CLI = [sys.executable, "-m", "kubenet.cli", "--lab", "bench"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(name: str, samples: list[float]) -> None:
    print(f"{name:<34} median {statistics.median(samples):6.3f} s   "
          f"min {min(samples):6.3f} s   max {max(samples):6.3f} s   (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(f"tier: {kubenet.doctor().tier}")

    up, down = [], []
    for _ in range(runs):
        up.append(timed(lambda: subprocess.run([*CLI, "up", "--scenario", "article"],
                                               check=True, capture_output=True)))
        down.append(timed(lambda: subprocess.run([*CLI, "down"], check=True,
                                                 capture_output=True)))
    report("kubenet up --scenario article", up)
    report("kubenet down", down)

    lab_up, close, get, logs, exe, delete = [], [], [], [], [], []
    for _ in range(runs):
        box: list[kubenet.Lab] = []
        lab_up.append(timed(lambda box=box: box.append(kubenet.Lab("article"))))
        lab = box[0]
        get.append(timed(lambda lab=lab: lab.get("pods", output="wide")))
        logs.append(timed(lambda lab=lab: lab.logs("service-test-client1")))
        exe.append(timed(lambda lab=lab: lab.exec("service-test-6ffd9ddbbf-kf4j2", "ip", "addr")))
        delete.append(timed(lambda lab=lab: lab.delete_pod("service-test-6ffd9ddbbf-kf4j2")))
        close.append(timed(lab.close))
    report("Lab('article')", lab_up)
    report("lab.get('pods', output='wide')", get)
    report("lab.logs(...)", logs)
    report("lab.exec(pod, 'ip', 'addr')", exe)
    report("lab.delete_pod(...) (+ replacement)", delete)
    report("lab.close()", close)


if __name__ == "__main__":
    main()
