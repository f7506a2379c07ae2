"""The single commands' call alone (the core's pipe() and reserve_alone()), on both cores.

A scripted server answers each command line with what the test says, when the test says:
a call alone whose reply is an error, a caller that comes while the call alone reads its
reply (it queues behind and is handed its own), a stream that breaks or goes bad in the
middle of a reply (the connection is closed, never reused).
"""
import socket
import threading

import pytest

import beanstalkc_fast
from beanstalkc_fast import CommandFailed, Connection, ProtocolError, SocketError, UnexpectedResponse

GUARD = 30.0


class Scripted:
    """A server on a free port for one connection: ``answer(line, body)`` gives the bytes to send
    back for each command line but quit (None: nothing yet; ``(data, True)``: close after them)."""

    def __init__(self, answer):
        self.answer = answer
        self.lines = []
        self.got = threading.Condition()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        sock, _ = self.listener.accept()
        buf = b""
        try:
            while True:
                while b"\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                line, buf = buf.split(b"\r\n", 1)
                if line == b"quit":     # close()
                    return
                body = None
                if line.startswith(b"put "):
                    size = int(line.split()[-1]) + 2
                    while len(buf) < size:
                        buf += sock.recv(65536)
                    body, buf = buf[:size - 2], buf[size:]
                with self.got:
                    self.lines.append(line)
                    self.got.notify_all()
                out = self.answer(line, body)
                if out is not None:
                    data, close = out if isinstance(out, tuple) else (out, False)
                    sock.sendall(data)
                    if close:
                        return
        finally:
            sock.close()

    def wait_lines(self, n):
        with self.got:
            assert self.got.wait_for(lambda: len(self.lines) >= n, GUARD), self.lines

    def close(self):
        self.listener.close()
        self.thread.join(GUARD)


@pytest.fixture
def scripted(impl, monkeypatch):
    """``scripted(answer)``: a Connection on the core under test to a Scripted server."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    made = []

    def make(answer):
        server = Scripted(answer)
        conn = Connection("127.0.0.1", server.port, encoding=None, socket_timeout=GUARD)
        made.append((server, conn))
        return server, conn

    yield make
    for server, conn in made:
        conn.close()
        server.close()


def test_a_caller_that_comes_while_the_call_alone_reads_is_handed_its_own_reply(scripted):
    # The first put's reply is held until the second put has come: the first caller (alone, in
    # the core's pipe()) is reading when the second one writes behind it and waits for its reply.
    def answer(line, body):
        if body == b"first":
            return None
        if body == b"second":
            return b"INSERTED 1\r\nINSERTED 2\r\n"
        return b"INSERTED %d\r\n" % (len(body) + 100)
    server, c = scripted(answer)
    results = {}

    def put(name):
        results[name] = c.put(name.encode())
    first = threading.Thread(target=put, args=("first",))
    first.start()
    server.wait_lines(1)
    second = threading.Thread(target=put, args=("second",))
    second.start()
    for t in (first, second):
        t.join(GUARD)
        assert not t.is_alive()
    assert results == {"first": 1, "second": 2}
    assert not c._queue and c.connected
    assert c.put(b"x" * 7) == 107       # alone again
    assert not c._queue


def test_a_call_alone_whose_reply_is_an_error_leaves_the_connection_usable(scripted):
    replies = {b"delete 5": b"NOT_FOUND\r\n", b"touch 5": b"NOT_FOUND\r\n", b"delete 6": b"DELETED\r\n",
               b"reserve-with-timeout 0": b"TIMED_OUT\r\n", b"stats-job 5": b"NOT_FOUND\r\n"}

    def answer(line, body):
        if body is not None:
            return b"JOB_TOO_BIG\r\n" if body == b"big" else b"WHAT 1\r\n" if body == b"odd" else b"INSERTED 9\r\n"
        return replies[line]
    server, c = scripted(answer)
    with pytest.raises(CommandFailed) as err:
        c.delete(5)
    assert err.value.args == ("delete", "NOT_FOUND", [])
    with pytest.raises(CommandFailed):
        c.touch(5)
    with pytest.raises(CommandFailed) as err:
        c.put(b"big")
    assert err.value.args == ("put", "JOB_TOO_BIG", [])
    with pytest.raises(UnexpectedResponse) as err:
        c.put(b"odd")
    assert err.value.args == ("put", "WHAT", ["1"])
    with pytest.raises(CommandFailed):
        c.stats_job(5)
    assert c.reserve(0) is None
    assert c.delete(6) is None
    assert c.put(b"fine") == 9
    assert c.connected and not c._queue


@pytest.mark.parametrize("call, reply", [
    (lambda c: c.put(b"x"), b"INSERTED 1"),
    (lambda c: c.reserve(0), b"RESERVED 1 10\r\nabc"),
    (lambda c: c.reserve(), b"RESERVED 1 10\r\nabc"),
    (lambda c: c.reserve(5), b"RESERVED 1 10\r\nabc"),
    (lambda c: c.delete(1), b"DELE"),
    (lambda c: c.stats(), b"OK 100\r\n---\nid: 1\n"),
], ids=["put", "reserve0", "reserve", "reserve5", "delete", "stats"])
def test_a_stream_broken_in_the_middle_of_a_reply_closes_the_connection(scripted, call, reply):
    server, c = scripted(lambda line, body: (reply, True))
    with pytest.raises(SocketError):
        call(c)
    assert not c.connected
    with pytest.raises(SocketError, match="closed"):
        c.put(b"never sent")
    server.thread.join(GUARD)
    assert server.lines[1:] == []   # nothing written on the dead connection


@pytest.mark.parametrize("call", [lambda c: c.put(b"x"), lambda c: c.reserve(0), lambda c: c.reserve()],
                         ids=["put", "reserve0", "reserve"])
def test_a_reply_that_breaks_the_framing_closes_the_connection(scripted, call):
    server, c = scripted(lambda line, body: b"X" * 5000 + b"\r\n")
    with pytest.raises(ProtocolError):
        call(c)
    assert not c.connected


def test_calls_alone_send_exactly_their_commands(scripted):
    # put, reserve (0, waiting, with a timeout), delete, touch, kick-job, stats-tube: one line each, in order.
    def answer(line, body):
        if body is not None:
            return b"INSERTED 3\r\n"
        verb = line.split()[0]
        return {b"reserve-with-timeout": b"RESERVED 3 2\r\nhi\r\n", b"reserve": b"RESERVED 3 2\r\nhi\r\n",
                b"delete": b"DELETED\r\n", b"touch": b"TOUCHED\r\n", b"kick-job": b"KICKED\r\n",
                b"stats-tube": b"OK 13\r\n---\nname: tb\n\r\n"}[verb]
    server, c = scripted(answer)
    assert c.put(b"hello", priority=5, delay=1, ttr=9) == 3
    job = c.reserve(0)
    assert (job.jid, job.body, job.reserved) == (3, b"hi", True)
    assert c.reserve().jid == 3
    assert c.reserve(7).jid == 3
    job.touch()
    c.kick_job(3)
    job.delete()
    assert job.reserved is False
    assert c.stats_tube("tb") == {"name": "tb"}
    assert server.lines == [b"put 5 1 9 5", b"reserve-with-timeout 0", b"reserve", b"reserve-with-timeout 7",
                            b"touch 3", b"kick-job 3", b"delete 3", b"stats-tube tb"]
