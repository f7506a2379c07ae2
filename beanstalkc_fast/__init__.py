"""beanstalkc_fast: a fast, dependable beanstalkd client, drop-in for beanstalkc 0.4.

    import beanstalkc_fast as beanstalkc

``BACKEND`` tells which protocol core is in use: ``'cython'`` or ``'python'``.
"""
from ._backend import BACKEND
from ._retry import Retry
from .connection import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR, Connection, Job
from .exceptions import (BatchError, BeanstalkcException, CommandFailed, CorruptJob, DeadlineSoon, InvalidArgument,
                         InvalidType, ProtocolError, PutAmbiguous, SocketError, UnexpectedResponse)

#: The package's version.
__version__ = "0.1.0"

__all__ = [
    "BACKEND", "Connection", "Job", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_PRIORITY", "DEFAULT_TTR",
    "BeanstalkcException", "UnexpectedResponse", "CommandFailed", "DeadlineSoon", "SocketError",
    "ProtocolError", "InvalidArgument", "InvalidType", "BatchError", "PutAmbiguous", "CorruptJob", "Retry", "Pool", "JobRef",
    "Worker", "__version__",
]


def __getattr__(name):
    # Pool, JobRef and Worker are imported on first use: the pool's imports (selectors, socket...) cost import time.
    if name == "Pool":
        from .pool import Pool
        return Pool
    if name == "JobRef":
        from ._poolpolicy import JobRef
        return JobRef
    if name == "Worker":
        from .worker import Worker
        return Worker
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
