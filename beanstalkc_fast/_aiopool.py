"""aio.Pool: many beanstalkd servers behind one asyncio client (``beanstalkc_fast.aio.Pool``).

The asyncio twin of the blocking ``Pool``: the same policy objects (``_poolpolicy``: routing,
health, the bookkeeping of a put_many, stats merging) driven by ``aio.Connection``s instead of
sockets. Each server has a producer connection (puts, fan-out commands, peeks) and a consumer
connection (reserves and the jobs they hand out), opened when first needed.
"""
import asyncio
import math

from . import _commands, aio
from ._poolpolicy import JobRef, Policy, PutPlan, REFUSALS, kick_shares, merge_stats, split
from .aio import _Batch, _default_orphan, _give_way
from .connection import DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR, _check_options, _load_yaml
from .pool import _has_input
from .exceptions import (BatchError, CommandFailed, DeadlineSoon, InvalidArgument, InvalidType, ProtocolError,
                         PutAmbiguous, SocketError, UnexpectedResponse)

__all__ = ["Pool", "JobRef"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Union
    Body = Union[str, bytes, bytearray, memoryview]
    AnyJob = Union[JobRef, str, aio.Job]

_ROLES = ("producer", "consumer")
_DEPTH = 2              # put_many windows in flight per server: one at work while the other is answered
_MIN_PROBE_WAIT = 0.25  # a waiting reserve probes servers that are down at most this often (retry_after=0)
_BROKEN = (SocketError, ProtocolError)
_JOB_WORDS = {"delete": "delete", "release": "release", "bury": "bury", "touch": "touch"}


class _Drained(ProtocolError):
    """A put of a put_many window was answered DRAINING: that connection's stream is dropped
    (a draining beanstalkd may leave refusals of pipelined puts unanswered); every put queued
    behind it on that connection was refused too (a server never leaves drain mode)."""


class _PutBatch(_Batch):
    """The replies of one put_many window; a DRAINING among them ends the stream."""

    __slots__ = ()

    def feed(self, reader):
        results = self.results
        while self.n > 0:
            self.n -= reader.take(self.kind, self.n, results, None)
            if self.n <= 0:
                break
            reply = reader.gets()
            if reply is None:
                return False
            results.append(reply)
            self.bad += 1
            self.n -= 1
            if reply[0] == b"DRAINING":
                raise _Drained("put", "DRAINING", [])     # the channel fails every caller behind it
        return True


class _Conns:
    __slots__ = ("producer", "consumer", "opening")

    def __init__(self):
        self.producer = self.consumer = None
        self.opening = {}       # role: future of a connection being opened


class _Lane:
    """A server's part in one put_many: its windows sent and not yet answered."""
    __slots__ = ("server", "conn", "inflight", "open")

    def __init__(self, server, conn):
        self.server = server
        self.conn = conn
        self.inflight = []      # (unit, batch)
        self.open = True        # it takes more windows


class Pool:
    """A pool of beanstalkd servers for asyncio (the coroutine twin of ``beanstalkc_fast.Pool``).

    ``aio.Pool(servers, *, parse_yaml=True, encoding='utf-8', connect_timeout=2.0,
    socket_timeout=None, failure_limit=2, retry_after=5.0, at_least_once=False, on_orphan=None)``

    Every method of the blocking ``Pool`` is a coroutine here, with the same names, arguments,
    results (``JobRef``, Jobs with ``.server``) and exceptions (``PutAmbiguous``, ``BatchError``
    ...), on the same policy: round-robin puts (``key=`` pinned by rendezvous hashing), servers
    that are down or refuse skipped, ejection after ``failure_limit`` failures and probes after
    ``retry_after`` seconds (doubling up to 60 s), ``servers_status()`` (a plain method).

    - Connections open at first use, or all at once with ``await pool.connect()`` / ``async with``;
      ``await pool.close()`` never raises and may be called twice.
    - Concurrent coroutines share the pool: their puts pipeline on each server's connection and
      go round-robin from call to call.
    - ``put_many`` writes windows to every server before awaiting any reply.
    - ``reserve`` asks the servers in turn for a ready job, then waits on all of them at once
      on the event loop (no polling). A job reserved for a caller that is gone (cancelled, timed
      out, or served by another server first) is handed to the next coroutine waiting on that
      server or released at once with its own priority.
    - ``on_orphan(cmd, result)`` is called for a put whose caller was cancelled after it was
      written, with the put's ``JobRef`` (default: a warning on the ``beanstalkc_fast`` logger).
    """

    def __init__(self, servers: "Any", *, parse_yaml: "Union[bool, Callable[[str], Any]]" = True,
                 encoding: "Optional[str]" = "utf-8", connect_timeout: "Optional[float]" = 2.0,
                 socket_timeout: "Optional[float]" = None, failure_limit: int = 2, retry_after: float = 5.0,
                 at_least_once: bool = False, on_orphan: "Optional[Callable[[str, Any], Any]]" = None) -> None:
        _check_options(parse_yaml, encoding)
        if on_orphan is not None and not callable(on_orphan):
            raise InvalidType("on_orphan must be a callable or None")
        self._policy = Policy(servers, failure_limit, retry_after, bool(at_least_once))
        self._parse_yaml = parse_yaml
        self._encoding = encoding
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._on_orphan = on_orphan or _default_orphan
        self._core = aio.Connection._core
        self._using = "default"
        self._watching = ["default"]
        self._closed = False
        self._closing: set = set()      # tasks closing connections dropped from the pool
        for server in self._policy.servers:
            server.conns = _Conns()

    async def __aenter__(self) -> "Pool":
        await self.connect()
        return self

    async def __aexit__(self, *exc: "Any") -> None:
        await self.close()

    def __repr__(self) -> str:
        servers = self._policy.servers
        return "<beanstalkc_fast.aio.Pool %d servers, %d up: %s%s>" % (
            len(servers), sum(not s.down for s in servers), ", ".join(s.name for s in servers),
            " closed" if self._closed else "")

    @property
    def servers(self) -> "List[str]":
        """The server names, in the order given."""
        return [s.name for s in self._policy.servers]

    def servers_status(self) -> "Dict[str, Dict[str, Any]]":
        """``{name: {'up', 'address', 'failures', 'retry_in', 'error'}}`` for every server
        (no I/O: a plain method)."""
        return self._policy.status()

    async def connect(self) -> None:
        """Connect to every server now (optional: the pool connects at first use). A server
        that is down only counts a failure."""
        await asyncio.gather(*[self._conn(s, "producer") for s in self._policy.servers])

    async def close(self) -> None:
        """Close every connection. Never raises; may be called twice."""
        self._closed = True
        for server in self._policy.servers:
            for role in _ROLES:
                conn = getattr(server.conns, role)
                setattr(server.conns, role, None)
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:
                        pass

    # -- connections --

    async def _conn(self, server, role):
        """The server's ``role`` connection, connected (a probe if the server is down) with the
        pool's tubes; None when it cannot be had (the failure is counted)."""
        while True:
            if self._closed:
                raise SocketError("the pool is closed")
            conns = server.conns
            conn = getattr(conns, role)
            if conn is not None:
                if conn.connected and not _stale(conn):
                    return conn
                setattr(conns, role, None)      # the server closed it, or it broke: never reused
                self._drop(conn)
            opening = conns.opening.get(role)
            if opening is None:
                break
            await asyncio.shield(opening)       # another coroutine is connecting: share its result
            if getattr(conns, role) is None:
                return None
        if not self._policy.usable(server):
            return None
        opening = conns.opening[role] = asyncio.get_running_loop().create_future()
        address = server.address
        host, port = (address, DEFAULT_PORT) if isinstance(address, str) else address
        name = server.name
        conn = aio.Connection(host, port, parse_yaml=self._parse_yaml, encoding=self._encoding,
                              connect_timeout=self._connect_timeout, socket_timeout=self._socket_timeout,
                              on_orphan=lambda cmd, result: self._orphan(name, cmd, result))
        try:
            await conn.connect()
            if role == "producer":
                if self._using != "default":
                    await conn.use(self._using)
            else:
                for tube in self._watching:
                    if tube != "default":
                        await conn.watch(tube)
                if "default" not in self._watching:
                    await conn.ignore("default")
        except _BROKEN as err:
            await conn.close()
            self._policy.failed(server, err)
            return None
        except BaseException:
            await conn.close()
            raise
        finally:
            del conns.opening[role]
            opening.set_result(None)
        if self._closed:
            await conn.close()
            raise SocketError("the pool is closed")
        setattr(conns, role, conn)
        self._policy.succeeded(server)
        return conn

    def _lost(self, server, role, conn, err):
        """``conn`` (the server's ``role`` connection) failed: drop it and count the failure."""
        if getattr(server.conns, role) is conn:
            setattr(server.conns, role, None)
        self._drop(conn)
        self._policy.failed(server, err)

    def _drop(self, conn):
        if conn is not None and conn.connected:     # broken by the pool's own judgement: close it
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _orphan(self, name, cmd, result):
        if cmd == "put" and result.__class__ is int:
            result = JobRef(name, result)
        self._on_orphan(cmd, result)

    async def _call(self, server, role, method, *args):
        conn = await self._conn(server, role)
        if conn is None:
            raise SocketError("beanstalkd server %s is not available" % server.name)
        try:
            return await getattr(conn, method)(*args)
        except SocketError as err:
            self._lost(server, role, conn, err)
            raise

    async def _each(self, method, *args, servers=None):
        """[(server, result or exception)] of ``method`` on every usable server, all at once."""
        servers = self._policy.everyone() if servers is None else servers
        results = await asyncio.gather(*[self._call(s, "producer", method, *args) for s in servers],
                                       return_exceptions=True)
        return list(zip(servers, results))

    async def _fan_out(self, method, *args):
        """[(server, result)] of every server that answers; SocketError when none does."""
        out = []
        error = None
        for server, result in await self._each(method, *args):
            if isinstance(result, SocketError):
                error = result
            elif isinstance(result, BaseException):
                raise result
            else:
                out.append((server, result))
        if not out:
            raise error or SocketError("no beanstalkd server is available")
        return out

    # -- producer --

    async def put(self, body: "Body", priority: int = DEFAULT_PRIORITY, delay: int = 0, ttr: int = DEFAULT_TTR,
                  key: "Any" = None) -> JobRef:
        """Put a job on the next server (or the server of ``key``); return its JobRef."""
        core = self._core
        body = core.check_body(body, self._encoding)
        for value, what in ((priority, "priority"), (delay, "delay"), (ttr, "ttr")):
            core.check_uint32(value, what)
        policy = self._policy
        refusal: "Any" = None
        error = None
        for server in policy.put_order(key):
            if key is None:
                policy.put_done(server)     # now, so that concurrent puts go round-robin too
            conn = server.conns.producer
            if conn is None or not conn.connected or _stale(conn):
                conn = await self._conn(server, "producer")
                if conn is None:
                    continue
            try:
                jid = await conn.put(body, priority, delay, ttr)
            except _Drained:        # queued behind a put_many window that met DRAINING: refused
                policy.refused(server)
                refusal = CommandFailed("put", "DRAINING", [])
                continue
            except (SocketError, ProtocolError) as err:
                self._lost(server, "producer", conn, err)
                if not policy.at_least_once:
                    raise PutAmbiguous(server.name, err) from err
                error = err
                continue
            except (CommandFailed, UnexpectedResponse) as err:
                if err.args[1].encode("ascii", "replace") in REFUSALS:
                    policy.refused(server)
                    refusal = err
                    continue
                setattr(err, "server", server.name)     # which server said so
                raise
            return JobRef(server.name, jid)
        if refusal is not None:
            raise refusal
        raise SocketError("no beanstalkd server took the put (last error: %s)" % (error or "all down"))

    async def put_many(self, items: "Iterable[Any]", priority: int = DEFAULT_PRIORITY, delay: int = 0,
                       ttr: int = DEFAULT_TTR) -> "List[JobRef]":
        """Put many jobs, pipelined over every server at once; return their JobRefs in order.

        As ``Pool.put_many``: windows of the items go to the servers in turn, every server gets
        its windows before any reply is awaited, refused or unsent items go to another server,
        ``BatchError``/``SocketError`` with ``.results`` (``PutAmbiguous`` for puts written to a
        server that failed before answering). A caller cancelled meanwhile: the jobs put (and
        those still to be answered) are reported to ``on_orphan``.
        """
        policy = self._policy
        order = policy.batch_order()
        conns = [s.conns.producer for s in order]
        if not all(c is not None and c.connected and not _stale(c) for c in conns):
            conns = await asyncio.gather(*[self._conn(s, "producer") for s in order])
        lanes = [_Lane(s, c) for s, c in zip(order, conns) if c is not None]
        core = self._core
        plan = PutPlan(core, items, priority, delay, ttr, self._encoding, core.WINDOW_ITEMS, len(lanes),
                       policy.at_least_once)
        if not lanes:
            if plan.next_unit() is None:
                return []
            raise SocketError("no beanstalkd server is available")    # nothing was sent
        try:
            error = await self._put_rounds(plan, lanes)
        except BaseException:
            self._orphan_puts(plan, lanes)
            raise
        return plan.finish(error)

    async def _put_rounds(self, plan, lanes):
        """Keep ``_DEPTH`` windows in flight on every open server (the first rounds give each
        server one window in turn) and settle each window as its replies come, whichever server
        answers first. Memory stays bounded: a server's next window waits for its replies.
        Returns the exception of the items' iterator or of a bad item (once the windows sent
        before it are settled)."""
        kind = self._core.KIND_INSERTED
        loop = asyncio.get_running_loop()
        error = None

        def fill(lane, depth):
            nonlocal error
            ch = lane.conn._main
            if ch is None and lane.open:    # closed meanwhile (the pool is closing)
                self._broken(plan, lane, SocketError("connection is closed"))
            while error is None and lane.open and len(lane.inflight) < depth:
                try:
                    unit = plan.next_unit()
                except Exception as err:
                    error = err
                    return
                if unit is None:
                    return
                batch = _PutBatch(loop.create_future(), "put", kind, None, unit.n)
                try:
                    ch.send_batch(unit.chunks, batch)
                except _BROKEN as err:      # the channel broke before: nothing of the window was written
                    plan.unsent(unit)
                    self._broken(plan, lane, err)
                    return
                lane.inflight.append((unit, batch))

        while True:
            for depth in range(1, _DEPTH + 1):
                for lane in lanes:
                    fill(lane, depth)
            sent = False
            for lane in lanes:
                ch = lane.conn._main
                if lane.inflight and ch is not None:
                    ch.flush()
                    sent = True
            if not sent:
                return error
            _give_way()     # let a server on this CPU answer the windows whole
            oldest = [lane.inflight[0][1].fut for lane in lanes if lane.inflight]
            if len(oldest) > 1:
                await asyncio.wait(oldest, return_when=asyncio.FIRST_COMPLETED)
            else:
                try:
                    await oldest[0]
                except Exception:
                    pass        # settled below
            for lane in lanes:
                while lane.inflight and lane.inflight[0][1].fut.done():
                    unit, batch = lane.inflight.pop(0)
                    self._settle(plan, lane, unit, batch)

    def _settle(self, plan, lane, unit, batch):
        name = lane.server.name
        err = batch.fut.exception()
        if err is None:
            if plan.replied(unit, name, batch.results):
                lane.open = False       # it refused: no more windows for it in this batch
                self._policy.refused(lane.server)
            return
        plan.replied(unit, name, batch.results)
        if isinstance(err, _Drained):
            # every put after the DRAINING was refused (or left unanswered): they go elsewhere
            plan.refused_rest(unit, len(batch.results))
            for other, _ in lane.inflight:
                plan.unsent(other)
            del lane.inflight[:]
            lane.open = False
            self._policy.refused(lane.server)
            return
        plan.lost(unit, name, len(batch.results), err)
        self._broken(plan, lane, err)

    def _broken(self, plan, lane, err):
        for unit, batch in lane.inflight:
            plan.replied(unit, lane.server.name, batch.results)
            plan.lost(unit, lane.server.name, len(batch.results), err)
        del lane.inflight[:]
        lane.open = False
        self._lost(lane.server, "producer", lane.conn, err)

    def _orphan_puts(self, plan, lanes):
        """The caller of a put_many is gone: report every job it put (its channels report the
        replies still to come)."""
        for ref in plan.out:
            if isinstance(ref, JobRef):
                self._orphan(ref.server, "put", ref.jid)
        for lane in lanes:
            for _, batch in lane.inflight:
                fut = batch.fut
                if fut.cancel() or fut.cancelled():
                    continue
                if fut.exception() is None:
                    for entry in batch.results:
                        if entry.__class__ is int:
                            self._orphan(lane.server.name, "put", entry)

    async def use(self, name: str) -> str:
        """Use the tube ``name`` for puts on every server; return its name."""
        self._core.check_tube(name)
        name = name if isinstance(name, str) else name.decode("ascii")
        self._using = name
        await self._each_conn("producer", "use", name)
        return name

    async def using(self) -> str:
        """The tube used for puts."""
        return self._using

    async def _each_conn(self, role, method, name):
        pairs = [(s, getattr(s.conns, role)) for s in self._policy.servers]
        pairs = [(s, c) for s, c in pairs if c is not None and c.connected]
        results = await asyncio.gather(*[getattr(c, method)(name) for _, c in pairs], return_exceptions=True)
        for (server, conn), result in zip(pairs, results):
            if isinstance(result, SocketError):
                self._lost(server, role, conn, result)
            elif isinstance(result, BaseException):
                raise result

    # -- consumer --

    async def watch(self, name: str) -> int:
        """Watch the tube ``name`` on every server; return the number of watched tubes."""
        self._core.check_tube(name)
        name = name if isinstance(name, str) else name.decode("ascii")
        if name not in self._watching:
            self._watching.append(name)
        await self._each_conn("consumer", "watch", name)
        return len(self._watching)

    async def ignore(self, name: str) -> int:
        """Stop watching ``name`` on every server; return the number of watched tubes (1 when
        it was the last one, which beanstalkd refuses to ignore)."""
        self._core.check_tube(name)
        name = name if isinstance(name, str) else name.decode("ascii")
        if name in self._watching and len(self._watching) > 1:
            self._watching.remove(name)
            await self._each_conn("consumer", "ignore", name)
        return len(self._watching)

    async def watching(self) -> "List[str]":
        """The watched tubes."""
        return list(self._watching)

    async def _reserve_ready(self):
        """A job ready on some server, asking each in turn (``reserve-with-timeout 0``), or None."""
        for server in self._policy.reserve_order():
            conn = await self._conn(server, "consumer")
            if conn is None:
                continue
            try:
                job = await conn.reserve(0)
            except _BROKEN as err:
                self._lost(server, "consumer", conn, err)
                continue
            if job is not None:
                self._policy.reserved_from(server)
                job.server = server.name
                return job
        return None

    async def reserve(self, timeout: "Optional[float]" = None) -> "Optional[aio.Job]":
        """Reserve a job from any server, waiting up to ``timeout`` seconds (forever if None);
        return a Job (with ``.server``) or None. Servers take turns, so none is starved."""
        seconds = None if timeout is None else _commands.check_timeout(self._core, timeout)
        job = await self._reserve_ready()
        if job is not None or seconds == 0:
            return job
        return await self._wait(seconds)

    async def _wait(self, seconds):
        """Wait on every server at once: a reserve on each server's consumer connection, as
        tasks the event loop waits on together. The first job (servers in turn when several
        come together) is the caller's; the reserves still waiting are cancelled, and the
        consumer connection gives back at once, with its own priority, any job that comes for
        them (or for a caller cancelled here)."""
        policy = self._policy
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        tasks: "Dict[Any, Any]" = {}    # task: (server, connection)
        try:
            while True:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return None
                armed = {server for server, _ in tasks.values()}
                for server in policy.reserve_order():
                    if server in armed:
                        continue
                    conn = await self._conn(server, "consumer")
                    if conn is not None:
                        wait = None if left is None else max(1, math.ceil(left))
                        tasks[loop.create_task(conn.reserve(wait))] = (server, conn)
                if not tasks:
                    raise SocketError("no beanstalkd server is available")
                wait = policy.next_probe()      # wake up to take back a server that returns
                if wait is not None:
                    wait = max(wait, _MIN_PROBE_WAIT)
                if deadline is not None:
                    left = max(deadline - loop.time(), 0.0)
                    wait = left if wait is None else min(wait, left)
                done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                start = policy._reserve_next
                n = len(policy.servers)
                job = error = None
                for task in sorted(done, key=lambda t: (tasks[t][0].index - start) % n):
                    server, conn = tasks.pop(task)
                    try:
                        got = task.result()
                    except _BROKEN as err:
                        self._lost(server, "consumer", conn, err)
                        continue
                    except Exception as err:        # DeadlineSoon: the caller's
                        error = error or err
                        continue
                    if got is None:
                        continue
                    if job is None:
                        got.server = server.name
                        policy.reserved_from(server)
                        job = got
                    else:
                        _give_back(got)
                if job is not None:
                    return job
                if error is not None:
                    raise error
        finally:
            _call_off(tasks)

    async def reserve_many(self, n: int, timeout: float = 0) -> "List[aio.Job]":
        """Reserve up to ``n`` jobs from all servers at once: wait up to ``timeout`` seconds for
        the first, then take what is ready without waiting. Return a list of Jobs."""
        core = self._core
        n = core.check_uint32(n, "n")
        seconds = _commands.check_timeout(core, timeout)
        if n == 0:
            return []
        jobs = await self._take(n)
        if jobs or seconds == 0:
            return jobs
        job = await self.reserve(seconds)
        if job is None:
            return []
        try:
            return [job] + (await self._take(n - 1) if n > 1 else [])
        except BaseException:
            _give_back(job)
            raise

    async def _take(self, n):
        """Up to ``n`` ready jobs: a reserve_many on every server at once; servers that gave a
        full share get the rest."""
        order = self._policy.reserve_order()
        conns = [s.conns.consumer for s in order]
        if not all(c is not None and c.connected and not _stale(c) for c in conns):
            conns = await asyncio.gather(*[self._conn(s, "consumer") for s in order])
        live = [(s, c) for s, c in zip(order, conns) if c is not None]
        if live:
            self._policy.reserved_from(live[0][0])     # the next batch's rest goes to another server
        loop = asyncio.get_running_loop()
        jobs: list = []
        try:
            while n > 0 and live:
                tasks = {}
                for (server, conn), share in zip(live, split(n, len(live))):
                    if share > 0:
                        tasks[loop.create_task(conn.reserve_many(share))] = (server, conn, share)
                try:
                    await asyncio.wait(tasks)
                except BaseException:
                    _call_off(tasks)        # cancelled: their jobs go back
                    raise
                live = []
                for task, (server, conn, share) in tasks.items():
                    try:
                        got = task.result()
                    except _BROKEN as err:
                        self._lost(server, "consumer", conn, err)
                        continue
                    except DeadlineSoon:
                        got = []
                    except BatchError as err:
                        got = [r for r in err.results if isinstance(r, aio.Job)]
                    for job in got:
                        job.server = server.name
                    jobs.extend(got)
                    n -= len(got)
                    if len(got) == share:
                        live.append((server, conn))
                tasks.clear()
        except BaseException:
            for job in jobs:
                _give_back(job)
            raise
        return jobs

    # -- jobs --

    async def _job_conn(self, job, role):
        """(server, connection, jid) for a job: a Job's own connection, else the server's."""
        server, jid = self._policy.server_of(job)
        if isinstance(job, aio.Job):
            return server, job.conn, jid
        conn = await self._conn(server, role)
        if conn is None:
            raise SocketError("beanstalkd server %s is not available" % server.name)
        return server, conn, jid

    async def _on_job(self, job, method, *args, role="consumer"):
        server, conn, jid = await self._job_conn(job, role)
        try:
            if isinstance(job, aio.Job) and method in _JOB_WORDS:     # to the channel that reserved it
                return server, await conn._job_command(_JOB_WORDS[method], jid, *args, ch=job._channel)
            return server, await getattr(conn, method)(jid, *args)
        except SocketError as err:
            for which in _ROLES:        # a Job's connection may be an old one: not counted
                if getattr(server.conns, which) is conn:
                    self._lost(server, which, conn, err)
            raise

    async def delete(self, job: "AnyJob") -> None:
        """Delete a job (a JobRef, its string, or a Job)."""
        await self._on_job(job, "delete")
        if isinstance(job, aio.Job):
            job.reserved = False

    async def release(self, job: "AnyJob", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release a job reserved from this pool."""
        await self._on_job(job, "release", priority, delay)
        if isinstance(job, aio.Job):
            job.reserved = False

    async def bury(self, job: "AnyJob", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury a job reserved from this pool."""
        await self._on_job(job, "bury", priority)
        if isinstance(job, aio.Job):
            job.reserved = False

    async def touch(self, job: "AnyJob") -> None:
        """Ask for more time for a job reserved from this pool."""
        await self._on_job(job, "touch")

    async def kick_job(self, job: "AnyJob") -> None:
        """Kick a buried or delayed job into the ready queue."""
        await self._on_job(job, "kick_job", role="producer")

    async def stats_job(self, job: "AnyJob") -> "Any":
        """The statistics of a job."""
        return (await self._on_job(job, "stats_job", role="producer"))[1]

    async def peek(self, job: "AnyJob") -> "Optional[aio.Job]":
        """The job (not reserved), or None."""
        server, found = await self._on_job(job, "peek", role="producer")
        if found is not None:
            found.server = server.name
        return found

    async def reserve_job(self, job: "AnyJob") -> "aio.Job":
        """Reserve a given job (beanstalkd >= 1.12); return it as a Job of the pool."""
        server, jid = self._policy.server_of(job)
        found = await self._call(server, "consumer", "reserve_job", jid)
        found.server = server.name
        return found

    async def _peek_any(self, method):
        for server, found in await self._each(method):
            if found is not None and not isinstance(found, SocketError):
                if isinstance(found, BaseException):
                    raise found
                found.server = server.name
                return found
        return None

    async def peek_ready(self) -> "Optional[aio.Job]":
        """The next ready job of the used tube on the first server (in list order) that has one."""
        return await self._peek_any("peek_ready")

    async def peek_delayed(self) -> "Optional[aio.Job]":
        """A delayed job of the used tube, from the first server that has one."""
        return await self._peek_any("peek_delayed")

    async def peek_buried(self) -> "Optional[aio.Job]":
        """A buried job of the used tube, from the first server that has one."""
        return await self._peek_any("peek_buried")

    async def _jobs_many(self, cmd, jobs, *args):
        """``cmd`` for many jobs, grouped by the connection each goes to, every group pipelined
        at once. Raises BatchError (a None or the exception per item)."""
        core = self._core
        _, kinds, _ = _commands.COMMANDS[cmd]
        args = tuple([_commands.check_arg(core, kind, value) for kind, value in zip(kinds[1:], args)])
        jobs = list(jobs)
        outcomes: "List[Any]" = [None] * len(jobs)
        groups: "Dict[int, Any]" = {}
        by_name = self._policy.by_name
        if jobs and set(map(type, jobs)) == {aio.Job} and set(map(_server_of_job, jobs)) <= by_name.keys():
            # Jobs of this pool (the batch after a reserve_many): each goes back to its connection
            for i, job in enumerate(jobs):
                group = groups.get(id(job.conn))
                if group is None:
                    group = groups[id(job.conn)] = (by_name[job.server], job.conn, [], [])
                group[2].append(i)
                group[3].append(job)
            targets = []
        else:
            targets = []
            for i, job in enumerate(jobs):      # every item checked before a byte is sent
                try:
                    targets.append(self._policy.server_of(job))
                except (InvalidArgument, InvalidType) as err:
                    raise type(err)("item %d: %s" % (i, err)) from None
        for i, (job, (server, jid)) in enumerate(zip(jobs, targets)):
            if isinstance(job, aio.Job):
                conn, item = job.conn, job      # a Job goes back to its own connection
            else:
                conn, item = server.conns.consumer, jid
                if conn is None or not conn.connected:
                    conn = await self._conn(server, "consumer")
            if conn is None or not conn.connected:
                outcomes[i] = SocketError("the connection of %s to %s is closed" % (job, server.name))
                continue
            group = groups.get(id(conn))
            if group is None:
                group = groups[id(conn)] = (server, conn, [], [])
            group[2].append(i)
            group[3].append(item)
        work = [group for group in groups.values() if group[1].connected or _fail(group, outcomes)]
        if len(work) == 1:      # one connection: no task needed
            try:
                results: "List[Any]" = [await work[0][1]._jobs_many(cmd, work[0][3], *args)]
            except Exception as err:
                results = [err]
        else:
            results = await asyncio.gather(*[conn._jobs_many(cmd, items, *args) for _, conn, _, items in work],
                                           return_exceptions=True)
        for (server, conn, positions, _), result in zip(work, results):
            if isinstance(result, BatchError):
                for p, outcome in zip(positions, result.results):
                    outcomes[p] = outcome
            elif isinstance(result, SocketError):
                for p in positions:     # which of them went through is unknown
                    outcomes[p] = result
                for role in _ROLES:
                    if getattr(server.conns, role) is conn:
                        self._lost(server, role, conn, result)
            elif isinstance(result, BaseException):
                raise result
        for job, outcome in zip(jobs, outcomes):
            if cmd != "touch" and isinstance(job, aio.Job) and outcome is None:
                job.reserved = False
        if any(isinstance(o, BaseException) for o in outcomes):
            raise BatchError(outcomes)

    async def delete_many(self, jobs: "Iterable[AnyJob]") -> None:
        """Delete many jobs (JobRefs, their strings, or Jobs), pipelined on every server at once."""
        await self._jobs_many("delete", jobs)

    async def release_many(self, jobs: "Iterable[AnyJob]", priority: int = DEFAULT_PRIORITY,
                           delay: int = 0) -> None:
        """Release many jobs reserved from this pool, pipelined."""
        await self._jobs_many("release", jobs, priority, delay)

    async def bury_many(self, jobs: "Iterable[AnyJob]", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury many jobs reserved from this pool, pipelined."""
        await self._jobs_many("bury", jobs, priority)

    async def touch_many(self, jobs: "Iterable[AnyJob]") -> None:
        """Touch many jobs reserved from this pool, pipelined."""
        await self._jobs_many("touch", jobs)

    # -- stats and admin --

    async def stats_by_server(self) -> "Dict[str, Any]":
        """``{name: stats}`` of every server that answers."""
        return {server.name: stats for server, stats in await self._fan_out("stats")}

    async def stats(self) -> "Any":
        """The servers' stats merged: counts summed, the other fields (pid, version, uptime,
        ...) listed per server. With ``parse_yaml`` other than True, stats_by_server()."""
        by_server = await self.stats_by_server()
        if not all(isinstance(s, dict) for s in by_server.values()):
            return by_server
        return merge_stats(list(by_server.values()))

    async def tubes(self) -> "Any":
        """The tubes of every server (their union, in order of first sight)."""
        names: "List[str]" = []
        for _, tubes in await self._fan_out("tubes"):
            if not isinstance(tubes, list):
                return tubes
            names.extend(t for t in tubes if t not in names)
        return names

    async def stats_tube(self, name: str) -> "Any":
        """A tube's stats merged over the servers that have it (NOT_FOUND when none has)."""
        self._core.check_tube(name)
        found = []
        for _, result in await self._each("stats_tube", name):
            if isinstance(result, (CommandFailed, SocketError)):
                continue
            if isinstance(result, BaseException):
                raise result
            found.append(result)
        if not found:
            raise CommandFailed("stats-tube", "NOT_FOUND", [])
        if not all(isinstance(s, dict) for s in found):
            return found
        return merge_stats(found)

    async def kick(self, bound: int = 1) -> int:
        """Kick at most ``bound`` jobs of the used tube, spread over the servers by their buried
        (else delayed) counts; return how many were kicked."""
        bound = self._core.check_uint32(bound, "bound")
        servers, counts = [], []
        for server, body in await self._each("_command", "stats-tube", self._using):
            if isinstance(body, (CommandFailed, SocketError)):
                continue
            if isinstance(body, BaseException):
                raise body
            stats = _load_yaml(self._core, body, "stats-tube")
            servers.append(server)
            counts.append(stats.get("current-jobs-buried", 0) or stats.get("current-jobs-delayed", 0))
        shares = [(s, k) for s, k in zip(servers, kick_shares(bound, counts)) if k]
        results = await asyncio.gather(*[self._call(s, "producer", "kick", k) for s, k in shares],
                                       return_exceptions=True)
        kicked = 0
        for result in results:
            if isinstance(result, SocketError):
                continue
            if isinstance(result, BaseException):
                raise result
            kicked += result
        return kicked

    async def pause_tube(self, name: str, delay: int) -> None:
        """Pause the tube ``name`` on every server that has it."""
        self._core.check_tube(name)
        self._core.check_uint32(delay, "delay")
        paused = False
        for _, result in await self._each("pause_tube", name, delay):
            if isinstance(result, (CommandFailed, SocketError)):
                continue
            if isinstance(result, BaseException):
                raise result
            paused = True
        if not paused:
            raise CommandFailed("pause-tube", "NOT_FOUND", [])


def _server_of_job(job):
    return getattr(job, "server", None)


def _fail(group, outcomes):
    """A group whose connection is closed: each of its items gets a SocketError, none is sent."""
    server, conn, positions, _ = group
    for p in positions:
        outcomes[p] = SocketError("the connection of this job to %s is closed" % server.name)
    return False


def _stale(conn):
    """Whether an idle connection has something to read: EOF (the server closed it, and the
    loop has not seen it yet) or junk. A put written there would be ambiguous for nothing."""
    ch = conn._main
    if ch._fifo:
        return False
    return _has_input(ch.transport.get_extra_info("socket"))


def _give_back(job):
    """A Job reserved for a caller that is gone: the next coroutine waiting on its connection
    takes it, else it is released at once with its own priority."""
    job.conn._deliver(job._channel, job.jid, job.body_bytes)


def _call_off(tasks):
    """Cancel the reserve tasks still running; the Jobs of those that finished meanwhile go back."""
    for task in tasks:
        task.cancel()
        task.add_done_callback(_give_back_result)


def _give_back_result(task):
    if task.cancelled():
        return      # a cancelled aio reserve gives back its job itself
    err = task.exception()
    result = task.result() if err is None else getattr(err, "results", None)
    if isinstance(result, aio.Job):
        result = [result]
    for job in result if isinstance(result, list) else ():
        if isinstance(job, aio.Job):
            _give_back(job)
