/*
 * The serverless function in C: get a backend connection, send one request, verify the echo,
 * print one JSON record with the keys of components/function.py, exit 0 iff ok.
 *
 * usage: function --mode {direct,fd3} [--target HOST:PORT] [--payload-size N] [--timeout S]
 *                 [--requests N] [--no-fallback] [--no-prefetch]
 *   direct  resolve the target and TCP-connect (acquire_us = resolve_us + handshake_us), then
 *           check the socket (verify_us).
 *   fd3     adopt the connection fd3_entrypoint placed at fd 3 (LISTEN_FDS=1 and LISTEN_PID =
 *           this process); acquire_us = fd_recv_us = the entrypoint's acquire, verify_us = its fd
 *           check plus this one, session_setup_us = the rest of the adoption here. Without an
 *           inherited fd (COLDSTART_FD3_FALLBACK says why) it connects directly and reports path
 *           "fallback" (--no-fallback: fail instead).
 * connect_us = acquire_us + verify_us + session_setup_us (+ socket_attempt_us on a fallback);
 * library_load_us = 0 (nothing is loaded for the connection). --requests N echo round trips,
 * request_rtt_us their median, first_request_us the first.
 * Raw CLOCK_REALTIME stamps: t_entry_ns (the entrypoint's first instruction when started by it,
 * else main), t_main_ns, t_connected_ns, t_first_reply_ns, t_end_ns. Before any of them past
 * main, the function pages in its own code (prefetch.h, prefetch_us) unless --no-prefetch.
 * Runtime start-up: runtime_startup_us = t_main_ns - COLDSTART_FD3_T_EXEC_NS (exec to main)
 * when started by the entrypoint.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pool_acquire.h"
#include "prefetch.h"

#define LISTEN_FD 3
#define MAX_PAYLOAD 65536
#define MAX_REQUESTS 1000

static long long realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* --- a tiny JSON writer for the one record ------------------------------------------------ */

static char out[16384];
static size_t out_len;

static void put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + out_len, sizeof(out) - out_len, fmt, ap);
    va_end(ap);
    if (n > 0) out_len = out_len + (size_t)n < sizeof(out) ? out_len + (size_t)n : sizeof(out) - 1;
}

static void put_str(const char *key, const char *value) {
    if (!value) {
        put("\"%s\":null,", key);
        return;
    }
    put("\"%s\":\"", key);
    for (const unsigned char *c = (const unsigned char *)value; *c; c++) {
        if (*c == '"' || *c == '\\') put("\\%c", *c);
        else if (*c < 0x20) put("\\u%04x", *c);
        else put("%c", *c);
    }
    put("\",");
}

static void put_us(const char *key, double us) {
    if (us < 0) put("\"%s\":null,", key);
    else put("\"%s\":%.1f,", key, us);
}

static void put_ns(const char *key, long long ns) {
    if (ns <= 0) put("\"%s\":null,", key);
    else put("\"%s\":%lld,", key, ns);
}

static void put_bool(const char *key, int v) { put("\"%s\":%s,", key, v ? "true" : "false"); }

/* --- the connection --------------------------------------------------------------------- */

static void format_peer(const struct sockaddr_storage *ss, char *dst, size_t cap) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
        port = ntohs(a->sin_port);
        snprintf(dst, cap, "%s:%d", host, port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(dst, cap, "[%s]:%d", host, port);
    } else {
        snprintf(dst, cap, "family %d", ss->ss_family);
    }
}

struct fd_check {
    int tcp, connected, blocking, matches, ok, family;
    char peer[80];
};

/* What the descriptor really is; ok only for a connected, blocking TCP socket (like check_fd in
 * components/function.py), whose peer is the one the manager announced when one was. */
static void check_fd(int fd, const char *expected_peer, struct fd_check *c) {
    memset(c, 0, sizeof(*c));
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
        len = sizeof(c->family);
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &c->family, &len);
    }
    c->tcp = type == SOCK_STREAM && (c->family == AF_INET || c->family == AF_INET6);
    struct sockaddr_storage ss;
    len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
        c->connected = 1;
        format_peer(&ss, c->peer, sizeof(c->peer));
    }
    int flags = fcntl(fd, F_GETFL);
    c->blocking = flags >= 0 && !(flags & O_NONBLOCK);
    c->matches = !expected_peer || (c->connected && strcmp(expected_peer, c->peer) == 0);
    c->ok = c->tcp && c->connected && c->matches && c->blocking;
}

static void put_fd_check(const struct fd_check *c, const char *expected_peer) {
    put("\"fd_check\":{");
    if (c->family == AF_INET) put("\"family\":\"AF_INET\",");
    else if (c->family == AF_INET6) put("\"family\":\"AF_INET6\",");
    else put("\"family\":%d,", c->family);
    put("\"type\":\"%s\",", c->tcp ? "SOCK_STREAM" : "other");
    put_bool("connected", c->connected);
    put_str("peer", c->connected ? c->peer : NULL);
    put_str("expected_peer", expected_peer);
    put_bool("peer_matches", c->matches);
    put_bool("blocking", c->blocking);
    put("\"ok\":%s},", c->ok ? "true" : "false");
}

/* Resolve then connect; fills both phase durations. Returns the fd or -1 with err set. */
static int connect_direct(const char *target, double timeout_s, long long *resolve_ns, long long *handshake_ns,
                          char *err, size_t errcap) {
    char host[256];
    const char *colon = strrchr(target, ':');
    if (!colon || colon == target || (size_t)(colon - target) >= sizeof(host)) {
        snprintf(err, errcap, "ValueError: expected HOST:PORT, got %s", target);
        return -1;
    }
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    long long t0 = monotonic_ns();
    int gai = getaddrinfo(host, colon + 1, &hints, &res);
    long long t1 = monotonic_ns();
    *resolve_ns = t1 - t0;
    if (gai != 0) {
        snprintf(err, errcap, "gaierror: %s: %s", host, gai_strerror(gai));
        return -1;
    }
    struct timeval tv = {.tv_sec = (time_t)timeout_s, .tv_usec = (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    int fd = -1, last = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* bounds connect() too */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    *handshake_ns = monotonic_ns() - t1;
    if (fd < 0) {
        snprintf(err, errcap, "ConnectionError: cannot connect to %s: %s", target, strerror(last));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Send a payload carrying a random nonce and read the whole echo back; returns ns or -1. */
static long long echo_check(int fd, size_t size, double timeout_s, char *err, size_t errcap) {
    static char payload[MAX_PAYLOAD], got[MAX_PAYLOAD];
    unsigned char nonce[8] = {0};
    if (getrandom(nonce, sizeof(nonce), 0) != (ssize_t)sizeof(nonce)) {
        for (size_t i = 0; i < sizeof(nonce); i++) nonce[i] = (unsigned char)(monotonic_ns() >> (i * 3));
    }
    int n = snprintf(payload, sizeof(payload), "REQ ");
    for (size_t i = 0; i < sizeof(nonce); i++) n += snprintf(payload + n, sizeof(payload) - (size_t)n, "%02x", nonce[i]);
    payload[n++] = ' ';
    while ((size_t)n < size - 1) payload[n++] = 'x';
    payload[size - 1] = '\n';
    struct timeval tv = {.tv_sec = (time_t)timeout_s, .tv_usec = (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    long long t0 = monotonic_ns();
    for (size_t sent = 0; sent < size;) {
        ssize_t w = send(fd, payload + sent, size - sent, MSG_NOSIGNAL);
        if (w <= 0) {
            snprintf(err, errcap, "OSError: send: %s", strerror(errno));
            return -1;
        }
        sent += (size_t)w;
    }
    size_t have = 0;
    while (have < size) {
        ssize_t r = recv(fd, got + have, size - have, 0);
        if (r < 0) {
            snprintf(err, errcap, "%s: recv: %s", errno == EAGAIN ? "TimeoutError" : "OSError", strerror(errno));
            return -1;
        }
        if (r == 0) {
            snprintf(err, errcap, "ConnectionError: backend closed after %zu of %zu echoed bytes", have, size);
            return -1;
        }
        have += (size_t)r;
    }
    long long elapsed = monotonic_ns() - t0;
    if (memcmp(payload, got, size) != 0) {
        snprintf(err, errcap, "ValueError: echo mismatch");
        return -1;
    }
    return elapsed;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_us(const double *values, size_t n) {
    static double sorted[MAX_REQUESTS];
    memcpy(sorted, values, n * sizeof(double));
    qsort(sorted, n, sizeof(double), cmp_double);
    return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

static long long env_ll(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoll(v) : 0;
}

static double env_us(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atof(v) : -1;
}

/* LISTEN_FDS=1 meant for this very process (systemd's sd_listen_fds rule). */
static int inherited_fd3(void) {
    const char *fds = getenv("LISTEN_FDS");
    return fds && strcmp(fds, "1") == 0 && env_ll("LISTEN_PID") == (long long)getpid();
}

static int usage(int code) {
    fprintf(code ? stderr : stdout,
            "usage: function --mode {direct,fd3} [--target HOST:PORT] [--payload-size N] [--timeout S] [--requests N]\n"
            "                [--no-fallback] [--no-prefetch]\n");
    return code;
}

int main(int argc, char **argv) {
    long long t_main_ns = realtime_ns();
    const char *mode = NULL, *target = "echo:7000";
    long payload_size = 64;
    double timeout_s = 2.0;
    long requests = 1;
    int fallback = 1, prefetch = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return usage(0);
        if (!strcmp(a, "--no-fallback")) {
            fallback = 0;
            continue;
        }
        if (!strcmp(a, "--fallback")) {
            fallback = 1;
            continue;
        }
        if (!strcmp(a, "--no-prefetch")) {
            prefetch = 0;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s needs a value\n", a);
            return usage(2);
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--mode")) mode = v;
        else if (!strcmp(a, "--target")) target = v;
        else if (!strcmp(a, "--payload-size")) payload_size = strtol(v, NULL, 10);
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--requests")) requests = strtol(v, NULL, 10);
        else {
            fprintf(stderr, "unknown argument %s\n", a);
            return usage(2);
        }
    }
    if (!mode || (strcmp(mode, "direct") && strcmp(mode, "fd3"))) {
        fprintf(stderr, "--mode must be direct or fd3\n");
        return usage(2);
    }
    if (payload_size < 24 || payload_size > MAX_PAYLOAD) {
        fprintf(stderr, "--payload-size must be in [24, %d]\n", MAX_PAYLOAD);
        return usage(2);
    }
    if (!(timeout_s > 0)) {
        fprintf(stderr, "--timeout must be > 0\n");
        return usage(2);
    }
    if (requests < 1 || requests > MAX_REQUESTS) {
        fprintf(stderr, "--requests must be in [1, %d]\n", MAX_REQUESTS);
        return usage(2);
    }
    /* Same for every mode and before any connection clock (prefetch.h). */
    double prefetch_us = -1;
    long long prefetch_bytes = -1;
    if (prefetch) {
        long long tp = monotonic_ns();
        prefetch_bytes = prefetch_self();
        prefetch_us = (double)(monotonic_ns() - tp) / 1e3;
    }

    const char *path = mode;
    char error[600] = "", fallback_reason[600] = "", expected_peer_buf[80] = "";
    const char *expected_peer = NULL;
    long long resolve_ns = -1, handshake_ns = -1, pool_id = -1, t_connected_ns = 0, t_first_reply_ns = 0;
    double fd_recv_us = -1, attempt_us = -1, connect_us = -1, rtt_us = -1, first_rtt_us = -1;
    double acquire_phase_us = -1, verify_us = -1, setup_us = -1;
    static double rtts_us[MAX_REQUESTS];
    int have_check = 0, ok = 0, fd = -1;
    struct fd_check chk;
    long long t_exec_ns = env_ll("COLDSTART_FD3_T_EXEC_NS");
    double acquire_us = env_us("COLDSTART_FD3_ACQUIRE_US");
    double entry_verify_us = env_us("COLDSTART_FD3_VERIFY_US");
    long long t_entry_ns = env_ll("COLDSTART_FD3_T_START_NS");
    if (t_entry_ns <= 0) t_entry_ns = t_main_ns;

    if (!strcmp(mode, "fd3")) {
        long long t0 = monotonic_ns();
        if (inherited_fd3()) {
            const char *reply = getenv("COLDSTART_FD3_REPLY");
            if (reply && pool_json_string(reply, "peer", expected_peer_buf, sizeof(expected_peer_buf)) == 0)
                expected_peer = expected_peer_buf;
            const char *id = reply ? strstr(reply, "\"id\":") : NULL;
            if (id) pool_id = atoll(id + 5);
            long long t_check = monotonic_ns();
            check_fd(LISTEN_FD, expected_peer, &chk);
            have_check = 1;
            long long t_checked = monotonic_ns();
            if (chk.ok) {
                fd = LISTEN_FD;
                fcntl(fd, F_SETFD, FD_CLOEXEC); /* ours now, not for any child */
                long long t_adopted = monotonic_ns();
                t_connected_ns = realtime_ns();
                fd_recv_us = acquire_phase_us = acquire_us > 0 ? acquire_us : 0;
                verify_us = (entry_verify_us > 0 ? entry_verify_us : 0) + (double)(t_checked - t_check) / 1e3;
                setup_us = (double)((t_check - t0) + (t_adopted - t_checked)) / 1e3;
                connect_us = acquire_phase_us + verify_us + setup_us;
            } else {
                close(LISTEN_FD);
                snprintf(fallback_reason, sizeof(fallback_reason), "bad_fd: fd 3 is not a connected, blocking TCP socket to %s",
                         expected_peer ? expected_peer : "the announced peer");
            }
        } else {
            const char *why = getenv("COLDSTART_FD3_FALLBACK");
            snprintf(fallback_reason, sizeof(fallback_reason), "%s",
                     why && *why ? why : "no_listen_fds: LISTEN_FDS/LISTEN_PID do not name this process");
        }
        if (fd < 0) {
            if (!fallback) {
                snprintf(error, sizeof(error), "PoolError: %s", fallback_reason);
                goto done;
            }
            path = "fallback";
            attempt_us = (acquire_us > 0 ? acquire_us : 0) + (entry_verify_us > 0 ? entry_verify_us : 0) +
                         (double)(monotonic_ns() - t0) / 1e3;
        }
    }
    if (fd < 0) {
        fd = connect_direct(target, timeout_s, &resolve_ns, &handshake_ns, error, sizeof(error));
        if (fd < 0) goto done;
        long long t_check = monotonic_ns();
        check_fd(fd, NULL, &chk);
        have_check = 1;
        verify_us = (double)(monotonic_ns() - t_check) / 1e3;
        t_connected_ns = realtime_ns();
        acquire_phase_us = (double)(resolve_ns + handshake_ns) / 1e3;
        setup_us = 0;
        connect_us = (attempt_us > 0 ? attempt_us : 0) + acquire_phase_us + verify_us + setup_us;
    }
    for (long r = 0; r < requests; r++) {
        long long rtt_ns = echo_check(fd, (size_t)payload_size, timeout_s, error, sizeof(error));
        if (rtt_ns < 0) goto done;
        rtts_us[r] = (double)rtt_ns / 1e3;
        if (r == 0) {
            t_first_reply_ns = realtime_ns();
            first_rtt_us = rtts_us[0];
        }
    }
    rtt_us = median_us(rtts_us, (size_t)requests);
    ok = 1;
done:
    if (fd >= 0) close(fd);
    long long t_end_ns = realtime_ns();

    put("{");
    put_bool("ok", ok);
    put_str("mode", mode);
    put_str("path", path);
    put_str("runtime", "c");
    put_str("error", error[0] ? error : NULL);
    put_ns("t_main_ns", t_main_ns);
    put_ns("t_connected_ns", t_connected_ns);
    put_ns("t_end_ns", t_end_ns);
    put_ns("t_first_reply_ns", t_first_reply_ns);
    put_ns("t_entry_ns", t_entry_ns);
    put_ns("t_exec_ns", t_exec_ns);
    put_us("runtime_startup_us", t_exec_ns > 0 ? (double)(t_main_ns - t_exec_ns) / 1e3 : -1);
    put_us("resolve_us", resolve_ns >= 0 ? (double)resolve_ns / 1e3 : -1);
    put_us("handshake_us", handshake_ns >= 0 ? (double)handshake_ns / 1e3 : -1);
    put_us("fd_recv_us", fd_recv_us);
    put_us("socket_attempt_us", attempt_us);
    put_us("connect_us", connect_us);
    put_us("library_load_us", 0);
    put_str("library", strcmp(mode, "fd3") ? "libc" : "fd3-entrypoint");
    put_us("pre_main_us", strcmp(mode, "fd3") ? 0 : (acquire_us > 0 ? acquire_us : 0) + (entry_verify_us > 0 ? entry_verify_us : 0));
    put_us("acquire_us", acquire_phase_us);
    put_us("verify_us", verify_us);
    put_us("session_setup_us", setup_us);
    put_us("first_request_us", first_rtt_us);
    put_us("request_rtt_us", rtt_us);
    put("\"request_rtts_us\":[");
    for (long r = 0; ok && r < requests; r++) put("%s%.1f", r ? "," : "", rtts_us[r]);
    put("],");
    put_us("prefetch_us", prefetch_us);
    if (prefetch_bytes >= 0) put("\"prefetch_bytes\":%lld,", prefetch_bytes);
    else put("\"prefetch_bytes\":null,");
    put_str("peer", have_check && chk.connected ? chk.peer : NULL);
    if (have_check) put_fd_check(&chk, expected_peer);
    else put("\"fd_check\":null,");
    put("\"interfaces\":[");
    struct if_nameindex *ifs = if_nameindex();
    for (struct if_nameindex *p = ifs; p && p->if_index; p++) put("%s\"%s\"", p == ifs ? "" : ",", p->if_name);
    if (ifs) if_freenameindex(ifs);
    put("],");
    put_bool("released", 0);
    put_str("fallback_reason", fallback_reason[0] ? fallback_reason : NULL);
    if (pool_id >= 0) put("\"pool_id\":%lld}", pool_id);
    else put("\"pool_id\":null}");
    printf("%s\n", out);
    fflush(stdout);
    return ok ? 0 : 1;
}
