"""The pool's commands, written once for the blocking ``Pool`` and the asyncio ``aio.Pool``.

Each command is a flow: a generator that makes every decision (through ``_poolpolicy``) and
yields each piece of I/O it needs as the driver's own call: ``conn = yield self._conn(server,
role)``, ``jid = yield conn.put(...)``. The blocking driver's calls return values and its
``_run`` hands them straight back; the asyncio driver's return awaitables and its ``_run``
awaits them. So a public method here returns a value in ``Pool`` and an awaitable in
``aio.Pool``, and neither driver writes a decision again (redis-py's commands are written once
the same way).

What a driver supplies: ``_run(flow)``, ``_value(x)``, ``_job_class``, ``_roles``, ``_consumer_roles``, and
its I/O: ``_conn``, ``_conns``, ``_lost``, ``_each``, ``_each_conn``, ``_put_rounds``,
``_take``, ``_wait``, ``_sleep``, ``_give_back``, ``_send_groups``.
"""
import time

from . import _commands
from ._defaults import DEFAULT_PRIORITY, DEFAULT_TTR, check_keepalive, check_options, host_port, tls_hostname
from ._poolpolicy import (BROKEN, MIN_PROBE_WAIT, UNREACHABLE, Drained, JobRef, Lane, Policy, PutPlan, answered,
                          every_server, job_groups, job_targets, jobs_outcome, merged_stats, merged_tube_stats,
                          reserved_batch, tube_name, tube_union)
from .exceptions import CommandFailed, CorruptJob, SocketError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional
    from ._defaults import Body

__all__ = ["PoolCommands"]


class PoolCommands:
    """The public methods of a pool (their docstrings are the pools'); see the module."""

    _repr_name = "beanstalkc_fast.Pool"
    _core: "Any"
    _job_class: "Any"
    _consumer_roles: "Any"
    _roles: "Any"
    _run: "Callable[[Any], Any]"
    _value: "Callable[[Any], Any]"

    def _setup(self, servers, parse_yaml, encoding, connect_timeout, socket_timeout, failure_limit, retry_after,
               at_least_once, conns, keepalive=True, ssl=None, server_hostname=None):
        check_options(parse_yaml, encoding)
        check_keepalive(keepalive)
        self._keepalive = keepalive     # each connection's (see Connection)
        self._policy = Policy(servers, failure_limit, retry_after, bool(at_least_once))
        for server in self._policy.servers:     # the TLS options, checked for each server now
            tls_hostname(ssl, server_hostname, host_port(server.address)[0])
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._parse_yaml = parse_yaml
        self._encoding = encoding
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._using = "default"
        self._watching = ["default"]
        self._closed = False
        for server in self._policy.servers:
            server.conns = conns()

    def __repr__(self) -> str:
        servers = self._policy.servers
        return "<%s %d servers, %d up: %s%s>" % (
            self._repr_name, len(servers), sum(not s.down for s in servers), ", ".join(s.name for s in servers),
            " closed" if self._closed else "")

    @property
    def servers(self) -> "List[str]":
        """The server names, in the order given."""
        return [s.name for s in self._policy.servers]

    def servers_status(self) -> "Dict[str, Dict[str, Any]]":
        """``{name: {'up', 'address', 'failures', 'retry_in', 'error'}}`` for every server
        (no I/O: a plain method in both pools)."""
        return self._policy.status()

    def _call(self, server, role, method, *args):
        """``method(*args)`` on the server's ``role`` connection; a lost connection is counted."""
        conn = yield self._conn(server, role)
        if conn is None:
            raise SocketError("beanstalkd server %s is not available" % server.name)
        try:
            return (yield getattr(conn, method)(*args))
        except BROKEN as err:
            self._lost(server, role, conn, err)
            if isinstance(err, SocketError):
                raise
            # the stream broke (a malformed reply, or a put_many's DRAINING ended it): to the
            # caller, as to the fan-out merges, that is a lost connection
            lost = SocketError("connection to beanstalkd server %s lost: %r" % (server.name, err))
            raise lost from err
        except CorruptJob as err:   # a peek or reserve_job: name the job's server
            err.server = server.name
            raise

    # -- producer --

    def put(self, body: "Body", priority: int = DEFAULT_PRIORITY, delay: int = 0, ttr: int = DEFAULT_TTR,
            key: "Any" = None) -> "Any":
        """Put a job on the next server (or the server of ``key``); return its JobRef.

        A server that is down, refuses the connection or answers ``DRAINING``,
        ``OUT_OF_MEMORY`` or ``INTERNAL_ERROR`` is skipped. A put whose connection was lost
        after it was written (a reset, a timeout, a reply that cannot be parsed) raises
        ``PutAmbiguous`` naming the server (with ``at_least_once=True`` it goes to the next
        server instead); a refusal any server would give (``JOB_TOO_BIG``) raises at once
        with ``.server``."""
        return self._run(self._put(body, priority, delay, ttr, key))

    def _put(self, body, priority, delay, ttr, key):
        core = self._core
        body = core.check_body(body, self._encoding)
        for value, what in ((priority, "priority"), (delay, "delay"), (ttr, "ttr")):
            core.check_uint32(value, what)
        policy = self._policy
        attempt: "Dict[str, Any]" = {}
        for server in policy.put_order(key):
            if key is None:
                policy.put_done(server)     # now, so that concurrent puts go round-robin too
            conn = yield self._conn(server, "producer")
            if conn is None:
                continue
            try:
                jid = yield conn.put(body, priority, delay, ttr)
            except Exception as err:
                if isinstance(err, BROKEN) and not isinstance(err, Drained):
                    self._lost(server, "producer", conn, err)
                policy.put_failed(server, err, attempt)
                continue
            return JobRef(server.name, jid)
        policy.put_gave_up(attempt)

    def put_many(self, items: "Iterable[Any]", priority: int = DEFAULT_PRIORITY, delay: int = 0,
                 ttr: int = DEFAULT_TTR, key: "Any" = None) -> "Any":
        """Put many jobs, pipelined over every server at once; return their JobRefs in order.

        ``items`` as ``Connection.put_many`` takes them. The items are cut into windows, each
        sent whole to one server; every server gets a window before any reply is read. Items a
        server refuses (``DRAINING``...) or could not be sent to go to another server (their
        JobRef names it). When items failed, every reply is read, then BatchError is raised
        with ``.results`` (a JobRef or the exception per item, ``PutAmbiguous`` for puts written
        to a server that failed before answering); SocketError (with ``.results``) when no
        server is left.

        With ``key``, the whole batch goes to the key's server, as ``put(..., key=)``: when
        that server is down or refuses, the rest goes to the next server of the key's own
        rendezvous order.
        """
        return self._run(self._put_many(items, priority, delay, ttr, key))

    def _put_many(self, items, priority, delay, ttr, key=None):
        policy = self._policy
        core = self._core
        if key is None:
            order = policy.batch_order()
            conns = yield self._conns(order, "producer")
            lanes = [Lane(s, c) for s, c in zip(order, conns) if c is not None]
            spare = iter(())
        else:   # one lane at a time, in the key's order: the next only takes what the last left
            spare = iter(policy.put_order(key))
            lane = yield from self._next_lane(spare)
            lanes = [] if lane is None else [lane]
        plan = PutPlan(core, items, priority, delay, ttr, self._encoding, core.WINDOW_ITEMS, len(lanes),
                       policy.at_least_once)
        if not lanes:
            if plan.next_unit() is None:
                return []
            raise SocketError("no beanstalkd server is available")    # nothing was sent
        error = yield self._put_rounds(plan, lanes)
        while error is None and (plan.again or not plan.exhausted):     # the key's server left items
            lane = yield from self._next_lane(spare)
            if lane is None:
                break
            error = yield self._put_rounds(plan, [lane])
        return plan.finish(error)

    def _next_lane(self, servers):
        """A Lane on the first of ``servers`` (an iterator) that connects; None when none does."""
        for server in servers:
            conn = yield self._conn(server, "producer")
            if conn is not None:
                return Lane(server, conn)
        return None

    def use(self, name: str) -> "Any":
        """Use the tube ``name`` for puts on every server; return its name."""
        return self._run(self._use(name))

    def _use(self, name):
        self._using = name = tube_name(self._core, name)
        yield self._each_conn(("producer",), "use", name)
        return name

    def using(self) -> "Any":
        """The tube used for puts."""
        return self._value(self._using)

    # -- consumer --

    def watch(self, name: str) -> "Any":
        """Watch the tube ``name`` on every server; return the number of watched tubes."""
        return self._run(self._watch(name))

    def _watch(self, name):
        name = tube_name(self._core, name)
        if name not in self._watching:
            self._watching.append(name)
        yield self._each_conn(self._consumer_roles, "watch", name)
        return len(self._watching)

    def ignore(self, name: str) -> "Any":
        """Stop watching ``name`` on every server; return the number of watched tubes (1 when
        it was the last one, which beanstalkd refuses to ignore)."""
        return self._run(self._ignore(name))

    def _ignore(self, name):
        name = tube_name(self._core, name)
        if name in self._watching and len(self._watching) > 1:
            self._watching.remove(name)
            yield self._each_conn(self._consumer_roles, "ignore", name)
        return len(self._watching)

    def watching(self) -> "Any":
        """The watched tubes."""
        return self._value(list(self._watching))

    def _reserve_ready(self, first=None):
        """A job ready on some server, asking each in turn (``reserve-with-timeout 0``;
        ``first``, a server that just had one, first), or None."""
        policy = self._policy
        for server in policy.reserve_order(first):
            conn = yield self._conn(server, "consumer")
            if conn is None:
                continue
            try:
                job = yield conn.reserve(0)
            except BROKEN as err:
                self._lost(server, "consumer", conn, err)
                continue
            except CorruptJob as err:   # reserved by the consumer connection: pool.bury(err) goes there
                policy.reserved_from(server)
                err.server = server.name
                raise
            if job is not None:
                policy.reserved_from(server)
                job.server = server.name
                return job
        return None

    def reserve(self, timeout: "Optional[float]" = None) -> "Any":
        """Reserve a job from any server, waiting up to ``timeout`` seconds (forever if None);
        return a Job (with ``.server``) or None. Servers take turns, so none is starved.

        A job whose body came corrupt raises ``CorruptJob`` with ``.server`` and ``.jid``: it
        stays reserved, and ``pool.bury(err)`` or ``pool.delete(err)`` takes it out of the way."""
        return self._run(self._reserve(timeout))

    def _reserve(self, timeout):
        seconds = None if timeout is None else _commands.check_timeout(self._core, timeout)
        job = yield from self._reserve_ready()
        if job is not None or seconds == 0:     # 0: nothing ready anywhere, or no server up: None
            return job
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            job = yield self._wait(seconds)
            if job is not UNREACHABLE:
                return job
            # No server to wait on: wait for the next probe of those that are down (the driver's
            # _wait probes them too), so that one that comes back serves this reserve at once.
            seconds = None if deadline is None else deadline - time.monotonic()
            if seconds is not None and seconds <= 0:
                return None
            pause = self._policy.probe_wait(seconds)
            yield self._sleep(MIN_PROBE_WAIT if pause is None else pause)   # None: none ejected yet
            seconds = None if deadline is None else max(0.0, deadline - time.monotonic())

    def reserve_many(self, n: int, timeout: float = 0) -> "Any":
        """Reserve up to ``n`` jobs from all servers at once: wait up to ``timeout`` seconds for
        the first, then take what is ready without waiting. Return a list of Jobs.

        When a server hands out a corrupt job, the others are reserved all the same and
        BatchError is raised: its ``results`` hold each Job and each ``CorruptJob`` (both with
        ``.server``), which stays reserved for ``pool.bury(err)`` or ``pool.delete(err)``."""
        return self._run(self._reserve_many(n, timeout))

    def _reserve_many(self, n, timeout):
        core = self._core
        n = core.check_uint32(n, "n")
        seconds = _commands.check_timeout(core, timeout)
        if n == 0:
            return []
        jobs, corrupt = yield self._take(n)
        if jobs or seconds == 0:
            return reserved_batch(jobs, corrupt)
        try:
            job = yield from self._reserve(seconds)
        except CorruptJob as err:
            job = err
        if job is None:
            return []
        if n == 1:
            return reserved_batch([job])
        try:
            rest, _ = yield self._take(n - 1)
        except BaseException:
            if not isinstance(job, CorruptJob):
                self._give_back(job)
            raise
        return reserved_batch([job] + rest)

    # -- jobs --

    def _on_job(self, job, method, *args, role="consumer"):
        """(server, result) of ``method(jid, *args)`` for a job: on a Job's own connection,
        else on its server's ``role`` connection."""
        server, jid = self._policy.server_of(job)
        if isinstance(job, self._job_class):
            conn = job.conn
        else:
            conn = yield self._conn(server, role)
            if conn is None:
                raise SocketError("beanstalkd server %s is not available" % server.name)
        try:
            result = yield getattr(conn, method)(jid, *args)
        except SocketError as err:
            for which in self._roles:       # a Job's connection may be an old one: not counted
                if getattr(server.conns, which) is conn:
                    self._lost(server, which, conn, err)
            raise
        except CorruptJob as err:   # a peek: name the job's server
            err.server = server.name
            raise
        if method in ("delete", "release", "bury") and isinstance(job, self._job_class):
            job.reserved = False
        return server, result

    def delete(self, job: "Any") -> "Any":
        """Delete a job (a JobRef, its string, or a Job)."""
        return self._run(self._none(self._on_job(job, "delete")))

    def release(self, job: "Any", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> "Any":
        """Release a job reserved from this pool."""
        return self._run(self._none(self._on_job(job, "release", priority, delay)))

    def bury(self, job: "Any", priority: int = DEFAULT_PRIORITY) -> "Any":
        """Bury a job reserved from this pool."""
        return self._run(self._none(self._on_job(job, "bury", priority)))

    def touch(self, job: "Any") -> "Any":
        """Ask for more time for a job reserved from this pool."""
        return self._run(self._none(self._on_job(job, "touch")))

    def kick_job(self, job: "Any") -> "Any":
        """Kick a buried or delayed job into the ready queue."""
        return self._run(self._none(self._on_job(job, "kick_job", role="producer")))

    def stats_job(self, job: "Any") -> "Any":
        """The statistics of a job."""
        return self._run(self._second(self._on_job(job, "stats_job", role="producer")))

    def peek(self, job: "Any") -> "Any":
        """The job (not reserved), or None."""
        return self._run(self._pool_job(self._on_job(job, "peek", role="producer")))

    def reserve_job(self, job: "Any") -> "Any":
        """Reserve a given job (beanstalkd >= 1.12); return it as a Job of the pool."""
        server, jid = self._policy.server_of(job)
        return self._run(self._pool_job(self._on_server(server, "reserve_job", jid)))

    def _on_server(self, server, method, *args):
        return server, (yield from self._call(server, "consumer", method, *args))

    @staticmethod
    def _none(flow):
        yield from flow

    @staticmethod
    def _second(flow):
        return (yield from flow)[1]

    @staticmethod
    def _pool_job(flow):
        server, found = yield from flow
        if found is not None:
            found.server = server.name
        return found

    def _peek_any(self, method):
        for server, found in answered((yield self._each(method))):
            if found is not None:
                found.server = server.name
                return found
        return None

    def peek_ready(self) -> "Any":
        """The next ready job of the used tube on the first server (in list order) that has one."""
        return self._run(self._peek_any("peek_ready"))

    def peek_delayed(self) -> "Any":
        """A delayed job of the used tube, from the first server that has one."""
        return self._run(self._peek_any("peek_delayed"))

    def peek_buried(self) -> "Any":
        """A buried job of the used tube, from the first server that has one."""
        return self._run(self._peek_any("peek_buried"))

    def _jobs_many(self, cmd, jobs, *args):
        """``cmd`` for many jobs, grouped by the connection each goes to, every group pipelined
        at once. Raises BatchError (a None or the exception per item)."""
        core = self._core
        _, kinds, _ = _commands.COMMANDS[cmd]
        args = tuple([_commands.check_arg(core, kind, value) for kind, value in zip(kinds[1:], args)])
        jobs = list(jobs)
        policy, job_class = self._policy, self._job_class
        targets = job_targets(policy, jobs, job_class)
        if targets is not None:     # by-id items go to their servers' consumer connections: open them
            servers = {server for (server, _), job in zip(targets, jobs) if not isinstance(job, job_class)}
            yield self._conns([s for s in policy.servers if s in servers], "consumer")
        groups, outcomes = job_groups(policy, jobs, targets, job_class)
        yield self._send_groups(cmd, groups, args, outcomes)
        jobs_outcome(cmd, jobs, outcomes, self._job_class)

    def delete_many(self, jobs: "Iterable[Any]") -> "Any":
        """Delete many jobs (JobRefs, their strings, or Jobs), pipelined on every server at once."""
        return self._run(self._jobs_many("delete", jobs))

    def release_many(self, jobs: "Iterable[Any]", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> "Any":
        """Release many jobs reserved from this pool, pipelined."""
        return self._run(self._jobs_many("release", jobs, priority, delay))

    def bury_many(self, jobs: "Iterable[Any]", priority: int = DEFAULT_PRIORITY) -> "Any":
        """Bury many jobs reserved from this pool, pipelined."""
        return self._run(self._jobs_many("bury", jobs, priority))

    def touch_many(self, jobs: "Iterable[Any]") -> "Any":
        """Touch many jobs reserved from this pool, pipelined."""
        return self._run(self._jobs_many("touch", jobs))

    # -- stats and admin --

    def stats_by_server(self) -> "Any":
        """``{name: stats}`` for every server of the pool, in the order given. A server that
        is down (or failed to answer) has the ``SocketError`` that took its place, with
        ``.server``, instead of its stats: test with ``isinstance(value, SocketError)``
        (``servers_status()`` has the same without I/O)."""
        return self._run(self._stats_by_server())

    def _stats_by_server(self):
        return every_server(self._policy, (yield self._each("stats")))

    def stats(self) -> "Any":
        """The stats of the servers that answer merged: counts summed, the other fields (pid,
        version, uptime, ...) listed per server (SocketError when none answers). With
        ``parse_yaml`` other than True, ``{name: stats}`` of the servers that answer."""
        return self._run(self._stats())

    def _stats(self):
        return merged_stats((yield from self._stats_by_server()))

    def tubes(self) -> "Any":
        """The tubes of every server (their union, in order of first sight)."""
        return self._run(self._tubes())

    def _tubes(self):
        return tube_union((yield self._each("tubes")))

    def stats_tube(self, name: str) -> "Any":
        """A tube's stats merged over the servers that have it (NOT_FOUND when none has)."""
        return self._run(self._stats_tube(name))

    def _stats_tube(self, name):
        self._core.check_tube(name)
        return merged_tube_stats((yield self._each("stats_tube", name)))

    def kick(self, bound: int = 1) -> "Any":
        """Kick at most ``bound`` jobs of the used tube: the servers in list order, each as many
        of its buried (else delayed) jobs as are left to kick; return how many were kicked."""
        return self._run(self._kick(bound))

    def _kick(self, bound):
        left = self._core.check_uint32(bound, "bound")
        for server in self._policy.everyone():
            if left <= 0:
                break
            try:
                left -= yield from self._call(server, "producer", "kick", left)
            except SocketError:
                continue
        return bound - left

    def pause_tube(self, name: str, delay: int) -> "Any":
        """Pause the tube ``name`` on every server that has it."""
        return self._run(self._pause_tube(name, delay))

    def _pause_tube(self, name, delay):
        self._core.check_tube(name)
        self._core.check_uint32(delay, "delay")
        if not answered((yield self._each("pause_tube", name, delay)), (CommandFailed, SocketError)):
            raise CommandFailed("pause-tube", "NOT_FOUND", [])
