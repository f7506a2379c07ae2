"""Backend selection: BACKEND, the env switches, the CORE_API guard, and API parity of the two cores."""
import ast
import importlib
import inspect
import os
import subprocess
import sys
import types

import pytest

import beanstalkc_fast
from beanstalkc_fast import _backend, _pyprotocol

try:
    from beanstalkc_fast import _cprotocol
except ImportError:
    _cprotocol = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))
REQUIRE = os.environ.get("BEANSTALKC_FAST_REQUIRE_EXTENSION", "") not in ("", "0")
PURE = os.environ.get("BEANSTALKC_FAST_PUREPYTHON", "") not in ("", "0")
needs_c = pytest.mark.skipif(_cprotocol is None, reason="compiled extension not built")


def run_python(code, **env):
    full = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full.pop("BEANSTALKC_FAST_PUREPYTHON", None)
    full.update(env)
    # cwd too: `python -c` puts the working directory first on sys.path.
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_subprocesses_import_the_package_under_test():
    # An installed wheel tested from its checkout: the children must not pick up the uncompiled tree.
    assert run_python("import beanstalkc_fast; print(beanstalkc_fast.__file__)") == beanstalkc_fast.__file__


def test_backend_value():
    assert beanstalkc_fast.BACKEND in ("cython", "python")
    expected = "cython" if (_cprotocol is not None and not PURE) else "python"
    assert beanstalkc_fast.BACKEND == expected
    assert _backend.impl is (_cprotocol if expected == "cython" else _pyprotocol)
    assert beanstalkc_fast.Connection._core is _backend.impl


@pytest.mark.skipif(not REQUIRE, reason="BEANSTALKC_FAST_REQUIRE_EXTENSION is not set")
def test_required_extension_is_in_use():
    assert _cprotocol is not None, "the compiled core did not import"
    if not PURE:
        assert beanstalkc_fast.BACKEND == "cython"


def test_purepython_env_forces_python():
    assert run_python("import beanstalkc_fast; print(beanstalkc_fast.BACKEND)",
                      BEANSTALKC_FAST_PUREPYTHON="1") == "python"


@needs_c
def test_default_is_cython_when_built():
    assert run_python("import beanstalkc_fast; print(beanstalkc_fast.BACKEND)") == "cython"
    assert run_python("import beanstalkc_fast; print(beanstalkc_fast.BACKEND)",
                      BEANSTALKC_FAST_PUREPYTHON="0") == "cython"


@pytest.mark.parametrize("pure", ["0", "1"])
def test_import_leaves_yaml_and_socket_for_later(pure):
    # yaml: only a stats reply the built-in parser does not know needs it; socket: the
    # first connect imports it (it costs twice this whole package).
    code = "import sys, beanstalkc_fast; print('yaml' in sys.modules, 'socket' in sys.modules)"
    assert run_python(code, BEANSTALKC_FAST_PUREPYTHON=pure) == "False False"


def test_stale_extension_is_treated_as_absent(monkeypatch):
    stale = types.ModuleType("beanstalkc_fast._cprotocol")
    stale.CORE_API = _pyprotocol.CORE_API + 1
    monkeypatch.setitem(sys.modules, "beanstalkc_fast._cprotocol", stale)
    monkeypatch.setattr(beanstalkc_fast, "_cprotocol", stale, raising=False)
    assert _backend._load_compiled() is None
    stale.CORE_API = _pyprotocol.CORE_API
    assert _backend._load_compiled() is stale
    del stale.CORE_API
    assert _backend._load_compiled() is None


def test_missing_extension_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "beanstalkc_fast._cprotocol", None)     # import raises ImportError
    monkeypatch.delattr(beanstalkc_fast, "_cprotocol", raising=False)
    assert _backend._load_compiled() is None


def public_names(module):
    return sorted(n for n in dir(module) if not n.startswith("_") and not isinstance(getattr(module, n), types.ModuleType)
                  and getattr(getattr(module, n), "__module__", module.__name__) in (module.__name__, None, "builtins"))


PUBLIC = ["AioChannel", "BIG_BODY", "Batch", "CORE_API", "CORRUPT", "KIND_BODY", "KIND_INSERTED", "KIND_JOB", "KIND_REPLY", "KIND_STATUS", "MAX_LINE",
          "Protocol", "READ_SIZE", "RESERVE_WINDOW", "ReplyReader", "UINT32_MAX", "UINT64_MAX", "WINDOW_BYTES",
          "WINDOW_ITEMS", "check_body", "check_jid", "check_tube", "check_uint32", "encode_job", "encode_put",
          "job_windows", "pairs", "parse_yaml", "pipe", "put_chunks", "put_command", "put_windows", "reserve_alone"]
METHODS = {"AioChannel": ["buffer_updated", "connection_made", "eof_received", "flush", "get_buffer",
                          "pause_writing", "put", "resume_writing", "send", "send_batch"],
           "ReplyReader": ["buffer_updated", "clear", "feed", "get_buffer", "gets", "take"],
           "Batch": ["feed"],
           "Protocol": ["attach", "buffered_reply", "call", "jobs_many", "put_many", "read_batch", "read_job", "read_put",
                        "read_reply", "read_status", "reserve", "reserve_many", "send", "send_chunks", "write"]}


def test_pure_public_names():
    assert [n for n in PUBLIC if not hasattr(_pyprotocol, n)] == []
    for cls, methods in METHODS.items():
        assert all(callable(getattr(getattr(_pyprotocol, cls), m)) for m in methods)


@needs_c
def test_compiled_matches_pure():
    for name in PUBLIC:
        py, c = getattr(_pyprotocol, name), getattr(_cprotocol, name)
        if isinstance(py, int):
            assert py == c, name
        elif inspect.isfunction(py):
            assert str(inspect.signature(py)) == str(inspect.signature(c)), name
    for cls, methods in METHODS.items():
        for m in methods:
            py = inspect.signature(getattr(getattr(_pyprotocol, cls), m))
            c = inspect.signature(getattr(getattr(_cprotocol, cls), m))
            assert list(py.parameters) == list(c.parameters), (cls, m)
        # a cdef class's signature comes from the clinic-style first line of its docstring
        assert str(inspect.signature(getattr(_pyprotocol, cls))) == str(inspect.signature(getattr(_cprotocol, cls)))
    # public module-level names of the compiled module are exactly the pure one's
    c_public = {n for n in dir(_cprotocol) if not n.startswith("_") and n not in ("InvalidArgument", "InvalidType",
                                                                                   "ProtocolError", "SocketError")}
    assert c_public == set(PUBLIC)


@needs_c
def test_shared_exception_classes():
    for name in ("InvalidArgument", "InvalidType", "ProtocolError", "SocketError"):
        assert getattr(_cprotocol, name) is getattr(beanstalkc_fast, name)


def test_stub_matches_pure():
    path = os.path.join(os.path.dirname(_pyprotocol.__file__), "_cprotocol.pyi")
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    methods = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
            args = [a.arg for a in node.args.args]
            assert args == list(inspect.signature(getattr(_pyprotocol, node.name)).parameters), node.name
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            methods[node.name] = sorted(n.name for n in node.body if isinstance(n, ast.FunctionDef)
                                        and not n.name.startswith("__"))
            for n in node.body:
                if isinstance(n, ast.FunctionDef):
                    py = inspect.signature(getattr(getattr(_pyprotocol, node.name), n.name))
                    assert [a.arg for a in n.args.args] == list(py.parameters), (node.name, n.name)
        elif isinstance(node, ast.AnnAssign):
            names.add(node.target.id)
    assert sorted(names) == PUBLIC
    assert methods == METHODS


def test_backend_module_reload_with_env(monkeypatch):
    # The selection runs at import time: reloading _backend under the env switch picks the pure core.
    monkeypatch.setenv("BEANSTALKC_FAST_PUREPYTHON", "1")
    try:
        mod = importlib.reload(_backend)
        assert mod.BACKEND == "python" and mod.impl is _pyprotocol
    finally:
        monkeypatch.delenv("BEANSTALKC_FAST_PUREPYTHON")
        importlib.reload(_backend)


def test_version_is_one_release_number_everywhere():
    # __version__, the installed metadata and the newest CHANGELOG heading name the same release.
    import re
    from importlib import metadata
    version = beanstalkc_fast.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert metadata.version("beanstalkc_fast") == version
    changelog = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "CHANGELOG.md")
    if not os.path.exists(changelog):
        pytest.skip("no CHANGELOG.md beside these tests")
    with open(changelog, encoding="utf-8") as f:
        headings = re.findall(r"^## (\S+)", f.read(), re.M)
    assert headings and headings[0] == version, headings[:1]
