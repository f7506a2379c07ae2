# Declarations of the compiled protocol core (see _cprotocol.pyx).
# Named after the module's full name: src/ is not a package, so Cython finds the .pxd of
# beanstalkc_fast._cprotocol only by this dotted name (a plain _cprotocol.pxd is ignored).

cdef enum:
    MAXTOK = 8                  # reply-line tokens whose offsets are kept; longer lines fall back to bytes.split()


cdef class ReplyReader:
    cdef char *_buf                         # buffered reply bytes (PyMem_Malloc'd, never exported past a call)
    cdef Py_ssize_t _cap                    # allocated size of _buf
    cdef Py_ssize_t _start                  # offset of the first unconsumed byte
    cdef Py_ssize_t _end                    # offset one past the last buffered byte
    cdef Py_ssize_t _max_line               # longest reply line accepted, without its CRLF
    cdef Py_ssize_t _need                   # bytes from _start the pending reply needs (its line is parsed); 0: unknown
    # The reply found by the last _parse() that returned 1 (offsets into _buf):
    cdef Py_ssize_t _eol                    # the CRLF that ends the reply line
    cdef Py_ssize_t _next                   # one past the whole reply (line, body and its CRLF)
    cdef Py_ssize_t _body                   # the body, or -1 when the status has none
    cdef Py_ssize_t _body_len               # length of the body
    cdef int _ntok                          # number of whitespace-separated tokens of the line
    cdef Py_ssize_t _tok[MAXTOK]            # offsets of the first MAXTOK tokens
    cdef Py_ssize_t _tlen[MAXTOK]           # lengths of the first MAXTOK tokens

    cdef int _parse(self) except -1
    cdef object _reply(self)
    cdef object _job(self)
    cdef object _inserted(self)
    cdef void _consume(self)
    cdef int _reserve(self, Py_ssize_t free) except -1
    cdef int _tok_is(self, int i, bytes word)


cdef class Protocol:
    cdef public object sock                 # the Python socket object; all I/O goes through its methods
    cdef object _sendall                    # sock.sendall, cached
    cdef object _recv_into                  # sock.recv_into, cached
    cdef Py_ssize_t _read_size              # smallest free space offered to one recv_into
    cdef ReplyReader _reader                # the receive buffer and reply parser
    cdef char *_wbuf                        # batch window being encoded (PyMem_Malloc'd)
    cdef Py_ssize_t _wlen                   # bytes used in _wbuf
    cdef Py_ssize_t _wcap                   # allocated size of _wbuf
    cdef public Py_ssize_t window           # commands per pipelined window (WINDOW_ITEMS)
    cdef public Py_ssize_t reserve_window   # reserves per window (RESERVE_WINDOW)

    cdef int _fill(self) except -1
    cdef ReplyReader _next(self)
    cdef object _read_reply(self)
    cdef int _wreserve(self, Py_ssize_t n) except -1
    cdef int _wwrite(self, const char *data, Py_ssize_t n) except -1
    cdef int _send_window(self, Py_ssize_t start, Py_ssize_t stop) except -1
    cdef Py_ssize_t _read_into(self, Py_ssize_t n, object results, bytes ok) except -1
    cdef Py_ssize_t _read_puts(self, Py_ssize_t n, object results) except -1
