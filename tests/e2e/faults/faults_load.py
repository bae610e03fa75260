"""Bounded tritonclient load for the fault scenarios (test code, also used by
``benchmarks/reliability.py``).

* ``UnaryLoad``: ``workers`` threads, each with its own ``InferenceServerClient``,
  sending small unary ModelInfer requests through Envoy, one after the other (``pause_s``
  apart), until
  ``stop()``, ``max_requests`` (total) or ``max_s`` seconds. Every request has a client
  deadline (``timeout_s``), so nothing can hang. It records, per request, when it
  ended, whether it failed, the gRPC status and which replica served it.
* ``StreamProbe``: one long streaming request per gRPC stream (``ModelStreamInfer``
  with ``stream=true``), to see what a fault does to streams in flight: each probe
  records the replica of its first chunk and how it ended (completed, or the status it
  failed with, or ``HUNG`` if nothing ended it before its deadline).

Times are ``time.monotonic()`` seconds. Thread-safe reads through ``summary()``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

REPLICA_PARAM = "caravan_replica_id"


def text_inputs(prompt: str, max_tokens: int, stream: bool = False) -> list[grpcclient.InferInput]:
    """The vLLM tensor contract: text_input, sampling_parameters (+ stream)."""
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
    params.set_data_from_numpy(
        np.array([json.dumps({"max_tokens": max_tokens}).encode()], dtype=np.object_))
    out = [text, params]
    if stream:
        flag = grpcclient.InferInput("stream", [1], "BOOL")
        flag.set_data_from_numpy(np.array([True], dtype=bool))
        out.append(flag)
    return out


def status_of(exc: Exception) -> str:
    """The gRPC status name of a tritonclient error (``StatusCode.UNAVAILABLE`` ->
    ``UNAVAILABLE``), or the exception type when it carries none."""
    if isinstance(exc, InferenceServerException):
        st = exc.status()
        if st:
            return str(st).removeprefix("StatusCode.")
    return type(exc).__name__


@dataclass(frozen=True)
class Result:
    """One unary request: when it ended, the replica that served it or its error."""

    ended: float
    replica: str | None
    status: str = "OK"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


@dataclass
class UnaryLoad:
    url: str
    model: str
    workers: int = 4
    max_requests: int = 20000
    max_s: float = 60.0
    timeout_s: float = 10.0
    pause_s: float = 0.005  # between one worker's requests (keeps 2 cores usable)
    max_tokens: int = 4
    model_header: str = "x-model"
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _issued: int = 0

    def start(self) -> UnaryLoad:
        self.started = time.monotonic()
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), name=f"unary-{w}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _next(self) -> int | None:
        with self._lock:
            if (self._stop.is_set() or self._issued >= self.max_requests
                    or time.monotonic() - self.started > self.max_s):
                return None
            self._issued += 1
            return self._issued

    def _run(self, worker: int) -> None:
        with grpcclient.InferenceServerClient(self.url) as client:
            while (i := self._next()) is not None:
                headers = {self.model_header: self.model, "x-session-id": f"s{worker}-{i}"}
                try:
                    res = client.infer(self.model, text_inputs(f"hello {i}", self.max_tokens),
                                       headers=headers, client_timeout=self.timeout_s)
                    rid = res.get_response().parameters[REPLICA_PARAM].string_param
                    r = Result(time.monotonic(), str(rid))
                except InferenceServerException as exc:
                    r = Result(time.monotonic(), None, status_of(exc), str(exc)[:300])
                with self._lock:
                    self.results.append(r)
                self._stop.wait(self.pause_s)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_for(self, n: int, timeout_s: float = 15.0) -> None:
        """Block until at least ``n`` requests ended; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while self.count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.count()} of {n} requests ended in {timeout_s}s")
            time.sleep(0.02)

    def stop(self) -> list[Result]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        with self._lock:
            return list(self.results)


def summarize(results: list[Result]) -> dict[str, object]:
    """sent / failed / statuses / per-replica counts / first failure messages."""
    failed = [r for r in results if not r.ok]
    return {
        "sent": len(results),
        "failed": len(failed),
        "statuses": dict(Counter(r.status for r in results)),
        "served_by": dict(Counter(r.replica for r in results if r.replica)),
        "first_errors": [f"{r.status}: {r.message}" for r in failed[:5]],
    }


@dataclass
class StreamProbe:
    """One streaming request on its own gRPC stream, ended within ``deadline_s``."""

    url: str
    model: str
    session: str
    max_tokens: int = 3000
    deadline_s: float = 30.0
    model_header: str = "x-model"
    replica: str | None = None
    chunks: int = 0
    outcome: str = "PENDING"  # OK | <gRPC status> | HUNG
    message: str = ""
    first_chunk: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    _events: queue.Queue[tuple[object, object]] = field(default_factory=queue.Queue)

    def start(self) -> StreamProbe:
        threading.Thread(target=self._run, name=f"stream-{self.session}", daemon=True).start()
        return self

    def _run(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        try:
            client.start_stream(callback=lambda result, error: self._events.put((result, error)),
                                headers={self.model_header: self.model,
                                         "x-session-id": self.session},
                                stream_timeout=self.deadline_s)
            client.async_stream_infer(self.model, text_inputs("a long story", self.max_tokens,
                                                              stream=True))
            self._consume(time.monotonic() + self.deadline_s + 2)
        finally:
            self.done.set()
            self.first_chunk.set()
            client.stop_stream(cancel_requests=True)
            client.close()

    def _consume(self, deadline: float) -> None:
        while True:
            try:
                res, err = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.outcome = "HUNG"
                return
            if err is not None:
                assert isinstance(err, Exception)
                self.outcome, self.message = status_of(err), str(err)[:300]
                return
            assert isinstance(res, grpcclient.InferResult)
            params = res.get_response().parameters
            self.chunks += 1
            if self.replica is None:
                self.replica = str(params[REPLICA_PARAM].string_param)
                self.first_chunk.set()
            if params["triton_final_response"].bool_param:
                self.outcome = "OK"
                return
