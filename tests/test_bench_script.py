"""The benchmarks run end to end, tiny: ``beanstalkc_fast.bench`` (this client on both cores, what
``beanstalkc-fast bench`` runs) and the comparison harness ``benchmarks/compare.py`` (peers, raw
sockets, C reference clients; in the checkout only: those tests skip without it).

Only that they run and report every client and row; their numbers are not checked (never timed asserts).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

import beanstalkc_fast
from beanstalkc_fast import _backend, bench

pytestmark = pytest.mark.skipif(not hasattr(subprocess, "run"), reason="needs subprocess.run")

HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))
FIVE_ROWS = ("put", "reserve_delete", "stats", "put_many", "reserve_delete_many")
FAST = ["beanstalkc_fast[python]"] + (["beanstalkc_fast[cython]"] if _backend._load_compiled() else [])


# -- beanstalkc_fast.bench: the in-package benchmark --

def test_the_package_bench_reports_every_row_on_both_cores(beanstalkd, tmp_path, capsys):
    out = tmp_path / "out.json"
    code = bench.main(["--host", beanstalkd.host, "--port", str(beanstalkd.port), "--ops", "20",
                       "--batch-ops", "150", "--batch", "64", "--repeat", "1", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert sorted((r["row"], r["client"]) for r in data["results"]) == sorted(
        (row, name) for row in FIVE_ROWS for name in FAST)
    assert all(r["ops_per_s"] > 0 and r["cpu_us_per_op"] >= 0 for r in data["results"])
    assert all(r["vs_python"] > 0 for r in data["results"])
    table = capsys.readouterr().out
    assert table.count("| beanstalkc_fast[") == len(FIVE_ROWS) * len(FAST)
    assert "| reserve_many+delete_many | beanstalkc_fast[python] |" in table


def test_the_package_bench_starts_its_own_server_and_goes_through_the_proxy(tmp_path):
    out = tmp_path / "out.json"
    code = bench.main(["--rtt", "1", "--ops", "8", "--batch-ops", "128", "--batch", "64", "--repeat", "1",
                       "--cores", "python", "--rows", "put,put_many", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["meta"]["rtt_ms"] == 1 and "rtt 1 ms" in data["meta"]["summary"]
    assert [(r["row"], r["client"]) for r in data["results"]] == [
        ("put", "beanstalkc_fast[python]"), ("put_many", "beanstalkc_fast[python]")]


def test_the_package_bench_refuses_bad_arguments(tmp_path):
    # cwd: `python -m` puts the working directory first on sys.path (the checkout would shadow a wheel).
    for argv, message in ((["--cores", "java"], "unknown core or row: java"), (["--rtt", "-1"], "--rtt must be")):
        proc = subprocess.run([sys.executable, "-m", "beanstalkc_fast.bench"] + argv, cwd=str(tmp_path),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        assert proc.returncode == 2 and message in proc.stderr


def test_the_package_holds_no_harness():
    # The peers, the C clients and the charts live in benchmarks/: the package has no C source either.
    package = os.path.dirname(os.path.abspath(beanstalkc_fast.__file__))
    assert not [name for name in os.listdir(package) if name.endswith(".c")]
    with open(bench.__file__) as f:
        source = f.read()
    for word in ("greenstalk", "refclient", "matplotlib", "sched_setaffinity"):
        assert word not in source


# -- benchmarks/compare.py: the comparison harness --

def test_comparison_reports_every_client_row_and_window(bench_harness, tmp_path, capsys):
    out = tmp_path / "out.json"
    md = tmp_path / "out.md"
    code = bench_harness.main(["--no-pin", "--ops", "40", "--batch-ops", "300", "--batch", "64", "--repeat", "1",
                               "--clients", "cython,python,raw,pipelined,c-seq,c-pipe", "--windows", "16,64",
                               "--lib-windows", "16,64",
                               "--no-import", "--chart", "", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    data = json.loads(out.read_text())
    got = {(r["row"], r["client"]) for r in data["results"]}
    for name in FAST:
        for row in FIVE_ROWS:
            assert (row, name) in got
    for row in ("put", "reserve_delete", "stats"):
        assert (row, "raw socket") in got
    if HAVE_CC:     # the C reference clients: the floor and the ceiling, with their own ratio column
        for row in ("put", "reserve_delete", "stats"):
            assert (row, "C sequential") in got
        for row in ("put_many", "reserve_delete_many"):
            c = [r for r in data["results"] if r["row"] == row and r["client"] == "C pipelined"][0]
            assert c["vs_c"] == 1.0 and c["cpu_us_per_op"] >= 0 and set(c["window_sweep"]) == {"16", "64"}
    for row in ("put_many", "reserve_delete_many"):
        ceiling = [r for r in data["results"] if r["row"] == row and r["client"] == "raw pipelined"][0]
        assert set(ceiling["window_sweep"]) == {"16", "64"}
        mine = [r for r in data["results"] if r["row"] == row and r["client"] == "beanstalkc_fast[python]"][0]
        assert set(mine["window_sweep"]) == {"16", "64"} and mine["window"] in (16, 64)
        assert mine["vs_raw"] > 0
    single = [r for r in data["results"] if r["row"] == "put" and r["client"] == "beanstalkc_fast[python]"][0]
    assert "window" not in single       # windows are swept in batch rows only
    table = md.read_text()
    assert "| put_many | beanstalkc_fast[python] (w=" in table and "Window sweeps" in table
    assert "Command: `python benchmarks/compare.py --no-pin --ops 40 " in table


def test_the_issue_table_has_every_row_with_its_goal(bench_harness, tmp_path):
    # One tiny --issue-table run: every path of the issue's table is there with its goal, measured
    # wherever its clients ran (the C rows only with a compiler; uvloop's only where installed).
    out, js = tmp_path / "issue.md", tmp_path / "out.json"
    clients = "cython,python,raw,aio,aio-uvloop" + (",c-seq,c-pipe" if HAVE_CC else "")
    code = bench_harness.main(["--no-pin", "--issue-table", str(out), "--ops", "20", "--batch-ops", "300",
                               "--repeat", "1", "--no-import", "--pool-ops", "300", "--clients", clients,
                               "--json", str(js)])
    assert code == 0
    data = json.loads(js.read_text())
    got = {(r["row"], r["client"]) for r in data["results"]}
    for size in (100, 500, 2000):       # calls of their own size, body of the run's
        for row in ("put_many_%d" % size, "reserve_delete_many_%d" % size):
            r = [r for r in data["results"] if r["row"] == row and r["client"] == "beanstalkc_fast[cython]"]
            if FAST[-1] == "beanstalkc_fast[cython]":
                assert r and r[0]["batch_size"] == size and r[0]["body_size"] == 100
            assert (row, "beanstalkc_fast[python]") not in got      # the sized rows: the compiled core and C
    big = [r for r in data["results"] if r["row"] == "put_60k"]
    assert big and all(r["body_size"] == 60000 for r in big) and "aio[cython]" not in {r["client"] for r in big}
    assert {r["placement"] for r in data["pool_results"]} == {"one-cpu", "apart"}
    table = out.read_text()
    rows = [line for line in table.splitlines() if " | >= " in line or " | <= " in line]
    assert len(rows) == 6 + 4 + 6 + 2 + 1
    measured = [line for line in rows if line.split(" | ")[1] != "-"]
    if HAVE_CC and FAST[-1] == "beanstalkc_fast[cython]":
        uvloop = importlib.util.find_spec("uvloop") is not None
        assert len(measured) == len(rows) - (0 if uvloop else 3)
    assert "| `aio.Pool` `reserve_many`+`delete_many` over 2 servers vs one server" in table
    assert "Command: `python benchmarks/compare.py --no-pin --issue-table " in table


def test_issue_rows_compare_in_the_goals_direction(bench_harness):
    # Higher is better for rates, lower for the pool's CPU per job: a ratio on the wrong side is "no".
    def entry(row, client, rate, cpu=1.0, **kw):
        return dict({"row": row, "client": client, "ops_per_s": rate, "cpu_us_per_op": cpu,
                     "server_cpu_us_per_op": 1.0}, **kw)
    results = [entry("put", "beanstalkc_fast[cython]", 90.0), entry("put", "C sequential", 100.0),
               entry("stats", "beanstalkc_fast[cython]", 80.0), entry("stats", "C sequential", 100.0)]
    pools = [entry("pool_put_many", "one server (Connection)", 1.0, 2.0, placement="one-cpu"),
             entry("pool_put_many", "Pool of 2", 1.0, 2.2, placement="one-cpu"),
             entry("pool_reserve_delete_many", "one server (Connection)", 1.0, 2.0, placement="one-cpu"),
             entry("pool_reserve_delete_many", "Pool of 2", 1.0, 2.4, placement="one-cpu")]
    got = {path.split(" vs ")[0].split(", vs ")[0]: (reached, bench_harness._met(reached, goal, op))
           for path, reached, goal, op, _ in bench_harness.issue_rows(results, pools)}
    assert got["single `put`"] == (0.9, "yes") and got["`stats()`"] == (0.8, "**no**")
    assert got["`Pool` client CPU per job, `put_many`,"] == (pytest.approx(1.1), "yes")
    assert got["`Pool` client CPU per job, `reserve_many`+`delete_many`,"] == (pytest.approx(1.2), "**no**")
    assert got["single `reserve`+`delete`"] == (None, "-")


def test_import_times_with_and_without_socket(bench_harness, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # its `python -c` children put the working directory first on sys.path
    got = {r["module"]: r for r in bench_harness.import_times(1, lambda msg: None)}
    mine = got["beanstalkc_fast"]
    assert mine["imports_yaml"] is False and mine["ms"] > 0 and mine["ms_after_socket"] > 0
    assert got["beanstalkc_fast (PUREPYTHON=1)"]["backend"] == "python"


def test_the_harness_runs_as_a_script_and_refuses_bad_arguments(bench_harness, tmp_path):
    # As a plain script, from another directory: it imports the installed package.
    proc = subprocess.run([sys.executable, bench_harness.__file__, "--lib-windows", "0"], cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 2 and "--lib-windows must be positive" in proc.stderr
    assert proc.stderr.startswith("usage: python benchmarks/compare.py")


def test_a_tiny_run_through_the_latency_proxy(bench_harness, tmp_path):
    out = tmp_path / "out.json"
    clients = "cython,python,raw,pipelined" + (",c-seq,c-pipe" if HAVE_CC else "")
    code = bench_harness.main(["--no-pin", "--rtt", "1", "--ops", "20", "--batch-ops", "200", "--batch", "64",
                               "--repeat", "1", "--windows", "64", "--clients", clients, "--no-import", "--chart", "",
                               "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["meta"]["rtt_ms"] == 1 and "rtt 1 ms" in data["meta"]["summary"]
    fast = len(FAST)
    assert len(data["results"]) == 3 * (fast + 1 + HAVE_CC) + 2 * (fast + 1 + HAVE_CC)
    for r in data["results"]:
        assert r["proxy_cpu_us_per_op"] > 0
        if not r["batch"]:      # one round trip (reserve+delete: two) per op at least
            assert r["us_per_op"] >= 1000


def test_without_a_compiler_the_c_rows_are_skipped_with_a_note(bench_harness, tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")
    exe, note = bench_harness.build_refclient(str(tmp_path))
    assert exe is None and "C reference client" in note
    monkeypatch.setenv("CC", "no-such-compiler-here")
    exe, note = bench_harness.build_refclient(str(tmp_path))
    assert exe is None and "no C compiler" in note


def test_the_c_source_sits_next_to_the_harness(bench_harness):
    # The sdist carries it (MANIFEST.in); the wheel does not (scripts/check_packaging.sh checks both).
    assert os.path.exists(bench_harness.REFCLIENT_SRC)
    assert os.path.dirname(bench_harness.REFCLIENT_SRC) == os.path.dirname(os.path.abspath(bench_harness.__file__))


def test_pool_comparison_runs(bench_harness, tmp_path):
    out = tmp_path / "pool.json"
    code = bench_harness.main(["--pool", "--batch-ops", "600", "--batch", "64", "--repeat", "1", "--chart", "",
                               "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    got = {(r["row"], r["client"]) for r in data["results"]}
    for row in ("pool_put_many", "pool_reserve_delete_many"):
        for client in ("one server (Connection)", "Pool of 1", "Pool of 2", "aio.Pool of 2 (asyncio)"):
            assert (row, client) in got
    assert all(r["vs_one"] > 0 and r["cpu_us_per_op"] >= 0 for r in data["results"])


def test_threads_benchmark_reports_every_count_and_core(bench_harness, tmp_path):
    """benchmarks/threads.py (threads sharing one connection) runs end to end, tiny, with --rtt too."""
    script = os.path.join(os.path.dirname(bench_harness.__file__), "threads.py")
    for extra in ([], ["--rtt", "2"]):
        md = tmp_path / "threads.md"
        proc = subprocess.run([sys.executable, script, "--threads", "1,3", "--puts", "60", "--repeat", "1",
                               "--markdown", str(md)] + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [line for line in md.read_text().splitlines() if line.startswith("| 1 ") or line.startswith("| 3 ")]
        assert len(rows) == 2 * len(FAST), md.read_text()
        assert all("-" not in row.split("|")[3] for row in rows)    # every shared figure measured
