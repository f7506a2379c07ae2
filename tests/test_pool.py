"""Pool: three real beanstalkd servers, each with its binlog; both cores.

Servers are started here (``beanstalkd_binary``) and stopped by their own handle (its PID).
"""
import collections
import logging
import os
import signal
import socket
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import BatchError, CommandFailed, InvalidArgument, InvalidType, JobRef, Pool, PutAmbiguous, \
    SocketError
from beanstalkc_fast._poolpolicy import merge_stats, parse_servers
from beanstalkc_fast.testing import BeanstalkdServer


def addr(server):
    return "%s:%d" % (server.host, server.port)


@pytest.fixture
def make_pool(impl, servers, monkeypatch):
    """Pools over the three servers, using the core under test; closed at teardown."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    pools = []

    def make(which=None, **kw):
        pool = Pool(which if which is not None else [addr(s) for s in servers], **kw)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def until(predicate, what, timeout=20.0):
    """Wait until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.01)


def waiters(server):
    """How many clients wait in a reserve on ``server``."""
    with server.connect() as c:
        return c.stats()["current-waiting"]


class Clock:
    """A monotonic clock the test moves by hand (for retry_after)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def drain(server, garbled=None):
    """{jid: body} of every job of the default tube on ``server``, reserved and deleted through a
    raw socket. A job whose body a binlog torn by kill -9 left without its final CRLF (which a
    client refuses as a framing error) goes into ``garbled`` (jid: raw bytes) when it is given."""
    jobs = {}
    with socket.create_connection((server.host, server.port)) as sock:
        buf = b""
        while True:
            sock.sendall(b"reserve-with-timeout 0\r\n" * 512)
            got = []
            replies = 0
            while replies < 512:
                eol = buf.find(b"\r\n")
                if eol < 0:
                    buf += sock.recv(1 << 20)
                    continue
                words = buf[:eol].split()
                if words[0] == b"RESERVED":
                    size = int(words[2])
                    end = eol + 2 + size + 2
                    while len(buf) < end:
                        buf += sock.recv(1 << 20)
                    body = buf[eol + 2:end]
                    if body.endswith(b"\r\n"):
                        jobs[int(words[1])] = body[:-2]
                    else:
                        assert garbled is not None, "job %s has a torn body %r" % (words[1], body)
                        garbled[int(words[1])] = body
                    got.append(int(words[1]))
                    buf = buf[end:]
                else:
                    assert words[0] == b"TIMED_OUT", words
                    buf = buf[eol + 2:]
                replies += 1
            if got:
                sock.sendall(b"".join(b"delete %d\r\n" % jid for jid in got))
                while buf.count(b"DELETED\r\n") < len(got):
                    buf += sock.recv(1 << 20)
                assert buf == b"DELETED\r\n" * len(got), buf[:100]
                buf = b""
            if len(got) < 512:
                return jobs


# -- policy, no server --

def test_jobref_str_and_parse():
    ref = JobRef("a:11300", 12)
    assert (ref.server, ref.jid) == ("a:11300", 12)
    assert str(ref) == "a:11300/12"
    assert JobRef.parse("a:11300/12") == ref
    assert JobRef.parse("/run/b.sock/7") == JobRef("/run/b.sock", 7)     # a name may hold '/'
    assert repr(ref) == "JobRef('a:11300', 12)"
    for bad in ("a:1", "a/", "/3", "a/-1", "a/x"):
        with pytest.raises(InvalidArgument):
            JobRef.parse(bad)
    with pytest.raises(InvalidType):
        JobRef.parse(12)


def test_parse_servers_names_and_forms():
    assert parse_servers(["h:1", ("::1", 2), "/tmp/s.sock", {"main": "h:3"}, "h"]) == [
        ("h:1", ("h", 1)), ("[::1]:2", ("::1", 2)), ("/tmp/s.sock", "/tmp/s.sock"), ("main", ("h", 3)),
        ("h", ("h", 11300))]
    assert parse_servers({"a": "h:1", "b": ("h", 2)}) == [("a", ("h", 1)), ("b", ("h", 2))]
    with pytest.raises(InvalidArgument):
        parse_servers(["h:1", "h:1"])
    with pytest.raises(InvalidArgument):
        parse_servers([])
    with pytest.raises(InvalidType):
        parse_servers("h:1")


def test_merge_stats():
    merged = merge_stats([{"current-jobs-ready": 2, "pid": 5, "version": "1.12", "draining": False},
                          {"current-jobs-ready": 3, "pid": 6, "version": "1.12", "draining": True}])
    assert merged == {"current-jobs-ready": 5, "pid": [5, 6], "version": ["1.12", "1.12"], "draining": [False, True]}


# -- routing --

def test_put_round_robin_and_key_pinning(make_pool, servers):
    pool = make_pool()
    refs = [pool.put("job %d" % i) for i in range(30)]
    assert collections.Counter(r.server for r in refs) == {addr(s): 10 for s in servers}
    assert [r.server for r in refs[:3]] * 10 == [r.server for r in refs]   # every server in turn
    for ref in refs[:6]:
        assert pool.peek(ref).body == "job %d" % refs.index(ref)
        assert pool.peek(str(ref)).server == ref.server
    keyed = [pool.put("k", key="customer-42") for _ in range(5)]
    assert len({r.server for r in keyed}) == 1
    spread = {pool.put("k", key="customer-%d" % i).server for i in range(30)}
    assert len(spread) == 3
    # the key's server stops: its jobs go to the next server of the key's own order, always the same
    pinned = next(s for s in servers if addr(s) == keyed[0].server)
    pinned.stop(kill=True)
    moved = [pool.put("k", key="customer-42").server for _ in range(3)]
    assert len(set(moved)) == 1 and moved[0] != keyed[0].server


def test_named_servers(make_pool, servers):
    pool = make_pool([{"alpha": addr(servers[0])}, {"beta": (servers[1].host, servers[1].port)}])
    assert pool.servers == ["alpha", "beta"]
    refs = [pool.put(b"x") for _ in range(4)]
    assert {r.server for r in refs} == {"alpha", "beta"}
    assert "alpha" in repr(pool) and "2 servers" in repr(pool)


def test_bare_int_is_refused(make_pool):
    pool = make_pool()
    ref = pool.put("x")
    for method in (pool.delete, pool.peek, pool.stats_job, pool.kick_job, pool.touch):
        with pytest.raises(InvalidType, match="ambiguous"):
            method(ref.jid)
    with pytest.raises(InvalidType, match="item 1"):
        pool.delete_many([ref, ref.jid])
    pool.delete(ref)
    assert pool.peek(ref) is None


def test_put_many_spreads_windows_and_keeps_order(make_pool, servers):
    pool = make_pool()
    bodies = ["body %d" % i for i in range(5000)]
    refs = pool.put_many(bodies)
    assert len(refs) == 5000 and all(isinstance(r, JobRef) for r in refs)
    counts = collections.Counter(r.server for r in refs)
    assert set(counts) == {addr(s) for s in servers}
    assert max(counts.values()) - min(counts.values()) <= 1024
    on_server = {addr(s): drain(s) for s in servers}
    assert [on_server[r.server][r.jid] for r in refs] == [b.encode() for b in bodies]
    # a small batch is shared out too
    refs = pool.put_many([b"a"] * 6)
    assert len({r.server for r in refs}) == 3


def test_put_many_iterator_bad_item_reports_windows_sent(make_pool):
    pool = make_pool()

    def items():
        for i in range(3000):
            yield b"ok"
        yield 42

    with pytest.raises(InvalidType) as info:
        pool.put_many(items())
    results = info.value.results     # the windows before the bad item's (which is not sent)
    assert len(results) == 2048 and all(isinstance(r, JobRef) for r in results)
    assert pool.stats()["current-jobs-ready"] == 2048
    with pytest.raises(InvalidType):       # a list is checked whole: nothing sent
        pool.put_many([b"ok", b"ok", 42])
    assert pool.stats()["current-jobs-ready"] == 2048


def test_put_many_job_too_big_is_not_retried(impl, beanstalkd_binary, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    small = [BeanstalkdServer(binary=beanstalkd_binary, args=["-z", "100"]).start() for _ in range(2)]
    try:
        with Pool([addr(s) for s in small]) as pool:
            with pytest.raises(BatchError) as info:
                pool.put_many([b"a", b"b" * 200, b"c", b"d"])
            results = info.value.results
            assert isinstance(results[1], CommandFailed) and results[1].args == ("put", "JOB_TOO_BIG", [])
            assert all(isinstance(r, JobRef) for i, r in enumerate(results) if i != 1)
            assert pool.stats()["current-jobs-ready"] == 3
            with pytest.raises(CommandFailed, match="JOB_TOO_BIG"):
                pool.put(b"b" * 200)
    finally:
        for s in small:
            s.stop()


def test_draining_server_is_skipped(make_pool, servers):
    pool = make_pool()
    drained = servers[1]
    os.kill(drained.process.pid, signal.SIGUSR1)      # beanstalkd enters drain mode
    with beanstalkc_fast.Connection(drained.host, drained.port) as c:
        assert c.stats()["draining"] is True
    refs = [pool.put("x") for _ in range(6)] + pool.put_many([b"y"] * 3000)
    assert addr(drained) not in {r.server for r in refs}
    assert len({r.server for r in refs}) == 2
    assert pool.stats_by_server()[addr(drained)]["current-jobs-ready"] == 0
    assert pool.stats()["current-jobs-ready"] == 3006
    # every server draining: the put fails with the server's word
    for s in servers:
        os.kill(s.process.pid, signal.SIGUSR1)
    with pytest.raises(CommandFailed, match="DRAINING"):
        pool.put("x")
    with pytest.raises(BatchError) as info:
        pool.put_many([b"z"] * 10)
    assert all(isinstance(r, CommandFailed) and r.args[1] == "DRAINING" for r in info.value.results)


# -- reserves --

def test_reserve_fairness(make_pool, servers):
    for s in servers:
        with s.connect() as c:
            c.put_many([b"from %d" % s.port] * 10)
    pool = make_pool()
    jobs = [pool.reserve(timeout=0) for _ in range(12)]
    order = [j.server for j in jobs]
    for i in range(0, 12, 3):
        assert sorted(order[i:i + 3]) == sorted(addr(s) for s in servers)     # every server in turn
    for job in jobs:
        assert job.body == "from %s" % job.server.rsplit(":", 1)[1]
        job.delete()
    rest = pool.reserve_many(100)
    assert len(rest) == 18 and collections.Counter(j.server for j in rest) == {addr(s): 6 for s in servers}
    pool.delete_many(rest)
    assert pool.reserve_many(10) == [] and pool.reserve(timeout=0) is None
    assert pool.stats()["current-jobs-ready"] == 0


def test_reserve_waits_on_every_server_and_gives_back_the_others(make_pool, servers):
    pool = make_pool()
    late = servers[2]
    with late.connect() as c:
        c.put("late", priority=5, delay=1)
    job = pool.reserve(timeout=10)       # nothing ready: waits on all three, the delayed job wakes it
    assert job.body == "late" and job.server == addr(late)
    stats = pool.stats_job(job)     # the waiter gave it back with its own priority; the consumer has it
    assert stats["pri"] == 5 and stats["state"] == "reserved" and stats["releases"] == 1
    # the waits on the two other servers were called off: a job put there now is free for anyone
    with servers[0].connect() as other:
        other.put("free", priority=7)
        got = other.reserve(timeout=5)
        assert got.body == "free" and got.stats()["pri"] == 7 and got.stats()["reserves"] == 1
        got.delete()
    job.delete()
    assert pool.reserve(timeout=1) is None


def test_reserve_with_a_server_down(make_pool, servers):
    pool = make_pool()
    servers[0].stop(kill=True)
    with servers[1].connect() as c:
        c.put("here")
    job = pool.reserve(timeout=1)
    assert job.body == "here" and job.server == addr(servers[1])
    job.delete()
    assert pool.reserve(timeout=1) is None and pool.reserve_many(5, timeout=1) == []
    for s in servers[1:]:
        s.stop(kill=True)
    assert pool.reserve(timeout=1) is None       # every server down: waited for one, in vain
    assert pool.reserve(timeout=0) is None and pool.reserve_many(5, timeout=1) == []


def test_reserve_waits_for_a_server_while_all_are_down(make_pool, servers):
    pool = make_pool(retry_after=0)     # probed again at each wake-up of the wait (every 0.25 s)
    for s in servers:
        s.stop(kill=True)
    got = []
    waiting = threading.Thread(target=lambda: got.append(pool.reserve()), daemon=True)   # forever
    waiting.start()
    back = servers[1]
    until(lambda: pool.servers_status()[addr(back)]["failures"] >= 4, "probes while the reserve waits")
    assert waiting.is_alive() and not got
    back.start()
    with back.connect() as c:
        c.put("back")
    waiting.join(20)
    assert not waiting.is_alive()
    job = got[0]
    assert job.body == "back" and job.server == addr(back)
    job.delete()
    got = []
    waiting = threading.Thread(target=lambda: got.append(pool.reserve_many(5, timeout=60)), daemon=True)
    waiting.start()
    until(lambda: waiters(back) == 1, "the reserve waiting on the server back")
    other = servers[2]
    other.start()
    with other.connect() as c:
        c.put("other")
    waiting.join(20)
    assert [(j.body, j.server) for j in got[0]] == [("other", addr(other))]
    pool.delete_many(got[0])    # the pool was handed back to this thread between calls


def test_reserve_timeout_with_every_server_down_returns_none(make_pool, servers):
    pool = make_pool()
    for s in servers:
        s.stop(kill=True)
    assert pool.reserve(timeout=0) is None          # nothing ready anywhere: at once
    assert pool.reserve(timeout=1) is None          # waited for a server, up to the timeout
    assert pool.reserve_many(4, timeout=1) == [] and pool.reserve_many(4) == []


def test_stats_by_server_lists_a_down_server(make_pool, servers):
    pool = make_pool()
    for s in servers:
        with s.connect() as c:
            c.put("j")
    down = servers[1]
    down.stop(kill=True)
    up = [addr(s) for s in servers if s is not down]
    for _ in range(3):      # lost, then refused (ejected), then skipped: listed each time
        by = pool.stats_by_server()
        assert list(by) == [addr(s) for s in servers]
        err = by[addr(down)]
        assert isinstance(err, SocketError) and err.server == addr(down)
        assert all(isinstance(by[name], dict) and by[name]["current-jobs-ready"] == 1 for name in up)
        stats = pool.stats()        # the servers that answered, merged
        assert stats["current-jobs-ready"] == 2 and stats["pid"] == [by[name]["pid"] for name in up]
    assert not pool.servers_status()[addr(down)]["up"]
    raw = make_pool(parse_yaml=False)
    assert set(raw.stats()) == set(up) and isinstance(raw.stats_by_server()[addr(down)], SocketError)


def test_put_many_key_pins_the_batch_and_fails_over(make_pool, servers):
    pool = make_pool()
    pinned = pool.put("first", key="order-9").server
    refs = pool.put_many([b"m%d" % i for i in range(3000)], key="order-9")     # several windows
    assert {r.server for r in refs} == {pinned}
    assert [pool.peek(r).body for r in refs[::1000]] == ["m0", "m1000", "m2000"]
    other = {r.server for r in pool.put_many([b"o"] * 30, key="order-10")}
    assert len(other) == 1
    # the key's server drains: the batch goes to the next server of the key's own order, as put's
    by_name = {addr(s): s for s in servers}
    os.kill(by_name[pinned].process.pid, signal.SIGUSR1)
    # (a small batch: beanstalkd 1.12 draining stops answering anyone after a window of 1024 puts)
    refs = pool.put_many([b"d%d" % i for i in range(50)], key="order-9")
    second = {r.server for r in refs}
    assert len(second) == 1 and pinned not in second
    assert pool.put("after", key="order-9").server in second
    # that one is killed: the third of the key's order takes the batch
    by_name[second.pop()].stop(kill=True)
    refs = pool.put_many([b"k%d" % i for i in range(10)], key="order-9")
    third = {r.server for r in refs}
    assert len(third) == 1 and third == {pool.put("after", key="order-9").server}
    assert pinned not in third
    assert pool.put_many([], key="order-9") == []
    with pytest.raises(InvalidType):
        pool.put_many([b"x"], key=1.5)


def test_pool_refuses_a_second_thread_inside_a_call(make_pool, servers):
    pool = make_pool()
    got = []
    waiting = threading.Thread(target=lambda: got.append(pool.reserve(timeout=60)), daemon=True)
    waiting.start()
    until(lambda: sum(map(waiters, servers)) == 3, "the reserve waiting")
    with pytest.raises(RuntimeError, match="another thread"):
        pool.put("from another thread")
    with pytest.raises(RuntimeError):
        pool.stats()
    assert len(pool.servers_status()) == 3 and pool.watching() == ["default"]   # no I/O: never refused
    with servers[0].connect() as c:
        c.put("for the reserve")
    waiting.join(20)
    assert got[0].body == "for the reserve"
    pool.delete(got[0])     # the call is over: this thread may use the pool now
    # many threads at once: each call either runs alone or is refused, and the pool stays sound
    outcomes = [collections.Counter() for _ in range(8)]      # one per thread
    start = threading.Barrier(8)

    def hammer(counts):
        start.wait()
        for _ in range(200):
            try:
                pool.put("t")
                counts["put"] += 1
            except RuntimeError:
                counts["refused"] += 1
    threads = [threading.Thread(target=hammer, args=(counts,)) for counts in outcomes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(outcomes, collections.Counter())
    assert total["put"] + total["refused"] == 1600 and total["put"] > 0
    assert pool.stats()["current-jobs-ready"] == total["put"]


def test_watch_use_apply_to_every_server(make_pool, servers, tube):
    pool = make_pool()
    assert pool.use(tube) == tube and pool.using() == tube
    assert pool.watch(tube) == 2 and pool.ignore("default") == 1 and pool.ignore(tube) == 1
    assert pool.watching() == [tube]
    refs = pool.put_many([b"t"] * 9)
    jobs = pool.reserve_many(9)
    assert len(jobs) == 9 and {j.server for j in jobs} == {r.server for r in refs}
    assert set(pool.tubes()) >= {"default", tube}
    assert pool.stats_tube(tube)["current-jobs-reserved"] == 9
    assert pool.stats_tube(tube)["name"] == tube
    for job in jobs[:3]:
        pool.bury(job)
    pool.release_many(jobs[3:6])
    pool.touch_many(jobs[6:])
    pool.delete_many(jobs[6:])
    assert pool.kick(2) == 2
    assert pool.stats_tube(tube)["current-jobs-buried"] == 1
    assert pool.kick(10) == 1
    assert pool.stats_tube(tube)["current-jobs-ready"] == 6


# -- failures --

def test_servers_down_at_start_ejection_and_return(make_pool, servers, caplog, beanstalkd_binary):
    down = BeanstalkdServer(binary=beanstalkd_binary)        # a free port, not started yet
    clock = Clock()
    pool = make_pool([addr(s) for s in servers] + [addr(down)], failure_limit=2, retry_after=5.0)
    pool._policy.clock = clock
    status = pool.servers_status()[addr(down)]
    assert status["up"] and status["failures"] == 1
    with caplog.at_level(logging.INFO, logger="beanstalkc_fast"):
        refs = [pool.put("x") for _ in range(8)]
        assert addr(down) not in {r.server for r in refs}
        status = pool.servers_status()[addr(down)]
        assert not status["up"] and status["retry_in"] == 5.0
        assert "ejected" in caplog.text
        down.start()
        try:
            refs = [pool.put("x") for _ in range(6)]
            assert addr(down) not in {r.server for r in refs}      # not probed before retry_after
            clock.now += 5.0
            refs = [pool.put("x") for _ in range(8)]
            assert addr(down) in {r.server for r in refs}
            assert pool.servers_status()[addr(down)] == {"up": True, "address": (down.host, down.port),
                                                          "failures": 0, "retry_in": None, "error": None}
            assert "is back" in caplog.text
        finally:
            down.stop()
    # down again: the wait before each probe doubles, up to 60 s
    for _ in range(8):
        pool.put("x")
    assert pool.servers_status()[addr(down)]["retry_in"] == 5.0
    for expected in (10.0, 20.0, 40.0, 60.0, 60.0):
        clock.now += 60
        for _ in range(4):      # one of them probes it
            pool.put("x")
        assert pool.servers_status()[addr(down)]["retry_in"] == expected


def test_jobs_from_a_dead_server_raise(make_pool, servers):
    pool = make_pool()
    for s in servers:
        with s.connect() as c:
            c.put("j")
    jobs = [pool.reserve(timeout=0) for _ in range(3)]
    dead = next(s for s in servers if addr(s) == jobs[0].server)
    dead.stop(kill=True)
    with pytest.raises(SocketError):
        jobs[0].delete()
    with pytest.raises(SocketError):
        pool.delete(jobs[0])
    with pytest.raises(SocketError):
        pool.delete(JobRef(jobs[0].server, jobs[0].jid))
    with pytest.raises(BatchError) as info:
        pool.delete_many(jobs)
    assert isinstance(info.value.results[0], SocketError) and info.value.results[1:] == [None, None]
    # the pool goes on with the others
    assert {pool.put("after").server for _ in range(4)} == {addr(s) for s in servers if s is not dead}
    dead.start()
    with pytest.raises(SocketError):    # the restarted server has the job, but not for the dead connection
        jobs[0].delete()


def test_empty_pool_all_down(impl, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    with Pool(["127.0.0.1:1"]) as pool:
        with pytest.raises(SocketError):
            pool.put("x")
        with pytest.raises(SocketError):
            pool.put_many([b"x"])
        assert pool.reserve(timeout=0.5) is None    # waits for a server, up to the timeout
        assert pool.reserve(timeout=0) is None and pool.reserve_many(3, timeout=0) == []
        with pytest.raises(SocketError) as info:
            pool.stats()
        assert info.value.server == "127.0.0.1:1"
        assert list(pool.stats_by_server()) == ["127.0.0.1:1"]
        with pytest.raises(InvalidType):        # arguments are checked before any server is tried
            pool.put(3)
        assert pool.put_many([]) == []


class SwallowingServer:
    """A scripted server that reads a put and hangs up without a reply: what a real server
    does only when it dies at the wrong moment."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"put " not in data:      # anything else goes unanswered
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk

    def close(self):
        self.listener.close()


def test_put_whose_reply_is_lost(make_pool, servers):
    fake = SwallowingServer()
    try:
        real = addr(servers[0])
        pool = make_pool([{"fake": "127.0.0.1:%d" % fake.port}, real])
        pool._policy._put_next = 0
        with pytest.raises(PutAmbiguous) as info:
            pool.put("maybe")
        assert info.value.server == "fake" and isinstance(info.value, SocketError)
        assert "fake" in str(info.value)
        pool = make_pool([{"fake": "127.0.0.1:%d" % fake.port}, real], at_least_once=True)
        pool._policy._put_next = 0
        assert pool.put("again").server == real
        pool._policy._put_next = 0
        refs = pool.put_many([b"m%d" % i for i in range(10)])
        assert {r.server for r in refs} == {real}
        with servers[0].connect() as c:
            assert c.stats()["current-jobs-ready"] == 11
    finally:
        fake.close()


def test_kill9_during_put_many_then_restart(make_pool, servers):
    """kill -9 of one server in the middle of a put_many of 100,000 jobs: every JobRef handed
    out exists on its server after a restart from the binlog, and no job is there twice."""
    pool = make_pool(retry_after=0.0)
    pool._policy._put_next = 0      # the victim gets windows before it dies
    victim = servers[1]
    total = 100000

    def items():
        for i in range(total):
            if i == 40000:
                victim.stop(kill=True)      # SIGKILL, with windows in flight
            yield b"job-%06d" % i

    with pytest.raises(BatchError) as info:
        pool.put_many(items())
    results = info.value.results
    assert len(results) == total
    acked = {i: r for i, r in enumerate(results) if isinstance(r, JobRef)}
    ambiguous = {i for i, r in enumerate(results) if isinstance(r, PutAmbiguous)}
    assert len(acked) + len(ambiguous) == total
    assert ambiguous and all(results[i].server == addr(victim) for i in ambiguous)
    assert any(r.server == addr(victim) for r in acked.values())
    victim.start()      # the same port, the same binlog
    garbled = {}    # beanstalkd 1.12 may restore the job it was writing when killed with a torn body
    on_server = {addr(s): drain(s, garbled if s is victim else None) for s in servers}
    for i, ref in acked.items():
        assert on_server[ref.server][ref.jid] == b"job-%06d" % i      # 0 acknowledged jobs lost
    bodies = collections.Counter(b for jobs in on_server.values() for b in jobs.values())
    assert max(bodies.values()) == 1                                    # 0 duplicates
    assert len(bodies) - len(acked) <= len(ambiguous)
    assert len(garbled) <= 1 and not any(r.server == addr(victim) and r.jid in garbled for r in acked.values())
    # the restarted server is taken back
    assert addr(victim) in {pool.put("after").server for _ in range(6)}
    assert pool.servers_status()[addr(victim)]["up"]


def test_kill9_during_put_many_at_least_once(make_pool, servers):
    """With at_least_once=True the puts in flight to the killed server go elsewhere: every item
    gets a JobRef that exists; a job may exist twice (at most the ones that were in flight)."""
    pool = make_pool(retry_after=0.0, at_least_once=True)
    pool._policy._put_next = 0
    victim = servers[0]
    total = 30000

    def items():
        for i in range(total):
            if i == 12000:
                victim.stop(kill=True)
            yield b"job-%06d" % i

    refs = pool.put_many(items())
    assert len(refs) == total and all(isinstance(r, JobRef) for r in refs)
    victim.start()
    garbled = {}
    on_server = {addr(s): drain(s, garbled if s is victim else None) for s in servers}
    for i, ref in enumerate(refs):
        assert on_server[ref.server][ref.jid] == b"job-%06d" % i
    bodies = collections.Counter(b for jobs in on_server.values() for b in jobs.values())
    assert len(bodies) == total and max(bodies.values()) <= 2


def test_a_connection_past_fd_1024_is_kept(make_pool, servers):
    """select() cannot watch a descriptor of 1024 or more: the idle check must not take such a
    connection for a dead one (that would reconnect at every put, releasing reservations)."""
    import os
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(soft, hard) < 1200:
        pytest.skip("needs 1200 file descriptors")
    filler = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            filler.append(fd)
            if fd >= 1100:
                break
        pool = make_pool([addr(servers[0])])
        first = pool.put("a")
        conn = pool._policy.servers[0].conns.producer
        assert conn._proto.sock.fileno() >= 1024
        second = pool.put("b")
        assert pool._policy.servers[0].conns.producer is conn
        assert second.jid == first.jid + 1
    finally:
        for fd in filler:
            os.close(fd)
