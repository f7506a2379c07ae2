"""A job's data, without I/O: what the blocking and the asyncio ``Job`` share.

Each driver's ``Job`` builds on ``JobData`` and adds its own methods (plain calls or
coroutines); neither subclasses the other.
"""
from ._defaults import JOB_BODY, JOB_ID
from .exceptions import InvalidType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union
    from ._defaults import Body

_UNDECODED = object()     # _body before its first decode


class JobData:
    """``conn``, ``jid``, ``reserved``, ``body`` (decoded on first access) and ``body_bytes``."""

    _repr_name = "beanstalkc_fast.Job"

    def __init__(self, conn: "Any", jid: int, body: "Optional[Body]", reserved: bool = True) -> None:
        self.conn = conn
        self.jid = jid
        self.reserved = reserved
        self._body: "Any"
        if body.__class__ is bytes:     # the common case first: a job from the server
            self._body = _UNDECODED
            self.body_bytes: "Optional[bytes]" = body
        elif body is None:              # a Job built from an id alone, to call stats() or delete() on it
            self._body = None
            self.body_bytes = None
        elif isinstance(body, str):
            self._body = body
            encoding = getattr(conn, "_encoding", None) or "utf-8"
            self.body_bytes = body.encode(encoding)
        else:
            try:    # bytes-like only: bytes(3) would be three zero bytes, not the body 3
                self.body_bytes = memoryview(body).tobytes()
            except TypeError:
                raise InvalidType("job body must be str, bytes-like or None, not %s" % type(body).__name__) from None
            self._body = _UNDECODED

    @classmethod
    def _maker(cls, conn: "Any", *extra: "Any") -> "Any":
        """The ``job`` of a core's Batch of reserves: reserved jobs of this class made by the
        core, without a call of ``__init__`` per job, with the attributes it would set, in its
        order (then the ``(name, value)`` pairs of ``extra``). With ``encoding=None`` the body
        is its bytes already (``body`` would decode nothing)."""
        body = JOB_BODY if getattr(conn, "_encoding", "utf-8") is None else _UNDECODED
        return cls, (("conn", conn), ("jid", JOB_ID), ("reserved", True), ("_body", body),
                     ("body_bytes", JOB_BODY)) + extra

    @property
    def body(self) -> "Union[str, bytes, None]":
        """The body, decoded with the connection's encoding on first access (``bytes`` with
        ``encoding=None``); raises ``UnicodeDecodeError`` when it does not decode."""
        if self._body is _UNDECODED:
            encoding = getattr(self.conn, "_encoding", "utf-8")
            self._body = self.body_bytes if encoding is None else self.body_bytes.decode(encoding)  # type: ignore
        return self._body

    @body.setter
    def body(self, value: "Optional[Body]") -> None:
        JobData.__init__(self, self.conn, self.jid, value, self.reserved)

    def __repr__(self) -> str:
        raw = None if self.body_bytes is None else self.body_bytes[:40]
        return "<%s jid=%d reserved=%s body=%r>" % (self._repr_name, self.jid, self.reserved, raw)
