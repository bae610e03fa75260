"""The one client of Prometheus' HTTP API in Caravan (instant and range queries).

``GET {base}/api/v1/query?query=...`` and ``GET {base}/api/v1/query_range?query=...&start=
...&end=...&step=...`` (https://prometheus.io/docs/prometheus/latest/querying/api/).
Callers interpret the JSON answer (the autoscaler wants exactly one series,
``caravan.autoscaler.prometheus``; the panel plot wants every series,
``caravan.observability.panel_plot``). Failures raise ``PrometheusError`` with one
wording everywhere: ``HTTP <code> from Prometheus: <errorType>: <error>`` for an answer
Prometheus refused (bad PromQL, a timeout), ``Prometheus at <url> unreachable: <reason>``
when nothing answered, ``response is not JSON`` otherwise. Thread-safe (no shared
mutable state; one HTTP request per call).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from caravan.errors import BackendError


class PrometheusError(BackendError):
    """Prometheus refused a query, or could not be reached, or answered garbage."""


class PrometheusAPI:
    """``base_url`` like ``http://127.0.0.1:9090``; ``timeout_s`` bounds each HTTP request
    and is passed to Prometheus as the query timeout. Raises ValueError on a bad URL."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"prometheus URL {base_url!r}: expected http://host:port or https://...")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0 (got {timeout_s})")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str) -> Any:
        """The JSON answer of an instant query. Raises PrometheusError."""
        return self._get("query", {"query": promql})

    def query_range(self, promql: str, start_s: float, end_s: float, step_s: float) -> Any:
        """The JSON answer of a range query (Unix seconds; ``step_s`` > 0). Raises PrometheusError."""
        return self._get("query_range", {"query": promql, "start": f"{start_s:.3f}",
                                         "end": f"{end_s:.3f}", "step": f"{step_s:g}s"})

    def _get(self, endpoint: str, params: dict[str, str]) -> Any:
        args = urllib.parse.urlencode({**params, "timeout": f"{self.timeout_s:g}s"})
        url = f"{self.base_url}/api/v1/{endpoint}?{args}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"HTTP {exc.code} from Prometheus: {_error_text(exc.read())}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"Prometheus at {self.base_url} unreachable: {reason}") from None
        except json.JSONDecodeError as exc:
            raise PrometheusError(f"response is not JSON: {exc}") from None


def _error_text(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        return f"{data.get('errorType', 'error')}: {data.get('error', '')}"
    except (json.JSONDecodeError, AttributeError):
        return raw.decode(errors="replace")[:200]
