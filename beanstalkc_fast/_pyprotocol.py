"""Pure-Python protocol core: the twin of the compiled ``_cprotocol``.

It deals only in bytes and ints. Its sections, in the order of the compiled core's
``.pxi`` files, are:

- **checks**: argument checks, run before a byte is encoded;
- **encoders**: single commands and whole windows of puts / job-id commands, returned
  as chunks (a list of buffers) without sending anything;
- **reader**: a sans-I/O reply reader (``feed`` or ``get_buffer``/``buffer_updated``,
  then ``gets`` or the typed ``take``);
- **yaml**: a parser for the small YAML documents beanstalkd sends;
- **blocking driver**: ``Protocol``, the only code here that touches a socket;
- **asyncio**: ``AioChannel``, the reply dispatch and coalesced writes of one asyncio socket
  (the asyncio client subclasses it as its ``BufferedProtocol``; the loop does the I/O).

Reply *meaning* (which status is an error) lives in the Python layer (``_commands.py``).
Everything here must behave exactly as ``src/_cprotocol.pyx`` does.
"""
import re
import sys
from collections import deque
from itertools import chain, repeat
from operator import attrgetter

from ._defaults import JOB_BODY as _JOB_BODY, JOB_ID as _JOB_ID, RESERVE0 as _RESERVE0, give_way as _give_way
from .exceptions import InvalidArgument, InvalidType, ProtocolError, SocketError

CORE_API = 12

UINT32_MAX = 2 ** 32 - 1
UINT64_MAX = 2 ** 64 - 1
MAX_LINE = 1024             # beanstalkd reply lines are < 100 bytes; anything longer is garbage
READ_SIZE = 65536
WINDOW_ITEMS = 1024         # commands per pipelined window; ~32 KB of put replies at most
WINDOW_BYTES = 256 * 1024   # end a window once its commands reach this size
RESERVE_WINDOW = 256        # reserves per window: their replies carry bodies of unknown size
BIG_BODY = 16 * 1024        # bodies from this size on are chunks of their own (scatter-gather), not copied

# What ReplyReader.take() expects of each reply, and what it appends for it.
KIND_REPLY = 0      # any reply: (status, args, body)
KIND_INSERTED = 1   # INSERTED <id>: the id (int)
KIND_STATUS = 2     # the bare status given: None
KIND_JOB = 3        # RESERVED (or the status given, e.g. FOUND) <id> <n> and a body: (id, body)
KIND_BODY = 4       # OK <n> and a body: the body (bytes)

# The status of a reply whose body was not followed by CRLF (its length framing held, so the
# stream is still in step): (CORRUPT, (status, *args), body). The space makes it a status no
# server can send; _commands maps it (CorruptJob for a job).
CORRUPT = b"CORRUPT BODY"

# Statuses whose reply line announces a body, and the index of its size among the args.
_BODY_SIZE_ARG = {b"RESERVED": 1, b"FOUND": 1, b"OK": 0}
# Replies taken in runs: INSERTED ids of up to 20 digits (longer ones go the generic way,
# which accepts any length under MAX_LINE), and bare success statuses.
_INSERTED_RUN = re.compile(rb"(?:INSERTED [0-9]{1,20}\r\n)+")
_INSERTED_ID = re.compile(rb"INSERTED ([0-9]{1,20})\r\n")
_OK_RUNS: dict = {}   # status -> regex of a run of it
_TUBE_RE = re.compile(rb"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}\Z")
_CRLF = b"\r\n"


# -- argument checks ----------------------------------------------------------

def check_uint32(value, what):
    """Return ``value`` as an int in 0..2**32-1, else raise InvalidType/InvalidArgument."""
    if value.__class__ is not int:
        if isinstance(value, float) or not hasattr(value, "__index__"):
            raise InvalidType("%s must be an integer, not %s" % (what, type(value).__name__))
        value = value.__index__()
    if value < 0 or value > UINT32_MAX:
        raise InvalidArgument("%s must be in 0..%d, got %d" % (what, UINT32_MAX, value))
    return value


def check_jid(value):
    """Return a job id (an int, or an object with an int ``jid``) as an int in 0..2**64-1."""
    if value.__class__ is not int:
        if hasattr(value, "jid") and not isinstance(value, (str, bytes)):
            value = value.jid
        if value.__class__ is not int:
            if isinstance(value, float) or not hasattr(value, "__index__"):
                raise InvalidType("job id must be an integer, not %s" % type(value).__name__)
            value = value.__index__()
    if value < 0 or value > UINT64_MAX:
        raise InvalidArgument("job id must be in 0..%d, got %d" % (UINT64_MAX, value))
    return value


def check_tube(name):
    """Return a valid tube name as bytes, else raise InvalidType/InvalidArgument."""
    if isinstance(name, str):
        try:
            raw = name.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidArgument("tube name must be ASCII: %r" % (name,)) from None
    elif isinstance(name, bytes):
        raw = name
    else:
        raise InvalidType("tube name must be str, not %s" % type(name).__name__)
    if _TUBE_RE.match(raw) is None:
        raise InvalidArgument(
            "invalid tube name %r: 1..200 of A-Z a-z 0-9 - + / ; . $ _ ( ), not starting with -" % (name,))
    return raw


def check_body(body, encoding):
    """Return a job body as bytes-like: str is encoded, bytes-like passes as is."""
    cls = body.__class__
    if cls is bytes:
        return body
    if cls is str or isinstance(body, str):
        if encoding is None:
            raise InvalidType("job body is str but the connection has encoding=None; pass bytes")
        try:
            return body.encode(encoding)
        except UnicodeError as err:
            raise InvalidArgument("job body cannot be encoded with %s: %s" % (encoding, err)) from None
    if isinstance(body, bytearray):
        return body
    try:    # a memoryview too: its len() counts items, not bytes, unless cast to "B"
        return memoryview(body).cast("B")
    except TypeError:
        raise InvalidType("job body must be str or bytes-like, not %s" % cls.__name__) from None


# -- encoders: bytes to send, nothing sent -----------------------------------------

def encode_put(body, priority, delay, ttr):
    """Return the bytes of a ``put`` command for a bytes-like body (arguments are checked)."""
    if not (priority.__class__ is int and delay.__class__ is int and ttr.__class__ is int
            and 0 <= priority <= UINT32_MAX and 0 <= delay <= UINT32_MAX and 0 <= ttr <= UINT32_MAX):
        priority = check_uint32(priority, "priority")
        delay = check_uint32(delay, "delay")
        ttr = check_uint32(ttr, "ttr")
    return b"put %d %d %d %d\r\n%b\r\n" % (priority, delay, ttr, len(body), body)


def put_chunks(body, priority, delay, ttr):
    """A ``put`` as a list of buffers: one, or for a body of BIG_BODY bytes or more the
    head, the body itself (not copied) and the CRLF, for a scatter-gather write."""
    if len(body) < BIG_BODY:
        return [encode_put(body, priority, delay, ttr)]
    return [b"put %d %d %d %d\r\n" % (check_uint32(priority, "priority"), check_uint32(delay, "delay"),
                                       check_uint32(ttr, "ttr"), len(body)), body, _CRLF]


def put_command(body, priority, delay, ttr, encoding):
    """One whole ``put``, checked: its bytes, or for a body of BIG_BODY bytes or more a list of
    buffers as put_chunks() gives (``Protocol.write`` takes either)."""
    body = check_body(body, encoding)
    if len(body) < BIG_BODY:
        return encode_put(body, priority, delay, ttr)
    return put_chunks(body, priority, delay, ttr)


def encode_job(verb, jid):
    """Return ``<verb> <jid>\\r\\n`` (delete, touch, kick-job, peek, ...) for a checked job id."""
    if len(verb) > 20:
        raise InvalidArgument("job command verb too long: %r" % (verb,))
    return b"%s %d\r\n" % (verb, check_jid(jid))


def put_windows(items, priority, delay, ttr, encoding, window=WINDOW_ITEMS):
    """Return an iterator of ``(chunks, n)``: windows of put commands for ``items`` (bodies or
    ``(body[, priority[, delay[, ttr]]])`` tuples), ``n`` commands in the buffers ``chunks``.

    A list or tuple is checked whole now, before anything can be sent; an iterator is checked
    window by window, as each is encoded. Bodies of BIG_BODY bytes or more are chunks of their
    own; every other chunk is a new object the caller may keep.
    """
    try:    # bytes items with valid defaults need no per-item checks: their head is this % size
        head_of = b"put %d %d %d %%d\r\n" % (check_uint32(priority, "priority"), check_uint32(delay, "delay"),
                                             check_uint32(ttr, "ttr"))
    except (InvalidArgument, InvalidType):
        head_of = None      # each item then reports the bad default, as the compiled core does
    window = max(window, 1)
    args = (head_of, priority, delay, ttr, encoding, window)
    if isinstance(items, (list, tuple)):
        if head_of is not None and set(map(type, items)) <= {bytes}:
            return _put_windows_of_bytes(items, *args)
        for i, item in enumerate(items):        # check the whole sequence first
            if item.__class__ is not bytes or head_of is None:
                _put_command(item, priority, delay, ttr, encoding, i)
    return _put_windows(iter(items), 0, *args)


def job_windows(items, template, args, window=WINDOW_ITEMS):
    """Return an iterator of ``(chunks, n)``: windows of ``template % ((jid,) + args)`` for the
    job ids (ints, or objects with an int ``jid``) of ``items``, checked as put_windows does."""
    window = max(window, 1)
    if isinstance(items, (list, tuple)):
        # its first len() items, by index (as the compiled core reads them): a subclass's own
        # __iter__, or a jid property that appends to the list, does not change the batch
        items = items[:] if items.__class__ is list or items.__class__ is tuple else [
            items[i] for i in range(len(items))]
        jids = _valid_jids(items)
        k = template.find(b"%d")
        if jids is not None and k >= 0 and b"%" not in template[:k]:
            line = template[:k] + b"%d" + (template[k + 2:] % args).replace(b"%", b"%%")
            return _job_windows_of_ids(jids, line, window)
        for i, item in enumerate(items):
            _index_error(check_jid, item, i)
    return _job_windows(iter(items), template, args, window)


def _put_windows(it, count, head_of, priority, delay, ttr, encoding, window):
    # count: the index of the first item of it, for error messages
    while True:
        chunks = []
        buf = bytearray()
        big = 0     # bytes of the big bodies held in chunks: they count towards the window too
        n = 0
        for item in it:
            if item.__class__ is bytes and head_of is not None:
                body = item
                head = head_of % len(body)
            else:
                head, body = _put_command(item, priority, delay, ttr, encoding, count)
            count += 1
            n += 1
            if len(body) >= BIG_BODY:
                buf += head
                chunks.append(buf)
                chunks.append(body)
                big += len(body)
                buf = bytearray(_CRLF)
            else:
                buf += head
                buf += body
                buf += _CRLF
            if n >= window or len(buf) + big >= WINDOW_BYTES:
                break
        if not n:
            return
        if buf:
            chunks.append(buf)
        yield chunks, n


def _put_windows_of_bytes(items, head_of, priority, delay, ttr, encoding, window):
    # Each window of small bodies is encoded by one join over C-level iterators.
    for start in range(0, len(items), window):
        part = items[start:start + window]
        sizes = list(map(len, part))
        if max(sizes) < BIG_BODY and sum(sizes) + 64 * len(sizes) < WINDOW_BYTES:
            heads = map(head_of.__mod__, sizes)
            yield [b"".join(chain.from_iterable(zip(heads, part, repeat(_CRLF))))], len(part)
        else:
            yield from _put_windows(iter(part), start, head_of, priority, delay, ttr, encoding, window)


def _job_windows(it, template, args, window):
    count = 0
    while True:
        buf = bytearray()
        n = 0
        for item in it:
            buf += template % ((_index_error(check_jid, item, count),) + args)
            count += 1
            n += 1
            if n >= window:
                break
        if not n:
            return
        yield [buf], n


def _job_windows_of_ids(jids, line, window):
    # valid int job ids and a line with one %d left
    for start in range(0, len(jids), window):
        part = jids[start:start + window]
        yield [b"".join(map(line.__mod__, part))], len(part)


_get_jid = attrgetter("jid")


def _valid_jids(items):
    """The job ids of a sequence as ints, when every item is an int in range or (as check_jid
    takes it) an object whose ``jid`` is one; else None, and check_jid goes item by item."""
    types = set(map(type, items))
    if types <= {int}:
        jids = items
    elif any(issubclass(t, (int, str, bytes)) for t in types):
        return None
    else:
        try:
            jids = list(map(_get_jid, items))
        except AttributeError:
            return None
        if not set(map(type, jids)) <= {int}:
            return None
    if jids and (min(jids) < 0 or max(jids) > UINT64_MAX):
        return None
    return jids


def _index_error(check, item, index):
    try:
        return check(item)
    except (InvalidArgument, InvalidType) as err:
        raise type(err)("item %d: %s" % (index, err)) from None


def _put_command(item, priority, delay, ttr, encoding, index):
    """Return (command line, body) for one put_many item."""
    try:
        if isinstance(item, tuple):
            n = len(item)
            if n == 0 or n > 4:
                raise InvalidArgument("a put_many tuple is (body[, priority[, delay[, ttr]]]), got %d items" % n)
            body = item[0]
            if n > 1:
                priority = item[1]
                if n > 2:
                    delay = item[2]
                    if n > 3:
                        ttr = item[3]
        else:
            body = item
        body = check_body(body, encoding)
        head = b"put %d %d %d %d\r\n" % (check_uint32(priority, "priority"), check_uint32(delay, "delay"),
                                          check_uint32(ttr, "ttr"), len(body))
    except (InvalidArgument, InvalidType) as err:
        raise type(err)("item %d: %s" % (index, err)) from None
    return head, body


# -- reader: replies out of buffered bytes, no I/O ------------------------------------

class ReplyReader:
    """Sans-I/O reply parser.

    Bytes go in by ``feed(data)`` (for ``data_received``) or by ``get_buffer(hint)``
    and ``buffer_updated(n)`` (for an ``asyncio.BufferedProtocol``). Replies come out
    by ``gets()``, one ``(status, args, body)`` at a time, or by the typed ``take()``,
    which settles a whole run of expected replies in one call. Both leave incomplete
    data buffered ("need more bytes") and raise ProtocolError on malformed framing. A body
    whose two bytes after it are not CRLF is consumed (its size held) and given by gets() as
    ``(CORRUPT, (status, *args), body)``; take() stops at it as at any other kind.
    """

    def __init__(self, max_line=MAX_LINE):
        self._buf = bytearray()
        self._pos = 0
        self._max_line = max_line
        self._scratch = None    # the buffer handed out by get_buffer()
        self._lent = -1         # its size until buffer_updated(); -1: none handed out

    def __len__(self):
        return len(self._buf) - self._pos

    def feed(self, data):
        """Append received bytes (any bytes-like object)."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def get_buffer(self, sizehint=-1):
        """Return a writable buffer of at least ``sizehint`` bytes to receive into; hand the
        count received to buffer_updated() before asking for another buffer."""
        # Received bytes land in a scratch buffer and are copied to the reply buffer by
        # buffer_updated() (the compiled core hands out its reply buffer itself).
        size = sizehint if sizehint > READ_SIZE else READ_SIZE
        scratch = self._scratch
        if scratch is None or len(scratch) < size:
            scratch = self._scratch = bytearray(size)   # a new one: the old one may still be viewed
        self._lent = len(scratch)
        return memoryview(scratch)

    def buffer_updated(self, nbytes):
        """Take the first ``nbytes`` of the buffer of the last get_buffer() as received."""
        if not 0 <= nbytes <= self._lent:
            raise ValueError("buffer_updated(%r) without a get_buffer() of that size" % (nbytes,))
        self._lent = -1
        with memoryview(self._scratch) as view:
            self.feed(view[:nbytes])

    def clear(self):
        """Drop every buffered byte."""
        self._buf.clear()
        self._pos = 0

    def gets(self):
        """Return the next whole reply as ``(status, args, body)`` (consumed), or None."""
        reply = self._peek()
        if reply is None:
            return None
        self._advance(reply[3])
        return (reply[0], tuple(reply[1][1:]), reply[2])

    def take(self, kind, n, results, status=None):
        """Append to ``results`` the values of up to ``n`` buffered replies of ``kind``
        (a KIND_* constant; ``status`` for KIND_STATUS, and for KIND_JOB instead of RESERVED)
        and return how many were taken. It stops early at a reply of another kind, left
        for gets(), or when no whole reply is buffered."""
        if kind == KIND_STATUS and status is None:
            raise ValueError("take(KIND_STATUS) needs the status")
        taken = 0
        if kind == KIND_INSERTED:
            run = _INSERTED_RUN
        elif kind == KIND_STATUS:
            run = _OK_RUNS.get(status)
            if run is None:
                run = _OK_RUNS[status] = re.compile(b"(?:%s\r\n)+" % re.escape(status))
        else:
            run = None
        if kind == KIND_JOB and status is None:
            status = b"RESERVED"
        while taken < n:
            if run is not None:
                taken += self._take_run(run, kind, n - taken, results, len(status or b"") + 2)
                if taken >= n:
                    break
            reply = self._peek()
            if reply is None:
                break
            word, parts, body, nxt = reply
            if kind == KIND_INSERTED:
                if word != b"INSERTED" or len(parts) != 2 or not parts[1].isdigit():
                    break
                value = int(parts[1])
            elif kind == KIND_STATUS:
                if word != status or len(parts) != 1:
                    break
                value = None
            elif kind == KIND_JOB:
                if word != status or len(parts) != 3 or not parts[1].isdigit():
                    break
                value = (int(parts[1]), body)
            elif kind == KIND_BODY:
                if word != b"OK":
                    break
                value = body
            else:
                value = (word, tuple(parts[1:]), body)
            results.append(value)
            self._advance(nxt)
            taken += 1
        return taken

    def _take_run(self, run, kind, n, results, size):
        # A run of INSERTED <id> / bare status replies taken by one regex match.
        buf = self._buf
        pos = self._pos
        m = run.match(buf, pos)
        if m is None:
            return 0
        end = m.end()
        if kind == KIND_INSERTED:
            ids = _INSERTED_ID.findall(buf, pos, end)
            if len(ids) > n:
                del ids[n:]
                end = pos + sum(map(len, ids)) + 11 * n     # 11: "INSERTED " and CRLF
            results.extend(map(int, ids))
            k = len(ids)
        else:
            k = min((end - pos) // size, n)
            results.extend([None] * k)
            end = pos + k * size
        self._advance(end)
        return k

    def _peek(self):
        # The next whole reply as (status, line parts, body, end offset), not consumed; or None.
        buf = self._buf
        pos = self._pos
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > self._max_line + 1:     # the line and its CR may be here, the LF not yet
                raise ProtocolError("reply line longer than %d bytes" % self._max_line)
            return None
        if eol - pos > self._max_line:
            raise ProtocolError("reply line longer than %d bytes" % self._max_line)
        parts = bytes(buf[pos:eol]).split()
        if not parts:
            raise ProtocolError("empty reply line")
        status = parts[0]
        body = None
        nxt = eol + 2
        idx = _BODY_SIZE_ARG.get(status)
        if idx is not None:
            if len(parts) != idx + 2 or not parts[idx + 1].isdigit() or len(parts[idx + 1]) > 18:
                raise ProtocolError("malformed reply line %r" % bytes(buf[pos:eol]))
            end = nxt + int(parts[idx + 1])
            if len(buf) < end + 2:
                return None
            body = bytes(buf[nxt:end])
            if buf[end:end + 2] != b"\r\n":   # a corrupt body: n + 2 bytes are consumed all the same
                status = CORRUPT
                parts = [CORRUPT] + parts
            nxt = end + 2
        return status, parts, body, nxt

    def _advance(self, nxt):
        # Consume up to nxt; drop consumed bytes once there are many, or none are left.
        buf = self._buf
        if nxt == len(buf):
            buf.clear()
            nxt = 0
        elif nxt > READ_SIZE:
            del buf[:nxt]
            nxt = 0
        self._pos = nxt


class Batch:
    """The replies of one window of ``n`` commands, taken from a ReplyReader as they come (no
    I/O): every driver reads its windows' replies through this, whatever waits for the bytes.

    Each reply of ``kind`` is appended to ``results`` as ``take()`` gives it (``status`` as
    there), any other reply as it is; ``bad`` counts those. ``reserves``: a window of reserves,
    where TIMED_OUT is dropped and any reply that is not a job sets ``stop`` (no window should
    follow). ``stop_at``: a reply with that status ends the window early (``stopped``; the
    replies after it are not read). ``n`` counts the replies still due. ``job``, for KIND_JOB:
    ``(cls, ((name, value), ...))`` makes each job an instance of ``cls`` (``cls.__new__``, no
    ``__init__``) with those attributes set in order, JOB_ID and JOB_BODY standing for its id
    and body, instead of ``(jid, body)``.
    """

    __slots__ = ("kind", "n", "results", "status", "reserves", "stop_at", "bad", "stop", "stopped", "job")

    def __init__(self, kind, n, results, status=None, reserves=False, stop_at=None, job=None):
        if kind == KIND_STATUS and status is None:
            raise ValueError("take(KIND_STATUS) needs the status")
        if job is not None and not (type(job) is tuple and len(job) == 2 and isinstance(job[0], type)
                                    and type(job[1]) is tuple and all(type(a) is tuple and len(a) == 2
                                                                      and type(a[0]) is str for a in job[1])):
            raise TypeError("job must be None or (class, ((name, value), ...))")
        self.kind = kind
        self.n = n
        self.results = results
        self.status = status
        self.reserves = reserves
        self.stop_at = stop_at
        self.bad = 0
        self.stop = False
        self.stopped = False
        self.job = job

    def feed(self, reader):
        """Take the replies ``reader`` holds; return True once the window is read."""
        kind, status, results = self.kind, self.status, self.results
        while self.n > 0:
            if self.job is not None and kind == KIND_JOB:
                start = len(results)
                try:
                    taken = reader.take(kind, self.n, results, status)
                finally:    # the jobs taken before a ProtocolError too, as the compiled core has them
                    if len(results) > start:
                        results[start:] = [_make_job(self.job, jid, body) for jid, body in results[start:]]
            else:
                taken = reader.take(kind, self.n, results, status)
            self.n -= taken
            if self.n <= 0:
                break
            reply = reader.gets()
            if reply is None:
                return False
            self.n -= 1
            if self.reserves:
                if reply[0] != CORRUPT:     # a corrupt job is still a job: more may be ready
                    self.stop = True
                if reply[0] == b"TIMED_OUT":
                    continue
            results.append(reply)
            self.bad += 1
            if reply[0] == self.stop_at:
                self.stopped = True
                return True
        return True


def pairs(cls, first, values):
    """A list of ``cls`` (a subclass of tuple defined in Python), one ``(first, value)`` for
    each of ``values`` (a list): the JobRefs of a pool's window of puts, built in one pass."""
    if cls is tuple or not issubclass(cls, tuple):
        raise TypeError("pairs() needs a subclass of tuple, not %r" % (cls,))
    return list(map(tuple.__new__, repeat(cls), zip(repeat(first), values)))


def _make_job(job, jid, body):
    cls, attrs = job
    made = cls.__new__(cls)
    for name, value in attrs:
        setattr(made, name, jid if value is _JOB_ID else body if value is _JOB_BODY else value)
    return made


# -- YAML -------------------------------------------------------------------------

_BOOL = {b"yes": True, b"Yes": True, b"YES": True, b"true": True, b"True": True, b"TRUE": True,
         b"on": True, b"On": True, b"ON": True, b"no": False, b"No": False, b"NO": False,
         b"false": False, b"False": False, b"FALSE": False, b"off": False, b"Off": False, b"OFF": False}
_NULL = {b"~", b"null", b"Null", b"NULL"}
_INT_RE = re.compile(rb"(?:0|[1-9][0-9]*)\Z")
_FLOAT_RE = re.compile(rb"[0-9]+\.[0-9]+\Z")
_WORD_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_\-]*\Z")
_PLAIN_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_.\-]*\Z")     # plain str unless bool/null (hostname: a.b.c)
_QUOTED_RE = re.compile(rb'"[ !#-\[\]-~]*"\Z')              # printable ASCII, no escapes
_COMMENT_RE = re.compile(rb"#[ -~]*\Z")                      # "os: #1 SMP ..." is a comment: null
_HEX_RE = re.compile(rb"[0-9][0-9a-f]*[a-f][0-9a-f]*\Z")     # the server id (0b... is a binary int)


_KEYS: dict = {}      # raw key -> str, for keys already checked (stats documents repeat theirs)


_WORDS: dict = {}     # raw scalar -> its str/bool/None value, for non-numbers already seen
_MISS = object()


def _scalar(raw):
    """Return the value yaml.safe_load gives a scalar, or raise ValueError if unsure."""
    if raw.isdigit():
        if raw[0] != 48 or len(raw) == 1:   # a leading 0 is octal to YAML 1.1
            return int(raw)
        raise ValueError(raw)
    whole, dot, frac = raw.partition(b".")
    if dot and whole.isdigit() and frac.isdigit():
        return float(raw)
    value = _WORDS.get(raw, _MISS)
    if value is _MISS:
        value = _scalar_slow(raw)
        if len(_WORDS) < 1024:
            _WORDS[raw] = value
    return value


def _scalar_slow(raw):
    if _INT_RE.match(raw):
        return int(raw)
    if _FLOAT_RE.match(raw):
        return float(raw)
    if _QUOTED_RE.match(raw):
        return raw[1:-1].decode("ascii")
    if _PLAIN_RE.match(raw):
        if raw in _BOOL:
            return _BOOL[raw]
        if raw in _NULL:
            raise ValueError(raw)
        return raw.decode("ascii")
    if _COMMENT_RE.match(raw):
        return None
    if _HEX_RE.match(raw) and not raw.startswith(b"0b"):
        return raw.decode("ascii")
    raise ValueError(raw)


def parse_yaml(body):
    """Parse the YAML of a beanstalkd ``OK`` reply (a flat mapping or a list of scalars).

    Returns exactly what ``yaml.safe_load`` would; raises ValueError for anything it
    does not fully recognise, so the caller can fall back to PyYAML.
    """
    lines = bytes(body).split(b"\n")
    if len(lines) < 3 or lines[0] != b"---" or lines[-1] != b"":
        raise ValueError("not a beanstalkd YAML document")
    lines.pop()
    if lines[1].startswith(b"- "):
        out = []
        for line in lines[1:]:
            if not line.startswith(b"- "):
                raise ValueError(line)
            out.append(_scalar(line[2:]))
        return out
    out = {}
    keys = _KEYS
    for line in lines[1:]:
        key, sep, value = line.partition(b": ")
        name = keys.get(key)
        if name is None or not sep:
            if not sep or not _WORD_RE.match(key) or key in _BOOL or key in _NULL:
                raise ValueError(line)
            name = key.decode("ascii")
            if len(keys) < 1024:
                keys[key] = name
        out[name] = _scalar(value)
    return out


# -- blocking driver: the only code here that touches a socket ---------------------------

# After sending a batch window the driver yields the CPU (_give_way, as the compiled core does),
# so that a server on the same CPU answers the whole window before this client wakes up.
_IOV_MAX = 512      # buffers per sendmsg() call (POSIX guarantees at least 16, Linux 1024)


def _scatter(sock):
    """``sock.sendmsg``, or None where it cannot be used: an SSL socket (the stdlib's, or
    gevent's once patched in) has the method but raises NotImplementedError; its buffers are
    sent one sendall() each."""
    ssl = sys.modules.get("ssl")    # not imported: no socket can be an SSL socket
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        return None
    return getattr(sock, "sendmsg", None)


class Protocol:
    """Blocking request/reply I/O over a connected socket, through its Python methods only
    (so gevent, eventlet and socket timeouts keep working).

    Transport errors (``OSError``) propagate unchanged; EOF raises SocketError;
    bad framing raises ProtocolError. Batch methods append each item's outcome to
    the caller's ``results`` list as its reply is read, so the caller always knows
    the confirmed prefix, and return the number of entries that are not plain successes.
    ``wait`` (reserves): seconds the server may hold the reply (None: forever), added to
    the socket's timeout for that command; -1: no change.
    """

    def __init__(self, sock, read_size=READ_SIZE):
        self.sock = sock
        self._sendall = sock.sendall
        self._sendmsg = _scatter(sock)
        self._recv = sock.recv
        self._timeout = sock.gettimeout() if hasattr(sock, "gettimeout") else None
        self._read_size = read_size
        self._reader = ReplyReader()
        self.window = WINDOW_ITEMS              # commands per pipelined window (settable)
        self.reserve_window = RESERVE_WINDOW    # reserves per window (settable)
        self._lock = None                       # the connection's write lock (attach())

    def send(self, data):
        self._sendall(data)

    def attach(self, lock, qlock, queue):
        """Take a blocking Connection's write lock, queue lock and reply queue, for pipe() and
        reserve_alone(). The compiled core keeps all three to serve a call alone; this one's
        pipe() takes the write lock and hands the call to the connection's _piped()."""
        self._lock = lock

    def write(self, data):
        """Send a command: bytes, or a list of buffers (as put_command() may give)."""
        if data.__class__ is bytes:
            self._sendall(data)
        else:
            self.send_chunks(data)

    def send_chunks(self, chunks):
        """Send a list of buffers: by scatter-gather where the socket has a usable sendmsg()."""
        sendmsg = self._sendmsg
        if len(chunks) == 1 or sendmsg is None:
            for chunk in chunks:
                self._sendall(chunk)
            return
        chunks = [chunk for chunk in chunks if len(chunk)]
        i = 0
        while i < len(chunks):
            sent = sendmsg(chunks[i:i + _IOV_MAX])
            while sent:     # drop what went out; a partly sent buffer goes on as a view of its rest
                size = len(chunks[i])
                if sent >= size:
                    sent -= size
                    i += 1
                else:
                    chunks[i] = memoryview(chunks[i])[sent:]
                    sent = 0

    def _fill(self):
        data = self._recv(self._read_size)
        if not data:
            raise SocketError("connection closed by the server")
        self._reader.feed(data)

    def read_reply(self):
        reader = self._reader
        reply = reader.gets() if reader._buf else None     # skip the parse of an empty buffer
        while reply is None:
            self._fill()
            reply = reader.gets()
        return reply

    def call(self, data):
        self._sendall(data)
        return self.read_reply()

    def _timed(self, wait):
        # Let the server hold a reserve's reply for `wait` seconds on top of the socket timeout.
        if wait == -1 or self._timeout is None:
            return False
        self.sock.settimeout(None if wait is None else wait + self._timeout)
        return True

    def reserve(self, data, wait=-1):
        """Send a reserve command: ``(jid, body)`` on a well-formed RESERVED, else the reply."""
        timed = self._timed(wait)
        self._sendall(data)
        try:
            return self.read_job()
        finally:
            if timed:
                self.sock.settimeout(self._timeout)

    # The reads of one sent command's reply, typed (the writes are send() and write()):

    def read_put(self):
        """The job id (int) of an INSERTED reply, else the reply."""
        reply = self.read_reply()
        if reply[0] == b"INSERTED" and len(reply[1]) == 1 and reply[1][0].isdigit():
            return int(reply[1][0])
        return reply

    def read_job(self):
        """``(jid, body)`` of a well-formed RESERVED reply, else the reply."""
        reply = self.read_reply()
        if reply[0] == b"RESERVED" and len(reply[1]) == 2 and reply[1][0].isdigit():
            return int(reply[1][0]), reply[2]
        return reply

    def read_status(self, ok):
        """None on the bare status ``ok``, else the reply."""
        reply = self.read_reply()
        if reply[0] == ok and not reply[1]:
            return None
        return reply

    def buffered_reply(self):
        """The next reply if it has been received whole, else None (never waits)."""
        return self._reader.gets() if self._reader._buf else None

    def read_batch(self, batch):
        """Read the replies of commands already sent until ``batch`` (a Batch) has them all;
        return ``batch.bad``."""
        reader = self._reader
        while not batch.feed(reader):
            self._fill()
        return batch.bad

    def _read_many(self, n, results, kind, status):
        if not n:
            return 0
        if kind != KIND_STATUS:
            return self.read_batch(Batch(kind, n, results, status))
        # A window of job commands (delete_many...) whose replies are not all there after the
        # give-way: yield again before each further receive instead of sleeping in recv, where
        # each reply would wake us (beanstalkd's deletes slow down with the jobs a connection
        # holds: a window of 1,000 outlasts a time slice). Not for puts: there it costs the
        # server CPU (benchmarks/batch_sizes.md). The compiled core does the same.
        batch = Batch(kind, n, results, status)
        reader = self._reader
        if not batch.feed(reader):
            self._fill()
            while not batch.feed(reader):
                _give_way()
                self._fill()
        return batch.bad

    def _pipeline(self, windows, results, kind, status):
        """Send each (chunks, n) window of ``windows`` before reading the replies of the
        previous one; return the number of replies not of ``kind``."""
        bad = pending = 0
        while True:
            try:
                window = next(windows, None)
            except Exception:   # a bad item, or the caller's iterator failed: that window is unsent
                bad += self._read_many(pending, results, kind, status)
                raise
            if window is None:
                break
            chunks, n = window
            self.send_chunks(chunks)
            _give_way()
            bad += self._read_many(pending, results, kind, status)
            pending = n
        if pending:
            _give_way()
        return bad + self._read_many(pending, results, kind, status)

    def put_many(self, items, priority, delay, ttr, encoding, results):
        """Pipeline puts of ``items`` (as put_windows() takes them). Appends a job id (int)
        or the failing reply per item to ``results``; returns the number of failed items."""
        windows = put_windows(items, priority, delay, ttr, encoding, self.window)
        return self._pipeline(windows, results, KIND_INSERTED, None)

    def jobs_many(self, items, template, args, ok, results):
        """Pipeline one job command per job id in ``items``: ``template % ((jid,) + args)``.
        Appends None per bare ``ok`` reply, else the reply; returns the number of those."""
        return self._pipeline(job_windows(items, template, args, self.window), results, KIND_STATUS, ok)

    def reserve_many(self, n, first_command, results, wait=-1, job=None):
        """Send ``first_command`` (a reserve that may wait) and, in the same write,
        ``reserve-with-timeout 0`` up to a window; more windows follow while every reply is a
        job (or a corrupt one), until ``n`` replies. Appends ``(jid, body)`` per job (as reserve()),
        or a job made as Batch's ``job`` says, and any other reply but TIMED_OUT as it is;
        returns how many of those."""
        left = max(n, 1)
        first = first_command
        bad = 0
        while left > 0:
            k = max(1, min(left, self.reserve_window))
            timed = first is not None and self._timed(wait)
            self._sendall((first or b"") + _RESERVE0 * (k - (first is not None)))
            first = None
            _give_way()
            left -= k
            batch = Batch(KIND_JOB, k, results, None, True, None, job)
            try:
                bad += self.read_batch(batch)   # every reply of the window is read, even after a stop
            finally:
                if timed:
                    self.sock.settimeout(self._timeout)
            if batch.stop:
                break
        return bad



# -- a blocking Connection's single command when its caller has it to itself --

def pipe(conn, proto, data, read, ok=None):
    """``conn._pipe(data, read[, ok])`` for a blocking Connection ``conn`` and its driver
    ``proto`` (as the caller read it). The compiled core serves a caller alone (no reply in
    flight) in one call, with _pipe's steps, and hands every other call to the connection;
    here _pipe's own steps serve them all."""
    if type(proto) is not Protocol or proto._lock is None:  # a stand-in, not attached (TLS), closed
        return conn._pipe(data, read) if ok is None else conn._pipe(data, read, ok)
    proto._lock.acquire()               # _pipe itself, one frame fewer
    return conn._piped(data, read, () if ok is None else (ok,))


def reserve_alone(conn, proto, data, wait=-1):
    """``conn._do("reserve", data, wait)`` for a blocking Connection ``conn`` and its driver
    ``proto`` (see pipe()): the compiled core takes a caller alone without a Retry in one
    call, with _do's steps; here _do serves them all."""
    return conn._do("reserve", data, wait)


# -- asyncio: one socket's reply dispatch and coalesced writes ---------------------------------

_YIELD_AT = 64      # buffers in one write from which yielding the CPU pays (many coalesced commands)


class AioChannel:
    """The core of one asyncio socket of an ``aio.Connection`` (the driver subclasses it with
    ``asyncio.BufferedProtocol``): the FIFO of reply slots, each settled in ``buffer_updated``
    as its reply is read, the writes of one loop iteration coalesced into one, and the
    ``socket_timeout`` timer.

    A FIFO entry is ``(future, cmd, jid)`` or a window entry (its ``feed(reader)`` returns True
    once the window is read). A put's future gets the job id (an int) when the reply is
    INSERTED, any other command's (and a put's other reply) the reply ``(status, args, body)``.
    ``conn`` is called back for what is the driver's: ``_settle(ch, cmd, jid, value)`` for an
    entry with a jid, ``_orphan(ch, cmd, value)`` for a reply whose future is already done,
    ``_settle_batch(ch, entry)`` for a window read, ``_lost(err)`` on bad framing and
    ``_timed_out(limit)`` when the server stays silent past ``socket_timeout``; the subclass
    gives ``_refuse(unsent)`` (raise the channel's failure: it is closed).
    """

    def __init__(self, conn):
        self._conn = conn
        self._loop = conn._loop
        self._reader = ReplyReader()
        self._fifo = deque()            # (future, cmd, jid or None) per command, or a window entry
        self._out = []                  # buffers queued this loop iteration
        self._flushing = False          # a flush() is scheduled
        self._paused = False            # the transport asked us to stop writing
        self._drainers = []             # futures of callers waiting for resume_writing()
        self.transport = None
        self.error = None               # why this channel is closed, once it is
        self.held = set()               # ids of the jobs reserved by this channel
        self.blocked = False            # a reserve that may wait is at the server
        self.block_wait = None          # its timeout (seconds; None: forever)
        self._timeout = conn._socket_timeout
        self._timer = None
        self._progress = 0.0            # when bytes last came, or the FIFO last became non-empty
        self._flush_cb = self.flush
        self._create_future = self._loop.create_future

    # -- asyncio.BufferedProtocol --

    def connection_made(self, transport):
        self.transport = transport

    def eof_received(self):
        return False

    def pause_writing(self):
        self._paused = True

    def resume_writing(self):
        self._paused = False
        drainers, self._drainers = self._drainers, []
        for fut in drainers:
            if not fut.done():
                fut.set_result(None)

    def get_buffer(self, sizehint):
        # A second view of the reader's buffer: uvloop keeps its export of the view until
        # buffer_updated() has returned, and the reader releases its own view there.
        return memoryview(self._reader.get_buffer(sizehint))

    def buffer_updated(self, nbytes):
        reader = self._reader
        reader.buffer_updated(nbytes)
        if self._timeout is not None:
            self._progress = self._loop.time()
        fifo = self._fifo
        conn = self._conn
        try:
            while fifo:
                entry = fifo[0]
                if entry.__class__ is tuple:
                    value = reader.gets()
                    if value is None:
                        break
                    fut, cmd, jid = entry
                    if cmd == "put" and value[0] == b"INSERTED":
                        args = value[1]
                        if len(args) == 1 and args[0].isdigit():
                            value = int(args[0])
                    fifo.popleft()
                    if jid is not None:
                        conn._settle(self, cmd, jid, value)
                    if fut.done():      # its caller was cancelled or timed out
                        conn._orphan(self, cmd, value)
                    else:
                        fut.set_result(value)
                elif entry.feed(reader):
                    fifo.popleft()
                    conn._settle_batch(self, entry)
                else:
                    break
            if not fifo and len(reader) and self.error is None:
                raise ProtocolError("a reply came that no command asked for: %r" % (reader.gets(),))
        except ProtocolError as err:
            conn._lost(err)

    # -- writing --

    def send(self, data, cmd, jid=None):
        """Queue the command ``data``; return the future of its reply (see the class)."""
        if self.error is not None:
            return self._refuse(True)
        fut = self._create_future()
        idle = not self._fifo
        self._fifo.append((fut, cmd, jid))
        self._write(data, idle)
        return fut

    def put(self, body, priority, delay, ttr, encoding):
        """Check and queue a put; return the future of its job id (or other reply), or None
        when the channel cannot take it now (the transport is full, or the channel closed):
        nothing was queued, the caller waits or fails."""
        body = check_body(body, encoding)
        if body.__class__ is bytes and len(body) < BIG_BODY:
            data = encode_put(body, priority, delay, ttr)
        else:
            data = b"".join(put_chunks(body, priority, delay, ttr))
        if self._paused or self.error is not None:
            return None
        fut = self._create_future()
        idle = not self._fifo
        self._fifo.append((fut, "put", None))
        self._write(data, idle)
        return fut

    def send_batch(self, chunks, batch):
        """Queue the buffers ``chunks`` of a window whose replies the entry ``batch`` takes."""
        if self.error is not None:
            return self._refuse(False)
        idle = not self._fifo
        self._fifo.append(batch)
        if len(chunks) == 1:
            self._write(chunks[0], idle)
        else:
            self._out.extend(chunks)
            self._schedule(idle)

    def _write(self, data, idle):
        if idle and not self._out:
            # Nothing else in flight: write now (a lone caller gains a loop iteration); later
            # commands of this iteration are coalesced behind it.
            self.transport.write(data)
            if self._timeout is not None:
                self._progress = self._loop.time()
                self._arm()
            return
        self._out.append(data)
        self._schedule(idle)

    def _schedule(self, idle):
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush_cb)
        if self._timeout is not None:
            if idle:
                self._progress = self._loop.time()
            self._arm()

    def flush(self):
        """Write what this loop iteration queued now."""
        self._flushing = False
        out = self._out
        if out and self.error is None:
            self._out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
                if len(out) >= _YIELD_AT:
                    _give_way()     # many commands at once: let a server on this CPU answer them all

    # -- socket_timeout: the server must answer within it (a waiting reserve: plus its own timeout) --

    def _limit(self):
        if self.blocked:
            return None if self.block_wait is None else self._timeout + self.block_wait
        return self._timeout

    def _arm(self):
        if self._timer is None and self._fifo and self.error is None:
            limit = self._limit()
            if limit is not None:
                self._timer = self._loop.call_at(self._progress + limit, self._check)

    def _check(self):
        self._timer = None
        limit = self._limit()
        if not self._fifo or self.error is not None or limit is None:
            return
        if self._loop.time() >= self._progress + limit:
            self._conn._timed_out(limit)
        else:
            self._arm()
