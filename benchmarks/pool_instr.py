"""Client instructions per job of the pools against one connection, with callgrind.

    python benchmarks/pool_instr.py [--n 2000] [--batch 256] [--drivers sync,aio]
                                    [--rows put_many,reserve_delete_many] [--clients one,pool]
                                    [--checkout DIR]

Starts two beanstalkds, then for each (driver, row, client) runs the client under
``valgrind --tool=callgrind`` twice, with N and 11 N jobs, and prints
(instructions(11 N) - instructions(N)) / 10 N: the client's instructions per job, start-up
excluded. ``sync``: ``Connection`` (``one``) against ``Pool`` of the two servers (``pool``);
``aio``: ``aio.Connection`` against ``aio.Pool`` (stock asyncio loop). ``put_many``: calls of
``--batch`` bodies of 100 B; ``reserve_delete_many``: ``reserve_many(--batch, 0)`` then
``delete_many`` of those jobs (one job counts a reserve and a delete), on jobs this script put
beforehand (untraced; an even share on each server for the pool). Every run uses a fresh tube.
``--checkout``: a folder holding a built ``beanstalkc_fast`` to measure (default: this one).
The ratio pool/one is the pools' overhead per job; instruction counts are deterministic enough
on a noisy shared machine, where timings are not.
"""
import argparse
import os
import subprocess
import sys
import time

from aio_instr import callgrind_total, free_port     # this folder is first on sys.path

CHILD = r'''
import sys
driver, row, client, n, batch, tube = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
ports = [int(p) for p in sys.argv[7].split(",")]
addrs = ["127.0.0.1:%d" % p for p in ports]
body = b"x" * 100
bodies = [body] * batch


def setup(c):
    c.use(tube)
    c.watch(tube)
    c.ignore("default")


if driver == "sync":
    import beanstalkc_fast
    if client == "one":
        c = beanstalkc_fast.Connection("127.0.0.1", ports[0], encoding=None)
    else:
        c = beanstalkc_fast.Pool(addrs, encoding=None)
    setup(c)
    if row == "put_many":
        for _ in range(n // batch):
            c.put_many(bodies)
    else:
        left = n
        while left > 0:
            jobs = c.reserve_many(min(batch, left), 0)
            if not jobs:
                raise SystemExit("no job with %d left" % left)
            c.delete_many(jobs)
            left -= len(jobs)
    c.close()
else:
    import asyncio
    from beanstalkc_fast import aio

    async def main():
        if client == "one":
            c = await aio.connect("127.0.0.1", ports[0], encoding=None)
        else:
            c = aio.Pool(addrs, encoding=None)
            await c.connect()
        await c.use(tube)
        await c.watch(tube)
        await c.ignore("default")
        if row == "put_many":
            for _ in range(n // batch):
                await c.put_many(bodies)
        else:
            left = n
            while left > 0:
                jobs = await c.reserve_many(min(batch, left), 0)
                if not jobs:
                    raise SystemExit("no job with %d left" % left)
                await c.delete_many(jobs)
                left -= len(jobs)
        await c.close()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
'''

FILL = r'''
import sys
import beanstalkc_fast
tube, n, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
for port in ports:
    c = beanstalkc_fast.Connection("127.0.0.1", int(port), encoding=None)
    c.use(tube)
    for i in range(0, n, 1000):
        c.put_many([b"x" * 100] * min(1000, n - i))
    c.close()
'''


_runs = [0]


def instructions(checkout, driver, row, client, n, batch, ports):
    _runs[0] += 1
    tube = "instr-%d-%d" % (os.getpid(), _runs[0])
    used = ports[:1] if client == "one" else ports
    env = dict(os.environ, PYTHONPATH=checkout)
    if row != "put_many":   # the jobs to reserve, put untraced: an even share on each server used
        share = n // len(used)
        subprocess.run([sys.executable, "-c", FILL, tube, str(share), ",".join(map(str, used))], env=env,
                       check=True, cwd=checkout)
    return callgrind_total(checkout, CHILD, driver, row, client, n, batch, tube, ",".join(map(str, used)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--drivers", default="sync,aio")
    ap.add_argument("--rows", default="put_many,reserve_delete_many")
    ap.add_argument("--clients", default="one,pool")
    ap.add_argument("--checkout", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    if args.n % (2 * args.batch):
        ap.error("--n must be a multiple of 2 x --batch (whole calls, an even share per server)")
    ports = [free_port(), free_port()]
    servers = [subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(p)]) for p in ports]
    try:
        time.sleep(0.3)
        print("| driver | row | client | instructions/job | vs one |")
        print("|---|---|---|---:|---:|")
        for driver in args.drivers.split(","):
            for row in args.rows.split(","):
                one = None
                for client in args.clients.split(","):
                    small = instructions(args.checkout, driver, row, client, args.n, args.batch, ports)
                    big = instructions(args.checkout, driver, row, client, 11 * args.n, args.batch, ports)
                    per = (big - small) / (10 * args.n)
                    if client == "one":
                        one = per
                    print("| %s | %s | %s | %.0f | %s |" % (driver, row, client, per,
                                                           "%.2fx" % (per / one) if one else ""), flush=True)
    finally:
        for server in servers:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
