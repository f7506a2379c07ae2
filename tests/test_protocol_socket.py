"""Protocol over socket.socketpair(): short reads, EOF, timeouts, and batches against a scripted peer.

Only for what a real beanstalkd never does (one byte per segment, closing mid-reply, odd replies).
"""
import socket
import threading
import time

import pytest

from beanstalkc_fast import InvalidArgument, InvalidType, ProtocolError, SocketError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def peer(target, *args):
    t = threading.Thread(target=target, args=args, daemon=True)
    t.start()
    return t


def drip(sock, data, pause=0.0005):
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
        time.sleep(pause)


def read_commands(sock, n):
    """Read n commands (a put's body included) from a client; return their raw bytes."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        line, _, rest = buf.partition(b"\r\n")
        size = 0
        if line.startswith(b"put "):
            size = int(line.split()[-1]) + 2
        while len(rest) < size:
            rest += sock.recv(65536)
        out.append(line + b"\r\n" + rest[:size])
        buf = rest[size:]
    return out


def test_short_reads(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)
    t = peer(drip, b, b"RESERVED 12 12\r\nhello\r\nworld\r\nINSERTED 13\r\n")
    assert proto.read_reply() == (b"RESERVED", (b"12", b"12"), b"hello\r\nworld")
    assert proto.read_reply() == (b"INSERTED", (b"13",), None)
    t.join()


def test_call_sends_and_reads(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)
    assert proto.sock is a
    b.sendall(b"USING x\r\n")
    assert proto.call(b"use x\r\n") == (b"USING", (b"x",), None)
    assert b.recv(100) == b"use x\r\n"
    proto.send(b"stats\r\n")
    assert b.recv(100) == b"stats\r\n"


@pytest.mark.parametrize("reply, expected", [
    (b"RESERVED 12 5\r\nhello\r\n", (12, b"hello")),
    (b"RESERVED 123456789012345678901 0\r\n\r\n", (123456789012345678901, b"")),
    (b"RESERVED 12 7\r\nhe\r\nllo\r\n", (12, b"he\r\nllo")),
    (b"RESERVED x1 1\r\na\r\n", (b"RESERVED", (b"x1", b"1"), b"a")),     # not a job id: the reply
    (b"RESERVED -1 1\r\na\r\n", (b"RESERVED", (b"-1", b"1"), b"a")),
    (b"TIMED_OUT\r\n", (b"TIMED_OUT", (), None)),
    (b"DEADLINE_SOON\r\n", (b"DEADLINE_SOON", (), None)),
    (b"FOUND 3 1\r\nz\r\n", (b"FOUND", (b"3", b"1"), b"z")),
])
def test_reserve_returns_jid_and_body_or_the_reply(impl, pair, reply, expected):
    a, b = pair
    proto = impl.Protocol(a)
    t = peer(drip, b, reply + b"INSERTED 1\r\n")
    result = proto.reserve(b"reserve-with-timeout 0\r\n")
    assert result == expected
    assert type(result[0]) is type(expected[0])
    assert proto.read_reply() == (b"INSERTED", (b"1",), None)    # the stream stays in sync
    assert b.recv(100) == b"reserve-with-timeout 0\r\n"
    t.join()


def test_big_body_in_small_pieces(impl, pair):
    a, b = pair
    proto = impl.Protocol(a, read_size=1000)
    body = bytes(range(256)) * 4096     # 1 MB: larger than any initial buffer
    data = b"FOUND 1 %d\r\n%s\r\nDELETED\r\n" % (len(body), body)
    t = peer(lambda: [b.sendall(data[i:i + 7777]) for i in range(0, len(data), 7777)])
    assert proto.read_reply() == (b"FOUND", (b"1", b"%d" % len(body)), body)
    assert proto.read_reply() == (b"DELETED", (), None)
    t.join()


@pytest.mark.parametrize("sent", [b"", b"RESERVED 1 10\r\nabc", b"INSERT"])
def test_eof_mid_reply_raises_socket_error(impl, pair, sent):
    a, b = pair
    proto = impl.Protocol(a)
    b.sendall(sent)
    b.shutdown(socket.SHUT_WR)
    with pytest.raises(SocketError):
        proto.read_reply()


def test_timeout_mid_reply_propagates_and_resumes(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)
    a.settimeout(0.2)
    b.sendall(b"RESERVED 5 10\r\nhello")
    with pytest.raises(socket.timeout):
        proto.read_reply()
    b.sendall(b"world\r\n")
    assert proto.read_reply() == (b"RESERVED", (b"5", b"10"), b"helloworld")


def test_oserror_propagates_unchanged(impl):
    class Broken:
        def sendall(self, data):
            pass

        def recv(self, n):
            raise ConnectionResetError(104, "reset")

        recv_into = recv

    proto = impl.Protocol(Broken())
    with pytest.raises(ConnectionResetError):
        proto.call(b"stats\r\n")


def test_protocol_error_on_garbage(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)
    b.sendall(b"OK abc\r\n")
    with pytest.raises(ProtocolError):
        proto.read_reply()


def test_put_many_wire_bytes(impl, pair):
    # Small and big bodies, tuples with per-item arguments: the bytes sent are exactly
    # the encode_put of each item, and odd replies come back as failed entries.
    a, b = pair
    proto = impl.Protocol(a)
    items = [b"a", "h\u00e9", (b"x" * 70000, 7), (bytearray(b"ba"), 1, 2, 3), b""] + [b"q"] * 5
    expected = [impl.encode_put(impl.check_body(b, "utf-8"), *(list(args) + [2 ** 31, 0, 120][len(args):]))
                for b, *args in [(i,) if not isinstance(i, tuple) else i for i in items]]
    replies = [b"INSERTED 1\r\n", b"INSERTED 2\r\n", b"JOB_TOO_BIG\r\n", b"INSERTED abc\r\n", b"BURIED 5\r\n"] + \
        [b"INSERTED %d\r\n" % i for i in range(6, 11)]
    got = []

    def serve():
        got.extend(read_commands(b, len(items)))
        b.sendall(b"".join(replies))

    t = peer(serve)
    results = []
    bad = proto.put_many(items, 2 ** 31, 0, 120, "utf-8", results)
    t.join()
    assert got == expected
    assert bad == 3
    assert results == [1, 2, (b"JOB_TOO_BIG", (), None), (b"INSERTED", (b"abc",), None),
                       (b"BURIED", (b"5",), None), 6, 7, 8, 9, 10]


def test_put_many_sequence_validated_first(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)
    results = []
    with pytest.raises(InvalidType, match="item 2"):
        proto.put_many([b"a", b"b", 3.5], 0, 0, 60, "utf-8", results)
    with pytest.raises(InvalidArgument, match="item 1"):
        proto.put_many([b"a", (b"b", 2 ** 32)], 0, 0, 60, "utf-8", results)
    with pytest.raises(InvalidArgument, match="item 0"):
        proto.put_many([()], 0, 0, 60, "utf-8", results)
    assert results == []
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)      # nothing was sent


def test_put_many_iterator_window_by_window(impl, pair):
    # An iterator is validated window by window: the first window (1024 items) is sent and
    # its replies are read before the bad item's error is raised.
    a, b = pair
    proto = impl.Protocol(a)

    def serve():
        cmds = read_commands(b, 1024)
        b.sendall(b"".join(b"INSERTED %d\r\n" % i for i in range(len(cmds))))

    t = peer(serve)
    results = []
    gen = (b"x" if i != 1100 else None for i in range(2000))
    with pytest.raises(InvalidType, match="item 1100"):
        proto.put_many(gen, 0, 0, 60, "utf-8", results)
    t.join()
    assert results == list(range(1024))


def test_jobs_many_wire_bytes(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)

    class J:
        jid = 7

    cases = [(b"delete %d\r\n", (), [1, J(), 2 ** 64 - 1], [b"delete 1\r\n", b"delete 7\r\n",
                                                            b"delete 18446744073709551615\r\n"]),
             (b"release %d %d %d\r\n", (5, 0), [3], [b"release 3 5 0\r\n"]),
             (b"x%%y %d\r\n", (), [4], [b"x%y 4\r\n"])]
    for template, args, items, wire in cases:
        t = peer(lambda: b.sendall(b"".join(b"OK_%d\r\n" % i for i in range(len(read_commands(b, len(items)))))))
        results = []
        assert proto.jobs_many(items, template, args, b"OK_0", results) == len(items) - 1
        t.join()
        assert results[0] is None and results[1:] == [(b"OK_%d" % i, (), None) for i in range(1, len(items))]
    # wire bytes
    for template, args, items, wire in cases:
        got = []
        t = peer(lambda: (got.extend(read_commands(b, len(items))), b.sendall(b"DELETED\r\n" * len(items))))
        assert proto.jobs_many(iter(items), template, args, b"DELETED", []) == 0
        t.join()
        assert got == wire


def answer(sock, got, replies):
    """Read one command per reply and answer it at once, as a server does."""
    buf = b""
    for reply in replies:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line, _, buf = buf.partition(b"\r\n")
        size = int(line.split()[-1]) + 2 if line.startswith(b"put ") else 0
        while len(buf) < size:
            buf += sock.recv(65536)
        got.append(line + b"\r\n" + buf[:size])
        buf = buf[size:]
        sock.sendall(reply)


class _Jid:
    def __init__(self, jid):
        self.jid = jid


@pytest.mark.parametrize("template, args, items, wire", [
    (b"delete %d\r\n", (), [1, 2, 3, 2 ** 64 - 1, 0], [b"delete %d\r\n" % i for i in (1, 2, 3, 2 ** 64 - 1, 0)]),
    (b"delete %d\r\n", (), [_Jid(5), _Jid(6), _Jid(7)], [b"delete 5\r\n", b"delete 6\r\n", b"delete 7\r\n"]),
    (b"release %d %d %d\r\n", (5, 0), [3, 4, 9], [b"release %d 5 0\r\n" % i for i in (3, 4, 9)]),
    (b"x %d y%%\r\n", (), [4, 8], [b"x 4 y%\r\n", b"x 8 y%\r\n"]),
    (b"delete %d\r\n", (), [1, True, 3], [b"delete 1\r\n", b"delete 1\r\n", b"delete 3\r\n"]),   # item by item
    (b"delete %d\r\n", (), (_Jid(1), 2), [b"delete 1\r\n", b"delete 2\r\n"]),
])
@pytest.mark.parametrize("window", [1, 2, 1024])
def test_jobs_many_sequences_in_windows(impl, pair, template, args, items, wire, window):
    # Sequences of plain ids (or of objects with one) take a fast path: the same bytes, windows and replies.
    a, b = pair
    proto = impl.Protocol(a)
    proto.window = window
    got = []
    t = peer(answer, b, got, [b"DELETED\r\n"] * (len(items) - 1) + [b"NOT_FOUND\r\n"])
    results = []
    assert proto.jobs_many(items, template, args, b"DELETED", results) == 1
    t.join()
    assert got == wire
    assert results == [None] * (len(items) - 1) + [(b"NOT_FOUND", (), None)]


@pytest.mark.parametrize("window", [1, 3, 1024])
def test_put_many_bytes_sequence_in_windows(impl, pair, window):
    # A list of bytes with valid defaults takes a fast path; a window with a big body goes item by item.
    a, b = pair
    proto = impl.Protocol(a)
    proto.window = window
    items = [b"a", b"", b"bc", b"z" * 70000, b"d", b"e" * 100, b"f"]
    expected = [impl.encode_put(i, 9, 8, 7) for i in items]
    got = []
    t = peer(answer, b, got, [b"INSERTED %d\r\n" % i for i in range(1, len(items))] + [b"BURIED 99\r\n"])
    results = []
    assert proto.put_many(items, 9, 8, 7, None, results) == 1
    t.join()
    assert got == expected
    assert results == list(range(1, len(items))) + [(b"BURIED", (b"99",), None)]


def test_jobs_many_rejects_bad_ids(impl, pair):
    a, b = pair
    proto = impl.Protocol(a)
    with pytest.raises(InvalidArgument, match="item 1"):
        proto.jobs_many([1, -1], b"delete %d\r\n", (), b"DELETED", [])
    with pytest.raises(InvalidType, match="item 0"):
        proto.jobs_many(["1"], b"delete %d\r\n", (), b"DELETED", [])


@pytest.mark.parametrize("n,stream,expected,bad", [
    (3, b"TIMED_OUT\r\n" * 3, [], 0),
    (3, b"DEADLINE_SOON\r\n" + b"TIMED_OUT\r\n" * 2, [(b"DEADLINE_SOON", (), None)], 1),
    (1, b"RESERVED 1 1\r\na\r\n", [(1, b"a")], 0),
    (3, b"RESERVED 1 1\r\na\r\nRESERVED 2 0\r\n\r\nTIMED_OUT\r\n", [(1, b"a"), (2, b"")], 0),
    (3, b"RESERVED 1 1\r\na\r\nRESERVED 2 0\r\n\r\nDEADLINE_SOON\r\n",
     [(1, b"a"), (2, b""), (b"DEADLINE_SOON", (), None)], 1),
    (3, b"RESERVED 1 1\r\na\r\nRESERVED 2 0\r\n\r\nRESERVED 3 1\r\nc\r\n", [(1, b"a"), (2, b""), (3, b"c")], 0),
    # a job id that is not one: the reply as it is; the jobs after it in the window are kept
    (3, b"RESERVED 1 1\r\na\r\nRESERVED x 0\r\n\r\nRESERVED 3 1\r\nc\r\n",
     [(1, b"a"), (b"RESERVED", (b"x", b"0"), b""), (3, b"c")], 1),
    (3, b"RESERVED -1 1\r\na\r\n" + b"TIMED_OUT\r\n" * 2, [(b"RESERVED", (b"-1", b"1"), b"a")], 1),
    # the first reserve timed out, but a job came before the next one: it is kept, never dropped
    (3, b"TIMED_OUT\r\nRESERVED 2 0\r\n\r\nTIMED_OUT\r\n", [(2, b"")], 0),
])
def test_reserve_many_scripted(impl, pair, n, stream, expected, bad):
    # The first reserve goes out in the same write as the window's zero-timeout reserves.
    a, b = pair
    proto = impl.Protocol(a)
    commands = []

    def serve():
        commands.extend(read_commands(b, n))
        b.sendall(stream)

    t = peer(serve)
    results = []
    assert proto.reserve_many(n, b"reserve-with-timeout 7\r\n", results) == bad
    t.join()
    assert results == expected
    assert commands == [b"reserve-with-timeout 7\r\n"] + [b"reserve-with-timeout 0\r\n"] * (n - 1)


def test_reserve_many_in_windows(impl, pair):
    # Windows of reserve_window commands, the next one sent only while every reply was a job.
    a, b = pair
    proto = impl.Protocol(a)
    proto.reserve_window = 2
    got = []

    def serve():
        jid = 0
        for size, last in ((2, False), (2, False), (1, True)):
            got.append(read_commands(b, size))
            out = b""
            for i in range(size):
                jid += 1
                out += b"TIMED_OUT\r\n" if last else b"RESERVED %d 1\r\nx\r\n" % jid
            b.sendall(out)

    t = peer(serve)
    results = []
    assert proto.reserve_many(5, b"reserve\r\n", results) == 0
    t.join()
    assert results == [(1, b"x"), (2, b"x"), (3, b"x"), (4, b"x")]
    assert got == [[b"reserve\r\n", b"reserve-with-timeout 0\r\n"], [b"reserve-with-timeout 0\r\n"] * 2,
                   [b"reserve-with-timeout 0\r\n"]]


@pytest.mark.parametrize("method", ["put_many", "jobs_many", "reserve_many"])
def test_batch_replies_in_pieces(impl, pair, method):
    # A window's replies that come a few bytes per receive (a server on another CPU, or one
    # that is preempted mid-window): the core receives again until the window is whole, and
    # every reply lands in order, across windows.
    a, b = pair
    proto = impl.Protocol(a)
    proto.window = proto.reserve_window = 3
    n = 7
    if method == "reserve_many":
        windows = [3, 3, 1]
        reply = b"RESERVED %d 2\r\nx\n\r\n"
        expected = [(i, b"x\n") for i in range(1, n + 1)]
    else:
        windows = [3, 3, 1]
        reply = b"INSERTED %d\r\n" if method == "put_many" else b"DELETED\r\n"
        expected = list(range(1, n + 1)) if method == "put_many" else [None] * n

    def serve():
        jid = 0
        buf = b""
        for size in windows:
            while buf.count(b"\r\n") < (2 * size if method == "put_many" else size):
                buf += b.recv(65536)   # a window's commands (a put's body is a line of its own here)
            buf = buf.split(b"\r\n", 2 * size if method == "put_many" else size)[-1]
            out = b""
            for _ in range(size):
                jid += 1
                out += reply % jid if b"%d" in reply else reply
            drip(b, out, pause=0)

    t = peer(serve)
    results = []
    if method == "put_many":
        bad = proto.put_many([b"a"] * n, 0, 0, 60, None, results)
    elif method == "jobs_many":
        bad = proto.jobs_many(list(range(1, n + 1)), b"delete %d\r\n", (), b"DELETED", results)
    else:
        bad = proto.reserve_many(n, b"reserve-with-timeout 0\r\n", results)
    t.join()
    assert bad == 0
    assert results == expected


def test_gevent_style_socket_object(impl, pair):
    # The core only calls the socket object's Python methods: a wrapper sees every call.
    a, b = pair
    calls = []

    class Wrapper:
        def __init__(self, sock):
            self._sock = sock

        def sendall(self, data):
            calls.append("sendall")
            return self._sock.sendall(data)

        def recv(self, n):
            calls.append("recv")
            return self._sock.recv(n)

        def recv_into(self, buf, n=0):
            calls.append("recv_into")
            return self._sock.recv_into(buf, n)

    proto = impl.Protocol(Wrapper(a))
    b.sendall(b"DELETED\r\n")
    assert proto.call(b"delete 1\r\n") == (b"DELETED", (), None)
    assert calls[0] == "sendall" and calls[1] in ("recv", "recv_into")
