"""A Connection shared by threads: commands pipeline, bytes never interleave.

These tests check it from the outside (every reply matches its request under contention)
and from the inside (every write of every public method happens while the calling thread
holds the connection's write lock, and no two threads ever read at once), and that
close()/reconnect() from another thread end a blocked call promptly instead of writing into it.
More of the pipelining itself is in test_pipelining.py.
"""
import socket
import sys
import threading
import time

import pytest

from beanstalkc_fast import SocketError

GUARD = 15.0


@pytest.fixture
def conn(make_conn, tube):
    """Like conftest's conn, with a socket_timeout: a desynced stream fails instead of hanging."""
    c = make_conn(socket_timeout=10)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    return c


def run_threads(n, target):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as err:     # report in the main thread
            errors.append(err)

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD * 4)
        assert not t.is_alive(), "thread still running: deadlock?"
    if errors:
        raise errors[0]


def test_many_threads_every_reply_matches_its_request(conn, tube):
    per_thread = 150
    seen = {}

    def work(i):
        mine = []
        for k in range(per_thread):
            body = "t%d-%d" % (i, k)
            jid = conn.put(body, priority=i)
            mine.append((jid, body))
            stats = conn.stats()
            assert isinstance(stats, dict) and "current-jobs-ready" in stats
            if k % 10 == 0:
                assert conn.stats_job(jid)["pri"] == i
            if k % 7 == 0:
                assert conn.using() == tube
        for jid, body in mine:
            job = conn.peek(jid)
            assert job.jid == jid and job.body == body
        seen[i] = mine

    run_threads(8, work)
    ids = [jid for mine in seen.values() for jid, _ in mine]
    assert len(ids) == len(set(ids)) == 8 * per_thread
    assert conn.stats_tube(tube)["current-jobs-ready"] == 8 * per_thread


def test_threads_mixing_batches_and_single_commands(conn, tube):
    out = {}

    def work(i):
        if i % 2:
            bodies = [b"b%d-%d" % (i, k) for k in range(2000)]
            out[i] = list(zip(conn.put_many(bodies), bodies))
        else:
            out[i] = [(conn.put(b"s%d-%d" % (i, k)), b"s%d-%d" % (i, k)) for k in range(200)]

    run_threads(6, work)
    pairs = [p for v in out.values() for p in v]
    assert len({jid for jid, _ in pairs}) == len(pairs)
    sample = pairs[::97]
    for jid, body in sample:
        assert conn.peek(jid).body_bytes == body
    # Consumers in threads: every job reserved exactly once.
    got = []

    def consume(i):
        while True:
            jobs = conn.reserve_many(50, timeout=0)
            if not jobs:
                return
            got.extend((j.jid, j.body_bytes) for j in jobs)
            conn.delete_many(jobs)

    run_threads(4, consume)
    assert sorted(got) == sorted(pairs)


# -- every socket operation happens under the lock, held by the caller ---------------------------

class OwnedLock:
    """A Lock that remembers its owner thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner = None

    def acquire(self, blocking=True, timeout=-1):
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            self.owner = threading.get_ident()
        return ok

    def release(self):
        self.owner = None
        self._lock.release()

    def locked(self):
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()


class WatchedSocket:
    """A socket proxy that records writes made without holding ``lock`` and reads made
    while another thread reads."""

    WRITES = {"send", "sendall", "sendmsg", "settimeout"}     # shutdown writes nothing
    READS = {"recv", "recv_into"}

    def __init__(self, sock, conn_of, violations):
        self._sock = sock
        self._conn_of = conn_of
        self._violations = violations
        self._readers = []

    def __getattr__(self, name):
        attr = getattr(self._sock, name)
        if name not in self.WRITES and name not in self.READS:
            return attr

        def watched(*args, **kw):
            caller = sys._getframe(1).f_code.co_name
            if name in self.READS:
                self._readers.append(caller)
                try:
                    if len(self._readers) > 1:
                        self._violations.append("%s in %s while %s reads" % (name, caller, self._readers[0]))
                    return attr(*args, **kw)
                finally:
                    self._readers.remove(caller)
            # A new socket is configured (and its tubes restored) before any other thread can
            # see it: only the socket the connection has published needs the lock.
            conn = self._conn_of()
            published = conn._proto is not None and conn._proto.sock is self
            if published and conn._lock.owner != threading.get_ident():
                self._violations.append("%s in %s" % (name, caller))
            return attr(*args, **kw)
        return watched


@pytest.fixture
def watched_conn(make_conn, monkeypatch, tube):
    violations = []
    holder = {}
    real = socket.create_connection

    def create_connection(*args, **kw):
        return WatchedSocket(real(*args, **kw), lambda: holder["conn"], violations)

    # The first connect happens in __init__, before the lock can be swapped: swap it,
    # then reconnect through the proxy.
    c = make_conn(socket_timeout=5)
    c._lock = OwnedLock()
    holder["conn"] = c
    monkeypatch.setattr(socket, "create_connection", create_connection)   # connect() imports socket itself
    c.reconnect()
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    del violations[:]
    return c, violations


def test_no_public_method_writes_without_the_lock(watched_conn, tube):
    c, violations = watched_conn
    jid = c.put(b"a")
    c.put_many([b"b", b"c"])
    c.peek(jid), c.peek_ready(), c.peek_delayed(), c.peek_buried()
    c.stats(), c.stats_tube(tube), c.stats_job(jid), c.tubes(), c.watching(), c.using()
    job = c.reserve(timeout=0)
    job.touch()
    job.release()
    job = c.reserve()
    job.bury()
    c.kick(1)
    c.kick_job(c.put(b"d", delay=100))
    jobs = c.reserve_many(10, timeout=0)
    c.touch_many(jobs)
    c.release_many(jobs)
    jobs = c.reserve_many(10, timeout=0)
    c.bury_many(jobs[:1])
    c.delete_many(jobs[1:])
    c.reserve_job(jobs[0].jid).delete()
    c.pause_tube(tube, 0)
    c.watch("other"), c.ignore("other")
    c.reconnect()
    c.close()
    c.close()
    assert violations == []


def test_close_from_another_thread_does_not_write_into_a_command(watched_conn):
    c, violations = watched_conn
    wait = threading.Event()
    result = {}

    def blocked():
        wait.set()
        try:
            result["job"] = c.reserve()
        except SocketError as err:
            result["error"] = err

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    wait.wait()
    time.sleep(0.3)
    start = time.monotonic()
    c.close()
    t.join(GUARD)
    assert not t.is_alive(), "reserve still blocked after close()"
    assert time.monotonic() - start < 3     # promptly, not at socket_timeout (5 s)
    assert isinstance(result.get("error"), SocketError)
    assert c.connected is False
    assert violations == []                 # close() wrote nothing while reserve held the lock


def test_reconnect_from_another_thread_is_not_undone_by_the_failing_call(make_conn, tube):
    c = make_conn(socket_timeout=10)
    c.watch(tube)
    started = threading.Event()
    result = {}

    def blocked():
        started.set()
        try:
            result["job"] = c.reserve()
        except SocketError as err:
            result["error"] = err

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    started.wait()
    time.sleep(0.3)
    c.reconnect()               # the blocked reserve fails; the new connection must survive it
    t.join(GUARD)
    assert not t.is_alive()
    assert isinstance(result.get("error"), SocketError)
    assert c.connected
    assert tube in c.watching()
    assert isinstance(c.stats(), dict)


def test_close_while_another_thread_streams_a_batch(make_conn, tube):
    c = make_conn(socket_timeout=10)
    c.use(tube)
    body = b"z" * 30000
    sent = []
    result = {}

    def items():
        for i in range(100000):
            sent.append(i)
            yield body

    def producer():
        try:
            result["ids"] = c.put_many(items())
        except SocketError as err:
            result["error"] = err

    t = threading.Thread(target=producer, daemon=True)
    t.start()
    while len(sent) < 2000 and t.is_alive():
        time.sleep(0.01)
    c.close()
    t.join(GUARD)
    assert not t.is_alive()
    err = result.get("error")
    assert isinstance(err, SocketError), result
    # Every confirmed job is intact: nothing was written into the middle of a body.
    check = make_conn(socket_timeout=10)
    check.use(tube)
    for jid in err.results[::50]:
        assert check.peek(jid).body_bytes == body
