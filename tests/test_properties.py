"""Property tests of the reply parser and the YAML parser of each core (hypothesis).

- Any split of a valid reply stream parses exactly as the whole stream.
- Arbitrary bytes, in any split, only ever give tuples, None or ProtocolError; both cores agree.
- parse_yaml on arbitrary bytes either raises ValueError or returns what yaml.safe_load gives.
The compiled core is also fuzzed in a subprocess (fixed seed), so a crash fails a test
instead of killing the run.
"""
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import beanstalkc_fast
from beanstalkc_fast import ProtocolError, _pyprotocol

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- valid replies ------------------------------------------------------------------------

_number = st.integers(min_value=0, max_value=2 ** 64 - 1).map(lambda n: b"%d" % n)
_tube = st.text(alphabet="abcXYZ0123456789-+/;.$_()", min_size=1, max_size=20).filter(
    lambda t: not t.startswith("-")).map(lambda t: t.encode())
_body = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"RESERVED 1 2\r\n", b"\r", b"\n"])


@st.composite
def valid_reply(draw):
    """(raw bytes, the tuple gets() must return)."""
    kind = draw(st.sampled_from(["plain", "one", "tube", "body"]))
    if kind == "plain":
        status = draw(st.sampled_from([b"DELETED", b"RELEASED", b"TOUCHED", b"NOT_FOUND", b"TIMED_OUT",
                                       b"DEADLINE_SOON", b"BURIED", b"KICKED", b"PAUSED", b"NOT_IGNORED",
                                       b"OUT_OF_MEMORY", b"INTERNAL_ERROR", b"BAD_FORMAT",
                                       b"UNKNOWN_COMMAND", b"JOB_TOO_BIG", b"DRAINING", b"EXPECTED_CRLF"]))
        return status + b"\r\n", (status, (), None)
    if kind == "one":
        status = draw(st.sampled_from([b"INSERTED", b"BURIED", b"WATCHING", b"KICKED"]))
        n = draw(_number)
        return b"%s %s\r\n" % (status, n), (status, (n,), None)
    if kind == "tube":
        name = draw(_tube)
        return b"USING %s\r\n" % name, (b"USING", (name,), None)
    status = draw(st.sampled_from([b"RESERVED", b"FOUND", b"OK"]))
    body = draw(_body)
    size = b"%d" % len(body)
    if status == b"OK":
        return b"OK %s\r\n%s\r\n" % (size, body), (b"OK", (size,), body)
    jid = draw(_number)
    return b"%s %s %s\r\n%s\r\n" % (status, jid, size, body), (status, (jid, size), body)


def drain(reader, out=None):
    """Call gets() until None; return the replies (appended to ``out`` as they come)."""
    out = [] if out is None else out
    while True:
        reply = reader.gets()
        if reply is None:
            return out
        out.append(reply)


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@SETTINGS
@given(replies=st.lists(valid_reply(), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=10 ** 6), max_size=30),
       kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_any_split_parses_as_the_whole(impl, replies, cuts, kind):
    stream = b"".join(raw for raw, _ in replies)
    expected = [reply for _, reply in replies]

    whole = impl.ReplyReader()
    whole.feed(stream)
    assert drain(whole) == expected
    assert len(whole) == 0

    pieces = impl.ReplyReader()
    got = []
    for piece in split(stream, cuts):
        pieces.feed(kind(piece))
        got.extend(drain(pieces))
    assert got == expected
    assert len(pieces) == 0


@SETTINGS
@given(replies=st.lists(valid_reply(), min_size=1, max_size=6))
def test_byte_by_byte(impl, replies):
    stream = b"".join(raw for raw, _ in replies)
    reader = impl.ReplyReader()
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i:i + 1])
        got.extend(drain(reader))
        assert len(reader) <= i + 1
    assert got == [reply for _, reply in replies]


# -- hostile bytes --------------------------------------------------------------------------

def outcome(module, chunks):
    """Feed chunks, draining after each; return (replies, error type or None, leftover length)."""
    reader = module.ReplyReader()
    got = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            drain(reader, got)
    except ProtocolError:
        return got, ProtocolError
    return got, None


_garbage = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([b"RESERVED", b"FOUND", b"OK", b"INSERTED", b" ", b"  ", b"\r\n", b"\r", b"\n",
                              b"1", b"18446744073709551616", b"-1", b"999999999999999999", b"0x10", b"\x00",
                              b"\xff", b"\t", b"5", b"abc", b"+3", b"1e3", b"\xd9\xa1"]),
             max_size=40).map(b"".join),
)


@SETTINGS
@given(data=_garbage, cuts=st.lists(st.integers(min_value=0, max_value=10 ** 6), max_size=10))
@example(data=b"OK 3\r\nabcXY", cuts=[])
@example(data=b"RESERVED 1 -1\r\n", cuts=[])
@example(data=b"OK 99999999999999999999999\r\n", cuts=[])
@example(data=b"\r\n", cuts=[])
@example(data=b"A" * 5000, cuts=[100, 2000])
@example(data=b"RESERVED 1 \xd9\xa1\r\n", cuts=[])
def test_arbitrary_bytes_only_raise_protocol_error(impl, data, cuts):
    got, error = outcome(impl, split(data, cuts))
    for reply in got:
        status, args, body = reply
        assert type(status) is bytes and status and type(args) is tuple
        assert all(type(a) is bytes and a for a in args)
        assert body is None or type(body) is bytes
    # The twins agree on every input, whatever the split.
    assert (got, error) == outcome(_pyprotocol, [data])


@SETTINGS
@given(replies=st.lists(valid_reply(), max_size=4), garbage=_garbage)
def test_valid_prefix_is_returned_before_any_error(impl, replies, garbage):
    stream = b"".join(raw for raw, _ in replies)
    got, _ = outcome(impl, [stream + garbage])
    assert got[:len(replies)] == [reply for _, reply in replies]


@SETTINGS
@given(size=st.integers(min_value=1027, max_value=200000), piece=st.integers(min_value=1, max_value=70000))
def test_long_line_is_refused_without_buffering_it(impl, size, piece):
    reader = impl.ReplyReader()
    data = b"x" * size
    with pytest.raises(ProtocolError):
        for i in range(0, size, piece):
            reader.feed(data[i:i + piece])
            assert reader.gets() is None
            assert len(reader) <= 1024 + 1      # a line and its CR, at most: refused beyond
        raise AssertionError("never refused")


# -- YAML -------------------------------------------------------------------------------------

yaml = pytest.importorskip("yaml")

_yaml_scalar = st.one_of(
    st.integers(min_value=0, max_value=2 ** 64).map(str),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda f: "%.6f" % f),
    st.sampled_from(["yes", "no", "true", "false", "on", "off", "null", "~", "", "0b1", "0x1f", "0o7", "007",
                     "1_000", ".5", "1.", "1e3", "-1", "+1", '"quoted"', "'single'", '"a\\"b"', "#c", "a#b",
                     "a: b", "- x", "[1]", "{a: 1}", "*ref", "&anchor x", "!!str 1", "2024-01-01", "12:30",
                     "1:2:3", "deadbeef", "0e1", "inf", ".inf", ".nan", "Linux 6.1 #1 SMP", "a.b.c"]),
    st.text(alphabet="abcxyz019_-.:# \"'", max_size=12),
)
_yaml_key = st.sampled_from(["id", "tube", "state", "pri", "current-jobs-ready", "version", "hostname", "os",
                             "yes", "null", "a b", "1", "-x", "k:"])


@st.composite
def yaml_doc(draw):
    if draw(st.booleans()):
        items = draw(st.lists(_yaml_scalar, min_size=1, max_size=6))
        text = "---\n" + "".join("- %s\n" % v for v in items)
    else:
        pairs = draw(st.lists(st.tuples(_yaml_key, _yaml_scalar), min_size=1, max_size=6))
        text = "---\n" + "".join("%s: %s\n" % kv for kv in pairs)
    return text.encode()


def safe_load(body):
    try:
        return ("ok", yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except yaml.YAMLError:
        return ("error", None)


@SETTINGS
@given(body=yaml_doc() | st.binary(max_size=200))
@example(body=b"---\n")
@example(body=b"---\nversion: 1.12\n")
@example(body=b"---\nid: 0b101\n")
@example(body=b"---\n- \xff\n")
def test_parse_yaml_is_exact_or_declines(impl, body):
    try:
        value = impl.parse_yaml(body)
    except ValueError:
        return                          # declined: the caller falls back to PyYAML
    kind, expected = safe_load(body)
    assert kind == "ok", "parse_yaml accepted what PyYAML rejects: %r -> %r" % (body, value)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, dict):
        for k in value:
            assert type(value[k]) is type(expected[k]), (k, value[k], expected[k])
    else:
        assert [type(v) for v in value] == [type(v) for v in expected]


@SETTINGS
@given(body=yaml_doc())
def test_parse_yaml_twins_agree(impl, body):
    def run(module):
        try:
            return module.parse_yaml(body)
        except ValueError:
            return ValueError
    assert run(impl) == run(_pyprotocol)


# -- crash-proof fuzz in a subprocess -------------------------------------------------------------

FUZZ = textwrap.dedent(r'''
    import importlib, random, socket, sys
    from beanstalkc_fast import ProtocolError, SocketError
    core = importlib.import_module(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    rounds = int(sys.argv[3])
    seeds = [b"RESERVED 12 5\r\nhello\r\n", b"FOUND 1 0\r\n\r\n", b"OK 12\r\n---\na: 1\nb: 2\n\r\n",
             b"INSERTED 3\r\n", b"USING default\r\n", b"TIMED_OUT\r\n", b"WATCHING 2\r\n",
             b"OK 40\r\n---\n- default\n- t1\n- t2\n- \"q\"\n- 0xff\n\r\n"]
    tokens = [b"\r\n", b"\r", b"\n", b" ", b"0", b"9", b"99999999999999999999", b"-", b"\x00", b"\xff",
              b"RESERVED", b"OK", b"FOUND", b"---\n", b": ", b"- ", b"\"", b"#"]

    def mutate(data):
        data = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(5)
            pos = rng.randint(0, len(data))
            if op == 0 and data:
                del data[pos:pos + rng.randint(1, 8)]
            elif op == 1:
                data[pos:pos] = rng.choice(tokens)
            elif op == 2 and data:
                data[min(pos, len(data) - 1)] = rng.randrange(256)
            elif op == 3:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
            else:
                data += rng.choice(seeds)
        return bytes(data)

    def reader_round(data):
        r = core.ReplyReader()
        pos = 0
        try:
            while pos < len(data):
                step = rng.randint(1, 64)
                r.feed(data[pos:pos + step])
                pos += step
                while r.gets() is not None:
                    pass
            len(r)
            r.clear()
        except ProtocolError:
            pass

    def yaml_round(data):
        try:
            core.parse_yaml(data)
        except ValueError:
            pass

    def socket_round(data):
        a, b = socket.socketpair()
        try:
            p = core.Protocol(a, rng.choice([1, 7, 64, 65536]))
            b.sendall(data)
            b.close()
            for _ in range(100):
                p.read_reply()
        except (ProtocolError, SocketError):
            pass
        finally:
            a.close()

    for i in range(rounds):
        data = mutate(rng.choice(seeds) * rng.randint(1, 3))
        if rng.random() < 0.1:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        reader_round(data)
        yaml_round(data)
        yaml_round(data.split(b"\r\n", 1)[-1])
        if i % 10 == 0:
            socket_round(data)
    print("ok", rounds)
''')


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzz_in_a_subprocess(impl, seed, tmp_path):
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    # The package under test (in the checkout or installed), not the checkout's uncompiled copy.
    root = os.path.dirname(os.path.dirname(os.path.abspath(beanstalkc_fast.__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script), impl.__name__, str(seed), "6000"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, "fuzz of %s crashed (rc=%d):\n%s" % (impl.__name__, proc.returncode,
                                                                      proc.stderr[-3000:])
    assert proc.stdout.strip() == "ok 6000"


# -- typed take(): the fast lane of plain replies and _parse's path agree --------------------------

_take_stream = st.lists(st.sampled_from([b"INSERTED ", b"INSERTED 7\r\n", b"DELETED", b"DELETED\r\n", b"RESERVED ",
                                         b"RESERVED 5 3\r\nabc\r\n", b"FOUND ", b"OK", b" ", b"\t", b"\r\n", b"\r",
                                         b"1", b"0", b"12", b"999999999999999999", b"1234567890123456789", b"3",
                                         b"abc", b"x"]), max_size=60).map(b"".join)
_take_kinds = st.sampled_from([("KIND_INSERTED", None), ("KIND_STATUS", b"DELETED"), ("KIND_STATUS", b"RELEASED"),
                               ("KIND_JOB", None), ("KIND_JOB", b"FOUND"), ("KIND_BODY", None)])


def take_outcome(module, chunks, kind, status):
    """Feed chunks; after each, take() up to 3 at a time, else gets() one; return what came and how it ended."""
    reader = module.ReplyReader()
    got = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while True:
                if reader.take(getattr(module, kind), 3, got, status):
                    continue
                reply = reader.gets()
                if reply is None:
                    break
                got.append(("other", reply))
    except ProtocolError:
        return got, ProtocolError, None
    return got, None, len(reader)


@SETTINGS
@given(data=_take_stream | st.lists(valid_reply(), max_size=8).map(lambda rs: b"".join(r for r, _ in rs)),
       cuts=st.lists(st.integers(min_value=0, max_value=10 ** 6), max_size=10), kind=_take_kinds)
@example(data=b"INSERTED 1234567890123456789\r\nINSERTED 7\r\n", cuts=[], kind=("KIND_INSERTED", None))
@example(data=b"RESERVED 5 3\r\nabcXYRESERVED 5 3\r\nabc\r\n", cuts=[20], kind=("KIND_JOB", None))
@example(data=b"DELETED \r\nDELETED\r\n", cuts=[3], kind=("KIND_STATUS", b"DELETED"))
def test_take_agrees_with_the_pure_core_in_any_split(impl, data, cuts, kind):
    assert take_outcome(impl, split(data, cuts), *kind) == take_outcome(_pyprotocol, [data], *kind)
