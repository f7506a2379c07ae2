"""What the latency proxy itself costs: pipelined clients direct and through LatencyProxy(rtt=0).

    python benchmarks/proxy_overhead.py [--repeat 7] [--batch-ops 20000] [--apart | --no-pin]

Direct and proxied runs alternate (direct, proxied, direct, ...) against one beanstalkd, so the
ratio survives a noisy shared machine better than two separate compare.py runs would. Pinning is
compare.py's: client and server on one CPU, the proxy's thread with them (``--apart``: on the other
CPUs). Prints, per row and client, the median jobs/s both ways, their ratio, and the proxy's CPU
per job. Not a test: nothing is asserted.
"""
import argparse
import os
import statistics
import sys
import tempfile

import compare     # the harness next to this file (this directory is first on sys.path)
from beanstalkc_fast import _backend, _pyprotocol
from beanstalkc_fast.testing import BeanstalkdServer, LatencyProxy


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--batch-ops", type=int, default=20000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rtt", type=float, default=0.0, help="milliseconds (default 0: the proxy's own cost)")
    p.add_argument("--apart", action="store_true", help="the proxy's thread on the CPUs other than the pinned one")
    p.add_argument("--no-pin", action="store_true")
    args = p.parse_args(argv)
    opts = argparse.Namespace(body_size=100, batch=args.batch, timeout=300, no_pin=args.no_pin,
                              proxy_apart=args.apart, rows=None)
    log = lambda msg: sys.stderr.write(msg + "\n")  # noqa: E731
    clients = []
    compiled = _backend._load_compiled()
    if compiled is not None:
        clients.append(("beanstalkc_fast[cython]", compare._Partial(compare.FastClient, compiled)))
    clients.append(("beanstalkc_fast[python]", compare._Partial(compare.FastClient, _pyprotocol)))
    clients.append(("raw pipelined (w=256)", compare._windowed(compare.PipelinedClient, 256)))
    tmp = tempfile.mkdtemp(prefix="proxy-overhead-")
    exe, note = compare.build_refclient(tmp)
    log(note)
    if exe:
        clients.append((compare.C_PIPE, compare._Partial(compare.CPipelinedClient, exe)))
    restore = []
    with BeanstalkdServer() as server:
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        pinning = "unpinned" if args.no_pin else compare._pin(None, server.process.pid, log, restore)
        with LatencyProxy(server.host, server.port, args.rtt / 1000.0) as proxy:
            pinning += ", " + compare._place_proxy(proxy, allowed, opts, log)
            direct = compare.Bench(opts, server.host, server.port, server.process.pid)
            proxied = compare.Bench(opts, server.host, server.port, server.process.pid, proxy=proxy)
            print("Pipelined clients direct and through LatencyProxy(rtt=%g ms): %s, batch %d, %d jobs, "
                  "median of %d, alternating" % (args.rtt, pinning, args.batch, args.batch_ops, args.repeat))
            print()
            print("| row | client | direct jobs/s | proxied jobs/s | proxied / direct | proxy CPU us/job |")
            print("|---|---|---:|---:|---:|---:|")
            for row in ("put_many", "reserve_delete_many"):
                for name, make in clients:
                    d, q, cpu = [], [], []
                    for _ in range(args.repeat):
                        d.append(direct.measure(make, row, args.batch_ops)[0])
                        r = proxied.measure(make, row, args.batch_ops)
                        q.append(r[0])
                        cpu.append(r[4])
                    dj, qj = args.batch_ops / statistics.median(d), args.batch_ops / statistics.median(q)
                    print("| %s | %s | %s | %s | %.2fx | %.2f |" % (
                        row, name, "{:,.0f}".format(dj), "{:,.0f}".format(qj), qj / dj,
                        statistics.median(cpu) / args.batch_ops * 1e6))
    for pid, cpus in restore:
        os.sched_setaffinity(pid, cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
