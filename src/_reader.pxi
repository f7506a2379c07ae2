# -- reader: replies out of buffered bytes, no I/O (see _pyprotocol.ReplyReader) ----------

cdef bint _plain_status(const char *s, Py_ssize_t n):
    # A status _parse reads as one token with no body: the bare form is then all there is to match.
    cdef Py_ssize_t i
    if n == 0 or (n == 2 and memcmp(s, b"OK", 2) == 0) or (n == 8 and memcmp(s, b"RESERVED", 8) == 0) or (
            n == 5 and memcmp(s, b"FOUND", 5) == 0):
        return False
    for i in range(n):
        if _isspace(s[i]):
            return False
    return True


cdef object _make_job(tuple job, object jid, object body):
    # A job as Batch's job says: cls.__new__(cls), then its attributes in order (checked by Batch).
    cdef type cls = <type>job[0]
    cdef tuple pair
    cdef bint generic = (<_SetattroType *>cls).tp_setattro == <setattrofunc>PyObject_GenericSetAttr
    made = (<PyTypeObject *>cls).tp_new(cls, <PyObject *>(), NULL)
    for pair in <tuple>job[1]:
        value = pair[1]
        if value is _JOB_ID:
            value = jid
        elif value is _JOB_BODY:
            value = body
        if generic:     # what PyObject_SetAttr calls then, less its checks of the name (str, checked)
            PyObject_GenericSetAttr(made, pair[0], value)
        else:
            PyObject_SetAttr(made, pair[0], value)
    return made


cdef class ReplyReader:
    # binding=False keeps the import cheap; a clinic-style first line gives inspect the signature
    """ReplyReader(max_line=1024)
--

"""
    cdef char *_buf                         # buffered reply bytes (PyMem_Malloc'd)
    cdef Py_ssize_t _cap                    # allocated size of _buf
    cdef Py_ssize_t _start                  # offset of the first unconsumed byte
    cdef Py_ssize_t _end                    # offset one past the last buffered byte
    cdef Py_ssize_t _max_line               # longest reply line accepted, without its CRLF
    cdef Py_ssize_t _need                   # bytes from _start the pending reply needs (its line is parsed); 0: unknown
    cdef object _view                       # the memoryview of get_buffer(), released before _buf may move
    # The reply found by the last _parse() that returned 1 (offsets into _buf):
    cdef Py_ssize_t _eol                    # the CRLF that ends the reply line
    cdef Py_ssize_t _next                   # one past the whole reply (line, body and its CRLF)
    cdef Py_ssize_t _body                   # the body, or -1 when the status has none
    cdef Py_ssize_t _body_len               # length of the body
    cdef bint _corrupt                      # the body was not followed by CRLF (its size held: in step)
    cdef int _ntok                          # number of whitespace-separated tokens of the line
    cdef Py_ssize_t _tok[MAXTOK]            # offsets of the first MAXTOK tokens
    cdef Py_ssize_t _tlen[MAXTOK]           # lengths of the first MAXTOK tokens

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
        if self._view is not None:
            try:
                self._view.release()
            except Exception:
                pass
        PyMem_Free(self._buf)
        self._buf = NULL

    def __len__(self):
        return self._end - self._start

    def feed(self, data):
        cdef Py_buffer view
        self._drop_view()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if self._start == self._end:
                self._start = self._end = 0
            self._reserve(view.len)
            memcpy(self._buf + self._end, view.buf, view.len)
            self._end += view.len
        finally:
            PyBuffer_Release(&view)

    def get_buffer(self, Py_ssize_t sizehint=-1):
        cdef Py_ssize_t want = sizehint if sizehint > MIN_FREE else MIN_FREE
        self._drop_view()
        if self._start == self._end:
            self._start = self._end = 0
        if self._cap - self._end < want:
            self._reserve(want)
        self._view = PyMemoryView_FromMemory(self._buf + self._end, self._cap - self._end, PyBUF_WRITE)
        return self._view

    def buffer_updated(self, Py_ssize_t nbytes):
        if self._view is None or nbytes < 0 or nbytes > self._cap - self._end:
            raise ValueError("buffer_updated(%r) without a get_buffer() of that size" % (nbytes,))
        self._end += nbytes
        self._drop_view()

    def clear(self):
        self._drop_view()
        self._start = self._end = self._need = 0

    def gets(self):
        if self._parse():
            return self._reply()
        return None

    def take(self, int kind, Py_ssize_t n, list results, status=None):
        if kind == C_KIND_STATUS and status is None:
            raise ValueError("take(KIND_STATUS) needs the status")
        return self._take(kind, n, results, status)

    cdef Py_ssize_t _take(self, int kind, Py_ssize_t n, list results, bytes status, tuple job=None) except -1:
        """Append the values of up to n buffered replies of kind; stop at another kind or need-more.
        job: KIND_JOB's jobs are made as Batch's job says."""
        cdef Py_ssize_t taken = 0
        if kind == C_KIND_JOB and status is None:
            status = b"RESERVED"
        while taken < n:
            taken += self._take_plain(kind, n - taken, results, status, job)
            if taken >= n or not self._parse():
                break
            if kind == C_KIND_INSERTED:
                value = self._inserted()
                if value is None:
                    break
            elif kind == C_KIND_STATUS:
                if self._ntok != 1 or status is None or not self._tok_is(0, status):
                    break
                self._consume()
                value = None
            elif kind == C_KIND_JOB:
                value = self._job(status) if job is None else self._made_job(status, job)
                if value is None:
                    break
            elif kind == C_KIND_BODY:
                if self._corrupt or not self._tok_is(0, b"OK"):
                    break
                value = PyBytes_FromStringAndSize(self._buf + self._body, self._body_len)
                self._consume()
            else:
                value = self._reply()
            results.append(value)
            taken += 1
        return taken

    cdef Py_ssize_t _take_plain(self, int kind, Py_ssize_t n, list results, bytes status, tuple job) except -1:
        """_take's fast lane: up to n replies of kind in their one plain form (INSERTED <id>, the
        bare status, a job with its whole body and 1-18 digit numbers), read without _parse's
        tokenizing; anything else (or a reply not whole yet) is left to _parse, as is every reply
        of another kind or status."""
        cdef Py_ssize_t taken = 0, pos, end, i, j, k, m, size, slen = 0, nxt
        cdef const char *buf
        cdef const char *s = NULL
        if self._need:
            return 0
        if kind == C_KIND_STATUS or kind == C_KIND_JOB:
            if status is None:
                return 0
            s = PyBytes_AS_STRING(status)
            slen = PyBytes_GET_SIZE(status)
            if kind == C_KIND_JOB:      # _parse reads a body only after these
                if not ((slen == 8 and memcmp(s, b"RESERVED", 8) == 0) or (slen == 5 and memcmp(s, b"FOUND", 5) == 0)):
                    return 0
            elif not _plain_status(s, slen):
                return 0
        elif kind != C_KIND_INSERTED:
            return 0
        while taken < n:
            buf = self._buf
            pos = self._start
            end = self._end
            if kind == C_KIND_INSERTED:
                if end - pos < 12 or memcmp(buf + pos, b"INSERTED ", 9) != 0:
                    break
                i = j = pos + 9
                while j < end and j - i < 18 and _isdigit(buf[j]):
                    j += 1
                if j == i or j + 1 >= end or buf[j] != b'\r' or buf[j + 1] != b'\n' or j - pos > self._max_line:
                    break
                nxt = j + 2
                value = PyLong_FromLongLong(_digits_value(buf + i, j - i))
                self._start = nxt
            elif kind == C_KIND_STATUS:
                if (end - pos < slen + 2 or memcmp(buf + pos, s, slen) != 0 or buf[pos + slen] != b'\r'
                        or buf[pos + slen + 1] != b'\n' or slen > self._max_line):
                    break
                self._start = pos + slen + 2
                value = None
            else:
                if end - pos < slen + 6 or memcmp(buf + pos, s, slen) != 0 or buf[pos + slen] != b' ':
                    break
                i = j = pos + slen + 1
                while j < end and j - i < 18 and _isdigit(buf[j]):
                    j += 1
                if j == i or j >= end or buf[j] != b' ':
                    break
                k = m = j + 1
                while m < end and m - k < 18 and _isdigit(buf[m]):
                    m += 1
                if m == k or m + 1 >= end or buf[m] != b'\r' or buf[m + 1] != b'\n' or m - pos > self._max_line:
                    break
                size = <Py_ssize_t>_digits_value(buf + k, m - k)
                if size > end - (m + 2) - 2 or buf[m + 2 + size] != b'\r' or buf[m + 3 + size] != b'\n':
                    break       # not whole yet, or corrupt: _parse's
                jid = PyLong_FromLongLong(_digits_value(buf + i, j - i))
                body = PyBytes_FromStringAndSize(buf + m + 2, size)
                self._start = m + 4 + size
                value = (jid, body) if job is None else _make_job(job, jid, body)
            if self._start == self._end:
                self._start = self._end = 0
            results.append(value)
            taken += 1
        return taken

    cdef int _drop_view(self) except -1:
        # The memoryview of get_buffer() dies before _buf may move: a holder can no longer write
        # into freed memory (it gets ValueError instead); one still exported stops the move.
        if self._view is not None:
            view, self._view = self._view, None
            view.release()
        return 0

    cdef int _reserve(self, Py_ssize_t free) except -1:
        # Make room for `free` more bytes after _end (moves data: no parsed reply may be pending).
        cdef Py_ssize_t cap
        cdef char *nbuf
        if self._cap - self._end >= free:
            return 0
        self._drop_view()
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
        self._corrupt = False
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
        # A corrupt body (not followed by CRLF) is consumed all the same: the stream stays in step.
        self._corrupt = buf[bend] != b'\r' or buf[bend + 1] != b'\n'
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

    cdef object _job(self, bytes status):
        """(jid, body) of the parsed reply if it is a `status` (RESERVED, FOUND) with a job id (consumed), else None."""
        if self._ntok == 3 and not self._corrupt and self._tok_is(0, status) and _all_digits(self._buf + self._tok[1], self._tlen[1]):
            job = (_digits_int(self._buf + self._tok[1], self._tlen[1]),
                   PyBytes_FromStringAndSize(self._buf + self._body, self._body_len))
            self._consume()
            return job
        return None

    cdef object _made_job(self, bytes status, tuple job):
        """_job(status), made into a job as Batch's job says."""
        if self._ntok == 3 and not self._corrupt and self._tok_is(0, status) and _all_digits(self._buf + self._tok[1], self._tlen[1]):
            jid = _digits_int(self._buf + self._tok[1], self._tlen[1])
            body = PyBytes_FromStringAndSize(self._buf + self._body, self._body_len)
            self._consume()
            return _make_job(job, jid, body)
        return None

    cdef object _reply(self):
        """The (status, args, body) tuple of the parsed reply; consumes it."""
        cdef char *buf = self._buf
        cdef int ntok = self._ntok, i
        cdef tuple args
        cdef int first = 0 if self._corrupt else 1     # a corrupt reply's args are its whole line
        status = CORRUPT if self._corrupt else _status(buf + self._tok[0], self._tlen[0])
        if ntok == first:
            args = ()
        elif ntok <= MAXTOK:
            args = PyTuple_New(ntok - first)
            for i in range(first, ntok):
                arg = PyBytes_FromStringAndSize(buf + self._tok[i], self._tlen[i])
                Py_INCREF(arg)
                PyTuple_SET_ITEM(args, i - first, arg)
        else:
            args = tuple(PyBytes_FromStringAndSize(buf + self._start, self._eol - self._start).split()[first:])
        if self._body >= 0:
            body = PyBytes_FromStringAndSize(buf + self._body, self._body_len)
        else:
            body = None
        self._consume()
        return (status, args, body)




cdef class Batch:
    """Batch(kind, n, results, status=None, reserves=False, stop_at=None, job=None)
--

"""
    cdef public int kind                    # the KIND_* of the replies expected
    cdef public Py_ssize_t n                # replies still due
    cdef public list results                # each reply's value (or the other reply), in order
    cdef public object status               # take()'s status: KIND_STATUS's, or KIND_JOB's (RESERVED)
    cdef public bint reserves               # a window of reserves: TIMED_OUT dropped, any other non-job stops
    cdef public object stop_at              # a status that ends the window early (None: none)
    cdef public Py_ssize_t bad              # replies not of kind, appended as they are
    cdef public bint stop                   # reserves: a reply that is not a job came
    cdef public bint stopped                # the window ended early at stop_at
    cdef readonly tuple job                 # KIND_JOB: None ((jid, body)), or (class, ((name, value), ...)) to make

    def __init__(self, int kind, Py_ssize_t n, list results, status=None, reserves=False, stop_at=None, job=None):
        if kind == C_KIND_STATUS and status is None:
            raise ValueError("take(KIND_STATUS) needs the status")
        if job is not None:
            if not (type(job) is tuple and len(job) == 2 and isinstance(job[0], type) and type(job[1]) is tuple
                    and all(type(a) is tuple and len(a) == 2 and type(a[0]) is str for a in job[1])
                    and (<PyTypeObject *>job[0]).tp_new != NULL):
                raise TypeError("job must be None or (class, ((name, value), ...))")
        self.job = job
        self.kind = kind
        self.n = n
        self.results = results
        self.status = status
        self.reserves = reserves
        self.stop_at = stop_at
        self.bad = 0
        self.stop = False
        self.stopped = False

    def feed(self, ReplyReader reader):
        return self._feed(reader)

    cdef bint _feed(self, ReplyReader r) except -1:
        cdef bint stopping
        while self.n > 0:
            self.n -= r._take(self.kind, self.n, self.results, self.status, self.job)
            if self.n <= 0:
                break
            if not r._parse():
                return False
            self.n -= 1
            if self.reserves:
                if not r._corrupt:      # a corrupt job is still a job: more may be ready
                    self.stop = True
                if r._tok_is(0, b"TIMED_OUT"):
                    r._consume()
                    continue
            stopping = self.stop_at is not None and r._tok_is(0, self.stop_at)
            self.results.append(r._reply())
            self.bad += 1
            if stopping:
                self.stopped = True
                return True
        return True


def pairs(type cls, first, list values):
    # One allocation per item (tuple.__new__ of a subclass makes a tuple, then copies it).
    if cls is tuple or not issubclass(cls, tuple):
        raise TypeError("pairs() needs a subclass of tuple, not %r" % (cls,))
    cdef Py_ssize_t i, n = len(values)
    cdef list out = [None] * n
    cdef object pair, value
    if _TUPLE_HASH_CACHE:   # 3.14+ tuples cache their hash in a field GenericAlloc leaves at 0
        return list(map(tuple.__new__, [cls] * n, [(first, value) for value in values]))
    for i in range(n):
        pair = PyType_GenericAlloc(cls, 2)
        value = values[i]
        Py_INCREF(first)
        PyTuple_SET_ITEM(pair, 0, first)
        Py_INCREF(value)
        PyTuple_SET_ITEM(pair, 1, value)
        out[i] = pair
    return out
