"""``TritonPythonModel``: Caravan's simulated vLLM engine as a Triton Python-backend model.

Loaded by the Python backend stub inside the real ``tritonserver`` (the repository's
``<model>/1/model.py`` re-exports this class). It follows the structure of the vLLM
backend (triton-inference-server/vllm_backend ``src/model.py``):

* ``auto_complete_config`` adds the backend's inputs/outputs, forces
  ``decoupled: true`` and ``max_batch_size: 0``.
* ``initialize`` starts the engine on an asyncio loop in its own thread (the backend's
  ``_init_engine``) and a response thread that sends responses and records metrics (the
  backend's ``_response_loop``), then sleeps ``load_delay_s`` (weights loading: real
  tritonserver opens its ports only after startup models have loaded).
* ``execute`` (C26a, C30, C32): with ``ENABLE_VLLM_HEALTH_CHECK`` it first runs the
  engine's health check on the engine loop (``_check_health``): when the engine is dead,
  it asks Triton to unload the model and fails the requests with UNAVAILABLE "Model is
  unavailable due to unhealthy vLLM engine". Then, per request, the backend's
  ``_verify_loras``: sampling-parameters text that is not a JSON object makes
  ``execute()`` raise (Triton answers "Failed to process the request(s) ..." and counts
  a failure); a ``lora_name`` gets "LoRA feature is not enabled.". Other requests go to
  the loop and ``execute`` returns None at once (so Triton counts
  ``nv_inference_request_success`` there, whatever happens in the stream later).
* Per request (``_infer``): streaming responses carry only new text; errors go in-stream
  as "Error generating stream: ..." with ``text_output`` "N/A" (C27); cancellation is
  noticed at the next engine output (C31): a streaming request ends with CANCELLED
  "Request was cancelled", a non-streaming one with its text so far.
* Test seam, never used in production: the settings' ``fault_file``
  (``caravan.triton.settings.fault_mode``, looked at before each request, by the health
  check, and every 0.1 s). When it exists the engine dies (tests make the engine fail
  while the process lives); when it holds ``hang`` the engine hangs instead, a gray
  failure: health and ModelReady still answer, but a request that arrives meanwhile gets
  no response at all (so no response headers) until its client cancels it (then
  CANCELLED "Request was cancelled") or the file goes (then it is served).
* ``finalize`` (SIGTERM, unload): waits for requests in flight, then stops the threads.
* When ``tritonserver`` dies (SIGKILL, crash) the stub process exits too (C38): the stub
  checks this itself, but on 2.51 that check can block when the server was killed while
  a stream was running (observed: the orphaned stub lived on), so a watchdog thread
  exits the stub once its parent has changed.

Thread-safety: Triton calls ``execute`` on the stub's main thread; engine state lives on
the loop thread; ``response_sender.send`` and metric updates happen on the response thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from caravan.simulator.driver import EngineDriver
from caravan.simulator.engine import Engine
from caravan.triton import contract
from caravan.triton.generation import Generator, Progress
from caravan.triton.settings import FAULT_DEAD, FAULT_HANG, SETTINGS_FILE, SimulatorSettings, fault_mode
from caravan.triton.vllm_metrics import VllmMetrics

_FAULT_POLL_S = 0.1
_PARENT_POLL_S = 0.5


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside the Python backend stub

    return pb_utils


class _Call:
    """One request's response sender and cancellation flags."""

    __slots__ = ("aborted", "cancelled", "sender")

    def __init__(self, sender: Any) -> None:
        self.sender = sender
        self.cancelled = False  # seen by the response thread after a non-final send
        self.aborted = False  # the request was cancelled (noticed at an engine output)


class TritonPythonModel:
    """See the module docstring."""

    @classmethod
    def auto_complete_config(cls, config: Any) -> Any:
        have = config.as_dict()
        names = {t["name"] for t in have["input"]} | {t["name"] for t in have["output"]}
        for name, dtype, dims, optional in contract.INPUTS:
            if name not in names:
                config.add_input({"name": name, "data_type": dtype, "dims": list(dims), "optional": optional})
        for name, dtype, dims in contract.OUTPUTS:
            if name not in names:
                config.add_output({"name": name, "data_type": dtype, "dims": list(dims)})
        config.set_model_transaction_policy({"decoupled": True})
        config.set_max_batch_size(0)
        return config

    def initialize(self, args: dict[str, Any]) -> None:
        pb = _pb()
        self._pb = pb
        self._log = pb.Logger
        self._name = args["model_name"]
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self._health_check = _bool_param(params, "ENABLE_VLLM_HEALTH_CHECK")
        self._healthy = True
        version_dir = Path(args["model_repository"]) / args["model_version"]
        settings = SimulatorSettings.from_json((version_dir / SETTINGS_FILE).read_text())
        self._settings = settings
        self._metrics = None
        if _bool_param(params, "REPORT_CUSTOM_METRICS"):
            try:
                self._metrics = VllmMetrics(pb, self._name, args["model_version"], settings.engine.max_model_len,
                                            prefix_cache=_bool_param(params, "REPORT_PREFIX_CACHE_METRICS"))
            except Exception as exc:  # the backend loads anyway when the server has metrics off (C20)
                if "metrics not supported" not in str(exc):
                    raise
                self._log.log_info("[vllm] Metrics not supported")
        self._started = 0  # written by execute's thread only
        self._done = 0  # written by the response thread only
        self._parent_pid = os.getppid()
        self._stopping = threading.Event()
        threading.Thread(target=self._watch_parent, name="caravan-parent-watch", daemon=True).start()
        self._outbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self._out_thread = threading.Thread(target=self._response_loop, name="caravan-responses")
        self._out_thread.start()
        self._start_engine(settings)
        time.sleep(settings.load_delay_s)
        self._log.log_info(f"[caravan] simulated vLLM engine ready for {self._name}")

    def _start_engine(self, settings: SimulatorSettings) -> None:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def main() -> None:
            driver = None
            if settings.fixed_ms_per_token is None:
                driver = EngineDriver(Engine(settings.engine), settings.time_scale,
                                      settings.stream_interval_ms / 1000.0)
            self._gen = Generator(driver, settings.engine.max_model_len, settings.fixed_ms_per_token)
            self._stop = asyncio.Event()
            tasks = [asyncio.ensure_future(self._watch_fault())]
            if driver is not None:
                tasks.append(asyncio.ensure_future(driver.run()))
            ready.set()
            await self._stop.wait()
            for t in tasks:
                t.cancel()

        self._loop_thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),),
                                             name="caravan-engine")
        self._loop_thread.start()
        ready.wait()

    def _watch_parent(self) -> None:
        while not self._stopping.wait(_PARENT_POLL_S):
            if os.getppid() != self._parent_pid:  # tritonserver is gone: nobody to answer
                os._exit(1)

    def _sync_fault(self) -> None:
        """Kill the engine if the fault file says so (on the loop thread)."""
        path = self._settings.fault_file
        if path and not self._gen.dead and fault_mode(path) == FAULT_DEAD:
            self._log.log_error(f"[caravan] engine failure injected ({path} exists): the engine is dead")
            self._gen.kill()

    async def _held(self, call: _Call) -> bool:
        """Hang mode (test seam): hold the request, unanswered, while the fault file says
        ``hang``. True when the client cancelled it meanwhile (on the loop thread)."""
        while fault_mode(self._settings.fault_file) == FAULT_HANG:
            if call.sender.is_cancelled():
                return True
            await asyncio.sleep(_FAULT_POLL_S)
        return False

    async def _watch_fault(self) -> None:
        while self._settings.fault_file and not self._gen.dead:
            self._sync_fault()
            await asyncio.sleep(_FAULT_POLL_S)

    async def _engine_check_health(self) -> None:
        self._sync_fault()
        self._gen.check_health()

    def execute(self, requests: list[Any]) -> None:
        pb = self._pb
        if self._health_check and not self._check_health(requests):
            return None
        for request in requests:
            # The backend's _verify_loras: json.loads may raise here, out of execute (C26a).
            text = contract.sampling_text(self._inputs(request, ("sampling_parameters",)), request.parameters())
            lora_error = contract.verify_loras(text)
            if lora_error is not None:
                self._log.log_info("[vllm] LoRA is not enabled, please restart the backend with LoRA enabled.")
                self._respond_error(request.get_response_sender(), lora_error, pb.TritonError(lora_error))
                continue
            self._started += 1
            asyncio.run_coroutine_threadsafe(self._infer(request), self._loop)
        return None

    def _check_health(self, requests: list[Any]) -> bool:
        pb = self._pb
        try:
            asyncio.run_coroutine_threadsafe(self._engine_check_health(), self._loop).result()
        except Exception:
            self._log.log_error(
                f"[vllm] Engine is not healthy and model will be unloaded: {traceback.format_exc()}")
            pb.unload_model(self._name)  # non-blocking
            self._healthy = False
        if not self._healthy:
            for request in requests:
                error = pb.TritonError(message="Model is unavailable due to unhealthy vLLM engine",
                                       code=pb.TritonError.UNAVAILABLE)
                request.get_response_sender().send(pb.InferenceResponse(error=error),
                                                   flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return self._healthy

    async def _infer(self, request: Any) -> None:
        pb = self._pb
        call = _Call(request.get_response_sender())
        final_sent = False
        try:
            self._sync_fault()
            req = contract.parse_request(self._inputs(request), request.parameters(), self._name)
            if await self._held(call):
                call.aborted = True
                self._log.log_info("[caravan] a request held by the hang fault was cancelled")
                self._outbox.put(("send", call, pb.InferenceResponse(error=pb.TritonError(
                    message="Request was cancelled", code=pb.TritonError.CANCELLED)),
                    pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL))
                return

            def cancelled() -> bool:
                # Streaming: the flag the response thread read after the last send;
                # otherwise the sender, at each output (the backend's _infer).
                call.aborted = call.cancelled if req.stream else bool(call.sender.is_cancelled())
                return call.aborted

            async for piece in self._gen.run(req, self._record, cancelled):
                tensors = [pb.Tensor(k, v) for k, v in contract.output_arrays(req, piece).items()]
                flags = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if piece.final else 0
                final_sent = piece.final
                self._outbox.put(("send", call, pb.InferenceResponse(output_tensors=tensors), flags))
            if call.aborted:
                self._log.log_info("[vllm] Cancelling the request")
                self._log.log_info("[vllm] Successfully cancelled the request")
            if not final_sent:  # a cancelled streaming request
                error = pb.TritonError(message="Request was cancelled", code=pb.TritonError.CANCELLED)
                self._outbox.put(("send", call, pb.InferenceResponse(error=error),
                                  pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL))
        except Exception as exc:  # the backend reports every failure in-stream (C27)
            if isinstance(exc, contract.SamplingParamsError):
                self._log.log_error(contract.SAMPLING_LOG_PREFIX + exc.detail)
            self._log.log_error(f"[vllm] Error generating stream: {traceback.format_exc()}")
            message = contract.ERROR_PREFIX + str(exc)
            self._outbox.put(("respond_error", call, message))
        finally:
            self._outbox.put(("done",))

    def _respond_error(self, sender: Any, text_output: str, error: Any) -> None:
        """The backend's error response: the error plus a ``text_output`` tensor (which
        Triton drops on the wire, C10), final."""
        pb = self._pb
        text = pb.Tensor("text_output", np.asarray([text_output], dtype=np.object_))
        sender.send(pb.InferenceResponse(output_tensors=[text], error=error),
                    flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _inputs(self, request: Any, names: tuple[str, ...] | None = None) -> dict[str, Any]:
        out = {}
        for name in names if names is not None else (n for n, *_ in contract.INPUTS):
            tensor = self._pb.get_input_tensor_by_name(request, name)
            if tensor is not None:
                out[name] = tensor.as_numpy()
        return out

    def _record(self, stats: Progress) -> None:
        if self._metrics is not None:
            self._outbox.put(("metrics", stats))

    def _response_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            try:
                self._handle(item)
            except Exception:
                self._log.log_error(f"[caravan] response thread: {traceback.format_exc()}")

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "send":
            _, call, response, flags = item
            call.sender.send(response, flags)
            if not flags:
                call.cancelled = call.sender.is_cancelled()
        elif kind == "respond_error":
            _, call, message = item
            self._respond_error(call.sender, contract.ERROR_TEXT_OUTPUT, self._pb.TritonError(message))
        elif kind == "metrics":
            assert self._metrics is not None
            self._metrics.observe(item[1])
        else:
            self._done += 1

    def finalize(self) -> None:
        self._log.log_info("[caravan] finalize: waiting for requests in flight")
        self._stopping.set()
        while self._started > self._done:
            time.sleep(0.05)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._loop_thread.join()
        self._outbox.put(None)
        self._out_thread.join()


def _bool_param(params: dict[str, Any], key: str) -> bool:
    return str(params.get(key, {}).get("string_value", "")).lower() == "true"
