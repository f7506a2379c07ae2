# -- YAML -------------------------------------------------------------------------

_BOOL = {b"yes": True, b"Yes": True, b"YES": True, b"true": True, b"True": True, b"TRUE": True,
         b"on": True, b"On": True, b"ON": True, b"no": False, b"No": False, b"NO": False,
         b"false": False, b"False": False, b"FALSE": False, b"off": False, b"Off": False, b"OFF": False}
_NULL = {b"~", b"null", b"Null", b"NULL"}
cdef dict _CBOOL = _BOOL

cdef extern from *:
    """
    #if PY_VERSION_HEX < 0x030D0000
    #define __bsf_dict_sized(n) _PyDict_NewPresized(n)
    #else
    #define __bsf_dict_sized(n) PyDict_New()
    #endif
    """
    dict _dict_sized "__bsf_dict_sized"(Py_ssize_t n)   # a dict sized for n keys: no growing as it fills
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
    out = _dict_sized(ncache)
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
