"""aio.Pool: three real beanstalkd servers, each with its binlog; both cores, stock loop and uvloop.

Servers are started here (``beanstalkd_binary``) and stopped by their own handle (its PID).
"""
import asyncio
import collections
import logging
import os
import signal
import socket
import threading

import pytest

import beanstalkc_fast
from beanstalkc_fast import BatchError, CommandFailed, InvalidType, JobRef, PutAmbiguous, SocketError, aio
from beanstalkc_fast.testing import BeanstalkdServer


def addr(server):
    return "%s:%d" % (server.host, server.port)


def addrs(servers):
    return [addr(s) for s in servers]


class Clock:
    """A monotonic clock the test moves by hand (for retry_after)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


async def until(predicate, timeout=10.0):
    """Wait (on the loop) until ``predicate()`` is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def take_one(server, body, priority):
    """Put a job on ``server`` through a plain connection and reserve it there: whether it came
    within 5 s with its own priority (a pool's reserve that no longer wants it gives it back)."""
    with server.connect() as c:
        jid = c.put(body, priority=priority)
        got = c.reserve(timeout=5)
        if got is None:
            return False
        ok = got.jid == jid and got.stats()["pri"] == priority
        got.delete()
        return ok


async def off_loop(fn, *args):
    """A blocking call in a thread: the loop keeps running the pool meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def waiters(server):
    """How many clients wait in a reserve on ``server`` (a blocking call: ``off_loop``)."""
    with server.connect() as c:
        return c.stats()["current-waiting"]


def drain(server):
    """{jid: body} of every job of the default tube on ``server``, reserved (pipelined windows)
    and deleted through a raw socket. A job whose body a binlog torn by kill -9 left without its
    final CRLF counts under the key None."""
    jobs = {}
    with socket.create_connection((server.host, server.port)) as sock:
        f = sock.makefile("rb")
        while True:
            sock.sendall(b"reserve-with-timeout 0\r\n" * 512)
            got = []
            for _ in range(512):
                words = f.readline().split()
                if words[0] == b"TIMED_OUT":
                    continue
                assert words[0] == b"RESERVED", words
                body = f.read(int(words[2]) + 2)
                jobs[int(words[1]) if body.endswith(b"\r\n") else None] = body[:-2]
                got.append(words[1])
            sock.sendall(b"".join(b"delete %s\r\n" % jid for jid in got))
            for _ in got:
                assert f.readline() == b"DELETED\r\n"
            if len(got) < 512:
                return jobs


# -- routing --

def test_put_round_robin_key_pinning_and_concurrent_puts(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            assert "aio.Pool 3 servers, 3 up" in repr(pool)
            refs = [await pool.put("job %d" % i) for i in range(30)]
            assert collections.Counter(r.server for r in refs) == {addr(s): 10 for s in servers}
            assert [r.server for r in refs[:3]] * 10 == [r.server for r in refs]
            for i, ref in enumerate(refs[:6]):
                job = await pool.peek(ref)
                assert job.body == "job %d" % i and job.server == ref.server
                assert (await pool.peek(str(ref))).jid == ref.jid
            keyed = [await pool.put("k", key="customer-42") for _ in range(5)]
            assert len({r.server for r in keyed}) == 1
            assert len({(await pool.put("k", key="customer-%d" % i)).server for i in range(30)}) == 3
            # many coroutines at once: pipelined, each its own JobRef, still round-robin
            many = await asyncio.gather(*[pool.put(b"c%d" % i) for i in range(300)])
            assert len(set(many)) == 300
            assert collections.Counter(r.server for r in many) == {addr(s): 100 for s in servers}
            # the key's server stops: its jobs go to the next server of the key's own order
            pinned = next(s for s in servers if addr(s) == keyed[0].server)
            pinned.stop(kill=True)
            moved = [(await pool.put("k", key="customer-42")).server for _ in range(3)]
            assert len(set(moved)) == 1 and moved[0] != keyed[0].server
            with pytest.raises(InvalidType, match="ambiguous"):
                await pool.delete(refs[0].jid)
            with pytest.raises(InvalidType, match="item 1"):
                await pool.delete_many([refs[1], refs[1].jid])
        assert "closed" in repr(pool)
        await pool.close()      # twice: never raises
        with pytest.raises(SocketError):
            await pool.put("x")
    arun(main())


def test_put_many_spreads_windows_and_keeps_order(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            bodies = ["body %d" % i for i in range(5000)]
            refs = await pool.put_many(bodies)
            assert len(refs) == 5000 and all(isinstance(r, JobRef) for r in refs)
            counts = collections.Counter(r.server for r in refs)
            assert set(counts) == set(addrs(servers)) and max(counts.values()) - min(counts.values()) <= 1024
            on_server = {addr(s): drain(s) for s in servers}
            assert [on_server[r.server][r.jid] for r in refs] == [b.encode() for b in bodies]
            assert len({r.server for r in await pool.put_many([b"a"] * 6)}) == 3     # shared out

            def items():
                for _ in range(3000):
                    yield b"ok"
                yield 42
            with pytest.raises(InvalidType) as info:
                await pool.put_many(items())
            results = info.value.results    # the windows before the bad item's
            assert len(results) == 2048 and all(isinstance(r, JobRef) for r in results)
            assert (await pool.stats())["current-jobs-ready"] == 6 + 2048
            with pytest.raises(InvalidType):    # a list is checked whole: nothing sent
                await pool.put_many([b"ok", b"ok", 42])
            assert (await pool.stats())["current-jobs-ready"] == 6 + 2048
    arun(main())


def test_draining_server_is_skipped(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            drained = servers[1]
            os.kill(drained.process.pid, signal.SIGUSR1)      # beanstalkd enters drain mode
            with beanstalkc_fast.Connection(drained.host, drained.port) as c:
                assert c.stats()["draining"] is True
            refs = [await pool.put("x") for _ in range(6)] + await pool.put_many([b"y"] * 3000)
            assert addr(drained) not in {r.server for r in refs} and len({r.server for r in refs}) == 2
            assert (await pool.stats_by_server())[addr(drained)]["current-jobs-ready"] == 0
            assert (await pool.stats())["current-jobs-ready"] == 3006
            for s in servers:
                os.kill(s.process.pid, signal.SIGUSR1)
            with pytest.raises(CommandFailed, match="DRAINING"):
                await pool.put("x")
            with pytest.raises(BatchError) as info:
                await pool.put_many([b"z"] * 10)
            assert all(isinstance(r, CommandFailed) and r.args[1] == "DRAINING" for r in info.value.results)
    arun(main())


def test_kill9_during_put_many_then_restart(arun, servers):
    """kill -9 of one server in the middle of a put_many of 100,000 jobs: every JobRef handed
    out exists on its server after a restart from the binlog, and no job is there twice."""
    async def main():
        async with aio.Pool(addrs(servers), retry_after=0.0) as pool:
            pool._policy._put_next = 0      # the victim gets windows before it dies
            victim = servers[1]
            total = 100000

            def items():
                for i in range(total):
                    if i == 40000:
                        victim.stop(kill=True)      # SIGKILL, with windows in flight
                    yield b"job-%06d" % i

            with pytest.raises(BatchError) as info:
                await pool.put_many(items())
            results = info.value.results
            assert len(results) == total
            acked = {i: r for i, r in enumerate(results) if isinstance(r, JobRef)}
            ambiguous = {i for i, r in enumerate(results) if isinstance(r, PutAmbiguous)}
            assert len(acked) + len(ambiguous) == total
            assert ambiguous and all(results[i].server == addr(victim) for i in ambiguous)
            assert any(r.server == addr(victim) for r in acked.values())
            victim.start()      # the same port, the same binlog
            on_server = {addr(s): drain(s) for s in servers}
            for i, ref in acked.items():
                assert on_server[ref.server][ref.jid] == b"job-%06d" % i      # 0 acknowledged jobs lost
            bodies = collections.Counter(b for jobs in on_server.values() for jid, b in jobs.items() if jid)
            assert max(bodies.values()) == 1                                    # 0 duplicates
            assert len(bodies) - len(acked) <= len(ambiguous)
            # the restarted server is taken back
            assert addr(victim) in {(await pool.put("after")).server for _ in range(6)}
            assert pool.servers_status()[addr(victim)]["up"]
    arun(main(), timeout=120)


def test_kill9_during_put_many_at_least_once(arun, servers):
    """With at_least_once=True the puts in flight to the killed server go elsewhere: every item
    gets a JobRef that exists; a job may exist twice (at most the ones that were in flight)."""
    async def main():
        async with aio.Pool(addrs(servers), retry_after=0.0, at_least_once=True) as pool:
            pool._policy._put_next = 0
            victim = servers[0]
            total = 30000

            def items():
                for i in range(total):
                    if i == 12000:
                        victim.stop(kill=True)
                    yield b"job-%06d" % i

            refs = await pool.put_many(items())
            assert len(refs) == total and all(isinstance(r, JobRef) for r in refs)
            victim.start()
            on_server = {addr(s): drain(s) for s in servers}
            for i, ref in enumerate(refs):
                assert on_server[ref.server][ref.jid] == b"job-%06d" % i
            bodies = collections.Counter(b for jobs in on_server.values() for jid, b in jobs.items() if jid)
            assert len(bodies) == total and max(bodies.values()) <= 2
    arun(main(), timeout=120)


def test_cancelled_put_many_reports_every_job(arun, servers):
    """A put_many cancelled midway: every job it put is reported to on_orphan (as a JobRef),
    those answered before the cancellation and those answered after."""
    def ready():
        total = 0
        for s in servers:
            with s.connect() as c:
                total += c.stats()["current-jobs-ready"]
        return total

    async def main():
        orphans = []
        async with aio.Pool(addrs(servers), on_orphan=lambda cmd, ref: orphans.append(ref)) as pool:
            task = asyncio.ensure_future(pool.put_many([b"o"] * 200000))
            await until(lambda: ready() > 0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            conns = [s.conns.producer for s in pool._policy.servers]
            await until(lambda: not any(c._main._fifo for c in conns))     # every reply read
            assert len(orphans) == ready()
            assert 0 < len(orphans) < 200000 and len(set(orphans)) == len(orphans)
            assert all(isinstance(r, JobRef) for r in orphans)
            ref = await pool.put("after")       # the pool goes on: no stream was desynced
            assert (await pool.peek(ref)).body == "after"
    arun(main())


# -- reserves --

def test_reserve_fairness_and_batches(arun, servers, tube):
    async def main():
        for s in servers:
            with s.connect() as c:
                c.use(tube)
                c.put_many([b"from %d" % s.port] * 10)
        async with aio.Pool(addrs(servers)) as pool:
            assert await pool.watch(tube) == 2 and await pool.ignore("default") == 1
            assert await pool.watching() == [tube]
            assert await pool.use(tube) == tube and await pool.using() == tube
            jobs = [await pool.reserve(timeout=0) for _ in range(12)]
            order = [j.server for j in jobs]
            for i in range(0, 12, 3):
                assert sorted(order[i:i + 3]) == sorted(addrs(servers))     # every server in turn
            for job in jobs:
                assert job.body == "from %s" % job.server.rsplit(":", 1)[1] and isinstance(job, aio.Job)
            for job in jobs[:3]:
                await job.delete()
            await pool.bury(jobs[3])
            await pool.release(jobs[4], priority=5)
            await pool.touch(jobs[5])
            await pool.delete_many(jobs[5:])
            assert (await pool.stats_tube(tube))["current-jobs-buried"] == 1
            assert await pool.kick(5) == 1
            rest = await pool.reserve_many(100)
            assert len(rest) == 20 and {j.server for j in rest} == set(addrs(servers))
            await pool.touch_many(rest)
            await pool.release_many(rest[:5])
            await pool.delete_many(rest[5:])
            again = await pool.reserve_many(10, timeout=1)
            assert len(again) == 5
            await pool.delete_many([str(JobRef(j.server, j.jid)) for j in again])
            assert await pool.reserve_many(10) == [] and await pool.reserve(timeout=0) is None
            assert (await pool.stats_tube(tube))["current-jobs-ready"] == 0
            assert set(await pool.tubes()) >= {"default", tube}
    arun(main())


def test_reserve_waits_on_every_server_and_gives_back_the_others(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            late = servers[2]
            with late.connect() as c:
                c.put("late", priority=5, delay=1)
            job = await pool.reserve(timeout=10)       # nothing ready: waits on all three
            assert job.body == "late" and job.server == addr(late)
            stats = await pool.stats_job(job)
            assert stats["pri"] == 5 and stats["state"] == "reserved"
            # the waits on the two other servers are called off: a job put there now is given back
            # at once with its own priority, free for anyone
            assert await off_loop(take_one, servers[0], "free", 7)
            await job.delete()
            assert await pool.reserve(timeout=1) is None
    arun(main())


def test_reserve_waits_for_a_server_while_all_are_down(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers), retry_after=0) as pool:    # probed at each wake-up (0.25 s)
            for s in servers:
                s.stop(kill=True)
            waiting = asyncio.ensure_future(pool.reserve())      # forever
            back = servers[1]
            await until(lambda: pool.servers_status()[addr(back)]["failures"] >= 4, 20)
            assert not waiting.done()
            await off_loop(back.start)
            with back.connect() as c:
                c.put("back")
            job = await asyncio.wait_for(waiting, 20)
            assert job.body == "back" and job.server == addr(back)
            await job.delete()
            waiting = asyncio.ensure_future(pool.reserve_many(5, timeout=60))
            while await off_loop(waiters, back) != 1:
                await asyncio.sleep(0.01)
            other = servers[2]
            await off_loop(other.start)
            with other.connect() as c:
                c.put("other")
            jobs = await asyncio.wait_for(waiting, 20)
            assert [(j.body, j.server) for j in jobs] == [("other", addr(other))]
            await pool.delete_many(jobs)
    arun(main())


def test_reserve_timeout_with_every_server_down_returns_none(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            for s in servers:
                s.stop(kill=True)
            assert await pool.reserve(timeout=0) is None         # nothing ready anywhere: at once
            assert await pool.reserve(timeout=1) is None         # waited for a server, up to the timeout
            assert await pool.reserve_many(4, timeout=1) == [] and await pool.reserve_many(4) == []
    arun(main())


def test_stats_by_server_lists_a_down_server(arun, servers):
    for s in servers:
        with s.connect() as c:
            c.put("j")
    down = servers[1]
    up = [addr(s) for s in servers if s is not down]

    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            down.stop(kill=True)
            for _ in range(3):      # lost, then refused (ejected), then skipped: listed each time
                by = await pool.stats_by_server()
                assert list(by) == addrs(servers)
                err = by[addr(down)]
                assert isinstance(err, SocketError) and err.server == addr(down)
                assert all(isinstance(by[name], dict) and by[name]["current-jobs-ready"] == 1 for name in up)
                stats = await pool.stats()
                assert stats["current-jobs-ready"] == 2 and stats["pid"] == [by[name]["pid"] for name in up]
            assert not pool.servers_status()[addr(down)]["up"]
        async with aio.Pool(addrs(servers), parse_yaml=False) as raw:
            assert set(await raw.stats()) == set(up)
            assert isinstance((await raw.stats_by_server())[addr(down)], SocketError)
    arun(main())


def test_put_many_key_pins_the_batch_and_fails_over(arun, servers):
    by_name = {addr(s): s for s in servers}

    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            pinned = (await pool.put("first", key="order-9")).server
            refs = await pool.put_many([b"m%d" % i for i in range(3000)], key="order-9")
            assert {r.server for r in refs} == {pinned}
            assert [(await pool.peek(r)).body for r in refs[::1000]] == ["m0", "m1000", "m2000"]
            # the key's server drains: the batch goes to the next server of the key's own order
            # (a small batch: beanstalkd 1.12 draining stops answering anyone after a window of 1024 puts)
            os.kill(by_name[pinned].process.pid, signal.SIGUSR1)
            refs = await pool.put_many([b"d%d" % i for i in range(50)], key="order-9")
            second = {r.server for r in refs}
            assert len(second) == 1 and pinned not in second
            assert (await pool.put("after", key="order-9")).server in second
            by_name[second.pop()].stop(kill=True)       # that one is killed: the third takes the batch
            refs = await pool.put_many([b"k%d" % i for i in range(10)], key="order-9")
            third = {r.server for r in refs}
            assert len(third) == 1 and third == {(await pool.put("after", key="order-9")).server}
            assert pinned not in third
            assert await pool.put_many([], key="order-9") == []
            with pytest.raises(InvalidType):
                await pool.put_many([b"x"], key=1.5)
    arun(main())


def test_reserve_many_writes_every_window_before_reading_a_reply(arun, servers):
    # Each server holds fewer jobs than asked for: one call takes them all, and the window of
    # reserves of every server is written before any server's replies are read (as Pool does).
    async def main():
        for i, s in enumerate(servers[:2]):
            with s.connect() as c:
                c.put_many([b"%d" % i] * 3)
        async with aio.Pool(addrs(servers[:2])) as pool:
            events = []
            for server in pool._policy.servers:
                conn = await pool._conn(server, "consumer")

                async def window(k, *extra, conn=conn, name=server.name, write=conn._reserve_window):
                    events.append(("write", name, k))
                    return await write(k, *extra)

                def reserved(ch, w, conn=conn, name=server.name, read=conn._reserved):
                    events.append(("read", name))
                    return read(ch, w)
                conn._reserve_window, conn._reserved = window, reserved
            jobs = await pool.reserve_many(10)
            assert sorted(j.body for j in jobs) == ["0"] * 3 + ["1"] * 3
            assert {j.server: j.body for j in jobs} == {addr(servers[0]): "0", addr(servers[1]): "1"}
            assert [e[0] for e in events] == ["write", "write", "read", "read"]
            assert sorted(e[1:] for e in events[:2]) == sorted((addr(s), 5) for s in servers[:2])
            await pool.delete_many(jobs)
            assert all(not j.reserved for j in jobs)
            for s in servers[:2]:
                with s.connect() as c:
                    assert c.stats()["current-jobs-ready"] == 0 and c.stats()["current-jobs-reserved"] == 0
    arun(main())


def test_cancelled_reserve_many_gives_back_the_windows_in_flight(arun, servers):
    # Cancelled once its windows are written, before their replies come (a proxy holds them):
    # every job those windows reserve goes back at once with its own priority.
    from beanstalkc_fast.testing import LatencyProxy

    async def main():
        for i, s in enumerate(servers[:2]):
            with s.connect() as c:
                c.put_many([(b"%d" % i, 7 + i)] * 2)
        with LatencyProxy(servers[0].host, servers[0].port, 0.6) as p0, \
                LatencyProxy(servers[1].host, servers[1].port, 0.6) as p1:
            async with aio.Pool(["127.0.0.1:%d" % p0.port, "127.0.0.1:%d" % p1.port]) as pool:
                written = []
                for server in pool._policy.servers:
                    conn = await pool._conn(server, "consumer")

                    async def window(k, *extra, write=conn._reserve_window):
                        got = await write(k, *extra)
                        written.append(k)
                        return got
                    conn._reserve_window = window
                task = asyncio.ensure_future(pool.reserve_many(10))
                await until(lambda: len(written) == 2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

                # the reserves reach the servers (the proxy holds them too), then the jobs come back
                await until(lambda: sum(jobs_in(s, "reserved") for s in servers[:2]) == 4)
                await until(lambda: sum(jobs_in(s, "ready") for s in servers[:2]) == 4)
        for i, s in enumerate(servers[:2]):
            with s.connect() as c:
                for _ in range(2):
                    job = c.reserve(timeout=0)
                    assert job.body == str(i) and job.stats()["pri"] == 7 + i
                    job.delete()
    arun(main())


def jobs_in(server, state):
    with server.connect() as c:
        return c.stats()["current-jobs-" + state]


def test_two_jobs_at_once_the_second_goes_back(arun, servers):
    # Jobs ready on two servers at the same moment, while a reserve waits on every server: one is
    # the caller's, the other is given back at once with its own priority (never left reserved).
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            ids = {}
            for s, pri in ((servers[0], 11), (servers[1], 12)):
                with s.connect() as c:
                    ids[addr(s)] = c.put("at once", priority=pri, delay=1)
            job = await pool.reserve(timeout=10)
            other = [s for s in servers[:2] if addr(s) != job.server][0]

            def state():
                with other.connect() as c:
                    return c.stats_job(ids[addr(other)])
            await until(lambda: state()["state"] == "ready")
            assert state()["pri"] == (11 if other is servers[0] else 12)
            await job.delete()
            # the driver's give-back itself (what a cancelled reserve_many does with its jobs)
            taken = await pool.reserve_many(5)
            assert len(taken) == 1 and taken[0].server == addr(other)
            pool._give_back(taken[0])
            await until(lambda: state()["state"] == "ready")
            assert state()["pri"] == (11 if other is servers[0] else 12)
    arun(main())


def test_cancelled_reserve_gives_the_job_back(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            def waiting():
                total = 0
                for s in servers:
                    with s.connect() as c:
                        total += c.stats()["current-waiting"]
                return total
            task = asyncio.ensure_future(pool.reserve())
            await until(lambda: waiting() == 3)     # a reserve waits on every server
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await off_loop(take_one, servers[1], "for nobody", 9)     # given back at once
            # a reserve_many cancelled while waiting: the same
            task = asyncio.ensure_future(pool.reserve_many(5, timeout=30))
            await until(lambda: waiting() >= 3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await off_loop(take_one, servers[0], "again", 3)
            # a put cancelled after it was written: its JobRef goes to on_orphan
            orphans = []
            pool2 = aio.Pool(addrs(servers[:1]), on_orphan=lambda cmd, ref: orphans.append((cmd, ref)))
            await pool2.connect()
            task = asyncio.ensure_future(pool2.put("orphan"))
            await asyncio.sleep(0)      # the put is written; its reply takes a round trip
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: orphans)
            assert orphans[0][0] == "put" and orphans[0][1].server == addr(servers[0])
            assert (await pool2.peek(orphans[0][1])).body == "orphan"
            await pool2.close()
    arun(main())


# -- failures --

def test_servers_down_at_start_ejection_and_return(arun, servers, caplog, beanstalkd_binary):
    async def main():
        down = BeanstalkdServer(binary=beanstalkd_binary)       # a free port, not started yet
        clock = Clock()
        pool = aio.Pool(addrs(servers) + [addr(down)], failure_limit=2, retry_after=5.0)
        pool._policy.clock = clock
        await pool.connect()
        assert pool.servers_status()[addr(down)]["failures"] == 1
        with caplog.at_level(logging.INFO, logger="beanstalkc_fast"):
            refs = [await pool.put("x") for _ in range(8)]
            assert addr(down) not in {r.server for r in refs}
            status = pool.servers_status()[addr(down)]
            assert not status["up"] and status["retry_in"] == 5.0 and "ejected" in caplog.text
            assert "3 up" in repr(pool)
            down.start()
            try:
                refs = [await pool.put("x") for _ in range(6)]
                assert addr(down) not in {r.server for r in refs}      # not probed before retry_after
                clock.now += 5.0
                refs = [await pool.put("x") for _ in range(8)]
                assert addr(down) in {r.server for r in refs}
                assert pool.servers_status()[addr(down)]["up"] and "is back" in caplog.text
            finally:
                down.stop()
        for _ in range(8):
            await pool.put("x")
        assert pool.servers_status()[addr(down)]["retry_in"] == 5.0
        for expected in (10.0, 20.0, 40.0, 60.0, 60.0):
            clock.now += 60
            for _ in range(4):
                await pool.put("x")
            assert pool.servers_status()[addr(down)]["retry_in"] == expected
        await pool.close()
    arun(main())


def test_jobs_from_a_dead_server_raise(arun, servers):
    async def main():
        async with aio.Pool(addrs(servers)) as pool:
            for s in servers:
                with s.connect() as c:
                    c.put("j")
            jobs = [await pool.reserve(timeout=0) for _ in range(3)]
            dead = next(s for s in servers if addr(s) == jobs[0].server)
            dead.stop(kill=True)
            await until(lambda: not jobs[0].conn.connected)
            with pytest.raises(SocketError):
                await jobs[0].delete()
            with pytest.raises(SocketError):
                await pool.delete(jobs[0])
            with pytest.raises(SocketError):
                await pool.delete(JobRef(jobs[0].server, jobs[0].jid))
            with pytest.raises(BatchError) as info:
                await pool.delete_many(jobs)
            assert isinstance(info.value.results[0], SocketError) and info.value.results[1:] == [None, None]
            assert {(await pool.put("after")).server for _ in range(4)} == {addr(s) for s in servers if s is not dead}
            job = await pool.reserve(timeout=1)     # waits on the servers that are up
            assert job.body == "after"
            await job.delete()
            dead.start()
            with pytest.raises(SocketError):    # the restarted server has the job, not for the dead connection
                await jobs[0].delete()
    arun(main())


def test_all_down(arun):
    async def main():
        async with aio.Pool(["127.0.0.1:1"]) as pool:
            with pytest.raises(SocketError):
                await pool.put("x")
            with pytest.raises(SocketError):
                await pool.put_many([b"x"])
            assert await pool.reserve(timeout=0.5) is None     # waits for a server, up to the timeout
            assert await pool.reserve(timeout=0) is None and await pool.reserve_many(3, timeout=0) == []
            with pytest.raises(SocketError) as info:
                await pool.stats()
            assert info.value.server == "127.0.0.1:1"
            assert list(await pool.stats_by_server()) == ["127.0.0.1:1"]
            with pytest.raises(InvalidType):    # arguments are checked before any server is tried
                await pool.put(3)
            assert await pool.put_many([]) == []
    arun(main())


def test_put_whose_reply_is_lost(arun, servers):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def swallow():      # reads a put and hangs up without a reply: a server dying at the wrong moment
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"put " not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
    threading.Thread(target=swallow, daemon=True).start()
    fake = {"fake": "127.0.0.1:%d" % listener.getsockname()[1]}
    real = addr(servers[0])

    async def main():
        async with aio.Pool([fake, real]) as pool:
            pool._policy._put_next = 0
            with pytest.raises(PutAmbiguous) as info:
                await pool.put("maybe")
            assert info.value.server == "fake" and isinstance(info.value, SocketError)
        async with aio.Pool([fake, real], at_least_once=True) as pool:
            pool._policy._put_next = 0
            assert (await pool.put("again")).server == real
            pool._policy._put_next = 0
            refs = await pool.put_many([b"m%d" % i for i in range(10)])
            assert {r.server for r in refs} == {real}
            with servers[0].connect() as c:     # (the fake never answers a stats)
                assert c.stats()["current-jobs-ready"] == 11
    try:
        arun(main(), timeout=20)
    finally:
        listener.close()
