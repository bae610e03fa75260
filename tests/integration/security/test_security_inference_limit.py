"""Rate limits count inferences, not streams (issue 17, attack 3), on the real Envoy
(two workers) and a real tritonserver replica.

Stack: xDS and replicas over mTLS (required with API keys), API keys; client ``flood`` limited to
``RATE`` req/s with ``BURST``, client ``good`` to 200 req/s. Before the fix one
ModelStreamInfer stream carried any number of requests for one token. Now the
inference-limit filter (``caravan.xds.inference_limit``) takes a token per request
message from one bucket per client shared by Envoy's workers, so over t seconds
``flood`` gets at most BURST + RATE x t answers, on one stream or many, and the stream
that runs out ends with RESOURCE_EXHAUSTED (``refused_message``) when nothing was
answered on it yet (once the replica has answered on a stream, Envoy can only reset it:
INTERNAL, RST_STREAM).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sec_flood
from sec_pki import Pki, make_pki
from sec_stack import MODEL, SecureStack, admin_get, start_stack

from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.xds.inference_limit import REFUSED_STAT, refused_message

pytestmark = pytest.mark.integration

KEYS = {"flood": "flood-key-0123456789abcdef", "good": "good-key-0123456789abcdef"}
RATE, BURST = 2.0, 5


def _spec(tmp: Path, pki: Pki) -> PlatformSpec:
    keys = tmp / "api-keys.txt"
    keys.write_text("".join(f"{c}: {k}\n" for c, k in KEYS.items()))
    return parse_spec({
        "models": [{"name": MODEL, "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031, "retries": 0}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 10, "debounce_max_ms": 100},
        "security": {
            "xds_tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                        "ca_file": str(pki.ca), "client_ca_file": str(pki.ca),
                        "client_cert_file": str(pki.client_cert),
                        "client_key_file": str(pki.client_key)},
            "upstream_tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                             "key_file": str(pki.client_key)},
            "api_keys": {"file": str(keys), "rate_limit": {"requests_per_s": 200, "burst": 200},
                         "client_limits": {"flood": {"requests_per_s": RATE, "burst": BURST}}},
        },
    })


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    tmp = tmp_path_factory.mktemp("sec-inference-limit")
    pki = make_pki(tmp / "pki")
    stack = start_stack(tmp, _spec(tmp, pki), pki, 1, mtls_replicas=True, envoy_concurrency=2)
    try:
        yield stack
    finally:
        stack.close()


def _refill() -> None:
    """Wait until ``flood``'s buckets are full again (BURST / RATE seconds)."""
    time.sleep(BURST / RATE)


def _refused_streams(stack: SecureStack) -> int:
    for line in admin_get(stack.spec.envoy.admin_port, "/stats").splitlines():
        if line.startswith(REFUSED_STAT + ":"):
            return int(line.split(":")[1])
    return 0


def _ended_as_promised(o: sec_flood.StreamOutcome) -> bool:
    """RESOURCE_EXHAUSTED with the filter's message when nothing was answered on the
    stream yet; a reset (INTERNAL, RST_STREAM) once the replica had answered."""
    if o.answered == 0:
        return (o.status, o.message) == ("RESOURCE_EXHAUSTED", refused_message("flood"))
    return o.status == "INTERNAL" and "RST_STREAM" in o.message


def test_one_stream_carrying_200_requests_gets_at_most_the_burst(stack: SecureStack) -> None:
    """Before: 200 requests on one stream were all answered for one token. Now the
    stream ends at the first request past the bucket."""
    _refill()
    before = _refused_streams(stack)
    got = sec_flood.one_stream(stack.url, sec_flood.api_key(KEYS["flood"]), 200)
    assert got.answered <= sec_flood.allowed(BURST, RATE, [got]), got
    assert got.status != "OK" and _ended_as_promised(got), got
    assert _refused_streams(stack) == before + 1


def test_large_requests_spanning_many_data_frames_count_once_each(stack: SecureStack) -> None:
    """Four 60 KB requests on one stream (each spread over several HTTP/2 DATA frames,
    so over several body chunks in the filter) take four tokens of the five: all are
    answered. A parser that took payload bytes for frame headers would refuse them."""
    _refill()
    got = sec_flood.one_stream(stack.url, sec_flood.api_key(KEYS["flood"]), 4, text="x" * 60_000)
    assert (got.answered, got.status) == (4, "OK"), got


def test_many_streams_share_one_bucket_across_connections_and_workers(stack: SecureStack) -> None:
    """12 streams, each on its own connection (spread over Envoy's two workers), 3
    requests each: the per-stream limit alone would admit 3 x (BURST + RATE x t); the
    inference limit holds the total to BURST + RATE x t, and a stream that runs out ends
    as promised."""
    _refill()
    outcomes = sec_flood.many_streams(stack.url, sec_flood.api_key(KEYS["flood"]), streams=12, per_stream=3)
    answered = sum(o.answered for o in outcomes)
    assert answered <= sec_flood.allowed(BURST, RATE, outcomes), outcomes
    assert answered >= BURST - 2, outcomes  # the burst itself is served
    refused = [o for o in outcomes if o.status != "OK"]
    assert refused, outcomes
    assert all(_ended_as_promised(o) or o.status == "RESOURCE_EXHAUSTED" for o in refused), refused


def test_a_well_behaved_client_is_served_during_the_flood(stack: SecureStack) -> None:
    """While ``flood`` sends 200-request streams for 3 s, ``good`` gets every one of its
    requests answered (timings are in benchmarks/inference_limit.py)."""
    _refill()
    stop = time.monotonic() + 3.0
    floods: list[sec_flood.StreamOutcome] = []

    def flood() -> None:
        while time.monotonic() < stop:
            floods.append(sec_flood.one_stream(stack.url, sec_flood.api_key(KEYS["flood"]), 200, timeout_s=5))

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    good = sec_flood.timed_requests(stack.url, sec_flood.api_key(KEYS["good"]), 60, pause_s=0.02, until=stop)
    thread.join(15)
    assert floods and sum(o.answered for o in floods) <= sec_flood.allowed(BURST, RATE, floods)
    assert good and all(status == "OK" for status, _ in good), good
