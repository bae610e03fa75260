"""Caravan: Nomad-native LLM serving (Triton+vLLM replicas, an xDS control plane for Envoy,
a policy-driven autoscaler, and a load-benchmark CLI)."""

__version__ = "0.1.0"
