"""Every code example of the guides (docs/guides/*.md) and of the README runs against a real beanstalkd.

Each guide runs in order in one namespace, against servers of its own (fresh, so job ids start at
1). The examples use the addresses a reader would (``localhost:11300``, ``10.0.0.1:11300``...):
connections to those are sent to servers started here, one per address, on free ports.
A ```python block runs unless the line before it is ``% skip: <reason>``; a ```sh block runs
only when the line before it is ``% run`` (``beanstalkc-fast`` is then the CLI, on the page's
server). After a block, its ``test_*`` functions are called with the ``beanstalkd`` fixture's
object (the server of ``localhost:11300``).
"""
import asyncio
import inspect
import linecache
import pathlib
import re
import socket
import subprocess
import sys

import pytest

from beanstalkc_fast.testing import BeanstalkdServer

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
PAGES = GUIDES + [p for p in [ROOT / "README.md"] if p.exists()]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LOCAL = ("localhost", "127.0.0.1", "::1")


def blocks(path):
    """(line, language, code) of the blocks of a guide that run, in order."""
    text = path.read_text(encoding="utf-8")
    for m in FENCE.finditer(text):
        lang, code = m.group(1), m.group(2)
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        if lang == "python" and not before.startswith("% skip:"):
            yield line, lang, code
        elif lang == "sh" and before == "% run":
            yield line, lang, code


class Servers:
    """One beanstalkd per address an example connects to, started at its first connection."""

    def __init__(self):
        self.servers = {}

    def get(self, host, port):
        key = ("localhost" if host in LOCAL else host, int(port))
        if key[1] != 11300:
            return None                 # not an example address: connect for real (e.g. a refused port)
        if key not in self.servers:
            self.servers[key] = BeanstalkdServer()
            self.servers[key].start()
        return self.servers[key]

    def close(self):
        for server in self.servers.values():
            server.stop(kill=True)


@pytest.fixture
def servers(monkeypatch):
    found = Servers()
    real_sync = socket.create_connection
    real_async = asyncio.BaseEventLoop.create_connection

    def create_connection(address, *args, **kw):
        server = found.get(*address[:2])
        return real_sync((server.host, server.port) if server else address, *args, **kw)

    async def loop_create_connection(self, factory, host=None, port=None, *args, **kw):
        server = found.get(host, port)
        if server:
            host, port = server.host, server.port
        return await real_async(self, factory, host, port, *args, **kw)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", loop_create_connection)
    yield found
    found.close()


def run_sh(code, server, line, path):
    cli = '"%s" -m beanstalkc_fast --host %s --port %d' % (sys.executable, server.host, server.port)
    script = 'set -euo pipefail\nbeanstalkc-fast() { %s "$@"; }\n%s' % (cli, code)
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "%s:%d: exit %d\n%s%s" % (path.name, line, proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize("path", PAGES, ids=[p.stem for p in PAGES])
def test_guide_examples(path, servers):
    ns = {"__name__": "docs_" + path.stem.replace("-", "_")}
    ran = 0
    for line, lang, code in blocks(path):
        if lang == "sh":
            run_sh(code, servers.get("localhost", 11300), line, path)
        else:
            before = set(ns)
            where = "%s:%d" % (path.name, line)        # tracebacks: guide:line of the block, then its line
            linecache.cache[where] = (len(code), None, code.splitlines(True), where)
            exec(compile(code, where, "exec"), ns)
            for name in sorted(set(ns) - before):
                fn = ns[name]
                if name.startswith("test_") and callable(fn):
                    kw = {"beanstalkd": servers.get("localhost", 11300)}
                    result = fn(**{k: kw[k] for k in inspect.signature(fn).parameters})
                    if inspect.iscoroutine(result):
                        asyncio.run(result)
        ran += 1
    assert ran, "%s has no example that runs" % path.name


@pytest.mark.skipif(not GUIDES, reason="no docs/ next to tests/")
def test_every_guide_is_listed():
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    for path in GUIDES:
        assert "guides/" + path.stem in index, path.name
