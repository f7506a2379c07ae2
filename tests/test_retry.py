"""Retry: real beanstalkd servers killed with kill -9 and restarted from their binlogs.

A connection with a Retry carries on after the restart with its tubes; without one it raises
SocketError at once; a put whose bytes may have reached the server raises PutAmbiguous and
is never sent twice; thousands of mixed commands over three restarts lose no acknowledged put
and run no put twice (jobs counted by body). Both cores; the asyncio client too.
"""
import asyncio
import collections
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import BatchError, CommandFailed, CorruptJob, InvalidArgument, InvalidType, PutAmbiguous, Retry, SocketError, aio
from beanstalkc_fast.testing import LatencyProxy

FAST = dict(attempts=60, backoff=lambda n: 0.05, deadline=20)   # a restart takes well under a second


@pytest.fixture
def server(binlog_server):
    return binlog_server


@pytest.fixture
def connect(impl, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    conns = []

    def make(host, port, **kw):
        kw.setdefault("socket_timeout", 10)
        c = beanstalkc_fast.Connection(host, port, **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


def bodies(server, tube, torn=None):
    """Counter of the bodies of every job of ``tube`` on ``server``: reserved in batches until
    none is left; closing the connection gives them back. A job whose binlog record a kill -9
    tore (CorruptJob: the server lost its body) is deleted and its id appended to ``torn``."""
    seen = collections.Counter()
    torn = [] if torn is None else torn
    with server.connect(encoding=None) as c:
        c.watch(tube)
        c.ignore("default")
        while True:
            try:
                jobs = c.reserve_many(1000)
            except BatchError as err:
                jobs = [r for r in err.results if not isinstance(r, CorruptJob)]
                for r in err.results:
                    if isinstance(r, CorruptJob):
                        c.delete(r.jid)
                        torn.append(r.jid)
            if not jobs:
                break
            seen.update(job.body_bytes for job in jobs)
    return seen


def torn_job(c, err, torn):
    """A reserve met a job torn by a kill -9 (its body lost by the server): delete it."""
    torn.append(err.jid)
    return c.delete(err.jid)


def until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- the option ----------------------------------------------------------------------------

def test_retry_checks_its_arguments():
    for bad in (-1, 1.5, "3", None):
        with pytest.raises(InvalidArgument if bad == -1 else (InvalidArgument, InvalidType)):
            Retry(attempts=bad)
    with pytest.raises(InvalidType):
        Retry(backoff=3)
    with pytest.raises(InvalidArgument):
        Retry(deadline=-1)
    with pytest.raises(InvalidArgument):
        list(Retry(backoff=lambda n: -1).delays())
    assert list(Retry(attempts=3, backoff=lambda n: n / 10).delays()) == [0.1, 0.2, 0.3]
    default = list(Retry(attempts=6).delays())
    assert len(default) == 6 and all(0.05 <= d <= 5.0 for d in default) and default[5] > default[0]
    assert list(Retry(attempts=5, backoff=lambda n: 0, deadline=0).delays()) == []
    with pytest.raises(InvalidType):
        beanstalkc_fast.Connection("127.0.0.1", 1, retry=3)


# -- the blocking client -------------------------------------------------------------------

def test_without_retry_a_restart_raises_at_once(server, connect, tube):
    c = connect(server.host, server.port)
    c.use(tube)
    c.put("x")
    server.restart(kill=True)
    with pytest.raises(SocketError):
        c.put("y")
    assert not c.connected
    with pytest.raises(SocketError):
        c.stats()       # never reconnected behind the caller's back


def test_with_retry_the_connection_carries_on_with_its_tubes(server, connect, tube):
    c = connect(server.host, server.port, retry=Retry(**FAST))
    other = tube + "-2"
    c.use(tube)
    c.watch(tube)
    c.watch(other)
    c.ignore("default")
    c.put("before")
    server.restart(kill=True)
    assert c.stats()["pid"] == server.process.pid      # sent again on a new connection
    assert c.using() == tube and sorted(c.watching()) == sorted([tube, other])
    jid = c.put("after")
    job = c.reserve(timeout=1)
    assert job.body == "before"     # from the binlog, on the used and watched tube
    job.delete()
    assert c.reserve(timeout=1).jid == jid


def test_a_job_command_whose_reservation_died_gets_the_servers_answer(server, connect, tube):
    c = connect(server.host, server.port, retry=Retry(**FAST))
    c.use(tube)
    c.watch(tube)
    c.put("j")
    job = c.reserve(timeout=1)
    server.restart(kill=True)
    with pytest.raises(CommandFailed) as info:      # the reservation died with the connection
        job.touch()
    assert info.value.args == ("touch", "NOT_FOUND", [])
    assert c.reserve(timeout=1).body == "j"         # the job is there again, ready


def test_a_put_cut_off_after_it_was_written_is_ambiguous_and_never_sent_twice(server, connect, tube):
    # The put reaches the server (which inserts the job); the client's connection is cut before
    # the reply comes back (the relay in between goes away): PutAmbiguous, never a second put.
    proxy = LatencyProxy(server.host, server.port, rtt=1.0)
    c = connect(proxy.host, proxy.port, retry=Retry(**FAST), encoding=None)
    c.use(tube)
    with server.connect() as ctl:
        before = ctl.stats()["cmd-put"]
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(_call(c.put, b"the one")))
    t.start()

    def arrived():
        with server.connect() as ctl:
            return ctl.stats()["cmd-put"] > before
    until(arrived)              # the put reached the server; its reply is on its way back
    proxy.close()
    t.join(30)
    assert isinstance(outcome[0], PutAmbiguous), outcome
    assert outcome[0].server == "%s:%d" % (proxy.host, proxy.port)
    server.restart(kill=True)   # and from the binlog: still once
    assert bodies(server, tube)[b"the one"] == 1


def _call(fn, *args):
    try:
        return fn(*args)
    except Exception as err:
        return err


def test_mixed_commands_over_three_restarts_lose_no_put_and_run_none_twice(server, connect, tube):
    c = connect(server.host, server.port, retry=Retry(**FAST), encoding=None)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    acked, ambiguous, deleted, maybe = set(), set(), set(), set()
    torn = []
    restarts = []

    def restarter():
        for _ in range(3):
            time.sleep(0.4)
            server.restart(kill=True)
            restarts.append(server.process.pid)
    t = threading.Thread(target=restarter)
    t.start()
    i = 0
    while i < 10000 or t.is_alive():
        body = b"m-%d" % i
        kind = i % 10
        if kind < 5:
            try:
                c.put(body)
                acked.add(body)
            except PutAmbiguous:
                ambiguous.add(body)
        elif kind < 8:
            try:
                job = c.reserve(timeout=0)
            except CorruptJob as err:
                job = torn_job(c, err, torn)
            if job is not None:
                try:
                    job.delete()
                    deleted.add(job.body_bytes)
                except CommandFailed:
                    # NOT_FOUND after a reconnect: the first delete went through before the
                    # reply was lost, or the reservation died and the job is ready again
                    maybe.add(job.body_bytes)
        elif kind == 8:
            assert c.stats_tube(tube)["name"] == tube
        else:
            assert c.using() == tube
        i += 1
    t.join()
    assert len(restarts) == 3 and i >= 10000
    seen = bodies(server, tube, torn)
    assert max(seen.values(), default=0) <= 1                      # no put ran twice
    lost = [b for b in acked if b not in deleted and b not in maybe and not seen[b]]
    assert len(lost) <= len(torn)       # no acknowledged put lost (but to the server's torn binlog)
    assert not (set(seen) - acked - ambiguous)                     # nothing came from nowhere


def test_threads_sharing_a_connection_each_get_their_own_outcome(server, connect, tube):
    c = connect(server.host, server.port, retry=Retry(**FAST), encoding=None)
    c.use(tube)
    results = collections.defaultdict(list)
    stop = threading.Event()

    def worker(n):
        i = 0
        while not stop.is_set() or i < 200:
            body = b"t%d-%d" % (n, i)
            try:
                results["acked"].append((body, c.put(body)))
            except PutAmbiguous:
                results["ambiguous"].append(body)
            assert c.using() == tube
            i += 1
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    time.sleep(0.2)
    server.restart(kill=True)
    time.sleep(0.2)
    stop.set()
    for th in threads:
        th.join(60)
    seen = bodies(server, tube)
    assert max(seen.values()) == 1
    assert all(seen[body] == 1 for body, _ in results["acked"])
    assert not (set(seen) - {b for b, _ in results["acked"]} - set(results["ambiguous"]))


def test_close_is_final_even_with_retry(server, connect):
    c = connect(server.host, server.port, retry=Retry(**FAST))
    c.close()
    with pytest.raises(SocketError):
        c.stats()
    c.reconnect()
    assert c.stats()["pid"] == server.process.pid


def test_attempts_spent_raise_socket_error(server, connect):
    c = connect(server.host, server.port, retry=Retry(attempts=2, backoff=lambda n: 0.01))
    server.stop(kill=True)
    with pytest.raises(SocketError) as info:
        c.stats()
    assert "2 attempts" in str(info.value)
    server.start()
    assert c.stats()["pid"] == server.process.pid      # the next command reconnects


# -- the asyncio client ----------------------------------------------------------------------

def test_aio_with_retry_carries_on_with_its_tubes(arun, server, tube):
    async def main():
        async with aio.connect(server.host, server.port, retry=Retry(**FAST)) as c:
            await c.use(tube)
            await c.watch(tube)
            await c.ignore("default")
            await c.put("before")
            await asyncio.get_running_loop().run_in_executor(None, server.restart, True)
            assert (await c.stats())["pid"] == server.process.pid
            assert await c.using() == tube and await c.watching() == [tube]
            job = await c.reserve(timeout=1)
            assert job.body == "before"
            await job.delete()
    arun(main())


def test_aio_without_retry_raises_at_once(arun, server):
    async def main():
        async with aio.connect(server.host, server.port) as c:
            await c.stats()
            await asyncio.get_running_loop().run_in_executor(None, server.restart, True)
            with pytest.raises(SocketError):
                await c.stats()
    arun(main())


def test_aio_a_put_cut_off_after_it_was_written_is_ambiguous(arun, server, tube):
    proxy = LatencyProxy(server.host, server.port, rtt=1.0)
    with server.connect() as ctl:
        before = ctl.stats()["cmd-put"]

    def arrived():
        with server.connect() as ctl:
            return ctl.stats()["cmd-put"] > before

    async def main():
        loop = asyncio.get_running_loop()
        async with aio.connect(proxy.host, proxy.port, retry=Retry(**FAST), encoding=None) as c:
            await c.use(tube)
            task = asyncio.ensure_future(c.put(b"the one"))
            await loop.run_in_executor(None, until, arrived)
            await loop.run_in_executor(None, proxy.close)
            with pytest.raises(PutAmbiguous) as info:
                await task
            assert info.value.server == "%s:%d" % (proxy.host, proxy.port)
    arun(main())
    server.restart(kill=True)
    assert bodies(server, tube)[b"the one"] == 1


def test_aio_mixed_commands_over_three_restarts(arun, server, tube):
    acked, ambiguous, deleted, maybe = set(), set(), set(), set()
    torn = []
    count = [0]

    async def main():
        loop = asyncio.get_running_loop()
        async with aio.connect(server.host, server.port, retry=Retry(**FAST), encoding=None) as c:
            await c.use(tube)
            await c.watch(tube)
            await c.ignore("default")

            restarted = []

            async def client(n):
                i = 0
                while i < 700 or len(restarted) < 3:    # until every restart is behind it
                    i += 1
                    body = b"a%d-%d" % (n, i)
                    kind = i % 10
                    if kind < 5:
                        try:
                            await c.put(body)
                            acked.add(body)
                        except PutAmbiguous:
                            ambiguous.add(body)
                    elif kind < 8:
                        try:
                            job = await c.reserve(timeout=0)
                        except CorruptJob as err:
                            job = await torn_job(c, err, torn)
                        if job is not None:
                            try:
                                await job.delete()
                                deleted.add(job.body_bytes)
                            except CommandFailed:
                                maybe.add(job.body_bytes)
                    else:
                        assert await c.using() == tube
                    count[0] += 1
            tasks = [asyncio.ensure_future(client(n)) for n in range(16)]
            for _ in range(3):
                await asyncio.sleep(0.15)
                await loop.run_in_executor(None, server.restart, True)
                restarted.append(server.process.pid)
            await asyncio.gather(*tasks)
    arun(main())
    assert count[0] >= 10000
    seen = bodies(server, tube, torn)
    assert max(seen.values(), default=0) <= 1
    assert len([b for b in acked if b not in deleted and b not in maybe and not seen[b]]) <= len(torn)
    assert not (set(seen) - acked - ambiguous)


# -- reconnects that fail first, and close() during a retry --------------------------------

def _restart_later(server, delay=0.5):
    t = threading.Timer(delay, server.start)
    t.start()
    return t


def test_a_batch_retries_through_refused_reconnects(server, connect, tube):
    c = connect(server.host, server.port, retry=Retry(**FAST))
    c.use(tube)
    c.watch(tube)
    c.put("j")
    server.stop(kill=True)
    t = _restart_later(server)
    jobs = c.reserve_many(3, timeout=0)     # reconnects are refused until the restart: it waits
    t.join()
    assert [j.body for j in jobs] == ["j"]  # from the binlog


def test_aio_a_put_never_sent_retries_through_refused_reconnects(arun, server, tube):
    async def main():
        async with aio.connect(server.host, server.port, retry=Retry(**FAST)) as c:
            await c.use(tube)
            server.stop(kill=True)
            loop = asyncio.get_running_loop()
            while c.connected:      # the loop sees the connection go
                await asyncio.sleep(0.01)
            t = _restart_later(server)
            jid = await c.put("after")      # nothing was written: never PutAmbiguous
            await loop.run_in_executor(None, t.join)
            assert (await c.peek(jid)).body == "after"
    arun(main())


def test_close_during_a_retry_ends_it_and_is_not_undone(server, connect, monkeypatch):
    c = connect(server.host, server.port, retry=Retry(attempts=50, backoff=lambda n: 0.05))
    opens = []
    real_open = beanstalkc_fast.Connection._open

    def open_then_close(self):
        opens.append(1)
        proto = real_open(self)
        if len(opens) == 1:
            self.close()        # a close() from another thread while the retry reconnects
        return proto
    monkeypatch.setattr(beanstalkc_fast.Connection, "_open", open_then_close)
    server.restart(kill=True)
    with pytest.raises(SocketError):
        c.stats()
    assert not c.connected and len(opens) == 1     # close() won: not revived, no more attempts
