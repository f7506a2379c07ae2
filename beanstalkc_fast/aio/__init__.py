"""The asyncio client: the sync ``Connection`` API as coroutines, pipelined on one connection.

    from beanstalkc_fast import aio

    async with aio.connect('localhost', 11300) as conn:
        jid = await conn.put('hello')
        job = await conn.reserve(timeout=5)
        await job.delete()

Concurrent coroutines share one connection: each command is encoded and queued at once, in
call order, without waiting for earlier replies; the commands queued in one loop iteration go
out in one ``transport.write``; replies are handed to their callers in FIFO order. Bytes are
received straight into the protocol core's reader (an ``asyncio.BufferedProtocol``), commands are
built by the core's encoders and checks, and replies mean what the command table
(``_commands.py``) says, exactly as in the sync client.

Reserves run on consumer channels, sockets of this connection's own that watch the same tubes
(the first is opened at the first reserve), so that a reserve waiting for a job never holds up
the commands queued behind it. At most one reserve that may wait is at the server at a time; the
coroutines waiting for jobs queue behind it and take its jobs in turn. A channel that holds
reserved jobs never gets a waiting reserve (beanstalkd lets only the connection that reserved a
job delete, release, bury or touch it, and such commands must not wait behind a reserve), so a
waiting reserve may open one more channel while others hold jobs. ``delete``/``release``/
``bury``/``touch`` (and their ``*_many``) of a job reserved here go to the channel that holds it,
whether called on the Job or with its id.

beanstalkd cannot cancel a command: a cancelled or timed-out call keeps its place in the reply
queue and its reply is read and dropped, so the stream never desyncs. A put written before its
caller was cancelled still creates its job: ``on_orphan('put', jid)`` is called (default: a
warning on the ``beanstalkc_fast`` logger). A job reserved for a caller that is gone goes to the
next coroutine waiting for one, or is released at once with its own priority.
"""
from .connection import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR, Connection, Job, connect

__all__ = ["connect", "Connection", "Job", "Pool", "JobRef", "Worker", "DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_PRIORITY",
           "DEFAULT_TTR"]


def __getattr__(name):
    # aio.Pool (JobRef, aio.Worker) on first use: the pool's policy costs import time a plain client does not need.
    if name == "Pool":
        from .pool import Pool
        return Pool
    if name == "JobRef":
        from .._poolpolicy import JobRef
        return JobRef
    if name == "Worker":
        from .worker import Worker
        return Worker
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
