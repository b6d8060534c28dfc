"""What of the host a lab must never change, read as text to compare before and after."""

import os
import subprocess
from pathlib import Path

SYSCTLS = [
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/send_redirects",
    "net/bridge/bridge-nf-call-iptables",
    "user/max_user_namespaces",
]


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True)
    return proc.stdout + proc.stderr


def snapshot() -> dict[str, str]:
    state = {
        "links": _run("ip", "-o", "link", "show"),
        "addresses": _run("ip", "-o", "addr", "show"),
        "routes": _run("ip", "route", "show", "table", "all"),
        "netns": _run("ip", "netns", "list"),
        "run-netns": str(sorted(os.listdir("/run/netns")) if Path("/run/netns").exists()
                         else None),
    }
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        state[name] = path.read_text() if path.exists() else "absent"
    if os.geteuid() == 0:  # an ordinary user cannot read the host's rules at all
        state["iptables"] = _strip_counters(_run("iptables-save"))
        state["nft"] = _run("nft", "list", "ruleset")
    return state


def _strip_counters(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))
