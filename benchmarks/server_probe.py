"""What beanstalkd does with one client's batch traffic: its syscalls, wake-ups and CPU per job.

    python benchmarks/server_probe.py [--batch 100,500,2000] [--jobs N] [--repeat R]
                                      [--clients cython,python,c-pipe] [--rows put_many,reserve_delete_many]
                                      [--cpu CPU] [--tree NAME=DIR ...]

Starts its own beanstalkd, pins it and the client to one CPU (as compare.py does), and for
each (row, batch, client) counts the server's events with ``perf stat -p`` on software
events and syscall tracepoints (no hardware counters needed; tracepoints cost the server
next to nothing, unlike strace): its task-clock, context switches, and the number of
read / write / epoll_wait / epoll_ctl calls, per job. The client's own sched_yield,
sendto/sendmsg and recvfrom calls are counted the same way, and the wake-ups each side
makes. Each Python client runs in a fresh interpreter on a checkout (``--tree NAME=DIR`` adds
one, as benchmarks/ab.py takes them), so two versions compare in one interleaved run.
Medians reported. Linux only; needs ``perf`` and tracefs (``perf stat -e sched:sched_switch true``).
For experiments, the Python clients take ``PROBE_WINDOW`` (their put/job window) and ``PROBE_PRI``
(put_many's priority) from the environment.
"""
import argparse
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import beanstalkc_fast
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import beanstalkc_fast
from beanstalkc_fast import _pyprotocol

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_EVENTS = ["task-clock", "context-switches", "syscalls:sys_enter_read", "syscalls:sys_enter_write",
                 "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_epoll_ctl", "sched:sched_wakeup"]
CLIENT_EVENTS = ["task-clock", "context-switches", "syscalls:sys_enter_sched_yield", "syscalls:sys_enter_sendto",
                 "syscalls:sys_enter_sendmsg", "syscalls:sys_enter_recvfrom", "sched:sched_wakeup"]
SHORT = {"task-clock": "cpu_us", "context-switches": "switches"}


def short(event):
    return SHORT.get(event, event.rsplit("_enter_", 1)[-1].replace("sched:sched_", ""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def perf_stat(pid, events, out):
    return subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-p", str(pid), "-e", ",".join(events)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_read(proc, out):
    proc.send_signal(signal.SIGINT)
    proc.wait()
    return read_counts(out)


def read_counts(out):
    counts = {}
    with open(out) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or line.startswith("#"):
                continue
            try:
                value = float(parts[0])
            except ValueError:
                continue
            counts[parts[2]] = value
    if "task-clock" in counts:      # msec -> us
        counts["task-clock"] *= 1000.0
    return counts


CHILD = r'''
import os, sys, time
row, n, port, tube, batch, size, core = sys.argv[1:8]
n, batch = int(n), int(batch)
if core == "python":
    os.environ["BEANSTALKC_FAST_PUREPYTHON"] = "1"
import beanstalkc_fast
assert beanstalkc_fast.BACKEND == core, beanstalkc_fast.BACKEND
c = beanstalkc_fast.Connection("127.0.0.1", int(port), encoding=None)
c.use(tube)
c.watch(tube)
c.ignore("default")
if os.environ.get("PROBE_WINDOW"):
    c._proto.window = int(os.environ["PROBE_WINDOW"])
bodies = [b"x" * int(size)] * batch
pri = {"priority": int(os.environ["PROBE_PRI"])} if os.environ.get("PROBE_PRI") else {}
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
if row == "put_many":
    for _ in range(n // batch):
        c.put_many(bodies, **pri)
else:
    for _ in range(n // batch):
        c.delete_many(c.reserve_many(batch, 0))
print(time.perf_counter() - t0, flush=True)
'''


def run_py(tree, core, port, tube, row, n, body, batch):
    """A client in a fresh interpreter with ``tree`` first on sys.path; it waits for a line on
    stdin before its timed run."""
    env = dict(os.environ, PYTHONPATH=tree)
    env.pop("BEANSTALKC_FAST_PUREPYTHON", None)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, row, str(n), str(port), tube, str(batch),
                             str(len(body)), core], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, universal_newlines=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("client did not start")
    return proc


def fill(port, tube, n, body):
    c = beanstalkc_fast.Connection("127.0.0.1", port, encoding=None)
    c.use(tube)
    for _ in range(0, n, 1000):
        c.put_many([body] * min(1000, n))
    c.close()


def run_c(exe, port, tube, mode, n, body, batch, events, out):
    return subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e", ",".join(events), exe, "127.0.0.1", str(port), tube, mode, str(n), str(len(body)), str(batch),
                             str(_pyprotocol.WINDOW_ITEMS), str(_pyprotocol.RESERVE_WINDOW)],
                            stdout=subprocess.PIPE, universal_newlines=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="100,500,2000")
    p.add_argument("--jobs", type=int, default=200000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--clients", default="cython,python,c-pipe",
                   help="comma-separated: cython, python (optionally @NAME of a --tree), c-pipe")
    p.add_argument("--rows", default="put_many,reserve_delete_many")
    p.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    p.add_argument("--body-size", type=int, default=100)
    p.add_argument("--tree", action="append", default=[],
                   help="NAME=DIR: a checkout holding a built beanstalkc_fast; clients cython@NAME, python@NAME run it "
                        "(plain cython/python: this checkout)")
    args = p.parse_args()
    body = b"x" * args.body_size
    tmp = tempfile.mkdtemp()
    exe = os.path.join(tmp, "refclient")
    subprocess.check_call([os.environ.get("CC", "cc"), "-O2", "-o", exe, os.path.join(HERE, "refclient.c")])
    port = free_port()
    server = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port)])
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))   # stop the server on the way out
    try:
        time.sleep(0.3)
        os.sched_setaffinity(server.pid, {args.cpu})
        os.sched_setaffinity(0, {args.cpu})
        trees = {".": os.path.dirname(HERE)}
        for spec in args.tree:
            name, _, path = spec.partition("=")
            trees[name] = os.path.abspath(path)
        results = collections.defaultdict(list)
        seq = 0
        for rep in range(args.repeat):
            for row in args.rows.split(","):
                for batch in [int(b) for b in args.batch.split(",")]:
                    n = args.jobs // batch * batch
                    if row == "reserve_delete_many":
                        n = n // 4 // batch * batch or batch
                    for client in args.clients.split(","):
                        seq += 1
                        tube = "probe-%d" % seq
                        if row == "reserve_delete_many":     # fill the tube first, untimed
                            fill(port, tube, n, body)
                        s_out, c_out = os.path.join(tmp, "s.txt"), os.path.join(tmp, "c.txt")
                        if client == "c-pipe":
                            sp = perf_stat(server.pid, SERVER_EVENTS, s_out)
                            time.sleep(0.3)        # perf attaches
                            proc = run_c(exe, port, tube, row, n, body, batch, CLIENT_EVENTS, c_out)
                            wall = int(proc.communicate()[0].split()[2]) / 1e9
                            sc, cc = perf_read(sp, s_out), read_counts(c_out)
                        else:
                            core, _, tree = client.partition("@")
                            proc = run_py(trees[tree or "."], core, port, tube, row, n, body, batch)
                            sp = perf_stat(server.pid, SERVER_EVENTS, s_out)
                            cp = perf_stat(proc.pid, CLIENT_EVENTS, c_out)
                            time.sleep(0.3)        # perf attaches
                            wall = float(proc.communicate("go\n")[0])
                            sc, cc = perf_read(sp, s_out), perf_read(cp, c_out)
                        results[(row, batch, client)].append((wall / n * 1e6, sc, cc, n))
        print("server and client pinned to CPU %d; %d jobs per put row; medians of %d; per job:"
              % (args.cpu, args.jobs, args.repeat))
        head = ["row", "batch", "client", "wall us"] + ["srv " + short(e) for e in SERVER_EVENTS] + \
               ["cli " + short(e) for e in CLIENT_EVENTS]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for (row, batch, client), runs in results.items():
            cells = [row, str(batch), client, "%.2f" % statistics.median(r[0] for r in runs)]
            for which, events in ((1, SERVER_EVENTS), (2, CLIENT_EVENTS)):
                for e in events:
                    cells.append("%.3f" % statistics.median(r[which].get(e, float("nan")) / r[3] for r in runs))
            print("| " + " | ".join(cells) + " |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
