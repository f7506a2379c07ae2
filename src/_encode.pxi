# -- encoders: bytes to send, nothing sent (see _pyprotocol) -------------------------

# The last b"put <priority> <delay> <ttr> " formatted: puts mostly repeat the same three values.
cdef unsigned long long _head_v[3]
cdef char _head[40]
cdef Py_ssize_t _head_n = 0


cdef Py_ssize_t _put_head(char *out, unsigned long long *v, Py_ssize_t size):
    # b"put %d %d %d %d\r\n": at most 4 + 3 * 11 + 20 + 2 bytes
    global _head_n
    cdef Py_ssize_t n = 4
    if _head_n and v[0] == _head_v[0] and v[1] == _head_v[1] and v[2] == _head_v[2]:
        n = _head_n
        memcpy(out, _head, n)
    else:
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
        memcpy(_head, out, n)
        _head_v[0], _head_v[1], _head_v[2] = v[0], v[1], v[2]
        _head_n = n
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



def put_chunks(body, priority, delay, ttr):
    return _put_chunks(body, priority, delay, ttr)


cdef list _put_chunks(object body, object priority, object delay, object ttr):
    cdef unsigned long long v[3]
    cdef char head[80]
    cdef Py_ssize_t size = len(body)
    if size < C_BIG_BODY:
        return [_encode_put(body, priority, delay, ttr)]
    _u32(priority, "priority", &v[0])
    _u32(delay, "delay", &v[1])
    _u32(ttr, "ttr", &v[2])
    return [PyBytes_FromStringAndSize(head, _put_head(head, v, size)), body, _CRLF]


def put_command(body, priority, delay, ttr, encoding):
    body = _check_body(body, encoding)
    if PyBytes_CheckExact(body) and PyBytes_GET_SIZE(body) < C_BIG_BODY:
        return _encode_put(body, priority, delay, ttr)
    return _put_chunks(body, priority, delay, ttr)


def encode_job(verb, jid):
    return _encode_job(verb, jid)


cdef bytes _encode_job(object verb, object jid):
    cdef unsigned long long v
    cdef char line[48]
    cdef Py_ssize_t n
    if type(verb) is not bytes:
        raise InvalidType("job command verb must be bytes, not %s" % type(verb).__name__)
    n = PyBytes_GET_SIZE(verb)
    if n > 20:
        raise InvalidArgument("job command verb too long: %r" % (verb,))
    _jid_value(jid, &v)
    memcpy(line, PyBytes_AS_STRING(verb), n)
    line[n] = b' '
    n += 1
    n += _fmt_u64(line + n, v)
    line[n] = b'\r'
    line[n + 1] = b'\n'
    return PyBytes_FromStringAndSize(line, n + 2)


def put_windows(items, priority, delay, ttr, encoding, window=WINDOW_ITEMS):
    return _PutWindows(items, priority, delay, ttr, encoding, window)


def job_windows(items, template, args, window=WINDOW_ITEMS):
    return _JobWindows(items, template, args, window)


cdef class _Windows:
    """An iterator of (chunks, n) windows of commands (see put_windows, job_windows)."""
    cdef object _it                         # the items' iterator
    cdef Py_ssize_t _count                  # index of the next item, for error messages
    cdef Py_ssize_t _window                 # most commands per window
    cdef char *_buf                         # the window being encoded (PyMem_Malloc'd, reused: chunks are copies)
    cdef Py_ssize_t _len                    # bytes used in _buf
    cdef Py_ssize_t _cap                    # allocated size of _buf

    def __dealloc__(self):
        PyMem_Free(self._buf)
        self._buf = NULL

    def __iter__(self):
        return self

    def __next__(self):
        window = self._next_window()
        if window is None:
            raise StopIteration
        return window

    cdef object _next_window(self):
        return None

    cdef int _reserve(self, Py_ssize_t n) except -1:
        cdef Py_ssize_t cap
        cdef char *nbuf
        if self._len + n <= self._cap:
            return 0
        cap = self._cap * 2
        if cap < self._len + n:
            cap = self._len + n
        if cap < 65536:
            cap = 65536
        nbuf = <char *>PyMem_Realloc(self._buf, cap)
        if nbuf == NULL:
            raise MemoryError()
        self._buf = nbuf
        self._cap = cap
        return 0

    cdef int _write(self, const char *data, Py_ssize_t n) except -1:
        self._reserve(n)
        memcpy(self._buf + self._len, data, n)
        self._len += n
        return 0


cdef class _PutWindows(_Windows):
    cdef object _priority, _delay, _ttr     # the defaults as given
    cdef object _encoding                   # for str bodies
    cdef unsigned long long _v0[3]          # the defaults as C integers, when they are valid
    cdef bint _fast                         # bytes items with valid defaults need no per-item checks
    cdef char _head0[48]                    # _fast: b"put <priority> <delay> <ttr> ", the head but the size
    cdef Py_ssize_t _head0_len

    def __init__(self, items, priority, delay, ttr, encoding, window):
        cdef unsigned long long v[3]
        cdef Py_ssize_t i
        self._priority, self._delay, self._ttr, self._encoding = priority, delay, ttr, encoding
        self._window = window if window > 1 else 1
        self._fast = True
        try:
            _u32(priority, "priority", &self._v0[0])
            _u32(delay, "delay", &self._v0[1])
            _u32(ttr, "ttr", &self._v0[2])
        except (InvalidArgument, InvalidType):
            self._fast = False      # each item then reports the bad default, as the pure core does
        if self._fast:
            self._head0_len = _put_head(self._head0, self._v0, 0) - 3      # less "0\r\n"
        if isinstance(items, (list, tuple)):
            for i in range(len(items)):         # check the whole sequence first
                item = items[i]
                if not (self._fast and PyBytes_CheckExact(item)):
                    _put_item(item, priority, delay, ttr, encoding, i, v)
        self._it = iter(items)

    cdef object _next_window(self):
        cdef Py_ssize_t n = 0, size, seg = 0, big = 0
        cdef unsigned long long v[3]
        cdef Py_buffer view
        cdef list chunks = []
        self._len = 0
        for item in self._it:
            if self._fast and PyBytes_CheckExact(item):
                size = PyBytes_GET_SIZE(item)
                if size < C_BIG_BODY:       # the common case: the defaults' head and the size
                    self._reserve(self._head0_len + 24 + size + 2)
                    memcpy(self._buf + self._len, self._head0, self._head0_len)
                    self._len += self._head0_len
                    self._len += _fmt_u64(self._buf + self._len, <unsigned long long>size)
                    self._buf[self._len] = b'\r'
                    self._buf[self._len + 1] = b'\n'
                    memcpy(self._buf + self._len + 2, PyBytes_AS_STRING(item), size)
                    self._buf[self._len + 2 + size] = b'\r'
                    self._buf[self._len + 3 + size] = b'\n'
                    self._len += size + 4
                    self._count += 1
                    n += 1
                    if n >= self._window or self._len - seg + big >= C_WINDOW_BYTES:
                        break
                    continue
                body = item
                v[0] = self._v0[0]
                v[1] = self._v0[1]
                v[2] = self._v0[2]
            else:
                body = _put_item(item, self._priority, self._delay, self._ttr, self._encoding, self._count, v)
            self._count += 1
            n += 1
            if PyBytes_CheckExact(body):
                size = PyBytes_GET_SIZE(body)
                self._reserve(80 + (size if size < C_BIG_BODY else 0))
                self._len += _put_head(self._buf + self._len, v, size)
                if size < C_BIG_BODY:
                    memcpy(self._buf + self._len, PyBytes_AS_STRING(body), size)
                    self._len += size
            else:
                PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
                try:
                    size = view.len
                    self._reserve(80 + (size if size < C_BIG_BODY else 0))
                    self._len += _put_head(self._buf + self._len, v, size)
                    if size < C_BIG_BODY:
                        memcpy(self._buf + self._len, view.buf, size)
                        self._len += size
                finally:
                    PyBuffer_Release(&view)
            if size >= C_BIG_BODY:      # a chunk of its own, not copied
                chunks.append(PyBytes_FromStringAndSize(self._buf + seg, self._len - seg))
                chunks.append(body)
                seg = self._len
                big += size
            self._write(b"\r\n", 2)
            if n >= self._window or self._len - seg + big >= C_WINDOW_BYTES:
                break
        if not n:
            return None
        if self._len > seg:
            chunks.append(PyBytes_FromStringAndSize(self._buf + seg, self._len - seg))
        return (chunks, n)


cdef class _JobWindows(_Windows):
    cdef object _template, _args            # each command is template % ((jid,) + args)
    cdef bytes _prefix, _suffix             # or prefix + digits + suffix, when the prefix has no '%'
    cdef unsigned long long *_jids          # a list's or tuple's ids, checked up front (PyMem_Malloc'd); else NULL
    cdef Py_ssize_t _njids                  # how many _jids holds

    def __init__(self, items, template, args, window):
        cdef Py_ssize_t k, i
        self._template, self._args = template, args
        self._window = window if window > 1 else 1
        if isinstance(items, (list, tuple)):    # checked whole before a byte is sent, and read once
            k = len(items)      # by index, never past k: a subclass's own __iter__, or a jid property
            self._jids = <unsigned long long *>PyMem_Malloc(k * sizeof(unsigned long long) + 1)
            if self._jids == NULL:      # that grows the list, must not write beyond the array
                raise MemoryError()
            for i in range(k):
                _jid(items[i], i, &self._jids[i])
            self._njids = k
        if type(template) is bytes and type(args) is tuple:
            k = template.find(b"%d")
            if k >= 0 and template.find(b"%", 0, k) < 0:
                try:
                    self._suffix = template[k + 2:] % args
                    self._prefix = template[:k]
                except Exception:
                    self._suffix = None
        self._it = iter(items)

    def __dealloc__(self):
        PyMem_Free(self._jids)
        self._jids = NULL

    cdef object _next_window(self):
        cdef Py_ssize_t n = 0, plen, slen
        cdef unsigned long long jid
        cdef bytes line
        self._len = 0
        while n < self._window:
            if self._jids != NULL:
                if self._count >= self._njids:
                    break
                jid = self._jids[self._count]
            else:
                try:
                    item = next(self._it)
                except StopIteration:
                    break
                _jid(item, self._count, &jid)
            if self._suffix is not None:
                plen = PyBytes_GET_SIZE(self._prefix)
                slen = PyBytes_GET_SIZE(self._suffix)
                self._reserve(plen + slen + 24)
                memcpy(self._buf + self._len, PyBytes_AS_STRING(self._prefix), plen)
                self._len += plen
                self._len += _fmt_u64(self._buf + self._len, jid)
                memcpy(self._buf + self._len, PyBytes_AS_STRING(self._suffix), slen)
                self._len += slen
            else:
                line = self._template % ((int(jid),) + self._args)
                self._write(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line))
            self._count += 1
            n += 1
        if not n:
            return None
        return ([PyBytes_FromStringAndSize(self._buf, self._len)], n)
