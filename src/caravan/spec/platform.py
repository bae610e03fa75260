"""The whole platform spec: every model plus the platform-wide sections.

``PlatformSpec`` validates each field, then the checks spanning several fields
(``caravan.spec.cross_field``). Pure, frozen pydantic data.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from caravan.spec import names
from caravan.spec.base import Frozen as _Frozen
from caravan.spec.cross_field import cross_field_errors
from caravan.spec.models import ModelSpec
from caravan.spec.sections import ConsulSpec, ControlPlaneSpec, EnvoySpec, LocalSpec, NomadSpec
from caravan.spec.security import SecuritySpec, replica_mtls_errors


class PlatformSpec(_Frozen):
    """The whole platform. ``default_model`` gets requests without a model header."""

    models: list[ModelSpec] = Field(min_length=1)
    default_model: str | None = None
    envoy: EnvoySpec = EnvoySpec()
    control_plane: ControlPlaneSpec = ControlPlaneSpec()
    consul: ConsulSpec = ConsulSpec()
    nomad: NomadSpec = NomadSpec()
    local: LocalSpec = LocalSpec()
    security: SecuritySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _upstream_tls_default(cls, data: Any) -> Any:
        """Each model without its own ``upstream_tls`` gets ``security.upstream_tls``."""
        sec = data.get("security") if isinstance(data, dict) else None
        tls = sec.get("upstream_tls") if isinstance(sec, dict) else None
        models = data.get("models") if isinstance(data, dict) else None
        if tls is None or not isinstance(models, list):
            return data
        filled = [
            {**m, "upstream_tls": tls} if isinstance(m, dict) and m.get("upstream_tls") is None
            else m
            for m in models
        ]
        return {**data, "models": filled}

    @model_validator(mode="after")
    def _consistent(self) -> PlatformSpec:
        errors = cross_field_errors(self.model_dump())
        errors += replica_mtls_errors(self.security, [m.upstream_tls for m in self.models])
        if errors:
            raise ValueError("\n".join(errors))
        return self

    @property
    def default(self) -> ModelSpec:
        """The model that gets requests without a model header."""
        name = self.default_model or self.models[0].name
        return next(m for m in self.models if m.name == name)

    def service_name(self, model: ModelSpec) -> str:
        """The Consul service ``model``'s replicas register as: ``consul.service_prefix + name``."""
        return names.consul_service(self.consul.service_prefix, model.name)

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``; KeyError if none."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)
