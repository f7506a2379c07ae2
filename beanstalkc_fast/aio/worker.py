"""aio.Worker: the consumer loop for asyncio (``beanstalkc_fast.aio.Worker``).

The coroutine twin of ``beanstalkc_fast.Worker``, on the same decisions (``_workerpolicy``):
``concurrency`` handler tasks take prefetched jobs from a queue and only run handlers; one
reserver task does every command of the worker on the (pipelined) connection: ``reserve_many``
to keep the queue filled, ``delete_many`` for the jobs handled, ``stats-job``, release, bury and
touch for the few jobs that need them, each batch sent at once (``asyncio.gather``).
"""
import asyncio
import time
from collections import deque

from .. import _workerpolicy as policy
from .._defaults import tube_changes
from .._commands import load_yaml
from ..exceptions import BatchError, BeanstalkcException, CorruptJob, DeadlineSoon, InvalidArgument, InvalidType, \
    ProtocolError, SocketError
from .connection import Connection, Job

__all__ = ["Worker"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, List, Optional

_BROKEN = (SocketError, ProtocolError)
log = policy.log


def _is_handler(fn):
    return callable(fn)


class Worker:
    """Run ``await handler(job)`` for every job of the watched tubes, in ``concurrency`` tasks.

    ``aio.Worker(source, handler, *, tubes=None, concurrency=1, prefetch=None, max_retries=3,
    backoff=None, shutdown_timeout=30.0, ttr_margin=1.0)``: the arguments and semantics of
    ``beanstalkc_fast.Worker``, with ``source`` an ``aio.Connection``, an ``aio.Pool`` or an
    address, and ``async def`` handlers (a dict ``{tube: handler}`` routes by tube).
    ``await worker.run()`` works until ``worker.stop()`` (or SIGTERM/SIGINT when the loop runs
    in the main thread) and returns the counters, live in ``worker.stats``. On stop, handlers
    still running after ``shutdown_timeout`` are cancelled and their jobs released.
    """

    def __init__(self, source: "Any", handler: "Any", *, tubes: "Optional[Iterable[str]]" = None,
                 concurrency: int = 1, prefetch: "Optional[int]" = None, max_retries: int = 3,
                 backoff: "Optional[Callable[[int], float]]" = None, shutdown_timeout: float = 30.0,
                 ttr_margin: float = 1.0) -> None:
        self._settings = policy.Settings(handler, tubes, concurrency, prefetch, max_retries, backoff,
                                         shutdown_timeout, ttr_margin, Connection._core.check_tube, _is_handler)
        pool_class: "Any" = None
        if type(source).__name__ == "Pool":     # the pool module is imported only when one is used
            from .pool import Pool as pool_class
        self._conn, self._pool, self._address = policy.source_of(source, Connection, pool_class,
                                                                 "an aio.Connection, an aio.Pool")
        #: The counters, live (reserved, processed, failed, released, buried, touched).
        self.stats: "Dict[str, int]" = policy.counters()
        self._stopping = False
        self._running = False
        self._loop: "Any" = None
        self._reset()

    def _reset(self) -> None:
        self._ready: "Any" = deque()
        self._slots: "List[Any]" = [None] * self._settings.concurrency
        self._tasks: "List[Any]" = [None] * self._settings.concurrency
        self._done: "List[Any]" = []
        self._idle: "Any" = deque()         # futures of handler tasks waiting for a job
        self._wakeup: "Any" = None          # the future the reserver waits on, when it waits
        self._next_due: "Optional[float]" = None
        self._broken = False
        self._restore = None

    def __repr__(self) -> str:
        return "<beanstalkc_fast.aio.Worker tubes=%r concurrency=%d prefetch=%d %s>" % (
            self._settings.tubes, self._settings.concurrency, self._settings.prefetch,
            "running" if self._running else "idle")

    # -- the public face --

    def stop(self) -> None:
        """Stop: reserve nothing more, give prefetched jobs back, let running handlers finish
        (up to ``shutdown_timeout``); ``run()`` then returns. Safe from any thread."""
        self._stopping = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake_all()
        else:
            loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self):
        self._wake()
        while self._idle:
            fut = self._idle.popleft()
            if not fut.done():
                fut.set_result(None)

    def _wake(self):
        fut = self._wakeup
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def run(self) -> "Dict[str, int]":
        """Work until ``stop()`` (or SIGTERM/SIGINT, in the main thread); return the counters."""
        if self._running:
            raise RuntimeError("this Worker is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._reset()
        restore = self._trap_signals()
        try:
            await self._open()
            for i in range(self._settings.concurrency):
                self._tasks[i] = self._loop.create_task(self._handle(i))
            try:
                await self._main()
            finally:
                await self._shutdown()
        finally:
            restore()
            await self._close()
            self._running = False
            self._stopping = False
        return dict(self.stats)

    def _trap_signals(self):
        import signal
        import threading
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop, trapped = self._loop, {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous = signal.getsignal(signum)
                loop.add_signal_handler(signum, self.stop)
                trapped[signum] = previous
            except (ValueError, OSError, RuntimeError, NotImplementedError):   # Windows, an embedding interpreter
                pass

        def restore():
            for signum, previous in trapped.items():
                loop.remove_signal_handler(signum)
                if previous is not None:
                    signal.signal(signum, previous)
        return restore

    # -- handler tasks --

    async def _handle(self, i):
        settings, ready, slots = self._settings, self._ready, self._slots
        low = settings.low_water
        log_ = log()
        loop = self._loop
        while True:
            while not ready or self._stopping:
                if self._stopping:
                    return
                fut = loop.create_future()
                self._idle.append(fut)
                await fut
            held = ready.popleft()
            slots[i] = held
            if len(ready) == low:   # room for a new batch: let the reserver send it while this one works
                self._wake()
                await asyncio.sleep(0)
            err = None
            fn = settings.handler_for(held)
            try:
                if fn is None:
                    raise InvalidArgument("no handler for the tube %r" % (held.tube,))
                await fn(held.job)
            except asyncio.CancelledError:
                slots[i] = None
                raise
            except Exception as exc:
                err = exc
                log_.warning("handler failed on job %s: %r", held.job.jid, exc, exc_info=exc)
            slots[i] = None
            self._done.append((held, err))
            if not ready or err is not None:
                self._wake()

    # -- the reserver --

    async def _open(self):
        conn = self._conn
        if self._address is not None:
            host, port = (self._address, 0) if isinstance(self._address, str) else self._address
            delays = policy.reconnect_delays()
            while True:
                try:
                    conn = self._conn = Connection(host, port)
                    await conn.connect()
                    break
                except SocketError as err:
                    self._conn = None
                    log().warning("beanstalkd server lost: %s; reconnecting", err)
                    if await self._pause(next(delays)):
                        return
        tubes = self._settings.tubes
        source = self._pool if self._pool is not None else conn
        try:
            before = await source.watching() if self._pool is not None else list(conn._watching)
            for method, name in tube_changes(before, tubes):
                await getattr(source, method)(name)
            if self._address is None:
                self._restore = before
        except _BROKEN as err:
            log().warning("beanstalkd server lost: %s; reconnecting", err)
            self._broken = self._pool is None

    async def _close(self):
        if self._address is not None:
            if self._conn is not None:
                await self._conn.close()
            self._conn = None
            return
        before = self._restore
        if before is None:
            return
        source = self._pool if self._pool is not None else self._conn
        try:
            for method, name in tube_changes(self._settings.tubes, before):
                await getattr(source, method)(name)
        except BeanstalkcException:
            pass

    async def _pause(self, seconds):
        """Wait ``seconds`` unless stopped meanwhile; return whether stopped."""
        if not self._stopping:
            await self._pause_running(seconds)
        return self._stopping

    def _held_count(self):
        return len(self._ready) + len(self._done) + sum(1 for s in self._slots if s is not None)

    async def _main(self):
        settings = self._settings
        capacity, low = settings.capacity, settings.low_water
        monotonic = time.monotonic
        delays = None
        while not self._stopping:
            await self._settle()
            await self._care()
            if self._stopping or (self._conn is None and self._pool is None):
                break
            if self._broken:
                try:
                    await self._conn.reconnect()
                    self._broken = False    # the backoff goes on until a reserve works again
                except _BROKEN as err:
                    log().warning("beanstalkd server lost: %s; reconnecting", err)
                    delays = delays or policy.reconnect_delays()
                    await self._pause(next(delays))
                    continue
            held = self._held_count()
            room = capacity - held
            if room > 0 and len(self._ready) <= low:
                now = monotonic()
                wait = policy.reserve_wait(held > 0, self._next_due, now)
                try:
                    got = await self._reserve(room, wait, now)
                except _BROKEN as err:
                    log().warning("beanstalkd server lost: %s; reconnecting", err)
                    if self._pool is None:
                        self._forget(self._conn)
                        self._broken = True
                    delays = delays or policy.reconnect_delays()
                    await self._pause(next(delays))
                    continue
                delays = None
                if got or wait:
                    continue
                pause = policy.idle_wait(self._next_due, monotonic())
            else:
                due = self._next_due
                pause = policy.IDLE_WAIT if due is None else max(0.0, min(policy.IDLE_WAIT, due - monotonic()))
            if not self._done and not self._stopping and pause > 0:
                await self._pause(pause)

    async def _reserve(self, n, wait, now):
        source = self._pool if self._pool is not None else self._conn
        try:
            jobs = await source.reserve_many(n, wait)
        except DeadlineSoon:
            return 0
        except CorruptJob as err:
            await self._bury_corrupt([err])
            return 0
        except BatchError as err:
            jobs, corrupt = policy.reserve_outcome(err.results, Job)
            await self._bury_corrupt(corrupt)
        if not jobs:
            return 0
        self.stats["reserved"] += len(jobs)
        helds = [policy.Held(job, now) for job in jobs]
        if self._settings.routed:
            await self._ask(helds)
            helds = [h for h in helds if h.ttr is not None]
        due = now + policy.PROBE_AFTER
        if self._next_due is None or due < self._next_due:
            self._next_due = due
        if self._stopping:
            await self._give_back(helds)
        else:
            self._ready.extend(helds)
            idle = self._idle
            for _ in range(min(len(helds), len(idle))):
                fut = idle.popleft()
                if not fut.done():
                    fut.set_result(None)
        return len(jobs)

    async def _bury_corrupt(self, errors):
        source = self._pool if self._pool is not None else self._conn
        for err in errors:
            target = policy.corrupt_target(err, self._pool is not None)
            if target is not None:
                try:
                    await source.bury(target)
                except BeanstalkcException as exc:
                    policy.buried_corrupt(err, exc)
                    continue
                self.stats["buried"] += 1
                policy.buried_corrupt(err)

    # -- batches --

    def _forget(self, conn):
        keep = [h for h in self._ready if h.job.conn is not conn]
        self._ready.clear()
        self._ready.extend(keep)
        for held in self._slots:
            if held is not None and held.job.conn is conn:
                held.job.reserved = False
        if conn is self._conn and self._pool is None:
            self._broken = True

    async def _each(self, helds, call):
        """``call(held)`` (a coroutine) for every job, all at once; a job whose call failed is
        no longer reserved; a broken connection is forgotten. Returns the results."""
        helds = [h for h in helds if h.job.conn.connected]
        results = await asyncio.gather(*[call(h) for h in helds], return_exceptions=True)
        out = []
        for held, result in zip(helds, results):
            if isinstance(result, _BROKEN):
                log().warning("beanstalkd server lost: %s; reconnecting", result)
                self._forget(held.job.conn)
            elif isinstance(result, asyncio.CancelledError):
                raise result
            elif isinstance(result, BaseException):
                held.job.reserved = False
                log().warning("job %s: %r", held.job.jid, result)
            else:
                out.append((held, result))
        return out

    async def _ask(self, helds):
        sent = time.monotonic()

        async def ask(held):
            return await held.job.conn._command("stats-job", held.job.jid)

        for held, body in await self._each(helds, ask):
            held.learn(policy.stats_of(load_yaml(held.job.conn._core, body)), sent)

    async def _give_back(self, helds, delay=0):
        helds = [h for h in helds if h.job.reserved]
        await self._ask([h for h in helds if h.pri is None])
        helds = [h for h in helds if h.job.reserved]

        async def release(held):
            await held.job.conn.release(held.job.jid, held.pri, delay)
            held.job.reserved = False

        self.stats["released"] += len(await self._each(helds, release))

    async def _settle(self):
        if not self._done:
            return
        done, self._done = self._done, []
        ok, failed, nfailed = {}, [], 0
        for held, err in done:
            if err is not None:
                nfailed += 1
                if held.job.reserved:
                    failed.append(held)
            elif held.job.reserved:
                ok.setdefault(held.job.conn, []).append(held.job)
        self.stats["processed"] += len(done) - nfailed
        self.stats["failed"] += nfailed
        for conn, jobs in ok.items():
            if not conn.connected:
                continue
            try:
                await conn.delete_many(jobs)
            except BatchError as err:
                for job, result in zip(jobs, err.results):
                    if isinstance(result, BaseException):
                        log().warning("delete of job %s: %s", job.jid, result)
            except _BROKEN as err:
                log().warning("beanstalkd server lost: %s; reconnecting", err)
                self._forget(conn)
        if failed:
            await self._fail(failed)

    async def _fail(self, helds):
        settings = self._settings
        await self._ask([h for h in helds if h.releases is None or h.pri is None])
        plans = []
        for held in helds:
            if not held.job.reserved:
                continue
            try:
                plans.append((held,) + settings.verdict(held))
            except (InvalidArgument, InvalidType) as err:
                log().error("%s", err)
                plans.append((held, "release", held.pri, policy.default_backoff(1), 0))
        verdicts = {id(p[0]): p for p in plans}

        async def settle(held):
            _, what, pri, delay, attempt = verdicts[id(held)]
            conn = held.job.conn
            if what == "bury":
                await conn.bury(held.job.jid, pri)
                log().error("burying job %s after %d failed attempts", held.job.jid, attempt)
            else:
                await conn.release(held.job.jid, pri, delay)
            held.job.reserved = False
            return what

        for _, what in await self._each([p[0] for p in plans], settle):
            self.stats["buried" if what == "bury" else "released"] += 1

    async def _care(self):
        due = self._next_due
        now = time.monotonic()
        if due is None or due > now:
            return
        margin = self._settings.ttr_margin
        running = [h for h in self._slots if h is not None and h.job.reserved]
        probe = [h for h in running + list(self._ready) if h.ttr is None and h.due(margin) <= now]
        if probe:
            await self._ask(probe)
            now = time.monotonic()
        running = [h for h in self._slots if h is not None and h.job.reserved]
        touch = [h for h in running if h.ttr is not None and h.due(margin) <= now]
        expired = [h for h in self._ready if h.ttr is not None and h.job.reserved and h.due(margin) <= now]
        if expired:
            gone = set(map(id, expired))
            keep = [h for h in self._ready if id(h) not in gone]
            self._ready.clear()
            self._ready.extend(keep)
            await self._give_back(expired)
        if touch:
            sent = time.monotonic()

            async def touch_one(held):
                await held.job.conn.touch(held.job.jid)

            for held, _ in await self._each(touch, touch_one):
                held.touched(sent)
                self.stats["touched"] += 1
        helds = [h for h in self._slots if h is not None and h.job.reserved] + list(self._ready)
        self._next_due = min((h.due(margin) for h in helds), default=None)

    async def _shutdown(self):
        waiting = list(self._ready)
        self._ready.clear()
        self._wake_all()
        if waiting:
            await self._give_back(waiting)
        deadline = time.monotonic() + self._settings.shutdown_timeout
        while True:
            await self._settle()
            running = [i for i, h in enumerate(self._slots) if h is not None]
            if not running:
                break
            now = time.monotonic()
            if now >= deadline:
                helds = [self._slots[i] for i in running]
                log().warning("%d handler(s) still running after shutdown_timeout: cancelled, their jobs released",
                              len(helds))
                for i in running:
                    self._tasks[i].cancel()
                await asyncio.gather(*[self._tasks[i] for i in running], return_exceptions=True)
                await self._give_back(helds)
                break
            await self._care()
            due = self._next_due
            pause = deadline - now if due is None else min(deadline - now, max(0.0, due - now))
            if not self._done:
                await self._pause_running(min(pause, policy.IDLE_WAIT))
        await self._settle()
        for task in self._tasks:
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*[t for t in self._tasks if t is not None], return_exceptions=True)

    async def _pause_running(self, seconds):
        # as _pause, but also during the stop (a handler that finishes wakes it)
        self._wakeup = self._loop.create_future()
        try:
            await asyncio.wait_for(self._wakeup, seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._wakeup = None
