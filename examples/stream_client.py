"""Stream tokens from Caravan through Envoy with tritonclient's own gRPC client.

    python examples/stream_client.py [HOST:PORT] [MODEL]

Triton's vLLM backend is decoupled: each streamed response carries only the new
text, and the last one has the parameter ``triton_final_response = true``.
"""

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient

url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080"
model = sys.argv[2] if len(sys.argv) > 2 else "llama-3-8b"


def tensor(name, dtype, value):
    t = grpcclient.InferInput(name, [1], dtype)
    t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
    return t


inputs = [
    tensor("text_input", "BYTES", b"What is Nomad?"),
    tensor("stream", "BOOL", True),
    tensor("sampling_parameters", "BYTES", json.dumps({"max_tokens": 64, "temperature": 0.7}).encode()),
    tensor("exclude_input_in_output", "BOOL", True),
]
responses: queue.Queue = queue.Queue()
client = grpcclient.InferenceServerClient(url)
# x-model routes to the model's replicas; x-session-id keeps a conversation on one replica (Maglev).
client.start_stream(callback=lambda result, error: responses.put((result, error)),
                    headers={"x-model": model, "x-session-id": "user-42"})
client.async_stream_infer(model, inputs, request_id="demo-1")
while True:
    result, error = responses.get(timeout=60)
    if error is not None:
        raise SystemExit(f"error: {error}")
    response = result.get_response()
    print(result.as_numpy("text_output")[0].decode(), end="", flush=True)
    if response.parameters["triton_final_response"].bool_param:
        break
client.stop_stream()
print(f"\n(served by replica {response.parameters['caravan_replica_id'].string_param})")
