"""The kernel TLS VM's plain parts: initramfs archive, kernel unpacking, module order, console,
figures, and the function's kernel-TLS socket reading records it does not own (the guest proves
the rest on a real kernel: tests/integration/test_ktls_vm.py)."""

from __future__ import annotations

import errno
import gzip
import lzma
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from coldstart_bench import ktls_vm, prereqs
from components import ktls_socket, ktls_vm_guest


def read_cpio(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of each newc entry, in order, up to the trailer."""
    out, i = [], 0
    while True:
        assert data[i : i + 6] == b"070701"
        fields = [int(data[i + 6 + 8 * k : i + 14 + 8 * k], 16) for k in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[i + 110 : i + 110 + namesize - 1].decode()
        i += 110 + namesize
        i += -i % 4
        body = data[i : i + size]
        i += size
        i += -i % 4
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body))


def test_cpio_lists_parents_first_and_keeps_modes_and_bytes() -> None:
    archive = ktls_vm.Cpio()
    archive.add("usr/lib/x/mod.py", b"print(1)\n")
    archive.add("init", b"#!/bin/sh\n", 0o755)
    archive.symlink("usr/bin/python3", "/usr/bin/python3.11")
    data = archive.finish()
    assert len(data) % 512 == 0
    entries = read_cpio(data)
    names = [name for name, _mode, _data in entries]
    assert names == ["usr", "usr/lib", "usr/lib/x", "usr/lib/x/mod.py", "init", "usr/bin", "usr/bin/python3"]
    by_name = {name: (mode, body) for name, mode, body in entries}
    assert stat.S_ISDIR(by_name["usr/lib"][0])
    assert by_name["usr/lib/x/mod.py"] == (stat.S_IFREG | 0o644, b"print(1)\n")
    assert by_name["init"][0] == stat.S_IFREG | 0o755
    assert stat.S_ISLNK(by_name["usr/bin/python3"][0]) and by_name["usr/bin/python3"][1] == b"/usr/bin/python3.11"


def fake_bzimage(payload: bytes) -> bytes:
    setup_sects = 3
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    head[0x248:0x24C] = (64).to_bytes(4, "little")  # payload offset inside the protected-mode part
    head[0x24C:0x250] = len(payload).to_bytes(4, "little")
    return bytes(head) + b"\x90" * 64 + payload + b"trailing"


@pytest.mark.parametrize("method", ["xz", "gzip"])
def test_bzimage_payload_is_the_decompressed_elf(method: str) -> None:
    kernel = b"\x7fELF" + bytes(range(256)) * 40
    if method == "xz":
        packed = lzma.compress(kernel, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + len(kernel).to_bytes(
            4, "little"
        )
    else:
        packed = gzip.compress(kernel)
    assert ktls_vm.bzimage_payload(fake_bzimage(packed)) == kernel


def test_bzimage_payload_refuses_what_it_cannot_boot() -> None:
    with pytest.raises(ValueError, match="not an x86 bzImage"):
        ktls_vm.bzimage_payload(b"\0" * 4096)
    with pytest.raises(ValueError, match="unsupported method"):
        ktls_vm.bzimage_payload(fake_bzimage(b"\x28\xb5\x2f\xfd" + b"\0" * 64))  # zstd
    with pytest.raises(ValueError, match="not an ELF"):
        ktls_vm.bzimage_payload(fake_bzimage(gzip.compress(b"MZ not a kernel")))


def _ko(path: Path, depends: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x7fELF junk\0license=GPL\0depends=" + depends.encode() + b"\0name=" + path.stem.encode() + b"\0"
    )


def test_module_closure_orders_dependencies_first_and_writes_modules_dep(tmp_path: Path) -> None:
    _ko(tmp_path / "kernel/net/tls/tls.ko", "")
    _ko(tmp_path / "kernel/crypto/gcm.ko", "crypto_null,gf128mul")
    _ko(tmp_path / "kernel/crypto/crypto_null.ko", "")
    _ko(tmp_path / "kernel/crypto/gf128mul.ko", "")
    _ko(tmp_path / "kernel/arch/x86/crypto/aesni-intel.ko", "crypto_simd")
    _ko(tmp_path / "kernel/crypto/crypto_simd.ko", "gf128mul")
    kos, dep = ktls_vm.module_closure(tmp_path, ["tls", "gcm", "aesni-intel"])
    order = [ko.stem for ko in kos]
    assert order == ["tls", "crypto_null", "gf128mul", "gcm", "crypto_simd", "aesni-intel"]
    lines = dep.splitlines()
    assert "kernel/net/tls/tls.ko:" in lines
    assert "kernel/crypto/gcm.ko: kernel/crypto/crypto_null.ko kernel/crypto/gf128mul.ko" in lines
    assert "kernel/arch/x86/crypto/aesni-intel.ko: kernel/crypto/crypto_simd.ko kernel/crypto/gf128mul.ko" in lines


def test_module_closure_names_a_missing_module_and_a_cycle(tmp_path: Path) -> None:
    _ko(tmp_path / "kernel/a.ko", "b")
    with pytest.raises(ktls_vm.VmFailed, match="module b is not in"):
        ktls_vm.module_closure(tmp_path, ["a"])
    _ko(tmp_path / "kernel/b.ko", "a")
    with pytest.raises(ktls_vm.VmFailed, match="cycle"):
        ktls_vm.module_closure(tmp_path, ["a"])


def test_console_result_is_found_among_kernel_noise_or_the_tail_is_shown() -> None:
    console = 'SeaBIOS\n[ 1.0] random: crng init done\n@@KTLSVM {"checks": {}, "error": null}\n[ 9.1] reboot\n'
    assert ktls_vm.parse_console(console) == {"checks": {}, "error": None}
    with pytest.raises(ktls_vm.VmFailed, match="Kernel panic"):
        ktls_vm.parse_console("booting\nKernel panic - not syncing: no init found\n")
    with pytest.raises(ktls_vm.VmFailed, match="unreadable"):
        ktls_vm.parse_console("@@KTLSVM {not json\n")


def test_prerequisites_cover_the_vm() -> None:
    names = {p.name for p in prereqs.needed("test")}
    assert {"QEMU", "static busybox", "system Python"} <= names
    assert "qemu-system-x86" in prereqs.apt_packages(prereqs.needed("ktls-vm"))


def test_kvm_is_not_tried_when_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLDSTART_KTLS_VM_KVM", "0")
    assert ktls_vm.kvm_verdict(tmp_path) == "off"


# -- figures ---------------------------------------------------------------------------------------

# Records as components.function writes them (its phases are named alike in every mode).
KTLS_REC = {
    "tls_path": "ktls",
    "spawn_ns": 1_000_000_000,
    "t_main_ns": 1_300_000_000,  # 300 ms of interpreter start
    "library_load_us": 2_000.0,
    "acquire_us": 5_000.0,
    "session_setup_us": 1_000.0,
    "first_request_us": 500.0,
    "connect_us": 6_000.0,
    "t_first_reply_ns": 1_306_500_000,
}
DIRECT_REC = {
    "tls_path": "handshake",
    "spawn_ns": 1_000_000_000,
    "t_main_ns": 1_300_000_000,
    "library_load_us": 900_000.0,
    "acquire_us": 500.0,
    "session_setup_us": 200_000.0,
    "first_request_us": 600.0,
    "connect_us": 1_100_500.0,
    "t_first_reply_ns": 2_401_100_000,
}


def test_phases_split_both_arms_the_same_way() -> None:
    ktls = ktls_vm_guest.phases(KTLS_REC)
    assert ktls == {
        "interpreter_us": 300_000.0,
        "library_load_us": 2_000.0,
        "acquire_us": 5_000.0,
        "session_setup_us": 1_000.0,
        "first_request_us": 500.0,
        "after_start_us": 6_500.0,
        "to_first_reply_us": 306_500.0,
    }
    direct = ktls_vm_guest.phases(DIRECT_REC)
    assert direct["library_load_us"] == 900_000.0 and direct["acquire_us"] == 500.0
    assert direct["session_setup_us"] == 200_000.0
    assert direct["to_first_reply_us"] == 1_401_100.0
    without_stamp = ktls_vm_guest.phases({**DIRECT_REC, "t_first_reply_ns": None})
    assert without_stamp["after_start_us"] == 1_100_500.0 + 600.0


def test_figures_table_names_kernel_emulation_and_ratio(tmp_path: Path) -> None:
    kernel = ktls_vm.Kernel("6.1.0-57-amd64", "linux-image-6.1.0-57-amd64", "6.1.192-3", tmp_path, tmp_path, {})
    arms = {
        "tls-ktls": ktls_vm_guest.phases(KTLS_REC) | {"samples": 20},
        "tls-direct": ktls_vm_guest.phases(DIRECT_REC) | {"samples": 20, "libcrypto_mapped": True},
    }
    figures = {"n": 20, "arms": arms, "ratio_to_first_reply": 4.6, "ratio_after_start": 169.4}
    result = {"kernel_release": "6.1.0-57-amd64", "figures": figures}
    table = ktls_vm.figures_table(result, kernel, "tcg")
    assert "6.1.0-57-amd64" in table and "TCG" in table and "software emulation" in table
    assert "| tls-ktls | 306,500 | 300,000 | 6,500 | 2,000 | 5,000 | 1,000 | 500 | no |" in table
    assert "| tls-direct | 1,401,100 | 300,000 | 1,101,100 |" in table and "| yes |" in table
    assert "**4.6×** from process spawn" in table and "**169.4×** from the function's `main`" in table


# -- the function's kernel TLS socket -------------------------------------------------------------


class KernelLikeSocket:
    """What a kernel-TLS socket shows user space: ``recv`` fails with EIO at a non-data record,
    which ``recvmsg`` then returns with its TLS_GET_RECORD_TYPE control message."""

    def __init__(self, records: list[tuple[int, bytes]], fail: int | None = None) -> None:
        self.records = list(records)
        self.fail = fail
        self.sent = b""

    def recv(self, n: int) -> bytes:
        if self.fail:
            raise OSError(self.fail, "failure")
        kind, data = self.records[0]
        if kind != ktls_socket.APPLICATION_DATA:
            raise OSError(errno.EIO, "Input/output error")
        self.records.pop(0)
        return data[:n]

    def recvmsg(self, n: int, ancsize: int) -> tuple[bytes, list[tuple[int, int, bytes]], int, Any]:
        assert ancsize >= socket.CMSG_SPACE(1)
        kind, data = self.records.pop(0)
        return data, [(ktls_socket.SOL_TLS, ktls_socket.TLS_GET_RECORD_TYPE, bytes([kind]))], 0, None

    def sendall(self, data: bytes) -> None:
        if self.fail:
            raise OSError(self.fail, "failure")
        self.sent += data


def _wrap(fake: KernelLikeSocket) -> ktls_socket.KernelTlsSocket:
    return ktls_socket.KernelTlsSocket(fake)  # type: ignore[arg-type]


def test_tickets_are_skipped_and_counted_then_data_is_read() -> None:
    ticket = bytes([ktls_socket.NEW_SESSION_TICKET, 0, 0, 2, 0xAA, 0xBB])
    sock = _wrap(KernelLikeSocket([(22, ticket + ticket), (23, b"echo")]))
    assert sock.recv(100) == b"echo"
    assert sock.tickets_skipped == 2


@pytest.mark.parametrize(
    ("record", "error", "words"),
    [
        ((21, b"\x01\x00"), ktls_socket.KernelTlsClosed, "close_notify"),
        ((21, b"\x02\x28"), ktls_socket.KernelTlsAlert, "fatal TLS alert handshake_failure (40)"),
        ((22, b"\x18\x00\x00\x01\x01"), ktls_socket.KernelTlsRekey, "KeyUpdate"),
        ((22, b"\x0d\x00\x00\x00"), ktls_socket.KernelTlsError, "post-handshake message type 13"),
        ((20, b"\x01"), ktls_socket.KernelTlsError, "unexpected TLS record (type 20"),
    ],
)
def test_records_the_function_cannot_continue_past_are_named(
    record: tuple[int, bytes], error: type[Exception], words: str
) -> None:
    sock = _wrap(KernelLikeSocket([record, (23, b"never read")]))
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        sock.recv(100)


def test_authentication_failure_is_reported_not_returned() -> None:
    with pytest.raises(ktls_socket.KernelTlsError, match="failed authentication"):
        _wrap(KernelLikeSocket([], fail=errno.EBADMSG)).recv(10)
    with pytest.raises(ktls_socket.KernelTlsError, match="failed authentication"):
        _wrap(KernelLikeSocket([], fail=errno.EBADMSG)).sendall(b"x")
    with pytest.raises(ConnectionResetError):
        _wrap(KernelLikeSocket([], fail=errno.ECONNRESET)).recv(10)


def test_function_side_module_loads_no_crypto() -> None:
    source = Path(ktls_socket.__file__).read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "errno", "os", "socket", "typing"}
