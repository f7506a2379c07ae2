"""Soak: many put/reserve/delete cycles (single and batched, with error paths) at flat memory.

RSS is read after a warm-up and at the end; tracemalloc then measures the Python-level
allocations (PyMem, used by both cores) over a further run. The long run (about two
minutes, a million cycles on the compiled core) is marked slow; a ~5 s version runs always.
Numbers are printed (run with -s to see them).
"""
import gc
import os
import time
import tracemalloc

import pytest

import beanstalkc_fast
from beanstalkc_fast import CommandFailed
from beanstalkc_fast.testing import BeanstalkdServer

PAGE = os.sysconf("SC_PAGE_SIZE")
# Everything but the tracer's own bookkeeping and other threads' machinery.
OURS = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "*threading.py"),
        tracemalloc.Filter(False, "*/_pytest/*"), tracemalloc.Filter(False, "*/hypothesis/*")]
BODIES = [b"soak-%d-" % i + b"b" * (i * 37 % 700) for i in range(64)]


def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def one_round(conn, batch, single):
    """One round: a batch of put_many/reserve_many/delete_many, then single cycles and errors."""
    items = [BODIES[i % 64] for i in range(batch)]
    ids = conn.put_many(items)
    jobs = conn.reserve_many(batch, timeout=1)
    assert [j.jid for j in jobs] == ids
    assert jobs[-1].body_bytes == items[-1]
    conn.delete_many(jobs)
    for i in range(single):
        jid = conn.put(BODIES[i % 64], priority=i)
        job = conn.reserve(timeout=1)
        assert job.jid == jid and job.body == BODIES[i % 64].decode()
        job.delete()
    # error and YAML paths leak more often than the happy path
    try:
        conn.delete(jid)
    except CommandFailed:
        pass
    assert conn.peek(jid) is None
    assert conn.stats()["current-connections"] >= 1
    assert conn.stats_tube(conn.using())["current-jobs-ready"] == 0
    return batch + single


def soak(conn, seconds=None, cycles=None, batch=1000, single=100):
    done = 0
    start = time.monotonic()
    while (seconds is not None and time.monotonic() - start < seconds) or (cycles is not None and done < cycles):
        done += one_round(conn, batch, single)
    return done, time.monotonic() - start


def measure(conn, warm_seconds, main_seconds, traced_cycles):
    """Return a dict of the numbers: cycles, rates, RSS and tracemalloc growth."""
    soak(conn, seconds=warm_seconds)
    rss0 = rss()
    cycles, took = soak(conn, seconds=main_seconds)
    rss1 = rss()
    tracemalloc.start()
    try:
        soak(conn, cycles=traced_cycles // 4)            # warm-up under tracing
        gc.collect()
        snap0 = tracemalloc.take_snapshot().filter_traces(OURS)
        traced_done, _ = soak(conn, cycles=traced_cycles)
        gc.collect()
        _, peak = tracemalloc.get_traced_memory()
        snap1 = tracemalloc.take_snapshot().filter_traces(OURS)
    finally:
        tracemalloc.stop()
    # A block of 64 KiB or more is the compiled reader's receive buffer, moved by a realloc
    # whenever a recv brings more than it holds: one block, not a leak (a leak grows by cycles).
    traced0 = sum(t.size for t in snap0.traces if t.size < 65536)
    traced1 = sum(t.size for t in snap1.traces if t.size < 65536)
    top = snap1.compare_to(snap0, "lineno")[:5]
    return {"cycles": cycles, "seconds": round(took, 1), "cycles_per_s": int(cycles / took),
            "rss_after_warmup_mb": round(rss0 / 2 ** 20, 2), "rss_end_mb": round(rss1 / 2 ** 20, 2),
            "rss_growth_kb": (rss1 - rss0) // 1024, "traced_cycles": traced_done,
            "traced_growth_kb": (traced1 - traced0) // 1024, "traced_peak_kb": peak // 1024,
            "top": [str(s) for s in top]}


def report(name, numbers):
    print("\n%s: %s" % (name, {k: v for k, v in numbers.items() if k != "top"}))
    for line in numbers["top"]:
        print("   ", line)


@pytest.fixture
def soak_conn(impl, monkeypatch, tube, beanstalkd_binary):
    """A connection to a private server (the soak must not load the shared one)."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    server = BeanstalkdServer(binary=beanstalkd_binary)
    server.start()
    conn = server.connect(socket_timeout=30)
    conn.use(tube)
    conn.watch(tube)
    conn.ignore("default")
    yield conn
    conn.close()
    server.stop(kill=True)


def test_short_soak_flat_memory(soak_conn, impl):
    numbers = measure(soak_conn, warm_seconds=1.0, main_seconds=2.5, traced_cycles=8000)
    report("short soak [%s]" % impl.__name__, numbers)
    assert numbers["cycles"] > 0
    assert numbers["rss_growth_kb"] < 4096, numbers
    assert numbers["traced_growth_kb"] < 128, numbers


@pytest.mark.slow
def test_soak_million_cycles(soak_conn, impl, request):
    if "slow" not in request.config.getoption("markexpr", ""):
        pytest.skip("two minutes long: select it with -m slow")
    if not impl.__name__.endswith("_cprotocol"):
        pytest.skip("the long soak runs on the compiled core; the short soak covers the pure one")
    numbers = measure(soak_conn, warm_seconds=10, main_seconds=100, traced_cycles=100000)
    report("long soak [%s]" % impl.__name__, numbers)
    assert numbers["rss_growth_kb"] < 4096, numbers
    assert numbers["traced_growth_kb"] < 256, numbers
