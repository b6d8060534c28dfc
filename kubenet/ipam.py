"""Address allocation, as the CNI host-local IPAM plugin does it."""

from __future__ import annotations

import ipaddress

from .errors import BadRequest

__all__ = ["HostLocal"]


class HostLocal:
    """Hand out a node's pod addresses: the next free one after the last one given.

    host-local remembers the last address it reserved and continues after it, wrapping at
    the end of the range, so a pod that is replaced gets a new address rather than the
    one just freed. The first address of the range is the bridge's gateway.
    """

    def __init__(self, subnet: str) -> None:
        self.subnet = ipaddress.ip_network(subnet)
        hosts = list(self.subnet.hosts())
        self.gateway = hosts[0]
        self._pool = hosts[1:]
        self._used: set[ipaddress.IPv4Address] = set()
        self._last: int = -1

    def allocate(self) -> str:
        n = len(self._pool)
        for step in range(1, n + 1):
            index = (self._last + step) % n
            address = self._pool[index]
            if address not in self._used:
                self._used.add(address)
                self._last = index
                return str(address)
        raise BadRequest(f"no free pod address left in {self.subnet}")

    def allocate_from_top(self) -> str:
        """The highest free address, for the lab's system pods.

        Not what host-local does: the lab keeps its own pods (cluster DNS) out of the way
        so the article's pods get the article's addresses whatever starts first.
        """
        for address in reversed(self._pool):
            if address not in self._used:
                self._used.add(address)
                return str(address)
        raise BadRequest(f"no free pod address left in {self.subnet}")

    def reserve(self, address: str) -> str:
        ip = ipaddress.ip_address(address)
        if ip not in self._pool:
            raise BadRequest(f"address {address} is outside the pod range {self.subnet}")
        if ip in self._used:
            raise BadRequest(f"address {address} is already in use")
        self._used.add(ip)
        return address

    def release(self, address: str) -> None:
        self._used.discard(ipaddress.ip_address(address))

    @property
    def in_use(self) -> list[str]:
        return [str(a) for a in sorted(self._used)]
