"""Pipelined batches against a real beanstalkd, on both backends.

put_many / delete_many / release_many / bury_many / touch_many / reserve_many:
ordering, streaming with bounded memory, validation before sending, every reply
drained before BatchError, a confirmed prefix on a socket failure, no deadlock
whatever the batch and body sizes.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import BatchError, CommandFailed, DeadlineSoon, SocketError
from beanstalkc_fast.testing import BeanstalkdServer

# The directory holding the package under test (the checkout, or site-packages for an installed
# wheel): subprocesses import that package, never the checkout's uncompiled copy.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))
MB = 1024 * 1024


def ready(conn, tube):
    return conn.stats_tube(tube)["current-jobs-ready"]


def same_error(err, cls, *args):
    return type(err) is cls and err.args == args


@pytest.fixture
def private(impl, monkeypatch):
    """Start a private beanstalkd (``args``) and return it; killed at teardown."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    servers = []

    def start(args=()):
        server = BeanstalkdServer(args=list(args)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(kill=True)


# -- streaming a million puts ---------------------------------------------------------

_PEAK = textwrap.dedent("""
    import importlib, json, sys
    import beanstalkc_fast

    def hwm_kb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    core, host, port, tube, count, size = sys.argv[1:]
    beanstalkc_fast.Connection._core = importlib.import_module(core)
    conn = beanstalkc_fast.Connection(host, int(port), socket_timeout=60)
    conn.use(tube)
    if size == "small":
        items = (b"job %d" % i for i in range(int(count)))
    else:
        items = (b"%08d" % i * (int(size) // 8) for i in range(int(count)))
    before = hwm_kb()
    ids = conn.put_many(items)
    after = hwm_kb()
    print(json.dumps({"before": before, "after": after, "n": len(ids), "first": ids[0], "last": ids[-1],
                      "consecutive": all(b == a + 1 for a, b in zip(ids, ids[1:]))}))
""")


def put_many_in_subprocess(impl, server, tube, count, size):
    """put_many from a generator in a fresh process, so that its peak RSS (VmHWM) is the batch's."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _PEAK, impl.__name__, server.host, str(server.port),
                           tube, str(count), str(size)], env=env, capture_output=True, text=True, timeout=600,
                          cwd=PACKAGE_ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    out["growth_mb"] = (out["after"] - out["before"]) / 1024
    print("put_many %d x %s bytes (%s): peak RSS %.1f MB -> %.1f MB, growth %.1f MB" % (
        count, size, impl.__name__, out["before"] / 1024, out["after"] / 1024, out["growth_mb"]))
    return out


def test_put_many_million_from_generator(conn, tube, impl, beanstalkd):
    count = 1000000
    out = put_many_in_subprocess(impl, beanstalkd, tube, count, "small")
    growth_mb = out["growth_mb"]
    assert out["n"] == count
    assert out["consecutive"] and out["last"] == out["first"] + count - 1
    assert ready(conn, tube) == count
    assert conn.peek(out["first"]).body == "job 0"
    assert conn.peek(out["last"]).body == "job %d" % (count - 1)
    # The list of a million ids alone is ~40 MB; holding the bodies or commands as well would exceed this.
    assert growth_mb < 50
    conn.delete_many(range(out["first"], out["last"] + 1))
    assert ready(conn, tube) == 0


# -- bodies of many sizes -------------------------------------------------------------

def test_put_many_reserve_many_60k_bodies(make_conn, tube):
    conn = make_conn(encoding=None, socket_timeout=60)
    conn.use(tube)
    conn.watch(tube)
    conn.ignore("default")
    bodies = [b"%06d" % i * 10240 for i in range(2000)]      # 60 KB each, all different
    ids = conn.put_many(bodies)
    assert len(ids) == 2000 and ids == sorted(ids)
    jobs = conn.reserve_many(3000, timeout=1)
    assert [job.jid for job in jobs] == ids
    assert all(job.reserved for job in jobs)
    assert [job.body for job in jobs] == bodies
    assert conn.reserve_many(10) == []
    conn.delete_many(jobs)
    assert not any(job.reserved for job in jobs)
    assert ready(conn, tube) == 0 and conn.stats_tube(tube)["current-jobs-reserved"] == 0


def test_put_many_items_and_defaults(conn, tube):
    ids = conn.put_many(["plain", ("tuple",), ("pri", 7), ("delayed", 8, 100), ("ttr", 9, 0, 33), "h\xe9llo \u2713"],
                        priority=5, ttr=44)
    stats = [conn.stats_job(jid) for jid in ids]
    assert [(s["pri"], s["delay"], s["ttr"]) for s in stats] == [
        (5, 0, 44), (5, 0, 44), (7, 0, 44), (8, 100, 44), (9, 0, 33), (5, 0, 44)]
    assert [conn.peek(jid).body for jid in ids] == ["plain", "tuple", "pri", "delayed", "ttr", "h\xe9llo \u2713"]
    assert conn.put_many([]) == [] and conn.put_many(iter(())) == []
    conn.delete_many(ids)


def test_put_many_mixed_body_types(make_conn, tube):
    from array import array
    conn = make_conn(encoding=None)
    conn.use(tube)
    words = array("i", [1, 2, 3])
    big = bytearray(b"b" * 65000)    # a big body (sent without a copy), under the default -z
    ids = conn.put_many([b"bytes", bytearray(b"ba"), memoryview(b"mv"), memoryview(words), big, memoryview(big)])
    assert [conn.peek(jid).body for jid in ids] == [b"bytes", b"ba", b"mv", words.tobytes(), bytes(big), bytes(big)]
    assert conn.put(b"in sync") == ids[-1] + 1
    conn.delete_many(ids + [ids[-1] + 1])


def test_put_many_big_bodies_bounded_memory(private, impl, tube):
    # A generator of 200 bodies of 1 MB: each can be freed once sent, so the batch holds a few at most.
    server = private(["-z", str(2 * MB)])
    out = put_many_in_subprocess(impl, server, tube, 200, MB)
    assert out["n"] == 200 and out["consecutive"]
    assert out["growth_mb"] < 50
    conn = server.connect(encoding=None)
    assert conn.stats()["current-jobs-ready"] == 200
    assert conn.peek(out["first"] + 27).body == b"%08d" % 27 * (MB // 8)


def test_no_deadlock_with_big_bodies(private):
    # socket_timeout turns a deadlock into a failure instead of a hang.
    conn = private(["-z", str(2 * MB)]).connect(encoding=None, socket_timeout=60)
    bodies = [b"%04d" % i * (MB // 4) for i in range(300)]     # 300 MB in all
    ids = conn.put_many(bodies)
    assert len(ids) == 300
    jobs = conn.reserve_many(300, timeout=1)
    assert [job.jid for job in jobs] == ids
    assert all(job.body == body for job, body in zip(jobs, bodies))
    conn.delete_many(jobs)
    assert conn.stats()["current-jobs-reserved"] == 0 and conn.stats()["current-jobs-ready"] == 0


# -- failures on the server: every reply is read, then BatchError ------------------------

@pytest.mark.parametrize("kind", ["list", "generator"])
@pytest.mark.parametrize("at", [0, 5, 1500, 2999])
def test_put_many_job_too_big(private, kind, at):
    conn = private(["-z", "1000"]).connect(socket_timeout=30)
    items = ["job %d" % i for i in range(3000)]
    items[at] = "x" * 1001
    with pytest.raises(BatchError) as info:
        conn.put_many(items if kind == "list" else iter(items))
    results = info.value.results
    assert len(results) == 3000
    assert same_error(results[at], CommandFailed, "put", "JOB_TOO_BIG", [])
    assert [index for index, _ in info.value.errors] == [at]
    ids = results[:at] + results[at + 1:]
    assert all(type(jid) is int for jid in ids) and ids == sorted(set(ids))
    # In sync afterwards: the next reply is the next command's.
    jid = conn.put("after")
    assert jid > ids[-1]
    jobs = conn.reserve_many(5000)
    assert [job.jid for job in jobs] == ids + [jid]
    assert [job.body for job in jobs] == items[:at] + items[at + 1:] + ["after"]


class _Paged(list):
    """A list whose own iteration is longer than its len()."""

    def __iter__(self):
        return iter(range(1, 200001))


def test_delete_many_of_a_list_subclass_takes_its_items_by_index(conn, tube):
    # The compiled core once sized its id array by len() and filled it by iterating: a crash.
    ids = conn.put_many(["a", "b", "c"])
    conn.delete_many(_Paged(ids))
    assert [conn.peek(jid) for jid in ids] == [None, None, None]


def test_job_windows_of_a_list_that_grows_while_its_ids_are_read(impl):
    items = []

    class Grower:
        def __init__(self, jid):
            self._jid = jid

        @property
        def jid(self):
            if len(items) < 10000:
                items.append(Grower(len(items) + 1))
            return self._jid
    items.append(Grower(1))
    sent = b"".join(b"".join(chunks) for chunks, _ in impl.job_windows(items, b"delete %d\r\n", (), 100))
    assert sent == b"delete 1\r\n"     # the items there when the batch began


def test_delete_many_missing(conn, tube):
    ids = conn.put_many(["a", "b", "c"])
    missing = ids[-1] + 1000000
    with pytest.raises(BatchError) as info:
        conn.delete_many([ids[0], missing, ids[1], ids[2]])
    results = info.value.results
    assert results[0] is None and results[2:] == [None, None]
    assert same_error(results[1], CommandFailed, "delete", "NOT_FOUND", [])
    assert info.value.errors == [(1, results[1])]
    assert [conn.peek(jid) for jid in ids] == [None, None, None]
    jid = conn.put("next")
    assert jid > ids[-1]
    conn.delete(jid)


# -- validation before sending ----------------------------------------------------------

BAD_ITEMS = [
    (None, TypeError),
    (3.5, TypeError),
    (("body", "1"), TypeError),
    (("body", -1), ValueError),
    (("body", 2 ** 32), ValueError),
    (("body", 1, -1), ValueError),
    (("body", 1, 0, 2 ** 32), ValueError),
    (("body", 1, 0, 1, 5), ValueError),
    ((), ValueError),
]


@pytest.mark.parametrize("bad,exc", BAD_ITEMS, ids=[repr(b) for b, _ in BAD_ITEMS])
def test_put_many_bad_item_in_list_sends_nothing(conn, tube, bad, exc):
    before = conn.stats()
    items = ["ok %d" % i for i in range(2500)]
    items[2400] = bad
    with pytest.raises(exc) as info:
        conn.put_many(items)
    assert "item 2400" in str(info.value)
    assert info.value.results is None
    after = conn.stats()
    assert (after["cmd-put"], after["total-jobs"]) == (before["cmd-put"], before["total-jobs"])
    with pytest.raises(exc):
        conn.put_many(tuple(items))
    assert conn.stats()["cmd-put"] == before["cmd-put"]
    assert ready(conn, tube) == 0
    jid = conn.put("still in sync")
    assert conn.peek(jid).body == "still in sync"
    conn.delete(jid)


@pytest.mark.parametrize("args", [{"priority": -1}, {"delay": 2 ** 32}, {"ttr": "1"}])
def test_put_many_bad_defaults(conn, args):
    before = conn.stats()["cmd-put"]
    with pytest.raises((TypeError, ValueError)):
        conn.put_many(["a", "b"], **args)
    assert conn.stats()["cmd-put"] == before


@pytest.mark.parametrize("items", ["abc", b"abc"])
def test_put_many_rejects_a_single_body(conn, items):
    # A str would otherwise be taken as an iterable of one-character bodies.
    before = conn.stats()["cmd-put"]
    with pytest.raises(TypeError):
        conn.put_many(items)
    assert conn.stats()["cmd-put"] == before


def test_put_many_bad_item_in_generator_after_windows(conn, tube):
    def items():
        for i in range(3000):
            yield "ok %d" % i
        yield ("bad", -1)
        yield "never"

    with pytest.raises(ValueError) as info:
        conn.put_many(items())
    sent = info.value.results
    # Whole windows went in before the bad one was validated: more than one, not all.
    assert 1024 < len(sent) <= 3000
    assert all(type(jid) is int for jid in sent) and sent == list(range(sent[0], sent[0] + len(sent)))
    assert ready(conn, tube) == len(sent)
    jobs = conn.reserve_many(5000)
    assert [job.jid for job in jobs] == sent
    assert [job.body for job in jobs] == ["ok %d" % i for i in range(len(sent))]
    conn.delete_many(jobs)


def test_put_many_bad_item_in_first_window_of_generator(conn, tube):
    before = conn.stats()["cmd-put"]
    with pytest.raises(TypeError) as info:
        conn.put_many(x for x in ["a", "b", None, "c"])
    assert info.value.results is None
    assert conn.stats()["cmd-put"] == before


class Boom(Exception):
    pass


def test_iterator_raising_after_windows(conn, tube):
    def items():
        for i in range(3000):
            yield "ok %d" % i
        raise Boom("the source failed")

    with pytest.raises(Boom) as info:
        conn.put_many(items())
    sent = info.value.results
    assert 1024 < len(sent) <= 3000 and sent == list(range(sent[0], sent[0] + len(sent)))
    assert conn.connected and ready(conn, tube) == len(sent)
    assert conn.put("in sync") == sent[-1] + 1

    ids = sent + [sent[-1] + 1]

    def jids():
        yield from ids
        raise Boom("again")

    with pytest.raises(Boom) as info:
        conn.delete_many(jids())
    deleted = len(info.value.results)
    assert 1024 <= deleted <= len(ids) and set(info.value.results) == {None}
    assert conn.connected and ready(conn, tube) == len(ids) - deleted
    assert conn.peek(ids[deleted - 1]) is None
    conn.delete_many(ids[deleted:])
    assert ready(conn, tube) == 0


def test_not_iterable(conn, tube):
    with pytest.raises(TypeError):
        conn.put_many(5)
    with pytest.raises(TypeError):
        conn.delete_many(None)
    ids = conn.put_many(["ok"])
    assert conn.connected and ids == [conn.peek_ready().jid]
    conn.delete_many(ids)


def test_jobs_many_bad_ids(conn, tube):
    ids = conn.put_many(["a", "b"])
    for bad, exc in [("1", TypeError), (-1, ValueError), (2 ** 64, ValueError), (1.0, TypeError)]:
        with pytest.raises(exc):
            conn.delete_many([ids[0], bad, ids[1]])
        assert ready(conn, tube) == 2
    with pytest.raises(ValueError) as info:
        conn.delete_many(iter(list(range(ids[0], ids[0] + 2000)) + [-1]))
    # The windows sent before the bad id: the two jobs deleted, the other ids not found.
    results = info.value.results
    assert 1024 <= len(results) <= 2000 and results[:2] == [None, None]
    assert all(same_error(r, CommandFailed, "delete", "NOT_FOUND", []) for r in results[2:])
    assert ready(conn, tube) == 0


# -- job state batches ----------------------------------------------------------------

def test_release_bury_touch_many(conn, tube):
    ids = conn.put_many(["a", "b", "c", "d", "e", "f"], priority=100)
    jobs = conn.reserve_many(6)
    assert [job.jid for job in jobs] == ids and all(job.reserved for job in jobs)

    conn.touch_many(jobs)
    conn.touch_many([job.jid for job in jobs])
    conn.touch_many(job for job in jobs)
    assert all(job.reserved for job in jobs)

    conn.release_many(jobs[:2], priority=5)
    conn.release_many([jobs[2].jid], priority=6, delay=100)
    assert [job.reserved for job in jobs[:3]] == [False, False, True]     # an id carries no flag
    assert [(s["state"], s["pri"]) for s in map(conn.stats_job, ids[:3])] == [
        ("ready", 5), ("ready", 5), ("delayed", 6)]

    conn.bury_many([jobs[3], jobs[4].jid], priority=7)
    assert [job.reserved for job in jobs[3:5]] == [False, True]
    assert [(s["state"], s["pri"]) for s in map(conn.stats_job, ids[3:5])] == [("buried", 7), ("buried", 7)]

    # Jobs no longer reserved fail in their place, the others succeed, and only those flags change.
    for method, cmd in [(conn.touch_many, "touch"), (conn.release_many, "release"), (conn.bury_many, "bury")]:
        fresh = conn.reserve_job(conn.put("fresh"))
        jobs[0].reserved = True     # stale: the server no longer has it reserved
        with pytest.raises(BatchError) as info:
            method([jobs[0], fresh, ids[3]])
        results = info.value.results
        assert len(results) == 3 and results[1] is None
        assert same_error(results[0], CommandFailed, cmd, "NOT_FOUND", [])
        assert same_error(results[2], CommandFailed, cmd, "NOT_FOUND", [])
        assert info.value.errors == [(0, results[0]), (2, results[2])]
        assert jobs[0].reserved is True
        assert fresh.reserved is (cmd == "touch")
        assert conn.stats_job(fresh.jid)["state"] == {"touch": "reserved", "release": "ready", "bury": "buried"}[cmd]
        ids.append(fresh.jid)
    conn.delete_many(ids)
    assert conn.stats_tube(tube)["current-jobs-urgent"] == 0 and ready(conn, tube) == 0


def test_jobs_many_empty(conn):
    assert conn.delete_many([]) is None
    assert conn.release_many(iter(())) is None
    assert conn.bury_many(()) is None and conn.touch_many([]) is None


# -- reserve_many -------------------------------------------------------------------

def test_reserve_many_waits_for_the_first(conn, make_conn, tube):
    producer = make_conn()
    producer.use(tube)
    timer = threading.Timer(0.3, producer.put, ("late",))
    timer.start()
    try:
        jobs = conn.reserve_many(5, timeout=10)
    finally:
        timer.join()
    assert [job.body for job in jobs] == ["late"]
    conn.delete_many(jobs)


@pytest.mark.parametrize("encoding", ["utf-8", None])
def test_reserve_many_jobs_are_what_job_makes(make_conn, tube, encoding):
    # The core makes reserve_many's Jobs without running __init__ (Job._maker): the same attributes in
    # the same order, the same body and behaviour as Job(conn, jid, body).
    c = make_conn(encoding=encoding)
    c.use(tube)
    c.watch(tube)
    raws = [b"a\xc3\xa9", b"b"]
    ids = c.put_many(raws)
    jobs = c.reserve_many(2)
    for job, jid, raw in zip(jobs, ids, raws):
        made = beanstalkc_fast.Job(c, jid, raw)
        assert type(job) is beanstalkc_fast.Job and list(vars(job)) == list(vars(made))
        assert (job.conn, job.jid, job.reserved, job.body_bytes) == (c, jid, True, raw)
        assert job.body == made.body == (raw if encoding is None else raw.decode())
    jobs[0].bury()
    assert jobs[0].reserved is False and jobs[0].stats()["state"] == "buried"
    jobs[0].kick()
    jobs[1].body = "new"
    assert (jobs[1].body, jobs[1].body_bytes) == ("new", b"new")
    c.delete_many(jobs)
    assert [j.reserved for j in jobs] == [False, False]
    assert c.stats_tube(tube)["current-jobs-ready"] == 0


def test_reserve_many_none(conn):
    assert conn.reserve_many(10) == []
    start = time.monotonic()
    assert conn.reserve_many(10, timeout=1) == []
    assert time.monotonic() - start >= 0.9       # it did wait for the first job
    assert conn.reserve_many(0, timeout=5) == []


def test_reserve_many_more_than_ready(conn, tube):
    ids = conn.put_many(["x%d" % i for i in range(300)])
    later = conn.put("later", delay=100)
    jobs = conn.reserve_many(1000)
    assert [job.jid for job in jobs] == ids
    assert [job.body for job in jobs] == ["x%d" % i for i in range(300)]
    assert conn.stats_tube(tube)["current-jobs-reserved"] == 300
    conn.release_many(jobs)
    assert [job.jid for job in conn.reserve_many(2)] == ids[:2]
    conn.delete_many(ids + [later])


def test_reserve_many_deadline_soon(conn, tube):
    # ttr=1: the first reserved job is at once within beanstalkd's 1 s safety margin, so a later
    # reserve with nothing ready replies DEADLINE_SOON instead of TIMED_OUT.
    ids = conn.put_many(["a", "b", "c"], ttr=1)
    jobs = conn.reserve_many(10)
    assert [job.jid for job in jobs] == ids
    with pytest.raises(DeadlineSoon):
        conn.reserve_many(10, timeout=5)
    jid = conn.put("in sync")
    assert jid > ids[-1]
    conn.delete_many(jobs + [jid])


def test_reserve_many_bad_arguments(conn):
    for n, timeout, exc in [(-1, 0, ValueError), ("1", 0, TypeError), (1, -1, ValueError), (1, "0", TypeError)]:
        with pytest.raises(exc):
            conn.reserve_many(n, timeout)


# -- socket failure mid-batch ----------------------------------------------------------

def test_server_killed_mid_put_many(private):
    server = private()
    conn = server.connect(socket_timeout=10)
    yielded = []

    def items():
        for i in range(20000):
            if i == 5000:
                server.stop(kill=True)
            yielded.append(i)
            yield "job %d" % i

    with pytest.raises(SocketError) as info:
        conn.put_many(items())
    sent = info.value.results
    assert isinstance(sent, list) and 1024 <= len(sent) <= 5000
    assert sent == list(range(1, len(sent) + 1))    # a fresh server numbers from 1
    assert len(yielded) < 20000
    assert not conn.connected
    with pytest.raises(SocketError):
        conn.put("x")
    with pytest.raises(SocketError):
        conn.put_many(["x"])
    with pytest.raises(SocketError):
        conn.reserve_many(1)


def test_connection_broken_mid_put_many(private):
    # The server survives, so what went in can be checked: every confirmed job, in order,
    # none twice, and maybe some that were in flight.
    server = private()
    conn = server.connect(socket_timeout=10)
    watcher = server.connect(socket_timeout=10)

    def items():
        for i in range(20000):
            if i == 5000:
                conn._proto.sock.shutdown(socket.SHUT_RDWR)
            yield "job %d" % i

    with pytest.raises(SocketError) as info:
        conn.put_many(items())
    sent = info.value.results
    assert 1024 <= len(sent) <= 5000 and sent == list(range(1, len(sent) + 1))
    assert not conn.connected
    deadline = time.monotonic() + 10
    while watcher.stats()["current-connections"] > 1:     # until the server is done with it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    jobs = watcher.reserve_many(20000)
    assert len(sent) <= len(jobs) <= 5000
    assert [job.jid for job in jobs] == list(range(1, len(jobs) + 1))
    assert [job.body for job in jobs] == ["job %d" % i for i in range(len(jobs))]


def test_server_killed_mid_delete_many(private):
    server = private()
    conn = server.connect(socket_timeout=10)
    ids = conn.put_many(["job"] * 5000)

    def jids():
        for i, jid in enumerate(ids):
            if i == 3000:
                server.stop(kill=True)
            yield jid

    with pytest.raises(SocketError) as info:
        conn.delete_many(jids())
    assert len(info.value.results) <= 3000 and all(r is None for r in info.value.results)
    assert not conn.connected
    with pytest.raises(SocketError):
        conn.delete_many(ids)
