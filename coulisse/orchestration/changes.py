"""The change check: what a sync cycle has to do, decided before any `meltano run`.

A `meltano run` costs about 2.3 s of start-up whatever it moves, so an idle cycle must start
none. Before anything runs, the check asks:

- the ERP: would tap-tryton read anything? (:mod:`coulisse.orchestration.erp_changes`: one
  small Tryton call per watched model, against the tap's own cursors);
- the CRM: which records did its webhooks flag (``crm_changes``, filled by `coulisse serve`),
  and is a full read due? BottleCRM lists carry no update time, so only a full read sees what
  webhooks missed (deletes included); it runs every ``COULISSE_CRM_SCAN_MINUTES``;
- the ledger: records observed but not planned yet, writes planned but not applied (a cycle
  that failed half-way): these need the plan or an apply, not a read.

Nothing to do: the cycle ends there, having cost a few queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from coulisse.ledger import tables as t
from coulisse.ledger.store import utcnow
from coulisse.orchestration.erp_changes import ErpCheck, check_erp
from coulisse.sync import OBSERVE_SIDE, STREAMS, select_filter

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping, Sequence

    from coulisse.ledger import Ledger
    from coulisse.model import Entity, Side
    from coulisse.webhooks.store import CrmChange

#: tap-bottlecrm's setting that reads given records instead of all, per entity (as its
#: environment variable); entities without one are read in full when flagged.
CRM_ID_SETTINGS: dict[str, str] = {"client": "TAP_BOTTLECRM_ACCOUNT_IDS"}


def pending_crm_changes(ledger: Ledger) -> list[CrmChange]:
    """The CRM records webhooks flagged and no run has read yet, oldest first.

    Empty when the ledger has no ``crm_changes`` table (a ledger from before the webhooks).
    """
    if not sa.inspect(ledger.engine).has_table("crm_changes"):
        return []
    from coulisse.webhooks.store import ChangeStore

    return ChangeStore(ledger.engine).pending()


def consume_crm_changes(ledger: Ledger, changes: Sequence[CrmChange], *, by: str) -> int:
    """Mark flags read (after the run that read them succeeded); how many were marked."""
    if not changes:
        return 0
    from coulisse.webhooks.store import ChangeStore

    return ChangeStore(ledger.engine).mark_consumed([c.id for c in changes], consumed_by=by)


def pending_records(ledger: Ledger, entities: Sequence[Entity]) -> bool:
    """Whether records were observed but not planned yet (a partial index answers)."""
    with ledger.engine.connect() as conn:
        found = conn.execute(
            sa.select(t.observed.c.source_key)
            .where(t.observed.c.pending.is_(True), t.observed.c.entity.in_(list(entities)))
            .limit(1)
        ).first()
    return found is not None


def unapplied_writes(ledger: Ledger, side: Side, entities: Sequence[Entity]) -> int:
    """Writes to ``side`` planned and not applied yet (a run failed, or a write will be retried)."""
    ops = t.operations.c
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(
                    ops.status == "pending", ops.side == side, ops.entity.in_(list(entities))
                )
            ).scalar_one()
        )


@dataclass
class Workload:
    """What one cycle has to do, and why."""

    entities: tuple[Entity, ...]
    forced: bool = False
    erp: ErpCheck = field(default_factory=ErpCheck)
    #: Entities read in full from the CRM this cycle (scan due, or flagged without ids).
    crm_full: tuple[Entity, ...] = ()
    #: Entities read by id from the CRM (flagged by webhooks): their CRM ids.
    crm_ids: dict[str, list[str]] = field(default_factory=dict)
    #: The flags behind ``crm_ids`` (and full reads), consumed once read.
    flags: list[CrmChange] = field(default_factory=list)
    unplanned: bool = False
    unapplied: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def read_crm(self) -> bool:
        return bool(self.crm_full or self.crm_ids)

    @property
    def read_erp(self) -> bool:
        return self.forced or self.erp.changed

    @property
    def idle(self) -> bool:
        """Nothing to read, plan or apply."""
        return not (self.read_crm or self.read_erp or self.unplanned or self.needs_apply)

    @property
    def needs_apply(self) -> bool:
        return any(self.unapplied.values())

    def observe_pairs(self) -> list[tuple[str, str]]:
        """The tap/target pairs of the observe step (one `meltano run`), CRM first."""
        pairs: list[tuple[str, str]] = []
        if self.read_crm:
            pairs.append(OBSERVE_SIDE["crm"])
        if self.read_erp:
            pairs.append(OBSERVE_SIDE["erp"])
        return pairs

    def observe_env(self) -> dict[str, str]:
        """The environment narrowing tap-bottlecrm to this cycle's streams and records."""
        if not self.read_crm:
            return {}
        chosen = [e for e in self.entities if e in self.crm_full or e in self.crm_ids]
        env = select_filter(OBSERVE_SIDE["crm"][0], chosen)
        for entity, ids in self.crm_ids.items():
            env[CRM_ID_SETTINGS[entity]] = json.dumps(sorted(ids))
        return env

    def to_dict(self) -> dict[str, object]:
        """Plain data for the run's result and summary."""
        return {
            "idle": self.idle,
            "forced": self.forced,
            "erp_changed": self.read_erp,
            "erp_calls": self.erp.calls,
            "crm_full_read": [STREAMS[e] for e in self.crm_full],
            "crm_records": {STREAMS[e]: len(ids) for e, ids in self.crm_ids.items()},
            "unplanned": self.unplanned,
            "unapplied": self.unapplied,
            "reasons": self.reasons,
        }


def check_changes(
    ledger: Ledger,
    env: Mapping[str, str],
    entities: Sequence[Entity],
    *,
    last_crm_reads: Mapping[str, dt.datetime],
    crm_read_every: dt.timedelta,
    force: bool = False,
    now: dt.datetime | None = None,
) -> Workload:
    """Decide what this cycle runs (see the module docstring).

    ``last_crm_reads``: when each entity was last read in full from the CRM. ``force``: read
    everything from both systems, as `coulisse sync` does.
    """
    now = now or utcnow()
    work = Workload(entities=tuple(entities), forced=force)
    if force:
        work.crm_full = work.entities
        work.reasons.append("a full run was asked for")
    else:
        due = [
            e
            for e in entities
            if (last := last_crm_reads.get(e)) is None or now - last >= crm_read_every
        ]
        if due:
            work.crm_full = tuple(due)
            work.reasons.append(f"full CRM read due: {', '.join(STREAMS[e] for e in due)}")
    flags = [c for c in pending_crm_changes(ledger) if c.entity in entities]
    work.flags = flags
    for entity in entities:
        mine = [c for c in flags if c.entity == entity]
        if not mine or entity in work.crm_full:
            continue
        if entity not in CRM_ID_SETTINGS or any(c.action == "deleted" for c in mine):
            # A deletion answers 404 when read by id: only a full read tells the ledger.
            work.crm_full = (*work.crm_full, entity)
        else:
            work.crm_ids[entity] = sorted({c.crm_id for c in mine})
    if flags:
        work.reasons.append(f"{len(flags)} CRM record(s) flagged by webhooks")
    if not force:
        work.erp = check_erp(env, entities)
        work.reasons.extend(f"ERP: {reason}" for reason in work.erp.reasons)
    work.unplanned = pending_records(ledger, entities)
    if work.unplanned:
        work.reasons.append("records observed but not planned yet")
    sides: tuple[Side, ...] = ("erp", "crm")
    for side in sides:
        count = unapplied_writes(ledger, side, entities)
        if count:
            work.unapplied[side] = count
            work.reasons.append(f"{count} planned write(s) to the {side.upper()} not applied yet")
    return work
