"""Requests to a lab's agent over its unix socket: length-prefixed JSON, plus passed fds.

A request may carry file descriptors (``kubenet exec`` hands over its terminal, so the
command inside the lab reads and writes the caller's own stdin/stdout/stderr).
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

__all__ = ["send", "receive"]

_HEADER = struct.Struct("!I")
MAX_FDS = 3


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    header = _HEADER.pack(len(payload))
    if fds:
        socket.send_fds(sock, [header], fds)
    else:
        sock.sendall(header)
    sock.sendall(payload)


def _exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the lab's agent closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def receive(sock: socket.socket, with_fds: bool = False) -> tuple[dict[str, Any], list[int]]:
    fds: list[int] = []
    if with_fds:
        header, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, MAX_FDS)
        if not header:
            raise ConnectionError("the connection closed before a request arrived")
        if len(header) < _HEADER.size:
            header += _exactly(sock, _HEADER.size - len(header))
    else:
        header = _exactly(sock, _HEADER.size)
    (length,) = _HEADER.unpack(header)
    return json.loads(_exactly(sock, length)), fds
