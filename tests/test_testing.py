"""The pytest plugin of beanstalkc_fast.testing: the ``beanstalkd`` fixture and BeanstalkdServer."""
import os
import subprocess
import sys
import textwrap

import beanstalkc_fast
from beanstalkc_fast.testing import BeanstalkdServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))


def test_fixture_exposes_a_running_server(beanstalkd):
    assert beanstalkd.host == "127.0.0.1" and isinstance(beanstalkd.port, int) and beanstalkd.running
    with beanstalkd.connect(socket_timeout=5) as conn:
        assert conn.host == beanstalkd.host and conn.port == beanstalkd.port
        assert conn.stats()["version"] == "1.12"


def test_server_restarts_on_the_same_port(tmp_path):
    with BeanstalkdServer(args=["-b", str(tmp_path)]) as server:
        conn = server.connect(socket_timeout=5)
        jid = conn.put("durable")
        port = server.port
        server.restart(kill=True)
        assert server.port == port and server.running
        assert server.connect(socket_timeout=5).peek(jid).body == "durable"
    assert not server.running


def _run_plugin(tmp_path, ci):
    (tmp_path / "test_uses_fixture.py").write_text(textwrap.dedent("""
        def test_needs_server(beanstalkd):
            beanstalkd.connect().stats()
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BEANSTALKD")}
    env.update(PATH="", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=ROOT)
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "beanstalkc_fast.testing", "-rs", "-q",
                           "-p", "no:cacheprovider", str(tmp_path)], cwd=str(tmp_path), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)


def test_missing_binary_skips_with_a_clear_message(tmp_path):
    proc = _run_plugin(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout and "beanstalkd not found" in proc.stdout


def test_missing_binary_under_ci_is_an_error(tmp_path):
    proc = _run_plugin(tmp_path, ci=True)
    assert proc.returncode != 0, proc.stdout
    assert "beanstalkd not found" in proc.stdout and "CI is set" in proc.stdout
