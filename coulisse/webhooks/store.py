"""The ledger's memory of CRM webhooks: deliveries received and the records they flag.

Uses the ledger's own engine and tables (``webhook_deliveries``, ``crm_changes``, created by
migration 0005), so a flag is as durable as anything else the sync knows, and a Prefect flow
reads the same table ``coulisse serve`` fills. A delivery and its flags are written in one
transaction before the CRM gets its answer: an answered delivery is never lost, and the
delivery id's primary key makes a replay a no-op even with several receivers on one ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from coulisse.ledger import tables as t
from coulisse.ledger.store import utcnow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Engine

    from coulisse.webhooks.events import Delivery

#: How long accepted delivery ids and consumed flags are kept. A replay must be refused for
#: at least the signature's tolerance; the CRM retries a delivery for about 9 hours.
KEEP = dt.timedelta(days=7)


@dataclass(frozen=True)
class CrmChange:
    """One flagged CRM record (a row of ``crm_changes``)."""

    id: int
    entity: str
    crm_id: str
    action: str
    event: str
    delivery_id: str
    received_at: dt.datetime
    source_updated_at: dt.datetime | None


class ChangeStore:
    """Record deliveries and flags; hand pending flags to a run and mark them consumed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_delivery(self, delivery: Delivery, *, signed_at: dt.datetime) -> bool:
        """Remember the delivery and flag its records; False (and nothing written) on a replay."""
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(t.webhook_deliveries).values(
                        delivery_id=delivery.delivery_id,
                        event=delivery.event[:64],
                        event_id=delivery.event_id,
                        signed_at=signed_at,
                        received_at=now,
                    )
                )
                if delivery.records:
                    conn.execute(
                        sa.insert(t.crm_changes),
                        [
                            {
                                "entity": record.entity,
                                "crm_id": record.crm_id,
                                "action": record.action[:16],
                                "event": record.event[:64],
                                "delivery_id": delivery.delivery_id,
                                "source_updated_at": record.source_updated_at,
                                "received_at": now,
                            }
                            for record in delivery.records
                        ],
                    )
        except sa.exc.IntegrityError:
            return False
        return True

    def pending(self, limit: int = 10_000) -> list[CrmChange]:
        """Flags no run has consumed yet, oldest first."""
        c = t.crm_changes.c
        query = sa.select(t.crm_changes).where(c.consumed_at.is_(None)).order_by(c.id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            CrmChange(
                id=row.id,
                entity=row.entity,
                crm_id=row.crm_id,
                action=row.action,
                event=row.event,
                delivery_id=row.delivery_id,
                received_at=row.received_at,
                source_updated_at=row.source_updated_at,
            )
            for row in rows
        ]

    def count_pending(self) -> int:
        """How many flags wait for a run (one cheap query, for a change check)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(t.crm_changes.c.consumed_at.is_(None))
                ).scalar_one()
            )

    def mark_consumed(self, change_ids: Sequence[int], *, consumed_by: str) -> int:
        """Mark the flags a run observed; flags that arrived during the run stay pending."""
        if not change_ids:
            return 0
        c = t.crm_changes.c
        done = 0
        with self.engine.begin() as conn:
            for start in range(0, len(change_ids), 500):
                chunk = list(change_ids[start : start + 500])
                done += conn.execute(
                    sa.update(t.crm_changes)
                    .where(c.id.in_(chunk), c.consumed_at.is_(None))
                    .values(consumed_at=utcnow(), consumed_by=consumed_by[:200])
                ).rowcount
        return done

    def was_received(self, delivery_id: str) -> bool:
        """Whether a delivery with this id was already accepted."""
        return self.first_signed_at(delivery_id) is not None

    def first_signed_at(self, delivery_id: str) -> dt.datetime | None:
        """When the accepted delivery with this id was signed, or None if there is none."""
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(t.webhook_deliveries.c.signed_at).where(
                    t.webhook_deliveries.c.delivery_id == delivery_id
                )
            ).scalar()
        return found if isinstance(found, dt.datetime) else None

    def prune(self, keep: dt.timedelta = KEEP) -> int:
        """Forget deliveries and consumed flags older than ``keep``; pending flags stay."""
        cutoff = utcnow() - keep
        with self.engine.begin() as conn:
            removed = conn.execute(
                sa.delete(t.webhook_deliveries).where(t.webhook_deliveries.c.received_at < cutoff)
            ).rowcount
            removed += conn.execute(
                sa.delete(t.crm_changes).where(
                    t.crm_changes.c.consumed_at.is_not(None),
                    t.crm_changes.c.consumed_at < cutoff,
                )
            ).rowcount
        return int(removed)
