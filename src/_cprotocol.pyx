# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True, embedsignature.format=clinic, binding=False
"""Compiled protocol core: the twin of ``beanstalkc_fast._pyprotocol``.

Same names, signatures, results and exceptions as the pure-Python core; the
public docstrings live there. The sections, one included file each, are those of
the pure core: checks, encoders, reader, yaml (none does I/O), the blocking
driver, whose I/O goes through the Python socket object (``recv_into``/``sendall``/
``sendmsg``), so gevent and socket timeouts keep working, and the asyncio channel
(its event loop does the I/O).
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_READ, PyBUF_WRITE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.long cimport (PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_CheckExact,
                           PyLong_FromLongLong)
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.object cimport PyObject, PyObject_SetAttr, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_REFCNT
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport memchr, memcmp, memcpy, memmove

import os as _os
import sys as _sys

from beanstalkc_fast import _defaults
from beanstalkc_fast.exceptions import InvalidArgument, InvalidType, ProtocolError, SocketError

cdef extern from "Python.h":
    bytes PyBytes_FromStringAndSize(const char *v, Py_ssize_t n)
    str PyUnicode_DecodeASCII(const char *s, Py_ssize_t n, const char *errors)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    void *PyUnicode_DATA(object o)
    double PyOS_string_to_double(const char *s, char **endptr, PyObject *overflow_exception) except? -1.0
    object PyType_GenericAlloc(type t, Py_ssize_t nitems)
    ctypedef int (*setattrofunc)(object o, object name, object value) except -1
    ctypedef struct _SetattroType "PyTypeObject":
        setattrofunc tp_setattro
    int PyObject_GenericSetAttr(object o, object name, object value) except -1

CORE_API = 12

UINT32_MAX = 2 ** 32 - 1
UINT64_MAX = 2 ** 64 - 1
MAX_LINE = 1024
READ_SIZE = 65536
WINDOW_ITEMS = 1024
WINDOW_BYTES = 256 * 1024
RESERVE_WINDOW = 256
BIG_BODY = 16 * 1024

KIND_REPLY = 0
KIND_INSERTED = 1
KIND_STATUS = 2
KIND_JOB = 3
KIND_BODY = 4
CORRUPT = b"CORRUPT BODY"      # the status of a reply whose body was not followed by CRLF (see _pyprotocol)

cdef Py_ssize_t C_WINDOW_ITEMS = WINDOW_ITEMS
cdef Py_ssize_t C_WINDOW_BYTES = WINDOW_BYTES
cdef Py_ssize_t C_RESERVE_WINDOW = RESERVE_WINDOW
cdef Py_ssize_t C_BIG_BODY = BIG_BODY
cdef enum:
    MAXTOK = 8                              # reply-line tokens whose offsets are kept; longer lines: bytes.split()
    C_KIND_REPLY = 0
    C_KIND_INSERTED = 1
    C_KIND_STATUS = 2
    C_KIND_JOB = 3
    C_KIND_BODY = 4
    IOV_MAX = 512                           # buffers per sendmsg() call

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
cdef bytes _CRLF = b"\r\n"
cdef object _sched_yield = getattr(_os, "sched_yield", None)
cdef bint _TUPLE_HASH_CACHE = _sys.version_info >= (3, 14)
cdef object _JOB_ID = _defaults.JOB_ID         # in a Batch's job: each job's id, and its body
cdef object _JOB_BODY = _defaults.JOB_BODY


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



include "_checks.pxi"
include "_encode.pxi"
include "_reader.pxi"
include "_yaml.pxi"
include "_blocking.pxi"
include "_asyncio.pxi"
