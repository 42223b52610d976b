/*
 * Pool protocol v1 acquire in C, shared by pool_client.c and fd3_entrypoint.c.
 *
 * pool_acquire() connects to the manager's Unix socket, sends one acquire line and reads the
 * reply line; the connection's fd rides on the reply (SCM_RIGHTS). Any fd beyond the first is
 * closed, so a misbehaving peer cannot make the caller leak descriptors. Error codes follow
 * components/protocol.py: "manager_unavailable" (no socket, refused, closed early), "timeout",
 * the manager's own code (forbidden, unknown_pool, pool_exhausted, ...), "internal" for a
 * malformed reply, plus "no_fd" for an ok reply without a descriptor.
 */
#ifndef COLDSTART_POOL_ACQUIRE_H
#define COLDSTART_POOL_ACQUIRE_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define POOL_REPLY_MAX 4096

struct pool_acquired {
    int fd;                      /* the connection, close-on-exec; -1 on failure */
    char reply[POOL_REPLY_MAX];  /* the reply line without its newline ("" if none) */
    char error[64];              /* error code on failure, "" on success */
    char detail[256];            /* human-readable detail on failure */
};

static inline int pool_fail_(struct pool_acquired *out, const char *code, const char *fmt, const char *arg) {
    snprintf(out->error, sizeof(out->error), "%s", code);
    snprintf(out->detail, sizeof(out->detail), fmt, arg);
    if (out->fd >= 0) close(out->fd);
    out->fd = -1;
    return -1;
}

/* Copy the string value of "key" from a flat JSON object line into dst; 0 if found. Good
 * enough for the manager's replies (codes and ids without escapes); escapes end the copy. */
static inline int pool_json_string(const char *line, const char *key, char *dst, size_t cap) {
    char pat[80];
    snprintf(pat, sizeof(pat), "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (!p || cap == 0) return -1;
    p += strlen(pat);
    size_t n = 0;
    while (*p && *p != '"' && *p != '\\' && n + 1 < cap) dst[n++] = *p++;
    dst[n] = 0;
    return 0;
}

static inline int pool_acquire(const char *path, const char *pool, double timeout_s, struct pool_acquired *out) {
    out->fd = -1;
    out->reply[0] = out->error[0] = out->detail[0] = 0;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path)) return pool_fail_(out, "manager_unavailable", "socket path too long: %s", path);
    for (const char *c = pool; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) return pool_fail_(out, "bad_request", "bad pool name %s", pool);
    strcpy(addr.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return pool_fail_(out, "internal", "socket: %s", strerror(errno));
    struct timeval tv = {.tv_sec = (time_t)timeout_s, .tv_usec = (suseconds_t)((timeout_s - (double)(time_t)timeout_s) * 1e6)};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int e = errno;
        close(s);
        return pool_fail_(out, e == EAGAIN || e == EINPROGRESS ? "timeout" : "manager_unavailable", "connect: %s", strerror(e));
    }
    char req[1200];
    int n = snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"acquire\",\"pool\":\"%s\"}\n", pool);
    if (n <= 0 || n >= (int)sizeof(req)) {
        close(s);
        return pool_fail_(out, "bad_request", "pool name too long: %s", pool);
    }
    if (send(s, req, (size_t)n, MSG_NOSIGNAL) != n) {
        int e = errno;
        close(s);
        return pool_fail_(out, "manager_unavailable", "send: %s", strerror(e));
    }
    /* The fd rides on the first byte of the reply line; keep reading until the newline. */
    size_t got = 0;
    int have_line = 0;
    while (got < sizeof(out->reply) - 1) {
        char cbuf[CMSG_SPACE(8 * sizeof(int))];
        struct iovec iov = {.iov_base = out->reply + got, .iov_len = sizeof(out->reply) - 1 - got};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t r = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
        if (r < 0) {
            int e = errno;
            close(s);
            out->reply[got] = 0;
            return pool_fail_(out, e == EAGAIN || e == EWOULDBLOCK ? "timeout" : "manager_unavailable", "recvmsg: %s",
                              strerror(e));
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < nfds; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                if (out->fd < 0) out->fd = f;
                else close(f); /* never keep more than the one we asked for */
            }
        }
        if (r == 0) break;
        got += (size_t)r;
        if (memchr(out->reply, '\n', got)) {
            have_line = 1;
            break;
        }
    }
    close(s);
    out->reply[got] = 0;
    char *nl = strchr(out->reply, '\n');
    if (nl) *nl = 0;
    if (!have_line) {
        if (got == 0) return pool_fail_(out, "manager_unavailable", "%s", "manager closed before a reply");
        return pool_fail_(out, "internal", "%s", "malformed reply: no complete line");
    }
    if (out->reply[0] != '{') return pool_fail_(out, "internal", "%s", "malformed reply: not a JSON object");
    if (strncmp(out->reply, "{\"ok\":true", 10) != 0) {
        char code[64] = "internal", detail[200] = "";
        pool_json_string(out->reply, "error", code, sizeof(code));
        pool_json_string(out->reply, "detail", detail, sizeof(detail));
        return pool_fail_(out, code, "%s", detail);
    }
    if (out->fd < 0) return pool_fail_(out, "no_fd", "%s", "acquire reply carried no file descriptor");
    return 0;
}

#endif
