"""TLS (``ssl=``, ``server_hostname=``): every client through a TLS terminator (``testing.TLSProxy``)
in front of a real beanstalkd, with a self-signed certificate made by the ``openssl`` command.

Batches matter most: bodies of 16 KB or more go out by scatter-gather (``sendmsg``), which an
SSL socket refuses, so both cores must send its buffers one by one.
"""
import os
import shutil
import ssl
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import aio
from beanstalkc_fast.exceptions import InvalidArgument, InvalidType, SocketError
from beanstalkc_fast.testing import TLSProxy

BIG = 20 * 1024     # above the cores' BIG_BODY (16 KB): such a body is a buffer of its own


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """(certfile, keyfile) of a self-signed certificate for localhost and 127.0.0.1."""
    openssl = shutil.which("openssl") or ("/usr/bin/openssl" if os.path.exists("/usr/bin/openssl") else None)
    if openssl is None:
        if os.environ.get("CI"):
            pytest.fail("the openssl command is missing (CI is set: a missing tool is a failure)")
        pytest.skip("the openssl command is missing: no certificate for the TLS tests")
    d = tmp_path_factory.mktemp("tls")
    certfile, keyfile = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", keyfile, "-out", certfile, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return certfile, keyfile


@pytest.fixture
def context(cert):
    """A client context that trusts the test certificate (and checks host names)."""
    return ssl.create_default_context(cafile=cert[0])


@pytest.fixture(scope="module")
def proxy(beanstalkd, cert):
    with TLSProxy(beanstalkd.host, beanstalkd.port, *cert) as p:
        yield p


@pytest.fixture
def two_proxies(servers, cert):
    """TLS relays in front of two servers of this test's own."""
    with TLSProxy(servers[0].host, servers[0].port, *cert) as a, TLSProxy(servers[1].host, servers[1].port, *cert) as b:
        yield a, b


@pytest.fixture
def tls_conn(impl, proxy, context, tube, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    c = beanstalkc_fast.Connection(proxy.host, proxy.port, ssl=context, socket_timeout=30)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    yield c
    c.close()


def test_tls_proxy_repr_and_close(beanstalkd, cert):
    p = TLSProxy(beanstalkd.host, beanstalkd.port, *cert)
    assert "TLSProxy 127.0.0.1:%d" % p.port in repr(p)
    p.close()
    p.close()
    assert "closed" in repr(p)


# -- the blocking client, both cores --

def test_classic_commands(tls_conn, tube):
    c = tls_conn
    assert isinstance(c._proto.sock, ssl.SSLSocket)
    jid = c.put("hello", priority=10)
    job = c.reserve(timeout=0)
    assert (job.jid, job.body) == (jid, "hello")
    assert job.stats()["pri"] == 10
    job.touch()
    job.release(delay=0)
    job = c.reserve()
    job.bury()
    assert c.peek_buried().jid == jid
    assert c.kick(1) == 1
    assert c.peek_ready().body == "hello"
    assert c.peek(jid).body == "hello"
    assert c.stats_tube(tube)["current-jobs-ready"] == 1
    assert tube in c.tubes()
    assert c.using() == tube and c.watching() == [tube]
    assert c.stats()["current-connections"] >= 1
    c.reserve().delete()
    assert c.reserve(timeout=0) is None
    big = "x" * (BIG * 3)
    c.put(big)                          # one put of a big body: header, body, trailer buffers
    job = c.reserve()
    assert job.body == big
    job.delete()
    c.reconnect()                       # a new handshake; the tubes come back
    assert c.using() == tube and c.watching() == [tube]


def test_batches_big_bodies_and_many_items(tls_conn):
    c = tls_conn
    bodies = [bytes([65 + i % 26]) * BIG for i in range(60)] + [b"small %d" % i for i in range(5000)]
    ids = c.put_many(bodies)     # windows of big and small bodies: the scatter-gather path
    assert len(ids) == len(bodies) and len(set(ids)) == len(ids)
    jobs = c.reserve_many(len(bodies), timeout=0)
    assert [j.body_bytes for j in jobs] == bodies
    c.delete_many(jobs)
    assert c.reserve(timeout=0) is None
    assert c.stats_tube(c.using())["current-jobs-ready"] == 0


def test_threads_sharing_a_tls_connection(tls_conn):
    c = tls_conn
    ids, errors = [], []

    def work(k):
        try:
            ids.extend(c.put("%d-%d" % (k, i)) for i in range(50))
        except Exception as err:    # pragma: no cover - reported below
            errors.append(err)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(set(ids)) == 200
    c.delete_many(c.reserve_many(200, timeout=0))


def test_untrusted_certificate_and_wrong_name(impl, proxy, context, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    with pytest.raises(SocketError) as info:
        beanstalkc_fast.Connection(proxy.host, proxy.port, ssl=ssl.create_default_context())
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(SocketError) as info:
        beanstalkc_fast.Connection(proxy.host, proxy.port, ssl=context, server_hostname="beanstalk.example")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    c = beanstalkc_fast.Connection(proxy.host, proxy.port, ssl=context, server_hostname="localhost")
    assert c.using() == "default"
    c.close()


def test_options_are_checked_before_connecting(context):
    # Port 9 on loopback: nothing is reached, the checks come first.
    for make in (lambda **kw: beanstalkc_fast.Connection("127.0.0.1", 9, **kw),
                 lambda **kw: aio.Connection("127.0.0.1", 9, **kw),
                 lambda **kw: beanstalkc_fast.Pool(["127.0.0.1:9"], **kw),
                 lambda **kw: aio.Pool(["127.0.0.1:9"], **kw)):
        with pytest.raises(InvalidType, match="SSLContext"):
            make(ssl=True)
        with pytest.raises(InvalidType, match="server_hostname"):
            make(ssl=context, server_hostname=b"localhost")
        with pytest.raises(InvalidArgument, match="only meaningful with ssl"):
            make(server_hostname="localhost")
    for make in (lambda **kw: beanstalkc_fast.Connection("/tmp/no-such.sock", **kw),
                 lambda **kw: aio.Connection("unix:/tmp/no-such.sock", **kw),
                 lambda **kw: beanstalkc_fast.Pool(["/tmp/no-such.sock"], **kw)):
        with pytest.raises(InvalidArgument, match="unix socket has no host name"):
            make(ssl=context)
    loose = ssl.create_default_context()
    loose.check_hostname = False
    aio.Connection("/tmp/no-such.sock", ssl=loose)      # no name to check: accepted
    aio.Connection("/tmp/no-such.sock", ssl=context, server_hostname="localhost")


def test_pool_over_two_tls_relays(impl, two_proxies, context, tube, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    a, b = two_proxies
    with beanstalkc_fast.Pool({"a": (a.host, a.port), "b": (b.host, b.port)}, ssl=context) as pool:
        producers = [s.conns.producer for s in pool._policy.servers]
        assert all(p is not None and p.connected for p in producers)
        # Connected, nothing read yet: the TLS 1.3 session tickets wait unread. They are no
        # input that makes an idle connection stale: the pool keeps it.
        for ref in [pool.put("first") for _ in range(4)]:
            pool.delete(ref)
        assert [s.conns.producer for s in pool._policy.servers] == producers
        pool.use(tube)
        pool.watch(tube)
        refs = [pool.put("p%d" % i) for i in range(10)]
        assert {ref.server for ref in refs} == {"a", "b"}
        bodies = [b"B" * BIG] * 20 + [b"s%d" % i for i in range(3000)]
        more = pool.put_many(bodies)
        assert len(more) == len(bodies)
        assert pool.stats_tube(tube)["current-jobs-ready"] == len(bodies) + 10
        jobs = pool.reserve_many(len(bodies) + 10, timeout=0)
        assert sorted(j.body_bytes for j in jobs) == sorted([b"p%d" % i for i in range(10)] + bodies)
        pool.delete_many(jobs)
        assert pool.reserve(timeout=0) is None


def test_pool_reserve_waits_on_fresh_tls_connections(impl, two_proxies, servers, context, monkeypatch):
    """A waiter that only sent its reserve has readable input over TLS (the session tickets):
    that is no reply, and the pool goes on waiting on every server (it used to block on one)."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    a, b = two_proxies
    with beanstalkc_fast.Pool({"a": (a.host, a.port), "b": (b.host, b.port)}, ssl=context) as pool:
        for server in (servers[0], servers[1], servers[0], servers[1]):
            got = []
            waiting = threading.Thread(target=lambda: got.append(pool.reserve()))
            waiting.start()
            direct = server.connect()
            while not direct.stats()["current-waiting"]:    # the pool's waiter is at the server
                time.sleep(0.01)
            direct.put("for the pool")
            direct.close()
            waiting.join(30)
            assert not waiting.is_alive(), "the pool blocked on one server's connection"
            assert got[0].body == "for the pool"
            got[0].delete()
            for c in (s.conns.waiter for s in pool._policy.servers):
                assert c is None or c.connected


# -- asyncio --

def test_aio_over_tls(arun, proxy, context, tube):
    async def go():
        async with aio.connect(proxy.host, proxy.port, ssl=context, socket_timeout=30) as c:
            assert c._main.transport.get_extra_info("ssl_object") is not None
            await c.use(tube)
            await c.watch(tube)
            await c.ignore("default")
            jid = await c.put("hello")
            job = await c.reserve(timeout=0)
            assert (job.jid, job.body) == (jid, "hello")
            await job.bury()
            assert await c.kick(1) == 1
            assert (await c.peek_ready()).body == "hello"
            assert (await c.stats_tube(tube))["current-jobs-ready"] == 1
            await (await c.reserve()).delete()
            bodies = [b"Z" * BIG] * 40 + [b"s%d" % i for i in range(4000)]
            ids = await c.put_many(bodies)
            assert len(set(ids)) == len(bodies)
            jobs = await c.reserve_many(len(bodies), timeout=0)
            assert [j.body_bytes for j in jobs] == bodies
            await c.delete_many(jobs)
            assert await c.reserve(timeout=0) is None
    arun(go())


def test_aio_certificate_checks(arun, proxy, context):
    async def go():
        with pytest.raises(SocketError) as info:
            await aio.connect(proxy.host, proxy.port, ssl=ssl.create_default_context())
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        with pytest.raises(SocketError) as info:
            await aio.connect(proxy.host, proxy.port, ssl=context, server_hostname="beanstalk.example")
        assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        c = await aio.connect(proxy.host, proxy.port, ssl=context, server_hostname="localhost")
        assert await c.using() == "default"
        await c.close()
    arun(go())


def test_aio_pool_over_two_tls_relays(arun, two_proxies, context, tube):
    a, b = two_proxies

    async def go():
        async with aio.Pool({"a": (a.host, a.port), "b": (b.host, b.port)}, ssl=context) as pool:
            await pool.use(tube)
            await pool.watch(tube)
            refs = [await pool.put("p%d" % i) for i in range(10)]
            assert {ref.server for ref in refs} == {"a", "b"}
            bodies = [b"B" * BIG] * 20 + [b"s%d" % i for i in range(3000)]
            assert len(await pool.put_many(bodies)) == len(bodies)
            jobs = await pool.reserve_many(len(bodies) + 10, timeout=0)
            assert sorted(j.body_bytes for j in jobs) == sorted([b"p%d" % i for i in range(10)] + bodies)
            await pool.delete_many(jobs)
            assert await pool.reserve(timeout=0) is None
    arun(go())


# -- gevent: the blocking client through gevent's patched ssl --

GEVENT = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import importlib, ssl, sys
    import gevent
    import beanstalkc_fast
    core, host, port, cafile, tube = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    beanstalkc_fast.Connection._core = importlib.import_module(core)
    context = ssl.create_default_context(cafile=cafile)     # after patching: gevent's context

    def consumer(i):
        c = beanstalkc_fast.Connection(host, port, ssl=context, socket_timeout=20)
        assert "gevent" in type(c._proto.sock).__module__, type(c._proto.sock)
        c.watch("%s-%d" % (tube, i)); c.ignore("default")
        job = c.reserve()                   # blocks this greenlet only
        body = job.body_bytes
        job.delete()
        c.close()
        return body

    def producer():
        gevent.sleep(0.2)
        c = beanstalkc_fast.Connection(host, port, ssl=context)
        for i in range(3):
            c.use("%s-%d" % (tube, i))
            c.put(b"job %d" % i)
        c.use(tube)
        bodies = [b"G" * 20480] * 30 + [b"g%d" % k for k in range(2000)]
        assert len(c.put_many(bodies)) == len(bodies)
        c.watch(tube); c.ignore("default")
        jobs = c.reserve_many(len(bodies), timeout=0)
        assert [j.body_bytes for j in jobs] == bodies
        c.delete_many(jobs)
        c.close()

    gs = [gevent.spawn(consumer, i) for i in range(3)] + [gevent.spawn(producer)]
    gevent.joinall(gs, timeout=60, raise_error=True)
    assert [g.value for g in gs[:3]] == [b"job 0", b"job 1", b"job 2"], [g.value for g in gs]
    print("ok")
""")


def test_gevent_over_tls(impl, proxy, cert, tube, tmp_path):
    pytest.importorskip("gevent", reason="gevent is not installed")
    script = tmp_path / "green_tls.py"
    script.write_text(GEVENT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))  # in-tree or installed
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(script), impl.__name__, proxy.host, str(proxy.port), cert[0], tube],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "ok", proc.stdout + proc.stderr[-2000:]
