"""Round trips against a real beanstalkd, per core: single commands versus pipelined batches.

Each group holds both cores, and for batches both the loop of single commands and the
batch method, so pytest-benchmark prints them side by side.

Note for the x10000 reserve+delete groups: beanstalkd's delete costs time proportional
to the number of jobs the connection has reserved, so reserving 10000 at once and then
deleting them measures mostly the server (both rows alike).
"""
import pytest

BODY = b"x" * 100
SIZES = [100, 10000]
ROUNDS = {100: 50, 10000: 3}


def test_put(benchmark, conn):
    benchmark.group = "single put"
    assert benchmark(conn.put, BODY) > 0


def test_reserve_delete(benchmark, conn):
    benchmark.group = "single reserve+delete"
    rounds = 1000
    conn.put_many([BODY] * (rounds + 100))

    def run():
        job = conn.reserve(0)
        conn.delete(job.jid)
        return job

    job = benchmark.pedantic(run, rounds=rounds, warmup_rounds=100)
    assert job.body == BODY


def test_stats(benchmark, conn):
    benchmark.group = "single stats"
    assert benchmark(conn.stats)["version"]


# -- batches of n jobs: n single commands versus one batch call ----------------------

def _puts(conn, n):
    return (conn.put_many([BODY] * n),), {}


@pytest.mark.parametrize("n", SIZES)
def test_put_singles(benchmark, conn, n):
    benchmark.group = "put x%d" % n

    def run():
        put = conn.put
        return [put(BODY) for _ in range(n)]

    assert len(benchmark.pedantic(run, rounds=ROUNDS[n])) == n


@pytest.mark.parametrize("n", SIZES)
def test_put_many(benchmark, conn, n):
    benchmark.group = "put x%d" % n
    bodies = [BODY] * n
    assert len(benchmark.pedantic(conn.put_many, (bodies,), rounds=ROUNDS[n])) == n


@pytest.mark.parametrize("n", SIZES)
def test_delete_singles(benchmark, conn, n):
    benchmark.group = "delete x%d" % n

    def run(ids):
        delete = conn.delete
        for jid in ids:
            delete(jid)

    benchmark.pedantic(run, setup=lambda: _puts(conn, n), rounds=ROUNDS[n])
    assert conn.stats_tube(conn.using())["current-jobs-ready"] == 0


@pytest.mark.parametrize("n", SIZES)
def test_delete_many(benchmark, conn, n):
    benchmark.group = "delete x%d" % n
    benchmark.pedantic(conn.delete_many, setup=lambda: _puts(conn, n), rounds=ROUNDS[n])
    assert conn.stats_tube(conn.using())["current-jobs-ready"] == 0


@pytest.mark.parametrize("n", SIZES)
def test_reserve_delete_singles(benchmark, conn, n):
    benchmark.group = "reserve+delete x%d" % n

    def run(ids):
        reserve, delete = conn.reserve, conn.delete
        jobs = [reserve(0) for _ in ids]
        for job in jobs:
            delete(job.jid)
        return jobs

    assert len(benchmark.pedantic(run, setup=lambda: _puts(conn, n), rounds=ROUNDS[n])) == n
    assert conn.stats_tube(conn.using())["current-jobs-ready"] == 0


@pytest.mark.parametrize("n", SIZES)
def test_reserve_delete_many(benchmark, conn, n):
    benchmark.group = "reserve+delete x%d" % n

    def run(ids):
        jobs = conn.reserve_many(len(ids), 0)
        conn.delete_many(jobs)
        return jobs

    assert len(benchmark.pedantic(run, setup=lambda: _puts(conn, n), rounds=ROUNDS[n])) == n
    assert conn.stats_tube(conn.using())["current-jobs-ready"] == 0
