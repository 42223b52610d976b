"""components/prefetch.py: which mappings it pages in, and that it never fails the function."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from components import prefetch

MAPS = """\
00400000-00420000 r--p 00000000 00:2a 123 /usr/bin/python3.11
00420000-006c0000 r-xp 00020000 00:2a 123 /usr/bin/python3.11
006c0000-00800000 r--p 002c0000 00:2a 123 /usr/bin/python3.11
7f0000000000-7f0000100000 r-xp 00028000 00:2a 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 r-xp 00000000 00:00 0
7f0000300000-7f0000301000 r-xp 00000000 00:2a 789 /tmp/gone.so (deleted)
7f0000400000-7f0000401000 r-xp 00000000 00:05 1 /dev/zero
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
7ffd00010000-7ffd00030000 rw-p 00000000 00:00 0 [stack]
"""


def test_only_executable_file_mappings_are_chosen() -> None:
    assert prefetch.executable_segments(MAPS) == {
        "/usr/bin/python3.11": [(0x20000, 0x2A0000)],
        "/usr/lib/x86_64-linux-gnu/libc.so.6": [(0x28000, 0x100000)],
    }


def test_prefetch_covers_real_files_and_skips_missing_ones(tmp_path: Path) -> None:
    exe = os.path.realpath(sys.executable)
    size = os.path.getsize(exe)
    maps = tmp_path / "maps"
    maps.write_text(
        f"00400000-00401000 r-xp 00000000 00:2a 1 {exe}\n"
        f"00500000-00501000 r-xp 00000000 00:2a 2 {tmp_path / 'missing.so'}\n"
        # a segment reaching past the end of the file is clipped, not an error
        f"00600000-{0x600000 + size + 0x10000:08x} r-xp 00000000 00:2a 1 {exe}\n"
    )
    files, covered = prefetch.prefetch(str(maps))
    assert files == 1
    assert 4096 < covered <= 4096 + size


def test_prefetch_of_this_process_and_of_unreadable_maps_never_raises(tmp_path: Path) -> None:
    files, covered = prefetch.prefetch()
    assert files >= 1 and covered > 0
    assert prefetch.prefetch(str(tmp_path / "no-maps")) == (0, 0)


def test_prefetch_modules_reads_the_compiled_files(tmp_path: Path) -> None:
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / f"a.{sys.implementation.cache_tag}.pyc").write_bytes(b"x" * 70_000)
    (cache / f"b.{sys.implementation.cache_tag}.pyc").write_bytes(b"y" * 10)
    assert prefetch.prefetch_modules(("a", "b", "missing"), str(tmp_path)) == 70_010
    assert prefetch.prefetch_modules((), str(tmp_path)) == 0
