# -- blocking driver: the only code here that touches a socket (see _pyprotocol.Protocol) --

cdef object _scatter(sock):
    # sock.sendmsg, or None for an SSL socket: it has the method but raises NotImplementedError.
    ssl = _sys.modules.get("ssl")   # not imported: no socket can be an SSL socket
    if ssl is not None and isinstance(sock, ssl.SSLSocket):
        return None
    return getattr(sock, "sendmsg", None)

cdef extern from "Python.h":
    object PyObject_Call(object callable, object args, PyObject *kwargs)   # kwargs may be NULL

cdef tuple _NOWAIT = (False,)     # lock.acquire(False), called with this tuple: acquire() takes no vectorcall


cdef inline tuple _args(ok):
    return () if ok is None else (ok,)


cdef class Protocol:
    """Protocol(sock, read_size=65536)
--

"""
    cdef public object sock                 # the Python socket object; all I/O goes through its methods
    cdef object _sendall                    # sock.sendall, cached
    cdef object _sendmsg                    # sock.sendmsg, cached; None where it has none or is SSL
    cdef object _recv_into                  # sock.recv_into, cached
    cdef object _timeout                    # the socket's timeout when the driver was made (None: none)
    cdef Py_ssize_t _read_size              # smallest free space offered to one recv_into
    cdef ReplyReader _reader                # the receive buffer and reply parser
    cdef public Py_ssize_t window           # commands per pipelined window (WINDOW_ITEMS)
    cdef public Py_ssize_t reserve_window   # reserves per window (RESERVE_WINDOW)
    # A Connection's call alone (pipe()): its locks and reply queue (attach()), their methods bound once
    cdef object _acquire                    # the write lock's acquire (None: not attached, pipe() hands over)
    cdef object _release                    # the write lock's release
    cdef object _qacquire                   # the queue lock's acquire
    cdef object _qrelease                   # the queue lock's release
    cdef object _queue                      # the reply queue (a deque)
    cdef object _append                     # its append
    cdef object _popleft                    # its popleft

    def __init__(self, sock, read_size=READ_SIZE):
        self.sock = sock
        self._sendall = sock.sendall
        self._sendmsg = _scatter(sock)
        self._recv_into = sock.recv_into
        self._timeout = sock.gettimeout() if hasattr(sock, "gettimeout") else None
        self._read_size = read_size if read_size > 0 else 1
        self._reader = ReplyReader()
        self.window = C_WINDOW_ITEMS
        self.reserve_window = C_RESERVE_WINDOW

    def send(self, data):
        self._sendall(data)

    def attach(self, lock, qlock, queue):
        self._acquire, self._release = lock.acquire, lock.release
        self._qacquire, self._qrelease = qlock.acquire, qlock.release
        self._queue, self._append, self._popleft = queue, queue.append, queue.popleft

    def write(self, data):
        self._write(data)

    cdef int _write(self, data) except -1:
        if PyBytes_CheckExact(data):
            self._sendall(data)
        else:
            self._send_chunks(list(data))
        return 0

    def send_chunks(self, chunks):
        self._send_chunks(list(chunks))

    cdef int _send_chunks(self, list chunks) except -1:
        cdef Py_ssize_t i = 0, sent, size
        if len(chunks) == 1 or self._sendmsg is None:
            for chunk in chunks:
                self._sendall(chunk)
            return 0
        chunks = [chunk for chunk in chunks if len(chunk)]
        while i < len(chunks):
            sent = self._sendmsg(chunks[i:i + IOV_MAX])
            while sent:     # drop what went out; a partly sent buffer goes on as a view of its rest
                size = len(chunks[i])
                if sent >= size:
                    sent -= size
                    i += 1
                else:
                    chunks[i] = memoryview(chunks[i])[sent:]
                    sent = 0
        return 0

    cdef int _fill(self) except -1:
        """One recv_into straight into the reader's buffer; EOF raises SocketError."""
        cdef ReplyReader r = self._reader
        cdef Py_ssize_t want = 0, floor, n
        cdef char *nbuf
        if r._start == r._end:
            r._start = r._end = 0
            if r._cap > KEEP_BYTES and self._read_size < KEEP_BYTES and r._view is None:
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

    def read_reply(self):
        return self._next()._reply()

    def call(self, data):
        self._sendall(data)
        return self._next()._reply()

    cdef bint _timed(self, object wait) except -1:
        # Let the server hold a reserve's reply for `wait` seconds on top of the socket timeout.
        if self._timeout is None or wait == -1:
            return False
        self.sock.settimeout(None if wait is None else wait + self._timeout)
        return True

    def reserve(self, data, wait=-1):
        return self._reserve(data, wait)

    cdef object _reserve(self, data, wait):
        cdef bint timed = self._timed(wait)
        self._sendall(data)
        try:
            return self._read_job()
        finally:
            if timed:
                self.sock.settimeout(self._timeout)

    # The reads of one sent command's reply, typed (the writes are send() and write()):

    def read_put(self):
        return self._read_put()

    def read_job(self):
        return self._read_job()

    def read_status(self, bytes ok):
        return self._read_status(ok)

    cdef object _read_put(self):
        cdef ReplyReader r = self._next()
        jid = r._inserted()
        return jid if jid is not None else r._reply()

    cdef object _read_job(self):
        cdef ReplyReader r = self._next()
        job = r._job(b"RESERVED")
        return job if job is not None else r._reply()

    cdef object _read_status(self, bytes ok):
        cdef ReplyReader r = self._next()
        if r._ntok == 1 and r._tok_is(0, ok):
            r._consume()
            return None
        return r._reply()

    cdef object _read(self, str read, ok):
        # The typed read named ``read`` (a Connection's name for it, as _pipe() takes it).
        if read == "read_put":
            return self._read_put()
        if read == "read_job":
            return self._read_job()
        if read == "read_status":
            return self._read_status(ok)
        if read == "read_reply":
            return self._next()._reply()
        return getattr(self, read)(*_args(ok))

    def buffered_reply(self):
        cdef ReplyReader r = self._reader
        if r._start != r._end and r._parse():
            return r._reply()
        return None

    # -- batches --

    def read_batch(self, Batch batch):
        return self._read_batch(batch)

    cdef Py_ssize_t _read_batch(self, Batch batch, bint patient=False) except -1:
        # patient: give way again before each further receive (see _read_many)
        cdef ReplyReader r = self._reader
        cdef bint again = False
        while not batch._feed(r):
            if patient and again:
                _give_way()
            self._fill()
            again = True
        return batch.bad

    cdef Py_ssize_t _read_many(self, Py_ssize_t n, list results, int kind, bytes status) except -1:
        if n <= 0:
            return 0
        # A window of job commands (delete_many...) whose replies are not all there after the
        # give-way: yield again before each further receive instead of sleeping in recv, where
        # each reply would wake us (beanstalkd's deletes slow down with the jobs a connection
        # holds: a window of 1,000 outlasts a time slice). Not for puts: there it costs the server
        # CPU (benchmarks/batch_sizes.md). The pure core does the same.
        return self._read_batch(Batch(kind, n, results, status), kind == C_KIND_STATUS)

    cdef Py_ssize_t _pipeline(self, _Windows windows, list results, int kind, bytes status) except -1:
        # Send each window before reading the replies of the previous one.
        cdef Py_ssize_t bad = 0, pending = 0
        while True:
            try:
                window = windows._next_window()
            except Exception:   # a bad item, or the caller's iterator failed: that window is unsent
                bad += self._read_many(pending, results, kind, status)
                raise
            if window is None:
                break
            self._send_chunks(<list>window[0])
            _give_way()
            bad += self._read_many(pending, results, kind, status)
            pending = window[1]
        if pending:
            _give_way()
        return bad + self._read_many(pending, results, kind, status)

    def put_many(self, items, priority, delay, ttr, encoding, results):
        windows = _PutWindows(items, priority, delay, ttr, encoding, self.window)
        return self._pipeline(windows, results, C_KIND_INSERTED, None)

    def jobs_many(self, items, template, args, ok, results):
        windows = _JobWindows(items, template, args, self.window)
        return self._pipeline(windows, results, C_KIND_STATUS, ok if type(ok) is bytes else bytes(ok))

    def reserve_many(self, n, first_command, results, wait=-1, job=None):
        cdef Py_ssize_t left = n if n > 1 else 1, k, bad = 0
        cdef bint timed
        cdef Batch batch
        first = first_command
        while left > 0:
            k = left if left < self.reserve_window else self.reserve_window
            if k < 1:
                k = 1
            timed = first is not None and self._timed(wait)
            if first is not None:
                self._sendall(first + _RESERVE0 * (k - 1))
                first = None
            else:
                self._sendall(_RESERVE0 * k)
            _give_way()
            left -= k
            batch = Batch(C_KIND_JOB, k, results, None, True, None, job)
            try:
                bad += self._read_batch(batch)      # every reply of the window is read, even after a stop
            finally:
                if timed:
                    self.sock.settimeout(self._timeout)
            if batch.stop:
                break
        return bad


# -- a blocking Connection's single command when its caller has it to itself (see _pyprotocol.pipe) --

def pipe(conn, proto, data, str read, ok=None):
    # Connection._pipe's steps for a caller alone, in one call; any other case goes to _pipe,
    # or with the write lock taken here to its rest (_piped).
    cdef Protocol p
    if type(proto) is not Protocol or (<Protocol>proto)._acquire is None:
        return conn._pipe(data, read, *_args(ok))
    p = <Protocol>proto
    p._acquire()
    queue = p._queue
    if queue or conn._proto is not p:
        return conn._piped(data, read, _args(ok))
    p._append(None)     # nothing in flight: this caller is the reader (as in _pipe)
    try:
        p._write(data)
    except BaseException as err:
        p._release()
        return conn._broke(p, queue, err, data, read, _args(ok))
    p._release()
    try:
        reply = p._read(read, ok)
    except BaseException as err:
        return conn._broke(p, queue, err, data, read, _args(ok))
    p._qacquire()
    if len(queue) == 1:     # nobody came meanwhile
        p._popleft()
        p._qrelease()
    else:
        conn._pass_on(p, queue)
    return reply


def reserve_alone(conn, proto, data, wait=-1):
    # Connection._do("reserve", data, wait) for a caller alone without a Retry, in one call.
    cdef Protocol p
    if type(proto) is not Protocol or (<Protocol>proto)._acquire is None or conn._retry is not None:
        return conn._do("reserve", data, wait)
    p = <Protocol>proto
    if not PyObject_Call(p._acquire, _NOWAIT, NULL):
        return conn._do("reserve", data, wait)
    if p._queue or conn._proto is not p:
        p._release()
        return conn._do("reserve", data, wait)
    try:
        return p._reserve(data, wait)
    except BaseException as err:
        raise conn._failed(p, p._queue, "reserve", err)
    finally:
        p._release()
