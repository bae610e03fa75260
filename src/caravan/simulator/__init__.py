"""The simulated vLLM engine (pure core + an asyncio driver), which Caravan's Triton
model (``caravan.triton``) runs inside the real tritonserver.

Modules: ``engine`` (continuous-batching scheduler, pure), ``textgen`` (deterministic
words, pure), ``driver`` (runs the engine against a clock on an event loop).
"""
