"""What the ledger says about the sync as a whole, and the operator's hand on held records.

``overview`` answers "is the sync healthy?" in a few aggregate queries (never a scan per
record): the last runs, how fresh each entity is per system, and what waits for a person.
``retry`` and ``dismiss`` act on one quarantined record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from coulisse.ledger import tables as t
from coulisse.ledger.codec import loads
from coulisse.ledger.store import LedgerError, utcnow

if TYPE_CHECKING:
    import datetime as dt

    from coulisse.ledger.store import Ledger
    from coulisse.model import Entity, Side


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current the ledger's picture of one entity in one system is."""

    side: str
    entity: str
    records: int
    deleted: int
    #: When a tap last delivered one of these records (observe runs), and the newest change
    #: the system reported for one.
    last_observed_at: dt.datetime | None
    last_changed_at: dt.datetime | None


def _runs(conn: sa.Connection, limit: int) -> list[dict[str, Any]]:
    r = t.runs.c
    rows = conn.execute(sa.select(t.runs).order_by(r.id.desc()).limit(limit)).all()
    return [
        {
            "id": row.id,
            "kind": row.kind,
            "side": row.side,
            "status": row.status,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "flow_run_id": row.flow_run_id,
            "stats": loads(row.stats) if row.stats else None,
        }
        for row in rows
    ]


def _freshness(conn: sa.Connection) -> list[Freshness]:
    o = t.observed.c
    rows = conn.execute(
        sa.select(
            o.side,
            o.entity,
            sa.func.count().filter(o.deleted_at.is_(None)),
            sa.func.count().filter(o.deleted_at.is_not(None)),
            sa.func.max(o.last_seen_at),
            sa.func.max(o.source_updated_at),
        ).group_by(o.side, o.entity)
    ).all()
    return [
        Freshness(
            side=row[0],
            entity=row[1],
            records=int(row[2]),
            deleted=int(row[3]),
            last_observed_at=row[4],
            last_changed_at=row[5],
        )
        for row in sorted(rows, key=lambda row: (row[1], row[0]))
    ]


def _count(conn: sa.Connection, query: Any) -> int:
    return int(conn.execute(query).scalar_one())


def overview(ledger: Ledger, *, runs: int = 10) -> dict[str, Any]:
    """The last runs, freshness per entity and system, and what waits for a person."""
    q, c, ops = t.quarantine.c, t.conflicts.c, t.operations.c
    with ledger.engine.connect() as conn:
        held = _count(
            conn,
            sa.select(sa.func.count()).select_from(
                sa.select(q.side, q.entity, q.source_key)
                .where(q.released_at.is_(None))
                .distinct()
                .subquery()
            ),
        )
        pending = conn.execute(
            sa.select(ops.side, sa.func.count())
            .where(ops.status.in_(("pending", "in_flight")))
            .group_by(ops.side)
        ).all()
        waiting = {
            "quarantined_records": held,
            "open_conflicts": _count(
                conn, sa.select(sa.func.count()).select_from(t.conflicts).where(c.status == "open")
            ),
            "reviews": _count(
                conn,
                sa.select(sa.func.count())
                .select_from(t.reviews)
                .where(t.reviews.c.status == "open"),
            ),
            "duplicates": _count(
                conn,
                sa.select(sa.func.count())
                .select_from(t.duplicates)
                .where(t.duplicates.c.status == "open"),
            ),
            "pending_writes": {side: int(count) for side, count in pending},
        }
        report: dict[str, Any] = {
            "runs": _runs(conn, runs),
            "freshness": [_as_dict(f) for f in _freshness(conn)],
            "waiting": waiting,
        }
    # After the read: SQLite transactions are IMMEDIATE, so a second one meanwhile would wait.
    report["lock"] = ledger.lock_holder()
    return report


def _as_dict(freshness: Freshness) -> dict[str, Any]:
    return {name: getattr(freshness, name) for name in Freshness.__slots__}


def _held_keys(ledger: Ledger, key: str, side: Side | None, entity: Entity | None) -> list[Any]:
    q = t.quarantine.c
    query = sa.select(q.side, q.entity, q.source_key).where(
        q.source_key == key, q.released_at.is_(None)
    )
    if side is not None:
        query = query.where(q.side == side)
    if entity is not None:
        query = query.where(q.entity == entity)
    with ledger.engine.connect() as conn:
        found = conn.execute(query.distinct()).all()
    if not found:
        msg = (
            f"no record {key!r} is in quarantine"
            + (f" in the {side.upper()}" if side else "")
            + "; `coulisse quarantine list` shows what is"
        )
        raise LedgerError(msg)
    if len(found) > 1:
        where = ", ".join(f"{row.side} {row.entity}" for row in found)
        msg = f"{key!r} names several held records ({where}): add --side and --entity"
        raise LedgerError(msg)
    return list(found)


def retry(
    ledger: Ledger, key: str, *, side: Side | None = None, entity: Entity | None = None
) -> str:
    """Check the held record ``key`` again at the next plan, and retry a write a system refused.

    Returns "side entity" of the record. Its quarantine entries are released now; if the
    record is still wrong the next plan holds it again, with today's reason.
    """
    ((held_side, held_entity, source_key),) = _held_keys(ledger, key, side, entity)
    now = utcnow()
    q, o = t.quarantine.c, t.observed.c
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.update(t.quarantine)
            .where(
                q.side == held_side,
                q.entity == held_entity,
                q.source_key == source_key,
                q.released_at.is_(None),
            )
            .values(released_at=now)
        )
        conn.execute(
            sa.update(t.observed)
            .where(o.side == held_side, o.entity == held_entity, o.source_key == source_key)
            .values(pending=True, checked_hash=None)
        )
    return f"{held_side} {held_entity}"


def dismiss(
    ledger: Ledger, key: str, *, side: Side | None = None, entity: Entity | None = None
) -> str:
    """Take ``key`` off the quarantine list without checking it again.

    It stays out of the sync until it changes in its system: the next change is checked like
    any other (and held again if it is still wrong).
    """
    ((held_side, held_entity, source_key),) = _held_keys(ledger, key, side, entity)
    q = t.quarantine.c
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.update(t.quarantine)
            .where(
                q.side == held_side,
                q.entity == held_entity,
                q.source_key == source_key,
                q.released_at.is_(None),
            )
            .values(released_at=utcnow())
        )
    return f"{held_side} {held_entity}"


def held_record(ledger: Ledger, key: str, *, side: Side | None = None) -> list[dict[str, Any]]:
    """Every quarantine entry of ``key`` (open and past), with the record as last observed."""
    q, o = t.quarantine.c, t.observed.c
    query = (
        sa.select(
            q.side,
            q.entity,
            q.source_key,
            q.reason,
            q.field,
            q.message,
            q.first_seen_at,
            q.last_seen_at,
            q.released_at,
            o.data,
        )
        .select_from(
            t.quarantine.outerjoin(
                t.observed,
                sa.and_(o.side == q.side, o.entity == q.entity, o.source_key == q.source_key),
            )
        )
        .where(q.source_key == key)
        .order_by(q.released_at.is_not(None), q.first_seen_at)
    )
    if side is not None:
        query = query.where(q.side == side)
    with ledger.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "side": row.side,
            "entity": row.entity,
            "record": row.source_key,
            "reason": row.reason,
            "field": row.field,
            "message": row.message,
            "first_seen_at": row.first_seen_at,
            "last_seen_at": row.last_seen_at,
            "released_at": row.released_at,
            "observed": loads(row.data) if row.data else None,
        }
        for row in rows
    ]


def plan_again(ledger: Ledger, entity: Entity, *, crm_key: str, erp_key: str) -> None:
    """Have the next plan look at both records again (after a person linked them)."""
    o = t.observed.c
    with ledger.engine.begin() as conn:
        for side, key in (("crm", crm_key), ("erp", erp_key)):
            conn.execute(
                sa.update(t.observed)
                .where(o.side == side, o.entity == entity, o.source_key == key)
                .values(pending=True)
            )
