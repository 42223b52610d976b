"""Kernel TLS in a virtual machine: Debian's kernel booted under QEMU with a RAM-only root.

This host's kernel has no ``tls`` upper-layer protocol, so the kernel-TLS hand-out of the ``tls``
pool is proven (and measured) in a guest running Debian's stock kernel:

* **kernel**: the package ``linux-image-amd64`` depends on, fetched with ``apt-get download``
  and unpacked (``dpkg-deb --fsys-tarfile``) into the cache, never installed on the host. The
  bzImage's XZ payload is decompressed here into an ELF ``vmlinux`` that QEMU boots through its
  PVH entry (no in-guest decompression, which costs seconds under software emulation); the
  modules ``tls`` and the AEAD ciphers need come from the same package, with a ``modules.dep``
  written from their ``.modinfo``.
* **root**: one initramfs (``newc`` cpio, unpacked into RAM by the kernel, so no block device,
  file system module or root image): static busybox, the host's Debian ``python3`` with its
  standard library (compiled ``.pyc`` included) and the shared libraries ``ldd`` names. It is
  cached under a key hashing everything it contains. Each boot appends a small second archive:
  the project's ``components`` package, the run's throw-away certificates, the plan and ``/init``.
* **machine**: ``qemu-system-x86_64`` with TCG software emulation (``-cpu max``: AES-NI,
  PCLMULQDQ, RDRAND); KVM when ``/dev/kvm`` runs a stock kernel (probed once, result cached) and
  ``COLDSTART_KTLS_VM_KVM`` is not ``0``. The guest (``components.ktls_vm_guest``) prints one JSON
  line on the serial console; nothing else crosses back.

``python -m coldstart_bench.ktls_vm`` runs the checks (``--figures N`` adds N cold starts of each
TLS arm and prints the table).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KERNEL_META_PACKAGE = "linux-image-amd64"
RESULT_MARK = "@@KTLSVM "
BUILDER_VERSION = "1"  # bump when the base image's layout changes
GUEST_ROOT = "/opt/coldstart"
# Modules the guest loads, with their dependencies (from .modinfo) loaded first.
GUEST_MODULES = (
    "tls",
    "gcm",
    "ghash-generic",
    "ghash-clmulni-intel",
    "aesni-intel",
    "chacha20poly1305",
    "chacha-x86_64",
    "poly1305-x86_64",
)
MODULE_DIRS = ("kernel/net/tls/", "kernel/crypto/", "kernel/arch/x86/crypto/", "kernel/lib/crypto/")
# Parts of the standard library no guest program imports.
STDLIB_SKIP = {
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "distutils",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "venv",
    "unittest",
    "sqlite3",
    "curses",
    "dbm",
    "xmlrpc",
    "wsgiref",
}
# Extension modules whose libraries (Berkeley DB, SQLite, readline, ncurses, Kerberos, Tk) no guest program needs.
DYNLOAD_SKIP = ("_dbm", "_gdbm", "_sqlite3", "readline", "_curses", "_tkinter", "nis", "_crypt", "_uuid", "xxlimited")


class VmUnavailable(RuntimeError):
    """The VM cannot run on this machine; the message says which part is missing."""


class VmFailed(RuntimeError):
    """The VM ran but did not produce a result; the message carries the console's tail."""


def cache_root() -> Path:
    configured = os.environ.get("COLDSTART_KTLS_VM_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coldstart-bench" / "ktls-vm"


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)


@contextlib.contextmanager
def _atomic_dir(final: Path) -> Iterator[Path]:
    """A scratch directory renamed to ``final`` when the block succeeds (concurrent builders:
    the first one wins, the others' copies are dropped)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        yield scratch
        try:
            scratch.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


# -- kernel ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    release: str  # e.g. 6.1.0-57-amd64
    package: str
    version: str
    image: Path  # vmlinux (ELF, PVH entry) or the bzImage
    modules: Path  # .../lib/modules/<release>
    config: dict[str, str]

    @property
    def label(self) -> str:
        return f"Debian {self.package} {self.version}"


def kernel_package(meta: str = KERNEL_META_PACKAGE) -> tuple[str, str, str]:
    """(package, version, sha256) of the kernel image package ``meta`` depends on, from apt's index."""
    if shutil.which("apt-cache") is None or shutil.which("apt-get") is None:
        raise VmUnavailable("apt is not available to fetch Debian's kernel package")
    shown = _run(["apt-cache", "show", "--no-all-versions", meta])
    if shown.returncode != 0 and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"])  # no package lists yet (a fresh machine)
        shown = _run(["apt-cache", "show", "--no-all-versions", meta])
    depends = re.search(r"^Depends:.*?\b(linux-image-[0-9][^\s,]*)", shown.stdout, re.M)
    if shown.returncode != 0 or depends is None:
        raise VmUnavailable(f"apt knows no {meta} package (run apt-get update): {shown.stderr.strip()[:200]}")
    package = depends.group(1)
    shown = _run(["apt-cache", "show", "--no-all-versions", package])
    version = re.search(r"^Version: (\S+)", shown.stdout, re.M)
    sha = re.search(r"^SHA256: ([0-9a-f]{64})", shown.stdout, re.M)
    if shown.returncode != 0 or version is None or sha is None:
        raise VmUnavailable(f"apt has no downloadable {package}: {shown.stderr.strip()[:200]}")
    return package, version.group(1), sha.group(1)


def bzimage_payload(data: bytes) -> bytes:
    """The decompressed kernel (ELF vmlinux) inside an x86 bzImage. Raises ValueError."""
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        raise ValueError("not an x86 bzImage")
    setup_sects = data[0x1F1] or 4
    offset = int.from_bytes(data[0x248:0x24C], "little")
    length = int.from_bytes(data[0x24C:0x250], "little")
    start = (setup_sects + 1) * 512 + offset
    payload = data[start : start + length]
    if payload.startswith(b"\xfd7zXZ\x00"):
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    elif payload.startswith(b"\x1f\x8b"):
        out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
    else:
        raise ValueError(f"bzImage payload compressed with an unsupported method ({payload[:4].hex()})")
    if not out.startswith(b"\x7fELF"):
        raise ValueError("bzImage payload is not an ELF image")
    return out


def fetch_kernel(cache: Path) -> Kernel:
    """Debian's kernel and the modules the guest needs, unpacked under ``cache`` (once per package)."""
    package, version, sha = kernel_package()
    where = cache / f"kernel-{sha[:16]}"
    if not (where / "done").is_file():
        with _atomic_dir(where) as scratch:
            got = _run(["apt-get", "download", f"{package}={version}"], cwd=scratch)
            debs = list(scratch.glob("*.deb"))
            if got.returncode != 0 or len(debs) != 1:
                raise VmUnavailable(f"apt-get download {package} failed: {got.stderr.strip()[-300:]}")
            digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
            if digest != sha:
                raise VmFailed(f"{debs[0].name}: sha256 {digest} does not match apt's index ({sha})")
            wanted = ["./boot/vmlinuz-*", "./boot/config-*"] + [f"./lib/modules/*/{d}*" for d in MODULE_DIRS]
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE)
            unpacked = _run(["tar", "-x", "-C", str(scratch), "--wildcards", *wanted], stdin=tar.stdout)
            if tar.stdout is not None:
                tar.stdout.close()
            if tar.wait() != 0 or unpacked.returncode != 0:
                raise VmFailed(f"unpacking {debs[0].name} failed: {unpacked.stderr.strip()[-300:]}")
            debs[0].unlink()
            bzimage = next((scratch / "boot").glob("vmlinuz-*"))
            with contextlib.suppress(ValueError):
                (scratch / "vmlinux").write_bytes(bzimage_payload(bzimage.read_bytes()))
            (scratch / "done").write_text(json.dumps({"package": package, "version": version, "sha256": sha}))
    release = next((where / "boot").glob("vmlinuz-*")).name.removeprefix("vmlinuz-")
    config: dict[str, str] = {}
    for line in (where / "boot" / f"config-{release}").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            config[key] = value
    image = where / "vmlinux"
    if not image.is_file() or config.get("CONFIG_PVH") != "y":
        image = where / "boot" / f"vmlinuz-{release}"  # QEMU boots the bzImage itself
    return Kernel(release, package, version, image, where / "lib" / "modules" / release, config)


def module_info(path: Path) -> dict[str, list[str]]:
    """The ``key=value`` strings of a module's .modinfo section (read as NUL-separated text)."""
    out: dict[str, list[str]] = {}
    for chunk in path.read_bytes().split(b"\0"):
        for key in (b"depends=", b"alias=", b"name="):
            if chunk.startswith(key):
                out.setdefault(key[:-1].decode(), []).append(chunk[len(key) :].decode(errors="replace"))
    return out


def module_closure(modules_dir: Path, names: Iterable[str]) -> tuple[list[Path], str]:
    """(the .ko files of ``names`` and their dependencies, dependencies first; modules.dep text)."""
    by_name: dict[str, Path] = {}
    for ko in modules_dir.rglob("*.ko"):
        by_name[ko.stem.replace("-", "_")] = ko
    deps: dict[str, list[str]] = {}
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        key = name.replace("-", "_")
        if key in trail:
            raise VmFailed(f"module dependency cycle through {key}")
        if key in deps:
            return
        if key not in by_name:
            raise VmFailed(f"module {name} is not in {modules_dir}")
        info = module_info(by_name[key])
        deps[key] = [d.replace("-", "_") for d in ",".join(info.get("depends", [])).split(",") if d]
        for dep in deps[key]:
            visit(dep, (*trail, key))
        order.append(key)

    for name in names:
        visit(name, ())

    def closure(key: str) -> list[str]:
        seen: list[str] = []
        for dep in deps[key]:
            for d in [dep, *closure(dep)]:
                if d not in seen:
                    seen.append(d)
        return seen

    rel = {k: str(by_name[k].relative_to(modules_dir)) for k in order}
    dep_lines = [f"{rel[k]}: {' '.join(rel[d] for d in closure(k))}".rstrip() for k in order]
    return [by_name[k] for k in order], "\n".join(dep_lines) + "\n"


# -- initramfs ---------------------------------------------------------------------------------


class Cpio:
    """A ``newc`` cpio archive built in memory (what the kernel unpacks as initramfs)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.dirs: set[str] = {""}
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        self.ino += 1
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        self.parts += [header, encoded, b"\0" * (-(len(header) + len(encoded)) % 4), data, b"\0" * (-len(data) % 4)]

    def mkdir(self, path: str) -> None:
        path = path.strip("/")
        if path in self.dirs:
            return
        self.mkdir(os.path.dirname(path))
        self.dirs.add(path)
        self._entry(path, stat.S_IFDIR | 0o755)

    def add(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path: str, target: str) -> None:
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def add_file(self, path: str, source: Path) -> None:
        self.add(path, source.read_bytes(), 0o755 if os.access(source, os.X_OK) else 0o644)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = b"".join(self.parts)
        return data + b"\0" * (-len(data) % 512)


def guest_python() -> tuple[Path, Path]:
    """(interpreter, standard library directory) the guest runs: the system ``python3``, whose
    Debian packages ship compiled .pyc files (a cold guest process must not compile)."""
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.access(candidate, os.X_OK):
            probe = _run([candidate, "-S", "-c", "import sys, sysconfig; print(sysconfig.get_paths()['stdlib'])"])
            if probe.returncode == 0:
                return Path(os.path.realpath(candidate)), Path(probe.stdout.strip())
    raise VmUnavailable("no system python3 to copy into the guest (Debian: apt-get install python3)")


def shared_libraries(binaries: Iterable[Path]) -> set[str]:
    """Every shared library (as the loader names it) that ``binaries`` need, by ``ldd``."""
    found: set[str] = set()
    out = _run(["ldd", *map(str, binaries)])
    for line in out.stdout.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            found.add(match.group(1))
    return found


def busybox_path() -> Path:
    """Debian's busybox (static from busybox-static; a dynamic one gets its libraries copied too)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(candidate):
            return Path(candidate)
    raise VmUnavailable("no busybox (Debian: apt-get install busybox-static)")


@dataclass
class BaseImage:
    path: Path
    key: str
    python: str
    modules: list[str] = field(default_factory=list)


def _stdlib_files(stdlib: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(stdlib):
        rel = Path(root).relative_to(stdlib)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in STDLIB_SKIP and not d.startswith("config-")]
        dirs.sort()
        out += [
            Path(root) / f
            for f in sorted(files)
            if not f.endswith((".exe", ".a")) and not (f.endswith(".so") and f.startswith(DYNLOAD_SKIP))
        ]
    return out


def build_base_image(cache: Path, kernel: Kernel) -> BaseImage:
    """The cached initramfs with busybox, python3 + its libraries and the kernel's modules."""
    python, stdlib = guest_python()
    busybox = busybox_path()
    stdlib_files = _stdlib_files(stdlib)
    dynload = [p for p in stdlib_files if p.suffix == ".so"]
    libs = sorted(shared_libraries([python, busybox, *dynload]))
    kos, modules_dep = module_closure(kernel.modules, GUEST_MODULES)
    openssl_cnf = Path("/etc/ssl/openssl.cnf")
    inputs = [python, busybox, *stdlib_files, *(Path(lib) for lib in libs), *kos]
    if openssl_cnf.is_file():
        inputs.append(openssl_cnf)
    digest = hashlib.sha256(f"{BUILDER_VERSION}\n{kernel.release}\n{python}\n{stdlib}\n".encode())
    for p in inputs:
        st = p.stat()
        digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = digest.hexdigest()[:16]
    path = cache / f"initramfs-{key}.cpio"
    result = BaseImage(path, key, str(python), [ko.stem for ko in kos])
    if path.is_file():
        return result
    archive = Cpio()
    for d in ("proc", "sys", "dev", "tmp", "run", "etc", "root", "sbin", "usr/bin", "usr/sbin"):
        archive.mkdir(d)
    archive.add_file("bin/busybox", busybox)
    archive.add_file(str(python), python)
    archive.symlink("usr/bin/python3", str(python))
    for p in stdlib_files:
        archive.add(str(p), p.read_bytes(), 0o755 if p.suffix == ".so" else 0o644)
    for lib in libs:
        archive.add(lib, Path(lib).read_bytes(), 0o755)
    if openssl_cnf.is_file():
        archive.add(str(openssl_cnf), openssl_cnf.read_bytes())
        archive.symlink("usr/lib/ssl/openssl.cnf", str(openssl_cnf))
    modroot = f"lib/modules/{kernel.release}"
    for ko in kos:
        archive.add(f"{modroot}/{ko.relative_to(kernel.modules)}", ko.read_bytes())
    archive.add(f"{modroot}/modules.dep", modules_dep.encode())
    archive.add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    archive.add("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    archive.add("etc/hosts", b"127.0.0.1 localhost\n")
    data = archive.finish()
    fd, tmp = tempfile.mkstemp(prefix=".initramfs-", dir=cache)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    for stale in cache.glob("initramfs-*.cpio"):
        if stale != path and time.time() - stale.stat().st_mtime > 86400:
            with contextlib.suppress(OSError):
                stale.unlink()
    return result


INIT_SCRIPT = """#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ip link set lo up
echo /sbin/modprobe > /proc/sys/kernel/modprobe
for m in {modules}; do modprobe "$m" 2>/tmp/modprobe.err || echo "modprobe $m: $(cat /tmp/modprobe.err)" >&2; done
cd {root}
PYTHONPATH={root} PYTHONDONTWRITEBYTECODE=1 HOME=/root /usr/bin/python3 -m components.ktls_vm_guest {root}/plan.json
poweroff -f
"""


def compiled_components(work: Path) -> Path:
    """A copy of ``components`` (Python files only) under ``work``, compiled by the guest's
    interpreter into hash-checked-free ``.pyc`` files (the cpio's mtimes are 0, so timestamp pycs
    would be stale): like the function images, which run ``compileall`` at build time."""
    python, _stdlib = guest_python()
    tree = work / "tree"
    for src in sorted((REPO / "components").rglob("*.py")):
        dst = tree / src.relative_to(REPO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    args = [str(python), "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash"]
    done = _run([*args, "-s", str(tree), "-p", GUEST_ROOT, str(tree / "components")])
    if done.returncode != 0:
        raise VmFailed(f"compiling the components for the guest failed: {(done.stdout + done.stderr)[-500:]}")
    return tree


def run_archive(plan: dict[str, Any], certs_dir: Path | None) -> bytes:
    """The second initramfs of one boot: /init, the compiled components package, the plan, certificates."""
    archive = Cpio()
    modules = " ".join(m.replace("_", "-") for m in GUEST_MODULES)
    archive.add("init", INIT_SCRIPT.format(modules=modules, root=GUEST_ROOT).encode(), 0o755)
    with tempfile.TemporaryDirectory(prefix="ktls-vm-components-") as tmp:
        tree = compiled_components(Path(tmp))
        for src in sorted((tree / "components").rglob("*")):
            if src.is_file():
                archive.add(f"{GUEST_ROOT}/{src.relative_to(tree)}", src.read_bytes())
    if certs_dir is not None:
        for pem in sorted(certs_dir.iterdir()):
            if pem.is_file():
                archive.add(f"{GUEST_ROOT}/certs/{pem.name}", pem.read_bytes(), 0o600)
    archive.add(f"{GUEST_ROOT}/plan.json", json.dumps(plan).encode())
    return archive.finish()


# -- the machine -------------------------------------------------------------------------------


def qemu_binary() -> str:
    found = shutil.which("qemu-system-x86_64")
    if found is None:
        raise VmUnavailable("qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)")
    return found


def qemu_args(kernel: Kernel, initrd: Path, accel: str, memory_mb: int = 768, cpus: int = 2) -> list[str]:
    cpu = "host" if accel == "kvm" else "max"
    return [
        qemu_binary(),
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-m",
        str(memory_mb),
        "-smp",
        str(cpus),
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel.image),
        "-initrd",
        str(initrd),
        "-append",
        "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init mitigations=off clocksource=hpet cryptomgr.notests",
    ]


def parse_console(console: str) -> dict[str, Any]:
    """The guest's result line on the serial console. Raises VmFailed with the console's tail."""
    for line in console.splitlines():
        start = line.find(RESULT_MARK)
        if start >= 0:
            try:
                result = json.loads(line[start + len(RESULT_MARK) :])
            except json.JSONDecodeError as exc:
                raise VmFailed(f"unreadable guest result ({exc}): {line[:300]}") from None
            if isinstance(result, dict):
                return result
    tail = "\n".join(console.strip().splitlines()[-25:])
    raise VmFailed(f"the guest printed no result; console tail:\n{tail}")


def kvm_verdict(cache: Path) -> str:
    """``ok``/``failed: ...`` once probed, ``untried`` where KVM may work, ``off`` where it cannot be
    tried (no /dev/kvm, or COLDSTART_KTLS_VM_KVM=0). ``/dev/kvm`` may be a nested hypervisor that
    cannot run a stock kernel, hence the probe."""
    if os.environ.get("COLDSTART_KTLS_VM_KVM") == "0" or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "off"
    verdict = cache / "kvm-verdict"
    return verdict.read_text().strip() if verdict.is_file() else "untried"


@dataclass
class VmRun:
    result: dict[str, Any]
    kernel: Kernel
    accel: str
    boot_s: float
    image_build_s: float
    console: str


def boot(kernel: Kernel, initrd: Path, accel: str, timeout_s: float) -> tuple[dict[str, Any], str, float]:
    """One boot; (the guest's result, the console, seconds). Raises VmFailed."""
    args = qemu_args(kernel, initrd, accel)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as exc:
        text = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        raise VmFailed(
            f"the guest ({accel}) did not finish within {timeout_s:.0f} s; console tail:\n{text[-3000:]}"
        ) from None
    console = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    return parse_console(console), console, time.monotonic() - t0


def run_vm(plan: dict[str, Any], timeout_s: float = 150.0, cache: Path | None = None) -> VmRun:
    """Boot the guest with ``plan`` and return its result. Raises VmUnavailable / VmFailed."""
    from coldstart_bench.measure.tls_certs import CertError, make_run_certificates

    cache = cache or cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    qemu_binary()
    t0 = time.monotonic()
    kernel = fetch_kernel(cache)
    base = build_base_image(cache, kernel)
    image_build_s = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="ktls-vm-") as tmp:
        work = Path(tmp)
        if kvm_verdict(cache) == "untried":
            probe = work / "probe.cpio"
            with probe.open("wb") as out, base.path.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.write(run_archive({"probe": True}, None))
            try:
                boot(kernel, probe, "kvm", 60.0)
                verdict = "ok"
            except VmFailed as exc:
                verdict = "failed: " + " ".join(str(exc).split())[:300]
            (cache / "kvm-verdict").write_text(verdict + "\n")
        accel = "kvm" if kvm_verdict(cache) == "ok" else "tcg"
        try:
            certs = make_run_certificates(work / "certs")
        except CertError as exc:
            raise VmUnavailable(str(exc)) from None
        initrd = work / "initrd.cpio"
        with initrd.open("wb") as out, base.path.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.write(run_archive(plan, certs.directory))
        result, console, boot_s = boot(kernel, initrd, accel, timeout_s)
    return VmRun(result, kernel, accel, boot_s, image_build_s, console)


# -- figures -----------------------------------------------------------------------------------


def figures_table(result: dict[str, Any], kernel: Kernel, accel: str) -> str:
    """Markdown table of the guest's cold-start figures (medians, µs)."""
    figures = result.get("figures") or {}
    arms = figures.get("arms") or {}
    phases = (
        "interpreter_us",
        "after_start_us",
        "library_load_us",
        "acquire_us",
        "session_setup_us",
        "first_request_us",
    )
    heads = ("interpreter start", "main → reply", "library load", "acquire", "session set-up", "first request")
    emulation = "KVM" if accel == "kvm" else "QEMU TCG (software emulation, tens of times slower than native)"
    lines = [
        f"Kernel {result.get('kernel_release', kernel.release)} ({kernel.label}) under {emulation}; "
        f"medians of {figures.get('n', 0)} cold `python3` processes per arm, µs:",
        "",
        "| arm | to first reply | " + " | ".join(heads) + " | libcrypto mapped |",
        "|---|---|" + "---|" * len(heads) + "---|",
    ]
    for name, arm in arms.items():
        cells = [f"{arm.get(p, 0):,.0f}" for p in phases]
        lines.append(
            f"| {name} | {arm.get('to_first_reply_us', 0):,.0f} | "
            + " | ".join(cells)
            + f" | {'yes' if arm.get('libcrypto_mapped') else 'no'} |"
        )
    ratio, after = figures.get("ratio_to_first_reply"), figures.get("ratio_after_start")
    if ratio and after:
        lines += [
            "",
            f"`tls-direct` / `tls-ktls`: **{ratio:.1f}×** from process spawn to first reply, "
            f"**{after:.1f}×** from the function's `main` to its first reply.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coldstart_bench.ktls_vm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--figures", type=int, default=0, help="cold starts per TLS arm (0: checks only)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole boot")
    parser.add_argument("--json", action="store_true", help="print the guest's whole result")
    args = parser.parse_args(argv)
    try:
        run = run_vm({"checks": True, "figures": args.figures}, timeout_s=args.timeout)
    except VmUnavailable as exc:
        print(f"kernel TLS VM unavailable here: {exc}", file=sys.stderr)
        return 2
    except VmFailed as exc:
        print(f"kernel TLS VM failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(run.result, indent=1))
    checks = run.result.get("checks") or {}
    bad = [name for name, check in checks.items() if not check.get("ok")]
    print(
        f"kernel {run.kernel.release} under {run.accel}: image {run.image_build_s:.1f} s, boot+run {run.boot_s:.1f} s; "
        f"{len(checks) - len(bad)}/{len(checks)} checks hold" + (f" (failing: {', '.join(bad)})" if bad else "")
    )
    if args.figures:
        print(figures_table(run.result, run.kernel, run.accel))
    return 0 if checks and not bad and not run.result.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
