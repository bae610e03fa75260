"""The ADS gRPC server (grpc.aio): SotW ``StreamAggregatedResources`` and delta
``DeltaAggregatedResources`` over one ``SnapshotCache``.

This module is the thin I/O adapter: each stream gets a protocol session
(``caravan.xds.sotw`` / ``caravan.xds.delta``) and feeds it requests and snapshot
changes, one at a time, in arrival order; it sends what the session returns, counts
pushes, ACKs and NACKs, logs each NACK's reason, and keeps ``ClientRegistry`` current.
Abuse limits (``caravan.xds.limits``): a request naming too many resources, a client
that sends faster than it reads, or one that does not read a response within
``WRITE_STALL_S`` is cut off with RESOURCE_EXHAUSTED; client-supplied text is clipped
and repeated warnings rate-limited; NACKs from unverified clients (no node id, or no
ACK on their stream yet) count apart, so they cannot fire ``CaravanXdsNack``.
The port is plaintext, or TLS / mTLS with ``tls_credentials``.
The server also serves ``grpc.health.v1`` (overall status SERVING once the first
snapshot exists), so Envoy's bootstrap can health-check control-plane instances.

Everything runs on one event loop; none of this is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from caravan.spec import XdsTls
from caravan.xds.cache import SnapshotCache
from caravan.xds.clients import ClientInfo, ClientRegistry, XdsMetrics, short
from caravan.xds.delta import DeltaSession
from caravan.xds.limits import (
    MAX_PENDING_REQUESTS,
    MAX_RECEIVE_BYTES,
    WRITE_STALL_S,
    WarningLimiter,
    clip,
)
from caravan.xds.snapshot import Snapshot
from caravan.xds.sotw import Nack, Outcome, SotwSession

log = logging.getLogger(__name__)

_CHANGED = object()
_EOF = object()
OVERFLOW = (f"caravan xds: more than {MAX_PENDING_REQUESTS} requests pending; "
            "the client sends faster than it reads its responses")
STALLED = f"caravan xds: a response was not read within {WRITE_STALL_S:g} s"


class Session(Protocol):
    node_id: str
    cluster: str

    def handle_request(self, req: Any, snap: Snapshot) -> Outcome: ...

    def handle_snapshot(self, snap: Snapshot) -> Outcome: ...


class AdsServicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves both ADS flavours from ``cache``."""

    def __init__(self, cache: SnapshotCache, clients: ClientRegistry, metrics: XdsMetrics,
                 limiter: WarningLimiter | None = None) -> None:
        self._cache = cache
        self._clients = clients
        self._metrics = metrics
        self._limiter = limiter if limiter is not None else WarningLimiter()
        self.client_sans: frozenset[str] = frozenset()  # pinned client identities (mTLS)

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(SotwSession(), "sotw", request_iterator, context)

    async def DeltaAggregatedResources(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> None:
        await self._serve(DeltaSession(), "delta", request_iterator, context)

    async def _serve(
        self,
        session: Session,
        protocol: str,
        requests: AsyncIterator[Any],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Run one stream to its end; a refused or runaway stream is closed with
        RESOURCE_EXHAUSTED and a message saying why."""
        if self.client_sans and not self.client_sans & peer_sans(context.auth_context()):
            self._metrics.refused.labels(protocol).inc()
            self._warn("identity", "xds stream refused: client certificate not pinned",
                       {"peer": context.peer()})
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "caravan xds: the client certificate has none of the SANs in "
                                "security.xds_tls.client_sans")
        info = self._clients.connect(protocol, context.peer())
        self._metrics.clients.labels(protocol).inc()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cut = asyncio.Event()
        dirty = [False]

        def on_change(_snap: Snapshot) -> None:
            if not dirty[0]:
                dirty[0] = True
                queue.put_nowait(_CHANGED)

        self._cache.add_listener(on_change)
        reader = asyncio.create_task(_read(requests, queue, cut))
        log.info(
            "xds stream opened",
            extra={"stream": info.stream_id, "protocol": protocol, "peer": info.peer},
        )
        try:
            refused = await self._pump(session, info, queue, cut, dirty, context)
        finally:
            self._cache.remove_listener(on_change)
            reader.cancel()
            self._clients.disconnect(info)
            self._metrics.clients.labels(protocol).dec()
            log.info("xds stream closed", extra={"stream": info.stream_id, "node": info.node_id})
        if refused is not None:
            self._metrics.refused.labels(protocol).inc()
            self._warn("refused", "xds stream closed: " + refused,
                       {"stream": info.stream_id, "node": clip(info.node_id), "peer": info.peer})
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)

    async def _pump(self, session: Session, info: ClientInfo, queue: asyncio.Queue[object],
                    cut: asyncio.Event, dirty: list[bool],
                    context: grpc.aio.ServicerContext) -> str | None:
        """Handle requests and snapshot changes in arrival order until the client ends
        the stream (None) or must be cut off (the reason). Nothing is answered before the
        control plane's first snapshot: an answer from the empty one would make Envoy drop
        every cluster it holds (SotW), e.g. when it reconnects to a restarted control plane
        in the moment between its listening and its first discovery result."""
        if not self._cache.ready:
            await self._cache.wait_changed(0)
        while not cut.is_set():
            item = await queue.get()
            if item is _EOF:
                return OVERFLOW if cut.is_set() else None
            if item is _CHANGED:
                dirty[0] = False
                outcome = session.handle_snapshot(self._cache.snapshot)
            else:
                outcome = session.handle_request(item, self._cache.snapshot)
            if outcome.refused is not None:
                return outcome.refused
            self._record(info, session, outcome, item)
            for resp in outcome.responses:
                why = await _send(context, resp, cut)
                if why is not None:
                    return why
        return OVERFLOW

    def _warn(self, kind: str, message: str, extra: dict[str, Any]) -> None:
        """A rate-limited warning (``WarningLimiter``): ``dropped`` counts the lines of
        this kind left out since the last one logged."""
        dropped = self._limiter.admit(kind)
        if dropped is not None:
            log.warning(message, extra={**extra, "dropped": dropped})

    def _record(self, info: ClientInfo, session: Session, outcome: Outcome, item: object) -> None:
        info.node_id, info.cluster = session.node_id, session.cluster
        if outcome.stale:
            log.debug("stale nonce ignored", extra={"stream": info.stream_id})
        if outcome.unknown_type:
            self._warn("unknown_type", "request for an unknown type ignored", {
                "stream": info.stream_id, "type_url": clip(getattr(item, "type_url", ""))})
        if outcome.acked is not None:
            type_url, version = outcome.acked
            info.acked[type_url] = version
            self._metrics.acks.labels(short(type_url)).inc()
        if outcome.nack is not None:
            self._record_nack(info, outcome.nack)
        for resp in outcome.responses:
            info.pushes += 1
            self._metrics.pushes.labels(short(resp.type_url), info.protocol).inc()
            log.debug(
                "xds push",
                extra={
                    "node": info.node_id,
                    "type": short(resp.type_url),
                    "nonce": resp.nonce,
                    "stream": info.stream_id,
                },
            )

    def _record_nack(self, info: ClientInfo, n: Nack) -> None:
        """Keep and log a NACK (its text clipped). It counts in ``caravan_xds_nacks_total``
        (which ``CaravanXdsNack`` watches) only from a verified client: a stream with a
        node id that has ACKed a version before; others count in
        ``caravan_xds_unverified_nacks_total``."""
        reason = clip(n.message)
        info.nacks[n.type_url] = info.nacks.get(n.type_url, 0) + 1
        info.last_nack[n.type_url] = reason
        verified = bool(info.node_id) and bool(info.acked)
        counter = self._metrics.nacks if verified else self._metrics.unverified_nacks
        counter.labels(short(n.type_url)).inc()
        self._warn("nack" if verified else "unverified_nack",
                   "xds NACK: version parked until the snapshot changes", {
                       "node": clip(info.node_id), "type": short(n.type_url),
                       "version": n.version, "reason": reason, "stream": info.stream_id,
                       "verified": verified})


def peer_sans(auth_context: Mapping[str, Sequence[bytes]]) -> set[str]:
    """Every subject alternative name (DNS, URI, IP, email) of the peer's certificate in
    a gRPC ``auth_context`` (empty without a client certificate)."""
    return {v.decode(errors="replace") for k, vs in auth_context.items()
            if "subject_alternative_name" in k for v in vs}


async def _read(requests: AsyncIterator[Any], queue: asyncio.Queue[object],
                cut: asyncio.Event) -> None:
    """Queue the stream's requests; stop and set ``cut`` once ``MAX_PENDING_REQUESTS``
    are waiting (the client sends but does not read its answers)."""
    try:
        async for req in requests:
            if queue.qsize() >= MAX_PENDING_REQUESTS:
                cut.set()
                return
            queue.put_nowait(req)
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass
    except Exception:  # a broken stream ends the stream, not the server
        log.exception("xds stream read failed")
    finally:
        queue.put_nowait(_EOF)


async def _send(context: grpc.aio.ServicerContext, resp: Any, cut: asyncio.Event) -> str | None:
    """Write ``resp``; the reason to cut the stream off instead when ``cut`` is set or
    the client has not taken it within ``WRITE_STALL_S``; None once written."""
    write = asyncio.ensure_future(context.write(resp))
    cut_wait = asyncio.ensure_future(cut.wait())
    try:
        done, _ = await asyncio.wait({write, cut_wait}, timeout=WRITE_STALL_S,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        cut_wait.cancel()
    if write in done:
        write.result()
        return None
    write.cancel()
    write.add_done_callback(_consume)  # the abandoned write fails once the stream is closed
    return OVERFLOW if cut.is_set() else STALLED


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class XdsServer:
    """A grpc.aio server with ADS and health. ``start`` returns the bound port."""

    def __init__(
        self,
        cache: SnapshotCache,
        clients: ClientRegistry,
        metrics: XdsMetrics,
        host: str = "127.0.0.1",
        port: int = 0,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.cache = cache
        self.host = host
        self.port = port
        self.credentials = credentials
        self._server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ]
        )
        self._ads = AdsServicer(cache, clients, metrics)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self._ads, self._server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)

    def use_credentials(self, credentials: grpc.ServerCredentials,
                        client_sans: tuple[str, ...] = ()) -> None:
        """Serve TLS (see ``tls_credentials``) instead of plaintext. Call before ``start``.
        ``client_sans`` non-empty: an ADS stream whose client certificate has none of
        these SANs is refused with PERMISSION_DENIED (``security.xds_tls.client_sans``)."""
        self.credentials = credentials
        self._ads.client_sans = frozenset(client_sans)

    async def start(self) -> int:
        """Bind and start serving (TLS when ``credentials`` is set). Raises
        RuntimeError if the port cannot be bound."""
        address = f"{self.host}:{self.port}"
        if self.credentials is None:
            bound: int = self._server.add_insecure_port(address)
        else:
            bound = self._server.add_secure_port(address, self.credentials)
        if bound == 0:
            raise RuntimeError(f"xds: cannot listen on {self.host}:{self.port}")
        self.port = bound
        await self._server.start()
        await self.set_serving(self.cache.ready)
        return bound

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self._health.set("", status)

    async def stop(self, grace_s: float = 1.0) -> None:
        await self._server.stop(grace_s)


def tls_credentials(
    tls: XdsTls, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()
) -> grpc.ServerCredentials:
    """gRPC server credentials for the xDS port from ``tls`` (cert, key; with
    ``client_ca_file``, a client certificate signed by it is required). Raises
    ValueError naming the unreadable field and path."""
    def read(field: str, path: str) -> bytes:
        try:
            return read_file(path)
        except OSError as exc:
            raise ValueError(
                f"security.xds_tls.{field}: cannot read {path!r} ({exc.strerror})"
            ) from None

    pair = (read("key_file", tls.key_file), read("cert_file", tls.cert_file))
    ca = None if tls.client_ca_file is None else read("client_ca_file", tls.client_ca_file)
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
