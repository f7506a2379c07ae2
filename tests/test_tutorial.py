"""The beanstalkc tutorial (TUTORIAL.mkd of beanstalkc 0.4), section by section, against a
fresh beanstalkd, so that job ids and tube lists are exactly the tutorial's.

Only the print syntax differs from the tutorial: this is the drop-in contract of SPEC §1.
"""
import time

import pytest

import beanstalkc_fast as beanstalkc
from beanstalkc_fast.testing import BeanstalkdServer


@pytest.fixture
def server(impl, monkeypatch):
    """A fresh beanstalkd (ids start at 1, only 'default' exists) for the core under test."""
    monkeypatch.setattr(beanstalkc.Connection, "_core", impl)
    with BeanstalkdServer() as srv:
        yield srv


@pytest.fixture
def beanstalk(server):
    c = beanstalkc.Connection(host=server.host, port=server.port)
    yield c
    c.close()


def test_getting_started(beanstalk):
    assert beanstalk.put("hey!") == 1
    job = beanstalk.reserve()
    assert job.body == "hey!"
    assert job.jid == 1
    job.delete()
    job = beanstalk.reserve(timeout=0)
    assert job is None


def test_tube_management(beanstalk):
    assert beanstalk.tubes() == ["default"]
    assert beanstalk.using() == "default"
    assert beanstalk.use("foo") == "foo"
    assert beanstalk.using() == "foo"
    assert beanstalk.tubes() == ["default", "foo"]
    assert beanstalk.use("default") == "default"
    assert beanstalk.tubes() == ["default"]         # an unused tube disappears

    assert beanstalk.watching() == ["default"]
    assert beanstalk.watch("bar") == 2
    assert beanstalk.watching() == ["default", "bar"]
    assert beanstalk.ignore("bar") == 1
    assert beanstalk.watching() == ["default"]
    assert beanstalk.ignore("default") == 1         # the last watched tube cannot be ignored
    assert beanstalk.watching() == ["default"]

    beanstalk.use("foo")
    beanstalk.watch("foo")
    beanstalk.ignore("default")
    assert beanstalk.put("yes!") == 1
    job = beanstalk.reserve()
    assert job.body == "yes!"
    assert job.stats()["tube"] == "foo"
    job.delete()


def test_statistics(beanstalk):
    assert beanstalk.put("ho?") == 1
    job = beanstalk.reserve()
    stats = job.stats()
    assert sorted(stats) == sorted(["id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file",
                                    "reserves", "timeouts", "releases", "buries", "kicks"])
    assert {k: stats[k] for k in ("id", "tube", "state", "pri", "delay", "ttr", "file", "reserves",
                                  "timeouts", "releases", "buries", "kicks")} == {
        "id": 1, "tube": "default", "state": "reserved", "pri": 2147483648, "delay": 0, "ttr": 120, "file": 0,
        "reserves": 1, "timeouts": 0, "releases": 0, "buries": 0, "kicks": 0}
    assert 0 <= stats["age"] <= 5 and 115 <= stats["time-left"] <= 120
    job.delete()

    tube = beanstalk.stats_tube("default")
    assert tube["name"] == "default"
    assert (tube["current-jobs-ready"], tube["current-jobs-reserved"], tube["total-jobs"]) == (0, 0, 1)
    assert tube["current-using"] == 1 and tube["current-watching"] == 1
    assert tube["cmd-delete"] == 1

    stats = beanstalk.stats()
    assert stats["current-connections"] == 1
    assert (stats["cmd-put"], stats["cmd-reserve"], stats["cmd-delete"], stats["total-jobs"]) == (1, 1, 1, 1)
    assert stats["current-tubes"] == 1
    assert isinstance(stats["version"], str) and isinstance(stats["uptime"], int)


def test_advanced_operation_delays(beanstalk):
    assert beanstalk.put("yes!", delay=1) == 1
    job = beanstalk.reserve(timeout=0)
    assert job is None
    job = beanstalk.peek_delayed()
    assert job.jid == 1 and job.reserved is False
    assert job.stats()["state"] == "delayed"
    job = beanstalk.reserve(timeout=5)      # the delay runs out meanwhile
    assert job.body == "yes!"
    assert job.stats()["state"] == "reserved"
    job.delete()


def test_advanced_operation_release_bury_kick(beanstalk):
    beanstalk.put("A")
    job = beanstalk.reserve()
    assert job.stats()["state"] == "reserved"
    job.release()
    assert job.stats()["state"] == "ready"

    job = beanstalk.reserve()
    job.bury()
    assert job.stats()["state"] == "buried"
    assert beanstalk.reserve(timeout=0) is None
    assert beanstalk.kick() == 1
    assert job.stats()["state"] == "ready"

    job = beanstalk.reserve()
    job.bury()
    job.kick()
    assert job.stats()["state"] == "ready"
    assert job.stats()["kicks"] == 2 and job.stats()["buries"] == 2 and job.stats()["releases"] == 1
    job = beanstalk.reserve()
    job.delete()


def test_inspecting_jobs(beanstalk):
    jid = beanstalk.put("hi!")
    job = beanstalk.peek(jid)
    assert job.body == "hi!" and job.reserved is False
    assert beanstalk.peek_ready().jid == jid
    assert beanstalk.peek_delayed() is None
    assert beanstalk.peek_buried() is None

    job = beanstalk.reserve()
    assert beanstalk.peek_ready() is None           # reserved jobs are not ready
    assert beanstalk.peek(jid).body == "hi!"        # but can be peeked at by id
    job.bury()
    assert beanstalk.peek_buried().jid == jid
    assert beanstalk.peek_buried().body == "hi!"

    peeked = beanstalk.peek(jid)
    peeked.release()                                # a peeked job is not reserved: nothing happens
    assert peeked.stats()["state"] == "buried"
    peeked.delete()                                 # delete works on any job
    assert beanstalk.peek(jid) is None
    assert beanstalk.peek_buried() is None


def test_job_priorities(beanstalk):
    beanstalk.put("foo", priority=42)
    beanstalk.put("bar", priority=21)
    beanstalk.put("qux", priority=21)
    bodies = []
    for _ in range(3):
        job = beanstalk.reserve()
        bodies.append(job.body)
        job.delete()
    assert bodies == ["bar", "qux", "foo"]      # urgent first, FIFO within a priority


def test_fin(beanstalk):
    beanstalk.close()
    beanstalk.close()
    with pytest.raises(beanstalkc.SocketError):
        beanstalk.put("after close")


def test_appendix_parse_yaml_false(server):
    beanstalk = beanstalkc.Connection(host=server.host, port=server.port, parse_yaml=False)
    try:
        assert beanstalk.tubes() == "---\n- default\n"
        text = beanstalk.stats_tube("default")
        assert isinstance(text, str)
        assert text.startswith("---\nname: default\ncurrent-jobs-urgent: 0\n")
        assert text.endswith("\n")
        assert beanstalk.watching() == "---\n- default\n"
        assert beanstalk.stats().startswith("---\n")
    finally:
        beanstalk.close()


def test_appendix_parse_yaml_callable(server):
    beanstalk = beanstalkc.Connection(host=server.host, port=server.port,
                                      parse_yaml=lambda text: text.split("\n"))
    try:
        assert beanstalk.tubes() == ["---", "- default", ""]
        lines = beanstalk.stats_tube("default")
        assert lines[:3] == ["---", "name: default", "current-jobs-urgent: 0"]
        assert lines[-1] == ""
    finally:
        beanstalk.close()


def test_delayed_job_becomes_ready(beanstalk):
    jid = beanstalk.put("later", delay=1)
    assert beanstalk.stats_job(jid)["state"] == "delayed"
    assert beanstalk.peek_ready() is None
    deadline = time.monotonic() + 5
    while beanstalk.peek_ready() is None:
        assert time.monotonic() < deadline, "the delayed job never became ready"
        time.sleep(0.1)
    assert beanstalk.stats_job(jid)["state"] == "ready"
