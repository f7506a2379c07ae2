def test_put_reserve_delete(conn):
    jid = conn.put("hello")
    job = conn.reserve(timeout=0)
    assert job.jid == jid and job.body == "hello"
    job.delete()
    assert conn.reserve(timeout=0) is None
