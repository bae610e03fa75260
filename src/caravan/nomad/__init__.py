"""Nomad: the job model and its encoders, the job builders, and the deploy client.

* ``jobmodel`` (frozen Job/TaskGroup/Task/... model), ``hcl`` + ``job_hcl`` (HCL2 for
  ``nomad job run``), ``job_json`` (the API JSON body)
* ``triton_job`` (one job per model), ``platform_jobs`` (control plane, Envoy),
  ``monitoring_jobs`` (Prometheus, Grafana), ``nomad_templates`` (``template`` blocks),
  ``jobs`` (every job; the ``caravan render`` renderer)
* ``deploy`` (``caravan deploy``: plan and register through Nomad's HTTP API; I/O)
"""
