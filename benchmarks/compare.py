"""Side-by-side benchmark: beanstalkc_fast (both backends) against its peers and raw sockets.

    python benchmarks/compare.py [--quick] [--ops N] [--repeat R] [--cpu N | --no-pin]
                                 [--rtt MS [--proxy-apart]] [--host H --port P] [--clients LIST]
                                 [--chart PNG] [--json PATH] [--markdown PATH]
                                 [--issue-table PATH [--no-pool]] [--pool [--pool-placement P]]

It starts its own beanstalkd on a free loopback port (unless ``--host``/``--port`` are
given) and pins itself and the server to one CPU: on small machines a cross-CPU round
trip costs more than a client's own work and hides every difference.

Rows: single put, single reserve+delete, ``stats()``, ``put_many`` and ``reserve_many``
+ ``delete_many``; for the asyncio clients also 1,000 coroutines putting on one connection (long-
lived, and as gathered tasks of one put each) and 100 coroutines reserving and deleting. Clients: beanstalkc_fast with the compiled and the pure-Python core,
greenstalk, beanstalkc3, pystalk (single rows only: they have no batches), a minimal
raw-socket client (the floor for single commands) and a raw pipelined client (the
ceiling for batches: same batch size, best window of a sweep), both in Python, and the
C reference clients (``refclient.c`` next to this file, compiled with ``cc -O2`` when a compiler is there):
sequential (the floor under the interpreter) and pipelined with the library's windows and
yield (the ceiling); and the asyncio clients: ``beanstalkc_fast.aio`` (compiled core) on the
stock loop and on uvloop, and aiostalk (one coroutine at a time: all it supports). Every (row, client) runs ``--repeat`` times, interleaved, each on a
fresh tube; the table reports medians, ratios, the client's CPU per job (user+system of
this process, as ``os.times()`` but at ns resolution; the C client's own rusage) and the
server's (its own rusage), plus import times in fresh interpreters. Every client runs in
its fastest documented mode: bytes bodies, no decoding.

``--rtt MS`` puts the server "on another machine": every client reaches it through one
``beanstalkc_fast.testing.LatencyProxy`` that holds each chunk MS/2 milliseconds in each
direction (the harness's own control connection goes direct). The proxy's thread runs in
this process, on the pinned CPU with the client and the server (``--proxy-apart``: on the
other CPUs, as the network would; on a small VM each cross-CPU wake-up then costs more than
the proxy's own work); its CPU is reported per job and subtracted from the in-process
clients' CPU. Job counts shrink with the round trip so a run stays short.

``--issue-table PATH`` runs the rows of issue 23's table with its clients (every client but the
raw pipelined one): the rows above (bar 100 coroutines reserving) plus a ``put`` of a 60 KB body
and ``put_many`` / ``reserve_many`` + ``delete_many`` called with 100, 500 and 2,000 items (the
compiled core against the C pipeliner with the same calls and windows), then the pool comparison
in both placements; it writes to PATH, as markdown, each path's reached ratio beside its goal and
every client's jobs/s. One command per placement: without ``--rtt``, and with ``--rtt 1``
(``--quick``: a smoke run of about a minute).

``--pool`` runs the pool comparison instead: ``put_many`` and ``reserve_many`` + ``delete_many``
through one ``Connection`` to one server against a ``Pool`` (and an ``aio.Pool`` on the stock
loop) of ``--pool-servers`` (default 2) servers, each server pinned to its own CPU and the client unpinned (one server, on an unpinned
client, idles while the client waits for its replies; several servers overlap those waits);
``--pool-placement one-cpu`` puts the client and every server on one CPU instead (the client's own
CPU per job then shows). With ``--rtt`` each server is behind a LatencyProxy of its own.

This harness lives in the source checkout, not in the package: run it with the package installed
(``pip install -e '.[bench]'``: the peers are the ``bench`` extra). What ``beanstalkc-fast bench``
measures (this client alone, both cores) is ``beanstalkc_fast.bench``; this file reuses its rows
and client. It touches the library through its public API, plus ``_backend``/``_pyprotocol`` to
pick a core and ``beanstalkc_fast.bench.connection_class`` to run a connection on it.
"""
import argparse
import gc
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types

try:
    import beanstalkc_fast
except ImportError:     # a bare checkout, run as a script: use the package next to this directory
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import beanstalkc_fast
from beanstalkc_fast import _backend, _pyprotocol, bench
from beanstalkc_fast.bench import connection_class

RECV = 65536           # as the library reads; a bigger buffer costs an mmap per recv
ROWS = bench.ROWS + [     # (key, label, batch row?)
    # the asyncio clients only: many coroutines on one connection
    ("put_concurrent", "put, 1,000 coroutines", True),
    ("put_gather", "put, gather of 1,000 tasks", True),
    ("reserve_delete_concurrent", "reserve+delete, 100 coroutines", True),
]
DEFAULT_ROWS = [key for key, _, _ in ROWS]      # a run without --rows (or --issue-table)
# Rows that run one of the rows above with a body or a call size of their own (issue 23's table): their
# key -> the client method, the body size, the call size, the clients that run it (None: every client
# that has the method). A body or call size of None is the run's (--body-size, --batch).
BIG_BODY = 60000
ISSUE_SIZES = (100, 500, 2000)
SINGLE_SYNC = ("beanstalkc_fast[cython]", "beanstalkc_fast[python]", "greenstalk", "beanstalkc3", "pystalk",
               "raw socket", "C sequential")
SIZED = ("beanstalkc_fast[cython]", "C pipelined")
ROW_SPECS = {"put_60k": ("put", BIG_BODY, None, SINGLE_SYNC)}
ROWS.append(("put_60k", "put, 60 KB body", False))
for _size in ISSUE_SIZES:
    for _method, _label in (("put_many", "put_many"), ("reserve_delete_many", "reserve_many+delete_many")):
        ROW_SPECS["%s_%d" % (_method, _size)] = (_method, None, _size, SIZED)
        ROWS.append(("%s_%d" % (_method, _size), "%s, %s per call" % (_label, "{:,}".format(_size)), True))
# --issue-table: the rows of issue 23's table, and the clients it compares (the peers and the C references).
ISSUE_ROWS = ["put", "reserve_delete", "stats", "put_60k", "put_many"] + [
    "%s_%d" % (m, size) for m in ("put_many", "reserve_delete_many") for size in ISSUE_SIZES] + [
    "put_concurrent", "put_gather"]
ISSUE_CLIENTS = ["cython", "python", "greenstalk", "beanstalkc3", "pystalk", "raw", "c-seq", "c-pipe", "aio",
                 "aio-uvloop", "aiostalk"]
COLORS = {
    "beanstalkc_fast[cython]": "#1b7837", "beanstalkc_fast[python]": "#a6dba0", "greenstalk": "#2166ac",
    "beanstalkc3": "#f4a582", "pystalk": "#9970ab", "raw socket": "#878787", "raw pipelined": "#252525",
    "C sequential": "#fdb863", "C pipelined": "#b35806",
    "aio[cython]": "#35978f", "aio[cython]+uvloop": "#01665e", "aiostalk": "#dfc27d",
}
C_SEQ, C_PIPE = "C sequential", "C pipelined"
REFCLIENT_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "refclient.c")


def _parse(body):
    # The harness's own YAML needs: no PyYAML required.
    try:
        return _pyprotocol.parse_yaml(body)
    except ValueError:
        return _yaml_load(body)


def _yaml_load(text):
    import yaml
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


# -- clients ------------------------------------------------------------------------
# Each client connects in __init__ (untimed), uses and watches only ``tube``, and runs
# a row as ``client.<row>(n)``; rows it lacks are absent from ``rows``. Every loop binds
# its methods to locals first, the same treatment for all.

def _with_windows(core, window):
    """``core`` with its blocking Protocol's pipelining windows (puts and reserves) set to ``window``.

    The library has no public knob for them (its defaults are the core's WINDOW_ITEMS and
    RESERVE_WINDOW): a Connection makes its Protocol from its core, so this wraps the core."""
    if not window:
        return core

    def protocol(sock):
        proto = core.Protocol(sock)
        proto.window = proto.reserve_window = window
        return proto
    return types.SimpleNamespace(**dict(vars(core), Protocol=protocol))


class FastClient(bench.FastClient):
    """beanstalkc_fast's blocking client, as ``beanstalkc-fast bench`` runs it; ``window``
    sets its pipelining windows (the --lib-windows sweep of the batch rows)."""

    def __init__(self, core, host, port, tube, body, batch, window=None):
        super().__init__(_with_windows(core, window), host, port, tube, body, batch)


class AioClient:
    """beanstalkc_fast.aio on its own event loop (the stock one, or uvloop); every row is run to
    completion on it. ``put``/``reserve_delete``/``stats``: one coroutine, one await at a time;
    ``put_concurrent``: 1,000 coroutines putting on the one connection, each in a loop;
    ``put_gather``: ``gather()`` of 1,000 new tasks of one put each, again and again (a task per
    put, as a web server's requests); ``reserve_delete_concurrent``:
    100 coroutines reserving (zero timeout) and deleting until the tube is empty."""

    rows = ("put", "reserve_delete", "stats", "put_many", "reserve_delete_many", "put_concurrent", "put_gather",
            "reserve_delete_concurrent")
    PUTTERS = 1000
    CONSUMERS = 100

    def __init__(self, core, uvloop, host, port, tube, body, batch):
        import asyncio
        from beanstalkc_fast import aio
        self.conn_class = connection_class(core, aio.Connection)
        if uvloop:
            import uvloop as uv
            self.loop = uv.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        try:
            self.c = self.loop.run_until_complete(self._connect(host, port, tube))
        except BaseException:
            self.close()
            raise
        self.body = body
        self.batch = batch
        self.bodies = [body] * batch

    async def _connect(self, host, port, tube):
        c = self.conn_class(host, port, encoding=None)
        await c.connect()
        await c.use(tube)
        await c.watch(tube)
        await c.ignore("default")
        # Opens the consumer channel untimed; the tube is still empty (Bench.measure fills it
        # after making the client), so nothing is reserved.
        if await c.reserve(0) is not None:
            raise RuntimeError("the tube was not empty")
        return c

    def close(self):
        try:
            if getattr(self, "c", None) is not None:
                self.loop.run_until_complete(self.c.close())
        finally:
            self.loop.close()

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    def put(self, n):
        async def run():
            put, body = self.c.put, self.body
            for _ in range(n):
                await put(body)
        self._run(run())

    def put_concurrent(self, n):
        import asyncio

        async def putter(k):
            put, body = self.c.put, self.body
            for _ in range(k):
                await put(body)

        async def run():
            k, extra = divmod(n, self.PUTTERS)
            await asyncio.gather(*[putter(k + (i < extra)) for i in range(self.PUTTERS)])
        self._run(run())

    def put_gather(self, n):
        import asyncio

        async def run():
            put, body, gather = self.c.put, self.body, asyncio.gather
            k, rest = divmod(n, self.PUTTERS)
            for _ in range(k):
                await gather(*[put(body) for _ in range(self.PUTTERS)])
            await gather(*[put(body) for _ in range(rest)])
        self._run(run())

    def reserve_delete(self, n):
        async def run():
            reserve, delete = self.c.reserve, self.c.delete
            for _ in range(n):
                job = await reserve(0)
                job.body
                await delete(job.jid)
        self._run(run())

    def reserve_delete_concurrent(self, n):
        import asyncio

        async def consumer():
            reserve, delete = self.c.reserve, self.c.delete
            while True:
                job = await reserve(0)
                if job is None:
                    return
                job.body
                await delete(job.jid)

        async def run():
            await asyncio.gather(*[consumer() for _ in range(self.CONSUMERS)])
        self._run(run())

    def stats(self, n):
        async def run():
            stats = self.c.stats
            for _ in range(n):
                await stats()
        self._run(run())

    def put_many(self, n):
        async def run():
            put_many, bodies = self.c.put_many, self.bodies
            full, rest = divmod(n, self.batch)
            for _ in range(full):
                await put_many(bodies)
            if rest:
                await put_many(bodies[:rest])
        self._run(run())

    def reserve_delete_many(self, n):
        async def run():
            left = n
            reserve_many, delete_many, batch = self.c.reserve_many, self.c.delete_many, self.batch
            while left > 0:
                jobs = await reserve_many(min(batch, left), 0)
                if not jobs:
                    raise RuntimeError("reserve_many returned no job with %d left" % left)
                for job in jobs:
                    job.body
                await delete_many(jobs)
                left -= len(jobs)
        self._run(run())


class AiostalkClient:
    """aiostalk 1.3.1, one coroutine at a time: all it supports (concurrent callers of one of
    its connections get each other's replies)."""

    rows = ("put", "reserve_delete", "stats")

    def __init__(self, host, port, tube, body, batch):
        import asyncio
        import aiostalk
        self.loop = asyncio.new_event_loop()
        self.c = aiostalk.Client((host, port), encoding=None, use=tube, watch=tube)
        try:
            self.loop.run_until_complete(self.c.connect())
        except BaseException:
            self.loop.close()
            raise
        self.body = body

    def close(self):
        try:
            self.loop.run_until_complete(self.c.close())
        finally:
            self.loop.close()

    def put(self, n):
        async def run():
            put, body = self.c.put, self.body
            for _ in range(n):
                await put(body)
        self.loop.run_until_complete(run())

    def reserve_delete(self, n):
        async def run():
            reserve, delete = self.c.reserve, self.c.delete
            for _ in range(n):
                job = await reserve(0)
                job.body
                await delete(job)
        self.loop.run_until_complete(run())

    def stats(self, n):
        async def run():
            stats = self.c.stats
            for _ in range(n):
                await stats()
        self.loop.run_until_complete(run())


class GreenstalkClient:
    rows = ("put", "reserve_delete", "stats")

    def __init__(self, host, port, tube, body, batch):
        import greenstalk
        self.c = greenstalk.Client((host, port), encoding=None, use=tube, watch=tube)
        self.body = body

    def close(self):
        self.c.close()

    def put(self, n):
        put, body = self.c.put, self.body
        for _ in range(n):
            put(body)

    def reserve_delete(self, n):
        reserve, delete = self.c.reserve, self.c.delete
        for _ in range(n):
            job = reserve(0)
            job.body
            delete(job)

    def stats(self, n):
        stats = self.c.stats
        for _ in range(n):
            stats()


class Beanstalkc3Client(bench.FastClient):
    """beanstalkc3 has this client's classic API: the single-command loops are FastClient's."""

    rows = ("put", "reserve_delete", "stats")

    def __init__(self, host, port, tube, body, batch):
        import beanstalkc  # the module of the beanstalkc3 distribution
        # Its default parse_yaml (yaml.load without a Loader) fails on PyYAML >= 6; the
        # comparison the project set is against beanstalkc3 with yaml.safe_load.
        import yaml
        self.c = beanstalkc.Connection(host, port, parse_yaml=yaml.safe_load, encoding=None)
        self.c.use(tube)
        self.c.watch(tube)
        self.c.ignore("default")
        self.body = body


class PystalkClient:
    rows = ("put", "reserve_delete", "stats")

    def __init__(self, host, port, tube, body, batch):
        import pystalk
        self.c = pystalk.BeanstalkClient(host, port)
        self.c.use(tube)
        self.c.watch(tube)      # the first watch also ignores "default"
        self.body = body

    def close(self):
        self.c.close()

    def put(self, n):
        put, body = self.c.put_job, self.body
        for _ in range(n):
            put(body)

    def reserve_delete(self, n):
        reserve, delete = self.c.reserve_job, self.c.delete_job
        for _ in range(n):
            job = reserve(0)
            job.job_data
            delete(job.job_id)

    def stats(self, n):
        stats = self.c.stats
        for _ in range(n):
            stats()


class _RawBase:
    """A blocking TCP_NODELAY socket using and watching ``tube``.

    The raw clients rely on knowing the job bodies: they contain no newline, so
    counting ``\\n`` counts reply lines (and a RESERVED reply is exactly two).
    """

    def __init__(self, host, port, tube, body, batch, window=1024):
        if b"\n" in body:
            raise ValueError("the raw clients need a body without newlines")
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tube = tube.encode("ascii")
        self.put_cmd = b"put 0 0 120 %d\r\n%s\r\n" % (len(body), body)
        self.window = window
        self.batch = batch
        for cmd in (b"use %s\r\n" % self.tube, b"watch %s\r\n" % self.tube, b"ignore default\r\n"):
            self.sock.sendall(cmd)
            self._line()

    def close(self):
        self.sock.close()

    def _line(self):
        data = self.sock.recv(RECV)
        while not data.endswith(b"\n"):
            more = self.sock.recv(RECV)
            if not more:
                raise ConnectionError("connection closed by the server")
            data += more
        return data

    def yaml_body(self, cmd):
        """Send a command answered by ``OK <size>`` and return the YAML bytes."""
        self.sock.sendall(cmd)
        data = self._line()
        head, _, rest = data.partition(b"\r\n")
        if not head.startswith(b"OK "):
            raise RuntimeError("%r: %r" % (cmd, head))
        size = int(head[3:])
        while len(rest) < size + 2:
            rest += self.sock.recv(RECV)
        return rest[:size]

    def server_cpu(self):
        """The server's user+system CPU seconds (beanstalkd's own getrusage)."""
        return sum(float(v) for v in _RUSAGE_RE.findall(self.yaml_body(b"stats\r\n")))

    def stats_tube(self):
        return _parse(self.yaml_body(b"stats-tube %s\r\n" % self.tube))


class RawClient(_RawBase):
    """The floor for single commands: one sendall and the fewest recv per command."""

    rows = ("put", "reserve_delete", "stats")

    def put(self, n):
        sendall, recv, cmd = self.sock.sendall, self.sock.recv, self.put_cmd
        for _ in range(n):
            sendall(cmd)
            data = recv(RECV)
            while not data.endswith(b"\n"):
                data += recv(RECV)
            if data[:9] != b"INSERTED ":
                raise RuntimeError("put: %r" % data)
            int(data[9:-2])

    def reserve_delete(self, n):
        sendall, recv = self.sock.sendall, self.sock.recv
        for _ in range(n):
            sendall(b"reserve-with-timeout 0\r\n")
            data = recv(RECV)
            while b"\n" not in data:
                data += recv(RECV)
            if data[:9] != b"RESERVED ":
                raise RuntimeError("reserve: %r" % data)
            while data.count(b"\n") < 2:
                data += recv(RECV)
            sendall(b"delete %s\r\n" % data.split(b" ", 2)[1])
            data = recv(RECV)
            while not data.endswith(b"\n"):
                data += recv(RECV)
            if data != b"DELETED\r\n":
                raise RuntimeError("delete: %r" % data)

    def stats(self, n):
        # Reads the whole reply but parses no YAML: the cost of the round trip alone.
        sendall, recv = self.sock.sendall, self.sock.recv
        for _ in range(n):
            sendall(b"stats\r\n")
            data = recv(RECV)
            while b"\n" not in data:
                data += recv(RECV)
            head, _, rest = data.partition(b"\r\n")
            size = int(head[3:]) + 2
            while len(rest) < size:
                rest += recv(RECV)


_RUSAGE_RE = re.compile(rb"\nrusage-[us]time: ([0-9.]+)")
_RESERVED_RE = re.compile(rb"RESERVED ([0-9]+) [0-9]+\r\n[^\n]*\n")


# Like both cores, the ceiling yields the CPU after each send, so that a server pinned to the
# same CPU answers a whole window before the client wakes (else: a context switch per reply).
_give_way = getattr(os, "sched_yield", lambda: None)


class PipelinedClient(_RawBase):
    """The ceiling for batches: batches of ``batch`` jobs like the library's, but with
    ``window`` commands per sendall, replies counted rather than parsed, and the deletes
    made from the reserve replies by one regex substitution."""

    rows = ("put_many", "reserve_delete_many")

    def _wait(self, seen, need, keep=None):
        """Receive until ``need`` reply lines were seen in all."""
        recv = self.sock.recv
        while seen < need:
            data = recv(RECV)
            if not data:
                raise ConnectionError("connection closed by the server")
            if keep is not None:
                keep.append(data)
            seen += data.count(b"\n")
        return seen

    def _pipeline(self, chunks):
        """Send (data, commands) chunks, each before reading the previous one's replies."""
        sendall, wait, give_way = self.sock.sendall, self._wait, _give_way
        seen = need = 0
        for data, k in chunks:
            sendall(data)
            give_way()
            seen = wait(seen, need)
            need += k
        give_way()
        wait(seen, need)

    def _windows(self, n, cmd):
        w = self.window
        full = cmd * w
        while n > 0:
            k = w if n >= w else n
            yield (full if k == w else cmd * k), k
            n -= k

    def put_many(self, n):
        batch, pipeline, windows, cmd = self.batch, self._pipeline, self._windows, self.put_cmd
        while n > 0:
            b = batch if n >= batch else n
            pipeline(windows(b, cmd))
            n -= b

    def reserve_delete_many(self, n):
        # Per batch: reserve it all (a window at a time), then delete it all, as the library does.
        batch, windows, sendall, wait = self.batch, self._windows, self.sock.sendall, self._wait
        sub = _RESERVED_RE.subn
        while n > 0:
            b = batch if n >= batch else n
            deletes = []
            for data, k in windows(b, b"reserve-with-timeout 0\r\n"):
                sendall(data)
                _give_way()
                chunks = []
                wait(0, 2 * k, chunks)
                data, found = sub(rb"delete \1\r\n", b"".join(chunks))
                if found != k:
                    raise RuntimeError("expected %d RESERVED replies, got %d" % (k, found))
                deletes.append((data, k))
            self._pipeline(deletes)
            n -= b


class _CClient:
    """A C reference client (``_refclient.c``): one process per measurement, which connects and
    sets its tube untimed, then times the row itself (monotonic clock, and its own CPU from
    getrusage) and prints it. The process inherits this process's CPU affinity (pinned with it).
    ``window`` sets both the put and the reserve window, as the library's --lib-windows do;
    by default they are the library's (1024 puts, 256 reserves per window)."""

    def __init__(self, exe, host, port, tube, body, batch, window=None):
        if body != b"x" * len(body):
            raise ValueError("the C client sends bodies of b'x' only")
        self.argv = [exe, host, str(port), tube]
        self.sizes = [str(len(body)), str(batch), str(window or _pyprotocol.WINDOW_ITEMS),
                      str(window or _pyprotocol.RESERVE_WINDOW)]
        self.timing = None      # (wall seconds, CPU seconds) of the last row

    def close(self):
        pass

    def _run(self, mode, n):
        proc = subprocess.run(self.argv + [mode, str(n)] + self.sizes, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)
        words = proc.stdout.split()
        if proc.returncode or len(words) != 5 or words[0] != "ok":
            raise RuntimeError("C client %s: exit %d: %s%s" % (mode, proc.returncode, proc.stdout, proc.stderr))
        wall, user, system = (int(w) for w in words[2:])
        self.timing = (wall / 1e9, (user + system) / 1e9)

    def put(self, n):
        self._run("put", n)

    def reserve_delete(self, n):
        self._run("reserve_delete", n)

    def stats(self, n):
        self._run("stats", n)

    def put_many(self, n):
        self._run("put_many", n)

    def reserve_delete_many(self, n):
        self._run("reserve_delete_many", n)


class CSequentialClient(_CClient):
    """The floor: one command, wait for its whole reply, repeat (stats: the reply is read, not parsed)."""
    rows = ("put", "reserve_delete", "stats")


class CPipelinedClient(_CClient):
    """The ceiling: batches of --batch jobs in the library's windows, with the same yield after each send."""
    rows = ("put_many", "reserve_delete_many")


def build_refclient(directory):
    """Compile ``_refclient.c`` with ``$CC`` or ``cc -O2`` into ``directory``.

    Returns (path of the program or None, a note: the compiler used, or why there is none).
    """
    if not os.path.exists(REFCLIENT_SRC):
        return None, "the C reference client's source %s is missing: no C rows" % REFCLIENT_SRC
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc or not shutil.which(shlex.split(cc)[0]):
        return None, "no C compiler (cc, or $CC): no C reference rows"
    exe = os.path.join(directory, "refclient")
    try:
        proc = subprocess.run(shlex.split(cc) + ["-O2", "-o", exe, REFCLIENT_SRC], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        return None, "cannot run the C compiler %s (%s): no C reference rows" % (cc, err)
    if proc.returncode:
        return None, "compiling the C reference client failed (%s): %s" % (
            cc, " ".join(proc.stdout.strip().splitlines()[-3:]))
    return exe, "C reference clients compiled with %s -O2" % cc


# -- harness ------------------------------------------------------------------------

def _switches(pid):
    """Context switches of a local process so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        with open("/proc/%d/status" % pid) as f:
            return sum(int(line.split(":")[1]) for line in f if "ctxt_switches:" in line)
    except (OSError, ValueError):
        return None


class Bench:
    """``host``/``port``: the server, for the harness's own control connection; the clients
    connect to ``proxy`` (a LatencyProxy) when there is one."""

    def __init__(self, args, host, port, server_pid=None, out=sys.stderr, proxy=None):
        self.server_pid = server_pid
        self.args = args
        self.host = host
        self.port = port
        self.proxy = proxy
        self.client_addr = (proxy.host, proxy.port) if proxy is not None else (host, port)
        self.out = out
        self.body = b"x" * args.body_size
        self._tubes = 0

    def log(self, msg):
        self.out.write(msg + "\n")
        self.out.flush()

    def tube(self):
        self._tubes += 1
        return "bench-%d-%d" % (os.getpid(), self._tubes)

    def control(self, tube, body=None):
        return PipelinedClient(self.host, self.port, tube, body or self.body, 256, window=256)

    def measure(self, make, row, n, body=None, batch=None):
        """Run ``row`` (a client method) of n jobs on a fresh tube, with jobs of ``body`` (default
        --body-size) in calls of ``batch`` (default --batch); return (seconds, client CPU seconds,
        server CPU seconds, server context switches or None, proxy CPU seconds or None)."""
        body, batch = body or self.body, batch or self.args.batch
        tube = self.tube()
        ctl = self.control(tube, body)
        proxy_cpu = self.proxy.cpu_time if self.proxy is not None else (lambda: 0.0)
        try:
            # The client connects before the tube is filled: an aio client opens its consumer
            # channel then, with a reserve that must find nothing.
            client = make(self.client_addr[0], self.client_addr[1], tube, body, batch)
            try:
                if row in ("reserve_delete", "reserve_delete_many", "reserve_delete_concurrent"):
                    ctl.put_many(n)
                gc.collect()
                server0 = ctl.server_cpu()
                switches0 = _switches(self.server_pid)
                _alarm(self.args.timeout)
                proxy0 = proxy_cpu()
                cpu0 = time.process_time()
                t0 = time.perf_counter()
                getattr(client, row)(n)
                t1 = time.perf_counter()
                cpu1 = time.process_time()
                proxy1 = proxy_cpu()
                _alarm(0)
                switches1 = _switches(self.server_pid)
                server1 = ctl.server_cpu()
            finally:
                client.close()
            self.check(ctl, row, n)
        finally:
            ctl.close()
        switches = switches1 - switches0 if switches0 is not None and switches1 is not None else None
        wall, cpu = t1 - t0, cpu1 - cpu0 - (proxy1 - proxy0)     # the proxy's thread is not the client
        timing = getattr(client, "timing", None)
        if timing is not None:      # a C client: its own clock and rusage
            wall, cpu = timing
        return wall, cpu, server1 - server0, switches, (proxy1 - proxy0 if self.proxy is not None else None)

    def check(self, ctl, row, n):
        """Make sure the client did the work (untimed), and leave the tube empty."""
        if row == "stats":
            return
        st = ctl.stats_tube()
        if row in ("put", "put_many", "put_concurrent", "put_gather"):
            if st["total-jobs"] != n or st["current-jobs-ready"] != n:
                raise RuntimeError("%s: expected %d ready jobs, server says %r" % (row, n, st))
            ctl.reserve_delete_many(n)
        elif st["current-jobs-ready"] or st["current-jobs-reserved"] or st["cmd-delete"] != n:
            raise RuntimeError("%s: expected %d deleted jobs, server says %r" % (row, n, st))

    def run(self, clients):
        """Return the list of result dicts, one per (row, client) that ran."""
        args = self.args
        results = []
        rows = [r for r in ROWS if r[0] in args.rows]
        for i, (row, label, batch) in enumerate(rows, 1):
            method, body_size, size, only = ROW_SPECS.get(row, (row, None, None, None))
            body = b"x" * body_size if body_size else self.body
            size = size or args.batch
            n = row_jobs(args, row, batch, size)
            runners = []       # (client name, variant, factory)
            for name, factory, variants in clients:
                if method not in factory.rows or (only is not None and name not in only):
                    continue
                for variant in (variants if batch else [None]):     # windows matter to batches only
                    runners.append((name, variant, factory))
            samples = {(name, variant): [] for name, variant, _ in runners}
            for rep in range(1, args.repeat + 1):
                for name, variant, factory in runners:
                    what = name if variant is None else "%s window=%d" % (name, variant)
                    self.log("[%d/%d %s, n=%d] rep %d/%d  %s" % (i, len(rows), label, n, rep, args.repeat, what))
                    make = factory if variant is None else _windowed(factory, variant)
                    samples[(name, variant)].append(self.measure(make, method, n, body, size))
            best = {}
            for (name, variant), runs in samples.items():
                wall = statistics.median(r[0] for r in runs)
                cpu = statistics.median(r[1] for r in runs)
                server_cpu = statistics.median(r[2] for r in runs)
                entry = {"row": row, "label": label, "batch": batch, "client": name, "n": n,
                         "body_size": len(body), "batch_size": size if batch else None,
                         "ops_per_s": n / wall, "us_per_op": wall / n * 1e6, "cpu_us_per_op": cpu / n * 1e6,
                         "server_cpu_us_per_op": server_cpu / n * 1e6, "best_ops_per_s": n / min(r[0] for r in runs),
                         "samples_s": [r[0] for r in runs], "cpu_samples_s": [r[1] for r in runs],
                         "server_cpu_samples_s": [r[2] for r in runs]}
                if all(r[3] is not None for r in runs):
                    # the server's context switches: one per reply means client and server ping-pong
                    entry["server_switches_per_op"] = statistics.median(r[3] for r in runs) / n
                if all(r[4] is not None for r in runs):
                    entry["proxy_cpu_us_per_op"] = statistics.median(r[4] for r in runs) / n * 1e6
                if variant is not None:
                    entry["window"] = variant
                if name not in best or entry["ops_per_s"] > best[name]["ops_per_s"]:
                    best[name] = entry
            for name in best:
                windows = {v: n / statistics.median(r[0] for r in runs)
                           for (who, v), runs in samples.items() if who == name and v is not None}
                if len(windows) > 1:
                    best[name]["window_sweep"] = {str(k): v for k, v in sorted(windows.items())}
            row_results = [best[name] for name, _, _ in clients if name in best]
            _add_ratios(row_results)
            results.extend(row_results)
        return results


def row_jobs(args, row, batch, size):
    """Jobs per measurement of ``row``: --ops for single commands (``stats()`` and the big body:
    a quarter), --batch-ops for batches; with --rtt and no --batch-ops, a batch row's count
    follows its call size (the round trips of ~3 per call fill ``args.rtt_budget`` seconds, as
    main() sizes the --batch rows)."""
    if not batch:
        return max(1, args.ops // 4 if row in ("stats", "put_60k") else args.ops)
    n = args.batch_ops
    if args.rtt and not args.batch_ops_given and size != args.batch:
        n = min(args.batch_ops_default, max(2 * size, int(args.rtt_budget / (args.rtt / 1000.0) / 3 * size)))
    return max(n, 1)


def _windowed(factory, window):
    def make(host, port, tube, body, batch):
        return factory(host, port, tube, body, batch, window=window)
    return make


class _Partial:
    """A client factory with the core bound (keeps the class's ``rows``)."""

    def __init__(self, func, *args):
        self.func = func
        self.args = args
        self.rows = func.rows

    def __call__(self, *args, **kw):
        return self.func(*(self.args + args), **kw)


def _add_ratios(row_results):
    by_name = {r["client"]: r for r in row_results}
    refs = {"vs_greenstalk": by_name.get("greenstalk"), "vs_python": by_name.get("beanstalkc_fast[python]"),
            "vs_raw": by_name.get("raw socket") or by_name.get("raw pipelined"),
            "vs_c": by_name.get(C_SEQ) or by_name.get(C_PIPE)}
    for r in row_results:
        for key, ref in refs.items():
            r[key] = r["ops_per_s"] / ref["ops_per_s"] if ref is not None else None


_watchdog = False


def _alarm(seconds):
    # A watchdog: a blocking raw client would otherwise hang forever on a lost reply.
    if _watchdog:
        signal.alarm(int(seconds))


def _on_alarm(signum, frame):
    raise TimeoutError("benchmark step took longer than --timeout")


# -- import time --------------------------------------------------------------------

_IMPORT_CODE = ("import sys, time\n"
                "{pre}"
                "t = time.perf_counter()\n"
                "import {mod}\n"
                "t = time.perf_counter() - t\n"
                "print(t, 'yaml' in sys.modules, getattr({mod}, 'BACKEND', ''))\n")


def import_times(repeat, log):
    """Median seconds to import each module in a fresh interpreter, and whether yaml came along."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("BEANSTALKC_FAST_PUREPYTHON", None)
    cases = [("beanstalkc_fast", "beanstalkc_fast", {}),
             ("beanstalkc_fast (PUREPYTHON=1)", "beanstalkc_fast", {"BEANSTALKC_FAST_PUREPYTHON": "1"}),
             ("greenstalk", "greenstalk", {}), ("beanstalkc3", "beanstalkc", {}), ("pystalk", "pystalk", {})]
    # Measure every module as an installed package is: with its bytecode cached (a source checkout
    # under PYTHONDONTWRITEBYTECODE=1 would otherwise recompile on every import).
    import compileall
    import importlib.util
    compileall.compile_dir(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)), quiet=1)
    for _, mod, _ in cases[2:]:     # the peers too, where their bytecode is missing and can be written
        try:
            spec = importlib.util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            if spec.submodule_search_locations:
                compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)
            else:
                compileall.compile_file(spec.origin, quiet=1)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = []
    for label, mod, extra in cases:
        log("[import] %s x%d" % (label, repeat))
        times = []
        after_socket = []     # with socket imported first: the module's own cost (socket is most of it)
        yaml = backend = None
        for _ in range(repeat):
            for pre, into in (("", times), ("import socket\n", after_socket)):
                proc = subprocess.run([sys.executable, "-c", _IMPORT_CODE.format(mod=mod, pre=pre)],
                                      env=dict(env, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      universal_newlines=True)
                if proc.returncode:
                    log("[import] %s failed: %s" % (label, proc.stderr.strip().splitlines()[-1:]))
                    break
                t, yaml, backend = (proc.stdout.split() + [""])[:3]
                into.append(float(t))
            else:
                continue
            times = None
            break
        if times:
            out.append({"module": label, "ms": statistics.median(times) * 1e3, "imports_yaml": yaml == "True",
                        "ms_after_socket": statistics.median(after_socket) * 1e3, "backend": backend or None})
    return out


# -- output -------------------------------------------------------------------------

def _fmt_ratio(x, pct=False):
    if x is None:
        return "-"
    return "%.0f%%" % (x * 100) if pct else "%.2fx" % x


def markdown(results, imports, meta):
    proxied = any("proxy_cpu_us_per_op" in r for r in results)
    lines = ["Benchmark: %s" % meta["summary"], ""] + (
        ["Command: `%s`" % meta["command"], ""] if meta.get("command") else []) + [
             "| row | client | ops/s | us/op | client CPU us/op | server CPU us/op | server switches/op "
             + ("| proxy CPU us/op " if proxied else "") + "| vs greenstalk | vs python | vs raw | vs C |",
             "|---|---|---:|---:|---:|---:|---:|" + ("---:|" if proxied else "") + "---:|---:|---:|---:|"]
    for r in results:
        client = r["client"] + (" (w=%d)" % r["window"] if "window" in r else "")
        switches = r.get("server_switches_per_op")
        proxy = ("| %.2f " % r["proxy_cpu_us_per_op"] if "proxy_cpu_us_per_op" in r else "| - ") if proxied else ""
        lines.append("| %s | %s | %s | %.2f | %.2f | %.2f | %s %s| %s | %s | %s | %s |" % (
            r["label"], client, "{:,.0f}".format(r["ops_per_s"]), r["us_per_op"], r["cpu_us_per_op"],
            r["server_cpu_us_per_op"], "-" if switches is None else "%.2f" % switches, proxy,
            _fmt_ratio(r["vs_greenstalk"]), _fmt_ratio(r["vs_python"]), _fmt_ratio(r["vs_raw"], pct=True),
            _fmt_ratio(r.get("vs_c"), pct=True)))
    sweeps = [r for r in results if "window_sweep" in r]
    if sweeps:
        lines += ["", "Window sweeps (jobs/s per window; the table shows the best):"]
        for r in sweeps:
            lines.append("- %s, %s: %s" % (r["label"], r["client"], ", ".join(
                "%s: %s" % (w, "{:,.0f}".format(v)) for w, v in r["window_sweep"].items())))
    lines += ["", "vs raw: single rows against the raw socket client (floor), batch rows against the raw",
              "pipelined client (ceiling, best window), both in Python. vs C: single rows against the C",
              "sequential client, batch rows against the C pipelined one (the library's windows and yield).",
              "reserve+delete rows count one op per job. The C clients' CPU is their own rusage.",
              "Server CPU is beanstalkd's rusage; server switches/op are its context switches (Linux): on one",
              "CPU a client that wakes at every reply of a batch preempts the server and costs it CPU.", ""]
    if proxied:
        lines[-1:-1] = ["Proxy CPU is the LatencyProxy thread's (in the benchmark's process, not counted in the",
                        "client CPU of the Python clients)."]
    if imports:
        lines += ["| import | ms (median) | ms, socket already imported | imports yaml | backend |",
                  "|---|---:|---:|---|---|"]
        for i in imports:
            lines.append("| %s | %.2f | %.2f | %s | %s |" % (i["module"], i["ms"], i["ms_after_socket"],
                                                             "yes" if i["imports_yaml"] else "no", i["backend"] or "-"))
        lines += ["", "beanstalkc_fast imports socket at its first connect; the peers import it at once.", ""]
    for note in meta["notes"]:
        lines.append("note: " + note)
    return "\n".join(lines).rstrip() + "\n"


def chart(results, imports, meta, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib, or the 'bench' extra): no chart"
    rows = []
    for row, label, batch in ROWS:
        rr = [r for r in results if r["row"] == row]
        if rr:
            rows.append((label, batch, rr))
    batch_rows = [(label, rr) for label, batch, rr in rows if batch]
    panels = len(rows) + (1 if batch_rows else 0) + (1 if imports else 0)
    ncols = 2
    nrows = (panels + 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(15, 3.6 * nrows + 0.8), squeeze=False)
    axes = [ax for line in axes for ax in line]
    for ax, (label, batch, rr) in zip(axes, rows):
        names = [r["client"] for r in rr][::-1]
        vals = [r["ops_per_s"] for r in rr][::-1]
        bars = ax.barh(names, vals, color=[COLORS.get(n, "#999999") for n in names])
        top = max(vals)
        for bar, r in zip(bars, rr[::-1]):
            extra = []
            if r["vs_greenstalk"] is not None and r["client"] != "greenstalk":
                extra.append("%.2fx greenstalk" % r["vs_greenstalk"])
            if batch and r["vs_raw"] is not None and r["client"] != "raw pipelined":
                extra.append("%.0f%% of ceiling" % (r["vs_raw"] * 100))
            if batch and r.get("vs_c") is not None and r["client"] != C_PIPE:
                extra.append("%.0f%% of C" % (r["vs_c"] * 100))
            if "window" in r:
                extra.append("window %d" % r["window"])
            text = "{:,.0f}".format(r["ops_per_s"]) + ("  (" + ", ".join(extra) + ")" if extra else "")
            ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=9)
        ax.set_xlim(0, top * 1.55)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "%gk" % (x / 1000) if x else "0"))
        ax.set_title("%s  (n=%d, ops/s, higher is better)" % (label, rr[0]["n"]), fontsize=11)
        ax.tick_params(axis="y", labelsize=9)
        ax.grid(axis="x", alpha=0.3)
    used = len(rows)
    if batch_rows:
        ax = axes[used]
        used += 1
        names = []
        for _, rr in batch_rows:
            for r in rr:
                if r["client"] not in names:
                    names.append(r["client"])
        width = 0.8 / len(batch_rows)
        for j, (label, rr) in enumerate(batch_rows):
            by = {r["client"]: r["cpu_us_per_op"] for r in rr}
            ys = [k + j * width for k in range(len(names))]
            vals = [by.get(n, 0) for n in names]
            bars = ax.barh(ys, vals, height=width, label=label, color=["#4393c3", "#d6604d"][j % 2])
            for bar, v in zip(bars, vals):
                if v:
                    ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " %.2f" % v, va="center",
                            fontsize=9)
        ax.set_yticks([k + width * (len(batch_rows) - 1) / 2 for k in range(len(names))])
        ax.set_yticklabels(names, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, ax.get_xlim()[1] * 1.6)
        ax.set_title("client CPU per job, batch rows (us, lower is better)", fontsize=11)
        ax.legend(fontsize=9, loc="upper right")
        ax.grid(axis="x", alpha=0.3)
    if imports:
        ax = axes[used]
        used += 1
        names = [i["module"] + (" [+yaml]" if i["imports_yaml"] else "") for i in imports]
        for j, (key, label, color) in enumerate((("ms", "import", "#bababa"),
                                                 ("ms_after_socket", "socket already imported", "#4d4d4d"))):
            vals = [i[key] for i in imports]
            bars = ax.barh([k + 0.4 * j for k in range(len(names))], vals, height=0.4, label=label, color=color)
            for bar, v in zip(bars, vals):
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " %.2f ms" % v, va="center",
                        fontsize=9)
        ax.set_yticks([k + 0.2 for k in range(len(names))])
        ax.set_yticklabels(names, fontsize=9)
        ax.invert_yaxis()
        ax.set_xlim(0, max(i["ms"] for i in imports) * 1.3)
        ax.set_title("import time in a fresh interpreter (ms, lower is better)", fontsize=11)
        ax.legend(fontsize=9, loc="upper right")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[used:]:
        ax.axis("off")
    fig.suptitle("beanstalkc_fast benchmark: " + meta["summary"], fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# -- issue 23's table --------------------------------------------------------------

def _find(results, row, client):
    return next((r for r in results if r["row"] == row and r["client"] == client), None)


def _over(a, b, key="ops_per_s"):
    return a[key] / b[key] if a is not None and b is not None and b[key] else None


def _cpu_sum(r):
    return r["cpu_us_per_op"] + r["server_cpu_us_per_op"]


def issue_rows(results, pool_results=(), batch=256):
    """[(path, reached ratio or None, goal, ">=" or "<=", detail)]: every row of issue 23's table
    (a row whose clients did not run has reached None). ``batch``: the call size of the sync
    ``put_many`` row the asyncio rows compare with (--batch)."""
    out = []
    lib, pure = "beanstalkc_fast[cython]", "beanstalkc_fast[python]"
    for method, what in (("put_many", "`put_many`"), ("reserve_delete_many", "`reserve_many`+`delete_many`")):
        for size in ISSUE_SIZES:
            row = "%s_%d" % (method, size)
            mine, c = _find(results, row, lib), _find(results, row, C_PIPE)
            detail = ""
            if mine and c:
                detail = "server CPU %.2f vs %.2f us/job, client CPU %.2f vs %.2f" % (
                    mine["server_cpu_us_per_op"], c["server_cpu_us_per_op"], mine["cpu_us_per_op"], c["cpu_us_per_op"])
            out.append(("%s, %s items per call, vs the C pipeliner" % (what, "{:,}".format(size)),
                        _over(mine, c), 0.95, ">=", detail))
    for row, what, goal in (("put", "single `put`", 0.9), ("reserve_delete", "single `reserve`+`delete`", 0.9),
                            ("stats", "`stats()`", 0.85), ("put_60k", "single `put` of a 60 KB body", 0.95)):
        c = _find(results, row, C_SEQ)
        others = ["%s %s" % (name, _fmt_ratio(_over(_find(results, row, client), c))) for client, name in (
            ("raw socket", "hand-written Python loop"), (pure, "pure core"), ("greenstalk", "greenstalk"),
            ("beanstalkc3", "beanstalkc3"), ("pystalk", "pystalk")) if _find(results, row, client)]
        out.append(("%s vs the C sequential client" % what, _over(_find(results, row, lib), c), goal, ">=",
                    ", ".join(others)))
    sync_many, sync_put = _find(results, "put_many", lib), _find(results, "put", lib)
    for row, what, ref, goals in (
            ("put_concurrent", "aio, 1,000 coroutines each awaiting `put()`, vs sync `put_many` of %d" % batch,
             sync_many, (0.7, 0.55)),
            ("put_gather", "aio, `gather()` of one task per put, vs sync `put_many` of %d" % batch, sync_many,
             (0.35, 0.3)),
            ("put", "aio, one coroutine awaiting puts one by one, vs the sync sequential `put`", sync_put,
             (0.9, 0.75))):
        for client, loop, goal in (("aio[cython]+uvloop", "uvloop", goals[0]), ("aio[cython]", "stock asyncio",
                                                                                goals[1])):
            mine = _find(results, row, client)
            detail = ""
            if mine and ref:     # on one CPU, client + server CPU per job is what bounds the rate
                detail = "by client+server CPU per job: %s" % _fmt_ratio(_cpu_sum(ref) / _cpu_sum(mine))
            if row == "put" and loop == "stock asyncio" and _find(results, row, "aiostalk"):
                detail += "%saiostalk %s" % ("; " if detail else "", _fmt_ratio(_over(_find(results, row, "aiostalk"),
                                                                                     ref)))
            out.append(("%s (%s)" % (what, loop), _over(mine, ref), goal, ">=", detail))
    for row, _ in POOL_ROWS:
        pools = [r for r in pool_results if r["row"] == "pool_" + row and r.get("placement") == "one-cpu"
                 and r["client"].startswith("Pool of ") and r["client"] != "Pool of 1"]
        one = next((r for r in pool_results if r["row"] == "pool_" + row and r.get("placement") == "one-cpu"
                    and r["client"] == "one server (Connection)"), None)
        mine = pools[0] if pools else None
        single = next((r for r in pool_results if r["row"] == "pool_" + row and r.get("placement") == "one-cpu"
                       and r["client"] == "Pool of 1"), None)
        detail = "%.2f vs %.2f us/job" % (mine["cpu_us_per_op"], one["cpu_us_per_op"]) if mine and one else ""
        if single and one:
            detail += "; a Pool of 1: %s" % _fmt_ratio(_over(single, one, "cpu_us_per_op"))
        out.append(("`Pool` client CPU per job, %s, vs one `Connection` (client and servers on one CPU)" % (
                    "`put_many`" if row == "put_many" else "`reserve_many`+`delete_many`"),
                    _over(mine, one, "cpu_us_per_op"), 1.15, "<=", detail))
    apart = [r for r in pool_results if r.get("placement") == "apart" and r["row"] == "pool_reserve_delete_many"]
    aio_pool = next((r for r in apart if r["client"].startswith("aio.Pool")), None)
    sync_pool = next((r for r in apart if r["client"].startswith("Pool of ") and r["client"] != "Pool of 1"), None)
    out.append(("`aio.Pool` `reserve_many`+`delete_many` over %s servers vs one server (servers on CPUs of their own)"
                % (aio_pool["client"].split()[2] if aio_pool else "2"), aio_pool["vs_one"] if aio_pool else None,
                1.8, ">=", "the blocking Pool: %s" % _fmt_ratio(sync_pool["vs_one"]) if sync_pool else ""))
    return out


def _met(reached, goal, op):
    if reached is None:
        return "-"
    return "yes" if (reached >= goal if op == ">=" else reached <= goal) else "**no**"


def _rate(r):
    x = r["ops_per_s"]
    return "%.1fk/s" % (x / 1000) if x >= 1000 else "%.0f/s" % x


# The per-client table: its rows and columns, in display order.
CLIENT_TABLE_ROWS = ["put", "reserve_delete", "stats", "put_60k", "put_many"] + [
    "%s_%d" % (m, size) for m in ("put_many", "reserve_delete_many") for size in ISSUE_SIZES] + [
    "reserve_delete_many", "put_concurrent", "put_gather", "reserve_delete_concurrent"]
CLIENT_TABLE_COLUMNS = ["beanstalkc_fast[cython]", "beanstalkc_fast[python]", "aio[cython]+uvloop", "aio[cython]",
                        "greenstalk", "beanstalkc3", "pystalk", "aiostalk", "raw socket", "raw pipelined",
                        C_SEQ, C_PIPE]


def issue_markdown(results, pool_results, meta, pool_meta=()):
    """Issue 23's table for this run's placement ("path | reached | goal"), then every client's
    jobs/s on each of its rows with its ratio to the C reference, as markdown to paste."""
    rows = issue_rows(results, pool_results, meta["batch"])
    lines = ["#### %s" % meta["placement_title"], "", "%s." % meta["summary"], "",
             "Command: `%s`" % meta["command"], "",
             "| path | reached | goal | met | detail |", "|---|---:|---:|---|---|"]
    for path, reached, goal, op, detail in rows:
        lines.append("| %s | %s | %s %.2fx | %s | %s |" % (path, _fmt_ratio(reached), op, goal,
                                                          _met(reached, goal, op), detail))
    lines += ["", "Ratios are of jobs/s, medians of %d; the C pipeliner is `benchmarks/refclient.c` sending the "
              "same calls in the library's windows, with its yield; reserve+delete counts one job per pair." % (
                  meta["repeat"]), ""]
    labels = {key: label for key, label, _ in ROWS}
    present = [c for c in CLIENT_TABLE_COLUMNS if any(r["client"] == c for r in results)]
    table_rows = [row for row in CLIENT_TABLE_ROWS if any(r["row"] == row for r in results)]
    if table_rows:
        lines += ["| row | " + " | ".join(present) + " |", "|---|" + "---:|" * len(present)]
        for row in table_rows:
            cells = []
            for client in present:
                r = _find(results, row, client)
                if r is None:
                    cells.append("-")
                elif r.get("vs_c") is not None and client not in (C_SEQ, C_PIPE):
                    cells.append("%s (%s)" % (_rate(r), _fmt_ratio(r["vs_c"])))
                else:
                    cells.append(_rate(r))
            lines.append("| %s | %s |" % (labels[row], " | ".join(cells)))
        lines += ["", "In brackets: against the C sequential client (single commands) or the C pipeliner (batches, "
                  "same call size). Batch rows without a size are calls of %d." % meta["batch"], ""]
    for pm in pool_meta:
        lines += ["Pools (%s): %s; %d jobs per row." % (pm["placement"], pm["where"], pm["n"])]
    if pool_meta:
        lines += ["| row | placement | client | jobs/s | client CPU us/job | vs one server | client CPU vs one |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for r in pool_results:
            lines.append("| %s | %s | %s | %s | %.2f | %.2fx | %s |" % (
                r["label"], r["placement"], r["client"], "{:,.0f}".format(r["ops_per_s"]), r["cpu_us_per_op"],
                r["vs_one"], _fmt_ratio(r["cpu_vs_one"])))
        lines.append("")
    for note in meta.get("notes", ()):
        lines.append("note: " + note)
    return "\n".join(lines).rstrip() + "\n"


# -- pool comparison ----------------------------------------------------------------

POOL_ROWS = [("put_many", "put_many"), ("reserve_delete_many", "reserve_many+delete_many")]


def _pool_measure(make, row, n, batch, body, fill, log, proxy_cpu=lambda: 0.0):
    """Time ``row`` of n jobs through the client ``make()`` gives (a Connection or a Pool)
    after ``fill`` (untimed) put the jobs a reserve row takes; return (seconds, client CPU s).
    ``proxy_cpu()``: the CPU seconds of the latency proxies' threads (in this process), subtracted."""
    client = make()
    try:
        if row == "reserve_delete_many":
            fill(client, n)
        bodies = [body] * batch
        gc.collect()
        _alarm(300)
        proxy0 = proxy_cpu()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if row == "put_many":
            full, rest = divmod(n, batch)
            for _ in range(full):
                client.put_many(bodies)
            if rest:
                client.put_many(bodies[:rest])
        else:
            left = n
            while left > 0:
                jobs = client.reserve_many(min(batch, left), 0)
                if not jobs:
                    raise RuntimeError("reserve_many returned no job with %d left" % left)
                for job in jobs:
                    job.body
                client.delete_many(jobs)
                left -= len(jobs)
        t1 = time.perf_counter()
        cpu1 = time.process_time()
        proxy1 = proxy_cpu()
        _alarm(0)
        if row == "put_many":       # untimed: leave the servers empty
            left = n
            while left > 0:
                jobs = client.reserve_many(min(4096, left), 0)
                if not jobs:
                    raise RuntimeError("put_many: %d jobs missing" % left)
                client.delete_many(jobs)
                left -= len(jobs)
    finally:
        client.close()
    return t1 - t0, cpu1 - cpu0 - (proxy1 - proxy0)


class _AioPoolClient:
    """An aio.Pool behind the blocking calls _pool_measure makes: one event loop (the stock one),
    one run_until_complete per batch (a few us per batch, well under 0.1 us per job)."""

    def __init__(self, addrs):
        import asyncio
        from beanstalkc_fast import aio
        self._loop = asyncio.new_event_loop()
        self._pool = aio.Pool(addrs, encoding=None)
        self._loop.run_until_complete(self._pool.connect())

    def put_many(self, items):
        return self._loop.run_until_complete(self._pool.put_many(items))

    def reserve_many(self, n, timeout=0):
        return self._loop.run_until_complete(self._pool.reserve_many(n, timeout))

    def delete_many(self, jobs):
        return self._loop.run_until_complete(self._pool.delete_many(jobs))

    def close(self):
        self._loop.run_until_complete(self._pool.close())
        self._loop.close()


POOL_CLIENTS = ("one", "pool1", "pool", "aio")     # --pool's clients, in display order


def pool_bench(args, log, placement="apart", which=POOL_CLIENTS):
    """The pool comparison: [result dict] and a description of the placement.

    ``placement``: "apart" (each server pinned to its own CPU, the client unpinned: what a pool
    gains) or "one-cpu" (the client and every server on --cpu: the client's own CPU per job
    shows). With --rtt every server sits behind a LatencyProxy of its own (in this process: their
    CPU is subtracted from the client's; on the pinned CPU in "one-cpu", unpinned otherwise).
    ``which``: a subset of POOL_CLIENTS."""
    from beanstalkc_fast.testing import BeanstalkdServer, LatencyProxy
    nservers = args.pool_servers
    servers = [BeanstalkdServer().start() for _ in range(nservers)]
    proxies = []
    restore = []
    try:
        where = "unpinned"
        if hasattr(os, "sched_setaffinity") and not args.no_pin:
            allowed = sorted(os.sched_getaffinity(0))
            if placement == "one-cpu":
                cpu = allowed[-1] if args.cpu is None else args.cpu
                _pin(cpu, None, log, restore)
                for server in servers:
                    restore.append((server.process.pid, os.sched_getaffinity(server.process.pid)))
                    os.sched_setaffinity(server.process.pid, {cpu})
                where = "client and %d servers pinned to CPU %d" % (nservers, cpu)
            else:
                for i, server in enumerate(servers):
                    cpu = allowed[i % len(allowed)]
                    restore.append((server.process.pid, os.sched_getaffinity(server.process.pid)))
                    os.sched_setaffinity(server.process.pid, {cpu})
                where = "server %s, client unpinned" % ", ".join(
                    "%d on CPU %d" % (i + 1, allowed[i % len(allowed)]) for i in range(nservers))
        addrs = [(s.host, s.port) for s in servers]
        if args.rtt is not None:
            proxies = [LatencyProxy(host, port, args.rtt / 1000.0) for host, port in addrs]
            addrs = [(p.host, p.port) for p in proxies]
            if placement == "one-cpu" and restore:
                for p in proxies:
                    if p.native_id is not None:
                        os.sched_setaffinity(p.native_id, os.sched_getaffinity(0))
            where += ", rtt %g ms (a LatencyProxy per server%s)" % (
                args.rtt, ", on that CPU" if placement == "one-cpu" and restore else "")
        log("pool comparison: %d servers (%s)" % (nservers, where))
        # The pools make their own connections: everything here runs on the default core (BACKEND).
        body = b"x" * args.body_size
        names = ["%s:%d" % a for a in addrs]

        def one():
            return beanstalkc_fast.Connection(addrs[0][0], addrs[0][1], encoding=None)

        def pool():
            return beanstalkc_fast.Pool(names, encoding=None)

        def one_of_pool():
            return beanstalkc_fast.Pool(names[:1], encoding=None)

        def fill(client, n):
            left = n
            while left > 0:
                client.put_many([body] * min(4096, left))
                left -= 4096

        def aio_pool():
            return _AioPoolClient(names)

        def proxy_cpu():
            return sum(p.cpu_time() for p in proxies)

        clients = [(name, make) for key, name, make in (
            ("one", "one server (Connection)", one), ("pool1", "Pool of 1", one_of_pool),
            ("pool", "Pool of %d" % nservers, pool), ("aio", "aio.Pool of %d (asyncio)" % nservers, aio_pool))
            if key in which]
        results = []
        n = args.pool_ops or args.batch_ops
        for row, label in POOL_ROWS:
            samples = {name: [] for name, _ in clients}
            for rep in range(1, args.repeat + 1):
                for name, make in clients:
                    log("[pool %s, %s, n=%d] rep %d/%d  %s" % (label, placement, n, rep, args.repeat, name))
                    samples[name].append(_pool_measure(make, row, n, args.batch, body, fill, log, proxy_cpu))
            base = None
            for name, _ in clients:
                wall = statistics.median(r[0] for r in samples[name])
                cpu = statistics.median(r[1] for r in samples[name])
                entry = {"row": "pool_" + row, "label": label, "client": name, "n": n, "backend": beanstalkc_fast.BACKEND,
                         "placement": placement, "ops_per_s": n / wall, "us_per_op": wall / n * 1e6,
                         "cpu_us_per_op": cpu / n * 1e6,
                         "samples_s": [r[0] for r in samples[name]], "cpu_samples_s": [r[1] for r in samples[name]]}
                if base is None:
                    base = entry
                entry["vs_one"] = entry["ops_per_s"] / base["ops_per_s"]
                entry["cpu_vs_one"] = entry["cpu_us_per_op"] / base["cpu_us_per_op"] if base["cpu_us_per_op"] else None
                results.append(entry)
        return results, where
    finally:
        for proxy in proxies:
            proxy.close()
        for server in servers:
            server.stop()
        _restore(restore)


def pool_markdown(results, meta):
    lines = ["Pool benchmark: %s" % meta["summary"], ""] + (
        ["Command: `%s`" % meta["command"], ""] if meta.get("command") else []) + [
        "| row | client | jobs/s | us/job | client CPU us/job | vs one server | client CPU vs one server |",
        "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append("| %s | %s | %s | %.2f | %.2f | %.2fx | %.2fx |" % (
            r["label"], r["client"], "{:,.0f}".format(r["ops_per_s"]), r["us_per_op"], r["cpu_us_per_op"],
            r["vs_one"], r["cpu_vs_one"] or 0))
    lines += ["", "reserve_many+delete_many counts one job per reserve and delete. Client CPU is this process's",
              "user+system time (less the latency proxies' threads with --rtt).", ""]
    return "\n".join(lines)


def pool_chart(results, meta, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    labels = [label for _, label in POOL_ROWS]
    names = []
    for r in results:
        if r["client"] not in names:
            names.append(r["client"])
    colors = ["#878787", "#a6dba0", "#1b7837", "#00441b"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    height = 0.8 / len(names)
    for j, name in enumerate(names):
        vals = [next((r["ops_per_s"] for r in results if r["client"] == name and r["label"] == label), 0)
                for label in labels]
        bars = ax.barh([k + j * height for k in range(len(labels))], vals, height=height, label=name,
                       color=colors[j % len(colors)])
        for bar, r in zip(bars, [next((r for r in results if r["client"] == name and r["label"] == label), None)
                                 for label in labels]):
            if r is not None:
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                        " {:,.0f}/s ({:.2f}x)".format(r["ops_per_s"], r["vs_one"]), va="center", fontsize=8)
    ax.set_yticks([k + height * (len(names) - 1) / 2 for k in range(len(labels))])
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["ops_per_s"] for r in results) * 1.35)
    ax.set_xlabel("jobs/s (higher is better)")
    ax.legend(fontsize=8, loc="lower right")
    import textwrap
    ax.set_title("\n".join(textwrap.wrap("Pool: " + meta["summary"], 80)), fontsize=9)
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def pool_main(args, argv, log):
    global _watchdog
    old_handler = None
    if hasattr(signal, "SIGALRM"):
        try:
            old_handler = signal.signal(signal.SIGALRM, _on_alarm)
            _watchdog = True
        except ValueError:
            _watchdog = False
    t0 = time.monotonic()
    try:
        results, placement = pool_bench(args, log, args.pool_placement)
    finally:
        _alarm(0)
        if _watchdog:
            signal.signal(signal.SIGALRM, old_handler)
            _watchdog = False
    meta = {"summary": "Python %s, %s core, %s, median of %d, body %d B, batch %d" % (
                sys.version.split()[0], results[0]["backend"], placement, args.repeat, args.body_size, args.batch),
            "placement": placement, "repeat": args.repeat, "batch": args.batch, "batch_ops": args.batch_ops,
            "body_size": args.body_size, "servers": args.pool_servers, "elapsed_s": time.monotonic() - t0,
            "command": "python benchmarks/compare.py " + " ".join(
                shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))}
    table = pool_markdown(results, meta)
    sys.stdout.write(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
            f.write("\n")
    if args.chart:
        path = args.chart if args.chart_given else os.path.join("benchmarks", "pool.png")
        problem = pool_chart(results, meta, path)
        log(problem or "chart written to %s" % path)
    log("done in %.1f s" % meta["elapsed_s"])
    return 0


# -- main ---------------------------------------------------------------------------

def _parser():
    p = argparse.ArgumentParser(prog="python benchmarks/compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", help="use this beanstalkd instead of starting one (with --port)")
    p.add_argument("--port", type=int, default=11300, help="port of the --host server (default 11300)")
    p.add_argument("--cpu", type=int, help="the CPU to pin the client and the server to (default: the last allowed)")
    p.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    p.add_argument("--quick", action="store_true", help="fewer jobs and repetitions (CI, smoke test)")
    p.add_argument("--rtt", type=float, metavar="MS",
                   help="reach the server through a LatencyProxy adding MS milliseconds of round trip "
                        "(default job counts shrink to match)")
    p.add_argument("--proxy-apart", action="store_true",
                   help="with --rtt: run the proxy's thread on the CPUs other than the pinned one "
                        "(default: on the pinned CPU with the client and the server)")
    p.add_argument("--ops", type=int, help="jobs per single-command row (stats: a quarter); default 20000, quick 2000")
    p.add_argument("--batch-ops", type=int, help="jobs per batch row (default 10 x --ops)")
    p.add_argument("--batch", type=int, default=256,
                   help="jobs per put_many / reserve_many call, and per batch of the raw pipelined client "
                        "(default 256; beanstalkd's delete slows down with the number of jobs the connection "
                        "has reserved, so large reserve batches measure the server)")
    p.add_argument("--repeat", type=int, help="repetitions per measurement, medians reported; default 5, quick 3")
    p.add_argument("--windows", help="raw pipelined window sizes to sweep, comma-separated")
    p.add_argument("--lib-windows", help="beanstalkc_fast pipelining windows to sweep in the batch rows, comma-"
                                         "separated (default: the library's own; they matter when --batch exceeds them)")
    p.add_argument("--body-size", type=int, default=100, help="job body size in bytes (default 100)")
    p.add_argument("--clients", help="comma-separated subset of: cython, python, greenstalk, beanstalkc3, pystalk, "
                                     "raw, pipelined, c-seq, c-pipe, aio, aio-uvloop (beanstalkc_fast.aio, compiled core, "
                                     "stock loop / uvloop), aiostalk")
    p.add_argument("--rows", help="comma-separated subset of: " + ", ".join(r[0] for r in ROWS))
    p.add_argument("--no-import", action="store_true", help="skip the import-time measurement")
    p.add_argument("--timeout", type=int, default=300, help="watchdog per measurement, seconds (default 300)")
    p.add_argument("--chart", default=os.path.join("benchmarks", "results.png"),
                   help="chart PNG path (default benchmarks/results.png; '' for none)")
    p.add_argument("--json", help="write the results as JSON to this path")
    p.add_argument("--markdown", help="write the table as markdown to this path")
    p.add_argument("--pool", action="store_true",
                   help="run the pool comparison instead: one server against a Pool of --pool-servers, each "
                        "server on its own CPU, the client unpinned (chart: benchmarks/pool.png)")
    p.add_argument("--pool-servers", type=int, default=2, help="servers in the pool comparison (default 2)")
    p.add_argument("--pool-placement", choices=("apart", "one-cpu"), default="apart",
                   help="--pool: each server on a CPU of its own and the client unpinned (apart, the default), or "
                        "the client and every server on --cpu (one-cpu: the client's own CPU per job shows)")
    p.add_argument("--pool-ops", type=int, help="jobs per pool row (default --batch-ops; --issue-table: half of it)")
    p.add_argument("--issue-table", metavar="PATH",
                   help="run the rows and clients of issue 23's table (single commands, a 60 KB put, batches of "
                        "100, 500 and 2,000 per call, the asyncio rows; then the pool comparison in both of its "
                        "placements) and write to PATH, as markdown, the table 'path | reached | goal' and every "
                        "client's jobs/s; --rows/--clients narrow it; the same command with --rtt 1 gives the "
                        "other placement")
    p.add_argument("--no-pool", action="store_true", help="--issue-table without the pool comparison")
    return p


def _clients(selected, log, lib_windows=(None,)):
    """[(name, factory, variants)] of the available clients, in display order."""
    compiled = _backend._load_compiled()
    out = []
    if "cython" in selected:
        if compiled is None:
            log("note: beanstalkc_fast._cprotocol is not built (or stale): no cython rows")
        else:
            out.append(("beanstalkc_fast[cython]", _Partial(FastClient, compiled), list(lib_windows)))
    if "python" in selected:
        out.append(("beanstalkc_fast[python]", _Partial(FastClient, _pyprotocol), list(lib_windows)))
    for key, name, cls, module in (("greenstalk", "greenstalk", GreenstalkClient, "greenstalk"),
                                   ("beanstalkc3", "beanstalkc3", Beanstalkc3Client, "beanstalkc"),
                                   ("pystalk", "pystalk", PystalkClient, "pystalk")):
        if key in selected:
            try:
                __import__(module)
            except ImportError:
                log("note: %s is not installed (pip install %s): skipped" % (name, name))
                continue
            out.append((name, cls, [None]))
    aio = [(key, name, uv) for key, name, uv in (("aio", "aio[cython]", False), ("aio-uvloop", "aio[cython]+uvloop", True))
           if key in selected]
    if aio and compiled is None:
        log("note: beanstalkc_fast._cprotocol is not built (or stale): no aio rows")
        aio = []
    for key, name, uv in aio:
        if uv and importlib.util.find_spec("uvloop") is None:
            log("note: uvloop is not installed (pip install uvloop): no %s rows" % name)
            continue
        out.append((name, _Partial(AioClient, compiled, uv), [None]))
    if "aiostalk" in selected:
        if importlib.util.find_spec("aiostalk") is None:
            log("note: aiostalk is not installed (pip install aiostalk): skipped")
        else:
            out.append(("aiostalk", AiostalkClient, [None]))
    return out


def _pin(cpu, server_pid, log, restore):
    """Pin this process (and the server, if its pid is known) to ``cpu``; return a description.

    Appends (pid, previous CPU set) pairs to ``restore``.
    """
    if not hasattr(os, "sched_setaffinity"):
        log("note: this platform cannot pin CPUs: running unpinned")
        return "unpinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = allowed[-1]
    restore.append((0, os.sched_getaffinity(0)))
    os.sched_setaffinity(0, {cpu})
    what = "client pinned to CPU %d" % cpu
    if server_pid is not None:
        try:
            previous = os.sched_getaffinity(server_pid)
            os.sched_setaffinity(server_pid, {cpu})
            restore.append((server_pid, previous))
            what = "client and server pinned to CPU %d" % cpu
        except OSError as err:
            log("note: cannot pin the server (pid %d): %s" % (server_pid, err))
            what += " (server not pinned)"
    else:
        what += " (server pid unknown: not pinned)"
    return what


def _restore(restore):
    """Give each (pid, CPU set) of ``restore`` its CPU set back."""
    for pid, cpus in restore:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:
            pass


def _place_proxy(proxy, allowed, args, log):
    """Put the LatencyProxy's thread on the pinned CPU, or with --proxy-apart on the others (as a
    network would not take the client's and server's CPU); return a description."""
    if args.no_pin or allowed is None or proxy.native_id is None:
        return "proxy unpinned"
    pinned = os.sched_getaffinity(0)
    others = set(allowed) - pinned
    cpus = others if args.proxy_apart and others else pinned
    try:
        os.sched_setaffinity(proxy.native_id, cpus)
    except OSError as err:
        log("note: cannot place the proxy's thread: %s" % err)
        return "proxy unpinned"
    return "proxy on CPU %s" % ",".join(map(str, sorted(cpus)))


def _server_pid(host, port):
    """The pid of a local beanstalkd, from its stats."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        ctl = PipelinedClient(host, port, "default", b"x", 1)
        try:
            return int(_parse(ctl.yaml_body(b"stats\r\n"))["pid"])
        finally:
            ctl.close()
    except Exception:
        return None


def _yaml_note(host, port):
    """Tell whether the built-in parser handles this server's stats or falls back to PyYAML."""
    c = beanstalkc_fast.Connection(host, port, parse_yaml=False, encoding=None)
    try:
        raw = c.stats().encode("utf-8")
    finally:
        c.close()
    try:
        _pyprotocol.parse_yaml(raw)
        return None
    except ValueError as err:
        return "stats() of this server falls back to PyYAML: the built-in parser refuses the line %s" % (err,)


def main(argv=None, prog=None):
    """Run the comparison; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    parser = _parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    log = lambda msg: (sys.stderr.write(msg + "\n"), sys.stderr.flush())  # noqa: E731
    quick = args.quick
    if args.rtt is not None and not args.rtt >= 0:
        parser.error("--rtt must be >= 0 milliseconds")
    ops_given, batch_ops_given = args.ops, args.batch_ops
    args.ops = args.ops or (2000 if quick else 20000)
    args.batch_ops = args.batch_ops or args.ops * 10
    # row_jobs() sizes the batch rows of other call sizes from these
    args.batch_ops_given, args.batch_ops_default = bool(batch_ops_given), args.batch_ops
    args.rtt_budget = 0.25 if quick else 1.0
    if args.rtt:
        # A sequential client waits a round trip per command: keep each single row to about
        # `budget` seconds of waiting, and each batch row (~3 round trips per batch) too.
        budget, rtt_s = args.rtt_budget, args.rtt / 1000.0
        if not ops_given:
            args.ops = min(args.ops, max(20, int(budget / rtt_s)))
        if not batch_ops_given:
            args.batch_ops = min(args.batch_ops, max(2 * args.batch, int(budget / rtt_s / 3 * args.batch)))
    args.repeat = args.repeat or (3 if quick else 5)
    windows = [int(w) for w in args.windows.split(",")] if args.windows else \
        ([32, 128, 512, 2048] if quick else [16, 32, 64, 128, 256, 512, 1024, 2048, 4096])
    # a window never exceeds a batch
    windows = sorted({min(w, args.batch) for w in windows if w > 0})
    lib_windows = sorted({int(w) for w in args.lib_windows.split(",")}) if args.lib_windows else [None]
    if None not in lib_windows and min(lib_windows) < 1:
        parser.error("--lib-windows must be positive")
    all_clients = ["cython", "python", "greenstalk", "beanstalkc3", "pystalk", "raw", "pipelined", "c-seq", "c-pipe",
                   "aio", "aio-uvloop", "aiostalk"]
    selected = set(args.clients.split(",")) if args.clients else set(
        ISSUE_CLIENTS if args.issue_table else all_clients)
    args.rows = set(args.rows.split(",")) if args.rows else set(ISSUE_ROWS if args.issue_table else DEFAULT_ROWS)
    unknown = (selected - set(all_clients)) | (args.rows - {r[0] for r in ROWS})
    if unknown:
        parser.error("unknown client or row: %s" % ", ".join(sorted(unknown)))
    if min(args.ops, args.batch_ops, args.batch, args.repeat, args.body_size) < 1:
        parser.error("--ops, --batch-ops, --batch, --repeat and --body-size must be positive")
    if args.pool_servers < 1 or (args.pool_ops is not None and args.pool_ops < 1):
        parser.error("--pool-servers and --pool-ops must be positive")
    if args.pool and args.issue_table:
        parser.error("--issue-table runs the pool comparison itself (--no-pool: without it)")
    if args.issue_table and not args.pool_ops:
        args.pool_ops = max(1, args.batch_ops // 2)
    if args.pool:
        args.chart_given = "--chart" in (sys.argv[1:] if argv is None else argv)
        return pool_main(args, argv, log)

    global _watchdog
    old_handler = None
    if hasattr(signal, "SIGALRM"):
        try:
            old_handler = signal.signal(signal.SIGALRM, _on_alarm)
            _watchdog = True
        except ValueError:      # not the main thread: no watchdog
            _watchdog = False
    server = proxy = None
    restore = []
    tmpdir = tempfile.mkdtemp(prefix="beanstalkc_fast-bench-")
    notes = []
    try:
        if args.host:
            host, port = args.host, args.port
            server_pid = _server_pid(host, port)
        else:
            from beanstalkc_fast.testing import BeanstalkdServer
            server = BeanstalkdServer().start()
            host, port, server_pid = server.host, server.port, server.process.pid
            log("started beanstalkd on %s:%d (pid %d)" % (host, port, server_pid))
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        pinning = "unpinned" if args.no_pin else _pin(args.cpu, server_pid, log, restore)
        log(pinning)
        if args.rtt is not None:
            from beanstalkc_fast.testing import LatencyProxy
            proxy = LatencyProxy(host, port, args.rtt / 1000.0)
            pinning += ", " + _place_proxy(proxy, allowed, args, log)
            log("clients reach the server through %r" % proxy)

        clients = _clients(selected, log, lib_windows)
        if "raw" in selected:
            clients.append(("raw socket", RawClient, [None]))
        if "pipelined" in selected:
            clients.append(("raw pipelined", PipelinedClient, windows))
        if selected & {"c-seq", "c-pipe"}:
            exe, note = build_refclient(tmpdir)
            log("note: " + note)
            if exe is None:
                notes.append(note)
            else:
                if "c-seq" in selected:
                    clients.append((C_SEQ, _Partial(CSequentialClient, exe), [None]))
                if "c-pipe" in selected:
                    clients.append((C_PIPE, _Partial(CPipelinedClient, exe), list(lib_windows)))
        note = _yaml_note(host, port)
        if note:
            notes.append(note)
            log("note: " + note)

        t0 = time.monotonic()
        results = Bench(args, host, port, server_pid, proxy=proxy).run(clients)
        imports = [] if args.no_import else import_times(5 if quick else 10, log)
        pool_results, pool_meta = [], []
        if args.issue_table and not args.no_pool:
            _restore(restore)       # the pool comparison places itself
            del restore[:]
            # client CPU per job: everything on one CPU; what a pool gains: servers on CPUs of their own
            for placement, which in (("one-cpu", ("one", "pool1", "pool")), ("apart", ("one", "pool", "aio"))):
                got, where = pool_bench(args, log, placement, which)
                pool_results += got
                pool_meta.append({"placement": placement, "where": where, "n": got[0]["n"]})
        elapsed = time.monotonic() - t0
    finally:
        _alarm(0)
        if _watchdog:
            signal.signal(signal.SIGALRM, old_handler)
            _watchdog = False
        if proxy is not None:
            proxy.close()
        if server is not None:
            server.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)
        _restore(restore)

    meta = {
        "summary": "Python %s, %s, median of %d, body %d B, batch %d%s" % (
            sys.version.split()[0], pinning, args.repeat, args.body_size, args.batch,
            "" if args.rtt is None else ", rtt %g ms (LatencyProxy)" % args.rtt),
        "rtt_ms": args.rtt,
        "python": sys.version, "pinning": pinning, "repeat": args.repeat, "ops": args.ops,
        "batch_ops": args.batch_ops, "batch": args.batch, "body_size": args.body_size, "windows": windows,
        "lib_windows": lib_windows, "backend_default": beanstalkc_fast.BACKEND, "elapsed_s": elapsed,
        "notes": notes, "command": "python benchmarks/compare.py " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "placement_title": "one CPU" if args.rtt is None else "server %g ms away (`--rtt %g`)" % (args.rtt, args.rtt),
    }
    table = markdown(results, imports, meta)
    sys.stdout.write(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results, "imports": imports, "pool_results": pool_results},
                      f, indent=2)
            f.write("\n")
    if args.issue_table:
        issue = issue_markdown(results, pool_results, meta, pool_meta)
        with open(args.issue_table, "w") as f:
            f.write(issue)
        sys.stdout.write("\n" + issue)
    if args.chart and (not args.issue_table or "--chart" in (sys.argv[1:] if argv is None else argv)):
        problem = chart(results, imports, meta, args.chart)
        log(problem or "chart written to %s" % args.chart)
    log("done in %.1f s" % elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
