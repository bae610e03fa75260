"""The fake Nomad's clock-driven changes: allocation health and the deployment watcher.

Deployments (``nomad/deploymentwatcher/deployment_watcher.go``)
  ``RequireProgressBy`` starts at the first placement and moves to each healthy
  allocation + ``progress_deadline`` (``state_store.go`` ``updateDeploymentWithAlloc``);
  success when every group has ``DesiredTotal`` healthy and nothing left to place (the
  job version becomes ``Stable``); at the deadline ``shouldFail`` fails it ("Failed due to
  progress deadline") and, with ``auto_revert``, ``latestStableJob`` is registered again
  as a new version (``handleRollbackValidity``: only when its spec differs). A newer job
  version cancels the running deployment (``cancelUnneededServiceDeployments``).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from tests.fakes.nomad.jobspec import spec_changed
from tests.fakes.nomad.scheduler import Scheduler
from tests.fakes.nomad.state import Alloc, Deployment

MAX_EVENTS = 100_000  # bound on events processed by one catch-up


class Watcher(Scheduler):
    """Applies what is due by ``clock()`` (allocations starting, turning healthy or
    unhealthy; progress deadlines), in time order. Callers hold ``_cond``."""

    def _catch_up(self) -> None:
        """Apply every allocation and deployment change due by ``clock()``, in time order."""
        target = self.clock()
        for _ in range(MAX_EVENTS):
            nxt = self._next_event(target)
            if nxt is None:
                break
            at, apply = nxt
            self._now = max(self._now, at)
            apply()
            self._bump()
        self._now = max(self._now, target)

    def _next_event(self, target: float) -> tuple[float, Callable[[], None]] | None:
        best: tuple[float, Callable[[], None]] | None = None
        for a in self._allocs:
            ev = a.next_event()
            if ev is not None and ev[0] <= target and (best is None or ev[0] < best[0]):
                best = (ev[0], _bind(self._alloc_event, a, ev[1]))
        for d in self._deployments:
            due = self._deadline(d)
            if due is not None and due <= target and (best is None or due < best[0]):
                best = (due, _bind(self._progress_deadline, d))
        return best

    def _alloc_event(self, a: Alloc, what: str) -> None:
        a.modify_index = self._index + 1
        if what == "run":
            a.client = "running"
            return
        a.healthy, a.health_time = what == "healthy", self._now
        dep = self._deployment_by_id(a.deployment_id)
        if dep is None or not dep.active:
            return
        gd = dep.groups.get(a.group)
        if gd is None:
            return
        if a.healthy:
            gd.healthy += 1
            if gd.require_progress_by is not None:
                gd.require_progress_by = max(gd.require_progress_by,
                                             self._now + gd.progress_deadline_s)
            self._evaluate(a.key, "deployment-watcher", dep.id)
        else:
            gd.unhealthy += 1
        self._check_complete(dep)

    def _deadline(self, d: Deployment) -> float | None:
        if not d.active:
            return None
        dues = [g.require_progress_by for name, g in d.groups.items()
                if g.require_progress_by is not None and not self._group_done(d, name)]
        return min(dues) if dues else None

    def _progress_deadline(self, d: Deployment) -> None:
        """``deploymentWatcher.watch``: the deadline fired; ``shouldFail`` decides."""
        failing = [g for g, gd in d.groups.items() if gd.healthy < gd.desired_total]
        if not failing:
            self._check_complete(d)
            return
        revert = any(d.groups[g].auto_revert for g in failing)
        self._fail(d, "Failed due to progress deadline", revert)

    def _fail(self, d: Deployment, desc: str, revert: bool) -> int | None:
        """Fail ``d``; with ``revert``, register the latest stable version again. Returns
        the version reverted to."""
        stable = next((j for j in self._versions.get(d.key, []) if j.get("Stable")), None)
        target = None
        if revert and stable is None:
            desc += " - no stable job version to auto revert to"
        elif revert and stable is not None:
            if spec_changed(stable, self._jobs[d.key]):
                desc += f" - rolling back to job version {stable['Version']}"
                target = stable
            else:
                desc += (f" - not rolling back to stable job version {stable['Version']} as "
                         "current job has same specification")
        self._set_status(d, "failed", desc)
        if target is None:
            return None
        self._store(d.key, copy.deepcopy(target))
        self._evaluate(d.key, "rollback", d.id)
        return int(target["Version"])

    def wait_index(self, index: int, wait_s: float) -> None:
        """Blocking-query wait: until the state index exceeds ``index`` or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        while self._index <= index:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)
            self._catch_up()


def _bind(fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: fn(*args)
