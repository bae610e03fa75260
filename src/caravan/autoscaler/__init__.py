"""Policy-driven autoscaler: Prometheus signals in, Nomad job-group (or local replica) scaling out.

Policies are typed in the spec (``caravan.spec.autoscaling``: ScalingPolicy, policy_for).

strategies.py  pure strategies (Nomad Autoscaler's + LLM-native) and vote combination
checks.py      query -> sample window -> strategy -> vote
handler.py     per-policy state machine, ``Autoscaler`` runner, ``build_autoscaler``
ports.py       MetricsSource / ScaleTarget protocols
prometheus.py  PrometheusMetricsSource;  nomad.py NomadScaleTarget
fleet.py       FleetScaleTarget (the dev stack's replicas), PrometheusReplicaCounts
metrics.py     the autoscaler's own Prometheus metrics;  commands.py ``caravan autoscale``
"""
