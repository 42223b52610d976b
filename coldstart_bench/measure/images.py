"""Build the project's Docker images locally, tagged by a hash of their contents.

Every directory ``images/<name>/`` holding a Dockerfile is an image built FROM
the project's base (build arg ``BASE_IMAGE``), with the repository's
``components/`` package copied into its build context. Optional files in that
directory:

- ``debian-packages.txt``: Debian packages the image needs. They are added to
  an offline base variant (mmdebstrap), or apt-installed on top of a registry
  or user-provided base, so the image's own Dockerfile never needs network.
- ``build-packages.txt``: Debian packages of a build stage (a C compiler, say). The
  Dockerfile then also gets ``BUILD_IMAGE``, the base with those packages, to build in
  and copy from, so the image itself stays lean.
- ``wheels.txt``: pinned binary wheels, downloaded on the host into a wheel
  cache and copied into the build context as ``wheels/``.

The base comes from, in order: ``$COLDSTART_BASE_IMAGE`` (a local image), a
registry image (``python:3.11-slim-bookworm``) already present or pullable
within a short timeout, or an offline build with ``mmdebstrap`` piped into
``docker import``. An image whose tag already exists is never rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "images"
COMPONENTS_DIR = REPO_ROOT / "components"

PREFIX = "coldstart-bench"
# On every image this project builds; containers inherit it, so it names the image, not a run.
IMAGE_LABEL = "coldstart-bench.image"
ROUTE_LABEL = "coldstart-bench.base-route"
CORE_IMAGES = ("echo", "pool", "function", "delay")

REGISTRY_BASE = "python:3.11-slim-bookworm"
BASE_ENV = "COLDSTART_BASE_IMAGE"
SKIP_REGISTRY_ENV = "COLDSTART_SKIP_REGISTRY"
WHEEL_CACHE_ENV = "COLDSTART_WHEEL_CACHE"
PULL_TIMEOUT_S = 20.0
MMDEBSTRAP_TIMEOUT_S = 900.0
BUILD_TIMEOUT_S = 900

LOCK_PATH = Path(tempfile.gettempdir()) / "coldstart-bench-images.lock"
DEFAULT_WHEEL_CACHE = REPO_ROOT / ".cache" / "wheels"

# Bumped when the offline recipe changes in a way the package list does not show.
OFFLINE_RECIPE_VERSION = "1"
# Bumped when the way images are built (build args, labels) changes, so tags follow.
IMAGE_RECIPE_VERSION = "1"
DEBIAN_SUITE = "bookworm"
# Docs, man pages and translations are dead weight in every container.
MMDEBSTRAP_OPTIONS = (
    "--variant=apt",
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Retries "3"',
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
)
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)

_IGNORED_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_IGNORED_SUFFIXES = {".pyc", ".pyo", ".swp"}


class ImageBuildError(RuntimeError):
    """An image could not be provided; the message says why and what to do."""


@dataclass(frozen=True)
class ImageSet:
    """Tags of the project's images. A core image not requested is ``""``."""

    base: str
    echo: str
    pool: str
    function: str
    delay: str
    base_route: str  # "registry:<ref>" | "mmdebstrap" | "env:<ref>"
    extra: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str:
        if name in CORE_IMAGES:
            return str(getattr(self, name))
        return self.extra.get(name, "")


# --- content hashing -----------------------------------------------------------------


def _ignored(path: Path) -> bool:
    return any(part in _IGNORED_DIRS for part in path.parts) or path.suffix in _IGNORED_SUFFIXES


def tree_files(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    """Files under root as sorted (relative posix name, path), caches excluded."""
    out: list[tuple[str, Path]] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not _ignored(rel):
            out.append((f"{prefix}{rel.as_posix()}", path))
    return sorted(out)


def content_hash(files: Iterable[tuple[str, Path]], extra: Sequence[str] = ()) -> str:
    """sha256 over file names and contents plus extra strings (e.g. the base tag)."""
    h = hashlib.sha256()
    for item in extra:
        h.update(b"x\0" + item.encode() + b"\0")
    for name, path in sorted(files):
        h.update(b"f\0" + name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def read_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a list file; [] if it does not exist."""
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def discover_images(images_dir: Path = IMAGES_DIR) -> list[str]:
    """Names of all images: directories of images/ with a Dockerfile, base excluded."""
    return sorted(
        p.name for p in images_dir.iterdir() if p.is_dir() and p.name != "base" and (p / "Dockerfile").is_file()
    )


# --- wheel cache -----------------------------------------------------------------------


def _normalise(name: str) -> str:
    # Wheel file names use the distribution name with runs of -_. as "_".
    return re.sub(r"[-_.]+", "_", name).lower()


def parse_pin(pin: str) -> tuple[str, str]:
    """'fnfqueue==1.1.2' -> ('fnfqueue', '1.1.2'); only exact pins are accepted."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", pin)
    if not m:
        raise ImageBuildError(f"wheel requirement {pin!r} must be an exact pin like name==1.2.3")
    return m.group(1), m.group(2)


def wheel_platform() -> str:
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
    machine = platform.machine().lower()
    return f"manylinux2014_{arch.get(machine, machine)}"


class WheelCache:
    """Binary wheels for the images' Python (3.11, Debian bookworm), kept on the host.

    The images are built without network access, so wheels are fetched here with
    pip and copied into build contexts. A wheel already cached is not fetched again.
    """

    def __init__(
        self,
        directory: Path | None = None,
        python_version: str = "3.11",
        platform_tag: str | None = None,
        runner: Callable[[list[str]], subprocess.CompletedProcess[str]] | None = None,
    ) -> None:
        env_dir = os.environ.get(WHEEL_CACHE_ENV)
        self.directory = directory or (Path(env_dir) if env_dir else DEFAULT_WHEEL_CACHE)
        self.python_version = python_version
        self.platform_tag = platform_tag or wheel_platform()
        self._run = runner or self._subprocess_run

    @staticmethod
    def _subprocess_run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)

    def cached(self, pin: str) -> Path | None:
        name, version = parse_pin(pin)
        if not self.directory.is_dir():
            return None
        # {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
        for path in sorted(self.directory.glob("*.whl")):
            parts = path.name.split("-")
            if len(parts) >= 5 and _normalise(parts[0]) == _normalise(name) and parts[1] == version:
                return path
        return None

    def download_command(self, pin: str) -> list[str]:
        return [
            sys.executable, "-m", "pip", "download", pin,
            "--no-deps", "--only-binary=:all:",
            "--python-version", self.python_version,
            "--platform", self.platform_tag,
            "--disable-pip-version-check",
            "-d", str(self.directory),
        ]  # fmt: skip

    def ensure(self, pins: Iterable[str]) -> list[Path]:
        """Paths of the wheels for pins, downloading those not cached yet."""
        paths = []
        for pin in pins:
            path = self.cached(pin)
            if path is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                argv = self.download_command(pin)
                proc = self._run(argv)
                path = self.cached(pin)
                if proc.returncode != 0 or path is None:
                    detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
                    raise ImageBuildError(
                        f"could not fetch the wheel {pin} into {self.directory} "
                        f"(command: {' '.join(argv)}): "
                        + " | ".join(detail)
                        + f". Put the wheel there by hand, or set {WHEEL_CACHE_ENV} to a directory with it."
                    )
            paths.append(path)
        return paths


# --- base image ----------------------------------------------------------------------


def mmdebstrap_command(packages: Sequence[str], output: str) -> list[str]:
    return ["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(packages)}", DEBIAN_SUITE, output]


def offline_base_hash(packages: Sequence[str]) -> str:
    recipe = [OFFLINE_RECIPE_VERSION, *mmdebstrap_command(sorted(set(packages)), "-"), *IMPORT_CHANGES]
    return hashlib.sha256("\0".join(recipe).encode()).hexdigest()


def missing_base_message(pull_error: str | None) -> str:
    why = f"pulling {REGISTRY_BASE} failed ({pull_error})" if pull_error else f"{REGISTRY_BASE} is not available"
    return (
        f"No base image: {why} and mmdebstrap is not installed, so the base cannot be built "
        f"offline from Debian packages either. Install it (apt-get install mmdebstrap), or set "
        f"{BASE_ENV}=<local image> to an image you already have (Debian bookworm with python3)."
    )


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _image_id(client: docker.DockerClient, ref: str) -> str:
    return str(client.images.get(ref).id)


def _try_pull(client: docker.DockerClient, ref: str, timeout: float) -> str | None:
    """Pull ref; None on success, else why it failed. Gives up after timeout seconds."""
    result: list[str | None] = []

    def pull() -> None:
        try:
            client.images.pull(ref)
            result.append(None)
        except Exception as exc:  # any failure just means "no registry route"
            result.append(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(timeout)
    if not result:
        return f"no answer within {timeout:.0f} s"
    return result[0]


@dataclass(frozen=True)
class _Base:
    ref: str
    route: str


class ImageBuilder:
    """Provides the base and builds images FROM it; one instance per ensure_images call."""

    def __init__(
        self,
        client: docker.DockerClient,
        log: Callable[[str], None] = print,
        images_dir: Path = IMAGES_DIR,
        components_dir: Path = COMPONENTS_DIR,
        wheels: WheelCache | None = None,
        image_dirs: Mapping[str, Path] | None = None,
    ) -> None:
        self.client = client
        # Build contexts outside images/ (examples, a user's own function): name -> directory.
        self.image_dirs = dict(image_dirs or {})
        self.log = log
        self.images_dir = images_dir
        self.components_dir = components_dir
        self.wheels = wheels or WheelCache()
        self.base_packages = read_list(images_dir / "base" / "packages.txt") or ["python3"]
        self._base: _Base | None = None

    # base ---------------------------------------------------------------------------

    def base(self) -> _Base:
        if self._base is None:
            self._base = self._provide_base()
            self.log(f"base image {self._base.ref} (route {self._base.route})")
        return self._base

    def _provide_base(self) -> _Base:
        env_ref = os.environ.get(BASE_ENV, "").strip()
        if env_ref:
            if not _image_exists(self.client, env_ref):
                raise ImageBuildError(f"{BASE_ENV}={env_ref} is not a local image (see `docker images`)")
            return _Base(env_ref, f"env:{env_ref}")
        if _image_exists(self.client, REGISTRY_BASE):
            return _Base(REGISTRY_BASE, f"registry:{REGISTRY_BASE}")
        offline_tag = self._offline_tag(self.base_packages, "base")
        if _image_exists(self.client, offline_tag):
            # Built earlier; don't spend a pull attempt every run.
            return _Base(offline_tag, "mmdebstrap")
        pull_error: str | None = "skipped" if os.environ.get(SKIP_REGISTRY_ENV) else None
        if pull_error is None:
            self.log(f"trying to pull {REGISTRY_BASE} ...")
            pull_error = _try_pull(self.client, REGISTRY_BASE, PULL_TIMEOUT_S)
            if pull_error is None:
                return _Base(REGISTRY_BASE, f"registry:{REGISTRY_BASE}")
            self.log(f"pull failed ({pull_error}); building the base offline with mmdebstrap")
        if shutil.which("mmdebstrap") is None:
            raise ImageBuildError(missing_base_message(pull_error))
        self._build_offline(self.base_packages, offline_tag)
        return _Base(offline_tag, "mmdebstrap")

    def _offline_tag(self, packages: Sequence[str], repo_name: str) -> str:
        return f"{PREFIX}/{repo_name}:{offline_base_hash(packages)[:12]}"

    def _build_offline(self, packages: Sequence[str], tag: str) -> None:
        repo, _, version = tag.rpartition(":")
        with tempfile.TemporaryDirectory(prefix="coldstart-rootfs-") as tmp:
            tarball = str(Path(tmp) / "rootfs.tar")
            argv = mmdebstrap_command(sorted(set(packages)), tarball)
            self.log(f"building {tag}: {' '.join(argv)}")
            started = time.monotonic()
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                raise ImageBuildError(f"mmdebstrap did not finish within {MMDEBSTRAP_TIMEOUT_S:.0f} s") from exc
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
                raise ImageBuildError(f"mmdebstrap failed (exit {proc.returncode}) building {tag}:\n{tail}")
            name = repo.removeprefix(f"{PREFIX}/")
            changes = [*IMPORT_CHANGES, f"LABEL {IMAGE_LABEL}={name}", f"LABEL {ROUTE_LABEL}=mmdebstrap"]
            try:
                self.client.api.import_image_from_file(tarball, repository=repo, tag=version, changes=changes)
            except docker.errors.APIError as exc:
                raise ImageBuildError(f"docker import of {tag} failed: {exc}") from exc
        if not _image_exists(self.client, tag):
            raise ImageBuildError(f"docker import reported success but {tag} does not exist")
        self.log(f"built {tag} in {time.monotonic() - started:.1f} s")

    def base_with_packages(self, name: str, packages: Sequence[str]) -> str:
        """The base, or a variant of it holding the extra Debian packages."""
        base = self.base()
        if not packages:
            return base.ref
        if base.route == "mmdebstrap":
            tag = self._offline_tag([*self.base_packages, *packages], f"base-{name}")
            if not _image_exists(self.client, tag):
                self._build_offline([*self.base_packages, *packages], tag)
            return tag
        # Registry or user base: apt-get the packages on top (needs apt network only here).
        recipe = self.images_dir / "base" / "Dockerfile.packages"
        digest = content_hash(
            [("Dockerfile.packages", recipe)],
            [base.ref, _image_id(self.client, base.ref), *sorted(set(packages))],
        )
        tag = f"{PREFIX}/base-{name}:{digest[:12]}"
        if not _image_exists(self.client, tag):
            with tempfile.TemporaryDirectory(prefix="coldstart-ctx-") as ctx:
                shutil.copy2(recipe, Path(ctx) / "Dockerfile")
                self._docker_build(
                    Path(ctx), tag,
                    {"BASE_IMAGE": base.ref, "DEBIAN_PACKAGES": " ".join(sorted(set(packages)))},
                    base.route,
                )  # fmt: skip
        return tag

    # images -------------------------------------------------------------------------

    def _assemble(self, name: str, ctx: Path) -> dict[str, str]:
        """Lay out the build context of image name in ctx; returns its build args (the base it
        builds FROM, and the build-stage base when it has build-packages.txt)."""
        directory = self.image_dirs.get(name) or self.images_dir / name
        if not (directory / "Dockerfile").is_file():
            raise ImageBuildError(f"no image {name!r}: {directory / 'Dockerfile'} does not exist")
        base_ref = self.base_with_packages(name, read_list(directory / "debian-packages.txt"))
        args = {"BASE_IMAGE": base_ref}
        build_packages = read_list(directory / "build-packages.txt")
        if build_packages:
            # Named by its packages only, so images needing the same compiler share one variant.
            args["BUILD_IMAGE"] = self.base_with_packages("build", build_packages)
        wheels = self.wheels.ensure(read_list(directory / "wheels.txt"))
        copies = [
            *tree_files(directory),
            *tree_files(self.components_dir, "components/"),
            *((f"wheels/{w.name}", w) for w in wheels),
        ]
        for rel, src in copies:
            dest = ctx / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        (ctx / "wheels").mkdir(exist_ok=True)  # Dockerfiles may COPY it even when empty
        return args

    def _tag(self, name: str, ctx: Path, args: dict[str, str]) -> str:
        # Hashing the assembled copy, not the tree, so the tag matches exactly what is built
        # even while components/ is being edited.
        base_ref = args["BASE_IMAGE"]
        extra = [f"recipe:{IMAGE_RECIPE_VERSION}", f"image:{name}", base_ref, _image_id(self.client, base_ref)]
        if "BUILD_IMAGE" in args:
            extra += [f"build:{args['BUILD_IMAGE']}", _image_id(self.client, args["BUILD_IMAGE"])]
        return f"{PREFIX}/{name}:{content_hash(tree_files(ctx), extra)[:12]}"

    def image_tag(self, name: str) -> str:
        """The tag image name has with the current sources (builds base variants if needed)."""
        with tempfile.TemporaryDirectory(prefix=f"coldstart-ctx-{name}-") as tmp:
            return self._tag(name, Path(tmp), self._assemble(name, Path(tmp)))

    def ensure(self, name: str) -> str:
        with tempfile.TemporaryDirectory(prefix=f"coldstart-ctx-{name}-") as tmp:
            ctx = Path(tmp)
            args = self._assemble(name, ctx)
            tag = self._tag(name, ctx, args)
            if not _image_exists(self.client, tag):
                self._docker_build(ctx, tag, args, self.base().route)
        return tag

    def _docker_build(self, context: Path, tag: str, buildargs: dict[str, str], route: str) -> None:
        self.log(f"building {tag}")
        started = time.monotonic()
        output: list[str] = []
        labels = {IMAGE_LABEL: tag.split(":")[0].removeprefix(f"{PREFIX}/"), ROUTE_LABEL: route}
        try:
            stream: Iterator[dict[str, Any]] = self.client.api.build(
                path=str(context), tag=tag, buildargs=buildargs, rm=True, forcerm=True,
                decode=True, labels=labels, pull=False, timeout=BUILD_TIMEOUT_S,
            )  # fmt: skip
            for chunk in stream:
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    tail = "".join(output[-20:]).rstrip()
                    raise ImageBuildError(f"building {tag} failed: {str(detail).strip()}\n{tail}")
                text = chunk.get("stream")
                if text:
                    output.append(text)
                    if text.startswith("Step "):
                        self.log(f"  {tag}: {text.strip()}")
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"building {tag} failed: {exc}") from exc
        if not _image_exists(self.client, tag):
            raise ImageBuildError(f"building {tag} ended without an image:\n{''.join(output[-20:]).rstrip()}")
        self.log(f"built {tag} in {time.monotonic() - started:.1f} s")


@contextlib.contextmanager
def build_lock(path: Path = LOCK_PATH) -> Iterator[None]:
    """Serialise builds across processes (pytest-xdist workers) and threads."""
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_images(
    client: docker.DockerClient,
    names: Iterable[str] | None = None,
    log: Callable[[str], None] = print,
    image_dirs: Mapping[str, Path] | None = None,
) -> ImageSet:
    """Make sure the base and the named images (all of images/ by default) exist locally.

    ``image_dirs`` adds build contexts outside images/ (name -> directory, same layout); their
    names are built too. Unchanged images are not rebuilt; safe to call concurrently from
    several processes.
    """
    wanted = discover_images() if names is None else list(dict.fromkeys(names))
    wanted += [name for name in image_dirs or {} if name not in wanted]
    with build_lock():
        builder = ImageBuilder(client, log=log, image_dirs=image_dirs)
        base = builder.base()
        tags = {name: builder.ensure(name) for name in wanted}
    return ImageSet(
        base=base.ref,
        echo=tags.get("echo", ""),
        pool=tags.get("pool", ""),
        function=tags.get("function", ""),
        delay=tags.get("delay", ""),
        base_route=base.route,
        extra={k: v for k, v in tags.items() if k not in CORE_IMAGES},
    )


def images_created_by_project(client: docker.DockerClient) -> list[str]:
    """References of every image this project built (tags, or ids when untagged)."""
    refs: set[str] = set()
    labelled = client.images.list(filters={"label": IMAGE_LABEL})
    for image in [*labelled, *client.images.list()]:
        tags = [t for t in image.tags if t.startswith(f"{PREFIX}/")]
        if tags:
            refs.update(tags)
        elif image in labelled:
            refs.add(str(image.id))
    return sorted(refs)


def prune_stale_images(client: docker.DockerClient, current: ImageSet, log: Callable[[str], None] = print) -> list[str]:
    """Remove older tags of the images in current (superseded by a content change).

    For cleanup tooling, when no run is in progress: a run started from an older
    tag would lose its image between two cold starts. Images a container still
    uses are kept (the engine refuses), as are base images and newer tags.
    """
    keep = {t for t in [current.echo, current.pool, current.function, current.delay, *current.extra.values()] if t}
    removed = []
    for tag in sorted(keep):
        repo = tag.rsplit(":", 1)[0]
        newest = client.images.get(tag).attrs.get("Created", "")
        for image in client.images.list(name=repo):
            if image.attrs.get("Created", "") >= newest:
                continue  # newer than current: maybe another process's fresh build
            for old in image.tags:
                if old.startswith(f"{repo}:") and old not in keep:
                    try:
                        client.images.remove(old)
                    except docker.errors.APIError as exc:
                        log(f"kept {old}: {str(exc).splitlines()[0]}")
                        continue
                    removed.append(old)
    return removed
