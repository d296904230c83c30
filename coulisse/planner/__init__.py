"""The planner: validate, match, merge three-way, and queue the writes each system needs."""

from __future__ import annotations

from coulisse.planner.merge import FieldConflict, MergeResult, effective, merge
from coulisse.planner.plan import PlanItem, Planner, PlanSummary, SidePlan

__all__ = [
    "FieldConflict",
    "MergeResult",
    "PlanItem",
    "PlanSummary",
    "Planner",
    "SidePlan",
    "effective",
    "merge",
]
