"""Connection and Job: the beanstalkc 0.4 API on Python 3, plus beanstalkd 1.12 extras and batches.

Reply semantics (which status is success, a documented failure or unexpected) come from
the command table in ``_commands.py``, shared by every driver; the protocol core's blocking
driver does the I/O. This module adds the locking, the translation of transport errors,
Jobs, YAML and the bookkeeping of tubes.
"""
import _thread

from . import _backend, _commands
from ._commands import COMMANDS as _COMMANDS, result as _result
from .exceptions import (BatchError, DeadlineSoon, InvalidArgument, InvalidType, ProtocolError, SocketError,
                         UnexpectedResponse)

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
_UNDECODED = object()     # Job._body before its first decode


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

    # Every command takes this one path: the lock (acquire()/release() rather than "with": a
    # lock's __exit__ costs as much as both), the closed check, one core call, and the
    # translation of its errors.

    def _do(self, method, *args):
        """Call the blocking driver's ``method(*args)`` under the lock; translate its errors."""
        lock = self._lock
        lock.acquire()
        try:
            proto = self._proto
            if proto is None:
                raise SocketError("connection is closed; call reconnect()")
            try:
                return getattr(proto, method)(*args)
            except BaseException as err:
                raise self._failed(proto, method, err)
        finally:
            lock.release()

    def _failed(self, proto, method, err):
        """The exception to raise for ``err`` out of a core call. An argument refused before a
        byte was sent leaves the connection usable, and so does any other error of a batch's
        items or of its caller's iterator (the core read the replies of every window it sent);
        anything else drops the connection."""
        if isinstance(err, (InvalidArgument, InvalidType)):
            return err
        if (method == "put_many" or method == "jobs_many") and isinstance(err, Exception) and not isinstance(
                err, (OSError, SocketError, ProtocolError, MemoryError)):
            return err
        self._drop(proto)
        if isinstance(err, OSError):
            exc = SocketError(err)
            exc.__cause__ = err
            return exc
        return err

    def _command(self, cmd, *args):
        """Run the table's command ``cmd`` with ``args``; return what its reply means."""
        data = _commands.encode(self._core, cmd, *args) if args else _COMMANDS[cmd][0]
        return _result(cmd, self._do("call", data))

    # -- YAML --

    def _yaml(self, cmd, *args):
        reply = self._do("call", _commands.encode(self._core, cmd, *args) if args else _COMMANDS[cmd][0])
        body = reply[2] if reply[0] == b"OK" else _result(cmd, reply)   # the table's OK -> body, inlined
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
        reply = self._do("put", body, priority, delay, ttr, self._encoding)
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
        (forever if None). Return a Job, or None on timeout; raise DeadlineSoon."""
        if timeout is None:
            reply = self._do("reserve", b"reserve\r\n", None)
            cmd = "reserve"
        else:
            if timeout.__class__ is not int or not 0 <= timeout <= 4294967295:
                timeout = _commands.check_timeout(self._core, timeout)
            reply = self._do("reserve", b"reserve-with-timeout %d\r\n" % timeout, timeout)
            cmd = "reserve-with-timeout"
        if len(reply) != 2:
            reply = _result(cmd, reply)
            if reply is None:
                return None
        return Job(self, reply[0], reply[1], True)

    def reserve_job(self, jid: "JobRef") -> "Job":
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
        reply = self._do("call", _commands.encode(self._core, "ignore", name))
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

    # delete/touch/kick-job: one core call that checks the id, encodes, sends and reads (None: success)

    def delete(self, jid: "JobRef") -> None:
        """Delete the job ``jid``."""
        reply = self._do("job_command", b"delete", jid, b"DELETED")
        if reply is not None:
            _result("delete", reply)

    def release(self, jid: "JobRef", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release the reserved job ``jid`` back to the ready (or delayed) queue."""
        self._command("release", jid, priority, delay)

    def bury(self, jid: "JobRef", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury the reserved job ``jid``."""
        self._command("bury", jid, priority)

    def touch(self, jid: "JobRef") -> None:
        """Ask for more time to work on the reserved job ``jid``."""
        reply = self._do("job_command", b"touch", jid, b"TOUCHED")
        if reply is not None:
            _result("touch", reply)

    def kick(self, bound: int = 1) -> int:
        """Kick at most ``bound`` buried (else delayed) jobs of the used tube; return how many."""
        return self._command("kick", bound)

    def kick_job(self, jid: "JobRef") -> None:
        """Kick the buried or delayed job ``jid`` into the ready queue."""
        reply = self._do("job_command", b"kick-job", jid, b"KICKED")
        if reply is not None:
            _result("kick-job", reply)

    def _peek(self, cmd, *args):
        found = self._command(cmd, *args)
        return None if found is None else Job(self, found[0], found[1], False)

    def peek(self, jid: "JobRef") -> "Optional[Job]":
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

    def stats_job(self, jid: "JobRef") -> "YAMLResult":
        """Return the statistics of the job ``jid``."""
        return self._yaml("stats-job", jid)

    def pause_tube(self, name: str, delay: int) -> None:
        """Pause the tube ``name`` for ``delay`` seconds (0 unpauses)."""
        self._command("pause-tube", name, delay)

    # -- batches --

    def _outcome(self, cmd, entry):
        # A batch entry as the caller sees it: an id, None, a Job, or the item's exception.
        if entry is None or entry.__class__ is int:
            return entry
        if len(entry) == 2:     # (jid, body) of a reserved job
            return Job(self, entry[0], entry[1], True)
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
                for item, result in zip(jids, results):
                    if isinstance(item, Job) and (result is None or result[0] == b"BURIED"):
                        item.reserved = False

    def delete_many(self, jids: "Iterable[JobRef]") -> None:
        """Delete many jobs (ids or Jobs), pipelined."""
        self._jobs_many("delete", jids)

    def release_many(self, jids: "Iterable[JobRef]", priority: int = DEFAULT_PRIORITY, delay: int = 0) -> None:
        """Release many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("release", jids, priority, delay)

    def bury_many(self, jids: "Iterable[JobRef]", priority: int = DEFAULT_PRIORITY) -> None:
        """Bury many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("bury", jids, priority)

    def touch_many(self, jids: "Iterable[JobRef]") -> None:
        """Touch many reserved jobs (ids or Jobs), pipelined."""
        self._jobs_many("touch", jids)

    def reserve_many(self, n: int, timeout: float = 0) -> "List[Job]":
        """Reserve up to ``n`` jobs: wait up to ``timeout`` seconds for the first, then take
        what is ready without waiting. Return a list of Jobs (``[]`` when none came).

        Raises DeadlineSoon when the first reserve reports it (later ones just end the batch).
        """
        core = self._core
        n = core.check_uint32(n, "n")
        seconds = _commands.check_timeout(core, timeout)
        if n == 0:
            return []
        results: list = []
        first = b"reserve-with-timeout %d\r\n" % seconds
        try:
            results = self._batch("reserve-with-timeout", "reserve_many", results, n, first, results, seconds)
        except BatchError as err:
            jobs = [r for r in err.results if isinstance(r, Job)]
            if all(isinstance(r, (Job, DeadlineSoon)) for r in err.results):
                if not jobs:
                    raise DeadlineSoon([]) from None
                return jobs
            raise
        return [Job(self, jid, body, True) for jid, body in results]


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

    def __init__(self, conn: "Connection", jid: int, body: "Optional[Body]", reserved: bool = True) -> None:
        self.conn = conn
        self.jid = jid
        self.reserved = reserved
        self._body: "Any"
        if body.__class__ is bytes:     # the common case first: a job from the server
            self._body = _UNDECODED
            self.body_bytes: "Optional[bytes]" = body
        elif body is None:              # a Job built from an id alone, to call stats() or delete() on it
            self._body = None
            self.body_bytes = None
        elif isinstance(body, str):
            self._body = body
            encoding = getattr(conn, "_encoding", None) or "utf-8"
            self.body_bytes = body.encode(encoding)
        else:
            try:    # bytes-like only: bytes(3) would be three zero bytes, not the body 3
                self.body_bytes = memoryview(body).tobytes()
            except TypeError:
                raise InvalidType("job body must be str, bytes-like or None, not %s" % type(body).__name__) from None
            self._body = _UNDECODED

    @property
    def body(self) -> "Union[str, bytes, None]":
        if self._body is _UNDECODED:
            encoding = getattr(self.conn, "_encoding", "utf-8")
            self._body = self.body_bytes if encoding is None else self.body_bytes.decode(encoding)  # type: ignore
        return self._body

    @body.setter
    def body(self, value: "Optional[Body]") -> None:
        Job.__init__(self, self.conn, self.jid, value, self.reserved)

    def __repr__(self) -> str:
        raw = None if self.body_bytes is None else self.body_bytes[:40]
        return "<beanstalkc_fast.Job jid=%d reserved=%s body=%r>" % (self.jid, self.reserved, raw)

    def _priority(self):
        # The job's current priority, whatever parse_yaml says.
        stats = _load_yaml(self.conn._core, self.conn._command("stats-job", self.jid))
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
