"""Client instructions per asyncio put, with callgrind: the three aio rows of compare.py.

    python benchmarks/aio_instr.py [--n 2000] [--loops asyncio,uvloop] [--modes concurrent,gather,one]
                                   [--checkout DIR]

Starts a beanstalkd, then for each (loop, mode) runs the client under
``valgrind --tool=callgrind`` twice, with N and 10 N puts, and prints
(instructions(10 N) - instructions(N)) / 9 N: the instructions of one put, start-up excluded.
``concurrent``: 1,000 coroutines each awaiting put() in a loop; ``gather``: gather() of one
task per put, 1,000 at a time; ``one``: one coroutine awaiting puts one by one.
``--checkout``: a folder holding a built ``beanstalkc_fast`` to measure (default: this one).
Instruction counts are deterministic enough on a noisy shared machine, where timings are not.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CHILD = r'''
import asyncio, sys
mode, n, port, loopname = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
from beanstalkc_fast import aio
if loopname == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.new_event_loop()
body = b"x" * 100

async def main():
    c = await aio.connect("127.0.0.1", port, encoding=None)
    await c.use("instr")
    put = c.put
    if mode == "concurrent":
        async def putter(k):
            for _ in range(k):
                await put(body)
        await asyncio.gather(*[putter(n // 1000) for _ in range(1000)])
    elif mode == "gather":
        for _ in range(n // 1000):
            await asyncio.gather(*[put(body) for _ in range(1000)])
    else:
        for _ in range(n):
            await put(body)
    await c.close()

loop.run_until_complete(main())
loop.close()
'''


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def callgrind_total(checkout, child, *args, env=None, keep=None, preexec_fn=None):
    """The instructions of ``python -c child *args`` under callgrind, with ``checkout`` first
    on sys.path (also the runner of sync_instr.py, batch_instr.py and pool_instr.py). ``env``:
    the child's environment (default: this one, with PYTHONPATH set); ``keep``: a path to copy
    the callgrind file to; ``preexec_fn``: as subprocess's (to pin the child to a CPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        if env is None:
            env = dict(os.environ, PYTHONPATH=checkout)
        run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, sys.executable, "-c",
                              child] + [str(a) for a in args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=checkout,   # '' first on sys.path: the checkout
                             preexec_fn=preexec_fn)
        if run.returncode:
            raise RuntimeError("%s: %s" % (" ".join(map(str, args)), run.stderr[-3000:]))
        if keep:
            shutil.copy(out, keep)
        with open(out) as f:
            for line in f:
                m = re.match(r"(?:summary|totals): (\d+)", line)
                if m:
                    return int(m.group(1))
    raise RuntimeError("no totals in the callgrind output")


def instructions(checkout, mode, n, port, loop):
    return callgrind_total(checkout, CHILD, mode, n, port, loop)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--loops", default="asyncio,uvloop")
    ap.add_argument("--modes", default="concurrent,gather,one")
    ap.add_argument("--checkout", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port)])
    try:
        time.sleep(0.3)
        for loop in args.loops.split(","):
            for mode in args.modes.split(","):
                small = instructions(args.checkout, mode, args.n, port, loop)
                big = instructions(args.checkout, mode, 10 * args.n, port, loop)
                print("%-8s %-11s %8.0f instructions/put" % (loop, mode, (big - small) / (9 * args.n)), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
