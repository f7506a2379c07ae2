"""The classic beanstalkc 0.4 API (SPEC §1) and the single-command extras of SPEC §2,
against a real beanstalkd, for both protocol cores.

A scripted fake peer (``FakePeer``) is used only for what a real server never sends
(a reply cut mid-body, silence, ``BURIED`` on release, malformed lines).
"""
import array
import inspect
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
import yaml

import beanstalkc_fast
from beanstalkc_fast import (BeanstalkcException, CommandFailed, Connection, DeadlineSoon, Job, SocketError,
                             UnexpectedResponse)
from beanstalkc_fast.testing import BeanstalkdServer, find_beanstalkd

# The directory holding the package under test (the checkout, or site-packages for an installed wheel).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))


# -- helpers ------------------------------------------------------------------------

class Recorder:
    """Stands in for a connection's protocol object and records every reply read."""

    def __init__(self, proto):
        self.proto = proto
        self.sock = proto.sock
        self.replies = []

    def __getattr__(self, name):
        method = getattr(self.proto, name)
        if not name.startswith(("read_", "call", "reserve")):
            return method

        def recorded(*args):
            reply = method(*args)
            self.replies.append(reply)
            return reply
        return recorded


def record(c):
    rec = Recorder(c._proto)
    c._proto = rec
    return rec


def counters(c):
    """The server's command counters and job totals (cmd-stats excluded: reading them counts)."""
    return {k: v for k, v in c.stats().items()
            if (k.startswith("cmd-") and k != "cmd-stats") or k.startswith(("total-jobs", "current-jobs"))}


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_line(sock):
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


class FakePeer:
    """A one-connection scripted server on 127.0.0.1: ``script(sock, peer)`` runs in a thread."""

    def __init__(self, script):
        self.script = script
        self.done = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        with sock:
            try:
                self.script(sock, self)
            except OSError:
                pass

    def close(self):
        self.done.set()
        self.listener.close()
        self.thread.join(10)


def replies(*lines):
    """A script answering each command line with the next canned reply, then waiting."""
    def script(sock, peer):
        for line in lines:
            read_line(sock)
            sock.sendall(line)
        peer.done.wait(10)
    return script


@pytest.fixture
def fake(impl, monkeypatch):
    monkeypatch.setattr(Connection, "_core", impl)
    peers = []
    conns = []

    def make(script, **kw):
        peer = FakePeer(script)
        peers.append(peer)
        c = Connection("127.0.0.1", peer.port, **kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()
    for p in peers:
        p.close()


@pytest.fixture
def private(impl, monkeypatch):
    """Factory of private beanstalkd servers (for tests that need flags or kill them)."""
    monkeypatch.setattr(Connection, "_core", impl)
    servers = []
    conns = []

    def make(args=()):
        server = BeanstalkdServer(args=args).start()
        servers.append(server)
        return server

    make.conns = conns
    yield make
    for c in conns:
        c.close()
    for s in servers:
        s.stop()


def connect(private_factory, server, **kw):
    c = server.connect(**kw)
    private_factory.conns.append(c)
    return c


# -- the module surface ---------------------------------------------------------------

def test_module_names_and_constants():
    for name in ("Connection", "Job", "BeanstalkcException", "UnexpectedResponse", "CommandFailed",
                 "DeadlineSoon", "SocketError", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_PRIORITY",
                 "DEFAULT_TTR", "__version__"):
        assert hasattr(beanstalkc_fast, name), name
    assert beanstalkc_fast.DEFAULT_HOST == "localhost"
    assert beanstalkc_fast.DEFAULT_PORT == 11300
    assert beanstalkc_fast.DEFAULT_PRIORITY == 2 ** 31
    assert beanstalkc_fast.DEFAULT_TTR == 120
    assert isinstance(beanstalkc_fast.__version__, str)
    for cls in (UnexpectedResponse, CommandFailed, DeadlineSoon, SocketError):
        assert issubclass(cls, BeanstalkcException)
    assert beanstalkc_fast.BACKEND in ("cython", "python")


def test_connection_signature():
    params = inspect.signature(Connection).parameters
    assert list(params)[:4] == ["host", "port", "parse_yaml", "connect_timeout"]
    assert params["host"].default == "localhost"
    assert params["port"].default == 11300
    assert params["parse_yaml"].default is True
    assert params["encoding"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["encoding"].default == "utf-8"
    job_params = inspect.signature(Job).parameters
    assert list(job_params) == ["conn", "jid", "body", "reserved"]
    assert job_params["reserved"].default is True


def test_encoding_is_keyword_only(beanstalkd, make_conn):
    with pytest.raises(TypeError):
        Connection(beanstalkd.host, beanstalkd.port, True, None, "utf-8")


# -- put / reserve --------------------------------------------------------------------

def test_put_returns_int_id(conn):
    jid = conn.put("hello")
    assert type(jid) is int
    assert conn.put("again") == jid + 1
    job = conn.peek(jid)
    assert job.body == "hello"


def test_put_defaults_and_arguments(conn):
    jid = conn.put("x")
    s = conn.stats_job(jid)
    assert (s["pri"], s["delay"], s["ttr"], s["state"], s["tube"]) == (2 ** 31, 0, 120, "ready", conn.using())
    jid = conn.put("y", priority=5, delay=0, ttr=60)
    s = conn.stats_job(jid)
    assert (s["pri"], s["ttr"]) == (5, 60)
    jid = conn.put("z", 7, 30, 9)       # positional, as in beanstalkc
    s = conn.stats_job(jid)
    assert (s["pri"], s["delay"], s["ttr"], s["state"]) == (7, 30, 9, "delayed")


def test_put_job_too_big(private):
    server = private(["-z", "100"])
    c = connect(private, server)
    with pytest.raises(CommandFailed) as info:
        c.put("x" * 101)
    assert info.value.args == ("put", "JOB_TOO_BIG", [])
    # the server skipped the body: the stream is still in sync
    jid = c.put("y" * 100)
    assert c.peek(jid).body == "y" * 100
    assert c.stats()["total-jobs"] == 1


def test_put_draining(private):
    server = private()
    c = connect(private, server)
    os.kill(server.process.pid, signal.SIGUSR1)   # beanstalkd enters drain mode
    deadline = time.monotonic() + 5
    while True:
        try:
            jid = c.put("x")
        except CommandFailed as err:
            assert err.args == ("put", "DRAINING", [])
            break
        c.delete(jid)
        assert time.monotonic() < deadline, "server never entered drain mode"
        time.sleep(0.01)
    assert c.stats()["draining"] is True
    assert c.using() == "default"


def test_put_buried_keeps_the_job_id(fake):
    # A real server says BURIED <id> to a put only when it runs out of memory.
    c = fake(replies(b"BURIED 7\r\n", b"USING default\r\n"))
    with pytest.raises(CommandFailed) as info:
        c.put("x")
    assert info.value.args == ("put", "BURIED", ["7"])
    assert c.using() == "default"


def test_reserve_returns_reserved_job(conn):
    jid = conn.put(b"body")
    job = conn.reserve()
    assert isinstance(job, Job)
    assert (job.jid, job.body, job.reserved, job.conn) == (jid, "body", True, conn)
    assert conn.stats_job(jid)["state"] == "reserved"


def test_reserve_timeout(conn):
    assert conn.reserve(timeout=0) is None
    assert conn.reserve(timeout=1) is None
    assert conn.reserve(0.5) is None    # float seconds are truncated, as in beanstalkc
    jid = conn.put("x")
    assert conn.reserve(timeout=0).jid == jid


def test_reserve_deadline_soon(conn):
    jid = conn.put("x", ttr=1)
    job = conn.reserve(timeout=0)
    assert job.jid == jid
    with pytest.raises(DeadlineSoon) as info:
        conn.reserve(timeout=2)
    assert info.value.args == ([],)
    job.touch()     # a fresh second to live: still within beanstalkd's one-second safety margin
    with pytest.raises(DeadlineSoon) as info:
        conn.reserve()
    assert info.value.args == ([],)
    job.delete()
    assert conn.peek(jid) is None


# -- peeks --------------------------------------------------------------------------

def test_peeks(conn):
    assert conn.peek_ready() is None
    assert conn.peek_delayed() is None
    assert conn.peek_buried() is None
    assert conn.peek(2 ** 63) is None
    ready = conn.put("ready")
    delayed = conn.put("delayed", delay=100)
    buried = conn.put("buried", priority=0)
    conn.reserve(timeout=0).bury()
    for job, jid, body in ((conn.peek_ready(), ready, "ready"), (conn.peek_delayed(), delayed, "delayed"),
                           (conn.peek_buried(), buried, "buried"), (conn.peek(delayed), delayed, "delayed")):
        assert isinstance(job, Job)
        assert (job.jid, job.body, job.reserved, job.conn) == (jid, body, False, conn)


def test_peek_sees_only_the_used_tube(conn, make_conn, tube):
    other = make_conn()
    other.use(tube + "-other")
    jid = other.put("elsewhere")
    assert conn.peek_ready() is None
    assert conn.peek(jid).body == "elsewhere"    # peek by id is global


# -- job commands -------------------------------------------------------------------

def test_job_commands_succeed(conn):
    jid = conn.put("x", priority=3)
    conn.reserve(timeout=0)
    assert conn.touch(jid) is None
    assert conn.release(jid, 4, 0) is None
    assert conn.stats_job(jid)["pri"] == 4
    conn.reserve(timeout=0)
    assert conn.bury(jid, 5) is None
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"]) == ("buried", 5)
    assert conn.kick_job(jid) is None
    assert conn.stats_job(jid)["state"] == "ready"
    assert conn.delete(jid) is None
    assert conn.peek(jid) is None


def test_release_with_delay_and_defaults(conn):
    jid = conn.put("x", priority=3)
    conn.reserve(timeout=0)
    conn.release(jid, delay=100)
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"], s["delay"]) == ("delayed", 2 ** 31, 100)
    conn.kick_job(jid)
    conn.reserve(timeout=0)
    conn.bury(jid)
    assert conn.stats_job(jid)["pri"] == 2 ** 31


@pytest.mark.parametrize("method,cmd,args", [
    ("delete", "delete", ()),
    ("touch", "touch", ()),
    ("kick_job", "kick-job", ()),
    ("bury", "bury", ()),
    ("bury", "bury", (1,)),
    ("release", "release", ()),
    ("release", "release", (1, 0)),
    ("stats_job", "stats-job", ()),
    ("reserve_job", "reserve-job", ()),
])
def test_job_commands_not_found(conn, method, cmd, args):
    jid = conn.put("x")
    conn.delete(jid)
    with pytest.raises(CommandFailed) as info:
        getattr(conn, method)(jid, *args)
    assert info.value.args == (cmd, "NOT_FOUND", [])
    assert conn.put("y") == jid + 1     # still in sync


@pytest.mark.parametrize("method", ["touch", "bury", "release"])
def test_commands_on_a_job_not_reserved_by_us(conn, make_conn, method):
    jid = conn.put("x")
    with pytest.raises(CommandFailed) as info:       # ready, not reserved
        getattr(conn, method)(jid)
    assert info.value.args == (method, "NOT_FOUND", [])
    other = make_conn()
    other.watch(conn.using())
    other.ignore("default")
    assert other.reserve_job(jid).jid == jid
    with pytest.raises(CommandFailed):               # reserved by another connection
        getattr(conn, method)(jid)


def test_kick_job_of_a_ready_job_is_not_found(conn):
    jid = conn.put("x")
    with pytest.raises(CommandFailed) as info:
        conn.kick_job(jid)
    assert info.value.args == ("kick-job", "NOT_FOUND", [])


def test_release_accepts_buried(fake):
    # beanstalkd answers BURIED to a release when it cannot grow its heap.
    c = fake(replies(b"BURIED\r\n", b"DELETED\r\n"))
    assert c.release(1) is None
    assert c.delete(1) is None


def test_unexpected_reply_raises_unexpected_response(fake):
    c = fake(replies(b"BAD_FORMAT\r\n", b"UNKNOWN_COMMAND\r\n", b"OUT_OF_MEMORY\r\n", b"USING t\r\n"))
    with pytest.raises(UnexpectedResponse) as info:
        c.put("x")
    assert info.value.args == ("put", "BAD_FORMAT", [])
    assert not isinstance(info.value, CommandFailed)
    with pytest.raises(UnexpectedResponse) as info:
        c.stats_job(1)
    assert info.value.args == ("stats-job", "UNKNOWN_COMMAND", [])
    with pytest.raises(UnexpectedResponse) as info:
        c.reserve()
    assert info.value.args == ("reserve", "OUT_OF_MEMORY", [])
    assert c.using() == "t"


def test_kick_bound(conn):
    jids = [conn.put(str(i)) for i in range(3)]
    for _ in jids:
        conn.reserve(timeout=0).bury()
    assert conn.kick(0) == 0
    assert conn.kick(2) == 2
    assert conn.stats_tube(conn.using())["current-jobs-buried"] == 1
    assert conn.kick() == 1
    assert conn.kick(5) == 0
    delayed = conn.put("later", delay=100)
    assert conn.kick(10) == 1           # no buried jobs: delayed ones are kicked
    assert conn.stats_job(delayed)["state"] == "ready"


# -- tubes ----------------------------------------------------------------------------

def test_use_and_using(make_conn, tube):
    c = make_conn()
    assert c.using() == "default"
    assert c.use(tube) == tube
    assert c.using() == tube
    assert isinstance(c.using(), str)
    jid = c.put("x")
    assert c.stats_job(jid)["tube"] == tube
    assert c.use("default") == "default"
    assert c.using() == "default"


def test_watch_and_ignore_counts(make_conn, tube):
    c = make_conn()
    assert c.watching() == ["default"]
    assert c.watch(tube) == 2
    assert c.watch(tube) == 2
    assert c.watch(tube + "b") == 3
    assert c.watching() == ["default", tube, tube + "b"]
    assert c.ignore(tube + "b") == 2
    assert c.ignore(tube + "never-watched") == 2
    assert c.ignore("default") == 1
    assert c.watching() == [tube]
    assert c.ignore(tube) == 1          # the last watched tube: beanstalkd refuses, beanstalkc says 1
    assert c.watching() == [tube]


def test_tubes_lists_existing_tubes(make_conn, tube):
    c = make_conn()
    c.use(tube)
    c.watch(tube + "w")
    names = c.tubes()
    assert isinstance(names, list)
    assert {"default", tube, tube + "w"} <= set(names)
    c.use("default")
    c.ignore(tube + "w")
    assert tube not in c.tubes() and tube + "w" not in c.tubes()


def test_watched_tube_receives_jobs(make_conn, tube):
    producer, consumer = make_conn(), make_conn()
    producer.use(tube)
    consumer.watch(tube)
    consumer.ignore("default")
    jid = producer.put("x")
    assert consumer.reserve(timeout=0).jid == jid


# -- stats and YAML ---------------------------------------------------------------------

def test_stats_equal_safe_load_of_the_same_text(conn):
    jid = conn.put("x", priority=9)
    rec = record(conn)
    for call in (conn.stats, lambda: conn.stats_tube(conn.using()), lambda: conn.stats_job(jid), conn.tubes,
                 conn.watching):
        result = call()
        raw = rec.replies[-1][2]
        assert result == yaml.safe_load(raw)
        assert type(result) is type(yaml.safe_load(raw))
        items = result.items() if isinstance(result, dict) else enumerate(result)
        expected = yaml.safe_load(raw)
        for k, v in items:
            assert type(v) is type(expected[k]), k


def test_stats_values(conn):
    jid = conn.put("x", priority=9, ttr=33)
    s = conn.stats_job(jid)
    assert s["id"] == jid and s["pri"] == 9 and s["ttr"] == 33 and s["state"] == "ready"
    assert s["tube"] == conn.using()
    t = conn.stats_tube(conn.using())
    assert t["name"] == conn.using() and t["current-jobs-ready"] == 1 and t["total-jobs"] == 1
    server = conn.stats()
    assert isinstance(server["version"], str)
    assert server["total-jobs"] >= 1 and isinstance(server["uptime"], int)
    assert isinstance(server["rusage-utime"], float)
    assert isinstance(server["draining"], bool)


def test_stats_raw_text_matches_parsed(make_conn, tube):
    parsed, raw = make_conn(), make_conn(parse_yaml=False)
    parsed.use(tube)
    jid = parsed.put("x")
    text = raw.stats_job(jid)
    assert isinstance(text, str) and text.startswith("---\n")
    assert yaml.safe_load(text) == {**parsed.stats_job(jid), "age": yaml.safe_load(text)["age"],
                                     "time-left": yaml.safe_load(text)["time-left"]}
    text = raw.stats_tube(tube)
    assert yaml.safe_load(text) == parsed.stats_tube(tube)
    text = raw.stats()
    assert set(yaml.safe_load(text)) == set(parsed.stats())
    for key in ("version", "pid", "hostname", "os", "id", "max-job-size"):
        assert yaml.safe_load(text)[key] == parsed.stats()[key]
    assert raw.tubes() == "---\n" + "".join("- %s\n" % name for name in parsed.tubes())
    assert raw.watching() == "---\n- default\n"


@pytest.mark.parametrize("method,cmd,arg", [("stats_tube", "stats-tube", "no-such-tube-x"),
                                            ("stats_job", "stats-job", 2 ** 63)])
def test_stats_not_found(conn, method, cmd, arg):
    with pytest.raises(CommandFailed) as info:
        getattr(conn, method)(arg)
    assert info.value.args == (cmd, "NOT_FOUND", [])
    assert type(info.value.args[2]) is list


def test_exception_args_exact(conn):
    try:
        conn.stats_job(2 ** 63)
    except CommandFailed as err:
        assert err.args == ("stats-job", "NOT_FOUND", [])
        cmd, status, results = err.args
        assert (cmd, status, results) == ("stats-job", "NOT_FOUND", [])
    else:
        pytest.fail("no CommandFailed")


# YAML look-alikes: every one of these is a valid tube name that safe_load does not read as a plain string.
TRICKY_TUBES = ["123", "0", "0123", "09", "0_1", "1.5", ".5", "1.", "1.0e5", "1.0e+5", "1e5", "12e3", "1a", "0b1",
                "0b1a", "1_000", "0x1F", "+1", "yes", "No", "TRUE", "off", "null", "Null", "2001-12-14", ".inf",
                "_x", "e5", "a;b", "(x)", "$x", "x/y", "y", "x.y.z", "1.5.3", "a.b-c", "Yes."]


def test_yaml_lookalike_tube_names(make_conn):
    c = make_conn()
    for name in TRICKY_TUBES:
        c.watch(name)
    rec = record(c)
    for call in (c.tubes, c.watching):
        result = call()
        assert result == yaml.safe_load(rec.replies[-1][2])
    for name in TRICKY_TUBES:
        s = c.stats_tube(name)
        assert s == yaml.safe_load(rec.replies[-1][2])
        assert s["name"] == yaml.safe_load(name)
    c.use("null")
    jid = c.put("x")
    assert c.stats_job(jid)["tube"] is None      # exactly what yaml.safe_load says
    c.delete(jid)


def test_parse_yaml_false_returns_raw_text(make_conn):
    c = make_conn(parse_yaml=False)
    rec = record(c)
    for call in (c.stats, c.tubes, c.watching, lambda: c.stats_tube("default")):
        result = call()
        assert isinstance(result, str)
        assert result == rec.replies[-1][2].decode()
    assert c.watching() == "---\n- default\n"


def test_parse_yaml_callable_gets_the_text(make_conn):
    seen = []

    def parse(text):
        seen.append(text)
        return text.split("\n")

    c = make_conn(parse_yaml=parse)
    assert c.watching() == ["---", "- default", ""]
    assert seen == ["---\n- default\n"]
    lines = c.stats_tube("default")
    assert lines[:2] == ["---", "name: default"]


def test_parse_yaml_rejects_other_values(beanstalkd, make_conn):
    with pytest.raises(TypeError):
        make_conn(parse_yaml="yes")


def test_import_does_not_import_yaml():
    code = "import sys, beanstalkc_fast; assert 'yaml' not in sys.modules, 'yaml imported'"
    subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_ROOT, check=True)


def test_pause_tube(conn, make_conn):
    name = conn.using()
    assert conn.pause_tube(name, 100) is None
    s = conn.stats_tube(name)
    assert s["pause"] == 100 and 0 < s["pause-time-left"] <= 100
    assert conn.pause_tube(name, 0) is None
    assert conn.stats_tube(name)["pause"] == 0
    with pytest.raises(CommandFailed) as info:
        conn.pause_tube(name + "-missing", 1)
    assert info.value.args == ("pause-tube", "NOT_FOUND", [])


# -- Job ------------------------------------------------------------------------------

def test_job_attributes(conn):
    jid = conn.put("héllo")
    job = conn.reserve(timeout=0)
    assert (job.conn, job.jid, job.body, job.reserved) == (conn, jid, "héllo", True)
    assert job.body_bytes == "héllo".encode()
    made = Job(conn, jid, b"raw")
    assert (made.conn, made.jid, made.body, made.body_bytes, made.reserved) == (conn, jid, "raw", b"raw", True)
    made = Job(conn, jid, "text", reserved=False)
    assert (made.body, made.body_bytes, made.reserved) == ("text", b"text", False)


def test_job_delete_always_sends(conn):
    jid = conn.put("x")
    job = conn.peek(jid)
    assert job.reserved is False
    job.delete()
    assert conn.peek(jid) is None


@pytest.mark.parametrize("method,counter", [("release", "cmd-release"), ("bury", "cmd-bury"),
                                            ("touch", "cmd-touch")])
def test_job_methods_do_nothing_unless_reserved(conn, method, counter):
    jid = conn.put("x", priority=5)
    job = conn.peek(jid)
    before = conn.stats()[counter]
    assert getattr(job, method)() is None
    assert conn.stats()[counter] == before
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"]) == ("ready", 5)
    job = conn.reserve(timeout=0)
    getattr(job, method)()
    assert conn.stats()[counter] == before + 1


def test_job_release_and_bury_keep_priority(conn):
    jid = conn.put("x", priority=42)
    job = conn.reserve(timeout=0)
    job.release()
    assert job.reserved is False
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"]) == ("ready", 42)
    job = conn.reserve(timeout=0)
    job.bury()
    assert job.reserved is False
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"]) == ("buried", 42)


def test_job_priority_none_keeps_priority_without_yaml_parsing(make_conn, tube):
    for mode in (False, lambda text: text.split("\n")):
        c = make_conn(parse_yaml=mode)
        c.use(tube)
        c.watch(tube)
        c.ignore("default")
        jid = c.put("x", priority=42)
        c.reserve(timeout=0).release()
        c.reserve(timeout=0).bury()
        c.kick_job(jid)
        assert "pri: 42\n" in make_conn(parse_yaml=False).stats_job(jid)
        c.delete(jid)


def test_job_explicit_priority_zero(conn):
    jid = conn.put("x", priority=42)
    conn.reserve(timeout=0).release(priority=0)
    assert conn.stats_job(jid)["pri"] == 0
    job = conn.reserve(timeout=0)
    job.release(priority=17)
    assert conn.stats_job(jid)["pri"] == 17
    conn.reserve(timeout=0).bury(priority=0)
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"]) == ("buried", 0)


def test_job_release_delay(conn):
    jid = conn.put("x", priority=3)
    conn.reserve(timeout=0).release(delay=50)
    s = conn.stats_job(jid)
    assert (s["state"], s["delay"], s["pri"]) == ("delayed", 50, 3)


def test_job_kick_touch_stats(conn):
    jid = conn.put("x", ttr=100)
    job = conn.reserve(timeout=0)
    assert job.touch() is None
    assert job.stats()["state"] == "reserved"
    job.bury()
    assert job.stats()["state"] == "buried"
    assert job.kick() is None
    assert job.stats()["state"] == "ready"
    assert set(job.stats()) == set(conn.stats_job(jid))
    assert job.stats()["id"] == jid
    job.delete()
    with pytest.raises(CommandFailed) as info:
        job.stats()
    assert info.value.args == ("stats-job", "NOT_FOUND", [])
    with pytest.raises(CommandFailed) as info:
        job.kick()
    assert info.value.args == ("kick-job", "NOT_FOUND", [])


def test_job_release_of_a_lost_job_raises(conn):
    jid = conn.put("x")
    job = conn.reserve(timeout=0)
    conn.delete(jid)
    with pytest.raises(CommandFailed) as info:
        job.release(priority=1)
    assert info.value.args == ("release", "NOT_FOUND", [])


# -- Python 3 text --------------------------------------------------------------------

def test_put_bytes_like_bodies(conn, make_conn):
    raw = make_conn(encoding=None)
    for body in (b"bytes\r\n\x00\xff", bytearray(b"array"), memoryview(b"xviewx")[1:5], b"",
                 array.array("H", [1, 2, 3]), memoryview(array.array("i", [7]))):
        jid = conn.put(body)
        assert raw.peek(jid).body == bytes(body)


def test_put_str_uses_the_encoding(make_conn, tube):
    latin = make_conn(encoding="latin-1")
    latin.use(tube)
    raw = make_conn(encoding=None)
    jid = latin.put("é")
    assert raw.peek(jid).body == b"\xe9"
    assert latin.peek(jid).body == "é"
    utf8 = make_conn()
    assert utf8.peek(jid).body_bytes == b"\xe9"


def test_encoding_none_gives_bytes(make_conn, tube):
    c = make_conn(encoding=None)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    jid = c.put(b"\xff\x00")
    job = c.reserve(timeout=0)
    assert job.body == b"\xff\x00" and type(job.body) is bytes
    assert job.body_bytes == b"\xff\x00"
    assert type(c.peek(jid).body) is bytes


def no_put_happened(c, before):
    after = counters(c)
    assert after["cmd-put"] == before["cmd-put"]
    assert after["current-jobs-ready"] == before["current-jobs-ready"]
    assert after["total-jobs"] == before["total-jobs"]


@pytest.mark.parametrize("body", [123, None, ["x"], 1.5, {"a": 1}, object()], ids=repr)
def test_put_rejects_other_types_before_sending(conn, make_conn, body):
    observer = make_conn()
    before = counters(observer)
    with pytest.raises(TypeError) as info:
        conn.put(body)
    assert isinstance(info.value, BeanstalkcException)
    no_put_happened(observer, before)
    jid = conn.put("next")
    assert conn.peek(jid).body == "next"


def test_put_str_with_encoding_none_is_a_type_error(make_conn):
    c = make_conn(encoding=None)
    observer = make_conn()
    before = counters(observer)
    with pytest.raises(TypeError) as info:
        c.put("text")
    assert isinstance(info.value, BeanstalkcException)
    no_put_happened(observer, before)
    assert c.using() == "default"


def test_put_unencodable_str(make_conn):
    c = make_conn(encoding="ascii")
    observer = make_conn()
    before = counters(observer)
    with pytest.raises(ValueError) as info:
        c.put("é")
    assert isinstance(info.value, BeanstalkcException)
    no_put_happened(observer, before)
    assert c.using() == "default"


def test_undecodable_body_never_loses_the_job(conn):
    jid = conn.put(b"\xff\xfe not utf-8")
    job = conn.reserve(timeout=0)
    assert job.jid == jid
    with pytest.raises(UnicodeDecodeError):
        job.body
    assert job.body_bytes == b"\xff\xfe not utf-8"
    assert conn.stats_job(jid)["state"] == "reserved"
    job.bury()
    assert conn.stats_job(jid)["state"] == "buried"
    peeked = conn.peek_buried()
    assert peeked.jid == jid and peeked.body_bytes == b"\xff\xfe not utf-8"
    peeked.delete()
    assert conn.peek(jid) is None


def test_unknown_encoding_fails_at_construction(beanstalkd, make_conn):
    with pytest.raises(LookupError):
        make_conn(encoding="no-such-codec")


# -- beyond beanstalkc ----------------------------------------------------------------

def test_reserve_job(conn, make_conn):
    ready = conn.put("ready")
    delayed = conn.put("delayed", delay=100)
    buried = conn.put("buried", priority=0)
    conn.reserve_job(buried).bury()
    for jid, body in ((delayed, "delayed"), (buried, "buried"), (ready, "ready")):
        job = conn.reserve_job(jid)
        assert isinstance(job, Job)
        assert (job.jid, job.body, job.reserved) == (jid, body, True)
        assert conn.stats_job(jid)["state"] == "reserved"
    other = make_conn()
    with pytest.raises(CommandFailed) as info:          # reserved by someone else
        other.reserve_job(ready)
    assert info.value.args == ("reserve-job", "NOT_FOUND", [])
    with pytest.raises(CommandFailed) as info:
        conn.reserve_job(2 ** 63)
    assert info.value.args == ("reserve-job", "NOT_FOUND", [])


def wait_for_path(path, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "beanstalkd exited"
        assert time.monotonic() < deadline, "beanstalkd did not create %s" % path
        time.sleep(0.01)


@pytest.fixture
def unix_server(tmp_path):
    path = str(tmp_path / "b.sock")
    if len(path) > 100:
        pytest.skip("tmp path too long for a unix socket")
    proc = subprocess.Popen([find_beanstalkd(), "-l", "unix:" + path], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_path(path, proc)
        yield path
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("prefix", ["", "unix:"])
def test_unix_socket(impl, monkeypatch, unix_server, prefix):
    monkeypatch.setattr(Connection, "_core", impl)
    with Connection(prefix + unix_server) as c:
        jid = c.put("over unix")
        assert c.reserve(timeout=0).body == "over unix"
        c.delete(jid)
        assert c.stats()["current-connections"] >= 1
        assert unix_server in repr(c)
        c.use("u")
        c.reconnect()
        assert c.using() == "u"


def test_unix_socket_relative_path(impl, monkeypatch, unix_server):
    monkeypatch.setattr(Connection, "_core", impl)
    monkeypatch.chdir(os.path.dirname(unix_server))
    with Connection("unix:" + os.path.basename(unix_server)) as c:
        assert c.using() == "default"
        assert "path=" in repr(c)


def ipv6_loopback_port():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in Python")
    try:
        return free_port(socket.AF_INET6, "::1")
    except OSError as err:
        pytest.skip("cannot bind ::1: %s" % err)


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_ipv6(impl, monkeypatch, host):
    monkeypatch.setattr(Connection, "_core", impl)
    port = ipv6_loopback_port()
    proc = subprocess.Popen([find_beanstalkd(), "-l", "::1", "-p", str(port)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("::1", port), 0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "beanstalkd exited"
                assert time.monotonic() < deadline, "beanstalkd did not listen on ::1"
                time.sleep(0.01)
        with Connection(host, port) as c:
            assert c._proto.sock.family == socket.AF_INET6
            jid = c.put("v6")
            assert c.peek(jid).body == "v6"
    finally:
        proc.kill()
        proc.wait(10)


def silent(sock, peer):
    read_line(sock)
    peer.done.wait(10)


def test_socket_timeout_bounds_commands(fake):
    c = fake(silent, socket_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(SocketError) as info:
        c.stats()
    assert time.monotonic() - start < 5
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(SocketError):     # the timed-out connection is closed, not reused
        c.using()


def test_socket_timeout_bounds_a_reserve_beyond_its_wait(fake):
    c = fake(silent, socket_timeout=0.3)
    start = time.monotonic()
    with pytest.raises(SocketError):
        c.reserve(timeout=1)
    assert time.monotonic() - start < 6


def test_reserve_with_timeout_longer_than_socket_timeout(make_conn, tube):
    c = make_conn(socket_timeout=0.5)
    c.watch(tube)
    c.ignore("default")
    assert c.reserve(timeout=1) is None
    assert c.watching() == [tube]


def test_blocking_reserve_is_not_cut_by_socket_timeout(make_conn, tube):
    c = make_conn(socket_timeout=0.2)
    c.watch(tube)
    c.ignore("default")
    producer = make_conn()
    producer.use(tube)
    timer = threading.Timer(0.8, producer.put, ("late",))
    timer.start()
    try:
        job = c.reserve()
    finally:
        timer.join()
    assert job.body == "late"
    assert c._proto.sock.gettimeout() == 0.2     # ordinary commands are bounded again
    job.delete()


def test_tcp_nodelay(make_conn):
    c = make_conn()
    assert c._proto.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_with_statement_closes(beanstalkd, make_conn):
    make_conn()     # sets the core under test
    with Connection(beanstalkd.host, beanstalkd.port) as c:
        c.delete(c.put("x"))
    assert not c.connected
    with pytest.raises(SocketError):
        c.put("y")


def test_repr(make_conn, beanstalkd):
    c = make_conn()
    text = repr(c)
    assert "beanstalkc_fast" in text
    assert beanstalkd.host in text and str(beanstalkd.port) in text
    backend = "python" if c._core.__name__.endswith("_pyprotocol") else "cython"
    assert "backend=%r" % backend in text
    c.close()
    assert "beanstalkc_fast" in repr(c)


def test_close_twice_and_reconnect(make_conn, tube):
    c = make_conn()
    c.use(tube)
    assert c.close() is None
    assert c.close() is None
    with pytest.raises(SocketError):
        c.stats()
    c.connect()
    assert c.using() == "default"       # a fresh connection
    c.use(tube)
    c.reconnect()
    assert c.using() == tube


class HeldFailure:
    """Stands in for a connection's protocol object; holds back a failing call until ``release`` is set."""

    def __init__(self, proto):
        self.proto = proto
        self.sock = proto.sock
        self.release = threading.Event()

    def reserve(self, *args):
        try:
            return self.proto.reserve(*args)
        except BaseException:
            self.release.wait(10)
            raise


def test_close_from_another_thread_wakes_a_blocked_reserve(make_conn, tube):
    c = make_conn()
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    observer = make_conn()
    held = c._proto = HeldFailure(c._proto)
    out = []

    def consume():
        try:
            out.append(c.reserve())
        except BaseException as err:
            out.append(err)

    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.monotonic() + 10
    while observer.stats_tube(tube)["current-waiting"] == 0:
        assert time.monotonic() < deadline, "reserve never started waiting"
        time.sleep(0.01)
    c.close()

    def connect_then_let_the_old_call_fail():
        Connection.connect(c)
        held.release.set()

    # The woken reserve fails only after reconnect() opened the new socket: it must drop
    # its own, old socket, not the new one.
    c.connect = connect_then_let_the_old_call_fail
    c.reconnect()
    thread.join(10)
    assert not thread.is_alive(), "close() did not wake the blocked reserve"
    assert len(out) == 1 and isinstance(out[0], SocketError)
    assert c.connected
    assert c.using() == tube
    assert c.watching() == [tube]


def test_reconnect_restores_tubes(conn, tube):
    conn.watch(tube + "-2")
    assert conn.watching() == [tube, tube + "-2"]
    old = conn._proto.sock
    conn.reconnect()
    assert conn._proto.sock is not old
    assert conn.using() == tube
    assert conn.watching() == [tube, tube + "-2"]      # 'default' stays ignored; the order is kept
    jid = conn.put("x")
    assert conn.reserve(timeout=0).jid == jid


def test_reconnect_restores_default_when_watched(make_conn, tube):
    c = make_conn()
    c.watch(tube)
    c.reconnect()
    assert c.watching() == ["default", tube]
    assert c.using() == "default"


def test_server_restart_then_reconnect(private, tube):
    server = private()
    c = connect(private, server)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    server.stop()
    with pytest.raises(SocketError):
        c.stats()
    assert not c.connected
    with pytest.raises(SocketError):
        c.reconnect()               # still down
    server.start()
    c.reconnect()
    assert c.using() == tube
    assert c.watching() == [tube]


def test_reconnect_failing_midway_keeps_the_tubes_to_restore(private, tube, monkeypatch):
    server = private()
    c = connect(private, server)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    real_restore = Connection._restore

    def broken_restore(self, proto, using, watching):
        proto.sock.close()
        raise SocketError("connection lost while restoring")

    monkeypatch.setattr(Connection, "_restore", broken_restore)
    with pytest.raises(SocketError):
        c.reconnect()
    assert not c.connected
    monkeypatch.setattr(Connection, "_restore", real_restore)
    c.reconnect()
    assert c.using() == tube
    assert c.watching() == [tube]


def test_server_closing_the_connection(private):
    server = private()
    c = connect(private, server)
    assert c.put("x") == 1
    server.stop(kill=True)
    with pytest.raises(SocketError):
        c.put("y")
    assert not c.connected
    with pytest.raises(SocketError):
        c.stats()
    assert c.close() is None


def test_server_killed_during_reserve(private):
    server = private()
    c = connect(private, server)
    threading.Timer(0.3, server.stop, (True,)).start()
    with pytest.raises(SocketError):
        c.reserve()
    assert not c.connected


def test_connection_refused(impl, monkeypatch):
    monkeypatch.setattr(Connection, "_core", impl)
    port = free_port()
    with pytest.raises(SocketError) as info:
        Connection("127.0.0.1", port)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert isinstance(info.value, BeanstalkcException)


def test_connection_closed_by_peer_mid_reply(fake):
    def script(sock, peer):
        read_line(sock)
        sock.sendall(b"OK 100\r\n---\nname: partial")
    c = fake(script)
    with pytest.raises(SocketError):
        c.stats()
    assert not c.connected
    with pytest.raises(SocketError):
        c.stats()


def test_connection_reset_by_peer(fake):
    def script(sock, peer):
        read_line(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # close with RST
    c = fake(script)
    with pytest.raises(SocketError):
        c.stats()
    assert not c.connected


def test_connect_timeout_does_not_limit_a_reserve(make_conn, tube):
    # beanstalkc 0.4 left connect_timeout on the socket, so a long reserve failed; socket_timeout is separate.
    c = make_conn(connect_timeout=0.5)
    c.watch(tube)
    c.ignore("default")
    assert c.reserve(timeout=1) is None


def test_timeout_mid_reply_closes_the_connection(fake):
    def script(sock, peer):
        read_line(sock)
        sock.sendall(b"RESERVED 1 10\r\nabc")
        peer.done.wait(10)
    c = fake(script, socket_timeout=0.3)
    with pytest.raises(SocketError):
        c.reserve(timeout=0)
    assert not c.connected
    with pytest.raises(SocketError):   # never resumes the half-read reply
        c.reserve(timeout=0)


@pytest.mark.parametrize("reply", [b"INSERTED\r\n", b"INSERTED x\r\n"])
def test_malformed_but_framed_reply(fake, reply):
    # The line is framed, so the stream stays in sync: the command fails, the next one works.
    def script(sock, peer):
        read_line(sock)
        sock.sendall(reply)
        read_line(sock)
        sock.sendall(b"USING default\r\n")
        peer.done.wait(10)
    c = fake(script)
    with pytest.raises(UnexpectedResponse) as info:
        c.put("x")
    assert info.value.args[:2] == ("put", "INSERTED")
    assert c.using() == "default"


@pytest.mark.parametrize("reply", [b"RESERVED 1 zz\r\n", b"OK -1\r\n", b"\r\n", b"x" * 5000 + b"\r\n"])
def test_unparseable_reply_is_never_reused(fake, reply):
    def script(sock, peer):
        read_line(sock)
        sock.sendall(reply + b"USING default\r\n")
        peer.done.wait(10)
    c = fake(script)
    with pytest.raises(BeanstalkcException) as info:
        c.put("x")
    assert isinstance(info.value, (UnexpectedResponse, SocketError))
    assert not c.connected
    with pytest.raises(SocketError):
        c.using()


def test_socket_error_wrap():
    def ok(a, b=0):
        return a + b

    assert SocketError.wrap(ok, 1, b=2) == 3

    def fails():
        raise ConnectionResetError("reset")

    with pytest.raises(SocketError) as info:
        SocketError.wrap(fails)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert isinstance(info.value.args[0], ConnectionResetError)

    def other():
        raise KeyError("x")

    with pytest.raises(KeyError):
        SocketError.wrap(other)


def test_connected_property(make_conn):
    c = make_conn()
    assert c.connected
    c.close()
    assert not c.connected
