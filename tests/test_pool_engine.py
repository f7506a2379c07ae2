"""The engine pieces the pool drives directly: Protocol.read_many over a socketpair, both cores."""
import socket

import pytest

from beanstalkc_fast import SocketError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_read_many_stops_after_a_reply_of_another_kind(impl, pair):
    client, server = pair
    proto = impl.Protocol(client)
    server.sendall(b"INSERTED 1\r\nINSERTED 2\r\nDRAINING\r\nINSERTED 4\r\n")
    results = []
    assert proto.read_many(4, results, impl.KIND_INSERTED) == 3
    assert results == [1, 2, (b"DRAINING", (), None)]
    assert proto.read_many(1, results, impl.KIND_INSERTED, None) == 1
    assert results[-1] == 4
    server.sendall(b"DELETED\r\nNOT_FOUND\r\nDELETED\r\n")
    results = []
    assert proto.read_many(3, results, impl.KIND_STATUS, b"DELETED") == 2
    assert results == [None, (b"NOT_FOUND", (), None)]
    assert proto.read_many(1, results, impl.KIND_STATUS, b"DELETED") == 1 and results[-1] is None
    assert proto.read_many(0, results, impl.KIND_STATUS, b"DELETED") == 0


def test_read_many_after_send_chunks_in_pieces(impl, pair):
    client, server = pair
    proto = impl.Protocol(client)
    proto.send_chunks([b"reserve-with-timeout 0\r\n", b"reserve-with-timeout 0\r\n"])
    assert server.recv(100) == b"reserve-with-timeout 0\r\n" * 2
    reply = b"RESERVED 7 2\r\nhi\r\nTIMED_OUT\r\n"
    for i in range(len(reply)):     # the reader waits for whole replies across recv()s
        server.sendall(reply[i:i + 1])
    results = []
    assert proto.read_many(2, results, impl.KIND_JOB, b"RESERVED") == 2
    assert results == [(7, b"hi"), (b"TIMED_OUT", (), None)]
    server.close()
    with pytest.raises(SocketError):     # EOF
        proto.read_many(1, results, impl.KIND_JOB, b"RESERVED")
