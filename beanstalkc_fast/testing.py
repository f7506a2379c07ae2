"""A pytest plugin with a real beanstalkd for your tests.

Installed as the ``pytest11`` entry point ``beanstalkc_fast``. It provides the session
fixture ``beanstalkd``: a server started on a free loopback port, with ``.host``,
``.port``, ``.connect(**kw)``, ``.stop()`` and ``.start()``. The binary is looked up as
``$BEANSTALKD`` or ``beanstalkd`` on ``PATH``; when it is missing the tests using the
fixture are skipped, except when ``CI`` is set, where that is an error.

It can also be used without pytest::

    with BeanstalkdServer() as server:
        conn = server.connect()

``LatencyProxy(host, port, rtt)`` puts the server "on another machine": a TCP relay on a free
loopback port that holds what it relays for half of ``rtt`` seconds in each direction::

    with LatencyProxy(server.host, server.port, rtt=0.002) as proxy:
        conn = beanstalkc_fast.Connection(proxy.host, proxy.port)

``TLSProxy(host, port, certfile, keyfile)`` puts it behind a TLS terminator, as stunnel or
haproxy would::

    with TLSProxy(server.host, server.port, "cert.pem", "key.pem") as proxy:
        conn = beanstalkc_fast.Connection(proxy.host, proxy.port, ssl=context)
"""
import collections
import os
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

__all__ = ["BeanstalkdServer", "BeanstalkdNotFound", "LatencyProxy", "TLSProxy", "find_beanstalkd", "beanstalkd"]


class BeanstalkdNotFound(RuntimeError):
    """No beanstalkd binary was found."""


def find_beanstalkd():
    """Return the path of the beanstalkd binary, or raise BeanstalkdNotFound."""
    path = os.environ.get("BEANSTALKD") or shutil.which("beanstalkd")
    if not path:
        raise BeanstalkdNotFound("beanstalkd not found: install it (apt-get install beanstalkd, "
                                 "brew install beanstalkd) or set BEANSTALKD=/path/to/beanstalkd")
    return path


def _free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BeanstalkdServer:
    """A beanstalkd process on a free loopback port (or a fixed ``port``).

    ``args`` are extra command-line arguments (e.g. ``["-b", binlog_dir]``,
    ``["-z", "1024"]``).
    """

    def __init__(self, host="127.0.0.1", port=None, args=(), binary=None):
        self.host = host
        self.port = port or _free_port(host)
        self.args = list(args)
        self.binary = binary or find_beanstalkd()
        self.process = None

    def __repr__(self):
        return "<BeanstalkdServer %s:%d %s>" % (self.host, self.port, "running" if self.running else "stopped")

    @property
    def running(self):
        """Whether the beanstalkd process is running."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout=10.0):
        """Start the server (on the same port as before) and wait until it accepts connections."""
        if self.running:
            return self
        self.process = subprocess.Popen([self.binary, "-l", self.host, "-p", str(self.port)] + self.args,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                self.process = None
                raise RuntimeError("beanstalkd exited at start: %s" % err)
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("beanstalkd did not listen on %s:%d" % (self.host, self.port))
                time.sleep(0.01)

    def stop(self, kill=False):
        """Stop the server: SIGTERM, or SIGKILL with ``kill=True``."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill() if kill else proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def restart(self, kill=False):
        """Stop, then start on the same port."""
        self.stop(kill)
        return self.start()

    def connect(self, **kw):
        """Return a ``beanstalkc_fast.Connection`` to this server."""
        from .connection import Connection
        return Connection(self.host, self.port, **kw)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# -- latency proxy --------------------------------------------------------------------

_EOF = "EOF"        # queue markers: the source half-closed / was reset
_RST = "RST"
_RECV = 65536
_QUEUE_LIMIT = 4 << 20      # bytes held per direction before the proxy stops reading its source
_FD_LIMIT = 1024            # select()'s FD_SETSIZE


class _Flow:
    """One direction of a relayed connection: bytes read from ``src``, written to ``dst``."""
    __slots__ = ("link", "src", "dst", "queue", "queued", "reading", "blocked", "done", "reverse")

    def __init__(self, link, src, dst):
        self.link = link
        self.src = src
        self.dst = dst
        self.queue = collections.deque()    # [due, bytes or memoryview or marker], in read order
        self.queued = 0         # bytes in queue
        self.reading = True     # src has neither ended nor been reset
        self.blocked = False    # dst's send buffer is full: wait until it is writable
        self.done = False       # the EOF was passed on, or the flow was dropped
        self.reverse = None


class _Link:
    """A client connection and its upstream connection."""
    __slots__ = ("up", "down", "masks")

    def __init__(self, client, upstream):
        self.up = _Flow(self, client, upstream)
        self.down = _Flow(self, upstream, client)
        self.up.reverse, self.down.reverse = self.down, self.up
        self.masks = {client: 0, upstream: 0}      # events registered per socket


class LatencyProxy:
    """A TCP relay to ``host:port`` that delays each direction by half of ``rtt`` seconds.

    It listens on a free port of ``listen_host`` (``.host``, ``.port``) and opens one upstream
    connection per accepted client. Every chunk read in either direction is stamped and
    written on once ``rtt / 2`` seconds have passed since it was read, in order; with
    ``rtt=0`` it is written at once. A half-close (EOF) is passed on as a half-close
    (``shutdown(SHUT_WR)``) and a reset as a reset (a close with ``SO_LINGER`` 0), each after
    the data read before it and with the same delay. Bandwidth is not limited, but at most
    4 MB are held per direction (the proxy then stops reading, as a full network would).
    The connection set-up itself is not delayed (the relay connects upstream when it accepts a
    client, blocking briefly), and an upstream that refuses the connection resets the client's.

    One background thread serves every connection (``select()``: timers to the
    microsecond, with a 1 us timer slack on Linux; past 1024 file descriptors it switches to
    the platform's selector, whose timers may be coarser). Each delay is a lower bound: the
    thread's wake-up adds to it (on a small VM, about 0.1 ms per round trip). ``cpu_time()`` is that thread's CPU time, so a benchmark can
    report what the "network" cost; ``native_id`` is its OS thread id (to pin it).
    ``close()`` stops the relay, closes every connection and joins the thread; the proxy is
    also a context manager. The thread runs in the caller's process and takes the GIL to relay
    each chunk: a test's own Python threads share the interpreter with it.
    """

    def __init__(self, host, port, rtt=0.0, listen_host="127.0.0.1"):
        rtt = float(rtt)
        if not rtt >= 0:
            raise ValueError("rtt must be >= 0 seconds, not %r" % (rtt,))
        self.target = (host, port)
        self.rtt = rtt
        self._delay = rtt / 2
        self._listener = socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET)
        try:
            self._listener.bind((listen_host, 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        self.host, self.port = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.SelectSelector() if hasattr(selectors, "SelectSelector") else \
            selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "accept")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._links = set()
        self._pending = set()   # flows with something queued and not blocked
        self._closing = False
        self._cpu_end = None
        self._cpu_sample = 0.0
        self._clock = None
        self._thread = threading.Thread(target=self._run, name="LatencyProxy :%d" % self.port, daemon=True)
        self._thread.start()
        self.native_id = getattr(self._thread, "native_id", None)
        try:
            self._clock = time.pthread_getcpuclockid(self._thread.ident)
        except (AttributeError, OSError):
            pass

    def __repr__(self):
        return "<LatencyProxy %s:%d -> %s:%d rtt=%gs%s>" % (self.host, self.port, self.target[0], self.target[1],
                                                          self.rtt, " closed" if self._closing else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop relaying: close the listener and every connection, join the thread. Idempotent."""
        if not self._closing:
            self._closing = True
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)
        self._wake_w.close()

    def cpu_time(self):
        """CPU seconds used by the relay thread so far."""
        if self._cpu_end is not None:
            return self._cpu_end
        if self._clock is not None:
            try:
                return time.clock_gettime(self._clock)
            except OSError:         # the thread just ended
                return self._cpu_end or 0.0
        return self._cpu_sample

    # -- the relay thread -----------------------------------------------------------

    def _run(self):
        sample = self._clock is None
        _fine_timers()
        try:
            while not self._closing:
                timeout = self._deliver(time.monotonic())
                try:
                    events = self._sel.select(timeout)
                except ValueError:      # a descriptor beyond select()'s limit
                    self._switch_selector()
                    continue
                for key, mask in events:
                    what = key.data
                    if what == "accept":
                        self._accept()
                    elif what == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                    else:
                        link, sock = what
                        if link not in self._links:
                            continue
                        if mask & selectors.EVENT_WRITE:
                            flow = link.up if sock is link.up.dst else link.down
                            flow.blocked = False
                            self._pending.add(flow)
                        if mask & selectors.EVENT_READ:
                            self._read(link, link.up if sock is link.up.src else link.down)
                if sample:
                    self._cpu_sample = time.thread_time()
        finally:
            for link in list(self._links):
                self._drop(link)
            for sock in (self._listener, self._wake_r):
                sock.close()
            self._sel.close()
            self._cpu_end = time.thread_time()

    def _switch_selector(self):
        old = self._sel
        if isinstance(old, selectors.DefaultSelector):
            raise RuntimeError("LatencyProxy: cannot select on these descriptors")
        self._sel = selectors.DefaultSelector()
        for key in old.get_map().values():
            self._sel.register(key.fileobj, key.events, key.data)
        old.close()

    def _accept(self):
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(client)
            return
        link = _Link(client, upstream)
        for sock in (client, upstream):
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._links.add(link)
        self._update(link)
        if client.fileno() >= _FD_LIMIT or upstream.fileno() >= _FD_LIMIT:
            if not isinstance(self._sel, selectors.DefaultSelector):
                self._switch_selector()

    def _read(self, link, flow):
        try:
            data = flow.src.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = None         # reset (or another failure): passed on as a reset
        now = time.monotonic()
        if data:
            if not self._delay and not flow.queue and not flow.blocked:
                data = self._send(link, flow, data)     # at once; a rest is queued
                if data is None:
                    return
            if data:
                flow.queue.append([now + self._delay, data])
                flow.queued += len(data)
                self._pending.add(flow)
        else:
            flow.reading = False
            flow.queue.append([now + self._delay, _EOF if data == b"" else _RST])
            self._pending.add(flow)
        if flow.blocked or not flow.reading or flow.queued >= _QUEUE_LIMIT:
            self._update(link)      # else the registered events stay as they are

    def _send(self, link, flow, data):
        """Send what dst takes of ``data`` now; return the rest (b"" if all), or None when
        dst failed (the link is then reset or dropped)."""
        try:
            k = flow.dst.send(data)
        except (BlockingIOError, InterruptedError):
            k = 0
        except OSError:
            self._fail(link, flow)
            return None
        if k == len(data):
            return b""
        flow.blocked = True
        return memoryview(data)[k:]

    def _fail(self, link, flow):
        """dst cannot be written (its peer reset it): drop this direction, reset src's peer."""
        flow.queue.clear()
        flow.queued = 0
        flow.reading = False
        flow.done = True
        self._pending.discard(flow)
        rev = flow.reverse
        if rev.reading:
            rev.reading = False
            rev.queue.append([time.monotonic() + self._delay, _RST])
            self._pending.add(rev)
        self._update(link)

    def _deliver(self, now):
        """Write every due chunk; return the seconds until the next one is due (None: none)."""
        nearest = None
        for flow in list(self._pending):
            link, queue = flow.link, flow.queue
            if link not in self._links:
                self._pending.discard(flow)
                continue
            while queue and not flow.blocked:
                due, data = queue[0]
                if due > now:
                    nearest = due if nearest is None or due < nearest else nearest
                    break
                if data is _EOF:
                    queue.popleft()
                    try:
                        flow.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    flow.done = True
                elif data is _RST:
                    self._drop(link, reset=flow.dst)
                    break
                else:
                    if len(queue) > 1 and queue[1][0] <= now and queue[1][1].__class__ is bytes:
                        data = self._coalesce(queue, now)      # one send for the chunks now due
                    rest = self._send(link, flow, data)
                    if rest is None:
                        break
                    flow.queued -= len(data) - len(rest)
                    if rest:
                        queue[0][1] = rest
                    else:
                        queue.popleft()
            if not queue or flow.blocked:
                self._pending.discard(flow)
            if link in self._links:
                if link.up.done and link.down.done and not link.up.queue and not link.down.queue:
                    self._drop(link)
                else:
                    self._update(link)
        return None if nearest is None else max(0.0, nearest - time.monotonic())

    @staticmethod
    def _coalesce(queue, now):
        """Join the leading due data chunks of ``queue`` into its first entry (up to _RECV * 4
        bytes); return it. The receiver then gets what was due at once, as from a network."""
        parts = [queue.popleft()[1]]
        size = len(parts[0])
        while queue and queue[0][0] <= now and queue[0][1].__class__ is bytes and size < _RECV * 4:
            data = queue.popleft()[1]
            parts.append(data)
            size += len(data)
        data = b"".join(parts)
        queue.appendleft([now, data])
        return data

    def _update(self, link):
        """Register each socket of ``link`` for the events its flows wait for."""
        for sock, inflow, outflow in ((link.up.src, link.up, link.down), (link.down.src, link.down, link.up)):
            mask = 0
            if inflow.reading and inflow.queued < _QUEUE_LIMIT:
                mask |= selectors.EVENT_READ
            if outflow.blocked:
                mask |= selectors.EVENT_WRITE
            old = link.masks[sock]
            if mask == old:
                continue
            if not old:
                self._sel.register(sock, mask, (link, sock))
            elif not mask:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, (link, sock))
            link.masks[sock] = mask

    def _drop(self, link, reset=None):
        """Close both sockets of ``link`` (``reset``: that one with a reset)."""
        self._links.discard(link)
        for flow in (link.up, link.down):
            self._pending.discard(flow)
            flow.queue.clear()
        for sock, mask in link.masks.items():
            if mask:
                try:
                    self._sel.unregister(sock)
                except (KeyError, ValueError):
                    pass
            if sock is reset:
                _reset(sock)
            else:
                sock.close()


class TLSProxy:
    """A TLS terminator in front of ``host:port``, as stunnel or haproxy: it accepts TLS
    connections on a free port of ``listen_host`` (``.host``, ``.port``) with the certificate
    chain ``certfile`` (and its private key ``keyfile``, if not in ``certfile``) and relays the
    plain bytes to ``host:port`` over one upstream TCP connection per client.

    An EOF or a failure on either side closes both connections of that client; a client whose
    handshake fails (it does not trust the certificate, or the name does not match) is
    dropped and no upstream connection is made. One background thread runs an asyncio
    event loop for every connection (TLS through memory buffers: each TLS connection is used
    by that one thread). ``close()`` stops the relay, closes every connection and joins the
    thread; the proxy is also a context manager.
    """

    def __init__(self, host, port, certfile, keyfile=None, listen_host="127.0.0.1"):
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        self.target = (host, port)
        self._listener = socket.socket(socket.AF_INET6 if ":" in listen_host else socket.AF_INET)
        try:
            self._listener.bind((listen_host, 0))
            self._listener.listen(128)
        except BaseException:
            self._listener.close()
            raise
        self.host, self.port = self._listener.getsockname()[:2]
        self._closing = False
        self._tasks = set()
        self._writers = set()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(context,), name="TLSProxy :%d" % self.port,
                                        daemon=True)
        self._thread.start()
        self._started.wait()

    def __repr__(self):
        return "<TLSProxy %s:%d -> %s:%d%s>" % (self.host, self.port, self.target[0], self.target[1],
                                                " closed" if self._closing else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop relaying: close the listener and every connection, join the thread. Idempotent."""
        if not self._closing:
            self._closing = True
            try:
                self._loop.call_soon_threadsafe(self._stop.set_result, None)
            except RuntimeError:    # the loop is closed already
                pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    # -- the relay thread -----------------------------------------------------------

    def _run(self, context):
        import asyncio
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._stop = loop.create_future()
            loop.run_until_complete(self._serve(context))
        finally:
            self._started.set()     # if it failed to start, the constructor waits no more
            loop.close()

    async def _serve(self, context):
        import asyncio
        server = await asyncio.start_server(self._relay, sock=self._listener, ssl=context)
        self._started.set()
        try:
            await self._stop
        finally:
            server.close()
            for writer in self._writers:    # each relay then sees EOF and ends
                writer.transport.abort()    # at once: no TLS shutdown exchange
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5)

    async def _relay(self, client_reader, client_writer):
        import asyncio
        task = asyncio.current_task()
        self._tasks.add(task)
        self._writers.add(client_writer)
        upstream_writer = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self._writers.add(upstream_writer)
            await asyncio.gather(self._pipe(client_reader, upstream_writer),
                                 self._pipe(upstream_reader, client_writer), return_exceptions=True)
        except (OSError, EOFError):
            pass
        finally:
            self._tasks.discard(task)
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()

    @staticmethod
    async def _pipe(reader, writer):
        # One direction; its end (EOF or a failure) ends the other one too (the writers close).
        try:
            while True:
                data = await reader.read(_RECV)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


def _fine_timers():
    """Linux: let this thread's timed waits end within a microsecond of their deadline rather
    than the default 50 us (the timer slack): the delays are then nearer to rtt / 2."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)     # PR_SET_TIMERSLACK, ns
    except (ImportError, OSError, AttributeError):
        pass


def _reset(sock):
    """Close ``sock`` with a reset (RST) rather than a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


try:
    import pytest
except ImportError:     # the plugin needs pytest; the server class does not
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def beanstalkd():
        """A real beanstalkd on a free loopback port for the whole session."""
        try:
            server = BeanstalkdServer()
        except BeanstalkdNotFound as err:
            if os.environ.get("CI"):
                pytest.fail(str(err) + " (CI is set: a missing server is a failure)")
            pytest.skip(str(err))
        server.start()
        yield server
        server.stop()
