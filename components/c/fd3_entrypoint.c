/*
 * fd-3 entrypoint: acquire a pooled connection before the function's runtime starts, then
 * exec the function with the connection at fd 3, the way systemd socket activation hands
 * over sockets (LISTEN_FDS=1, LISTEN_PID=<pid>, LISTEN_FDNAMES=<pool>). Any runtime that can
 * adopt an inherited fd (Node's net.Socket({fd: 3}), Python's socket(fileno=3), a C program)
 * gets injection without a pool protocol client of its own.
 *
 * usage: fd3_entrypoint [--socket PATH] [--pool NAME] [--timeout S] [--no-report] [--no-acquire]
 *                       -- PROGRAM [ARG...]
 *
 * --no-acquire only stamps and execs (no LISTEN_* variables, no COLDSTART_FD3_ACQUIRE_US):
 * the functions of the other arms run through it too, so every arm has the same exec chain and
 * the same clock origin (its first instruction), whatever way it connects.
 * First of all, the entrypoint pages in its own code (components/c/prefetch.h), so the acquire
 * it times pays no first-touch page faults, like every function of the project.
 *
 * Environment given to PROGRAM:
 *   on success  LISTEN_FDS=1  LISTEN_PID=<pid>  LISTEN_FDNAMES=<pool>
 *               COLDSTART_FD3_REPLY=<the manager's reply line (JSON: id, peer, ...)>
 *   on failure  LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES unset (also when inherited), fd 3 not
 *               touched, and COLDSTART_FD3_FALLBACK="<code>: <detail>" so the function connects
 *               by itself and reports the fallback. Codes: manager_unavailable, timeout, the
 *               manager's own (forbidden, unknown_pool, pool_exhausted, ...), internal (bad
 *               reply), no_fd (ok reply without a descriptor), bad_fd (not a connected,
 *               blocking TCP socket).
 *   always      COLDSTART_FD3_ACQUIRE_US  microseconds the acquire took (resolve nothing: the
 *                                         manager's socket, the request, the reply with its fd)
 *               COLDSTART_FD3_VERIFY_US   microseconds the fd check and the move to fd 3 took
 *               COLDSTART_FD3_T_START_NS  CLOCK_REALTIME ns when the entrypoint's main began (the
 *                                         process entry of every arm: the clock origin)
 *               COLDSTART_FD3_T_EXEC_NS   CLOCK_REALTIME ns just before exec (runtime start-up
 *                                         to the function's main = its t_main_ns minus this)
 * When the manager answered but could not serve (not for manager_unavailable/timeout), the
 * entrypoint tells it with a "report" op (event fallback) so its stats count the fallback,
 * as components/function.py does; --no-report skips that.
 * Exit status: PROGRAM's (exec), 2 on bad usage, 127 if PROGRAM cannot be executed.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <time.h>

#include "pool_acquire.h"
#include "prefetch.h"

#define TARGET_FD 3

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

static void setenv_ll(const char *name, long long value) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%lld", value);
    setenv(name, buf, 1);
}

/* A connected, blocking TCP stream socket, as protocol v1 promises; else why not. */
static const char *check_fd(int fd) {
    int type = 0, domain = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) return "not a socket";
    len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) return "socket domain unknown";
    if (type != SOCK_STREAM || (domain != AF_INET && domain != AF_INET6)) return "not a TCP stream socket";
    struct sockaddr_storage peer;
    len = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) return "socket not connected";
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & O_NONBLOCK)) return "socket is non-blocking";
    return NULL;
}

/* Best effort, short timeout: the caller is about to connect by itself anyway. */
static void report_fallback(const char *path, const char *pool, const char *code) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path)) return;
    strcpy(addr.sun_path, path);
    char safe[64];
    size_t n = 0;
    for (const char *c = code; *c && n + 1 < sizeof(safe); c++)
        if ((*c >= 'a' && *c <= 'z') || *c == '_') safe[n++] = *c;
    safe[n] = 0;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    struct timeval tv = {.tv_usec = 200000};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char line[1400];
    int len = snprintf(line, sizeof(line), "{\"v\":1,\"op\":\"report\",\"pool\":\"%s\",\"event\":\"fallback\",\"reason\":\"%s\"}\n",
                       pool, safe);
    if (len > 0 && len < (int)sizeof(line) && connect(s, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        send(s, line, (size_t)len, MSG_NOSIGNAL) == len) {
        char reply[512];
        (void)!recv(s, reply, sizeof(reply), 0); /* wait for the answer so the report is not cut off */
    }
    close(s);
}

static int usage(const char *argv0) {
    fprintf(stderr, "usage: %s [--socket PATH] [--pool NAME] [--timeout S] [--no-report] [--no-acquire] -- PROGRAM [ARG...]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    long long t_start_ns = realtime_ns();
    prefetch_self();
    const char *path = "/run/cpm/pool.sock";
    const char *pool = "echo";
    double timeout_s = 2.0;
    int report = 1, acquire = 1;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(argv[0]);
            return 0;
        }
        if (strcmp(a, "--no-report") == 0) {
            report = 0;
            continue;
        }
        if (strcmp(a, "--no-acquire") == 0) {
            acquire = 0;
            continue;
        }
        if (strcmp(a, "--socket") == 0 || strcmp(a, "--pool") == 0 || strcmp(a, "--timeout") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a value\n", argv[0], a);
                return usage(argv[0]);
            }
            const char *v = argv[++i];
            if (a[2] == 's') path = v;
            else if (a[2] == 'p') pool = v;
            else {
                char *end = NULL;
                timeout_s = strtod(v, &end);
                if (!end || *end || !(timeout_s > 0 && timeout_s <= 3600)) {
                    fprintf(stderr, "%s: --timeout must be seconds in (0, 3600], got %s\n", argv[0], v);
                    return 2;
                }
            }
            continue;
        }
        if (a[0] == '-') {
            fprintf(stderr, "%s: unknown option %s\n", argv[0], a);
            return usage(argv[0]);
        }
        break; /* first non-option: the program */
    }
    if (i >= argc) {
        fprintf(stderr, "%s: no program to run\n", argv[0]);
        return usage(argv[0]);
    }
    char **program = argv + i;
    setenv_ll("COLDSTART_FD3_T_START_NS", t_start_ns);
    if (!acquire) {
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        unsetenv("COLDSTART_FD3_REPLY");
        unsetenv("COLDSTART_FD3_FALLBACK");
        unsetenv("COLDSTART_FD3_ACQUIRE_US");
        unsetenv("COLDSTART_FD3_VERIFY_US");
        setenv_ll("COLDSTART_FD3_T_EXEC_NS", realtime_ns());
        execvp(program[0], program);
        fprintf(stderr, "%s: cannot execute %s: %s\n", argv[0], program[0], strerror(errno));
        return 127;
    }

    long long t0 = monotonic_ns();
    struct pool_acquired got;
    int rc = pool_acquire(path, pool, timeout_s, &got);
    long long t_acquired = monotonic_ns();
    const char *bad = NULL;
    if (rc == 0 && (bad = check_fd(got.fd)) != NULL) {
        close(got.fd);
        got.fd = -1;
        snprintf(got.error, sizeof(got.error), "bad_fd");
        snprintf(got.detail, sizeof(got.detail), "%s", bad);
        rc = -1;
    }
    if (rc == 0 && got.fd != TARGET_FD) {
        /* dup2 clears close-on-exec on the copy; the original (close-on-exec) goes away. */
        if (dup2(got.fd, TARGET_FD) < 0) {
            snprintf(got.error, sizeof(got.error), "internal");
            snprintf(got.detail, sizeof(got.detail), "dup2: %s", strerror(errno));
            rc = -1;
        }
        close(got.fd);
    } else if (rc == 0) {
        fcntl(TARGET_FD, F_SETFD, 0);
    }
    long long acquire_ns = t_acquired - t0, verify_ns = monotonic_ns() - t_acquired;

    char buf[64];
    snprintf(buf, sizeof(buf), "%.1f", (double)acquire_ns / 1e3);
    setenv("COLDSTART_FD3_ACQUIRE_US", buf, 1);
    snprintf(buf, sizeof(buf), "%.1f", (double)verify_ns / 1e3);
    setenv("COLDSTART_FD3_VERIFY_US", buf, 1);
    if (rc == 0) {
        setenv("LISTEN_FDS", "1", 1);
        setenv_ll("LISTEN_PID", (long long)getpid());
        setenv("LISTEN_FDNAMES", pool, 1);
        setenv("COLDSTART_FD3_REPLY", got.reply, 1);
        unsetenv("COLDSTART_FD3_FALLBACK");
    } else {
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        unsetenv("COLDSTART_FD3_REPLY");
        char reason[sizeof(got.error) + sizeof(got.detail) + 4];
        snprintf(reason, sizeof(reason), "%s: %s", got.error, got.detail);
        setenv("COLDSTART_FD3_FALLBACK", reason, 1);
        if (report && strcmp(got.error, "manager_unavailable") != 0 && strcmp(got.error, "timeout") != 0)
            report_fallback(path, pool, got.error);
    }
    setenv_ll("COLDSTART_FD3_T_EXEC_NS", realtime_ns());
    execvp(program[0], program);
    fprintf(stderr, "%s: cannot execute %s: %s\n", argv[0], program[0], strerror(errno));
    return 127;
}
