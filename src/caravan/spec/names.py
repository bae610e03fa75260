"""Names derived from the spec, written once: every package that needs one reads it here.

A model ``llama`` is served by the Envoy cluster ``model-llama`` (also its
ClusterLoadAssignment and the ``envoy_cluster_name`` label), runs as the Nomad job
``triton-llama`` with task group ``triton``, and registers in Consul as
``consul.service_prefix + name`` (``PlatformSpec.service_name``). The header names
Caravan itself sets on requests and responses are constants here; the ones an
operator chooses (the model and session headers) are spec fields. Pure.
"""

from __future__ import annotations

CLUSTER_PREFIX = "model-"
NOMAD_JOB_PREFIX = "triton-"
NOMAD_GROUP = "triton"  # the task group of every model's Nomad job

# Response header (gRPC initial metadata) naming the replica that served a request, as
# Envoy's ``%UPSTREAM_HOST%`` ("host:port"); clients such as ``caravan bench`` read it.
UPSTREAM_HOST_HEADER = "x-caravan-upstream"
# Request headers Envoy sets for the replicas after authentication (API key or JWT):
# the caller's client name, and (JWT) the verified subject. Client-sent copies are removed.
CLIENT_HEADER = "x-caravan-client"
SUBJECT_HEADER = "x-caravan-subject"


def cluster_name(model: str) -> str:
    """The Envoy cluster (and ClusterLoadAssignment) name of model ``model``."""
    return CLUSTER_PREFIX + model


def nomad_job(model: str) -> str:
    """The Nomad job id of model ``model`` (the one the autoscaler scales)."""
    return NOMAD_JOB_PREFIX + model
