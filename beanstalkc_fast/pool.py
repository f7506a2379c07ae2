"""Pool: many beanstalkd servers behind one client (the blocking driver).

beanstalkd does not cluster: distribution is the client's job. A ``Pool`` spreads puts over
its servers, reserves from all of them, and keeps going when one is down. What it decides
(routing, health, the bookkeeping of a batch) is in ``_poolpolicy`` and has no I/O; this module
connects, writes and reads, on the sync ``Connection`` and its protocol core.
"""
import os
import select
import selectors
import time

from . import _commands
from ._poolpolicy import JobRef, Policy, PutPlan, REFUSALS, kick_shares, merge_stats, split
from .connection import DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR, Connection, Job, _check_options, _load_yaml
from .exceptions import (BatchError, CommandFailed, InvalidArgument, InvalidType, ProtocolError, SocketError,
                         UnexpectedResponse)

__all__ = ["Pool", "JobRef"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Union
    Body = Union[str, bytes, bytearray, memoryview]
    AnyJob = Union[JobRef, str, Job]

_give_way = getattr(os, "sched_yield", lambda: None)
_RESERVE0 = b"reserve-with-timeout 0\r\n"
_GRACE = 1.0        # seconds a server may answer a timed reserve late before it counts as hung
_BROKEN = (OSError, SocketError, ProtocolError)
_MIN_PROBE_WAIT = 0.25  # a blocking reserve probes servers that are down at most this often (retry_after=0)


def _socket_error(err):
    if isinstance(err, OSError):
        exc = SocketError(err)
        exc.__cause__ = err
        return exc
    return err


class _Conns:
    """A server's connections: puts and fan-out commands, reserves (the jobs they hand out
    belong to it), and the waits of a blocking reserve (it never keeps a job)."""
    __slots__ = ("producer", "consumer", "waiter")

    def __init__(self):
        self.producer = self.consumer = self.waiter = None


class _Lane:
    """A server's part in one put_many: its windows sent and not yet read."""
    __slots__ = ("server", "conn", "inflight", "open")

    def __init__(self, server, conn):
        self.server = server
        self.conn = conn
        self.inflight = []
        self.open = True        # it takes more windows


class Pool:
    """A pool of beanstalkd servers.

    ``Pool(servers, *, parse_yaml=True, encoding='utf-8', connect_timeout=2.0,
    socket_timeout=None, failure_limit=2, retry_after=5.0, at_least_once=False)``

    - ``servers``: addresses ``'host:port'``, ``(host, port)`` or unix socket paths, each
      optionally named (``{'name': address}``) so that a server can move without changing
      its jobs' names; an unnamed server is named by its address as given.
    - Puts go round-robin from a random start (``put_many`` keeps a window on one server);
      ``put(..., key=k)`` pins ``k`` to a server by rendezvous hashing of the names. A server
      that is down, refuses the connection or answers ``DRAINING``, ``OUT_OF_MEMORY`` or
      ``INTERNAL_ERROR`` is skipped; ``JOB_TOO_BIG`` is never retried.
    - A put whose reply was lost after it was written raises ``PutAmbiguous`` (a
      ``SocketError``) naming the server. With ``at_least_once=True`` it is sent again to
      another server instead: a job may then be inserted twice.
    - Puts return ``JobRef``s (``str(ref) == 'server/jid'``); Jobs reserved from the pool have
      ``.server`` and go back to the connection that reserved them. Methods that take a job
      take a JobRef, its string or a Job; a bare int is refused (ambiguous across servers).
    - A server is ejected after ``failure_limit`` consecutive failures and tried again after
      ``retry_after`` seconds, doubling up to 60 s while it stays down (logged on the
      ``beanstalkc_fast`` logger; ``servers_status()``). The pool starts even with servers down.

    A pool is not meant to be shared by threads: use one per thread.
    """

    def __init__(self, servers: "Any", *, parse_yaml: "Union[bool, Callable[[str], Any]]" = True,
                 encoding: "Optional[str]" = "utf-8", connect_timeout: "Optional[float]" = 2.0,
                 socket_timeout: "Optional[float]" = None, failure_limit: int = 2, retry_after: float = 5.0,
                 at_least_once: bool = False) -> None:
        _check_options(parse_yaml, encoding)
        self._policy = Policy(servers, failure_limit, retry_after, bool(at_least_once))
        self._parse_yaml = parse_yaml
        self._encoding = encoding
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._core = Connection._core
        self._using = "default"
        self._watching = ["default"]
        self._closed = False
        for server in self._policy.servers:
            server.conns = _Conns()
        for server in self._policy.servers:
            self._conn(server, "producer")      # a server that is down now only counts a failure

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: "Any") -> None:
        self.close()

    def __repr__(self) -> str:
        servers = self._policy.servers
        return "<beanstalkc_fast.Pool %d servers, %d up: %s%s>" % (
            len(servers), sum(not s.down for s in servers), ", ".join(s.name for s in servers),
            " closed" if self._closed else "")

    @property
    def servers(self) -> "List[str]":
        """The server names, in the order given."""
        return [s.name for s in self._policy.servers]

    def servers_status(self) -> "Dict[str, Dict[str, Any]]":
        """``{name: {'up', 'address', 'failures', 'retry_in', 'error'}}`` for every server."""
        return self._policy.status()

    def close(self) -> None:
        """Close every connection. Never raises; may be called twice."""
        self._closed = True
        for server in self._policy.servers:
            conns = server.conns
            for role in _Conns.__slots__:
                conn = getattr(conns, role)
                setattr(conns, role, None)
                if conn is not None:
                    conn.close()

    # -- connections --

    def _conn(self, server, role):
        """The server's connection for ``role``, connected (a probe if the server is down) with
        the pool's tubes; None when it cannot be had (the failure is counted)."""
        if self._closed:
            raise SocketError("the pool is closed")
        conns = server.conns
        conn = getattr(conns, role)
        if conn is not None:
            if conn.connected and not _readable(conn):
                return conn
            # closed, or an idle connection with something to read: the server closed it
            conn.close()
            setattr(conns, role, None)
        if not self._policy.usable(server):
            return None
        address = server.address
        host, port = (address, DEFAULT_PORT) if isinstance(address, str) else address
        try:
            conn = Connection(host, port, self._parse_yaml, self._connect_timeout, encoding=self._encoding,
                              socket_timeout=self._socket_timeout)
            if role == "producer":
                if self._using != "default":
                    conn.use(self._using)
            else:
                for name in self._watching:
                    if name != "default":
                        conn.watch(name)
                if "default" not in self._watching:
                    conn.ignore("default")
        except SocketError as err:
            if conn is not None:
                conn.close()
            self._policy.failed(server, err)
            return None
        setattr(conns, role, conn)
        self._policy.succeeded(server)
        return conn

    def _lost(self, server, role, conn, err):
        """``conn`` (the server's ``role`` connection) failed: close it and count the failure."""
        if getattr(server.conns, role) is conn:
            setattr(server.conns, role, None)
        if conn is not None:
            conn.close()
        self._policy.failed(server, err)

    def _call(self, server, role, method, *args):
        conn = self._conn(server, role)
        if conn is None:
            raise SocketError("beanstalkd server %s is not available" % server.name)
        try:
            result = getattr(conn, method)(*args)
        except SocketError as err:
            self._lost(server, role, conn, err)
            raise
        return result

    def _fan_out(self, method, *args):
        """[(server, result)] of ``method`` on every server that answers (others are counted
        down); SocketError when none does."""
        out = []
        error = None
        for server in self._policy.everyone():
            try:
                out.append((server, self._call(server, "producer", method, *args)))
            except SocketError as err:
                error = err
        if not out:
            raise error or SocketError("no beanstalkd server is available")
        return out

    # -- producer --

    def put(self, body: "Body", priority: int = DEFAULT_PRIORITY, delay: int = 0, ttr: int = DEFAULT_TTR,
            key: "Any" = None) -> JobRef:
        """Put a job on the next server (or the server of ``key``); return its JobRef."""
        core = self._core
        body = core.check_body(body, self._encoding)
        for value, what in ((priority, "priority"), (delay, "delay"), (ttr, "ttr")):
            core.check_uint32(value, what)
        policy = self._policy
        refusal = error = None
        for server in policy.put_order(key):
            conn = self._conn(server, "producer")
            if conn is None:
                continue
            try:
                jid = conn.put(body, priority, delay, ttr)
            except SocketError as err:
                self._lost(server, "producer", conn, err)
                if not policy.at_least_once:
                    from .exceptions import PutAmbiguous
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
            if key is None:
                policy.put_done(server)
            return JobRef(server.name, jid)
        if refusal is not None:
            raise refusal
        raise SocketError("no beanstalkd server took the put (last error: %s)" % (error or "all down"))

    def put_many(self, items: "Iterable[Any]", priority: int = DEFAULT_PRIORITY, delay: int = 0,
                 ttr: int = DEFAULT_TTR) -> "List[JobRef]":
        """Put many jobs, pipelined over every server at once; return their JobRefs in order.

        ``items`` as ``Connection.put_many`` takes them. The items are cut into windows, each
        sent whole to one server; every server gets a window before any reply is read. Items a
        server refuses (``DRAINING``...) or could not be sent to go to another server (their
        JobRef names it). When items failed, every reply is read, then BatchError is raised
        with ``.results`` (a JobRef or the exception per item, ``PutAmbiguous`` for puts written
        to a server that failed before answering); SocketError (with ``.results``) when no
        server is left.
        """
        policy = self._policy
        lanes = []
        for server in policy.batch_order():
            conn = self._conn(server, "producer")
            if conn is not None:
                lanes.append(_Lane(server, conn))
        core = self._core
        window = lanes[0].conn._proto.window if lanes else core.WINDOW_ITEMS
        plan = PutPlan(core, items, priority, delay, ttr, self._encoding, window, len(lanes),
                       policy.at_least_once)
        if not lanes:
            if plan.next_unit() is None:
                return []
            raise SocketError("no beanstalkd server is available")    # nothing was sent
        try:
            error = self._put_rounds(plan, lanes)
        except BaseException:
            for lane in lanes:      # replies unread: never reuse these connections
                if lane.inflight:
                    self._lost(lane.server, "producer", lane.conn, SocketError("put_many interrupted"))
            raise
        return plan.finish(error)

    def _put_rounds(self, plan, lanes):
        """Send a window to every server, then read the windows sent the round before (so each
        server has one window to work on while the others are read). Returns the exception of
        the items' iterator or of a bad item (raised once the windows sent before it are read)."""
        kind = self._core.KIND_INSERTED
        error = None
        while True:
            fresh = []
            if error is None:
                for lane in lanes:
                    if not lane.open:
                        continue
                    try:
                        unit = plan.next_unit()
                    except Exception as err:
                        error = err
                        break
                    if unit is None:
                        break
                    try:
                        lane.conn._proto.send_chunks(unit.chunks)
                    except _BROKEN as err:
                        err = _socket_error(err)
                        plan.lost(unit, lane.server.name, 0, err)      # some of it may have gone out
                        self._broken(plan, lane, err)
                        continue
                    lane.inflight.append(unit)
                    fresh.append(lane)
                if fresh:
                    _give_way()
            for lane in lanes:
                inflight = lane.inflight
                if not inflight or (len(inflight) == 1 and lane in fresh):
                    continue
                unit = inflight.pop(0)
                entries = []
                draining = False
                try:
                    read_many = lane.conn._proto.read_many
                    done = 0
                    while done < unit.n:
                        done += read_many(unit.n - done, entries, kind, None)
                        last = entries[-1]
                        if last.__class__ is tuple and last[0] == b"DRAINING":
                            draining = True
                            break
                except _BROKEN as err:
                    err = _socket_error(err)
                    plan.replied(unit, lane.server.name, entries)
                    plan.lost(unit, lane.server.name, len(entries), err)
                    self._broken(plan, lane, err)
                    continue
                if plan.replied(unit, lane.server.name, entries):
                    lane.open = False       # it refused: no more windows for it in this batch
                    self._policy.refused(lane.server)
                if draining:
                    # A draining server refuses every later put, and beanstalkd 1.12 may leave
                    # some of those refusals unsent: drop the stream, send the rest elsewhere.
                    plan.refused_rest(unit, done)
                    for other in inflight:
                        plan.unsent(other)
                    del inflight[:]
                    if lane.server.conns.producer is lane.conn:
                        lane.server.conns.producer = None
                    lane.conn.close()
            if not fresh and not any(lane.inflight for lane in lanes) and (
                    error is not None or not plan.again or not any(lane.open for lane in lanes)):
                return error

    def _broken(self, plan, lane, err):
        for unit in lane.inflight:
            plan.lost(unit, lane.server.name, 0, err)
        del lane.inflight[:]
        lane.open = False
        self._lost(lane.server, "producer", lane.conn, err)

    def use(self, name: str) -> str:
        """Use the tube ``name`` for puts on every server; return its name."""
        self._core.check_tube(name)
        name = name if isinstance(name, str) else name.decode("ascii")
        self._using = name
        for server in self._policy.servers:
            conn = server.conns.producer
            if conn is not None:
                try:
                    conn.use(name)
                except SocketError as err:
                    self._lost(server, "producer", conn, err)
        return name

    def using(self) -> str:
        """The tube used for puts."""
        return self._using

    # -- consumer --

    def watch(self, name: str) -> int:
        """Watch the tube ``name`` on every server; return the number of watched tubes."""
        self._core.check_tube(name)
        name = name if isinstance(name, str) else name.decode("ascii")
        if name not in self._watching:
            self._watching.append(name)
        self._each_consumer("watch", name)
        return len(self._watching)

    def ignore(self, name: str) -> int:
        """Stop watching ``name`` on every server; return the number of watched tubes (1 when
        it was the last one, which beanstalkd refuses to ignore)."""
        self._core.check_tube(name)
        name = name if isinstance(name, str) else name.decode("ascii")
        if name in self._watching and len(self._watching) > 1:
            self._watching.remove(name)
            self._each_consumer("ignore", name)
        return len(self._watching)

    def watching(self) -> "List[str]":
        """The watched tubes."""
        return list(self._watching)

    def _each_consumer(self, method, name):
        for server in self._policy.servers:
            for role in ("consumer", "waiter"):
                conn = getattr(server.conns, role)
                if conn is not None:
                    try:
                        getattr(conn, method)(name)
                    except SocketError as err:
                        self._lost(server, role, conn, err)

    def _pool_job(self, job, server):
        job.server = server.name
        return job

    def _reserve_ready(self, first=None):
        """A job ready on some server, asking each in turn (``reserve-with-timeout 0``), or None."""
        order = self._policy.reserve_order()
        if first is not None and first in order:
            order.remove(first)
            order.insert(0, first)
        for server in order:
            conn = self._conn(server, "consumer")
            if conn is None:
                continue
            try:
                job = conn.reserve(0)
            except SocketError as err:
                self._lost(server, "consumer", conn, err)
                continue
            if job is not None:
                self._policy.reserved_from(server)
                return self._pool_job(job, server)
        return None

    def reserve(self, timeout: "Optional[float]" = None) -> "Optional[Job]":
        """Reserve a job from any server, waiting up to ``timeout`` seconds (forever if None);
        return a Job (with ``.server``) or None. Servers take turns, so none is starved."""
        seconds = None if timeout is None else _commands.check_timeout(self._core, timeout)
        deadline = None if seconds is None else time.monotonic() + seconds
        first = None
        while True:
            job = self._reserve_ready(first)
            if job is not None or seconds == 0:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                return None
            first = self._wait(deadline)
            if first is None:
                return None

    def _wait(self, deadline):
        """Block until a server has a job for us: a reserve on every server's waiter
        connection, multiplexed with selectors. Return the first server that had one, or None
        at the deadline. A waiter never keeps a job: the one that got a job releases it at once
        with its own priority (the consumer connection then reserves it: the jobs handed out are
        all the consumer's), and the waiters still waiting are closed, which makes beanstalkd
        give back at once, with their own priority, any job it hands them meanwhile (there is
        no other way to call off a pending reserve)."""
        policy = self._policy
        selector = selectors.DefaultSelector()
        armed = {}      # socket: server
        try:
            while True:
                now = time.monotonic()
                if deadline is None:
                    command = b"reserve\r\n"
                elif now < deadline:
                    command = b"reserve-with-timeout %d\r\n" % max(1, int(deadline - now + 0.999))
                else:
                    command = None
                for server in policy.reserve_order() if command is not None else ():
                    if server in armed.values():
                        continue
                    conn = self._conn(server, "waiter")
                    if conn is None:
                        continue
                    try:
                        conn._proto.send(command)
                    except _BROKEN as err:
                        self._lost(server, "waiter", conn, _socket_error(err))
                        continue
                    armed[conn._proto.sock] = server
                    selector.register(conn._proto.sock, selectors.EVENT_READ, server)
                if not armed:
                    if command is None:
                        return None
                    raise SocketError("no beanstalkd server is available")
                wait = policy.next_probe()      # wake up to take back a server that returns
                if wait is not None:
                    wait = max(wait, _MIN_PROBE_WAIT)
                if deadline is not None:
                    left = max(deadline + _GRACE - time.monotonic(), 0.0)
                    wait = left if wait is None else min(wait, left)
                events = selector.select(wait)
                if not events and deadline is not None and time.monotonic() >= deadline + _GRACE:
                    return None     # a server that does not answer its timed reserve: called off below
                start = policy._reserve_next
                ready = sorted((key.data for key, _ in events), key=lambda s: (s.index - start) % len(policy.servers))
                woken = None
                for server in ready:
                    conn = server.conns.waiter
                    sock = conn._proto.sock
                    selector.unregister(sock)
                    del armed[sock]
                    try:
                        reply = conn._proto.read_reply()
                    except _BROKEN as err:
                        self._lost(server, "waiter", conn, _socket_error(err))
                        continue
                    if reply[0] == b"TIMED_OUT":
                        continue            # the waiter is idle again: kept
                    if reply[0] == b"RESERVED":
                        self._give_back(server, conn, reply)
                        if woken is None:
                            woken = server
                    else:               # not a reply a waiter expects: never reuse it
                        server.conns.waiter = None
                        conn.close()
                if woken is not None:
                    return woken
        finally:
            for sock, server in armed.items():     # call off the reserves still waiting
                conn, server.conns.waiter = server.conns.waiter, None
                if conn is not None:
                    conn.close()
            selector.close()

    def _give_back(self, server, conn, reply):
        """The waiter ``conn`` got a job: release it at once with its own priority, for the
        consumer connection to take."""
        try:
            jid = int(reply[1][0])
            stats = _load_yaml(self._core, conn._command("stats-job", jid), "stats-job")
            conn.release(jid, stats["pri"], 0)
        except (SocketError, UnexpectedResponse, CommandFailed, ValueError, IndexError, KeyError, TypeError) as err:
            # closing the connection gives the job back too (a job that vanished meanwhile:
            # NOT_FOUND; a reply that makes no sense: never reuse the stream)
            if server.conns.waiter is conn:
                server.conns.waiter = None
            conn.close()
            if isinstance(err, SocketError):
                self._policy.failed(server, err)

    def reserve_many(self, n: int, timeout: float = 0) -> "List[Job]":
        """Reserve up to ``n`` jobs from all servers at once: wait up to ``timeout`` seconds for
        the first, then take what is ready without waiting. Return a list of Jobs."""
        core = self._core
        n = core.check_uint32(n, "n")
        seconds = _commands.check_timeout(core, timeout)
        if n == 0:
            return []
        jobs = self._take(n)
        if jobs or seconds == 0:
            return jobs
        job = self.reserve(seconds)
        if job is None:
            return []
        return [job] + (self._take(n - 1) if n > 1 else [])

    def _take(self, n):
        """Up to ``n`` ready jobs: ``reserve-with-timeout 0`` windows written to every server,
        then read; servers that gave a full share get the rest."""
        kind = self._core.KIND_JOB
        live = []
        for server in self._policy.reserve_order():
            conn = self._conn(server, "consumer")
            if conn is not None:
                live.append((server, conn))
        if live:
            self._policy.reserved_from(live[0][0])     # the next batch's rest goes to another server
        jobs = []
        while n > 0 and live:
            sent = []
            for (server, conn), share in zip(live, split(n, len(live))):
                k = min(share, conn._proto.reserve_window)
                if k <= 0:
                    continue
                try:
                    conn._proto.send(_RESERVE0 * k)
                except _BROKEN as err:
                    self._lost(server, "consumer", conn, _socket_error(err))
                    continue
                sent.append((server, conn, k))
            _give_way()
            live = []
            for server, conn, k in sent:
                entries = []
                try:
                    _read_all(conn._proto, k, entries, kind, b"RESERVED")
                except _BROKEN as err:
                    # its jobs were reserved by a connection now closed: the server gives them back
                    self._lost(server, "consumer", conn, _socket_error(err))
                    continue
                name = server.name
                got = [Job(conn, e[0], e[1], True) for e in entries if len(e) == 2]
                for job in got:
                    job.server = name
                jobs.extend(got)
                n -= len(got)
                if len(got) == k:
                    live.append((server, conn))
        return jobs

    # -- jobs --

    def _job_conn(self, job, role="consumer"):
        """(server, connection, jid) for a job: a Job's own connection, else the server's."""
        server, jid = self._policy.server_of(job)
        if isinstance(job, Job):
            return server, job.conn, jid
        conn = self._conn(server, role)
        if conn is None:
            raise SocketError("beanstalkd server %s is not available" % server.name)
        return server, conn, jid

    def _on_job(self, job, method, *args, role="consumer"):
        server, conn, jid = self._job_conn(job, role)
        try:
            return server, getattr(conn, method)(jid, *args)
        except SocketError as err:
            for which in ("consumer", "producer"):      # a Job's connection may be an old one: not counted
                if getattr(server.conns, which) is conn:
                    self._lost(server, which, conn, err)
            raise

    def delete(self, job: "AnyJob") -> None:
        """Delete a job (a JobRef, its string, or a Job)."""
        self._on_job(job, "delete")
        if isinstance(job, Job):
            job.reserved = False

    def release(self, job: "AnyJob", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release a job reserved from this pool."""
        self._on_job(job, "release", priority, delay)
        if isinstance(job, Job):
            job.reserved = False

    def bury(self, job: "AnyJob", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury a job reserved from this pool."""
        self._on_job(job, "bury", priority)
        if isinstance(job, Job):
            job.reserved = False

    def touch(self, job: "AnyJob") -> None:
        """Ask for more time for a job reserved from this pool."""
        self._on_job(job, "touch")

    def kick_job(self, job: "AnyJob") -> None:
        """Kick a buried or delayed job into the ready queue."""
        self._on_job(job, "kick_job", role="producer")

    def stats_job(self, job: "AnyJob") -> "Any":
        """The statistics of a job."""
        return self._on_job(job, "stats_job", role="producer")[1]

    def peek(self, job: "AnyJob") -> "Optional[Job]":
        """The job (not reserved), or None."""
        server, found = self._on_job(job, "peek", role="producer")
        return None if found is None else self._pool_job(found, server)

    def reserve_job(self, job: "AnyJob") -> Job:
        """Reserve a given job (beanstalkd >= 1.12); return it as a Job of the pool."""
        server, jid = self._policy.server_of(job)
        return self._pool_job(self._call(server, "consumer", "reserve_job", jid), server)

    def _peek_any(self, method):
        for server in self._policy.everyone():
            try:
                found = self._call(server, "producer", method)
            except SocketError:
                continue
            if found is not None:
                return self._pool_job(found, server)
        return None

    def peek_ready(self) -> "Optional[Job]":
        """The next ready job of the used tube on the first server (in list order) that has one."""
        return self._peek_any("peek_ready")

    def peek_delayed(self) -> "Optional[Job]":
        """A delayed job of the used tube, from the first server that has one."""
        return self._peek_any("peek_delayed")

    def peek_buried(self) -> "Optional[Job]":
        """A buried job of the used tube, from the first server that has one."""
        return self._peek_any("peek_buried")

    def _jobs_many(self, cmd, jobs, *args):
        """Pipelined ``cmd`` for many jobs, grouped by the connection each goes to, every group's
        window written before any is read. Raises BatchError (a None or the exception per item)."""
        core = self._core
        template, kinds, statuses = _commands.COMMANDS[cmd]
        args = tuple([_commands.check_arg(core, kind, value) for kind, value in zip(kinds[1:], args)])
        ok = next(iter(statuses))
        jobs = list(jobs)
        groups: "Dict[int, Any]" = {}
        outcomes: "List[Any]" = [None] * len(jobs)
        by_name = self._policy.by_name
        if jobs and set(map(type, jobs)) == {Job} and set(map(_server_of_job, jobs)) <= by_name.keys():
            # Jobs of this pool (the batch after a reserve_many): each goes back to its connection
            for i, job in enumerate(jobs):
                conn = job.conn
                group = groups.get(id(conn))
                if group is None:
                    if not conn.connected:
                        outcomes[i] = SocketError("the connection of %r is closed" % (job,))
                        continue
                    group = groups[id(conn)] = (by_name[job.server], conn, [], [])
                group[2].append(i)
                group[3].append(job)
        else:
            targets = []
            for i, job in enumerate(jobs):      # every item checked before a byte is sent
                try:
                    targets.append(self._policy.server_of(job))
                except (InvalidArgument, InvalidType) as err:
                    raise type(err)("item %d: %s" % (i, err)) from None
            for i, (job, (server, jid)) in enumerate(zip(jobs, targets)):
                conn = job.conn if isinstance(job, Job) else self._conn(server, "consumer")
                if conn is None or not conn.connected:
                    outcomes[i] = SocketError("the connection of %s to %s is closed" % (job, server.name))
                    continue
                group = groups.get(id(conn))
                if group is None:
                    group = groups[id(conn)] = (server, conn, [], [])
                group[2].append(i)
                group[3].append(jid)
        kind = core.KIND_STATUS
        work = []
        for server, conn, positions, jids in groups.values():
            work.append([server, conn, positions, core.job_windows(jids, template, args, conn._proto.window), 0])
        while work:
            sent = []
            for entry in work:
                server, conn, positions, windows, done = entry
                window = next(windows, None)
                if window is None:
                    continue
                try:
                    conn._proto.send_chunks(window[0])
                except _BROKEN as err:
                    self._fail_group(entry, _socket_error(err), outcomes)
                    continue
                sent.append((entry, window[1]))
            if sent:
                _give_way()
            for entry, n in sent:
                server, conn, positions, windows, done = entry
                replies = []
                try:
                    _read_all(conn._proto, n, replies, kind, ok)
                except _BROKEN as err:
                    entry[4] += len(replies)
                    self._fail_group(entry, _socket_error(err), outcomes, replies, done)
                    continue
                for p, reply in zip(positions[done:done + n], replies):
                    if reply is not None:
                        outcomes[p] = _commands.outcome(cmd, reply)
                entry[4] = done + n
            work = [entry for entry, _ in sent if entry[4] < len(entry[2])]
        for job, outcome in zip(jobs, outcomes):
            if cmd != "touch" and isinstance(job, Job) and outcome is None:
                job.reserved = False
        if any(isinstance(o, BaseException) for o in outcomes):
            raise BatchError(outcomes)

    def _fail_group(self, entry, err, outcomes, replies=(), done=0):
        server, conn, positions, windows, _ = entry
        for k, p in enumerate(positions[done:]):
            reply = replies[k] if k < len(replies) else err
            outcomes[p] = reply if reply is None or isinstance(reply, BaseException) else \
                _commands.outcome("delete", reply)
        entry[4] = len(positions)
        role = "consumer" if server.conns.consumer is conn else "producer"
        self._lost(server, role, conn, err)

    def delete_many(self, jobs: "Iterable[AnyJob]") -> None:
        """Delete many jobs (JobRefs, their strings, or Jobs), pipelined on every server at once."""
        self._jobs_many("delete", jobs)

    def release_many(self, jobs: "Iterable[AnyJob]", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release many jobs reserved from this pool, pipelined."""
        self._jobs_many("release", jobs, priority, delay)

    def bury_many(self, jobs: "Iterable[AnyJob]", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury many jobs reserved from this pool, pipelined."""
        self._jobs_many("bury", jobs, priority)

    def touch_many(self, jobs: "Iterable[AnyJob]") -> None:
        """Touch many jobs reserved from this pool, pipelined."""
        self._jobs_many("touch", jobs)

    # -- stats and admin --

    def stats_by_server(self) -> "Dict[str, Any]":
        """``{name: stats}`` of every server that answers."""
        return {server.name: stats for server, stats in self._fan_out("stats")}

    def stats(self) -> "Any":
        """The servers' stats merged: counts summed, the other fields (pid, version, uptime,
        ...) listed per server. With ``parse_yaml`` other than True, stats_by_server()."""
        by_server = self.stats_by_server()
        if not all(isinstance(s, dict) for s in by_server.values()):
            return by_server
        return merge_stats(list(by_server.values()))

    def tubes(self) -> "Any":
        """The tubes of every server (their union, in order of first sight)."""
        names: "List[str]" = []
        for _, tubes in self._fan_out("tubes"):
            if not isinstance(tubes, list):
                return tubes
            names.extend(t for t in tubes if t not in names)
        return names

    def stats_tube(self, name: str) -> "Any":
        """A tube's stats merged over the servers that have it (NOT_FOUND when none has)."""
        self._core.check_tube(name)
        found = []
        for server in self._policy.everyone():
            try:
                found.append(self._call(server, "producer", "stats_tube", name))
            except CommandFailed:
                continue
            except SocketError:
                continue
        if not found:
            raise CommandFailed("stats-tube", "NOT_FOUND", [])
        if not all(isinstance(s, dict) for s in found):
            return found
        return merge_stats(found)

    def kick(self, bound: int = 1) -> int:
        """Kick at most ``bound`` jobs of the used tube, spread over the servers by their buried
        (else delayed) counts; return how many were kicked."""
        bound = self._core.check_uint32(bound, "bound")
        servers, counts = [], []
        for server in self._policy.everyone():
            try:
                body = self._call(server, "producer", "_command", "stats-tube", self._using)
            except (CommandFailed, SocketError):
                continue
            stats = _load_yaml(self._core, body, "stats-tube")
            buried = stats.get("current-jobs-buried", 0)
            servers.append(server)
            counts.append(buried or stats.get("current-jobs-delayed", 0))
        kicked = 0
        for server, share in zip(servers, kick_shares(bound, counts)):
            if share:
                try:
                    kicked += self._call(server, "producer", "kick", share)
                except SocketError:
                    continue
        return kicked

    def pause_tube(self, name: str, delay: int) -> None:
        """Pause the tube ``name`` on every server that has it."""
        self._core.check_tube(name)
        self._core.check_uint32(delay, "delay")
        paused = False
        for server in self._policy.everyone():
            try:
                self._call(server, "producer", "pause_tube", name, delay)
                paused = True
            except (CommandFailed, SocketError):
                continue
        if not paused:
            raise CommandFailed("pause-tube", "NOT_FOUND", [])


def _readable(conn):
    """Whether an idle connection has something to read: EOF (the server closed it) or junk."""
    return _has_input(conn._proto.sock)


def _has_input(sock):
    """Whether ``sock`` has something to read now (EOF included); True when it cannot tell."""
    try:
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except ValueError:      # a descriptor past select()'s limit (1024): poll() has none
            if not hasattr(select, "poll"):
                return False
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
    except (OSError, ValueError, TypeError):
        return True


def _read_all(proto, n, results, kind, status):
    """Read ``n`` replies (read_many stops after a reply of another kind: go on)."""
    done = 0
    while done < n:
        done += proto.read_many(n - done, results, kind, status)


def _server_of_job(job):
    return getattr(job, "server", None)
