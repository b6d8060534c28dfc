"""kubenet: Kubernetes Services built for real on your own Linux kernel."""

from .errors import KubenetError
from .lab import ExecResult, Lab, Text
from .tiers import check as doctor
from .tiers import ready

__all__ = ["Lab", "ExecResult", "KubenetError", "Text", "doctor", "ready", "render_iptables",
           "draw_rules_from"]


def render_iptables(manifests: str, *, node_name: str = "node1", node_ip: str = "10.100.0.2",
                    cluster_cidr: str | None = None) -> Text:
    """What kube-proxy (iptables mode) writes on ``node_name`` for these Services and
    EndpointSlices (multi-document YAML text, or a path to a file of it)."""
    from pathlib import Path

    from .kubeproxy.iptables import render_yaml

    if "\n" not in manifests and Path(manifests).exists():
        manifests = Path(manifests).read_text()
    return Text(render_yaml(manifests, node_name=node_name, node_ips=[node_ip],
                            cluster_cidr=cluster_cidr))


def draw_rules_from(dump: str, node: str | None = None):  # -> kubenet.draw.Diagram
    """The nat chains of any ``iptables-save`` dump (``-c`` for counters) as a diagram: the
    dump's text, or a path to a file of it, for example from a node of your own cluster."""
    from .draw import draw_rules, read_dump

    return draw_rules(read_dump(dump), node=node)


__version__ = "0.1.0"
