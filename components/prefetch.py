"""Page in the process's own executable files before anything is timed.

On a host whose image storage gives every container its own page cache (fuse-overlayfs: each
container is a separate FUSE mount, so its inodes start with empty caches), the first call of
any interpreter code that start-up did not touch takes a major page fault served by the FUSE
daemon — 50-100+ µs each on this VM. The connect path touches half a dozen such pages (socket
calls, poll, recvmsg, the JSON scanner), so without this a cold function's connect_us is mostly
page-ins, not the connection. Hosts with overlay2 share the page cache between containers and
never pay this; that is where the thesis' figures come from.

The function calls this once at start, for every mode alike, before any clock for a connection
starts; its cost is reported (``prefetch_us``) and stays inside the lifecycle. It populates the
executable segments of every regular file the process has mapped (interpreter, libc, libm,
loaded extension modules) with MADV_POPULATE_READ (Linux >= 5.14), falling back to
MADV_WILLNEED where that is not known. Nothing is chosen by mode: the list comes from
/proc/self/maps.

Python code a function imports later is read(), not mapped: ``prefetch_modules`` reads the
compiled files of the project's own modules the caller names (every module any of its modes may
import on the way to a connection, the same list whatever the mode), so a cold container's first
read of them is not a FUSE round trip inside a timed phase either.
"""

from __future__ import annotations

import os

# Not exported by Python 3.11's mmap module; the value is fixed by the Linux ABI.
MADV_POPULATE_READ = 22
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def executable_segments(maps_text: str) -> dict[str, list[tuple[int, int]]]:
    """File path -> (file offset, length) of each executable mapping, from /proc/<pid>/maps text."""
    segments: dict[str, list[tuple[int, int]]] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1]:
            continue
        path = parts[5].strip()
        if not path.startswith("/") or path.endswith(" (deleted)") or path.startswith(("/dev/", "/memfd:")):
            continue
        start, _, end = parts[0].partition("-")
        length = int(end, 16) - int(start, 16)
        segments.setdefault(path, []).append((int(parts[2], 16), length))
    return segments


def prefetch(maps_path: str = "/proc/self/maps") -> tuple[int, int]:
    """Populate the page cache for the executable mappings; returns (files, bytes) covered.

    Never raises: a file that cannot be opened or mapped is skipped, since this only saves time.
    """
    try:
        import mmap

        with open(maps_path, encoding="ascii", errors="replace") as fh:
            segments = executable_segments(fh.read())
    except (OSError, ImportError):
        return 0, 0
    advice = MADV_POPULATE_READ
    files = covered = 0
    for path, ranges in segments.items():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                continue
            view = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
        try:
            for offset, length in ranges:
                start = offset - offset % _PAGE
                length = min(length + offset - start, size - start)
                if length <= 0:
                    continue
                try:
                    view.madvise(advice, start, length)
                except OSError:
                    # Kernel without MADV_POPULATE_READ: ask for asynchronous read-ahead instead.
                    advice = mmap.MADV_WILLNEED
                    view.madvise(advice, start, length)
                covered += length
            files += 1
        except OSError:
            pass
        finally:
            view.close()
    return files, covered


def prefetch_modules(names: tuple[str, ...], package_dir: str) -> int:
    """Read the compiled files (``__pycache__/<name>.<tag>.pyc``) of the modules ``names`` (bare
    names in ``package_dir``) into the page cache; returns the bytes read. Never raises."""
    import contextlib
    import sys

    tag = sys.implementation.cache_tag
    covered = 0
    for name in names:
        # The import stats the source (to validate the .pyc) and reads the .pyc: warm both.
        with contextlib.suppress(OSError):
            os.stat(os.path.join(package_dir, f"{name}.py"))
        path = os.path.join(package_dir, "__pycache__", f"{name}.{tag}.pyc")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            while chunk := os.read(fd, 1 << 16):
                covered += len(chunk)
        except OSError:
            pass
        finally:
            os.close(fd)
    return covered
