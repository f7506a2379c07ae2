"""The ``beanstalkc-fast`` command line (also ``python -m beanstalkc_fast``).

Subcommands: ``stats``, ``tubes``, ``put``, ``peek``, ``kick``, ``delete``, ``drain``, ``work``, ``bench``.
``--host``/``--port``/``--socket``, ``--json`` and ``--encoding`` are accepted both before the
subcommand and after it (after it wins). Output: ``stats`` prints aligned ``key: value`` lines,
``tubes`` one name per line, ``put`` one job id per line (in input order, printed per batch),
``peek`` and ``drain`` one ``ID<TAB>BODY`` line per job. With ``--json``: ``stats`` an object,
``tubes`` and ``put`` an array (``put``: ``null`` for a job the server refused), ``peek`` an
object ``{"id", "body"}`` and ``drain`` one such object per line; a body that does not decode
with ``--encoding`` is shown with replacement characters, and JSON adds ``body_base64``.
``put`` stops after the first batch in which the server refused a job. ``work MODULE:FUNCTION``
runs a ``Worker`` (``--server`` given several times: over a ``Pool``) until SIGTERM or SIGINT,
then exits 0 once stopped gracefully; on a terminal it shows a progress line on stderr.

Exit codes: 0 success; 1 the server refused a command (e.g. ``NOT_FOUND``) or some jobs of a
batch failed; 2 usage error (including an invalid tube name); 3 connection error (cannot
connect, connection lost, or a reply that is not beanstalkd's); 130 interrupted.
Errors are one line on stderr: ``beanstalkc-fast: error: ...``.
"""
from __future__ import annotations

import argparse
import base64
import importlib
import itertools
import json
import os
import sys
from typing import Any, Iterable, Iterator, List, Optional, Sequence

from . import __version__
from ._backend import BACKEND
from .connection import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PRIORITY, DEFAULT_TTR, Connection, Job
from .exceptions import (BatchError, BeanstalkcException, CommandFailed, DeadlineSoon, InvalidArgument,
                         InvalidType, ProtocolError, SocketError)

PROG = "beanstalkc-fast"
BATCH = 1000            # jobs per put_many / reserve_many / delete_many call (ids are printed per batch)
CONNECT_TIMEOUT = 10.0  # seconds; a CLI should not hang on an unreachable host
_VALUE_OPTIONS = ("--host", "--port", "--socket", "--encoding")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECTION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CliError(Exception):
    """An error to report in one line, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- argument types --

def _uint(text: str, limit: int = 2 ** 64 - 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text) from None
    if not 0 <= value <= limit:
        raise argparse.ArgumentTypeError("must be in 0..%d: %r" % (limit, text))
    return value


def _uint32(text: str) -> int:
    return _uint(text, 2 ** 32 - 1)


def _positive(text: str) -> int:
    value = _uint(text, 10000)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1: %r" % text)
    return value


def _port(text: str) -> int:
    return _uint(text, 65535)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text) from None
    if not 0 <= value <= 2 ** 32 - 1:
        raise argparse.ArgumentTypeError("must be in 0..%d: %r" % (2 ** 32 - 1, text))
    return value


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The options of every subcommand; after the subcommand they default to 'not given'."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value
    parser.add_argument("--host", default=default(DEFAULT_HOST), help="server host (default: %s)" % DEFAULT_HOST)
    parser.add_argument("--port", type=_port, default=default(DEFAULT_PORT),
                        help="server port (default: %d)" % DEFAULT_PORT)
    parser.add_argument("--socket", metavar="PATH", default=default(None),
                        help="unix socket path (takes precedence over --host/--port)")
    parser.add_argument("--json", action="store_true", default=default(False), help="print JSON")
    parser.add_argument("--encoding", default=default("utf-8"),
                        help="encoding of job bodies given and printed (default: utf-8)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the command line."""
    parser = argparse.ArgumentParser(prog=PROG, allow_abbrev=False,
                                     description="Command-line client for beanstalkd (beanstalkc_fast).",
                                     epilog="exit codes: 0 success, 1 a command failed on the server, 2 usage error, "
                                            "3 connection error, 130 interrupted")
    parser.add_argument("-V", "--version", action="version",
                        version="%s %s (backend: %s)" % (PROG, __version__, BACKEND))
    _add_common(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_common(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help, description=help, allow_abbrev=False)

    p = add("stats", "server statistics, or a tube's (--tube) or a job's (--job)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tube", help="statistics of this tube")
    which.add_argument("--job", type=_uint, metavar="ID", help="statistics of this job")

    add("tubes", "list the existing tubes, one per line")

    p = add("put", "put jobs; prints their ids, one per line")
    p.add_argument("bodies", nargs="*", metavar="BODY",
                   help="job bodies; with none (or '-'), one job per line of stdin")
    p.add_argument("--tube", default="default", help="tube to put into (default: default)")
    p.add_argument("--priority", type=_uint32, default=DEFAULT_PRIORITY,
                   help="priority, 0 is most urgent (default: %d)" % DEFAULT_PRIORITY)
    p.add_argument("--delay", type=_uint32, default=0, help="seconds before the jobs are ready (default: 0)")
    p.add_argument("--ttr", type=_uint32, default=DEFAULT_TTR,
                   help="time to run in seconds (default: %d)" % DEFAULT_TTR)

    p = add("peek", "show a job (id and body) without reserving it; exit 1 if there is none")
    p.add_argument("state", nargs="?", choices=("ready", "delayed", "buried"),
                   help="the next job in this state in --tube (default: ready)")
    p.add_argument("--id", type=_uint, dest="jid", metavar="N", help="the job with this id")
    p.add_argument("--tube", default="default", help="tube to peek into (default: default)")

    p = add("kick", "kick buried jobs (or delayed ones, when none is buried) into the ready queue")
    p.add_argument("bound", nargs="?", type=_uint32, default=1, help="at most this many jobs (default: 1)")
    p.add_argument("--tube", default="default", help="tube to kick in (default: default)")

    p = add("delete", "delete jobs by id; exit 1 if any was not found")
    p.add_argument("ids", nargs="+", metavar="ID", help="job ids; '-' reads them from stdin")

    p = add("drain", "reserve a tube's jobs and print them (released at exit unless --delete)")
    p.add_argument("--tube", default="default", help="tube to drain (default: default)")
    p.add_argument("--delete", action="store_true", help="delete the jobs once printed")
    p.add_argument("--max", type=_uint, metavar="N", help="stop after N jobs")
    p.add_argument("--timeout", type=_seconds, default=0.0,
                   help="seconds to wait for more jobs once the tube is empty (default: 0)")

    p = add("work", "handle the jobs of the tubes with MODULE:FUNCTION (a Worker) until SIGTERM/SIGINT")
    p.add_argument("target", metavar="MODULE:FUNCTION",
                   help="the handler, called with each job (a dict {tube: handler} routes by tube)")
    p.add_argument("--tube", action="append", dest="tubes", metavar="TUBE",
                   help="a tube to watch (repeatable; default: the handler dict's keys, else 'default')")
    p.add_argument("--concurrency", type=_positive, default=1, help="handler threads (default: 1)")
    p.add_argument("--prefetch", type=_uint, default=None,
                   help="jobs reserved ahead of free handlers (default: the concurrency)")
    p.add_argument("--max-retries", type=_uint, default=3,
                   help="failures before a job is buried, after the first (default: 3)")
    p.add_argument("--shutdown-timeout", type=_seconds, default=30.0,
                   help="seconds running handlers get to finish on SIGTERM (default: 30)")
    p.add_argument("--server", action="append", dest="servers", metavar="HOST:PORT",
                   help="a server (repeatable; several make a Pool); instead of --host/--port/--socket")

    sub.add_parser("bench", add_help=False,
                   help="measure this client's throughput on both cores (beanstalkc_fast.bench) with the "
                        "arguments that follow (and --host/--port given before it)")
    return parser


# -- output helpers --

def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _json(value: Any) -> None:
    _out(json.dumps(value))


def _decode(data: bytes, encoding: str) -> str:
    return data.decode(encoding, "replace")


def _job_dict(job: Job, encoding: str) -> dict:
    """A job as JSON: ``body`` is decoded text; an undecodable body also gets ``body_base64``."""
    data = job.body_bytes or b""    # None only for a Job built from an id alone
    result = {"id": job.jid, "body": _decode(data, encoding)}
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        result["body_base64"] = base64.b64encode(data).decode("ascii")
    return result


def _print_job(job: Job, args: argparse.Namespace) -> None:
    if args.json:
        _out(json.dumps(_job_dict(job, args.encoding)))
    else:
        _out("%d\t%s" % (job.jid, _decode(job.body_bytes or b"", args.encoding)))


def _chunks(items: Iterable[Any], size: int) -> Iterator[List[Any]]:
    it = iter(items)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _stdin_lines() -> Iterator[bytes]:
    """Lines of stdin as bytes, without their line ending (one job per line, empty lines too)."""
    stream = getattr(sys.stdin, "buffer", None)
    for line in stream if stream is not None else sys.stdin:
        if isinstance(line, str):
            line = line.encode("utf-8", "surrogateescape")
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        yield line


class _Progress:
    """A progress line on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: Optional[int]) -> None:
        self.total = total
        self.done = 0
        self.active = sys.stderr.isatty()

    def add(self, n: int) -> None:
        self.done += n
        if not self.active:
            return
        if self.total:
            filled = 30 * self.done // self.total
            line = "[%s%s] %d/%d" % ("#" * filled, " " * (30 - filled), self.done, self.total)
        else:
            line = "%d jobs" % self.done
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self) -> None:
        if self.active and self.done:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- subcommands --

def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cmd_stats(conn: Connection, args: argparse.Namespace) -> int:
    if args.job is not None:
        try:
            stats = conn.stats_job(args.job)
        except CommandFailed as err:
            raise _not_found(err, "job %d not found" % args.job)
    elif args.tube is not None:
        try:
            stats = conn.stats_tube(args.tube)
        except CommandFailed as err:
            raise _not_found(err, "tube %r not found" % args.tube)
    else:
        stats = conn.stats()
    if args.json:
        _json(stats)
    else:
        width = max((len(str(key)) for key in stats), default=0) + 1
        for key, value in stats.items():
            _out("%-*s %s" % (width, "%s:" % key, _format_value(value)))
    return EXIT_OK


def cmd_tubes(conn: Connection, args: argparse.Namespace) -> int:
    tubes = conn.tubes()
    if args.json:
        _json(tubes)
    else:
        for name in tubes:
            _out(name)
    return EXIT_OK


def cmd_put(conn: Connection, args: argparse.Namespace) -> int:
    bodies: Iterable[bytes]
    if not args.bodies or args.bodies == ["-"]:
        bodies, total = _stdin_lines(), None
    elif "-" in args.bodies:
        raise CliError("'-' (stdin) cannot be combined with body arguments", EXIT_USAGE)
    else:
        bodies = [body.encode(args.encoding, "surrogateescape") for body in args.bodies]
        total = len(bodies)
    conn.use(args.tube)
    ids: List[Optional[int]] = []
    failed: Optional[BatchError] = None
    progress = _Progress(total)
    try:
        for chunk in _chunks(bodies, BATCH):
            try:
                done = conn.put_many(chunk, args.priority, args.delay, args.ttr)
            except BatchError as err:
                failed, done = err, err.results
            except SocketError as err:
                _emit_ids(err.results or [], ids, args)     # the outcomes confirmed before the failure
                raise
            _emit_ids(done, ids, args)
            progress.add(len(chunk))
            if failed is not None:
                break
    finally:
        progress.close()
        if args.json:
            _json(ids)
    if failed is not None:
        index, first = failed.errors[0]
        position = len(ids) - len(failed.results) + index + 1
        status = first.args[1] if len(first.args) == 3 else first
        raise CliError("put: %d of %d jobs failed, stopped (first: job #%d: %s)"
                       % (len(failed.errors), len(failed.results), position, status))
    return EXIT_OK


def _emit_ids(done: Sequence[Any], ids: List[Optional[int]], args: argparse.Namespace) -> None:
    """Collect a batch's outcomes as ids (None for a failed job); print them at once unless --json."""
    done = [jid if isinstance(jid, int) else None for jid in done]
    ids.extend(done)
    if not args.json:
        for jid in done:
            if jid is not None:
                _out(str(jid))
        sys.stdout.flush()


def cmd_peek(conn: Connection, args: argparse.Namespace) -> int:
    if args.jid is not None:
        if args.state is not None:
            raise CliError("give either a state or --id, not both", EXIT_USAGE)
        job = conn.peek(args.jid)
        missing = "job %d not found" % args.jid
    else:
        state = args.state or "ready"
        conn.use(args.tube)
        job = getattr(conn, "peek_" + state)()
        missing = "no %s job in tube %r" % (state, args.tube)
    if job is None:
        raise CliError(missing)
    _print_job(job, args)
    return EXIT_OK


def cmd_kick(conn: Connection, args: argparse.Namespace) -> int:
    conn.use(args.tube)
    _out(str(conn.kick(args.bound)))
    return EXIT_OK


def cmd_delete(conn: Connection, args: argparse.Namespace) -> int:
    words: Iterable[str] = args.ids
    if "-" in args.ids:
        if args.ids != ["-"]:
            raise CliError("'-' (stdin) cannot be combined with id arguments", EXIT_USAGE)
        words = sys.stdin.read().split()
    try:
        jids = [_uint(word) for word in words]
    except argparse.ArgumentTypeError as err:
        raise CliError("invalid job id: %s" % err, EXIT_USAGE)
    missing: List[int] = []
    for chunk in _chunks(jids, BATCH):
        try:
            conn.delete_many(chunk)
        except BatchError as err:
            missing.extend(chunk[i] for i, _ in err.errors)
    if missing:
        raise CliError("%d of %d jobs not found: %s" % (len(missing), len(jids), " ".join(map(str, missing))))
    return EXIT_OK


def cmd_drain(conn: Connection, args: argparse.Namespace) -> int:
    conn.watch(args.tube)
    if args.tube != "default":
        conn.ignore("default")
    count = 0
    seen: set = set()    # without --delete, jobs stay reserved; one whose TTR ran out may come back
    while args.max is None or count < args.max:
        want = BATCH if args.max is None else min(BATCH, args.max - count)
        try:
            jobs = conn.reserve_many(want, timeout=args.timeout)
        except DeadlineSoon:
            break   # a job we hold is about to time out: stop rather than print it twice
        jobs = [job for job in jobs if job.jid not in seen]
        if not jobs:
            break
        for job in jobs:
            _print_job(job, args)
        sys.stdout.flush()      # printed before deleted: a crash in between loses nothing
        count += len(jobs)
        if args.delete:
            conn.delete_many(jobs)
        else:
            seen.update(job.jid for job in jobs)
    return EXIT_OK


def cmd_bench(argv: List[str]) -> int:
    try:
        bench = importlib.import_module(__package__ + ".bench")    # lazily: it may pull in heavy extras
    except ImportError as err:
        if err.name == __package__ + ".bench":
            raise CliError("benchmarks are not available: module %s.bench is missing" % __package__)
        raise CliError("bench: %s" % err)
    try:
        result = bench.main(argv)
    except SystemExit as stop:     # its own argparse: --help, usage errors
        result = stop.code
    if result is None or isinstance(result, int):
        return result or EXIT_OK
    sys.stderr.write("%s\n" % (result,))     # sys.exit("message"), as the interpreter would print it
    return EXIT_FAILED


def _load_handler(target: str) -> Any:
    module_name, colon, name = target.partition(":")
    if not colon or not module_name or not name:
        raise CliError("the handler is MODULE:FUNCTION, got %r" % target, EXIT_USAGE)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())     # a module of the current directory, as python -m finds it
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CliError("cannot import %s: %s" % (module_name, err), EXIT_USAGE)
    value: Any = module
    for part in name.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CliError("%s has no attribute %r" % (module_name, name), EXIT_USAGE) from None
    return value


class _WorkProgress:
    """processed/failed per second on stderr, once a second, when it is a terminal."""

    def __init__(self, worker: Any) -> None:
        import threading
        self.worker = worker
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._draw, daemon=True) if sys.stderr.isatty() else None

    def __enter__(self) -> "_WorkProgress":
        if self.thread is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self) -> None:
        import time
        stats = self.worker.stats
        last, before = time.monotonic(), dict(stats)
        while not self.done.wait(1.0):
            now, seen = time.monotonic(), dict(stats)
            rate = {k: (seen[k] - before[k]) / (now - last) for k in ("processed", "failed")}
            sys.stderr.write("\rprocessed %d (%.0f/s)  failed %d (%.0f/s)  buried %d   " % (
                seen["processed"], rate["processed"], seen["failed"], rate["failed"], seen["buried"]))
            sys.stderr.flush()
            last, before = now, seen


def cmd_work(args: argparse.Namespace) -> int:
    import logging
    from .worker import Worker
    handler = _load_handler(args.target)
    # handler failures (WARNING) and buries (ERROR) on stderr, with their tracebacks
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source: Any
    if args.servers and len(args.servers) > 1:
        from .pool import Pool
        source = Pool(args.servers, connect_timeout=CONNECT_TIMEOUT, encoding=args.encoding)
    else:
        if args.servers:
            from ._defaults import address
            addr, _ = address(args.servers[0])
            args.socket = addr if isinstance(addr, str) else None
            if not isinstance(addr, str):
                args.host, args.port = addr
        source = _connect(args, args.encoding)
    try:
        worker = Worker(source, handler, tubes=args.tubes, concurrency=args.concurrency, prefetch=args.prefetch,
                        max_retries=args.max_retries, shutdown_timeout=args.shutdown_timeout)
        with _WorkProgress(worker):
            worker.run()
    finally:
        source.close()
    return EXIT_OK


COMMANDS = {"stats": cmd_stats, "tubes": cmd_tubes, "put": cmd_put, "peek": cmd_peek,
            "kick": cmd_kick, "delete": cmd_delete, "drain": cmd_drain}


# -- errors and main --

def _reason(err: BaseException) -> str:
    if isinstance(err, BeanstalkcException) and len(err.args) == 3:    # (command, status, results)
        return "%s: %s" % (err.args[0], err.args[1])
    return str(err) or type(err).__name__


def _not_found(err: CommandFailed, message: str) -> BaseException:
    return CliError(message) if err.args[1:2] == ("NOT_FOUND",) else err


def _socket_reason(err: SocketError) -> str:
    cause = err.__cause__ if err.__cause__ is not None else (err.args[0] if err.args else None)
    if isinstance(cause, OSError):
        return cause.strerror or str(cause) or type(cause).__name__
    return str(cause) if cause else "connection closed"


def _split_bench(argv: List[str]) -> Optional[int]:
    """The index of a ``bench`` subcommand in argv (its arguments follow untouched), or None."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _VALUE_OPTIONS:
            i += 2
        elif word.startswith("-"):
            i += 1
        else:
            return i if word == "bench" else None
    return None


def _forwarded(words: List[str]) -> List[str]:
    """The --host/--port options given before ``bench``, passed on to it (later ones win there)."""
    kept: List[str] = []
    for i, word in enumerate(words):
        if word in ("--host", "--port") and i + 1 < len(words):
            kept += words[i:i + 2]
        elif word.startswith(("--host=", "--port=")):
            kept.append(word)
    return kept


def _connect(args: argparse.Namespace, encoding: Optional[str] = None) -> Connection:
    if args.socket:
        host, where = (args.socket if "/" in args.socket else "./" + args.socket), args.socket
    else:
        host, where = args.host, "%s:%d" % (args.host, args.port)
    try:
        return Connection(host, args.port, connect_timeout=CONNECT_TIMEOUT, encoding=encoding)
    except SocketError as err:
        raise CliError("cannot connect to %s: %s" % (where, _socket_reason(err)), EXIT_CONNECTION)


def _run(argv: List[str]) -> int:
    parser = build_parser()
    at = _split_bench(argv)
    try:
        args = parser.parse_args(argv if at is None else argv[:at + 1])
    except SystemExit as stop:     # --help, --version (0) or a usage error (2)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        "".encode(args.encoding)
    except LookupError:
        raise CliError("unknown encoding: %r" % args.encoding, EXIT_USAGE)
    if at is not None:
        if args.socket:
            raise CliError("bench does not support --socket", EXIT_USAGE)
        return cmd_bench(_forwarded(argv[:at]) + argv[at + 1:])
    if args.command == "work":
        try:
            return cmd_work(args)
        except (InvalidArgument, InvalidType) as err:
            raise CliError(str(err), EXIT_USAGE)
    conn = _connect(args)
    try:
        return COMMANDS[args.command](conn, args)
    except (InvalidArgument, InvalidType) as err:
        raise CliError(str(err), EXIT_USAGE)
    except SocketError as err:
        raise CliError("connection to %s lost: %s" % (args.socket or "%s:%d" % (args.host, args.port),
                                                      _socket_reason(err)), EXIT_CONNECTION)
    except ProtocolError as err:
        raise CliError("bad reply from the server (is it beanstalkd?): %s" % (err,), EXIT_CONNECTION)
    finally:
        conn.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except CliError as err:
        message, code = str(err), err.code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, like other tools on SIGPIPE.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except BatchError as err:
        message, code = "%d of %d jobs failed (first: %s)" % (
            len(err.errors), len(err.results), _reason(err.errors[0][1])), EXIT_FAILED
    except BeanstalkcException as err:
        message, code = _reason(err), EXIT_FAILED
    except Exception as err:    # never a traceback: a one-line report, even for the unforeseen
        message, code = "%s: %s" % (type(err).__name__, err), EXIT_FAILED
    try:
        sys.stderr.write("%s: error: %s\n" % (PROG, " ".join(message.splitlines())))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code
