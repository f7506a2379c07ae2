"""What every driver shares and none owns: defaults, option checks, addresses, small helpers.

It stands just above ``exceptions`` and imports nothing else of the package, so the blocking
client, the asyncio client and both pools can all build on it without standing on each other.
"""
import os
import sys

from .exceptions import InvalidArgument, InvalidType

TYPE_CHECKING = False
if TYPE_CHECKING:   # annotations are strings, for mypy only: typing costs import time
    from typing import Any, Tuple, Union
    Body = Union[str, bytes, bytearray, memoryview]
    PutItem = Union[Body, Tuple[Body], Tuple[Body, int], Tuple[Body, int, int], Tuple[Body, int, int, int]]
    JobId = Union[int, Any]     # a job id, or a Job (anything with an int ``jid``)
    YAMLResult = Any    # dict / list with parse_yaml=True, str with False, whatever a callable returns

#: The server a ``Connection`` connects to when no host is given.
DEFAULT_HOST = "localhost"
#: beanstalkd's port.
DEFAULT_PORT = 11300
#: A job's priority when none is given (0 is the most urgent, ``2**32 - 1`` the least).
DEFAULT_PRIORITY = 2 ** 31
#: A job's time to run when none is given: seconds a reserved job may stay reserved before the
#: server releases it.
DEFAULT_TTR = 120

#: The reserve answered at once: what is ready now, or TIMED_OUT.
RESERVE0 = b"reserve-with-timeout 0\r\n"

#: In the attributes of a Batch's ``job`` (a class and its attributes, for the core to make a
#: job of each RESERVED reply without running ``__init__``): each job's own id, and its body.
JOB_ID = object()
JOB_BODY = object()

# After writing a batch window, yield the CPU, so that a server on the same CPU answers the whole
# window before this client wakes up (else: a wake-up every few replies).
give_way = getattr(os, "sched_yield", lambda: None)


def check_options(parse_yaml, encoding):
    """Check the options every client takes, before anything connects."""
    if parse_yaml is not True and parse_yaml is not False and not callable(parse_yaml):
        raise InvalidType("parse_yaml must be True, False or a callable")
    if encoding is not None:
        "".encode(encoding)     # LookupError now rather than at the first put


# TCP keepalive (``keepalive=True``): a peer that died silently (a host gone, a cable cut, a NAT
# that dropped the flow) is found after idle + interval * count = 60 s, without a timeout.
KEEPALIVE_IDLE = 30         # seconds without traffic before the first probe
KEEPALIVE_INTERVAL = 10     # seconds between probes
KEEPALIVE_COUNT = 3         # probes unanswered before the connection is declared dead


def check_keepalive(keepalive):
    """Check the ``keepalive`` option, before anything connects."""
    if keepalive is not True and keepalive is not False:
        raise InvalidType("keepalive must be True or False, not %r" % (keepalive,))


def set_keepalive(sock, keepalive=True):
    """Turn on TCP keepalive on a connected TCP socket, with the timings above where the platform
    lets them be set (its defaults elsewhere: two hours idle on Linux); a no-op when
    ``keepalive`` is False or the socket is not TCP (a unix socket has no peer to lose)."""
    import socket
    if not keepalive or sock.family not in (socket.AF_INET, getattr(socket, "AF_INET6", None)):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = getattr(socket, "TCP_KEEPIDLE", None)
    if idle is None:
        idle = getattr(socket, "TCP_KEEPALIVE", None)   # macOS names the idle time so
    for option, value in ((idle, KEEPALIVE_IDLE), (getattr(socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
                          (getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT)):
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:     # named but refused (an old kernel, some Windows versions): its default
                pass


def check_on_orphan(on_orphan):
    if on_orphan is not None and not callable(on_orphan):
        raise InvalidType("on_orphan must be a callable or None")


def check_ssl(ssl, server_hostname):
    """Check ``ssl=`` (an ``ssl.SSLContext`` or None) and ``server_hostname=`` (a str or None)."""
    if ssl is None:
        if server_hostname is not None:
            raise InvalidArgument("server_hostname is only meaningful with ssl")
        return
    mod = sys.modules.get("ssl")    # an SSLContext can only exist once ssl was imported
    if mod is None or not isinstance(ssl, mod.SSLContext):
        raise InvalidType("ssl must be an ssl.SSLContext or None, not %r" % (ssl,))
    if server_hostname is not None and (not isinstance(server_hostname, str) or not server_hostname):
        raise InvalidType("server_hostname must be a non-empty str or None, not %r" % (server_hostname,))


def tls_hostname(ssl, server_hostname, host):
    """Check the TLS options for a client of ``host`` before it connects; return the name the
    server's certificate is checked against (None without TLS): ``server_hostname``, else the
    host of a TCP address. A unix socket has no host name."""
    check_ssl(ssl, server_hostname)
    if ssl is None or server_hostname is not None:
        return server_hostname
    if unix_path(host) is None:
        return tcp_host(host)
    if ssl.check_hostname:
        raise InvalidArgument("a unix socket has no host name: pass server_hostname= (the name in the "
                              "certificate), or use a context with check_hostname off")
    return None


def wrap_tls(ssl, sock, server_hostname):
    """``sock`` wrapped by the context ``ssl`` (the handshake done, under the socket's timeout);
    ``sock`` is closed when that fails."""
    try:
        return ssl.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def unix_path(host):
    """The socket path when ``host`` names a unix socket (contains ``/`` or starts with
    ``unix:``), else None."""
    if isinstance(host, str) and ("/" in host or host.startswith("unix:")):
        return host[5:] if host.startswith("unix:") else host
    return None


def tcp_host(host):
    """A host name or address as the socket module takes it (``[::1]`` loses its brackets)."""
    if isinstance(host, str) and host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def where(host, port):
    """The address part of a client's repr."""
    if unix_path(host) is not None:
        return "path=%r" % (host,)
    return "host=%r port=%r" % (host, port)


def address(addr):
    """(host, port) or a unix socket path (str) for one server address as given, and its
    default name: ``'host:port'``, ``(host, port)``, ``'[::1]:11300'``, a bare host, or a path."""
    if isinstance(addr, (tuple, list)):
        if len(addr) != 2 or not isinstance(addr[0], str) or addr[1].__class__ is not int:
            raise InvalidArgument("a server address tuple is (host, port), got %r" % (addr,))
        host, port = addr
        shown = "[%s]" % host if ":" in host and not host.startswith("[") else host
        return (host, port), "%s:%d" % (shown, port)
    if not isinstance(addr, str) or not addr:
        raise InvalidType("a server address is 'host:port', (host, port) or a unix socket path, not %r" % (addr,))
    if unix_path(addr) is not None:
        return addr, addr
    host, colon, port = addr.rpartition(":")
    if not colon or (":" in host and not host.startswith("[")):    # 'host', or a bare IPv6 address
        return (addr, DEFAULT_PORT), addr
    if not port.isdigit() or not host:
        raise InvalidArgument("bad server address %r (expected 'host:port')" % (addr,))
    return (host, int(port)), addr


def host_port(addr):
    """``(host, port)`` to hand a client for an address as ``address()`` gives it."""
    return (addr, DEFAULT_PORT) if isinstance(addr, str) else addr


def has_input(sock):
    """Whether ``sock`` has something to read now (EOF included); True when it cannot tell.
    An idle connection with input was closed by the server, or has junk: never reuse it."""
    import select   # lazily: only the pools ask
    try:
        try:
            readable = bool(select.select([sock], [], [], 0)[0])
        except ValueError:      # a descriptor past select()'s limit (1024): poll() has none
            if not hasattr(select, "poll"):
                return False
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            readable = bool(poller.poll(0))
        if hasattr(sock, "pending"):    # an SSL socket
            return bool(sock.pending()) or (readable and _tls_input(sock))
        return readable
    except (OSError, ValueError, TypeError):
        return True


def _tls_input(sock):
    # Bytes on a TLS socket may be records that carry no data: TLS 1.3 session tickets arrive
    # after the handshake and stay unread until the first reply. Read without waiting: only data
    # or EOF is input. What is read is lost, but a connection with input is dropped anyway.
    import ssl      # loaded already: sock is an SSL socket
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        sock.recv(1)
        return True
    except ssl.SSLWantReadError:    # nothing but such records
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


_logs: dict = {}


def log(name="beanstalkc_fast"):
    """The ``beanstalkc_fast`` logger (or its child ``name``)."""
    logger = _logs.get(name)
    if logger is None:
        import logging      # lazily: it costs more import time than this whole package
        logger = _logs[name] = logging.getLogger(name)
    return logger


def tube_changes(before, tubes):
    """The ``(method, tube)`` calls that take a source from watching ``before`` to ``tubes``
    (watch first: the last watched tube cannot be ignored); the reverse restores it."""
    return [("watch", name) for name in tubes] + [("ignore", name) for name in before if name not in tubes]


def attach_results(err, results):
    """Set ``err.results`` where the exception takes attributes."""
    try:
        err.results = results
    except AttributeError:
        pass
