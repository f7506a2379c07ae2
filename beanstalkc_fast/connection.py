"""Connection and Job: the beanstalkc 0.4 API on Python 3, plus beanstalkd 1.12 extras and batches.

Reply semantics (which status is success, a documented failure or unexpected) come from
the command table in ``_commands.py``, shared by every driver; the protocol core's blocking
driver does the I/O. This module adds the locking, the translation of transport errors,
Jobs, YAML and the bookkeeping of tubes.
"""
import _thread
from _collections import deque  # type: ignore  # (collections itself costs import time)

from . import _backend, _commands, _retry
from ._commands import COMMANDS as _COMMANDS, result as _result
from ._defaults import (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR, RESERVE0 as _RESERVE0,
                        check_keepalive, check_options, has_input, set_keepalive, tcp_host, tls_hostname, unix_path,
                        where, wrap_tls)
from ._job import JobData
from .exceptions import BatchError, DeadlineSoon, InvalidArgument, InvalidType, ProtocolError, SocketError

__all__ = ["Connection", "Job", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_PRIORITY", "DEFAULT_TTR"]

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations are strings, for mypy only: typing (or __future__) costs import time
    from typing import Any, Callable, Iterable, List, Optional, Union
    from ._defaults import Body, JobId, PutItem, YAMLResult

_SOCKET_DEFAULT = object()
_LEAD = object()          # a waiter's reply slot: "your reply is next on the wire: read it yourself"
_ABANDONED = object()     # a waiter's reply slot: its caller stopped waiting; the reply is read and dropped


class _Waiter:
    """A caller whose command is on the wire (or, ``exclusive``, who waits for the wire to
    go idle) and who sleeps on its own lock until another thread hands it its reply, the
    reader role, or the exception that ended the connection."""

    __slots__ = ("lock", "reply", "exclusive")

    def __init__(self, allocate, exclusive=False):
        self.lock = allocate()
        self.lock.acquire()
        self.reply = None
        self.exclusive = exclusive


class Connection:
    """A connection to one beanstalkd server.

    ``Connection(host='localhost', port=11300, parse_yaml=True, connect_timeout=<socket default>,
    *, encoding='utf-8', socket_timeout=None, retry=None, keepalive=True, ssl=None,
    server_hostname=None)`` connects at once.

    - ``host`` may be a name, an IPv4 or IPv6 address, or the path of a unix socket
      (any ``host`` containing ``/`` or starting with ``unix:``; ``port`` is then ignored).
    - ``parse_yaml``: ``True`` parses stats and tube lists into what ``yaml.safe_load``
      gives; ``False`` returns the raw YAML text; a callable is called with that text.
    - ``encoding``: ``str`` bodies are encoded with it and ``job.body`` is decoded with
      it; ``None`` means bodies are ``bytes`` both ways.
    - ``socket_timeout``: seconds any command may take (``None``: no limit); a reserve
      waits its own timeout on top of it.
    - ``retry``: a ``Retry`` to reconnect (restoring the tubes) and send a command again when
      the connection breaks, where that cannot change the queue twice; ``None`` (the default,
      as beanstalkc): a broken connection raises ``SocketError`` at once.
    - ``keepalive``: TCP keepalive, so that a peer that died silently is found in about a
      minute (30 s idle, then 3 probes 10 s apart, where the platform lets them be set) even
      while a ``reserve()`` waits without a timeout: the call then raises ``SocketError``.
      ``False`` turns it off; a unix socket never has it.
    - ``ssl``: an ``ssl.SSLContext`` to speak TLS (to a server behind stunnel or haproxy);
      the handshake is part of connecting. ``server_hostname``: the name the server's
      certificate must hold (default: ``host``; a unix socket has none). Threads sharing a
      TLS connection take turns (one command at a time): an SSL connection cannot be read
      by one thread while another writes it.

    Threads (and greenlets) may share a connection: their calls pipeline. Each caller
    writes its command at once, in call order, and the replies, which beanstalkd sends in
    the same order, are handed to their callers; each gets its own result or exception, as
    if it had run alone. The tubes used and watched are the connection's, shared by all.
    A ``reserve()`` with a timeout other than 0 and the batches have the connection to
    themselves while they run: a thread blocked in ``reserve()`` holds it until it returns.
    """

    _core = _backend.impl   # the protocol core module; tests swap it to run both backends

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 parse_yaml: "Union[bool, Callable[[str], Any]]" = True,
                 connect_timeout: "Optional[float]" = _SOCKET_DEFAULT,  # type: ignore[assignment]
                 *, encoding: "Optional[str]" = "utf-8", socket_timeout: "Optional[float]" = None,
                 retry: "Optional[_retry.Retry]" = None, keepalive: bool = True, ssl: "Any" = None,
                 server_hostname: "Optional[str]" = None) -> None:
        check_options(parse_yaml, encoding)
        check_keepalive(keepalive)
        self._server_hostname = tls_hostname(ssl, server_hostname, host)
        self._ssl = ssl
        if ssl is not None:     # an SSL object must never be read and written by two threads at once
            self._pipe = self._alone    # type: ignore[method-assign]
        self._retry = _retry.check(retry)
        self.host = host
        self.port = port
        self._parse_yaml = parse_yaml
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._encoding = encoding
        self._keepalive = keepalive
        self._proto: "Any" = None
        self._allocate = _thread.allocate_lock  # looked up now: gevent patches it
        self._lock = self._allocate()           # the write lock: writes go out in the order of _queue
        self._qlock = self._allocate()          # guards _queue and the passing of the reader role
        self._queue: "Any" = deque()            # one entry per command whose reply is still to come
        self._rlock = self._allocate()          # one caller at a time revives a lost connection
        self._retrying: "Any" = set()           # threads in a retry loop (their failed attempts go to it)
        self._closed_by_user = False            # close() was called: no retry reconnects
        self._using = "default"
        self._watching = ["default"]
        self.connect()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type: "Any", exc_value: "Any", traceback: "Any") -> None:
        self.close()

    def __repr__(self) -> str:
        return "<beanstalkc_fast.Connection %s backend=%r %s>" % (
            where(self.host, self.port), _backend.backend_name(self._core),
            "connected" if self._proto is not None else "closed")

    # -- connection management --

    def connect(self) -> None:
        """Connect to the server (closing any previous socket first)."""
        self.close()
        self._publish(self._open())
        self._using = "default"
        self._watching = ["default"]
        self._closed_by_user = False

    def _open(self):
        """A new core driver on a new socket (nothing published yet)."""
        import socket   # here, not at the top: it is two thirds of this package's import time
        timeout = self._connect_timeout
        if timeout is _SOCKET_DEFAULT:
            timeout = socket.getdefaulttimeout()
        path = unix_path(self.host)
        try:
            if path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect(path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((tcp_host(self.host), self.port), timeout)
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    set_keepalive(sock, self._keepalive)
                except BaseException:
                    sock.close()
                    raise
            if self._ssl is not None:   # the handshake is part of connecting: under connect_timeout
                sock = wrap_tls(self._ssl, sock, self._server_hostname)
            sock.settimeout(self._socket_timeout)
        except OSError as err:
            raise SocketError(err) from err
        return self._core.Protocol(sock)

    def _publish(self, proto):
        self._lock.acquire()    # a writer reads the driver and its queue as one pair
        self._queue = deque()
        if self._ssl is None:   # for the core's pipe(); over TLS every call goes to _pipe, that is _alone
            proto.attach(self._lock, self._qlock, self._queue)
        self._proto = proto
        self._lock.release()

    def _restore(self, proto, using, watching):
        """Use and watch the tubes on a new driver before anyone else may send on it (pipelined,
        in the order the tubes were taken); a failure closes its socket and raises."""
        cmds = [("use", using)] if using != "default" else []
        if "default" in watching:
            others = [name for name in watching if name != "default"]
        else:   # watch one tube before ignoring 'default': the last watched tube cannot be ignored
            cmds += [("watch", watching[0]), ("ignore", "default")]
            others = watching[1:]
        cmds += [("watch", name) for name in others]
        if not cmds:
            return
        try:
            proto.send(b"".join([_commands.encode(self._core, cmd, name) for cmd, name in cmds]))
            for cmd, _ in cmds:
                _result(cmd, proto.read_reply())
        except BaseException as err:
            try:
                proto.sock.close()
            except Exception:
                pass
            if isinstance(err, OSError):
                raise SocketError(err) from err
            raise

    def close(self) -> None:
        """Close the connection (sending ``quit``). Never raises; may be called twice."""
        self._closed_by_user = True
        proto, self._proto = self._proto, None
        if proto is not None:
            sock = proto.sock
            idle = self._lock.acquire(False)
            if idle and self._queue:
                self._lock.release()
                idle = False
            if not idle:
                # Other threads have commands in flight: "quit" could land in the middle of
                # their bytes. Only shut the socket down: that wakes the thread reading (close()
                # alone does not); it fails every caller still waiting and closes the socket.
                try:
                    sock.shutdown(2)    # socket.SHUT_RDWR
                except Exception:
                    pass
                return
            try:
                sock.settimeout(0)
                sock.send(b"quit\r\n")
            except Exception:
                pass
            finally:
                self._lock.release()
            try:
                sock.close()
            except Exception:
                pass

    def reconnect(self) -> None:
        """Close, connect again and restore the used tube and the watched tubes (in their order).
        A failure leaves the connection closed and keeps the tubes for the next reconnect()."""
        using, watching = self._using, list(self._watching)
        self.close()
        proto = self._open()
        self._restore(proto, using, watching)
        self._publish(proto)
        self._closed_by_user = False

    def _revive(self):
        """With a Retry: reconnect a lost connection, once for all the callers that met it, its
        tubes restored before anyone else may send on it."""
        self._rlock.acquire()
        try:
            if self._proto is not None:     # another caller revived it
                return
            if self._closed_by_user:
                raise SocketError("connection is closed; call reconnect()")
            proto = self._open()
            self._restore(proto, self._using, self._watching)
            self._publish(proto)
            if self._closed_by_user:    # close() came while it reconnected: close() wins
                self.close()
                raise SocketError("connection is closed; call reconnect()")
        finally:
            self._rlock.release()

    def _pause(self, wait, err):
        """Sleep before a retry attempt; a close() meanwhile ends the retries (raises ``err``)."""
        if wait:
            import time     # looked up now: gevent patches time.sleep
            time.sleep(wait)
        if self._closed_by_user:
            raise err

    def _retried(self, data, read, args, err, written):
        """``data`` met a broken connection (``err``; ``written``: its bytes may have reached
        the server): with a Retry, reconnect and send it again where that cannot change the
        queue twice; return its reply as _pipe() does, or raise."""
        me = _thread.get_ident()
        if me in self._retrying:        # an attempt of the loop below: the loop decides
            err.written = written
            raise err
        if written and not _retry.resendable(data):
            raise _retry.written_and_lost(data, err, self._server())
        if self._closed_by_user:
            raise err
        self._retrying.add(me)
        last = [err]
        try:
            for _ in self._reconnects(last):
                try:
                    return self._pipe(data, read, *args)
                except SocketError as again:
                    last[0] = again
                    if getattr(again, "written", False) and not _retry.resendable(data):
                        raise _retry.written_and_lost(data, again, self._server())
        finally:
            self._retrying.discard(me)
        raise _retry.gave_up(last[0], self._retry.attempts)

    def _reconnects(self, last):
        """The attempts of a retry: each waits its backoff and yields once the connection is
        back; a reconnect that fails is the next attempt's turn (nothing was sent). ``last[0]``
        is the latest error (raised at once when close() is called meanwhile)."""
        for wait in self._retry.delays():
            self._pause(wait, last[0])
            try:
                self._revive()
            except SocketError as again:
                last[0] = again
                continue
            yield

    def _server(self):
        return self.host if unix_path(self.host) is not None else "%s:%s" % (self.host, self.port)

    @property
    def connected(self) -> bool:
        """Whether the connection is open (a broken one is closed, never reused)."""
        return self._proto is not None

    def _drop(self):
        # A half-restored connection: close it without sending anything.
        proto, self._proto = self._proto, None
        if proto is not None:
            try:
                proto.sock.shutdown(2)  # wakes a thread still blocked on it
            except Exception:
                pass
            try:
                proto.sock.close()
            except Exception:
                pass

    # Commands pipeline (_pipe): a caller encodes its command, writes it under the write lock
    # (so that writes go out in the order of the queue) and reads its reply itself when no
    # reply is pending before it, else sleeps until the thread reading hands it over. The
    # reader only ever reads its own reply; then it hands over the replies that came with it
    # and passes the reader role to the first caller whose reply has not come yet (_pass_on).
    # A call alone takes two short lock holds; the commands call the core's pipe(), which
    # takes the write lock and serves a call alone in one compiled call (the same steps as
    # _pipe); with replies in flight it goes on in _piped (the rest of _pipe), and over TLS
    # (not attached) or on a closed connection in _pipe. Reserves that wait and batches take the
    # connection to themselves (_do): they keep the write lock and wait for the replies in
    # flight to be read first. Locks are acquired and released by hand: "with" costs more.

    def _pipe(self, data, read, *args):
        """Write ``data`` behind the commands in flight and return its reply: what
        ``proto.<read>(*args)`` gives when this thread reads it, else the reply tuple.
        A broken connection raises SocketError, or with a Retry goes to _retried()."""
        self._lock.acquire()
        return self._piped(data, read, args)

    def _piped(self, data, read, args):
        # _pipe with the write lock held (the core's pipe() comes here holding it when it is not alone).
        lock = self._lock
        proto = self._proto
        if proto is None:
            lock.release()
            err = SocketError("connection is closed; call reconnect()")
            if self._retry is None:
                raise err
            return self._retried(data, read, args, err, False)
        queue = self._queue
        if queue:
            try:
                waiter = self._enqueue(proto, queue)
            except SocketError as err:      # lost before this caller wrote anything
                if self._retry is None:
                    raise
                return self._retried(data, read, args, err, False)
        else:
            # No reply in flight, so no reader to race with, and other writers wait for
            # the write lock: the caller becomes the reader without the queue's lock.
            waiter = None
            queue.append(None)
        try:
            proto.write(data)
        except BaseException as err:
            lock.release()
            return self._broke(proto, queue, err, data, read, args)
        lock.release()
        if waiter is not None:
            try:
                reply = self._wait(proto, queue, waiter)
            except SocketError as err:      # the connection broke with this command written
                if self._retry is None:
                    raise
                return self._retried(data, read, args, err, True)
            if reply is not _LEAD:
                return reply
        try:
            reply = getattr(proto, read)(*args)
        except BaseException as err:
            return self._broke(proto, queue, err, data, read, args)
        qlock = self._qlock
        qlock.acquire()
        if len(queue) == 1:     # nobody behind: the usual case of a call alone
            queue.popleft()
            qlock.release()
        else:
            self._pass_on(proto, queue)
        return reply

    def _broke(self, proto, queue, err, data, read, args):
        """``data`` was written (or partly) and ``err`` broke the stream: drop the connection
        (_lost), then raise, or with a Retry send it again (_retried)."""
        exc = self._lost(proto, queue, err)
        if self._retry is None or not isinstance(exc, SocketError):
            raise exc
        return self._retried(data, read, args, exc, True)

    def _alone(self, data, read, *args):
        """``_pipe`` over TLS: the command and its reply with the connection to itself, so
        that no thread writes while another reads (callers take turns)."""
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                err, written = SocketError("connection is closed; call reconnect()"), False
            else:
                queue = self._queue
                try:
                    if queue:
                        self._drain(proto, queue)
                except SocketError as exc:
                    err, written = exc, False
                else:
                    try:
                        proto.write(data)
                        return getattr(proto, read)(*args)
                    except BaseException as exc:
                        err, written = self._lost(proto, queue, exc), True
        finally:
            lock.release()
        if self._retry is None or not isinstance(err, SocketError):
            raise err
        return self._retried(data, read, args, err, written)

    def _enqueue(self, proto, queue):
        # Under the write lock, with replies in flight: wait behind them, unless the reader
        # has meanwhile finished, or failed (then nobody would wake this caller).
        self._qlock.acquire()
        if self._proto is not proto:
            self._qlock.release()
            self._lock.release()
            raise SocketError("connection lost; call reconnect()")
        if queue:
            waiter = _Waiter(self._allocate)
            queue.append(waiter)
        else:
            waiter = None
            queue.append(None)
        self._qlock.release()
        return waiter

    def _wait(self, proto, queue, waiter):
        """Sleep until ``waiter`` is handed its reply (returned), the reader role (_LEAD)
        or the end of the connection (raised)."""
        try:
            waiter.lock.acquire()
        except BaseException as err:    # KeyboardInterrupt, gevent.Timeout, ...
            self._qlock.acquire()
            reply = waiter.reply
            if reply is None:
                waiter.reply = _ABANDONED   # the reader reads its reply and drops it
            self._qlock.release()
            if reply is _LEAD and not waiter.exclusive:     # nobody else will read: the stream is lost
                self._lost(proto, queue, err)
            raise
        reply = waiter.reply
        if reply.__class__ is tuple or reply is _LEAD:
            return reply
        raise reply

    def _pass_on(self, proto, queue):
        """Called by the reader with its own reply read and the queue's lock held: hand over
        the replies already received, in order, then the reader role to the first caller
        still waiting; release the queue's lock."""
        qlock = self._qlock
        if self._proto is not proto:    # closed meanwhile (the socket is shut): nobody may wait on
            qlock.release()
            self._lost(proto, queue, SocketError("connection closed"))
            return
        try:
            queue.popleft()     # the reader's own entry
            while queue:
                waiter = queue[0]
                if waiter is None:      # a caller that found nothing in flight reads for itself
                    break
                if waiter.exclusive:    # nothing sent: it waits for the wire to be idle
                    queue.popleft()
                    if waiter.reply is None:
                        waiter.reply = _LEAD
                        waiter.lock.release()
                        break
                    continue
                reply = proto.buffered_reply()
                if reply is None:
                    if waiter.reply is None:
                        waiter.reply = _LEAD
                        waiter.lock.release()
                        break
                    # its caller left: read its reply for it, with the queue free meanwhile
                    qlock.release()
                    try:
                        proto.read_reply()
                    finally:
                        qlock.acquire()
                    queue.popleft()
                    continue
                queue.popleft()
                if waiter.reply is None:
                    waiter.reply = reply
                    waiter.lock.release()
        except BaseException as err:    # a malformed reply: its caller gets the error itself
            head = queue[0] if queue else None
            qlock.release()
            self._lost(proto, queue, err, head)
            if not isinstance(err, Exception):
                raise                   # an interrupt while reading a dropped reply is this thread's
            return
        qlock.release()

    def _lost(self, proto, queue, err, culprit=None):
        """The stream broke or can no longer be trusted: close the connection, fail every
        caller still waiting for a reply on it (``culprit``, whose reply broke it, with the
        error itself) and return the exception to raise here."""
        if self._proto is proto:
            self._proto = None
        sock = proto.sock
        try:
            sock.shutdown(2)    # wakes a thread blocked reading it; close() alone does not
        except Exception:
            pass
        try:
            sock.close()
        except Exception:
            pass
        if isinstance(err, OSError):
            exc = SocketError(err)
            exc.__cause__ = err
        else:
            exc = err
        self._qlock.acquire()
        waiters = [w for w in queue if w is not None and w.reply is None]
        queue.clear()
        for waiter in waiters:
            if waiter is culprit:
                waiter.reply = exc
                continue
            waiter.reply = SocketError("connection lost before the reply came: %s" % (exc,))
            waiter.reply.__cause__ = exc
        self._qlock.release()
        for waiter in waiters:
            waiter.lock.release()
        return exc

    def _do(self, method, *args):
        """Call the blocking driver's ``method(*args)`` with the connection to itself: under
        the write lock, once every reply in flight has been read; translate its errors. With
        a Retry, a reserve is sent again on a new connection, and so is any method that had
        not written anything."""
        try:
            return self._do_once(method, args)
        except SocketError as err:
            if self._retry is None or self._closed_by_user:
                raise
            again_ok = method in ("reserve", "reserve_many")    # a reserve changes nothing twice
            if getattr(err, "written", True) and not again_ok:
                raise
            last = [err]
            for _ in self._reconnects(last):
                if method == "reserve_many":
                    del args[2][:]      # the jobs of the dead connection are the server's again
                try:
                    return self._do_once(method, args)
                except SocketError as again:
                    last[0] = again
                    if getattr(again, "written", True) and not again_ok:
                        raise
            raise _retry.gave_up(last[0], self._retry.attempts)

    def _do_once(self, method, args):
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                err = SocketError("connection is closed; call reconnect()")
                err.written = False
                raise err
            queue = self._queue
            if queue:
                try:
                    self._drain(proto, queue)
                except SocketError as err:
                    err.written = False
                    raise
            try:
                return getattr(proto, method)(*args)
            except BaseException as err:
                raise self._failed(proto, queue, method, err)
        finally:
            lock.release()

    def _drain(self, proto, queue):
        # With the write lock held: wait until the replies in flight are read.
        self._qlock.acquire()
        if self._proto is not proto:
            self._qlock.release()
            raise SocketError("connection lost; call reconnect()")
        if not queue:
            self._qlock.release()
            return
        waiter = _Waiter(self._allocate, True)
        queue.append(waiter)
        self._qlock.release()
        self._wait(proto, queue, waiter)

    def _failed(self, proto, queue, method, err):
        """The exception to raise for ``err`` out of a core call. An argument refused before a
        byte was sent leaves the connection usable, and so does any other error of a batch's
        items or of its caller's iterator (the core read the replies of every window it sent);
        anything else drops the connection."""
        if isinstance(err, (InvalidArgument, InvalidType)):
            return err
        if (method == "put_many" or method == "jobs_many") and isinstance(err, Exception) and not isinstance(
                err, (OSError, SocketError, ProtocolError, MemoryError)):
            return err
        return self._lost(proto, queue, err)

    # -- the interface of pools: batches they drive over several connections at once --

    def _link(self):
        """Hold this connection for a batch driven from outside (a pool's windows to several
        servers at once): once the replies in flight are read, keep the write lock until the
        link's ``close()``, as ``_do`` does for a batch of its own."""
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                raise SocketError("connection is closed; call reconnect()")
            if self._queue:
                self._drain(proto, self._queue)
        except BaseException:
            lock.release()
            raise
        return _Link(self, proto)

    def _stale(self):
        """Whether this connection, idle, has input: the server closed it, or junk came."""
        proto = self._proto
        return proto is not None and not self._queue and has_input(proto.sock)

    def _command(self, cmd, *args):
        """Run the table's command ``cmd`` with ``args``; return what its reply means."""
        data = _commands.encode(self._core, cmd, *args) if args else _COMMANDS[cmd][0]
        return _result(cmd, self._core.pipe(self, self._proto, data, "read_reply"))

    # -- YAML --

    def _yaml(self, cmd, *args):
        data = _commands.encode(self._core, cmd, *args) if args else _COMMANDS[cmd][0]
        reply = self._core.pipe(self, self._proto, data, "read_reply")
        body = reply[2] if reply[0] == b"OK" else _result(cmd, reply)   # the table's OK -> body, inlined
        if self._parse_yaml is True:    # yaml_value()'s usual case, inlined
            try:
                return self._core.parse_yaml(body)
            except ValueError:      # not the YAML beanstalkd sends: yaml_value() tries PyYAML
                pass
        return _commands.yaml_value(self._core, self._parse_yaml, cmd, body)

    # -- producer --

    def put(self, body: "Body", priority: int = DEFAULT_PRIORITY, delay: int = 0, ttr: int = DEFAULT_TTR) -> int:
        """Put a job into the used tube; return its id.

        ``body`` is ``str`` (encoded with the connection's encoding) or bytes-like.
        """
        core = self._core
        reply = core.pipe(self, self._proto, core.put_command(body, priority, delay, ttr, self._encoding), "read_put")
        if reply.__class__ is int:
            return reply
        return _result("put", reply)

    def use(self, name: str) -> str:
        """Use the tube ``name`` for puts; return its name."""
        self._using = self._command("use", name)
        return self._using

    def using(self) -> str:
        """Return the name of the tube used for puts."""
        return self._command("list-tube-used")

    # -- consumer --

    def reserve(self, timeout: "Optional[float]" = None) -> "Optional[Job]":
        """Reserve a job from the watched tubes, waiting up to ``timeout`` seconds
        (forever if None). Return a Job, or None on timeout; raise DeadlineSoon.

        A job whose body came corrupt raises CorruptJob; it stays reserved by this connection
        (``bury(err.jid)`` or ``delete(err.jid)``), which stays usable. So do reserve_job() and
        the peeks."""
        if timeout is None:
            reply = self._core.reserve_alone(self, self._proto, b"reserve\r\n", None)
            cmd = "reserve"
        else:
            if timeout.__class__ is not int or not 0 <= timeout <= 4294967295:
                timeout = _commands.check_timeout(self._core, timeout)
            if timeout == 0:    # answered at once: it pipelines like any command
                reply = self._core.pipe(self, self._proto, _RESERVE0, "read_job")
            else:
                reply = self._core.reserve_alone(self, self._proto, b"reserve-with-timeout %d\r\n" % timeout, timeout)
            cmd = "reserve-with-timeout"
        if len(reply) != 2:
            reply = _result(cmd, reply)
            if reply is None:
                return None
        return Job(self, reply[0], reply[1], True)

    def reserve_job(self, jid: "JobId") -> "Job":
        """Reserve the job ``jid`` whatever its state (beanstalkd >= 1.12); return a Job."""
        reserved, body = self._command("reserve-job", jid)
        return Job(self, reserved, body, True)

    def watch(self, name: str) -> int:
        """Watch the tube ``name``; return the number of watched tubes."""
        count = self._command("watch", name)
        name = name if isinstance(name, str) else name.decode("ascii")
        if name not in self._watching:
            self._watching.append(name)
        return count

    def ignore(self, name: str) -> int:
        """Stop watching the tube ``name``; return the number of watched tubes
        (1 when it was the last one, which beanstalkd refuses to ignore)."""
        data = _commands.encode(self._core, "ignore", name)
        reply = self._core.pipe(self, self._proto, data, "read_reply")
        count = _result("ignore", reply)
        if reply[0] == b"WATCHING":
            name = name if isinstance(name, str) else name.decode("ascii")
            if name in self._watching:
                self._watching.remove(name)
        return count

    def watching(self) -> "YAMLResult":
        """Return the list of watched tubes."""
        return self._yaml("list-tubes-watched")

    def tubes(self) -> "YAMLResult":
        """Return the list of all existing tubes."""
        return self._yaml("list-tubes")

    # -- jobs --

    # delete/touch/kick-job: the core reads a bare success as None

    def delete(self, jid: "JobId") -> None:
        """Delete the job ``jid``."""
        core = self._core
        reply = core.pipe(self, self._proto, core.encode_job(b"delete", jid), "read_status", b"DELETED")
        if reply is not None:
            _result("delete", reply)

    def release(self, jid: "JobId", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release the reserved job ``jid`` back to the ready (or delayed) queue."""
        self._command("release", jid, priority, delay)

    def bury(self, jid: "JobId", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury the reserved job ``jid``."""
        self._command("bury", jid, priority)

    def touch(self, jid: "JobId") -> None:
        """Ask for more time to work on the reserved job ``jid``."""
        core = self._core
        reply = core.pipe(self, self._proto, core.encode_job(b"touch", jid), "read_status", b"TOUCHED")
        if reply is not None:
            _result("touch", reply)

    def kick(self, bound: int = 1) -> int:
        """Kick at most ``bound`` buried (else delayed) jobs of the used tube; return how many."""
        return self._command("kick", bound)

    def kick_job(self, jid: "JobId") -> None:
        """Kick the buried or delayed job ``jid`` into the ready queue."""
        core = self._core
        reply = core.pipe(self, self._proto, core.encode_job(b"kick-job", jid), "read_status", b"KICKED")
        if reply is not None:
            _result("kick-job", reply)

    def _peek(self, cmd, *args):
        found = self._command(cmd, *args)
        return None if found is None else Job(self, found[0], found[1], False)

    def peek(self, jid: "JobId") -> "Optional[Job]":
        """Return the job ``jid`` (not reserved), or None."""
        return self._peek("peek", jid)

    def peek_ready(self) -> "Optional[Job]":
        """Return the next ready job of the used tube, or None."""
        return self._peek("peek-ready")

    def peek_delayed(self) -> "Optional[Job]":
        """Return the delayed job of the used tube with the shortest delay left, or None."""
        return self._peek("peek-delayed")

    def peek_buried(self) -> "Optional[Job]":
        """Return the next buried job of the used tube, or None."""
        return self._peek("peek-buried")

    # -- stats and admin --

    def stats(self) -> "YAMLResult":
        """Return the server's statistics (a dict with ``parse_yaml=True``)."""
        return self._yaml("stats")

    def stats_tube(self, name: str) -> "YAMLResult":
        """Return the statistics of the tube ``name``."""
        return self._yaml("stats-tube", name)

    def stats_job(self, jid: "JobId") -> "YAMLResult":
        """Return the statistics of the job ``jid``."""
        return self._yaml("stats-job", jid)

    def pause_tube(self, name: str, delay: int) -> None:
        """Pause the tube ``name`` for ``delay`` seconds (0 unpauses)."""
        self._command("pause-tube", name, delay)

    # -- batches --

    def _outcome(self, cmd, entry):
        # A batch entry as the caller sees it: an id, None, a Job (made by the core), or the item's exception.
        if entry is None or entry.__class__ is int or isinstance(entry, Job):
            return entry
        return _commands.outcome(cmd, entry)

    def _batch(self, cmd, method, results, *args):
        """Run a pipelined core batch that appends an entry per item to ``results``; return
        ``results`` when every reply was the expected one, else their outcomes.

        Raises BatchError when an item failed, and attaches the confirmed outcomes as
        ``.results`` to an error of the items (a bad item, or the iterator's own exception:
        the connection stays usable) or to a transport error (a prefix; the connection is closed).
        """
        try:
            bad = self._do(method, *args)
        except (SocketError, ProtocolError) as err:
            err.results = [self._outcome(cmd, r) for r in results]
            raise
        except Exception as err:
            if method != "reserve_many" and not isinstance(err, MemoryError):
                # results is empty when nothing was sent (a sequence, or an iterator's first window)
                try:
                    err.results = [self._outcome(cmd, r) for r in results] if results else None
                except AttributeError:
                    pass
            raise
        if not bad:
            return results
        outcomes = [self._outcome(cmd, r) for r in results]
        if any(isinstance(r, BaseException) for r in outcomes):
            raise BatchError(outcomes)
        return outcomes

    def put_many(self, items: "Iterable[PutItem]", priority: int = DEFAULT_PRIORITY, delay: int = 0,
                 ttr: int = DEFAULT_TTR) -> "List[int]":
        """Put many jobs, pipelined; return their ids in order.

        ``items`` is any iterable (streamed in windows) of bodies or tuples
        ``(body[, priority[, delay[, ttr]]])``. A list or tuple is validated whole
        before anything is sent. Failed items raise BatchError after every reply is read.
        An exception from the iterator itself propagates with ``.results``, the ids of the
        windows already sent (None if none was).
        """
        core = self._core
        if isinstance(items, (str, bytes, bytearray, memoryview)):
            # else a str would be taken as an iterable of one-character bodies
            raise InvalidType("put_many takes an iterable of bodies, not a single %s" % type(items).__name__)
        for value, what in ((priority, "priority"), (delay, "delay"), (ttr, "ttr")):
            core.check_uint32(value, what)
        results: list = []
        return self._batch("put", "put_many", results, items, priority, delay, ttr, self._encoding, results)

    def _jobs_many(self, cmd, jids, *args):
        template, kinds, statuses = _commands.COMMANDS[cmd]
        args = tuple([_commands.check_arg(self._core, kind, value) for kind, value in zip(kinds[1:], args)])
        ok = next(iter(statuses))   # the first status listed is the plain success
        results: list = []
        try:
            self._batch(cmd, "jobs_many", results, jids, template, args, ok, results)
        finally:
            if cmd != "touch" and isinstance(jids, (list, tuple)):
                if len(results) == len(jids) == results.count(None) and set(map(type, jids)) == {Job}:
                    for job in jids:    # the common case, a list of Jobs all done, at a third of the cost
                        job.reserved = False
                else:
                    for item, result in zip(jids, results):
                        if isinstance(item, Job) and (result is None or result[0] == b"BURIED"):
                            item.reserved = False

    def delete_many(self, jids: "Iterable[JobId]") -> None:
        """Delete many jobs (ids or Jobs), pipelined."""
        self._jobs_many("delete", jids)

    def release_many(self, jids: "Iterable[JobId]", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("release", jids, priority, delay)

    def bury_many(self, jids: "Iterable[JobId]", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("bury", jids, priority)

    def touch_many(self, jids: "Iterable[JobId]") -> None:
        """Touch many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("touch", jids)

    def reserve_many(self, n: int, timeout: float = 0) -> "List[Job]":
        """Reserve up to ``n`` jobs: wait up to ``timeout`` seconds for the first, then take
        what is ready without waiting. Return a list of Jobs (``[]`` when none came).

        Raises DeadlineSoon when the first reserve reports it (later ones just end the batch).
        A corrupt job does not end the batch: every reply is read, then BatchError is raised
        whose ``results`` hold each Job or ``CorruptJob`` in order (those jobs stay reserved).
        """
        core = self._core
        n = core.check_uint32(n, "n")
        seconds = _commands.check_timeout(core, timeout)
        if n == 0:
            return []
        results: list = []
        first = b"reserve-with-timeout %d\r\n" % seconds
        try:
            results = self._batch("reserve-with-timeout", "reserve_many", results, n, first, results, seconds,
                                  Job._maker(self))
        except BatchError as err:
            jobs = [r for r in err.results if isinstance(r, Job)]
            if all(isinstance(r, (Job, DeadlineSoon)) for r in err.results):
                if not jobs:
                    raise DeadlineSoon([]) from None
                return jobs
            raise
        return results


class _Link:
    """A Connection held by a pool for one batch: it writes windows, reads their replies and
    names the socket to wait on, through the core; a failure drops the connection (every
    reply unread is lost) and raises SocketError or ProtocolError, as any call would."""

    __slots__ = ("_conn", "_proto", "sock", "window", "reserve_window", "_held")

    def __init__(self, conn, proto):
        self._conn = conn
        self._proto = proto
        self.sock = proto.sock
        self.window = proto.window
        self.reserve_window = proto.reserve_window
        self._held = True

    def _fail(self, err):
        return self._conn._lost(self._proto, self._conn._queue, err)

    def send(self, chunks):
        """Write a window: a list of buffers."""
        try:
            self._proto.send_chunks(chunks)
        except BaseException as err:
            raise self._fail(err)

    def read(self, batch):
        """Read the replies of the windows sent until ``batch`` (the core's Batch) has them;
        return ``batch.bad``."""
        try:
            return self._proto.read_batch(batch)
        except BaseException as err:
            raise self._fail(err)

    def read_reply(self):
        """Read one reply: ``(status, args, body)``."""
        try:
            return self._proto.read_reply()
        except BaseException as err:
            raise self._fail(err)

    def poll_reply(self):
        """Read one reply when the socket is readable: the reply, or None when none has come.
        Over TLS, readable input may be records that carry no data (TLS 1.3 session tickets
        come after the handshake) or a part of a reply: it is read without waiting (the core
        keeps a part for the next read)."""
        sock = self.sock
        if not hasattr(sock, "pending"):    # not TLS: a reply is coming, read it
            return self.read_reply()
        import ssl      # loaded already: sock is an SSL socket
        timeout = sock.gettimeout()
        sock.settimeout(0)
        try:
            reply = self._proto.read_reply()
        except ssl.SSLWantReadError:
            reply = None
        except BaseException as err:
            raise self._fail(err)
        sock.settimeout(timeout)
        return reply

    def close(self):
        """Let other callers have the connection again (once)."""
        if self._held:
            self._held = False
            self._conn._lock.release()


class Job(JobData):
    """A job: ``conn``, ``jid``, ``body``, ``reserved``, and ``body_bytes``.

    ``body`` is the body decoded with the connection's encoding on first access
    (``bytes`` when the encoding is None); ``body_bytes`` is always the raw bytes, so a
    body that does not decode never loses the job: it can still be buried or deleted.
    """

    conn: "Connection"

    def _priority(self):
        # The job's current priority, whatever parse_yaml says.
        return _commands.priority_of(self.conn._core, self.conn._command("stats-job", self.jid))

    def delete(self) -> None:
        """Delete this job."""
        self.conn.delete(self.jid)
        self.reserved = False

    def release(self, priority: "Optional[int]" = None, delay: int = 0) -> None:
        """Release this job if reserved; ``priority=None`` keeps its current priority."""
        if self.reserved:
            self.conn.release(self.jid, self._priority() if priority is None else priority, delay)
            self.reserved = False

    def bury(self, priority: "Optional[int]" = None) -> None:
        """Bury this job if reserved; ``priority=None`` keeps its current priority."""
        if self.reserved:
            self.conn.bury(self.jid, self._priority() if priority is None else priority)
            self.reserved = False

    def kick(self) -> None:
        """Kick this job (buried or delayed) into the ready queue."""
        self.conn.kick_job(self.jid)

    def touch(self) -> None:
        """Ask for more time to work on this job, if reserved."""
        if self.reserved:
            self.conn.touch(self.jid)

    def stats(self) -> "YAMLResult":
        """Return the statistics of this job."""
        return self.conn.stats_job(self.jid)
