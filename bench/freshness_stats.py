"""Percentiles and the printed report of the freshness benchmark.

A change that never landed counts as infinitely late, not as missing: a p95 over 20 changes
with two timeouts is then shown as over the timeout, which is what an advisor saw.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from bench.freshness_changes import Sample
    from bench.freshness_runs import FlowRun, TargetedSync


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks (numpy's default).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([1.0, 2.0, math.inf], 95)
    inf
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    if low == high:
        return ordered[low]
    if math.isinf(ordered[high]):
        return math.inf
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def seconds(value: float, timeout: float | None = None) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return f"> {timeout:.0f} s" if timeout is not None else "never"
    return f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"


def spread(values: Sequence[float], timeout: float | None = None) -> str:
    """``p50 .. p95 .. max ..`` of ``values``."""
    if not values:
        return "n/a"
    return (
        f"p50 {seconds(percentile(values, 50), timeout)}   "
        f"p95 {seconds(percentile(values, 95), timeout)}   "
        f"max {seconds(max(values), timeout)}"
    )


def medians(steps: Mapping[str, Sequence[float]], order: Sequence[str]) -> str:
    """``observe 23.5 s, apply-crm 36.0 s`` (the median of each step that ran)."""
    return ", ".join(
        f"{step} {seconds(percentile(steps[step], 50))}"
        for step in order
        if steps.get(step) and percentile(steps[step], 50) >= 0.05
    )


def verdict(value: float, aim: float) -> str:
    if math.isnan(value):
        return "not measured"
    return "met" if value < aim else "NOT met"


FLOW_STEPS = ("change-check", "observe", "plan", "apply-erp", "observe-erp", "apply-crm")
SYNC_STEPS = ("observe", "plan", "apply-erp", "observe-erp", "apply-crm", "cross-check")


@dataclass
class Report:
    """What the benchmark measured, printed against the aims."""

    interval: float
    erp_to_crm: list[Sample] = field(default_factory=list)
    crm_to_erp: list[Sample] = field(default_factory=list)
    #: ERP -> CRM: seconds from the payment to the start of the run that delivered it.
    waits: list[float] = field(default_factory=list)
    #: ERP -> CRM: per step, the seconds it took in the runs that delivered the payments.
    erp_steps: dict[str, list[float]] = field(default_factory=dict)
    #: ERP -> CRM: targeted syncs `coulisse serve` ran meanwhile (webhooks of our own writes).
    echo_syncs: list[TargetedSync] = field(default_factory=list)
    #: CRM -> ERP: who consumed each change's webhook flag.
    paths: list[str] = field(default_factory=list)
    #: CRM -> ERP: the targeted syncs that delivered the edits, and how long after the edit
    #: each started.
    crm_syncs: list[TargetedSync] = field(default_factory=list)
    sync_starts: list[float] = field(default_factory=list)
    runs: list[FlowRun] = field(default_factory=list)
    lock_waiters: set[str] = field(default_factory=set)
    check_tasks: list[float] = field(default_factory=list)
    direct_checks: list[float] = field(default_factory=list)
    #: Due runs of the schedule that never started by the end (Prefect's *Late* runs).
    backlog: int = 0

    def print(self, *, changes: int, timeout: float, aims: tuple[float, float, float]) -> None:
        to_crm, to_erp, idle_aim = aims
        load1, load5, load15 = os.getloadavg()
        print()
        print(
            f"== Freshness under the default schedule (a sync run due every "
            f"{self.interval:g} s), {changes} changes each way"
        )
        print(
            f"   machine: {os.cpu_count()} cores; load average now {load1:.1f} / {load5:.1f} / "
            f"{load15:.1f} (1, 5, 15 min); other stacks share the machine"
        )
        self._changes(
            "ERP -> CRM: a part payment recorded in Tryton, until the CRM's invoice mirror shows "
            "the new amount due",
            self.erp_to_crm,
            to_crm,
            timeout,
        )
        if self.waits:
            print("   waiting for the run that delivered it to start: " + spread(self.waits))
        if self.erp_steps:
            print("   steps of those runs (median): " + medians(self.erp_steps, FLOW_STEPS))
        if self.echo_syncs:
            held = [s.seconds for s in self.echo_syncs]
            print(
                f"   meanwhile `coulisse serve` ran {len(held)} targeted syncs for the CRM's "
                f"webhooks of Coulisse's own writes, holding the run lock {spread(held)}"
            )
        self._changes(
            "CRM -> ERP: a billing street edited through the CRM's API, until the party's "
            "address in Tryton has it",
            self.crm_to_erp,
            to_erp,
            timeout,
        )
        if self.paths:
            counts = {p: self.paths.count(p) for p in sorted(set(self.paths))}
            print(
                "   webhook flags consumed by: "
                + ", ".join(f"{path} {n}" for path, n in counts.items())
            )
        if self.sync_starts:
            print(
                "   from the edit to the start of the targeted sync (debounce, lock, start-up): "
                + spread(self.sync_starts)
            )
        if self.crm_syncs:
            steps: dict[str, list[float]] = {}
            for sync in self.crm_syncs:
                for step, value in sync.steps.items():
                    steps.setdefault(step, []).append(value)
            print("   steps of those syncs (median): " + medians(steps, SYNC_STEPS))
        self._idle(idle_aim)

    def _changes(self, title: str, samples: list[Sample], aim: float, timeout: float) -> None:
        print(f"\n-- {title}")
        if not samples:
            print("   not measured")
            return
        values = [math.inf if s.seconds is None else s.seconds for s in samples]
        missed = sum(1 for s in samples if s.seconds is None)
        p95 = percentile(values, 95)
        print(f"   {len(samples)} changes, {missed} timed out (> {timeout:.0f} s)")
        print(f"   {spread(values, timeout)}   aim p95 < {aim:g} s: {verdict(p95, aim)}")
        loads = [s.load for s in samples]
        print(
            f"   1-min load when the changes were made: mean {sum(loads) / len(loads):.1f}, "
            f"max {max(loads):.1f}"
        )

    def _idle(self, aim: float) -> None:
        finished = [r for r in self.runs if r.finished]
        idle = [r for r in finished if r.idle]
        print(
            f"\n-- Idle cycle: {len(idle)} of the {len(finished)} scheduled runs since the "
            "first sync settled found nothing to do"
        )
        if not idle:
            print("   not measured")
            return
        free = [r.seconds for r in idle if r.seconds is not None and r.id not in self.lock_waiters]
        waited = [r.seconds for r in idle if r.seconds is not None and r.id in self.lock_waiters]
        print(
            f"   flow run, Running to end (Prefect's clock), lock free ({len(free)}): "
            f"{spread(free)}   aim < {aim:g} s: "
            f"{verdict(max(free) if free else math.nan, aim)} (max)"
        )
        if waited:
            print(
                f"   idle runs that first waited for another sync's run lock ({len(waited)}): "
                + spread(waited)
            )
        print(f"   change-check task in the idle runs: {spread(self.check_tasks)}")
        print(f"   change check called directly:       {spread(self.direct_checks)}")
        starts = [r.start for r in finished if r.start is not None]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        late = [r.late for r in finished if r.late is not None]
        print(f"   cadence (start to start of consecutive runs): {spread(gaps)}")
        print(
            f"   runs started after their scheduled time by {spread(late)}; "
            f"{self.backlog} due runs not started at the end (Late)"
        )
        working = [r.seconds for r in finished if not r.idle and r.seconds is not None]
        if working:
            print(f"   (the {len(working)} runs that had work: {spread(working)})")
        others = sorted({r.state_name for r in finished if r.state_name != "Completed"})
        if others:
            counts = {s: sum(1 for r in finished if r.state_name == s) for s in others}
            print("   other run states: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
