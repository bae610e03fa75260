"""The platform spec: one YAML file describes every model Caravan serves.

YAML -> pydantic ``PlatformSpec`` -> validated. Every error is reported at once,
each with its path in the document (``models[1].replicas.max: must be >= min (2)``).

This package sits below every other Caravan package and imports none of them
(``caravan.errors`` aside). Modules: ``base`` (the frozen base, the error formatter,
``SpecError``), ``models`` (the model and platform sections), ``security`` (the
``security:`` section), ``loader`` (``load_spec`` / ``parse_spec``). The names below
are re-exported, so ``from caravan.spec import PlatformSpec`` is the usual import.
"""

from caravan.spec.base import Frozen, SpecError, format_errors
from caravan.spec.loader import load_spec, parse_spec
from caravan.spec.models import (
    PROGRESS_MARGIN_S,
    SLO_BUCKET_CAPS_MS,
    ConsulSpec,
    ControlPlaneSpec,
    EngineArgs,
    EnvoySpec,
    LocalSpec,
    ModelSpec,
    NomadSpec,
    PlatformSpec,
    ReplicaBounds,
    Resources,
    Routing,
    SimulatorParams,
    SloSpec,
    cross_field_errors,
    image_tag_problem,
    is_prime,
)
from caravan.spec.security import (
    ApiKey,
    ApiKeysSpec,
    JwtSpec,
    ListenerTls,
    RateLimit,
    SecuritySpec,
    UpstreamTls,
    XdsTls,
)

__all__ = [
    "PROGRESS_MARGIN_S",
    "SLO_BUCKET_CAPS_MS",
    "ApiKey",
    "ApiKeysSpec",
    "ConsulSpec",
    "ControlPlaneSpec",
    "EngineArgs",
    "EnvoySpec",
    "Frozen",
    "JwtSpec",
    "ListenerTls",
    "LocalSpec",
    "ModelSpec",
    "NomadSpec",
    "PlatformSpec",
    "RateLimit",
    "ReplicaBounds",
    "Resources",
    "Routing",
    "SecuritySpec",
    "SimulatorParams",
    "SloSpec",
    "SpecError",
    "UpstreamTls",
    "XdsTls",
    "cross_field_errors",
    "format_errors",
    "image_tag_problem",
    "is_prime",
    "load_spec",
    "parse_spec",
]
