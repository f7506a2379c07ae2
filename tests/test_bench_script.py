"""The comparison script (python -m beanstalkc_fast.bench) runs end to end, tiny, against its own beanstalkd.

Only that it runs and reports every client and row; its numbers are not checked (never timed asserts).
"""
import json
import subprocess
import sys

import pytest

from beanstalkc_fast import bench

pytestmark = pytest.mark.skipif(not hasattr(subprocess, "run"), reason="needs subprocess.run")


def test_comparison_reports_every_client_row_and_window(tmp_path, capsys):
    out = tmp_path / "out.json"
    md = tmp_path / "out.md"
    code = bench.main(["--no-pin", "--ops", "40", "--batch-ops", "300", "--batch", "64", "--repeat", "1",
                       "--clients", "cython,python,raw,pipelined", "--windows", "16,64", "--lib-windows", "16,64",
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
