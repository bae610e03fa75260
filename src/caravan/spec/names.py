"""Names derived from the spec, written once: every package that needs one reads it here.

A model ``llama`` is served by the Envoy cluster ``model-llama`` (also its
ClusterLoadAssignment and the ``envoy_cluster_name`` label), runs as the Nomad job
``triton-llama`` with task group ``triton``, and registers in Consul as
``consul.service_prefix + name`` (``PlatformSpec.service_name``). The header names
Caravan itself sets on requests and responses are constants here, and so are the
defaults of the ones an operator may choose (``envoy.model_header``,
``routing.session_header``, ``security.api_keys.header``), which clients without a
spec use. Pure.
"""

from __future__ import annotations

CLUSTER_PREFIX = "model-"
NOMAD_JOB_PREFIX = "triton-"
NOMAD_GROUP = "triton"  # the task group of every model's Nomad job
CONSUL_SERVICE_PREFIX = "triton-"  # default of consul.service_prefix

# Response header (gRPC initial metadata) naming the replica that served a request, as
# Envoy's ``%UPSTREAM_HOST%`` ("host:port"); clients such as ``caravan bench`` read it.
UPSTREAM_HOST_HEADER = "x-caravan-upstream"
# Request headers Envoy sets for the replicas after authentication (API key or JWT):
# the caller's client name, and (JWT) the verified subject. Client-sent copies are removed.
CLIENT_HEADER = "x-caravan-client"
SUBJECT_HEADER = "x-caravan-subject"
# Defaults of the spec's header fields (the spec may name others).
MODEL_HEADER = "x-model"  # envoy.model_header: which model a request is for
SESSION_HEADER = "x-session-id"  # routing.session_header: Maglev keeps a session on one replica
API_KEY_HEADER = "x-api-key"  # security.api_keys.header


def cluster_name(model: str) -> str:
    """The Envoy cluster (and ClusterLoadAssignment) name of model ``model``."""
    return CLUSTER_PREFIX + model


def consul_service(prefix: str, model: str) -> str:
    """The Consul service model ``model``'s replicas register as (``consul.service_prefix``
    + name; ``PlatformSpec.service_name``)."""
    return prefix + model


def nomad_job(model: str) -> str:
    """The Nomad job id of model ``model`` (the one the autoscaler scales)."""
    return NOMAD_JOB_PREFIX + model
