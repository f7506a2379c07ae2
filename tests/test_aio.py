"""The asyncio client against a real beanstalkd: every method, pipelining, consumer channels.

Each test runs on both cores and on the stock loop and uvloop (the ``arun`` fixture).
"""
import asyncio
import importlib.util
import socket
import subprocess
import time

import pytest

import beanstalkc_fast
from beanstalkc_fast import aio
from beanstalkc_fast.exceptions import (BatchError, BeanstalkcException, CommandFailed, InvalidArgument,
                                        InvalidType, SocketError)
from beanstalkc_fast.testing import BeanstalkdServer


async def tube_conn(beanstalkd, tube, **kw):
    conn = await aio.connect(beanstalkd.host, beanstalkd.port, **kw)
    await conn.use(tube)
    await conn.watch(tube)
    await conn.ignore("default")
    return conn


def test_connect_forms_and_close(arun, beanstalkd, tube):
    async def main():
        conn = await aio.connect(beanstalkd.host, beanstalkd.port)
        assert conn.connected and "aio.Connection" in repr(conn) and "connected" in repr(conn)
        assert await conn.using() == "default"
        await conn.close()
        await conn.close()      # twice: never raises
        assert not conn.connected and "closed" in repr(conn)
        with pytest.raises(SocketError):
            await conn.put("x")
        async with aio.connect(beanstalkd.host, beanstalkd.port) as c2:
            assert await c2.use(tube) == tube
        assert not c2.connected
        async with aio.Connection(beanstalkd.host, beanstalkd.port) as c3:
            assert await c3.watch(tube) == 2
        with pytest.raises(SocketError):
            await aio.connect("127.0.0.1", 1)      # refused
        with pytest.raises(InvalidType):
            aio.connect(parse_yaml=3)
    arun(main())


def test_every_method(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        assert await conn.using() == tube
        assert await conn.watching() == [tube]
        assert tube in await conn.tubes()
        jid = await conn.put("hello", priority=10, delay=0, ttr=60)
        assert isinstance(jid, int)
        job = await conn.peek(jid)
        assert (job.jid, job.body, job.reserved) == (jid, "hello", False)
        assert (await conn.peek_ready()).jid == jid
        assert await conn.peek_delayed() is None and await conn.peek_buried() is None
        assert await conn.peek(10 ** 9) is None
        stats = await conn.stats_job(jid)
        assert stats["pri"] == 10 and stats["tube"] == tube
        assert (await conn.stats_tube(tube))["current-jobs-ready"] == 1
        assert (await conn.stats())["current-connections"] >= 1

        job = await conn.reserve(timeout=0)
        assert (job.jid, job.body, job.body_bytes, job.reserved) == (jid, "hello", b"hello", True)
        assert "aio.Job" in repr(job)
        await job.touch()
        assert (await job.stats())["state"] == "reserved"
        await job.release()             # keeps its priority
        assert (await conn.stats_job(jid))["pri"] == 10
        job = await conn.reserve(timeout=1)
        await job.bury(priority=0)      # an explicit 0 means 0
        assert job.reserved is False
        assert (await conn.peek_buried()).jid == jid and (await conn.stats_job(jid))["pri"] == 0
        assert await conn.kick(5) == 1
        job = await conn.reserve_job(jid)
        assert job.reserved and job.jid == jid
        await job.bury()
        await job.kick()
        assert (await conn.stats_job(jid))["state"] == "ready"
        job = await conn.reserve(0)
        await job.delete()
        assert job.reserved is False and await conn.peek(jid) is None
        assert await conn.reserve(0) is None

        delayed = await conn.put(b"later", delay=100)
        assert (await conn.peek_delayed()).jid == delayed
        await conn.kick_job(delayed)
        await conn.delete(delayed)

        await conn.pause_tube(tube, 0)
        assert await conn.watch("other") == 2 and await conn.ignore("other") == 1
        assert await conn.ignore(tube) == 1     # the last watched tube: beanstalkd refuses, 1 as in the sync client

        # the batches
        ids = await conn.put_many(["a", b"b", ("c", 5), (b"d", 5, 0, 30)])
        assert len(ids) == 4 and ids == sorted(ids)
        jobs = await conn.reserve_many(10, timeout=1)
        assert sorted(j.body for j in jobs) == ["a", "b", "c", "d"]
        await conn.touch_many(jobs)
        await conn.release_many(jobs[:2], priority=7)
        await conn.bury_many(jobs[2:3])
        assert not jobs[0].reserved and not jobs[2].reserved
        await conn.delete_many(jobs[3:])
        assert await conn.kick(10) == 1
        rest = await conn.reserve_many(10)
        assert len(rest) == 3
        await conn.delete_many([j.jid for j in rest])
        assert await conn.reserve_many(5) == [] and await conn.reserve_many(0) == []
        assert (await conn.stats_tube(tube))["current-jobs-ready"] == 0
        await conn.close()
    arun(main())


def test_failures_and_bad_arguments_as_in_the_sync_client(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        for coro, args in ((conn.delete(10 ** 9), ("delete", "NOT_FOUND", [])),
                           (conn.release(10 ** 9), ("release", "NOT_FOUND", [])),
                           (conn.bury(10 ** 9), ("bury", "NOT_FOUND", [])),
                           (conn.touch(10 ** 9), ("touch", "NOT_FOUND", [])),
                           (conn.kick_job(10 ** 9), ("kick-job", "NOT_FOUND", [])),
                           (conn.stats_job(10 ** 9), ("stats-job", "NOT_FOUND", [])),
                           (conn.stats_tube("nosuchtube-x"), ("stats-tube", "NOT_FOUND", [])),
                           (conn.pause_tube("nosuchtube-x", 1), ("pause-tube", "NOT_FOUND", [])),
                           (conn.reserve_job(10 ** 9), ("reserve-job", "NOT_FOUND", [])),
                           (conn.put(b"x" * 70000), ("put", "JOB_TOO_BIG", []))):
            with pytest.raises(CommandFailed) as info:
                await coro
            assert info.value.args == args
        for coro, exc in ((conn.use("-bad"), InvalidArgument), (conn.watch("a b"), InvalidArgument),
                          (conn.put(3), InvalidType), (conn.put("x", priority=-1), InvalidArgument),
                          (conn.delete("1"), InvalidType), (conn.reserve(timeout=-1), InvalidArgument),
                          (conn.put_many("abc"), InvalidType), (conn.put_many(["a", 3]), InvalidType),
                          (conn.delete_many([1, -1]), InvalidArgument), (conn.reserve_many(-1), InvalidArgument)):
            with pytest.raises(exc) as info:
                await coro
            assert isinstance(info.value, BeanstalkcException)
        # nothing of those went out: the stream is in step
        assert await conn.using() == tube and (await conn.stats_tube(tube))["total-jobs"] == 0
        with pytest.raises(BatchError) as info:
            await conn.put_many([b"ok", b"x" * 70000, b"ok too"])
        results = info.value.results
        assert isinstance(results[0], int) and isinstance(results[2], int)
        assert results[1].args == ("put", "JOB_TOO_BIG", [])
        with pytest.raises(BatchError) as info:
            await conn.delete_many([results[0], 10 ** 9, results[2]])
        assert info.value.results[0] is None and info.value.results[1].args == ("delete", "NOT_FOUND", [])

        def bodies():
            yield b"one"
            raise KeyError("the caller's iterator")
        with pytest.raises(KeyError) as info:
            await conn.put_many(bodies())
        assert info.value.results is None      # its window was never sent, as in the sync client
        assert (await conn.stats_tube(tube))["total-jobs"] == 2
        await conn.close()
    arun(main())


def test_text_bytes_and_yaml_modes(arun, beanstalkd, tube):
    async def main():
        raw = await tube_conn(beanstalkd, tube, encoding=None, parse_yaml=False)
        jid = await raw.put(b"\xff\xfe")
        assert (await raw.peek(jid)).body == b"\xff\xfe"
        with pytest.raises(InvalidType):
            await raw.put("text")
        assert isinstance(await raw.stats(), str) and (await raw.stats()).startswith("---")
        text = await tube_conn(beanstalkd, tube, parse_yaml=len)
        assert isinstance(await text.stats(), int)
        job = await text.reserve(0)
        with pytest.raises(UnicodeDecodeError):
            job.body
        await job.bury()        # an undecodable body never loses the job
        await text.delete(jid)
        await raw.close()
        await text.close()
    arun(main())


def test_a_thousand_concurrent_puts_each_get_their_own_id(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        bodies = ["job %d" % i for i in range(1000)]
        ids = await asyncio.gather(*[conn.put(body) for body in bodies])
        assert len(set(ids)) == 1000
        peeked = await asyncio.gather(*[conn.peek(jid) for jid in ids])
        assert [job.body for job in peeked] == bodies
        assert (await conn.stats_tube(tube))["current-jobs-ready"] == 1000
        await conn.delete_many(ids)
        await conn.close()
    arun(main())


def test_commands_of_one_loop_iteration_go_out_in_one_write(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        transport = conn._main.transport
        writes = []
        write, writelines = transport.write, transport.writelines
        conn._main.transport = type("Spy", (), {
            "write": lambda self, data: (writes.append(1), write(data)),
            "writelines": lambda self, data: (writes.append(len(data)), writelines(data))})()
        ids = await asyncio.gather(*[conn.put("x") for _ in range(100)])
        assert len(set(ids)) == 100
        assert writes == [1, 99]    # the first at once (nothing in flight), the rest coalesced
        conn._main.transport = transport
        await conn.close()
    arun(main())


def test_put_is_not_delayed_by_a_pending_blocking_reserve(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        waiting = asyncio.ensure_future(conn.reserve())
        while not conn._consumers or not conn._consumers[0].blocked:    # its reserve is at the server
            await asyncio.sleep(0)
        jid = await conn.put("for the waiting reserve")    # answered while the reserve waits
        assert not waiting.done() or (await waiting).jid == jid
        job = await waiting
        assert job.jid == jid and job.body == "for the waiting reserve"
        await conn.delete(jid)      # by id: goes to the channel that reserved it
        assert await conn.peek(jid) is None
        await conn.close()
    arun(main())


def test_jobs_go_back_to_the_channel_that_reserved_them(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        ids = await conn.put_many(["a", "b", "c", "d", "e"])
        jobs = [await conn.reserve(0) for _ in range(5)]
        assert sorted(j.jid for j in jobs) == ids and set(conn._held) == set(ids)
        # code written for the sync API: operations by id
        await conn.touch(ids[0])
        await conn.release(ids[0], priority=1)
        await conn.bury(ids[1])
        await conn.delete(ids[2])
        await conn.delete_many(ids[3:])
        assert set(conn._held) == set()
        assert (await conn.stats_job(ids[0]))["state"] == "ready"
        assert (await conn.stats_job(ids[1]))["state"] == "buried"
        assert await conn.peek(ids[3]) is None
        # a peeked job is not ours: its delete goes through the main channel
        await (await conn.peek(ids[0])).delete()
        await (await conn.peek_buried()).delete()
        await conn.close()
    arun(main())


def test_many_consumers_waiting_never_hold_up_a_delete(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        done = []

        async def consumer():
            job = await conn.reserve()
            await job.delete()      # must not wait behind the other consumers' reserves
            done.append(job.jid)

        consumers = [asyncio.ensure_future(consumer()) for _ in range(5)]
        while not any(ch.blocked for ch in conn._consumers):
            await asyncio.sleep(0)
        producer = await aio.connect(beanstalkd.host, beanstalkd.port)
        await producer.use(tube)
        first = await producer.put("one")
        while not done:             # the other four still wait for jobs
            await asyncio.wait(consumers, return_when=asyncio.FIRST_COMPLETED)
        assert done == [first] and await producer.peek(first) is None
        rest = await producer.put_many(["two", "three", "four", "five"])
        await asyncio.gather(*consumers)
        assert sorted(done) == sorted([first] + rest)
        await producer.close()
        await conn.close()
    arun(main())


def test_reserve_timeouts_and_reserve_many_waits_for_the_first(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        assert await conn.reserve(timeout=0) is None
        assert await conn.reserve(timeout=1) is None
        assert await conn.reserve_many(3, timeout=1) == []
        task = asyncio.ensure_future(conn.reserve_many(3, timeout=10))
        while not any(ch.blocked for ch in conn._consumers):
            await asyncio.sleep(0)
        await conn.put_many(["a", "b"])
        jobs = await task
        assert 1 <= len(jobs) <= 2
        await conn.delete_many(jobs)
        await conn.close()
    arun(main())


def test_watch_and_ignore_reach_the_consumer_channels(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        assert await conn.reserve(0) is None        # opens a consumer channel watching tube
        await conn.watch(tube + "-b")
        await conn.ignore(tube)
        await conn.use(tube)
        await conn.put("in a")
        await conn.use(tube + "-b")
        jid = await conn.put("in b")
        job = await conn.reserve(0)
        assert job.jid == jid
        await job.delete()
        assert await conn.reserve(0) is None
        await conn.watch(tube)
        await (await conn.reserve(0)).delete()
        await conn.close()
    arun(main())


def test_flow_control_holds_puts_while_the_transport_is_full(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        ch = conn._main
        ch.pause_writing()      # as the transport does above its high-water mark
        puts = [asyncio.ensure_future(conn.put("x")) for _ in range(50)]
        many = asyncio.ensure_future(conn.put_many(["y"] * 10))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not ch._fifo and not ch._out and len(ch._drainers) == 51    # nothing queued, all waiting
        ch.resume_writing()
        ids = await asyncio.gather(*puts)
        assert len(set(ids)) == 50 and len(await many) == 10
        await conn.close()
    arun(main())


def test_reconnect_restores_tubes(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd, tube)
        await conn.reconnect()
        assert await conn.using() == tube and await conn.watching() == [tube]
        jid = await conn.put("again")
        assert (await conn.reserve(0)).jid == jid
        await conn.delete(jid)
        await conn.close()
    arun(main())


def test_unix_socket_and_ipv6(arun, tmp_path, beanstalkd_binary):
    path = str(tmp_path / "b.sock")
    if len(path) > 100:
        pytest.skip("tmp path too long for a unix socket")
    proc = subprocess.Popen([beanstalkd_binary, "-l", "unix:" + path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                s.close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.01)

        async def over(host, port=11300):
            async with aio.connect(host, port) as conn:
                jid = await conn.put("there")
                job = await conn.reserve(0)
                assert job.jid == jid and job.body == "there"
                await job.delete()
                return repr(conn)
        assert "path=" in arun(over(path))
        arun(over("unix:" + path))
    finally:
        proc.kill()
        proc.wait(10)
    if not socket.has_ipv6:
        return
    try:
        server = BeanstalkdServer(host="::1").start()
    except Exception:
        return      # no IPv6 loopback here
    try:
        arun(over("::1", server.port))
        arun(over("[::1]", server.port))
    finally:
        server.stop()


def test_sync_and_aio_share_constants_and_the_job_data():
    assert (aio.DEFAULT_HOST, aio.DEFAULT_PORT, aio.DEFAULT_PRIORITY, aio.DEFAULT_TTR) == (
        beanstalkc_fast.DEFAULT_HOST, beanstalkc_fast.DEFAULT_PORT, beanstalkc_fast.DEFAULT_PRIORITY,
        beanstalkc_fast.DEFAULT_TTR)
    from beanstalkc_fast._job import JobData
    # siblings on one data class: neither Job is the other's subclass
    assert issubclass(aio.Job, JobData) and issubclass(beanstalkc_fast.Job, JobData)
    assert not issubclass(aio.Job, beanstalkc_fast.Job) and not issubclass(beanstalkc_fast.Job, aio.Job)
    job = aio.Job(None, 7, b"x" * 50, False)
    assert repr(job) == "<beanstalkc_fast.aio.Job jid=7 reserved=False body=%r>" % (b"x" * 40,)
    assert (job.body, job.body_bytes) == ("x" * 50, b"x" * 50)


def test_the_benchmark_runs_the_asyncio_rows(bench_harness, tmp_path):
    # bench_harness: benchmarks/compare.py (the tests' conftest loads it; skips without the checkout)
    import json
    from beanstalkc_fast import _backend
    out = tmp_path / "out.json"
    clients = ["aio", "aiostalk"] + (["aio-uvloop"] if importlib.util.find_spec("uvloop") else [])
    code = bench_harness.main(["--no-pin", "--ops", "40", "--batch-ops", "2000", "--batch", "64", "--repeat", "1",
                               "--clients", ",".join(clients), "--no-import", "--chart", "", "--json", str(out)])
    assert code == 0
    got = {(r["row"], r["client"]) for r in json.loads(out.read_text())["results"]}
    if _backend._load_compiled() is not None:
        for row in ("put", "reserve_delete", "stats", "put_many", "reserve_delete_many", "put_concurrent",
                    "put_gather", "reserve_delete_concurrent"):
            assert (row, "aio[cython]") in got
            assert "aio-uvloop" not in clients or (row, "aio[cython]+uvloop") in got
    if importlib.util.find_spec("aiostalk"):
        assert {("put", "aiostalk"), ("reserve_delete", "aiostalk"), ("stats", "aiostalk")} <= got
