"""Cooperative concurrency: gevent and eventlet monkey-patching keep working with both cores.

Each case runs in a subprocess that patches first, then imports beanstalkc_fast: greenlets
blocked in reserve() on their own connections must let another greenlet put the jobs they
then receive (a core that blocked the OS thread would deadlock until the guard expires).
"""
import os
import subprocess
import sys
import textwrap

import pytest

import beanstalkc_fast
from beanstalkc_fast.testing import LatencyProxy

PATCH = {
    "gevent": "from gevent import monkey; monkey.patch_all()",
    "eventlet": "import eventlet; eventlet.monkey_patch()",
}

SPAWN = {
    "gevent": textwrap.dedent("""
        import gevent
        def spawn(fn, *a): return gevent.spawn(fn, *a)
        def join(gs): gevent.joinall(gs, timeout=20, raise_error=True)
        sleep = gevent.sleep
    """),
    "eventlet": textwrap.dedent("""
        import eventlet
        def spawn(fn, *a): return eventlet.spawn(fn, *a)
        def join(gs):
            with eventlet.Timeout(20):
                for g in gs: g.wait()
        sleep = eventlet.sleep
    """),
}

SCRIPT = textwrap.dedent("""
    import importlib, sys, time
    import beanstalkc_fast
    core, host, port, tube = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    beanstalkc_fast.Connection._core = importlib.import_module(core)
    import threading, socket
    assert socket.socket.__module__ != "socket", "monkey-patching did not happen"

    events = []
    got = {}

    def consumer(i):
        c = beanstalkc_fast.Connection(host, port, socket_timeout=5)
        c.watch("%s-%d" % (tube, i)); c.ignore("default")
        events.append(("blocked", i))
        job = c.reserve()                        # blocks this greenlet only
        events.append(("got", i))
        got[i] = job.body
        job.delete()
        c.close()

    def producer():
        sleep(0.3)
        c = beanstalkc_fast.Connection(host, port)
        for i in range(N):
            c.use("%s-%d" % (tube, i))
            events.append(("put", i))
            c.put("job %d" % i)
        # a batch and a reserve_many with a wait, on one more greenlet's connection
        c.use(tube + "-batch")
        ids = c.put_many(["b%d" % k for k in range(500)])
        assert len(ids) == 500
        c.close()

    def batch_consumer():
        c = beanstalkc_fast.Connection(host, port, socket_timeout=5)
        c.watch(tube + "-batch"); c.ignore("default")
        jobs = []
        while len(jobs) < 500:
            more = c.reserve_many(500 - len(jobs), timeout=5)
            assert more, "reserve_many timed out"
            jobs += more
        c.delete_many(jobs)
        got["batch"] = sorted(j.body for j in jobs) == sorted("b%d" % k for k in range(500))
        c.close()

    N = 5
    start = time.monotonic()
    gs = [spawn(consumer, i) for i in range(N)] + [spawn(batch_consumer), spawn(producer)]
    join(gs)
    assert got.pop("batch") is True
    assert got == {i: "job %d" % i for i in range(N)}, got
    # Every consumer was blocked before the producer put anything: reserve yielded to the hub.
    first_put = events.index(("put", 0))
    assert all(events.index(("blocked", i)) < first_put for i in range(N)), events
    assert all(events.index(("got", i)) > first_put for i in range(N)), events
    print("ok", round(time.monotonic() - start, 2))
""")


def run_green(lib, body, tmp_path, *argv):
    """Run ``body`` in a fresh interpreter patched by ``lib``, with SPAWN's helpers; return the process."""
    pytest.importorskip(lib, reason="%s is not installed" % lib)
    script = tmp_path / ("green_%s.py" % lib)
    script.write_text(PATCH[lib] + "\n" + SPAWN[lib] + body)
    root = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))  # in-tree or installed
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(script)] + [str(a) for a in argv],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.parametrize("lib", ["gevent", "eventlet"])
def test_reserve_in_greenlets(impl, beanstalkd, tube, lib, tmp_path):
    proc = run_green(lib, SCRIPT, tmp_path, impl.__name__, beanstalkd.host, beanstalkd.port, tube)
    assert proc.stdout.startswith("ok"), proc.stdout + proc.stderr[-2000:]


def test_compiled_core_uses_the_patched_socket(impl, beanstalkd, tmp_path):
    """The core must do its I/O through the socket object it is given (gevent's, here)."""
    pytest.importorskip("gevent")
    script = tmp_path / "green_io.py"
    script.write_text(PATCH["gevent"] + "\n" + textwrap.dedent("""
        import importlib, sys
        import gevent, gevent.socket
        import beanstalkc_fast
        beanstalkc_fast.Connection._core = importlib.import_module(sys.argv[1])
        c = beanstalkc_fast.Connection(sys.argv[2], int(sys.argv[3]))
        assert isinstance(c._proto.sock, gevent.socket.socket), type(c._proto.sock)
        ticks = []
        def ticker():
            while True:
                ticks.append(1)
                gevent.sleep(0.05)
        t = gevent.spawn(ticker)
        assert c.reserve(timeout=1) is None      # the hub keeps running while we wait
        t.kill()
        assert len(ticks) >= 10, ticks
        print("ok")
    """))
    root = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))  # in-tree or installed
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script), impl.__name__, beanstalkd.host, str(beanstalkd.port)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "ok"


SHARED = textwrap.dedent("""
    import importlib, sys
    import beanstalkc_fast
    core, host, port, tube = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    beanstalkc_fast.Connection._core = importlib.import_module(core)
    c = beanstalkc_fast.Connection(host, port, socket_timeout=20)
    c.use(tube)
    depths = []
    enqueue = c._enqueue
    def probe(proto, queue):
        depths.append(len(queue))
        return enqueue(proto, queue)
    c._enqueue = probe
    ids = {}
    def work(i):
        ids[i] = [c.put("%d-%d" % (i, k)) for k in range(5)]
        job = c.peek(ids[i][0])
        assert job.body == "%d-0" % i, job.body
    join([spawn(work, i) for i in range(20)])
    flat = [jid for v in ids.values() for jid in v]
    assert len(set(flat)) == 100, flat
    for i, v in ids.items():
        assert [c.peek(jid).body for jid in v] == ["%d-%d" % (i, k) for k in range(5)]
    assert max(depths) >= 10, depths      # the greenlets' puts were in flight together
    print("ok")
""")


@pytest.mark.parametrize("lib", ["gevent", "eventlet"])
def test_greenlets_sharing_a_connection_pipeline(impl, beanstalkd, tube, lib, tmp_path):
    """Greenlets calling one Connection pipeline like threads: 100 puts of 20 greenlets
    through a 20 ms round trip, in flight together, each caller getting its own id."""
    with LatencyProxy(beanstalkd.host, beanstalkd.port, 0.02) as proxy:
        proc = run_green(lib, SHARED, tmp_path, impl.__name__, proxy.host, proxy.port, tube)
    assert proc.stdout.strip() == "ok", proc.stdout + proc.stderr[-2000:]
