"""Client instructions per job of the blocking batch rows, with callgrind: put_many and
reserve_many+delete_many at a given number of jobs per call.

    python benchmarks/batch_instr.py [--batch 100,500,2000] [--rows put_many,reserve_delete_many]
                                     [--n JOBS] [--core cython|python] [--cpu N] [--checkout DIR] [--keep DIR]

Starts a beanstalkd, then for each (row, batch) runs the client under ``valgrind --tool=callgrind``
twice, with N and 11 N jobs, and prints (instructions(11 N) - instructions(N)) / 10 N: the
instructions of one job, start-up excluded. The rows are those of compare.py (``encoding=None``,
100-byte bodies; reserve+delete reads each job's ``body``, as its clients do); the jobs a
reserve row takes are put beforehand by a process outside valgrind. The server and the client
share one CPU (``--cpu``, default 0), as in compare.py's one-CPU placement: the client then finds
a window's replies all there after its yield, as it does outside valgrind (on separate CPUs the
slowed-down client would read them in many small receives). ``--checkout``: a folder
holding a built ``beanstalkc_fast`` to measure (default: this one). ``--keep``: keep the
callgrind files there (``.1n`` and ``.11n``: subtract per function what ``callgrind_annotate``
gives for each; build the core unstripped to see its functions). Instruction counts are deterministic enough on a noisy
shared machine, where timings are not.
"""
import argparse
import os
import subprocess
import sys
import time

from aio_instr import callgrind_total, free_port     # this folder is first on sys.path

CHILD = r'''
import sys
import beanstalkc_fast


def main(row, n, port, batch, tube):     # a function: module-level loop variables would be dict stores
    c = beanstalkc_fast.Connection("127.0.0.1", port, encoding=None)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    bodies = [b"x" * 100] * batch
    if row in ("fill", "put_many"):
        put_many = c.put_many
        for _ in range(n // batch):
            put_many(bodies)
    else:
        reserve_many, delete_many = c.reserve_many, c.delete_many
        left = n
        while left > 0:
            jobs = reserve_many(min(batch, left), 0)
            if not jobs:
                raise SystemExit("reserve_many returned no job with %d left" % left)
            for job in jobs:
                job.body
            delete_many(jobs)
            left -= len(jobs)
    c.close()


main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
'''


def env_of(checkout, core):
    env = dict(os.environ, PYTHONPATH=checkout)
    if core == "python":
        env["BEANSTALKC_FAST_PUREPYTHON"] = "1"
    return env


def pinned(cpu):
    return lambda: os.sched_setaffinity(0, {cpu})


def instructions(args, row, n, port, batch, tube, keep=None):
    env = env_of(args.checkout, args.core)
    argv = [row, str(n), str(port), str(batch), tube]
    if row == "reserve_delete_many":
        subprocess.run([sys.executable, "-c", CHILD, "fill"] + argv[1:], env=env, cwd=args.checkout, check=True)
    return callgrind_total(args.checkout, CHILD, *argv, env=env, keep=keep, preexec_fn=pinned(args.cpu))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="100,500,2000", help="jobs per call, comma-separated")
    ap.add_argument("--rows", default="put_many,reserve_delete_many")
    ap.add_argument("--n", type=int, default=0, help="N (default: 10 calls' worth, at least 4,000 jobs)")
    ap.add_argument("--core", default="cython", choices=("cython", "python"))
    ap.add_argument("--cpu", type=int, default=0, help="the CPU of the server and the client (default 0)")
    ap.add_argument("--checkout", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--keep", default=None, help="folder to copy the callgrind files to")
    args = ap.parse_args()
    args.checkout = os.path.abspath(args.checkout)
    port = free_port()
    server = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port)], preexec_fn=pinned(args.cpu))
    tubes = iter(range(1, 1 << 30))
    try:
        time.sleep(0.3)
        for row in args.rows.split(","):
            for batch in map(int, args.batch.split(",")):
                n = args.n or max(10 * batch, 4000)
                n -= n % batch
                keep = None
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    keep = os.path.join(args.keep, "callgrind.%s.%d" % (row, batch))
                small = instructions(args, row, n, port, batch, "instr%d" % next(tubes), keep and keep + ".1n")
                big = instructions(args, row, 11 * n, port, batch, "instr%d" % next(tubes), keep and keep + ".11n")
                print("%-20s batch %5d  %7.0f instructions/job" % (row, batch, (big - small) / (10 * n)), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
