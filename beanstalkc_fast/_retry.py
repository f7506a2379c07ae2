"""``Retry``: which commands go out again after their connection broke, and when.

One decision for every driver: a command is sent again on a new connection only where that
cannot change the queue twice. A put whose bytes may have reached the server is never sent
again (a second job), nor a ``kick`` (more jobs kicked than asked); everything else is safe to
repeat (use/watch/ignore, the lists and stats, peeks, reserves: the jobs a dead connection had
reserved go back to the ready queue; delete/release/bury/touch/kick-job of a job: the server
answers for the job as it is now, NOT_FOUND once the reservation died), and any command whose
bytes were never written is simply sent.
"""
import random
import time

from .exceptions import InvalidArgument, InvalidType, PutAmbiguous, SocketError

__all__ = ["Retry"]


def _check_seconds(value, what, allow_none):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidArgument("%s must be a number of seconds >= 0%s, not %r"
                              % (what, " or None" if allow_none else "", value))
    return float(value)


class Retry:
    """How a connection recovers from a broken socket: ``Retry(attempts=3, backoff=None,
    deadline=None)``, for ``Connection(..., retry=...)`` and ``aio.connect(..., retry=...)``.

    - ``attempts``: how many times, after the first failure, to reconnect (restoring the used
      and watched tubes) and send the command again; then ``SocketError``.
    - ``backoff``: seconds to wait before attempt ``n`` (1, 2, ...): a callable taking ``n``,
      or None for exponential backoff with jitter (about 0.1 s, 0.2 s, 0.4 s ... up to 5 s).
    - ``deadline``: seconds from the first failure after which no attempt starts (None: no
      limit).

    What is sent again: everything that cannot change the queue twice (use, watch, ignore, the
    lists and stats, peeks, reserves, the job commands: the server answers for the job as it is
    now) and any command whose bytes were never written. A put whose bytes may have reached the
    server raises ``PutAmbiguous`` instead (it is never sent twice), a ``kick`` ``SocketError``.
    The batches are sent again only when nothing of them was written (``reserve_many``: always).
    """

    def __init__(self, attempts: int = 3, backoff: "object" = None, deadline: "object" = None) -> None:
        if attempts.__class__ is not int or attempts < 0:
            raise InvalidArgument("attempts must be an int >= 0, not %r" % (attempts,))
        if backoff is not None and not callable(backoff):
            raise InvalidType("backoff must be a callable of the attempt number, or None")
        self.attempts = attempts
        self.backoff = backoff if backoff is not None else exponential
        self.deadline = _check_seconds(deadline, "deadline", True)

    def __repr__(self) -> str:
        return "Retry(attempts=%d, backoff=%r, deadline=%r)" % (self.attempts, self.backoff, self.deadline)

    def delays(self):
        """The wait before each new attempt, as long as the attempts and the deadline last."""
        start = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            wait = _check_seconds(self.backoff(attempt), "backoff(%d)" % attempt, False)
            if self.deadline is not None:
                left = self.deadline - (time.monotonic() - start)
                if left <= 0:
                    return
                wait = min(wait, left)
            yield wait


def exponential(attempt, base=0.1, cap=5.0):
    """``base * 2**(attempt-1)`` capped at ``cap``, between half of it and all of it (jitter:
    clients that lost one server together do not come back in step)."""
    full = min(cap, base * 2 ** (attempt - 1))
    return full / 2 + random.uniform(0, full / 2)


def check(retry):
    """The ``retry=`` option: None or a Retry."""
    if retry is not None and not isinstance(retry, Retry):
        raise InvalidType("retry must be a beanstalkc_fast.Retry or None, not %s" % type(retry).__name__)
    return retry


def resendable(data):
    """Whether the command whose bytes are ``data`` (bytes, or a list of buffers whose first is
    its line) may go out again after its bytes may have reached the server."""
    head = data if data.__class__ is bytes else bytes(data[0][:5])
    return not (head.startswith(b"put ") or head.startswith(b"kick "))


def written_and_lost(data, err, server):
    """The error for a command whose bytes may have reached a server that is gone, when it
    may not go out again: ``PutAmbiguous`` for a put, the error itself otherwise."""
    head = data if data.__class__ is bytes else bytes(data[0][:4])
    if head.startswith(b"put "):
        exc = PutAmbiguous(server, err)
        exc.__cause__ = err
        return exc
    return err


def gave_up(err, attempts):
    exc = SocketError("connection lost; %d attempts to reconnect failed (last: %s)" % (attempts, err))
    exc.__cause__ = err
    return exc
