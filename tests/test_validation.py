"""Client-side validation (SPEC §2): a bad argument raises an error that is both a
BeanstalkcException and a ValueError (TypeError for a wrong type), nothing reaches the
server, and the stream stays in sync.
"""
import pytest

from beanstalkc_fast import BeanstalkcException, Job
from beanstalkc_fast.testing import BeanstalkdServer

BAD_TUBES = [
    ("space", "a b"),
    ("crlf", "a\r\nb"),
    ("injection", "x\r\nput 0 0 0 1"),
    ("injection-bytes", b"x\r\nput 0 0 0 1\r\nx\r\nuse y"),
    ("lf", "a\n"),
    ("tab", "a\tb"),
    ("nul", "a\x00b"),
    ("too-long", "a" * 201),
    ("non-ascii", "t\u00fcbe"),
    ("non-ascii-bytes", "t\u00fcbe".encode()),
    ("leading-dash", "-a"),
    ("empty", ""),
    ("colon", "a:b"),
    ("star", "a*"),
]
WRONG_TYPE_TUBES = [("none", None), ("int", 5), ("list", ["a"]), ("bytearray", bytearray(b"a"))]

TUBE_CALLS = {
    "use": lambda c, name: c.use(name),
    "watch": lambda c, name: c.watch(name),
    "ignore": lambda c, name: c.ignore(name),
    "stats_tube": lambda c, name: c.stats_tube(name),
    "pause_tube": lambda c, name: c.pause_tube(name, 0),
}

# The 32-bit unsigned arguments; jid is a job the test reserved.
INT_CALLS = {
    "put-priority": lambda c, jid, v: c.put("x", priority=v),
    "put-delay": lambda c, jid, v: c.put("x", delay=v),
    "put-ttr": lambda c, jid, v: c.put("x", ttr=v),
    "release-priority": lambda c, jid, v: c.release(jid, priority=v),
    "release-delay": lambda c, jid, v: c.release(jid, delay=v),
    "bury-priority": lambda c, jid, v: c.bury(jid, priority=v),
    "kick-bound": lambda c, jid, v: c.kick(v),
    "pause-tube-delay": lambda c, jid, v: c.pause_tube("default", v),
    "job-release-priority": lambda c, jid, v: Job(c, jid, b"").release(priority=v),
    "job-release-delay": lambda c, jid, v: Job(c, jid, b"").release(priority=1, delay=v),
    "job-bury-priority": lambda c, jid, v: Job(c, jid, b"").bury(priority=v),
}
BAD_INTS = [(-1, ValueError), (2 ** 32, ValueError), (2 ** 64, ValueError), (1.5, TypeError), (1.0, TypeError),
            ("1", TypeError), (b"1", TypeError), (None, TypeError)]

JID_CALLS = {
    "peek": lambda c, v: c.peek(v),
    "delete": lambda c, v: c.delete(v),
    "release": lambda c, v: c.release(v),
    "bury": lambda c, v: c.bury(v),
    "touch": lambda c, v: c.touch(v),
    "kick_job": lambda c, v: c.kick_job(v),
    "stats_job": lambda c, v: c.stats_job(v),
    "reserve_job": lambda c, v: c.reserve_job(v),
}
BAD_JIDS = [(-1, ValueError), (2 ** 64, ValueError), ("x", TypeError), ("1", TypeError), (1.5, TypeError),
            (None, TypeError), (b"1", TypeError)]

BAD_TIMEOUTS = [(-1, ValueError), (2 ** 32, ValueError), (-0.5, ValueError), (float("nan"), ValueError),
                (float("inf"), ValueError), ("1", TypeError), (b"1", TypeError)]


@pytest.fixture(scope="module")
def beanstalkd(beanstalkd):
    """A server of this module's own, so that its command counters count this module's commands only.

    Built on the session fixture, so a missing binary skips (fails under CI) the same way.
    """
    with BeanstalkdServer(binary=beanstalkd.binary) as server:
        yield server


def snapshot(observer, tube):
    """What a sent command would change: the server's command counters (except the observer's own
    stats and stats-tube), and the job counts and counters of the test's own tube.

    Nothing else: job counts of other tubes move on their own (a delayed job matures, a closed
    connection's reserved job goes back to ready) and would make the comparison flaky.
    """
    stats = observer.stats()
    counters = {k: v for k, v in stats.items()
                if k.startswith("cmd-") and k not in ("cmd-stats", "cmd-stats-tube")}
    own = observer.stats_tube(tube)
    counters.update(("tube " + k, v) for k, v in own.items()
                    if k.startswith(("current-jobs", "total-jobs", "cmd-")))
    return counters


@pytest.fixture
def observer(make_conn):
    return make_conn()


def assert_rejected(call, kind):
    with pytest.raises(kind) as info:
        call()
    assert isinstance(info.value, BeanstalkcException)
    return info.value


def assert_in_sync(conn, tube):
    """The next commands get their own answers: nothing was left half-sent."""
    assert conn.using() == tube
    assert conn.watching() == [tube]
    jid = conn.put(b"sync")
    job = conn.reserve(timeout=0)
    assert (job.jid, job.body) == (jid, "sync")
    job.delete()


@pytest.mark.parametrize("call", list(TUBE_CALLS))
@pytest.mark.parametrize("name", [v for _, v in BAD_TUBES], ids=[k for k, _ in BAD_TUBES])
def test_bad_tube_names(conn, observer, tube, call, name):
    tubes = observer.tubes()
    before = snapshot(observer, tube)
    assert_rejected(lambda: TUBE_CALLS[call](conn, name), ValueError)
    assert snapshot(observer, tube) == before
    assert observer.tubes() == tubes
    assert_in_sync(conn, tube)


@pytest.mark.parametrize("call", list(TUBE_CALLS))
@pytest.mark.parametrize("name", [v for _, v in WRONG_TYPE_TUBES], ids=[k for k, _ in WRONG_TYPE_TUBES])
def test_tube_names_of_a_wrong_type(conn, observer, tube, call, name):
    before = snapshot(observer, tube)
    assert_rejected(lambda: TUBE_CALLS[call](conn, name), TypeError)
    assert snapshot(observer, tube) == before
    assert_in_sync(conn, tube)


@pytest.mark.parametrize("name", ["a" * 200, "aZ09-+/;.$_()", "(", "$", "_", "+plus", b"bytes-name"])
def test_valid_tube_names_work(make_conn, name):
    c = make_conn()
    text = name.decode() if isinstance(name, bytes) else name
    assert c.use(name) == text
    assert c.using() == text
    assert c.watch(name) == 2
    assert c.stats_tube(name)["name"] == text
    assert c.pause_tube(name, 0) is None
    assert c.ignore(name) == 1
    c.reconnect()
    assert c.using() == text


# Job.release/bury take priority=None to mean "keep the job's priority".
INT_CASES = [pytest.param(call, value, kind, id="%s-%r" % (call, value))
             for call in INT_CALLS for value, kind in BAD_INTS
             if not (value is None and call in ("job-release-priority", "job-bury-priority"))]


@pytest.mark.parametrize("call,value,kind", INT_CASES)
def test_bad_integers(conn, observer, tube, call, value, kind):
    jid = conn.put("x", priority=9)
    job = conn.reserve(timeout=0)
    before = snapshot(observer, tube)
    assert_rejected(lambda: INT_CALLS[call](conn, jid, value), kind)
    assert snapshot(observer, tube) == before
    s = conn.stats_job(jid)
    assert (s["state"], s["pri"]) == ("reserved", 9)
    job.delete()
    assert_in_sync(conn, tube)


def test_integer_bounds_are_accepted(conn):
    top = 2 ** 32 - 1
    jid = conn.put("x", priority=top, ttr=top)
    s = conn.stats_job(jid)
    assert (s["pri"], s["ttr"]) == (top, top)
    jid = conn.put("y", priority=0, delay=0, ttr=0)
    assert conn.stats_job(jid)["pri"] == 0
    assert conn.stats_job(jid)["ttr"] == 1      # beanstalkd raises a zero ttr to one second
    conn.reserve_job(jid)
    conn.release(jid, top, 0)
    assert conn.stats_job(jid)["pri"] == top
    assert conn.kick(top) == 0
    assert conn.pause_tube(conn.using(), 0) is None


def test_integer_like_values_are_accepted(conn):
    class Index:
        def __init__(self, value):
            self.value = value

        def __index__(self):
            return self.value

    jid = conn.put("x", priority=Index(7))
    assert conn.stats_job(jid)["pri"] == 7
    assert conn.stats_job(Index(jid))["id"] == jid      # an __index__ object is a job id too


@pytest.mark.parametrize("call", list(JID_CALLS))
@pytest.mark.parametrize("value,kind", BAD_JIDS, ids=[repr(v) for v, _ in BAD_JIDS])
def test_bad_job_ids(conn, observer, tube, call, value, kind):
    before = snapshot(observer, tube)
    assert_rejected(lambda: JID_CALLS[call](conn, value), kind)
    assert snapshot(observer, tube) == before
    assert_in_sync(conn, tube)


@pytest.mark.parametrize("value,kind", BAD_TIMEOUTS, ids=[repr(v) for v, _ in BAD_TIMEOUTS])
def test_bad_reserve_timeouts(conn, observer, tube, value, kind):
    conn.put("waiting")
    before = snapshot(observer, tube)
    assert_rejected(lambda: conn.reserve(timeout=value), kind)
    assert snapshot(observer, tube) == before
    assert conn.reserve(timeout=0).body == "waiting"
    assert_in_sync(conn, tube)


def test_job_objects_are_accepted_as_ids(conn):
    jid = conn.put("x")
    job = conn.peek(jid)
    assert conn.stats_job(job)["id"] == jid
    assert conn.peek(job).jid == jid
    conn.delete(job)
    assert conn.peek(jid) is None


def test_largest_job_id_is_sent(conn):
    assert conn.peek(2 ** 64 - 1) is None   # valid, just not there


def test_injection_through_a_body_is_impossible(conn, observer, tube):
    # A body is length-prefixed: whatever it holds, it is one job.
    body = b"x\r\nput 0 0 0 1\r\ny\r\nuse evil\r\n"
    before = snapshot(observer, tube)
    jid = conn.put(body)
    after = snapshot(observer, tube)
    assert after["cmd-put"] == before["cmd-put"] + 1
    assert after["cmd-use"] == before["cmd-use"]
    assert conn.peek(jid).body_bytes == body
    conn.delete(jid)
    assert_in_sync(conn, tube)
