"""``FakeNomad``: the server's lifecycle (HTTP or HTTPS) and the tests' controls."""

from __future__ import annotations

import copy
import ssl
import threading
from collections.abc import Callable
from http.server import ThreadingHTTPServer

from tests.fakes.nomad.api import Json
from tests.fakes.nomad.endpoints import JobEndpoints
from tests.fakes.nomad.jobspec import find_group
from tests.fakes.nomad.scheduler import gpus
from tests.fakes.nomad.server import RecordedRequest, handler_for
from tests.fakes.nomad.state import FakeClock


class FakeNomad(JobEndpoints):
    """The fake server. Use as a context manager or call ``start()``/``stop()``.

    ``token``: required X-Nomad-Token (403 "Permission denied" otherwise).
    ``gpu_nodes``: GPUs of each client node (None: unlimited capacity); allocations take
    their ``nvidia/gpu`` device count from one node.
    ``tls``: (cert, key, client CA or None) to serve HTTPS; with a client CA, a client
    certificate signed by it is required (``tls.verify_https_client``).
    """

    def __init__(self, token: str | None = None, host: str = "127.0.0.1",
                 clock: Callable[[], float] | None = None, gpu_nodes: list[int] | None = None,
                 tls: tuple[str, str, str | None] | None = None) -> None:
        super().__init__(clock or FakeClock(), gpu_nodes)
        self.token = token
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer((host, 0), handler_for(self))
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._wrap_tls(*tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _wrap_tls(self, cert: str, key: str, client_ca: str | None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https"

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> FakeNomad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeNomad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls ---------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move a ``FakeClock`` forward and let allocations and deployments catch up."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("advance() needs the default FakeClock; move your clock instead")
        with self._cond:
            self.clock.t += seconds
            self._catch_up()

    def set_model_load(self, job_id: str, seconds: float | None, namespace: str = "default",
                       ) -> None:
        """Checks pass ``seconds`` after the task starts (None: never, the model cannot load)."""
        with self._cond:
            self._load[(namespace, job_id)] = seconds

    def set_task_start(self, job_id: str, seconds: float | None, namespace: str = "default",
                       ) -> None:
        """Tasks start ``seconds`` after placement (None: allocations stay pending)."""
        with self._cond:
            self._start[(namespace, job_id)] = seconds

    def set_gpu_nodes(self, nodes: list[int] | None) -> None:
        """Replace the client nodes (GPUs each); blocked evaluations run again."""
        with self._cond:
            self._catch_up()
            self.gpu_nodes = nodes
            self._unblock()

    def replace_allocations(self, job_id: str, group: str, n: int,
                            namespace: str = "default") -> None:
        """A node drain: stop ``n`` live allocations and place replacements outside any
        deployment (health judged by the group's ``migrate`` block)."""
        with self._cond:
            self._catch_up()
            key = (namespace, job_id)
            victims = [a for a in self._live(key, group)][:n]
            for a in victims:
                self._stop_alloc(a)
            tg = find_group(self._jobs[key], group)
            assert tg is not None
            for node in self._choose_nodes(gpus(tg), n, []):
                if node is not None:
                    self._new_alloc(key, tg, node, None)
            self._bump()

    def serving(self, job_id: str, group: str, namespace: str = "default") -> int:
        """Live allocations whose model has loaded (checks pass): what serves traffic,
        whatever Nomad's deployment health says (an in-place update keeps serving)."""
        with self._cond:
            self._catch_up()
            now = self.clock()
            return sum(1 for a in self._live((namespace, job_id), group)
                       if a.ready_at is not None and a.ready_at <= now)

    def job(self, job_id: str, namespace: str = "default") -> Json | None:
        with self._cond:
            self._catch_up()
            return copy.deepcopy(self._jobs.get((namespace, job_id)))

    def allocations(self, job_id: str, namespace: str = "default") -> list[Json]:
        with self._cond:
            self._catch_up()
            return [self._alloc_json(a) for a in self._allocs if a.key == (namespace, job_id)]

    def deployments(self, job_id: str, namespace: str = "default") -> list[Json]:
        """Newest first."""
        with self._cond:
            self._catch_up()
            return [self._deploy_json(d) for d in reversed(self._deployments)
                    if d.key == (namespace, job_id)]

    def evaluations(self, job_id: str, namespace: str = "default") -> list[Json]:
        """Newest first."""
        with self._cond:
            self._catch_up()
            return [copy.deepcopy(e) for e in reversed(self._evals)
                    if (e["Namespace"], e["JobID"]) == (namespace, job_id)]
