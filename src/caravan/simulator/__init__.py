"""``caravan replica``: a Triton-protocol (KServe v2 gRPC, vLLM backend contract)
simulator of one LLM replica, backed by a continuous-batching engine simulator.

Modules: ``engine`` (pure scheduler), ``textgen`` (deterministic words), ``request``
(parse/validate), ``responses`` and ``contract`` (protobuf building), ``driver``
(asyncio loop around the engine), ``metrics`` (Prometheus), ``server`` (gRPC + health
+ drain), ``config``, ``commands`` (CLI).
"""
