"""caravan.triton.settings (JSON round trip, validation), repository (the files a
replica loads) and launcher (argv, settings, paths), without starting tritonserver."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import caravan
from caravan.simulator.engine import EngineConfig
from caravan.spec import EngineArgs, ModelSpec
from caravan.triton.launcher import FAULT_FILE, ReplicaOptions, ReplicaPlan, ServerTls, bare_model, pytriton_dir
from caravan.triton.repository import MODEL_VERSION, write_backends, write_model
from caravan.triton.settings import SETTINGS_FILE, SimulatorSettings, fault_mode

# -- settings -----------------------------------------------------------------------


@pytest.mark.parametrize("settings", [
    SimulatorSettings(),
    SimulatorSettings(engine=EngineConfig(max_num_seqs=8, max_model_len=512, kv_cache_tokens=4096),
                      time_scale=0.01, stream_interval_ms=0.0, load_delay_s=1.5, fixed_ms_per_token=2.0,
                      fault_file="/tmp/x"),
], ids=["defaults", "everything"])
def test_settings_json_round_trip(settings: SimulatorSettings) -> None:
    assert SimulatorSettings.from_json(settings.to_json()) == settings


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"time_scale": 0.0}, "time_scale"),
    ({"time_scale": float("inf")}, "time_scale"),
    ({"stream_interval_ms": -1.0}, "stream_interval_ms"),
    ({"load_delay_s": float("nan")}, "load_delay_s"),
    ({"fixed_ms_per_token": -0.5}, "fixed_ms_per_token"),
], ids=["scale-zero", "scale-inf", "interval-negative", "delay-nan", "fixed-negative"])
def test_settings_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        SimulatorSettings(**kwargs)


@pytest.mark.parametrize(("text", "exc"), [
    ("{ not json", json.JSONDecodeError),
    ('{"no_such_field": 1}', TypeError),
    ('{"engine": {"max_model_len": 1}}', ValueError),
], ids=["not-json", "unknown-field", "bad-engine"])
def test_settings_from_bad_json(text: str, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        SimulatorSettings.from_json(text)


# -- repository ---------------------------------------------------------------------

MODEL = ModelSpec(name="llama", engine=EngineArgs(model="meta/llama", max_model_len=2048))


def test_write_model_writes_the_production_config_and_the_settings(tmp_path: Path) -> None:
    settings = SimulatorSettings(time_scale=0.5)
    root = write_model(tmp_path / "models", MODEL, settings)
    config = (root / "llama" / "config.pbtxt").read_text()
    assert 'name: "llama"' in config and 'backend: "vllm"' in config
    assert "decoupled: true" in config and "ENABLE_VLLM_HEALTH_CHECK" in config and "REPORT_CUSTOM_METRICS" in config
    version = root / "llama" / MODEL_VERSION
    assert json.loads((version / "model.json").read_text())["max_model_len"] == 2048
    assert SimulatorSettings.from_json((version / SETTINGS_FILE).read_text()) == settings


def _fake_wheel(root: Path) -> Path:
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for rel in ("backends/python/libtriton_python.so", "backends/python/triton_python_backend_utils.py",
                f"python_backend_stubs/{py}/triton_python_backend_stub"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return root


def test_write_backends_copies_the_python_backend_and_installs_vllm(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "wheel")
    out = write_backends(tmp_path / "backends", wheel)
    python = out / "python"
    assert sorted(p.name for p in python.iterdir()) == [
        "libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py"]
    assert not (python / "libtriton_python.so").is_symlink()  # C19: a real file under the backend dir
    shim = (out / "vllm" / "model.py").read_text()
    assert "from caravan.triton.model import TritonPythonModel" in shim
    # the shim runs the caravan that wrote it, whatever is installed
    assert repr(str(Path(caravan.__file__).resolve().parent.parent)) in shim
    assert write_backends(tmp_path / "backends", wheel) == out  # idempotent


def test_write_backends_names_a_missing_wheel_file(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "wheel")
    (wheel / "backends/python/libtriton_python.so").unlink()
    with pytest.raises(FileNotFoundError, match=r"libtriton_python\.so"):
        write_backends(tmp_path / "backends", wheel)


# -- launcher -----------------------------------------------------------------------

def test_bare_model_has_every_default() -> None:
    model = bare_model("m")
    assert model.name == "m" and model.engine.model == "simulated" and model.engine.max_model_len == 4096


@pytest.mark.parametrize(("options", "present", "absent"), [
    (ReplicaOptions(),
     ["--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", "--allow-http=false", "--allow-metrics=true",
      "--model-control-mode=explicit", "--load-model=m", "--grpc-port=9001", "--metrics-port=9002",
      "--exit-timeout-secs=30", "--log-verbose=0"],
     ["--grpc-use-ssl=true"]),
    (ReplicaOptions(host="10.0.0.5", exit_timeout_s=7, log_verbose=1),
     ["--grpc-address=10.0.0.5", "--metrics-address=10.0.0.5", "--exit-timeout-secs=7", "--log-verbose=1"],
     ["--grpc-address=127.0.0.1"]),
    (ReplicaOptions(tls=ServerTls(Path("/c.pem"), Path("/k.pem"))),
     ["--grpc-use-ssl=true", "--grpc-server-cert=/c.pem", "--grpc-server-key=/k.pem"],
     ["--grpc-use-ssl-mutual=true"]),
    (ReplicaOptions(tls=ServerTls(Path("/c.pem"), Path("/k.pem"), Path("/ca.pem"))),
     ["--grpc-use-ssl=true", "--grpc-root-cert=/ca.pem", "--grpc-use-ssl-mutual=true"], []),
], ids=["defaults", "host", "tls", "mtls"])
def test_argv(tmp_path: Path, options: ReplicaOptions, present: list[str], absent: list[str]) -> None:
    plan = ReplicaPlan(tmp_path, bare_model("m"), 9001, 9002, options)
    argv = plan.argv(tmp_path / "models", tmp_path / "backends")
    assert argv[0] == str(pytriton_dir() / "bin" / "tritonserver")
    assert f"--model-repository={tmp_path / 'models'}" in argv
    assert f"--backend-directory={tmp_path / 'backends'}" in argv
    assert all(a in argv for a in present), argv
    assert not any(a in argv for a in absent), argv


def test_plan_settings_paths_and_prepare(tmp_path: Path) -> None:
    opts = ReplicaOptions(time_scale=0.2, stream_interval_ms=5.0, load_delay_s=0.5, fixed_ms_per_token=3.0)
    plan = ReplicaPlan(tmp_path / "state", MODEL, 9001, 9002, opts)
    assert plan.endpoint == "127.0.0.1:9001"
    assert plan.fault_file == tmp_path / "state" / FAULT_FILE
    s = plan.settings()
    assert (s.time_scale, s.stream_interval_ms, s.load_delay_s, s.fixed_ms_per_token, s.fault_file) == (
        0.2, 5.0, 0.5, 3.0, str(plan.fault_file))
    assert s.engine.max_model_len == 2048
    plan.fault_file.parent.mkdir(parents=True)
    plan.fault_file.touch()
    argv, env = plan.prepare()
    assert not plan.fault_file.exists()  # a fresh start has a live engine
    assert (tmp_path / "state" / "models" / "llama" / MODEL_VERSION / SETTINGS_FILE).exists()
    assert (tmp_path / "state" / "backends" / "vllm" / "model.py").exists()
    assert env["LD_LIBRARY_PATH"].split(":")[0].endswith("nvidia_pytriton.libs")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert argv[0].endswith("tritonserver")


def test_prepare_refuses_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^time_scale: "):
        ReplicaPlan(tmp_path, MODEL, 1, 2, ReplicaOptions(time_scale=-1.0)).prepare()


@pytest.mark.parametrize(("mode", "want"), [("none", "none"), ("dead", "dead"), ("hang", "hang")],
                         ids=["cleared", "dead", "hang"])
def test_inject_fault_writes_what_the_model_reads(tmp_path: Path, mode: str, want: str) -> None:
    """Test seam: ``inject_fault`` writes the file ``fault_mode`` reads in the model."""
    plan = ReplicaPlan(tmp_path, MODEL, 9001, 9002)
    plan.inject_fault("dead")  # something to clear
    plan.inject_fault(mode)
    assert fault_mode(str(plan.fault_file)) == want
    assert [p.name for p in tmp_path.iterdir()] == ([FAULT_FILE] if want != "none" else [])


def test_fault_mode_of_a_touched_file_is_dead_and_a_bad_mode_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").touch()
    assert fault_mode(str(tmp_path / "f")) == "dead"
    assert fault_mode("") == "none"
    with pytest.raises(ValueError, match="fault mode 'slow'"):
        ReplicaPlan(tmp_path, MODEL, 9001, 9002).inject_fault("slow")
