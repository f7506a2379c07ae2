"""The single place where the protocol core is chosen.

``BEANSTALKC_FAST_PUREPYTHON`` (any non-empty value but ``0``) forces the pure-Python core;
otherwise the compiled ``_cprotocol`` is used when it imports and speaks the expected
``CORE_API`` (a stale in-place build is treated as absent).
"""
import os

CORE_API = 12   # the core contract this Python layer speaks; both cores define the same value


def _load_compiled():
    try:
        from . import _cprotocol
    except ImportError:
        return None
    if getattr(_cprotocol, "CORE_API", None) != CORE_API:
        return None
    return _cprotocol


if os.environ.get("BEANSTALKC_FAST_PUREPYTHON", "") not in ("", "0"):
    _compiled = None
else:
    _compiled = _load_compiled()

if _compiled is None:
    from . import _pyprotocol as impl   # imported only when needed: it costs import time
else:
    impl = _compiled
#: The protocol core in use: ``'cython'`` (compiled) or ``'python'`` (its pure-Python twin).
BACKEND = "cython" if _compiled is not None else "python"

Protocol = impl.Protocol
ReplyReader = impl.ReplyReader
check_uint32 = impl.check_uint32
check_jid = impl.check_jid
check_tube = impl.check_tube
check_body = impl.check_body
encode_put = impl.encode_put
put_chunks = impl.put_chunks
put_command = impl.put_command
encode_job = impl.encode_job
put_windows = impl.put_windows
job_windows = impl.job_windows
parse_yaml = impl.parse_yaml


def backend_name(core):
    """``'cython'`` or ``'python'`` for a core module (tests swap a client's core)."""
    return "python" if core.__name__.endswith("_pyprotocol") else "cython"
