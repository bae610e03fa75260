"""The event loop the load generator runs on: uvloop when installed, else asyncio's.

``run(coro)`` is ``asyncio.run`` on the chosen loop. uvloop (libuv) costs the client
about 10% less CPU per request than asyncio's default loop with ``grpc.aio``
(``benchmarks/bench_client.py``), which supports any asyncio loop.
``CARAVAN_EVENT_LOOP=asyncio`` forces the standard loop (e.g. to rule uvloop out when
debugging); ``loop_name()`` says which one ``run`` uses, for run metadata.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "CARAVAN_EVENT_LOOP"


def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the loop ``run`` will use."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new event loop of the kind ``loop_name`` names."""
    if loop_name() == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
