"""deploy/kubernetes/ checked offline: schema (kubernetes-validate's bundled schemas, strict), the
security context every pod needs, and that the pieces fit together (paths, pools, runtime class)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from components.pool_config import load_config

# Both come with the dev extra (kubernetes-validate requires PyYAML).
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="manifest validation needs kubernetes-validate (pyproject dev extra)"
)
yaml = pytest.importorskip("yaml", reason="manifest validation needs PyYAML (pyproject dev extra)")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
# Oldest and newest minor versions checked: RuntimeClass overhead, seccompProfile fields are GA in both.
K8S_VERSIONS = ("1.28", "1.37")


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCS = _documents()


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for _, d in DOCS:
        if d["kind"] == "Pod":
            specs.append((d["metadata"]["name"], d["spec"]))
        elif d["kind"] in ("DaemonSet", "Deployment"):
            specs.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
    return specs


def _manager_config(tmp_path: Path) -> Any:
    (cm,) = [c for c in _by_kind("ConfigMap") if c["metadata"]["name"] == "cpm-config"]
    path = tmp_path / "config.json"
    path.write_text(cm["data"]["config.json"])
    return load_config(["--config", str(path)])


def test_the_expected_objects_are_there() -> None:
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for _, d in DOCS)
    assert kinds == [
        "ConfigMap/cpm-config",
        "DaemonSet/cpm",
        "Deployment/echo",
        "Namespace/coldstart-bench",
        "NetworkPolicy/function-no-network",
        "Pod/function-injected",
        "Pod/function-relay-gvisor",
        "RuntimeClass/gvisor",
        "Service/echo",
    ]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
def test_manifest_validates_against_the_schema(name: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    """The check can fail: a misspelt field and a wrong type are both errors in strict mode."""
    pod = json.loads(json.dumps(_by_kind("Pod")[0]))
    pod["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)
    pod = json.loads(json.dumps(_by_kind("Pod")[0]))
    pod["spec"]["hostNetwork"] = "no"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(("name", "spec"), _pod_specs(), ids=[n for n, _ in _pod_specs()])
def test_every_pod_has_the_locked_down_security_context(name: str, spec: dict[str, Any]) -> None:
    assert spec.get("hostNetwork", False) is False
    assert spec.get("automountServiceAccountToken") is False
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] >= 10000
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert "limits" in container["resources"]
    for init in spec.get("initContainers", []):
        # The one root step: chown of the hostPath directory, with only the capabilities it needs.
        sc = init["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"] and set(sc["capabilities"]["add"]) <= {"CHOWN", "FOWNER"}
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True


def _mount(spec: dict[str, Any], container: dict[str, Any], path_prefix: str) -> tuple[str, dict[str, Any]]:
    for vm in container["volumeMounts"]:
        if path_prefix.startswith(vm["mountPath"]):
            (vol,) = [v for v in spec["volumes"] if v["name"] == vm["name"]]
            return vm["mountPath"], {"readOnly": vm.get("readOnly", False), **vol}
    raise AssertionError(f"{container['name']} mounts nothing at {path_prefix}")


def test_functions_reach_the_managers_socket_on_the_same_host_path(tmp_path: Path) -> None:
    cfg = _manager_config(tmp_path)
    socket_dir = str(Path(cfg.socket).parent)
    (ds,) = _by_kind("DaemonSet")
    ds_spec = ds["spec"]["template"]["spec"]
    (manager,) = ds_spec["containers"]
    _, manager_vol = _mount(ds_spec, manager, cfg.socket)
    assert manager_vol["hostPath"]["type"] == "DirectoryOrCreate" and not manager_vol["readOnly"]
    assert "/etc/cpm/config.json" in manager["command"]
    pods = _by_kind("Pod")
    assert pods
    for pod in pods:
        spec = pod["spec"]
        (function,) = spec["containers"]
        args = function["command"]
        sock = args[args.index("--socket") + 1]
        mount_path, vol = _mount(spec, function, sock)
        assert vol["hostPath"] == {"path": manager_vol["hostPath"]["path"], "type": "Directory"}
        assert vol["readOnly"] is True
        # Same file: the manager's socket path relative to its directory is the function's.
        assert Path(sock).relative_to(mount_path) == Path(cfg.socket).relative_to(socket_dir)
        assert "--no-fallback" in args, "a cluster example must show injection, not silently fall back"
        # The manager's peer check: the function's primary gid is allowed.
        assert spec["securityContext"]["runAsGroup"] in cfg.allow_gids, shlex.join(args)


def test_each_function_asks_a_pool_that_fits_its_runtime(tmp_path: Path) -> None:
    cfg = _manager_config(tmp_path)
    runtime_classes = {rc["metadata"]["name"]: rc for rc in _by_kind("RuntimeClass")}
    assert runtime_classes["gvisor"]["handler"] == "runsc"
    for pod in _by_kind("Pod"):
        args = pod["spec"]["containers"][0]["command"]
        pool = cfg.pools[args[args.index("--pool") + 1]]
        handoff = pool.handoff  # a validated PoolConfig field
        assert pod["metadata"]["labels"]["coldstart-bench/handoff"] == ("relay" if handoff == "relay" else "injected")
        runtime_class = pod["spec"].get("runtimeClassName")
        if runtime_class is not None:
            assert runtime_class in runtime_classes
        # gVisor drops TCP fds from host sockets: a sandboxed pod must use a relay pool.
        if runtime_class and runtime_classes[runtime_class]["handler"] == "runsc":
            assert handoff == "relay", pod["metadata"]["name"]


def test_function_pods_have_no_network_of_their_own() -> None:
    (policy,) = _by_kind("NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]  # nothing allowed
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for pod in _by_kind("Pod"):
        assert selector.items() <= pod["metadata"]["labels"].items()


def test_the_echo_backend_matches_the_pool_targets(tmp_path: Path) -> None:
    cfg = _manager_config(tmp_path)
    (svc,) = _by_kind("Service")
    meta, port = svc["metadata"], svc["spec"]["ports"][0]["port"]
    host = f"{meta['name']}.{meta['namespace']}.svc.cluster.local:{port}"
    assert {p.target for p in cfg.pools.values()} == {host}
