"""Monitoring as code: one metric vocabulary and everything built on it.

* ``metric_names`` (every series Caravan queries, and who exports it), ``promql``
* ``rules`` (recording rules), ``alerts`` (alert rules), ``alert_tests`` (promtool tests)
* ``prometheus`` (production and local ``prometheus.yml``), ``grafana`` (dashboards)
* ``panel_plot`` (a PNG of key panels from a running Prometheus; I/O)
"""
