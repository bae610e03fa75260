"""The platform spec: one YAML file describes every model Caravan serves.

YAML -> pydantic ``PlatformSpec`` -> validated. Every error is reported at once,
each with its path in the document (``models[1].replicas.max: must be >= min (2)``).

This package sits below every other Caravan package and imports none of them
(``caravan.errors`` aside). Modules: ``base`` (the frozen base, the one error
formatter, ``SpecError``), ``models`` (a served model's sections), ``autoscaling`` and
``strategy_params`` (the typed ``autoscaling:`` section, its checks and strategies),
``security`` (the ``security:`` section), ``sections`` (Envoy, control plane, Consul,
Nomad, local stack), ``platform`` (``PlatformSpec``), ``cross_field`` (checks spanning
fields), ``names`` (every derived name), ``loader`` (``load_spec`` / ``parse_spec``).
Each default is written once, in its model. The names below are re-exported, so
``from caravan.spec import PlatformSpec`` is the usual import.
"""

from caravan.spec.autoscaling import AutoscalingSpec, ScalingCheck, ScalingPolicy, policy_for
from caravan.spec.base import Frozen, SpecError, format_errors
from caravan.spec.cross_field import PROGRESS_MARGIN_S, cross_field_errors
from caravan.spec.loader import load_spec, parse_spec, spec_document
from caravan.spec.models import (
    ENGINE_PROFILES,
    SLO_BUCKET_CAPS_MS,
    EngineArgs,
    EngineProfile,
    ModelSpec,
    ReplicaBounds,
    ReplicaResources,
    Routing,
    SimulatorParams,
    SloSpec,
    is_prime,
)
from caravan.spec.platform import PlatformSpec
from caravan.spec.sections import (
    ConsulSpec,
    ControlPlaneSpec,
    EnvoySpec,
    LocalSpec,
    NomadSpec,
    image_tag_problem,
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
from caravan.spec.strategy_params import ScalingStrategy

__all__ = [
    "ENGINE_PROFILES",
    "PROGRESS_MARGIN_S",
    "SLO_BUCKET_CAPS_MS",
    "ApiKey",
    "ApiKeysSpec",
    "AutoscalingSpec",
    "ConsulSpec",
    "ControlPlaneSpec",
    "EngineArgs",
    "EngineProfile",
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
    "ReplicaResources",
    "Routing",
    "ScalingCheck",
    "ScalingPolicy",
    "ScalingStrategy",
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
    "policy_for",
    "spec_document",
]
