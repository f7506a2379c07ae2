"""The Worker against the loops users write by hand, in one run.

    python benchmarks/worker.py [--jobs N] [--repeat 3] [--core cython] [--markdown PATH]

Rows (jobs handled per second, median of ``--repeat``, interleaved):

1. client and server pinned to one CPU, a no-op handler: ``Worker(prefetch=500)``, the Worker
   with its default prefetch, a raw ``reserve_many(500)`` + ``delete_many`` loop, and the
   hand-written ``reserve(); job.delete()`` loop;
2. the same through ``LatencyProxy(rtt=0.001)`` (the server 1 ms away): the Worker with
   ``prefetch=500`` and the hand-written loop;
3. a handler that sleeps 1 ms, at 1 ms RTT: ``concurrency=16`` against one handler thread;
4. ``aio.Worker`` against the sync Worker on uvloop (no-op, ``prefetch=500``, one CPU).

It starts its own beanstalkd and pins itself and the server to one CPU as compare.py does.
Not a test: nothing is asserted.
"""
import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time

import compare     # the harness next to this file (this directory is first on sys.path)
from beanstalkc_fast import _backend, _pyprotocol, aio
from beanstalkc_fast.bench import connection_class
from beanstalkc_fast.testing import BeanstalkdServer, LatencyProxy
from beanstalkc_fast.worker import Worker

BODY = b"x" * 100
_tubes = itertools.count()


def fill(connection, host, port, n):
    tube = "w%d-%d" % (os.getpid(), next(_tubes))
    with connection(host, port, encoding=None) as c:
        c.use(tube)
        c.put_many([BODY] * n)
    return tube


def open_conn(connection, host, port, tube):
    c = connection(host, port, encoding=None)
    c.watch(tube)
    c.ignore("default")
    return c


def worker_rate(connection, host, port, n, prefetch=None, concurrency=1, sleep=0.0):
    tube = fill(connection, host, port, n)
    c = open_conn(connection, host, port, tube)
    left = itertools.count(n - 1, -1)

    def handler(job):
        if sleep:
            time.sleep(sleep)
        if next(left) == 0:
            worker.stop()

    worker = Worker(c, handler, tubes=[tube], concurrency=concurrency, prefetch=prefetch)
    t0 = time.perf_counter()
    stats = worker.run()
    took = time.perf_counter() - t0
    c.close()
    assert stats["processed"] == n, stats
    return n / took


def raw_rate(connection, host, port, n):
    tube = fill(connection, host, port, n)
    c = open_conn(connection, host, port, tube)
    done = 0
    t0 = time.perf_counter()
    while done < n:
        jobs = c.reserve_many(500, timeout=1)
        c.delete_many(jobs)
        done += len(jobs)
    took = time.perf_counter() - t0
    c.close()
    return n / took


def hand_rate(connection, host, port, n):
    tube = fill(connection, host, port, n)
    c = open_conn(connection, host, port, tube)
    t0 = time.perf_counter()
    for _ in range(n):
        job = c.reserve()
        job.delete()
    took = time.perf_counter() - t0
    c.close()
    return n / took


def aio_rate(connection, host, port, n, new_loop):
    tube = fill(connection, host, port, n)

    async def main():
        async with aio.connect(host, port, encoding=None) as c:
            left = itertools.count(n - 1, -1)

            async def handler(job):
                if next(left) == 0:
                    worker.stop()
            worker = aio.Worker(c, handler, tubes=[tube], prefetch=500)
            t0 = time.perf_counter()
            await worker.run()
            return n / (time.perf_counter() - t0)

    loop = new_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=50000, help="jobs per measurement on loopback")
    p.add_argument("--rtt-jobs", type=int, default=20000, help="jobs per Worker measurement at 1 ms RTT")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--core", default="cython", choices=("cython", "python"))
    p.add_argument("--markdown", help="also write the table here")
    args = p.parse_args(argv)
    log = lambda msg: sys.stderr.write(msg + "\n")  # noqa: E731
    core = _backend._load_compiled() if args.core == "cython" else _pyprotocol
    if core is None:
        sys.exit("the compiled core is not built")
    connection = connection_class(core)
    aio.Connection._core = core
    try:
        import uvloop
        new_loop = uvloop.new_event_loop
        loop_name = "uvloop"
    except ImportError:
        new_loop = asyncio.new_event_loop
        loop_name = "asyncio (uvloop is not installed)"
    n, rn = args.jobs, args.rtt_jobs
    results: dict = {}
    restore: list = []
    with BeanstalkdServer() as server:
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        pinning = compare._pin(None, server.process.pid, log, restore)
        h, pt = server.host, server.port
        proxy = LatencyProxy(server.host, server.port, 0.001)
        opts = argparse.Namespace(proxy_apart=False, no_pin=False)
        pinning += ", " + compare._place_proxy(proxy, allowed, opts, log)
        ph, pp = proxy.host, proxy.port
        runs = [
            ("local", "worker_prefetch500", lambda: worker_rate(connection, h, pt, n, prefetch=500)),
            ("local", "worker_default", lambda: worker_rate(connection, h, pt, n)),
            ("local", "raw_reserve_many", lambda: raw_rate(connection, h, pt, n)),
            ("local", "hand_loop", lambda: hand_rate(connection, h, pt, n // 5)),
            ("rtt1", "worker_prefetch500", lambda: worker_rate(connection, ph, pp, rn, prefetch=500)),
            ("rtt1", "worker_default", lambda: worker_rate(connection, ph, pp, rn // 20)),
            ("rtt1", "hand_loop", lambda: hand_rate(connection, ph, pp, 300)),
            ("rtt1_sleep1ms", "concurrency16", lambda: worker_rate(connection, ph, pp, 3000, concurrency=16,
                                                                   sleep=0.001)),
            ("rtt1_sleep1ms", "concurrency1", lambda: worker_rate(connection, ph, pp, 300, sleep=0.001)),
            ("aio", "sync_worker", lambda: worker_rate(connection, h, pt, n, prefetch=500)),
            ("aio", "aio_worker", lambda: aio_rate(connection, h, pt, n, new_loop)),
        ]
        try:
            for rep in range(args.repeat):
                for group, name, fn in runs:
                    results.setdefault((group, name), []).append(fn())
                log("repetition %d done" % (rep + 1))
        finally:
            proxy.close()
    med = {key: statistics.median(v) for key, v in results.items()}

    def row(group, name, base=None, label=None):
        rate = med[(group, name)]
        ratios = []
        for b in base or ():
            ratios.append("%.2fx %s" % (rate / med[(group, b)], b.replace("_", " ")))
        return "| %s | %s | {:,.0f} | %s |".format(rate) % (group, label or name.replace("_", " "), "; ".join(ratios))

    lines = ["Worker vs hand-written loops, jobs/s (median of %d), core %s, %s; aio rows on %s."
             % (args.repeat, args.core, pinning, loop_name), "",
             "| setting | loop | jobs/s | ratios |", "|---|---|---:|---|",
             row("local", "worker_prefetch500", ["raw_reserve_many", "hand_loop"], "Worker(prefetch=500), no-op"),
             row("local", "worker_default", ["raw_reserve_many", "hand_loop"], "Worker() default prefetch, no-op"),
             row("local", "raw_reserve_many", ["hand_loop"], "reserve_many(500) + delete_many"),
             row("local", "hand_loop", [], "reserve(); job.delete()"),
             row("rtt1", "worker_prefetch500", ["hand_loop"], "Worker(prefetch=500), no-op"),
             row("rtt1", "worker_default", ["hand_loop"], "Worker() default prefetch, no-op"),
             row("rtt1", "hand_loop", [], "reserve(); job.delete()"),
             row("rtt1_sleep1ms", "concurrency16", ["concurrency1"], "Worker(concurrency=16), 1 ms handler"),
             row("rtt1_sleep1ms", "concurrency1", [], "Worker(concurrency=1), 1 ms handler"),
             row("aio", "aio_worker", ["sync_worker"], "aio.Worker(prefetch=500), no-op"),
             row("aio", "sync_worker", [], "Worker(prefetch=500), no-op")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
