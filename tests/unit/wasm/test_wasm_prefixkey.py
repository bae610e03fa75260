"""The prefix-key filter's parser (``caravan/wasm/prefixkey.c``, ``prefix_key_of``),
built natively from the same source (``-DPREFIXKEY_NATIVE``) and called through ctypes:
the key of a ModelInferRequest's first gRPC message, as its bytes arrive.

The reference key is the one docs/routing.md describes (and the Lua script before the
filter computed): 32-bit FNV-1a of the first N words (split on ASCII whitespace) joined
by one space, 8 hex digits. The filter itself runs in the real Envoy in
tests/integration/xds/test_xds_prefix_routing.py."""

from __future__ import annotations

import ctypes
import struct
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2 as pb

from caravan.bench.wire import encode_request, request_tensors
from caravan.wasm import build

KEY, MORE, NONE = 1, 2, 0
NATIVE = ("-shared", "-fPIC", "-O2", "-Wall", "-ffreestanding", "-nostdlib", "-DPREFIXKEY_NATIVE")


@pytest.fixture(scope="module")
def parser(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    out = tmp_path_factory.mktemp("prefixkey") / "prefixkey.so"
    build.compile_c(build.source_path("prefixkey"), out, NATIVE)  # ~0.3 s: no libc to build
    lib = ctypes.CDLL(str(out))
    lib.prefix_key_of.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p]
    lib.prefix_key_of.restype = ctypes.c_int
    return lib


def key_of(lib: ctypes.CDLL, body: bytes, words: int) -> tuple[int, str]:
    out = ctypes.create_string_buffer(9)
    r = lib.prefix_key_of(body, len(body), words, out)
    return r, out.value.decode() if r == KEY else ""


def reference(prompt: bytes, words: int) -> str:
    h = 2166136261
    for b in b" ".join(prompt.split()[:words]):
        h = ((h ^ b) * 16777619) % 2**32
    return f"{h:08x}"


def frame(message: bytes, compressed: int = 0) -> bytes:
    return struct.pack(">BI", compressed, len(message)) + message


def stream_request(prompt: str) -> bytes:
    return frame(encode_request("llm", "1", prompt, 4, stream=True, count_tokens=False))


PROMPTS = ["hello", "  leading\tand\r\ntrailing  whitespace \x0b\x0c ", "unicode wörds — ok ✓ end",
           " ".join(f"w{i}" for i in range(300))]


@pytest.mark.parametrize("words", [1, 3, 32, 64, 1000])
@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_the_key_is_fnv1a_of_the_first_words(parser: ctypes.CDLL, prompt: str, words: int) -> None:
    assert key_of(parser, stream_request(prompt), words) == (KEY, reference(prompt.encode(), words))


def test_the_key_is_decided_as_soon_as_the_first_words_are_there(parser: ctypes.CDLL) -> None:
    prompt = " ".join(f"word{i}" for i in range(3000))  # ~26 KiB: several HTTP/2 frames
    body = stream_request(prompt)
    want = (KEY, reference(prompt.encode(), 64))
    seen = [key_of(parser, body[:cut], 64) for cut in range(0, len(body) + 1, 7)]
    decided = next(i for i, r in enumerate(seen) if r[0] != MORE)
    assert seen[decided:] == [want] * (len(seen) - decided), "undecided, then the same key for good"
    assert decided * 7 < 1024, "the key needs the first 64 words, not the 26 KiB message"


def test_a_word_cut_at_the_end_of_the_bytes_so_far_waits(parser: ctypes.CDLL) -> None:
    body = stream_request("alpha beta gamma")
    cut = body.index(b"gam") + 3
    assert key_of(parser, body[:cut], 3)[0] == MORE
    assert key_of(parser, body[:cut + 1], 2) == (KEY, reference(b"alpha beta", 2))


def _typed(prompt: str, reverse: bool) -> bytes:
    req = pb.ModelInferRequest(model_name="llm", id="typed")
    tensors = request_tensors(prompt, 2, False, False, {})
    for name, dtype, raw in reversed(tensors) if reverse else tensors:
        t = req.inputs.add(name=name, datatype=dtype, shape=[1])
        if dtype == "BYTES":
            t.contents.bytes_contents.append(raw[4:])
        else:
            t.contents.bool_contents.append(raw == b"\x01")
    return frame(req.SerializeToString())


@pytest.mark.parametrize("reverse", [False, True])
def test_typed_bytes_contents_are_keyed_like_raw_contents(parser: ctypes.CDLL, reverse: bool) -> None:
    prompt = "typed contents of a prompt " * 20
    assert key_of(parser, _typed(prompt, reverse), 32) == key_of(parser, stream_request(prompt), 32)


def test_raw_contents_before_the_inputs_are_keyed_too(parser: ctypes.CDLL) -> None:
    prompt = "raw first then the inputs"
    tensors = request_tensors(prompt, 2, False, False, {})
    inputs = pb.ModelInferRequest(model_name="llm")
    for name, dtype, _ in tensors:
        inputs.inputs.add(name=name, datatype=dtype, shape=[1])
    raws = pb.ModelInferRequest(raw_input_contents=[raw for _, _, raw in tensors])
    body = frame(raws.SerializeToString() + inputs.SerializeToString())  # fields out of order
    assert key_of(parser, body, 8) == (KEY, reference(prompt.encode(), 8))


def _request(**fields: object) -> bytes:
    return frame(pb.ModelInferRequest(model_name="llm", **fields).SerializeToString())  # type: ignore[arg-type]


TEXT = pb.ModelInferRequest.InferInputTensor(name="text_input", datatype="BYTES", shape=[1])
OTHER = pb.ModelInferRequest.InferInputTensor(name="stream", datatype="BOOL", shape=[1])


@pytest.mark.parametrize("body", [
    frame(b"\xff\xff\xff\xff\x0fnot a protobuf"),
    _request(id="no-inputs"),
    _request(inputs=[OTHER], raw_input_contents=[b"\x01"]),
    _request(inputs=[TEXT], raw_input_contents=[b"\x01"]),
    _request(inputs=[TEXT], raw_input_contents=[struct.pack("<I", 0)]),
    _request(inputs=[TEXT], raw_input_contents=[struct.pack("<I", 6) + b" \t\n  "]),
    _request(inputs=[OTHER, TEXT], raw_input_contents=[b"\x01"]),
    frame(encode_request("llm", "1", "compressed", 4, stream=False, count_tokens=False), compressed=1),
], ids=["garbage", "no-text-input", "other-inputs-only", "short-raw-element", "empty-prompt",
        "whitespace-prompt", "no-raw-element-for-text", "compressed-flag"])
def test_unexpected_bodies_get_no_key(parser: ctypes.CDLL, body: bytes) -> None:
    assert key_of(parser, body, 32) == (NONE, "")


def test_a_stream_cut_inside_its_first_message_stays_undecided(parser: ctypes.CDLL) -> None:
    body = stream_request(" ".join(["same"] * 50))
    last = body.rindex(b"same") + 2
    assert [key_of(parser, body[:n], 64)[0] for n in (0, 4, 5, 40, last)] == [MORE] * 5
    assert key_of(parser, body, 64) == (KEY, reference(b"same " * 50, 64)), "fewer words than asked: all"


def test_a_raw_element_longer_than_its_length_prefix_is_cut_to_the_prefix(parser: ctypes.CDLL) -> None:
    body = _request(inputs=[TEXT], raw_input_contents=[struct.pack("<I", 5) + b"hello world"])
    assert key_of(parser, body, 8) == (KEY, reference(b"hello", 8))


def test_a_length_prefix_past_the_element_keys_the_bytes_there(parser: ctypes.CDLL) -> None:
    body = _request(inputs=[TEXT], raw_input_contents=[struct.pack("<I", 99) + b"hello world"])
    assert key_of(parser, body, 8) == (KEY, reference(b"hello world", 8))


def test_the_source_builds_as_a_proxy_wasm_module() -> None:
    assert build.module_bytes("prefixkey")[:4] == b"\0asm"
    assert Path(build.source_path("prefixkey")).name == "prefixkey.c"
