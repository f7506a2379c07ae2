"""pytest-benchmark suites for both protocol cores, side by side.

    python -m pytest benchmarks                       # measure
    python -m pytest benchmarks --benchmark-disable   # run each once (CI: keeps them from rotting)

Files are named ``bench_*.py`` and collected by ``pytest_collect_file`` below, so they
never run with the unit tests in ``tests/``. The cross-client comparison is
``python benchmarks/compare.py``.
"""
import itertools
import os

import pytest

import beanstalkc_fast
from beanstalkc_fast import _backend, _pyprotocol
from beanstalkc_fast.testing import BeanstalkdNotFound, BeanstalkdServer

_cprotocol = _backend._load_compiled()     # None when not built (or stale)

BACKENDS = [
    pytest.param(_pyprotocol, id="python"),
    pytest.param(_cprotocol, id="cython",
                 marks=pytest.mark.skipif(_cprotocol is None, reason="compiled extension not built")),
]


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(params=BACKENDS)
def core(request):
    """The protocol core module: _pyprotocol or _cprotocol."""
    return request.param


@pytest.fixture(scope="session")
def server():
    """A beanstalkd on a free loopback port for the session (a deliberate copy of the
    tests' fixture: the benchmarks share no conftest with the tests)."""
    try:
        srv = BeanstalkdServer()
    except BeanstalkdNotFound as err:
        if os.environ.get("CI"):
            pytest.fail(str(err))
        pytest.skip(str(err))
    with srv:
        yield srv


_tubes = itertools.count()


@pytest.fixture
def conn(core, server, monkeypatch):
    """A bytes-mode connection with the core under test, on a fresh tube it leaves empty."""
    monkeypatch.setattr(beanstalkc_fast.Connection, "_core", core)
    tube = "bench-%d-%d" % (os.getpid(), next(_tubes))
    c = server.connect(encoding=None)
    c.use(tube)
    c.watch(tube)
    c.ignore("default")
    yield c
    c.close()
    drain(server, tube)


def drain(server, tube):
    """Delete every job left in ``tube`` (benchmark rounds leave jobs behind)."""
    c = server.connect(encoding=None)
    try:
        c.watch(tube)
        c.ignore("default")
        while True:
            jobs = c.reserve_many(500, 0)   # beanstalkd's delete slows down with many reserved
            if not jobs:
                break
            c.delete_many(jobs)
    finally:
        c.close()
