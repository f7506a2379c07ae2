"""Worker and aio.Worker against a real beanstalkd, on both cores (and the stock loop and uvloop).

No timed assertions: a test waits on states (the server's counters, the worker's) with a
deadline, never on a bare sleep.
"""
import asyncio
import collections
import logging
import threading
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import InvalidArgument, InvalidType, Worker, aio

N = 10000


def wait_for(predicate, what, timeout=30.0):
    """Wait until ``predicate()`` holds (checked every few ms), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for " + what)
        time.sleep(0.005)


class Running:
    """A sync worker's run() in a thread of its own."""

    def __init__(self, worker):
        self.worker = worker
        self.result = self.error = None
        self.thread = threading.Thread(target=self._go, daemon=True)
        self.thread.start()

    def _go(self):
        try:
            self.result = self.worker.run()
        except BaseException as err:    # reported by stop()
            self.error = err

    def stop(self, timeout=60):
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after stop()"
        if self.error is not None:
            raise self.error
        return self.result


def tube_stats(conn, tube):
    return conn.stats_tube(tube)


def assert_empty(conn, tube):
    st = tube_stats(conn, tube)
    assert (st["current-jobs-ready"], st["current-jobs-reserved"], st["current-jobs-delayed"],
            st["current-jobs-buried"]) == (0, 0, 0, 0)


# -- arguments --

@pytest.mark.parametrize("kw, exc", [
    (dict(concurrency=0), InvalidArgument),
    (dict(concurrency="4"), InvalidType),
    (dict(prefetch=-1), InvalidArgument),
    (dict(max_retries=-1), InvalidArgument),
    (dict(max_retries=True), InvalidType),
    (dict(tubes="jobs"), InvalidType),
    (dict(tubes=[]), InvalidArgument),
    (dict(tubes=["-bad"]), InvalidArgument),
    (dict(backoff=3), InvalidType),
    (dict(shutdown_timeout=-1), InvalidArgument),
    (dict(ttr_margin=float("nan")), InvalidArgument),
    (dict(ttr_margin="1"), InvalidType),
])
def test_arguments_checked_before_anything_starts(kw, exc):
    with pytest.raises(exc):
        Worker("localhost:1", lambda job: None, **kw)
    with pytest.raises(exc):
        aio.Worker("localhost:1", lambda job: None, **kw)


def test_bad_handlers_and_sources():
    for bad in (None, 3, {}, {"a": 3}, {3: print}):
        with pytest.raises((InvalidArgument, InvalidType)):
            Worker("localhost:1", bad)
    with pytest.raises(InvalidArgument):    # a watched tube without a handler
        Worker("localhost:1", {"a": print}, tubes=["a", "b"])
    for source in (3, None, object(), "host:notaport"):
        with pytest.raises((InvalidArgument, InvalidType)):
            Worker(source, print)
    # errors that are both the package's and Python's
    with pytest.raises(ValueError):
        Worker("localhost:1", print, concurrency=0)
    with pytest.raises(beanstalkc_fast.BeanstalkcException):
        Worker("localhost:1", print, concurrency=0)


# -- exactly once --

@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_exactly_once(conn, make_conn, tube, concurrency):
    conn.put_many([b"%d" % i for i in range(N)])
    seen = collections.Counter()
    lock = threading.Lock()

    def handler(job):
        with lock:
            seen[job.body] += 1
            if len(seen) == N:
                worker.stop()

    worker = Worker(make_conn(), handler, tubes=[tube], concurrency=concurrency)
    stats = worker.run()
    assert len(seen) == N and set(seen.values()) == {1}
    assert stats == worker.stats
    assert (stats["reserved"], stats["processed"], stats["failed"], stats["released"], stats["buried"]) == \
        (N, N, 0, 0, 0)
    assert_empty(conn, tube)
    assert tube_stats(conn, tube)["cmd-delete"] == N


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_aio_exactly_once(arun, conn, beanstalkd, tube, concurrency):
    conn.put_many([b"%d" % i for i in range(N)])
    seen = collections.Counter()

    async def main():
        async with aio.connect(beanstalkd.host, beanstalkd.port) as c:
            async def handler(job):
                seen[job.body] += 1
                if len(seen) % 7 == 0:
                    await asyncio.sleep(0)
                if len(seen) == N:
                    worker.stop()
            worker = aio.Worker(c, handler, tubes=[tube], concurrency=concurrency)
            return await worker.run()

    stats = arun(main())
    assert len(seen) == N and set(seen.values()) == {1}
    assert (stats["reserved"], stats["processed"], stats["failed"]) == (N, N, 0)
    assert_empty(conn, tube)


def test_address_source_and_prefetch(conn, beanstalkd, tube):
    conn.put_many([b"%d" % i for i in range(2000)])
    seen = []

    def handler(job):
        seen.append(job.body)
        if len(seen) == 2000:
            worker.stop()

    worker = Worker("%s:%d" % (beanstalkd.host, beanstalkd.port), handler, tubes=[tube], prefetch=500)
    assert worker.run()["processed"] == 2000
    assert sorted(seen) == sorted("%d" % i for i in range(2000))
    assert_empty(conn, tube)


# -- failures: retries counted from the job's releases, then bury --

def test_retries_then_bury(conn, make_conn, tube, caplog):
    jid = conn.put(b"bad", priority=42)
    calls, attempts = [], []

    def backoff(attempt):
        attempts.append(attempt)
        return 0

    def handler(job):
        calls.append(job.jid)
        raise ValueError("boom %d" % len(calls))

    caplog.set_level(logging.WARNING, logger="beanstalkc_fast.worker")
    running = Running(Worker(make_conn(), handler, tubes=[tube], max_retries=2, backoff=backoff))
    wait_for(lambda: tube_stats(conn, tube)["current-jobs-buried"] == 1, "the job to be buried")
    stats = running.stop()
    assert calls == [jid] * 3
    assert attempts == [1, 2]
    assert (stats["failed"], stats["released"], stats["buried"], stats["processed"]) == (3, 2, 1, 0)
    js = conn.stats_job(jid)
    assert (js["state"], js["releases"], js["buries"], js["pri"]) == ("buried", 2, 1, 42)
    records = [r for r in caplog.records if r.name == "beanstalkc_fast.worker"]
    assert [r.levelname for r in records if "boom" in r.getMessage()] == ["WARNING"] * 3
    assert any(r.levelname == "ERROR" and str(jid) in r.getMessage() for r in records)


def test_retry_delay_from_backoff(conn, make_conn, tube):
    jid = conn.put(b"later")
    worker = Worker(make_conn(), lambda job: 1 / 0, tubes=[tube], backoff=lambda attempt: 100)
    running = Running(worker)
    wait_for(lambda: worker.stats["released"] == 1, "the release")
    running.stop()
    js = conn.stats_job(jid)
    assert (js["state"], js["delay"], js["releases"]) == ("delayed", 100, 1)


def test_aio_retries_then_bury(arun, conn, beanstalkd, tube):
    jid = conn.put(b"bad", priority=42)
    calls, attempts = [], []

    async def main():
        async with aio.connect(beanstalkd.host, beanstalkd.port) as c:
            async def handler(job):
                calls.append(job.jid)
                if len(calls) == 3:
                    worker.stop()
                raise ValueError("boom")
            worker = aio.Worker(c, handler, tubes=[tube], max_retries=2,
                                backoff=lambda a: attempts.append(a) or 0)
            return await worker.run()

    stats = arun(main())
    assert calls == [jid] * 3 and attempts == [1, 2]
    assert (stats["failed"], stats["released"], stats["buried"]) == (3, 2, 1)
    js = conn.stats_job(jid)
    assert (js["state"], js["releases"], js["pri"]) == ("buried", 2, 42)


def test_handler_settles_its_own_job(conn, make_conn, tube):
    a, b, c = conn.put(b"delete"), conn.put(b"release"), conn.put(b"bury")

    def handler(job):
        if job.body == "delete":
            job.delete()
        elif job.body == "release":
            job.release(delay=100)
        else:
            job.bury()

    worker = Worker(make_conn(), handler, tubes=[tube])
    running = Running(worker)
    wait_for(lambda: worker.stats["processed"] == 3, "three jobs handled")
    stats = running.stop()
    assert (stats["released"], stats["buried"], stats["failed"]) == (0, 0, 0)
    assert conn.stats_job(b)["state"] == "delayed" and conn.stats_job(c)["state"] == "buried"
    assert conn.peek(a) is None
    assert tube_stats(conn, tube)["cmd-delete"] == 1


def test_handler_table_routes_by_tube(conn, make_conn, tube):
    other = tube + "-b"
    conn.put_many([b"a%d" % i for i in range(50)])
    conn.use(other)
    conn.put_many([b"b%d" % i for i in range(50)])
    got = collections.defaultdict(list)
    table = {tube: lambda job: got[tube].append(job.body), other: lambda job: got[other].append(job.body)}
    worker = Worker(make_conn(), table, concurrency=4)
    running = Running(worker)
    wait_for(lambda: worker.stats["processed"] == 100, "100 jobs")
    running.stop()
    assert sorted(got[tube]) == sorted("a%d" % i for i in range(50))
    assert sorted(got[other]) == sorted("b%d" % i for i in range(50))


# -- TTR --

def test_handler_outliving_its_ttr_keeps_its_job(conn, make_conn, tube):
    jid = conn.put(b"slow", ttr=1)
    timeouts_before = conn.stats()["job-timeouts"]
    seen = []

    def handler(job):
        time.sleep(2.2)     # more than twice its TTR: the worker touches it meanwhile
        seen.append(job.stats()["timeouts"])

    worker = Worker(make_conn(), handler, tubes=[tube])
    running = Running(worker)
    wait_for(lambda: worker.stats["processed"] == 1, "the slow job")
    stats = running.stop()
    assert seen == [0]
    assert stats["touched"] >= 2 and stats["reserved"] == 1
    assert conn.stats()["job-timeouts"] == timeouts_before
    assert conn.peek(jid) is None


def test_aio_handler_outliving_its_ttr_keeps_its_job(arun, conn, beanstalkd, tube):
    conn.put(b"slow", ttr=1)
    timeouts_before = conn.stats()["job-timeouts"]
    seen = []

    async def main():
        async with aio.connect(beanstalkd.host, beanstalkd.port) as c:
            async def handler(job):
                await asyncio.sleep(2.2)
                seen.append((await job.stats())["timeouts"])
                worker.stop()
            worker = aio.Worker(c, handler, tubes=[tube])
            return await worker.run()

    stats = arun(main())
    assert seen == [0] and stats["touched"] >= 2 and stats["processed"] == 1
    assert conn.stats()["job-timeouts"] == timeouts_before
    assert_empty(conn, tube)


def test_prefetch_with_slow_handlers_times_nothing_out(conn, make_conn, tube):
    conn.put_many([(b"%d" % i, 100, 0, 1) for i in range(12)])
    timeouts_before = conn.stats()["job-timeouts"]
    done = []

    def handler(job):
        time.sleep(0.25)
        done.append(job.body)

    worker = Worker(make_conn(), handler, tubes=[tube], concurrency=2, prefetch=8)
    running = Running(worker)
    wait_for(lambda: len(set(done)) == 12, "12 jobs handled")
    stats = running.stop()
    assert conn.stats()["job-timeouts"] == timeouts_before
    assert stats["released"] > 0        # prefetched jobs went back before their TTR ran out
    assert len(done) == 12              # and none ran twice
    assert_empty(conn, tube)


def test_aio_prefetch_with_slow_handlers_times_nothing_out(arun, conn, beanstalkd, tube):
    conn.put_many([(b"%d" % i, 100, 0, 1) for i in range(12)])
    timeouts_before = conn.stats()["job-timeouts"]
    done = []

    async def main():
        async with aio.connect(beanstalkd.host, beanstalkd.port) as c:
            async def handler(job):
                await asyncio.sleep(0.25)
                done.append(job.body)
                if len(set(done)) == 12:
                    worker.stop()
            worker = aio.Worker(c, handler, tubes=[tube], concurrency=2, prefetch=8)
            return await worker.run()

    stats = arun(main())
    assert conn.stats()["job-timeouts"] == timeouts_before
    assert stats["released"] > 0 and len(done) == 12
    assert_empty(conn, tube)


# -- stopping --

def test_stop_gives_prefetched_jobs_back_at_once(conn, make_conn, tube):
    conn.put_many([(b"%d" % i, 7) for i in range(10)])
    gate = threading.Event()
    started = []

    def handler(job):
        started.append(job.body)
        assert gate.wait(30)

    worker = Worker(make_conn(), handler, tubes=[tube], concurrency=1, prefetch=5)
    running = Running(worker)
    wait_for(lambda: tube_stats(conn, tube)["current-jobs-reserved"] == 6 and started, "6 jobs reserved")
    worker.stop()
    # the running handler still holds its job; the 5 prefetched ones are back with their priority
    wait_for(lambda: tube_stats(conn, tube)["current-jobs-ready"] == 9, "the prefetched jobs back")
    assert conn.peek_ready().stats()["pri"] == 7
    gate.set()
    stats = running.stop()
    assert (stats["processed"], stats["released"]) == (1, 5)
    assert started == ["0"]
    st = tube_stats(conn, tube)
    assert (st["current-jobs-ready"], st["current-jobs-reserved"]) == (9, 0)


def test_shutdown_timeout_releases_running_jobs(conn, make_conn, tube):
    jid = conn.put(b"stuck", priority=9)
    gate = threading.Event()
    worker = Worker(make_conn(), lambda job: gate.wait(30), tubes=[tube], shutdown_timeout=0.2)
    running = Running(worker)
    wait_for(lambda: tube_stats(conn, tube)["current-jobs-reserved"] == 1, "the job reserved")
    stats = running.stop()
    gate.set()
    assert stats["released"] == 1 and stats["processed"] == 0
    js = conn.stats_job(jid)
    assert (js["state"], js["pri"]) == ("ready", 9)


def test_stop_before_run_and_run_in_main_thread_restores_signals(conn, make_conn, tube):
    import signal
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    worker = Worker(make_conn(), print, tubes=[tube])
    worker.stop()
    assert worker.run()["reserved"] == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_sigterm_stops_run_in_the_main_thread(conn, make_conn, tube):
    import os
    import signal
    conn.put_many([b"x"] * 5)
    count = []

    def handler(job):
        count.append(1)
        if len(count) == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    stats = Worker(make_conn(), handler, tubes=[tube]).run()
    assert stats["processed"] == 5
    assert_empty(conn, tube)


def test_aio_shutdown_cancels_and_releases(arun, conn, beanstalkd, tube):
    jid = conn.put(b"stuck", priority=9)

    async def main():
        async with aio.connect(beanstalkd.host, beanstalkd.port) as c:
            async def handler(job):
                worker.stop()
                await asyncio.sleep(30)
            worker = aio.Worker(c, handler, tubes=[tube], shutdown_timeout=0.2)
            return await worker.run()

    stats = arun(main())
    assert stats["released"] == 1
    js = conn.stats_job(jid)
    assert (js["state"], js["pri"]) == ("ready", 9)


# -- servers lost --

def _corrupt_buried(server):
    """The jobs buried on ``server`` whose bodies are all zeros: beanstalkd 1.12 restarted from a
    binlog torn by kill -9 may hand out such a job (CorruptJob), and the worker buries it."""
    with server.connect(encoding=None) as c:
        buried = c.stats()["current-jobs-buried"]
        zeros = 0
        for _ in range(buried):
            job = c.peek_buried()
            if job is None:
                break
            assert job.body_bytes.strip(b"\0") == b"", job     # only a torn job is ever buried here
            zeros += 1
            c.delete(job.jid)
        return zeros


def test_server_killed_and_restarted_mid_run(impl, monkeypatch, binlog_server, caplog):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    caplog.set_level(logging.WARNING, logger="beanstalkc_fast.worker")
    server = binlog_server
    try:
        with server.connect() as c:
            c.put_many([b"%d" % i for i in range(1000)])
        seen = set()

        def handler(job):
            seen.add(job.body)
            time.sleep(0.0005)

        worker = Worker(server.connect(), handler, concurrency=4)
        running = Running(worker)
        wait_for(lambda: len(seen) >= 300, "300 jobs handled")
        server.stop(kill=True)
        server.start()
        wait_for(lambda: len(seen) + worker.stats["buried"] >= 1000, "every job handled at least once")
        running.stop()       # raises if run() raised
        assert len(seen) + _corrupt_buried(server) == 1000
        with server.connect() as c:
            wait_for(lambda: c.stats()["current-jobs-ready"] + c.stats()["current-jobs-reserved"] == 0,
                     "the queue empty")
    finally:
        server.stop(kill=True)


def test_aio_server_killed_and_restarted_mid_run(arun, binlog_server, caplog):
    caplog.set_level(logging.WARNING, logger="beanstalkc_fast.worker")
    server = binlog_server
    try:
        with server.connect() as c:
            c.put_many([b"%d" % i for i in range(1000)])
        seen = set()

        async def main():
            loop = asyncio.get_running_loop()
            async with aio.connect(server.host, server.port) as conn:
                async def handler(job):
                    seen.add(job.body)
                    await asyncio.sleep(0.0005)
                worker = aio.Worker(conn, handler, concurrency=4)
                run = loop.create_task(worker.run())
                while len(seen) < 300:
                    await asyncio.sleep(0.01)
                await loop.run_in_executor(None, lambda: (server.stop(kill=True), server.start()))
                deadline = loop.time() + 40
                while len(seen) + worker.stats["buried"] < 1000 and loop.time() < deadline:
                    await asyncio.sleep(0.01)
                worker.stop()
                return await run

        arun(main())
        assert len(seen) + _corrupt_buried(server) == 1000
    finally:
        server.stop(kill=True)


def test_pool_of_three_one_killed(impl, monkeypatch, servers):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    bodies = {}
    for i, server in enumerate(servers):
        with server.connect() as c:
            bodies[i] = {"%d-%d" % (i, k) for k in range(300)}
            c.put_many(sorted(bodies[i]))
    seen = set()
    lock = threading.Lock()

    def handler(job):
        with lock:
            seen.add(job.body)
        time.sleep(0.0005)

    pool = beanstalkc_fast.Pool(["%s:%d" % (s.host, s.port) for s in servers], retry_after=0.2)
    try:
        worker = Worker(pool, handler, concurrency=4)
        running = Running(worker)
        wait_for(lambda: len(seen) >= 100, "100 jobs handled")
        servers[2].stop(kill=True)
        wait_for(lambda: bodies[0] | bodies[1] <= seen, "the live servers' jobs handled", timeout=60)
        running.stop()
    finally:
        pool.close()
    for server in servers[:2]:
        with server.connect() as c:
            st = c.stats()
            assert st["current-jobs-ready"] + st["current-jobs-reserved"] == 0


def test_aio_pool_of_three_one_killed(arun, servers):
    bodies = {}
    for i, server in enumerate(servers):
        with server.connect() as c:
            bodies[i] = {"%d-%d" % (i, k) for k in range(300)}
            c.put_many(sorted(bodies[i]))
    seen = set()

    async def main():
        async with aio.Pool(["%s:%d" % (s.host, s.port) for s in servers], retry_after=0.2) as pool:
            async def handler(job):
                seen.add(job.body)
                if len(seen) == 100:
                    servers[2].stop(kill=True)
                if bodies[0] | bodies[1] <= seen:
                    worker.stop()
                await asyncio.sleep(0.0005)
            worker = aio.Worker(pool, handler, concurrency=4)
            return await worker.run()

    arun(main())
    assert bodies[0] | bodies[1] <= seen


def test_a_connection_with_retry_is_refused(beanstalkd):
    # The worker reconnects by itself and forgets a lost connection's jobs: a connection that
    # reconnected behind its back would leave it holding jobs the server has made ready again.
    with beanstalkd.connect(retry=beanstalkc_fast.Retry()) as c:
        with pytest.raises(InvalidArgument):
            Worker(c, print)

    async def main():
        async with aio.connect(beanstalkd.host, beanstalkd.port, retry=beanstalkc_fast.Retry()) as a:
            with pytest.raises(InvalidArgument):
                aio.Worker(a, print)
    asyncio.new_event_loop().run_until_complete(main())
