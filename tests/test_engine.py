"""The sans-I/O engine of both cores: the typed take(), get_buffer()/buffer_updated(), the
window encoders and scatter-gather sends; the command table; Jobs built by hand.

Reader cases are those of test_reply_reader, fed whole, byte by byte and split at every offset.
"""
import asyncio
import importlib.util
import os
import socket
import threading

import pytest

from beanstalkc_fast import InvalidArgument, InvalidType, Job, ProtocolError, _commands, _pyprotocol

def _load(name):
    # tests/ is not a package (--import-mode=importlib): load the sibling module by its path
    spec = importlib.util.spec_from_file_location("_" + name, os.path.join(os.path.dirname(__file__), name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_cases = _load("test_reply_reader")
CASES, splits = _cases.CASES, _cases.splits

try:
    from beanstalkc_fast import _cprotocol
except ImportError:
    _cprotocol = None

K = _pyprotocol
KINDS = [(K.KIND_REPLY, None), (K.KIND_INSERTED, None), (K.KIND_STATUS, b"DELETED"), (K.KIND_STATUS, b"TIMED_OUT"),
         (K.KIND_JOB, None), (K.KIND_JOB, b"FOUND"), (K.KIND_BODY, None)]


def typed(kind, status, reply):
    """What take() must append for a reply, or None where it must stop (the contract)."""
    word, args, body = reply
    if kind == K.KIND_REPLY:
        return [reply]
    if kind == K.KIND_INSERTED:
        ok = word == b"INSERTED" and len(args) == 1 and args[0].isdigit()
        return [int(args[0])] if ok else None
    if kind == K.KIND_STATUS:
        return [None] if word == status and not args else None
    if kind == K.KIND_JOB:
        ok = word == (status or b"RESERVED") and len(args) == 2 and args[0].isdigit()
        return [(int(args[0]), body)] if ok else None
    return [body] if word == b"OK" else None


def take_all(impl, chunks, kind, status):
    """Feed chunks; after each, take() runs of kind and gets() anything else. Return the log."""
    reader = impl.ReplyReader()
    log = []
    values = []     # what take() appended stays appended when a later reply is malformed
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while True:
                del values[:]
                k = reader.take(kind, 1 << 30, values, status)
                assert k == len(values)
                log.extend(("take", v) for v in values)
                reply = reader.gets()
                if reply is None:
                    break
                log.append(("other", reply))
    except ProtocolError as err:
        log.extend(("take", v) for v in values)
        return log, type(err)
    return log, None


@pytest.mark.parametrize("kind,status", KINDS, ids=lambda v: str(v))
@pytest.mark.parametrize("name,stream,expected,error", CASES, ids=[c[0] for c in CASES])
def test_take_parity_at_every_split(impl, name, stream, expected, error, kind, status):
    want = []
    for reply in expected:
        value = typed(kind, status, reply)
        want.extend([("take", value[0])] if value is not None else [("other", reply)])
    for how, chunks in splits(stream):
        assert take_all(impl, chunks, kind, status) == (want, error), how


def test_take_stops_at_n_and_at_another_kind(impl):
    reader = impl.ReplyReader()
    reader.feed(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\nBURIED 4\r\nINSERTED 5\r\nINSERTED 6")
    out = []
    assert reader.take(impl.KIND_INSERTED, 2, out) == 2 and out == [1, 2]
    assert reader.take(impl.KIND_INSERTED, 9, out) == 1 and out == [1, 2, 3]
    assert reader.take(impl.KIND_INSERTED, 9, out) == 0            # BURIED is left for gets()
    assert reader.gets() == (b"BURIED", (b"4",), None)
    assert reader.take(impl.KIND_INSERTED, 9, out) == 1 and out[-1] == 5   # the last one is incomplete
    reader.feed(b"\r\n")
    assert reader.take(impl.KIND_INSERTED, 9, out) == 1 and out[-1] == 6
    with pytest.raises(ValueError):
        reader.take(impl.KIND_STATUS, 1, out)


def feed_via_buffer(impl, chunks, hint=-1):
    reader = impl.ReplyReader()
    out = []
    for chunk in chunks:
        while chunk:
            view = reader.get_buffer(hint)
            n = min(len(view), len(chunk))
            view[:n] = chunk[:n]
            reader.buffer_updated(n)
            chunk = chunk[n:]
        while True:
            reply = reader.gets()
            if reply is None:
                break
            out.append(reply)
    return out


@pytest.mark.parametrize("hint", [-1, 1, 100000])
def test_get_buffer_matches_feed(impl, hint):
    stream = b"".join(c[1] for c in CASES if c[3] is None and not c[0].startswith("incomplete")
                      and c[0] != "complete-then-incomplete")
    want = [r for c in CASES if c[3] is None and not c[0].startswith("incomplete")
            and c[0] != "complete-then-incomplete" for r in c[2]]
    for how, chunks in [("whole", [stream]), ("ragged", [stream[i:i + 777] for i in range(0, len(stream), 777)])]:
        assert feed_via_buffer(impl, chunks, hint) == want, how
    assert len(impl.ReplyReader().get_buffer(100000)) >= 100000


def test_buffer_updated_checks_its_argument(impl):
    reader = impl.ReplyReader()
    with pytest.raises(ValueError):
        reader.buffer_updated(1)            # no get_buffer() before
    view = reader.get_buffer()
    with pytest.raises(ValueError):
        reader.buffer_updated(len(view) + 1)
    with pytest.raises(ValueError):
        reader.buffer_updated(-1)
    view[:9] = b"DELETED\r\n"
    reader.buffer_updated(9)
    with pytest.raises(ValueError):
        reader.buffer_updated(9)            # once per get_buffer()
    assert reader.gets() == (b"DELETED", (), None)


def test_a_lent_buffer_never_sees_a_reallocation(impl):
    # A view handed out, then the buffer has to grow: the old view must not write into freed
    # memory. The compiled core releases it (writing raises ValueError); the pure one lends a
    # scratch buffer that is never resized. Either way the replies stay intact.
    reader = impl.ReplyReader()
    old = reader.get_buffer()
    body = b"z" * 300000
    reader.feed(b"RESERVED 1 %d\r\n%s\r\n" % (len(body), body))
    try:
        old[:4] = b"XXXX"
    except ValueError:
        assert impl is not _pyprotocol
    assert reader.gets() == (b"RESERVED", (b"1", b"%d" % len(body)), body)


def test_buffered_protocol_against_the_server(impl, beanstalkd, tube):
    # The reader as the buffer of an asyncio.BufferedProtocol: puts and stats on the event loop.
    class Proto(asyncio.BufferedProtocol):
        def __init__(self):
            self.reader = impl.ReplyReader()
            self.waiters = []

        def get_buffer(self, sizehint):
            return self.reader.get_buffer(sizehint)

        def buffer_updated(self, nbytes):
            self.reader.buffer_updated(nbytes)
            while self.waiters:
                kind, out, fut = self.waiters[0]
                if not self.reader.take(kind, 1, out, b"DELETED" if kind == impl.KIND_STATUS else None):
                    break
                self.waiters.pop(0)
                fut.set_result(out[0])

    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(Proto, beanstalkd.host, beanstalkd.port)
        transport.write(b"use %s\r\n" % tube.encode())
        used = loop.create_future()
        proto.waiters.append((impl.KIND_REPLY, [], used))
        futs = []
        for i in range(50):
            transport.write(impl.encode_put(b"job %d" % i, 1, 0, 60))
            fut = loop.create_future()
            proto.waiters.append((impl.KIND_INSERTED, [], fut))
            futs.append(fut)
        transport.write(b"stats\r\n")
        stats = loop.create_future()
        proto.waiters.append((impl.KIND_BODY, [], stats))
        ids = await asyncio.wait_for(asyncio.gather(*futs), 10)
        body = await asyncio.wait_for(stats, 10)
        transport.write(b"".join(impl.encode_job(b"delete", jid) for jid in ids))
        deleted = [loop.create_future() for _ in ids]
        proto.waiters.extend((impl.KIND_STATUS, [], fut) for fut in deleted)
        await asyncio.wait_for(asyncio.gather(*deleted), 10)
        transport.close()
        return (await used), ids, impl.parse_yaml(body)

    used, ids, stats = asyncio.run(main())
    assert used == (b"USING", (tube.encode(),), None)
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert stats["cmd-put"] >= 50


# -- encoders ---------------------------------------------------------------------

BIG = b"B" * _pyprotocol.BIG_BODY


def joined(windows):
    out = []
    for chunks, n in windows:
        assert isinstance(chunks, list) and n > 0
        out.append((b"".join(bytes(c) for c in chunks), n))
    return out


def test_put_windows_chunks(impl):
    items = [b"a", BIG, (b"b", 1, 2, 3), "\u00e9", bytearray(b"c"), memoryview(BIG + b"!"), b""]
    wire = b"".join(impl.encode_put(impl.check_body(b if not isinstance(b, tuple) else b[0], "utf-8"),
                                    *((b[1:] if isinstance(b, tuple) else ()) + (7, 8, 9))[:3]) for b in items)
    for window in (1, 2, 3, 1024):
        windows = list(impl.put_windows(items, 7, 8, 9, "utf-8", window))
        assert sum(n for _, n in windows) == len(items)
        assert max(n for _, n in windows) <= window
        assert b"".join(b for b, _ in joined(windows)) == wire
        chunks = [c for cs, _ in windows for c in cs]
        assert any(c is BIG for c in chunks), "a big body is a chunk of its own, not copied"


def test_put_windows_is_an_iterator_of_fresh_chunks(impl):
    it = impl.put_windows(iter([b"x" * 10] * 5), 1, 2, 3, None, 2)
    first = next(it)
    kept = [bytes(c) for c in first[0]]
    rest = list(it)
    assert [bytes(c) for c in first[0]] == kept     # not a view of a buffer the encoder reuses
    assert [n for _, n in [first] + rest] == [2, 2, 1]


def test_put_windows_checks_sequences_whole_and_iterators_by_window(impl):
    with pytest.raises(InvalidType, match="item 2"):
        impl.put_windows([b"a", b"b", 3], 0, 0, 0, None)
    with pytest.raises(InvalidArgument, match="item 1"):
        impl.put_windows([b"a", (b"b", -1)], 0, 0, 0, None)
    it = impl.put_windows(iter([b"a", b"b", b"c", 3]), 0, 0, 0, None, 2)
    assert next(it)[1] == 2
    with pytest.raises(InvalidType, match="item 3"):
        next(it)


def test_job_windows(impl):
    jobs = [1, 2 ** 64 - 1, 0, Job(None, 42, b"x")]
    for window in (1, 3, 1024):
        got = joined(impl.job_windows(jobs, b"release %d %d %d\r\n", (5, 6), window))
        assert b"".join(b for b, _ in got) == b"".join(b"release %d 5 6\r\n" % j for j in (1, 2 ** 64 - 1, 0, 42))
        assert sum(n for _, n in got) == 4
    assert joined(impl.job_windows(iter([3]), b"delete %d\r\n", ())) == [(b"delete 3\r\n", 1)]
    with pytest.raises(InvalidArgument, match="item 1"):
        impl.job_windows([1, -1], b"delete %d\r\n", ())
    with pytest.raises(InvalidType, match="item 0"):
        list(impl.job_windows(iter(["1"]), b"delete %d\r\n", ()))


class _Jid:
    def __init__(self, jid):
        self._jid = jid

    @property
    def jid(self):
        if isinstance(self._jid, Exception):
            raise self._jid
        return self._jid


class _Index:
    def __index__(self):
        return 9


@pytest.mark.parametrize("how", [list, tuple, iter])
def test_job_windows_of_objects(impl, how):
    # An item's jid is read as check_jid reads it, with the same errors, in a sequence or an iterator.
    good = [_Jid(3), _Jid(True), _Jid(_Index()), _Jid(2 ** 64 - 1), Job(None, 42, b"x")]
    assert joined(impl.job_windows(how(good), b"delete %d\r\n", ())) == [
        (b"".join(b"delete %d\r\n" % j for j in (3, 1, 9, 2 ** 64 - 1, 42)), 5)]
    for bad, exc in [(_Jid(-1), InvalidArgument), (_Jid(2 ** 64), InvalidArgument), (_Jid("5"), InvalidType),
                     (_Jid(1.0), InvalidType), (_Jid(None), InvalidType), (_Jid(KeyError("k")), KeyError),
                     (_Jid(AttributeError("a")), InvalidType), (b"5", InvalidType), (object(), InvalidType)]:
        with pytest.raises(exc) as err:
            list(impl.job_windows(how([7, bad]), b"delete %d\r\n", ()))
        assert exc is KeyError or "item 1" in str(err.value)


def test_put_chunks_and_encode_job(impl):
    assert impl.put_chunks(b"ab", 1, 2, 3) == [b"put 1 2 3 2\r\nab\r\n"]
    chunks = impl.put_chunks(BIG, 1, 2, 3)
    assert chunks[0] == b"put 1 2 3 %d\r\n" % len(BIG) and chunks[1] is BIG and chunks[2] == b"\r\n"
    with pytest.raises(InvalidArgument):
        impl.put_chunks(BIG, 2 ** 32, 0, 0)
    assert impl.encode_job(b"delete", 5) == b"delete 5\r\n"
    assert impl.encode_job(b"kick-job", Job(None, 7, None)) == b"kick-job 7\r\n"
    with pytest.raises(InvalidArgument):
        impl.encode_job(b"delete", -1)
    with pytest.raises(InvalidType):
        impl.encode_job(b"delete", "5\r\nput")


@pytest.mark.skipif(_cprotocol is None, reason="compiled extension not built")
def test_encoders_agree():
    items = [b"a" * i for i in range(0, 3000, 7)] + [BIG, (BIG, 5)] + ["str %d" % i for i in range(50)]
    for window in (1, 5, 1024):
        assert joined(_pyprotocol.put_windows(items, 1, 2, 3, "utf-8", window)) == \
            joined(_cprotocol.put_windows(items, 1, 2, 3, "utf-8", window))
        jids = list(range(0, 10 ** 6, 997))
        assert joined(_pyprotocol.job_windows(jids, b"bury %d %d\r\n", (9,), window)) == \
            joined(_cprotocol.job_windows(jids, b"bury %d %d\r\n", (9,), window))


class Trickle:
    """A socket that takes at most `step` bytes per send call (sendmsg optional)."""

    def __init__(self, step, with_sendmsg):
        self.step = step
        self.data = bytearray()
        self.calls = 0
        if with_sendmsg:
            self.sendmsg = self._sendmsg

    def _sendmsg(self, buffers):
        self.calls += 1
        left = self.step
        for b in buffers:
            b = bytes(b)[:left]
            self.data += b
            left -= len(b)
            if not left:
                break
        return self.step - left

    def sendall(self, data):
        self.data += data

    def recv_into(self, view):
        return 0

    recv = recv_into


@pytest.mark.parametrize("step", [1, 7, 1 << 20])
@pytest.mark.parametrize("with_sendmsg", [True, False])
def test_send_chunks_partial_writes(impl, step, with_sendmsg):
    sock = Trickle(step, with_sendmsg)
    chunks = [b"put 1 2 3 5\r\n", b"", memoryview(b"hello"), bytearray(b"\r\n"), b"x" * 50]
    impl.Protocol(sock).send_chunks(chunks)
    assert bytes(sock.data) == b"".join(bytes(c) for c in chunks)
    if with_sendmsg and step == 1 << 20:
        assert sock.calls == 1


def test_big_put_goes_out_scatter_gather(impl, beanstalkd):
    a, b = socket.socketpair()
    try:
        sent = []

        class Spy:
            def __init__(self, sock):
                self.sock = sock
                self.sendall = sock.sendall
                self.recv = sock.recv
                self.recv_into = sock.recv_into

            def sendmsg(self, buffers):
                sent.append([len(x) for x in buffers])
                return self.sock.sendmsg(buffers)

        proto = impl.Protocol(Spy(a))
        want = impl.encode_put(BIG * 4, 1, 2, 3)
        got = []

        def peer():     # reads the whole command (the socket buffer is smaller), then replies
            data = b""
            while len(data) < len(want):
                data += b.recv(1 << 20)
            got.append(data)
            b.sendall(b"INSERTED 9\r\n")

        t = threading.Thread(target=peer, daemon=True)
        t.start()
        proto.write(impl.put_command(BIG * 4, 1, 2, 3, None))
        assert proto.read_put() == 9
        t.join(10)
        assert sent and sent[0][1] == len(BIG) * 4
        assert got == [want]
    finally:
        a.close()
        b.close()


def test_big_bodies_through_the_server(conn):
    c = conn
    bodies = [BIG, b"q" * 65000, bytearray(b"r" * 60000)]     # the server takes up to 65535 bytes
    ids = [c.put(body) for body in bodies] + c.put_many(bodies)
    for jid, body in zip(ids, bodies + bodies):
        job = c.reserve(0)
        assert (job.jid, job.body_bytes) == (jid, bytes(body))
        job.delete()


# -- the command table ----------------------------------------------------------------------------

def test_every_command_is_encoded_and_checked(impl):
    good = {"tube": "a-tube", "jid": 5, "timeout": 1.5, "priority": 1, "delay": 2, "ttr": 3, "size": 4, "bound": 6}
    for cmd, (template, kinds, statuses) in _commands.COMMANDS.items():
        line = _commands.encode(impl, cmd, *[good[k] for k in kinds])
        assert line.startswith(cmd.encode() + (b" " if kinds else b"\r")) and line.endswith(b"\r\n")
        assert line.count(b"\r\n") == 1 and statuses
        for i, kind in enumerate(kinds):
            args = [good[k] for k in kinds]
            args[i] = "x\r\nput" if kind == "tube" else -1
            with pytest.raises((InvalidArgument, InvalidType)):
                _commands.encode(impl, cmd, *args)
        with pytest.raises(TypeError):
            _commands.encode(impl, cmd, *([1] * (len(kinds) + 1)))


@pytest.mark.parametrize("cmd,reply,expected", [
    ("kick", (b"KICKED", (b"3",), None), 3),
    ("use", (b"USING", (b"t",), None), "t"),
    ("ignore", (b"NOT_IGNORED", (), None), 1),
    ("release", (b"BURIED", (), None), None),
    ("peek", (b"NOT_FOUND", (), None), None),
    ("peek", (b"FOUND", (b"4", b"1"), b"x"), (4, b"x")),
    ("stats", (b"OK", (b"3",), b"abc"), b"abc"),
    ("reserve-with-timeout", (b"TIMED_OUT", (), None), None),
])
def test_result_of_a_reply(cmd, reply, expected):
    assert _commands.result(cmd, reply) == expected


@pytest.mark.parametrize("cmd,reply,error", [
    ("delete", (b"NOT_FOUND", (), None), ("CommandFailed", "NOT_FOUND")),
    ("delete", (b"DELETED", (b"x",), None), ("UnexpectedResponse", "DELETED")),
    ("kick", (b"KICKED", (b"x",), None), ("UnexpectedResponse", "KICKED")),
    ("put", (b"JOB_TOO_BIG", (), None), ("CommandFailed", "JOB_TOO_BIG")),
    ("reserve", (b"DEADLINE_SOON", (), None), ("DeadlineSoon", None)),
    ("stats", (b"BAD_FORMAT", (), None), ("UnexpectedResponse", "BAD_FORMAT")),
])
def test_error_of_a_reply(cmd, reply, error):
    err = _commands.outcome(cmd, reply)
    assert type(err).__name__ == error[0]
    if error[1]:
        assert err.args == (cmd, error[1], [a.decode() for a in reply[1]])


# -- Jobs built by hand (code written for beanstalkc 0.4) ----------------------------------------------

def test_job_from_an_id_alone(conn):
    jid = conn.put(b"payload")
    job = Job(conn, jid, None)
    assert job.body is None and job.body_bytes is None and "body=None" in repr(job)
    assert job.stats()["id"] == jid
    job.delete()
    assert conn.peek(jid) is None


@pytest.mark.parametrize("body", [3, 2.5, object(), ["a"]])
def test_job_refuses_what_cannot_be_a_body(body):
    with pytest.raises(TypeError, match="job body must be str, bytes-like or None"):
        Job(None, 1, body)


@pytest.mark.parametrize("body,raw", [(b"ab", b"ab"), (bytearray(b"ab"), b"ab"), (memoryview(b"ab"), b"ab"),
                                      ("\u00e9", "\u00e9".encode()), (b"", b"")])
def test_job_keeps_every_body_intact(body, raw):
    job = Job(None, 1, body)
    assert job.body_bytes == raw and type(job.body_bytes) is bytes
