/*
 * Page in the process's own executable files before anything is timed: the C twin of
 * components/prefetch.py (read it for why). On fuse-overlayfs every container starts with an
 * empty page cache for each image file, so code first touched inside a timed phase costs a FUSE
 * round trip per page; every function of the project pays that before its clocks, or none does.
 *
 * prefetch_self() maps every regular file with an executable mapping in /proc/self/maps and
 * madvise(MADV_POPULATE_READ)s those segments (MADV_WILLNEED where the kernel lacks it). It never
 * fails: what cannot be opened or mapped is skipped. Returns the bytes covered.
 */
#ifndef COLDSTART_PREFETCH_H
#define COLDSTART_PREFETCH_H

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

static inline long long prefetch_self(void) {
    FILE *maps = fopen("/proc/self/maps", "re");
    if (!maps) return 0;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    int advice = MADV_POPULATE_READ;
    long long covered = 0;
    char line[4352];
    while (fgets(line, sizeof(line), maps)) {
        unsigned long start = 0, end = 0, offset = 0;
        char perms[8] = "", path[4096] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095[^\n]", &start, &end, perms, &offset, path) < 5) continue;
        if (!strchr(perms, 'x') || path[0] != '/' || strncmp(path, "/dev/", 5) == 0) continue;
        if (strstr(path, " (deleted)")) continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
            close(fd);
            continue;
        }
        unsigned long from = offset - offset % (unsigned long)page;
        unsigned long length = end - start + (offset - from);
        if (from >= (unsigned long)st.st_size) {
            close(fd);
            continue;
        }
        if (length > (unsigned long)st.st_size - from) length = (unsigned long)st.st_size - from;
        void *view = mmap(NULL, length, PROT_READ, MAP_PRIVATE, fd, (off_t)from);
        close(fd);
        if (view == MAP_FAILED) continue;
        if (madvise(view, length, advice) != 0 && advice == MADV_POPULATE_READ) {
            advice = MADV_WILLNEED; /* kernel < 5.14: asynchronous read-ahead instead */
            madvise(view, length, advice);
        }
        covered += (long long)length;
        munmap(view, length);
    }
    fclose(maps);
    return covered;
}

#endif
