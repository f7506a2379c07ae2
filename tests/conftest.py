"""Shared fixtures: both protocol cores in one run, a real beanstalkd, a fresh tube per test.

The session server is the ``beanstalkd`` fixture of ``beanstalkc_fast.testing`` (a pytest11
plugin; registered here too so an uninstalled checkout works).
"""
import importlib.util
import itertools
import os
from pathlib import Path

import pytest

import beanstalkc_fast
from beanstalkc_fast import _pyprotocol
from beanstalkc_fast.testing import BeanstalkdNotFound, BeanstalkdServer, find_beanstalkd

try:
    from beanstalkc_fast import _cprotocol
except ImportError:
    _cprotocol = None


REQUIRE_EXTENSION = os.environ.get("BEANSTALKC_FAST_REQUIRE_EXTENSION", "") not in ("", "0")

IMPLS = [
    pytest.param(_pyprotocol, id="python"),
    pytest.param(_cprotocol, id="cython",
                 marks=pytest.mark.skipif(_cprotocol is None and not REQUIRE_EXTENSION,
                                          reason="compiled extension not built")),
]


@pytest.fixture(params=IMPLS)
def impl(request):
    """The protocol core module under test: _pyprotocol or _cprotocol."""
    if request.param is None:
        pytest.fail("BEANSTALKC_FAST_REQUIRE_EXTENSION is set but the compiled extension did not import")
    return request.param


@pytest.fixture(scope="session")
def beanstalkd_binary():
    """The beanstalkd binary, for tests that start servers of their own. Missing, they skip like
    the ``beanstalkd`` fixture's users, and under CI they fail the same way."""
    try:
        return find_beanstalkd()
    except BeanstalkdNotFound as err:
        if os.environ.get("CI"):
            pytest.fail(str(err) + " (CI is set: a missing server is a failure)")
        pytest.skip(str(err))


@pytest.fixture
def binlog_server(beanstalkd_binary, tmp_path):
    """A beanstalkd of this test's own with its binlog, to kill (-9) and start again on the
    same port: what it confirmed is still there."""
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    server = BeanstalkdServer(binary=beanstalkd_binary, args=["-b", str(binlog)]).start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def servers(beanstalkd_binary, tmp_path):
    """Three beanstalkd servers of this test's own, each with its binlog (for the pools)."""
    started = []
    for i in range(3):
        binlog = tmp_path / ("binlog%d" % i)
        binlog.mkdir()
        started.append(BeanstalkdServer(binary=beanstalkd_binary, args=["-b", str(binlog)]).start())
    yield started
    for server in started:
        server.stop(kill=True)


_tube_counter = itertools.count()


@pytest.fixture
def tube(request):
    """A tube name unique to this test."""
    return "t%d-%d" % (os.getpid(), next(_tube_counter))


@pytest.fixture
def make_conn(impl, beanstalkd, monkeypatch):
    """Factory of connections that use the core under test; all closed at teardown."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", impl)
    conns = []

    def make(**kw):
        c = beanstalkd.connect(**kw)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


@pytest.fixture
def conn(make_conn, tube):
    """A connection using and watching only a fresh tube."""
    c = make_conn()
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    return c


def pytest_configure(config):
    # The plugin is auto-loaded when the package is installed; register it for a bare checkout.
    if not config.pluginmanager.has_plugin("beanstalkc_fast"):
        from beanstalkc_fast import testing
        config.pluginmanager.register(testing, "beanstalkc_fast")


# -- the asyncio client: both cores, on the stock loop and on uvloop when it is installed --

try:
    import uvloop
except ImportError:
    uvloop = None


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"),
                        pytest.param("uvloop", id="uvloop", marks=pytest.mark.skipif(
                            uvloop is None, reason="uvloop is not installed"))])
def arun(request, impl, monkeypatch):
    """``arun(coro)`` runs a coroutine on a fresh event loop (stock or uvloop) with the
    asyncio client on the core under test; a hung coroutine fails after 60 s."""
    import asyncio
    from beanstalkc_fast import aio
    monkeypatch.setattr(aio.Connection, "_core", impl)
    new_loop = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro, timeout=60):
        loop = new_loop()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    return run


# -- the comparison harness, benchmarks/compare.py: in the checkout, not in the package --

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def bench_harness():
    """benchmarks/compare.py loaded as a module (by path: it is no package's module); skips when
    the tests run without the checkout's benchmarks/ (e.g. against a wheel, from elsewhere)."""
    path = BENCHMARKS / "compare.py"
    if not path.exists():
        pytest.skip("%s is absent: the benchmark harness is not shipped in the package" % path)
    spec = importlib.util.spec_from_file_location("beanstalkc_fast_benchmarks_compare", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
