"""A/B: the same rows run against two checkouts of the package, interleaved, in one run.

    python benchmarks/ab.py BEFORE_DIR AFTER_DIR [--repeat 7] [--cpu 0] [--scale 1.0]

Each directory is a checkout (or any folder holding a built ``beanstalkc_fast``); every
measurement runs in a fresh interpreter with that folder first on ``sys.path``, against one
beanstalkd this script starts, client and server pinned to one CPU (``--cpu -1``: unpinned).
Rows use only the public API, so any two versions compare: single ``put``, ``reserve`` +
``delete``, ``put_many`` and ``reserve_many`` + ``delete_many`` in calls of 500, and asyncio: 1,000 long-lived coroutines each
awaiting ``put()`` (uvloop when installed). Prints each row's median jobs/s per side and the
ratio AFTER/BEFORE (medians of the pairwise ratios: robust to a machine whose speed drifts).
``--retry``: the AFTER side runs with ``retry=beanstalkc_fast.Retry()`` (which never fires here).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROWS = {
    "put": 20000,
    "reserve_delete": 10000,
    "put_many_500": 200000,
    "reserve_delete_many_500": 200000,
    "aio_1000_puts": 100000,
}

CHILD = r'''
import asyncio, json, os, sys, time
row, n, port, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
import beanstalkc_fast
tube = "ab-%d" % os.getpid()
opts = {"retry": beanstalkc_fast.Retry()} if os.environ.get("AB_RETRY") and hasattr(beanstalkc_fast, "Retry") else {}
c = beanstalkc_fast.Connection("127.0.0.1", port, encoding=None, **opts)
c.use(tube); c.watch(tube); c.ignore("default")
body = b"x" * 100
if row in ("reserve_delete", "reserve_delete_many_500"):
    for i in range(0, n, 500):
        c.put_many([body] * min(500, n - i))
t0 = time.perf_counter()
if row == "put":
    put = c.put
    for _ in range(n):
        put(body)
elif row == "reserve_delete":
    reserve = c.reserve
    for _ in range(n):
        reserve(0).delete()
elif row == "put_many_500":
    items = [body] * 500
    for _ in range(n // 500):
        c.put_many(items)
elif row == "reserve_delete_many_500":
    for _ in range(n // 500):
        c.delete_many(c.reserve_many(500))
elif row == "aio_1000_puts":
    from beanstalkc_fast import aio
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    async def main():
        a = await aio.connect("127.0.0.1", port, encoding=None, **opts)
        await a.use(tube)
        each = n // 1000
        async def worker():
            for _ in range(each):
                await a.put(body)
        start = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(1000)])
        took = time.perf_counter() - start
        await a.close()
        return took
    took = loop.run_until_complete(main())
    loop.close()
    t0 = time.perf_counter() - took
took = time.perf_counter() - t0
# clean up: the tube's jobs go
while True:
    jobs = c.reserve_many(1000) if hasattr(c, "reserve_many") else []
    if not jobs:
        break
    c.delete_many(jobs)
print(json.dumps({"seconds": took, "backend": beanstalkc_fast.BACKEND}))
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tree, row, n, port, cpu, retry=False):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    if retry:
        env["AB_RETRY"] = "1"
    out = subprocess.run([sys.executable, "-c", CHILD, row, str(n), str(port), str(cpu)], env=env,
                         cwd=os.path.abspath(tree), capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise SystemExit("%s %s failed:\n%s" % (tree, row, out.stderr))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--cpu", type=int, default=0, help="the CPU for client and server (-1: unpinned)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every row's job count")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--retry", action="store_true",
                   help="the AFTER side's connections take a beanstalkc_fast.Retry() (one that never fires here)")
    args = p.parse_args(argv)
    binary = shutil.which("beanstalkd")
    if binary is None:
        raise SystemExit("beanstalkd is not installed")
    port = free_port()
    server = subprocess.Popen([binary, "-l", "127.0.0.1", "-p", str(port)])
    try:
        if args.cpu >= 0:
            os.sched_setaffinity(server.pid, {args.cpu})
        time.sleep(0.2)
        print("| row | jobs | before jobs/s | after jobs/s | after/before |")
        print("|---|---|---|---|---|")
        for row in args.rows.split(","):
            n = max(1000, int(ROWS[row] * args.scale) // 1000 * 1000)
            rates = {"before": [], "after": []}
            ratios = []
            backends = set()
            for _ in range(args.repeat):
                pair = {}
                for side in ("before", "after"):
                    got = run(getattr(args, side), row, n, port, args.cpu, args.retry and side == "after")
                    backends.add(got["backend"])
                    pair[side] = n / got["seconds"]
                    rates[side].append(pair[side])
                ratios.append(pair["after"] / pair["before"])
            print("| %s | %d | %.0f | %.0f | %.3f |" % (row, n, statistics.median(rates["before"]),
                                                       statistics.median(rates["after"]), statistics.median(ratios)))
            sys.stdout.flush()
        print("\nbackends: %s; %d interleaved runs per side; medians" % (", ".join(sorted(backends)), args.repeat))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
