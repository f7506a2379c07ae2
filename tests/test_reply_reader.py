"""ReplyReader parity: canned reply streams fed whole, byte by byte and split at every offset.

Both cores must give the expected replies (or the same exception type), and the same as each other.
"""
import pytest

from beanstalkc_fast import ProtocolError
from beanstalkc_fast import _commands, _pyprotocol

try:
    from beanstalkc_fast import _cprotocol
except ImportError:
    _cprotocol = None

CORRUPT = _pyprotocol.CORRUPT
BIG = bytes(range(256)) * 256          # 64 KB, contains CRLF and every byte value

# (name, stream, expected replies, expected exception type or None)
CASES = [
    ("inserted", b"INSERTED 12\r\n", [(b"INSERTED", (b"12",), None)], None),
    ("buried-id", b"BURIED 12\r\n", [(b"BURIED", (b"12",), None)], None),
    ("buried", b"BURIED\r\n", [(b"BURIED", (), None)], None),
    ("expected-crlf", b"EXPECTED_CRLF\r\n", [(b"EXPECTED_CRLF", (), None)], None),
    ("job-too-big", b"JOB_TOO_BIG\r\n", [(b"JOB_TOO_BIG", (), None)], None),
    ("draining", b"DRAINING\r\n", [(b"DRAINING", (), None)], None),
    ("using", b"USING some.tube\r\n", [(b"USING", (b"some.tube",), None)], None),
    ("deadline-soon", b"DEADLINE_SOON\r\n", [(b"DEADLINE_SOON", (), None)], None),
    ("timed-out", b"TIMED_OUT\r\n", [(b"TIMED_OUT", (), None)], None),
    ("reserved", b"RESERVED 5 3\r\nabc\r\n", [(b"RESERVED", (b"5", b"3"), b"abc")], None),
    ("deleted", b"DELETED\r\n", [(b"DELETED", (), None)], None),
    ("not-found", b"NOT_FOUND\r\n", [(b"NOT_FOUND", (), None)], None),
    ("released", b"RELEASED\r\n", [(b"RELEASED", (), None)], None),
    ("touched", b"TOUCHED\r\n", [(b"TOUCHED", (), None)], None),
    ("watching", b"WATCHING 2\r\n", [(b"WATCHING", (b"2",), None)], None),
    ("not-ignored", b"NOT_IGNORED\r\n", [(b"NOT_IGNORED", (), None)], None),
    ("found", b"FOUND 7 4\r\nbody\r\n", [(b"FOUND", (b"7", b"4"), b"body")], None),
    ("kicked-n", b"KICKED 3\r\n", [(b"KICKED", (b"3",), None)], None),
    ("kicked", b"KICKED\r\n", [(b"KICKED", (), None)], None),
    ("ok-yaml", b"OK 15\r\n---\nname: tube\n\r\n", [(b"OK", (b"15",), b"---\nname: tube\n")], None),
    ("paused", b"PAUSED\r\n", [(b"PAUSED", (), None)], None),
    ("out-of-memory", b"OUT_OF_MEMORY\r\n", [(b"OUT_OF_MEMORY", (), None)], None),
    ("internal-error", b"INTERNAL_ERROR\r\n", [(b"INTERNAL_ERROR", (), None)], None),
    ("bad-format", b"BAD_FORMAT\r\n", [(b"BAD_FORMAT", (), None)], None),
    ("unknown-command", b"UNKNOWN_COMMAND\r\n", [(b"UNKNOWN_COMMAND", (), None)], None),
    ("unknown-status", b"WHATEVER a b\r\n", [(b"WHATEVER", (b"a", b"b"), None)], None),
    ("many-args", b"X 1 2 3 4 5 6 7 8 9 10 11\r\n",
     [(b"X", tuple(b"%d" % i for i in range(1, 12)), None)], None),
    ("extra-whitespace", b" INSERTED \t 12 \x0b\r\n", [(b"INSERTED", (b"12",), None)], None),
    ("lone-cr-lf-in-line", b"A\rB\nC\r\n", [(b"A", (b"B", b"C"), None)], None),
    ("body-with-crlf", b"RESERVED 1 8\r\na\r\nb\r\n\r\n\r\n", [(b"RESERVED", (b"1", b"8"), b"a\r\nb\r\n\r\n")], None),
    ("body-is-crlf", b"FOUND 1 2\r\n\r\n\r\n", [(b"FOUND", (b"1", b"2"), b"\r\n")], None),
    ("empty-body", b"RESERVED 9 0\r\n\r\n", [(b"RESERVED", (b"9", b"0"), b"")], None),
    ("empty-ok", b"OK 0\r\n\r\n", [(b"OK", (b"0",), b"")], None),
    ("64k-body", b"RESERVED 3 65536\r\n" + BIG + b"\r\n", [(b"RESERVED", (b"3", b"65536"), BIG)], None),
    ("leading-zeros-size", b"OK 003\r\nabc\r\n", [(b"OK", (b"003",), b"abc")], None),
    ("several", b"INSERTED 1\r\nRESERVED 1 2\r\nhi\r\nTIMED_OUT\r\nOK 3\r\n- a\r\nDELETED\r\n",
     [(b"INSERTED", (b"1",), None), (b"RESERVED", (b"1", b"2"), b"hi"), (b"TIMED_OUT", (), None),
      (b"OK", (b"3",), b"- a"), (b"DELETED", (), None)], None),
    ("max-line", b"A" * 1024 + b"\r\n", [(b"A" * 1024, (), None)], None),
    ("incomplete-line", b"INSERTED 1", [], None),
    ("incomplete-body", b"RESERVED 1 10\r\nabc", [], None),
    ("complete-then-incomplete", b"DELETED\r\nRESERVED 1 10\r\nabc", [(b"DELETED", (), None)], None),
    # malformed
    ("bad-size", b"RESERVED 1 x\r\nabc\r\n", [], ProtocolError),
    ("negative-size", b"OK -1\r\n\r\n", [], ProtocolError),
    ("size-19-digits", b"OK 1234567890123456789\r\n", [], ProtocolError),
    ("missing-size", b"RESERVED 1\r\n", [], ProtocolError),
    ("too-many-args", b"FOUND 1 2 3\r\nab\r\n", [], ProtocolError),
    # a corrupt body: its size holds but the 2 bytes after it are not CRLF; consumed, in step
    ("missing-crlf-after-body", b"RESERVED 1 3\r\nabcXY", [(CORRUPT, (b"RESERVED", b"1", b"3"), b"abc")], None),
    ("lf-only-after-body", b"OK 2\r\nab\nX", [(CORRUPT, (b"OK", b"2"), b"ab")], None),
    ("zeroed-body-and-trailer", b"RESERVED 7 5\r\n" + b"\0" * 7 + b"DELETED\r\n",
     [(CORRUPT, (b"RESERVED", b"7", b"5"), b"\0" * 5), (b"DELETED", (), None)], None),
    ("corrupt-found", b"FOUND 3 2\r\n\0\0\0\0INSERTED 4\r\n",
     [(CORRUPT, (b"FOUND", b"3", b"2"), b"\0\0"), (b"INSERTED", (b"4",), None)], None),
    ("corrupt-half-crlf", b"RESERVED 2 1\r\nx\rZ", [(CORRUPT, (b"RESERVED", b"2", b"1"), b"x")], None),
    ("corrupt-empty-body", b"RESERVED 9 0\r\n\0\0", [(CORRUPT, (b"RESERVED", b"9", b"0"), b"")], None),
    ("corrupt-bad-id", b"RESERVED x 1\r\nabc", [(CORRUPT, (b"RESERVED", b"x", b"1"), b"a")], None),
    ("corrupt-between-good", b"RESERVED 1 2\r\nhi\r\nRESERVED 2 2\r\n\0\0\0\0RESERVED 3 2\r\nho\r\n",
     [(b"RESERVED", (b"1", b"2"), b"hi"), (CORRUPT, (b"RESERVED", b"2", b"2"), b"\0\0"),
      (b"RESERVED", (b"3", b"2"), b"ho")], None),
    ("corrupt-incomplete-trailer", b"RESERVED 1 3\r\nabcX", [], None),
    ("over-long-line", b"A" * 1025 + b"\r\n", [], ProtocolError),
    ("over-long-no-crlf", b"A" * 2000, [], ProtocolError),
    ("empty-line", b"\r\n", [], ProtocolError),
    ("blank-line", b" \t \r\n", [], ProtocolError),
    ("error-after-good", b"DELETED\r\n\r\n", [(b"DELETED", (), None)], ProtocolError),
]

IMPLS = [pytest.param(_pyprotocol, id="python"),
         pytest.param(_cprotocol, id="cython", marks=pytest.mark.skipif(_cprotocol is None, reason="not built"))]


def run(impl, chunks):
    """Feed chunks, draining gets() after each; return (replies, exception type, exception args, buffered)."""
    reader = impl.ReplyReader()
    out = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while True:
                reply = reader.gets()
                if reply is None:
                    break
                out.append(reply)
    except ProtocolError as err:
        return out, type(err), err.args, None
    return out, None, None, len(reader)


def splits(stream):
    yield "whole", [stream]
    if len(stream) <= 4096:
        yield "bytes", [stream[i:i + 1] for i in range(len(stream))]
        for i in range(1, len(stream)):
            yield "split%d" % i, [stream[:i], stream[i:]]
    else:   # 64 KB: byte by byte in its line and around the body end, coarse splits elsewhere
        yield "bytes", [stream[i:i + 1] for i in range(len(stream))]
        for i in list(range(1, 40)) + list(range(40, len(stream), 997)) + list(range(len(stream) - 6, len(stream))):
            yield "split%d" % i, [stream[:i], stream[i:]]


def consumed(expected):
    n = 0
    for status, args, body in expected:
        n += len(b" ".join(args if status == CORRUPT else (status,) + args)) + 2
        if body is not None:
            n += len(body) + 2
    return n


@pytest.mark.parametrize("name,stream,expected,error", CASES, ids=[c[0] for c in CASES])
def test_reply_stream(impl, name, stream, expected, error):
    whole = None
    for how, chunks in splits(stream):
        got, err, args, left = run(impl, chunks)
        assert (got, err) == (expected, error), how
        if error is None and name not in ("extra-whitespace", "lone-cr-lf-in-line"):
            assert left == len(stream) - consumed(expected), how
        if whole is None:
            whole = (got, err, args, left)
        assert (got, err, left) == (whole[0], whole[1], whole[3]), how


@pytest.mark.skipif(_cprotocol is None, reason="compiled extension not built")
@pytest.mark.parametrize("name,stream,expected,error", CASES, ids=[c[0] for c in CASES])
def test_cores_agree(name, stream, expected, error):
    # Same replies, same exception type and message, fed whole and byte by byte.
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        assert run(_pyprotocol, chunks) == run(_cprotocol, chunks)


def test_reply_types(impl):
    reader = impl.ReplyReader()
    reader.feed(b"RESERVED 1 2\r\nab\r\nDELETED\r\n")
    status, args, body = reader.gets()
    assert type(status) is bytes and type(args) is tuple and type(body) is bytes
    assert all(type(a) is bytes for a in args)
    assert reader.gets() == (b"DELETED", (), None)
    assert reader.gets() is None
    assert len(reader) == 0


def test_feed_accepts_bytes_like_and_clear(impl):
    reader = impl.ReplyReader()
    reader.feed(bytearray(b"INSERTED"))
    reader.feed(memoryview(b" 5\r\nDEL"))
    assert reader.gets() == (b"INSERTED", (b"5",), None)
    assert len(reader) == 3
    reader.clear()
    assert len(reader) == 0 and reader.gets() is None
    with pytest.raises(TypeError):
        reader.feed("text")


def test_max_line_argument(impl):
    reader = impl.ReplyReader(max_line=10)
    reader.feed(b"0123456789\r\n")
    assert reader.gets() == (b"0123456789", (), None)
    reader.feed(b"0123456789AB")
    with pytest.raises(ProtocolError):
        reader.gets()


def test_resume_after_incomplete(impl):
    # Partial data stays buffered across gets() calls (as after a socket timeout).
    reader = impl.ReplyReader()
    reader.feed(b"RESERVED 7 5\r\nhel")
    assert reader.gets() is None
    assert reader.gets() is None
    reader.feed(b"lo\r\nINSERTED 8\r\n")
    assert reader.gets() == (b"RESERVED", (b"7", b"5"), b"hello")
    assert reader.gets() == (b"INSERTED", (b"8",), None)


def test_many_replies_buffer_reuse(impl):
    # Thousands of replies through one reader, in ragged chunks (exercises compaction).
    stream = b"".join(b"RESERVED %d %d\r\n%s\r\n" % (i, i % 300, b"x" * (i % 300)) for i in range(3000))
    reader = impl.ReplyReader()
    got = []
    step = 7919
    for i in range(0, len(stream), step):
        reader.feed(stream[i:i + step])
        while True:
            r = reader.gets()
            if r is None:
                break
            got.append(r)
    assert len(got) == 3000
    assert got[2999] == (b"RESERVED", (b"2999", b"299"), b"x" * 299)
    assert [int(r[1][0]) for r in got] == list(range(3000))


# -- Batch: the replies of one window, however the bytes arrive --------------------------

BATCH_CASES = [
    # (name, stream, kind, n, status, reserves, stop_at, results, bad, stop, stopped, bytes left)
    ("puts", b"INSERTED 1\r\nINSERTED 2\r\nJOB_TOO_BIG\r\nINSERTED 3\r\n", "KIND_INSERTED", 4, None, False, None,
     [1, 2, (b"JOB_TOO_BIG", (), None), 3], 1, False, False, 0),
    ("deletes", b"DELETED\r\nNOT_FOUND\r\nDELETED\r\n", "KIND_STATUS", 3, b"DELETED", False, None,
     [None, (b"NOT_FOUND", (), None), None], 1, False, False, 0),
    ("reserves", b"RESERVED 5 2\r\nab\r\nRESERVED 6 0\r\n\r\nTIMED_OUT\r\nTIMED_OUT\r\n", "KIND_JOB", 4, None, True,
     None, [(5, b"ab"), (6, b"")], 0, True, False, 0),
    ("reserves-deadline", b"RESERVED 5 2\r\nab\r\nDEADLINE_SOON\r\nTIMED_OUT\r\n", "KIND_JOB", 3, None, True, None,
     [(5, b"ab"), (b"DEADLINE_SOON", (), None)], 1, True, False, 0),
    ("reserves-all-jobs", b"RESERVED 5 2\r\nab\r\nRESERVED 7 1\r\nc\r\n", "KIND_JOB", 2, None, True, None,
     [(5, b"ab"), (7, b"c")], 0, False, False, 0),
    ("draining", b"INSERTED 1\r\nDRAINING\r\nDRAINING\r\n", "KIND_INSERTED", 3, None, False, b"DRAINING",
     [1, (b"DRAINING", (), None)], 1, False, True, 10),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_batch_reads_one_window(impl, case):
    name, stream, kind, n, status, reserves, stop_at, results, bad, stop, stopped, left = case
    for how, chunks in splits(stream):
        reader = impl.ReplyReader()
        got = []
        batch = impl.Batch(getattr(impl, kind), n, got, status, reserves, stop_at)
        done = False
        fed = 0
        for chunk in chunks:
            reader.feed(chunk)
            fed += len(chunk)
            if not done:
                done = batch.feed(reader)
                # complete once its last reply came, not before (bytes after a stop stay buffered)
                assert done == (fed >= len(stream) - left), how
        assert (got, batch.bad, batch.stop, batch.stopped, len(reader)) == (results, bad, stop, stopped, left), how
        assert batch.results is got and batch.n == (0 if not stopped else n - len(results))


class _Made:
    def __init__(self):
        raise AssertionError("a Batch's job is made without __init__")


class _Logged:
    def __setattr__(self, name, value):
        object.__setattr__(self, name, ("set", value))


def test_batch_makes_jobs(impl):
    # job=(class, ((name, value), ...)): each job an instance with those attributes, in order,
    # JOB_ID and JOB_BODY standing for its own; any other reply as without it.
    from beanstalkc_fast._defaults import JOB_BODY, JOB_ID
    job = (_Made, (("conn", "c"), ("jid", JOB_ID), ("_body", JOB_BODY), ("body_bytes", JOB_BODY), ("tag", 1)))
    stream = b"RESERVED 5 2\r\nab\r\nRESERVED 7 1\r\ncXYDEADLINE_SOON\r\nRESERVED 8 0\r\n\r\n"
    for how, chunks in splits(stream):
        reader = impl.ReplyReader()
        got = []
        batch = impl.Batch(impl.KIND_JOB, 4, got, None, True, None, job)
        for chunk in chunks:
            reader.feed(chunk)
            batch.feed(reader)
        assert [list(vars(r).items()) if type(r) is _Made else r for r in got] == [
            [("conn", "c"), ("jid", 5), ("_body", b"ab"), ("body_bytes", b"ab"), ("tag", 1)],
            (CORRUPT, (b"RESERVED", b"7", b"1"), b"c"), (b"DEADLINE_SOON", (), None),
            [("conn", "c"), ("jid", 8), ("_body", b""), ("body_bytes", b""), ("tag", 1)]], how
        assert (batch.bad, batch.stop, batch.job) == (2, True, job)
    reader = impl.ReplyReader()     # a class of its own __setattr__ gets every attribute through it
    reader.feed(b"RESERVED 5 2\r\nab\r\n")
    got = []
    impl.Batch(impl.KIND_JOB, 1, got, None, True, None, (_Logged, (("jid", JOB_ID), ("x", 2)))).feed(reader)
    assert type(got[0]) is _Logged and vars(got[0]) == {"jid": ("set", 5), "x": ("set", 2)}
    for bad in [(_Made,), [_Made, ()], ("_Made", ()), (_Made, [("a", 1)]), (_Made, (("a",),)), (_Made, ((1, 2),))]:
        with pytest.raises(TypeError):
            impl.Batch(impl.KIND_JOB, 1, [], None, True, None, bad)


def test_batch_of_statuses_needs_the_status(impl):
    with pytest.raises(ValueError):
        impl.Batch(impl.KIND_STATUS, 1, [])
def test_corrupt_marker_agrees():
    # The status no server can send, known to both cores and to the command table that maps it.
    assert _pyprotocol.CORRUPT == _commands.CORRUPT and b" " in CORRUPT
    if _cprotocol is not None:
        assert _cprotocol.CORRUPT == CORRUPT


def test_take_stops_at_a_corrupt_reply(impl):
    # take() never hands a corrupt body out as a job or a YAML body: gets() gives it whole.
    stream = b"RESERVED 1 2\r\nhi\r\nRESERVED 2 2\r\n\0\0\0\0RESERVED 3 2\r\nho\r\nOK 1\r\nxYZ"
    for chunks in ([stream], [stream[i:i + 1] for i in range(len(stream))]):
        reader = impl.ReplyReader()
        results = []
        got = []
        for chunk in chunks:
            reader.feed(chunk)
            while True:
                if not reader.take(impl.KIND_JOB, 10, results) and not reader.take(impl.KIND_BODY, 10, results):
                    reply = reader.gets()
                    if reply is None:
                        break
                    got.append(reply)
        assert results == [(1, b"hi"), (3, b"ho")]
        assert got == [(CORRUPT, (b"RESERVED", b"2", b"2"), b"\0\0"), (CORRUPT, (b"OK", b"1"), b"x")]
        assert len(reader) == 0
