"""The policy of a pool of beanstalkd servers, without I/O.

Everything a pool decides is here, so that every pool driver (the blocking ``Pool``, an
asyncio one) shares it: the server list and names, ``JobRef``, put routing (round-robin from
a random start, rendezvous hashing of keys), failure counting, ejection and retry backoff, the
bookkeeping of a ``put_many`` spread over servers (``PutPlan``: windows, retries, per-item
outcomes in input order), and the merging of stats. A driver only connects, writes, reads and
reports back what happened.
"""
import hashlib
import random
import time
from itertools import groupby, repeat
from operator import attrgetter

from . import _commands
from ._defaults import address as _address, log
from .exceptions import (BatchError, CommandFailed, CorruptJob, InvalidArgument, InvalidType, ProtocolError,
                         PutAmbiguous, SocketError, UnexpectedResponse)

__all__ = ["JobRef", "parse_servers", "Server", "Policy", "PutPlan", "Lane", "merge_stats", "split"]

MAX_RETRY_AFTER = 60.0
MIN_PROBE_WAIT = 0.25   # a waiting reserve probes servers that are down at most this often (retry_after=0)
# What a driver's _wait returns when it could wait on no server: the reserve flow then waits
# for the next probe (a sentinel, not None: None is a reserve that timed out).
UNREACHABLE = object()
# Put replies that say "not here, try another server"; JOB_TOO_BIG would fail anywhere.
REFUSALS = frozenset([b"DRAINING", b"OUT_OF_MEMORY", b"INTERNAL_ERROR"])
# stats fields that describe a server rather than count something: listed, not summed
IDENTITY = frozenset(["pid", "version", "hostname", "id", "os", "platform", "uptime", "max-job-size",
                      "binlog-oldest-index", "binlog-current-index", "binlog-max-size", "draining",
                      "rusage-utime", "rusage-stime", "name", "pause", "pause-time-left"])

_SERVER = attrgetter("server")
_CONN = attrgetter("conn")

# A connection that failed this way is lost: never reused, and a put on it may have gone in.
BROKEN = (OSError, SocketError, ProtocolError)


class Drained(ProtocolError):
    """A put of a put_many window was answered DRAINING: that connection's stream is dropped
    (a draining beanstalkd may leave refusals of pipelined puts unanswered); every put queued
    behind it on that connection was refused too (a server never leaves drain mode)."""


class JobRef(tuple):
    """A job of a pool: ``server`` (its server's name) and ``jid``; ``str(ref)`` is
    ``'server/jid'`` and ``JobRef.parse(s)`` reads it back."""

    __slots__ = ()

    def __new__(cls, server: str, jid: int) -> "JobRef":
        if not isinstance(server, str) or not server:
            raise InvalidType("JobRef server must be a non-empty str, not %r" % (server,))
        if jid.__class__ is not int or jid < 0:
            raise InvalidArgument("JobRef jid must be an int >= 0, not %r" % (jid,))
        return tuple.__new__(cls, (server, jid))

    @property
    def server(self) -> str:
        """The name of the job's server."""
        return self[0]

    @property
    def jid(self) -> int:
        """The job's id on that server."""
        return self[1]

    def __str__(self) -> str:
        return "%s/%d" % self

    def __repr__(self) -> str:
        return "JobRef(%r, %d)" % self

    def __getnewargs__(self):
        return tuple(self)

    @classmethod
    def parse(cls, text: str) -> "JobRef":
        """The JobRef written as ``'server/jid'`` (a server name may itself contain ``/``)."""
        if isinstance(text, JobRef):
            return text
        if not isinstance(text, str):
            raise InvalidType("JobRef.parse takes a str 'server/jid', not %s" % type(text).__name__)
        server, slash, jid = text.rpartition("/")
        if not slash or not server or not jid.isdigit() or not jid.isascii():
            raise InvalidArgument("not a job reference 'server/jid': %r" % (text,))
        return cls(server, int(jid))


def parse_servers(servers):
    """[(name, address)] from the servers as given: 'host:port', (host, port), a unix socket
    path, or ``{name: address}`` (items of the list, or the whole argument)."""
    if isinstance(servers, (str, bytes)):
        raise InvalidType("servers is a list of addresses, not a single %s" % type(servers).__name__)
    entries = []
    for item in (servers.items() if isinstance(servers, dict) else servers):
        if isinstance(item, dict):
            named = list(item.items())
        elif isinstance(servers, dict):
            named = [item]
        else:
            named = [(None, item)]
        for name, addr in named:
            address, default = _address(addr)
            if name is None:
                name = default
            if not isinstance(name, str) or not name or name != name.strip():
                raise InvalidArgument("a server name is a non-empty str without surrounding spaces: %r" % (name,))
            entries.append((name, address))
    names = [name for name, _ in entries]
    if not entries:
        raise InvalidArgument("a pool needs at least one server")
    if len(set(names)) != len(names):
        raise InvalidArgument("server names must be unique: %r" % (names,))
    return entries


class Server:
    """One server's health as the pool sees it. A driver hangs its connections on ``conns``."""

    __slots__ = ("name", "address", "index", "failures", "down", "retry_at", "backoff", "last_error", "conns",
                 "refusing_until")

    def __init__(self, name, address, index):
        self.name = name
        self.address = address
        self.index = index
        self.failures = 0           # consecutive failures
        self.down = False           # ejected: skipped until retry_at
        self.retry_at = 0.0
        self.backoff = 0.0          # the wait before the next probe, while down
        self.last_error = None
        self.conns = None           # the driver's
        self.refusing_until = 0.0   # it refused puts (DRAINING...): puts go elsewhere until then


class Policy:
    """Routing and health of the servers. ``clock`` is ``time.monotonic`` (tests may replace it)."""

    def __init__(self, servers, failure_limit=2, retry_after=5.0, at_least_once=False, clock=time.monotonic):
        if failure_limit.__class__ is not int or failure_limit < 1:
            raise InvalidArgument("failure_limit must be an int >= 1, not %r" % (failure_limit,))
        if not isinstance(retry_after, (int, float)) or not retry_after >= 0:
            raise InvalidArgument("retry_after must be a number of seconds >= 0, not %r" % (retry_after,))
        self.servers = [Server(name, address, i) for i, (name, address) in enumerate(parse_servers(servers))]
        self.by_name = {s.name: s for s in self.servers}
        self.failure_limit = failure_limit
        self.retry_after = float(retry_after)
        self.at_least_once = at_least_once
        self.clock = clock
        n = len(self.servers)
        self._put_next = random.randrange(n)        # round-robin from a random start
        self._reserve_next = random.randrange(n)

    # -- health --

    def usable(self, server, now=None):
        """Whether to use (or probe) ``server`` now."""
        return not server.down or (now if now is not None else self.clock()) >= server.retry_at

    def failed(self, server, err):
        """Count a failure of ``server`` (connect refused, socket error); eject it at the limit."""
        server.failures += 1
        server.last_error = err
        now = self.clock()
        if server.down:     # a failed probe: wait longer, up to MAX_RETRY_AFTER
            server.backoff = max(self.retry_after, min(MAX_RETRY_AFTER, server.backoff * 2))
            server.retry_at = now + server.backoff
            log().info("beanstalkd server %s still down (%s); next try in %.1f s", server.name, err, server.backoff)
        elif server.failures >= self.failure_limit:
            server.down = True
            server.backoff = self.retry_after
            server.retry_at = now + server.backoff
            log().warning("beanstalkd server %s ejected after %d failures (%s); next try in %.1f s",
                          server.name, server.failures, err, server.backoff)

    def succeeded(self, server):
        """A command on ``server`` went through: it is up."""
        if server.failures:
            if server.down:
                log().warning("beanstalkd server %s is back", server.name)
            server.failures = 0
            server.down = False
            server.backoff = 0.0
            server.last_error = None

    def status(self):
        now = self.clock()
        return {s.name: {"up": not s.down, "address": s.address, "failures": s.failures,
                         "retry_in": max(0.0, s.retry_at - now) if s.down else None,
                         "error": None if s.last_error is None else str(s.last_error)} for s in self.servers}

    def next_probe(self):
        """Seconds until the next ejected server is due for a probe (None: none is down)."""
        due = [s.retry_at for s in self.servers if s.down]
        return max(0.0, min(due) - self.clock()) if due else None

    def probe_wait(self, left=None):
        """How long a waiting reserve may sleep: until the next probe of a server that is down
        is due (at least ``MIN_PROBE_WAIT``, so that ``retry_after=0`` does not spin), at most
        ``left`` (the seconds to its deadline; None: no deadline). None: nothing to wake up for."""
        wait = self.next_probe()
        if wait is not None:
            wait = max(wait, MIN_PROBE_WAIT)
        if left is not None:
            wait = left if wait is None else min(wait, left)
        return wait

    # -- routing --

    def refused(self, server):
        """``server`` refused a put (DRAINING, OUT_OF_MEMORY...): puts skip it for a while
        (``retry_after``, at least a second), unless no other server is left."""
        server.refusing_until = self.clock() + max(self.retry_after, 1.0)

    def _rotation(self, start, puts=False):
        now = self.clock()
        servers = self.servers
        n = len(servers)
        order = [s for s in (servers[(start + i) % n] for i in range(n)) if self.usable(s, now)]
        if puts:    # servers that refuse puts go last
            order = [s for s in order if s.refusing_until <= now] + [s for s in order if s.refusing_until > now]
        return order

    def put_order(self, key=None):
        """The servers to try for one put, in order: round-robin (from the one after the last
        put's), or for a ``key`` the rendezvous order of the server names, so one key's jobs
        stay together."""
        if key is None:
            return self._rotation(self._put_next, True)
        if isinstance(key, str):
            key = key.encode("utf-8")
        elif not isinstance(key, bytes):
            if key.__class__ is not int:
                raise InvalidType("key must be str, bytes or int, not %s" % type(key).__name__)
            key = b"%d" % key
        now = self.clock()
        return [s for s in sorted(self.servers, key=lambda s: _score(s.name, key), reverse=True)
                if self.usable(s, now)]

    def put_done(self, server):
        """A put went to ``server``: the next one starts after it."""
        self._put_next = (server.index + 1) % len(self.servers)

    def put_failed(self, server, err, attempt):
        """The verdict on a put to ``server`` that raised ``err``; ``attempt`` is a dict kept
        over one put's servers. Returns when the put goes on to the next server: the server
        refused it (DRAINING, OUT_OF_MEMORY, INTERNAL_ERROR), or the connection was lost with
        ``at_least_once``. Raises otherwise: ``PutAmbiguous`` for a lost connection (the put
        may have gone in: a malformed reply too, as its stream is dropped), the error itself
        with ``.server`` for a refusal any server would give (``JOB_TOO_BIG``...)."""
        if isinstance(err, Drained):    # queued behind a put_many window that met DRAINING: refused
            self.refused(server)
            attempt["refusal"] = CommandFailed("put", "DRAINING", [])
            return
        if isinstance(err, BROKEN):
            if not self.at_least_once:
                raise PutAmbiguous(server.name, err) from err
            attempt["error"] = err
            return
        if isinstance(err, (CommandFailed, UnexpectedResponse)) and err.args[1].encode("ascii", "replace") in REFUSALS:
            self.refused(server)
            attempt["refusal"] = err
            return
        err.server = server.name    # which server said so
        raise err

    @staticmethod
    def put_gave_up(attempt):
        """No server took the put: raise the last refusal, or SocketError."""
        if attempt.get("refusal") is not None:
            raise attempt["refusal"]
        raise SocketError("no beanstalkd server took the put (last error: %s)" % (attempt.get("error") or "all down"))

    def batch_order(self):
        """The servers for the windows of one put_many, starting where puts left off."""
        start = self._put_next
        self._put_next = (start + 1) % len(self.servers)
        now = self.clock()
        order = self._rotation(start, True)
        return [s for s in order if s.refusing_until <= now] or order

    def reserve_order(self, first=None):
        """The servers in the order to ask for a job, from the one after the last that gave
        one: with jobs everywhere, consecutive reserves are served by every server in turn.
        ``first`` (a server that just said it has one) goes first."""
        order = self._rotation(self._reserve_next)
        if first is not None and first in order:
            order.remove(first)
            order.insert(0, first)
        return order

    def in_turn(self, servers):
        """``servers`` sorted in the reserve rotation's order (several answered at once)."""
        start, n = self._reserve_next, len(self.servers)
        return sorted(servers, key=lambda s: (s.index - start) % n)

    def reserved_from(self, server):
        """``server`` gave a job (or started a batch): the next reserve starts after it."""
        self._reserve_next = (server.index + 1) % len(self.servers)

    def everyone(self):
        """The usable servers in list order (fan-out commands)."""
        return self._rotation(0)

    def server_of(self, job):
        """(Server, jid) for a JobRef, its string, or a Job of this pool; a bare int is refused."""
        if isinstance(job, str):
            job = JobRef.parse(job)
        if isinstance(job, JobRef):
            name, jid = job
        else:
            name, jid = getattr(job, "server", None), getattr(job, "jid", None)
            if name is None or jid.__class__ is not int:
                raise InvalidType("a pool takes a JobRef, its string 'server/jid' or a Job of the pool, not %r "
                                  "(a bare job id is ambiguous across servers)" % (job,))
        server = self.by_name.get(name)
        if server is None:
            raise InvalidArgument("no server named %r in this pool" % (name,))
        return server, jid


def tube_name(core, name):
    """A tube name, checked, as the str a pool keeps."""
    core.check_tube(name)
    return name if isinstance(name, str) else name.decode("ascii")


def job_targets(policy, jobs, job_class):
    """``(server, jid)`` of every item of a by-id batch, each checked before a byte is sent;
    None when every item is a Job of this pool (the batch after a reserve_many: no lookups)."""
    if jobs and set(map(type, jobs)) == {job_class}:
        try:
            names = set(map(_SERVER, jobs))
        except AttributeError:      # a Job of a connection of its own
            names = None
        if names is not None and names <= policy.by_name.keys():
            return None
    targets = []
    for i, job in enumerate(jobs):
        try:
            targets.append(policy.server_of(job))
        except (InvalidArgument, InvalidType) as err:
            raise type(err)("item %d: %s" % (i, err)) from None
    return targets


def job_groups(policy, jobs, targets, job_class):
    """How a by-id batch is spread: ``(groups, outcomes)``. ``groups`` lists
    ``[server, conn, positions, items]`` per connection: a Job goes back to the connection that
    reserved it (as itself), any other reference to its server's consumer connection (as its
    id). ``outcomes`` has a SocketError for each job whose connection is closed (nothing of it
    is sent) and None elsewhere."""
    outcomes = [None] * len(jobs)
    groups = {}
    if targets is None:     # Jobs of this pool: each run of one connection's jobs at once
        start = 0
        for conn, run in groupby(map(_CONN, jobs)):
            end = start + len(list(run))
            group = groups.get(id(conn))
            if group is None:
                groups[id(conn)] = [policy.by_name[jobs[start].server], conn, range(start, end), jobs[start:end]]
            else:       # that connection's jobs are not all together: one group all the same
                group[2] = list(group[2])
                group[2].extend(range(start, end))
                group[3].extend(jobs[start:end])
            start = end
    else:
        for i, job in enumerate(jobs):
            if isinstance(job, job_class):
                server, conn, item = targets[i][0], job.conn, job
            else:
                server, item = targets[i]
                conn = server.conns.consumer
            if conn is None or not conn.connected:
                outcomes[i] = SocketError("the connection of %s to %s is closed" % (job, server.name))
                continue
            group = groups.get(id(conn))
            if group is None:
                group = groups[id(conn)] = [server, conn, [], []]
            group[2].append(i)
            group[3].append(item)
        return list(groups.values()), outcomes
    out = []
    for group in groups.values():
        server, conn, positions, _ = group
        if conn is not None and conn.connected:     # a Job made by hand may have no connection
            out.append(group)
        else:
            for p in positions:
                outcomes[p] = SocketError("the connection of %s to %s is closed" % (jobs[p], server.name))
    return out, outcomes


def jobs_outcome(cmd, jobs, outcomes, job_class):
    """The end of a by-id batch: its Jobs no longer reserved are marked so (a touch changes
    nothing); BatchError when an item failed."""
    if outcomes.count(None) == len(outcomes):   # every item went through
        if cmd != "touch":
            for job in jobs:
                if job.__class__ is job_class or isinstance(job, job_class):
                    job.reserved = False
        return
    if cmd != "touch":
        for job, outcome in zip(jobs, outcomes):
            if outcome is None and isinstance(job, job_class):
                job.reserved = False
    if any(isinstance(o, BaseException) for o in outcomes):
        raise BatchError(outcomes)


def reserved_batch(jobs, corrupt=True):
    """What a pool's reserve_many returns for the Jobs and CorruptJobs its servers gave (in
    order): the Jobs, or BatchError with them all when one is corrupt (``corrupt``: whether
    one may be; False when every reply read was a job)."""
    if corrupt and any(map(isinstance, jobs, repeat(CorruptJob))):
        raise BatchError(jobs)
    return jobs


def answered(results, skip=(SocketError, ProtocolError)):
    """The results of a command sent to every server (a result or an exception each) without
    those of the ``skip`` kinds; any other exception is raised."""
    out = []
    for server, result in results:
        if isinstance(result, skip):
            continue
        if isinstance(result, BaseException):
            raise result
        out.append((server, result))
    return out


def fan_out(results):
    """``[(server, result)]`` of the servers that answered a command sent to every server:
    SocketError when none did."""
    out = answered(results)
    if not out:
        raise next((r for _, r in results if isinstance(r, SocketError)), None) or SocketError(
            "no beanstalkd server is available")
    return out


def merged_tube_stats(results):
    """A tube's stats over the servers that have it (NOT_FOUND when none has)."""
    found = [stats for _, stats in answered(results, (CommandFailed, SocketError))]
    if not found:
        raise CommandFailed("stats-tube", "NOT_FOUND", [])
    if not all(isinstance(s, dict) for s in found):
        return found
    return merge_stats(found)


def every_server(policy, results):
    """``{name: result}`` of a command sent to every usable server (``results``: ``[(server,
    result or exception)]``), for every server of the pool in list order: one that did not
    answer (down, or lost meanwhile) has its ``SocketError`` (with ``.server``), one skipped
    because it is ejected a ``SocketError`` saying so. Any other exception is raised."""
    got = dict(results)
    out = {}
    for server in policy.servers:
        result = got.get(server)
        if server not in got:
            result = SocketError("beanstalkd server %s is down (%s)" % (server.name, server.last_error or "ejected"))
        if isinstance(result, SocketError):
            result.server = server.name
        elif isinstance(result, BaseException):
            raise result
        out[server.name] = result
    return out


def merged_stats(by_server):
    """The stats of the servers that answered (``by_server`` as ``every_server`` gives it),
    merged; as they are when they are not dicts (parse_yaml). SocketError when none answered."""
    up = {name: s for name, s in by_server.items() if not isinstance(s, SocketError)}
    if not up:
        raise next(iter(by_server.values()))
    if not all(isinstance(s, dict) for s in up.values()):
        return up
    return merge_stats(list(up.values()))


def tube_union(results):
    """The tubes of every server that answered: their union, in order of first sight."""
    names = []
    for _, tubes in fan_out(results):
        if not isinstance(tubes, list):
            return tubes
        names.extend(t for t in tubes if t not in names)
    return names


def _score(name, key):
    return hashlib.blake2b(name.encode("utf-8") + b"\0" + key, digest_size=8).digest()


def split(n, k):
    """``n`` spread over ``k`` parts as evenly as possible (the first ones get the rest)."""
    q, r = divmod(n, k)
    return [q + (i < r) for i in range(k)]


def merge_stats(stats):
    """One dict of many servers' stats: counts summed, other fields (identity, times, names)
    listed per server in order; a field all servers agree on that is not a count is kept as is."""
    merged = {}
    for key in stats[0] if stats else ():
        values = [s.get(key) for s in stats]
        if key not in IDENTITY and all(v.__class__ is int for v in values):
            merged[key] = sum(values)
        elif key == "name" and len(set(values)) == 1:
            merged[key] = values[0]
        else:
            merged[key] = values
    return merged


# -- put_many over several servers --

class Lane:
    """A server's part in one put_many: its connection and its windows in flight, each as
    ``(unit, entries)`` with the entries read so far."""

    __slots__ = ("server", "conn", "inflight", "open")

    def __init__(self, server, conn):
        self.server = server
        self.conn = conn
        self.inflight = []
        self.open = True        # it takes more windows

    def settle(self, plan, policy, unit, entries, err=None, bad=None):
        """The replies of the window ``unit`` came (``entries``, ``bad`` of them not job ids
        when known), or its connection failed after them (``err``). Returns what to do with the
        connection: None (keep it), "drop" (a draining server: close it, not a failure) or
        "lost" (close it, count a failure)."""
        name = self.server.name
        refused = plan.replied(unit, name, entries, None if err is not None else bad)
        if err is None and not (entries and entries[-1].__class__ is tuple and entries[-1][0] == b"DRAINING"):
            if refused:
                self.open = False       # it refused: no more windows for it in this batch
                policy.refused(self.server)
            return None
        if err is None or isinstance(err, Drained):
            # A draining server refuses every later put, and beanstalkd 1.12 may leave some of
            # those refusals unsent: drop the stream, send the rest elsewhere.
            plan.refused_rest(unit, len(entries))
            for other, _ in self.inflight:
                plan.unsent(other)
            del self.inflight[:]
            self.open = False
            policy.refused(self.server)
            return "drop"
        plan.lost(unit, name, len(entries), err)
        self.broken(plan, err)
        return "lost"

    def broken(self, plan, err):
        """The connection failed: every window in flight may have gone in."""
        for unit, entries in self.inflight:
            plan.replied(unit, self.server.name, entries)
            plan.lost(unit, self.server.name, len(entries), err)
        del self.inflight[:]
        self.open = False


class _Unit:
    """A window of puts for one server: ``positions`` (a range for a window of the input in
    order, else a list of indices: items sent again), its encoded ``chunks`` and ``n`` items."""

    __slots__ = ("positions", "chunks", "n", "items")

    def __init__(self, positions, chunks, n, items):
        self.positions = positions
        self.chunks = chunks
        self.n = n
        self.items = items      # the items themselves, to send them elsewhere (None: slice of the source)


class PutPlan:
    """The bookkeeping of one put_many spread over servers; the driver sends ``next_unit()``s
    (each to one server), reads their replies, and reports with ``replied``/``lost``/``unsent``.
    ``results()`` gives the JobRefs in input order, or raises as a single connection's batch does.
    """

    def __init__(self, core, items, priority, delay, ttr, encoding, window, nservers, at_least_once):
        if isinstance(items, (str, bytes, bytearray, memoryview)):
            raise InvalidType("put_many takes an iterable of bodies, not a single %s" % type(items).__name__)
        for value, what in ((priority, "priority"), (delay, "delay"), (ttr, "ttr")):
            core.check_uint32(value, what)
        self._core = core
        self._args = (priority, delay, ttr, encoding)
        self.at_least_once = at_least_once
        if isinstance(items, (list, tuple)):
            # a sequence is checked whole now; its windows share it out between the servers
            self._source = items
            self._tap = None
            size = -(-len(items) // max(nservers, 1))
            window = max(1, min(window, size))
            it = items
        else:
            self._source = None
            self._tap = []      # the items the windows took from the iterator, not yet in a unit
            it = self._tapped(iter(items))
        self._windows = core.put_windows(it, priority, delay, ttr, encoding, window)
        self._window = window
        self._start = 0         # index of the next item of the input
        self.again = []        # units to send again, elsewhere
        self.out = [None] * len(items) if self._source is not None else []
        self.failed = False     # an item's outcome is an exception
        self.refusal = None     # the last refusal (DRAINING...): the outcome when no server is left
        self.exhausted = False

    def _tapped(self, it):
        tap = self._tap
        for item in it:
            tap.append(item)
            yield item

    def next_unit(self):
        """The next window to send (items to send again first), or None when none is left.
        A bad item or the caller's iterator raises here, before the window's first byte."""
        if self.again:
            return self.again.pop(0)
        if self.exhausted:
            return None
        try:
            window = next(self._windows, None)
        except BaseException:
            self.exhausted = True
            raise
        if window is None:
            self.exhausted = True
            return None
        chunks, n = window
        start = self._start
        self._start = start + n
        items = None
        if self._tap is not None:
            items = self._tap[:n]
            del self._tap[:n]
            self.out.extend(repeat(None, n))
        return _Unit(range(start, start + n), chunks, n, items)

    def _items(self, unit, lo, hi):
        if unit.items is not None:
            return unit.items[lo:hi]
        return list(self._source[unit.positions.start + lo:unit.positions.start + hi])

    def _resend(self, unit, lo, hi):
        """Items lo:hi of ``unit`` go out again, to another server."""
        if lo < hi:
            self._resend_items(self._items(unit, lo, hi), list(unit.positions[lo:hi]))

    def _resend_items(self, items, positions):
        priority, delay, ttr, encoding = self._args
        for chunks, n in self._core.put_windows(items, priority, delay, ttr, encoding, self._window):
            self.again.append(_Unit(positions[:n], chunks, n, items[:n]))
            positions, items = positions[n:], items[n:]

    def unsent(self, unit):
        """``unit`` was not written at all (its server was down or failed before it)."""
        self.again.insert(0, unit)

    def replied(self, unit, name, entries, bad=None):
        """The replies read for ``unit`` from the server ``name`` (job ids, or reply tuples for
        the others: a prefix if the connection failed; ``bad``: how many are not ids, when the
        driver's Batch counted them). Returns True when the server refused an item (DRAINING,
        OUT_OF_MEMORY, INTERNAL_ERROR): those items go to another server."""
        out = self.out
        pos = unit.positions
        if len(entries) == unit.n and (bad == 0 if bad is not None else all(e.__class__ is int for e in entries)):
            refs = self._core.pairs(JobRef, name, entries)
            if pos.__class__ is range:
                out[pos.start:pos.stop] = refs
            else:
                for p, ref in zip(pos, refs):
                    out[p] = ref
            return False
        refused = False
        again = []
        for i, entry in enumerate(entries):
            if entry.__class__ is int:
                out[pos[i]] = JobRef(name, entry)
            elif entry[0] in REFUSALS:
                refused = True
                self.refusal = _commands.outcome("put", entry)
                again.append(i)
            else:
                outcome = _commands.outcome("put", entry)
                if outcome.__class__ is int:
                    out[pos[i]] = JobRef(name, outcome)
                else:
                    if isinstance(outcome, CommandFailed):
                        outcome.server = name
                    out[pos[i]] = outcome
                    self.failed = True
        if again:
            items = self._items(unit, 0, unit.n)
            self._resend_items([items[i] for i in again], [pos[i] for i in again])
        return refused

    def refused_rest(self, unit, done):
        """The server of ``unit`` refused every put after the ``done`` replies read (it is
        draining): the rest goes to another server."""
        self._resend(unit, done, unit.n)

    def lost(self, unit, name, done, err):
        """``unit`` was written to ``name`` but its connection failed after ``done`` replies:
        the other items may have been inserted. They go elsewhere with at_least_once, else each
        is a PutAmbiguous."""
        if self.at_least_once:
            self._resend(unit, done, unit.n)
            return
        for p in unit.positions[done:]:
            self.out[p] = PutAmbiguous(name, err)
        if done < unit.n:
            self.failed = True

    def abandon(self, err):
        """No server is left: every item not settled yet gets ``err`` (the items of a sequence
        never sent too; an iterator is left where it is)."""
        pending = self.again
        self.again = []
        for unit in pending:
            for p in unit.positions:
                self.out[p] = err
        if self._source is not None:
            for p in range(self._start, len(self.out)):
                self.out[p] = err
            self._start = len(self.out)
        self.exhausted = True
        self.failed = True

    def partial(self):
        """The outcomes so far (for an exception's ``.results``): those of items not settled are None."""
        return list(self.out)

    def results(self):
        if self.failed:
            raise BatchError(list(self.out))
        return self.out

    def finish(self, error):
        """What put_many gives once its rounds are over: ``error`` (of the items' iterator or
        of a bad item) raised with the outcomes so far, the JobRefs, or BatchError."""
        if error is not None:
            try:
                error.results = self.partial()
            except AttributeError:
                pass
            raise error
        if not self.exhausted or self.again:
            err = self.refusal or SocketError("no beanstalkd server is left for the rest of this put_many")
            self.abandon(err)
            if self.refusal is None:
                err.results = self.partial()
                raise err
        return self.results()
