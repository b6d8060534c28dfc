"""Inside the lab: send one real TCP SYN with scapy and capture its walk, hop by hop.

Two halves, both inside the sandbox:

- :class:`Tracer` lives in the agent. It checks the request against the lab (which pod,
  is it running, which nodes), hands it to the tracer helper and turns what comes back
  into a :class:`kubenet.trace.Trace`.
- The *tracer helper* (``python -m kubenet.packets``, started by the agent on the first
  trace and kept for the next ones) does the packet work. It imports scapy once (so only
  the first trace pays for it, and ``kubenet up`` never does), keeps one
  ``xtables-monitor --trace`` running in every node (``nft monitor trace`` in a node whose
  kube-proxy runs in nftables mode), and for each trace:

  1. for a name, asks the cluster DNS from the source's namespace (a real query, built
     with scapy, through the source's resolv.conf search list);
  2. adds rules to a small ``inet kubenet-trace`` nftables table in every node: set
     ``nftrace`` on the traced packet only (matched by its IP ID, which no rewrite
     changes) and on TCP SYNs (a proxy's second connection), and drop the RST the
     client's kernel sends when the SYN-ACK finds no socket (so the connection stays
     half-open, and its conntrack entry in SYN_RECV, until the tracer resets it);
  3. opens an AF_PACKET socket in every network namespace of the lab (a socket keeps the
     namespace it was made in), sends the SYN from the source's namespace (built with
     scapy, sent through a raw IP socket opened there), and reads every interface the SYN
     and its SYN-ACK crossed;
  4. when a node itself answered (a userspace kube-proxy), completes the handshake so
     the proxy opens its second connection, and follows that one too;
  5. reads each node's conntrack entries, resets the connection (its own RST), waits for
     every monitor to have printed everything (a sentinel packet each), and flushes the
     rules (the empty table and chains stay: hooking chains in and out costs an RCU
     grace period each time).

Namespaces are per thread: the helper enters them with ``setns(2)`` only from its main
thread and always goes back to its own (the sandbox's) namespace; the agent never does.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import trace as tr
from .errors import BadRequest, KubenetError, NotFound, from_wire
from .net import NETNS_DIR
from .runtime import POD_PATH, node_environment, resolv_conf

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Tracer", "tracer", "main"]

CLONE_NEWNET = 0x40000000
SO_TIMESTAMPNS = 35
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772
REPLY_TIMEOUT = 1.0  # a lab answers in well under a millisecond
LEG2_TIMEOUT = 3.0  # the userspace proxy tries endpoints for up to 0.25 s each
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
          5: "REFUSED"}
XTABLES, NFT = "xtables", "nft"  # the two kinds of rule monitor
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWGEN, NFT_MSG_GETGEN, NFTA_GEN_ID = 10, 15, 16, 1
NFT_CTX_OUTPUT_JSON = 1 << 4


# -- the agent's side --------------------------------------------------------------------------
class Tracer:
    """The agent's handle on the tracer helper: one trace at a time."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = {"PATH": POD_PATH, **node_environment()}
        return subprocess.Popen([sys.executable, "-m", "kubenet.packets"], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                bufsize=1)

    def _ask(self, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                self.proc = None
                raise KubenetError("error: the lab's packet tracer stopped (see agent.log)"
                                   ) from None
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else ""
            if not line:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise KubenetError("error: the lab's packet tracer " + (
                    "stopped" if ready else f"did not answer within {timeout:g}s")
                    + " (see agent.log)")
        reply = json.loads(line)
        if not reply["ok"]:
            raise from_wire(reply["error"], reply["message"])
        return reply["result"]

    def request(self, source: str, dest: str, namespace: str = "default") -> dict[str, Any]:
        """What the helper needs: the source's namespace and resolver, the nodes."""
        host, port = tr.parse_destination(dest)
        cluster = self.cluster
        topo = cluster.topology
        with cluster.lock:
            if source in cluster.nodes or source in (topo.gateway_ns, topo.external_ns):
                ns = source
                # Not a pod: ask the cluster DNS as a pod of the default namespace would.
                resolv = resolv_conf("default", _cluster_dns())
            else:
                pod = cluster._pod(source, namespace)
                if pod.deleting or pod.sandbox is None or \
                        not any(c.state == "running" for c in pod.containers):
                    phase = pod.phase
                    if phase in ("Succeeded", "Failed"):
                        raise BadRequest("error: cannot trace from a completed pod; current "
                                         f"phase is {phase}")
                    raise BadRequest(f'error: cannot trace from pod "{source}": it is not '
                                     f"running ({pod.status_reason})")
                ns = pod.netns
                try:
                    resolv = (pod.sandbox.workdir / "etc" / "resolv.conf").read_text()
                except OSError:
                    resolv = resolv_conf(namespace, _cluster_dns())
            nodes = sorted(cluster.nodes)
            # Which tool can print the node's kube-proxy rules: nft for its nftables table.
            monitors = {n: NFT if getattr(cluster.proxies.get(n), "mode", "") == "nftables"
                        else XTABLES for n in nodes}
        return {"op": "trace", "source": source, "source_ns": ns, "destination": dest,
                "host": host, "port": port, "resolv": resolv, "nodes": nodes,
                "dns_server": _cluster_dns(), "monitors": monitors}

    def trace(self, source: str, dest: str, namespace: str = "default") -> tr.Trace:
        raw = self._ask(self.request(source, dest, namespace))
        return tr.build(raw)



def _cluster_dns() -> str:
    from .cluster import CLUSTER_DNS

    return CLUSTER_DNS


_TRACER: Tracer | None = None
_TRACER_LOCK = threading.Lock()


def tracer(cluster: Cluster) -> Tracer:
    """The agent's one tracer (its helper starts on the first trace)."""
    global _TRACER
    with _TRACER_LOCK:
        if _TRACER is None or _TRACER.cluster is not cluster:
            _TRACER = Tracer(cluster)
        return _TRACER


# -- the helper: namespaces --------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Namespaces:
    """Enter a lab namespace from the helper's main thread, and always come back."""

    def __init__(self) -> None:
        self.home = os.open("/proc/self/ns/net", os.O_RDONLY)

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        try:
            fd = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f'error: network namespace "{name}" is gone') from None
        try:
            _setns(fd)
            try:
                yield
            finally:
                _setns(self.home)
        finally:
            os.close(fd)


def _nsenter(name: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR}/{name}", "--", *argv]


def _run_all(commands: list[tuple[list[str], str]]) -> list[subprocess.CompletedProcess]:
    """Run commands side by side (each ``nft`` or ``conntrack`` is its own process)."""
    procs = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv, _ in commands]
    out = []
    for proc, (argv, stdin) in zip(procs, commands, strict=True):
        stdout, stderr = proc.communicate(stdin)
        out.append(subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr))
    return out


class Nft:
    """nftables commands in the lab's nodes, in this process through libnftables (the
    library the ``nft`` command is made of), or with the ``nft`` command where the library
    is missing. One context per node, kept: it holds its netlink socket in the node's
    namespace (never do that for a pod: the socket would keep a deleted pod's namespace,
    and its veth, alive)."""

    def __init__(self, namespaces: Namespaces) -> None:
        self.namespaces = namespaces
        self.contexts: dict[str, int] = {}
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            self.lib = None
            return
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        self.lib = lib

    def listing(self, ns: str, command: str) -> str:
        """What ``nft -j COMMAND`` prints in one node (a listing, as JSON); '' on error."""
        if self.lib is None:
            (done,) = _run_all([(_nsenter(ns, "nft", "-j", *command.split()), "")])
            return done.stdout if done.returncode == 0 else ""
        try:
            with self.namespaces.inside(ns):
                ctx = self.lib.nft_ctx_new(0)
                try:
                    self.lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
                    self.lib.nft_ctx_buffer_output(ctx)
                    self.lib.nft_ctx_buffer_error(ctx)
                    if self.lib.nft_run_cmd_from_buffer(ctx, command.encode()) != 0:
                        return ""
                    return (self.lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
                finally:
                    self.lib.nft_ctx_free(ctx)
        except (OSError, KubenetError):
            return ""

    def run(self, scripts: dict[str, str]) -> list[str]:
        """Run each node's script; the errors, as ``node: message``."""
        if self.lib is None:
            done = _run_all([(_nsenter(ns, "nft", "-f", "-"), text)
                             for ns, text in scripts.items()])
            return [f"{ns}: {p.stderr.strip()}" for ns, p in zip(scripts, done, strict=True)
                    if p.returncode != 0]
        errors = []
        for ns, text in scripts.items():
            try:
                # Inside the namespace even with a context: libnftables reopens its socket
                # where it runs if it has to.
                with self.namespaces.inside(ns):
                    ctx = self.contexts.get(ns)
                    if ctx is None:
                        ctx = self.contexts[ns] = self.lib.nft_ctx_new(0)
                        self.lib.nft_ctx_buffer_error(ctx)
                    if self.lib.nft_run_cmd_from_buffer(ctx, text.encode()) != 0:
                        message = self.lib.nft_ctx_get_error_buffer(ctx) or b""
                        errors.append(f"{ns}: {message.decode(errors='replace').strip()}")
            except (OSError, KubenetError) as err:
                errors.append(f"{ns}: {err}")
        return errors


def _probe(ip_id: int) -> bytes:
    """A UDP packet from 127.0.0.1 to 127.0.0.1:9 with this IP ID (the kernel fills in the
    length and checksum of a raw socket's header)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, ip_id, 0, 64, 17, 0,
                     socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
    return ip + struct.pack("!HHHH", 9, 9, 8, 0)


def getgen_request(seq: int) -> bytes:
    """An nfnetlink NFT_MSG_GETGEN request: the generation of the namespace's ruleset."""
    return struct.pack("=IHHII", 20, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, 1, seq,
                       0) + struct.pack("=BBH", 0, 0, 0)


def parse_newgen(data: bytes) -> int | None:
    """The NFT_MSG_NEWGEN answer -> the generation (every committed change adds one)."""
    if len(data) < 20:
        return None
    length, kind = struct.unpack_from("=IH", data)
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
        return None
    offset = 20  # nlmsghdr, nfgenmsg
    while offset + 4 <= min(length, len(data)):
        alen, atype = struct.unpack_from("=HH", data, offset)
        if alen < 4:
            break
        if atype & 0x3FFF == NFTA_GEN_ID and alen >= 8:
            return struct.unpack_from("!I", data, offset + 4)[0]
        offset += (alen + 3) & ~3
    return None


class Monitor:
    """The kernel's trace of one node's rules: ``xtables-monitor --trace`` (iptables'
    rules), or ``nft monitor trace`` (any nftables table, such as kube-proxy's in its
    nftables mode).

    ``nft monitor trace`` prints each rule from the ruleset it loaded when it started; it
    does not follow later rules (kube-proxy replaces its table on every change). So an nft
    monitor remembers the ruleset's generation it loaded (``gen``) and is started again when
    the node's generation moved on, other than by the tracer's own commits."""

    def __init__(self, node: str, namespaces: Namespaces, kind: str = XTABLES) -> None:
        self.node = node
        self.kind = kind
        self.nl: socket.socket | None = None
        self.gen: int | None = None
        self.base_chains: dict[str, str] = {}
        with namespaces.inside(node):
            self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.raw.setsockopt(socket.SOL_IP, socket.IP_HDRINCL, 1)
            if kind == NFT:
                self.nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
                self.nl.settimeout(1.0)
        if kind == NFT:
            self.tool, self.needle = tr.NFT_MONITOR, " ip id {} "
            self.gen = self.generation()  # before nft reads the ruleset
            argv = ["nft", "monitor", "trace"]
        else:
            self.tool, self.needle = tr.XTABLES_MONITOR, " ID={} "
            # -4: iptables' own (ip family) tables only, not the inet table that turns
            # tracing on.
            argv = ["xtables-monitor", "-4", "--trace"]
        self.proc = subprocess.Popen(_nsenter(node, "stdbuf", "-oL", *argv),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, start_new_session=True)
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True, name=f"monitor-{node}").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def name(self) -> str:
        return "nft monitor" if self.kind == NFT else "xtables-monitor"

    def generation(self) -> int | None:
        """The node's ruleset generation now (nft monitors only; None if unknown)."""
        if self.nl is None:
            return None
        try:
            seq = random.randrange(1, 1 << 31)
            self.nl.send(getgen_request(seq))
            for _ in range(4):  # an answer to an earlier, timed-out request comes first
                data = self.nl.recv(65536)
                if len(data) >= 16 and struct.unpack_from("=I", data, 8)[0] == seq:
                    return parse_newgen(data)
        except OSError:
            pass
        return None

    def current(self) -> bool:
        """It can print every rule of the node: nothing changed since it read them."""
        return self.kind != NFT or (self.gen is not None and self.gen == self.generation())

    def send_probe(self, sentinel: int) -> None:
        with contextlib.suppress(OSError):
            self.raw.sendto(_probe(sentinel), ("127.0.0.1", 0))

    def find(self, sentinel: int, start: int) -> int | None:
        needle = self.needle.format(sentinel)
        for i in range(start, len(self.lines)):
            line = self.lines[i] + " "
            if needle in line and (self.kind != NFT or " packet: " in line):
                return i
        return None

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.raw.close()
        if self.nl is not None:
            self.nl.close()


def sync_monitors(monitors: dict[str, Monitor], sentinel: int, timeout: float,
                  ) -> dict[str, int | None]:
    """Send a sentinel packet in every node until its monitor prints it: every event
    before it has been printed. Node -> the index of its line (None: no answer)."""
    starts = {node: len(mon.lines) for node, mon in monitors.items()}
    found: dict[str, int | None] = dict.fromkeys(monitors)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = [n for n in monitors if found[n] is None and monitors[n].alive]
        if not waiting:
            break
        for node in waiting:
            monitors[node].send_probe(sentinel)
        resend = min(time.monotonic() + 0.1, deadline)
        for node in waiting:
            mon = monitors[node]
            with mon.changed:
                mon.changed.wait_for(
                    lambda m=mon, n=node: m.find(sentinel, starts[n]) is not None or
                    not m.alive, max(resend - time.monotonic(), 0))
                found[node] = mon.find(sentinel, starts[node])
    return found


# -- the helper: captures ----------------------------------------------------------------------
RTM_GETLINK, NLMSG_DONE, NLMSG_ERROR = 18, 3, 2
IFLA_IFNAME, IFLA_MASTER = 3, 10


def parse_links(data: bytes) -> tuple[dict[int, str], dict[int, int], bool]:
    """RTM_NEWLINK messages -> (index -> name, index -> master index, done)."""
    names: dict[int, str] = {}
    masters: dict[int, int] = {}
    done = False
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            done = True
        elif kind == 16:  # RTM_NEWLINK
            index = struct.unpack_from("=i", data, offset + 16 + 4)[0]
            attr = offset + 32
            end = offset + length
            while attr + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, attr)
                if alen < 4:
                    break
                value = data[attr + 4:attr + alen]
                if atype == IFLA_IFNAME:
                    names[index] = value.rstrip(b"\0").decode(errors="replace")
                elif atype == IFLA_MASTER and len(value) >= 4:
                    masters[index] = struct.unpack("=I", value[:4])[0]
                attr += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return names, masters, done


def _bridge_ports() -> dict[str, str]:
    """Interface -> its bridge, in the current namespace (an rtnetlink dump)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as nl:
        nl.settimeout(1.0)
        header = struct.pack("=IHHII", 32, RTM_GETLINK, 0x301, 1, 0)  # REQUEST | DUMP
        nl.send(header + struct.pack("=BxHiII", 0, 0, 0, 0, 0))
        names: dict[int, str] = {}
        masters: dict[int, int] = {}
        while True:
            n, m, done = parse_links(nl.recv(65536))
            names.update(n)
            masters.update(m)
            if done:
                break
    return {names[i]: names.get(m, str(m)) for i, m in masters.items() if i in names and m}


class Capture:
    """An AF_PACKET socket in every namespace of the lab, for the length of one trace."""

    def __init__(self, namespaces: Namespaces) -> None:
        self.sockets: dict[socket.socket, str] = {}
        self.masters: dict[str, dict[str, str]] = {}
        self.packets: list[tr.Packet] = []
        for ns in sorted(os.listdir(NETNS_DIR)):
            try:
                with namespaces.inside(ns):
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                      socket.htons(ETH_P_ALL))
                    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                    s.setblocking(False)
                    self.sockets[s] = ns
                    self.masters[ns] = _bridge_ports()
            except (OSError, KubenetError):
                continue  # a pod deleted meanwhile

    def poll(self, timeout: float) -> None:
        """Read whatever arrived (waiting up to ``timeout`` for something)."""
        readable, _, _ = select.select(list(self.sockets), [], [], max(timeout, 0))
        for s in readable:
            ns = self.sockets[s]
            while True:
                try:
                    data, anc, _flags, addr = s.recvmsg(256, 64)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if addr[3] not in (ARPHRD_ETHER, ARPHRD_LOOPBACK) or addr[1] != 0x0800:
                    continue
                fields = tr.parse_frame(data)
                if fields is None or fields["proto"] != "tcp":
                    continue
                ts = 0
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("=qq", value[:16])
                        ts = sec * 1_000_000_000 + nsec
                self.packets.append(tr.Packet(
                    ns=ns, iface=addr[0], dir="out" if addr[2] == PACKET_OUTGOING else "in",
                    ts=ts or time.time_ns(), **fields))

    def close(self) -> None:
        """Close every socket. Each close waits for an RCU grace period (packet_release's
        synchronize_net), so they close side by side and share one."""
        threads = [threading.Thread(target=s.close) for s in self.sockets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.sockets = {}


# -- the helper: one trace ---------------------------------------------------------------------
class Helper:
    def __init__(self) -> None:
        started = time.monotonic()
        # scapy's layers (not scapy.all): about 0.4 s, once, in this process only.
        from scapy.layers.dns import DNS, DNSQR
        from scapy.layers.inet import IP, TCP

        self.DNS, self.DNSQR, self.IP, self.TCP = DNS, DNSQR, IP, TCP
        self.import_time = time.monotonic() - started
        # The kernel stamps packets only while some socket asks for timestamps, and turns
        # that on a moment after the first one asks (a deferred static key): a socket that
        # keeps asking for as long as the helper lives, so every capture has its time.
        self.clock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.clock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        time.sleep(0.05)
        self.namespaces = Namespaces()
        self.nft = Nft(self.namespaces)
        self.monitors: dict[str, Monitor] = {}

    # DNS --------------------------------------------------------------------------------------
    def resolve(self, req: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        server, names = tr.search_names(req["host"], req["resolv"])
        server = server or req["dns_server"]
        asked: list[dict[str, Any]] = []
        for name in names:
            with self.namespaces.inside(req["source_ns"]):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with s:
                s.settimeout(1.0)
                query = self.DNS(id=random.randrange(1, 65536), rd=1,
                                 qd=self.DNSQR(qname=name, qtype="A"))
                try:
                    s.connect((server, 53))
                    s.send(bytes(query))
                    answer = self.DNS(s.recv(4096))
                except TimeoutError:
                    raise NotFound(f"error: lookup {req['host']} on {server}:53 from "
                                   f"{req['source']}: no answer within 1s") from None
                except OSError as err:
                    raise NotFound(f"error: lookup {req['host']} on {server}:53 from "
                                   f"{req['source']}: {err.strerror or err}") from None
                client = "{}:{}".format(*s.getsockname())
            ips = [str(rr.rdata) for rr in (answer.an or []) if getattr(rr, "type", 0) == 1]
            asked.append({"question": name, "qtype": "A",
                          "rcode": RCODES.get(answer.rcode, str(answer.rcode)),
                          "answers": ips, "server": f"{server}:53", "client": client})
            if ips:
                return ips[0], asked
        raise NotFound(f"error: lookup {req['host']} on {server}:53: no such host (asked "
                       + ", ".join(f"{q['question']} {q['rcode']}" for q in asked) + ")")

    # monitors ---------------------------------------------------------------------------------
    def _monitor(self, node: str, kind: str = XTABLES) -> Monitor:
        """The node's monitor of this kind, started again if it stopped or (nft) if the
        node's rules changed since it read them."""
        mon = self.monitors.get(node)
        if mon is None or not mon.alive or mon.kind != kind or not mon.current():
            if mon is not None:
                mon.close()
            mon = self.monitors[node] = Monitor(node, self.namespaces, kind)
            if kind == NFT:
                mon.base_chains = tr.nft_base_chains(self.nft.listing(node, "list chains"))
        return mon

    def _nft(self, scripts: dict[str, str]) -> list[str]:
        """Run the tracer's own nft scripts. An nft monitor that knew every rule still does
        when the generation moved by exactly this one commit (the tracer's table's rules
        are never looked up: its events are left out)."""
        watched = {n: m for n, m in self.monitors.items()
                   if n in scripts and m.kind == NFT and m.gen is not None}
        current = [n for n, m in watched.items() if m.generation() == m.gen]
        errors = self.nft.run(scripts)
        for node in current:
            mon = watched[node]
            if mon.gen is not None and mon.generation() == mon.gen + 1:
                mon.gen += 1
        return errors

    # the trace --------------------------------------------------------------------------------
    def trace(self, req: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        timings: dict[str, float] = {}

        def lap(name: str) -> None:
            timings[name] = round(time.monotonic() - started - sum(timings.values()), 4)

        notes: list[str] = []
        source_ns, nodes = req["source_ns"], list(req["nodes"])
        dns: list[dict[str, Any]] = []
        ip = req["host"]
        if not tr._is_ipv4(ip):
            ip, dns = self.resolve(req)
        port = int(req["port"])
        lap("dns")
        with self.namespaces.inside(source_ns):
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with probe:
            try:
                probe.connect((ip, port))  # the kernel's choice of source address
                source_ip = probe.getsockname()[0]
            except OSError as err:
                raise BadRequest(f"error: {req['source']} has no route to {ip}: "
                                 f"{err.strerror}") from None

        rng = random.SystemRandom()
        ip_id, start_id, end_id = rng.sample(range(1, 65536), 3)
        sport = rng.randint(*tr.TRACE_PORTS)
        isn = rng.randrange(1, 1 << 32)

        kinds = {n: req.get("monitors", {}).get(n, XTABLES) for n in nodes}
        monitors = {n: self._monitor(n, kinds[n]) for n in nodes}
        scripts = {n: tr.nft_script(trace_ids=(ip_id, start_id, end_id), trace_syns=True,
                                    drop_rst=(source_ip, sport, ip_id),
                                    local_source=n == source_ns)
                   for n in nodes}
        errors = self._nft(scripts)
        lap("nft_on")
        if errors:
            self._nft({ns: tr.nft_off_script() for ns in scripts})
            raise KubenetError("error: cannot switch packet tracing on: " + "; ".join(errors))
        capture = None
        try:
            marks = sync_monitors(monitors, start_id, timeout=3.0)
            for attempt in range(3):  # rules changed meanwhile: an nft monitor reads them
                stale = [n for n, m in monitors.items() if not m.current()]
                if not stale or attempt == 2:
                    break
                for node in stale:
                    monitors[node] = self._monitor(node, kinds[node])
                marks.update(sync_monitors({n: monitors[n] for n in stale}, start_id,
                                           timeout=3.0))
            notes += [f"the rules of {n} kept changing while the trace began: {tr.NFT_MONITOR} "
                      "may show some of them as they were before" for n in stale]
            for node, mark in marks.items():
                if mark is None:
                    notes.append(f"{monitors[node].name} on {node} did not answer: no rules "
                                 "shown for it")
            lap("monitor_sync")
            capture = Capture(self.namespaces)
            lap("capture_open")
            raw = self._walk(req, capture, source_ns, nodes, source_ip, ip, port, sport,
                             ip_id, isn, notes)
            lap("walk")
            ready = {n: m for n, m in monitors.items() if marks[n] is not None}
            ends = sync_monitors(ready, end_id, timeout=2.0)
            monitor_text = {}
            for node, mon in ready.items():
                end = ends[node]
                if end is None:
                    notes.append(f"{mon.name} on {node} stopped answering: its rules may be "
                                 "incomplete")
                    end = len(mon.lines)
                with mon.changed:
                    monitor_text[node] = "\n".join(mon.lines[marks[node] + 1:end])
                    del mon.lines[:end + 1]  # what later traces need comes after
            capture.poll(0)
            lap("monitor_flush")
        finally:
            if capture is not None:
                capture.close()
            leftover = self._nft({ns: tr.nft_off_script() for ns in scripts})
            if leftover:
                notes.append("could not remove the tracing table: " + "; ".join(leftover))
            lap("nft_off")
        raw.update(monitor=monitor_text, dns=dns, notes=notes,
                   monitor_tool={n: monitors[n].tool for n in monitor_text},
                   base_chains={n: monitors[n].base_chains for n in monitor_text
                                if monitors[n].kind == NFT},
                   elapsed=round(time.monotonic() - started, 4),
                   import_time=round(self.import_time, 3), timings=timings)
        return raw

    def _walk(self, req: dict[str, Any], capture: Capture, source_ns: str, nodes: list[str],
              source_ip: str, ip: str, port: int, sport: int, ip_id: int, isn: int,
              notes: list[str]) -> dict[str, Any]:
        IP, TCP = self.IP, self.TCP
        with self.namespaces.inside(source_ns):
            # What scapy's L3RawSocket sends through (without its AF_PACKET receiving half,
            # whose close alone would cost an RCU grace period): a raw IP socket.
            raw_socket = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        raw_socket.setsockopt(socket.SOL_IP, socket.IP_HDRINCL, 1)

        def send(packet: Any) -> None:
            raw_socket.sendto(bytes(packet), (packet.dst, 0))

        try:
            send(IP(src=source_ip, dst=ip, id=ip_id) /
                 TCP(sport=sport, dport=port, flags="S", seq=isn, window=64240))

            def reply_at_source() -> tr.Packet | None:
                for p in capture.packets:
                    if p.ns == source_ns and p.dir == "in" and p.answers(isn):
                        return p
                return None

            deadline = time.monotonic() + REPLY_TIMEOUT
            reply = None
            while reply is None and time.monotonic() < deadline:
                capture.poll(deadline - time.monotonic())
                reply = reply_at_source()
            capture.poll(0)
            leg2 = None
            if reply is None:
                notes.append(f"no reply reached {req['source']} within {REPLY_TIMEOUT:g}s")
            elif reply.flags & tr.SYN:
                proxy_ns = self._answered_by_node(capture.packets, ip_id, isn, nodes)
                if proxy_ns:
                    # A node answered: a proxy. Finish the handshake so it connects onward.
                    send(IP(src=source_ip, dst=ip, id=ip_id) /
                         TCP(sport=sport, dport=port, flags="A", seq=isn + 1,
                             ack=reply.seq + 1, window=64240))
                    leg2 = self._follow_leg2(capture, proxy_ns, ip_id, reply.ts, notes)
            conntrack = self._conntrack(nodes)
            if reply is not None and reply.flags & tr.SYN:
                send(IP(src=source_ip, dst=ip, id=ip_id) /
                     TCP(sport=sport, dport=port, flags="R", seq=isn + 1, window=0))
        finally:
            raw_socket.close()
        capture.poll(0)
        wanted = [p for p in capture.packets
                  if (p.ip_id == ip_id and p.is_syn) or p.answers(isn) or
                  (leg2 is not None and ((p.is_syn and p.ip_id == leg2["ip_id"] and
                                          p.seq == leg2["seq"]) or p.answers(leg2["seq"])))]
        # Each node's entries for these connections name, as their original source port,
        # the tracer's or one the SYNs were seen with after a rewrite; the rest stays.
        ports = {f" sport={p.sport} " for p in wanted if p.is_syn} | {f" sport={sport} "}
        conntrack = {node: "".join(line for line in text.splitlines(keepends=True)
                                   if any(port in line for port in ports))
                     for node, text in conntrack.items()}
        return {"source": req["source"], "source_ns": source_ns, "source_ip": source_ip,
                "destination": req["destination"] if tr._is_ipv4(req["host"])
                else f"{req['destination']} ({ip}:{port})",
                "asked": f"{ip}:{port}", "ip_id": ip_id, "isn": isn, "sport": sport,
                "packets": [p.__dict__ for p in wanted],
                "masters": capture.masters, "conntrack": conntrack, "leg2": leg2}

    @staticmethod
    def _answered_by_node(packets: list[tr.Packet], ip_id: int, isn: int, nodes: list[str],
                          ) -> str:
        """The node whose own socket answered the SYN (the SYN ended there and the SYN-ACK
        started there), or ''."""
        ordered = tr.order(packets)
        syns = [p for p in ordered if p.ip_id == ip_id and p.is_syn]
        answers = [p for p in ordered if p.answers(isn)]
        if syns and answers and syns[-1].ns == answers[0].ns and syns[-1].ns in nodes:
            return syns[-1].ns
        return ""

    @staticmethod
    def _follow_leg2(capture: Capture, proxy_ns: str, ip_id: int, after: int,
                     notes: list[str]) -> dict[str, int] | None:
        deadline = time.monotonic() + LEG2_TIMEOUT
        first = None
        while time.monotonic() < deadline:
            capture.poll(min(0.05, max(deadline - time.monotonic(), 0)))
            first = first or tr.leg2_syn(capture.packets, proxy_ns, ip_id, after)
            if first is not None and any(p.ns == proxy_ns and p.dir == "in" and
                                         p.answers(first.seq) for p in capture.packets):
                break
        if first is None:
            notes.append(f"{proxy_ns} answered the SYN itself but opened no second connection "
                         f"within {LEG2_TIMEOUT:g}s")
            return None
        return {"ip_id": first.ip_id, "seq": first.seq}

    def _conntrack(self, nodes: list[str]) -> dict[str, str]:
        """Each node's connection table: /proc/net/nf_conntrack (``conntrack -L -o
        extended``'s format) read from inside the node, else ``conntrack -L``."""
        out, missing = {}, []
        for node in nodes:
            try:
                with self.namespaces.inside(node):
                    out[node] = Path("/proc/self/net/nf_conntrack").read_text()
            except OSError:
                missing.append(node)
        done = _run_all([(_nsenter(n, "conntrack", "-L", "-o", "extended"), "")
                         for n in missing])
        out.update({n: p.stdout for n, p in zip(missing, done, strict=True)})
        return out

    def close(self) -> None:
        for mon in self.monitors.values():
            mon.close()


def main() -> None:
    """The helper: one JSON request per line on stdin, one JSON reply per line."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (scapy's warnings) goes to the agent's log
    # No PR_SET_PDEATHSIG: it fires when the agent *thread* that started us ends. The
    # helper ends when the agent closes its stdin, or with the sandbox's PID namespace.
    with contextlib.suppress(AttributeError, ValueError):
        import faulthandler

        faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: where is it? (agent.log)
    helper = Helper()
    try:
        for line in sys.stdin:
            try:
                request = json.loads(line)
                if request.get("op") != "trace":
                    raise BadRequest(f"error: unknown tracer request {request.get('op')!r}")
                reply = {"ok": True, "result": helper.trace(request)}
            except KubenetError as err:
                reply = {"ok": False, "error": type(err).__name__, "message": str(err)}
            except Exception as err:  # a bug: say so, keep serving
                traceback.print_exc()
                reply = {"ok": False, "error": "KubenetError",
                         "message": f"error: internal error in the packet tracer: {err!r}"}
            replies.write(json.dumps(reply) + "\n")
    finally:
        helper.close()


if __name__ == "__main__":
    main()
