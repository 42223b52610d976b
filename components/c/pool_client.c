/*
 * Minimal pool protocol v1 client in C: acquire one connection from the pool
 * manager (fd passed with SCM_RIGHTS), send a message over it, read the echo.
 * Shows the protocol needs nothing but a Unix socket, one JSON line and recvmsg
 * (the acquire itself is pool_acquire.h, shared with fd3_entrypoint.c).
 *
 * usage: pool_client SOCKET_PATH [POOL] [MESSAGE]
 * Prints one JSON line: {"ok":..., "reply":<manager reply>, "echo_ok":...}; on a failed acquire
 * {"ok":false, "error":<code>, "reply":<manager reply or null>}.
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

#include "pool_acquire.h"

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

    struct pool_acquired got;
    if (pool_acquire(path, pool, 2.0, &got) < 0) {
        printf("{\"ok\":false,\"error\":\"%s\",\"reply\":%s}\n", got.error, got.reply[0] == '{' ? got.reply : "null");
        return 1;
    }
    int fd = got.fd;
    const char *reply = got.reply;
    struct timeval tv = {.tv_sec = 2};
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
