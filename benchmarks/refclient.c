/* The C reference clients of benchmarks/compare.py: the floor and the ceiling.
 *
 *   refclient HOST PORT TUBE MODE N BODY_SIZE BATCH PUT_WINDOW RESERVE_WINDOW
 *
 * MODE is a bench row. Sequential (one command, wait for its reply, repeat: the floor):
 *   put, reserve_delete, stats
 * Pipelined (the ceiling), shaped like the library's batches and compare.py's raw PipelinedClient:
 *   put_many             batches of BATCH puts; each batch in windows of PUT_WINDOW commands: send a
 *                        window, sched_yield(), read the previous window's replies
 *   reserve_delete_many  per batch: windows of RESERVE_WINDOW `reserve-with-timeout 0` (send, yield,
 *                        read them all), then the batch's deletes pipelined as the puts are
 * The yield is the one both Python cores make after a send: on one CPU shared with the server,
 * the server then answers a whole window before the client wakes.
 *
 * It connects (TCP_NODELAY), uses and watches TUBE and ignores `default` untimed, then runs the
 * row and prints one line:  ok N WALL_NS USER_NS SYS_NS  (the row's monotonic time and its own
 * CPU from getrusage). Any unexpected reply: a message on stderr and exit status 1.
 * Bodies are BODY_SIZE bytes of 'x', as the bench's. POSIX only; built with `cc -O2`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define RECV 65536          /* as the library reads */

static int fd;
static char *rbuf;          /* received bytes: [rpos, rend) are unparsed */
static size_t rpos, rend, rcap;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "refclient: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void send_all(const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("send", strerror(errno));
        }
        p += k;
        n -= (size_t)k;
    }
}

/* Receive once more into the buffer (compacting or growing it first). */
static void fill(void)
{
    if (rpos == rend) {
        rpos = rend = 0;
    } else if (rpos > 0 && rcap - rend < RECV) {
        memmove(rbuf, rbuf + rpos, rend - rpos);
        rend -= rpos;
        rpos = 0;
    }
    if (rcap - rend < RECV) {
        rcap = rend + RECV;
        rbuf = realloc(rbuf, rcap);
        if (!rbuf) die("out of memory", NULL);
    }
    for (;;) {
        ssize_t k = recv(fd, rbuf + rend, rcap - rend, 0);
        if (k > 0) { rend += (size_t)k; return; }
        if (k == 0) die("connection closed by the server", NULL);
        if (errno != EINTR) die("recv", strerror(errno));
    }
}

/* The next reply line (without CRLF, NUL-terminated in place); its length in *len. */
static char *line(size_t *len)
{
    for (;;) {
        char *start = rbuf + rpos;
        char *nl = rend > rpos ? memchr(start, '\n', rend - rpos) : NULL;
        if (nl) {
            if (nl == start || nl[-1] != '\r') die("bad reply line", NULL);
            nl[-1] = '\0';
            *len = (size_t)(nl - 1 - start);
            rpos = (size_t)(nl + 1 - rbuf);
            return start;
        }
        fill();
    }
}

/* Skip (or copy) a body of n bytes and its CRLF. */
static void body(size_t n)
{
    while (rend - rpos < n + 2) fill();
    if (rbuf[rpos + n] != '\r' || rbuf[rpos + n + 1] != '\n') die("bad body framing", NULL);
    rpos += n + 2;
}

static void expect(const char *want)
{
    size_t len;
    char *got = line(&len);
    if (strcmp(got, want) != 0) die(want, got);
}

static unsigned long long expect_prefix(const char *prefix)
{
    size_t len, k = strlen(prefix);
    char *got = line(&len);
    if (len <= k || memcmp(got, prefix, k) != 0) die(prefix, got);
    return strtoull(got + k, NULL, 10);
}

/* A RESERVED reply: its job id (the body is checked and skipped). */
static unsigned long long reserved(void)
{
    size_t len;
    char *got = line(&len), *end;
    if (len < 13 || memcmp(got, "RESERVED ", 9) != 0) die("RESERVED", got);
    unsigned long long jid = strtoull(got + 9, &end, 10);
    body((size_t)strtoull(end, NULL, 10));
    return jid;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long tv_ns(struct timeval tv)
{
    return (long long)tv.tv_sec * 1000000000LL + (long long)tv.tv_usec * 1000LL;
}

static char *put_cmd;       /* one whole put command */
static size_t put_len;
static char *wbuf;          /* a window of commands */
static size_t wcap;

static void wreserve(size_t n)
{
    if (n > wcap) {
        wcap = n;
        wbuf = realloc(wbuf, wcap);
        if (!wbuf) die("out of memory", NULL);
    }
}

static void seq_put(long n)
{
    for (long i = 0; i < n; i++) {
        send_all(put_cmd, put_len);
        expect_prefix("INSERTED ");
    }
}

static void seq_reserve_delete(long n)
{
    char cmd[64];
    for (long i = 0; i < n; i++) {
        send_all("reserve-with-timeout 0\r\n", 24);
        unsigned long long jid = reserved();
        send_all(cmd, (size_t)snprintf(cmd, sizeof cmd, "delete %llu\r\n", jid));
        expect("DELETED");
    }
}

static void seq_stats(long n)
{
    for (long i = 0; i < n; i++) {
        send_all("stats\r\n", 7);
        body((size_t)expect_prefix("OK "));
    }
}

/* Send `count` copies of the command `cmd` (len bytes each) in windows of `window`: send a
 * window, yield, read the previous window's replies (each checked by `reply`). */
static void pipeline_same(const char *cmd, size_t len, long count, long window, void (*reply)(void))
{
    long pending = 0;
    wreserve(len * (size_t)window);
    for (long i = 0; i < window && i < count; i++) memcpy(wbuf + (size_t)i * len, cmd, len);
    while (count > 0) {
        long k = count < window ? count : window;
        send_all(wbuf, len * (size_t)k);
        sched_yield();
        for (; pending > 0; pending--) reply();
        pending = k;
        count -= k;
    }
    sched_yield();
    for (; pending > 0; pending--) reply();
}

static void inserted(void) { expect_prefix("INSERTED "); }
static void deleted(void) { expect("DELETED"); }

static void pipe_put(long n, long batch, long window)
{
    while (n > 0) {
        long b = n < batch ? n : batch;
        pipeline_same(put_cmd, put_len, b, window, inserted);
        n -= b;
    }
}

static void pipe_reserve_delete(long n, long batch, long window, long rwindow)
{
    unsigned long long *jids = malloc(sizeof *jids * (size_t)batch);
    char *dels = NULL;
    size_t dcap = 0;
    static const char rcmd[] = "reserve-with-timeout 0\r\n";
    const size_t rlen = sizeof rcmd - 1;
    if (!jids) die("out of memory", NULL);
    while (n > 0) {
        long b = n < batch ? n : batch, got = 0;
        /* reserve the batch, a window at a time (send, yield, read them all) */
        wreserve(rlen * (size_t)rwindow);
        for (long i = 0; i < rwindow; i++) memcpy(wbuf + (size_t)i * rlen, rcmd, rlen);
        while (got < b) {
            long k = b - got < rwindow ? b - got : rwindow;
            send_all(wbuf, rlen * (size_t)k);
            sched_yield();
            for (long i = 0; i < k; i++) jids[got++] = reserved();
        }
        /* delete it, pipelined in windows */
        if (dcap < (size_t)window * 32) {
            dcap = (size_t)window * 32;
            dels = realloc(dels, dcap);
            if (!dels) die("out of memory", NULL);
        }
        long pending = 0;
        for (long i = 0; i < b;) {
            long k = b - i < window ? b - i : window;
            size_t len = 0;
            for (long j = 0; j < k; j++)
                len += (size_t)snprintf(dels + len, dcap - len, "delete %llu\r\n", jids[i + j]);
            send_all(dels, len);
            sched_yield();
            for (; pending > 0; pending--) deleted();
            pending = k;
            i += k;
        }
        sched_yield();
        for (; pending > 0; pending--) deleted();
        n -= b;
    }
    free(jids);
    free(dels);
}

static long arg_long(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) die("bad number for", what);
    return v;
}

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: %s HOST PORT TUBE MODE N BODY_SIZE BATCH PUT_WINDOW RESERVE_WINDOW\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2], *tube = argv[3], *mode = argv[4];
    long n = arg_long(argv[5], "N"), size = arg_long(argv[6], "BODY_SIZE");
    long batch = arg_long(argv[7], "BATCH"), window = arg_long(argv[8], "PUT_WINDOW");
    long rwindow = arg_long(argv[9], "RESERVE_WINDOW");
    if (batch < 1 || window < 1 || rwindow < 1) die("BATCH and the windows must be positive", NULL);

    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    int err = getaddrinfo(host, port, &hints, &ai);
    if (err) die("getaddrinfo", gai_strerror(err));
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) die("connect", strerror(errno));
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    char cmd[512];
    if (strlen(tube) > 200) die("tube name too long", tube);
    send_all(cmd, (size_t)snprintf(cmd, sizeof cmd, "use %s\r\n", tube));
    expect_prefix("USING ");
    send_all(cmd, (size_t)snprintf(cmd, sizeof cmd, "watch %s\r\n", tube));
    expect_prefix("WATCHING ");
    send_all("ignore default\r\n", 16);
    expect_prefix("WATCHING ");

    put_cmd = malloc((size_t)size + 64);
    if (!put_cmd) die("out of memory", NULL);
    put_len = (size_t)snprintf(put_cmd, 64, "put 0 0 120 %ld\r\n", size);
    memset(put_cmd + put_len, 'x', (size_t)size);
    put_len += (size_t)size;
    memcpy(put_cmd + put_len, "\r\n", 2);
    put_len += 2;

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    long long t0 = now_ns();
    if (!strcmp(mode, "put")) seq_put(n);
    else if (!strcmp(mode, "reserve_delete")) seq_reserve_delete(n);
    else if (!strcmp(mode, "stats")) seq_stats(n);
    else if (!strcmp(mode, "put_many")) pipe_put(n, batch, window < batch ? window : batch);
    else if (!strcmp(mode, "reserve_delete_many"))
        pipe_reserve_delete(n, batch, window < batch ? window : batch, rwindow < batch ? rwindow : batch);
    else die("unknown mode", mode);
    long long t1 = now_ns();
    getrusage(RUSAGE_SELF, &ru1);
    printf("ok %ld %lld %lld %lld\n", n, t1 - t0, tv_ns(ru1.ru_utime) - tv_ns(ru0.ru_utime),
           tv_ns(ru1.ru_stime) - tv_ns(ru0.ru_stime));
    close(fd);
    return 0;
}
