"""The process half of kube-proxy's userspace mode: a real proxy with a second connection.

In the 2015 design kube-proxy listened on one *proxy port* per service port (10400 in
the article) and netfilter redirected the cluster IP there (see
:mod:`kubenet.kubeproxy.userspace` for those rules). For every accepted connection
kube-proxy chose a pod round robin, opened a *second* TCP connection to it, and copied
bytes both ways. This module does the same, following ``pkg/proxy/userspace``'s
``proxysocket.go`` and ``roundrobin.go``::

    python -m kubenet.userspace_proxy --state FILE [--listen-ip 0.0.0.0]
                                      [--udp-idle-timeout 0.25] [--poll 0.2]

The state file is JSON, re-read whenever it changes (polled every ``--poll`` seconds)::

    {"services": [{"name": "default/service-test:", "protocol": "TCP",
                   "proxy_port": 10400, "endpoints": ["10.0.1.2:8080", "10.0.2.2:8080"],
                   "session_affinity": "None", "affinity_timeout": 10800}]}

``name`` and ``proxy_port`` are required; ``protocol`` defaults to TCP (or UDP),
``endpoints`` to none, ``session_affinity`` to None (or ClientIP) and
``affinity_timeout`` (seconds) to 10800, as does 0. An entry is keyed by name and
protocol: a new one opens a listener, a removed one closes it (open TCP connections
carry on), a changed ``proxy_port`` moves it, and endpoint or affinity changes apply to
the next connection. Write the file atomically (temporary file, then rename); a
missing, unreadable or invalid file keeps the last good state (and logs ``error``).

Standard output gets one line per connection (per new client for UDP), e.g.
``10.0.1.3:40112 -> default/service-test: -> 10.0.2.2:8080``, plus one line per change:
``listen ADDR:PORT/PROTO NAME``, ``stop ...``, ``endpoints NAME EP...|none``,
``affinity NAME TYPE SECONDS``, ``error ...``, ``exit``. SIGTERM or SIGINT ends it.

Standard library only, one asyncio loop, no threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_AFFINITY_SECONDS",
    "DIAL_TIMEOUTS",
    "NoEndpoints",
    "RoundRobin",
    "ServiceSpec",
    "UDP_IDLE_TIMEOUT",
    "UserspaceProxy",
    "join_host_port",
    "main",
    "parse_state",
    "split_host_port",
]

# proxysocket.go: one dial per timeout, each to the next endpoint (4 tries at most).
DIAL_TIMEOUTS = (0.25, 0.5, 1.0, 2.0)
# kube-proxy's --udp-timeout default (KubeProxyConfiguration.UDPIdleTimeout).
UDP_IDLE_TIMEOUT = 0.25
# v1.DefaultClientIPServiceAffinitySeconds: 3 hours, also used when the timeout is 0.
DEFAULT_AFFINITY_SECONDS = 10800
POLL_INTERVAL = 0.2
_RECENT = 2.0  # a file touched this recently is re-read even if its stat looks unchanged
_CHUNK = 65536


def log(line: str) -> None:
    print(line, flush=True)


def split_host_port(text: str) -> tuple[str, int]:
    """``"10.0.1.2:8080"`` or ``"[fd00::1]:8080"`` -> (host, port); ValueError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"not host:port: {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ipaddress.ip_address(host)
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"bad port in {text!r}")
    return host, number


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NoEndpoints(Exception):
    """``ErrMissingEndpoints``: the service port has no endpoints."""


@dataclass
class _Affinity:
    endpoint: str
    last_used: float


class RoundRobin:
    """``LoadBalancerRR`` for one service port: round robin with optional ClientIP affinity.

    ``next_endpoint`` returns the endpoint after the last one chosen. With ClientIP
    affinity a client IP seen less than ``ttl`` whole seconds ago gets its endpoint
    again (and its timer restarts), unless ``reset`` is true, which tryConnect sets after
    a failed dial so the client moves on to the next endpoint.
    """

    def __init__(self, affinity: str = "None", ttl: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoints: list[str] = []
        self.index = 0
        self.clock = clock
        self.affinity_type = "None"
        self.ttl = DEFAULT_AFFINITY_SECONDS
        self.sessions: dict[str, _Affinity] = {}
        self.set_affinity(affinity, ttl)

    def set_affinity(self, affinity: str, ttl: int) -> bool:
        """Change the policy; returns whether anything changed."""
        ttl = ttl or DEFAULT_AFFINITY_SECONDS
        changed = (affinity, ttl) != (self.affinity_type, self.ttl)
        self.affinity_type, self.ttl = affinity, ttl
        return changed

    @property
    def sticky(self) -> bool:
        return self.affinity_type not in ("", "None")

    def update(self, endpoints: list[str]) -> bool:
        """``OnEndpointsUpdate``; returns whether the endpoint set changed.

        The same set in another order changes nothing. A new set restarts the round
        robin at its first endpoint and forgets the clients of removed endpoints; no
        endpoints at all forgets every client.
        """
        if not endpoints:
            changed = bool(self.endpoints)
            self.endpoints, self.index, self.sessions = [], 0, {}
            return changed
        if sorted(endpoints) == sorted(self.endpoints):
            return False
        kept = set(endpoints)
        self.sessions = {ip: s for ip, s in self.sessions.items() if s.endpoint in kept}
        self.endpoints, self.index = list(endpoints), 0
        return True

    def next_endpoint(self, client_ip: str, reset: bool = False) -> str:
        """``NextEndpoint``; raises :class:`NoEndpoints`."""
        if not self.endpoints:
            raise NoEndpoints
        now = self.clock()
        if self.sticky and not reset:
            session = self.sessions.get(client_ip)
            if session is not None and int(now - session.last_used) < self.ttl:
                session.last_used = now
                return session.endpoint
        endpoint = self.endpoints[self.index]
        self.index = (self.index + 1) % len(self.endpoints)
        if self.sticky:
            self.sessions[client_ip] = _Affinity(endpoint, now)
        return endpoint

    def cleanup(self) -> None:
        """``CleanupStaleStickySessions``: forget clients idle for ``ttl`` seconds."""
        now = self.clock()
        self.sessions = {ip: s for ip, s in self.sessions.items()
                         if int(now - s.last_used) < self.ttl}


@dataclass(frozen=True)
class ServiceSpec:
    """One entry of the state file."""

    name: str
    protocol: str
    proxy_port: int
    endpoints: tuple[str, ...] = ()
    session_affinity: str = "None"
    affinity_timeout: int = DEFAULT_AFFINITY_SECONDS

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.protocol


def parse_state(data: object, problems: list[str] | None = None) -> dict[tuple[str, str],
                                                                         ServiceSpec]:
    """The state file's JSON -> specs by (name, protocol).

    Raises ValueError if the document is not ``{"services": [...]}``; a bad entry or
    endpoint is skipped and described in ``problems``.
    """
    if not isinstance(data, dict) or not isinstance(data.get("services", []), list):
        raise ValueError('expected {"services": [...]}')
    problems = problems if problems is not None else []
    specs: dict[tuple[str, str], ServiceSpec] = {}
    for at, entry in enumerate(data.get("services", [])):
        try:
            if not isinstance(entry, dict):
                raise ValueError("not an object")
            name = entry["name"]
            if not isinstance(name, str) or not name:
                raise ValueError("name must be a non-empty string")
            protocol = str(entry.get("protocol", "TCP")).upper()
            if protocol not in ("TCP", "UDP"):
                raise ValueError(f"unsupported protocol {protocol}")
            port = entry["proxy_port"]
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ValueError(f"bad proxy_port {port!r}")
            affinity = str(entry.get("session_affinity") or "None")
            if affinity not in ("None", "ClientIP"):
                raise ValueError(f"unsupported session_affinity {affinity}")
            timeout = int(entry.get("affinity_timeout") or DEFAULT_AFFINITY_SECONDS)
            endpoints = []
            for endpoint in entry.get("endpoints") or []:
                try:
                    host, number = split_host_port(str(endpoint))
                except ValueError as err:
                    problems.append(f"{name}: endpoint skipped: {err}")
                    continue
                endpoints.append(join_host_port(host, number))
            spec = ServiceSpec(name, protocol, port, tuple(endpoints), affinity, timeout)
        except KeyError as err:
            problems.append(f"services[{at}] skipped: missing {err}")
            continue
        except (TypeError, ValueError) as err:
            problems.append(f"services[{at}] skipped: {err}")
            continue
        if spec.key in specs:
            problems.append(f"services[{at}] skipped: duplicate {spec.name} {spec.protocol}")
            continue
        specs[spec.key] = spec
    return specs


def _why(err: BaseException, timeout: float) -> str:
    if isinstance(err, TimeoutError):
        return f"no answer in {timeout:g}s"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class _Service:
    """What one state entry runs: the load balancer and the proxy socket."""

    def __init__(self, proxy: UserspaceProxy, spec: ServiceSpec) -> None:
        self.proxy = proxy
        self.spec = spec
        self.lb = RoundRobin(spec.session_affinity, spec.affinity_timeout)
        self.where = f"{join_host_port(proxy.listen_ip, spec.proxy_port)}/{spec.protocol}"

    def apply(self, spec: ServiceSpec, announce: bool) -> None:
        self.spec = spec
        if self.lb.set_affinity(spec.session_affinity, spec.affinity_timeout) and announce:
            log(f"affinity {spec.name} {self.lb.affinity_type} {self.lb.ttl}")
        if self.lb.update(list(spec.endpoints)) or not announce:
            log(f"endpoints {spec.name} " + (" ".join(self.lb.endpoints) or "none"))

    async def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _TCPService(_Service):
    """``tcpProxySocket``: accept, dial an endpoint (the second connection), copy."""

    server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._accepted, self.proxy.listen_ip, self.spec.proxy_port, reuse_address=True)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _dial(self, client_ip: str):
        """``tryConnect``: up to four dials, each to the next endpoint, with longer timeouts."""
        failures: list[str] = []
        reset = False
        for timeout in DIAL_TIMEOUTS:
            endpoint = self.lb.next_endpoint(client_ip, reset)
            host, port = split_host_port(endpoint)
            try:
                streams = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except OSError as err:  # TimeoutError is an OSError too
                failures.append(f"{endpoint}: {_why(err, timeout)}")
                reset = True
                continue
            return endpoint, streams, failures
        return None, None, failures

    async def _accepted(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        out_writer = None
        try:
            peer = writer.get_extra_info("peername") or ("?", 0)
            client = join_host_port(peer[0], peer[1])
            prefix = f"{client} -> {self.spec.name} ->"
            try:
                endpoint, streams, failures = await self._dial(peer[0])
            except NoEndpoints:
                log(f"{prefix} no endpoints, closed")
                return
            if streams is None:
                log(f"{prefix} failed to connect to an endpoint, closed "
                    f"({'; '.join(failures)})")
                return
            out_reader, out_writer = streams
            skipped = f" (skipped {'; '.join(failures)})" if failures else ""
            log(f"{prefix} {endpoint}{skipped}")
            await _relay(reader, writer, out_reader, out_writer)
        except Exception as err:  # one bad connection must never stop the proxy
            log(f"error {self.spec.name}: connection: {err!r}")
        finally:
            for w in (writer, out_writer):
                if w is not None:
                    w.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                both: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
    """Copy until EOF, then half-close ``dst`` (shutdown SHUT_WR); on error abort both."""
    try:
        while data := await src.read(_CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (OSError, asyncio.IncompleteReadError, RuntimeError):
        for w in both:
            w.transport.abort()


async def _relay(in_reader: asyncio.StreamReader, in_writer: asyncio.StreamWriter,
                 out_reader: asyncio.StreamReader, out_writer: asyncio.StreamWriter) -> None:
    """``proxyTCP``: both directions at once, until both sides have closed."""
    both = (in_writer, out_writer)
    await asyncio.gather(_pipe(in_reader, out_writer, both),
                         _pipe(out_reader, in_writer, both))


@dataclass(eq=False)
class _Flow:
    client: tuple
    endpoint: str
    sock: socket.socket
    timer: asyncio.TimerHandle | None = None
    closed: bool = False


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, service: _UDPService) -> None:
        self.service = service

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.service.from_client(data, addr)
        except Exception as err:  # never let one datagram stop the proxy
            log(f"error {self.service.spec.name}: datagram: {err!r}")

    def error_received(self, exc: Exception) -> None:
        pass


class _UDPService(_Service):
    """``udpProxySocket``: one backend socket per client address, dropped when idle.

    Replies go back to the client from the proxy socket itself. A flow ends after
    ``--udp-idle-timeout`` seconds without a datagram either way, or on an error.
    """

    transport: asyncio.DatagramTransport | None = None

    def __init__(self, proxy: UserspaceProxy, spec: ServiceSpec) -> None:
        super().__init__(proxy, spec)
        self.flows: dict[tuple, _Flow] = {}
        self.loop = asyncio.get_running_loop()

    async def start(self) -> None:
        self.transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UDPProtocol(self), local_addr=(self.proxy.listen_ip, self.spec.proxy_port),
            family=_family(self.proxy.listen_ip))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        for flow in list(self.flows.values()):
            self._end(flow)

    def from_client(self, data: bytes, addr: tuple) -> None:
        flow = self.flows.get(addr) or self._open(addr)
        if flow is None:
            return
        try:
            flow.sock.send(data)
        except BlockingIOError:
            return
        except OSError as err:
            log(f"error {self.spec.name}: write to {flow.endpoint}: {_why(err, 0)}")
            return
        self._touch(flow)

    def _open(self, addr: tuple) -> _Flow | None:
        prefix = f"{join_host_port(addr[0], addr[1])} -> {self.spec.name} ->"
        failures: list[str] = []
        reset = False
        for _ in DIAL_TIMEOUTS:
            try:
                endpoint = self.lb.next_endpoint(addr[0], reset)
            except NoEndpoints:
                log(f"{prefix} no endpoints, dropped (udp)")
                return None
            host, port = split_host_port(endpoint)
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((host, port))
            except OSError as err:
                sock.close()
                failures.append(f"{endpoint}: {_why(err, 0)}")
                reset = True
                continue
            flow = _Flow(addr, endpoint, sock)
            self.flows[addr] = flow
            self.loop.add_reader(sock.fileno(), self._from_backend, flow)
            skipped = f" (skipped {'; '.join(failures)})" if failures else ""
            log(f"{prefix} {endpoint} (udp){skipped}")
            return flow
        log(f"{prefix} failed to connect to an endpoint, dropped (udp) ({'; '.join(failures)})")
        return None

    def _from_backend(self, flow: _Flow) -> None:
        while not flow.closed:
            try:
                data = flow.sock.recv(_CHUNK)
            except BlockingIOError:
                return
            except OSError as err:
                log(f"error {self.spec.name}: read from {flow.endpoint}: {_why(err, 0)}")
                self._end(flow)
                return
            self._touch(flow)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.sendto(data, flow.client)

    def _touch(self, flow: _Flow) -> None:
        if flow.timer is not None:
            flow.timer.cancel()
        flow.timer = self.loop.call_later(self.proxy.udp_idle_timeout, self._end, flow)

    def _end(self, flow: _Flow) -> None:
        if flow.closed:
            return
        flow.closed = True
        if flow.timer is not None:
            flow.timer.cancel()
        with contextlib.suppress(Exception):
            self.loop.remove_reader(flow.sock.fileno())
        flow.sock.close()
        if self.flows.get(flow.client) is flow:
            del self.flows[flow.client]


class UserspaceProxy:
    """The whole process: watch the state file, keep one proxy socket per entry."""

    def __init__(self, state: str, *, listen_ip: str = "0.0.0.0",
                 udp_idle_timeout: float = UDP_IDLE_TIMEOUT,
                 poll: float = POLL_INTERVAL) -> None:
        self.state = state
        self.listen_ip = listen_ip
        self.udp_idle_timeout = udp_idle_timeout
        self.poll = poll
        self.desired: dict[tuple[str, str], ServiceSpec] = {}
        self.running: dict[tuple[str, str], _Service] = {}
        self._stat: tuple | None = None
        self._content: bytes | None = None
        self._errors: dict[object, str] = {}
        self._last_cleanup = 0.0

    def _error(self, key: object, message: str) -> None:
        """Log an error once until it changes (a retried failure does not flood the log)."""
        if self._errors.get(key) != message:
            self._errors[key] = message
            log(f"error {message}")

    def _read_state(self) -> bool:
        """Re-read the state file if it changed; returns whether ``desired`` changed."""
        try:
            st = os.stat(self.state)
        except OSError as err:
            self._error("state", f"state file {self.state}: {_why(err, 0)}")
            return False
        stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stat == self._stat and time.time() - st.st_mtime > _RECENT:
            return False
        self._stat = stat
        try:
            with open(self.state, "rb") as f:
                content = f.read()
        except OSError as err:
            self._error("state", f"state file {self.state}: {_why(err, 0)}")
            return False
        if content == self._content:
            return False
        try:
            problems: list[str] = []
            desired = parse_state(json.loads(content), problems)
        except ValueError as err:  # also a half-written file; the next write fixes it
            self._error("state", f"state file {self.state}: {err}")
            return False
        self._content = content
        self._errors.pop("state", None)
        for problem in problems:
            log(f"error state file: {problem}")
        self.desired = desired
        return True

    async def reconcile(self) -> None:
        for key, service in list(self.running.items()):
            spec = self.desired.get(key)
            if spec is None or spec.proxy_port != service.spec.proxy_port:
                service.close()
                del self.running[key]
                log(f"stop {service.where} {service.spec.name}")
        for key, spec in self.desired.items():
            if key in self.running:
                self.running[key].apply(spec, announce=True)
                continue
            service = (_TCPService if spec.protocol == "TCP" else _UDPService)(self, spec)
            try:
                await service.start()
            except OSError as err:
                self._error(key, f"listen {service.where} {spec.name}: {_why(err, 0)}")
                continue
            self._errors.pop(key, None)
            self.running[key] = service
            log(f"listen {service.where} {spec.name}")
            service.apply(spec, announce=False)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            while not stop.is_set():
                try:
                    changed = self._read_state()
                    if changed or len(self.running) < len(self.desired):
                        await self.reconcile()
                    now = time.monotonic()
                    if now - self._last_cleanup > 1.0:
                        self._last_cleanup = now
                        for service in self.running.values():
                            service.lb.cleanup()
                except Exception as err:  # keep proxying whatever went wrong here
                    self._error("loop", f"sync: {err!r}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
        finally:
            for service in self.running.values():
                service.close()
            log("exit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubenet.userspace_proxy",
        description="kube-proxy's userspace mode: one proxy port per service port, a second "
                    "connection to an endpoint chosen round robin.")
    parser.add_argument("--state", required=True, help="JSON state file, re-read on change")
    parser.add_argument("--listen-ip", default="0.0.0.0",
                        help="address of the proxy sockets (kube-proxy's --bind-address)")
    parser.add_argument("--udp-idle-timeout", type=float, default=UDP_IDLE_TIMEOUT,
                        help="seconds before an idle UDP flow is dropped (default 0.25)")
    parser.add_argument("--poll", type=float, default=POLL_INTERVAL,
                        help="seconds between checks of the state file (default 0.2)")
    args = parser.parse_args(argv)
    proxy = UserspaceProxy(args.state, listen_ip=args.listen_ip,
                           udp_idle_timeout=args.udp_idle_timeout, poll=args.poll)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(proxy.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
