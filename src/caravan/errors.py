"""Caravan's error tree: every exception Caravan raises on purpose derives from
``CaravanError``, so a caller (a command, a test) can tell Caravan's own refusals from
bugs, and by category what to do about them:

* ``ConfigError`` (also a ValueError): the spec, a flag, an environment variable or a file
  it names is wrong; the message names the field or value and what is expected.
  Retrying does not help.
* ``BackendError``: an external system (Consul, Nomad, Prometheus, Triton, a child
  process) refused or failed; retrying may help.
* ``NotReadyError``: a system is not ready for the request yet (a deployment running, a
  model loading); retry later.
"""

from __future__ import annotations


class CaravanError(Exception):
    """Base of every error Caravan raises on purpose."""


class ConfigError(CaravanError, ValueError):
    """Bad configuration; the message names the field or value and what is expected."""


class BackendError(CaravanError):
    """An external system refused or failed."""


class NotReadyError(CaravanError):
    """Not ready yet; retry later."""
