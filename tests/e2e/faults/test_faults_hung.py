"""Hung and gray replicas are cut off in seconds (issue 17 #7), against the real stack:
real ``tritonserver`` replicas, real control plane, real Envoy with the spec's default
timeouts (scenarios in ``faults_hung``; ``benchmarks/reliability.py`` records them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults_hung import LIMIT_S, gray_failure, replica_sigstop
from test_faults import run

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(120)]


def test_sigstopped_replica_streams_end_within_10s_and_it_comes_back(tmp_path: Path) -> None:
    """Streams on a frozen replica that had their first response end within 10 s with a
    retryable status (the reset Envoy sends once a response has started), not after
    Envoy's 300 s default; requests with no response yet and the short load are retried
    on the other replica (0 failed); the replica is marked unhealthy, and after SIGCONT
    it is healthy and serves again."""
    out = run(replica_sigstop, tmp_path)
    d = out.details
    assert out.violations == []
    assert out.failed == 0 and d["requests_after_stop"] >= 10, d["requests"]
    assert out.recovery_s is not None and out.recovery_s <= LIMIT_S
    assert d["unhealthy_s"] <= LIMIT_S
    assert d["envoy"]["health_check_failures"] >= 1 and d["envoy"]["retries"] >= 2, d["envoy"]


def test_gray_replica_ejected_within_10s_requests_before_first_token_retried(tmp_path: Path) -> None:
    """A replica that answers health checks but never answers inference is ejected
    within 10 s by outlier detection; every request caught on it had no response yet
    and completes on the other replica (0 failed)."""
    out = run(gray_failure, tmp_path)
    d = out.details
    assert out.violations == []
    assert out.failed == 0, d["requests"]
    assert d["caught_and_retried"] >= 1 and d["envoy"]["per_try_timeouts"] >= 1, d
    assert d["envoy"]["ejections"] >= 1
    assert out.recovery_s is not None and out.recovery_s <= LIMIT_S
