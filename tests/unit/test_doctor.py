"""`appliance doctor`: each check on injected facts, then one run against this machine."""

from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import pytest

from appliance import cli
from appliance.config import Settings
from appliance.tools import doctor
from appliance.tools.doctor import Facts
from tests.conftest import make_settings

GIB = 2**30
GOOD = Facts(
    cpu_flags=frozenset({"pni", "ssse3", "avx", "avx2", "fma", "f16c", "bmi2"}),
    build_features=frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "FMA", "F16C", "BMI2",
                              "LLAMAFILE", "OPENMP"}),
    gpu_backend=False, gpu_devices=(), model_bytes=100 * 2**20, model_present=True,
    kv_bytes=800 * 2**20, free_disk=50 * GIB, available_memory=16 * GIB,
    port_error="", data_dir_error="")


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def statuses(facts: Facts, settings: Settings) -> dict[str, str]:
    return {f.check: f.status for f in doctor.diagnose(facts, settings)}


def test_a_good_machine_passes_every_check(settings: Settings) -> None:
    findings = doctor.diagnose(GOOD, settings)
    assert {f.status for f in findings} == {"ok"}
    assert not doctor.blocking(findings)
    assert [f.check for f in findings] == ["cpu", "gpu", "model", "memory", "disk", "port",
                                           "data_dir"]


def test_a_cpu_without_avx2_blocks_and_names_the_feature(settings: Settings) -> None:
    facts = dataclasses.replace(GOOD, cpu_flags=GOOD.cpu_flags - {"avx2", "fma"})
    finding = doctor.check_cpu(facts)
    assert finding.status == "fail"
    assert "AVX2" in finding.message and "FMA" in finding.message
    assert "native/build.sh" in finding.fix
    assert doctor.blocking(doctor.diagnose(facts, settings))


def test_unknown_cpu_flags_only_warn() -> None:
    assert doctor.check_cpu(dataclasses.replace(GOOD, cpu_flags=frozenset())).status == "warn"


def test_gpu_layers_need_a_gpu_build_and_a_device() -> None:
    assert doctor.check_gpu(GOOD, 0).status == "ok"
    no_build = doctor.check_gpu(GOOD, 99)
    assert no_build.status == "fail" and "no GPU backend" in no_build.message
    no_device = doctor.check_gpu(dataclasses.replace(GOOD, gpu_backend=True), -1)
    assert no_device.status == "fail" and "no GPU device" in no_device.message
    ok = doctor.check_gpu(dataclasses.replace(GOOD, gpu_backend=True,
                                              gpu_devices=("/dev/nvidia0",)), -1)
    assert ok.status == "ok"


def test_memory_is_weighed_against_model_plus_kv_cache() -> None:
    need = GOOD.model_bytes + GOOD.kv_bytes + doctor.RUNTIME_MEMORY
    assert doctor.check_memory(dataclasses.replace(GOOD, available_memory=need - 1)
                               ).status == "fail"
    assert doctor.check_memory(dataclasses.replace(GOOD, available_memory=need + 1)
                               ).status == "warn"
    assert doctor.check_memory(dataclasses.replace(GOOD, available_memory=2 * need)
                               ).status == "ok"
    assert doctor.check_memory(dataclasses.replace(GOOD, available_memory=0)).status == "warn"


def test_disk_needs_room_for_a_missing_model() -> None:
    tight = dataclasses.replace(GOOD, free_disk=doctor.DISK_HEADROOM + 1)
    assert doctor.check_disk(tight).status == "ok"
    assert doctor.check_disk(dataclasses.replace(tight, model_present=False)).status == "fail"


def test_port_model_and_data_dir_problems_block(settings: Settings) -> None:
    facts = dataclasses.replace(GOOD, port_error="Address already in use",
                                model_present=False, data_dir_error="permission denied")
    assert statuses(facts, settings) == {
        "cpu": "ok", "gpu": "ok", "model": "fail", "memory": "ok", "disk": "ok",
        "port": "fail", "data_dir": "fail"}


def test_real_facts_parsers(tmp_path: Path) -> None:
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 0 | LLAMAFILE = 1 |"
    assert doctor.build_features(info) == {"SSE3", "AVX", "AVX2", "LLAMAFILE"}
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu avx avx2 fma\n")
    assert doctor.cpu_flags(cpuinfo) == {"fpu", "avx", "avx2", "fma"}
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:    2048 kB\n")
    assert doctor.available_memory(meminfo) == 2 * 2**20
    assert doctor.cpu_flags(tmp_path / "absent") == frozenset()


def test_port_in_use_is_seen() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert doctor.port_error("127.0.0.1", port) != ""
    assert doctor.port_error("127.0.0.1", port) == ""


def test_data_dir_permissions(tmp_path: Path) -> None:
    assert doctor.data_dir_error(tmp_path / "new" / "deeper") == ""  # creatable
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("x")
    assert "not a directory" in doctor.data_dir_error(locked / "file" / "data")
    if Path("/proc/self").is_dir():  # /proc takes no regular files, even from root
        assert "not writable" in doctor.data_dir_error(Path("/proc/appliance-data"))


def test_real_run_on_this_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path)
    facts = doctor.gather(settings)
    assert facts.model_present and facts.model_bytes > 50 * 2**20
    assert "AVX2" in facts.build_features or sys.platform != "linux"
    assert facts.kv_bytes > 0  # sized from the GGUF metadata
    code = cli.main(["doctor", "--data-dir", str(tmp_path), "--models-dir",
                     str(settings.models_dir), "--port", str(settings.port)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "[ok  ] cpu" in out and "[ok  ] port" in out
    code = cli.main(["doctor", "--data-dir", str(tmp_path), "--models-dir",
                     str(settings.models_dir), "--port", str(settings.port),
                     "--n-gpu-layers", "-1"])
    out = capsys.readouterr().out
    if not facts.gpu_backend:
        assert code == 1 and "[FAIL] gpu" in out and "fix:" in out
