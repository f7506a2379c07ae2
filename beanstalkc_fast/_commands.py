"""The command table, written once for every driver (blocking, asyncio, pool).

For each command (by protocol word): its line template, the kinds of its arguments
(each checked by the protocol core before a byte is encoded), and what each
acceptable reply status becomes. ``_FAILURES`` is the one reply-to-exception table:
a status that a command documents as a failure raises ``CommandFailed``, any other
unexpected one ``UnexpectedResponse``; a reply whose body was corrupt (``CORRUPT``) is
``CorruptJob`` when it names a job. Nothing here does I/O.
"""
from ._defaults import DEFAULT_PRIORITY, log
from .exceptions import CommandFailed, CorruptJob, DeadlineSoon, InvalidArgument, UnexpectedResponse

# The status both cores give a reply whose body was not followed by CRLF, with the reply's
# whole line as its args: ``(CORRUPT, (status, *args), body)`` (the cores' CORRUPT; a test
# checks they agree). The stream is in step: only that reply is lost.
CORRUPT = b"CORRUPT BODY"

_FAILURES = {
    "put": ("JOB_TOO_BIG", "BURIED", "DRAINING"),
    "reserve": ("DEADLINE_SOON", "TIMED_OUT"),
    "reserve-with-timeout": ("DEADLINE_SOON", "TIMED_OUT"),
    "ignore": ("NOT_IGNORED",),
}
for _cmd in ("reserve-job", "delete", "release", "bury", "touch", "kick-job", "peek", "peek-ready",
             "peek-delayed", "peek-buried", "stats-job", "stats-tube", "pause-tube"):
    _FAILURES[_cmd] = ("NOT_FOUND",)
del _cmd


def error(cmd, reply):
    """Return the exception for a reply ``(status, args[, body])`` that is not the command's success."""
    if reply[0] == CORRUPT:
        return _corrupt(cmd, reply)
    status = reply[0].decode("ascii", "replace")
    results = [arg.decode("ascii", "replace") for arg in reply[1]]
    cls = CommandFailed if status in _FAILURES.get(cmd, ()) else UnexpectedResponse
    return cls(cmd, status, results)


def _corrupt(cmd, reply):
    # A job handed out (RESERVED, FOUND <id> <n>) with a corrupt body is CorruptJob: the caller
    # can still bury or delete it by its id. Any other corrupt body (OK <n>) is unexpected.
    status, args = reply[1][0], reply[1][1:]
    results = [arg.decode("ascii", "replace") for arg in args]
    if status in (b"RESERVED", b"FOUND") and args and args[0].isdigit():
        return CorruptJob(cmd, status.decode("ascii"), results, int(args[0]))
    return UnexpectedResponse(cmd, status.decode("ascii", "replace"), results)


def reserved_jid(reply):
    """The id of the job a reserve's reply hands this connection, its body corrupt or not; else None."""
    status, args = reply[0], reply[1]
    if status == CORRUPT:
        status, args = args[0], args[1:]
    if status == b"RESERVED" and args and args[0].isdigit():
        return int(args[0])
    return None


# -- what a success reply becomes (a malformed one is UnexpectedResponse) --

def _int(cmd, reply):
    args = reply[1]
    if len(args) == 1 and args[0].isdigit():
        return int(args[0])
    raise error(cmd, reply)


def _name(cmd, reply):
    args = reply[1]
    if len(args) == 1 and args[0].isascii():
        return args[0].decode("ascii")
    raise error(cmd, reply)


def _none(cmd, reply):
    if reply[1]:
        raise error(cmd, reply)
    return None


def _one(cmd, reply):
    return 1


def _body(cmd, reply):
    return reply[2]


def _job(cmd, reply):
    args = reply[1]
    if args and args[0].isdigit():
        return int(args[0]), reply[2]
    raise error(cmd, reply)


def _deadline_soon(cmd, reply):
    raise DeadlineSoon([])


_RESERVED = {b"RESERVED": _job, b"TIMED_OUT": _none, b"DEADLINE_SOON": _deadline_soon}
_PEEKED = {b"FOUND": _job, b"NOT_FOUND": _none}
_YAML = {b"OK": _body}

# protocol word: (line template, argument kinds, {reply status: result of that reply})
COMMANDS = {
    "put": (b"put %d %d %d %d\r\n", ("priority", "delay", "ttr", "size"), {b"INSERTED": _int}),
    "use": (b"use %s\r\n", ("tube",), {b"USING": _name}),
    "list-tube-used": (b"list-tube-used\r\n", (), {b"USING": _name}),
    "reserve": (b"reserve\r\n", (), _RESERVED),
    "reserve-with-timeout": (b"reserve-with-timeout %d\r\n", ("timeout",), _RESERVED),
    "reserve-job": (b"reserve-job %d\r\n", ("jid",), {b"RESERVED": _job}),
    "watch": (b"watch %s\r\n", ("tube",), {b"WATCHING": _int}),
    "ignore": (b"ignore %s\r\n", ("tube",), {b"WATCHING": _int, b"NOT_IGNORED": _one}),
    "list-tubes-watched": (b"list-tubes-watched\r\n", (), _YAML),
    "list-tubes": (b"list-tubes\r\n", (), _YAML),
    "delete": (b"delete %d\r\n", ("jid",), {b"DELETED": _none}),
    "release": (b"release %d %d %d\r\n", ("jid", "priority", "delay"), {b"RELEASED": _none, b"BURIED": _none}),
    "bury": (b"bury %d %d\r\n", ("jid", "priority"), {b"BURIED": _none}),
    "touch": (b"touch %d\r\n", ("jid",), {b"TOUCHED": _none}),
    "kick": (b"kick %d\r\n", ("bound",), {b"KICKED": _int}),
    "kick-job": (b"kick-job %d\r\n", ("jid",), {b"KICKED": _none}),
    "peek": (b"peek %d\r\n", ("jid",), _PEEKED),
    "peek-ready": (b"peek-ready\r\n", (), _PEEKED),
    "peek-delayed": (b"peek-delayed\r\n", (), _PEEKED),
    "peek-buried": (b"peek-buried\r\n", (), _PEEKED),
    "stats": (b"stats\r\n", (), _YAML),
    "stats-tube": (b"stats-tube %s\r\n", ("tube",), _YAML),
    "stats-job": (b"stats-job %d\r\n", ("jid",), _YAML),
    "pause-tube": (b"pause-tube %s %d\r\n", ("tube", "delay"), {b"PAUSED": _none}),
}


def check_timeout(core, timeout):
    """A reserve timeout: a non-negative int or float, truncated to whole seconds (as beanstalkc)."""
    if isinstance(timeout, float):
        if not 0 <= timeout <= 2 ** 32 - 1:
            raise InvalidArgument("timeout must be in 0..%d seconds, got %r" % (2 ** 32 - 1, timeout))
        return int(timeout)
    return core.check_uint32(timeout, "timeout")


def check_arg(core, kind, value):
    """One argument of the table's ``kind`` checked by ``core`` (before a byte is encoded)."""
    if kind == "jid":
        return core.check_jid(value)
    if kind == "tube":
        return core.check_tube(value)
    if kind == "timeout":
        return check_timeout(core, value)
    return core.check_uint32(value, kind)


def encode(core, cmd, *args):
    """The command line of ``cmd`` with its arguments checked by ``core`` (before a byte is sent)."""
    template, kinds, _ = COMMANDS[cmd]
    if len(args) != len(kinds):
        raise TypeError("%s takes %d arguments (%s), got %d" % (cmd, len(kinds), ", ".join(kinds), len(args)))
    if not kinds:
        return template
    return template % tuple([check_arg(core, kind, value) for kind, value in zip(kinds, args)])


def result(cmd, reply):
    """What the reply ``(status, args, body)`` to ``cmd`` means: its value, or raise its exception."""
    take = COMMANDS[cmd][2].get(reply[0])
    if take is None:
        raise error(cmd, reply)
    return take(cmd, reply)


def outcome(cmd, reply):
    """As result(), but the exception is returned, not raised (a batch item's outcome)."""
    try:
        return result(cmd, reply)
    except (CommandFailed, UnexpectedResponse, DeadlineSoon) as err:
        return err


# -- YAML: the stats and list replies --

_yaml_module = None


def load_yaml(core, body, cmd="stats-job"):
    """Parse beanstalkd's YAML with the core's parser, falling back to ``yaml.safe_load``."""
    try:
        return core.parse_yaml(body)
    except ValueError:
        pass
    global _yaml_module
    if _yaml_module is None:
        try:
            import yaml
        except ImportError:
            log().error("PyYAML is not installed; returning the raw YAML text")
            return body.decode("utf-8", "replace")
        _yaml_module = yaml
    loader = getattr(_yaml_module, "CSafeLoader", _yaml_module.SafeLoader)
    try:
        return _yaml_module.load(body, Loader=loader)
    except _yaml_module.YAMLError as err:
        # A reply this client cannot read is the server's fault: report it as one.
        raise UnexpectedResponse(cmd, "OK", [str(len(body))]) from err


def yaml_value(core, mode, cmd, body):
    """A YAML reply's body as the client's ``parse_yaml`` option wants it."""
    if mode is True:
        return load_yaml(core, body, cmd)
    text = body.decode("utf-8", "replace")
    return mode(text) if mode is not False else text


def priority_of(core, body):
    """A job's current priority from its ``stats-job`` body, whatever ``parse_yaml`` says."""
    stats = load_yaml(core, body)
    return stats["pri"] if isinstance(stats, dict) else DEFAULT_PRIORITY
