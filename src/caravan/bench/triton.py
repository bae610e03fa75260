"""Triton gRPC adapter: sends one ``RequestSpec`` and measures it.

Requests are pre-serialized ``ModelInferRequest`` messages (``caravan.bench.wire``, the
message classes ``tritonclient.grpc`` ships) sent on one ``grpc.aio`` channel, so the
load generator spends its CPU on sending, not on rebuilding tensors per request.

Tensor contract (Triton's vLLM backend): ``text_input`` BYTES[1], ``stream`` BOOL[1],
``sampling_parameters`` BYTES[1] (JSON, ``{"max_tokens": N, ...}``),
``exclude_input_in_output`` BOOL[1] = True and, with ``count_tokens``,
``return_num_input_tokens`` / ``return_num_output_tokens`` BOOL[1] (r24.12+).
Headers: ``x-model`` (Envoy routes on it) and, for sessions, ``x-session-id``.

Streaming uses **one bidi ``ModelStreamInfer`` stream per request**: gRPC headers are
per stream, so this is the only way to give each request its own ``x-session-id``
(and have Envoy balance each request); it also makes every response belong to exactly
one request, so TTFT and inter-token gaps are exact. The client writes one request
and half-closes; the stream ends after the last response. The end time
is the response flagged ``triton_final_response`` (else the stream end).

Tokens: a response's ``num_output_tokens`` when present, else 1 per streamed response
with text (vLLM streams about a token per response). Unary (``stream=False``) needs a
non-decoupled model: Triton rejects ``ModelInfer`` on decoupled models such as the
vLLM backend's, so unary mode is for servers that allow it (e.g. ``caravan replica``).

One client (one gRPC channel) per transport; use from one event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from caravan.bench.answer import read_answer, text_outputs
from caravan.bench.dataset import RequestSpec, count_words
from caravan.bench.stats import OK, RequestRecord
from caravan.bench.wire import (
    MODEL_INFER,
    MODEL_STREAM_INFER,
    decode_response,
    decode_stream_response,
    encode_request,
)

Clock = Callable[[], float]
Metadata = tuple[tuple[str, str], ...]  # gRPC request headers
# tritonclient's channel limits (INT32_MAX): prompts and answers of any size
CHANNEL_OPTIONS = (("grpc.max_send_message_length", 2**31 - 1),
                   ("grpc.max_receive_message_length", 2**31 - 1))


@dataclass(frozen=True)
class Target:
    """Where and how to send: ``url`` is ``HOST:PORT`` of Envoy or a replica;
    ``timeout_s`` bounds each request (DEADLINE_EXCEEDED after it); ``sampling``
    adds fields to ``sampling_parameters`` (``max_tokens`` comes from each request).
    TLS: ``tls_ca`` (PEM file) switches TLS on; ``tls_cert``/``tls_key`` add a client
    certificate (mTLS). ``api_key`` is sent in ``api_key_header`` (never in repr)."""

    url: str
    stream: bool = True
    timeout_s: float = 120.0
    count_tokens: bool = True
    sampling: Mapping[str, Any] = field(default_factory=dict)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    api_key: str = field(default="", repr=False)
    api_key_header: str = "x-api-key"

    @property
    def tls(self) -> bool:
        """True when the endpoint is reached over TLS (``tls_ca`` given)."""
        return self.tls_ca is not None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert: --tls-cert and --tls-key go together")
        if self.tls_cert is not None and self.tls_ca is None:
            raise ValueError("tls_ca: a client certificate needs --tls-ca (TLS to the server)")
        host, sep, port = self.url.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"url: expected HOST:PORT (e.g. 127.0.0.1:8080), got {self.url!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s: must be > 0 seconds, got {self.timeout_s}")


def status_name(exc: BaseException) -> tuple[str, str]:
    """(gRPC status code name, message) of a client-side exception."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name, exc.details() or ""
    if isinstance(exc, asyncio.TimeoutError):
        return "DEADLINE_EXCEEDED", "client timeout"
    return "CLIENT_ERROR", repr(exc)


class TritonTransport:
    """Sends requests to ``target`` for ``model``. ``open`` before use, ``close`` after.

    ``prepare`` serializes every request up front (``wire.encode_request``), so the
    timed path is one gRPC call on a ``grpc.aio`` channel with the message classes
    tritonclient ships; nothing is built or wrapped per request.
    """

    def __init__(self, target: Target, model: str, clock: Clock) -> None:
        self.target = target
        self.model = model
        self._clock = clock
        self._channel: grpc.aio.Channel | None = None
        self._infer: Any = None  # ModelInfer / ModelStreamInfer multi-callables of the channel
        self._stream_infer: Any = None
        # per request: its serialized message and its gRPC metadata, built by prepare
        self._requests: dict[tuple[str, int, int], tuple[bytes, Metadata]] = {}

    async def open(self) -> None:
        self._channel = ch = open_channel(self.target)
        self._infer = ch.unary_unary(MODEL_INFER, response_deserializer=decode_response)
        self._stream_infer = ch.stream_stream(
            MODEL_STREAM_INFER, response_deserializer=decode_stream_response)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def prepare(self, specs: Sequence[RequestSpec]) -> None:
        self._requests = {_key(s): self._encode(s) for s in specs}

    def _encode(self, spec: RequestSpec) -> tuple[bytes, Metadata]:
        t = self.target
        request = encode_request(self.model, str(spec.index), spec.prompt, spec.max_tokens,
                                 stream=t.stream, count_tokens=t.count_tokens, sampling=t.sampling)
        return request, self._metadata(spec)

    def _metadata(self, spec: RequestSpec) -> Metadata:
        md = [("x-model", self.model)]
        if self.target.api_key:
            md.append((self.target.api_key_header, self.target.api_key))
        if spec.session_id:
            md.append(("x-session-id", spec.session_id))
        return tuple(md)

    async def send(self, spec: RequestSpec, t0: float) -> RequestRecord:
        """Send one request; never raises for server or network errors (they become
        the record's ``status``). Times are ms relative to ``t0`` (clock seconds)."""
        assert self._channel is not None, "TritonTransport.open() not called"
        request, metadata = self._requests.get(_key(spec)) or self._encode(spec)
        start = self._clock()
        m = _Measure(spec, start, t0)
        try:
            if self.target.stream:
                await self._stream(request, metadata, m)
            else:
                await self._unary(request, metadata, m)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            m.status, m.error = status_name(exc)
        if m.end is None:
            m.end = self._clock()
        return m.record()

    async def _unary(self, request: bytes, metadata: Metadata, m: _Measure) -> None:
        resp = await self._infer(request, metadata=metadata, timeout=self.target.timeout_s)
        m.end = self._clock()
        answer = read_answer(resp)
        m.replica = answer.replica
        m.ttft = m.end
        m.tokens_in = answer.tokens_in
        n = answer.tokens_out
        if n is None:
            n = sum(count_words(t) for t in text_outputs(resp))
        m.tokens_out = n

    async def _stream(self, request: bytes, metadata: Metadata, m: _Measure) -> None:
        call = self._stream_infer(metadata=metadata, timeout=self.target.timeout_s)
        await call.write(request)
        await call.done_writing()
        async for resp in call:
            now = self._clock()
            if resp.error_message:
                m.status, m.error = "STREAM_ERROR", resp.error_message
                m.end = now
                continue
            m.on_response(resp.infer_response, now)


def open_channel(target: Target) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target`` with tritonclient's message-size limits;
    TLS (and a client certificate) when the target asks for it."""
    if not target.tls:
        return grpc.aio.insecure_channel(target.url, options=CHANNEL_OPTIONS)
    creds = grpc.ssl_channel_credentials(
        root_certificates=_read(target.tls_ca), private_key=_read(target.tls_key),
        certificate_chain=_read(target.tls_cert))
    return grpc.aio.secure_channel(target.url, creds, options=CHANNEL_OPTIONS)


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _key(spec: RequestSpec) -> tuple[str, int, int]:
    return (spec.session_id, spec.turn, spec.index)


class _Measure:
    """Mutable per-request accumulator (one request, one task)."""

    __slots__ = ("end", "error", "gaps", "last", "replica", "spec", "start", "status", "t0",
                 "tokens_in", "tokens_out", "ttft")

    def __init__(self, spec: RequestSpec, start: float, t0: float) -> None:
        self.spec = spec
        self.start = start
        self.t0 = t0
        self.ttft: float | None = None
        self.last: float | None = None
        self.gaps: list[float] = []
        self.end: float | None = None
        self.tokens_in: int | None = None
        self.tokens_out = 0
        self.status = OK
        self.error = ""
        self.replica = ""

    def on_response(self, resp: Any, now: float) -> None:
        answer = read_answer(resp)
        if not self.replica:
            self.replica = answer.replica
        if self.tokens_in is None:
            self.tokens_in = answer.tokens_in
        n = answer.tokens_out
        if n is None:
            n = 1 if answer.text else 0
        if n > 0:
            if self.last is None:
                self.ttft = now
            else:
                self.gaps.append((now - self.last) * 1000.0)
            self.last = now
            self.tokens_out += n
        if answer.final and self.end is None:
            self.end = now

    def record(self) -> RequestRecord:
        assert self.end is not None
        ms = 1000.0
        return RequestRecord(
            index=self.spec.index,
            start_ms=(self.start - self.t0) * ms,
            end_ms=(self.end - self.t0) * ms,
            ttft_ms=None if self.ttft is None else (self.ttft - self.start) * ms,
            itl_ms=tuple(self.gaps),
            tokens_in=self.spec.tokens_in if self.tokens_in is None else self.tokens_in,
            tokens_out=self.tokens_out,
            status=self.status,
            replica_id=self.replica,
            session_id=self.spec.session_id,
            turn=self.spec.turn,
            error=self.error,
        )
