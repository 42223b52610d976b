"""Image builder logic without Docker: content hashes, base route choice, wheel cache."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from coldstart_bench.measure import images as im

# --- content hash ------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _hash(root: Path, extra: tuple[str, ...] = ("base:1",)) -> str:
    return im.content_hash(im.tree_files(root), extra)


def test_hash_is_stable_and_changes_only_with_content(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", {"Dockerfile": "FROM x\n", "components/a.py": "A = 1\n"})
    first = _hash(root)
    assert _hash(root) == first

    (root / "components" / "a.py").write_text("A = 2\n")
    changed = _hash(root)
    assert changed != first

    (root / "components" / "a.py").write_text("A = 1\n")
    assert _hash(root) == first  # same bytes, same tag: mtimes do not matter


def test_hash_ignores_bytecode_and_caches(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", {"Dockerfile": "FROM x\n", "components/a.py": "A = 1\n"})
    first = _hash(root)
    _tree(root, {"components/__pycache__/a.cpython-311.pyc": "junk", "components/b.pyc": "junk"})
    assert _hash(root) == first


def test_hash_changes_with_added_renamed_file_and_base(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", {"Dockerfile": "FROM x\n", "a.py": "A = 1\n"})
    first = _hash(root)
    assert _hash(root, ("base:2",)) != first
    (root / "a.py").rename(root / "b.py")
    renamed = _hash(root)
    assert renamed != first
    _tree(root, {"c.py": ""})
    assert _hash(root) != renamed


def test_hash_does_not_depend_on_listing_order(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a": "1", "b": "2"})
    files = im.tree_files(root)
    assert im.content_hash(files) == im.content_hash(list(reversed(files)))


def test_image_tag_covers_image_dir_components_and_base(tmp_path: Path) -> None:
    images_dir = _tree(tmp_path / "images", {"echo/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"})
    components = _tree(tmp_path / "components", {"__init__.py": "", "echo_server.py": "x = 1\n"})
    client = FakeClient(existing={"base:1": "sha256:aaa"})
    builder = im.ImageBuilder(client, log=lambda _m: None, images_dir=images_dir, components_dir=components)
    builder._base = im._Base("base:1", "env:base:1")

    tag = builder.image_tag("echo")
    assert tag.startswith("coldstart-bench/echo:") and len(tag.split(":")[1]) == 12
    assert builder.image_tag("echo") == tag

    (components / "echo_server.py").write_text("x = 2\n")
    assert builder.image_tag("echo") != tag
    (components / "echo_server.py").write_text("x = 1\n")
    assert builder.image_tag("echo") == tag
    _tree(components, {"__pycache__/echo_server.cpython-311.pyc": "junk"})
    assert builder.image_tag("echo") == tag

    client.existing["base:1"] = "sha256:bbb"  # the base was rebuilt: children must follow
    assert builder.image_tag("echo") != tag


def test_build_context_holds_image_files_components_and_wheels(tmp_path: Path) -> None:
    images_dir = _tree(tmp_path / "images", {"delay/Dockerfile": "x", "delay/wheels.txt": "fnfqueue==1.1.2\n"})
    components = _tree(tmp_path / "components", {"__init__.py": "", "__pycache__/x.pyc": ""})
    wheels = _tree(tmp_path / "wheels", {WHEEL: "zip"})
    client = FakeClient(existing={"base:1": "sha256:aaa"})
    builder = im.ImageBuilder(
        client, log=lambda _m: None, images_dir=images_dir, components_dir=components,
        wheels=im.WheelCache(wheels, runner=lambda argv: subprocess.CompletedProcess(argv, 1, "", "")),
    )  # fmt: skip
    builder._base = im._Base("base:1", "env:base:1")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    assert builder._assemble("delay", ctx) == {"BASE_IMAGE": "base:1"}
    assert [rel for rel, _ in im.tree_files(ctx)] == [
        "Dockerfile", "components/__init__.py", "wheels.txt", f"wheels/{WHEEL}",
    ]  # fmt: skip


def test_build_packages_give_a_build_stage_base_that_the_tag_covers(tmp_path: Path) -> None:
    images_dir = _tree(
        tmp_path / "images",
        {
            "cfunction/Dockerfile": "ARG BASE_IMAGE\nARG BUILD_IMAGE\nFROM ${BUILD_IMAGE} AS b\nFROM ${BASE_IMAGE}\n",
            "cfunction/build-packages.txt": "gcc\nlibc6-dev\n",
            "echo/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n",
        },
    )
    components = _tree(tmp_path / "components", {"__init__.py": ""})
    client = FakeClient(existing={"base:1": "sha256:aaa", "build:gcc": "sha256:ccc"})
    builder = im.ImageBuilder(client, log=lambda _m: None, images_dir=images_dir, components_dir=components)
    builder._base = im._Base("base:1", "env:base:1")
    asked: list[tuple[str, list[str]]] = []

    def variant(name: str, packages: list[str]) -> str:
        asked.append((name, list(packages)))
        return "build:gcc" if packages else "base:1"

    builder.base_with_packages = variant  # type: ignore[method-assign]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    assert builder._assemble("cfunction", ctx) == {"BASE_IMAGE": "base:1", "BUILD_IMAGE": "build:gcc"}
    assert ("build", ["gcc", "libc6-dev"]) in asked
    (ctx2 := tmp_path / "ctx2").mkdir()
    assert builder._assemble("echo", ctx2) == {"BASE_IMAGE": "base:1"}

    tag = builder.image_tag("cfunction")
    client.existing["build:gcc"] = "sha256:ddd"  # the compiler variant was rebuilt: the image follows
    assert builder.image_tag("cfunction") != tag


def test_discover_images_lists_dirs_with_dockerfile_except_base(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "base/packages.txt": "python3\n",
            "echo/Dockerfile": "",
            "postgres/Dockerfile": "",
            "notes/README": "",
        },
    )
    assert im.discover_images(tmp_path) == ["echo", "postgres"]


def test_repo_images_are_discovered() -> None:
    assert set(im.CORE_IMAGES) <= set(im.discover_images())


def test_read_list_skips_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "debian-packages.txt"
    path.write_text("# tools\niproute2\n\n iptables  # for NFQUEUE\n")
    assert im.read_list(path) == ["iproute2", "iptables"]
    assert im.read_list(tmp_path / "missing.txt") == []


def test_offline_base_hash_depends_on_package_set_only() -> None:
    assert im.offline_base_hash(["python3", "iptables"]) == im.offline_base_hash(["iptables", "python3"])
    assert im.offline_base_hash(["python3"]) != im.offline_base_hash(["python3", "iptables"])


def test_mmdebstrap_command_includes_packages_and_suite() -> None:
    argv = im.mmdebstrap_command(["python3", "iproute2"], "/tmp/out.tar")
    assert argv[0] == "mmdebstrap" and "--variant=apt" in argv
    assert "--include=python3,iproute2" in argv
    assert argv[-2:] == ["bookworm", "/tmp/out.tar"]


# --- base route ---------------------------------------------------------------------------------


class FakeImages:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def get(self, ref: str) -> Any:
        if ref not in self.client.existing:
            raise docker.errors.ImageNotFound(ref)
        return type("Img", (), {"id": self.client.existing[ref], "tags": [ref]})()

    def pull(self, ref: str) -> None:
        self.client.pulls.append(ref)
        if self.client.pull_error:
            raise docker.errors.APIError(self.client.pull_error)
        self.client.existing[ref] = "sha256:pulled"


class FakeClient:
    def __init__(self, existing: dict[str, str] | None = None, pull_error: str | None = None) -> None:
        self.existing = dict(existing or {})
        self.pull_error = pull_error
        self.pulls: list[str] = []
        self.images = FakeImages(self)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv(im.BASE_ENV, raising=False)
    monkeypatch.delenv(im.SKIP_REGISTRY_ENV, raising=False)
    return monkeypatch


def test_missing_mmdebstrap_and_no_registry_says_what_to_install(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(im.shutil, "which", lambda _name: None)
    client = FakeClient(pull_error="dial tcp: lookup registry-1.docker.io: no such host")
    with pytest.raises(im.ImageBuildError) as info:
        im.ImageBuilder(client, log=lambda _m: None).base()
    message = str(info.value)
    assert "apt-get install mmdebstrap" in message
    assert "COLDSTART_BASE_IMAGE=<local image>" in message
    assert "no such host" in message  # the pull's reason is kept
    assert client.pulls == [im.REGISTRY_BASE]


def test_missing_base_message_is_one_clear_paragraph() -> None:
    message = im.missing_base_message("timeout")
    assert "\n" not in message
    assert message.startswith("No base image: pulling python:3.11-slim-bookworm failed (timeout)")


def test_env_base_wins_and_is_recorded(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(im.BASE_ENV, "my/python:3.11")
    client = FakeClient(existing={"my/python:3.11": "sha256:x"})
    base = im.ImageBuilder(client, log=lambda _m: None).base()
    assert (base.ref, base.route) == ("my/python:3.11", "env:my/python:3.11")
    assert client.pulls == []


def test_env_base_that_does_not_exist_is_an_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(im.BASE_ENV, "nope:1")
    with pytest.raises(im.ImageBuildError, match="nope:1 is not a local image"):
        im.ImageBuilder(FakeClient(), log=lambda _m: None).base()


def test_registry_base_used_when_pull_works(clean_env: pytest.MonkeyPatch) -> None:
    client = FakeClient()
    base = im.ImageBuilder(client, log=lambda _m: None).base()
    assert (base.ref, base.route) == (im.REGISTRY_BASE, f"registry:{im.REGISTRY_BASE}")


def test_existing_offline_base_is_reused_without_pulling(clean_env: pytest.MonkeyPatch) -> None:
    builder = im.ImageBuilder(FakeClient(), log=lambda _m: None)
    tag = builder._offline_tag(builder.base_packages, "base")
    builder.client.existing[tag] = "sha256:offline"
    base = builder.base()
    assert (base.ref, base.route) == (tag, "mmdebstrap")
    assert builder.client.pulls == []


def test_offline_build_when_pull_fails_and_mmdebstrap_exists(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setattr(im.shutil, "which", lambda _name: "/usr/bin/mmdebstrap")
    client = FakeClient(pull_error="no registry")
    builder = im.ImageBuilder(client, log=lambda _m: None)
    built: list[tuple[list[str], str]] = []

    def fake_build(packages: list[str], tag: str) -> None:
        built.append((list(packages), tag))
        client.existing[tag] = "sha256:new"

    clean_env.setattr(builder, "_build_offline", fake_build)
    base = builder.base()
    assert base.route == "mmdebstrap"
    assert built == [(builder.base_packages, base.ref)]


# --- wheel cache --------------------------------------------------------------------------------


WHEEL = "fnfqueue-1.1.2-cp311-cp311-manylinux_2_12_x86_64.manylinux2010_x86_64.manylinux_2_28_x86_64.whl"


def test_wheel_cache_finds_cached_wheel_without_running_pip(tmp_path: Path) -> None:
    (tmp_path / WHEEL).write_bytes(b"zip")
    (tmp_path / "fnfqueue-1.1.1-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"old")

    def runner(argv: list[str]) -> subprocess.CompletedProcess[str]:
        raise AssertionError("pip must not run for a cached wheel")

    cache = im.WheelCache(tmp_path, runner=runner)
    assert cache.ensure(["fnfqueue==1.1.2"]) == [tmp_path / WHEEL]


def test_wheel_cache_downloads_missing_wheel_for_the_image_python(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        (tmp_path / WHEEL).write_bytes(b"zip")
        return subprocess.CompletedProcess(argv, 0, "", "")

    cache = im.WheelCache(tmp_path, platform_tag="manylinux2014_x86_64", runner=runner)
    assert cache.ensure(["fnfqueue==1.1.2"]) == [tmp_path / WHEEL]
    (argv,) = calls
    assert argv[1:4] == ["-m", "pip", "download"] and "fnfqueue==1.1.2" in argv
    for flag in (
        "--no-deps",
        "--only-binary=:all:",
        "--python-version 3.11",
        "--platform manylinux2014_x86_64",
        f"-d {tmp_path}",
    ):
        assert flag in " ".join(argv)
    assert cache.ensure(["fnfqueue==1.1.2"]) == [tmp_path / WHEEL]
    assert len(calls) == 1  # second time from the cache


def test_wheel_cache_normalises_names(tmp_path: Path) -> None:
    (tmp_path / "zope_interface-6.0-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"")
    cache = im.WheelCache(tmp_path, runner=lambda argv: subprocess.CompletedProcess(argv, 1, "", "no"))
    assert cache.cached("zope.interface==6.0") is not None
    assert cache.cached("zope-interface==6.1") is None


def test_wheel_cache_failure_says_where_to_put_the_wheel(tmp_path: Path) -> None:
    def runner(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "ERROR: No matching distribution found")

    cache = im.WheelCache(tmp_path / "cache", runner=runner)
    with pytest.raises(im.ImageBuildError) as info:
        cache.ensure(["fnfqueue==1.1.2"])
    message = str(info.value)
    assert "fnfqueue==1.1.2" in message and "No matching distribution" in message
    assert str(tmp_path / "cache") in message and im.WHEEL_CACHE_ENV in message


def test_wheel_pins_must_be_exact() -> None:
    with pytest.raises(im.ImageBuildError, match="exact pin"):
        im.parse_pin("fnfqueue>=1.1")
    assert im.parse_pin("fnfqueue == 1.1.2") == ("fnfqueue", "1.1.2")


def test_delay_image_declares_its_wheels_and_packages() -> None:
    pins = dict(im.parse_pin(p) for p in im.read_list(im.IMAGES_DIR / "delay" / "wheels.txt"))
    assert pins["fnfqueue"] == "1.1.2"
    packages = im.read_list(im.IMAGES_DIR / "delay" / "debian-packages.txt")
    assert {"iproute2", "iptables"} <= set(packages)
    assert im.read_list(im.IMAGES_DIR / "function" / "debian-packages.txt") == []  # kept lean


def test_prune_removes_only_older_tags_of_current_images() -> None:
    class Img:
        def __init__(self, tag: str, created: str) -> None:
            self.tags = [tag]
            self.attrs = {"Created": created}

    stock = {
        "coldstart-bench/echo:old": Img("coldstart-bench/echo:old", "2026-01-01T00:00:00Z"),
        "coldstart-bench/echo:cur": Img("coldstart-bench/echo:cur", "2026-01-02T00:00:00Z"),
        "coldstart-bench/echo:newer": Img("coldstart-bench/echo:newer", "2026-01-03T00:00:00Z"),
        "coldstart-bench/echo:busy": Img("coldstart-bench/echo:busy", "2025-12-01T00:00:00Z"),
    }
    removed: list[str] = []

    class Images:
        def get(self, ref: str) -> Img:
            return stock[ref]

        def list(self, name: str) -> list[Img]:
            return [img for tag, img in stock.items() if tag.startswith(name + ":")]

        def remove(self, ref: str) -> None:
            if ref.endswith(":busy"):
                raise docker.errors.APIError("conflict: image is being used by running container")
            removed.append(ref)

    client: Any = type("Client", (), {"images": Images()})()
    current = im.ImageSet("base", "coldstart-bench/echo:cur", "", "", "", "mmdebstrap", {})
    logged: list[str] = []
    assert im.prune_stale_images(client, current, log=logged.append) == ["coldstart-bench/echo:old"]
    assert removed == ["coldstart-bench/echo:old"]
    assert logged and "busy" in logged[0]
