"""The asyncio ``Connection`` and ``Job``: one pipelined connection, its consumer channels.

The design is told in the package's docstring (``beanstalkc_fast.aio``).
"""
import asyncio
from collections import deque

from .. import _backend, _commands, _retry
from .._commands import COMMANDS as _COMMANDS, outcome as _outcome, result as _result
from .._defaults import (RESERVE0 as _RESERVE0, DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR,
                         attach_results, check_keepalive, check_on_orphan, check_options, give_way as _give_way,
                         has_input, log, set_keepalive, tcp_host, tls_hostname, unix_path, where)
from .._job import JobData
from ..exceptions import BatchError, CorruptJob, DeadlineSoon, InvalidType, ProtocolError, SocketError

__all__ = ["connect", "Connection", "Job", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_PRIORITY", "DEFAULT_TTR"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, List, Optional, Union
    from .._defaults import Body, JobId, PutItem, YAMLResult

_ENDS_RESERVATION = ("delete", "release", "bury")   # whatever their reply, the job is no longer ours
_TRACK_RESERVE = -1     # the jid of a FIFO entry whose RESERVED reply makes its channel hold the job


def _closed(err=None):
    exc = SocketError(err if err is not None else "connection is closed; call connect() or reconnect()")
    if isinstance(err, BaseException):
        exc.__cause__ = err
    return exc


def _again(err):
    """A fresh copy of a channel's failure for each caller that meets it."""
    exc = type(err)(*err.args)
    exc.__cause__ = err.__cause__
    return exc


def _unsent(err):
    """``err`` for a command that met a broken connection before anything of it was queued."""
    err.written = False
    return err


_UNSENT = object()   # a batch entry whose reply never came


class _Window:
    """A FIFO entry: the replies of one pipelined window, read by the core's ``Batch``."""

    __slots__ = ("fut", "cmd", "batch", "results", "kind", "jids", "stop_error")

    def __init__(self, fut, cmd, batch, jids=None, stop_error=None):
        self.fut = fut
        self.cmd = cmd
        self.batch = batch
        self.results = batch.results    # per reply: the kind's value, or the whole other reply
        self.kind = batch.kind
        self.jids = jids                # the job ids of a job-command window, in order
        self.stop_error = stop_error    # raised when the batch stops at its stop_at status

    def feed(self, reader):
        """Take what is buffered; return True once the window is read."""
        batch = self.batch
        if not batch.feed(reader):
            return False
        if batch.stopped and self.stop_error is not None:    # the channel fails every caller behind it
            raise self.stop_error(self.cmd, batch.stop_at.decode("ascii"), [])
        return True


class _ChannelDriver(asyncio.BufferedProtocol):
    """What a channel does beyond its core's ``AioChannel`` (the reply dispatch, the coalesced
    writes, the timer): waiting while the transport is full, failing and closing."""

    __slots__ = ()

    def connection_lost(self, exc):
        if self.error is None:
            self._conn._lost(_closed(exc) if exc is not None else SocketError("connection closed by the server"))

    def _refuse(self, unsent):
        # The core asks: the channel is closed; raise its failure for this caller.
        err = _again(self.error)
        raise _unsent(err) if unsent else err

    async def writable(self):
        """Wait while the transport's write buffer is above its high-water mark."""
        while self._paused:
            if self.error is not None:
                raise _unsent(_again(self.error))
            fut = self._loop.create_future()
            self._drainers.append(fut)
            await fut
        if self.error is not None:
            raise _unsent(_again(self.error))

    # -- closing --

    def fail(self, err, abort=True):
        """Close (dropping unsent bytes unless not ``abort``); fail every caller still waiting
        for a reply of this channel."""
        if self.error is not None:
            return
        self.error = err
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out = []
        transport = self.transport
        if transport is not None and abort:
            try:
                transport.abort()
            except Exception:
                pass
        fifo, self._fifo = self._fifo, deque()
        for entry in fifo:
            fut = entry[0] if entry.__class__ is tuple else entry.fut
            if not fut.done():
                fut.set_exception(_again(err))
        self.resume_writing()

    def quit(self):
        """Close politely (``quit``, then the transport flushes and closes)."""
        transport = self.transport
        if self.error is None and transport is not None:
            try:
                self.flush()
                transport.write(b"quit\r\n")
                transport.close()
            except Exception:
                pass
        self.fail(_closed(), abort=False)


_CHANNELS: dict = {}    # core module -> its channel class


def _channel_class(core):
    """The channel class of a core: its ``AioChannel`` (compiled or pure) made an
    ``asyncio.BufferedProtocol`` by ``_ChannelDriver``."""
    cls = _CHANNELS.get(core)
    if cls is None:
        cls = _CHANNELS[core] = type("_Channel", (core.AioChannel, _ChannelDriver), {})
    return cls


def default_orphan(cmd, result):
    """The default ``on_orphan``: a warning on the ``beanstalkc_fast`` logger."""
    log().warning(
        "%s: the caller was cancelled after the command was sent; its result %r was dropped", cmd, result)


class Connection:
    """A connection to one beanstalkd server, for asyncio (``await aio.connect(...)``).

    Every method of the sync ``Connection`` is a coroutine here, with the same names,
    arguments, results and exceptions; ``await conn.close()`` never raises and may be called
    twice. ``socket_timeout``: seconds the server may stay silent while replies are due
    (``None``: no limit; a reserve's own timeout comes on top); past it the connection is
    broken: every caller waiting on it gets SocketError and it is closed, as in the sync client.
    ``on_orphan(cmd, result)`` is called for a put whose caller was cancelled after it was sent.
    ``keepalive=True``: TCP keepalive on every socket of the connection (its consumer channels
    too), so that a peer that died silently is found in about a minute (30 s idle, then 3 probes
    10 s apart) even while a reserve waits forever; ``False`` turns it off (unix sockets: never).
    ``ssl``: an ``ssl.SSLContext`` to speak TLS (to a server behind stunnel or haproxy);
    ``server_hostname``: the name the server's certificate must hold (default: ``host``; a unix
    socket has none).
    """

    _core = _backend.impl   # the protocol core module; tests swap it to run both backends

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
                 parse_yaml: "Union[bool, Callable[[str], Any]]" = True, encoding: "Optional[str]" = "utf-8",
                 connect_timeout: "Optional[float]" = None, socket_timeout: "Optional[float]" = None,
                 on_orphan: "Optional[Callable[[str, Any], Any]]" = None,
                 retry: "Optional[_retry.Retry]" = None, keepalive: bool = True,
                 ssl: "Any" = None, server_hostname: "Optional[str]" = None) -> None:
        check_options(parse_yaml, encoding)
        check_on_orphan(on_orphan)
        check_keepalive(keepalive)
        self._server_hostname = tls_hostname(ssl, server_hostname, host)
        self._ssl = ssl
        self._retry = _retry.check(retry)
        self._reviving: "Any" = None    # the future of a reconnect in progress (with a Retry)
        self._closed_by_user = False    # close() was called: no retry reconnects
        self.host = host
        self.port = port
        self._parse_yaml = parse_yaml
        self._encoding = encoding
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._keepalive = keepalive
        self._on_orphan = on_orphan if on_orphan is not None else default_orphan
        self._loop: "Any" = None
        self._main: "Any" = None
        self._consumers: list = []      # consumer channels, opened as reserves need them
        self._opening: "Any" = None     # the future of a consumer channel being opened
        self._held: dict = {}           # job id -> the consumer channel that reserved it
        self._waiters: deque = deque()  # (future, deadline) of reserves waiting for a job
        self._pump: "Any" = None        # the task that keeps one waiting reserve at the server
        self._tasks: set = set()        # background give-backs of orphaned jobs
        self._using = "default"
        self._watching = ["default"]

    async def __aenter__(self) -> "Connection":
        if self._main is None:
            await self.connect()
        return self

    async def __aexit__(self, exc_type: "Any", exc_value: "Any", traceback: "Any") -> None:
        await self.close()

    def __repr__(self) -> str:
        return "<beanstalkc_fast.aio.Connection %s backend=%r %s>" % (
            where(self.host, self.port), _backend.backend_name(self._core),
            "connected" if self.connected else "closed")

    @property
    def connected(self) -> bool:
        """Whether the connection is open (a broken one is closed, never reused)."""
        return self._main is not None and self._main.error is None

    # -- connection management --

    async def _open(self):
        loop = self._loop
        ch = _channel_class(self._core)(self)
        path = unix_path(self.host)
        # asyncio wants a server_hostname with ssl on a unix socket: "" stands for none
        tls = {} if self._ssl is None else {"ssl": self._ssl, "server_hostname": self._server_hostname or ""}
        if path is not None:
            coro = loop.create_unix_connection(lambda: ch, path, **tls)
        else:   # TCP_NODELAY is asyncio's default
            coro = loop.create_connection(lambda: ch, tcp_host(self.host), self.port, **tls)
        try:
            if self._connect_timeout is None:
                await coro
            else:
                await asyncio.wait_for(coro, self._connect_timeout)
        except (OSError, asyncio.TimeoutError) as err:
            raise _closed(err) from err
        sock = ch.transport.get_extra_info("socket")
        if path is None and sock is not None:
            try:
                set_keepalive(sock, self._keepalive)
            except OSError as err:
                ch.fail(_closed(err))
                raise _closed(err) from err
        return ch

    async def connect(self) -> None:
        """Connect to the server (closing any previous connection first)."""
        await self.close()
        self._loop = asyncio.get_running_loop()
        self._main = await self._open()
        self._using = "default"
        self._watching = ["default"]
        self._closed_by_user = False

    async def reconnect(self) -> None:
        """Close, connect again and restore the used tube and the watched tubes. A failure
        leaves the connection closed and keeps the tubes for the next reconnect()."""
        self._closed_by_user = True     # as close(): a retry's reconnect gives way to this one
        while self._reviving is not None:
            await asyncio.shield(self._reviving)
        await self._reopen()
        self._closed_by_user = False

    async def _reopen(self):
        self._shut()
        self._loop = asyncio.get_running_loop()
        self._main = ch = await self._open()
        # Nothing awaited since the channel came: the tubes are restored by the first commands
        # queued on it, before any other coroutine's.
        cmds = [("use", self._using)] if self._using != "default" else []
        cmds += [("watch", name) for name in self._watching if name != "default"]
        if "default" not in self._watching:
            cmds.append(("ignore", "default"))
        futs = [ch.send(_commands.encode(self._core, cmd, name), cmd) for cmd, name in cmds]
        try:
            for (cmd, _), fut in zip(cmds, futs):
                _result(cmd, await fut)
        except BaseException:
            self._lost(_closed())
            raise

    async def _revive(self):
        """With a Retry: reconnect a lost connection once for all the coroutines that met it."""
        while self._reviving is not None:
            await asyncio.shield(self._reviving)
        if self.connected:
            return
        if self._closed_by_user:
            raise _closed()
        fut = self._reviving = asyncio.get_running_loop().create_future()
        try:
            await self._reopen()
            if self._closed_by_user:    # close() or reconnect() came meanwhile: they win
                self._shut()
                raise _closed()
        finally:
            self._reviving = None
            fut.set_result(None)

    async def _retried(self, data, err, attempt, *args):
        """A command (``data``; None: a reserve) met a broken connection (``err``): with a
        Retry, reconnect and run ``attempt(*args)`` again where that cannot change the queue
        twice. (Callers hand the attempt over with its arguments, not as a closure: a closure
        would make their hot path slower even when nothing fails.)"""
        written = getattr(err, "written", True)
        if written and data is not None and not _retry.resendable(data):
            raise _retry.written_and_lost(data, err, self._server())
        if self._closed_by_user:
            raise err
        for wait in self._retry.delays():
            if wait:
                await asyncio.sleep(wait)
            if self._closed_by_user:
                raise err
            try:
                await self._revive()
            except SocketError as again:    # not reconnected: nothing was sent
                err = again
                continue
            try:
                return await attempt(*args)
            except SocketError as again:
                err = again
                if getattr(again, "written", True) and data is not None and not _retry.resendable(data):
                    raise _retry.written_and_lost(data, again, self._server())
        raise _retry.gave_up(err, self._retry.attempts)

    async def _call_again(self, data, cmd, err, jid=None):
        return await self._retried(data, err, self._call_main, data, cmd, jid)

    async def _call_main(self, data, cmd, jid):
        return await self._call(self._channel(), data, cmd, jid)

    async def _reserve_again(self, seconds, err):
        return await self._retried(None, err, self._reserve, seconds)

    async def _reserve_many_again(self, n, seconds, jobs):
        del jobs[:]
        await self._reserve_many(n, seconds, jobs)

    def _channel_error(self):
        try:
            self._channel()
        except SocketError as err:
            return err
        return _unsent(_closed())

    def _server(self):
        return self.host if unix_path(self.host) is not None else "%s:%s" % (self.host, self.port)

    async def close(self) -> None:
        """Close the connection and its consumer channels. Never raises; may be called twice."""
        self._closed_by_user = True
        try:
            self._shut()
        except Exception:
            pass

    def _shut(self):
        main, self._main = self._main, None
        channels = ([main] if main is not None else []) + self._consumers
        self._consumers = []
        for ch in channels:
            ch.quit()
        self._reset(_closed())

    def _timed_out(self, limit):
        """A channel's server stayed silent past socket_timeout (``limit`` seconds)."""
        self._lost(_closed(TimeoutError("no reply from the server in %g s" % limit)))

    def _lost(self, err):
        """A channel broke (EOF, reset, timeout, bad framing): fail every caller and close all."""
        main = self._main
        for ch in ([main] if main is not None else []) + self._consumers:
            ch.fail(err)
        self._consumers = []
        self._reset(err)

    def _reset(self, err):
        waiters, self._waiters = self._waiters, deque()
        for fut, _ in waiters:
            if not fut.done():
                fut.set_exception(_again(err))
        self._held = {}
        pump, self._pump = self._pump, None
        if pump is not None and not pump.done() and pump is not _current_task():
            pump.cancel()

    def _channel(self):
        ch = self._main
        if ch is None:
            raise _unsent(_closed())
        if ch.error is not None:    # broken: no new channel may open either, until reconnect()
            raise _unsent(_again(ch.error))
        return ch

    # -- the interface of pools: batches they drive over several connections at once --

    def _stale(self):
        """Whether this connection, idle, has input: EOF (the server closed it, and the loop
        has not seen it yet) or junk. A put written there would be ambiguous for nothing."""
        ch = self._main
        if ch is None or ch._fifo or ch.transport is None:
            return False
        return has_input(ch.transport.get_extra_info("socket"))

    def _send_window(self, chunks, batch):
        """Queue a window (a list of buffers) whose replies ``batch`` (a ``_Window``) takes;
        it goes out at the next ``_flush()`` or loop iteration."""
        self._channel().send_batch(chunks, batch)

    def _flush(self):
        """Write what this loop iteration queued now."""
        ch = self._main
        if ch is not None:
            ch.flush()

    async def _reserve_window(self, k, *extra):
        """Write a window of ``k`` ``reserve-with-timeout 0`` on a consumer channel now (a pool
        writes one to every server before it awaits any reply); return the channel and the
        ``_Window`` whose ``fut`` is done once its replies are read (``_reserved``). ``extra``:
        ``(name, value)`` attributes the core sets on each Job besides its own."""
        ch = await self._consumer(False)
        if ch._paused:
            await ch.writable()
        window = _Window(self._loop.create_future(), "reserve-with-timeout",
                         self._core.Batch(self._core.KIND_JOB, k, [], None, True, None,
                                          Job._maker(self, ("_channel", ch), *extra)))
        ch.send_batch([_RESERVE0 * k], window)
        ch.flush()
        return ch, window

    def _reserved(self, ch, window):
        """The Jobs and CorruptJobs (reserved by ``ch`` too) of a window of reserves read whole."""
        if not window.batch.bad:
            return window.results   # Jobs made by the core
        return [r for r in self._outcomes("reserve-with-timeout", window.results, ch)
                if isinstance(r, (Job, CorruptJob))]

    def _drop_window(self, ch, window):
        """The caller of ``window`` is gone: the jobs it reserved go back (``_return_job``)."""
        fut = window.fut
        if fut.cancel() or fut.cancelled():
            return      # its replies are given back as they come
        if fut.exception() is None:
            self._orphan_batch(ch, window)

    def _return_taken(self, jobs):
        for job in jobs:    # already taken for a caller that is gone
            if isinstance(job, (Job, CorruptJob)):
                self._return_job(job)

    def _return_job(self, job):
        """A Job of this connection whose caller is gone: the next coroutine waiting for a job
        takes it, else it is released at once with its own priority. A CorruptJob this
        connection reserved is released (the next reserve reports it again)."""
        if isinstance(job, CorruptJob):
            ch = self._held.get(job.jid)
            if ch is not None:
                self._release_later(ch, job.jid)
            return
        self._deliver(job._channel, job.jid, job.body_bytes)

    # -- the core of every command --

    async def _call(self, ch, data, cmd, jid=None):
        if ch._paused:
            await ch.writable()
        fut = ch.send(data, cmd, jid)
        try:
            return await fut
        except asyncio.CancelledError:
            self._late(ch, cmd, fut)
            raise

    def _late(self, ch, cmd, fut):
        # Cancelled after its reply came but before it resumed: the reply is an orphan too.
        if not fut.cancelled() and fut.exception() is None:
            self._orphan(ch, cmd, fut.result())

    async def _command(self, cmd, *args):
        data = _commands.encode(self._core, cmd, *args) if args else _COMMANDS[cmd][0]
        try:
            reply = await self._call(self._channel(), data, cmd)
        except SocketError as err:
            if self._retry is None:
                raise
            reply = await self._call_again(data, cmd, err)
        return _result(cmd, reply)

    async def _yaml(self, cmd, *args):
        return _commands.yaml_value(self._core, self._parse_yaml, cmd, await self._command(cmd, *args))

    def _settle(self, ch, cmd, jid, reply):
        # At reply time, whether or not its caller still waits: who holds which job.
        if jid == _TRACK_RESERVE:
            reserved = _commands.reserved_jid(reply)    # a corrupt job is reserved by ch too
            if reserved is not None:
                self._hold(ch, reserved)
        else:
            self._forget(jid)

    def _settle_batch(self, ch, batch):
        cmd, fut = batch.cmd, batch.fut
        if batch.jids is not None:
            if cmd in _ENDS_RESERVATION:
                for jid in batch.jids:
                    self._forget(jid)
        elif batch.kind == self._core.KIND_JOB:
            for entry in batch.results:
                if entry.__class__ is Job:      # made by the core (see _reserve_many)
                    self._hold(ch, entry.jid)
                elif len(entry) == 2:
                    self._hold(ch, entry[0])
                else:
                    reserved = _commands.reserved_jid(entry)
                    if reserved is not None:
                        self._hold(ch, reserved)
        if not fut.done():
            fut.set_result(batch)
        else:
            self._orphan_batch(ch, batch)

    def _orphan_batch(self, ch, batch):
        if batch.cmd == "put":
            for entry in batch.results:
                if entry.__class__ is int:
                    self._report("put", entry)
        elif batch.kind == self._core.KIND_JOB:
            for entry in batch.results:
                if entry.__class__ is Job:
                    self._deliver(ch, entry.jid, entry.body_bytes)
                elif len(entry) == 2:
                    self._deliver(ch, entry[0], entry[1])
                else:
                    self._release_later(ch, _commands.reserved_jid(entry))

    def _hold(self, ch, jid):
        old = self._held.get(jid)
        if old is not None:
            old.held.discard(jid)
        self._held[jid] = ch
        ch.held.add(jid)

    def _forget(self, jid):
        ch = self._held.pop(jid, None)
        if ch is not None:
            ch.held.discard(jid)

    def _orphan(self, ch, cmd, reply):
        """The reply of a caller that is gone: report a put's job, pass on or give back a reserved one."""
        if reply.__class__ is int:  # a put's job id (the core reads INSERTED so)
            self._report(cmd, reply)
            return
        try:
            value = _result(cmd, reply)
        except CorruptJob as err:   # nobody will bury it: back it goes, for the next reserve to report
            if cmd.startswith("reserve"):
                self._release_later(ch, err.jid)
            return
        except Exception:
            return
        if cmd == "put":
            self._report(cmd, value)
        elif value is not None and cmd.startswith("reserve"):
            self._deliver(ch, value[0], value[1])

    def _report(self, cmd, value):
        try:
            self._on_orphan(cmd, value)
        except Exception as err:
            self._loop.call_exception_handler({"message": "on_orphan(%r, %r) failed" % (cmd, value),
                                               "exception": err})

    def _deliver(self, ch, jid, body):
        # A job reserved on ch for nobody: the first coroutine waiting for one takes it, else back it goes.
        waiters = self._waiters
        while waiters:
            fut, _ = waiters.popleft()
            if not fut.done():
                fut.set_result(Job(self, jid, body, True, ch))
                return
        self._release_later(ch, jid)

    def _release_later(self, ch, jid):
        # Release a job reserved on ch for nobody, with its own priority, in the background.
        if jid is None:
            return
        task = self._loop.create_task(self._give_back(ch, jid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self, ch, jid):
        """Release a job nobody takes, with its own priority, at once."""
        try:
            priority = _commands.priority_of(self._core, _result("stats-job", await ch.send(
                _commands.encode(self._core, "stats-job", jid), "stats-job")))
            await ch.send(_commands.encode(self._core, "release", jid, priority, 0), "release", jid)
        except Exception:
            pass    # the channel broke: the server releases the job itself

    # -- consumer channels --

    async def _consumer(self, waiting):
        """A consumer channel for a reserve: one not blocked by a waiting reserve; for a reserve
        that may wait (``waiting``), also idle and holding no job, and then marked blocked."""
        while True:
            main = self._channel()      # closed or broken: SocketError
            for ch in self._consumers:
                if not ch.blocked and (not waiting or not (ch.held or ch._fifo)):
                    ch.blocked = waiting
                    return ch
            if self._opening is None:
                self._opening = self._loop.create_future()
                try:
                    ch = await self._open()
                    if self._main is not main or main.error is not None:   # closed meanwhile
                        ch.quit()
                        raise _closed(main.error)
                    if self._watching != ["default"]:
                        for name in self._watching:
                            self._fire(ch, "watch", name)
                        if "default" not in self._watching:
                            self._fire(ch, "ignore", "default")
                    self._consumers.append(ch)
                finally:
                    opening, self._opening = self._opening, None
                    opening.set_result(None)
            else:
                await asyncio.shield(self._opening)

    def _fire(self, ch, cmd, *args):
        # A command whose reply nobody awaits (tube changes of the consumer channels).
        fut = ch.send(_commands.encode(self._core, cmd, *args), cmd)
        fut.add_done_callback(_ignore)

    async def _pump_waiters(self):
        """Keep one reserve that may wait at the server while coroutines wait for a job."""
        waiters = self._waiters
        loop = self._loop
        try:
            while True:
                while waiters and waiters[0][0].done():
                    waiters.popleft()
                if not waiters:
                    return
                head, deadline = waiters[0]
                ch = await self._consumer(True)
                if deadline is None:
                    data, cmd, ch.block_wait = b"reserve\r\n", "reserve", None
                else:
                    wait = max(0, int(deadline - loop.time() + 0.999))
                    data, cmd, ch.block_wait = b"reserve-with-timeout %d\r\n" % wait, "reserve-with-timeout", wait
                try:
                    reply = await ch.send(data, cmd, _TRACK_RESERVE)
                finally:
                    ch.blocked = False
                try:
                    value = _result(cmd, reply)
                except Exception as err:    # DEADLINE_SOON, CorruptJob or an unexpected reply: the waiting caller's
                    if not head.done():
                        head.set_exception(err)
                    elif isinstance(err, CorruptJob):
                        self._release_later(ch, err.jid)
                    continue
                if value is not None:
                    self._deliver(ch, value[0], value[1])
                elif not head.done():
                    head.set_result(None)
        except BaseException as err:
            for fut, _ in waiters:
                if not fut.done():
                    fut.set_exception(_again(err) if isinstance(err, Exception) else _closed())
            waiters.clear()
            if not isinstance(err, Exception):
                raise
        finally:
            if self._pump is _current_task():
                self._pump = None

    # -- producer --

    async def put(self, body: "Body", priority: int = DEFAULT_PRIORITY, delay: int = 0,
                  ttr: int = DEFAULT_TTR) -> int:
        """Put a job into the used tube; return its id."""
        ch = self._main
        # The core checks, encodes and queues it; None: the channel cannot take it now.
        fut = None if ch is None else ch.put(body, priority, delay, ttr, self._encoding)
        if fut is None:
            return await self._put_slow(body, priority, delay, ttr)
        try:
            value = await fut
        except asyncio.CancelledError:
            self._late(ch, "put", fut)
            raise
        except SocketError as err:
            if self._retry is None:
                raise
            value = await self._call_again(self._put_data(body, priority, delay, ttr), "put", err)
        return value if value.__class__ is int else _result("put", value)

    def _put_data(self, body, priority, delay, ttr):
        core = self._core
        body = core.check_body(body, self._encoding)
        if len(body) < core.BIG_BODY:
            return core.encode_put(body, priority, delay, ttr)
        return b"".join(core.put_chunks(body, priority, delay, ttr))

    async def _put_slow(self, body, priority, delay, ttr):
        """A put the channel could not take at once: closed (SocketError, or a Retry's
        reconnection), or its transport full (wait until it drains)."""
        data = self._put_data(body, priority, delay, ttr)
        ch = self._main
        try:
            if ch is None:
                raise _unsent(_closed())
            if ch._paused:
                await ch.writable()
            fut = ch.send(data, "put")
        except SocketError as err:
            if self._retry is None:
                raise
            value = await self._call_again(data, "put", err)
            return value if value.__class__ is int else _result("put", value)
        try:
            value = await fut
        except asyncio.CancelledError:
            self._late(ch, "put", fut)
            raise
        except SocketError as err:
            if self._retry is None:
                raise
            value = await self._call_again(data, "put", err)
        return value if value.__class__ is int else _result("put", value)

    async def use(self, name: str) -> str:
        """Use the tube ``name`` for puts; return its name."""
        self._using = await self._command("use", name)
        return self._using

    async def using(self) -> str:
        """Return the name of the tube used for puts."""
        return await self._command("list-tube-used")

    # -- consumer --

    def _job(self, ch, value):
        return Job(self, value[0], value[1], True, ch)

    async def reserve(self, timeout: "Optional[float]" = None) -> "Optional[Job]":
        """Reserve a job from the watched tubes, waiting up to ``timeout`` seconds (forever if
        None). Return a Job, or None on timeout; raise DeadlineSoon. A corrupt job raises
        CorruptJob, as in the sync client: it stays reserved by the channel that reserved it,
        where ``bury(err.jid)`` and ``delete(err.jid)`` go."""
        seconds = None if timeout is None else _commands.check_timeout(self._core, timeout)
        try:
            return await self._reserve(seconds)
        except SocketError as err:
            if self._retry is None:
                raise
            return await self._reserve_again(seconds, err)

    async def _reserve(self, seconds):
        waiters = self._waiters
        while waiters and waiters[0][0].done():
            waiters.popleft()
        if seconds == 0 or not waiters:
            # First what is ready now, pipelined with the other callers: never waits at the server.
            ch = await self._consumer(False)
            cmd = "reserve-with-timeout"
            value = _result(cmd, await self._call(ch, _RESERVE0, cmd, _TRACK_RESERVE))
            if value is not None or seconds == 0:
                return None if value is None else self._job(ch, value)
        loop = self._loop
        fut = loop.create_future()
        waiters.append((fut, None if seconds is None else loop.time() + seconds))
        timer = None if seconds is None else loop.call_later(seconds, _expire, fut)
        if self._pump is None:
            self._pump = loop.create_task(self._pump_waiters())
        try:
            return await fut
        except asyncio.CancelledError:
            job = None if fut.cancelled() or fut.exception() is not None else fut.result()
            if job is not None:     # it came, but its caller is gone: the next waiter's, or back it goes
                self._deliver(job._channel, job.jid, job.body_bytes)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def reserve_job(self, jid: "JobId") -> "Job":
        """Reserve the job ``jid`` whatever its state (beanstalkd >= 1.12); return a Job."""
        data = _commands.encode(self._core, "reserve-job", jid)
        try:
            return await self._reserve_job(data)
        except SocketError as err:
            if self._retry is None:
                raise
            return await self._retried(None, err, self._reserve_job, data)

    async def _reserve_job(self, data):
        ch = await self._consumer(False)
        return self._job(ch, _result("reserve-job", await self._call(ch, data, "reserve-job", _TRACK_RESERVE)))

    async def watch(self, name: str) -> int:
        """Watch the tube ``name``; return the number of watched tubes."""
        count = await self._command("watch", name)
        name = name if isinstance(name, str) else name.decode("ascii")
        if name not in self._watching:
            self._watching.append(name)
        for ch in self._consumers:
            self._fire(ch, "watch", name)
        return count

    async def ignore(self, name: str) -> int:
        """Stop watching the tube ``name``; return the number of watched tubes
        (1 when it was the last one, which beanstalkd refuses to ignore)."""
        data = _commands.encode(self._core, "ignore", name)
        try:
            reply = await self._call(self._channel(), data, "ignore")
        except SocketError as err:
            if self._retry is None:
                raise
            reply = await self._call_again(data, "ignore", err)
        count = _result("ignore", reply)
        if reply[0] == b"WATCHING":
            name = name if isinstance(name, str) else name.decode("ascii")
            if name in self._watching:
                self._watching.remove(name)
            for ch in self._consumers:
                self._fire(ch, "ignore", name)
        return count

    async def watching(self) -> "YAMLResult":
        """Return the list of watched tubes."""
        return await self._yaml("list-tubes-watched")

    async def tubes(self) -> "YAMLResult":
        """Return the list of all existing tubes."""
        return await self._yaml("list-tubes")

    # -- jobs --

    async def _job_command(self, cmd, jid, *args, ch=None):
        data = _commands.encode(self._core, cmd, jid, *args)
        jid = self._core.check_jid(jid)
        track = jid if cmd in _ENDS_RESERVATION else None
        try:
            if ch is None or jid not in ch.held:
                ch = self._held.get(jid) or self._channel()
            reply = await self._call(ch, data, cmd, track)
        except SocketError as err:
            if self._retry is None:
                raise
            reply = await self._call_again(data, cmd, err, track)
        return _result(cmd, reply)

    async def delete(self, jid: "JobId") -> None:
        """Delete the job ``jid``."""
        await self._job_command("delete", jid)

    async def release(self, jid: "JobId", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release the reserved job ``jid`` back to the ready (or delayed) queue."""
        await self._job_command("release", jid, priority, delay)

    async def bury(self, jid: "JobId", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury the reserved job ``jid``."""
        await self._job_command("bury", jid, priority)

    async def touch(self, jid: "JobId") -> None:
        """Ask for more time to work on the reserved job ``jid``."""
        await self._job_command("touch", jid)

    async def kick(self, bound: int = 1) -> int:
        """Kick at most ``bound`` buried (else delayed) jobs of the used tube; return how many."""
        return await self._command("kick", bound)

    async def kick_job(self, jid: "JobId") -> None:
        """Kick the buried or delayed job ``jid`` into the ready queue."""
        await self._command("kick-job", jid)

    async def _peek(self, cmd, *args):
        found = await self._command(cmd, *args)
        return None if found is None else Job(self, found[0], found[1], False)

    async def peek(self, jid: "JobId") -> "Optional[Job]":
        """Return the job ``jid`` (not reserved), or None."""
        return await self._peek("peek", jid)

    async def peek_ready(self) -> "Optional[Job]":
        """Return the next ready job of the used tube, or None."""
        return await self._peek("peek-ready")

    async def peek_delayed(self) -> "Optional[Job]":
        """Return the delayed job of the used tube with the shortest delay left, or None."""
        return await self._peek("peek-delayed")

    async def peek_buried(self) -> "Optional[Job]":
        """Return the next buried job of the used tube, or None."""
        return await self._peek("peek-buried")

    # -- stats and admin --

    async def stats(self) -> "YAMLResult":
        """Return the server's statistics (a dict with ``parse_yaml=True``)."""
        return await self._yaml("stats")

    async def stats_tube(self, name: str) -> "YAMLResult":
        """Return the statistics of the tube ``name``."""
        return await self._yaml("stats-tube", name)

    async def stats_job(self, jid: "JobId") -> "YAMLResult":
        """Return the statistics of the job ``jid``."""
        return await self._yaml("stats-job", jid)

    async def pause_tube(self, name: str, delay: int) -> None:
        """Pause the tube ``name`` for ``delay`` seconds (0 unpauses)."""
        await self._command("pause-tube", name, delay)

    # -- batches --

    async def _pipeline(self, ch, cmd, windows, kind, status, jids_of=None, reserves: "Any" = False, job=None,
                        yield_cpu=True):
        """Send each ``(chunks, n)`` window of ``windows`` (waiting while the transport is
        full), then wait for every reply. Return the per-item entries (as the core's take
        gives them) and whether any is another reply. ``reserves``: a list, for windows of
        reserves; True is appended to it when a reply was no job (TIMED_OUT...); ``job``: the
        Batch's, to have the core make the reserved jobs. ``yield_cpu`` False: no give-way once
        written (a pool gives way once, after every server's windows).
        A caller cancelled meanwhile leaves its windows' replies to be read and dropped (a
        put's job reported to on_orphan)."""
        Batch = self._core.Batch
        batches = []
        try:
            try:
                for chunks, n in windows:
                    if ch._paused:
                        await ch.writable()
                    batch = _Window(self._loop.create_future(), cmd,
                                    Batch(kind, n, [], status, reserves is not False, None, job),
                                    None if jids_of is None else jids_of(n))
                    ch.send_batch(chunks, batch)
                    batches.append(batch)
            except (SocketError, ProtocolError):
                raise
            except Exception as err:    # a bad item, or the caller's iterator failed: the windows sent stand
                for batch in batches:
                    await batch.fut
                attach_results(err, [r for b in batches for r in b.results] or None)
                raise
            if batches:
                ch.flush()
                if yield_cpu:
                    _give_way()
            for batch in batches:
                await batch.fut
        except BaseException as err:
            for batch in batches:
                fut = batch.fut
                if fut.cancel() or fut.cancelled():
                    continue    # the replies still due are read and dropped (reported) as they come
                if fut.exception() is None and not isinstance(err, Exception):
                    self._orphan_batch(ch, batch)   # the caller was cancelled: its results are orphans
            if isinstance(err, SocketError):
                attach_results(err, [r for b in batches for r in b.results])   # what was confirmed: a prefix
            raise
        if reserves is not False and any(b.batch.stop for b in batches):
            reserves.append(True)   # a reply that was no job: no window should follow
        return [r for b in batches for r in b.results], any(b.batch.bad for b in batches)

    def _outcomes(self, cmd, entries, ch=None):
        out = []
        for entry in entries:
            if entry is None or entry.__class__ is int or isinstance(entry, Job):
                out.append(entry)
            elif len(entry) == 2:
                out.append(Job(self, entry[0], entry[1], True, ch))
            else:
                out.append(_outcome(cmd, entry))
        return out

    async def put_many(self, items: "Iterable[PutItem]", priority: int = DEFAULT_PRIORITY, delay: int = 0,
                       ttr: int = DEFAULT_TTR) -> "List[int]":
        """Put many jobs, pipelined; return their ids in order (as the sync ``put_many``)."""
        core = self._core
        if isinstance(items, (str, bytes, bytearray, memoryview)):
            raise InvalidType("put_many takes an iterable of bodies, not a single %s" % type(items).__name__)
        for value, what in ((priority, "priority"), (delay, "delay"), (ttr, "ttr")):
            core.check_uint32(value, what)
        windows = core.put_windows(items, priority, delay, ttr, self._encoding, core.WINDOW_ITEMS)
        ch = self._main
        if (ch is None or ch.error is not None) and self._retry is not None and not self._closed_by_user:
            await self._retried(None, self._channel_error(), self._revive)    # nothing sent yet
        ch = self._channel()
        try:
            entries, bad = await self._pipeline(ch, "put", windows, core.KIND_INSERTED, None)
        except Exception as err:
            _map_results(err, lambda r: self._outcomes("put", r))
            raise
        if not bad:
            return entries
        outcomes = self._outcomes("put", entries)
        raise BatchError(outcomes)

    async def _jobs_many(self, cmd, items, *args, yield_cpu=True):
        core = self._core
        template, kinds, statuses = _COMMANDS[cmd]
        args = tuple([_commands.check_arg(core, kind, value) for kind, value in zip(kinds[1:], args)])
        items = list(items)
        jids = [_index_jid(core, item, i) for i, item in enumerate(items)]    # all checked before a byte is sent
        ok = next(iter(statuses))
        groups: dict = {}   # channel -> positions of its jobs
        main = self._main
        if (main is None or main.error is not None) and self._retry is not None and not self._closed_by_user:
            await self._retried(None, self._channel_error(), self._revive)    # nothing sent yet
        main = self._channel()
        for i, jid in enumerate(jids):
            groups.setdefault(self._held.get(jid) or main, []).append(i)
        entries: list = [_UNSENT] * len(jids)  # None would read as a success
        bad = False

        async def run(ch, positions):
            ids = [jids[i] for i in positions]
            taken = iter(ids)
            got, worse = await self._pipeline(ch, cmd, core.job_windows(ids, template, args, core.WINDOW_ITEMS),
                                              core.KIND_STATUS, ok, lambda n: [next(taken) for _ in range(n)],
                                              yield_cpu=yield_cpu)
            for i, entry in zip(positions, got):
                entries[i] = entry
            return worse

        try:
            if len(groups) == 1:
                ((ch, positions),) = groups.items()
                bad = await run(ch, positions)
            elif groups:
                bad = any(await asyncio.gather(*[run(ch, positions) for ch, positions in groups.items()]))
        finally:
            if cmd != "touch":
                for item, entry in zip(items, entries):
                    if isinstance(item, Job) and (entry is None or (entry is not _UNSENT and entry[0] == b"BURIED")):
                        item.reserved = False
        if bad:
            outcomes = self._outcomes(cmd, entries)
            if any(isinstance(r, BaseException) for r in outcomes):
                raise BatchError(outcomes)

    async def delete_many(self, jids: "Iterable[JobId]") -> None:
        """Delete many jobs (ids or Jobs), pipelined."""
        await self._jobs_many("delete", jids)

    async def release_many(self, jids: "Iterable[JobId]", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release many reserved jobs (ids or Jobs), pipelined."""
        await self._jobs_many("release", jids, priority, delay)

    async def bury_many(self, jids: "Iterable[JobId]", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury many reserved jobs (ids or Jobs), pipelined."""
        await self._jobs_many("bury", jids, priority)

    async def touch_many(self, jids: "Iterable[JobId]") -> None:
        """Touch many reserved jobs (ids or Jobs), pipelined."""
        await self._jobs_many("touch", jids)

    async def reserve_many(self, n: int, timeout: float = 0) -> "List[Job]":
        """Reserve up to ``n`` jobs: wait up to ``timeout`` seconds for the first, then take
        what is ready without waiting. Return a list of Jobs (``[]`` when none came).

        Raises DeadlineSoon when the first reserve reports it (later ones just end the batch).
        A corrupt job does not end the batch: every reply is read, then BatchError is raised
        whose ``results`` hold each Job or ``CorruptJob`` in order (those jobs stay reserved).
        """
        core = self._core
        n = core.check_uint32(n, "n")
        seconds = _commands.check_timeout(core, timeout)
        jobs: list = []
        if n == 0:
            return jobs
        try:
            await self._reserve_many(n, seconds, jobs)
        except asyncio.CancelledError:
            self._return_taken(jobs)
            raise
        except SocketError as err:
            if self._retry is None:
                raise
            del jobs[:]     # the jobs taken died with the connection: their reservations are gone
            try:
                await self._retried(None, err, self._reserve_many_again, n, seconds, jobs)
            except asyncio.CancelledError:
                self._return_taken(jobs)
                raise
        if not all(isinstance(r, Job) for r in jobs):
            if not all(isinstance(r, (Job, DeadlineSoon)) for r in jobs):
                raise BatchError(jobs)
            got = [r for r in jobs if isinstance(r, Job)]
            if not got:
                raise DeadlineSoon([])
            return got
        return jobs

    async def _reserve_many(self, n, seconds, jobs):
        # Appends to jobs each Job, CorruptJob or other failure in order (a TIMED_OUT: none).
        core = self._core
        if seconds:
            try:
                first = await self.reserve(seconds)
            except CorruptJob as err:
                first = err
            if first is None:
                return
            jobs.append(first)
        cmd = "reserve-with-timeout"
        while len(jobs) < n:
            k = min(n - len(jobs), core.RESERVE_WINDOW)
            ch = await self._consumer(False)
            stop: list = []
            entries, _ = await self._pipeline(ch, cmd, iter([([_RESERVE0 * k], k)]), core.KIND_JOB, None,
                                              reserves=stop, job=Job._maker(self, ("_channel", ch)))
            jobs.extend(r for r in self._outcomes(cmd, entries, ch) if r is not None)
            if stop:
                break   # nothing more is ready (TIMED_OUT), or a failure: the batch ends here


class Job(JobData):
    """A job of an asyncio connection: ``conn``, ``jid``, ``body``, ``body_bytes``, ``reserved``
    (as the sync Job) and coroutines ``delete()``, ``release()``, ``bury()``, ``touch()``,
    ``kick()``, ``stats()``. A reserved job remembers the channel that reserved it: its
    commands go there."""

    _repr_name = "beanstalkc_fast.aio.Job"
    conn: "Connection"

    def __init__(self, conn: "Connection", jid: int, body: "Optional[Body]", reserved: bool = True,
                 channel: "Any" = None) -> None:
        super().__init__(conn, jid, body, reserved)
        self._channel = channel

    async def _priority(self):
        return _commands.priority_of(self.conn._core, await self.conn._command("stats-job", self.jid))

    async def delete(self) -> None: 
        """Delete this job."""
        await self.conn._job_command("delete", self.jid, ch=self._channel)
        self.reserved = False

    async def release(self, priority: "Optional[int]" = None, delay: int = 0) -> None:
        """Release this job if reserved; ``priority=None`` keeps its current priority."""
        if self.reserved:
            priority = await self._priority() if priority is None else priority
            await self.conn._job_command("release", self.jid, priority, delay, ch=self._channel)
            self.reserved = False

    async def bury(self, priority: "Optional[int]" = None) -> None: 
        """Bury this job if reserved; ``priority=None`` keeps its current priority."""
        if self.reserved:
            priority = await self._priority() if priority is None else priority
            await self.conn._job_command("bury", self.jid, priority, ch=self._channel)
            self.reserved = False

    async def kick(self) -> None:
        """Kick this job (buried or delayed) into the ready queue."""
        await self.conn.kick_job(self.jid)

    async def touch(self) -> None:
        """Ask for more time to work on this job, if reserved."""
        if self.reserved:
            await self.conn._job_command("touch", self.jid, ch=self._channel)

    async def stats(self) -> "YAMLResult":
        """Return the statistics of this job."""
        return await self.conn.stats_job(self.jid)


class _Connect:
    """What ``connect()`` returns: awaitable, and an async context manager."""

    def __init__(self, conn):
        self._conn = conn

    async def _go(self):
        await self._conn.connect()
        return self._conn

    def __await__(self):
        return self._go().__await__()

    async def __aenter__(self):
        return await self._go()

    async def __aexit__(self, exc_type, exc_value, traceback):
        await self._conn.close()


def connect(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, parse_yaml: "Any" = True,
            encoding: "Optional[str]" = "utf-8", connect_timeout: "Optional[float]" = None,
            socket_timeout: "Optional[float]" = None,
            on_orphan: "Optional[Callable[[str, Any], Any]]" = None, retry: "Optional[_retry.Retry]" = None,
            keepalive: bool = True, ssl: "Any" = None, server_hostname: "Optional[str]" = None) -> "Any":
    """Connect to beanstalkd: ``conn = await connect(...)`` or ``async with connect(...) as conn:``.

    ``host`` may be a name, an IPv4 or IPv6 address, or a unix socket path (containing ``/`` or
    starting with ``unix:``). The other arguments are those of ``Connection`` (``keepalive=True``:
    TCP keepalive finds a dead peer in about a minute; ``False`` turns it off).
    """
    return _Connect(Connection(host, port, parse_yaml=parse_yaml, encoding=encoding,
                               connect_timeout=connect_timeout, socket_timeout=socket_timeout,
                               on_orphan=on_orphan, retry=retry, keepalive=keepalive, ssl=ssl,
                               server_hostname=server_hostname))


def _current_task():
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _expire(fut):
    if not fut.done():
        fut.set_result(None)


def _ignore(fut):
    if not fut.cancelled():
        fut.exception()


def _index_jid(core, item, index):
    try:
        return core.check_jid(item)
    except (ValueError, TypeError) as err:
        raise type(err)("item %d: %s" % (index, err)) from None


def _map_results(err, outcomes):
    results = getattr(err, "results", None)
    if isinstance(results, list):
        attach_results(err, outcomes(results))
