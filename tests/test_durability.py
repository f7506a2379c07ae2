"""Durability with beanstalkd's binlog (-b DIR): what the client confirmed survives SIGKILL.

beanstalkd writes a job to its binlog before it answers INSERTED (and a delete before
DELETED), so every id the client returned -- including the confirmed prefix of a batch cut
by the kill -- must be there after a restart on the same binlog, with its body and priority.
"""
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import SocketError


@pytest.fixture
def server(binlog_server):
    return binlog_server


@pytest.fixture
def connect(impl, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    conns = []

    def make(srv, **kw):
        kw.setdefault("socket_timeout", 10)
        c = srv.connect(**kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


def body_of(i):
    return b"job-%d-" % i + b"x" * (i % 97)


def check_all_there(conn, tube, expected):
    """Every (jid -> (body, pri)) is present: peek each and compare."""
    missing, wrong = [], []
    for jid, (body, pri) in expected.items():
        job = conn.peek(jid)
        if job is None:
            missing.append(jid)
        elif job.body_bytes != body:
            wrong.append(jid)
    assert not missing, "%d confirmed jobs lost, e.g. %r" % (len(missing), missing[:5])
    assert not wrong, "%d bodies changed, e.g. %r" % (len(wrong), wrong[:5])
    for jid, (body, pri) in list(expected.items())[::500]:
        stats = conn.stats_job(jid)
        assert (stats["tube"], stats["pri"]) == (tube, pri)


def test_put_many_survives_sigkill(server, connect, tube):
    c = connect(server)
    c.use(tube)
    n = 20000
    items = [(body_of(i), i % 1000) for i in range(n)]
    ids = c.put_many(items)
    single = [c.put(body_of(n + k), priority=7) for k in range(100)]
    expected = {jid: item for jid, item in zip(ids, items)}
    expected.update({jid: (body_of(n + k), 7) for k, jid in enumerate(single)})

    server.stop(kill=True)
    server.start()
    c2 = connect(server)
    assert c2.stats_tube(tube)["current-jobs-ready"] == n + 100
    check_all_there(c2, tube, expected)


def test_confirmed_prefix_of_a_killed_batch_survives(server, connect, tube):
    c = connect(server)
    c.use(tube)
    killed_at = 5000

    def items():
        for i in range(30000):
            if i == killed_at:
                server.stop(kill=True)
            yield (body_of(i), 5)

    with pytest.raises(SocketError) as info:
        c.put_many(items())
    ids = info.value.results
    assert ids and all(type(r) is int for r in ids)

    server.start()
    c2 = connect(server)
    check_all_there(c2, tube, {jid: (body_of(i), 5) for i, jid in enumerate(ids)})
    # Nothing beyond the items handed to the client can exist; and no duplicates.
    assert len(ids) <= c2.stats_tube(tube)["current-jobs-ready"] <= killed_at


def test_deletes_and_reservations_after_sigkill(server, connect, tube):
    c = connect(server)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    ids = c.put_many([body_of(i) for i in range(3000)])
    jobs = c.reserve_many(1000)
    assert len(jobs) == 1000
    c.delete_many(jobs[:500])                # confirmed deletes
    c.bury_many(jobs[500:700])
    reserved = jobs[700:]                    # still reserved when the server dies

    server.stop(kill=True)
    server.start()
    c2 = connect(server)
    c2.use(tube)
    for job in jobs[:500]:
        assert c2.peek(job.jid) is None
    states = {jid: c2.stats_job(jid)["state"] for jid in ids[::7] if c2.peek(jid) is not None}
    for job in jobs[500:700]:
        assert c2.stats_job(job.jid)["state"] == "buried"
    for job in reserved:
        assert c2.stats_job(job.jid)["state"] == "ready"     # a reservation does not survive
    assert c2.stats_tube(tube)["current-jobs-ready"] == 3000 - 500 - 200
    assert set(states.values()) <= {"ready", "buried"}


def test_restart_during_consumer_loop_then_reconnect(server, connect, tube):
    """A consumer that reconnects after a crash sees every job it had not deleted."""
    producer = connect(server)
    producer.use(tube)
    ids = set(producer.put_many([body_of(i) for i in range(2000)]))
    consumer = connect(server)
    consumer.watch(tube)
    consumer.ignore("default")
    done = set()
    crashed = False
    deadline = time.monotonic() + 60
    while len(done) < len(ids) and time.monotonic() < deadline:
        try:
            jobs = consumer.reserve_many(100, timeout=1)
            if len(done) >= 1000 and not crashed:
                crashed = True
                server.stop(kill=True)
                server.start()
            consumer.delete_many(jobs)
            done.update(j.jid for j in jobs)
        except SocketError:
            consumer.reconnect()
    assert crashed
    assert done == ids
