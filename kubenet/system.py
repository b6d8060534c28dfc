"""The lab's own system workloads, in kube-system: the cluster DNS and its Service."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["CLUSTER_DNS_IP", "dns_manifests"]

CLUSTER_DNS_IP = "10.3.240.10"


def dns_manifests(records: Path) -> str:
    """A ``coredns`` Deployment (our own small server, not CoreDNS) behind Service ``kube-dns``.

    The names and labels are those of a real cluster's DNS, so ``get pods -n kube-system``
    and the kube-proxy rules look as they do there.
    """
    # $(KUBENET_PYTHON) is expanded by the kubelet, as Kubernetes expands $(VAR) in a
    # command: the template (and so its hash and pod names) is the same on every machine.
    command = json.dumps(["$(KUBENET_PYTHON)", "-m", "kubenet.dns", "--records", str(records)])
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns, kubernetes.io/name: CoreDNS}}
spec:
  clusterIP: {CLUSTER_DNS_IP}
  selector: {{k8s-app: kube-dns}}
  ports:
  - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
  - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata:
      labels: {{k8s-app: kube-dns}}
    spec:
      containers:
      - name: coredns
        image: kubenet/dns (python3 + dnslib; no image is pulled)
        command: {command}
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
"""
