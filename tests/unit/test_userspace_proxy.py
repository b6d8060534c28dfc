"""kubenet.userspace_proxy: the load balancer in-process, then the real process on 127.0.0.1.

The process tests start ``python -m kubenet.userspace_proxy`` with a state file, talk to
it through real sockets on high free ports of 127.0.0.1, and always terminate it.
"""

import json
import os
import queue
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kubenet.userspace_proxy import (
    DEFAULT_AFFINITY_SECONDS,
    NoEndpoints,
    RoundRobin,
    ServiceSpec,
    parse_state,
    split_host_port,
)

ROOT = Path(__file__).resolve().parents[2]
SVC = "default/service-test:"


# --- the load balancer (roundrobin.go), with a fake clock -------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_round_robin_order_and_no_endpoints():
    lb = RoundRobin()
    with pytest.raises(NoEndpoints):
        lb.next_endpoint("10.0.1.3")
    lb.update(["a:1", "b:1", "c:1"])
    assert [lb.next_endpoint("10.0.1.3") for _ in range(4)] == ["a:1", "b:1", "c:1", "a:1"]


def test_client_ip_affinity_sticks_until_the_timeout():
    clock = Clock()
    lb = RoundRobin("ClientIP", 10, clock=clock)
    lb.update(["a:1", "b:1"])
    assert lb.next_endpoint("10.0.1.3") == "a:1"
    assert lb.next_endpoint("10.0.1.4") == "b:1"
    clock.now += 9.9  # whole seconds are compared: 9 < 10
    assert lb.next_endpoint("10.0.1.3") == "a:1"  # and this restarts its timer
    clock.now += 10
    assert lb.next_endpoint("10.0.1.3") == "a:1"  # the round robin is back at a:1
    assert lb.next_endpoint("10.0.1.3") == "a:1"  # sticky again
    lb.cleanup()
    assert set(lb.sessions) == {"10.0.1.3"}  # 10.0.1.4 idle for 19.9 s is forgotten


def test_reset_after_a_failed_dial_moves_the_client_on():
    lb = RoundRobin("ClientIP", 0)
    assert lb.ttl == DEFAULT_AFFINITY_SECONDS
    lb.update(["a:1", "b:1"])
    assert lb.next_endpoint("c") == "a:1"
    assert lb.next_endpoint("c", reset=True) == "b:1"
    assert lb.next_endpoint("c") == "b:1"


def test_endpoint_updates():
    lb = RoundRobin("ClientIP", 100)
    lb.update(["a:1", "b:1", "c:1"])
    assert lb.next_endpoint("x") == "a:1"
    assert lb.next_endpoint("y") == "b:1"
    assert not lb.update(["c:1", "b:1", "a:1"])  # same set: nothing changes
    assert lb.index == 2
    assert lb.update(["b:1", "c:1"])  # a:1 gone: its client forgotten, round robin restarts
    assert set(lb.sessions) == {"y"} and lb.index == 0
    assert lb.next_endpoint("x") == "b:1"
    assert lb.update([])
    assert lb.sessions == {} and lb.endpoints == []
    assert not lb.update([])


def test_parse_state():
    problems = []
    specs = parse_state({"services": [
        {"name": SVC, "proxy_port": 10400, "endpoints": ["10.0.1.2:8080", "[fd00::1]:80",
                                                         "nonsense"]},
        {"name": "dns:", "protocol": "udp", "proxy_port": 10401,
         "session_affinity": "ClientIP", "affinity_timeout": 0},
        {"name": "bad", "proxy_port": 70000},
        {"proxy_port": 1},
        {"name": SVC, "proxy_port": 10402},
    ]}, problems)
    assert specs == {
        (SVC, "TCP"): ServiceSpec(SVC, "TCP", 10400, ("10.0.1.2:8080", "[fd00::1]:80")),
        ("dns:", "UDP"): ServiceSpec("dns:", "UDP", 10401, (), "ClientIP", 10800),
    }
    assert len(problems) == 4
    assert parse_state({}) == {}
    with pytest.raises(ValueError):
        parse_state([])


def test_split_host_port():
    assert split_host_port("10.0.2.2:8080") == ("10.0.2.2", 8080)
    assert split_host_port("[fd00::1]:53") == ("fd00::1", 53)
    for bad in ("10.0.2.2", "host:80", "10.0.2.2:0", ":80"):
        with pytest.raises(ValueError):
            split_host_port(bad)


# --- the real process --------------------------------------------------------------------

def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def start_tcp(handler_fn):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            handler_fn(self.request)

    server = Backend(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture(scope="module")
def backends():
    """Two pods answering their own name, one echoing after the client half-closes."""
    def reply_name(name):
        return lambda conn: conn.sendall(name.encode())

    def after_eof(conn):
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
        conn.sendall(b"got " + data)

    servers = {"A": start_tcp(reply_name("A")), "B": start_tcp(reply_name("B")),
               "echo": start_tcp(after_eof)}
    yield {name: f"127.0.0.1:{s.server_address[1]}" for name, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def udp_echo():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            sock.sendto(data, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    done.set()
    thread.join(1)
    sock.close()


class Proxy:
    """The proxy process; ``lines`` is its stdout so far."""

    def __init__(self, state_path: Path):
        self.state_path = state_path
        self.proc = None
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()

    def write(self, *services):
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": list(services)}))
        os.replace(tmp, self.state_path)

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubenet.userspace_proxy", "--state", str(self.state_path),
             "--listen-ip", "127.0.0.1"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for(self, pattern, timeout=3.0):
        """The first line from now on matching ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.lines}") from None
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(3)
        self.proc.stdout.close()


@pytest.fixture
def proxy(tmp_path):
    p = Proxy(tmp_path / "state.json")
    yield p
    p.stop()


def service(port, endpoints, **extra):
    return {"name": SVC, "protocol": "TCP", "proxy_port": port, "endpoints": endpoints, **extra}


def run(proxy, *services):
    proxy.write(*services)
    proxy.start()
    for spec in services:
        proxy.wait_for(rf"^listen 127\.0\.0\.1:{spec['proxy_port']}/{spec['protocol']} ")


def fetch(port, send=b""):
    with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
        if send:
            conn.sendall(send)
            conn.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data.decode()


def test_round_robin_through_a_second_connection(proxy, backends):
    port = free_port()
    run(proxy, service(port, [backends["A"], backends["B"]]))
    assert "".join(fetch(port) for _ in range(6)) == "ABABAB"
    line = proxy.wait_for(r" -> ")
    assert re.fullmatch(rf"127\.0\.0\.1:\d+ -> {SVC} -> {backends['A']}", line)
    assert proxy.wait_for(r" -> ").endswith(f"-> {backends['B']}")


def test_client_ip_affinity_sticks(proxy, backends):
    port = free_port()
    run(proxy, service(port, [backends["A"], backends["B"]], session_affinity="ClientIP",
                       affinity_timeout=60))
    answers = {fetch(port) for _ in range(4)}
    assert answers == {"A"}


def test_state_file_changes_are_picked_up(proxy, backends):
    port, other = free_port(), free_port()
    run(proxy, service(port, [backends["A"], backends["B"]]))
    assert fetch(port) == "A"
    proxy.write(service(port, [backends["B"]]))
    proxy.wait_for(rf"^endpoints {SVC} {backends['B']}$")
    assert {fetch(port) for _ in range(4)} == {"B"}
    proxy.write(service(other, [backends["A"]]))  # the proxy port moves
    proxy.wait_for(rf"^stop 127\.0\.0\.1:{port}/TCP {SVC}$")
    proxy.wait_for(rf"^listen 127\.0\.0\.1:{other}/TCP {SVC}$")
    assert fetch(other) == "A"
    with pytest.raises(ConnectionRefusedError):
        fetch(port)


def test_a_refused_endpoint_is_skipped(proxy, backends):
    port, dead = free_port(), free_port()
    run(proxy, service(port, [backends["A"], f"127.0.0.1:{dead}", backends["B"]]))
    assert [fetch(port) for _ in range(4)] == ["A", "B", "A", "B"]
    proxy.wait_for(rf"-> {backends['B']} \(skipped 127\.0\.0\.1:{dead}: connection refused\)$")


def test_no_endpoints_closes_the_connection_at_once(proxy):
    port = free_port()
    run(proxy, service(port, []))
    start = time.monotonic()
    assert fetch(port) == ""
    assert time.monotonic() - start < 1
    proxy.wait_for(rf"-> {SVC} -> no endpoints, closed$")


def test_half_close_reaches_the_backend(proxy, backends):
    port = free_port()
    run(proxy, service(port, [backends["echo"]]))
    assert fetch(port, send=b"hello" * 1000) == "got " + "hello" * 1000


def test_udp_echo_through_the_proxy(proxy, udp_echo):
    port = free_port(socket.SOCK_DGRAM)
    run(proxy, {"name": "default/dns:", "protocol": "UDP", "proxy_port": port,
                "endpoints": [udp_echo]})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        for payload in (b"abc123", b"second"):
            client.sendto(payload, ("127.0.0.1", port))
            data, source = client.recvfrom(65535)
            assert (data, source) == (payload, ("127.0.0.1", port))  # from the proxy socket
        me = client.getsockname()[1]
        proxy.wait_for(rf"^127\.0\.0\.1:{me} -> default/dns: -> {udp_echo} \(udp\)$")
        time.sleep(0.5)  # longer than the 250 ms idle timeout: the flow is dropped
        client.sendto(b"third", ("127.0.0.1", port))
        assert client.recvfrom(65535)[0] == b"third"
        proxy.wait_for(rf"^127\.0\.0\.1:{me} -> default/dns: -> {udp_echo} \(udp\)$")
    flows = [line for line in proxy.lines if "(udp)" in line]
    assert len(flows) == 2


def test_sigterm_ends_the_process(proxy, backends):
    port = free_port()
    run(proxy, service(port, [backends["A"]]))
    proxy.proc.terminate()
    assert proxy.proc.wait(3) == 0
    proxy.wait_for(r"^exit$")
