"""kubenet: Kubernetes Services built for real on your own Linux kernel."""

from .errors import KubenetError
from .lab import ExecResult, Lab, Text
from .tiers import check as doctor

__all__ = ["Lab", "ExecResult", "KubenetError", "Text", "doctor", "render_iptables"]


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
__version__ = "0.1.0"
