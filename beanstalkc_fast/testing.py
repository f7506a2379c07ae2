"""A pytest plugin with a real beanstalkd for your tests.

Installed as the ``pytest11`` entry point ``beanstalkc_fast``. It provides the session
fixture ``beanstalkd``: a server started on a free loopback port, with ``.host``,
``.port``, ``.connect(**kw)``, ``.stop()`` and ``.start()``. The binary is looked up as
``$BEANSTALKD`` or ``beanstalkd`` on ``PATH``; when it is missing the tests using the
fixture are skipped, except when ``CI`` is set, where that is an error.

It can also be used without pytest::

    with BeanstalkdServer() as server:
        conn = server.connect()
"""
import os
import shutil
import socket
import subprocess
import time

__all__ = ["BeanstalkdServer", "BeanstalkdNotFound", "find_beanstalkd", "beanstalkd"]


class BeanstalkdNotFound(RuntimeError):
    """No beanstalkd binary was found."""


def find_beanstalkd():
    """Return the path of the beanstalkd binary, or raise BeanstalkdNotFound."""
    path = os.environ.get("BEANSTALKD") or shutil.which("beanstalkd")
    if not path:
        raise BeanstalkdNotFound("beanstalkd not found: install it (apt-get install beanstalkd, "
                                 "brew install beanstalkd) or set BEANSTALKD=/path/to/beanstalkd")
    return path


def _free_port(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BeanstalkdServer:
    """A beanstalkd process on a free loopback port (or a fixed ``port``).

    ``args`` are extra command-line arguments (e.g. ``["-b", binlog_dir]``,
    ``["-z", "1024"]``).
    """

    def __init__(self, host="127.0.0.1", port=None, args=(), binary=None):
        self.host = host
        self.port = port or _free_port(host)
        self.args = list(args)
        self.binary = binary or find_beanstalkd()
        self.process = None

    def __repr__(self):
        return "<BeanstalkdServer %s:%d %s>" % (self.host, self.port, "running" if self.running else "stopped")

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self, timeout=10.0):
        """Start the server (on the same port as before) and wait until it accepts connections."""
        if self.running:
            return self
        self.process = subprocess.Popen([self.binary, "-l", self.host, "-p", str(self.port)] + self.args,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                self.process = None
                raise RuntimeError("beanstalkd exited at start: %s" % err)
            try:
                socket.create_connection((self.host, self.port), 0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("beanstalkd did not listen on %s:%d" % (self.host, self.port))
                time.sleep(0.01)

    def stop(self, kill=False):
        """Stop the server: SIGTERM, or SIGKILL with ``kill=True``."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill() if kill else proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()

    def restart(self, kill=False):
        """Stop, then start on the same port."""
        self.stop(kill)
        return self.start()

    def connect(self, **kw):
        """Return a ``beanstalkc_fast.Connection`` to this server."""
        from .connection import Connection
        return Connection(self.host, self.port, **kw)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


try:
    import pytest
except ImportError:     # the plugin needs pytest; the server class does not
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="session")
    def beanstalkd():
        """A real beanstalkd on a free loopback port for the whole session."""
        try:
            server = BeanstalkdServer()
        except BeanstalkdNotFound as err:
            if os.environ.get("CI"):
                pytest.fail(str(err) + " (CI is set: a missing server is a failure)")
            pytest.skip(str(err))
        server.start()
        yield server
        server.stop()
