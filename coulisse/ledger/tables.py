"""The ledger's tables (SQLAlchemy Core): what was seen, what is linked, what is to be written.

JSON documents (records, snapshots, payloads) are stored as text in canonical JSON (sorted keys,
Decimal kept exact): the ledger never queries inside them, and text is as fast to write on SQLite
as on PostgreSQL. The alembic migrations in ``migrations/`` create exactly these tables; a test
compares the two.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa


class UtcDateTime(sa.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on every database (SQLite stores it without a zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        """Refuse naive datetimes; store UTC (naive on SQLite, which has no zones)."""
        if value is None:
            return None
        if value.tzinfo is None:
            msg = f"naive datetime {value.isoformat()} given to the ledger: add a time zone"
            raise ValueError(msg)
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        """Always hand back an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = UtcDateTime()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("side", sa.String(3)),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stats", sa.Text),
    # The orchestrator's run behind this one (a Prefect flow run id), when there is one.
    sa.Column("flow_run_id", sa.String(64)),
)

run_lock = sa.Table(
    "run_lock",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200)),
    sa.Column("acquired_at", Timestamp),
    sa.Column("expires_at", Timestamp),
)

observed = sa.Table(
    "observed",
    metadata,
    sa.Column("side", sa.String(3), primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True),
    sa.Column("source_key", sa.String(100), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(32), nullable=False),
    sa.Column("source_updated_at", Timestamp),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column("last_seen_at", Timestamp, nullable=False),
    #: The full-scan version that last saw the record (Singer ACTIVATE_VERSION).
    sa.Column("seen_version", sa.BigInteger),
    sa.Column("deleted_at", Timestamp),
    #: Changed since the planner last looked (new, updated, deleted or restored).
    sa.Column("pending", sa.Boolean, nullable=False),
    # Written by the planner: the normalised record, its match keys, and the hash checked.
    sa.Column("normalised", sa.Text),
    sa.Column("checked_hash", sa.String(32)),
    sa.Column("valid", sa.Boolean),
    sa.Column("vat_key", sa.String(32)),
    sa.Column("siren_key", sa.String(16)),
    sa.Column("name_key", sa.String(300)),
    sa.Column("code_key", sa.String(100)),
    #: The record waits for something (its client to exist on the other side, a review).
    sa.Column("deferred", sa.Boolean, nullable=False, server_default=sa.false()),
    #: The plan that checked the record: its reconcile pass finds the record by this, so the
    #: check's single write also clears ``pending`` (only that plan reads it).
    sa.Column("checked_run", sa.Integer),
    # Partial indexes: most records are neither pending nor deferred, and the target writes
    # records before the planner fills their match keys; neither should pay for an index entry.
    *(
        sa.Index(
            f"ix_observed_{column}",
            "entity",
            column,
            sqlite_where=sa.text(condition),
            postgresql_where=sa.text(condition),
        )
        for column, condition in (
            ("pending", "pending"),
            ("deferred", "deferred"),
            ("vat_key", "vat_key IS NOT NULL"),
            ("siren_key", "siren_key IS NOT NULL"),
            ("name_key", "name_key IS NOT NULL"),
            ("code_key", "code_key IS NOT NULL"),
        )
    ),
)

links = sa.Table(
    "links",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("crm_key", sa.String(100)),
    sa.Column("erp_key", sa.String(100)),
    #: How the link was made: "crm" or "erp" (created from that side), "vat", "siren", "ref"...
    sa.Column("origin", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    #: The last state both systems agreed on (the base of the three-way merge).
    sa.Column("agreed", sa.Text),
    #: What each system stored after our last write to it (echo suppression).
    sa.Column("crm_echo", sa.Text),
    sa.Column("erp_echo", sa.Text),
    sa.UniqueConstraint("entity", "crm_key"),
    sa.UniqueConstraint("entity", "erp_key"),
)

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("link_id", sa.Integer, sa.ForeignKey("links.id"), nullable=False),
    sa.Column("entity", sa.String(16), nullable=False),
    #: The system the operation writes to.
    sa.Column("side", sa.String(3), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("changed_fields", sa.Text, nullable=False),
    #: The target system's values of the changed fields when planned (check before write).
    sa.Column("expected", sa.Text),
    sa.Column("source_side", sa.String(3), nullable=False),
    sa.Column("source_key", sa.String(100), nullable=False),
    sa.Column("source_hash", sa.String(32)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("result", sa.Text),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text),
    sa.Index(None, "side", "status", "entity"),
    # One open operation per link and system: two planners cannot queue the same write twice.
    sa.Index(
        "uq_operations_open",
        "link_id",
        "side",
        unique=True,
        sqlite_where=sa.text("status IN ('pending', 'in_flight')"),
        postgresql_where=sa.text("status IN ('pending', 'in_flight')"),
    ),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("side", sa.String(3), nullable=False),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("source_key", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("at", Timestamp, nullable=False),
    sa.UniqueConstraint("run_id", "side", "entity", "source_key"),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("side", sa.String(3), primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True),
    sa.Column("source_key", sa.String(100), primary_key=True),
    sa.Column("reason", sa.String(64), primary_key=True),
    sa.Column("field", sa.String(100)),
    sa.Column("message", sa.Text, nullable=False),
    #: The record's content when quarantined: a refusal by a system holds until it changes.
    sa.Column("content_hash", sa.String(32)),
    sa.Column("first_seen_at", Timestamp, nullable=False),
    sa.Column("last_seen_at", Timestamp, nullable=False),
    sa.Column("released_at", Timestamp),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id")),
    sa.Index(None, "released_at"),
)

conflicts = sa.Table(
    "conflicts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("link_id", sa.Integer, sa.ForeignKey("links.id"), nullable=False),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("field", sa.String(100), nullable=False),
    sa.Column("base_value", sa.Text),
    sa.Column("crm_value", sa.Text),
    sa.Column("erp_value", sa.Text),
    #: open, resolved (by a person, waiting to be applied), closed.
    sa.Column("status", sa.String(16), nullable=False),
    #: owner, newest (decided by policy), crm, erp, value (decided by a person), gone.
    sa.Column("resolution", sa.String(16)),
    sa.Column("resolved_value", sa.Text),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id")),
    sa.Index(
        "uq_conflicts_open",
        "link_id",
        "field",
        unique=True,
        sqlite_where=sa.text("status IN ('open', 'resolved')"),
        postgresql_where=sa.text("status IN ('open', 'resolved')"),
    ),
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("crm_key", sa.String(100), nullable=False),
    sa.Column("erp_key", sa.String(100), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    #: open, linked (same client), distinct (different clients).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("decided_at", Timestamp),
    sa.UniqueConstraint("entity", "crm_key", "erp_key"),
)

duplicates = sa.Table(
    "duplicates",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity", sa.String(16), nullable=False),
    #: The system that holds both records.
    sa.Column("side", sa.String(3), nullable=False),
    #: The two records, the smaller key first.
    sa.Column("first_key", sa.String(100), nullable=False),
    sa.Column("second_key", sa.String(100), nullable=False),
    #: What they share: same_vat, same_siren.
    sa.Column("reason", sa.String(64), nullable=False),
    #: open, same (one client entered twice: to fix in that system), distinct (two clients).
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("decided_at", Timestamp),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id")),
    sa.UniqueConstraint("entity", "side", "first_key", "second_key"),
    sa.Index(None, "entity", "side", "second_key"),
)

# -- CRM webhooks (coulisse/webhooks) --------------------------------------------------------

#: Every BottleCRM delivery accepted, by its X-BottleCRM-Delivery id: a second one is a replay.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("event", sa.String(64), nullable=False),
    #: The envelope's event id: a redelivery asked for in the CRM is a new delivery of it.
    sa.Column("event_id", sa.String(64)),
    sa.Column("signed_at", Timestamp, nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Index(None, "received_at"),
)

#: CRM records a webhook said changed, waiting for a targeted run (``coulisse serve`` or a
#: Prefect flow) to observe them; ``consumed_at`` is set by the run that did.
crm_changes = sa.Table(
    "crm_changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    #: The canonical entity (client, order, invoice) and the record's id in the CRM.
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("crm_id", sa.String(100), nullable=False),
    #: created, updated, deleted, won, lost, paid (a deletion needs a full scan to be seen).
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("delivery_id", sa.String(64), nullable=False),
    #: The record's updated_at in the delivery.
    sa.Column("source_updated_at", Timestamp),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("consumed_at", Timestamp),
    #: Which run consumed it: a Prefect flow run id, or ``coulisse serve`` and its PID.
    sa.Column("consumed_by", sa.String(200)),
    sa.Index(
        "ix_crm_changes_pending",
        "entity",
        "id",
        sqlite_where=sa.text("consumed_at IS NULL"),
        postgresql_where=sa.text("consumed_at IS NULL"),
    ),
)
