# -- checks: arguments checked before a byte is encoded (see _pyprotocol) -----------------

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
    # check_jid for a batch item: errors name the item's index. A Job's plain int jid is read
    # here, without a call of check_jid per item; anything else goes through it (same errors).
    cdef int overflow = 0
    cdef long long v
    if not PyLong_CheckExact(value) and not isinstance(value, (str, bytes)):
        try:
            jid = getattr(value, "jid")
        except Exception:
            jid = None
        if PyLong_CheckExact(jid):
            v = PyLong_AsLongLongAndOverflow(jid, &overflow)
            if overflow == 0 and v >= 0:
                out[0] = <unsigned long long>v
                return 0
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


