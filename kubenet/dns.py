"""The cluster DNS: answers for Services from a records file the lab keeps up to date.

Runs as the container of the ``coredns`` pod in ``kube-system``, behind the ``kube-dns``
Service (10.3.240.10), over UDP and TCP. Like CoreDNS's kubernetes plugin it answers A
queries for ``<service>.<namespace>.svc.cluster.local``; a known name asked for another
type gets NOERROR with no answer, an unknown name in the cluster domain NXDOMAIN. There
is no upstream (a lab never talks to the outside world), so other names are REFUSED.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer

__all__ = ["Resolver", "records_for", "main"]

CLUSTER_DOMAIN = "cluster.local"
TTL = 30


def records_for(services: list[dict]) -> dict[str, str]:
    """fqdn -> cluster IP, for every Service that has one (headless ones are skipped)."""
    out = {}
    for s in services:
        ip = s["spec"].get("clusterIP")
        if ip and ip != "None":
            meta = s["metadata"]
            out[f"{meta['name']}.{meta['namespace']}.svc.{CLUSTER_DOMAIN}."] = ip
    return out


class Resolver(BaseResolver):
    """Looks names up in a JSON file, re-read whenever it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] = (-1, -1, -1)
        self._records: dict[str, str] = {}
        self._lock = threading.Lock()

    def records(self) -> dict[str, str]:
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return self._records
            # The lab replaces the file by renaming a new one over it: a new inode each time.
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                with open(self.path) as f:
                    self._records = json.load(f)
                self._stamp = stamp
            return self._records

    def resolve(self, request, handler):  # noqa: ANN001 - dnslib's interface
        reply = request.reply()
        qname = str(request.q.qname).lower()
        records = self.records()
        in_domain = qname == CLUSTER_DOMAIN + "." or qname.endswith("." + CLUSTER_DOMAIN + ".")
        if qname in records:
            if request.q.qtype in (QTYPE.A, QTYPE.ANY):
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(records[qname]), ttl=TTL))
        elif not in_domain:
            reply.header.rcode = RCODE.REFUSED
        elif not any(name.endswith("." + qname) for name in records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kubenet.dns")
    parser.add_argument("--records", required=True)
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    resolver = Resolver(args.records)

    class QuietLogger:
        def __getattr__(self, name: str):
            return lambda *a, **k: None

    servers = [DNSServer(resolver, port=args.port, address="0.0.0.0", tcp=tcp,
                         logger=QuietLogger()) for tcp in (False, True)]
    for server in servers:
        server.start_thread()
    print(f"serving DNS for {CLUSTER_DOMAIN} on port {args.port} (UDP and TCP)", flush=True)
    while all(s.isAlive() for s in servers):
        time.sleep(1)


if __name__ == "__main__":
    main()
