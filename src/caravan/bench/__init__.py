"""``caravan bench``: the load benchmark for Triton's gRPC inference protocol.

Pure core: ``arrivals`` (load shapes), ``dataset`` (requests), ``stats`` (records,
summaries), ``report``/``compare`` (tables). Adapters: ``triton`` (tritonclient aio),
``results`` (JSON/CSV files), ``plots`` (PNG), ``meta`` (git, host). ``runner`` drives
it all: ``await runner.run_sweep(target, model, levels, workload, progress, slos, meta)``.
"""
