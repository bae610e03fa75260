"""Replica settings and the CLI's validation of them (no server is started)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from caravan.cli import app
from caravan.replica.config import ReplicaConfig


def test_replica_id_defaults_to_model_and_port() -> None:
    assert ReplicaConfig(model="llama", port=9100, metrics_port=9300).replica_id == "llama-9100"
    assert ReplicaConfig(model="m", port=1, metrics_port=2, replica_id="x").replica_id == "x"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_scale": 0.0}, "time_scale: must be a number > 0 (got 0.0)"),
        ({"time_scale": float("inf")}, "time_scale: must be a number > 0"),
        ({"load_delay_s": -1.0}, "load_delay_s: must be a number >= 0"),
        ({"stream_interval_ms": -5.0}, "stream_interval_ms: must be a number >= 0"),
        ({"drain_timeout_s": float("nan")}, "drain_timeout_s: must be a number >= 0"),
        ({"max_input_bytes": 0}, "max_input_bytes: must be >= 1"),
        ({"port": 70000}, "port: must be a TCP port 0-65535 (got 70000)"),
        ({"metrics_port": 9100}, "metrics_port: must differ from port (both 9100)"),
        ({"model": ""}, "model: must not be empty"),
    ],
    ids=[
        "scale-zero",
        "scale-inf",
        "load",
        "interval",
        "drain-nan",
        "input-bytes",
        "port",
        "same-ports",
        "model",
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"model": "llama", "port": 9100, "metrics_port": 9300}
    base.update(kwargs)
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        ReplicaConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--time-scale", "0"], "--time-scale"),
        (["--max-num-seqs", "0"], "--max-num-seqs"),
        (["--kv-cache-tokens", "10"], "--kv-cache-tokens"),
        (["--load-delay-s", "-1"], "--load-delay-s"),
    ],
    ids=["time-scale", "max-num-seqs", "kv-cache", "load-delay"],
)
def test_cli_rejects_bad_values_naming_the_flag(args: list[str], flag: str) -> None:
    result = CliRunner().invoke(
        app, ["replica", "--model", "llama", "--port", "9100", "--metrics-port", "9300", *args]
    )
    assert result.exit_code == 2
    assert flag in result.output
