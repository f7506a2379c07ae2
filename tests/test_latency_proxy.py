"""beanstalkc_fast.testing.LatencyProxy: order kept, delay added, EOF and reset passed through.

Timing is only ever bounded from below (the proxy must add at least its delay); never above.
"""
import contextlib
import os
import socket
import struct
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast.testing import LatencyProxy

TIMEOUT = 20


@contextlib.contextmanager
def scripted_server(script):
    """A one-connection server on a free loopback port running ``script(conn)`` in a thread;
    yields (host, port, outcome) where outcome["result"] is what it returned, outcome["error"] what
    it raised, and outcome["done"] an Event set when it ended (wait for it before closing a proxy
    that may still hold the script's last bytes)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    outcome = {"done": threading.Event()}

    def run():
        try:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            with contextlib.closing(conn):
                outcome["result"] = script(conn)
        except BaseException as err:    # reported by the test
            outcome["error"] = err
        finally:
            outcome["done"].set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[0], listener.getsockname()[1], outcome
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "the scripted server did not finish"
        if "error" in outcome:
            raise outcome["error"]
    finally:
        listener.close()


def client_of(proxy):
    sock = socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_all(sock):
    """Everything until EOF."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def echo(conn):
    n = 0
    while True:
        data = conn.recv(65536)
        if not data:
            return n
        conn.sendall(data)
        n += len(data)


@pytest.mark.parametrize("rtt", [0, 0.002])
def test_bytes_keep_their_order_over_many_chunks_both_ways(rtt):
    # 3000 messages of varied sizes (4.6 MB in all: more than the proxy holds per direction),
    # each numbered, sent while a thread reads the echo back.
    messages = [b"<%d:%s>" % (i, bytes([65 + i % 26]) * (i * 7919 % 3000)) for i in range(3000)]
    sent = b"".join(messages)
    with scripted_server(echo) as (host, port, outcome), LatencyProxy(host, port, rtt) as proxy:
        sock = client_of(proxy)
        got = []
        reader = threading.Thread(target=lambda: got.append(recv_all(sock)), daemon=True)
        reader.start()
        for m in messages:
            sock.sendall(m)
        sock.shutdown(socket.SHUT_WR)
        reader.join(TIMEOUT)
        assert outcome["done"].wait(TIMEOUT)
        sock.close()
    assert outcome["result"] == len(sent)
    assert got == [sent]


@pytest.mark.parametrize("rtt", [0.05, 0.02])
def test_a_round_trip_takes_at_least_the_rtt(rtt):
    with scripted_server(echo) as (host, port, outcome), LatencyProxy(host, port, rtt) as proxy:
        sock = client_of(proxy)
        for _ in range(3):
            t0 = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            assert time.monotonic() - t0 >= rtt
        sock.close()


def test_each_command_of_a_connection_waits_a_round_trip(beanstalkd):
    with LatencyProxy(beanstalkd.host, beanstalkd.port, 0.05) as proxy:
        with beanstalkc_fast.Connection(proxy.host, proxy.port, socket_timeout=TIMEOUT) as conn:
            t0 = time.monotonic()
            for _ in range(4):
                conn.stats()
            assert time.monotonic() - t0 >= 4 * 0.05


@pytest.mark.parametrize("rtt", [0, 0.01])
def test_eof_from_the_server_is_a_half_close(rtt):
    def script(conn):
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)
        return recv_all(conn)       # the client can still send after our EOF

    with scripted_server(script) as (host, port, outcome), LatencyProxy(host, port, rtt) as proxy:
        sock = client_of(proxy)
        assert recv_all(sock) == b"bye"
        sock.sendall(b"still here")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""
        assert outcome["done"].wait(TIMEOUT)
        sock.close()
    assert outcome["result"] == b"still here"


@pytest.mark.parametrize("rtt", [0, 0.01])
def test_eof_from_the_client_is_a_half_close(rtt):
    def script(conn):
        got = recv_all(conn)
        conn.sendall(b"got " + got)     # the client still reads after its EOF
        return got

    with scripted_server(script) as (host, port, outcome), LatencyProxy(host, port, rtt) as proxy:
        sock = client_of(proxy)
        sock.sendall(b"request")
        sock.shutdown(socket.SHUT_WR)
        assert recv_all(sock) == b"got request"
        assert outcome["done"].wait(TIMEOUT)
        sock.close()
    assert outcome["result"] == b"request"


@pytest.mark.parametrize("rtt", [0, 0.01])
def test_a_reset_from_the_server_reaches_the_client_after_its_data(rtt):
    def script(conn):
        assert conn.recv(16) == b"go"
        conn.sendall(b"partial")
        reset(conn)

    with scripted_server(script) as (host, port, outcome), LatencyProxy(host, port, rtt) as proxy:
        sock = client_of(proxy)
        sock.sendall(b"go")
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                data = sock.recv(65536)
                assert data, "EOF instead of a reset, after %r" % got
                got += data
        assert got == b"partial"
        sock.close()


@pytest.mark.parametrize("rtt", [0, 0.01])
def test_a_reset_from_the_client_reaches_the_server(rtt):
    def script(conn):
        assert conn.recv(16) == b"hello"
        conn.sendall(b"ok")
        with pytest.raises(ConnectionResetError):
            while conn.recv(65536):
                pass

    with scripted_server(script) as (host, port, outcome), LatencyProxy(host, port, rtt) as proxy:
        sock = client_of(proxy)
        sock.sendall(b"hello")
        assert sock.recv(16) == b"ok"
        reset(sock)
        assert outcome["done"].wait(TIMEOUT)


def test_a_refused_upstream_resets_the_client():
    with socket.socket() as s:      # a port with no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LatencyProxy("127.0.0.1", port, 0) as proxy:
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            # (the reset may come while connect() still waits: a connect with a timeout sees it)
            with contextlib.closing(client_of(proxy)) as sock:
                sock.sendall(b"stats\r\n")
                sock.recv(16)


@pytest.mark.parametrize("rtt", [0, 0.005])
def test_a_connection_through_the_proxy_puts_reserves_and_deletes(impl, beanstalkd, monkeypatch, tube, rtt):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    with LatencyProxy(beanstalkd.host, beanstalkd.port, rtt) as proxy:
        assert (proxy.rtt, proxy.target) == (rtt, (beanstalkd.host, beanstalkd.port))
        with beanstalkc_fast.Connection(proxy.host, proxy.port, socket_timeout=TIMEOUT) as conn:
            conn.use(tube)
            conn.watch(tube)
            jid = conn.put(b"through the proxy")
            job = conn.reserve(0)
            assert (job.jid, job.body) == (jid, "through the proxy")
            job.delete()
            ids = conn.put_many([b"%d" % i for i in range(3000)])
            jobs = conn.reserve_many(5000, 0)
            assert [j.jid for j in jobs] == ids and jobs[-1].body == "2999"
            conn.delete_many(jobs)
            assert conn.stats_tube(tube)["current-jobs-ready"] == 0
        assert proxy.cpu_time() > 0


def test_close_with_open_connections_ends_them_and_the_thread(beanstalkd):
    proxy = LatencyProxy(beanstalkd.host, beanstalkd.port, 0.001)
    conns = [beanstalkc_fast.Connection(proxy.host, proxy.port, socket_timeout=TIMEOUT) for _ in range(3)]
    for c in conns:
        c.stats()      # the relay is up for each
    proxy.close()
    assert not proxy._thread.is_alive()
    for c in conns:
        with pytest.raises(beanstalkc_fast.SocketError):
            c.stats()
        c.close()
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT).recv(1)
    cpu = proxy.cpu_time()
    assert cpu > 0 and proxy.cpu_time() == cpu
    proxy.close()       # twice is fine
    assert "closed" in repr(proxy)


def test_a_negative_rtt_is_refused():
    with pytest.raises(ValueError):
        LatencyProxy("127.0.0.1", 11300, -0.001)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux: the thread id is pinnable")
def test_the_relay_thread_can_be_pinned(beanstalkd):
    with LatencyProxy(beanstalkd.host, beanstalkd.port) as proxy:
        cpus = os.sched_getaffinity(proxy.native_id)
        os.sched_setaffinity(proxy.native_id, {min(cpus)})
        assert os.sched_getaffinity(proxy.native_id) == {min(cpus)}
        assert os.sched_getaffinity(0) == cpus
