"""Helpers for the Triton conformance suite (docs/triton-contract.md): start a real
tritonserver replica, build KServe v2 requests, read raw ``ModelStreamInfer`` answers,
scrape the metrics port. Every wait is bounded in count and time.

Raw gRPC (tritonclient's generated ``service_pb2`` stubs) is used where the suite must see
the wire: ``error_message``, ``triton_final_response``, ids, shapes and dtypes that
tritonclient's stream callback hides; tritonclient's ``InferenceServerClient`` for the
rest (ModelInfer, config, metadata, readiness).
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor

from caravan.local.health import model_ready
from caravan.local.process import ChildProcess, free_port
from caravan.spec import EngineArgs, ModelSpec
from caravan.triton.launcher import ReplicaOptions, ReplicaPlan

MODEL = "m"
MAX_MODEL_LEN = 4096
STARTUP_S = 60.0


def spec(name: str = MODEL, max_model_len: int = MAX_MODEL_LEN) -> ModelSpec:
    return ModelSpec(name=name, engine=EngineArgs(model="simulated", max_model_len=max_model_len))


@dataclass
class Replica:
    """A running replica: its plan, process and log."""

    plan: ReplicaPlan
    proc: ChildProcess
    log: Path

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint

    @property
    def model(self) -> str:
        return self.plan.model.name

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_ready(proc: ChildProcess, endpoint: str, model: str,
               ready: Callable[[str, str], bool] = model_ready, timeout_s: float = STARTUP_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready(endpoint, model):
        assert proc.alive(), f"tritonserver exited:\n{proc.tail(40)}"
        assert time.monotonic() < deadline, f"{model} not ready after {timeout_s:.0f}s:\n{proc.tail(40)}"
        time.sleep(0.05)


@contextlib.contextmanager
def running_replica(state_dir: Path, options: ReplicaOptions, model: ModelSpec | None = None,
                    edit: Callable[[Path], None] | None = None, wait: bool = True,
                    ready: Callable[[str, str], bool] = model_ready) -> Iterator[Replica]:
    """Start a replica (``edit(state_dir)`` may change the written files first), wait
    until ``ready(endpoint, model)`` (ModelReady), stop it (SIGTERM, then SIGKILL after
    6 s) on exit."""
    plan = ReplicaPlan(state_dir, model or spec(), free_port(), free_port(), options)
    argv, env = plan.prepare()
    if edit is not None:
        edit(state_dir)
    log = state_dir / "tritonserver.log"
    proc = ChildProcess(f"conformance-{plan.grpc_port}", argv, log, env).start()
    try:
        if wait:
            wait_ready(proc, plan.endpoint, plan.model.name, ready)
        yield Replica(plan, proc, log)
    finally:
        proc.stop(grace_s=6.0)


# -- requests -----------------------------------------------------------------------

def _bytes_input(name: str, values: list[bytes]) -> tuple[service_pb2.ModelInferRequest.InferInputTensor, bytes]:
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[len(values)])
    return tensor, bytes(serialize_byte_tensor(np.array(values, dtype=np.object_)).item())


def infer_request(prompt: str | None = "hello caravan", *, model: str = MODEL, rid: str = "r1",
                  stream: bool | None = None, sampling: dict[str, Any] | str | None = None,
                  params: dict[str, Any] | None = None, version: str = "",
                  flags: dict[str, bool] | None = None,
                  extra: dict[str, list[bytes]] | None = None) -> service_pb2.ModelInferRequest:
    """One KServe v2 request for the vLLM backend's inputs. ``sampling``: the
    ``sampling_parameters`` tensor (a dict is JSON-encoded); ``params``: request
    parameters (bool / int / float / str, or ``("uint64", n)``); ``flags``: BOOL inputs
    such as ``exclude_input_in_output`` or ``return_*``; ``extra``: other BYTES inputs."""
    req = service_pb2.ModelInferRequest(model_name=model, id=rid, model_version=version)
    raw: list[bytes] = []

    def add(tensor: service_pb2.ModelInferRequest.InferInputTensor, content: bytes) -> None:
        req.inputs.append(tensor)
        raw.append(content)

    if prompt is not None:
        add(*_bytes_input("text_input", [prompt.encode()]))
    bools = dict(flags or {})
    if stream is not None:
        bools["stream"] = stream
    for name, value in bools.items():
        add(service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype="BOOL", shape=[1]),
            np.array([value], dtype=bool).tobytes())
    if sampling is not None:
        text = sampling if isinstance(sampling, str) else json.dumps(sampling)
        add(*_bytes_input("sampling_parameters", [text.encode()]))
    for name, values in (extra or {}).items():
        add(*_bytes_input(name, values))
    for key, value in (params or {}).items():
        p = req.parameters[key]
        if isinstance(value, tuple) and value[0] == "uint64":
            p.uint64_param = value[1]
        elif isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            p.int64_param = value
        elif isinstance(value, float):
            p.double_param = value
        else:
            p.string_param = str(value)
    req.raw_input_contents.extend(raw)
    return req


# -- responses ----------------------------------------------------------------------

@dataclass
class Answer:
    """One ``ModelStreamInferResponse``, decoded."""

    error: str
    id: str
    model_name: str
    model_version: str
    final: bool | None  # the triton_final_response parameter; None when absent
    outputs: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, list[int]] = field(default_factory=dict)
    parameters: frozenset[str] = frozenset()

    @property
    def text(self) -> str:
        return b"".join(self.outputs["text_output"].tolist()).decode()


def decode(resp: service_pb2.ModelStreamInferResponse) -> Answer:
    r = resp.infer_response
    flag = r.parameters.get("triton_final_response")
    answer = Answer(resp.error_message, r.id, r.model_name, r.model_version,
                    None if flag is None else bool(flag.bool_param), parameters=frozenset(r.parameters))
    if r.outputs:
        result = grpcclient.InferResult(r)
        for out in r.outputs:
            answer.outputs[out.name] = result.as_numpy(out.name)
            answer.datatypes[out.name] = out.datatype
            answer.shapes[out.name] = list(out.shape)
    return answer


def stream(endpoint: str, requests: list[service_pb2.ModelInferRequest],
           timeout_s: float = 20.0) -> list[Answer]:
    """Send ``requests`` on one ModelStreamInfer stream and half-close; every answer
    until the stream ends (Triton ends it OK once each request is done, C13). Raises
    grpc.RpcError if the stream fails."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return [decode(r) for r in stub.ModelStreamInfer(iter(requests), timeout=timeout_s)]


def one(endpoint: str, request: service_pb2.ModelInferRequest, timeout_s: float = 20.0) -> list[Answer]:
    return stream(endpoint, [request], timeout_s)


SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
ERR = "Error generating stream: "


def final_answer(answers: list[Answer]) -> Answer:
    assert answers, "no answer"
    assert [a.final for a in answers[:-1]] == [False] * (len(answers) - 1), answers
    assert answers[-1].final is True, answers[-1]
    return answers[-1]


def only_error(answers: list[Answer]) -> str:
    """The error of a request answered by exactly one error response."""
    assert len(answers) == 1, answers
    assert answers[0].error, answers[0]
    return answers[0].error


def num_output_tokens(answers: list[Answer]) -> int:
    return sum(int(a.outputs["num_output_tokens"].sum()) for a in answers)


class OpenStream:
    """A stream kept open: ``send`` requests, ``get`` answers as they come, ``cancel``
    or ``close`` (half-close). Answers and the final status arrive on a queue fed by a
    reader thread. Use as a context manager (always closes)."""

    def __init__(self, endpoint: str, timeout_s: float = 30.0) -> None:
        self._channel = grpc.insecure_channel(endpoint)
        self._out: queue.Queue[service_pb2.ModelInferRequest | None] = queue.Queue()
        self.answers: queue.Queue[Answer | BaseException | None] = queue.Queue()
        stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._call = stub.ModelStreamInfer(iter(self._out.get, None), timeout=timeout_s)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for resp in self._call:
                self.answers.put(decode(resp))
            self.answers.put(None)
        except BaseException as exc:  # the stream's status: grpc.RpcError
            self.answers.put(exc)

    def send(self, request: service_pb2.ModelInferRequest) -> None:
        self._out.put(request)

    def get(self, timeout_s: float = 10.0) -> Answer | BaseException | None:
        """The next answer, None when the stream ended OK, or the stream's RpcError."""
        return self.answers.get(timeout=timeout_s)

    def until_final(self, timeout_s: float = 20.0) -> list[Answer]:
        """Answers up to and including a final one (or an error answer)."""
        out: list[Answer] = []
        deadline = time.monotonic() + timeout_s
        while True:
            item = self.get(max(deadline - time.monotonic(), 0.01))
            assert isinstance(item, Answer), f"stream ended before a final answer: {item!r} after {out}"
            out.append(item)
            if item.final or item.error:
                return out

    def cancel(self) -> None:
        self._call.cancel()

    def close(self) -> None:
        self._out.put(None)

    def __enter__(self) -> OpenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._call.cancel()
        self._reader.join(5.0)
        self._channel.close()


def model_infer_error(endpoint: str, model: str) -> grpcclient.InferenceServerException:
    """The exception tritonclient's unary ``infer`` (ModelInfer) raises for ``model``."""
    client = grpcclient.InferenceServerClient(endpoint)
    try:
        text = grpcclient.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"hello"], dtype=np.object_))
        try:
            client.infer(model, [text], client_timeout=10)
        except grpcclient.InferenceServerException as exc:
            return exc
        raise AssertionError("ModelInfer succeeded")
    finally:
        client.close()


# -- metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([^\s{]+)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Scrape:
    """One scrape of the metrics port: family HELP and TYPE, and samples."""

    help: dict[str, str]
    types: dict[str, str]
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 if none)."""
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())

    def series(self, name: str) -> list[dict[str, str]]:
        return [lab for n, lab, _ in self.samples if n == name]


def scrape(metrics_port: int, host: str = "127.0.0.1") -> Scrape:
    with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    help_, types, samples = {}, {}, []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            help_[name] = doc
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m, line
            samples.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return Scrape(help_, types, samples)


def wait_for(probe: Callable[[], Any], what: str, timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy; its value. AssertionError after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what} (last: {value!r})"
        time.sleep(interval_s)


# -- TLS ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def build(cn: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None,
              usage: x509.ObjectIdentifier | None) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer[1] if issuer else name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
        if usage is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        return b.sign(issuer[0] if issuer else key, hashes.SHA256())

    def write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path

    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("conformance-ca", ca_key, None, None)
    ca_path, _ = write("ca", ca_key, ca)
    issuer = (ca_key, ca.subject)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = write("server", server_key, build("replica", server_key, issuer, ExtendedKeyUsageOID.SERVER_AUTH))
    client = write("client", client_key, build("client", client_key, issuer, ExtendedKeyUsageOID.CLIENT_AUTH))
    return Pki(ca_path, server[0], server[1], client[0], client[1])
