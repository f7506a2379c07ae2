"""The exception hierarchy of beanstalkc_fast.

Defined once, here, and imported by both protocol cores, so that the compiled
and the pure-Python backends raise the very same classes.
"""
__all__ = [
    "BeanstalkcException", "UnexpectedResponse", "CommandFailed", "DeadlineSoon",
    "SocketError", "ProtocolError", "InvalidArgument", "InvalidType", "BatchError", "PutAmbiguous", "CorruptJob",
]


class BeanstalkcException(Exception):
    """Base class of every exception raised by beanstalkc_fast."""


class UnexpectedResponse(BeanstalkcException):
    """The server sent a reply the command does not expect.

    ``args == (command, status, results)``, e.g. ``('put', 'BAD_FORMAT', [])``.
    """


class ProtocolError(UnexpectedResponse):
    """The reply stream could not be parsed (bad framing, oversized line).

    The connection that saw it is closed: its stream can no longer be trusted.
    """


class CommandFailed(BeanstalkcException):
    """The server refused a command with a documented failure status.

    ``args == (command, status, results)``, e.g. ``('stats-job', 'NOT_FOUND', [])``.
    """


class DeadlineSoon(BeanstalkcException):
    """A job reserved by this connection is about to exceed its TTR."""


class SocketError(BeanstalkcException):
    """Any socket failure: refused, reset, closed by the peer, timed out.

    The underlying ``OSError`` (if any) is ``args[0]`` and ``__cause__``.
    After a failure in a batch, ``results`` holds the outcomes confirmed
    before it (a prefix of the batch); otherwise it is ``None``.
    """

    results = None

    @staticmethod
    def wrap(wrapped_function, *args, **kwargs):
        """Call ``wrapped_function(*args, **kwargs)``, turning ``OSError`` into ``SocketError``."""
        try:
            return wrapped_function(*args, **kwargs)
        except OSError as err:
            raise SocketError(err) from err


class InvalidArgument(BeanstalkcException, ValueError):
    """An argument is out of range or malformed; nothing was sent.

    When raised by a batch fed from an iterator after some windows were already
    sent, ``results`` holds the outcomes of those windows (else ``None``).
    """

    results = None


class InvalidType(BeanstalkcException, TypeError):
    """An argument has the wrong type; nothing was sent.

    ``results`` has the same meaning as for :class:`InvalidArgument`.
    """

    results = None


class BatchError(BeanstalkcException):
    """Some items of a batch failed; every reply was read before raising.

    ``results`` has one entry per item sent, in order: the item's value (job id,
    ``Job``, ``None``) or the exception for that item. ``errors`` lists
    ``(index, exception)`` for the failed items only.
    """

    def __init__(self, results):
        self.results = results
        self.errors = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        first = self.errors[0] if self.errors else None
        super().__init__("%d of %d items failed; first at index %s: %r" % (
            len(self.errors), len(results), first and first[0], first and first[1]))


class PutAmbiguous(SocketError):
    """A put was written to a pool's server but its reply was lost: the job may or may not
    have been inserted there. ``server`` names the server; ``args == (server, error)``.

    A pool with ``at_least_once=True`` sends such a put again elsewhere instead (a job may
    then exist twice).
    """

    def __init__(self, server, error=None):
        super().__init__(server, error)
        self.server = server

    def __str__(self):
        return "put to server %s may have been inserted: its reply was lost (%s)" % (self.server, self.args[1])


class CorruptJob(UnexpectedResponse):
    """The server handed out a job whose body is corrupt: the reply's length framing held but
    the two bytes after the body were not CRLF (beanstalkd 1.12 restarted from its binlog after
    ``kill -9`` can hand out a job whose body bytes are all zeros). The stream stays in step
    and the connection usable; a reserved job stays reserved by this connection, so
    ``bury(jid)`` or ``delete(jid)`` works. ``jid`` is the job's id;
    ``args == (command, status, results)`` as for any unexpected reply.
    """

    def __init__(self, cmd, status, results, jid=None):
        super().__init__(cmd, status, results)
        self.jid = jid
