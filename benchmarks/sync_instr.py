"""Client instructions per single command of the blocking Connection, with callgrind: compare.py's single rows.

    python benchmarks/sync_instr.py [--n 2000] [--rows put,reserve_delete,stats,put_60k,job_delete]
                                    [--core cython|python] [--checkout DIR] [--keep DIR]

Starts a beanstalkd, then for each row runs the client under ``valgrind --tool=callgrind``
twice, with N and 11 N operations, and prints (instructions(11 N) - instructions(N)) / 10 N:
the instructions of one operation, start-up excluded. The rows call what compare.py's
(``beanstalkc_fast.bench.FastClient``) do, bytes bodies of 100 bytes, ``encoding=None``:
``put``: ``put(body)``; ``reserve_delete``: ``job = reserve(0); job.body; delete(job.jid)``
(the tube is filled beforehand, outside callgrind); ``stats``: ``stats()`` (N / 4); ``put_60k``:
``put()`` of a 60 KB body (N / 10); ``job_delete``: as reserve_delete with ``job.delete()``.
``--checkout``: a folder holding a built ``beanstalkc_fast`` to measure (default: this one).
``--keep DIR``: keep the callgrind output of each run there (``callgrind.<row>.<core>.<n>``; subtract
the N run's ``callgrind_annotate`` lines from the 11 N run's to see where one operation goes).
"""
import argparse
import os
import socket
import subprocess
import time

from aio_instr import callgrind_total, free_port     # this folder is first on sys.path

ROWS = ("put", "reserve_delete", "stats", "put_60k", "job_delete")

CHILD = r'''
import sys
row, n, port, core = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import beanstalkc_fast
from beanstalkc_fast import _backend
if core == "python":
    from beanstalkc_fast import _pyprotocol as impl
else:
    impl = _backend._load_compiled()
    assert impl is not None, "no compiled core in this checkout"
Conn = type("Connection", (beanstalkc_fast.Connection,), {"_core": impl})
c = Conn("127.0.0.1", port, encoding=None)
c.use("instr")
c.watch("instr")
c.ignore("default")
if row == "put" or row == "put_60k":
    put, body = c.put, b"x" * (61440 if row == "put_60k" else 100)
    for _ in range(n):
        put(body)
elif row == "reserve_delete":
    reserve, delete = c.reserve, c.delete
    for _ in range(n):
        job = reserve(0)
        job.body
        delete(job.jid)
elif row == "job_delete":
    reserve = c.reserve
    for _ in range(n):
        job = reserve(0)
        job.body
        job.delete()
elif row == "stats":
    stats = c.stats
    for _ in range(n):
        stats()
c.close()
'''


def fill(port, n):
    """Put ``n`` jobs into the tube (uncounted: this process, the library of this checkout's sys.path)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"use instr\r\n")
    f = s.makefile("rb")
    f.readline()
    for start in range(0, n, 1000):
        k = min(1000, n - start)
        s.sendall((b"put 0 0 60 100\r\n" + b"x" * 100 + b"\r\n") * k)
        for _ in range(k):
            if not f.readline().startswith(b"INSERTED"):
                raise RuntimeError("fill: put failed")
    s.close()


def drain(port):
    """Delete what is left in the tube (put rows leave their jobs)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"use instr\r\n")
    f = s.makefile("rb")
    f.readline()
    while True:
        s.sendall(b"peek-ready\r\n")
        line = f.readline()
        if not line.startswith(b"FOUND"):
            break
        jid, size = line.split()[1:3]
        f.read(int(size) + 2)
        s.sendall(b"delete " + jid + b"\r\n")
        f.readline()
    s.close()


def instructions(checkout, row, n, port, core, keep=None):
    if row in ("reserve_delete", "job_delete"):
        fill(port, n)
    return callgrind_total(checkout, CHILD, row, n, port, core,
                           keep=keep and os.path.join(keep, "callgrind.%s.%s.%d" % (row, core, n)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rows", default="put,reserve_delete,stats,put_60k")
    ap.add_argument("--core", default="cython", choices=("cython", "python"))
    ap.add_argument("--checkout", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--keep", default=None, help="keep the callgrind output of every run in this folder")
    args = ap.parse_args()
    rows = args.rows.split(",")
    for row in rows:
        if row not in ROWS:
            ap.error("unknown row %r (rows: %s)" % (row, ", ".join(ROWS)))
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port), "-z", str(1 << 17)])
    try:
        time.sleep(0.3)
        for row in rows:
            # stats: a quarter, as compare.py; 60 KB puts: a tenth, to keep the server's memory small
            n = args.n // {"stats": 4, "put_60k": 10}.get(row, 1)
            small = instructions(args.checkout, row, n, port, args.core, args.keep)
            drain(port)
            big = instructions(args.checkout, row, 11 * n, port, args.core, args.keep)
            drain(port)
            print("%-7s %-15s %8.0f instructions/op" % (args.core, row, (big - small) / (10 * n)), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
