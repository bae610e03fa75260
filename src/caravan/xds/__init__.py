"""The xDS control plane: pure resource builder, versioned snapshots, ADS server (SotW + delta).

Modules: ``resources`` (spec -> Envoy protos), ``snapshot`` (versions, consistency),
``builder`` (incremental snapshot builds), ``cache`` (current snapshot + change
notification), ``debounce`` (coalescing discovery events), ``sotw`` / ``delta``
(per-stream protocol state machines), ``server`` (grpc.aio ADS adapter),
``controlplane`` (wiring), ``commands`` (``caravan xds``).
"""
