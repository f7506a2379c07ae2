"""Reply parsing without I/O: ReplyReader feed/gets and parse_yaml, per core."""
import pytest

# A beanstalkd 1.12 ``stats`` document, as sent (the os line is a YAML comment: null).
STATS = (b"---\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 12\ncurrent-jobs-reserved: 0\n"
         b"current-jobs-delayed: 0\ncurrent-jobs-buried: 0\ncmd-put: 120034\ncmd-peek: 0\ncmd-peek-ready: 0\n"
         b"cmd-peek-delayed: 0\ncmd-peek-buried: 0\ncmd-reserve: 0\ncmd-reserve-with-timeout: 120022\n"
         b"cmd-delete: 120022\ncmd-release: 0\ncmd-use: 31\ncmd-watch: 31\ncmd-ignore: 31\ncmd-bury: 0\n"
         b"cmd-kick: 0\ncmd-touch: 0\ncmd-stats: 5\ncmd-stats-job: 0\ncmd-stats-tube: 0\ncmd-list-tubes: 0\n"
         b"cmd-list-tube-used: 0\ncmd-list-tubes-watched: 0\ncmd-pause-tube: 0\njob-timeouts: 0\n"
         b"total-jobs: 120034\nmax-job-size: 65535\ncurrent-tubes: 2\ncurrent-connections: 1\n"
         b"current-producers: 1\ncurrent-workers: 1\ncurrent-waiting: 0\ntotal-connections: 40\npid: 7430\n"
         b"version: \"1.12\"\nrusage-utime: 0.512343\nrusage-stime: 1.001505\nuptime: 93\n"
         b"binlog-oldest-index: 0\nbinlog-current-index: 0\nbinlog-records-migrated: 0\n"
         b"binlog-records-written: 0\nbinlog-max-size: 10485760\ndraining: false\nid: dcc855330ddf3fbd\n"
         b"hostname: vm\nos: #1 SMP PREEMPT_DYNAMIC @0\nplatform: x86_64\n")

REPLIES = {
    "INSERTED": b"INSERTED 1234567\r\n",
    "RESERVED+body": b"RESERVED 1234567 100\r\n" + b"x" * 100 + b"\r\n",
    "OK+YAML": b"OK %d\r\n%s\r\n" % (len(STATS), STATS),
}
COUNT = 100     # replies per fed chunk, as a pipelined batch receives them


@pytest.mark.parametrize("kind", list(REPLIES))
def test_reader_one(benchmark, core, kind):
    """One reply fed and read: the per-command cost of a single round trip."""
    benchmark.group = "reader 1x " + kind
    data = REPLIES[kind]
    reader = core.ReplyReader()

    def run():
        reader.feed(data)
        return reader.gets()

    assert benchmark(run)[0] == kind.split("+")[0].encode()


@pytest.mark.parametrize("kind", list(REPLIES))
def test_reader_chunk(benchmark, core, kind):
    """COUNT replies fed at once and read: the per-reply cost inside a batch."""
    benchmark.group = "reader %dx %s" % (COUNT, kind)
    data = REPLIES[kind] * COUNT

    def run():
        reader = core.ReplyReader()
        reader.feed(data)
        n = 0
        while reader.gets() is not None:
            n += 1
        return n

    assert benchmark(run) == COUNT


def test_parse_yaml_stats(benchmark, core):
    benchmark.group = "parse_yaml stats"
    result = benchmark(core.parse_yaml, STATS)
    assert result["total-jobs"] == 120034 and result["os"] is None


def test_parse_yaml_stats_pyyaml(benchmark):
    """The fallback, for reference: PyYAML with its C loader if built."""
    yaml = pytest.importorskip("yaml")
    benchmark.group = "parse_yaml stats"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    result = benchmark(yaml.load, STATS, Loader=loader)
    assert result["total-jobs"] == 120034
