"""Replies a real beanstalkd never sends, from a scripted fake server.

Every case must end in UnexpectedResponse (ProtocolError is one) or SocketError: never a
hang past socket_timeout, never another exception, never unbounded memory. When the
reply stream can no longer be trusted the connection is closed and stays closed.
"""
import socket
import struct
import threading
import time
import tracemalloc

import pytest

import beanstalkc_fast
from beanstalkc_fast import ProtocolError, SocketError, UnexpectedResponse

GUARD = 10.0     # seconds: far beyond any socket_timeout used here, short of a hang


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock, stop):
        self.sock = sock
        self.stop = stop
        self._buf = b""

    def read_command(self):
        """Read one command line (and a put's body); return the line, or None at EOF."""
        while b"\r\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\r\n")
        if line.startswith(b"put "):
            size = int(line.split()[-1])
            while len(self._buf) < size + 2:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self._buf += data
            self._buf = self._buf[size + 2:]
        return line

    def send(self, data):
        self.sock.sendall(data)

    def dribble(self, data, pause=0.0005):
        """Send ``data`` one byte per packet."""
        for i in range(len(data)):
            self.sock.sendall(data[i:i + 1])
            time.sleep(pause)

    def reset(self):
        """Close with SO_LINGER 0: the client sees a TCP reset."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def hang(self):
        """Keep the connection open, never answering, until the test ends."""
        self.stop.wait(GUARD * 3)


class FakeServer:
    """Accepts connections on a free loopback port and runs ``script(peer)`` on each, in a thread."""

    def __init__(self, script):
        self.script = script
        self.errors = []
        self.commands = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self.host, self.port = self._listener.getsockname()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(GUARD * 3)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.script(Peer(sock, self._stop))
            except OSError as err:     # the client hung up first: expected in several cases
                self.errors.append(err)
            finally:
                sock.close()

    def close(self):
        self._stop.set()
        self._thread.join(GUARD)
        self._listener.close()


@pytest.fixture
def fake(impl, monkeypatch):
    """``fake(script, **conn_kw)`` -> a Connection (core under test) to a fresh fake server."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    servers, conns = [], []

    def make(script, **kw):
        server = FakeServer(script)
        servers.append(server)
        kw.setdefault("socket_timeout", 2.0)
        c = beanstalkc_fast.Connection(server.host, server.port, **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()
    for s in servers:
        s.close()


def reply(*chunks, then=None):
    """A script answering each command with the next chunk (bytes, or a callable of the peer)."""
    def script(peer):
        for chunk in chunks:
            if peer.read_command() is None:
                return
            if callable(chunk):
                chunk(peer)
            else:
                peer.send(chunk)
        if then is not None:
            then(peer)
        else:
            peer.hang()
    return script


def timed(fn, *args, **kw):
    """Call fn; return (exception or None, result, seconds)."""
    start = time.monotonic()
    try:
        result = fn(*args, **kw)
    except Exception as err:
        return err, None, time.monotonic() - start
    return None, result, time.monotonic() - start


def assert_dead(conn):
    """The connection was closed and is not reused silently."""
    assert conn.connected is False
    with pytest.raises(SocketError):
        conn.stats()


# -- statuses and lines beanstalkd never sends --------------------------------------------

def test_unknown_status_is_unexpected_response_and_stream_stays_usable(fake):
    c = fake(reply(b"WHAT 1 two\r\n", b"INSERTED 7\r\n"))
    with pytest.raises(UnexpectedResponse) as info:
        c.put(b"x")
    assert type(info.value) is UnexpectedResponse
    assert info.value.args == ("put", "WHAT", ["1", "two"])
    # The line was well framed, so the stream is still in step: the next reply is read normally.
    assert c.connected
    assert c.put(b"y") == 7


@pytest.mark.parametrize("call, line", [
    (lambda c: c.put(b"x"), b"INSERTED abc\r\n"),
    (lambda c: c.put(b"x"), b"INSERTED\r\n"),
    (lambda c: c.put(b"x"), b"INSERTED -1\r\n"),
    (lambda c: c.use("a"), b"USING\r\n"),
    (lambda c: c.use("a"), b"USING \xff\xfe\r\n"),
    (lambda c: c.using(), b"USING\r\n"),
    (lambda c: c.watch("a"), b"WATCHING\r\n"),
    (lambda c: c.watch("a"), b"WATCHING x\r\n"),
    (lambda c: c.ignore("a"), b"WATCHING 1.5\r\n"),
    (lambda c: c.kick(5), b"KICKED\r\n"),
    (lambda c: c.kick(5), b"KICKED five\r\n"),
    (lambda c: c.reserve(), b"RESERVED x 3\r\nabc\r\n"),
    (lambda c: c.reserve(timeout=1), b"RESERVED\r\n"),
    (lambda c: c.peek(1), b"FOUND 1x 3\r\nabc\r\n"),
    (lambda c: c.reserve_job(1), b"RESERVED -2 3\r\nabc\r\n"),
    (lambda c: c.reserve_many(3), (b"RESERVED x 3\r\nabc\r\n", b"TIMED_OUT\r\n" * 2)),
    (lambda c: c.stats(), b"OK\r\n"),
    (lambda c: c.stats(), b"OK abc\r\n"),
    (lambda c: c.stats(), b"OK 3 4\r\nabc\r\n"),
], ids=lambda v: repr(v[0] if isinstance(v, tuple) else v)[2:-1] if isinstance(v, (bytes, tuple)) else "")
def test_malformed_success_line_is_unexpected_response(fake, call, line):
    c = fake(reply(*(line if isinstance(line, tuple) else (line,))))
    err, _, _ = timed(call, c)
    if isinstance(err, beanstalkc_fast.BatchError):      # a batch reports it per item
        err = err.errors[0][1]
    assert isinstance(err, UnexpectedResponse), repr(err)


def test_empty_line_is_protocol_error_and_closes(fake):
    c = fake(reply(b"\r\n"))
    with pytest.raises(ProtocolError):
        c.stats()
    assert_dead(c)


def test_garbage_yaml_body_never_crashes(fake):
    # A well-framed OK whose body is not YAML at all: the YAML layer may raise, but only
    # a parse error, and the framing is intact so the connection stays usable.
    body = b"\x00\xff: [unclosed\n\t- {"
    c = fake(reply(b"OK %d\r\n%s\r\n" % (len(body), body), b"OK 3\r\nabc\r\n"), parse_yaml=False)
    assert c.stats() == body.decode("utf-8", "replace")
    assert c.stats() == "abc"


@pytest.mark.parametrize("body", [
    b"\x00\xff: [unclosed\n\t- {",
    b"---\nkey: [1, 2\n",
    b"---\n- a\nb: c\n",
    b"---\n\xff\xfe: 1\n",
])
def test_unparseable_yaml_is_unexpected_response(fake, body):
    c = fake(reply(b"OK %d\r\n%s\r\n" % (len(body), body), b"USING default\r\n"))
    with pytest.raises(UnexpectedResponse) as info:
        c.stats()
    assert info.value.args == ("stats", "OK", [str(len(body))])
    assert c.using() == "default"      # framing was intact: the connection is still usable

# -- framing cut short, or broken -----------------------------------------------------------

def close_after(data):
    def action(peer):
        peer.send(data)
        peer.sock.shutdown(socket.SHUT_WR)
    return action


@pytest.mark.parametrize("data", [
    b"",                            # EOF before any reply
    b"INSERT",                      # status line cut off
    b"INSERTED 12",                 # cut before CRLF
    b"INSERTED 12\r",               # cut inside CRLF
])
def test_line_cut_off_then_eof(fake, data):
    c = fake(reply(close_after(data)))
    err, _, took = timed(c.put, b"x")
    assert isinstance(err, SocketError), repr(err)
    assert took < GUARD
    assert_dead(c)


@pytest.mark.parametrize("data", [
    b"RESERVED 1 10\r\nabc",        # body shorter than announced
    b"RESERVED 1 3\r\nabc",         # body complete, CRLF missing
    b"RESERVED 1 3\r\nabc\r",       # half the CRLF
    b"RESERVED 1 3\r\n",            # no body at all
])
def test_body_cut_off_then_eof(fake, data):
    c = fake(reply(close_after(data)))
    err, _, took = timed(c.reserve)
    assert isinstance(err, SocketError), repr(err)
    assert took < GUARD
    assert_dead(c)


@pytest.mark.parametrize("data", [
    b"RESERVED 1 3\r\nabcXY",
    b"RESERVED 1 3\r\n\0\0\0\0\0",   # body and trailer zeroed (beanstalkd restored it so from its binlog)
    b"FOUND 1 0\r\n\n\r",
])
def test_body_not_followed_by_crlf_is_corrupt_job_and_stream_stays_usable(fake, data):
    # The size held, so exactly size + 2 bytes are consumed and the stream is still in step.
    c = fake(reply(data, b"BURIED\r\n", b"USING default\r\n"))
    call = c.peek if data.startswith(b"FOUND") else c.reserve_job
    err, _, took = timed(call, 1)
    assert type(err) is beanstalkc_fast.CorruptJob, repr(err)
    assert err.jid == 1 and err.args[1] == ("FOUND" if data.startswith(b"FOUND") else "RESERVED")
    assert took < GUARD
    assert c.connected
    c.bury(err.jid)
    assert c.using() == "default"


def test_corrupt_ok_body_is_unexpected_response(fake):
    c = fake(reply(b"OK 3\r\nabc\0\0", b"USING default\r\n"))
    with pytest.raises(UnexpectedResponse) as info:
        c.stats()
    assert type(info.value) is UnexpectedResponse and info.value.args == ("stats", "OK", ["3"])
    assert c.using() == "default"


@pytest.mark.parametrize("timeout", [0, 1, None])
def test_reserve_of_a_zeroed_job_then_the_connection_answers(fake, timeout):
    c = fake(reply(b"RESERVED 7 5\r\n" + b"\0" * 7, b"DELETED\r\n",
                   b"RESERVED 8 2\r\nok\r\n"))
    with pytest.raises(beanstalkc_fast.CorruptJob) as info:
        c.reserve(timeout)
    assert info.value.jid == 7
    c.delete(7)
    assert c.reserve(timeout).body == "ok"


def test_reserve_many_mixing_good_and_corrupt_jobs(fake):
    # Every reply is read; a corrupt job does not end the batch.
    c = fake(reply(b"RESERVED 1 2\r\nhi\r\n", b"RESERVED 2 2\r\n\0\0\0\0", b"RESERVED 3 2\r\nho\r\n",
                   b"TIMED_OUT\r\n", b"USING default\r\n"))
    with pytest.raises(beanstalkc_fast.BatchError) as info:
        c.reserve_many(4)
    results = info.value.results
    assert [r.jid for r in results] == [1, 2, 3] and info.value.errors[0][0] == 1
    assert isinstance(results[1], beanstalkc_fast.CorruptJob) and results[2].body == "ho"
    assert c.using() == "default"


def test_reserve_many_window_broken_by_a_malformed_line_keeps_the_jobs_before_it(fake):
    # The jobs read before the bad line are in .results as Jobs, on both cores; the stream is gone.
    c = fake(reply(b"RESERVED 1 3\r\nabc\r\n", b"RESERVED 2 x\r\n"))
    with pytest.raises(ProtocolError) as info:
        c.reserve_many(5)
    assert [(j.jid, j.body, j.reserved) for j in info.value.results] == [(1, "abc", True)]
    assert_dead(c)


def test_aio_peek_of_a_corrupt_job(arun):
    from beanstalkc_fast import aio
    server = FakeServer(reply(b"FOUND 4 3\r\n\0\0\0\0\0", b"FOUND 5 1\r\nx\r\n"))

    async def main():
        async with aio.connect(server.host, server.port, socket_timeout=2.0) as c:
            with pytest.raises(beanstalkc_fast.CorruptJob) as info:
                await c.peek(4)
            assert info.value.jid == 4 and c.connected
            assert (await c.peek(5)).body == "x"
    try:
        arun(main())
    finally:
        server.close()


@pytest.mark.parametrize("newline", [False, True])
def test_huge_line_is_rejected_with_bounded_memory(fake, newline):
    size = 8 * 1024 * 1024
    line = b"A" * size + (b"\r\n" if newline else b"")
    c = fake(reply(line), socket_timeout=5.0)
    tracemalloc.start()
    try:
        err, _, took = timed(c.stats)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(err, ProtocolError), repr(err)
    assert took < GUARD
    assert peak < size // 8, peak       # never buffers the line
    assert_dead(c)


@pytest.mark.parametrize("line", [
    b"OK 999999999999999999\r\n",               # 18 digits: the largest size the reader accepts
    b"RESERVED 1 99999999999999999\r\nabc",
    b"FOUND 1 4294967296\r\nabc",
])
def test_absurd_announced_body_size(fake, impl, line):
    c = fake(reply(close_after(line)))
    tracemalloc.start()
    try:
        err, _, took = timed(c.peek if line.startswith(b"FOUND") else c.reserve_job, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(err, (SocketError, UnexpectedResponse)), repr(err)
    assert took < GUARD
    assert peak < 64 * 1024 * 1024, peak     # nothing close to the announced size is committed
    assert_dead(c)


# -- slow, reset and silent peers -----------------------------------------------------------

def test_reply_dribbled_one_byte_per_packet(fake):
    body = b"line one\r\nline two\r\n\x00\xff"
    stats = b"---\ncurrent-jobs-ready: 3\nversion: \"1.12\"\n"
    c = fake(reply(lambda p: p.dribble(b"RESERVED 42 %d\r\n%s\r\n" % (len(body), body)),
                   lambda p: p.dribble(b"OK %d\r\n%s\r\n" % (len(stats), stats)),
                   lambda p: p.dribble(b"INSERTED 43\r\n")), encoding=None)
    job = c.reserve()
    assert (job.jid, job.body) == (42, body)
    assert c.stats() == {"current-jobs-ready": 3, "version": "1.12"}
    assert c.put(b"x") == 43
    assert c.connected


def test_batch_replies_dribbled(fake):
    def script(peer):
        for _ in range(3):
            peer.read_command()
        peer.dribble(b"INSERTED 1\r\nINSERTED 2\r\nJOB_TOO_BIG\r\n")
        peer.read_command()
        peer.dribble(b"RESERVED 5 2\r\nhi\r\n")
        peer.read_command()              # reserve_many pipelines one more, without waiting
        peer.dribble(b"TIMED_OUT\r\n")
        peer.hang()
    c = fake(script)
    with pytest.raises(beanstalkc_fast.BatchError) as info:
        c.put_many([b"a", b"b", b"c"])
    assert info.value.results[:2] == [1, 2] and isinstance(info.value.results[2], beanstalkc_fast.CommandFailed)
    assert [(j.jid, j.body) for j in c.reserve_many(2)] == [(5, "hi")]
    assert c.connected


def test_reset_in_the_middle_of_a_reply(fake):
    def action(peer):
        peer.send(b"RESERVED 1 100\r\nabc")
        time.sleep(0.05)
        peer.reset()
    c = fake(reply(action))
    err, _, took = timed(c.reserve)
    assert isinstance(err, SocketError), repr(err)
    assert took < GUARD
    assert_dead(c)


def test_reset_before_the_reply(fake):
    c = fake(reply(lambda p: p.reset()))
    err, _, _ = timed(c.stats)
    assert isinstance(err, SocketError), repr(err)
    assert_dead(c)


@pytest.mark.parametrize("call", [
    lambda c: c.put(b"x"),
    lambda c: c.stats(),
    lambda c: c.peek(1),
    lambda c: c.use("a"),
    lambda c: c.put_many([b"a", b"b"]),
    lambda c: c.delete_many([1, 2]),
])
def test_silent_peer_hits_socket_timeout(fake, call):
    c = fake(lambda peer: peer.hang(), socket_timeout=0.3)
    err, _, took = timed(call, c)
    assert isinstance(err, SocketError), repr(err)
    assert isinstance(err.__cause__, socket.timeout)
    assert took < GUARD
    assert_dead(c)


def test_silent_peer_reserve_waits_its_timeout_plus_socket_timeout(fake):
    c = fake(lambda peer: peer.hang(), socket_timeout=0.3)
    err, _, took = timed(c.reserve, timeout=1)
    assert isinstance(err, SocketError), repr(err)
    assert 1.0 <= took < GUARD
    assert_dead(c)


def test_silent_peer_reserve_many_hits_its_timeout(fake):
    c = fake(lambda peer: peer.hang(), socket_timeout=0.3)
    err, _, took = timed(c.reserve_many, 5, timeout=1)
    assert isinstance(err, SocketError), repr(err)
    assert 1.0 <= took < GUARD
    assert_dead(c)


def test_reply_after_the_timeout_is_never_read_as_the_next_reply(fake):
    def late(peer):
        time.sleep(0.6)
        peer.send(b"INSERTED 1\r\n")
    c = fake(reply(late, b"INSERTED 2\r\n"), socket_timeout=0.2)
    with pytest.raises(SocketError):
        c.put(b"x")
    assert_dead(c)


def test_reconnect_that_fails_while_restoring_tubes_keeps_them(fake):
    seen = []
    count = [0]

    def script(peer):
        count[0] += 1
        n = count[0]
        while True:
            line = peer.read_command()
            if line is None or line == b"quit":
                return
            seen.append((n, line))
            if n == 2:
                return                  # the second connection dies during the restore
            word, _, arg = line.partition(b" ")
            if word == b"use":
                peer.send(b"USING %s\r\n" % arg)
            elif word == b"watch":
                peer.send(b"WATCHING 2\r\n")
            elif word == b"ignore":
                peer.send(b"WATCHING 1\r\n")
            else:
                peer.send(b"OK 9\r\n---\na: 1\n\r\n")
            if n == 1 and word == b"stats":
                peer.reset()            # the first connection breaks after one stats

    c = fake(script)
    c.use("tu")
    c.watch("a")
    c.ignore("default")
    assert c.stats() == {"a": 1}
    with pytest.raises(SocketError):
        c.stats()
    with pytest.raises(SocketError):
        c.reconnect()
    assert c.connected is False
    c.reconnect()
    assert c.connected
    assert [line for n, line in seen if n == 3] == [b"use tu", b"watch a", b"ignore default"]


# -- batches against broken peers -------------------------------------------------------------

def test_put_many_eof_mid_batch_reports_the_confirmed_prefix(fake):
    def script(peer):
        for i in range(3):
            peer.read_command()
            peer.send(b"INSERTED %d\r\n" % (i + 1))
        peer.sock.shutdown(socket.SHUT_WR)
        while peer.read_command() is not None:
            pass
    c = fake(script)
    with pytest.raises(SocketError) as info:
        c.put_many([b"a"] * 10)
    assert info.value.results == [1, 2, 3]
    assert_dead(c)


def test_put_many_garbage_mid_batch_is_protocol_error_with_prefix(fake):
    def script(peer):
        for i in range(2):
            peer.read_command()
            peer.send(b"INSERTED %d\r\n" % (i + 1))
        peer.send(b"OK x\r\n")     # a size that is no number: the stream can no longer be followed
        peer.hang()
    c = fake(script)
    with pytest.raises(ProtocolError) as info:
        c.put_many([b"a"] * 10)
    assert info.value.results == [1, 2]
    assert_dead(c)


def test_put_many_malformed_inserted_is_an_item_error(fake):
    def script(peer):
        for line in (b"INSERTED 1\r\n", b"INSERTED x\r\n", b"INSERTED 3\r\n"):
            peer.read_command()
            peer.send(line)
        peer.hang()
    c = fake(script)
    with pytest.raises(beanstalkc_fast.BatchError) as info:
        c.put_many([b"a", b"b", b"c"])
    results = info.value.results
    assert results[0] == 1 and results[2] == 3
    assert isinstance(results[1], UnexpectedResponse)
    assert c.connected


def test_delete_many_reset_mid_batch(fake):
    def script(peer):
        peer.read_command()
        peer.send(b"DELETED\r\n")
        peer.read_command()
        peer.reset()
    c = fake(script)
    with pytest.raises(SocketError) as info:
        c.delete_many([1, 2, 3, 4])
    assert info.value.results is not None and info.value.results == [None] * len(info.value.results)
    assert len(info.value.results) <= 1
    assert_dead(c)


def test_reserve_many_unknown_reply_mid_batch(fake):
    def script(peer):
        peer.read_command()
        peer.send(b"RESERVED 1 1\r\na\r\n")
        peer.read_command()
        peer.send(b"RESERVED 2 1\r\nb\r\nINTERNAL_ERROR\r\n")
        peer.hang()
    c = fake(script)
    with pytest.raises(beanstalkc_fast.BatchError) as info:
        c.reserve_many(3)
    results = info.value.results
    assert [r.jid for r in results[:2]] == [1, 2]
    assert isinstance(results[2], UnexpectedResponse)
    assert c.connected


# -- threads sharing the connection (SPEC 7) ----------------------------------------------

def test_a_protocol_error_fails_the_callers_behind_it(impl, monkeypatch):
    """beanstalkd never sends an empty line: the caller whose reply it is gets ProtocolError,
    those before it their ids, those behind it SocketError."""
    arrived = threading.Event()

    def script(peer):
        for _ in range(6):
            peer.read_command()
        arrived.set()
        peer.send(b"INSERTED 1\r\nINSERTED 2\r\n\r\nINSERTED 4\r\n")
        peer.hang()

    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    server = FakeServer(script)
    try:
        c = beanstalkc_fast.Connection(server.host, server.port, socket_timeout=5)
        results = {}

        def call(i):
            try:
                results[i] = c.put(b"x")
            except (ProtocolError, SocketError) as err:
                results[i] = err

        threads = []
        for i in range(6):
            t = threading.Thread(target=call, args=(i,), daemon=True)
            t.start()
            threads.append(t)
            deadline = time.monotonic() + GUARD
            # each put is on the wire before the next starts (after the sixth, the replies come)
            while len(c._queue) < i + 1 and not arrived.is_set():
                assert time.monotonic() < deadline
                time.sleep(0.001)
        for t in threads:
            t.join(GUARD)
            assert not t.is_alive()
        assert arrived.is_set()
        assert results[0] == 1 and results[1] == 2
        assert isinstance(results[2], ProtocolError)
        assert all(type(results[i]) is SocketError for i in (3, 4, 5)), results
        assert c.connected is False
    finally:
        server.close()


# -- a malformed reply to a pool's put: the same documented error in both pools -------------

@pytest.mark.parametrize("garbage", [b"\r\n", b"INSERTED 1 2 3 4 5 6 7 8 9 " + b"0" * 1100 + b"\r\n"])
def test_pool_put_with_a_malformed_reply_is_put_ambiguous(impl, monkeypatch, garbage):
    # The put was written and its reply cannot be read: the job may be there. PutAmbiguous names
    # the server (its cause: the ProtocolError), the connection is dropped and the failure counted.
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    server = FakeServer(reply(garbage))
    try:
        with beanstalkc_fast.Pool({"fake": (server.host, server.port)}, socket_timeout=2.0) as pool:
            with pytest.raises(beanstalkc_fast.PutAmbiguous) as info:
                pool.put(b"x")
            assert info.value.server == "fake" and isinstance(info.value.__cause__, ProtocolError)
            assert pool.servers_status()["fake"]["failures"] == 1
    finally:
        server.close()


@pytest.mark.parametrize("garbage", [b"\r\n", b"INSERTED 1 2 3 4 5 6 7 8 9 " + b"0" * 1100 + b"\r\n"])
def test_aio_pool_put_with_a_malformed_reply_is_put_ambiguous(arun, garbage):
    from beanstalkc_fast import aio
    server = FakeServer(reply(garbage))

    async def main():
        async with aio.Pool({"fake": (server.host, server.port)}, socket_timeout=2.0) as pool:
            with pytest.raises(beanstalkc_fast.PutAmbiguous) as info:
                await pool.put(b"x")
            assert info.value.server == "fake" and isinstance(info.value.__cause__, ProtocolError)
            assert pool.servers_status()["fake"]["failures"] == 1
    try:
        arun(main())
    finally:
        server.close()
