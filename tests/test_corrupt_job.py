"""A corrupt job (issue 21): beanstalkd 1.12 restarted from its binlog hands out a job whose body
bytes, trailer included, are zeros, the ``RESERVED <id> <n>`` framing intact.

Reproduced for real: a server with a binlog is given jobs and stopped, the body bytes (and the
CRLF stored after them) of one job's record in the binlog file are zeroed, and the server is
started again on that binlog. The client must stay in step: ``CorruptJob`` with ``.jid``, the
connection usable, the job still reserved so that it can be buried or deleted; reserve_many
reports each Job or CorruptJob in order. Sync, aio and both pools, on both cores.
"""
import os
import uuid

import pytest

import beanstalkc_fast
from beanstalkc_fast import BatchError, CommandFailed, CorruptJob, aio
from beanstalkc_fast.testing import BeanstalkdServer

TUBE = "corrupt"


def zero_bodies(binlog_dir, bodies):
    """Zero each body and the CRLF after it in the binlog files (found by its unique bytes)."""
    for body in bodies:
        found = False
        for name in os.listdir(binlog_dir):
            if not name.startswith("binlog."):
                continue
            path = os.path.join(binlog_dir, name)
            os.chmod(path, 0o600)   # beanstalkd leaves its binlog files read-only
            with open(path, "r+b") as f:
                data = f.read()
                at = data.find(body + b"\r\n")
                if at >= 0:
                    f.seek(at)
                    f.write(b"\0" * (len(body) + 2))
                    found = True
        assert found, body


@pytest.fixture
def corrupt_server(beanstalkd_binary, tmp_path):
    """``corrupt_server(bodies, corrupt=(indexes), delays={index: seconds})`` -> (server, jids): a
    beanstalkd restarted from a binlog whose jobs (put in that order in the tube ``corrupt``)
    at ``corrupt`` come back with zeroed bodies."""
    started = []

    def make(bodies, corrupt=(), delays=None):
        binlog = tmp_path / ("binlog%d" % len(started))
        binlog.mkdir()
        server = BeanstalkdServer(binary=beanstalkd_binary, args=["-b", str(binlog)]).start()
        started.append(server)
        conn = server.connect()
        conn.use(TUBE)
        jids = [conn.put(body, delay=(delays or {}).get(i, 0)) for i, body in enumerate(bodies)]
        conn.close()
        server.stop()
        zero_bodies(str(binlog), [bodies[i] for i in corrupt])
        server.start()
        return server, jids

    yield make
    for server in started:
        server.stop(kill=True)


def bodies(n):
    tag = uuid.uuid4().hex.encode()
    return [b"job-%d-%s" % (i, tag) for i in range(n)]


@pytest.fixture
def sync_core(impl, monkeypatch):
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    return impl


def consumer(server):
    conn = server.connect()
    conn.watch(TUBE)
    conn.ignore("default")
    return conn


# -- the blocking Connection ------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [0, 1, None], ids=["pipelined", "exclusive", "forever"])
def test_a_reserve_loop_that_meets_a_corrupt_job_buries_it_and_goes_on(sync_core, corrupt_server, timeout):
    # reserve(0) pipelines (_pipe); reserve(1) and reserve() have the connection to themselves (_do).
    data = bodies(3)
    server, jids = corrupt_server(data, corrupt=[1])
    conn = consumer(server)
    done, buried = [], []
    while len(done) + len(buried) < 3:
        try:
            job = conn.reserve(timeout)
        except CorruptJob as err:
            assert err.args == ("reserve" if timeout is None else "reserve-with-timeout", "RESERVED",
                                [str(err.jid), str(len(data[1]))])
            conn.bury(err.jid)
            buried.append(err.jid)
            continue
        assert job is not None
        done.append(job.body_bytes)
        job.delete()
    assert done == [data[0], data[2]] and buried == [jids[1]]
    assert conn.reserve(0) is None and conn.connected
    assert conn.stats_job(jids[1])["state"] == "buried"
    # A peek of the buried job: a corrupt body again, and again the connection carries on.
    conn.use(TUBE)
    with pytest.raises(CorruptJob) as info:
        conn.peek_buried()
    assert info.value.jid == jids[1] and info.value.args[:2] == ("peek-buried", "FOUND")
    conn.delete(jids[1])
    assert conn.peek_buried() is None
    conn.close()


def test_peeks_and_reserve_job_raise_corrupt_job(sync_core, corrupt_server):
    data = bodies(2)
    server, jids = corrupt_server(data, corrupt=[0])
    conn = consumer(server)
    conn.use(TUBE)
    for call in (lambda: conn.peek(jids[0]), conn.peek_ready):
        with pytest.raises(CorruptJob) as info:
            call()
        assert info.value.jid == jids[0]
    assert conn.peek(jids[1]).body_bytes == data[1]
    with pytest.raises(CorruptJob) as info:
        conn.reserve_job(jids[0])
    assert info.value.jid == jids[0] and info.value.args[0] == "reserve-job"
    assert conn.stats_job(jids[0])["state"] == "reserved"
    conn.delete(jids[0])
    with pytest.raises(CommandFailed):
        conn.stats_job(jids[0])
    assert conn.reserve(0).body_bytes == data[1]
    conn.close()


@pytest.mark.parametrize("timeout", [0, 1])
def test_reserve_many_reports_each_job_in_order(sync_core, corrupt_server, timeout):
    data = bodies(4)
    server, jids = corrupt_server(data, corrupt=[1, 2])
    conn = consumer(server)
    with pytest.raises(BatchError) as info:
        conn.reserve_many(10, timeout)
    results = info.value.results
    assert [type(r) for r in results] == [beanstalkc_fast.Job, CorruptJob, CorruptJob, beanstalkc_fast.Job]
    assert [r.jid for r in results] == jids and [i for i, _ in info.value.errors] == [1, 2]
    assert results[0].body_bytes == data[0] and results[3].body_bytes == data[3]
    conn.bury_many([results[1].jid, results[2].jid])    # still reserved by this connection
    conn.delete_many([results[0], results[3]])
    assert conn.reserve_many(10) == []
    conn.close()


# -- the asyncio Connection -------------------------------------------------------------------

async def aio_consumer(server):
    conn = await aio.connect(server.host, server.port)
    await conn.watch(TUBE)
    await conn.ignore("default")
    return conn


def test_aio_reserve_loop_buries_a_corrupt_job_on_the_channel_that_holds_it(arun, corrupt_server):
    data = bodies(3)
    server, jids = corrupt_server(data, corrupt=[1])

    async def main():
        conn = await aio_consumer(server)
        done = []
        while len(done) < 3:
            try:
                job = await conn.reserve(0)
            except CorruptJob as err:
                # held by the consumer channel that reserved it: its bury goes there (any other
                # connection of the server would get NOT_FOUND)
                assert conn._held[err.jid] in conn._consumers
                await conn.bury(err.jid)
                done.append(err.jid)
                continue
            done.append(job.body_bytes)
            await job.delete()
        assert done == [data[0], jids[1], data[2]]
        assert (await conn.stats_job(jids[1]))["state"] == "buried"
        await conn.use(TUBE)
        with pytest.raises(CorruptJob):
            await conn.peek(jids[1])
        await conn.delete(jids[1])
        assert await conn.reserve(0) is None and conn.connected
        await conn.close()
    arun(main())


def test_aio_waiting_reserve_and_reserve_job_raise_corrupt_job(arun, corrupt_server):
    # A delayed corrupt job: the reserve that waits for it (the pump) gets it.
    data = bodies(2)
    server, jids = corrupt_server(data, corrupt=[0, 1], delays={0: 1})

    async def main():
        conn = await aio_consumer(server)
        with pytest.raises(CorruptJob) as info:
            await conn.reserve_job(jids[1])
        assert info.value.jid == jids[1]
        await conn.delete(jids[1])
        with pytest.raises(CorruptJob) as info:
            await conn.reserve(timeout=30)
        assert info.value.jid == jids[0]
        await conn.bury(jids[0])
        assert (await conn.stats_job(jids[0]))["state"] == "buried"
        await conn.close()
    arun(main())


@pytest.mark.parametrize("timeout", [0, 1])
def test_aio_reserve_many_reports_each_job_in_order(arun, corrupt_server, timeout):
    data = bodies(4)
    server, jids = corrupt_server(data, corrupt=[0, 2])

    async def main():
        conn = await aio_consumer(server)
        with pytest.raises(BatchError) as info:
            await conn.reserve_many(10, timeout)
        results = info.value.results
        assert [type(r) for r in results] == [CorruptJob, aio.Job, CorruptJob, aio.Job]
        assert [r.jid for r in results] == jids
        await conn.bury_many([results[0].jid, results[2].jid])
        await conn.delete_many([results[1], results[3]])
        assert await conn.reserve_many(10) == []
        await conn.close()
    arun(main())


# -- the pools ------------------------------------------------------------------------------

def pool_servers(corrupt_server):
    """Server a: a good job, then a corrupt one; server b: two good jobs."""
    data_a, data_b = bodies(2), bodies(2)
    a, jids_a = corrupt_server(data_a, corrupt=[1])
    b, jids_b = corrupt_server(data_b)
    return {"a": (a.host, a.port), "b": (b.host, b.port)}, data_a, jids_a, data_b, jids_b


def test_pool_reserve_many_returns_the_others_and_reports_the_corrupt_one(sync_core, corrupt_server):
    servers, data_a, jids_a, data_b, jids_b = pool_servers(corrupt_server)
    with beanstalkc_fast.Pool(servers) as pool:
        pool.watch(TUBE)
        pool.ignore("default")
        with pytest.raises(BatchError) as info:
            pool.reserve_many(10)
        results = info.value.results
        jobs = [r for r in results if isinstance(r, beanstalkc_fast.Job)]
        bad = [r for r in results if isinstance(r, CorruptJob)]
        assert sorted(j.body_bytes for j in jobs) == sorted([data_a[0]] + data_b)
        assert len(bad) == 1 and (bad[0].server, bad[0].jid) == ("a", jids_a[1])
        assert all(j.server in ("a", "b") for j in jobs)
        pool.bury(bad[0])           # by its .server and .jid, on the connection that reserved it
        pool.delete_many(jobs)
        assert pool.reserve_many(10) == []
        assert pool.stats_job(beanstalkc_fast.JobRef("a", jids_a[1]))["state"] == "buried"


def test_pool_reserve_loop_buries_a_corrupt_job_and_goes_on(sync_core, corrupt_server):
    servers, data_a, jids_a, data_b, jids_b = pool_servers(corrupt_server)
    with beanstalkc_fast.Pool(servers) as pool:
        pool.watch(TUBE)
        pool.ignore("default")
        done, buried = [], []
        while len(done) + len(buried) < 4:
            try:
                job = pool.reserve(0)
            except CorruptJob as err:
                assert err.server == "a"
                pool.bury(err)
                buried.append(err.jid)
                continue
            done.append(job.body_bytes)
            pool.delete(job)
        assert sorted(done) == sorted([data_a[0]] + data_b) and buried == [jids_a[1]]
        assert pool.reserve(0) is None


def test_aio_pool_reserve_and_reserve_many_report_the_corrupt_job(arun, corrupt_server):
    servers, data_a, jids_a, data_b, jids_b = pool_servers(corrupt_server)

    async def main():
        async with aio.Pool(servers) as pool:
            await pool.watch(TUBE)
            await pool.ignore("default")
            with pytest.raises(BatchError) as info:
                await pool.reserve_many(10)
            results = info.value.results
            jobs = [r for r in results if isinstance(r, aio.Job)]
            bad = [r for r in results if isinstance(r, CorruptJob)]
            assert sorted(j.body_bytes for j in jobs) == sorted([data_a[0]] + data_b)
            assert len(bad) == 1 and (bad[0].server, bad[0].jid) == ("a", jids_a[1])
            await pool.release(bad[0])      # back to ready: the next reserve meets it again
            await pool.delete_many(jobs)
            # reserve (not None, as it once was): CorruptJob with .server, then bury it
            with pytest.raises(CorruptJob) as info:
                await pool.reserve(timeout=30)
            assert (info.value.server, info.value.jid) == ("a", jids_a[1])
            await pool.bury(info.value)
            assert await pool.reserve(0) is None
    arun(main())


def test_aio_pool_waiting_reserve_raises_corrupt_job(arun, corrupt_server):
    # Nothing ready when the reserve starts: the corrupt job comes to the waiting reserve (_wait).
    data = bodies(1)
    a, jids = corrupt_server(data, corrupt=[0], delays={0: 1})
    b, _ = corrupt_server([])

    async def main():
        async with aio.Pool({"a": (a.host, a.port), "b": (b.host, b.port)}) as pool:
            await pool.watch(TUBE)
            await pool.ignore("default")
            with pytest.raises(CorruptJob) as info:
                await pool.reserve(timeout=30)
            assert (info.value.server, info.value.jid) == ("a", jids[0])
            await pool.delete(info.value)
            assert await pool.reserve(0) is None
    arun(main())


def test_pool_waiting_reserve_raises_corrupt_job(sync_core, corrupt_server):
    data = bodies(1)
    a, jids = corrupt_server(data, corrupt=[0], delays={0: 1})
    b, _ = corrupt_server([])
    with beanstalkc_fast.Pool({"a": (a.host, a.port), "b": (b.host, b.port)}) as pool:
        pool.watch(TUBE)
        pool.ignore("default")
        with pytest.raises(CorruptJob) as info:
            pool.reserve(timeout=30)
        assert (info.value.server, info.value.jid) == ("a", jids[0])
        pool.delete(info.value)
        assert pool.reserve(0) is None


def test_pool_peeks_and_reserve_job_name_the_server(sync_core, corrupt_server):
    data = bodies(1)
    a, jids = corrupt_server(data, corrupt=[0])
    with beanstalkc_fast.Pool({"a": (a.host, a.port)}) as pool:
        pool.use(TUBE)
        for call in (lambda: pool.peek(beanstalkc_fast.JobRef("a", jids[0])), pool.peek_ready,
                     lambda: pool.reserve_job("a/%d" % jids[0])):
            with pytest.raises(CorruptJob) as info:
                call()
            assert (info.value.server, info.value.jid) == ("a", jids[0])
        pool.delete(info.value)
        assert pool.peek_ready() is None
