"""What this host can do: the privilege tier, the tools, the kernel features.

The tier is decided by what the process can actually do (capabilities and a trial
``unshare``), never by its uid: a locked-down host can run you as uid 0 inside a user
namespace with no capabilities at all.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ToolMissing, Unavailable

__all__ = ["Report", "check", "require_tier", "TOOLS", "sandbox_flags"]

CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
# tool -> Debian package
TOOLS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "iptables-restore": "iptables",
    "nft": "nftables",
    "conntrack": "conntrack",
    "nc": "netcat-openbsd",
    "dot": "graphviz",
    "nfacct": "nfacct",
    "python3": "python3",
}
_ROOT_FLAGS = ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]


def sandbox_flags(tier: str) -> list[str]:
    """The ``unshare`` options that make a lab's sandbox in this tier."""
    return (["--user", "--map-root-user"] if tier == "rootless" else []) + _ROOT_FLAGS


@dataclass
class Report:
    tier: str  # root | rootless | unavailable
    reason: str = ""  # why the tier is unavailable, and what to do about it
    capabilities: list[str] = field(default_factory=list)
    tools: dict[str, str | None] = field(default_factory=dict)  # tool -> path or None
    features: dict[str, bool] = field(default_factory=dict)

    @property
    def missing_tools(self) -> list[str]:
        return [t for t, path in self.tools.items() if path is None]

    @property
    def ok(self) -> bool:
        return self.tier != "unavailable" and not self.missing_tools

    def lines(self) -> list[str]:
        out = [f"tier: {self.tier}" + (f" ({self.reason})" if self.reason else "")]
        out.append("capabilities: " + (", ".join(self.capabilities) or "none"))
        present = [t for t, path in self.tools.items() if path]
        out.append("tools present: " + (", ".join(present) or "none"))
        for tool in self.missing_tools:
            out.append(f"tool missing: {tool} (apt-get install {TOOLS[tool]})")
        for feature, ok in self.features.items():
            out.append(f"kernel {feature}: {'yes' if ok else 'no'}")
        out.append("a lab can run here: " + ("yes" if self.ok else "no"))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    __repr__ = __str__


def _effective_caps() -> list[str]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return [name for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"),
                                               (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"))
                        if mask & (1 << bit)]
    except OSError:
        pass
    return []


def _trial(flags: list[str]) -> tuple[bool, str]:
    if shutil.which("unshare") is None:
        return False, "unshare is missing (apt-get install util-linux)"
    proc = subprocess.run(["unshare", *flags, "true"], capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr.strip()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _userns_blocker() -> str:
    """Name the setting that blocks unprivileged user namespaces, and the fix."""
    if _read("/proc/sys/user/max_user_namespaces") == "0":
        return ("user namespaces are disabled (user.max_user_namespaces = 0): run "
                "'sudo sysctl -w user.max_user_namespaces=15000', or run kubenet as root")
    if _read("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        return ("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = "
                "0): run 'sudo sysctl -w kernel.unprivileged_userns_clone=1', or run as root")
    if _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns = 1): run 'sudo sysctl -w "
                "kernel.apparmor_restrict_unprivileged_userns=0', or run as root")
    return ("no capabilities (CAP_NET_ADMIN, CAP_SYS_ADMIN) and no user namespaces here "
            "(a locked-down container?): run kubenet as root, or on a host that allows "
            "unprivileged user namespaces")


def check() -> Report:
    caps = _effective_caps()
    report = Report(tier="unavailable", capabilities=caps)
    report.tools = {tool: shutil.which(tool) for tool in TOOLS}
    if {"CAP_NET_ADMIN", "CAP_SYS_ADMIN"} <= set(caps) and _trial(sandbox_flags("root"))[0]:
        report.tier = "root"
    elif _trial(sandbox_flags("rootless"))[0]:
        report.tier = "rootless"
    else:
        report.reason = _userns_blocker()
    # br_netfilter is never loaded by kubenet (no modprobe): it must already be there.
    report.features = {"bridge netfilter (br_netfilter)": Path("/proc/sys/net/bridge").exists()}
    return report


class HostCheck:
    """The answer to "can this machine build labs?", for the first cell of a notebook."""

    def __init__(self, report: Report) -> None:
        self.report = report

    @property
    def ok(self) -> bool:
        return self.report.ok

    def __repr__(self) -> str:
        r = self.report
        if r.ok:
            return (f"This machine can build labs (tier: {r.tier}). Run the cells in order; "
                    "each lab ends when the notebook closes it.")
        why = r.reason or "missing tools: " + ", ".join(
            f"{t} (apt-get install {TOOLS[t]})" for t in r.missing_tools)
        return ("This machine cannot build labs: " + why + ".\nYou can still read every "
                "notebook: the outputs stored in it come from a real run of the same cells. "
                "Cells that build a lab will stop with this same message.")


def ready() -> HostCheck:
    """Never raises: says whether labs can run here, and what to do if not."""
    return HostCheck(check())


def require_tier() -> str:
    """The tier a lab can use here; raise with what to do when there is none."""
    report = check()
    if report.tier == "unavailable":
        raise Unavailable(f"error: cannot build a lab on this host: {report.reason}")
    essential = [t for t in ("ip", "unshare", "nsenter", "iptables", "iptables-save",
                             "iptables-restore") if report.tools[t] is None]
    if essential:
        pkgs = " ".join(sorted({TOOLS[t] for t in essential}))
        raise ToolMissing(f"error: {', '.join(essential)} not found: apt-get install {pkgs}")
    return report.tier
