/*
 * multiport's UDP ping-pong load generator: one thread, epoll, non-blocking
 * sockets, like loadgen.c beside it.
 *
 *   udploadgen HOST PORT CLIENTS SIZE SECONDS WARMUP
 *       CLIENTS UDP sockets, each connected to HOST:PORT (IPv4 or IPv6),
 *       each with one datagram of SIZE bytes in flight: when its answer
 *       comes back it sends the next.  A datagram not answered within
 *       LOST_AFTER seconds counts as lost and that client sends again.
 *       Counts answered datagrams after WARMUP seconds.
 *
 *   udploadgen echoserver HOST PORT
 *       A UDP echo server on HOST:PORT: every datagram goes back to its
 *       sender as it came, one blocking recvfrom and sendto each.  The
 *       upstream of the relays, never the slower side; it prints
 *       "echoserver listening on HOST:PORT" and runs until it is killed.
 *
 * The generator prints one JSON object: mode ("udp"), ops (answered
 * datagrams), seconds (measured, after warmup), cpu_seconds (its own user +
 * system time over the same span), errors (datagrams lost).  Every run ends
 * by itself: WARMUP + SECONDS bound it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 4096
#define MAX_SIZE 65507
#define LOST_AFTER 0.2

typedef struct {
    int fd;
    double sent; /* when its datagram in flight left */
} client_t;

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
    fprintf(stderr, "udploadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void usage(void) {
    fprintf(stderr, "usage: udploadgen HOST PORT CLIENTS SIZE SECONDS WARMUP\n"
                    "       udploadgen echoserver HOST PORT\n");
    exit(2);
}

static void echoserver(const char *host, const char *port) {
    struct addrinfo hints = {0}, *found;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &found) != 0) usage();
    int fd = socket(found->ai_family, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (bind(fd, found->ai_addr, found->ai_addrlen) < 0) die("bind");
    freeaddrinfo(found);
    printf("echoserver listening on %s:%s\n", host, port);
    fflush(stdout);
    static char buffer[MAX_SIZE + 1];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t length = sizeof from;
        ssize_t got = recvfrom(fd, buffer, sizeof buffer, 0, (struct sockaddr *)&from, &length);
        if (got < 0) {
            if (errno == EINTR) continue;
            die("recvfrom");
        }
        /* A reply the kernel can't take now is lost, as UDP allows. */
        sendto(fd, buffer, got, 0, (struct sockaddr *)&from, length);
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "echoserver") == 0) echoserver(argv[2], argv[3]);
    if (argc != 7) usage();
    const char *host = argv[1];
    const char *port = argv[2];
    int clients = atoi(argv[3]);
    int size = atoi(argv[4]);
    double seconds = atof(argv[5]);
    double warmup = atof(argv[6]);
    if (clients < 1 || clients > MAX_CLIENTS || size < 0 || size > MAX_SIZE ||
        seconds <= 0 || seconds > 3600 || warmup < 0 || warmup > 600)
        usage();

    struct addrinfo hints = {0}, *found;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &found) != 0) usage();

    static char payload[MAX_SIZE + 1], answer[MAX_SIZE + 1];
    memset(payload, 'u', sizeof payload);

    int epoll = epoll_create1(0);
    if (epoll < 0) die("epoll_create1");
    static client_t all[MAX_CLIENTS];
    double now = monotonic();
    for (int i = 0; i < clients; i++) {
        int fd = socket(found->ai_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (fd < 0) die("socket");
        if (connect(fd, found->ai_addr, found->ai_addrlen) < 0) die("connect");
        all[i].fd = fd;
        all[i].sent = now;
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) < 0) die("epoll_ctl");
        send(fd, payload, size, 0);
    }
    freeaddrinfo(found);

    double start = monotonic();
    double measureFrom = start + warmup, end = measureFrom + seconds;
    double cpuFrom = 0;
    int measuring = 0;
    long ops = 0, lost = 0;
    double lastSweep = start;
    struct epoll_event events[256];
    for (;;) {
        now = monotonic();
        if (!measuring && now >= measureFrom) {
            measuring = 1;
            ops = 0;
            lost = 0;
            cpuFrom = cpu();
        }
        if (now >= end) break;
        int n = epoll_wait(epoll, events, 256, 50);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        now = monotonic();
        for (int e = 0; e < n; e++) {
            client_t *c = &all[events[e].data.u32];
            for (;;) {
                ssize_t got = recv(c->fd, answer, sizeof answer, 0);
                if (got < 0) {
                    /* ECONNREFUSED: nothing listens; count it lost. */
                    if (errno == ECONNREFUSED) lost++;
                    break;
                }
                ops++;
                c->sent = now;
                send(c->fd, payload, size, 0);
            }
        }
        if (now - lastSweep >= LOST_AFTER / 2) {
            lastSweep = now;
            for (int i = 0; i < clients; i++) {
                if (now - all[i].sent >= LOST_AFTER) {
                    lost++;
                    all[i].sent = now;
                    send(all[i].fd, payload, size, 0);
                }
            }
        }
    }
    double elapsed = monotonic() - measureFrom;
    printf("{\"mode\": \"udp\", \"ops\": %ld, \"seconds\": %.6f, "
           "\"cpu_seconds\": %.6f, \"errors\": %ld}\n",
           ops, elapsed, cpu() - cpuFrom, lost);
    return 0;
}
