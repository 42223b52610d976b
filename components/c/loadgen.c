/*
 * Load generator for pool protocol v1: N client processes, each in a loop
 * connect to the manager's Unix socket, send an acquire request, receive the
 * reply with its fd (SCM_RIGHTS), check it, close it. Written in C so the
 * clients cost little CPU next to the manager on a small machine.
 *
 * usage: loadgen --socket PATH [--procs N] [--duration S] [--count N] [--pool NAME]
 *                [--timeout-ms MS] [--max-samples N]
 * --count stops after N successful acquisitions in total (split over the processes),
 * or at --duration, whichever comes first.
 * Prints one JSON object: count, failures, rate, latency percentiles (us).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { E_CONNECT, E_SEND, E_RECV, E_TIMEOUT, E_ERROR_REPLY, E_NO_FD, E_BAD_FD, E_EXTRA_FD, E_KINDS };
static const char *E_NAMES[E_KINDS] = {"connect", "send",     "recv",   "timeout",
                                       "error_reply", "no_fd", "bad_fd", "extra_fd"};

struct shared {
    uint64_t count;
    uint64_t failures;
    uint64_t errors[E_KINDS];
    uint64_t nsamples;
    char last_error[256];
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* One acquisition; returns -1 and the error kind on failure. */
static int acquire_once(const struct sockaddr_un *addr, const char *req, size_t reqlen, int timeout_ms,
                        int *kind, char *errbuf, size_t errlen) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) { *kind = E_CONNECT; return -1; }
    if (connect(s, (const struct sockaddr *)addr, sizeof(*addr)) < 0) {
        *kind = E_CONNECT; snprintf(errbuf, errlen, "connect: %s", strerror(errno)); close(s); return -1;
    }
    if (send(s, req, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen) {
        *kind = E_SEND; close(s); return -1;
    }
    char buf[4096];
    size_t got = 0;
    int fd = -1, rc = -1;
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN};
        int pr = poll(&p, 1, timeout_ms);
        if (pr == 0) { *kind = E_TIMEOUT; break; }
        if (pr < 0) { if (errno == EINTR) continue; *kind = E_RECV; break; }
        char cbuf[CMSG_SPACE(8 * sizeof(int))];
        struct iovec iov = {.iov_base = buf + got, .iov_len = sizeof(buf) - 1 - got};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
        if (n <= 0) { *kind = E_RECV; break; }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                int *fds = (int *)CMSG_DATA(c);
                for (int i = 0; i < nfds; i++) {
                    if (fd < 0) fd = fds[i];
                    else { close(fds[i]); *kind = E_EXTRA_FD; }
                }
            }
        }
        got += (size_t)n;
        buf[got] = 0;
        if (memchr(buf, '\n', got)) {
            if (strncmp(buf, "{\"ok\":true", 10) != 0) {
                *kind = E_ERROR_REPLY;
                snprintf(errbuf, errlen, "%.*s", (int)strcspn(buf, "\n"), buf);
            } else if (fd < 0) {
                *kind = E_NO_FD;
            } else {
                int type = 0;
                socklen_t tl = sizeof(type);
                if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM) *kind = E_BAD_FD;
                else rc = 0;
            }
            break;
        }
        if (got >= sizeof(buf) - 1) { *kind = E_RECV; break; }
    }
    if (fd >= 0) close(fd);
    close(s);
    return rc;
}

int main(int argc, char **argv) {
    const char *path = NULL, *pool = "echo";
    int procs = 8, timeout_ms = 2000;
    double duration = 10.0;
    long max_samples = 400000;
    long total = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--socket") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--procs") && i + 1 < argc) procs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--duration") && i + 1 < argc) duration = atof(argv[++i]);
        else if (!strcmp(argv[i], "--pool") && i + 1 < argc) pool = argv[++i];
        else if (!strcmp(argv[i], "--count") && i + 1 < argc) total = atol(argv[++i]);
        else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) timeout_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--max-samples") && i + 1 < argc) max_samples = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s --socket PATH [--procs N] [--duration S] [--count N] [--pool NAME] "
                            "[--timeout-ms MS] [--max-samples N]\n", argv[0]);
            return 2;
        }
    }
    if (!path || procs < 1 || duration <= 0 || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "loadgen: --socket PATH (< 108 bytes), --procs >= 1, --duration > 0 required\n");
        return 2;
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    char req[512];
    int reqlen = snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"acquire\",\"pool\":\"%s\"}\n", pool);
    if (reqlen <= 0 || reqlen >= (int)sizeof(req)) { fprintf(stderr, "loadgen: pool name too long\n"); return 2; }

    size_t shsize = sizeof(struct shared) * (size_t)procs;
    size_t latsize = sizeof(uint32_t) * (size_t)max_samples * (size_t)procs;
    struct shared *sh = mmap(NULL, shsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint32_t *lat = mmap(NULL, latsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || lat == MAP_FAILED) { perror("mmap"); return 1; }
    memset(sh, 0, shsize);

    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(duration * 1e9);
    for (int p = 0; p < procs; p++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 1; }
        if (pid == 0) {
            struct shared *me = &sh[p];
            uint32_t *mine = lat + (size_t)p * (size_t)max_samples;
            uint64_t quota = total > 0 ? (uint64_t)(total / procs + (p < total % procs ? 1 : 0)) : UINT64_MAX;
            for (;;) {
                uint64_t t0 = now_ns();
                if (t0 >= end || me->count >= quota) break;
                int kind = 0;
                char errbuf[256] = "";
                int rc = acquire_once(&addr, req, (size_t)reqlen, timeout_ms, &kind, errbuf, sizeof(errbuf));
                uint64_t dt = now_ns() - t0;
                if (rc == 0) {
                    me->count++;
                    if (me->nsamples < (uint64_t)max_samples)
                        mine[me->nsamples++] = dt > 0xffffffffu ? 0xffffffffu : (uint32_t)dt;
                } else {
                    me->failures++;
                    me->errors[kind]++;
                    if (errbuf[0]) memcpy(me->last_error, errbuf, sizeof(me->last_error));
                    if (kind == E_CONNECT) usleep(1000); /* manager gone: do not spin */
                }
            }
            _exit(0);
        }
    }
    for (int p = 0; p < procs; p++) wait(NULL);
    double elapsed = (double)(now_ns() - start) / 1e9;

    uint64_t count = 0, failures = 0, errors[E_KINDS] = {0}, n = 0;
    const char *last_error = "";
    for (int p = 0; p < procs; p++) {
        count += sh[p].count;
        failures += sh[p].failures;
        for (int k = 0; k < E_KINDS; k++) errors[k] += sh[p].errors[k];
        if (sh[p].last_error[0]) last_error = sh[p].last_error;
    }
    uint32_t *all = malloc(sizeof(uint32_t) * (count ? count : 1));
    for (int p = 0; p < procs; p++) {
        memcpy(all + n, lat + (size_t)p * (size_t)max_samples, sizeof(uint32_t) * sh[p].nsamples);
        n += sh[p].nsamples;
    }
    qsort(all, n, sizeof(uint32_t), cmp_u32);
#define PCT(q) (n ? all[(size_t)((double)(n - 1) * (q))] / 1000.0 : 0.0)
    double sum = 0;
    for (uint64_t i = 0; i < n; i++) sum += all[i];
    printf("{\"procs\":%d,\"duration_s\":%.3f,\"count\":%llu,\"failures\":%llu,\"rate_per_s\":%.1f,"
           "\"latency_us\":{\"n\":%llu,\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
           "\"max\":%.1f},\"errors\":{",
           procs, elapsed, (unsigned long long)count, (unsigned long long)failures, (double)count / elapsed,
           (unsigned long long)n, n ? sum / (double)n / 1000.0 : 0.0, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999),
           PCT(1.0));
    for (int k = 0; k < E_KINDS; k++) printf("%s\"%s\":%llu", k ? "," : "", E_NAMES[k], (unsigned long long)errors[k]);
    printf("},\"last_error\":\"");
    for (const char *c = last_error; *c; c++) {
        if (*c == '"' || *c == '\\') putchar('\\');
        if ((unsigned char)*c >= 0x20) putchar(*c);
    }
    printf("\"}\n");
    free(all);
    return 0;
}
