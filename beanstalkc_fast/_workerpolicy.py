"""Every decision the two workers share, without I/O: arguments, routing, retries, the TTR schedule, counters.

``worker.py`` (threads) and ``aio/worker.py`` (tasks) only do the I/O these decisions call for,
so both behave alike: which handler a job goes to, when it is touched or given back, how many
times it may fail, how long a failed job waits, and what the counters count.
"""
import random

from ._defaults import address, log as _log
from .exceptions import CorruptJob, DeadlineSoon, InvalidArgument, InvalidType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

#: Seconds a job may be held before the worker asks the server its TTR (``stats-job``, pipelined
#: for every job held that long). beanstalkd's smallest TTR is 1 s, and a job is touched half its
#: TTR before the end at the latest, so this leaves time for the answer. Jobs handled faster than
#: this (the common case) cost no ``stats-job`` at all.
PROBE_AFTER = 0.25
#: Seconds a reserve may wait at the server while the worker holds no job: also how long a stop
#: may wait for that reserve to return (beanstalkd counts reserve timeouts in whole seconds).
IDLE_WAIT = 1
#: While it holds jobs and the tubes are empty, the worker asks for jobs this often (a waiting
#: reserve would hold up the commands of the jobs it holds on a shared connection).
POLL = 0.05
#: Reconnect backoff after a lost server: doubling from the first value, capped at the second.
RECONNECT = (0.1, 5.0)
#: The default retry backoff: 2**(attempt-1) seconds with jitter, capped at this many seconds.
BACKOFF_CAP = 600

COUNTERS = ("reserved", "processed", "failed", "released", "buried", "touched")


def counters():
    """A fresh ``worker.stats`` dict."""
    return dict.fromkeys(COUNTERS, 0)


def default_backoff(attempt):
    """The default delay (whole seconds) before a job that failed ``attempt`` times runs again:
    exponential (1, 2, 4 ... s) with jitter (between half and all of it, so jobs that failed
    together do not all come back together), capped at ``BACKOFF_CAP``."""
    ceiling = min(BACKOFF_CAP, 2 ** min(attempt - 1, 30))
    return max(1, int(round(random.uniform(ceiling / 2.0, ceiling))))


def _delay(value, attempt):
    # A backoff's answer as beanstalkd's delay: whole seconds, 0..2**32-1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        raise InvalidArgument("backoff(%d) must return seconds >= 0, got %r" % (attempt, value))
    return min(int(value), 2 ** 32 - 1)


def _count(value, what, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidType("%s must be an int, not %s" % (what, type(value).__name__))
    if value < low or (high is not None and value > high):
        raise InvalidArgument("%s must be >= %d%s, got %r" % (what, low, "" if high is None else " and <= %d" % high,
                                                           value))
    return value


def _seconds(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType("%s must be a number of seconds, not %s" % (what, type(value).__name__))
    if not 0 <= value < float("inf"):
        raise InvalidArgument("%s must be a finite number of seconds >= 0, got %r" % (what, value))
    return float(value)


class Settings:
    """A worker's arguments, checked before anything starts (the handler table included)."""

    __slots__ = ("handler", "table", "tubes", "concurrency", "prefetch", "max_retries", "backoff",
                 "shutdown_timeout", "ttr_margin")

    def __init__(self, handler, tubes, concurrency, prefetch, max_retries, backoff, shutdown_timeout, ttr_margin,
                 check_tube, is_handler=callable) -> None:
        if isinstance(handler, dict):
            if not handler:
                raise InvalidArgument("the handler table is empty")
            table = {}
            for name, fn in handler.items():
                if not isinstance(name, str):
                    raise InvalidType("a handler table maps tube names (str) to handlers, got the key %r" % (name,))
                check_tube(name)
                if not is_handler(fn):
                    raise InvalidType("the handler of tube %r is not a valid handler: %r" % (name, fn))
                table[name] = fn
            self.handler = None
            self.table: "Optional[Dict[str, Any]]" = table
        else:
            if not is_handler(handler):
                raise InvalidType("handler must be a handler function or a dict {tube: handler}, not %r" % (handler,))
            self.handler = handler
            self.table = None
        if tubes is None:
            tubes = list(self.table) if self.table else ["default"]
        elif isinstance(tubes, (str, bytes)) or not hasattr(tubes, "__iter__"):
            raise InvalidType("tubes must be a list of tube names, not %r" % (tubes,))
        tubes = list(tubes)
        if not tubes:
            raise InvalidArgument("tubes is empty: the worker would watch nothing")
        for name in tubes:
            if not isinstance(name, str):
                raise InvalidType("a tube name is a str, got %r" % (name,))
            check_tube(name)
        if self.table is not None:
            missing = [name for name in tubes if name not in self.table]
            if missing:
                raise InvalidArgument("no handler for the watched tube(s) %s" % ", ".join(missing))
        self.tubes: "List[str]" = list(dict.fromkeys(tubes))
        self.concurrency = _count(concurrency, "concurrency", 1, 10000)
        self.prefetch = self.concurrency if prefetch is None else _count(prefetch, "prefetch", 0, 100000)
        self.max_retries = _count(max_retries, "max_retries", 0)
        if backoff is not None and not callable(backoff):
            raise InvalidType("backoff must be a callable taking the attempt number, or None")
        self.backoff: "Callable[[int], Any]" = backoff or default_backoff
        self.shutdown_timeout = _seconds(shutdown_timeout, "shutdown_timeout")
        self.ttr_margin = _seconds(ttr_margin, "ttr_margin")

    @property
    def routed(self):
        """Whether a job's tube must be asked (``stats-job``) to pick its handler."""
        return self.table is not None and len(self.tubes) > 1

    @property
    def capacity(self):
        """How many jobs the worker holds at most: one per handler, plus the prefetched ones."""
        return self.concurrency + self.prefetch

    @property
    def low_water(self):
        """Refill the prefetched jobs once no more than this many are left (batches, not one by one)."""
        return self.prefetch // 2

    def handler_for(self, held):
        """The handler of a job (None: no handler for its tube)."""
        if self.table is None:
            return self.handler
        if len(self.table) == 1 and held.tube is None:
            return next(iter(self.table.values()))
        return self.table.get(held.tube)

    def verdict(self, held):
        """What to do with a job whose handler failed: ``('bury', pri, None, attempt)`` once it
        has failed ``max_retries + 1`` times, else ``('release', pri, delay, attempt)``. The
        attempt is counted from its stats: ``releases + 1`` (it was released after each earlier
        failure)."""
        attempt = (held.releases or 0) + 1
        if attempt > self.max_retries:
            return "bury", held.pri, None, attempt
        return "release", held.pri, _delay(self.backoff(attempt), attempt), attempt


def check_source_address(source):
    """``(host, port)`` or a unix path for an address given as a worker's source."""
    addr, _ = address(source)
    return addr


class Held:
    """A job the worker holds, and what it knows of it: when it was reserved (``since``, before
    the reserve was sent), and once asked, its ``ttr``, ``pri``, ``releases``, ``tube`` and the
    time its reservation ends (``deadline``, on the client's monotonic clock, never later than
    the server's)."""

    __slots__ = ("job", "since", "ttr", "deadline", "pri", "releases", "tube")

    def __init__(self, job, since):
        self.job = job
        self.since = since
        self.ttr = self.deadline = self.pri = self.releases = self.tube = None

    def learn(self, stats, sent_at):
        """Take what a ``stats-job`` (a dict) says; ``sent_at``: when it was sent."""
        ttr = stats.get("ttr")
        self.ttr = ttr if isinstance(ttr, int) and ttr > 0 else 1
        self.pri = stats.get("pri")
        self.releases = stats.get("releases")
        tube = stats.get("tube")
        self.tube = tube if tube is None else str(tube)
        left = stats.get("time-left")
        # time-left is truncated to whole seconds; since + ttr is exact for a fresh reservation
        deadline = self.since + self.ttr
        if isinstance(left, int) and sent_at + left < deadline:
            deadline = sent_at + left
        self.deadline = deadline

    def touched(self, sent_at):
        """A touch sent at ``sent_at``: the reservation now ends ``ttr`` seconds after it at the earliest."""
        self.deadline = sent_at + self.ttr

    def due(self, margin):
        """When this job next needs the server: its touch (or, waiting, its release) ``margin``
        seconds before its deadline (at most half its TTR before it: a 1 s TTR is touched every
        half second), or its probe when its TTR is not known yet."""
        if self.ttr is None:
            return self.since + PROBE_AFTER
        return self.deadline - min(margin, self.ttr / 2.0)


def reserve_wait(holding, next_due, now):
    """Seconds a reserve may wait at the server: ``IDLE_WAIT`` when the worker holds no job and
    has nothing due, else 0 (the worker then waits on its own, up to ``idle_wait()``)."""
    if holding or (next_due is not None and next_due - now < IDLE_WAIT):
        return 0
    return IDLE_WAIT


def idle_wait(next_due, now, holding=True):
    """Seconds to wait for handlers before looking again (tubes empty, or no room for more jobs)."""
    wait = POLL if holding else IDLE_WAIT
    if next_due is not None:
        wait = min(wait, max(0.0, next_due - now))
    return wait


def reconnect_delays():
    """The waits between reconnection attempts to a lost server: doubling, capped, with jitter."""
    delay, cap = RECONNECT
    while True:
        yield random.uniform(delay / 2.0, delay)
        delay = min(cap, delay * 2)


def stats_of(value):
    """A ``stats-job`` answer as a dict, whatever ``parse_yaml`` made of it."""
    return value if isinstance(value, dict) else {}


def log():
    """The ``beanstalkc_fast.worker`` logger."""
    return _log("beanstalkc_fast.worker")


def source_of(source, connection_class, pool_class, names):
    """``(conn, pool, address)``: which of the three a worker's ``source`` is."""
    if isinstance(source, connection_class):
        if getattr(source, "_retry", None) is not None:
            # The worker reconnects by itself and forgets the jobs of a lost connection; one
            # that reconnected behind its back would leave it holding jobs that are ready again.
            raise InvalidArgument("a Worker reconnects by itself: give it a connection without retry=")
        return source, None, None
    if pool_class is not None and isinstance(source, pool_class):
        return None, source, None
    if isinstance(source, (str, tuple, list)):
        return None, None, check_source_address(source)
    raise InvalidType("source must be %s or an address, not %r" % (names, source))


def reserve_outcome(results, job_class):
    """A reserve_many's BatchError results: ``(jobs, corrupt jobs)``; any other reply is logged."""
    for r in results:
        if not isinstance(r, (job_class, CorruptJob, DeadlineSoon)):
            log().error("unexpected reply to a reserve: %r", r)
    return [r for r in results if isinstance(r, job_class)], [r for r in results if isinstance(r, CorruptJob)]


def corrupt_target(err, pooled):
    """What to bury for a CorruptJob: its JobRef (a pool's) or its id; None (logged) when the
    job cannot be named: it goes back to the server at its TTR."""
    jid = getattr(err, "jid", None)
    if jid is None:
        log().error("a corrupt job without an id: %r", err)
        return None
    if not pooled:
        return jid
    server = getattr(err, "server", None)
    if server is None:
        log().error("corrupt job %s: its server is unknown; it goes back at its TTR", jid)
        return None
    from ._poolpolicy import JobRef
    return JobRef(server, jid)


def buried_corrupt(err, exc=None):
    """Log the end of a corrupt job: buried, or ``exc`` when it could not be."""
    if exc is None:
        log().error("buried job %s: its body is corrupt (%s)", err.jid, err)
    else:
        log().error("corrupt job %s could not be buried: %r", err.jid, exc)
