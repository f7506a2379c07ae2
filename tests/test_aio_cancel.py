"""The asyncio client when callers go away or the server does: cancellation, timeouts, failures.

beanstalkd has no cancel command: a cancelled call keeps its reply slot, a put written for a
cancelled caller is reported to on_orphan, a job reserved for one is given back at once.
Real beanstalkd servers; scripted fake servers only for what a real server never sends.
"""
import asyncio
import logging
import random

import pytest

from beanstalkc_fast import aio
from beanstalkc_fast.exceptions import ProtocolError, SocketError
from beanstalkc_fast.testing import BeanstalkdServer


async def tube_conn(host, port, tube, **kw):
    conn = await aio.connect(host, port, **kw)
    await conn.use(tube)
    await conn.watch(tube)
    await conn.ignore("default")
    return conn


async def settle(conn):
    """Until every command of ``conn`` has its reply and every give-back of a job is done."""
    while True:
        if conn._pump is not None:
            await asyncio.wait([conn._pump])
        if conn._tasks:
            await asyncio.wait(list(conn._tasks))
        for ch in [conn._main] + conn._consumers:   # a round trip each: what was queued before is answered
            await ch.send(b"list-tube-used\r\n", "list-tube-used")
        if conn._pump is None and not conn._tasks:
            return


async def until(condition):
    while not condition():
        await asyncio.sleep(0)


def test_put_cancelled_after_it_was_written_reports_its_job(arun, beanstalkd, tube, caplog):
    async def main():
        orphans = []
        conn = await tube_conn(beanstalkd.host, beanstalkd.port, tube, on_orphan=lambda *a: orphans.append(a))
        task = asyncio.ensure_future(conn.put("orphan"))
        await until(lambda: conn._main._fifo)       # written: nothing else was in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await settle(conn)
        assert len(orphans) == 1 and orphans[0][0] == "put"
        assert (await conn.peek(orphans[0][1])).body == "orphan"
        # a put cancelled before it was sent creates nothing
        task = asyncio.ensure_future(conn.put("never"))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await settle(conn)
        assert len(orphans) == 1 and (await conn.stats_tube(tube))["total-jobs"] == 1
        await conn.close()

        default = await tube_conn(beanstalkd.host, beanstalkd.port, tube)     # default: a warning
        with caplog.at_level(logging.WARNING, logger="beanstalkc_fast"):
            task = asyncio.ensure_future(asyncio.wait_for(default.put("timed out"), 0))
            with pytest.raises(asyncio.TimeoutError):
                await task
            task = asyncio.ensure_future(default.put("cancelled"))
            await until(lambda: default._main._fifo)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await settle(default)
        assert [r.name for r in caplog.records] == ["beanstalkc_fast"]
        assert "put" in caplog.records[0].getMessage()
        await default.close()
    arun(main())


def test_reserve_cancelled_before_its_job_came_gives_it_back(arun, beanstalkd, tube):
    async def main():
        conn = await tube_conn(beanstalkd.host, beanstalkd.port, tube)
        other = await tube_conn(beanstalkd.host, beanstalkd.port, tube)
        # two waiting: the job of the cancelled one goes to the next
        first = asyncio.ensure_future(conn.reserve())
        second = asyncio.ensure_future(conn.reserve(timeout=30))
        await until(lambda: any(ch.blocked for ch in conn._consumers) and len(conn._waiters) == 2)
        first.cancel()
        jid = await other.put("for the second", ttr=120)
        job = await second
        assert job.jid == jid
        await job.delete()
        # nobody waiting any more: the job is released at once, with its own priority (not at its TTR)
        third = asyncio.ensure_future(conn.reserve(timeout=30))
        await until(lambda: any(ch.blocked for ch in conn._consumers))
        third.cancel()
        jid = await other.put("given back", priority=77, ttr=120)
        again = await other.reserve(timeout=10)     # well under the TTR
        assert again is not None and again.jid == jid
        assert (await other.stats_job(jid))["pri"] == 77 and (await other.stats_job(jid))["releases"] == 1
        await again.delete()
        await settle(conn)
        assert not conn._held
        await conn.close()
        await other.close()
    arun(main())


def test_cancellation_fuzz_reconciles_exactly(arun, beanstalkd, tube):
    """10,000 random cancellations and timeouts over put / reserve / delete; then the server's
    counts match what the callers were told plus what on_orphan reported, exactly."""
    rng = random.Random(20260)
    target = 10000

    async def main():
        orphans = []
        conn = await tube_conn(beanstalkd.host, beanstalkd.port, tube, on_orphan=lambda *a: orphans.append(a))
        confirmed = {}          # job id -> body, of puts whose caller got the id
        bodies_seen = {}        # job id -> body of every job a reserve returned
        held = set()            # reserved by our callers, not (known to be) deleted
        deleted, unknown = set(), set()     # deletes confirmed; deletes whose caller went away
        errors = []
        counts = {"cancelled": 0, "done": 0}
        serial = iter(range(10 ** 9))

        async def op(kind, arg):
            if kind == "put":
                return await conn.put("p%d" % arg, ttr=600)
            if kind == "reserve":
                return await conn.reserve(timeout=arg)
            return await conn.delete(arg)

        async def call(kind, arg, how):
            coro = op(kind, arg)
            if how is not None:
                coro = asyncio.wait_for(coro, how)
            try:
                value = await coro
            except (asyncio.CancelledError, asyncio.TimeoutError):
                counts["cancelled"] += 1
                if kind == "delete":
                    unknown.add(arg)
                return
            except Exception as err:    # any other error is a failure of the client
                errors.append(repr(err))
                return
            counts["done"] += 1
            if kind == "put":
                confirmed[value] = "p%d" % arg
            elif kind == "reserve" and value is not None:
                bodies_seen[value.jid] = value.body
                held.add(value.jid)
            elif kind == "delete":
                deleted.add(arg)

        while counts["cancelled"] < target:
            tasks, ops, cancel_at = [], [], {}
            for _ in range(200):
                r = rng.random()
                if r < 0.5:
                    kind, arg = "put", next(serial)
                elif r < 0.8 or not held:
                    kind, arg = "reserve", rng.choice((0, 0, 0, 1))
                else:
                    kind, arg = "delete", held.pop()
                how = rng.choice((None, 0, 0.0001, 0.001))
                if kind == "reserve" and arg and how is None:
                    how = 0.001     # a reserve that may wait is always cut short
                task = asyncio.ensure_future(call(kind, arg, how))
                tasks.append(task)
                ops.append((kind, arg))
                if how is None and rng.random() < 0.5:
                    cancel_at.setdefault(rng.randrange(4), []).append(task)
            for step in range(4):
                for task in cancel_at.get(step, ()):
                    task.cancel()
                await asyncio.sleep(0)
            done = await asyncio.gather(*tasks, return_exceptions=True)
            for (kind, arg), result in zip(ops, done):
                if isinstance(result, asyncio.CancelledError):      # cancelled before it began: nothing sent
                    counts["cancelled"] += 1
                    if kind == "delete":
                        held.add(arg)
        await settle(conn)
        assert errors == []

        # every job ever created was told to a caller or reported, once
        orphan_ids = [jid for cmd, jid in orphans]
        assert {cmd for cmd, _ in orphans} <= {"put"}
        created = set(confirmed) | set(orphan_ids)
        assert len(created) == len(confirmed) + len(orphan_ids)
        stats = await conn.stats_tube(tube)
        assert stats["total-jobs"] == len(created)
        # no desync: each reserved job's body is the one its put sent
        for jid, body in bodies_seen.items():
            assert jid in created
            if jid in confirmed:
                assert body == confirmed[jid]
        # the deletes whose caller went away: either done, or the job is still ours
        gone = set()
        for jid in unknown - deleted:
            if await conn.peek(jid) is None:
                gone.add(jid)
            else:
                assert (await conn.stats_job(jid))["state"] == "reserved"
                held.add(jid)
        assert stats["cmd-delete"] == len(deleted) + len(gone)
        # jobs reserved for callers that went away were given back: only our callers' jobs are reserved
        assert stats["current-jobs-reserved"] == len(held)
        assert stats["current-jobs-ready"] == len(created) - len(deleted) - len(gone) - len(held)
        assert set(conn._held) == held
        # nothing unresolved
        assert all(not ch._fifo for ch in [conn._main] + conn._consumers)
        assert all(fut.done() for fut, _ in conn._waiters)
        jid = await conn.put("after the storm")
        assert (await conn.peek(jid)).body == "after the storm"
        await conn.close()
        counts["orphans"] = len(orphan_ids)
        counts["unknown deletes"] = len(unknown)
        return counts

    counts = arun(main(), timeout=120)
    print(counts)
    # the cancellations hit calls at every stage: before a byte was sent, and after (puts reported)
    assert counts["cancelled"] >= target and counts["done"] > 1000
    assert counts["orphans"] > 100 and counts["unknown deletes"] > 100


def test_server_killed_with_waiters_pending(arun, beanstalkd_binary):
    server = BeanstalkdServer(binary=beanstalkd_binary).start()
    try:
        async def main():
            conn = await aio.connect(server.host, server.port)
            jid = await conn.put("held")
            job = await conn.reserve(0)
            assert job.jid == jid
            waiters = [asyncio.ensure_future(conn.reserve()) for _ in range(3)]
            await until(lambda: any(ch.blocked for ch in conn._consumers) and len(conn._waiters) == 3)
            await conn.use("elsewhere")     # puts that the waiters do not watch
            puts = [asyncio.ensure_future(conn.put("x")) for _ in range(50)]
            await asyncio.sleep(0)
            server.stop(kill=True)
            results = await asyncio.gather(*waiters, *puts, return_exceptions=True)
            assert all(isinstance(r, (SocketError, int)) for r in results), results
            assert all(isinstance(r, SocketError) for r in results[:3])
            assert not conn.connected
            with pytest.raises(SocketError):
                await job.delete()      # a Job of a lost connection raises on use
            with pytest.raises(SocketError):
                await conn.put("y")
            with pytest.raises(SocketError):
                await conn.reserve(0)
            await conn.close()
            await conn.close()
        arun(main())
    finally:
        server.stop()


async def fake_server(replies):
    """A scripted server: after each command line it reads, it sends the next of ``replies``."""
    script = list(replies)

    async def serve(reader, writer):
        try:
            while script:
                line = await reader.readline()
                if not line:
                    break
                reply = script.pop(0)
                if reply is not None:
                    writer.write(reply)
        finally:
            await reader.read()
            writer.close()
    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_a_bad_reply_fails_every_pending_caller_and_closes(arun):
    async def main():
        server = await fake_server([b"INSERTED 1\r\n", b"OK notasize\r\n"])
        port = server.sockets[0].getsockname()[1]
        conn = await aio.connect("127.0.0.1", port)
        puts = [asyncio.ensure_future(conn.put("x")) for _ in range(5)]
        results = await asyncio.gather(*puts, return_exceptions=True)
        assert results[0] == 1 and all(isinstance(r, ProtocolError) for r in results[1:])
        assert not conn.connected
        await conn.close()
        server.close()
    arun(main())


def test_a_reply_nobody_asked_for_is_a_protocol_error(arun):
    async def main():
        server = await fake_server([b"USING default\r\nINSERTED 7\r\n"])
        port = server.sockets[0].getsockname()[1]
        conn = await aio.connect("127.0.0.1", port)
        assert await conn.using() == "default"     # its reply came whole; what followed is nobody's
        await until(lambda: not conn.connected)
        with pytest.raises(ProtocolError):
            await conn.put("x")
        await conn.close()
        server.close()
    arun(main())


def test_socket_timeout_breaks_a_silent_connection_but_not_a_reserve_wait(arun, beanstalkd, tube):
    async def main():
        server = await fake_server([None])      # reads the command, never answers
        port = server.sockets[0].getsockname()[1]
        conn = await aio.connect("127.0.0.1", port, socket_timeout=0.2)
        with pytest.raises(SocketError) as info:
            await conn.put("x")
        assert isinstance(info.value.__cause__, TimeoutError) and not conn.connected
        await conn.close()
        server.close()
        # a reserve may wait its own timeout on top of socket_timeout
        real = await tube_conn(beanstalkd.host, beanstalkd.port, tube, socket_timeout=0.2)
        assert await real.reserve(timeout=1) is None
        assert await real.put("still fine") > 0
        await real.close()
    arun(main())


def test_cancelled_batches_report_their_jobs_and_give_back_their_reservations(arun, beanstalkd, tube):
    async def main():
        orphans = []
        conn = await tube_conn(beanstalkd.host, beanstalkd.port, tube, on_orphan=lambda *a: orphans.append(a))
        task = asyncio.ensure_future(conn.put_many(["job %d" % i for i in range(100)]))
        await until(lambda: conn._main._fifo)      # its window is written
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await settle(conn)
        assert sorted(cmd for cmd, _ in orphans) == ["put"] * 100
        assert (await conn.stats_tube(tube))["total-jobs"] == 100
        task = asyncio.ensure_future(conn.reserve_many(100))
        await until(lambda: any(ch._fifo for ch in conn._consumers))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await settle(conn)
        stats = await conn.stats_tube(tube)
        assert stats["current-jobs-reserved"] == 0 and stats["current-jobs-ready"] == 100
        assert not conn._held
        jobs = await conn.reserve_many(100)     # all there again, whatever the order they came back in
        assert sorted(j.jid for j in jobs) == sorted(jid for _, jid in orphans)
        await conn.delete_many(jobs)
        await conn.close()
    arun(main())
