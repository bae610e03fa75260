"""The replica: a grpc.aio server speaking Triton's KServe v2 protocol for one model,
with the vLLM backend's tensor contract, backed by the simulated engine.

Serves on one port: ``inference.GRPCInferenceService`` (ServerLive, ServerReady,
ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelInfer, ModelStreamInfer)
and ``grpc.health.v1.Health`` (server-wide ``""`` and ``inference.GRPCInferenceService``).
Prometheus metrics are served on a separate port (see ``caravan.replica.metrics``).

Behaviour worth knowing:

* ``ModelInfer`` returns the whole text in one response, whatever ``stream`` says
  (``stream=true`` only changes the prompt-prepending default). (Real Triton refuses
  ModelInfer for decoupled models; the simulator allows it so unary clients and
  Envoy's unary retry path can be exercised.)
* ``ModelStreamInfer`` is decoupled: with ``stream=true`` one response per chunk with
  only the new text, coalesced to one per ``stream_interval_ms`` of real time; with
  ``stream`` false/absent, one response with the whole text. Every streamed response
  carries ``triton_final_response`` (true on the last). Several requests may be in
  flight on one stream; errors go in ``error_message`` and the stream keeps serving.
* Fixed-latency mode (``fixed_ms_per_token`` set, for measuring what a proxy adds):
  the batching engine is bypassed; every admitted request is answered after exactly
  ``fixed_ms_per_token`` x its output tokens real ms, independently of the others (no
  batch steps to align with), in one response (``ModelInfer``) or one final response
  (``ModelStreamInfer``).
* Every response carries parameter ``caravan_replica_id`` and the request's ``id``;
  every RPC sends initial metadata ``x-caravan-replica: <id>``.
* Loading (``load_delay_s``): health NOT_SERVING, ServerReady/ModelReady false,
  inference UNAVAILABLE. Draining (``begin_drain``, on SIGTERM): the same, while
  requests already admitted run to completion (bounded by ``drain_timeout_s``); idle
  streams are then closed with status OK and the server stops.

Concurrency: everything runs on one asyncio event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from caravan.replica import contract
from caravan.replica.config import ReplicaConfig
from caravan.replica.driver import EngineDriver, Handle
from caravan.replica.engine import Engine, RequestRejected
from caravan.replica.metrics import ReplicaMetrics, start_metrics_server
from caravan.replica.request import (
    GenerateRequest,
    RequestError,
    Status,
    check_target,
    parse_request,
)
from caravan.replica.responses import Chunk, infer_response, stream_error
from caravan.replica.textgen import Plan, Words, count_prompt_tokens, plan_output, seed_for

log = logging.getLogger(__name__)

_GRPC_STATUS = {
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}
_HEALTH_SERVICES = ("", "inference.GRPCInferenceService")
_DRAIN = object()  # wakes a stream's writer during drain


@dataclass(eq=False)
class _Stream:
    """One ModelStreamInfer call: its outgoing queue and requests in flight."""

    out: asyncio.Queue[Any]
    active: int = 0


class ReplicaServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """KServe v2 servicer for one simulated model."""

    def __init__(
        self,
        config: ReplicaConfig,
        driver: EngineDriver,
        metrics: ReplicaMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.driver = driver
        self.metrics = metrics
        self._clock = clock
        self._metadata = (("x-caravan-replica", config.replica_id),)
        self.loaded = False
        self.draining = False
        self.streams: set[_Stream] = set()

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining

    # -- health and metadata ----------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        known = request.name == self.config.model and request.version in (
            "",
            contract.MODEL_VERSION,
        )
        return pb.ModelReadyResponse(ready=known and self.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return contract.server_metadata()

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        await self._known_model(request.name, request.version, context)
        return contract.model_metadata(self.config.model)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        await self._known_model(request.name, request.version, context)
        return contract.model_config(self.config.model, self.config.engine.max_num_seqs)

    async def _known_model(self, name: str, version: str, context: Any) -> None:
        probe = pb.ModelInferRequest(model_name=name, model_version=version)
        try:
            check_target(probe, self.config.model)
        except RequestError as exc:
            await context.abort(_GRPC_STATUS[exc.status], exc.message)

    # -- inference --------------------------------------------------------------------
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        t0 = self._clock()
        responses: list[pb.ModelInferResponse] = []
        try:
            gen = self._admit(request)
            await self._execute(gen, t0, incremental=False, final_param=None, emit=responses.append)
        except RequestError as exc:
            await context.abort(_GRPC_STATUS[exc.status], exc.message)
        # Headers go out only with the answer: a replica that dies mid-request has sent
        # nothing yet, so Envoy may still retry the request on another replica.
        await context.send_initial_metadata(self._metadata)
        return responses[-1]

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: Any,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        await context.send_initial_metadata(self._metadata)
        stream = _Stream(asyncio.Queue())
        self.streams.add(stream)
        tasks: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read_stream(request_iterator, stream, tasks))
        try:
            while not (self.draining and stream.active == 0 and stream.out.empty()):
                item = await stream.out.get()
                if item is None:
                    return  # client closed its side and every request is done
                if item is _DRAIN:
                    if self.draining and stream.active == 0:
                        return
                    continue
                yield item
        finally:
            self.streams.discard(stream)
            reader.cancel()
            for t in tasks:
                t.cancel()

    async def _read_stream(
        self,
        requests: AsyncIterator[pb.ModelInferRequest],
        stream: _Stream,
        tasks: set[asyncio.Task[None]],
    ) -> None:
        async for request in requests:
            stream.active += 1
            task = asyncio.create_task(self._serve_stream_request(request, stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        stream.out.put_nowait(None)

    async def _serve_stream_request(self, request: pb.ModelInferRequest, stream: _Stream) -> None:
        t0 = self._clock()
        try:
            gen = self._admit(request)
            await self._execute(
                gen,
                t0,
                incremental=gen.stream,
                final_param=True,
                emit=lambda r: stream.out.put_nowait(pb.ModelStreamInferResponse(infer_response=r)),
            )
        except RequestError as exc:
            stream.out.put_nowait(
                stream_error(self.config.model, self.config.replica_id, request.id, exc.message)
            )
        finally:
            stream.active -= 1
            if self.draining and stream.active == 0:
                stream.out.put_nowait(_DRAIN)

    def _admit(self, request: pb.ModelInferRequest) -> GenerateRequest:
        """Target, readiness and tensor checks. Counts the request in metrics."""
        check_target(request, self.config.model)
        self.metrics.received()
        try:
            if not self.loaded:
                raise RequestError(
                    Status.UNAVAILABLE, f"model '{self.config.model}' is loading, not ready yet"
                )
            if self.draining:
                raise RequestError(
                    Status.UNAVAILABLE, "server is draining: not accepting new requests"
                )
            return parse_request(request, self.config.max_input_bytes)
        except RequestError:
            self.metrics.failed(pending=True)
            raise

    async def _execute(
        self,
        gen: GenerateRequest,
        t0: float,
        incremental: bool,
        final_param: bool | None,
        emit: Callable[[pb.ModelInferResponse], None],
    ) -> None:
        """Run ``gen`` on the engine, emitting responses. Raises RequestError if rejected."""
        cfg = self.config
        prompt_tokens = count_prompt_tokens(gen.prompt)
        seed = seed_for(gen.prompt, gen.sampling.seed)
        plan = plan_output(
            seed,
            gen.sampling.max_tokens,
            cfg.mean_output_tokens,
            max(1, cfg.engine.max_model_len - prompt_tokens),
        )
        if cfg.fixed_ms_per_token is not None:
            await self._answer_after(cfg.fixed_ms_per_token, gen, t0, prompt_tokens, seed, plan,
                                     final_param, emit)
            return
        try:
            handle = self.driver.submit(prompt_tokens, plan.output_tokens, streaming=incremental)
        except RequestRejected as exc:
            self.metrics.failed(pending=True)
            tag = f"[request id: {gen.request_id or '<id_unknown>'}] "
            raise RequestError(Status.INVALID_ARGUMENT, f"{tag}text_input: {exc}") from None
        self.metrics.handed_off(self._clock() - t0)
        words = Words(seed, plan.output_tokens)
        try:
            await self._deliver(
                gen,
                handle,
                words,
                plan.finish_reason,
                prompt_tokens,
                incremental,
                final_param,
                emit,
            )
        except BaseException:
            if not handle.done:
                self.driver.cancel(handle)
                self.metrics.failed(pending=False)
            raise
        first = handle.first_token_s if handle.first_token_s is not None else self._clock()
        self.metrics.first_token(first - handle.arrival_s)
        self.metrics.succeeded(self._clock() - t0, first - handle.arrival_s, plan.output_tokens)

    async def _answer_after(
        self,
        ms_per_token: float,
        gen: GenerateRequest,
        t0: float,
        prompt_tokens: int,
        seed: int,
        plan: Plan,
        final_param: bool | None,
        emit: Callable[[pb.ModelInferResponse], None],
    ) -> None:
        """Fixed-latency mode: sleep ``ms_per_token`` x output tokens (real ms), then
        emit the whole answer."""
        n = plan.output_tokens
        self.metrics.handed_off(self._clock() - t0)
        await asyncio.sleep(ms_per_token * n / 1000.0)
        emit(self._whole_answer(gen, Words(seed, n), n, prompt_tokens, plan.finish_reason,
                                final_param))
        took = self._clock() - t0
        self.metrics.first_token(took)
        self.metrics.succeeded(took, took, n)

    def _whole_answer(self, gen: GenerateRequest, words: Words, n: int, prompt_tokens: int,
                      finish_reason: str, final: bool | None) -> pb.ModelInferResponse:
        """One response with all ``n`` generated tokens (and the prompt when asked)."""
        text = (gen.prompt if gen.prepend_input else "") + words.text(0, n)
        chunk = Chunk(text, prompt_tokens, n, finish_reason)
        return infer_response(self.config.model, self.config.replica_id, gen, chunk, final=final)

    async def _deliver(
        self,
        gen: GenerateRequest,
        handle: Handle,
        words: Words,
        finish_reason: str,
        prompt_tokens: int,
        incremental: bool,
        final_param: bool | None,
        emit: Callable[[pb.ModelInferResponse], None],
    ) -> None:
        model, rid = self.config.model, self.config.replica_id
        sent = 0
        while True:
            upd = await handle.queue.get()
            while not handle.queue.empty():
                upd = handle.queue.get_nowait()
            if incremental and (upd.tokens > sent or upd.done):
                chunk = Chunk(
                    words.text(sent, upd.tokens),
                    prompt_tokens,
                    upd.tokens - sent,
                    finish_reason if upd.done else None,
                )
                emit(infer_response(model, rid, gen, chunk, final=upd.done))
                sent = upd.tokens
            if upd.done:
                break
        if not incremental:
            emit(self._whole_answer(gen, words, handle.output_tokens, prompt_tokens,
                                    finish_reason, final_param))


class Replica:
    """Owns the gRPC server, the engine driver task, health and metrics of one replica."""

    def __init__(
        self,
        config: ReplicaConfig,
        clock: Callable[[], float] = time.monotonic,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        """``credentials``: serve gRPC (inference and health) over TLS with these
        (``tls_credentials``) instead of plaintext."""
        self.config = config
        self.credentials = credentials
        self.engine = Engine(config.engine)
        self.metrics = ReplicaMetrics(config.model, lambda: self.driver.stats())
        self.driver = EngineDriver(
            self.engine,
            config.time_scale,
            config.stream_interval_ms / 1000.0,
            clock=clock,
            observer=self.metrics,
        )
        self.servicer = ReplicaServicer(config, self.driver, self.metrics, clock)
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_http: Any = None
        self._stopped = asyncio.Event()
        self.port = config.port

    async def start(self) -> None:
        """Bind and start serving (NOT_SERVING until the load delay has passed)."""
        cfg = self.config
        max_msg = cfg.max_input_bytes + (1 << 20)
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_msg),
                ("grpc.max_send_message_length", -1),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            address = f"{cfg.host}:{cfg.port}"
            if self.credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, self.credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port} for gRPC: {exc}") from None
        if self.port == 0:
            raise OSError(f"cannot listen on {cfg.host}:{cfg.port} for gRPC")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            self._metrics_http = start_metrics_server(self.metrics, cfg.host, cfg.metrics_port)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {cfg.host}:{cfg.metrics_port} for metrics: {exc.strerror}"
            ) from None
        await server.start()
        self._server = server
        self._tasks.append(asyncio.create_task(self.driver.run(), name="engine-driver"))
        self._tasks.append(asyncio.create_task(self._load(), name="load"))

    async def _load(self) -> None:
        await asyncio.sleep(self.config.load_delay_s)
        if self.servicer.draining:
            return
        self.servicer.loaded = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "replica ready",
            extra={
                "model": self.config.model,
                "replica_id": self.config.replica_id,
                "host": self.config.host,
                "port": self.port,
                "metrics_port": self.config.metrics_port,
            },
        )

    async def _set_health(self, status: int) -> None:
        for name in _HEALTH_SERVICES:
            await self.health.set(name, status)

    def begin_drain(self) -> None:
        """Stop admitting requests; finish in-flight ones; then stop (see ``wait``)."""
        if self.servicer.draining:
            return
        self.servicer.draining = True
        log.info(
            "replica draining",
            extra={"in_flight": self.driver.in_flight, "timeout_s": self.config.drain_timeout_s},
        )
        self._tasks.append(asyncio.create_task(self._drain(), name="drain"))

    async def _drain(self) -> None:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for s in list(self.servicer.streams):
            s.out.put_nowait(_DRAIN)
        deadline = time.monotonic() + self.config.drain_timeout_s
        while (self.driver.in_flight or self.servicer.streams) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = self.driver.in_flight
        if left:
            log.warning("drain timeout: cancelling requests", extra={"in_flight": left})
        await self.stop(grace_s=0.5 if not left else 0.0)

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop serving now (in-flight RPCs get ``grace_s`` seconds), idempotent."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self._metrics_http is not None:
            httpd, self._metrics_http = self._metrics_http, None
            await asyncio.to_thread(httpd.shutdown)
            httpd.server_close()
        self._stopped.set()

    async def wait(self) -> None:
        """Return once the replica has stopped (after a drain or ``stop``)."""
        await self._stopped.wait()


def tls_credentials(cert: bytes, key: bytes, client_ca: bytes | None) -> grpc.ServerCredentials:
    """Server TLS credentials from PEM bytes; with ``client_ca`` (mTLS), callers
    must present a certificate signed by it (Envoy's upstream_tls cert)."""
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
