"""Argument checks, encode_put and parse_yaml: edge values, parity of the two cores, and yaml.safe_load."""
import array
import math

import pytest

from beanstalkc_fast import InvalidArgument, InvalidType
from beanstalkc_fast import _pyprotocol

try:
    from beanstalkc_fast import _cprotocol
except ImportError:
    _cprotocol = None

yaml = pytest.importorskip("yaml")

needs_c = pytest.mark.skipif(_cprotocol is None, reason="compiled extension not built")


class Index:
    def __init__(self, v):
        self.v = v

    def __index__(self):
        return self.v


class HasJid:
    def __init__(self, jid):
        self.jid = jid


def outcome(func, *args):
    """A comparable record of a call: its value and type, or its exception type and message."""
    try:
        value = func(*args)
    except Exception as err:
        return ("raises", type(err), str(err))
    if isinstance(value, memoryview):
        return ("memoryview", value.format, value.tobytes())
    return ("returns", type(value), value)


UINT32_CASES = [
    (0, 0), (1, 1), (2 ** 32 - 1, 2 ** 32 - 1), (2 ** 32, InvalidArgument), (-1, InvalidArgument),
    (2 ** 64, InvalidArgument), (-2 ** 70, InvalidArgument), (True, 1), (False, 0), (Index(7), 7),
    (Index(-1), InvalidArgument), (1.0, InvalidType), (float("nan"), InvalidType), ("5", InvalidType),
    (b"5", InvalidType), (None, InvalidType), ([1], InvalidType),
]


@pytest.mark.parametrize("value,expected", UINT32_CASES, ids=[repr(c[0])[:20] for c in UINT32_CASES])
def test_check_uint32(impl, value, expected):
    if isinstance(expected, type):
        with pytest.raises(expected) as info:
            impl.check_uint32(value, "priority")
        assert "priority" in str(info.value)
    else:
        got = impl.check_uint32(value, "priority")
        assert got == expected and type(got) is int


JID_CASES = [
    (0, 0), (2 ** 64 - 1, 2 ** 64 - 1), (2 ** 64, InvalidArgument), (-1, InvalidArgument), (True, 1),
    (HasJid(42), 42), (HasJid(-3), InvalidArgument), (HasJid("x"), InvalidType), (Index(9), 9),
    (1.5, InvalidType), ("12", InvalidType), (b"12", InvalidType), (None, InvalidType),
]


@pytest.mark.parametrize("value,expected", JID_CASES, ids=[repr(c[0])[:20] for c in JID_CASES])
def test_check_jid(impl, value, expected):
    if isinstance(expected, type):
        with pytest.raises(expected):
            impl.check_jid(value)
    else:
        got = impl.check_jid(value)
        assert got == expected and type(got) is int


TUBE_OK = ["default", "a", "A-b_c+d/e;f.g$h(i)", "0", "1.5", "x" * 200, b"bytes-name", "(paren"]
TUBE_BAD = [("", InvalidArgument), ("-lead", InvalidArgument), ("x" * 201, InvalidArgument),
            ("has space", InvalidArgument), ("crlf\r\n", InvalidArgument), ("tab\t", InvalidArgument),
            ("caf\u00e9", InvalidArgument), (b"caf\xc3\xa9", InvalidArgument), ("a*b", InvalidArgument),
            ("a\x00", InvalidArgument), (b"", InvalidArgument), (5, InvalidType), (None, InvalidType),
            (bytearray(b"abc"), InvalidType)]


@pytest.mark.parametrize("name", TUBE_OK, ids=[repr(n)[:20] for n in TUBE_OK])
def test_check_tube_ok(impl, name):
    got = impl.check_tube(name)
    assert type(got) is bytes
    assert got == (name if isinstance(name, bytes) else name.encode("ascii"))


@pytest.mark.parametrize("name,error", TUBE_BAD, ids=[repr(c[0])[:20] for c in TUBE_BAD])
def test_check_tube_bad(impl, name, error):
    with pytest.raises(error):
        impl.check_tube(name)


def test_check_tube_every_byte(impl):
    allowed = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")
    for c in range(256):
        raw = b"a" + bytes([c])
        if c in allowed:
            assert impl.check_tube(raw) == raw
        else:
            with pytest.raises(InvalidArgument):
                impl.check_tube(raw)
        if c == ord("-") or c not in allowed:
            with pytest.raises(InvalidArgument):
                impl.check_tube(bytes([c]))


BODIES = [b"", b"abc", "h\u00e9llo", bytearray(b"xyz"), memoryview(b"mv"), array.array("i", [1, 2]),
          memoryview(array.array("H", [1, 2, 3])), 5, None, 1.5, ["a"], memoryview(b"abcdef")[::2]]


@pytest.mark.parametrize("body", BODIES, ids=[type(b).__name__ + str(i) for i, b in enumerate(BODIES)])
@pytest.mark.parametrize("encoding", ["utf-8", "ascii", None])
def test_check_body_and_encode_put(impl, body, encoding):
    try:
        checked = impl.check_body(body, encoding)
    except InvalidType:
        assert encoding is None or not isinstance(body, str)
        return
    except InvalidArgument:
        assert encoding == "ascii" and isinstance(body, str)
        return
    raw = bytes(checked)
    if isinstance(body, str):
        assert raw == body.encode(encoding)
    else:
        assert raw == memoryview(body).tobytes()
    data = impl.encode_put(checked, 1, 2, 3)
    assert type(data) is bytes
    assert data == b"put 1 2 3 %d\r\n%s\r\n" % (len(raw), raw)


@pytest.mark.parametrize("args", [(0, 0, 0), (2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1), (True, Index(3), 120)])
def test_encode_put_values(impl, args):
    pri, delay, ttr = (int(a.__index__()) for a in args)
    assert impl.encode_put(b"x\r\ny", *args) == b"put %d %d %d 4\r\nx\r\ny\r\n" % (pri, delay, ttr)


@pytest.mark.parametrize("bad,error", [(2 ** 32, InvalidArgument), (-1, InvalidArgument), (1.0, InvalidType),
                                       ("1", InvalidType)])
@pytest.mark.parametrize("position", [0, 1, 2])
def test_encode_put_rejects(impl, bad, error, position):
    args = [1, 2, 3]
    args[position] = bad
    with pytest.raises(error) as info:
        impl.encode_put(b"x", *args)
    assert ("priority", "delay", "ttr")[position] in str(info.value)


def test_encode_put_big_body(impl):
    body = bytes(range(256)) * 1024
    assert impl.encode_put(body, 5, 0, 60) == b"put 5 0 60 262144\r\n" + body + b"\r\n"


@needs_c
def test_checks_parity():
    values = [c[0] for c in UINT32_CASES] + [c[0] for c in JID_CASES] + TUBE_OK + [c[0] for c in TUBE_BAD]
    for value in values:
        assert outcome(_pyprotocol.check_uint32, value, "ttr") == outcome(_cprotocol.check_uint32, value, "ttr")
        assert outcome(_pyprotocol.check_jid, value) == outcome(_cprotocol.check_jid, value)
        assert outcome(_pyprotocol.check_tube, value) == outcome(_cprotocol.check_tube, value)
    for body in BODIES:
        for encoding in ("utf-8", "ascii", None):
            py = outcome(_pyprotocol.check_body, body, encoding)
            assert py == outcome(_cprotocol.check_body, body, encoding)
            if py[0] != "raises":
                checked = _pyprotocol.check_body(body, encoding)
                for args in ((1, 2, 3), (2 ** 32, 0, 0), (0, -1, 0), (0, 0, 1.5)):
                    assert outcome(_pyprotocol.encode_put, checked, *args) == \
                        outcome(_cprotocol.encode_put, checked, *args)


# -- parse_yaml ---------------------------------------------------------------

YAML_DOCS = [
    b"---\ncurrent-jobs-urgent: 0\ncmd-put: 12345\npid: 7163\nversion: \"1.12\"\nrusage-utime: 0.001642\n"
    b"rusage-stime: 0.000000\ndraining: false\nid: 5ebcc2c93df4bb6c\nhostname: vm\n"
    b"os: #1 SMP PREEMPT_DYNAMIC @0\nplatform: x86_64\n",
    b"---\nid: abcdef0123456789\nhostname: host.example.com\n",
    b"---\nid: 0123456789abcdef\n",
    b"---\nname: default\ncurrent-jobs-ready: 3\npause: 0\npause-time-left: 0\n",
    b"---\nid: 1\ntube: \"default\"\nstate: ready\npri: 2147483648\nage: 0\nfile: 0\n",
    b"---\n- default\n- tube-a\n- t_1\n",
    b"---\n- 1.5\n- 010\n- yes\n- null\n- 2001-12-14\n",
    b"---\n- 1.5\n", b"---\n- 010\n", b"---\n- yes\n", b"---\n- null\n", b"---\n- 2001-12-14\n",
    b"---\n- 0\n- 10\n- 00\n- 0.5\n- 1.\n- .5\n- 1e5\n- 1.5e3\n- 0b1\n- 0x1f\n- 0b\n- 1_0\n- 0189\n",
    b"---\n- 0b1\n", b"---\n- 0x1f\n", b"---\n- 1_0\n", b"---\n- 0189\n", b"---\n- 1e5\n", b"---\n- 0b\n",
    b"---\n- 123abc\n", b"---\n- abc123\n", b"---\n- 12345678901234567890123\n", b"---\n- 1.5.2\n",
    b"---\n- 99999999999999999999.5\n", b"---\n- 3.14159265358979323846264338327950288\n",
    b"---\n- Yes\n- NO\n- on\n- Off\n- TRUE\n- y\n- n\n- ~\n- Null\n- NULL\n",
    b"---\n- y\n", b"---\n- ~\n", b"---\n- Null\n", b"---\n- on\n", b"---\n- OFF\n",
    b"---\n- a+b\n- a/b\n- a;b\n- $x\n- (x)\n- _x\n- x.y\n- -x\n",
    b"---\n- a/b\n", b"---\n- $x\n", b"---\n- (x)\n", b"---\n- _x\n", b"---\n- x.y\n", b"---\n- -x\n",
    b"---\na: \"quoted # not a comment\"\nb: \"with 'single'\"\nc: \"\"\n",
    b"---\na: \"esc\\\"aped\"\n", b"---\na: \"back\\\\slash\"\n", b"---\na: \"tab\there\"\n",
    b"---\na: \"caf\xc3\xa9\"\n", b"---\na: \"unterminated\n", b"---\na: 'single'\n",
    b"---\nos: #comment with: colon\n", b"---\nos: # \n", b"---\nos: #\n", b"---\nos:#x\n",
    b"---\n- #x\n", b"---\na: x #trailing\n", b"---\na: #\xc3\xa9\n", b"---\na: #\x01\n",
    b"---\nyes: 1\n", b"---\nnull: 1\n", b"---\non: 1\n", b"---\n1: 1\n", b"---\na b: 1\n", b"---\n-a: 1\n",
    b"---\na: 1\na: 2\n", b"---\na:\n", b"---\na: \n", b"---\na:  1\n", b"---\na: 1 \n", b"---\n a: 1\n",
    b"---\na: b: c\n", b"---\na: [1]\n", b"---\na: {b: 1}\n", b"---\na: &x 1\n", b"---\na: *x\n",
    b"---\na: !!str 1\n", b"---\na: 1\r\n", b"---\n", b"---\n\n", b"--- \na: 1\n", b"---\na: 1",
    b"", b"a: 1\n", b"---\n- a\nb: 1\n", b"---\na: 1\n- b\n", b"---\n-\n", b"---\n- \n", b"---\n-  x\n",
    b"---\n- .inf\n", b"---\n- .nan\n", b"---\n- +1\n", b"---\n- -1\n", b"---\n- 1:20\n", b"---\n- =\n",
    b"---\n- <<\n", b"---\n- a\x7f\n", b"---\na: \"\x7f\"\n", b"---\na: 0.000000\n", b"---\na: 007.5\n",
]


def deep_types(value):
    if isinstance(value, dict):
        return {k: (type(v), deep_types(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [(type(v), deep_types(v)) for v in value]
    return type(value)


def safe_load(doc):
    try:
        return ("ok", yaml.safe_load(doc))
    except Exception as err:
        return ("error", err)


@pytest.mark.parametrize("doc", YAML_DOCS, ids=[repr(d)[2:30] for d in YAML_DOCS])
def test_parse_yaml_matches_safe_load(impl, doc):
    try:
        got = impl.parse_yaml(doc)
    except ValueError:
        return      # the caller falls back to PyYAML: always allowed
    kind, expected = safe_load(doc)
    assert kind == "ok", "parse_yaml accepted a document PyYAML rejects: %r" % (expected,)
    assert got == expected or (isinstance(got, float) and math.isnan(got))
    assert deep_types(got) == deep_types(expected)


@pytest.mark.parametrize("doc", YAML_DOCS[:6], ids=[repr(d)[2:30] for d in YAML_DOCS[:6]])
def test_parse_yaml_handles_beanstalkd_documents(impl, doc):
    # The documents beanstalkd actually sends must not need the PyYAML fallback.
    assert impl.parse_yaml(doc) == yaml.safe_load(doc)


def test_parse_yaml_bytes_like(impl):
    doc = b"---\n- a\n- 1\n"
    assert impl.parse_yaml(bytearray(doc)) == impl.parse_yaml(memoryview(doc)) == ["a", 1]


@needs_c
def test_parse_yaml_parity():
    for doc in YAML_DOCS:
        py = outcome(_pyprotocol.parse_yaml, doc)
        c = outcome(_cprotocol.parse_yaml, doc)
        assert py[:2] == c[:2], doc
        if py[0] == "returns":
            assert py == c and deep_types(py[2]) == deep_types(c[2]), doc


def test_parse_yaml_real_stats(conn, impl):
    # What this server really sends for stats, stats-tube, stats-job and list-tubes.
    jid = conn.put(b"x")
    for cmd, args in (("stats", ()), ("stats-tube", (conn.using(),)), ("stats-job", (jid,)), ("list-tubes", ()),
                      ("list-tubes-watched", ())):
        body = conn._command(cmd, *args)
        assert impl.parse_yaml(body) == yaml.safe_load(body)


def test_parse_yaml_repeated_documents(impl):
    # Documents sharing, reordering, dropping or adding keys, parsed one after another
    # (the compiled core reuses the keys of recent documents).
    docs = [b"---\na: 1\nb: 2\nc: 3\n", b"---\na: 1\nb: 2\nc: 3\n", b"---\na: 1\nb: 2\n", b"---\na: 1\nb: 2\nc: 3\nd: 4\n",
            b"---\na: 1\nbb: 2\nc: 3\n", b"---\na: 1\nc: 3\nb: 2\n", b"---\nab: 1\n", b"---\na: 1\nb: 2\nc: 3\n",
            b"---\nx: 1\n", b"---\ny: 1\n", b"---\nz: 1\n", b"---\nw: 1\n", b"---\na: 1\nb: 2\nc: 3\n",
            b"---\na: 1\nb:2\n", b"---\na: 1\nb: 2\nyes: 3\n", b"---\na:: 1\n", b"---\na: 1\nb: 2\nc: 3\n"]
    for _ in range(2):
        for doc in docs:
            try:
                got = impl.parse_yaml(doc)
            except ValueError:
                with pytest.raises(ValueError):
                    _pyprotocol.parse_yaml(doc)
                continue
            assert got == yaml.safe_load(doc) == _pyprotocol.parse_yaml(doc)
            assert list(got) == list(yaml.safe_load(doc))
