"""Measure this client against a beanstalkd: ``beanstalkc-fast bench`` or ``python -m beanstalkc_fast.bench``.

    python -m beanstalkc_fast.bench [--quick] [--ops N] [--repeat R] [--rtt MS]
                                    [--host H --port P] [--cores cython,python] [--json PATH]

Rows: single put, single reserve+delete, ``stats()``, ``put_many`` and ``reserve_many`` +
``delete_many``, each on both protocol cores (the compiled one when it is built, and the
pure-Python one). It starts its own beanstalkd on a free loopback port unless ``--host`` is
given. ``--rtt MS`` puts the server "on another machine": the measured connections reach it
through ``beanstalkc_fast.testing.LatencyProxy``. Every (row, core) runs ``--repeat`` times,
interleaved, each on a fresh tube; the table gives medians and this process's CPU per job.
Bodies are bytes and nothing is decoded: the client's fastest documented mode.

The comparison with other clients, raw sockets and C reference clients, with CPU pinning and
charts, is ``benchmarks/compare.py`` in the source checkout (not in the package); it reuses
``ROWS``, ``connection_class`` and ``FastClient`` from here.
"""
import argparse
import gc
import itertools
import json
import os
import statistics
import sys
import time

import beanstalkc_fast
from beanstalkc_fast import _backend, _pyprotocol

#: (key, label, batch row?) of every row, in display order.
ROWS = [
    ("put", "put", False),
    ("reserve_delete", "reserve+delete", False),
    ("stats", "stats()", False),
    ("put_many", "put_many", True),
    ("reserve_delete_many", "reserve_many+delete_many", True),
]
CORES = ("cython", "python")
DRAIN = 1000    # jobs per untimed clean-up batch: beanstalkd's delete slows down with many reserved


def connection_class(core, base=None):
    """A subclass of ``base`` (default ``beanstalkc_fast.Connection``; ``aio.Connection`` works too)
    that runs on the protocol core module ``core``.

    The library has no public switch for a connection's core: this is the one place that picks it.
    """
    base = base or beanstalkc_fast.Connection
    return type(base.__name__, (base,), {"_core": core})


def cores(selected=CORES):
    """[(name, core module)] of the ``selected`` cores that are available, compiled first."""
    out = []
    compiled = _backend._load_compiled()    # None when not built (or stale)
    if "cython" in selected and compiled is not None:
        out.append(("cython", compiled))
    if "python" in selected:
        out.append(("python", _pyprotocol))
    return out


class FastClient:
    """A ``Connection`` on ``core`` that uses and watches only ``tube``; ``client.<row>(n)`` runs a
    row of ``n`` jobs (batch rows in calls of ``batch`` jobs). Every loop binds its methods first."""

    rows = tuple(key for key, _, _ in ROWS)

    def __init__(self, core, host, port, tube, body, batch):
        self.c = connection_class(core)(host, port, encoding=None)
        try:
            self.c.use(tube)
            self.c.watch(tube)
            self.c.ignore("default")
        except BaseException:
            self.c.close()
            raise
        self.body = body
        self.batch = batch
        self.bodies = [body] * batch

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
            delete(job.jid)

    def stats(self, n):
        stats = self.c.stats
        for _ in range(n):
            stats()

    def put_many(self, n):
        put_many, bodies = self.c.put_many, self.bodies
        full, rest = divmod(n, self.batch)
        for _ in range(full):
            put_many(bodies)
        if rest:
            put_many(bodies[:rest])

    def reserve_delete_many(self, n):
        reserve_many, delete_many, batch = self.c.reserve_many, self.c.delete_many, self.batch
        while n > 0:
            jobs = reserve_many(min(batch, n), 0)
            if not jobs:
                raise RuntimeError("reserve_many returned no job with %d left" % n)
            for job in jobs:
                job.body
            delete_many(jobs)
            n -= len(jobs)


_tubes = itertools.count(1)


def measure(core, row, n, args, server, client_addr, proxy=None):
    """Run ``row`` of ``n`` jobs on ``core`` on a fresh tube; return (seconds, client CPU seconds).

    ``server`` is (host, port) for the untimed control connection, which fills the tube for the
    reserve rows, checks the work was done and leaves the tube empty; the measured client
    connects to ``client_addr`` (the proxy's, with --rtt). The proxy's thread runs in this
    process: its CPU is not the client's, so it is subtracted."""
    tube = "bench-%d-%d" % (os.getpid(), next(_tubes))
    body = b"x" * args.body_size
    proxy_cpu = proxy.cpu_time if proxy is not None else (lambda: 0.0)
    ctl = beanstalkc_fast.Connection(server[0], server[1], encoding=None)
    try:
        ctl.use(tube)
        ctl.watch(tube)
        ctl.ignore("default")
        if row.startswith("reserve"):
            for start in range(0, n, 4096):
                ctl.put_many([body] * min(4096, n - start))
        client = FastClient(core, client_addr[0], client_addr[1], tube, body, args.batch)
        try:
            gc.collect()
            proxy0, cpu0, t0 = proxy_cpu(), time.process_time(), time.perf_counter()
            getattr(client, row)(n)
            t1, cpu1, proxy1 = time.perf_counter(), time.process_time(), proxy_cpu()
        finally:
            client.close()
        _check(ctl, tube, row, n)
    finally:
        ctl.close()
    return t1 - t0, cpu1 - cpu0 - (proxy1 - proxy0)


def _check(ctl, tube, row, n):
    """Make sure the client did the work (untimed), and leave the tube empty."""
    if row == "stats":
        return
    st = ctl.stats_tube(tube)
    if row.startswith("put"):
        if st["total-jobs"] != n or st["current-jobs-ready"] != n:
            raise RuntimeError("%s: expected %d ready jobs, server says %r" % (row, n, st))
        while True:
            jobs = ctl.reserve_many(DRAIN, 0)
            if not jobs:
                break
            ctl.delete_many(jobs)
    elif st["current-jobs-ready"] or st["current-jobs-reserved"] or st["cmd-delete"] != n:
        raise RuntimeError("%s: expected %d deleted jobs, server says %r" % (row, n, st))


def run(args, server, client_addr, proxy=None, log=lambda msg: None):
    """Measure every selected (row, core); return the list of result dicts, one per pair."""
    available = cores(args.cores)
    rows = [r for r in ROWS if r[0] in args.rows]
    results = []
    for i, (row, label, batch) in enumerate(rows, 1):
        n = max(1, args.batch_ops if batch else (args.ops // 4 if row == "stats" else args.ops))
        samples = {name: [] for name, _ in available}
        for rep in range(1, args.repeat + 1):
            for name, core in available:     # interleaved: a slow moment of the machine hits both
                log("[%d/%d %s, n=%d] rep %d/%d  %s" % (i, len(rows), label, n, rep, args.repeat, name))
                samples[name].append(measure(core, row, n, args, server, client_addr, proxy))
        row_results = []
        for name, runs in samples.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            row_results.append({"row": row, "label": label, "batch": batch, "client": "beanstalkc_fast[%s]" % name,
                                "backend": name, "n": n, "ops_per_s": n / wall, "us_per_op": wall / n * 1e6,
                                "cpu_us_per_op": cpu / n * 1e6, "samples_s": [r[0] for r in runs],
                                "cpu_samples_s": [r[1] for r in runs]})
        python = next((r for r in row_results if r["backend"] == "python"), None)
        for r in row_results:
            r["vs_python"] = r["ops_per_s"] / python["ops_per_s"] if python else None
        results.extend(row_results)
    return results


def table(results, summary):
    """The results as a markdown table."""
    lines = ["Benchmark: %s" % summary, "",
             "| row | client | ops/s | us/op | client CPU us/op | vs python |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append("| %s | %s | %s | %.2f | %.2f | %s |" % (
            r["label"], r["client"], "{:,.0f}".format(r["ops_per_s"]), r["us_per_op"], r["cpu_us_per_op"],
            "-" if r["vs_python"] is None else "%.2fx" % r["vs_python"]))
    lines += ["", "reserve+delete rows count one op per job. Other clients, raw sockets and C reference clients:",
              "benchmarks/compare.py in the source checkout."]
    return "\n".join(lines) + "\n"


def _parser():
    p = argparse.ArgumentParser(prog="python -m beanstalkc_fast.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", help="use this beanstalkd instead of starting one (with --port)")
    p.add_argument("--port", type=int, default=11300, help="port of the --host server (default 11300)")
    p.add_argument("--quick", action="store_true", help="fewer jobs and repetitions (a smoke test)")
    p.add_argument("--rtt", type=float, metavar="MS",
                   help="reach the server through a LatencyProxy adding MS milliseconds of round trip "
                        "(default job counts shrink to match)")
    p.add_argument("--ops", type=int, help="jobs per single-command row (stats: a quarter); default 20000, quick 2000")
    p.add_argument("--batch-ops", type=int, help="jobs per batch row (default 10 x --ops)")
    p.add_argument("--batch", type=int, default=256, help="jobs per put_many / reserve_many call (default 256)")
    p.add_argument("--repeat", type=int, help="repetitions per measurement, medians reported; default 5, quick 3")
    p.add_argument("--body-size", type=int, default=100, help="job body size in bytes (default 100)")
    p.add_argument("--cores", default=",".join(CORES), help="comma-separated subset of: cython, python")
    p.add_argument("--rows", help="comma-separated subset of: " + ", ".join(r[0] for r in ROWS))
    p.add_argument("--json", help="also write the results as JSON to this path")
    return p


def main(argv=None, prog=None):
    """Run the benchmark; ``argv`` defaults to ``sys.argv[1:]``. Returns the exit status."""
    parser = _parser()
    if prog:
        parser.prog = prog
    args = parser.parse_args(argv)
    log = lambda msg: (sys.stderr.write(msg + "\n"), sys.stderr.flush())  # noqa: E731
    if args.rtt is not None and not args.rtt >= 0:
        parser.error("--rtt must be >= 0 milliseconds")
    args.cores = set(args.cores.split(","))
    args.rows = set(args.rows.split(",")) if args.rows else {r[0] for r in ROWS}
    unknown = (args.cores - set(CORES)) | (args.rows - {r[0] for r in ROWS})
    if unknown:
        parser.error("unknown core or row: %s" % ", ".join(sorted(unknown)))
    ops_given, batch_ops_given = args.ops, args.batch_ops
    args.ops = args.ops or (2000 if args.quick else 20000)
    args.batch_ops = args.batch_ops or args.ops * 10
    if args.rtt:
        # A single command waits a round trip: keep each row to about `budget` seconds of waiting,
        # and each batch row (~3 round trips per batch) too.
        budget, rtt_s = (0.25 if args.quick else 1.0), args.rtt / 1000.0
        if not ops_given:
            args.ops = min(args.ops, max(20, int(budget / rtt_s)))
        if not batch_ops_given:
            args.batch_ops = min(args.batch_ops, max(2 * args.batch, int(budget / rtt_s / 3 * args.batch)))
    args.repeat = args.repeat or (3 if args.quick else 5)
    if min(args.ops, args.batch_ops, args.batch, args.repeat, args.body_size) < 1:
        parser.error("--ops, --batch-ops, --batch, --repeat and --body-size must be positive")
    if "cython" in args.cores and _backend._load_compiled() is None:
        log("note: the compiled core is not built (or stale): no cython rows")

    from beanstalkc_fast.testing import BeanstalkdServer, LatencyProxy
    server = proxy = None
    t0 = time.monotonic()
    try:
        if args.host:
            addr = (args.host, args.port)
        else:
            server = BeanstalkdServer().start()
            addr = (server.host, server.port)
            log("started beanstalkd on %s:%d" % addr)
        client_addr = addr
        if args.rtt is not None:
            proxy = LatencyProxy(addr[0], addr[1], args.rtt / 1000.0)
            client_addr = (proxy.host, proxy.port)
            log("clients reach the server through %r" % proxy)
        results = run(args, addr, client_addr, proxy, log)
    finally:
        if proxy is not None:
            proxy.close()
        if server is not None:
            server.stop()
    meta = {"summary": "Python %s, median of %d, body %d B, batch %d%s" % (
                sys.version.split()[0], args.repeat, args.body_size, args.batch,
                "" if args.rtt is None else ", rtt %g ms (LatencyProxy)" % args.rtt),
            "python": sys.version, "version": beanstalkc_fast.__version__, "backend_default": beanstalkc_fast.BACKEND,
            "rtt_ms": args.rtt, "repeat": args.repeat, "ops": args.ops, "batch_ops": args.batch_ops,
            "batch": args.batch, "body_size": args.body_size, "elapsed_s": time.monotonic() - t0}
    sys.stdout.write(table(results, meta["summary"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
            f.write("\n")
    log("done in %.1f s" % meta["elapsed_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
