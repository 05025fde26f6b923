/*
 * multiport's benchmark load generator: one thread, epoll, non-blocking
 * sockets, so that it is never the slower side of a measurement.
 *
 *   loadgen echo   HOST PORTS CONNS SIZE SECONDS WARMUP
 *       CONNS connections spread round-robin over PORTS (comma-separated),
 *       each sending SIZE bytes and waiting for them to come back, again and
 *       again; counts round trips after WARMUP seconds.
 *   loadgen accept HOST PORTS CONCURRENCY SECONDS WARMUP
 *       CONCURRENCY connections at a time, each: connect, send one byte,
 *       read it back, close with a reset (no TIME_WAIT); counts them.
 *   loadgen hold   HOST PORTS CONNS
 *       opens CONNS connections one after the other (one not established
 *       within 4 s, or after 30 s in all, is an error), prints "ready", and
 *       holds them until its standard input closes.
 *   loadgen stream HOST PORT CONNS SECONDS WARMUP
 *       CONNS connections to PORT, each written a fixed 64 KB buffer as fast
 *       as it accepts data; counts the bytes written after WARMUP seconds
 *       (ops is bytes).
 *   loadgen sink   PORT
 *       a server on 127.0.0.1:PORT that accepts any number of connections
 *       and reads and discards everything sent to it, until killed.
 *   loadgen echoserver PORT
 *       the same server, writing back everything it reads: the upstream of
 *       a relay's request/response measurement, never the slower side.
 *
 * Every mode but sink and echoserver prints one JSON object: mode, ops, seconds (measured,
 * after warmup), cpu_seconds (its own user + system time over the same
 * span), errors.  Every run ends by itself (SECONDS bounds echo, accept and
 * stream) except sink, which runs until it is killed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 20000
#define MAX_SIZE 65536
#define STREAM_CHUNK 65536
#define SINK_BUFFER (256 * 1024)
/* Writes (stream) or reads (sink) per ready socket before the others get a
 * turn: the sockets stay level-triggered, so none is starved. */
#define BURST 16

typedef struct {
    int fd;
    int port;
    size_t done; /* bytes of the current message received */
    int connecting;
} conn_t;

static struct sockaddr_storage target;
static socklen_t target_len;
static int ports[MAX_PORTS];
static int nports;

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void parse_target(const char *host, const char *portlist) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&target;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&target;
    memset(&target, 0, sizeof target);
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        target_len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        target_len = sizeof *v6;
    } else {
        fprintf(stderr, "loadgen: not a numeric address: %s\n", host);
        exit(2);
    }
    char *copy = strdup(portlist), *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (nports == MAX_PORTS) break;
        ports[nports++] = atoi(p);
    }
    free(copy);
    if (nports == 0) {
        fprintf(stderr, "loadgen: no ports\n");
        exit(2);
    }
}

static int open_conn(int port, int blocking) {
    struct sockaddr_storage address = target;
    if (address.ss_family == AF_INET)
        ((struct sockaddr_in *)&address)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&address)->sin6_port = htons(port);
    int fd = socket(address.ss_family, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, target_len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    if (blocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void reset_close(int fd) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void report(const char *mode, long ops, double seconds, double cpu_seconds,
                   long errors) {
    printf("{\"mode\": \"%s\", \"ops\": %ld, \"seconds\": %.6f, "
           "\"cpu_seconds\": %.6f, \"errors\": %ld}\n",
           mode, ops, seconds, cpu_seconds, errors);
    fflush(stdout);
}

static int run_echo(int nconns, size_t size, double seconds, double warmup) {
    static char message[MAX_SIZE], buffer[MAX_SIZE];
    memset(message, 'x', size);
    conn_t *conns = calloc(nconns, sizeof *conns);
    int ep = epoll_create1(0);
    long errors = 0;
    for (int i = 0; i < nconns; i++) {
        conns[i].port = ports[i % nports];
        conns[i].fd = open_conn(conns[i].port, 1);
        if (conns[i].fd < 0) die("connect");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
        if (write(conns[i].fd, message, size) != (ssize_t)size) die("write");
    }
    struct epoll_event events[1024];
    double start = monotonic(), measured = start + warmup, end = measured + seconds;
    double cpu_start = cpu();
    long ops = 0, alive = nconns;
    int counting = 0;
    while (alive > 0) {
        double t = monotonic();
        if (!counting && t >= measured) {
            counting = 1;
            ops = 0;
            cpu_start = cpu();
        }
        if (t >= end) break;
        int n = epoll_wait(ep, events, 1024, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            ssize_t got = read(c->fd, buffer, size - c->done);
            if (got <= 0) {
                if (got < 0 && errno == EAGAIN) continue;
                errors++;
                alive--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                continue;
            }
            c->done += got;
            if (c->done == size) {
                c->done = 0;
                ops++;
                if (write(c->fd, message, size) != (ssize_t)size) errors++;
            }
        }
    }
    double elapsed = monotonic() - measured;
    report("echo", counting ? ops : 0, elapsed, cpu() - cpu_start, errors);
    return 0;
}

/* Start a new connection in slot c; 0, or -1 if connect failed at once
 * (the slot is then retried on the next pass of the loop). */
static int accept_start(int ep, conn_t *c, long *next) {
    c->port = ports[(*next)++ % nports];
    c->fd = open_conn(c->port, 0);
    c->connecting = 1;
    c->done = 0;
    if (c->fd < 0) return -1;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static int run_accept(int concurrency, double seconds, double warmup) {
    conn_t *conns = calloc(concurrency, sizeof *conns);
    int ep = epoll_create1(0);
    long next = 0, errors = 0, ops = 0;
    for (int i = 0; i < concurrency; i++)
        if (accept_start(ep, &conns[i], &next) < 0) errors++;
    struct epoll_event events[1024];
    double start = monotonic(), measured = start + warmup, end = measured + seconds;
    double cpu_start = cpu();
    int counting = 0;
    char byte = 'x';
    while (1) {
        double t = monotonic();
        if (!counting && t >= measured) {
            counting = 1;
            ops = 0;
            errors = 0;
            cpu_start = cpu();
        }
        if (t >= end) break;
        for (int i = 0; i < concurrency; i++)
            if (conns[i].fd < 0 && accept_start(ep, &conns[i], &next) < 0) errors++;
        int n = epoll_wait(ep, events, 1024, 50);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            int failed = 0;
            if (c->connecting) {
                int error = 0;
                socklen_t len = sizeof error;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
                if (error || write(c->fd, &byte, 1) != 1) {
                    failed = 1;
                } else {
                    c->connecting = 0;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    continue;
                }
            } else {
                char got;
                ssize_t r = read(c->fd, &got, 1);
                if (r < 0 && errno == EAGAIN) continue;
                if (r != 1) failed = 1;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            reset_close(c->fd);
            if (failed) errors++; else ops++;
            if (accept_start(ep, c, &next) < 0) errors++;
        }
    }
    double elapsed = monotonic() - measured;
    report("accept", ops, elapsed, cpu() - cpu_start, errors);
    return 0;
}

/* hold opens its connections one after the other, each given at most
 * HOLD_CONNECT_SECONDS to be established (enough for the SYN to be sent
 * again twice, at 1 s and 3 s, when a busy server's backlog overflowed),
 * all of them at most HOLD_TOTAL_SECONDS: a server that stops accepting (at
 * its connection limit, its backlog full) leaves the rest unanswered, and
 * each of those is an error instead of a connect hanging for minutes. */
#define HOLD_CONNECT_SECONDS 4.0
#define HOLD_TOTAL_SECONDS 30.0

static int hold_conn(int port, double deadline) {
    int fd = open_conn(port, 0);
    if (fd < 0) return -1;
    double left = deadline - monotonic();
    if (left > HOLD_CONNECT_SECONDS) left = HOLD_CONNECT_SECONDS;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int error = 0;
    socklen_t len = sizeof error;
    if (left <= 0 || poll(&p, 1, (int)(left * 1000)) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0 || error) {
        close(fd);
        return -1;
    }
    return fd;
}

static int run_hold(int nconns) {
    int *fds = calloc(nconns, sizeof *fds);
    long errors = 0;
    double start = monotonic();
    double deadline = start + HOLD_TOTAL_SECONDS;
    for (int i = 0; i < nconns; i++) {
        fds[i] = hold_conn(ports[i % nports], deadline);
        if (fds[i] < 0) errors++;
    }
    double elapsed = monotonic() - start;
    printf("ready\n");
    report("hold", nconns - errors, elapsed, cpu(), errors);
    char buffer[256];
    while (read(0, buffer, sizeof buffer) > 0) {
    }
    for (int i = 0; i < nconns; i++)
        if (fds[i] >= 0) close(fds[i]);
    return 0;
}

static int run_stream(int nconns, double seconds, double warmup) {
    static char chunk[STREAM_CHUNK];
    memset(chunk, 'x', sizeof chunk);
    int *fds = calloc(nconns, sizeof *fds);
    int ep = epoll_create1(0);
    for (int i = 0; i < nconns; i++) {
        fds[i] = open_conn(ports[0], 0);
        if (fds[i] < 0) die("connect");
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    struct epoll_event events[1024];
    double start = monotonic(), measured = start + warmup, end = measured + seconds;
    double cpu_start = cpu();
    long bytes = 0, errors = 0, alive = nconns;
    int counting = 0;
    while (alive > 0) {
        double t = monotonic();
        if (!counting && t >= measured) {
            counting = 1;
            bytes = 0;
            cpu_start = cpu();
        }
        if (t >= end) break;
        int n = epoll_wait(ep, events, 1024, 50);
        for (int i = 0; i < n; i++) {
            int fd = fds[events[i].data.u32];
            int failed = (events[i].events & (EPOLLERR | EPOLLHUP)) != 0;
            for (int k = 0; k < BURST && !failed; k++) {
                ssize_t sent = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
                if (sent < 0) {
                    if (errno != EAGAIN && errno != EINTR) failed = 1;
                    break;
                }
                bytes += sent;
                if (sent < (ssize_t)sizeof chunk) break;
            }
            if (failed) {
                errors++;
                alive--;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
            }
        }
    }
    double elapsed = monotonic() - measured;
    report("stream", counting ? bytes : 0, elapsed, cpu() - cpu_start, errors);
    return 0;
}

/* Write all of data to fd, waiting for room when the socket is full (an
 * echo server's peer reads what it sent: the wait is short). */
static int write_all(int fd, const char *data, size_t size) {
    while (size > 0) {
        ssize_t sent = send(fd, data, size, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return -1;
            struct pollfd writable = {.fd = fd, .events = POLLOUT};
            poll(&writable, 1, 1000);
            continue;
        }
        data += sent;
        size -= sent;
    }
    return 0;
}

static _Noreturn void run_sink(int port, int echo) {
    static char buffer[SINK_BUFFER];
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (listener < 0) die("socket");
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    printf("%s listening on 127.0.0.1:%d\n", echo ? "echoserver" : "sink", port);
    fflush(stdout);
    struct epoll_event events[1024];
    while (1) {
        int n = epoll_wait(ep, events, 1024, -1);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = client};
                    epoll_ctl(ep, EPOLL_CTL_ADD, client, &cev);
                }
                continue;
            }
            for (int k = 0; k < BURST; k++) {
                ssize_t got = read(fd, buffer, sizeof buffer);
                if (got > 0 && !(echo && write_all(fd, buffer, got) < 0)) continue;
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                break;
            }
        }
    }
}

int main(int argc, char **argv) {
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    if (argc >= 7 && strcmp(argv[1], "echo") == 0) {
        parse_target(argv[2], argv[3]);
        size_t size = atol(argv[5]);
        if (size < 1 || size > MAX_SIZE) {
            fprintf(stderr, "loadgen: size must be 1-%d\n", MAX_SIZE);
            return 2;
        }
        return run_echo(atoi(argv[4]), size, atof(argv[6]), argc > 7 ? atof(argv[7]) : 0);
    }
    if (argc >= 6 && strcmp(argv[1], "accept") == 0) {
        parse_target(argv[2], argv[3]);
        return run_accept(atoi(argv[4]), atof(argv[5]), argc > 6 ? atof(argv[6]) : 0);
    }
    if (argc == 5 && strcmp(argv[1], "hold") == 0) {
        parse_target(argv[2], argv[3]);
        return run_hold(atoi(argv[4]));
    }
    if (argc >= 6 && strcmp(argv[1], "stream") == 0) {
        parse_target(argv[2], argv[3]);
        return run_stream(atoi(argv[4]), atof(argv[5]), argc > 6 ? atof(argv[6]) : 0);
    }
    if (argc == 3 && strcmp(argv[1], "sink") == 0) {
        signal(SIGPIPE, SIG_IGN);
        run_sink(atoi(argv[2]), 0);
    }
    if (argc == 3 && strcmp(argv[1], "echoserver") == 0) {
        signal(SIGPIPE, SIG_IGN);
        run_sink(atoi(argv[2]), 1);
    }
    fprintf(stderr,
            "usage: loadgen echo HOST PORTS CONNS SIZE SECONDS [WARMUP]\n"
            "       loadgen accept HOST PORTS CONCURRENCY SECONDS [WARMUP]\n"
            "       loadgen hold HOST PORTS CONNS\n"
            "       loadgen stream HOST PORT CONNS SECONDS [WARMUP]\n"
            "       loadgen sink PORT\n"
            "       loadgen echoserver PORT\n");
    return 2;
}
