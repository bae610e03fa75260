"""Envoy proxy-wasm filters written in C and compiled at run time with the ``ziglang``
PyPI package (no committed binary): ``build`` compiles, ``ratelimit.c`` is the
per-inference rate limit (see docs/security.md), ``prefixkey.c`` derives the prefix
routing key (see docs/routing.md)."""
