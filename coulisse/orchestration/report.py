"""What a sync flow run did, read back from the ledger's events: the run's Prefect artifacts.

Every ledger run a flow run starts carries its Prefect flow run id (``runs.flow_run_id``), so
the report is the ledger's own account of the run, not the flow's memory of it: an operator
reading the artifact and one querying the ledger see the same numbers.

Per entity and system, a row counts the records read from that system and what the run did
with each (``created``: the record was created in the other system; ``updated``: its change was
written there; ``unchanged``; ``quarantined``: held back with a reason; ``deferred``: waiting
for what it depends on; ``conflicts``: both systems changed a shared field, parked for a
person), and the ids a person must look at. A record planned twice in a run (the plan after
reading back the ERP's writes reconciles the links it wrote again) counts once, under the
weightiest of its outcomes: created before updated (the read-back plan mirrors the new ERP
client's code into the CRM), anything before unchanged, a deferral only if nothing happened.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from coulisse.ledger import tables as t
from coulisse.sync import STREAMS

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from coulisse.ledger import Ledger

#: The outcomes every table shows, in this order, and their column names.
COLUMNS: dict[str, str] = {
    "created": "created",
    "updated": "updated",
    "unchanged": "unchanged",
    "quarantined": "quarantined",
    "deferred": "deferred",
    "conflict": "conflicts",
}
#: Outcomes a person has to act on.
NEEDS_A_PERSON = ("quarantined", "conflict")
#: Which outcome of a record planned twice in one run counts (the higher); others rank 2.
WEIGHT: dict[str, int] = {
    "unchanged": 0,
    "deferred": 1,
    "updated": 3,
    "deleted": 4,
    "created": 5,
    "quarantined": 6,
    "conflict": 7,
}
#: How many ids a table cell or the summary lists before "and N more".
SHOWN_IDS = 20
SIDES = ("crm", "erp")


@dataclass
class SideReport:
    """One entity from one system in one flow run."""

    entity: str
    side: str
    #: Records read from the system, and whether each was new to the ledger or changed.
    read: dict[str, bool] = field(default_factory=dict)
    #: The last plan event of each record: what the run did with it.
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Record ids (in this system) that need a person, with the reason.
    attention: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The artifact table's row."""
        others = {k: v for k, v in self.outcomes.items() if k not in COLUMNS}
        ids = sorted(self.attention)
        shown = ", ".join(ids[:SHOWN_IDS]) + (
            f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
        )
        return {
            "system": self.side.upper(),
            "read": len(self.read),
            "new or changed": sum(self.read.values()),
            **{column: self.outcomes[kind] for kind, column in COLUMNS.items()},
            "other": ", ".join(f"{k} {v}" for k, v in sorted(others.items())),
            "needs a person": shown,
        }


@dataclass
class RunReport:
    """A flow run's ledger account, per entity and system."""

    flow_run_id: str
    sides: dict[tuple[str, str], SideReport] = field(default_factory=dict)
    ledger_runs: int = 0

    def side(self, entity: str, side: str) -> SideReport:
        return self.sides.setdefault((entity, side), SideReport(entity, side))

    @property
    def entities(self) -> list[str]:
        return sorted({entity for entity, _ in self.sides})

    def table(self, entity: str) -> list[dict[str, Any]]:
        """The artifact table of one entity: a row per system."""
        return [self.side(entity, side).row() for side in SIDES]

    def attention(self) -> list[tuple[str, str, str, str]]:
        """(entity, system, id, reason) of every record that needs a person."""
        return [
            (report.entity, report.side, key, reason)
            for (_entity, _side), report in sorted(self.sides.items())
            for key, reason in sorted(report.attention.items())
        ]


def build_report(ledger: Ledger, flow_run_id: str) -> RunReport:
    """Read the events of every ledger run of ``flow_run_id`` (see the module docstring)."""
    report = RunReport(flow_run_id)
    e, r = t.events.c, t.runs.c
    query = (
        sa.select(e.side, e.entity, e.source_key, e.kind, r.kind.label("run_kind"))
        .select_from(t.events.join(t.runs, r.id == e.run_id))
        .where(r.flow_run_id == flow_run_id)
        .order_by(r.id, e.id)
    )
    outcome: dict[tuple[str, str, str], str] = {}
    with ledger.engine.connect() as conn:
        report.ledger_runs = int(
            conn.execute(
                sa.select(sa.func.count()).where(r.flow_run_id == flow_run_id)
            ).scalar_one()
        )
        for row in conn.execute(query):
            if row.run_kind == "observe":
                read = report.side(row.entity, row.side).read
                read[row.source_key] = read.get(row.source_key, False) or row.kind != "unchanged"
            elif row.run_kind == "plan":
                record = (row.entity, row.side, row.source_key)
                before = outcome.get(record)
                if before is None or WEIGHT.get(row.kind, 2) > WEIGHT.get(before, 2):
                    outcome[record] = row.kind
        for (entity, side, source_key), kind in outcome.items():
            report.side(entity, side).outcomes[kind] += 1
            if kind in NEEDS_A_PERSON:
                report.side(entity, side).attention[source_key] = kind
        _explain(conn, report)
    return report


def _explain(conn: sa.Connection, report: RunReport) -> None:
    """Replace each quarantined record's reason with the quarantine's sentence."""
    q = t.quarantine.c
    for (entity, side), item in report.sides.items():
        keys = [k for k, kind in item.attention.items() if kind == "quarantined"]
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                sa.select(q.source_key, q.message).where(
                    q.side == side,
                    q.entity == entity,
                    q.source_key.in_(keys[start : start + 500]),
                    q.released_at.is_(None),
                )
            )
            for row in rows:
                item.attention[row.source_key] = f"quarantined: {row.message}"
        for key, reason in item.attention.items():
            if reason == "conflict":
                item.attention[key] = "conflict: both systems changed a shared field"


def markdown(
    report: RunReport,
    *,
    title: str,
    checks: Mapping[str, Any] | None = None,
    steps: Sequence[Mapping[str, Any]] = (),
    applied: Mapping[str, int] | None = None,
    mismatches: Sequence[str] = (),
    error: str | None = None,
) -> str:
    """The run's markdown summary: why it ran, its steps, its counts, who must act on what."""
    lines = [f"# {title}", ""]
    if error:
        lines += ["**Failed:**", "", "```", error.strip()[-3000:], "```", ""]
    reasons = list((checks or {}).get("reasons") or [])
    if reasons:
        lines += ["**Why it ran:** " + "; ".join(reasons), ""]
    if steps:
        lines += [
            "**Steps:** " + ", ".join(f"{s['step']} {s['seconds']} s" for s in steps),
            "",
        ]
    writes = ", ".join(f"{side.upper()} {n}" for side, n in (applied or {}).items() if n)
    lines += [f"**Writes applied:** {writes or 'none'}", ""]
    for entity in report.entities:
        lines += [f"## {STREAMS.get(entity, entity)}", ""]
        rows = report.table(entity)
        header = list(rows[0])
        lines += [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows),
            "",
        ]
    attention = report.attention()
    if attention:
        lines += [f"## Needs a person ({len(attention)})", ""]
        lines += [
            f"- {STREAMS.get(entity, entity)} {side.upper()} `{key}`: {reason}"
            for entity, side, key, reason in attention[:50]
        ]
        if len(attention) > 50:
            lines.append(f"- and {len(attention) - 50} more")
        lines += [
            "",
            "`coulisse quarantine list` and `coulisse conflicts list` show them all.",
            "",
        ]
    if mismatches:
        lines += [f"## Documents that add up differently ({len(mismatches)})", ""]
        lines += [f"- {message}" for message in mismatches[:50]]
        lines += ["", "Reported only: neither system was changed.", ""]
    if not report.ledger_runs:
        lines += ["Nothing was read, planned or applied.", ""]
    return "\n".join(lines)
