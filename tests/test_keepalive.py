"""keepalive=True (the default) on every connection: SO_KEEPALIVE with the timings that find a dead
peer in about a minute, read back with getsockopt; keepalive=False leaves it off (issue 21)."""
import socket

import pytest

import beanstalkc_fast
from beanstalkc_fast import InvalidType, aio
from beanstalkc_fast._defaults import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, set_keepalive

# (option, value) pairs this platform lets a client read back
_TIMINGS = [(getattr(socket, name, None), value) for name, value in (
    ("TCP_KEEPIDLE" if hasattr(socket, "TCP_KEEPIDLE") else "TCP_KEEPALIVE", KEEPALIVE_IDLE),
    ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL), ("TCP_KEEPCNT", KEEPALIVE_COUNT))]
TIMINGS = [(option, value) for option, value in _TIMINGS if option is not None]


def assert_keepalive(sock, on):
    assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is on
    if on:
        for option, value in TIMINGS:
            assert sock.getsockopt(socket.IPPROTO_TCP, option) == value


def test_found_within_about_a_minute():
    assert KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT <= 60


@pytest.mark.parametrize("keepalive", [True, False])
def test_sync_connection(make_conn, keepalive):
    conn = make_conn() if keepalive else make_conn(keepalive=False)
    assert_keepalive(conn._proto.sock, keepalive)
    assert conn.stats()["pid"]


@pytest.mark.parametrize("keepalive", [True, False])
def test_aio_connection_and_its_consumer_channels(arun, beanstalkd, tube, keepalive):
    async def main():
        kw = {} if keepalive else {"keepalive": False}
        async with aio.connect(beanstalkd.host, beanstalkd.port, **kw) as conn:
            await conn.watch(tube)
            assert await conn.reserve(0) is None     # opens a consumer channel
            channels = [conn._main] + conn._consumers
            assert len(channels) == 2
            for ch in channels:
                assert_keepalive(ch.transport.get_extra_info("socket"), keepalive)
    arun(main())


@pytest.mark.parametrize("keepalive", [True, False])
def test_pools_pass_it_to_their_connections(impl, monkeypatch, arun, beanstalkd, tube, keepalive):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    address = "%s:%d" % (beanstalkd.host, beanstalkd.port)
    kw = {} if keepalive else {"keepalive": False}
    with beanstalkc_fast.Pool([address], **kw) as pool:
        pool.watch(tube)
        assert pool.reserve(0) is None
        conns = pool._policy.servers[0].conns
        for conn in (conns.producer, conns.consumer):
            assert_keepalive(conn._proto.sock, keepalive)

    async def main():
        async with aio.Pool([address], **kw) as apool:
            await apool.watch(tube)
            assert await apool.reserve(0) is None
            conns = apool._policy.servers[0].conns
            for conn in (conns.producer, conns.consumer):
                assert_keepalive(conn._main.transport.get_extra_info("socket"), keepalive)
    arun(main())


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_checked_before_connecting(value):
    # port 1: nobody listens there, so a connect would be SocketError
    for make in (lambda: beanstalkc_fast.Connection("127.0.0.1", 1, keepalive=value),
                 lambda: aio.Connection("127.0.0.1", 1, keepalive=value),
                 lambda: aio.connect("127.0.0.1", 1, keepalive=value),
                 lambda: beanstalkc_fast.Pool(["127.0.0.1:1"], keepalive=value),
                 lambda: aio.Pool(["127.0.0.1:1"], keepalive=value)):
        with pytest.raises(InvalidType):
            make()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets")
def test_unix_sockets_skip_it():
    a, b = socket.socketpair(socket.AF_UNIX)
    try:
        set_keepalive(a, True)      # no error, nothing set: a unix socket has no peer to lose
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        a.close()
        b.close()
