"""caravan.wasm.build: the one build step of Caravan's proxy-wasm filters (ziglang)."""

from __future__ import annotations

from pathlib import Path

import pytest

from caravan.wasm import build


def test_main_compiles_every_filter_into_the_named_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    build.main()
    printed = capsys.readouterr().out.split()
    assert printed == [str(build.module_path(n)) for n in build.filter_names()]
    assert all(Path(p).read_bytes()[:4] == b"\0asm" for p in printed)
    assert build.filter_names() == ["prefixkey", "ratelimit"]


def test_an_unwritable_cache_still_yields_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv(build.CACHE_ENV, str(blocked / "cache"))
    code = build.module_bytes.__wrapped__("ratelimit")
    assert code[:4] == b"\0asm" and not (blocked / "cache").exists()
