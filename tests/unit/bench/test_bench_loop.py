"""loop: uvloop when installed, asyncio when CARAVAN_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio

import pytest

from caravan.bench import loop


async def running_loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_default_is_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(loop.ENV, raising=False)
    assert loop.loop_name() == "uvloop"
    assert loop.run(running_loop_type()).startswith("uvloop")


def test_env_forces_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loop.ENV, "asyncio")
    assert loop.loop_name() == "asyncio"
    assert loop.run(running_loop_type()).startswith("asyncio")
