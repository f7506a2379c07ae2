"""Faults with a real beanstalkd: killed, frozen, restarted; timeouts; interrupted calls.

Each test that kills its server gets a private one (``server``). Every failure must surface
as SocketError promptly (never a hang: each blocking call runs under a guard), leave the
connection closed, and ``reconnect()`` must work once the server is back.
"""
import os
import signal
import socket
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import BatchError, CommandFailed, DeadlineSoon, InvalidType, SocketError
from beanstalkc_fast.testing import BeanstalkdServer

GUARD = 15.0     # seconds: a call still blocked after this counts as a hang


@pytest.fixture
def server(beanstalkd_binary):
    """A private beanstalkd, free to kill."""
    s = BeanstalkdServer(binary=beanstalkd_binary)
    s.start()
    yield s
    if s.process is not None:
        os.kill(s.process.pid, signal.SIGCONT)      # in case a test froze it
    s.stop(kill=True)


@pytest.fixture
def connect(impl, monkeypatch):
    """``connect(server, **kw)``: a Connection using the core under test; closed at teardown."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    conns = []

    def make(srv, **kw):
        c = srv.connect(**kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


def in_thread(fn, *args, **kw):
    """Run fn in a thread; return a function giving (exception, result, seconds) or failing on a hang."""
    out = {}

    def run():
        start = time.monotonic()
        try:
            out["result"] = fn(*args, **kw)
        except BaseException as err:
            out["error"] = err
        out["took"] = time.monotonic() - start

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join():
        thread.join(GUARD)
        assert not thread.is_alive(), "call still blocked after %.0f s" % GUARD
        return out.get("error"), out.get("result"), out["took"]
    return join


def later(seconds, fn, *args):
    timer = threading.Timer(seconds, fn, args)
    timer.daemon = True
    timer.start()
    return timer


def assert_dead(conn):
    assert conn.connected is False
    with pytest.raises(SocketError):
        conn.put(b"x")
    with pytest.raises(SocketError):
        conn.stats()


# -- SIGKILL --------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda c: c.reserve(),
    lambda c: c.reserve(timeout=60),
    lambda c: c.reserve_many(10, timeout=60),
], ids=["reserve", "reserve-with-timeout", "reserve_many"])
def test_kill_during_blocking_reserve(server, connect, call):
    c = connect(server, socket_timeout=5.0)
    wait = in_thread(call, c)
    time.sleep(0.3)                   # let it block in the server
    server.stop(kill=True)
    err, _, took = wait()
    assert isinstance(err, SocketError), repr(err)
    assert took < GUARD
    assert_dead(c)


def test_kill_during_reserve_in_main_thread(server, connect):
    c = connect(server)               # no socket_timeout at all: only the kill can end it
    later(0.3, server.stop, True)
    start = time.monotonic()
    with pytest.raises(SocketError):
        c.reserve()
    assert time.monotonic() - start < GUARD
    assert_dead(c)


def test_kill_during_put_many_from_a_generator(server, connect, tube):
    c = connect(server, socket_timeout=5.0)
    c.use(tube)
    yielded = []

    def items():
        for i in range(20000):
            if i == 3000:
                server.stop(kill=True)
            yielded.append(i)
            yield b"job %d" % i

    with pytest.raises(SocketError) as info:
        c.put_many(items())
    results = info.value.results
    # The confirmed prefix: ids in order, never more than were handed over.
    assert isinstance(results, list) and all(type(r) is int for r in results)
    assert results == sorted(results) and len(set(results)) == len(results)
    assert 1024 <= len(results) <= 3000 < len(yielded) + 1
    assert len(yielded) < 20000       # the batch stopped at the failure
    assert_dead(c)


def test_kill_while_streaming_big_bodies(server, connect, tube):
    c = connect(server, socket_timeout=5.0)
    c.use(tube)
    body = b"x" * 60000            # under the default max-job-size
    deadline = time.monotonic() + GUARD

    def items():
        while time.monotonic() < deadline:
            yield body

    later(0.3, server.stop, True)
    wait = in_thread(c.put_many, items())
    err, _, _ = wait()
    assert isinstance(err, SocketError), repr(err)
    assert all(type(r) is int for r in err.results), [r for r in err.results if type(r) is not int][:3]
    assert_dead(c)


def test_kill_during_delete_many(server, connect, tube):
    c = connect(server, socket_timeout=5.0)
    c.use(tube)
    ids = c.put_many([b"x"] * 3000)

    def jids():
        for i, jid in enumerate(ids):
            if i == 2000:
                server.stop(kill=True)
            yield jid

    with pytest.raises(SocketError) as info:
        c.delete_many(jids())
    assert info.value.results == [None] * len(info.value.results)
    assert len(info.value.results) <= 2000
    assert_dead(c)


def test_kill_between_commands(server, connect):
    c = connect(server, socket_timeout=5.0)
    jid = c.put(b"before")
    assert jid > 0
    server.stop(kill=True)
    start = time.monotonic()
    with pytest.raises(SocketError):
        c.put(b"after")
    assert time.monotonic() - start < GUARD
    assert_dead(c)


def test_graceful_stop_between_commands(server, connect):
    c = connect(server, socket_timeout=5.0)
    c.stats()
    server.stop()                     # SIGTERM: the server closes its sockets
    with pytest.raises(SocketError):
        c.stats()
    assert_dead(c)


def test_restart_then_reconnect_restores_tubes(server, connect, tube):
    c = connect(server, socket_timeout=5.0)
    c.use(tube + "-used")
    c.watch(tube + "-a")
    c.watch(tube + "-b")
    c.ignore("default")
    server.stop(kill=True)
    with pytest.raises(SocketError):
        c.stats()
    with pytest.raises(SocketError):  # still down: reconnect fails cleanly
        c.reconnect()
    assert c.connected is False
    server.start()
    c.reconnect()
    assert c.connected
    assert c.using() == tube + "-used"
    assert sorted(c.watching()) == sorted([tube + "-a", tube + "-b"])
    # And it works end to end on the restored tubes.
    jid = c.put(b"again")
    assert c.stats_job(jid)["tube"] == tube + "-used"
    c.use(tube + "-b")
    jid = c.put(b"mine")
    job = c.reserve(timeout=1)
    assert job is not None and job.jid == jid
    job.delete()


def test_reconnect_keeps_default_when_watched(server, connect, tube):
    c = connect(server)
    c.watch(tube)
    server.restart(kill=True)
    with pytest.raises(SocketError):
        c.watching()
    c.reconnect()
    assert sorted(c.watching()) == sorted(["default", tube])
    assert c.using() == "default"


def test_connect_refused(impl, monkeypatch, server):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    port = server.port
    server.stop(kill=True)
    with pytest.raises(SocketError) as info:
        beanstalkc_fast.Connection("127.0.0.1", port)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


# -- a frozen server: every command honours socket_timeout ------------------------------------------

@pytest.mark.parametrize("call", [
    lambda c: c.put(b"x"),
    lambda c: c.stats(),
    lambda c: c.use("frozen"),
    lambda c: c.peek_ready(),
    lambda c: c.delete(1),
    lambda c: c.put_many([b"x"] * 10),
    lambda c: c.put_many([b"x" * 60000] * 1000),     # blocks in sendall: a partial write
    lambda c: c.delete_many([1, 2, 3]),
])
def test_frozen_server_hits_socket_timeout(server, connect, call):
    c = connect(server, socket_timeout=0.3)
    c.stats()
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        err, _, took = in_thread(call, c)()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert isinstance(err, SocketError), repr(err)
    assert isinstance(err.__cause__, socket.timeout)
    assert took < GUARD
    assert_dead(c)
    c.reconnect()                     # the server is alive again
    assert c.stats()["pid"] == server.process.pid


def test_frozen_server_reserve_waits_its_own_timeout_first(server, connect):
    c = connect(server, socket_timeout=0.3)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        err, _, took = in_thread(c.reserve, 1)()
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    assert isinstance(err, SocketError), repr(err)
    assert 1.0 <= took < GUARD
    assert_dead(c)


# -- timeouts -----------------------------------------------------------------------------------

def test_connect_timeout_is_honoured(impl, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    # A listener that never accepts, its backlog already full: a new connect is never answered.
    listener = socket.socket()
    held = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except socket.timeout:
                s.close()
                break
            held.append(s)
        else:
            pytest.skip("could not fill the listen backlog on this system")
        start = time.monotonic()
        with pytest.raises(SocketError) as info:
            beanstalkc_fast.Connection("127.0.0.1", port, connect_timeout=0.3)
        assert isinstance(info.value.__cause__, socket.timeout)
        assert time.monotonic() - start < GUARD
    finally:
        for s in held:
            s.close()
        listener.close()


@pytest.mark.parametrize("socket_timeout", [None, 0.5, 3])
def test_socket_timeout_is_applied_after_connect_and_after_reserve(make_conn, socket_timeout):
    c = make_conn(socket_timeout=socket_timeout, connect_timeout=1.0)
    assert c._proto.sock.gettimeout() == socket_timeout
    c.reserve(timeout=0)
    assert c._proto.sock.gettimeout() == socket_timeout
    c.reserve_many(3, timeout=0)
    assert c._proto.sock.gettimeout() == socket_timeout


def test_reserve_timeout_longer_than_socket_timeout(make_conn, tube):
    c = make_conn(socket_timeout=0.5)
    c.watch(tube)
    c.ignore("default")
    start = time.monotonic()
    assert c.reserve(timeout=2) is None
    assert time.monotonic() - start >= 1.5      # the server's wait, not the socket's
    assert c.connected
    assert c.reserve_many(5, timeout=2) == []
    assert time.monotonic() - start >= 3.5
    assert c.connected and c.stats()["current-connections"] >= 1


def test_reserve_without_timeout_is_not_cut_by_socket_timeout(make_conn, tube):
    c = make_conn(socket_timeout=0.3)
    c.watch(tube)
    producer = make_conn()
    producer.use(tube)
    later(1.0, producer.put, b"late")
    job = in_thread(c.reserve)()
    err, job, took = job
    assert err is None and job.body == "late"
    assert took >= 0.6
    job.delete()


def test_deadline_soon(make_conn, tube):
    c = make_conn(socket_timeout=5)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    c.put(b"x", ttr=2)
    job = c.reserve(timeout=0)
    assert job is not None
    with pytest.raises(DeadlineSoon):
        c.reserve(timeout=5)
    with pytest.raises(DeadlineSoon):
        c.reserve()
    with pytest.raises(DeadlineSoon):
        c.reserve_many(3, timeout=5)
    assert c.connected
    job.delete()


# -- interrupted calls: the connection is dropped, never left half-read -----------------------------

class Interrupted(Exception):
    pass


def test_signal_during_reserve_drops_the_connection(make_conn, tube):
    c = make_conn()
    c.watch(tube)

    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        later(0.3, signal.pthread_kill, threading.main_thread().ident, signal.SIGUSR1)
        with pytest.raises(Interrupted):
            c.reserve(timeout=10)
    finally:
        signal.signal(signal.SIGUSR1, old)
    # A reply may still arrive for that reserve: the connection must not be reused.
    assert c.connected is False
    c.reconnect()
    assert tube in c.watching()


class Abort(BaseException):
    """Like KeyboardInterrupt or SystemExit: not an Exception."""


def test_base_exception_from_put_many_generator_never_desyncs(make_conn, tube):
    c = make_conn(socket_timeout=5)
    c.use(tube)

    def items():
        for i in range(2500):
            yield b"x"
        raise Abort()

    with pytest.raises(Abort):
        c.put_many(items())
    # Replies may be pending: the connection is either in step or closed, never reused half-read.
    if c.connected:
        jid = c.put(b"after")
        assert c.peek(jid).body == "after"
    else:
        with pytest.raises(SocketError):
            c.stats()
        c.reconnect()
    # At least the first window (whose replies were read) went in; never more than was sent.
    assert 1024 <= c.stats_tube(tube)["current-jobs-ready"] <= 2049


def test_exception_from_put_many_generator_reports_what_went_in(make_conn, tube):
    c = make_conn()
    c.use(tube)

    def items():
        for i in range(2500):
            yield b"x"
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError) as info:
        c.put_many(items())
    # As for a bad item: the windows already sent are drained and reported, the stream
    # stays in step, and exactly the reported jobs went in.
    sent = getattr(info.value, "results", None)
    assert sent and all(type(r) is int for r in sent)
    assert c.connected
    assert c.stats_tube(tube)["current-jobs-ready"] == len(sent)


def test_exception_from_put_many_generator_never_desyncs(make_conn, tube):
    c = make_conn()
    c.use(tube)

    def items():
        for i in range(2500):
            yield b"x"
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        c.put_many(items())
    # Either still usable and in step, or closed: never a connection with unread replies.
    if c.connected:
        jid = c.put(b"after")
        assert c.peek(jid).body == "after"
    else:
        with pytest.raises(SocketError):
            c.stats()


# -- input that meets the server's limits ----------------------------------------------------------

@pytest.fixture
def small_server(beanstalkd_binary):
    s = BeanstalkdServer(args=["-z", "1024"], binary=beanstalkd_binary)
    s.start()
    yield s
    s.stop(kill=True)


@pytest.mark.parametrize("size", [1025, 64 * 1024, 5 * 1024 * 1024])
def test_body_over_max_job_size(small_server, connect, size):
    c = connect(small_server, socket_timeout=10)
    with pytest.raises(CommandFailed) as info:
        c.put(b"x" * size)
    assert info.value.args == ("put", "JOB_TOO_BIG", [])
    assert c.connected
    jid = c.put(b"x" * 1024)          # the stream is still in step
    assert c.peek(jid).body == "x" * 1024


def test_put_many_with_some_bodies_over_max_job_size(small_server, connect):
    c = connect(small_server, socket_timeout=10)
    bodies = [b"a", b"b" * 2000, b"c", b"d" * (300 * 1024), b"e"]
    with pytest.raises(BatchError) as info:
        c.put_many(bodies)
    results = info.value.results
    assert [type(r) for r in results] == [int, CommandFailed, int, CommandFailed, int]
    assert [i for i, _ in info.value.errors] == [1, 3]
    assert [c.peek(results[i]).body for i in (0, 2, 4)] == ["a", "c", "e"]


def test_non_utf8_body_never_loses_the_job(make_conn, tube):
    c = make_conn()                   # encoding='utf-8'
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    jid = c.put(b"\xff\xfe not utf-8")
    job = c.reserve(timeout=0)
    assert job.jid == jid and job.body_bytes == b"\xff\xfe not utf-8"
    with pytest.raises(UnicodeDecodeError):
        job.body
    job.bury()
    assert c.stats_job(jid)["state"] == "buried"
    c.kick_job(jid)
    jobs = c.reserve_many(5)
    assert [j.jid for j in jobs] == [jid]
    c.delete_many(jobs)
    assert c.peek(jid) is None


def test_bad_item_in_a_generator_after_windows_were_sent(make_conn, tube):
    c = make_conn()
    c.use(tube)

    def items():
        for i in range(3000):
            yield b"ok"
        yield 12345                   # not a body

    with pytest.raises(InvalidType) as info:
        c.put_many(items())
    sent = info.value.results
    assert sent and all(type(r) is int for r in sent)
    assert c.connected
    # Exactly the reported jobs went in: nothing dropped, nothing duplicated.
    assert c.stats_tube(tube)["current-jobs-ready"] == len(sent)
