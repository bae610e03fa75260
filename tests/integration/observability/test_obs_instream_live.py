"""In-stream failures reach the error ratio, with the real tritonserver and a real Prometheus.

A replica (real tritonserver 2.51, Caravan's simulated vLLM engine) answers 10 good
requests and 10 whose prompt exceeds the model length: the backend fails those inside
a gRPC-OK stream, and Triton counts them as successes, so neither Triton's failure
counter nor Envoy sees them. Prometheus runs the rendered rules over the replica's own
metrics: the in-stream failure rule and the error ratio must show them, and a replica
that served only good requests must show none.
Bounded: 20 requests, 60 s for the rules to fill in.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from obs_prom_server import PROMETHEUS, get_json, running_prometheus

from caravan.local.launch import Launcher, wait_until
from caravan.local.process import free_port
from caravan.observability import prometheus as prom
from caravan.observability.rules import ERROR_RATIO_5M, INSTREAM_1M
from caravan.spec import parse_spec
from caravan.triton.launcher import ReplicaOptions, ReplicaPlan

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed"),
]
MODEL = "demo"
MAX_MODEL_LEN = 64
SPEC = parse_spec({"models": [{"name": MODEL, "engine": {"model": "x", "max_model_len": MAX_MODEL_LEN}}]})


@pytest.fixture(scope="module")
def replica(module_launcher: Launcher) -> ReplicaPlan:
    """One ready replica of ``demo`` (started through ``caravan.local.launch``)."""
    return module_launcher.replica(f"{MODEL}-0", SPEC.model(MODEL), ReplicaOptions(time_scale=0.01)).plan


def stream_requests(endpoint: str, prompts: list[str]) -> list[str | None]:
    """Send each prompt on one stream (stream=false, 4 tokens); the error text or None of
    each answer, in the order the answers came."""
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client = grpcclient.InferenceServerClient(endpoint)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i, prompt in enumerate(prompts):
            text = grpcclient.InferInput("text_input", [1], "BYTES")
            text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
            params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
            params.set_data_from_numpy(np.array([json.dumps({"max_tokens": 4}).encode()], dtype=np.object_))
            client.async_stream_infer(MODEL, [text, params], request_id=str(i))
        return [None if err is None else str(err) for _, err in (results.get(timeout=30) for _ in prompts)]
    finally:
        client.stop_stream()
        client.close()


def _value(url: str, query: str) -> float | None:
    result = get_json(f"{url}/api/v1/query", {"query": query})["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _rules(tmp_path: Path) -> list[str]:
    (tmp_path / "rules").mkdir()
    for rel, text in prom.render(SPEC).items():
        if "/rules/" in rel:
            (tmp_path / "rules" / Path(rel).name).write_text(text)
    return ["rules/caravan-recording.yml"]


def test_instream_failures_feed_the_error_ratio(replica: ReplicaPlan, tmp_path: Path) -> None:
    config = prom.static_config(f"127.0.0.1:{free_port()}", {MODEL: [f"127.0.0.1:{replica.metrics_port}"]},
                               rule_files=_rules(tmp_path))
    with running_prometheus(tmp_path, config) as url:
        wait_until(lambda: _value(url, "sum(nv_inference_request_success)") == 0, 30, "a first scrape",
                   every_s=0.5)
        time.sleep(2)  # a few scrapes before the traffic, so rates see the increase
        too_long = "word " * (MAX_MODEL_LEN + 10)
        errors = stream_requests(replica.endpoint, ["hello there"] * 10 + [too_long] * 10)
        failed = [e for e in errors if e is not None]  # answers come in completion order
        assert len(failed) == 10
        assert all("longer than the maximum model length" in e for e in failed)
        # 20 handed to the engine (Triton: 20 successes), 10 finished: half failed in-stream.
        wait_until(lambda: _value(url, "sum(nv_inference_request_success)") == 20, 30, "20 successes",
                   every_s=0.5)
        assert _value(url, "sum(vllm:e2e_request_latency_seconds_count)") == 10
        assert _value(url, "sum(nv_inference_request_failure)") == 0
        wait_until(lambda: (_value(url, INSTREAM_1M) or 0) > 0, 30, f"{INSTREAM_1M} > 0", every_s=0.5)
        wait_until(lambda: _value(url, ERROR_RATIO_5M) is not None, 30, ERROR_RATIO_5M, every_s=0.5)
        assert _value(url, ERROR_RATIO_5M) == pytest.approx(0.5, abs=0.05)

