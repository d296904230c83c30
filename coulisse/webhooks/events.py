"""What a BottleCRM delivery says changed: its event, as canonical records to observe again.

The CRM's payload (``webhooks/emit.py``: ``envelope``) is ``{"id", "event", "created_at",
"org_id", "data"}`` with ``data`` the record as ``webhooks/events.py`` lists it. Only the record's
id and ``updated_at`` are used: the targeted run reads the record itself through the API, so a
delivery never becomes the truth about a record, only a hint of which one to read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coulisse.model import Entity

#: The CRM's event prefix -> the canonical entity whose record it names, and where its id is.
#: A contact's email and phone are its account's (the client's primary contact), so a contact
#: event flags its account.
PREFIXES: dict[str, tuple[Entity, str]] = {
    "account": ("client", "id"),
    "contact": ("client", "account_id"),
    "deal": ("order", "id"),
    "invoice": ("invoice", "id"),
}

#: What the stack subscribes its receiver to (names from the CRM's webhooks/events.py).
SUBSCRIBED: tuple[str, ...] = (
    "account.created",
    "account.updated",
    "account.deleted",
    "contact.created",
    "contact.updated",
    "contact.deleted",
    "deal.created",
    "deal.updated",
    "deal.deleted",
    "deal.won",
    "deal.lost",
    "invoice.created",
    "invoice.updated",
    "invoice.paid",
)


class PayloadError(ValueError):
    """A signed body that is not a BottleCRM event envelope."""


@dataclass(frozen=True)
class FlaggedRecord:
    """One CRM record a delivery says changed."""

    entity: Entity
    crm_id: str
    #: created, updated, deleted, won, lost, paid.
    action: str
    event: str
    source_updated_at: dt.datetime | None


@dataclass(frozen=True)
class Delivery:
    """A verified delivery: its ids, its event and the records it flags (often one, or none)."""

    delivery_id: str
    event: str
    event_id: str | None
    records: tuple[FlaggedRecord, ...]


def parse_delivery(delivery_id: str, payload: Any) -> Delivery:
    """Read the envelope; an event Coulisse does not sync (a ping, a lead) flags nothing."""
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise PayloadError("the body is not a BottleCRM event (no 'event' field)")
    event: str = payload["event"]
    data = payload.get("data")
    prefix, _, action = event.partition(".")
    records: tuple[FlaggedRecord, ...] = ()
    if prefix in PREFIXES and isinstance(data, dict):
        entity, id_field = PREFIXES[prefix]
        crm_id = data.get(id_field)
        if crm_id:
            # A contact's own deletion or move changes its account's primary contact; it is
            # an update of the client, not its deletion.
            record_action = action if prefix != "contact" else "updated"
            records = (
                FlaggedRecord(
                    entity=entity,
                    crm_id=str(crm_id),
                    action=record_action,
                    event=event,
                    source_updated_at=_aware(data.get("updated_at")),
                ),
            )
    event_id = payload.get("id")
    return Delivery(
        delivery_id=delivery_id,
        event=event,
        event_id=str(event_id) if event_id else None,
        records=records,
    )


def _aware(value: Any) -> dt.datetime | None:
    """The payload's ISO timestamp as aware UTC, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
