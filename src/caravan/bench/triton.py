"""Triton gRPC adapter: sends one ``RequestSpec`` and measures it.

Requests are pre-serialized ``ModelInferRequest`` messages (``caravan.bench.wire``, the
message classes ``tritonclient.grpc`` ships) sent on ``grpc.aio`` channels, so the
load generator spends its CPU on sending, not on rebuilding tensors per request.

Connections: a request goes on the channel with the fewest requests in flight; when every
channel has ``streams_per_connection`` (default ``STREAMS_PER_CONNECTION``, 512) in
flight, another channel (its own HTTP/2 connection) is opened. Envoy accepts at most
1,024 concurrent streams per downstream HTTP/2 connection by default
(``http2_protocol_options.max_concurrent_streams``), so on one connection a load of
more than 1,024 requests at once would wait in the client and count as TTFT.

Tensor contract (Triton's vLLM backend): ``text_input`` BYTES[1], ``stream`` BOOL[1],
``sampling_parameters`` BYTES[1] (JSON, ``{"max_tokens": N, ...}``),
``exclude_input_in_output`` BOOL[1] = True and, with ``count_tokens``,
``return_num_input_tokens`` / ``return_num_output_tokens`` BOOL[1] (r24.12+).
Headers: the target's ``model_header`` (Envoy routes on it) and, for sessions, its
``session_header`` (Envoy hashes on it); defaults ``x-model`` / ``x-session-id``.

Every request is **one bidi ``ModelStreamInfer`` stream**, the only inference RPC a
vLLM replica serves (the backend is decoupled, so Triton refuses unary ``ModelInfer``).
gRPC headers are per stream, so each request gets its own session header (and Envoy
balances each request); every response belongs to exactly one request, so TTFT and
inter-token gaps are exact. The client sends its one request and half-closes in one
batch (the channel's ``unary_stream`` on the ``ModelStreamInfer`` path: the same HTTP/2
stream as a bidi call that writes once, then half-closes); the stream ends after the
last response. One batch, not ``write`` then ``done_writing``: when the server ends the
stream before the client half-closed (Envoy's 401 for a missing API key, 413), grpc's
aio ``write`` can fail after the server's status arrived and overwrite it with its own
``INTERNAL: Internal error from Core`` (grpc/grpc#36066); the batch keeps the server's.

* ``stream=True``: ``stream`` = true; one response per chunk with only the new text.
  The end time is the response flagged ``triton_final_response`` (else the stream
  end). Tokens: a response's ``num_output_tokens`` when present, else 1 per response
  with text (vLLM streams about a token per response).
* ``stream=False`` (``caravan bench --no-stream``): ``stream`` = false; the replica
  sends exactly one response, flagged final, with the whole text; TTFT = end-to-end.
  Tokens: ``num_output_tokens``, else the words of the text. Anything else (several
  responses, none, no final flag) is status ``UNEXPECTED_RESPONSES``.

Errors sent in-stream (``error_message``) are status ``STREAM_ERROR``. The replica that
served a request is the ``host:port`` Envoy names in the ``x-caravan-upstream``
response header (``answer.upstream_host``), read from the stream's initial metadata
(from its trailers when the replica failed it before any response); ``""`` when the
target is a replica (no Envoy in front) or Envoy chose no replica.

Use a transport from one event loop only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from caravan.bench.answer import read_answer, text_outputs, upstream_host
from caravan.bench.dataset import RequestSpec, count_words
from caravan.bench.stats import OK, RequestRecord
from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request
from caravan.spec import names

Clock = Callable[[], float]
Metadata = tuple[tuple[str, str], ...]  # gRPC request headers
# tritonclient's channel limits (INT32_MAX): prompts and answers of any size
CHANNEL_OPTIONS = (("grpc.max_send_message_length", 2**31 - 1),
                   ("grpc.max_receive_message_length", 2**31 - 1),
                   # each channel its own connection (else channels with equal options share one)
                   ("grpc.use_local_subchannel_pool", 1))
STREAMS_PER_CONNECTION = 512  # half of Envoy's default max_concurrent_streams (1,024)
UNEXPECTED = "UNEXPECTED_RESPONSES"  # stream=False and not exactly one final response
_HEADER_NAME = re.compile(r"^[a-z0-9-]+$")  # as the spec allows for its header names


@dataclass(frozen=True)
class Target:
    """Where and how to send: ``url`` is ``HOST:PORT`` of Envoy or a replica;
    ``timeout_s`` bounds each request (DEADLINE_EXCEEDED after it); ``sampling``
    adds fields to ``sampling_parameters`` (``max_tokens`` comes from each request).
    TLS: ``tls_ca`` (PEM file) switches TLS on; ``tls_cert``/``tls_key`` add a client
    certificate (mTLS). ``api_key`` is sent in ``api_key_header`` (never in repr).
    ``model_header`` / ``session_header``: the names Envoy routes and hashes on (the
    spec's ``envoy.model_header`` and the model's ``routing.session_header``)."""

    url: str
    stream: bool = True
    timeout_s: float = 120.0
    count_tokens: bool = True
    sampling: Mapping[str, Any] = field(default_factory=dict)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    api_key: str = field(default="", repr=False)
    api_key_header: str = names.API_KEY_HEADER
    model_header: str = names.MODEL_HEADER
    session_header: str = names.SESSION_HEADER

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
        for name in ("model_header", "session_header"):
            value = getattr(self, name)
            if not _HEADER_NAME.match(value):
                raise ValueError(f"{name}: expected lowercase letters, digits and '-', got {value!r}")


def status_name(exc: BaseException) -> tuple[str, str]:
    """(gRPC status code name, message) of a client-side exception."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name, exc.details() or ""
    if isinstance(exc, asyncio.TimeoutError):
        return "DEADLINE_EXCEEDED", "client timeout"
    return "CLIENT_ERROR", repr(exc)


class _Connection:
    """One channel and its ``ModelStreamInfer`` callable (one request, then half-close,
    in one batch: see the module docstring); ``in_flight``: requests on it now."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stream_infer: Any = channel.unary_stream(
            MODEL_STREAM_INFER, response_deserializer=decode_stream_response)
        self.in_flight = 0


class TritonTransport:
    """Sends requests to ``target`` for ``model``. ``open`` before use, ``close`` after.

    ``prepare`` serializes every request up front (``wire.encode_request``), so the
    timed path is one ``ModelStreamInfer`` call on a ``grpc.aio`` channel with the
    message classes tritonclient ships; nothing is built or wrapped per request.
    """

    def __init__(self, target: Target, model: str, clock: Clock,
                 streams_per_connection: int = STREAMS_PER_CONNECTION) -> None:
        if streams_per_connection < 1:
            raise ValueError(f"streams_per_connection: must be >= 1, got {streams_per_connection}")
        self.target = target
        self.model = model
        self._clock = clock
        self._per_connection = streams_per_connection
        self._conns: list[_Connection] = []
        # per request: its serialized message and its gRPC metadata, built by prepare
        self._requests: dict[tuple[str, int, int], tuple[bytes, Metadata]] = {}

    @property
    def connections(self) -> int:
        """Channels (HTTP/2 connections) opened so far."""
        return len(self._conns)

    async def open(self) -> None:
        self._conns = [_Connection(open_channel(self.target))]

    async def close(self) -> None:
        conns, self._conns = self._conns, []
        for conn in conns:
            await conn.channel.close()

    def _least_busy(self) -> _Connection:
        conn = min(self._conns, key=lambda c: c.in_flight)
        if conn.in_flight >= self._per_connection:
            conn = _Connection(open_channel(self.target))
            self._conns.append(conn)
        return conn

    def prepare(self, specs: Sequence[RequestSpec]) -> None:
        self._requests = {_key(s): self._encode(s) for s in specs}

    def _encode(self, spec: RequestSpec) -> tuple[bytes, Metadata]:
        t = self.target
        request = encode_request(self.model, str(spec.index), spec.prompt, spec.max_tokens,
                                 stream=t.stream, count_tokens=t.count_tokens, sampling=t.sampling)
        return request, request_metadata(t, self.model, spec.session_id)

    async def send(self, spec: RequestSpec, t0: float) -> RequestRecord:
        """Send one request; never raises for server or network errors (they become
        the record's ``status``). Times are ms relative to ``t0`` (clock seconds)."""
        assert self._conns, "TritonTransport.open() not called"
        request, metadata = self._requests.get(_key(spec)) or self._encode(spec)
        conn = self._least_busy()
        start = self._clock()
        m = _Measure(spec, start, t0, self.target.stream)
        conn.in_flight += 1
        try:
            await self._call(conn, request, metadata, m)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            m.status, m.error = status_name(exc)
            if isinstance(exc, grpc.aio.AioRpcError):  # a headers-only reply: Envoy's header is a trailer
                m.replica = upstream_host(exc.initial_metadata()) or upstream_host(exc.trailing_metadata())
        finally:
            conn.in_flight -= 1
        if m.end is None:
            m.end = self._clock()
        return m.record()

    async def _call(self, conn: _Connection, request: bytes, metadata: Metadata,
                    m: _Measure) -> None:
        call = conn.stream_infer(request, metadata=metadata, timeout=self.target.timeout_s)
        async for resp in call:
            now = self._clock()
            m.responses += 1
            if resp.error_message:
                m.status, m.error = "STREAM_ERROR", resp.error_message
                m.end = now
                continue
            m.on_response(resp.infer_response, now)
        m.replica = upstream_host(await call.initial_metadata())
        if not m.stream:
            m.check_single()


def request_metadata(target: Target, model: str, session_id: str = "") -> Metadata:
    """The gRPC headers of one request: ``target.model_header: model``, the API key
    when set, and ``target.session_header: session_id`` when ``session_id`` is set."""
    md = [(target.model_header, model)]
    if target.api_key:
        md.append((target.api_key_header, target.api_key))
    if session_id:
        md.append((target.session_header, session_id))
    return tuple(md)


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


def _words(resp: Any) -> int:
    """Words of every ``text_output`` element (the token estimate without a count)."""
    return sum(count_words(t) for t in text_outputs(resp))


def _key(spec: RequestSpec) -> tuple[str, int, int]:
    return (spec.session_id, spec.turn, spec.index)


class _Measure:
    """Mutable per-request accumulator (one request, one task). ``stream`` is the
    target's mode: False counts tokens from the one response's whole text."""

    __slots__ = ("end", "error", "final", "gaps", "last", "replica", "responses", "spec", "start",
                 "status", "stream", "t0", "tokens_in", "tokens_out", "ttft")

    def __init__(self, spec: RequestSpec, start: float, t0: float, stream: bool = True) -> None:
        self.spec = spec
        self.start = start
        self.t0 = t0
        self.stream = stream
        self.ttft: float | None = None
        self.last: float | None = None
        self.gaps: list[float] = []
        self.end: float | None = None
        self.tokens_in: int | None = None
        self.tokens_out = 0
        self.status = OK
        self.error = ""
        self.replica = ""
        self.responses = 0
        self.final = False

    def on_response(self, resp: Any, now: float) -> None:
        answer = read_answer(resp)
        if self.tokens_in is None:
            self.tokens_in = answer.tokens_in
        n = answer.tokens_out
        if n is None:
            n = (1 if answer.text else 0) if self.stream else _words(resp)
        if n > 0:
            if self.last is None:
                self.ttft = now
            else:
                self.gaps.append((now - self.last) * 1000.0)
            self.last = now
            self.tokens_out += n
        if answer.final and self.end is None:
            self.end = now
            self.final = True

    def check_single(self) -> None:
        """stream=False: exactly one response, flagged final; else status
        ``UNEXPECTED_RESPONSES`` (an earlier error status stands)."""
        if self.status == OK and (self.responses != 1 or not self.final):
            self.status = UNEXPECTED
            self.error = (f"stream=false: expected exactly one final response, got {self.responses}"
                          f" ({'a' if self.final else 'no'} final flag)")

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
