"""Ready-made labs: the article's steps, applied in the article's order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadRequest, KubenetError

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["SCENARIOS", "manifests_dir", "run"]

# Each step is applied, then the lab waits for its pods before the next (as a reader would).
SCENARIOS: dict[str, list[str]] = {
    "empty": [],
    "article": ["test-deployment.yaml", "test-client1.yaml", "test-service.yaml",
                "test-client2.yaml"],
}


def manifests_dir() -> Path:
    """The article's manifests, shipped with the course in ``notebooks/manifests``."""
    path = Path(__file__).resolve().parent.parent / "notebooks" / "manifests"
    if not path.is_dir():
        raise KubenetError(f"error: the course's manifests are missing ({path})")
    return path


def run(cluster: Cluster, scenario: str) -> list[str]:
    if scenario not in SCENARIOS:
        raise BadRequest(f'error: unknown scenario "{scenario}" (choose from: '
                         f'{", ".join(SCENARIOS)})')
    out: list[str] = []
    for name in SCENARIOS[scenario]:
        path = manifests_dir() / name
        out += cluster.apply(path.read_text(), str(path.name))
        if not cluster.wait(cluster.usable, 30):
            raise KubenetError(f"error: the lab did not settle after {name} within 30s")
    # usable: every pod (the cluster DNS too) settled, every kube-proxy synced
    if not cluster.wait(cluster.usable, 30):
        raise KubenetError("error: the lab's DNS and kube-proxy did not come up within 30s")
    return out
