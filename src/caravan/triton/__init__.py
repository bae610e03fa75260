"""The local replica: NVIDIA's real ``tritonserver`` running Caravan's Python-backend model,
which puts the simulated vLLM engine (``caravan.simulator.engine``) behind the Triton vLLM
backend's contract (docs/triton-contract.md).

* ``contract``   the vLLM backend's tensors, request parsing and outputs (pure, numpy only)
* ``settings``   what the model reads at load time (engine + simulator), as JSON (pure)
* ``generation`` one request's life on the engine driver (asyncio, no Triton imports)
* ``model``      ``TritonPythonModel``: the thin adapter the Python backend stub loads
* ``vllm_metrics`` the vLLM backend's eight metric families, through ``pb_utils``
* ``repository`` writes the local model repository (config.pbtxt, model.py, JSON)
* ``launcher``   the one place a ``tritonserver`` process is described (argv, env, backend dir)
"""
