"""kubenet.rpc: length-prefixed JSON over a unix socket, with passed file descriptors."""

import os
import socket
import struct
import threading

import pytest

from kubenet import rpc


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def send_in_background(sock, message, fds=None):
    """Send from a thread: a large payload fills the socket buffer until the peer reads."""
    errors = []

    def run():
        try:
            rpc.send(sock, message, fds)
        except Exception as err:  # pragma: no cover - reported by the test
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_round_trip(pair):
    a, b = pair
    message = {"op": "get", "args": ["pods"], "n": 3, "ok": True, "none": None,
               "nested": {"x": [1.5, "y"]}}
    rpc.send(a, message)
    assert rpc.receive(b) == (message, [])


def test_wire_format_is_a_big_endian_length_then_json(pair):
    a, b = pair
    rpc.send(a, {"op": "ping"})
    header = b.recv(4)
    (length,) = struct.unpack("!I", header)
    body = b.recv(length)
    assert body == b'{"op": "ping"}'
    assert length == len(body)


def test_both_directions_and_several_messages_in_a_row(pair):
    a, b = pair
    for i in range(5):
        rpc.send(a, {"i": i})
    assert [rpc.receive(b)[0]["i"] for _ in range(5)] == list(range(5))
    rpc.send(b, {"reply": "ok"})
    assert rpc.receive(a) == ({"reply": "ok"}, [])


def test_unicode_survives(pair):
    a, b = pair
    message = {"log": "héllo ☃ — 日本語", "emoji": "\U0001f600"}
    rpc.send(a, message)
    assert rpc.receive(b)[0] == message


def test_empty_message(pair):
    a, b = pair
    rpc.send(a, {})
    assert rpc.receive(b) == ({}, [])
    rpc.send(a, {})
    assert rpc.receive(b, with_fds=True) == ({}, [])


@pytest.mark.parametrize("with_fds", [False, True])
def test_large_payload(pair, with_fds):
    a, b = pair
    blob = "x" * (3 * 1024 * 1024 + 17)  # > 1 MB, so more than one recv chunk
    message = {"stdout": blob, "tail": "end"}
    thread, errors = send_in_background(a, message)
    got, fds = rpc.receive(b, with_fds=with_fds)
    thread.join(5)
    assert not errors
    assert fds == []
    assert got["tail"] == "end"
    assert len(got["stdout"]) == len(blob)
    assert got["stdout"] == blob


def test_large_payload_with_fds(pair):
    a, b = pair
    r, w = os.pipe()
    try:
        blob = "y" * (2 * 1024 * 1024)
        thread, errors = send_in_background(a, {"argv": ["cat"], "blob": blob}, [w])
        got, fds = rpc.receive(b, with_fds=True)
        thread.join(5)
        assert not errors
        assert got["blob"] == blob
        assert len(fds) == 1
        os.write(fds[0], b"via passed fd")
        os.close(fds[0])
        assert os.read(r, 100) == b"via passed fd"
    finally:
        os.close(r)
        os.close(w)


def test_passed_fds_are_usable(pair):
    a, b = pair
    pipes = [os.pipe() for _ in range(3)]  # stdin, stdout, stderr of a `kubenet exec`
    try:
        rpc.send(a, {"op": "exec", "argv": ["sh"]}, [w for _, w in pipes])
        message, fds = rpc.receive(b, with_fds=True)
        assert message == {"op": "exec", "argv": ["sh"]}
        assert len(fds) == rpc.MAX_FDS == 3
        # New descriptors in this process, referring to the same pipes.
        assert not set(fds) & {w for _, w in pipes}
        for i, fd in enumerate(fds):
            os.write(fd, f"stream {i}".encode())
            os.close(fd)
        assert [os.read(r, 100) for r, _ in pipes] == [b"stream 0", b"stream 1", b"stream 2"]
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_message_with_fds_followed_by_one_without(pair):
    a, b = pair
    r, w = os.pipe()
    try:
        rpc.send(a, {"n": 1}, [w])
        rpc.send(a, {"n": 2})
        first, fds = rpc.receive(b, with_fds=True)
        second, more = rpc.receive(b, with_fds=True)
        assert (first, second, more) == ({"n": 1}, {"n": 2}, [])
        assert len(fds) == 1
        os.close(fds[0])
    finally:
        os.close(r)
        os.close(w)


def test_empty_fd_list_sends_no_fds(pair):
    a, b = pair
    rpc.send(a, {"n": 1}, [])
    assert rpc.receive(b, with_fds=True) == ({"n": 1}, [])


def test_closed_before_a_request(pair):
    a, b = pair
    a.close()
    with pytest.raises(ConnectionError, match="closed before a request arrived"):
        rpc.receive(b, with_fds=True)


def test_closed_before_a_reply(pair):
    a, b = pair
    a.close()
    with pytest.raises(ConnectionError, match="closed the connection"):
        rpc.receive(b)


@pytest.mark.parametrize("with_fds", [False, True])
def test_closed_in_the_middle_of_a_message(pair, with_fds):
    a, b = pair
    a.sendall(struct.pack("!I", 100) + b'{"op": ')
    a.close()
    with pytest.raises(ConnectionError):
        rpc.receive(b, with_fds=with_fds)


@pytest.mark.parametrize("with_fds", [False, True])
def test_header_split_across_sends(pair, with_fds):
    a, b = pair
    payload = b'{"split": true}'
    header = struct.pack("!I", len(payload))
    a.sendall(header[:1])

    def rest():
        a.sendall(header[1:])
        a.sendall(payload)

    timer = threading.Timer(0.05, rest)
    timer.start()
    try:
        assert rpc.receive(b, with_fds=with_fds) == ({"split": True}, [])
    finally:
        timer.join()


def test_unserialisable_message_sends_nothing(pair):
    a, b = pair
    with pytest.raises(TypeError):
        rpc.send(a, {"bad": object()})
    rpc.send(a, {"good": 1})
    assert rpc.receive(b) == ({"good": 1}, [])
