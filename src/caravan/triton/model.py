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
* ``execute`` hands each request to the loop and returns None at once (so Triton counts
  ``nv_inference_request_success`` there, whatever happens in the stream later). With
  ``ENABLE_VLLM_HEALTH_CHECK`` it first checks the engine (``_check_health``): when the
  engine is dead, it asks Triton to unload the model (health then answers NOT_SERVING)
  and fails the requests with UNAVAILABLE "Model is unavailable due to unhealthy vLLM
  engine".
* Per request (``_infer``): streaming responses carry only new text; errors go in-stream
  as "Error generating stream: ..." with ``text_output`` "N/A"; a cancelled request ends
  with CANCELLED "Request was cancelled".
* The engine dies when the settings' ``fault_file`` exists (polled every 0.1 s): the way
  tests make the engine fail while the process lives.
* ``finalize`` (SIGTERM, unload): waits for requests in flight, then stops the threads.

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
from caravan.triton.generation import EngineDeadError, Generator, Outcome
from caravan.triton.settings import SETTINGS_FILE, SimulatorSettings
from caravan.triton.vllm_metrics import VllmMetrics

_FAULT_POLL_S = 0.1


def _pb() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside the Python backend stub

    return pb_utils


class _Call:
    """One request's response sender and cancellation flag (set by the response thread)."""

    __slots__ = ("cancelled", "sender")

    def __init__(self, sender: Any) -> None:
        self.sender = sender
        self.cancelled = False


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
            self._metrics = VllmMetrics(pb, self._name, args["model_version"], settings.engine.max_model_len)
        self._started = 0  # written by execute's thread only
        self._done = 0  # written by the response thread only
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

    async def _watch_fault(self) -> None:
        path = self._settings.fault_file
        while path and not self._gen.dead:
            if os.path.exists(path):
                self._log.log_error(f"[caravan] engine failure injected ({path} exists): the engine is dead")
                self._gen.kill()
                return
            await asyncio.sleep(_FAULT_POLL_S)

    def execute(self, requests: list[Any]) -> None:
        if self._health_check and not self._check_health(requests):
            return None
        for request in requests:
            self._started += 1
            asyncio.run_coroutine_threadsafe(self._infer(request), self._loop)
        return None

    def _check_health(self, requests: list[Any]) -> bool:
        pb = self._pb
        if self._healthy and self._gen.dead:
            self._log.log_error("[vllm] Engine is not healthy and model will be unloaded")
            pb.unload_model(self._name)  # non-blocking
            self._healthy = False
        if not self._healthy:
            error = pb.TritonError(message="Model is unavailable due to unhealthy vLLM engine",
                                   code=pb.TritonError.UNAVAILABLE)
            for request in requests:
                request.get_response_sender().send(pb.InferenceResponse(error=error),
                                                   flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return self._healthy

    async def _infer(self, request: Any) -> None:
        pb = self._pb
        call = _Call(request.get_response_sender())
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            req = contract.parse_request(self._inputs(request), request.parameters(), self._name)
            async for piece in self._gen.run(req, self._finished, lambda: call.cancelled):
                tensors = [pb.Tensor(k, v) for k, v in contract.output_arrays(req, piece).items()]
                flags = final if piece.finish_reason is not None else 0
                self._outbox.put(("send", call, pb.InferenceResponse(output_tensors=tensors), flags))
            if call.cancelled:
                error = pb.TritonError(message="Request was cancelled", code=pb.TritonError.CANCELLED)
                self._outbox.put(("send", call, pb.InferenceResponse(error=error), final))
        except (contract.ContractError, EngineDeadError) as exc:
            self._send_error(call, str(exc))
        except Exception as exc:  # the backend reports every failure in-stream
            self._log.log_error(f"[vllm] Error generating stream: {traceback.format_exc()}")
            self._send_error(call, str(exc))
        finally:
            self._outbox.put(("done",))

    def _send_error(self, call: _Call, message: str) -> None:
        pb = self._pb
        text = pb.Tensor("text_output", np.asarray([contract.ERROR_TEXT_OUTPUT], dtype=np.object_))
        response = pb.InferenceResponse(output_tensors=[text],
                                        error=pb.TritonError(contract.ERROR_PREFIX + message))
        self._outbox.put(("send", call, response, pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL))

    def _inputs(self, request: Any) -> dict[str, Any]:
        out = {}
        for name, *_ in contract.INPUTS:
            tensor = self._pb.get_input_tensor_by_name(request, name)
            if tensor is not None:
                out[name] = tensor.as_numpy()
        return out

    def _finished(self, outcome: Outcome) -> None:
        if self._metrics is not None:
            self._outbox.put(("metrics", outcome))

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
        elif kind == "metrics":
            assert self._metrics is not None
            self._metrics.observe(item[1])
        else:
            self._done += 1

    def finalize(self) -> None:
        self._log.log_info("[caravan] finalize: waiting for requests in flight")
        while self._started > self._done:
            time.sleep(0.05)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._loop_thread.join()
        self._outbox.put(None)
        self._out_thread.join()


def _bool_param(params: dict[str, Any], key: str) -> bool:
    return str(params.get(key, {}).get("string_value", "")).lower() == "true"
