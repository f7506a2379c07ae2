"""The engine pieces the pools drive: Protocol.read_batch over a socketpair, both cores."""
import socket

import pytest

from beanstalkc_fast import SocketError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_read_batch_stops_at_draining_and_counts_other_replies(impl, pair):
    client, server = pair
    proto = impl.Protocol(client)
    server.sendall(b"INSERTED 1\r\nINSERTED 2\r\nDRAINING\r\nINSERTED 4\r\n")
    results = []
    batch = impl.Batch(impl.KIND_INSERTED, 4, results, None, False, b"DRAINING")
    assert proto.read_batch(batch) == 1 and batch.stopped
    assert results == [1, 2, (b"DRAINING", (), None)]
    assert proto.read_batch(impl.Batch(impl.KIND_INSERTED, 1, results)) == 0
    assert results[-1] == 4
    server.sendall(b"DELETED\r\nNOT_FOUND\r\nDELETED\r\n")
    results = []
    batch = impl.Batch(impl.KIND_STATUS, 3, results, b"DELETED")
    assert proto.read_batch(batch) == 1 and not batch.stopped
    assert results == [None, (b"NOT_FOUND", (), None), None]
    assert proto.read_batch(impl.Batch(impl.KIND_STATUS, 0, results, b"DELETED")) == 0


def test_read_batch_after_send_chunks_in_pieces(impl, pair):
    client, server = pair
    proto = impl.Protocol(client)
    proto.send_chunks([b"reserve-with-timeout 0\r\n", b"reserve-with-timeout 0\r\n"])
    assert server.recv(100) == b"reserve-with-timeout 0\r\n" * 2
    reply = b"RESERVED 7 2\r\nhi\r\nTIMED_OUT\r\n"
    for i in range(len(reply)):     # the reader waits for whole replies across recv()s
        server.sendall(reply[i:i + 1])
    results = []
    batch = impl.Batch(impl.KIND_JOB, 2, results, None, True)
    assert proto.read_batch(batch) == 0 and batch.stop      # TIMED_OUT: dropped, no window after it
    assert results == [(7, b"hi")]
    server.close()
    with pytest.raises(SocketError):     # EOF
        proto.read_batch(impl.Batch(impl.KIND_JOB, 1, results, None, True))
