"""Debouncer: quiet window + max delay, over a fake clock (times in seconds)."""

from __future__ import annotations

import pytest

from caravan.xds.debounce import Debouncer


@pytest.mark.parametrize(
    ("events", "checks"),
    [
        ([0.0], [(0.04, False), (0.05, True)]),
        ([0.0, 0.03, 0.06], [(0.10, False), (0.11, True)]),
        ([i * 0.04 for i in range(40)], [(0.99, False), (1.0, True)]),
        ([], [(0.0, False), (10.0, False)]),
    ],
    ids=[
        "single-event-quiet-window",
        "burst-extends-quiet-window",
        "steady-stream-capped-by-max",
        "idle-never-due",
    ],
)
def test_due_times(events: list[float], checks: list[tuple[float, bool]]) -> None:
    d = Debouncer(quiet_s=0.05, max_s=1.0)
    for t in events:
        d.event(t)
    for now, due in checks:
        assert d.due(now) is due, now


def test_fire_resets_and_next_burst_starts_fresh() -> None:
    d = Debouncer.from_ms(50, 1000)
    d.event(0.0)
    assert d.deadline() == pytest.approx(0.05)
    d.fire()
    assert d.deadline() is None and not d.pending
    d.event(5.0)
    assert d.deadline() == pytest.approx(5.05)


@pytest.mark.parametrize(
    ("quiet", "max_", "message"),
    [(-1.0, 1.0, "quiet_s: must be >= 0"), (0.5, 0.1, "max_s: must be >= quiet_s")],
    ids=["negative-quiet", "max-below-quiet"],
)
def test_bad_settings_are_named(quiet: float, max_: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Debouncer(quiet, max_)
