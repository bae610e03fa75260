"""Shared builders for the xDS unit tests (test code only)."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2

from caravan.discovery.types import HealthStatus, Replica, ReplicaSet
from caravan.spec import PlatformSpec, parse_spec


def make_spec(**overrides: Any) -> PlatformSpec:
    data: dict[str, Any] = {
        "default_model": "alpha",
        "models": [
            {
                "name": "alpha",
                "engine": {"model": "m/alpha"},
                "routing": {
                    "maglev_table_size": 1031,
                    "hash_balance_factor": 150,
                    "unary_timeout_s": 30,
                    "retries": 2,
                },
            },
            {
                "name": "beta",
                "engine": {"model": "m/beta"},
                "routing": {"session_header": "x-user", "hash_balance_factor": None, "retries": 0},
            },
        ],
        "envoy": {"address": "127.0.0.1", "listen_port": 8080, "admin_port": 9901},
    }
    data.update(overrides)
    return parse_spec(data)


def replica(rid: str, model: str = "alpha", port: int = 9000, **kw: Any) -> Replica:
    return Replica(rid, model, "127.0.0.1", port, **kw)


def sets(**by_model: list[Replica]) -> dict[str, ReplicaSet]:
    return {m: ReplicaSet.of(m, rs) for m, rs in by_model.items()}


def unpack(resource: any_pb2.Any, cls: type) -> Any:
    msg = cls()
    assert resource.Unpack(msg), f"{resource.type_url} is not {cls.__name__}"
    return msg


HEALTHY, DRAINING, UNHEALTHY = HealthStatus.HEALTHY, HealthStatus.DRAINING, HealthStatus.UNHEALTHY
