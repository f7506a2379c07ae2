"""Connection and Job: the beanstalkc 0.4 API on Python 3, plus beanstalkd 1.12 extras and batches.

All reply semantics live here: which status is success, which is a documented
failure (``CommandFailed``) and which is unexpected (``UnexpectedResponse``).
The protocol core (compiled or pure) only frames bytes.
"""
import _thread

from . import _backend
from .exceptions import (BatchError, BeanstalkcException, CommandFailed, DeadlineSoon, InvalidArgument,
                         InvalidType, ProtocolError, SocketError, UnexpectedResponse)

__all__ = ["Connection", "Job", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_PRIORITY", "DEFAULT_TTR"]

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations are strings, for mypy only: typing (or __future__) costs import time
    from typing import Any, Callable, Iterable, List, Optional, Tuple, Union
    Body = Union[str, bytes, bytearray, memoryview]
    PutItem = Union[Body, Tuple[Body], Tuple[Body, int], Tuple[Body, int, int], Tuple[Body, int, int, int]]
    JobRef = Union[int, "Job"]
    YAMLResult = Any   # dict / list with parse_yaml=True, str with False, whatever a callable returns

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 11300
DEFAULT_PRIORITY = 2 ** 31
DEFAULT_TTR = 120

_SOCKET_DEFAULT = object()

# The one reply-to-exception table: the documented failure statuses of each command
# (protocol word). They raise CommandFailed; any other unexpected status raises
# UnexpectedResponse.
_FAILURES = {
    "put": ("JOB_TOO_BIG", "BURIED", "DRAINING"),
    "reserve": ("DEADLINE_SOON", "TIMED_OUT"),
    "reserve-with-timeout": ("DEADLINE_SOON", "TIMED_OUT"),
    "ignore": ("NOT_IGNORED",),
}
for _cmd in ("reserve-job", "delete", "release", "bury", "touch", "kick-job", "peek", "peek-ready",
             "peek-delayed", "peek-buried", "stats-job", "stats-tube", "pause-tube"):
    _FAILURES[_cmd] = ("NOT_FOUND",)
del _cmd


def _error(cmd, reply):
    """Return the exception for a reply that is not the command's success."""
    status = reply[0].decode("ascii", "replace")
    results = [arg.decode("ascii", "replace") for arg in reply[1]]
    cls = CommandFailed if status in _FAILURES.get(cmd, ()) else UnexpectedResponse
    return cls(cmd, status, results)


def _int_arg(cmd, reply):
    """The first argument of a success reply as an int; a malformed one is UnexpectedResponse."""
    args = reply[1]
    if args and args[0].isdigit():
        return int(args[0])
    raise _error(cmd, reply)


def _name_arg(cmd, reply):
    """The tube name argument of a success reply; a malformed one is UnexpectedResponse."""
    args = reply[1]
    if len(args) == 1 and args[0].isascii():
        return args[0].decode("ascii")
    raise _error(cmd, reply)


def _check_timeout(timeout):
    """A reserve timeout: a non-negative int or float, truncated to whole seconds (as beanstalkc)."""
    if isinstance(timeout, float):
        if not 0 <= timeout <= 2 ** 32 - 1:
            raise InvalidArgument("timeout must be in 0..%d seconds, got %r" % (2 ** 32 - 1, timeout))
        return int(timeout)
    return _backend.check_uint32(timeout, "timeout")


class Connection:
    """A connection to one beanstalkd server.

    ``Connection(host='localhost', port=11300, parse_yaml=True, connect_timeout=<socket default>,
    *, encoding='utf-8', socket_timeout=None)`` connects at once.

    - ``host`` may be a name, an IPv4 or IPv6 address, or the path of a unix socket
      (any ``host`` containing ``/`` or starting with ``unix:``; ``port`` is then ignored).
    - ``parse_yaml``: ``True`` parses stats and tube lists into what ``yaml.safe_load``
      gives; ``False`` returns the raw YAML text; a callable is called with that text.
    - ``encoding``: ``str`` bodies are encoded with it and ``job.body`` is decoded with
      it; ``None`` means bodies are ``bytes`` both ways.
    - ``socket_timeout``: seconds any command may take (``None``: no limit); a reserve
      waits its own timeout on top of it.

    A connection is not meant to be shared by threads: concurrent calls are serialized
    by a lock, so bytes never interleave on the wire, but a thread blocked in
    ``reserve()`` holds the connection until it returns.
    """

    _core = _backend.impl   # the protocol core module; tests swap it to run both backends

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 parse_yaml: "Union[bool, Callable[[str], Any]]" = True,
                 connect_timeout: "Optional[float]" = _SOCKET_DEFAULT,  # type: ignore[assignment]
                 *, encoding: "Optional[str]" = "utf-8", socket_timeout: "Optional[float]" = None) -> None:
        if parse_yaml is not True and parse_yaml is not False and not callable(parse_yaml):
            raise InvalidType("parse_yaml must be True, False or a callable")
        if encoding is not None:
            "".encode(encoding)     # LookupError now rather than at the first put
        self.host = host
        self.port = port
        self._parse_yaml = parse_yaml
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._encoding = encoding
        self._proto: "Any" = None
        self._lock = _thread.allocate_lock()   # looked up now: gevent patches it
        self._using = "default"
        self._watching = ["default"]
        self.connect()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type: "Any", exc_value: "Any", traceback: "Any") -> None:
        self.close()

    def __repr__(self) -> str:
        if "/" in str(self.host) or str(self.host).startswith("unix:"):
            where = "path=%r" % (self.host,)
        else:
            where = "host=%r port=%r" % (self.host, self.port)
        return "<beanstalkc_fast.Connection %s backend=%r %s>" % (
            where, _backend_name(self._core), "connected" if self._proto is not None else "closed")

    # -- connection management --

    def connect(self) -> None:
        """Connect to the server (closing any previous socket first)."""
        import socket   # here, not at the top: it is two thirds of this package's import time
        self.close()
        timeout = self._connect_timeout
        if timeout is _SOCKET_DEFAULT:
            timeout = socket.getdefaulttimeout()
        host = self.host
        try:
            if isinstance(host, str) and ("/" in host or host.startswith("unix:")):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(timeout)
                    sock.connect(host[5:] if host.startswith("unix:") else host)
                except BaseException:
                    sock.close()
                    raise
            else:
                if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
                    host = host[1:-1]
                sock = socket.create_connection((host, self.port), timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._socket_timeout)
        except OSError as err:
            raise SocketError(err) from err
        self._proto = self._core.Protocol(sock)
        self._using = "default"
        self._watching = ["default"]

    def close(self) -> None:
        """Close the connection (sending ``quit``). Never raises; may be called twice."""
        proto, self._proto = self._proto, None
        if proto is not None:
            sock = proto.sock
            if not self._lock.acquire(False):
                # Another thread is inside a command: "quit" could land in the middle of its
                # bytes. Only shut the socket down: that wakes the thread (close() alone does
                # not), its command fails with SocketError and it closes the socket itself.
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
        """Close, connect again and restore the used tube and the watched tubes (in their order)."""
        using, watching = self._using, list(self._watching)
        self.connect()
        try:
            if using != "default":
                self.use(using)
            if "default" in watching:
                others = [name for name in watching if name != "default"]
            else:
                # watch one tube before ignoring 'default': the last watched tube cannot be ignored
                self.watch(watching[0])
                self.ignore("default")
                others = watching[1:]
            for name in others:
                self.watch(name)
        except BaseException:
            # A half-restored connection must not be used: drop it, and keep the tubes
            # so that the next reconnect() restores them.
            self._drop()
            self._using, self._watching = using, watching
            raise

    @property
    def connected(self) -> bool:
        """Whether the connection is open (a broken one is closed, never reused)."""
        return self._proto is not None

    def _drop(self, proto=None):
        # The stream can no longer be trusted: close without sending anything.
        # Given a proto, drop only that one (another thread may have reconnected meanwhile).
        if proto is None or proto is self._proto:
            proto, self._proto = self._proto, None
        if proto is not None:
            try:
                proto.sock.close()
            except Exception:
                pass

    # Every command runs under the lock, taken with acquire()/release() rather than "with":
    # a lock's __exit__ costs as much as acquire() and release() together.

    def _failed(self, proto, err):
        """The exception to raise for ``err`` out of a core call: a refused argument
        leaves the connection usable; anything else drops it."""
        if isinstance(err, (InvalidArgument, InvalidType)):
            return err      # refused before a byte was sent: the connection is fine
        self._drop(proto)
        if isinstance(err, OSError):
            exc = SocketError(err)
            exc.__cause__ = err
            return exc
        return err

    def _closed(self):
        return SocketError("connection is closed; call reconnect()")

    def _call(self, data):
        """Send one command and return its reply tuple; translate transport errors once."""
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                raise self._closed()
            try:
                return proto.call(data)
            except BaseException as err:
                raise self._failed(proto, err)
        finally:
            lock.release()

    def _reserve(self, data, seconds):
        """Send a reserve command, which may block on the server for ``seconds`` (None:
        forever) on top of ``socket_timeout``; return the core's reserve result."""
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                raise self._closed()
            try:
                if self._socket_timeout is None:
                    return proto.reserve(data)
                proto.sock.settimeout(None if seconds is None else seconds + self._socket_timeout)
                reply = proto.reserve(data)
                proto.sock.settimeout(self._socket_timeout)
                return reply
            except BaseException as err:
                raise self._failed(proto, err)
        finally:
            lock.release()

    def _job_call(self, verb, jid, ok):
        """``<verb> <jid>`` in one core call (it checks jid): None on ``ok``, else the reply."""
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                raise self._closed()
            try:
                return proto.job_command(verb, jid, ok)
            except BaseException as err:
                raise self._failed(proto, err)
        finally:
            lock.release()

    def _body_of(self, data, cmd, ok):
        status, args, body = self._call(data)
        if status != ok:
            raise _error(cmd, (status, args))
        return body

    # -- YAML --

    def _yaml(self, data, cmd):
        return self._parse(self._body_of(data, cmd, b"OK"), cmd)

    def _parse(self, body, cmd="stats"):
        mode = self._parse_yaml
        if mode is True:
            return _load_yaml(self._core, body, cmd)
        text = body.decode("utf-8", "replace")
        return mode(text) if mode is not False else text

    # -- producer --

    def put(self, body: "Body", priority: int = DEFAULT_PRIORITY, delay: int = 0, ttr: int = DEFAULT_TTR) -> int:
        """Put a job into the used tube; return its id.

        ``body`` is ``str`` (encoded with the connection's encoding) or bytes-like.
        """
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                raise self._closed()
            try:
                reply = proto.put(body, priority, delay, ttr, self._encoding)
            except BaseException as err:
                raise self._failed(proto, err)
        finally:
            lock.release()
        if reply.__class__ is int:
            return reply
        raise _error("put", reply)

    def use(self, name: str) -> str:
        """Use the tube ``name`` for puts; return its name."""
        status, args, _ = self._call(b"use %s\r\n" % self._core.check_tube(name))
        if status != b"USING":
            raise _error("use", (status, args))
        self._using = _name_arg("use", (status, args))
        return self._using

    def using(self) -> str:
        """Return the name of the tube used for puts."""
        status, args, _ = self._call(b"list-tube-used\r\n")
        if status != b"USING":
            raise _error("list-tube-used", (status, args))
        return _name_arg("list-tube-used", (status, args))

    # -- consumer --

    def _job(self, reply, cmd, reserved):
        status, args, body = reply
        if status == (b"RESERVED" if reserved else b"FOUND"):
            return Job(self, _int_arg(cmd, reply), body, reserved)
        raise _error(cmd, (status, args))

    def reserve(self, timeout: "Optional[float]" = None) -> "Optional[Job]":
        """Reserve a job from the watched tubes, waiting up to ``timeout`` seconds
        (forever if None). Return a Job, or None on timeout; raise DeadlineSoon."""
        if timeout is None:
            reply = self._reserve(b"reserve\r\n", None)
            cmd = "reserve"
        else:
            if timeout.__class__ is not int or not 0 <= timeout <= 4294967295:
                timeout = _check_timeout(timeout)
            reply = self._reserve(b"reserve-with-timeout %d\r\n" % timeout, timeout)
            cmd = "reserve-with-timeout"
        if len(reply) == 2:
            return Job(self, reply[0], reply[1], True)
        if reply[0] == b"TIMED_OUT":
            return None
        if reply[0] == b"DEADLINE_SOON":
            raise DeadlineSoon([])
        raise _error(cmd, reply)

    def reserve_job(self, jid: "JobRef") -> "Job":
        """Reserve the job ``jid`` whatever its state (beanstalkd >= 1.12); return a Job."""
        return self._job(self._call(b"reserve-job %d\r\n" % self._core.check_jid(jid)), "reserve-job", True)

    def watch(self, name: str) -> int:
        """Watch the tube ``name``; return the number of watched tubes."""
        raw = self._core.check_tube(name)
        status, args, _ = self._call(b"watch %s\r\n" % raw)
        if status != b"WATCHING":
            raise _error("watch", (status, args))
        name = raw.decode("ascii")
        if name not in self._watching:
            self._watching.append(name)
        return _int_arg("watch", (status, args))

    def ignore(self, name: str) -> int:
        """Stop watching the tube ``name``; return the number of watched tubes
        (1 when it was the last one, which beanstalkd refuses to ignore)."""
        raw = self._core.check_tube(name)
        status, args, _ = self._call(b"ignore %s\r\n" % raw)
        if status == b"WATCHING":
            name = raw.decode("ascii")
            if name in self._watching:
                self._watching.remove(name)
            return _int_arg("ignore", (status, args))
        if status == b"NOT_IGNORED":
            return 1
        raise _error("ignore", (status, args))

    def watching(self) -> "YAMLResult":
        """Return the list of watched tubes."""
        return self._yaml(b"list-tubes-watched\r\n", "list-tubes-watched")

    def tubes(self) -> "YAMLResult":
        """Return the list of all existing tubes."""
        return self._yaml(b"list-tubes\r\n", "list-tubes")

    # -- jobs --

    def _job_command(self, data, cmd, ok):
        status, args, _ = self._call(data)
        if status != ok and not (cmd == "release" and status == b"BURIED"):
            raise _error(cmd, (status, args))

    def delete(self, jid: "JobRef") -> None:
        """Delete the job ``jid``."""
        reply = self._job_call(b"delete", jid, b"DELETED")
        if reply is not None:
            raise _error("delete", reply)

    def release(self, jid: "JobRef", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release the reserved job ``jid`` back to the ready (or delayed) queue."""
        core = self._core
        self._job_command(b"release %d %d %d\r\n" % (core.check_jid(jid), core.check_uint32(priority, "priority"),
                                                      core.check_uint32(delay, "delay")), "release", b"RELEASED")

    def bury(self, jid: "JobRef", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury the reserved job ``jid``."""
        core = self._core
        self._job_command(b"bury %d %d\r\n" % (core.check_jid(jid), core.check_uint32(priority, "priority")),
                          "bury", b"BURIED")

    def touch(self, jid: "JobRef") -> None:
        """Ask for more time to work on the reserved job ``jid``."""
        reply = self._job_call(b"touch", jid, b"TOUCHED")
        if reply is not None:
            raise _error("touch", reply)

    def kick(self, bound: int = 1) -> int:
        """Kick at most ``bound`` buried (else delayed) jobs of the used tube; return how many."""
        status, args, _ = self._call(b"kick %d\r\n" % self._core.check_uint32(bound, "bound"))
        if status != b"KICKED":
            raise _error("kick", (status, args))
        return _int_arg("kick", (status, args))

    def kick_job(self, jid: "JobRef") -> None:
        """Kick the buried or delayed job ``jid`` into the ready queue."""
        reply = self._job_call(b"kick-job", jid, b"KICKED")
        if reply is not None:
            raise _error("kick-job", reply)

    def _peek(self, data, cmd):
        reply = self._call(data)
        if reply[0] == b"NOT_FOUND":
            return None
        return self._job(reply, cmd, False)

    def peek(self, jid: "JobRef") -> "Optional[Job]":
        """Return the job ``jid`` (not reserved), or None."""
        return self._peek(b"peek %d\r\n" % self._core.check_jid(jid), "peek")

    def peek_ready(self) -> "Optional[Job]":
        """Return the next ready job of the used tube, or None."""
        return self._peek(b"peek-ready\r\n", "peek-ready")

    def peek_delayed(self) -> "Optional[Job]":
        """Return the delayed job of the used tube with the shortest delay left, or None."""
        return self._peek(b"peek-delayed\r\n", "peek-delayed")

    def peek_buried(self) -> "Optional[Job]":
        """Return the next buried job of the used tube, or None."""
        return self._peek(b"peek-buried\r\n", "peek-buried")

    # -- stats and admin --

    def stats(self) -> "YAMLResult":
        """Return the server's statistics (a dict with ``parse_yaml=True``)."""
        return self._yaml(b"stats\r\n", "stats")

    def stats_tube(self, name: str) -> "YAMLResult":
        """Return the statistics of the tube ``name``."""
        return self._yaml(b"stats-tube %s\r\n" % self._core.check_tube(name), "stats-tube")

    def stats_job(self, jid: "JobRef") -> "YAMLResult":
        """Return the statistics of the job ``jid``."""
        return self._yaml(b"stats-job %d\r\n" % self._core.check_jid(jid), "stats-job")

    def pause_tube(self, name: str, delay: int) -> None:
        """Pause the tube ``name`` for ``delay`` seconds (0 unpauses)."""
        core = self._core
        self._job_command(b"pause-tube %s %d\r\n" % (core.check_tube(name), core.check_uint32(delay, "delay")),
                          "pause-tube", b"PAUSED")

    # -- batches --

    def _batch(self, cmd, run, outcome, results, *args, wait=None):
        """Run a pipelined core batch; map every entry of ``results`` to its outcome.

        Raises BatchError when an item failed, and attaches the confirmed outcomes as
        ``.results`` to an error of the items (a bad item, or the iterator's own exception:
        the connection stays usable) or to a transport error (a prefix; the connection is closed).
        ``wait``: seconds the first command may block on the server, on top of ``socket_timeout``.
        """
        with self._lock:
            proto = self._proto
            if proto is None:
                raise self._closed()
            timed = wait is not None and self._socket_timeout is not None
            if timed:
                proto.sock.settimeout(wait + self._socket_timeout)
            try:
                bad = getattr(proto, run)(*args)
                if timed:
                    proto.sock.settimeout(self._socket_timeout)
            except OSError as err:
                self._drop(proto)
                exc = SocketError(err)
                exc.results = [outcome(r) for r in results]
                raise exc from err
            except (SocketError, ProtocolError) as err:
                self._drop(proto)
                err.results = [outcome(r) for r in results]
                raise
            except Exception as err:
                if run == "reserve_many" or isinstance(err, MemoryError):
                    self._drop(proto)
                    raise
                # A bad item or the caller's iterator failed before its window was sent; the core
                # read the replies of the windows sent, so the stream is in sync.
                # results is None when nothing was sent (a sequence, or an iterator's first window).
                try:
                    err.results = [outcome(r) for r in results] if results else None
                except AttributeError:
                    pass
                raise
            except BaseException:
                self._drop(proto)
                raise
        if bad:
            raise BatchError([outcome(r) for r in results])
        return results

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
        return self._batch("put", "put_many", _put_outcome, results, items, priority, delay, ttr,
                           self._encoding, results)

    def _jobs_many(self, cmd, template, args, ok, jids):
        results: list = []
        outcome = _job_outcome(cmd, ok)
        try:
            self._batch(cmd, "jobs_many", outcome, results, jids, template, args, ok, results)
        finally:
            if cmd != "touch" and isinstance(jids, (list, tuple)):
                for item, result in zip(jids, results):
                    if isinstance(item, Job) and (result is None or result[0] == b"BURIED"):
                        item.reserved = False

    def delete_many(self, jids: "Iterable[JobRef]") -> None:
        """Delete many jobs (ids or Jobs), pipelined."""
        self._jobs_many("delete", b"delete %d\r\n", (), b"DELETED", jids)

    def release_many(self, jids: "Iterable[JobRef]", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release many reserved jobs (ids or Jobs), pipelined."""
        core = self._core
        args = (core.check_uint32(priority, "priority"), core.check_uint32(delay, "delay"))
        self._jobs_many("release", b"release %d %d %d\r\n", args, b"RELEASED", jids)

    def bury_many(self, jids: "Iterable[JobRef]", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury many reserved jobs (ids or Jobs), pipelined."""
        args = (self._core.check_uint32(priority, "priority"),)
        self._jobs_many("bury", b"bury %d %d\r\n", args, b"BURIED", jids)

    def touch_many(self, jids: "Iterable[JobRef]") -> None:
        """Touch many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("touch", b"touch %d\r\n", (), b"TOUCHED", jids)

    def reserve_many(self, n: int, timeout: float = 0) -> "List[Job]":
        """Reserve up to ``n`` jobs: wait up to ``timeout`` seconds for the first, then take
        what is ready without waiting. Return a list of Jobs (``[]`` when none came).

        Raises DeadlineSoon when the first reserve reports it (later ones just end the batch).
        """
        n = self._core.check_uint32(n, "n")
        seconds = _check_timeout(timeout)
        if n == 0:
            return []
        results: list = []

        def outcome(entry):
            if len(entry) == 2:     # (jid, body)
                return Job(self, entry[0], entry[1], True)
            if entry[0] == b"DEADLINE_SOON":
                return DeadlineSoon([])
            return _error("reserve-with-timeout", entry)

        first = b"reserve-with-timeout %d\r\n" % seconds
        try:
            self._batch("reserve", "reserve_many", outcome, results, n, first, results, wait=seconds)
        except BatchError as err:
            jobs = [r for r in err.results if isinstance(r, Job)]
            if all(isinstance(r, (Job, DeadlineSoon)) for r in err.results):
                if not jobs:
                    raise DeadlineSoon([]) from None
                return jobs
            raise
        return [Job(self, jid, body, True) for jid, body in results]


def _put_outcome(entry):
    return entry if entry.__class__ is int else _error("put", entry)


def _job_outcome(cmd, ok):
    def outcome(entry):
        if entry is None or (cmd == "release" and entry[0] == b"BURIED"):
            return None
        return _error(cmd, entry)
    return outcome


def _backend_name(core):
    return "python" if core.__name__.endswith("_pyprotocol") else "cython"


_yaml_module = None


def _load_yaml(core, body, cmd="stats-job"):
    """Parse beanstalkd's YAML with the core's parser, falling back to ``yaml.safe_load``."""
    try:
        return core.parse_yaml(body)
    except ValueError:
        pass
    global _yaml_module
    if _yaml_module is None:
        try:
            import yaml
        except ImportError:
            import logging      # lazily: importing logging costs more than this whole package
            logging.getLogger(__name__).error("PyYAML is not installed; returning the raw YAML text")
            return body.decode("utf-8", "replace")
        _yaml_module = yaml
    loader = getattr(_yaml_module, "CSafeLoader", _yaml_module.SafeLoader)
    try:
        return _yaml_module.load(body, Loader=loader)
    except _yaml_module.YAMLError as err:
        # A reply this client cannot read is the server's fault: report it as one.
        raise UnexpectedResponse(cmd, "OK", [str(len(body))]) from err


class Job:
    """A job: ``conn``, ``jid``, ``body``, ``reserved``, and ``body_bytes``.

    ``body`` is the body decoded with the connection's encoding on first access
    (``bytes`` when the encoding is None); ``body_bytes`` is always the raw bytes, so a
    body that does not decode never loses the job: it can still be buried or deleted.
    """

    def __init__(self, conn: "Connection", jid: int, body: "Body", reserved: bool = True) -> None:
        self.conn = conn
        self.jid = jid
        self.reserved = reserved
        self._body: "Union[str, bytes, None]"
        if body.__class__ is bytes:     # the common case first: a job from the server
            self._body = None
            self.body_bytes = body
        elif isinstance(body, str):
            self._body = body
            encoding = getattr(conn, "_encoding", None) or "utf-8"
            self.body_bytes = body.encode(encoding)
        else:
            self._body = None
            self.body_bytes = bytes(body)

    @property
    def body(self) -> "Union[str, bytes]":
        if self._body is None:
            encoding = getattr(self.conn, "_encoding", "utf-8")
            self._body = self.body_bytes if encoding is None else self.body_bytes.decode(encoding)
        return self._body

    @body.setter
    def body(self, value: "Body") -> None:
        Job.__init__(self, self.conn, self.jid, value, self.reserved)

    def __repr__(self) -> str:
        return "<beanstalkc_fast.Job jid=%d reserved=%s body=%r>" % (self.jid, self.reserved, self.body_bytes[:40])

    def _priority(self):
        # The job's current priority, whatever parse_yaml says.
        body = self.conn._body_of(b"stats-job %d\r\n" % self.conn._core.check_jid(self.jid), "stats-job", b"OK")
        stats = _load_yaml(self.conn._core, body)
        return stats["pri"] if isinstance(stats, dict) else DEFAULT_PRIORITY

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
