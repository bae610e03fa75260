"""Client-health figures and the warnings they raise."""

from __future__ import annotations

import pytest

from caravan.bench.lag import ClientHealth, LagThresholds, client_health, warnings


def test_client_health_hand_computed() -> None:
    h = client_health([0.0, 5.0, 12.0, 30.0], [1.0, 2.0], LagThresholds(10.0, 20.0))
    assert (h.late, h.schedule_max_ms, h.loop_max_ms, h.loop_samples) == (2, 30.0, 2.0, 2)
    assert h.schedule_p99_ms == pytest.approx(12.0 + 0.97 * 18.0)  # rank 2.97


def test_no_samples_is_healthy() -> None:
    assert client_health([], [], LagThresholds()) == ClientHealth()
    assert warnings(ClientHealth(), "c=1") == []


@pytest.mark.parametrize(
    ("sched", "loop", "expected"),
    [([1.0], [1.0], []),
     ([50.0], [1.0], ["behind schedule"]),
     ([1.0], [80.0], ["CPU-starved"]),
     ([50.0], [80.0], ["behind schedule", "CPU-starved"])],
    ids=["healthy", "late", "starved", "both"],
)
def test_warnings(sched: list[float], loop: list[float], expected: list[str]) -> None:
    msgs = warnings(client_health(sched, loop, LagThresholds(10.0, 20.0)), "rate=4")
    assert len(msgs) == len(expected)
    for msg, fragment in zip(msgs, expected, strict=True):
        assert msg.startswith("rate=4: ") and fragment in msg
