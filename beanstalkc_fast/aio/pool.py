"""aio.Pool: many beanstalkd servers behind one asyncio client (``beanstalkc_fast.aio.Pool``).

The asyncio twin of the blocking ``Pool``: the same commands (``_poolcommands``: flows that
yield their I/O) on the same policy (``_poolpolicy``), driven by ``aio.Connection``s. This
module is the asyncio I/O only. Each server has a producer connection (puts, fan-out commands,
peeks) and a consumer connection (reserves and the jobs they hand out), opened when first needed.
"""
import asyncio
import math

from .._defaults import check_on_orphan, give_way, host_port, tube_changes
from .._poolcommands import PoolCommands
from .._poolpolicy import BROKEN, UNREACHABLE, Drained, JobRef, split
from ..exceptions import BatchError, CorruptJob, SocketError
from .connection import Connection, Job, _Window, default_orphan

__all__ = ["Pool", "JobRef"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Union

_DEPTH = 2              # put_many windows in flight per server: one at work while the other is answered


class _Conns:
    __slots__ = ("producer", "consumer", "opening")

    def __init__(self):
        self.producer = self.consumer = None
        self.opening = {}       # role: future of a connection being opened


class Pool(PoolCommands):
    """A pool of beanstalkd servers for asyncio (the coroutine twin of ``beanstalkc_fast.Pool``).

    ``aio.Pool(servers, *, parse_yaml=True, encoding='utf-8', connect_timeout=2.0,
    socket_timeout=None, failure_limit=2, retry_after=5.0, at_least_once=False, on_orphan=None,
    keepalive=True, ssl=None, server_hostname=None)``

    Every method of the blocking ``Pool`` returns an awaitable here, with the same names, arguments,
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
      on the event loop (no polling); with every server down it waits for one to come back
      (probing them) up to its timeout, then returns None. ``stats_by_server()`` gives a down
      server's ``SocketError`` in place of its stats. A job reserved for a caller that is gone (cancelled, timed
      out, or served by another server first) is handed to the next coroutine waiting on that
      server or released at once with its own priority.
    - ``on_orphan(cmd, result)`` is called for a put whose caller was cancelled after it was
      written, with the put's ``JobRef`` (default: a warning on the ``beanstalkc_fast`` logger).
    - ``keepalive`` is passed to every connection (TCP keepalive: a server that died silently
      is found in about a minute, even by a reserve waiting forever).
    - ``ssl``, ``server_hostname``: TLS for every server's connections, as in ``aio.Connection``
      (``server_hostname`` defaults to each server's own host).
    """

    _repr_name = "beanstalkc_fast.aio.Pool"
    _job_class = Job
    _roles = ("producer", "consumer")
    _consumer_roles = ("consumer",)

    def __init__(self, servers: "Any", *, parse_yaml: "Union[bool, Callable[[str], Any]]" = True,
                 encoding: "Optional[str]" = "utf-8", connect_timeout: "Optional[float]" = 2.0,
                 socket_timeout: "Optional[float]" = None, failure_limit: int = 2, retry_after: float = 5.0,
                 at_least_once: bool = False, on_orphan: "Optional[Callable[[str, Any], Any]]" = None,
                 keepalive: bool = True, ssl: "Any" = None, server_hostname: "Optional[str]" = None) -> None:
        check_on_orphan(on_orphan)
        self._core = Connection._core
        self._setup(servers, parse_yaml, encoding, connect_timeout, socket_timeout, failure_limit, retry_after,
                    at_least_once, _Conns, keepalive, ssl, server_hostname)
        self._on_orphan = on_orphan or default_orphan
        self._closing: set = set()      # tasks closing connections dropped from the pool

    async def __aenter__(self) -> "Pool":
        await self.connect()
        return self

    async def __aexit__(self, *exc: "Any") -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect to every server now (optional: the pool connects at first use). A server
        that is down only counts a failure."""
        await self._conns(self._policy.servers, "producer")

    async def close(self) -> None:
        """Close every connection. Never raises; may be called twice."""
        self._closed = True
        for server in self._policy.servers:
            for role in self._roles:
                conn = getattr(server.conns, role)
                setattr(server.conns, role, None)
                if conn is not None:
                    try:
                        await conn.close()
                    except Exception:
                        pass

    # -- the flows' driver: every call of this driver returns an awaitable --

    @staticmethod
    async def _run(flow):
        step, arg = flow.send, None
        while True:
            try:
                awaitable = step(arg)
            except StopIteration as stop:
                return stop.value
            try:
                arg, step = await awaitable, flow.send
            except BaseException as err:    # cancellation too: the flow's cleanups see it
                arg, step = err, flow.throw

    @staticmethod
    async def _value(value):
        return value

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
                if conn.connected and not conn._stale():
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
        host, port = host_port(server.address)
        name = server.name
        conn = Connection(host, port, parse_yaml=self._parse_yaml, encoding=self._encoding,
                          connect_timeout=self._connect_timeout, socket_timeout=self._socket_timeout,
                          on_orphan=lambda cmd, result: self._orphan(name, cmd, result), keepalive=self._keepalive,
                          ssl=self._ssl, server_hostname=self._server_hostname)
        try:
            await conn.connect()
            # The pool's tubes, until what was applied is what they are now: a use() or watch()
            # of another coroutine during these awaits skips a connection not yet published.
            using, watching = "default", ["default"]
            while role == "producer" and using != self._using:
                using = self._using
                await conn.use(using)
            while role != "producer" and watching != self._watching:
                target = list(self._watching)
                for method, tube in tube_changes(watching, target):
                    await getattr(conn, method)(tube)
                watching = target
        except BROKEN as err:
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

    async def _conns(self, servers, role):
        conns = [getattr(s.conns, role) for s in servers]
        if all(c is not None and c.connected and not c._stale() for c in conns):
            return conns
        return await asyncio.gather(*[self._conn(s, role) for s in servers])

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

    async def _each(self, method, *args):
        """[(server, result or exception)] of ``method`` on every usable server, all at once."""
        servers = self._policy.everyone()
        results = await asyncio.gather(*[self._run(self._call(s, "producer", method, *args)) for s in servers],
                                       return_exceptions=True)
        return list(zip(servers, results))

    async def _each_conn(self, roles, method, name):
        pairs = [(s, role, getattr(s.conns, role)) for s in self._policy.servers for role in roles]
        pairs = [(s, role, c) for s, role, c in pairs if c is not None and c.connected]
        results = await asyncio.gather(*[getattr(c, method)(name) for _, _, c in pairs], return_exceptions=True)
        for (server, role, conn), result in zip(pairs, results):
            if isinstance(result, SocketError):
                self._lost(server, role, conn, result)
            elif isinstance(result, BaseException):
                raise result

    _sleep = staticmethod(asyncio.sleep)

    @staticmethod
    def _give_back(job):
        """A Job reserved for a caller that is gone: the next coroutine waiting on its connection
        takes it, else it is released at once with its own priority."""
        job.conn._return_job(job)

    # -- put_many: windows in flight on every server, settled as their replies come --

    async def _put_rounds(self, plan, lanes):
        """Keep ``_DEPTH`` windows in flight on every open server (the first rounds give each
        server one window in turn) and settle each window as its replies come, whichever server
        answers first. Memory stays bounded: a server's next window waits for its replies.
        Returns the exception of the items' iterator or of a bad item (once the windows sent
        before it are settled). A caller cancelled meanwhile: the jobs put (and those still to
        be answered) are reported to ``on_orphan``."""
        batches: "Dict[int, Any]" = {id(lane): [] for lane in lanes}     # per lane, beside its inflight
        try:
            return await self._rounds(plan, lanes, batches)
        except BaseException:
            self._orphan_puts(plan, lanes, batches)
            raise

    async def _rounds(self, plan, lanes, batches):
        kind = self._core.KIND_INSERTED
        Batch = self._core.Batch
        loop = asyncio.get_running_loop()
        error = None

        def fill(lane, depth):
            nonlocal error
            while error is None and lane.open and len(lane.inflight) < depth:
                try:
                    unit = plan.next_unit()
                except Exception as err:
                    error = err
                    return
                if unit is None:
                    return
                # a DRAINING ends the window and the stream: a draining beanstalkd may leave
                # refusals of pipelined puts unanswered; every put behind it is refused too
                batch = _Window(loop.create_future(), "put", Batch(kind, unit.n, [], None, False, b"DRAINING"),
                                None, Drained)
                try:
                    lane.conn._send_window(unit.chunks, batch)
                except BROKEN as err:       # the connection broke before: nothing of the window was written
                    plan.unsent(unit)
                    self._settle(plan, lane, batches, None, None, err)
                    return
                lane.inflight.append((unit, batch.results))
                batches[id(lane)].append(batch)

        while True:
            for depth in range(1, _DEPTH + 1):
                for lane in lanes:
                    fill(lane, depth)
            sent = False
            for lane in lanes:
                if lane.inflight and lane.conn.connected:
                    lane.conn._flush()
                    sent = True
            if not sent:
                return error
            give_way()      # let a server on this CPU answer the windows whole
            oldest = [batches[id(lane)][0].fut for lane in lanes if lane.inflight]
            if len(oldest) > 1:
                await asyncio.wait(oldest, return_when=asyncio.FIRST_COMPLETED)
            else:
                try:
                    await oldest[0]
                except Exception:
                    pass        # settled below
            for lane in lanes:
                queue = batches[id(lane)]
                while lane.inflight and queue[0].fut.done():
                    unit, _ = lane.inflight.pop(0)
                    batch = queue.pop(0)
                    self._settle(plan, lane, batches, unit, batch.results, batch.fut.exception(), batch.batch.bad)

    def _settle(self, plan, lane, batches, unit, entries, err, bad=None):
        if unit is None:
            lane.broken(plan, err)
            verdict = "lost"
        else:
            verdict = lane.settle(plan, self._policy, unit, entries, err, bad)
        if verdict is not None:
            del batches[id(lane)][:]
        if verdict == "lost":
            self._lost(lane.server, "producer", lane.conn, err)

    def _orphan_puts(self, plan, lanes, batches):
        """The caller of a put_many is gone: report every job it put (its channels report the
        replies still to come)."""
        for ref in plan.out:
            if isinstance(ref, JobRef):
                self._orphan(ref.server, "put", ref.jid)
        for lane in lanes:
            for batch in batches[id(lane)]:
                fut = batch.fut
                if fut.cancel() or fut.cancelled():
                    continue
                if fut.exception() is None:
                    for entry in batch.results:
                        if entry.__class__ is int:
                            self._orphan(lane.server.name, "put", entry)

    # -- reserves --

    async def _wait(self, seconds):
        """Wait on every server at once: a reserve on each server's consumer connection, as
        tasks the event loop waits on together. The first job (servers in turn when several
        come together) is the caller's; the reserves still waiting are cancelled, and the
        consumer connection gives back at once, with its own priority, any job that comes for
        them (or for a caller cancelled here). UNREACHABLE when no server could be waited on."""
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
                    return UNREACHABLE
                # wake up to take back a server that returns
                wait = policy.probe_wait(None if deadline is None else max(deadline - loop.time(), 0.0))
                done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                by_server = {tasks[task][0]: task for task in done}
                job = error = None
                for server in policy.in_turn(list(by_server)):
                    task = by_server[server]
                    conn = tasks.pop(task)[1]
                    try:
                        got = task.result()
                    except BROKEN as err:
                        self._lost(server, "consumer", conn, err)
                        continue
                    except CorruptJob as err:       # reserved by conn: the caller's, as a job is
                        got = err
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
                        conn._return_job(got)
                if isinstance(job, CorruptJob):
                    raise job
                if job is not None:
                    return job
                if error is not None:
                    raise error
        finally:
            _call_off(tasks)

    async def _take(self, n):
        """Up to ``n`` ready jobs: a window of ``reserve-with-timeout 0`` written to every server
        before any reply is awaited (as the blocking pool does), then read; servers that gave
        a full share get the rest. Returns them and whether a reply was not a job (a
        CorruptJob may be among them). Cancelled: every job reserved goes back."""
        order = self._policy.reserve_order()
        live = [(s, c) for s, c in zip(order, await self._conns(order, "consumer")) if c is not None]
        if live:
            self._policy.reserved_from(live[0][0])     # the next batch's rest goes to another server
        most = self._core.RESERVE_WINDOW
        jobs: list = []
        corrupt = False
        sent: list = []     # (server, connection, channel, window) written, not taken yet
        try:
            while n > 0 and live:
                for (server, conn), share in zip(live, split(n, len(live))):
                    if share > 0:
                        try:
                            ch, window = await conn._reserve_window(min(share, most), ("server", server.name))
                        except BROKEN as err:
                            self._lost(server, "consumer", conn, err)
                            continue
                        sent.append((server, conn, ch, window))
                give_way()      # let a server on this CPU answer its window whole
                live = []
                while sent:
                    server, conn, ch, window = sent[0]
                    try:
                        await window.fut
                    except BROKEN as err:
                        # its jobs were reserved by a connection now closed: the server gives them back
                        del sent[0]
                        self._lost(server, "consumer", conn, err)
                        continue
                    del sent[0]
                    got = conn._reserved(ch, window)    # CorruptJobs too: the flow reports them
                    corrupt = corrupt or window.batch.bad > 0
                    if window.batch.bad:    # the core's Jobs have .server; CorruptJobs get it here
                        name = server.name
                        for job in got:
                            job.server = name
                    jobs.extend(got)
                    n -= len(got)
                    if not window.batch.stop:       # every reply a job: it may have more
                        live.append((server, conn))
        except BaseException:
            for _, conn, ch, window in sent:
                conn._drop_window(ch, window)
            for job in jobs:
                if isinstance(job, Job):
                    self._give_back(job)
            raise
        return jobs, corrupt

    # -- by-id batches: every connection's windows at once --

    async def _send_groups(self, cmd, groups, args, outcomes):
        if len(groups) == 1:      # one connection: no task needed
            try:
                results: "Any" = [await groups[0][1]._jobs_many(cmd, groups[0][3], *args)]
            except Exception as err:
                results = [err]
        else:   # every connection writes its windows, then one give-way for all (as Pool does)
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(conn._jobs_many(cmd, items, *args, yield_cpu=False))
                     for _, conn, _, items in groups]
            try:
                await asyncio.sleep(0)
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise
            give_way()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for (server, conn, positions, _), result in zip(groups, results):
            if isinstance(result, BatchError):
                for p, outcome in zip(positions, result.results):
                    outcomes[p] = outcome
            elif isinstance(result, SocketError):
                for p in positions:     # which of them went through is unknown
                    outcomes[p] = result
                for role in self._roles:
                    if getattr(server.conns, role) is conn:
                        self._lost(server, role, conn, result)
            elif isinstance(result, BaseException):
                raise result


def _call_off(tasks):
    """Cancel the reserve tasks still running; the Jobs (and CorruptJobs) of those that finished
    meanwhile go back."""
    for task, (_, conn, *_) in tasks.items():
        task.cancel()
        task.add_done_callback(lambda task, conn=conn: _give_back_result(task, conn))


def _give_back_result(task, conn):
    if task.cancelled():
        return      # a cancelled aio reserve gives back its job itself
    err = task.exception()
    result = task.result() if err is None else getattr(err, "results", [err])
    if isinstance(result, Job):
        result = [result]
    for job in result if isinstance(result, list) else ():
        if isinstance(job, (Job, CorruptJob)):
            conn._return_job(job)
