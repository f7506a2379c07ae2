"""``beanstalkc-fast work``: a worker process stopped with SIGTERM in the middle of its jobs."""
import os
import signal
import subprocess
import sys
import time

import pytest

HANDLER = '''
import os, time

def handle(job):
    time.sleep(0.003)
    with open(os.environ["WORK_LOG"], "a") as f:
        f.write(job.body + "\\n")

def fail(job):
    raise RuntimeError("no")
'''


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for " + what)
        time.sleep(0.01)


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def start(tmp_path, beanstalkd, *args):
    (tmp_path / "jobhandlers.py").write_text(HANDLER)
    env = dict(os.environ, WORK_LOG=str(tmp_path / "done.log"))
    cmd = [sys.executable, "-m", "beanstalkc_fast", "--host", beanstalkd.host, "--port", str(beanstalkd.port),
           "work"] + list(args)
    return subprocess.Popen(cmd, cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_sigterm_mid_run_exits_0_and_loses_nothing(conn, beanstalkd, tube, tmp_path):
    conn.put_many(["%d" % i for i in range(1000)])
    proc = start(tmp_path, beanstalkd, "jobhandlers:handle", "--tube", tube, "--concurrency", "4",
                 "--shutdown-timeout", "20")
    try:
        wait_for(lambda: len(lines(tmp_path / "done.log")) >= 100, "100 jobs handled")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20 + 10)   # within the grace period
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "" and err == ""     # quiet when not on a terminal
    done = lines(tmp_path / "done.log")
    assert len(done) == len(set(done)), "a job ran twice"
    st = conn.stats_tube(tube)
    assert st["current-jobs-reserved"] == 0 and st["current-jobs-buried"] == 0
    assert len(done) < 1000, "the worker was not stopped mid-run"
    assert len(done) + st["current-jobs-ready"] == 1000
    ready = set()
    while True:
        jobs = conn.reserve_many(1000)
        if not jobs:
            break
        ready.update(job.body for job in jobs)
        conn.delete_many(jobs)
    assert ready.isdisjoint(done) and len(ready | set(done)) == 1000


def test_work_buries_after_retries(conn, beanstalkd, tube, tmp_path):
    jid = conn.put("x")
    proc = start(tmp_path, beanstalkd, "jobhandlers:fail", "--tube", tube, "--max-retries", "0")
    try:
        wait_for(lambda: conn.stats_tube(tube)["current-jobs-buried"] == 1, "the bury")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "RuntimeError" in err and "burying job %d" % jid in err     # logged (WARNING, ERROR) on stderr


@pytest.mark.parametrize("args, message", [
    (["nosuchmodule_xyz:handle"], "cannot import"),
    (["jobhandlers"], "MODULE:FUNCTION"),
    (["jobhandlers:missing"], "no attribute"),
    (["jobhandlers:handle", "--concurrency", "0"], "at least 1"),
])
def test_work_usage_errors(beanstalkd, tmp_path, args, message):
    proc = start(tmp_path, beanstalkd, *args)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and message in err
