"""Compile a one-file C proxy-wasm filter to WebAssembly with Zig's clang (the
``ziglang`` wheel), once per source content: the shared build step of Caravan's
proxy-wasm filters.

``module_bytes(name)`` returns the ``.wasm`` of ``caravan/wasm/<name>.c``, cached in
memory and on disk under ``cache_dir()`` by the SHA-256 of the source, of the headers
beside it (``proxy_wasm.h``: the ABI declarations, runtime and config word reader every
filter includes), the compiler flags and the ``ziglang`` version, so a control plane
compiles a filter at most once per machine (about a second; the output is deterministic,
so xDS versions, which hash the resources, are stable). Filters are freestanding C (no libc, no WASI imports): they may
only import the proxy-wasm ABI 0.2.1 host functions.

Raises ``WasmBuildError`` (a ``BackendError``) with the compiler's message when the
compiler is missing or fails. Thread-safe: concurrent builds write to a temporary file
and rename it into place. ``python -m caravan.wasm.build`` compiles every filter into the
cache (the rendered Caravan image does so at build time, with ``CARAVAN_WASM_CACHE``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from caravan.errors import BackendError

SOURCE_DIR = Path(__file__).parent
FLAGS = ("--target=wasm32-freestanding", "-O2", "-ffreestanding", "-fno-builtin", "-nostdlib",
         "-Wl,--no-entry", "-Wall", "-s")
CACHE_ENV = "CARAVAN_WASM_CACHE"
BUILD_TIMEOUT_S = 300.0


class WasmBuildError(BackendError):
    """The C compiler (``python -m ziglang cc``) is missing or refused a filter."""


def cache_dir() -> Path:
    """``$CARAVAN_WASM_CACHE``, else ``$XDG_CACHE_HOME/caravan/wasm``, else
    ``~/.cache/caravan/wasm``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "caravan" / "wasm"


def _zig_version() -> str:
    try:
        return importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        raise WasmBuildError(
            "the ziglang package is not installed (pip install ziglang): it compiles "
            "Caravan's proxy-wasm filters") from None


def source_path(name: str) -> Path:
    """``caravan/wasm/<name>.c``; ValueError when there is no such filter."""
    path = SOURCE_DIR / f"{name}.c"
    if not name.isidentifier() or not path.is_file():
        raise ValueError(f"no proxy-wasm filter source {name!r} in {SOURCE_DIR}")
    return path


def compile_c(source: Path, out: Path, flags: tuple[str, ...] = FLAGS) -> None:
    """Compile ``source`` to ``out`` (atomically) with ``flags`` (default: the
    proxy-wasm module; tests build a filter's pure parser natively). Raises WasmBuildError."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".wasm.tmp")
    os.close(fd)
    # -I: a module outside the package (a test's) includes the same proxy_wasm.h
    argv = [sys.executable, "-m", "ziglang", "cc", *flags, "-I", str(SOURCE_DIR), "-o", tmp, str(source)]
    zig_cache = str(out.parent / "zig-cache")  # zig's own cache, beside ours (no $HOME needed)
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env)
        if done.returncode != 0:
            raise WasmBuildError(f"compiling {source.name} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def module_path(name: str, source: Path | None = None) -> Path:
    """Where the compiled ``caravan/wasm/<name>.c`` (or ``source``, see ``module_bytes``)
    is cached (it may not exist yet)."""
    digest = hashlib.sha256((source or source_path(name)).read_bytes())
    for header in sorted(SOURCE_DIR.glob("*.h")):
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    key = hashlib.sha256(digest.digest() + repr((FLAGS, _zig_version())).encode()).hexdigest()
    return cache_dir() / f"{name}-{key[:24]}.wasm"


@functools.cache
def module_bytes(name: str, source: Path | None = None) -> bytes:
    """The compiled ``caravan/wasm/<name>.c``: from the cache, else compiled into it (into
    a temporary directory when the cache cannot be written, e.g. a user without a home).
    ``source``: compile that file instead, cached as ``name`` (a module that is no filter
    of the package, e.g. a test's; it may include ``proxy_wasm.h``)."""
    source = source or source_path(name)
    out = module_path(name, source)
    if out.is_file():
        return out.read_bytes()
    try:
        compile_c(source, out)
    except OSError:
        with tempfile.TemporaryDirectory() as tmp:
            compile_c(source, Path(tmp) / out.name)
            return (Path(tmp) / out.name).read_bytes()
    return out.read_bytes()


def filter_names() -> list[str]:
    """Every filter source in ``caravan/wasm`` (``<name>.c``), sorted."""
    return sorted(p.stem for p in SOURCE_DIR.glob("*.c"))


def main() -> None:
    """``python -m caravan.wasm.build``: compile every filter into the cache (an image
    build runs it, so the control plane never compiles at run time); print the paths."""
    for name in filter_names():
        out = module_path(name)
        if not out.is_file():  # module_bytes may hold it from another cache directory
            compile_c(source_path(name), out)
        print(out)


if __name__ == "__main__":
    main()
