# -- asyncio: one socket's reply dispatch and coalesced writes (see _pyprotocol.AioChannel) --

from collections import deque as _deque

cdef Py_ssize_t C_YIELD_AT = 64             # buffers in one write from which yielding the CPU pays


cdef class AioChannel:
    # binding=False keeps the import cheap; a clinic-style first line gives inspect the signature
    """AioChannel(conn)
--

"""
    cdef public object _conn                # the aio Connection: settles, orphans, failures
    cdef public object _loop                # its event loop
    cdef public ReplyReader _reader         # the reader fed by get_buffer()/buffer_updated()
    cdef public object _fifo                # deque: (future, cmd, jid or None) per command, or a window entry
    cdef public list _out                   # buffers queued this loop iteration
    cdef public bint _flushing              # a flush() is scheduled
    cdef public bint _paused                # the transport asked us to stop writing
    cdef public list _drainers              # futures of callers waiting for resume_writing()
    cdef public object transport            # the asyncio transport, once connected
    cdef public object error                # why this channel is closed, once it is
    cdef public set held                    # ids of the jobs reserved by this channel
    cdef public bint blocked                # a reserve that may wait is at the server
    cdef public object block_wait           # its timeout (seconds; None: forever)
    cdef public object _timeout             # socket_timeout (None: no limit)
    cdef public object _timer               # the TimerHandle of _check(), while armed
    cdef public double _progress            # when bytes last came, or the FIFO last became non-empty
    cdef object _flush_cb                   # self.flush, bound once (call_soon takes it per iteration)
    cdef object _create_future              # _loop.create_future, bound once

    def __init__(self, conn):
        self._conn = conn
        self._loop = conn._loop
        self._reader = ReplyReader()
        self._fifo = _deque()
        self._out = []
        self._flushing = False
        self._paused = False
        self._drainers = []
        self.transport = None
        self.error = None
        self.held = set()
        self.blocked = False
        self.block_wait = None
        self._timeout = conn._socket_timeout
        self._timer = None
        self._progress = 0.0
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

    def buffer_updated(self, Py_ssize_t nbytes):
        cdef ReplyReader reader = self._reader
        cdef object fifo = self._fifo
        cdef object conn = self._conn
        cdef tuple slot
        cdef str cmd
        reader.buffer_updated(nbytes)
        if self._timeout is not None:
            self._progress = self._loop.time()
        try:
            while fifo:
                entry = fifo[0]
                if type(entry) is tuple:
                    if not reader._parse():
                        break
                    slot = <tuple>entry
                    cmd = slot[1]
                    value = None
                    if cmd == "put":
                        value = reader._inserted()      # the job id, or None: another reply
                    if value is None:
                        value = reader._reply()
                    fifo.popleft()
                    if slot[2] is not None:
                        conn._settle(self, cmd, slot[2], value)
                    fut = slot[0]
                    if fut.done():          # its caller was cancelled or timed out
                        conn._orphan(self, cmd, value)
                    else:
                        fut.set_result(value)
                elif entry.feed(reader):
                    fifo.popleft()
                    conn._settle_batch(self, entry)
                else:
                    break
            if not fifo and reader._end > reader._start and self.error is None:
                raise ProtocolError("a reply came that no command asked for: %r" % (reader.gets(),))
        except ProtocolError as err:
            conn._lost(err)

    # -- writing --

    def send(self, data, cmd, jid=None):
        if self.error is not None:
            return self._refuse(True)
        fut = self._create_future()
        idle = not self._fifo
        self._fifo.append((fut, cmd, jid))
        self._write(data, idle)
        return fut

    def put(self, body, priority, delay, ttr, encoding):
        cdef bint idle
        body = _check_body(body, encoding)
        if PyBytes_CheckExact(body) and PyBytes_GET_SIZE(body) < C_BIG_BODY:
            data = _encode_put(body, priority, delay, ttr)
        else:
            data = b"".join(_put_chunks(body, priority, delay, ttr))
        if self._paused or self.error is not None:
            return None
        fut = self._create_future()
        idle = not self._fifo
        self._fifo.append((fut, "put", None))
        self._write(data, idle)
        return fut

    def send_batch(self, chunks, batch):
        cdef bint idle
        if self.error is not None:
            return self._refuse(False)
        idle = not self._fifo
        self._fifo.append(batch)
        if len(chunks) == 1:
            self._write(chunks[0], idle)
        else:
            self._out.extend(chunks)
            self._schedule(idle)

    cdef _write(self, data, bint idle):
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

    cdef _schedule(self, bint idle):
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush_cb)
        if self._timeout is not None:
            if idle:
                self._progress = self._loop.time()
            self._arm()

    def flush(self):
        cdef list out = self._out
        self._flushing = False
        if out and self.error is None:
            self._out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
                if len(out) >= C_YIELD_AT:
                    _give_way()     # many commands at once: let a server on this CPU answer them all

    # -- socket_timeout: the server must answer within it (a waiting reserve: plus its own timeout) --

    cdef _limit(self):
        if self.blocked:
            return None if self.block_wait is None else self._timeout + self.block_wait
        return self._timeout

    cdef _arm(self):
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
