"""Kernel TLS proven on a kernel that has it: Debian's kernel under QEMU (coldstart_bench.ktls_vm).

One boot runs every check inside the guest (components/ktls_vm_guest.py); this test asserts each
of them with what the guest saw. The kernel package and the guest image are cached between runs
(~/.cache/coldstart-bench/ktls-vm), so only the first run pays for the download and the build.
"""

from __future__ import annotations

from typing import Any

import pytest

from coldstart_bench import ktls_vm

SUITES = {
    "echo_aes128": "TLS_AES_128_GCM_SHA256",
    "echo_aes256": "TLS_AES_256_GCM_SHA384",
    "echo_chacha": "TLS_CHACHA20_POLY1305_SHA256",
}


# About 1.5 min on a quiet 2-core machine (software emulation); the bound only catches a hang,
# generous because a loaded machine slows the emulated guest several-fold.
BOOT_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def vm() -> ktls_vm.VmRun:
    try:
        return ktls_vm.run_vm({"checks": True, "figures": 0}, timeout_s=BOOT_TIMEOUT_S)
    except ktls_vm.VmUnavailable as exc:
        pytest.skip(f"no VM for the kernel TLS test here: {exc}")


def _checks(vm: ktls_vm.VmRun) -> dict[str, Any]:
    result = vm.result
    assert result.get("error") is None, f"{result.get('error')}\n{result.get('traceback')}\n{result.get('manager_log')}"
    checks = result["checks"]
    assert isinstance(checks, dict)
    return checks


def test_guest_runs_debian_kernel_with_the_tls_ulp(vm: ktls_vm.VmRun) -> None:
    assert vm.result["kernel_release"] == vm.kernel.release
    assert "tls" in vm.result["ulp"], vm.result["ulp"]


@pytest.mark.parametrize("check", sorted(SUITES))
def test_cold_function_echoes_through_kernel_tls_without_libcrypto(vm: ktls_vm.VmRun, check: str) -> None:
    got = _checks(vm)[check]
    assert got["error"] is None and got["path"] == "ktls", got
    assert got["suite"] == SUITES[check], got
    assert got["server_seq"] == 2, got  # the backend's two tickets, consumed by the manager
    assert got["maps_seen"] > 0 and got["crypto_mapped"] == [], got
    assert got["ok"] is True, got


def test_tickets_are_consumed_before_hand_out(vm: ktls_vm.VmRun) -> None:
    got = _checks(vm)["tickets_consumed"]
    assert got["tickets_consumed"] == 2 and got["server_seq"] == 2, got
    assert got["first_record_type"] == 23 and got["echoed"] is True, got
    assert got["secrets_in_reply"] is False, got  # the kernel holds the keys; the reply carries none
    assert got["ok"] is True


def test_close_notify_and_alert_are_named_function_errors(vm: ktls_vm.VmRun) -> None:
    checks = _checks(vm)
    closed, alert = checks["close_notify"], checks["alert"]
    assert closed["function_ok"] is False and "close_notify" in closed["error"], closed
    assert alert["function_ok"] is False and "alert internal_error (80)" in alert["error"], alert
    assert closed["ok"] is True and alert["ok"] is True


def test_key_update_is_reported_never_returned_as_data(vm: ktls_vm.VmRun) -> None:
    checks = _checks(vm)
    reported, raw = checks["key_update"], checks["key_update_raw"]
    assert reported["function_ok"] is False and "KeyUpdate" in reported["error"], reported
    assert "cannot rekey" in reported["error"], reported
    # On the raw socket: the KeyUpdate record (handshake type 24), then EBADMSG, not the echo.
    assert raw["records"][:1] == [[22, "18"]] and raw["after_key_update"] == "EBADMSG", raw
    assert reported["ok"] is True and raw["ok"] is True


def test_negative_controls_fail_as_they_must(vm: ktls_vm.VmRun) -> None:
    checks = _checks(vm)
    seq = checks["wrong_sequence_fails"]
    assert seq["right"] == "echo", seq
    assert "EBADMSG" in seq["wrong"] and "authentication" in seq["wrong"], seq
    direct = checks["direct_maps_libcrypto"]
    assert any("libcrypto" in lib for lib in direct["crypto_mapped"]), direct
    assert seq["ok"] is True and direct["ok"] is True


def test_every_guest_check_holds(vm: ktls_vm.VmRun) -> None:
    checks = _checks(vm)
    assert len(checks) == 10
    assert [name for name, got in checks.items() if not got["ok"]] == []
    assert vm.result.get("scripted_server_errors") == {}
