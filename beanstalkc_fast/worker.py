"""Worker: the consumer loop (reserve, handle, delete; release or bury on failure), built once.

Threads: ``concurrency`` handler threads take jobs from a queue of prefetched jobs and only run
handlers; one I/O thread (the reserver) does every command of the worker: it keeps the queue
filled with ``reserve_many``, deletes the jobs handled with ``delete_many`` (grouped per
connection), releases or buries failed ones, and touches jobs whose TTR is running out. Every
decision it acts on is ``_workerpolicy``'s, shared with ``aio.Worker``.

Round trips: the common case (a handler that returns within ``PROBE_AFTER`` seconds of its job's
reservation) costs a share of one ``reserve_many`` and one ``delete_many`` per job, nothing
more. Only a failed job, or a job held longer than that, is asked its ``stats-job`` (for its
TTR, priority, releases), pipelined with the others asked at the same time.
"""
import threading
import time

from . import _workerpolicy as policy
from ._commands import load_yaml
from .connection import Connection, Job
from .exceptions import (BatchError, BeanstalkcException, CorruptJob, DeadlineSoon, InvalidArgument, InvalidType,
                         ProtocolError, SocketError)

__all__ = ["Worker"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional, Union

_WINDOW = 256           # commands per pipelined window of the worker's own batches (stats, release, bury, touch)
_BROKEN = (SocketError, ProtocolError)

_log = None


def log():
    """The ``beanstalkc_fast.worker`` logger."""
    global _log
    if _log is None:
        import logging
        _log = logging.getLogger("beanstalkc_fast.worker")
    return _log


class _Lost(Exception):
    """A connection broke under the worker's batch: its jobs are the server's again."""

    def __init__(self, conn, err):
        super().__init__(conn, err)
        self.conn = conn
        self.err = err


def _pipeline(conn, lines):
    """Send ``lines`` (commands) on ``conn`` in pipelined windows; return their replies
    ``(status, args, body)`` in order. A broken connection raises _Lost."""
    core = conn._core
    replies = []
    try:
        link = conn._link()
    except _BROKEN as err:
        raise _Lost(conn, err)
    try:
        for i in range(0, len(lines), _WINDOW):
            window = lines[i:i + _WINDOW]
            link.send([b"".join(window)])
            link.read(core.Batch(core.KIND_REPLY, len(window), replies))
    except _BROKEN as err:
        raise _Lost(conn, err)
    finally:
        link.close()
    return replies


def _by_conn(helds):
    groups = {}
    for held in helds:
        groups.setdefault(held.job.conn, []).append(held)
    return groups


class Worker:
    """Run ``handler(job)`` for every job of the watched tubes, in ``concurrency`` threads.

    ``Worker(source, handler, *, tubes=None, concurrency=1, prefetch=None, max_retries=3,
    backoff=None, shutdown_timeout=30.0, ttr_margin=1.0)``

    - ``source``: a ``Connection``, a ``Pool``, or an address (``'host:port'``, ``(host, port)``
      or a unix socket path: the worker opens and closes its own connection). The worker drives
      it while it runs (it watches ``tubes`` only, and restores the watched tubes at the end).
    - ``handler(job)``: returns, and the job is deleted (deletes are batched); raises, and the
      job is released with ``delay=backoff(attempt)`` (attempt 1 is the first failure, counted
      from the job's ``releases``), or buried once it has failed ``max_retries + 1`` times. A
      handler that deleted, released or buried its job itself is respected. ``handler`` may be a
      dict ``{tube: handler}``: jobs go to the handler of their tube.
    - ``tubes``: the tubes to watch (default: the dict's keys, else ``['default']``).
    - ``prefetch``: jobs reserved ahead of free handlers (default: ``concurrency``).
    - ``backoff(attempt)``: seconds before a failed job is ready again (default: exponential,
      1, 2, 4 ... s with jitter, capped at 10 minutes).
    - TTR: a job whose handler still runs ``ttr_margin`` seconds before its TTR ends (at most
      half its TTR before) is touched; a prefetched job no handler started by then is released.
    - ``run()`` blocks until ``stop()`` (in the main thread, also until SIGTERM or SIGINT) and
      returns the counters, which ``stats`` shows live: ``reserved``, ``processed``, ``failed``,
      ``released``, ``buried``, ``touched``. On stop no job is reserved any more, prefetched
      jobs go back at once with their own priority, and running handlers get
      ``shutdown_timeout`` seconds to finish; the jobs of those still running are then
      released.
    - A lost server: the worker reconnects with backoff and goes on (a ``Pool`` keeps the other
      servers feeding it); jobs reserved on the lost connection are the server's again.
      Handler exceptions are logged on the ``beanstalkc_fast.worker`` logger (WARNING; ERROR
      for a bury) and never end the worker; a corrupt job (``CorruptJob``) is buried.
    """

    def __init__(self, source: "Any", handler: "Union[Callable[[Any], Any], Dict[str, Callable[[Any], Any]]]", *,
                 tubes: "Optional[Iterable[str]]" = None, concurrency: int = 1, prefetch: "Optional[int]" = None,
                 max_retries: int = 3, backoff: "Optional[Callable[[int], float]]" = None,
                 shutdown_timeout: float = 30.0, ttr_margin: float = 1.0) -> None:
        core = Connection._core
        self._settings = policy.Settings(handler, tubes, concurrency, prefetch, max_retries, backoff,
                                         shutdown_timeout, ttr_margin, core.check_tube)
        self._pool = None
        self._conn = None
        self._address = None
        if isinstance(source, Connection):
            self._conn = source
        elif type(source).__name__ == "Pool" and hasattr(source, "reserve_many") and hasattr(source, "servers"):
            from .pool import Pool
            if not isinstance(source, Pool):
                raise InvalidType("source must be a Connection, a Pool or an address, not %r" % (source,))
            self._pool = source
        elif isinstance(source, (str, tuple, list)):
            self._address = policy.check_source_address(source)
        else:
            raise InvalidType("source must be a Connection, a Pool or an address, not %r" % (source,))
        #: The counters, live (reserved, processed, failed, released, buried, touched).
        self.stats: "Dict[str, int]" = policy.counters()
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)     # handler threads wait on it for jobs
        self._wake = threading.Condition(self._lock)     # the reserver waits on it for room or results
        self._stopping = False
        self._running = False
        self._reset()

    def _reset(self) -> None:
        from collections import deque
        self._ready: "Any" = deque()          # Held jobs prefetched, oldest first
        self._slots: "List[Any]" = [None] * self._settings.concurrency   # the Held job of each handler thread
        self._done: "Any" = deque()           # (Held, exception or None) of the handlers that returned
        self._sleeping = False                # the reserver waits on _wake
        self._next_due: "Optional[float]" = None
        self._broken = False                  # our own connection broke: reconnect before the next reserve
        self._error: "Optional[BaseException]" = None

    def __repr__(self) -> str:
        return "<beanstalkc_fast.Worker tubes=%r concurrency=%d prefetch=%d %s>" % (
            self._settings.tubes, self._settings.concurrency, self._settings.prefetch,
            "running" if self._running else "idle")

    # -- the public face --

    def stop(self) -> None:
        """Stop: reserve nothing more, give prefetched jobs back, let running handlers finish
        (up to ``shutdown_timeout``); ``run()`` then returns. Safe from any thread and from a
        signal handler."""
        self._stopping = True
        with self._lock:
            self._wake.notify_all()
            self._work.notify_all()

    def run(self) -> "Dict[str, int]":
        """Work until ``stop()`` (or SIGTERM/SIGINT, in the main thread); return the counters."""
        if self._running:
            raise RuntimeError("this Worker is already running")
        self._running = True
        self._reset()
        restore = self._trap_signals()
        try:
            reserver = threading.Thread(target=self._reserver, name="beanstalkc_fast-worker-reserver", daemon=True)
            reserver.start()
            while reserver.is_alive():      # with a timeout: a signal handler runs between waits
                reserver.join(0.25)
        finally:
            restore()
            self._running = False
            self._stopping = False
        if self._error is not None:
            raise self._error
        return dict(self.stats)

    def _trap_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        import signal
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, lambda *_: self.stop())
            except (ValueError, OSError):   # not settable here (an embedding interpreter)
                pass

        def restore():
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return restore

    # -- handler threads: they only run handlers --

    def _handle(self, i):
        # The jobs move between threads through deques (popleft and append are atomic): a job is
        # taken once, by a handler or by the reserver giving it back. The lock is taken only to
        # sleep and to wake the reserver, not per job.
        settings, lock, ready, slots, done = self._settings, self._lock, self._ready, self._slots, self._done
        low, flush = settings.low_water, max(1, settings.capacity // 2)
        handler = settings.handler
        log_ = log()
        while True:
            held = None
            if not self._stopping:
                try:
                    held = ready.popleft()
                except IndexError:
                    pass
            if held is None:
                lock.acquire()
                if self._sleeping:      # going idle: let the reserver settle and refill now
                    self._wake.notify()
                while not ready or self._stopping:
                    if self._stopping:  # prefetched jobs are the reserver's to give back
                        lock.release()
                        return
                    self._work.wait()
                lock.release()
                continue
            slots[i] = held
            if self._sleeping and len(ready) <= low:
                self._notify()
            job = held.job
            err = None
            try:
                fn = handler if handler is not None else settings.handler_for(held)
                if fn is None:
                    raise InvalidArgument("no handler for the tube %r" % (held.tube,))
                fn(job)
            except BaseException as exc:
                err = exc
                log_.warning("handler failed on job %s: %r", job.jid, exc, exc_info=exc)
            slots[i] = None
            done.append((held, err))
            if self._sleeping and (err is not None or len(done) >= flush):
                self._notify()

    def _notify(self):
        with self._lock:
            self._wake.notify()

    def _must_wake(self, empty):
        """Whether the reserver has work now (called under the lock before it sleeps): room
        for a batch (unless the tubes were just found ``empty``), enough results to settle, or
        handlers gone idle with results."""
        settings, ready = self._settings, self._ready
        if self._stopping:
            return True
        running = sum(1 for s in self._slots if s is not None)
        done = len(self._done)
        if done >= max(1, settings.capacity // 2) or (done and not running):
            return True
        return not empty and len(ready) <= settings.low_water and len(ready) + running + done < settings.capacity

    # -- the reserver: every command of the worker --

    def _reserver(self):
        settings = self._settings
        threads = []
        try:
            self._open()
            for i in range(settings.concurrency):
                t = threading.Thread(target=self._handle, args=(i,), name="beanstalkc_fast-worker-%d" % i, daemon=True)
                t.start()
                threads.append(t)
            self._loop()
            self._shutdown()
        except BaseException as err:   # a bug, or a handler table that cannot work: stop everything, then raise
            self._error = err
            self.stop()
            try:
                self._shutdown(0)
            except BaseException:
                pass
        finally:
            self._close()

    def _open(self):
        conn = self._conn
        if self._address is not None:
            host, port = (self._address, 0) if isinstance(self._address, str) else self._address
            delays = policy.reconnect_delays()
            while True:
                try:
                    conn = self._conn = Connection(host, port)
                    break
                except SocketError as err:
                    self._lost_server(err)
                    if self._pause(next(delays)):
                        return
        tubes = self._settings.tubes
        source = self._pool if self._pool is not None else conn
        self._restore = None
        try:
            before = source.watching() if self._pool is not None else list(conn._watching)
            for name in tubes:
                source.watch(name)
            for name in before:
                if name not in tubes:
                    source.ignore(name)
            if self._address is None:
                self._restore = before
        except _BROKEN as err:
            self._lost_server(err)
            self._broken = conn is not None

    def _close(self):
        if self._address is not None:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return
        before = self._restore
        if before is None:
            return
        source = self._pool if self._pool is not None else self._conn
        try:
            for name in before:
                source.watch(name)
            for name in self._settings.tubes:
                if name not in before:
                    source.ignore(name)
        except BeanstalkcException:
            pass

    def _lost_server(self, err):
        log().warning("beanstalkd server lost: %s; reconnecting", err)

    def _pause(self, seconds):
        """Wait ``seconds`` unless stopped meanwhile; return whether stopped."""
        with self._lock:
            if not self._stopping:
                self._sleeping = True
                self._wake.wait(seconds)
                self._sleeping = False
        return self._stopping

    def _loop(self):
        settings = self._settings
        capacity, low = settings.capacity, settings.low_water
        lock, ready, slots = self._lock, self._ready, self._slots
        monotonic = time.monotonic
        delays = None
        while not self._stopping:
            self._settle()
            self._care()
            if self._stopping:
                break
            if self._conn is None and self._pool is None:
                break
            if self._broken:
                try:
                    self._conn.reconnect()
                    self._broken = False    # the backoff goes on until a reserve works again
                except _BROKEN as err:
                    self._lost_server(err)
                    delays = delays or policy.reconnect_delays()
                    self._pause(next(delays))
                    continue
            lock.acquire()
            waiting = len(ready)
            held = waiting + len(self._done) + sum(1 for s in slots if s is not None)
            lock.release()
            room = capacity - held
            empty = False
            if room > 0 and waiting <= low:
                now = monotonic()
                wait = policy.reserve_wait(held > 0 and self._pool is None, self._next_due, now)
                try:
                    got = self._reserve(room, wait, now)
                except _BROKEN as err:
                    self._lost_server(err)
                    if self._pool is None:
                        self._forget(self._conn)
                        self._broken = True
                    delays = delays or policy.reconnect_delays()
                    self._pause(next(delays))
                    continue
                delays = None
                if got or wait:
                    continue
                empty = True
                pause = policy.idle_wait(self._next_due, monotonic())
            else:
                due = self._next_due
                pause = policy.IDLE_WAIT if due is None else max(0.0, min(policy.IDLE_WAIT, due - monotonic()))
            lock.acquire()
            if pause > 0 and not self._must_wake(empty):
                self._sleeping = True
                self._wake.wait(pause)
                self._sleeping = False
            lock.release()

    def _reserve(self, n, wait, now):
        """Reserve up to ``n`` jobs (waiting up to ``wait`` s for the first) into the queue; return how many."""
        source = self._pool if self._pool is not None else self._conn
        try:
            jobs = source.reserve_many(n, wait)
        except DeadlineSoon:    # a job held is near its deadline: _care() touches it; never a stall
            return 0
        except CorruptJob as err:
            self._bury_corrupt([err])
            return 0
        except BatchError as err:   # jobs, and corrupt ones (buried) or replies nobody expected
            jobs = [r for r in err.results if isinstance(r, Job)]
            self._bury_corrupt([r for r in err.results if isinstance(r, CorruptJob)])
            for r in err.results:
                if not isinstance(r, (Job, CorruptJob, DeadlineSoon)):
                    log().error("unexpected reply to a reserve: %r", r)
        if not jobs:
            return 0
        self.stats["reserved"] += len(jobs)
        helds = [policy.Held(job, now) for job in jobs]
        if self._settings.routed:       # the tube picks the handler: ask it before a handler runs
            self._ask(helds)
            helds = [h for h in helds if h.ttr is not None]
        due = now + policy.PROBE_AFTER
        with self._lock:
            if self._next_due is None or due < self._next_due:
                self._next_due = due
            if self._stopping:      # reserved while stop() came: straight back
                late = helds
            else:
                late = []
                self._ready.extend(helds)
                self._work.notify(len(helds))
        if late:
            self._give_back(late)
        return len(jobs)

    def _bury_corrupt(self, errors):
        for err in errors:
            jid = getattr(err, "jid", None)
            if jid is None:
                log().error("a corrupt job without an id: %r", err)
                continue
            try:
                if self._pool is not None:
                    server = getattr(err, "server", None)
                    if server is None:
                        log().error("corrupt job %s: its server is unknown; it goes back at its TTR", jid)
                        continue
                    from ._poolpolicy import JobRef
                    self._pool.bury(JobRef(server, jid))
                else:
                    self._conn.bury(jid)
                self.stats["buried"] += 1
                log().error("buried job %s: its body is corrupt (%s)", jid, err)
            except BeanstalkcException as exc:
                log().error("corrupt job %s could not be buried: %r", jid, exc)

    # -- the worker's batches, grouped by the connection each job goes back to --

    def _forget(self, conn):
        """``conn`` broke: its reservations died with it. Drop its prefetched jobs and mark
        its running ones, whose touches, releases and buries would be in vain."""
        for held in [h for h in list(self._ready) if h.job.conn is conn]:    # list(): one step under the GIL
            self._take(held)
        for held in self._slots:
            if held is not None and held.job.conn is conn:
                held.job.reserved = False
        if conn is self._conn and self._pool is None:
            self._broken = True

    def _take(self, held):
        """Take a prefetched job out of the queue, unless a handler took it first."""
        try:
            self._ready.remove(held)
            return True
        except ValueError:
            return False

    def _each_conn(self, helds, fn):
        """``fn(conn, helds)`` for each connection's group; a broken connection is forgotten."""
        for conn, group in _by_conn(helds).items():
            if not conn.connected:
                continue
            try:
                fn(conn, group)
            except _Lost as lost:
                self._lost_server(lost.err)
                self._forget(conn)

    def _ask(self, helds):
        """Learn each job's stats (pipelined per connection); a job gone is no longer reserved."""
        def ask(conn, group):
            sent = time.monotonic()
            replies = _pipeline(conn, [b"stats-job %d\r\n" % h.job.jid for h in group])
            core = conn._core
            for held, reply in zip(group, replies):
                if reply[0] == b"OK":
                    held.learn(policy.stats_of(load_yaml(core, reply[2])), sent)
                else:
                    held.job.reserved = False
        self._each_conn(helds, ask)

    def _command(self, verb, helds, lines, counter):
        """Send one job command per held job; count those the server did."""
        done = []

        def send(conn, group):
            replies = _pipeline(conn, [lines[id(h)] for h in group])
            for held, reply in zip(group, replies):
                if reply[0] in (b"RELEASED", b"BURIED", b"TOUCHED", b"DELETED"):
                    done.append(held)
                    if verb != "touch":
                        held.job.reserved = False
                else:
                    held.job.reserved = False   # NOT_FOUND: the reservation was lost (its TTR ran out)
                    log().warning("%s of job %s: %s", verb, held.job.jid, reply[0].decode("ascii", "replace"))
        self._each_conn(helds, send)
        self.stats[counter] += len(done)
        return done

    def _give_back(self, helds, delay=0):
        """Release jobs with their own priority."""
        helds = [h for h in helds if h.job.reserved]
        self._ask([h for h in helds if h.pri is None])
        helds = [h for h in helds if h.job.reserved]
        lines = {id(h): b"release %d %d %d\r\n" % (h.job.jid, h.pri, delay) for h in helds}
        self._command("release", helds, lines, "released")

    def _settle(self):
        """Delete the jobs handled, release or bury the failed ones."""
        queue = self._done
        if not queue:
            return
        ok, failed, nok, nfailed = [], [], 0, 0
        popleft = queue.popleft
        for _ in range(len(queue)):     # what is there now; each popleft is atomic
            held, err = popleft()
            if err is None:
                nok += 1
                if held.job.reserved:
                    ok.append(held.job)
            else:
                nfailed += 1
                if held.job.reserved:
                    failed.append(held)
        self.stats["processed"] += nok
        self.stats["failed"] += nfailed
        if ok:
            self._delete(ok)
        if failed:
            self._fail(failed)

    def _delete(self, jobs):
        groups = {}
        for job in jobs:
            groups.setdefault(job.conn, []).append(job)
        for conn, group in groups.items():
            if not conn.connected:      # its reservations died with it: the jobs are the server's again
                continue
            try:
                conn.delete_many(group)
            except BatchError as err:
                for job, result in zip(group, err.results):
                    if isinstance(result, BaseException):
                        log().warning("delete of job %s: %s", job.jid, result)
            except _BROKEN as err:
                self._lost_server(err)
                self._forget(conn)

    def _fail(self, helds):
        settings = self._settings
        self._ask([h for h in helds if h.releases is None or h.pri is None])
        helds = [h for h in helds if h.job.reserved]
        lines, buried, released = {}, [], []
        for held in helds:
            try:
                what, pri, delay, attempt = settings.verdict(held)
            except (InvalidArgument, InvalidType) as err:   # a backoff that gave nonsense: the job waits as the default says
                log().error("%s", err)
                what, pri, delay, attempt = "release", held.pri, policy.default_backoff(1), 0
            if what == "bury":
                lines[id(held)] = b"bury %d %d\r\n" % (held.job.jid, pri)
                buried.append(held)
                log().error("burying job %s after %d failed attempts", held.job.jid, attempt)
            else:
                lines[id(held)] = b"release %d %d %d\r\n" % (held.job.jid, pri, delay)
                released.append(held)
        if buried:
            self._command("bury", buried, lines, "buried")
        if released:
            self._command("release", released, lines, "released")

    def _care(self):
        """Probe, touch and give back what is due (TTR); recompute when next something is."""
        due = self._next_due
        now = time.monotonic()
        if due is None or due > now:
            return
        margin = self._settings.ttr_margin
        with self._lock:
            running = [h for h in self._slots if h is not None and h.job.reserved]
            waiting = list(self._ready)
        probe = [h for h in running + waiting if h.ttr is None and h.due(margin) <= now]
        if probe:
            self._ask(probe)
            now = time.monotonic()
        touch = [h for h in running if h.ttr is not None and h.job.reserved and h.due(margin) <= now]
        expired = [h for h in waiting if h.ttr is not None and h.job.reserved and h.due(margin) <= now]
        if expired:     # only those still waiting: a job a handler started meanwhile gets touched next time
            self._give_back([h for h in expired if self._take(h)])
        if touch:
            sent = time.monotonic()
            lines = {id(h): b"touch %d\r\n" % h.job.jid for h in touch}
            for held in self._command("touch", touch, lines, "touched"):
                held.touched(sent)
        with self._lock:
            helds = [h for h in self._slots if h is not None and h.job.reserved] + list(self._ready)
        self._next_due = min((h.due(margin) for h in helds), default=None)

    def _shutdown(self, timeout=None):
        """After stop(): prefetched jobs back at once, running handlers get ``shutdown_timeout``."""
        waiting = []
        while True:
            try:
                waiting.append(self._ready.popleft())
            except IndexError:
                break
        with self._lock:
            self._work.notify_all()
        if waiting:
            self._give_back(waiting)
        deadline = time.monotonic() + (self._settings.shutdown_timeout if timeout is None else timeout)
        while True:
            self._settle()
            with self._lock:
                running = [h for h in self._slots if h is not None]
            if not running:
                break
            now = time.monotonic()
            if now >= deadline:
                log().warning("%d handler(s) still running after shutdown_timeout: their jobs are released",
                              len(running))
                self._give_back(running)
                for held in running:
                    held.job.reserved = False   # whatever its handler does later, the worker has let it go
                break
            self._care()
            due = self._next_due
            pause = deadline - now if due is None else min(deadline - now, max(0.0, due - now))
            with self._lock:
                if not self._done and any(s is not None for s in self._slots):
                    self._sleeping = True
                    self._wake.wait(min(pause, policy.IDLE_WAIT))
                    self._sleeping = False
        self._settle()
