# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True, embedsignature.format=clinic, binding=False
"""Compiled protocol core: the twin of ``beanstalkc_fast._pyprotocol``.

Same names, signatures, results and exceptions as the pure-Python core; the
public docstrings live there. All I/O goes through the Python socket object
(``recv_into``/``sendall``), so gevent and socket timeouts keep working.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_READ, PyBUF_WRITE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_CheckExact,
                           PyLong_FromLongLong)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_REFCNT
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport memchr, memcmp, memcpy, memmove

import os as _os

from beanstalkc_fast.exceptions import InvalidArgument, InvalidType, ProtocolError, SocketError

cdef extern from "Python.h":
    bytes PyBytes_FromStringAndSize(const char *v, Py_ssize_t n)
    str PyUnicode_DecodeASCII(const char *s, Py_ssize_t n, const char *errors)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void *PyUnicode_DATA(object o)
    double PyOS_string_to_double(const char *s, char **endptr, PyObject *overflow_exception) except? -1.0

CORE_API = 4

UINT32_MAX = 2 ** 32 - 1
UINT64_MAX = 2 ** 64 - 1
MAX_LINE = 1024
READ_SIZE = 65536
WINDOW_ITEMS = 1024
WINDOW_BYTES = 256 * 1024
RESERVE_WINDOW = 256
BIG_BODY = 64 * 1024

cdef Py_ssize_t C_WINDOW_ITEMS = WINDOW_ITEMS
cdef Py_ssize_t C_WINDOW_BYTES = WINDOW_BYTES
cdef Py_ssize_t C_RESERVE_WINDOW = RESERVE_WINDOW
cdef Py_ssize_t C_BIG_BODY = BIG_BODY
cdef Py_ssize_t MIN_FREE = 4096         # compact or grow the receive buffer below this much free space
cdef Py_ssize_t KEEP_BYTES = 1 << 20    # an idle receive buffer larger than this shrinks back
cdef Py_ssize_t MAX_RESERVE = 1 << 24   # most receive buffer reserved ahead of the data for one body

# Statuses returned as shared objects instead of fresh bytes (most frequent first).
cdef tuple _STATUSES = (
    b"INSERTED", b"RESERVED", b"DELETED", b"TIMED_OUT", b"OK", b"USING", b"WATCHING", b"RELEASED",
    b"BURIED", b"TOUCHED", b"FOUND", b"NOT_FOUND", b"KICKED", b"PAUSED", b"DEADLINE_SOON",
    b"NOT_IGNORED", b"JOB_TOO_BIG", b"EXPECTED_CRLF", b"DRAINING", b"OUT_OF_MEMORY",
    b"INTERNAL_ERROR", b"BAD_FORMAT", b"UNKNOWN_COMMAND")
cdef bytes _RESERVE0 = b"reserve-with-timeout 0\r\n"
cdef object _sched_yield = getattr(_os, "sched_yield", None)


cdef inline int _give_way() except -1:
    # Before reading a window's replies, let a server sharing this CPU answer them all:
    # otherwise each reply wakes us, we preempt it, and pay a context switch per job.
    # (The pure core does the same.) A no-op when the server runs on another CPU.
    if _sched_yield is not None:
        _sched_yield()
    return 0


cdef inline bint _isspace(char c):
    return c == 32 or 9 <= c <= 13          # exactly what bytes.split() splits on


cdef inline bint _isdigit(char c):
    return 48 <= c <= 57


cdef bint _all_digits(const char *p, Py_ssize_t n):
    cdef Py_ssize_t i
    if n <= 0:
        return False
    for i in range(n):
        if not _isdigit(p[i]):
            return False
    return True


cdef inline long long _digits_value(const char *p, Py_ssize_t n):
    # n <= 18 digits: fits a long long
    cdef long long v = 0
    cdef Py_ssize_t i
    for i in range(n):
        v = v * 10 + (p[i] - 48)
    return v


cdef object _digits_int(const char *p, Py_ssize_t n):
    if n <= 18:
        return PyLong_FromLongLong(_digits_value(p, n))
    return int(PyBytes_FromStringAndSize(p, n))


cdef inline Py_ssize_t _fmt_u64(char *out, unsigned long long v):
    cdef char tmp[24]
    cdef Py_ssize_t n = 0, i
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    for i in range(n):
        out[i] = tmp[n - 1 - i]
    return n


cdef object _status(const char *p, Py_ssize_t n):
    cdef bytes s
    for s in _STATUSES:
        if PyBytes_GET_SIZE(s) == n and memcmp(PyBytes_AS_STRING(s), p, n) == 0:
            return s
    return PyBytes_FromStringAndSize(p, n)


cdef inline void _release_view(object mv):
    # A memoryview of our own buffer must not outlive it: if anything kept one
    # (a traceback frame, a mock socket), release it before the buffer moves.
    if Py_REFCNT(mv) > 1:
        try:
            mv.release()
        except Exception:
            pass


# -- argument checks ----------------------------------------------------------

def check_uint32(value, what):
    if PyLong_CheckExact(value) and 0 <= value <= 0xFFFFFFFF:
        return value
    if value.__class__ is not int:
        if isinstance(value, float) or not hasattr(value, "__index__"):
            raise InvalidType("%s must be an integer, not %s" % (what, type(value).__name__))
        value = value.__index__()
    if value < 0 or value > UINT32_MAX:
        raise InvalidArgument("%s must be in 0..%d, got %d" % (what, UINT32_MAX, value))
    return value


cdef int _u32(object value, object what, unsigned long long *out) except -1:
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and 0 <= v <= 0xFFFFFFFF:
            out[0] = <unsigned long long>v
            return 0
    out[0] = PyLong_AsUnsignedLongLong(check_uint32(value, what))
    return 0


def check_jid(value):
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


cdef int _jid_value(object value, unsigned long long *out) except -1:
    # check_jid into a C integer, with a fast path for a plain non-negative int
    cdef int overflow = 0
    cdef long long v
    if PyLong_CheckExact(value):
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and v >= 0:
            out[0] = <unsigned long long>v
            return 0
    out[0] = PyLong_AsUnsignedLongLong(check_jid(value))
    return 0


cdef int _jid(object value, Py_ssize_t index, unsigned long long *out) except -1:
    # check_jid for a batch item: errors name the item's index
    try:
        _jid_value(value, out)
    except (InvalidArgument, InvalidType) as err:
        raise type(err)("item %d: %s" % (index, err)) from None
    return 0


cdef inline bint _tube_char(char c, bint first):
    if (65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57):
        return True
    if c == b'-':
        return not first
    return c == b'+' or c == b'/' or c == b';' or c == b'.' or c == b'$' or c == b'_' or c == b'(' or c == b')'


def check_tube(name):
    cdef const char *p
    cdef Py_ssize_t n, i
    cdef bint ok
    if isinstance(name, str):
        try:
            raw = name.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidArgument("tube name must be ASCII: %r" % (name,)) from None
    elif isinstance(name, bytes):
        raw = name
    else:
        raise InvalidType("tube name must be str, not %s" % type(name).__name__)
    p = PyBytes_AS_STRING(raw)
    n = PyBytes_GET_SIZE(raw)
    ok = 1 <= n <= 200
    i = 0
    while ok and i < n:
        ok = _tube_char(p[i], i == 0)
        i += 1
    if not ok:
        raise InvalidArgument(
            "invalid tube name %r: 1..200 of A-Z a-z 0-9 - + / ; . $ _ ( ), not starting with -" % (name,))
    return raw


cdef object _check_body(object body, object encoding):
    cls = type(body)
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
    try:
        return memoryview(body).cast("B")
    except TypeError:
        raise InvalidType("job body must be str or bytes-like, not %s" % cls.__name__) from None


def check_body(body, encoding):
    return _check_body(body, encoding)


cdef Py_ssize_t _put_head(char *out, unsigned long long *v, Py_ssize_t size):
    # b"put %d %d %d %d\r\n": at most 4 + 3 * 11 + 20 + 2 bytes
    cdef Py_ssize_t n = 4
    memcpy(out, b"put ", 4)
    n += _fmt_u64(out + n, v[0])
    out[n] = b' '
    n += 1
    n += _fmt_u64(out + n, v[1])
    out[n] = b' '
    n += 1
    n += _fmt_u64(out + n, v[2])
    out[n] = b' '
    n += 1
    n += _fmt_u64(out + n, <unsigned long long>size)
    out[n] = b'\r'
    out[n + 1] = b'\n'
    return n + 2


def encode_put(body, priority, delay, ttr):
    return _encode_put(body, priority, delay, ttr)


cdef bytes _encode_put(object body, object priority, object delay, object ttr):
    cdef unsigned long long v[3]
    cdef char head[80]
    cdef Py_buffer view
    cdef const char *src
    cdef Py_ssize_t size, hn
    cdef char *dst
    _u32(priority, "priority", &v[0])
    _u32(delay, "delay", &v[1])
    _u32(ttr, "ttr", &v[2])
    if PyBytes_CheckExact(body):
        src = PyBytes_AS_STRING(body)
        size = PyBytes_GET_SIZE(body)
        hn = _put_head(head, v, size)
        out = PyBytes_FromStringAndSize(NULL, hn + size + 2)
        dst = PyBytes_AS_STRING(out)
        memcpy(dst, head, hn)
        memcpy(dst + hn, src, size)
    else:
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            size = view.len
            hn = _put_head(head, v, size)
            out = PyBytes_FromStringAndSize(NULL, hn + size + 2)
            dst = PyBytes_AS_STRING(out)
            memcpy(dst, head, hn)
            memcpy(dst + hn, view.buf, size)
        finally:
            PyBuffer_Release(&view)
    dst[hn + size] = b'\r'
    dst[hn + size + 1] = b'\n'
    return out


cdef object _put_item(object item, object priority, object delay, object ttr, object encoding,
                      Py_ssize_t index, unsigned long long *v):
    """Check one put_many item; return its body, its (priority, delay, ttr) in v."""
    cdef Py_ssize_t n
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
        body = _check_body(body, encoding)
        _u32(priority, "priority", &v[0])
        _u32(delay, "delay", &v[1])
        _u32(ttr, "ttr", &v[2])
    except (InvalidArgument, InvalidType) as err:
        raise type(err)("item %d: %s" % (index, err)) from None
    return body


# -- replies --------------------------------------------------------------------

cdef class ReplyReader:
    # binding=False keeps the import cheap; a clinic-style first line gives inspect the signature
    """ReplyReader(max_line=1024)
--

"""

    def __cinit__(self, *args, **kw):
        self._cap = 4096
        self._buf = <char *>PyMem_Malloc(self._cap)
        if self._buf == NULL:
            raise MemoryError()
        self._start = self._end = self._need = 0
        self._ntok = 0

    def __init__(self, max_line=MAX_LINE):
        self._max_line = max_line if max_line < 2 ** 60 else 2 ** 60     # no overflow in pos + max_line + 2

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL

    def __len__(self):
        return self._end - self._start

    def feed(self, data):
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._start == self._end:
                self._start = self._end = 0
            self._reserve(view.len)
            memcpy(self._buf + self._end, view.buf, view.len)
            self._end += view.len
        finally:
            PyBuffer_Release(&view)

    def clear(self):
        self._start = self._end = self._need = 0

    def gets(self):
        if self._parse():
            return self._reply()
        return None

    cdef int _reserve(self, Py_ssize_t free) except -1:
        # Make room for `free` more bytes after _end (moves data: no parsed reply may be pending).
        cdef Py_ssize_t cap
        cdef char *nbuf
        if self._cap - self._end >= free:
            return 0
        if self._start:
            memmove(self._buf, self._buf + self._start, self._end - self._start)
            self._end -= self._start
            self._start = 0
            if self._cap - self._end >= free:
                return 0
        cap = self._cap * 2
        if cap < self._end + free:
            cap = self._end + free
        nbuf = <char *>PyMem_Realloc(self._buf, cap)
        if nbuf == NULL:
            raise MemoryError()
        self._buf = nbuf
        self._cap = cap
        return 0

    cdef int _parse(self) except -1:
        """Find the next complete reply: 1 (fields set), 0 (need more bytes), or raise ProtocolError."""
        cdef char *buf = self._buf
        cdef Py_ssize_t pos = self._start, end = self._end, limit, i, j, eol, size, bend
        cdef const char *p
        cdef int ntok, idx
        if self._need and end - pos < self._need:
            return 0                        # the line was parsed already: its body is still incomplete
        # Locate CRLF; a reply line is at most _max_line bytes, so look no further.
        limit = pos + self._max_line + 2
        if limit > end:
            limit = end
        eol = -1
        i = pos
        while i < limit - 1:
            p = <const char *>memchr(buf + i, b'\r', limit - 1 - i)
            if p == NULL:
                break
            i = p - buf
            if buf[i + 1] == b'\n':
                eol = i
                break
            i += 1
        if eol < 0:
            if end - pos > self._max_line + 1:          # line and CR here, LF not yet
                raise ProtocolError("reply line longer than %d bytes" % self._max_line)
            return 0
        if eol - pos > self._max_line:
            raise ProtocolError("reply line longer than %d bytes" % self._max_line)
        ntok = 0
        i = pos
        while True:
            while i < eol and _isspace(buf[i]):
                i += 1
            if i >= eol:
                break
            j = i
            while j < eol and not _isspace(buf[j]):
                j += 1
            if ntok < MAXTOK:
                self._tok[ntok] = i
                self._tlen[ntok] = j - i
            ntok += 1
            i = j
        if ntok == 0:
            raise ProtocolError("empty reply line")
        self._ntok = ntok
        self._eol = eol
        idx = -1
        p = buf + self._tok[0]
        if self._tlen[0] == 8 and memcmp(p, b"RESERVED", 8) == 0:
            idx = 1
        elif self._tlen[0] == 5 and memcmp(p, b"FOUND", 5) == 0:
            idx = 1
        elif self._tlen[0] == 2 and p[0] == b'O' and p[1] == b'K':
            idx = 0
        if idx < 0:
            self._body = -1
            self._next = eol + 2
            return 1
        if (ntok != idx + 2 or self._tlen[idx + 1] > 18
                or not _all_digits(buf + self._tok[idx + 1], self._tlen[idx + 1])):
            raise ProtocolError("malformed reply line %r" % PyBytes_FromStringAndSize(buf + pos, eol - pos))
        size = <Py_ssize_t>_digits_value(buf + self._tok[idx + 1], self._tlen[idx + 1])
        bend = eol + 2 + size
        if end < bend + 2:
            self._need = bend + 2 - pos
            return 0
        if buf[bend] != b'\r' or buf[bend + 1] != b'\n':
            raise ProtocolError("reply body not followed by CRLF")
        self._body = eol + 2
        self._body_len = size
        self._next = bend + 2
        return 1

    cdef void _consume(self):
        self._start = self._next
        self._need = 0
        if self._start == self._end:
            self._start = self._end = 0

    cdef int _tok_is(self, int i, bytes word):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(word)
        return self._tlen[i] == n and memcmp(self._buf + self._tok[i], PyBytes_AS_STRING(word), n) == 0

    cdef object _inserted(self):
        """The job id of the parsed reply if it is an INSERTED with a job id (consumed), else None."""
        if self._ntok == 2 and self._tok_is(0, b"INSERTED") and _all_digits(self._buf + self._tok[1], self._tlen[1]):
            jid = _digits_int(self._buf + self._tok[1], self._tlen[1])
            self._consume()
            return jid
        return None

    cdef object _job(self):
        """(jid, body) of the parsed reply if it is a RESERVED with a job id (consumed), else None."""
        if self._ntok == 3 and self._tok_is(0, b"RESERVED") and _all_digits(self._buf + self._tok[1], self._tlen[1]):
            job = (_digits_int(self._buf + self._tok[1], self._tlen[1]),
                   PyBytes_FromStringAndSize(self._buf + self._body, self._body_len))
            self._consume()
            return job
        return None

    cdef object _reply(self):
        """The (status, args, body) tuple of the parsed reply; consumes it."""
        cdef char *buf = self._buf
        cdef int ntok = self._ntok, i
        cdef tuple args
        status = _status(buf + self._tok[0], self._tlen[0])
        if ntok == 1:
            args = ()
        elif ntok <= MAXTOK:
            args = PyTuple_New(ntok - 1)
            for i in range(1, ntok):
                arg = PyBytes_FromStringAndSize(buf + self._tok[i], self._tlen[i])
                Py_INCREF(arg)
                PyTuple_SET_ITEM(args, i - 1, arg)
        else:
            args = tuple(PyBytes_FromStringAndSize(buf + self._start, self._eol - self._start).split()[1:])
        if self._body >= 0:
            body = PyBytes_FromStringAndSize(buf + self._body, self._body_len)
        else:
            body = None
        self._consume()
        return (status, args, body)


# -- I/O ------------------------------------------------------------------------

cdef class Protocol:
    """Protocol(sock, read_size=65536)
--

"""

    def __cinit__(self, *args, **kw):
        self._wbuf = NULL
        self._wlen = self._wcap = 0

    def __init__(self, sock, read_size=READ_SIZE):
        self.sock = sock
        self._sendall = sock.sendall
        self._recv_into = sock.recv_into
        self._read_size = read_size if read_size > 0 else 1
        self._reader = ReplyReader()
        self.window = C_WINDOW_ITEMS
        self.reserve_window = C_RESERVE_WINDOW

    def __dealloc__(self):
        PyMem_Free(self._wbuf)
        self._wbuf = NULL

    def send(self, data):
        self._sendall(data)

    cdef int _fill(self) except -1:
        """One recv_into straight into the reader's buffer; EOF raises SocketError."""
        cdef ReplyReader r = self._reader
        cdef Py_ssize_t want = 0, floor, n
        cdef char *nbuf
        if r._start == r._end:
            r._start = r._end = 0
            if r._cap > KEEP_BYTES and self._read_size < KEEP_BYTES:
                nbuf = <char *>PyMem_Realloc(r._buf, self._read_size)
                if nbuf != NULL:
                    r._buf = nbuf
                    r._cap = self._read_size
        if r._need:
            want = r._need - (r._end - r._start)
            if want > MAX_RESERVE:      # an announced size is a claim: grow with the data, not before it
                want = MAX_RESERVE
        floor = self._read_size if self._read_size < MIN_FREE else MIN_FREE
        if r._cap - r._end < (want if want > floor else floor):
            r._reserve(want if want > self._read_size else self._read_size)
        mv = PyMemoryView_FromMemory(r._buf + r._end, r._cap - r._end, PyBUF_WRITE)
        try:
            got = self._recv_into(mv)
        except BaseException:
            _release_view(mv)
            raise
        _release_view(mv)
        n = got
        if n <= 0:
            raise SocketError("connection closed by the server")
        r._end += n
        return 0

    cdef ReplyReader _next(self):
        """Receive until the reader holds a whole reply (parsed, not consumed); return the reader."""
        cdef ReplyReader r = self._reader
        while not r._parse():
            self._fill()
        return r

    cdef object _read_reply(self):
        return self._next()._reply()

    def read_reply(self):
        return self._read_reply()

    def call(self, data):
        self._sendall(data)
        return self._read_reply()

    def reserve(self, data):
        cdef ReplyReader r = self._reader
        self._sendall(data)
        self._next()
        job = r._job()
        return job if job is not None else r._reply()

    def job_command(self, verb, jid, ok):
        cdef ReplyReader r = self._reader
        cdef unsigned long long v
        cdef char line[48]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(verb)
        _jid_value(jid, &v)
        if n > 20:
            raise InvalidArgument("job command verb too long: %r" % (verb,))
        memcpy(line, PyBytes_AS_STRING(verb), n)
        line[n] = b' '
        n += 1
        n += _fmt_u64(line + n, v)
        line[n] = b'\r'
        line[n + 1] = b'\n'
        self._sendall(PyBytes_FromStringAndSize(line, n + 2))
        self._next()
        if r._ntok == 1 and r._tok_is(0, ok):
            r._consume()
            return None
        return r._reply()

    def put(self, body, priority, delay, ttr, encoding):
        cdef ReplyReader r = self._reader
        self._sendall(_encode_put(_check_body(body, encoding), priority, delay, ttr))
        self._next()
        jid = r._inserted()
        return jid if jid is not None else r._reply()

    # -- batches --

    cdef int _wreserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef char *nbuf
        if self._wlen + n <= self._wcap:
            return 0
        cap = self._wcap * 2
        if cap < self._wlen + n:
            cap = self._wlen + n
        if cap < 65536:
            cap = 65536
        nbuf = <char *>PyMem_Realloc(self._wbuf, cap)
        if nbuf == NULL:
            raise MemoryError()
        self._wbuf = nbuf
        self._wcap = cap
        return 0

    cdef int _wwrite(self, const char *data, Py_ssize_t n) except -1:
        self._wreserve(n)
        memcpy(self._wbuf + self._wlen, data, n)
        self._wlen += n
        return 0

    cdef int _send_window(self, Py_ssize_t start, Py_ssize_t stop) except -1:
        if stop <= start:
            return 0
        mv = PyMemoryView_FromMemory(self._wbuf + start, stop - start, PyBUF_READ)
        try:
            self._sendall(mv)
        except BaseException:
            _release_view(mv)
            raise
        _release_view(mv)
        return 0

    cdef Py_ssize_t _read_into(self, Py_ssize_t n, object results, bytes ok) except -1:
        cdef ReplyReader r = self._reader
        cdef Py_ssize_t bad = 0, k
        for k in range(n):
            self._next()
            if r._tok_is(0, ok):
                r._consume()
                results.append(None)
            else:
                results.append(r._reply())
                bad += 1
        return bad

    cdef Py_ssize_t _read_puts(self, Py_ssize_t n, object results) except -1:
        cdef ReplyReader r = self._reader
        cdef Py_ssize_t bad = 0, k
        for k in range(n):
            self._next()
            jid = r._inserted()
            if jid is not None:
                results.append(jid)
            else:
                results.append(r._reply())
                bad += 1
        return bad

    def put_many(self, items, priority, delay, ttr, encoding, results):
        cdef Py_ssize_t i, bad = 0, pending = 0, count = 0, n, size, seg, big, at
        cdef unsigned long long v[3]
        cdef unsigned long long v0[3]
        cdef bint fast = True       # bytes items with valid defaults need no per-item checks
        cdef Py_buffer view
        cdef list bigs
        try:
            _u32(priority, "priority", &v0[0])
            _u32(delay, "delay", &v0[1])
            _u32(ttr, "ttr", &v0[2])
        except (InvalidArgument, InvalidType):
            fast = False            # each item then reports the bad default, as the pure core does
        if isinstance(items, (list, tuple)):
            for i, item in enumerate(items):        # validate the whole sequence first
                if not (fast and PyBytes_CheckExact(item)):
                    _put_item(item, priority, delay, ttr, encoding, i, v)
        it = iter(items)
        while True:
            self._wlen = 0
            bigs = None     # [(offset in _wbuf, body)] of bodies sent as they are
            seg = 0         # start of the bytes since the last big body
            big = 0         # bytes of the big bodies of this window
            n = 0
            try:
                for item in it:
                    if fast and PyBytes_CheckExact(item):
                        body = item
                        v[0] = v0[0]
                        v[1] = v0[1]
                        v[2] = v0[2]
                    else:
                        body = _put_item(item, priority, delay, ttr, encoding, count, v)
                    count += 1
                    n += 1
                    if PyBytes_CheckExact(body):
                        size = PyBytes_GET_SIZE(body)
                        self._wreserve(80 + (size if size < C_BIG_BODY else 0))
                        self._wlen += _put_head(self._wbuf + self._wlen, v, size)
                        if size < C_BIG_BODY:
                            memcpy(self._wbuf + self._wlen, PyBytes_AS_STRING(body), size)
                            self._wlen += size
                    else:
                        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
                        try:
                            size = view.len
                            self._wreserve(80 + (size if size < C_BIG_BODY else 0))
                            self._wlen += _put_head(self._wbuf + self._wlen, v, size)
                            if size < C_BIG_BODY:
                                memcpy(self._wbuf + self._wlen, view.buf, size)
                                self._wlen += size
                        finally:
                            PyBuffer_Release(&view)
                    if size >= C_BIG_BODY:
                        if bigs is None:
                            bigs = []
                        bigs.append((self._wlen, body))
                        seg = self._wlen
                        big += size
                    self._wwrite(b"\r\n", 2)
                    if n >= self.window or self._wlen - seg + big >= C_WINDOW_BYTES:
                        break
            except Exception:   # a bad item, or the caller's iterator failed: this window is unsent
                bad += self._read_puts(pending, results)
                raise
            if not n:
                break
            at = 0
            if bigs is not None:
                for off, body in bigs:
                    self._send_window(at, off)
                    self._sendall(body)
                    at = off
            self._send_window(at, self._wlen)
            _give_way()
            bad += self._read_puts(pending, results)
            pending = n
        if pending:
            _give_way()
        bad += self._read_puts(pending, results)
        return bad

    def jobs_many(self, items, template, args, ok, results):
        cdef Py_ssize_t i, bad = 0, pending = 0, count = 0, n, k
        cdef unsigned long long jid
        cdef bytes prefix = None, suffix = None, line
        cdef bytes okb = ok if type(ok) is bytes else bytes(ok)
        if isinstance(items, (list, tuple)):
            for i, item in enumerate(items):
                _jid(item, i, &jid)
        # b"delete %d\r\n" % ((jid,) + args) == prefix + digits + suffix, when the prefix has no '%'
        if type(template) is bytes and type(args) is tuple:
            k = template.find(b"%d")
            if k >= 0 and template.find(b"%", 0, k) < 0:
                try:
                    suffix = template[k + 2:] % args
                    prefix = template[:k]
                except Exception:
                    suffix = None
        it = iter(items)
        while True:
            self._wlen = 0
            n = 0
            try:
                for item in it:
                    _jid(item, count, &jid)
                    if suffix is not None:
                        self._wreserve(PyBytes_GET_SIZE(prefix) + PyBytes_GET_SIZE(suffix) + 24)
                        memcpy(self._wbuf + self._wlen, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
                        self._wlen += PyBytes_GET_SIZE(prefix)
                        self._wlen += _fmt_u64(self._wbuf + self._wlen, jid)
                        memcpy(self._wbuf + self._wlen, PyBytes_AS_STRING(suffix), PyBytes_GET_SIZE(suffix))
                        self._wlen += PyBytes_GET_SIZE(suffix)
                    else:
                        line = template % ((int(jid),) + args)
                        self._wwrite(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))
                    count += 1
                    n += 1
                    if n >= self.window:
                        break
            except Exception:   # a bad item, or the caller's iterator failed: this window is unsent
                bad += self._read_into(pending, results, okb)
                raise
            if not n:
                break
            self._send_window(0, self._wlen)
            _give_way()
            bad += self._read_into(pending, results, okb)
            pending = n
        if pending:
            _give_way()
        bad += self._read_into(pending, results, okb)
        return bad

    def reserve_many(self, n, first_command, results):
        cdef ReplyReader r = self._reader
        cdef Py_ssize_t left, k, j, bad = 0
        cdef bint stop
        reply = self.reserve(first_command)
        if len(reply) != 2:
            if reply[0] == b"TIMED_OUT":
                return 0
            results.append(reply)
            return 1
        results.append(reply)
        left = n - 1
        while left > 0:
            k = left if left < self.reserve_window else self.reserve_window
            if k < 1:
                k = 1
            self._sendall(_RESERVE0 * k)
            _give_way()
            left -= k
            stop = False
            for j in range(k):
                self._next()
                job = r._job()
                if job is not None:
                    results.append(job)
                else:
                    stop = True
                    if r._tok_is(0, b"TIMED_OUT"):
                        r._consume()
                    else:
                        results.append(r._reply())
                        bad += 1
            if stop:
                break
        return bad


# -- YAML -------------------------------------------------------------------------

_BOOL = {b"yes": True, b"Yes": True, b"YES": True, b"true": True, b"True": True, b"TRUE": True,
         b"on": True, b"On": True, b"ON": True, b"no": False, b"No": False, b"NO": False,
         b"false": False, b"False": False, b"FALSE": False, b"off": False, b"Off": False, b"OFF": False}
_NULL = {b"~", b"null", b"Null", b"NULL"}
cdef dict _CBOOL = _BOOL
cdef list _KEY_CACHES = []         # up to 4 lists of the keys of recent mapping documents, in order


cdef inline bint _alpha_(char c):
    return (65 <= c <= 90) or (97 <= c <= 122) or c == b'_'


cdef inline bint _word_char(char c):
    return _alpha_(c) or _isdigit(c) or c == b'-'


cdef bint _is_word(const char *p, Py_ssize_t n):
    # [A-Za-z_][A-Za-z0-9_\-]*
    cdef Py_ssize_t i
    if n < 1 or not _alpha_(p[0]):
        return False
    for i in range(1, n):
        if not _word_char(p[i]):
            return False
    return True


cdef object _scalar(const char *p, Py_ssize_t n):
    """The value yaml.safe_load gives a plain/quoted scalar, or raise ValueError."""
    cdef Py_ssize_t i, dot
    cdef char c
    cdef char tmp[64]
    cdef bint letter
    if n == 0:
        raise ValueError(b"")
    c = p[0]
    if _isdigit(c):
        if _all_digits(p, n):
            if c != b'0' or n == 1:                  # (?:0|[1-9][0-9]*)
                return _digits_int(p, n)
            raise ValueError(PyBytes_FromStringAndSize(p, n))
        dot = -1                                     # [0-9]+\.[0-9]+
        for i in range(n):
            if p[i] == b'.':
                if dot >= 0:
                    dot = -2
                    break
                dot = i
            elif not _isdigit(p[i]):
                dot = -2
                break
        if dot > 0 and dot < n - 1:
            if n < 64:
                memcpy(tmp, p, n)
                tmp[n] = 0
                return PyOS_string_to_double(tmp, NULL, NULL)
            return float(PyBytes_FromStringAndSize(p, n))
        letter = False                               # [0-9][0-9a-f]*, a letter, not 0b...
        for i in range(n):
            if 97 <= p[i] <= 102:
                letter = True
            elif not _isdigit(p[i]):
                letter = False
                break
        if letter and not (n > 1 and c == b'0' and p[1] == b'b'):
            return PyUnicode_DecodeASCII(p, n, NULL)
        raise ValueError(PyBytes_FromStringAndSize(p, n))
    if c == b'"':                                     # "printable ASCII", no escapes
        if n < 2 or p[n - 1] != b'"':
            raise ValueError(PyBytes_FromStringAndSize(p, n))
        for i in range(1, n - 1):
            if p[i] < 32 or p[i] > 126 or p[i] == b'"' or p[i] == b'\\':
                raise ValueError(PyBytes_FromStringAndSize(p, n))
        return PyUnicode_DecodeASCII(p + 1, n - 2, NULL)
    if _alpha_(c):                                   # [A-Za-z_][A-Za-z0-9_.\-]*
        for i in range(1, n):
            if not (_word_char(p[i]) or p[i] == b'.'):
                raise ValueError(PyBytes_FromStringAndSize(p, n))
        if n <= 5:
            raw = PyBytes_FromStringAndSize(p, n)
            value = _CBOOL.get(raw)
            if value is not None:
                return value
            if raw in _NULL:
                raise ValueError(raw)
        return PyUnicode_DecodeASCII(p, n, NULL)
    if c == b'#':                                    # a comment: null
        for i in range(1, n):
            if p[i] < 32 or p[i] > 126:
                raise ValueError(PyBytes_FromStringAndSize(p, n))
        return None
    raise ValueError(PyBytes_FromStringAndSize(p, n))


def parse_yaml(body):
    cdef bytes data = body if type(body) is bytes else bytes(body)
    cdef const char *s = PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), pos, eol, k, klen
    cdef const char *line
    cdef const char *nl
    cdef list out_list
    cdef dict out
    if n < 5 or memcmp(s, b"---\n", 4) != 0 or s[n - 1] != b'\n':
        raise ValueError("not a beanstalkd YAML document")
    pos = 4
    if n - pos >= 3 and s[pos] == b'-' and s[pos + 1] == b' ':
        out_list = []
        while pos < n:
            nl = <const char *>memchr(s + pos, b'\n', n - pos)
            eol = nl - s
            line = s + pos
            if eol - pos < 2 or line[0] != b'-' or line[1] != b' ':
                raise ValueError(PyBytes_FromStringAndSize(line, eol - pos))
            out_list.append(_scalar(line + 2, eol - pos - 2))
            pos = eol + 1
        return out_list
    # Keys come back in the same order every time (stats, stats-tube, stats-job): reuse the
    # validated str keys of the last documents instead of decoding and hashing them again.
    cdef list cache = None, keys = None
    cdef Py_ssize_t idx = 0, ncache = 0
    cdef bint hit
    nl = <const char *>memchr(s + pos, b'\n', n - pos)
    for entry in _KEY_CACHES:
        first = (<list>entry)[0]
        if (PyUnicode_GET_LENGTH(first) < nl - s - pos and s[pos + PyUnicode_GET_LENGTH(first)] == b':'
                and memcmp(PyUnicode_DATA(first), s + pos, PyUnicode_GET_LENGTH(first)) == 0):
            cache = <list>entry
            ncache = len(cache)
            break
    out = {}
    while pos < n:
        nl = <const char *>memchr(s + pos, b'\n', n - pos)
        eol = nl - s
        line = s + pos
        hit = False
        if idx < ncache:
            key = cache[idx]
            klen = PyUnicode_GET_LENGTH(key)
            hit = (klen + 2 <= eol - pos and line[klen] == b':' and line[klen + 1] == b' '
                   and memcmp(PyUnicode_DATA(key), line, klen) == 0)
        if not hit:
            klen = -1
            for k in range(eol - pos - 1):
                if line[k] == b':' and line[k + 1] == b' ':
                    klen = k
                    break
            if klen < 0 or not _is_word(line, klen):
                raise ValueError(PyBytes_FromStringAndSize(line, eol - pos))
            if klen <= 5:
                raw = PyBytes_FromStringAndSize(line, klen)
                if raw in _CBOOL or raw in _NULL:
                    raise ValueError(PyBytes_FromStringAndSize(line, eol - pos))
            key = PyUnicode_DecodeASCII(line, klen, NULL)
            if keys is None:
                keys = list(cache[:idx]) if cache is not None else []
        if keys is not None:
            keys.append(key)
        out[key] = _scalar(line + klen + 2, eol - pos - klen - 2)
        idx += 1
        pos = eol + 1
    if keys is None and idx < ncache:
        keys = cache[:idx]
    if keys is not None and keys:
        # replace the matched entry (or the oldest); a new list, so concurrent readers are unaffected
        _KEY_CACHES[:] = [keys] + [e for e in _KEY_CACHES if e is not cache][:3]
    return out
