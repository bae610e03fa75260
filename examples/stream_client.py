"""Stream tokens from Caravan through Envoy over Triton's gRPC protocol.

    python examples/stream_client.py [HOST:PORT] [MODEL] [--spec platform.yaml] [--session ID]

One request on one ``ModelStreamInfer`` stream: the only inference RPC a Triton
replica with the vLLM backend serves (the backend is decoupled; unary ``ModelInfer``
gets UNIMPLEMENTED). With ``stream`` = true each response carries only the new text and
the last one has the parameter ``triton_final_response`` = true (with ``stream`` =
false there is one response with the whole text).

Headers: the model header routes the request to MODEL's replicas; the session header
keeps a conversation on one replica (Maglev). Their names come from the spec
(``envoy.model_header``, the model's ``routing.session_header``) when ``--spec`` is
given, else the defaults ``x-model`` / ``x-session-id``. Envoy names the replica that
served the stream (``host:port``) in the ``x-caravan-upstream`` response header.
"""

import argparse
import json
import sys

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from caravan.bench.answer import text_outputs
from caravan.spec import load_spec
from caravan.xds.resources import UPSTREAM_HOST_HEADER


def header_names(spec_path, model):
    """(model header, session header): the spec's names, or the defaults without one."""
    if spec_path is None:
        return "x-model", "x-session-id"
    spec = load_spec(spec_path)
    served = next((m for m in spec.models if m.name == model), spec.default)
    return spec.envoy.model_header, served.routing.session_header


def request(model, prompt, max_tokens):
    """A ModelInferRequest with the vLLM backend's inputs (typed tensor contents)."""
    req = service_pb2.ModelInferRequest(model_name=model, id="demo-1")
    req.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents.append(prompt)
    req.inputs.add(name="stream", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    params = json.dumps({"max_tokens": max_tokens, "temperature": 0.7}).encode()
    req.inputs.add(name="sampling_parameters", datatype="BYTES", shape=[1]).contents.bytes_contents.append(params)
    req.inputs.add(name="exclude_input_in_output", datatype="BOOL", shape=[1]).contents.bool_contents.append(True)
    return req


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", nargs="?", default="127.0.0.1:8080")
    p.add_argument("model", nargs="?", default="llama-3-8b")
    p.add_argument("--spec", help="platform spec: use its header names")
    p.add_argument("--session", default="user-42", help="conversation id (sent in the session header)")
    a = p.parse_args()
    model_header, session_header = header_names(a.spec, a.model)
    with grpc.insecure_channel(a.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(iter([request(a.model, b"What is Nomad?", 64)]), timeout=60,
                                     metadata=((model_header, a.model), (session_header, a.session)))
        for resp in call:
            if resp.error_message:
                sys.exit(f"error: {resp.error_message}")
            print("".join(text_outputs(resp.infer_response)), end="", flush=True)
            if resp.infer_response.parameters["triton_final_response"].bool_param:
                break
        upstream = dict(call.initial_metadata()).get(UPSTREAM_HOST_HEADER, "unknown (no Envoy in front?)")
    print(f"\n(served by replica {upstream})")


if __name__ == "__main__":
    main()
