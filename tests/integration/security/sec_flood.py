"""Flood clients for the per-inference rate limit (attack 3 of issue 17): many requests on
one ``ModelStreamInfer`` stream, or a few on each of many streams, and a well-behaved
client timing its requests. Test and benchmark code only (benchmarks/inference_limit.py
loads this file); every loop is bounded in count and time.

All clients use tritonclient's stream API (``stream=false`` requests: one final answer
each) and send their credentials in ``headers`` (``api_key(key)``: the API key).
"""

from __future__ import annotations

import contextlib
import json
import queue
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MODEL = "alpha"


def inputs(max_tokens: int = 4, text: str = "flood") -> list[grpcclient.InferInput]:
    def t(name: str, dtype: str, value: Any) -> grpcclient.InferInput:
        x = grpcclient.InferInput(name, [1], dtype)
        x.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return x

    return [t("text_input", "BYTES", text.encode()),
            t("sampling_parameters", "BYTES", json.dumps({"max_tokens": max_tokens}).encode()),
            t("stream", "BOOL", False)]


@dataclass(frozen=True)
class StreamOutcome:
    """What one stream got: answers (final responses), how it ended ("OK" when every
    request was answered and nothing failed, else the gRPC status name, "TIMEOUT" when
    ``timeout_s`` passed first), the status message, and when (monotonic seconds) its
    first request was sent and its last event arrived."""

    answered: int
    status: str
    message: str
    started: float
    ended: float


def api_key(key: str) -> dict[str, str]:
    return {"x-api-key": key}


def one_stream(url: str, headers: dict[str, str], n: int, timeout_s: float = 10.0,
               max_tokens: int = 4, model: str = MODEL, text: str = "flood") -> StreamOutcome:
    """Send ``n`` requests to ``model`` (the name in each request; route it with a model
    header in ``headers``) at once on one stream, then read until all are answered, the
    stream fails, or ``timeout_s`` passes."""
    got: queue.Queue[object] = queue.Queue()
    answered, status, message = 0, "TIMEOUT", ""
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(lambda result, error: got.put(error or result),
                            headers=headers, stream_timeout=timeout_s + 5)
        started = time.monotonic()
        with contextlib.suppress(InferenceServerException):  # the stream may end while sending
            for i in range(n):
                client.async_stream_infer(model, inputs(max_tokens, text), request_id=str(i))
        deadline = started + timeout_s
        while answered < n and (left := deadline - time.monotonic()) > 0:
            try:
                item = got.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(item, InferenceServerException):
                status, message = str(item.status()).removeprefix("StatusCode."), str(item.message())
                break
            answered += 1
        ended = time.monotonic()
        if answered == n:
            status = "OK"
        client.stop_stream()
    return StreamOutcome(answered, status, message, started, ended)


def many_streams(url: str, headers: dict[str, str], streams: int, per_stream: int,
                 timeout_s: float = 10.0) -> list[StreamOutcome]:
    """``streams`` streams one after the other, ``per_stream`` requests on each."""
    return [one_stream(url, headers, per_stream, timeout_s) for _ in range(streams)]


def allowed(burst: int, per_s: float, outcomes: list[StreamOutcome]) -> float:
    """The most answers a client limited to ``per_s`` with ``burst`` may get over the
    span of ``outcomes``: burst + per_s x seconds (plus one for the token that may
    refill while the last request is answered)."""
    span = max(o.ended for o in outcomes) - min(o.started for o in outcomes)
    return burst + per_s * span + 1


def timed_requests(url: str, headers: dict[str, str], n: int, pause_s: float = 0.0,
                   until: float | None = None, model: str = MODEL) -> list[tuple[str, float]]:
    """Up to ``n`` requests, one stream each, one after the other (``pause_s`` apart),
    stopping at monotonic time ``until``: (status, seconds) per request."""
    out: list[tuple[str, float]] = []
    for _ in range(n):
        if until is not None and time.monotonic() >= until:
            break
        got = one_stream(url, headers, 1, timeout_s=10.0, model=model)
        out.append((got.status, got.ended - got.started))
        time.sleep(pause_s)
    return out
