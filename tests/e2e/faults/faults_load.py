"""Bounded load for the fault scenarios (test code).

Every request is what Caravan's clients send to a real Triton replica: one request on
one ``ModelStreamInfer`` stream (``caravan.local.launch.stream_request``; tritonserver
refuses unary ModelInfer for the decoupled vLLM model). The replica that served it is
the ``host:port`` Envoy names in the ``x-caravan-upstream`` response header.

* ``RequestLoad``: ``workers`` threads, each with its own gRPC channel, sending short
  ``stream=false`` requests (one final response each) through Envoy, one after the
  other (``pause_s`` apart), each with its own session, until ``stop()``,
  ``max_requests`` (total) or ``max_s`` seconds. Every request has a deadline
  (``timeout_s``), so nothing can hang. It records, per request, when it started and
  ended, how it ended (OK, STREAM_ERROR for an in-stream error, or the gRPC status)
  and which replica served it.
* ``StreamProbe``: one long request on its own stream, to see what a fault does to a
  request in flight. ``stream=True``: a response per chunk, so Envoy has forwarded
  response headers from the first chunk on (``first_chunk`` is set then, with the
  replica). ``stream=False``: nothing comes back until the whole answer, so until then
  the request is *before* response headers. It records the replica that finally
  answered and how the stream ended (OK, a status, or ``HUNG`` at its deadline).

Times are ``time.monotonic()`` seconds. Thread-safe reads through ``summary()``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from caravan.local.launch import StreamReply, stream_request, wait_until


@dataclass(frozen=True)
class Result:
    """One request: when it started and ended, the replica that served it (host:port,
    "" when none was named) and how it ended."""

    started: float
    ended: float
    replica: str
    status: str = "OK"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "OK"


def result_of(started: float, reply: StreamReply) -> Result:
    """A stream that carried its final answer and was reset afterwards (the replica died
    before the stream's end) counts as answered: the client has the whole answer."""
    if reply.status != "OK" and reply.final and not reply.errors:
        return Result(started, time.monotonic(), reply.upstream, "OK", "answered, then reset: "
                      + reply.message[:200])
    return Result(started, time.monotonic(), reply.upstream, reply.outcome, reply.message[:300])


@dataclass
class RequestLoad:
    url: str
    model: str
    workers: int = 3
    max_requests: int = 20000
    max_s: float = 60.0
    timeout_s: float = 10.0
    pause_s: float = 0.005  # between one worker's requests (keeps 2 cores usable)
    max_tokens: int = 4
    model_header: str = "x-model"
    session_header: str = "x-session-id"
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _issued: int = 0

    def start(self) -> RequestLoad:
        self.started = time.monotonic()
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), name=f"load-{w}", daemon=True)
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
        with grpc.insecure_channel(self.url) as channel:
            while (i := self._next()) is not None:
                headers = {self.model_header: self.model, self.session_header: f"s{worker}-{i}"}
                started = time.monotonic()
                reply = stream_request(self.url, self.model, headers, prompt=f"hello {i}",
                                       max_tokens=self.max_tokens, timeout_s=self.timeout_s,
                                       request_id=str(i), channel=channel)
                with self._lock:
                    self.results.append(result_of(started, reply))
                self._stop.wait(self.pause_s)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def wait_for(self, n: int, timeout_s: float = 15.0) -> None:
        """Block until at least ``n`` requests ended; TimeoutError otherwise."""
        wait_until(lambda: self.count() >= n, timeout_s, f"{n} requests ended", every_s=0.02)

    def stop(self) -> list[Result]:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout_s + 5)
        return self.snapshot()


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


def session_replica(url: str, model: str, session: str, model_header: str = "x-model") -> str:
    """The replica (host:port) a short request with ``session`` lands on."""
    reply = stream_request(url, model, {model_header: model, "x-session-id": session}, max_tokens=1)
    assert reply.ok, f"session {session}: {reply.outcome} {reply.message}"
    return reply.upstream


@dataclass
class StreamProbe:
    """One long request on its own gRPC stream, ended within ``deadline_s``."""

    url: str
    model: str
    session: str
    stream: bool = True
    max_tokens: int = 3000
    deadline_s: float = 30.0
    model_header: str = "x-model"
    replica: str = ""  # the replica that answered (host:port)
    first_replica: str = ""  # the replica of the first response
    chunks: int = 0
    outcome: str = "PENDING"  # OK | STREAM_ERROR | <gRPC status> | HUNG
    message: str = ""
    ended: float = 0.0  # time.monotonic() when the stream ended
    first_chunk: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> StreamProbe:
        threading.Thread(target=self._run, name=f"probe-{self.session}", daemon=True).start()
        return self

    def _first(self, upstream: str) -> None:
        self.first_replica = upstream
        self.first_chunk.set()

    def _run(self) -> None:
        try:
            reply = stream_request(self.url, self.model, {self.model_header: self.model,
                                                          "x-session-id": self.session},
                                   prompt="a long story", max_tokens=self.max_tokens, stream=self.stream,
                                   timeout_s=self.deadline_s, request_id=self.session,
                                   on_first=self._first)
            self.replica, self.chunks = reply.upstream, len(reply.responses)
            self.outcome = "HUNG" if reply.status == "DEADLINE_EXCEEDED" else reply.outcome
            self.message = reply.message[:300]
        finally:
            self.ended = time.monotonic()
            self.done.set()
            self.first_chunk.set()

    def to_json(self) -> dict[str, object]:
        return {"session": self.session, "stream": self.stream, "replica": self.replica,
                "first_replica": self.first_replica, "outcome": self.outcome, "chunks": self.chunks,
                "message": self.message[:160]}
