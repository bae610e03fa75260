"""A fake ``triton_python_backend_utils`` (the parts Caravan's model uses) and fake
requests, so the model and its metrics run in-process without tritonserver.

The fakes record what the model does: responses sent per request (with flags),
metric families with their increments and observations, unload requests, log lines.
Thread-safe where the model uses them from several threads (senders, log).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FINAL = 1


class FakeTensor:
    def __init__(self, name: str, array: Any) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> Any:
        return self._array


class FakeTritonError:
    INTERNAL = "INTERNAL"
    UNAVAILABLE = "UNAVAILABLE"
    CANCELLED = "CANCELLED"

    def __init__(self, message: str, code: str = "INTERNAL") -> None:
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> str:
        return self._code


@dataclass
class FakeResponse:
    output_tensors: list[FakeTensor] = field(default_factory=list)
    error: FakeTritonError | None = None

    def outputs(self) -> dict[str, Any]:
        return {t.name(): t.as_numpy() for t in self.output_tensors}


class FakeSender:
    """A request's response sender: records (response, flags); ``cancel()`` flips
    ``is_cancelled``."""

    def __init__(self) -> None:
        self.sent: list[tuple[FakeResponse, int]] = []
        self.done = threading.Event()
        self._cancelled = False
        self._lock = threading.Lock()

    def send(self, response: FakeResponse | None = None, flags: int = 0) -> None:
        with self._lock:
            assert not self.done.is_set(), "sent after the final flag"
            self.sent.append((response if response is not None else FakeResponse(), flags))
            if flags & FINAL:
                self.done.set()

    def is_cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def wait(self, timeout_s: float = 5.0) -> list[tuple[FakeResponse, int]]:
        assert self.done.wait(timeout_s), f"no final response after {timeout_s}s: {self.sent}"
        return list(self.sent)


class FakeRequest:
    def __init__(self, inputs: dict[str, Any], parameters: dict[str, Any] | None = None) -> None:
        self.inputs = {k: FakeTensor(k, v) for k, v in inputs.items()}
        self._parameters = json.dumps(parameters or {})
        self.sender = FakeSender()

    def parameters(self) -> str:
        return self._parameters

    def get_response_sender(self) -> FakeSender:
        return self.sender


class FakeMetric:
    def __init__(self, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.labels = labels
        self.buckets = buckets
        self.increments: list[float] = []
        self.observations: list[float] = []

    def increment(self, value: float) -> None:
        self.increments.append(value)

    def observe(self, value: float) -> None:
        self.observations.append(value)


class FakeMetricFamily:
    COUNTER = "COUNTER"
    GAUGE = "GAUGE"
    HISTOGRAM = "HISTOGRAM"
    created: list[FakeMetricFamily] = []

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name = name
        self.description = description
        self.kind = kind
        self.metrics: list[FakeMetric] = []
        FakeMetricFamily.created.append(self)

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> FakeMetric:
        metric = FakeMetric(labels, buckets)
        self.metrics.append(metric)
        return metric


class FakeLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _add(self, level: str, msg: str) -> None:
        with self._lock:
            self.lines.append((level, msg))

    def log_info(self, msg: str) -> None:
        self._add("info", msg)

    def log_warn(self, msg: str) -> None:
        self._add("warn", msg)

    def log_error(self, msg: str) -> None:
        self._add("error", msg)

    def text(self) -> str:
        with self._lock:
            return "\n".join(m for _, m in self.lines)


class FakePbUtils:
    """The module object: ``import triton_python_backend_utils as pb_utils``."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    Tensor = FakeTensor
    InferenceResponse = FakeResponse
    TritonError = FakeTritonError

    def __init__(self) -> None:
        self.Logger = FakeLogger()
        self.unloaded: list[str] = []
        FakeMetricFamily.created = []
        self.MetricFamily = FakeMetricFamily

    @staticmethod
    def get_input_tensor_by_name(request: FakeRequest, name: str) -> FakeTensor | None:
        return request.inputs.get(name)

    def unload_model(self, name: str) -> None:
        self.unloaded.append(name)


class FakeConfig:
    """``auto_complete_model_config``."""

    def __init__(self, inputs: list[dict[str, Any]] | None = None, outputs: list[dict[str, Any]] | None = None) -> None:
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.policy: dict[str, Any] = {}
        self.max_batch_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"input": self.inputs, "output": self.outputs}

    def add_input(self, tensor: dict[str, Any]) -> None:
        self.inputs.append(tensor)

    def add_output(self, tensor: dict[str, Any]) -> None:
        self.outputs.append(tensor)

    def set_model_transaction_policy(self, policy: dict[str, Any]) -> None:
        self.policy = policy

    def set_max_batch_size(self, n: int) -> None:
        self.max_batch_size = n


def text(value: str | bytes) -> Any:
    return np.array([value.encode() if isinstance(value, str) else value], dtype=np.object_)


def flag(value: bool) -> Any:
    return np.array([value], dtype=bool)
