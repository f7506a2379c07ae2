"""Threads putting through one shared Connection, against one connection per thread.

    python benchmarks/threads.py [--rtt MS] [--threads 1,4,16,64] [--repeat 5] [--puts N]
                                 [--cores cython,python] [--markdown PATH]

Modes, each with N threads putting 100-byte bodies:

- ``shared``: the threads call one Connection, which pipelines their calls;
- ``locked``: the same, each call inside one ``threading.Lock``: one round trip at a time,
  which is what a shared Connection did before it pipelined (its own lock was held from the
  write to the reply);
- ``each``: every thread has a Connection of its own.

It starts its own beanstalkd and pins itself and the server to one CPU as compare.py does;
``--rtt MS`` reaches the server through a LatencyProxy (its thread on the pinned CPU too).
Modes run interleaved, ``--repeat`` times; the table gives medians. Not a test: nothing is asserted.
"""
import argparse
import os
import statistics
import sys
import threading
import time

import compare     # the harness next to this file (this directory is first on sys.path)
from beanstalkc_fast import _backend, _pyprotocol
from beanstalkc_fast.bench import connection_class
from beanstalkc_fast.testing import BeanstalkdServer, LatencyProxy

BODY = b"x" * 100


def run(mode, core, host, port, threads, puts, tube):
    """Return puts per second of ``threads`` threads making ``puts`` puts in all."""
    connection = connection_class(core)
    per = puts // threads
    if mode == "each":
        conns = [connection(host, port, encoding=None) for _ in range(threads)]
    else:
        conns = [connection(host, port, encoding=None)] * threads
    for c in set(conns):
        c.use(tube)
    lock = threading.Lock()
    start_line = threading.Barrier(threads + 1)

    def work(c):
        put = c.put
        start_line.wait()
        if mode == "locked":
            for _ in range(per):
                with lock:
                    put(BODY)
        else:
            for _ in range(per):
                put(BODY)

    workers = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in workers:
        t.start()
    start_line.wait()
    t0 = time.perf_counter()
    for t in workers:
        t.join()
    took = time.perf_counter() - t0
    for c in set(conns):
        c.close()
    return per * threads / took


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rtt", type=float, default=0.0, help="milliseconds of round trip through a LatencyProxy")
    p.add_argument("--threads", default="1,4,16,64")
    p.add_argument("--modes", default="shared,locked,each")
    p.add_argument("--cores", default="cython,python")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--puts", type=int, default=None,
                   help="puts per measurement (default 20000; with --rtt, 2000 per ms... see the code)")
    p.add_argument("--markdown", help="also write the table here")
    args = p.parse_args(argv)
    log = lambda msg: sys.stderr.write(msg + "\n")  # noqa: E731
    cores = {"python": _pyprotocol}
    compiled = _backend._load_compiled()
    if compiled is not None:
        cores["cython"] = compiled
    cores = [(name, cores[name]) for name in args.cores.split(",") if name in cores]
    counts = [int(n) for n in args.threads.split(",")]
    modes = args.modes.split(",")
    # one round trip at a time takes rtt each: keep the locked runs to about 2 s
    puts = args.puts or (20000 if not args.rtt else max(64 * 4, int(2000 / args.rtt)))
    restore = []
    results = {}
    with BeanstalkdServer() as server:
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        pinning = compare._pin(None, server.process.pid, log, restore)
        proxy = None
        host, port = server.host, server.port
        if args.rtt:
            proxy = LatencyProxy(server.host, server.port, args.rtt / 1000.0)
            opts = argparse.Namespace(proxy_apart=False, no_pin=False)
            pinning += ", " + compare._place_proxy(proxy, allowed, opts, log)
            host, port = proxy.host, proxy.port
        try:
            for rep in range(args.repeat):
                for n in counts:
                    for core_name, core in cores:
                        for mode in modes:
                            if n == 1 and mode != "shared":
                                continue    # one thread: the three modes are the same thing
                            rate = run(mode, core, host, port, n, puts, "threads-%d" % rep)
                            results.setdefault((n, core_name, mode), []).append(rate)
                log("repetition %d done" % (rep + 1))
        finally:
            if proxy is not None:
                proxy.close()
    lines = ["Puts/s of N threads: one shared Connection (pipelining), the same serialized by a lock "
             "(as before), a Connection each. %s; %s; %d puts per run, median of %d."
             % ("rtt %g ms through LatencyProxy" % args.rtt if args.rtt else "direct (loopback)", pinning,
                puts, args.repeat),
             "",
             "| threads | core | shared | locked (before) | each | shared / locked | shared / each |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for n in counts:
        for core_name, _ in cores:
            med = {m: statistics.median(results[(n, core_name, m)]) for m in modes if (n, core_name, m) in results}
            shared = med.get("shared")
            locked = med.get("locked", shared if n == 1 else None)
            each = med.get("each", shared if n == 1 else None)

            def fmt(x):
                return "-" if x is None else "{:,.0f}".format(x)

            def ratio(a, b):
                return "-" if a is None or b is None else "%.2fx" % (a / b)
            lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (n, core_name, fmt(shared), fmt(locked), fmt(each),
                                                               ratio(shared, locked), ratio(shared, each)))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
