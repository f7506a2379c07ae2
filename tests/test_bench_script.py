"""The comparison script (python -m beanstalkc_fast.bench) runs end to end, tiny, against its own beanstalkd.

Only that it runs and reports every client and row; its numbers are not checked (never timed asserts).
"""
import json
import shutil
import subprocess
import sys

import pytest

from beanstalkc_fast import bench

pytestmark = pytest.mark.skipif(not hasattr(subprocess, "run"), reason="needs subprocess.run")

HAVE_CC = bool(shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"))


def test_comparison_reports_every_client_row_and_window(tmp_path, capsys):
    out = tmp_path / "out.json"
    md = tmp_path / "out.md"
    code = bench.main(["--no-pin", "--ops", "40", "--batch-ops", "300", "--batch", "64", "--repeat", "1",
                       "--clients", "cython,python,raw,pipelined,c-seq,c-pipe", "--windows", "16,64",
                       "--lib-windows", "16,64",
                       "--no-import", "--chart", "", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    data = json.loads(out.read_text())
    got = {(r["row"], r["client"]) for r in data["results"]}
    fast = ["beanstalkc_fast[python]"] + (["beanstalkc_fast[cython]"] if bench._backend._load_compiled() else [])
    for name in fast:
        for row in ("put", "reserve_delete", "stats", "put_many", "reserve_delete_many"):
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
    assert "Command: `python -m beanstalkc_fast.bench --no-pin --ops 40 " in table


def test_import_times_with_and_without_socket(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # its `python -c` children put the working directory first on sys.path
    got = {r["module"]: r for r in bench.import_times(1, lambda msg: None)}
    mine = got["beanstalkc_fast"]
    assert mine["imports_yaml"] is False and mine["ms"] > 0 and mine["ms_after_socket"] > 0
    assert got["beanstalkc_fast (PUREPYTHON=1)"]["backend"] == "python"


def test_bad_arguments_are_refused(tmp_path):
    # cwd: `python -m` puts the working directory first on sys.path (the checkout would shadow a wheel).
    proc = subprocess.run([sys.executable, "-m", "beanstalkc_fast.bench", "--lib-windows", "0"], cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 2 and "--lib-windows must be positive" in proc.stderr


def test_a_tiny_run_through_the_latency_proxy(tmp_path):
    out = tmp_path / "out.json"
    clients = "cython,python,raw,pipelined" + (",c-seq,c-pipe" if HAVE_CC else "")
    code = bench.main(["--no-pin", "--rtt", "1", "--ops", "20", "--batch-ops", "200", "--batch", "64",
                       "--repeat", "1", "--windows", "64", "--clients", clients, "--no-import", "--chart", "",
                       "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["meta"]["rtt_ms"] == 1 and "rtt 1 ms" in data["meta"]["summary"]
    fast = 2 if bench._backend._load_compiled() else 1
    assert len(data["results"]) == 3 * (fast + 1 + HAVE_CC) + 2 * (fast + 1 + HAVE_CC)
    for r in data["results"]:
        assert r["proxy_cpu_us_per_op"] > 0
        if not r["batch"]:      # one round trip (reserve+delete: two) per op at least
            assert r["us_per_op"] >= 1000


def test_without_a_compiler_the_c_rows_are_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")
    exe, note = bench.build_refclient(str(tmp_path))
    assert exe is None and "C reference client" in note
    monkeypatch.setenv("CC", "no-such-compiler-here")
    exe, note = bench.build_refclient(str(tmp_path))
    assert exe is None and "no C compiler" in note


def test_the_c_source_ships_in_the_package():
    # bench.py finds it next to itself, also in an installed wheel (pyproject package-data)
    import os
    assert os.path.exists(bench.REFCLIENT_SRC) and bench.REFCLIENT_SRC.endswith(os.path.join("beanstalkc_fast",
                                                                                               "_refclient.c"))
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml")) as f:
        assert '"_refclient.c"' in f.read()


def test_pool_comparison_runs(tmp_path):
    out = tmp_path / "pool.json"
    code = bench.main(["--pool", "--batch-ops", "600", "--batch", "64", "--repeat", "1", "--chart", "",
                       "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    got = {(r["row"], r["client"]) for r in data["results"]}
    for row in ("pool_put_many", "pool_reserve_delete_many"):
        for client in ("one server (Connection)", "Pool of 1", "Pool of 2"):
            assert (row, client) in got
    assert all(r["vs_one"] > 0 and r["cpu_us_per_op"] >= 0 for r in data["results"])


def test_threads_benchmark_reports_every_count_and_core(tmp_path):
    """benchmarks/threads.py (threads sharing one connection) runs end to end, tiny, with --rtt too."""
    import os
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "threads.py")
    if not os.path.exists(script):
        pytest.skip("benchmarks/ is not shipped with the installed package")
    for extra in ([], ["--rtt", "2"]):
        md = tmp_path / "threads.md"
        proc = subprocess.run([sys.executable, script, "--threads", "1,3", "--puts", "60", "--repeat", "1",
                               "--markdown", str(md)] + extra, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [line for line in md.read_text().splitlines() if line.startswith("| 1 ") or line.startswith("| 3 ")]
        cores = 2 if bench._backend._load_compiled() else 1
        assert len(rows) == 2 * cores, md.read_text()
        assert all("-" not in row.split("|")[3] for row in rows)    # every shared figure measured
