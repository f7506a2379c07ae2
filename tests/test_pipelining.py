"""Threads sharing one Connection pipeline their commands (SPEC 7).

Every caller's result is checked against the server's own state; the server is killed with
replies outstanding (every acknowledged job survives in its binlog, none is there twice);
a caller that stops waiting keeps the stream in sync; a blocking reserve still holds the
connection. The latency proxy, not sleeps, keeps replies outstanding long enough to overlap.
"""
import random
import signal
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import CommandFailed, Connection, SocketError
from beanstalkc_fast.testing import BeanstalkdServer, LatencyProxy

GUARD = 60.0


def run_threads(n, target):
    """Run target(i) in n threads; return the exceptions they raised, by thread index."""
    errors = {}

    def wrap(i):
        try:
            target(i)
        except BaseException as err:    # reported to the test
            errors[i] = err

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD)
        assert not t.is_alive(), "thread still running: deadlock?"
    return errors


def wait_until(condition, what):
    """Poll ``condition`` (a state the test itself drives, not a delay) until it holds."""
    deadline = time.monotonic() + GUARD
    while not condition():
        assert time.monotonic() < deadline, "never happened: " + what
        time.sleep(0.001)


def depth_probe(conn):
    """Record how many commands were in flight each time a caller queued behind others."""
    depths = []
    enqueue = conn._enqueue

    def probe(proto, queue):
        depths.append(len(queue))
        return enqueue(proto, queue)
    conn._enqueue = probe
    return depths


@pytest.fixture
def shared(make_conn, tube):
    c = make_conn(socket_timeout=20)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    return c


@pytest.mark.parametrize("threads", [16, 64])
def test_threads_mixing_commands_get_their_own_results(shared, make_conn, tube, threads):
    rounds = 40 if threads == 16 else 12
    put = {}        # jid -> (body, priority), as each put's caller was told
    deleted = set()
    reserved = []   # (jid, body) as each reserve's caller was told
    lock = threading.Lock()

    def work(i):
        rnd = random.Random(i)
        for k in range(rounds):
            body = "t%d-%d" % (i, k)
            jid = shared.put(body, priority=i)
            with lock:
                assert jid not in put
                put[jid] = (body, i)
            step = rnd.random()
            if step < 0.15:
                assert shared.use(tube) == tube
            elif step < 0.3:
                assert shared.watch(tube) == 1      # already watched: still one tube
            elif step < 0.4:
                assert shared.using() == tube
            job = shared.reserve(timeout=0) if step > 0.5 else None
            if job is not None:
                with lock:
                    reserved.append((job.jid, job.body))
                if rnd.random() < 0.5:
                    with lock:
                        deleted.add(job.jid)    # before the delete: another thread may look first
                    job.delete()
                else:
                    job.release(priority=job.jid % 7 + 1000)
            if step < 0.05:
                try:
                    assert shared.stats_job(jid)["id"] == jid
                except CommandFailed:   # reserved and deleted by another thread meanwhile
                    assert jid in deleted

    assert run_threads(threads, work) == {}
    assert len(put) == threads * rounds
    for jid, body in reserved:      # a reserve got a job that some put created, with its body
        assert put[jid][0] == body
    check = make_conn()
    for jid, (body, pri) in put.items():
        job = check.peek(jid)
        if jid in deleted:
            assert job is None
            continue
        assert job.body == body
        stats = check.stats_job(jid)
        released = [j for j, _ in reserved if j == jid]
        assert stats["pri"] == (jid % 7 + 1000 if released else pri)
        assert stats["state"] == "ready"
    assert check.stats_tube(tube)["current-jobs-ready"] == len(put) - len(deleted)


def test_callers_overlap_through_a_distant_server(make_conn, beanstalkd, tube):
    with LatencyProxy(beanstalkd.host, beanstalkd.port, 0.02) as proxy:
        c = Connection(proxy.host, proxy.port, socket_timeout=20)   # make_conn set the core
        try:
            c.use(tube)
            depths = depth_probe(c)
            ids = {}

            def work(i):
                ids[i] = [c.put(b"%d-%d" % (i, k)) for k in range(5)]

            assert run_threads(16, work) == {}
            # 80 puts at 20 ms each would take 1.6 s one at a time; they were in flight together
            assert max(depths) >= 8
            flat = [jid for v in ids.values() for jid in v]
            assert len(set(flat)) == 80
            for i, v in ids.items():
                assert [c.peek(jid).body_bytes for jid in v] == [b"%d-%d" % (i, k) for k in range(5)]
        finally:
            c.close()


def test_server_killed_with_replies_outstanding(impl, monkeypatch, beanstalkd_binary, tmp_path, tube):
    """kill -9 mid-stream: each caller gets its id or SocketError; after a restart from the
    binlog every id a caller was given exists with its body, and no job is there twice."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    server = BeanstalkdServer(binary=beanstalkd_binary, args=["-b", str(tmp_path)])
    server.start()
    proxy = LatencyProxy(server.host, server.port, 0.004)
    try:
        c = Connection(proxy.host, proxy.port, socket_timeout=20)
        c.use(tube)
        acked = {}
        failures = {}
        started = threading.Event()

        def work(i):
            k = 0
            while True:
                body = b"%d-%d" % (i, k)
                try:
                    jid = c.put(body)
                except SocketError as err:
                    failures[i] = err
                    return
                acked[jid] = body
                k += 1
                if len(acked) >= 200:
                    started.set()

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(16)]
        for t in threads:
            t.start()
        assert started.wait(GUARD)
        depths = depth_probe(c)
        wait_until(lambda: depths, "a caller queued behind others")    # replies outstanding
        server.process.send_signal(signal.SIGKILL)
        for t in threads:
            t.join(GUARD)
            assert not t.is_alive()
        assert sorted(failures) == list(range(16))      # every thread ended on a SocketError
        assert c.connected is False
        with pytest.raises(SocketError):
            c.put(b"after")
        server.stop()
        server.start()      # the same port and binlog
        check = server.connect()
        check.watch(tube)
        check.ignore("default")
        for jid, body in acked.items():
            assert check.peek(jid).body_bytes == body
        bodies = [j.body_bytes for j in check.reserve_many(len(acked) + 1000, timeout=0)]
        assert len(bodies) == len(set(bodies))          # nothing was sent twice
        assert set(acked.values()) <= set(bodies)
        check.close()
    finally:
        proxy.close()
        server.stop(kill=True)


class Interrupt(BaseException):
    pass


def test_a_caller_that_stops_waiting_keeps_the_stream_in_sync(make_conn, beanstalkd, tube):
    """The reply of a caller interrupted while it waits is read and dropped; the callers
    behind it get their own replies."""
    with LatencyProxy(beanstalkd.host, beanstalkd.port, 1.5) as proxy:     # the first put is in flight
        c = Connection(proxy.host, proxy.port, socket_timeout=20)   # make_conn set the core
        try:
            c.use(tube)
            real = c._allocate
            interrupted = []

            class Flaky:
                """The waiter lock of the second caller: its wait is interrupted."""
                def __init__(self):
                    self.lock = real()

                def acquire(self, blocking=True):
                    if self.lock.locked() and not interrupted:
                        interrupted.append(1)
                        raise Interrupt()
                    return self.lock.acquire(blocking)

                def release(self):
                    self.lock.release()

            results = {}

            def put(i):
                try:
                    results[i] = c.put(b"body %d" % i)
                except Interrupt:
                    results[i] = "interrupted"

            first = threading.Thread(target=put, args=(0,))
            first.start()
            wait_until(lambda: c._queue, "the first put in flight")
            c._allocate = Flaky
            put(1)                      # queued behind the first, then interrupted
            c._allocate = real
            rest = [threading.Thread(target=put, args=(i,)) for i in (2, 3)]
            for t in rest:
                t.start()
            for t in [first] + rest:
                t.join(GUARD)
            assert results[1] == "interrupted"
            ids = [results[0], results[2], results[3]]
            assert all(isinstance(jid, int) for jid in ids)
            check = make_conn()
            check.use(tube)
            for i in (0, 2, 3):
                assert check.peek(results[i]).body_bytes == b"body %d" % i
            assert check.peek_ready().body_bytes == b"body 0"
            # the interrupted put was sent, so its job exists; the stream is still in step
            assert check.stats_tube(tube)["current-jobs-ready"] == 4
            assert c.put(b"after") > max(ids)
            assert c.using() == tube
        finally:
            c.close()


def test_close_fails_every_caller_in_flight(make_conn, beanstalkd, tube):
    with LatencyProxy(beanstalkd.host, beanstalkd.port, 2.0) as proxy:     # replies take 2 s
        c = Connection(proxy.host, proxy.port, socket_timeout=20)   # make_conn set the core
        c.use(tube)
        outcomes = {}

        def put(i):
            try:
                outcomes[i] = c.put(b"x")
            except SocketError as err:
                outcomes[i] = err

        threads = [threading.Thread(target=put, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        wait_until(lambda: len(c._queue) == 8 or outcomes, "8 puts in flight")
        assert not outcomes, "a reply came before all 8 puts were written"
        c.close()
        for t in threads:
            t.join(GUARD)
            assert not t.is_alive()
        assert all(isinstance(v, SocketError) for v in outcomes.values()), outcomes
        assert c.connected is False
        c.close()


def test_a_blocking_reserve_holds_the_connection(make_conn, tube):
    c = make_conn(socket_timeout=20)
    c.watch(tube)
    c.use(tube)
    events = []
    got = {}

    def consumer():
        got["job"] = c.reserve()
        events.append("reserved")

    t = threading.Thread(target=consumer, daemon=True)
    t.start()
    wait_until(c._lock.locked, "the reserve holding the connection")
    putter = threading.Thread(target=lambda: events.append(("put", c.put(b"mine"))), daemon=True)
    putter.start()
    other = make_conn()
    other.use(tube)
    jid = other.put(b"theirs")
    t.join(GUARD)
    putter.join(GUARD)
    assert got["job"].jid == jid
    assert events[0] == "reserved" and events[1][0] == "put"     # the put waited for the reserve
    got["job"].delete()
