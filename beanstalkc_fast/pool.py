"""Pool: many beanstalkd servers behind one client (the blocking driver).

beanstalkd does not cluster: distribution is the client's job. A ``Pool`` spreads puts over
its servers, reserves from all of them, and keeps going when one is down. What it decides is
written once for both pools: the commands in ``_poolcommands`` (flows that yield their I/O),
routing, health and batch bookkeeping in ``_poolpolicy``. This module is the blocking I/O
only: it runs those flows, connects, and drives ``Connection``s, for batches spread over
several servers through their ``_link()``.
"""
import selectors
import threading
import time

from . import _commands
from ._defaults import RESERVE0, give_way, host_port
from ._poolcommands import PoolCommands
from ._poolpolicy import BROKEN, UNREACHABLE, JobRef, split
from .connection import Connection, Job
from .exceptions import CommandFailed, SocketError, UnexpectedResponse

__all__ = ["Pool", "JobRef"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Union

_GRACE = 1.0        # seconds a server may answer a timed reserve late before it counts as hung


class _Conns:
    """A server's connections: puts and fan-out commands, reserves (the jobs they hand out
    belong to it), and the waits of a blocking reserve (it never keeps a job)."""
    __slots__ = ("producer", "consumer", "waiter")

    def __init__(self):
        self.producer = self.consumer = self.waiter = None


class Pool(PoolCommands):
    """A pool of beanstalkd servers.

    ``Pool(servers, *, parse_yaml=True, encoding='utf-8', connect_timeout=2.0,
    socket_timeout=None, failure_limit=2, retry_after=5.0, at_least_once=False, keepalive=True, ssl=None,
    server_hostname=None)``

    - ``servers``: addresses ``'host:port'``, ``(host, port)`` or unix socket paths, each
      optionally named (``{'name': address}``) so that a server can move without changing
      its jobs' names; an unnamed server is named by its address as given.
    - Puts go round-robin from a random start (``put_many`` keeps a window on one server);
      ``put(..., key=k)`` pins ``k`` to a server by rendezvous hashing of the names. A server
      that is down, refuses the connection or answers ``DRAINING``, ``OUT_OF_MEMORY`` or
      ``INTERNAL_ERROR`` is skipped; ``JOB_TOO_BIG`` is never retried.
    - A put whose reply was lost after it was written (a reset, a timeout, a reply that cannot
      be parsed) raises ``PutAmbiguous`` (a ``SocketError``) naming the server. With ``at_least_once=True`` it is sent again to
      another server instead: a job may then be inserted twice.
    - Puts return ``JobRef``s (``str(ref) == 'server/jid'``); Jobs reserved from the pool have
      ``.server`` and go back to the connection that reserved them. Methods that take a job
      take a JobRef, its string or a Job; a bare int is refused (ambiguous across servers).
    - A server is ejected after ``failure_limit`` consecutive failures and tried again after
      ``retry_after`` seconds, doubling up to 60 s while it stays down (logged on the
      ``beanstalkc_fast`` logger; ``servers_status()``). The pool starts even with servers down.
    - ``keepalive`` is passed to every connection: with TCP keepalive (the default) a server
      that died silently is found in about a minute, even by a reserve waiting forever.
    - ``ssl``, ``server_hostname``: TLS for every server's connections, as in ``Connection``
      (``server_hostname`` defaults to each server's own host).

    - Threads: one thread at a time. A call that talks to the servers from a thread while
      another thread is inside a call of the same pool raises ``RuntimeError`` at once (a lock
      would make a put wait behind another thread's reserve, maybe forever): use one pool per
      thread. Handing a pool to another thread between calls is fine (a ``Worker`` does);
      ``close()``, ``servers_status()``, ``servers``, ``using()`` and ``watching()`` are never
      refused, and the Jobs it hands out may be used from any thread (each is its
      ``Connection``'s, which threads may share).
    - ``reserve(timeout)`` with every server down waits for one to come back (probing them on
      the schedule above) up to ``timeout``, then returns None; ``reserve(0)`` returns None at
      once. ``stats_by_server()`` gives a down server's ``SocketError`` in place of its stats.
    """

    _job_class = Job
    _roles = _Conns.__slots__
    _consumer_roles = ("consumer", "waiter")

    def __init__(self, servers: "Any", *, parse_yaml: "Union[bool, Callable[[str], Any]]" = True,
                 encoding: "Optional[str]" = "utf-8", connect_timeout: "Optional[float]" = 2.0,
                 socket_timeout: "Optional[float]" = None, failure_limit: int = 2, retry_after: float = 5.0,
                 at_least_once: bool = False, keepalive: bool = True, ssl: "Any" = None,
                 server_hostname: "Optional[str]" = None) -> None:
        self._core = Connection._core
        self._busy = threading.RLock()      # held by the thread inside a call (see _run)
        self._setup(servers, parse_yaml, encoding, connect_timeout, socket_timeout, failure_limit, retry_after,
                    at_least_once, _Conns, keepalive, ssl, server_hostname)
        for server in self._policy.servers:
            self._conn(server, "producer")      # a server that is down now only counts a failure

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: "Any") -> None:
        self.close()

    def close(self) -> None:
        """Close every connection. Never raises; may be called twice."""
        self._closed = True
        for server in self._policy.servers:
            for role in self._roles:
                self._forget(server, role)

    # -- the flows' driver: every call of this driver returns its value at once --

    def _run(self, flow):
        # One thread at a time: the pool's connections, waits and round-robin are not guarded,
        # and a lock would make a put wait behind another thread's reserve (maybe forever).
        # Handing the pool to another thread between calls is fine (a Worker does it).
        if not self._busy.acquire(False):
            raise RuntimeError("this Pool is in use by another thread: a Pool is not shared between threads "
                               "(use one per thread)")
        try:
            value = None
            while True:
                value = flow.send(value)
        except StopIteration as stop:
            return stop.value
        finally:
            self._busy.release()

    @staticmethod
    def _value(value):
        return value

    # -- connections --

    def _conn(self, server, role):
        """The server's connection for ``role``, connected (a probe if the server is down) with
        the pool's tubes; None when it cannot be had (the failure is counted)."""
        if self._closed:
            raise SocketError("the pool is closed")
        conn = getattr(server.conns, role)
        if conn is not None:
            if conn.connected and not conn._stale():
                return conn
            self._forget(server, role)      # closed, or the server closed it: never reused
        if not self._policy.usable(server):
            return None
        host, port = host_port(server.address)
        try:
            conn = Connection(host, port, self._parse_yaml, self._connect_timeout, encoding=self._encoding,
                              socket_timeout=self._socket_timeout, keepalive=self._keepalive, ssl=self._ssl,
                              server_hostname=self._server_hostname)
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
        setattr(server.conns, role, conn)
        self._policy.succeeded(server)
        return conn

    def _conns(self, servers, role):
        return [self._conn(server, role) for server in servers]

    def _forget(self, server, role):
        conn = getattr(server.conns, role)
        setattr(server.conns, role, None)
        if conn is not None:
            conn.close()

    def _lost(self, server, role, conn, err):
        """``conn`` (the server's ``role`` connection) failed: close it and count the failure."""
        if getattr(server.conns, role) is conn:
            setattr(server.conns, role, None)
        if conn is not None:
            conn.close()
        self._policy.failed(server, err)

    def _each(self, method, *args):
        """[(server, result or exception)] of ``method`` on every usable server, in turn."""
        out = []
        for server in self._policy.everyone():
            try:
                out.append((server, self._run(self._call(server, "producer", method, *args))))
            except Exception as err:
                out.append((server, err))
        return out

    def _each_conn(self, roles, method, name):
        for server in self._policy.servers:
            for role in roles:
                conn = getattr(server.conns, role)
                if conn is not None:
                    try:
                        getattr(conn, method)(name)
                    except SocketError as err:
                        self._lost(server, role, conn, err)

    def _give_back(self, job):
        try:
            job.release()   # with its own priority
        except Exception:
            pass            # its connection broke: the server gives it back itself

    # -- put_many: a window to every server, then the replies of the round before --

    def _put_rounds(self, plan, lanes):
        """Send a window to every server, then read the windows sent the round before (so each
        server has one window to work on while the others are read). Returns the exception of
        the items' iterator or of a bad item (raised once the windows sent before it are read)."""
        links = {}
        try:
            for lane in lanes:
                try:
                    links[id(lane)] = lane.conn._link()
                except SocketError as err:
                    lane.open = False
                    self._lost(lane.server, "producer", lane.conn, err)
            return self._rounds(plan, [lane for lane in lanes if id(lane) in links], links)
        except BaseException:
            for lane in lanes:      # replies unread: never reuse these connections
                if lane.inflight:
                    self._lost(lane.server, "producer", lane.conn, SocketError("put_many interrupted"))
            raise
        finally:
            for link in links.values():
                link.close()

    def _rounds(self, plan, lanes, links):
        kind = self._core.KIND_INSERTED
        Batch = self._core.Batch
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
                        links[id(lane)].send(unit.chunks)
                    except BROKEN as lost:
                        plan.lost(unit, lane.server.name, 0, lost)      # some of it may have gone out
                        lane.broken(plan, lost)
                        self._lost(lane.server, "producer", lane.conn, lost)
                        continue
                    lane.inflight.append((unit, []))
                    fresh.append(lane)
                if fresh:
                    give_way()
            for lane in lanes:
                inflight = lane.inflight
                if not inflight or (len(inflight) == 1 and lane in fresh):
                    continue
                unit, entries = inflight.pop(0)
                failure = bad = None
                try:    # a DRAINING ends the window: the rest goes elsewhere (Lane.settle)
                    bad = links[id(lane)].read(Batch(kind, unit.n, entries, None, False, b"DRAINING"))
                except BROKEN as exc:   # the link dropped the connection: a SocketError or ProtocolError
                    failure = exc
                verdict = lane.settle(plan, self._policy, unit, entries, failure, bad)
                if verdict == "lost":
                    self._lost(lane.server, "producer", lane.conn, failure)
                elif verdict == "drop":
                    links.pop(id(lane)).close()
                    if lane.server.conns.producer is lane.conn:
                        self._forget(lane.server, "producer")
                    else:
                        lane.conn.close()
            if not fresh and not any(lane.inflight for lane in lanes) and (
                    error is not None or not plan.again or not any(lane.open for lane in lanes)):
                return error

    # -- reserves --

    def _wait(self, seconds):
        """Wait for a job from any server (``_block``), then take it (``reserve-with-timeout 0``
        on the consumer connection), until the deadline; UNREACHABLE when no server could be
        waited on."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return None
            first = self._block(deadline)
            if first is None or first is UNREACHABLE:
                return first
            job = self._run(self._reserve_ready(first))
            if job is not None:
                return job

    _sleep = staticmethod(time.sleep)

    def _block(self, deadline):
        """Block until a server has a job for us: a reserve on every server's waiter
        connection, multiplexed with selectors. Return the first server that had one, or None
        at the deadline. A waiter never keeps a job: the one that got a job releases it at once
        with its own priority (the consumer connection then reserves it: the jobs handed out are
        all the consumer's), and the waiters still waiting are closed, which makes beanstalkd
        give back at once, with their own priority, any job it hands them meanwhile (there is
        no other way to call off a pending reserve)."""
        policy = self._policy
        selector = selectors.DefaultSelector()
        armed = {}      # socket: (server, link)
        try:
            while True:
                now = time.monotonic()
                if deadline is None:
                    command = b"reserve\r\n"
                elif now < deadline:
                    command = b"reserve-with-timeout %d\r\n" % max(1, int(deadline - now + 0.999))
                else:
                    command = None
                waiting = {server for server, _ in armed.values()}
                for server in policy.reserve_order() if command is not None else ():
                    if server in waiting:
                        continue
                    conn = self._conn(server, "waiter")
                    if conn is None:
                        continue
                    try:
                        link = conn._link()
                    except SocketError as err:
                        self._lost(server, "waiter", conn, err)
                        continue
                    try:
                        link.send([command])
                    except BROKEN as err:
                        link.close()
                        self._lost(server, "waiter", conn, err)
                        continue
                    armed[link.sock] = (server, link)
                    selector.register(link.sock, selectors.EVENT_READ, server)
                if not armed:
                    return None if command is None else UNREACHABLE
                # wake up to take back a server that returns
                wait = policy.probe_wait(None if deadline is None else max(deadline + _GRACE - time.monotonic(), 0.0))
                events = selector.select(wait)
                if not events and deadline is not None and time.monotonic() >= deadline + _GRACE:
                    return None     # a server that does not answer its timed reserve: called off below
                woken = None
                for server in policy.in_turn([key.data for key, _ in events]):
                    conn = server.conns.waiter
                    sock, link = None, None
                    for sock, (armed_server, link) in armed.items():
                        if armed_server is server:
                            break
                    try:
                        reply = link.poll_reply()
                    except BROKEN as err:
                        reply = err
                    if reply is None:
                        continue            # TLS records without a reply: wait on
                    selector.unregister(sock)
                    del armed[sock]
                    if isinstance(reply, BaseException):
                        self._lost(server, "waiter", conn, reply)
                        link.close()
                        continue
                    link.close()
                    if reply[0] == b"TIMED_OUT":
                        continue            # the waiter is idle again: kept
                    jid = _commands.reserved_jid(reply)     # a corrupt job too: the consumer reports it
                    if jid is not None:
                        self._release_waited(server, conn, jid)
                        if woken is None:
                            woken = server
                    else:               # not a reply a waiter expects: never reuse it
                        self._forget(server, "waiter")
                if woken is not None:
                    return woken
        finally:
            for server, link in armed.values():     # call off the reserves still waiting
                link.close()
                self._forget(server, "waiter")
            selector.close()

    def _release_waited(self, server, conn, jid):
        """The waiter ``conn`` got the job ``jid``: release it at once with its own priority, for
        the consumer connection to take."""
        try:
            Job(conn, jid, None, True).release()
        except (SocketError, UnexpectedResponse, CommandFailed, ValueError, IndexError, KeyError, TypeError) as err:
            # closing the connection gives the job back too (a job that vanished meanwhile:
            # NOT_FOUND; a reply that makes no sense: never reuse the stream)
            self._forget(server, "waiter")
            if isinstance(err, SocketError):
                self._policy.failed(server, err)

    def _take(self, n):
        """Up to ``n`` ready jobs: ``reserve-with-timeout 0`` windows written to every server,
        then read; servers that gave a full share get the rest. Returns them and whether a
        reply was not a job (a CorruptJob may be among them)."""
        kind, Batch = self._core.KIND_JOB, self._core.Batch
        live = [(s, c) for s, c in zip(*self._order_conns("consumer")) if c is not None]
        if live:
            self._policy.reserved_from(live[0][0])     # the next batch's rest goes to another server
        jobs = []
        corrupt = False
        while n > 0 and live:
            sent = []
            for (server, conn), share in zip(live, split(n, len(live))):
                try:
                    link = conn._link()
                except SocketError as err:
                    self._lost(server, "consumer", conn, err)
                    continue
                k = min(share, link.reserve_window)
                try:
                    if k > 0:
                        link.send([RESERVE0 * k])
                        sent.append((server, conn, link, k))
                        continue
                except BROKEN as err:
                    self._lost(server, "consumer", conn, err)
                link.close()
            give_way()
            live = []
            for server, conn, link, k in sent:
                entries = []
                name = server.name
                batch = Batch(kind, k, entries, None, True, None, Job._maker(conn, ("server", name)))
                try:
                    link.read(batch)
                except BROKEN as err:
                    # its jobs were reserved by a connection now closed: the server gives them back
                    self._lost(server, "consumer", conn, err)
                    continue
                finally:
                    link.close()
                if not batch.bad:
                    got = entries   # Jobs made by the core, .server set
                else:   # Jobs, and CorruptJobs (reserved by conn all the same): the flow reports them
                    corrupt = True
                    got = [e if e.__class__ is Job else _commands.outcome("reserve-with-timeout", e)
                           for e in entries if e.__class__ is Job or _commands.reserved_jid(e) is not None]
                    for job in got:
                        job.server = name
                jobs.extend(got)
                n -= len(got)
                if not batch.stop:      # every reply a job: it may have more
                    live.append((server, conn))
        return jobs, corrupt

    def _order_conns(self, role):
        order = self._policy.reserve_order()
        return order, self._conns(order, role)

    # -- by-id batches: every group's window written before any is read --

    def _send_groups(self, cmd, groups, args, outcomes):
        core = self._core
        template, _, statuses = _commands.COMMANDS[cmd]
        ok = next(iter(statuses))
        kind, Batch = core.KIND_STATUS, core.Batch
        work = []
        links = []
        try:
            for server, conn, positions, items in groups:
                try:
                    link = conn._link()
                except SocketError as err:
                    for p in positions:
                        outcomes[p] = err
                    continue
                links.append(link)
                work.append([server, conn, positions, core.job_windows(items, template, args, link.window), 0, link])
            while work:
                sent = []
                for entry in work:
                    window = next(entry[3], None)
                    if window is None:
                        continue
                    try:
                        entry[5].send(window[0])
                    except BROKEN as err:
                        self._fail_group(cmd, entry, err, outcomes)
                        continue
                    sent.append((entry, window[1]))
                if sent:
                    give_way()
                for entry, n in sent:
                    positions, done = entry[2], entry[4]
                    replies = []
                    try:
                        bad = entry[5].read(Batch(kind, n, replies, ok))
                    except BROKEN as err:
                        entry[4] += len(replies)
                        self._fail_group(cmd, entry, err, outcomes, replies, done)
                        continue
                    if bad:     # else every reply was the plain success: None, as outcomes has
                        for p, reply in zip(positions[done:done + n], replies):
                            if reply is not None:
                                outcomes[p] = _commands.outcome(cmd, reply)
                    entry[4] = done + n
                work = [entry for entry, _ in sent if entry[4] < len(entry[2])]
        finally:
            for link in links:
                link.close()

    def _fail_group(self, cmd, entry, err, outcomes, replies=(), done=0):
        server, conn, positions = entry[0], entry[1], entry[2]
        for k, p in enumerate(positions[done:]):
            reply = replies[k] if k < len(replies) else err
            outcomes[p] = reply if reply is None or isinstance(reply, BaseException) else \
                _commands.outcome(cmd, reply)
        entry[4] = len(positions)
        role = "consumer" if server.conns.consumer is conn else "producer"
        self._lost(server, role, conn, err)
