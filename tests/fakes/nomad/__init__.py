"""A Nomad fake built from Nomad's source, for contract tests (test code only).

A real HTTP(S) server on 127.0.0.1 in a daemon thread, serving what Caravan calls, with
Nomad's status codes, texts and check order. Pinned against hashicorp/nomad at aa026cc
(2026-08); each behaviour names the function it follows, in the module that implements it:

    fake.py        ``FakeNomad``: lifecycle (HTTP or HTTPS) and test controls
    server.py      the HTTP handler and routing, blocking-query ``wait``
    endpoints.py   register, plan, scale, scale status, fail a deployment
    watcher.py     clock-driven changes: allocation health, the deployment watcher
    scheduler.py   evaluations, placement on GPU nodes, deployments created
    state.py       allocations, deployments, job versions, the index; their JSON views
    jobspec.py     ``Job.Canonicalize``, ``SpecChanged``, ``tasksUpdated``
    validation.py  admission validation, in Nomad's order and words
    diff.py        the plan's ``Diff`` and its annotations
    go_format.py   Go's duration, number and multierror texts
    api.py         ``Json``, ``Key``, ``NS``, ``ApiError``, ``rfc3339``

Not modelled: canaries, task-level restarts, rescheduling of failed or unhealthy
allocations, preemption, CPU/memory bin packing, multi-region. Blocking queries use one
global index (Nomad uses per-table indexes; both only promise "changed since").

Test controls (thread-safe, time from the injected ``clock``; advance it with
``advance(seconds)``): ``set_model_load(job, seconds | None)`` (None: the model never
loads, checks never pass), ``set_task_start(job, seconds | None)`` (None: stays
pending), ``set_gpu_nodes([...])`` (GPUs per client node; None: unlimited),
``replace_allocations(job, group, n)`` (a node drain: n allocations replaced outside any
deployment), ``serving(job, group)`` (replicas whose model loaded), ``job()``,
``allocations()``, ``deployments()``, ``evaluations()``.
``requests`` logs every request (method, path, query, body, token).
"""

from tests.fakes.nomad.fake import FakeNomad

__all__ = ["FakeNomad"]
