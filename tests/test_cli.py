"""The beanstalkc-fast command line, against the session beanstalkd.

Most tests call ``cli.main([...])`` in-process; a few run ``python -m beanstalkc_fast``
to check real exit codes and that errors are one line, never a traceback.
"""
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

import beanstalkc_fast
from beanstalkc_fast import cli

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))
ERROR_LINE = re.compile(r"\Abeanstalkc-fast: error: [^\n]+\n\Z")


@pytest.fixture
def run(beanstalkd, capsys):
    """run(*argv) -> (exit code, stdout, stderr), connected to the session server."""
    def run(*argv, stdin=None, server=True):
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        try:
            address = ["--host", beanstalkd.host, "--port", str(beanstalkd.port)] if server else []
            code = cli.main(address + list(argv))
        finally:
            sys.stdin = sys.__stdin__
        out, err = capsys.readouterr()
        return code, out, err
    return run


@pytest.fixture
def client(beanstalkd, tube):
    """A connection of the test itself, using and watching only ``tube``."""
    c = beanstalkd.connect()
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    yield c
    c.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing_jid(client):
    jid = client.put("gone")
    client.delete(jid)
    return jid


def cli_subprocess(*argv, stdin=b""):
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
    # cwd too: `python -m` puts the working directory first on sys.path.
    return subprocess.run([sys.executable, "-m", "beanstalkc_fast"] + list(argv), input=stdin,
                          capture_output=True, env=env, timeout=60, cwd=PACKAGE_ROOT)


# -- put --

def test_put_bodies_from_arguments(run, client, tube):
    code, out, err = run("put", "--tube", tube, "a", "b", "c")
    assert (code, err) == (0, "")
    ids = [int(line) for line in out.splitlines()]
    assert [client.peek(jid).body for jid in ids] == ["a", "b", "c"]
    assert client.stats_tube(tube)["current-jobs-ready"] == 3


def test_put_options(run, client, tube):
    code, out, _ = run("put", "--tube", tube, "--priority", "7", "--delay", "3600", "--ttr", "9", "x")
    stats = client.stats_job(int(out))
    assert code == 0 and stats["tube"] == tube and stats["state"] == "delayed"
    assert (stats["pri"], stats["delay"], stats["ttr"]) == (7, 3600, 9)


@pytest.mark.parametrize("dash", [[], ["-"]])
def test_put_one_job_per_stdin_line(run, client, tube, dash):
    code, out, _ = run("put", "--tube", tube, *dash, stdin=b"one\ntwo\r\n\nf\xc3\xbcnf")
    ids = [int(line) for line in out.splitlines()]
    assert code == 0
    assert [client.peek(jid).body_bytes for jid in ids] == [b"one", b"two", b"", b"f\xc3\xbcnf"]


def test_put_stdin_in_batches_json(run, client, tube, monkeypatch):
    monkeypatch.setattr(cli, "BATCH", 7)
    lines = ["job-%d" % i for i in range(30)]
    code, out, _ = run("put", "--json", "--tube", tube, stdin="\n".join(lines).encode() + b"\n")
    ids = json.loads(out)
    assert code == 0 and len(ids) == 30 and len(set(ids)) == 30
    assert [client.peek(jid).body for jid in ids] == lines


def test_put_dash_with_bodies_is_a_usage_error(run, tube):
    code, out, err = run("put", "--tube", tube, "a", "-")
    assert (code, out) == (2, "")
    assert ERROR_LINE.match(err) and "'-'" in err


def test_put_failure_prints_the_ids_that_went_in(run, client, tube):
    code, out, err = run("put", "--tube", tube, "small", "x" * 70000)    # beanstalkd's default max is 65535
    assert code == 1
    assert [client.peek(int(line)).body for line in out.splitlines()] == ["small"]
    assert ERROR_LINE.match(err) and "1 of 2 jobs failed" in err and "JOB_TOO_BIG" in err and "#2" in err


def test_put_json_failure_keeps_positions(run, tube):
    code, out, err = run("put", "--json", "--tube", tube, "x" * 70000, "ok")
    ids = json.loads(out)
    assert code == 1 and ids[0] is None and isinstance(ids[1], int)
    assert ERROR_LINE.match(err)


def test_put_progress_only_on_a_terminal(run, tube, monkeypatch):
    assert run("put", "--tube", tube, "a", "b")[2] == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run("put", "--tube", tube, "a", "b", "c")
    assert code == 0 and "3/3" in err and err.endswith("\n")


# -- stats, tubes --

def test_stats_aligned_lines(run, beanstalkd):
    code, out, err = run("stats")
    with beanstalkd.connect() as c:
        expected = c.stats()
    assert (code, err) == (0, "")
    lines = out.splitlines()
    pairs = [re.match(r"(\S+):( +)(\S.*)\Z", line) for line in lines]
    assert all(pairs)
    assert [m.group(1) for m in pairs] == list(expected)
    assert len({m.start(3) for m in pairs}) == 1     # values aligned in one column
    values = {m.group(1): m.group(3) for m in pairs}
    assert values["version"] == str(expected["version"])
    assert values["draining"] == "false"


def test_stats_json(run, beanstalkd):
    code, out, _ = run("stats", "--json")
    stats = json.loads(out)
    with beanstalkd.connect() as c:
        assert code == 0 and stats["version"] == c.stats()["version"] and stats["pid"] == c.stats()["pid"]


def test_stats_tube(run, client, tube):
    client.put("a")
    client.put("b")
    code, out, _ = run("stats", "--tube", tube)
    assert code == 0
    assert re.search(r"^name: +%s$" % re.escape(tube), out, re.M)
    assert re.search(r"^current-jobs-ready: +2$", out, re.M)
    assert json.loads(run("--json", "stats", "--tube", tube)[1])["current-jobs-ready"] == 2


def test_stats_job(run, client, tube):
    jid = client.put("a", priority=5)
    code, out, _ = run("stats", "--job", str(jid), "--json")
    stats = json.loads(out)
    assert code == 0 and (stats["id"], stats["tube"], stats["pri"]) == (jid, tube, 5)


def test_stats_missing_job_or_tube_exit_1(run, client, tube):
    jid = missing_jid(client)
    assert run("stats", "--job", str(jid)) == (1, "", "beanstalkc-fast: error: job %d not found\n" % jid)
    code, out, err = run("stats", "--tube", tube + "-none")
    assert (code, out) == (1, "") and ERROR_LINE.match(err) and "not found" in err


def test_stats_job_and_tube_are_exclusive(run, tube):
    assert run("stats", "--tube", tube, "--job", "1")[0] == 2


def test_tubes(run, client, tube):
    client.put("x")
    code, out, _ = run("tubes")
    assert code == 0 and tube in out.splitlines() and "default" in out.splitlines()
    code, out, _ = run("tubes", "--json")
    assert code == 0 and tube in json.loads(out)


# -- peek, kick, delete --

def test_peek_states_and_id(run, client, tube):
    ready = client.put("r")
    delayed = client.put("d", delay=3600)
    buried_jid = client.put("b", priority=0)
    client.reserve(0).bury()
    assert run("peek", "--tube", tube) == (0, "%d\tr\n" % ready, "")
    assert run("peek", "ready", "--tube", tube) == (0, "%d\tr\n" % ready, "")
    assert run("peek", "delayed", "--tube", tube) == (0, "%d\td\n" % delayed, "")
    assert run("peek", "buried", "--tube", tube) == (0, "%d\tb\n" % buried_jid, "")
    code, out, _ = run("peek", "--id", str(delayed), "--json")
    assert code == 0 and json.loads(out) == {"id": delayed, "body": "d"}


def test_peek_nothing_exit_1(run, client, tube):
    assert run("peek", "buried", "--tube", tube) == (
        1, "", "beanstalkc-fast: error: no buried job in tube %r\n" % tube)
    jid = missing_jid(client)
    assert run("peek", "--id", str(jid)) == (1, "", "beanstalkc-fast: error: job %d not found\n" % jid)


def test_peek_state_and_id_usage_error(run):
    code, out, err = run("peek", "ready", "--id", "1")
    assert (code, out) == (2, "") and ERROR_LINE.match(err)


def test_peek_encoding(run, tube):
    jid = int(run("put", "--tube", tube, "--encoding", "latin-1", "caf\u00e9")[1])
    assert run("peek", "--id", str(jid), "--encoding", "latin-1")[1] == "%d\tcaf\u00e9\n" % jid
    job = json.loads(run("peek", "--id", str(jid), "--json")[1])    # b"caf\xe9" is not utf-8
    assert job["body"] == "caf\ufffd" and job["body_base64"] == "Y2Fm6Q=="


def test_unknown_encoding_usage_error(run, tube):
    code, _, err = run("put", "--tube", tube, "--encoding", "no-such-codec", "x")
    assert code == 2 and ERROR_LINE.match(err) and "no-such-codec" in err


def test_kick(run, client, tube):
    for _ in range(3):
        client.put("x")
    for _ in range(3):
        client.reserve(0).bury()
    assert run("kick", "--tube", tube) == (0, "1\n", "")
    assert run("kick", "5", "--tube", tube) == (0, "2\n", "")
    assert run("kick", "--tube", tube) == (0, "0\n", "")
    assert client.stats_tube(tube)["current-jobs-ready"] == 3


def test_delete(run, client, tube):
    ids = [client.put("x") for _ in range(3)]
    assert run("delete", str(ids[0]), str(ids[2])) == (0, "", "")
    assert [client.peek(jid) is None for jid in ids] == [True, False, True]


def test_delete_missing_exit_1_deletes_the_others(run, client, tube):
    jid = client.put("x")
    gone = missing_jid(client)
    code, out, err = run("delete", str(gone), str(jid))
    assert (code, out) == (1, "")
    assert err == "beanstalkc-fast: error: 1 of 2 jobs not found: %d\n" % gone
    assert client.peek(jid) is None


def test_delete_ids_from_stdin(run, client, tube):
    ids = [client.put("x") for _ in range(4)]
    code, _, _ = run("delete", "-", stdin=("%d %d\n%d\n" % tuple(ids[:3])).encode())
    assert code == 0 and [client.peek(jid) is None for jid in ids] == [True, True, True, False]


def test_delete_bad_id_usage_error(run):
    assert run("delete", "abc")[0] == 2


# -- drain --

def test_drain_prints_and_releases(run, client, tube, monkeypatch):
    monkeypatch.setattr(cli, "BATCH", 3)
    ids = [client.put("job%d" % i) for i in range(8)]
    code, out, err = run("drain", "--tube", tube)
    assert (code, err) == (0, "")
    assert out.splitlines() == ["%d\tjob%d" % (jid, i) for i, jid in enumerate(ids)]
    assert client.stats_tube(tube)["current-jobs-ready"] == 8    # released when the CLI disconnected


def test_drain_delete_json_max(run, client, tube, monkeypatch):
    monkeypatch.setattr(cli, "BATCH", 3)
    ids = [client.put("job%d" % i) for i in range(8)]
    code, out, _ = run("drain", "--tube", tube, "--delete", "--json", "--max", "5")
    jobs = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and jobs == [{"id": jid, "body": "job%d" % i} for i, jid in enumerate(ids[:5])]
    assert [client.peek(jid) is None for jid in ids] == [True] * 5 + [False] * 3
    code, out, _ = run("drain", "--tube", tube, "--delete", "--timeout", "0.5")
    assert code == 0 and len(out.splitlines()) == 3
    assert client.stats_tube(tube)["current-jobs-ready"] == 0
    assert run("drain", "--tube", tube) == (0, "", "")


# -- bench --

def test_bench_delegates_argv(run, monkeypatch):
    seen = []
    fake = types.ModuleType("beanstalkc_fast.bench")
    fake.main = lambda argv: seen.append(argv) or 5
    monkeypatch.setitem(sys.modules, "beanstalkc_fast.bench", fake)
    assert run("--host", "h", "--json", "--port=1", "bench", "--port", "9", "-n", "3", server=False) == (5, "", "")
    assert run("bench", "--help", server=False) == (5, "", "")
    assert seen == [["--host", "h", "--port=1", "--port", "9", "-n", "3"], ["--help"]]
    assert run("--socket", "/x", "bench", server=False)[0] == 2


def test_bench_measures_this_client_on_the_given_server(run):
    # The real module, tiny: --host/--port given before `bench` reach it; every row is reported.
    code, out, err = run("bench", "--ops", "8", "--batch-ops", "64", "--batch", "32", "--repeat", "1")
    assert code == 0 and "started beanstalkd" not in err
    for label in ("put", "reserve+delete", "stats()", "put_many", "reserve_many+delete_many"):
        assert "| %s | beanstalkc_fast[python] |" % label in out


def test_bench_missing_module(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "beanstalkc_fast.bench", None)
    code, out, err = run("bench", server=False)
    assert (code, out) == (1, "") and ERROR_LINE.match(err) and "beanstalkc_fast.bench" in err


# -- options, errors, exit codes --

def test_options_after_the_subcommand_override_global_ones(beanstalkd, capsys):
    assert cli.main(["--port", str(closed_port()), "tubes", "--host", beanstalkd.host,
                     "--port", str(beanstalkd.port), "--json"]) == 0
    assert "default" in json.loads(capsys.readouterr().out)


def test_unix_socket(tmp_path, capsys, beanstalkd_binary):
    binary = beanstalkd_binary
    path = str(tmp_path / "bs.sock")
    proc = subprocess.Popen([binary, "-l", "unix:" + path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cli.main(["put", "--socket", path, "hi"]) == 0
        jid = int(capsys.readouterr().out)
        assert cli.main(["--socket", path, "peek", "--id", str(jid)]) == 0
        assert capsys.readouterr().out == "%d\thi\n" % jid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("argv", [[], ["tubes", "--bogus"], ["put", "--priority", "-1", "x"],
                                  ["kick", "many"], ["drain", "--timeout", "soon"]])
def test_usage_errors_exit_2(run, argv):
    code, out, err = run(*argv)
    assert (code, out) == (2, "") and "usage:" in err and "error:" in err


def test_invalid_tube_name_exit_2(run):
    code, out, err = run("put", "--tube", "bad name", "x")
    assert (code, out) == (2, "") and ERROR_LINE.match(err) and "tube" in err


def test_cannot_connect_exit_3(capsys):
    port = closed_port()
    assert cli.main(["--host", "127.0.0.1", "--port", str(port), "tubes"]) == 3
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("beanstalkc-fast: error: cannot connect to 127.0.0.1:%d: " % port)
    assert ERROR_LINE.match(err)


def _one_shot_server(*script):
    """A listener for one connection: for each ``(lines, reply)`` of ``script`` it waits until
    ``lines`` CRLF-ended lines were received in all, sends ``reply``; then it closes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve():
        conn, _ = listener.accept()
        with conn:
            received = b""
            for lines, reply in script:
                while received.count(b"\r\n") < lines:
                    received += conn.recv(4096)
                conn.sendall(reply)
        listener.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.parametrize("reply, code, message", [
    (b"", 3, "connection to 127.0.0.1:%d lost: "),                 # closed by the peer
    (b"x" * 5000, 3, "bad reply from the server"),                  # not beanstalkd: no reply line
    (b"OUT_OF_MEMORY\r\n", 1, "list-tubes: OUT_OF_MEMORY"),          # a server-side failure
], ids=["closed", "garbage", "unexpected"])
def test_connection_lost_garbage_or_unexpected_reply(capsys, reply, code, message):
    port, thread = _one_shot_server((1, reply))
    assert cli.main(["--host", "127.0.0.1", "--port", str(port), "tubes"]) == code
    thread.join(10)
    out, err = capsys.readouterr()
    assert out == "" and ERROR_LINE.match(err)
    assert err.startswith("beanstalkc-fast: error: " + (message % port if "%d" in message else message))


@pytest.mark.parametrize("json_output, expected", [(False, "41\n"), (True, "[41]\n")])
def test_put_connection_lost_mid_batch_prints_confirmed_ids(capsys, json_output, expected):
    # The server confirms the first of two pipelined puts, then goes away.
    port, thread = _one_shot_server((1, b"USING t\r\n"), (5, b"INSERTED 41\r\n"))
    argv = ["--host", "127.0.0.1", "--port", str(port), "put", "--tube", "t", "a", "b"]
    assert cli.main(argv + ["--json"] * json_output) == 3
    thread.join(10)
    out, err = capsys.readouterr()
    assert out == expected
    assert ERROR_LINE.match(err)
    assert err.startswith("beanstalkc-fast: error: connection to 127.0.0.1:%d lost" % port)


def test_keyboard_interrupt_exit_130_quietly(run, monkeypatch):
    def interrupted(conn, args):
        raise KeyboardInterrupt
    monkeypatch.setitem(cli.COMMANDS, "tubes", interrupted)
    assert run("tubes") == (130, "", "")


def test_unforeseen_error_is_one_line(run, monkeypatch):
    def broken(conn, args):
        raise RuntimeError("boom")
    monkeypatch.setitem(cli.COMMANDS, "tubes", broken)
    assert run("tubes") == (1, "", "beanstalkc-fast: error: RuntimeError: boom\n")


def test_version(run):
    code, out, _ = run("--version", server=False)
    assert code == 0 and beanstalkc_fast.__version__ in out and beanstalkc_fast.BACKEND in out


def test_subprocess_exit_codes(beanstalkd, tube):
    address = ["--host", beanstalkd.host, "--port", str(beanstalkd.port)]
    put = cli_subprocess("put", "--tube", tube, "--json", *address, stdin=b"a\nb\n")
    assert (put.returncode, put.stderr) == (0, b"")
    ids = json.loads(put.stdout)
    assert len(ids) == 2
    delete = cli_subprocess(*address, "delete", str(ids[0]), str(ids[0]))
    assert delete.returncode == 1 and ERROR_LINE.match(delete.stderr.decode())
    assert cli_subprocess(*address, "frobnicate").returncode == 2


def test_subprocess_refused_connection_no_traceback():
    port = closed_port()
    proc = cli_subprocess("--host", "127.0.0.1", "--port", str(port), "stats")
    err = proc.stderr.decode()
    assert proc.returncode == 3 and proc.stdout == b""
    assert ERROR_LINE.match(err) and "Traceback" not in err
    assert err.startswith("beanstalkc-fast: error: cannot connect to 127.0.0.1:%d: " % port)
