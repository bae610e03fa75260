"""Every exception class Caravan defines derives from caravan.errors.CaravanError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import caravan
from caravan.errors import BackendError, CaravanError, ConfigError, NotReadyError

INTERNAL = {"caravan.discovery.consul_entries._Skip"}  # control flow inside one module


def caravan_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined in a caravan module (by qualified name)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(caravan.__path__, "caravan."):
        if info.name.endswith(("triton.model", "__main__")):
            continue  # __main__ runs the CLI; triton.model runs inside the Triton stub only
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_error_is_a_caravan_error() -> None:
    errors = caravan_exceptions()
    assert len(errors) >= 10
    strays = sorted(n for n, cls in errors.items()
                    if n not in INTERNAL and not issubclass(cls, CaravanError))
    assert not strays, f"derive these from caravan.errors: {strays}"


def test_categories() -> None:
    from caravan.autoscaler.ports import MetricsError
    from caravan.autoscaler.ports import NotReadyError as ScaleNotReady
    from caravan.spec import SpecError

    assert issubclass(SpecError, ConfigError) and issubclass(SpecError, ValueError)
    assert issubclass(MetricsError, BackendError)
    assert issubclass(ScaleNotReady, NotReadyError) and issubclass(ScaleNotReady, BackendError)
