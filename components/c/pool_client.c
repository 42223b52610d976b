/*
 * Minimal pool protocol v1 client in C: acquire one connection from the pool
 * manager (fd passed with SCM_RIGHTS), send a message over it, read the echo.
 * Shows the protocol needs nothing but a Unix socket, one JSON line and recvmsg.
 *
 * usage: pool_client SOCKET_PATH [POOL] [MESSAGE]
 * Prints one JSON line: {"ok":..., "reply":<manager reply>, "echo_ok":...}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(const char *what) {
    printf("{\"ok\":false,\"error\":\"%s: %s\"}\n", what, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH [POOL] [MESSAGE]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    const char *pool = argc > 2 ? argv[2] : "echo";
    const char *msg = argc > 3 ? argv[3] : "hello from C";

    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path)) { errno = ENAMETOOLONG; return fail("socket path"); }
    strcpy(addr.sun_path, path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return fail("socket");
    struct timeval tv = {.tv_sec = 2};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) return fail("connect");

    char req[512];
    int n = snprintf(req, sizeof(req), "{\"v\":1,\"op\":\"acquire\",\"pool\":\"%s\"}\n", pool);
    if (n <= 0 || n >= (int)sizeof(req)) { errno = EINVAL; return fail("pool name"); }
    if (send(s, req, (size_t)n, MSG_NOSIGNAL) != n) return fail("send");

    /* The fd rides on the first byte of the reply line; keep reading until the newline. */
    char reply[4096];
    size_t got = 0;
    int fd = -1;
    while (got < sizeof(reply) - 1) {
        char cbuf[CMSG_SPACE(4 * sizeof(int))];
        struct iovec iov = {.iov_base = reply + got, .iov_len = sizeof(reply) - 1 - got};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t r = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
        if (r < 0) return fail("recvmsg");
        if (r == 0) break;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < nfds; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                if (fd < 0) fd = f;
                else close(f); /* never keep more than the one we asked for */
            }
        }
        got += (size_t)r;
        if (memchr(reply, '\n', got)) break;
    }
    reply[got] = 0;
    close(s);
    char *nl = strchr(reply, '\n');
    if (nl) *nl = 0;
    if (strncmp(reply, "{\"ok\":true", 10) != 0 || fd < 0) {
        printf("{\"ok\":false,\"reply\":%s,\"fd\":%d}\n", got ? reply : "null", fd);
        if (fd >= 0) close(fd);
        return 1;
    }

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    size_t len = strlen(msg);
    if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len) return fail("send on pooled connection");
    char echo[4096];
    size_t eg = 0;
    while (eg < len && eg < sizeof(echo)) {
        ssize_t r = recv(fd, echo + eg, len - eg, 0);
        if (r <= 0) return fail("recv echo");
        eg += (size_t)r;
    }
    int echo_ok = eg == len && memcmp(echo, msg, len) == 0;
    close(fd);
    printf("{\"ok\":%s,\"reply\":%s,\"echo_ok\":%s,\"echo_bytes\":%zu}\n", echo_ok ? "true" : "false", reply,
           echo_ok ? "true" : "false", eg);
    return echo_ok ? 0 : 1;
}
