"""Initial ledger: observed records, links, operations, events, quarantine, conflicts, runs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("crm_key", sa.String(length=100), nullable=True),
        sa.Column("erp_key", sa.String(length=100), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agreed", sa.Text(), nullable=True),
        sa.Column("crm_echo", sa.Text(), nullable=True),
        sa.Column("erp_echo", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_links")),
        sa.UniqueConstraint("entity", "crm_key", name=op.f("uq_links_entity_crm_key")),
        sa.UniqueConstraint("entity", "erp_key", name=op.f("uq_links_entity_erp_key")),
    )
    op.create_table(
        "observed",
        sa.Column("side", sa.String(length=3), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_version", sa.BigInteger(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("normalised", sa.Text(), nullable=True),
        sa.Column("checked_hash", sa.String(length=32), nullable=True),
        sa.Column("valid", sa.Boolean(), nullable=True),
        sa.Column("vat_key", sa.String(length=32), nullable=True),
        sa.Column("siren_key", sa.String(length=16), nullable=True),
        sa.Column("name_key", sa.String(length=300), nullable=True),
        sa.Column("code_key", sa.String(length=100), nullable=True),
        sa.Column("deferred", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("side", "entity", "source_key", name=op.f("pk_observed")),
    )
    with op.batch_alter_table("observed", schema=None) as batch_op:
        batch_op.create_index(
            "ix_observed_code_key",
            ["entity", "code_key"],
            unique=False,
            sqlite_where=sa.text("code_key IS NOT NULL"),
            postgresql_where=sa.text("code_key IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_observed_deferred",
            ["entity", "deferred"],
            unique=False,
            sqlite_where=sa.text("deferred"),
            postgresql_where=sa.text("deferred"),
        )
        batch_op.create_index(
            "ix_observed_name_key",
            ["entity", "name_key"],
            unique=False,
            sqlite_where=sa.text("name_key IS NOT NULL"),
            postgresql_where=sa.text("name_key IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_observed_pending",
            ["entity", "pending"],
            unique=False,
            sqlite_where=sa.text("pending"),
            postgresql_where=sa.text("pending"),
        )
        batch_op.create_index(
            "ix_observed_siren_key",
            ["entity", "siren_key"],
            unique=False,
            sqlite_where=sa.text("siren_key IS NOT NULL"),
            postgresql_where=sa.text("siren_key IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_observed_vat_key",
            ["entity", "vat_key"],
            unique=False,
            sqlite_where=sa.text("vat_key IS NOT NULL"),
            postgresql_where=sa.text("vat_key IS NOT NULL"),
        )

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("crm_key", sa.String(length=100), nullable=False),
        sa.Column("erp_key", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint(
            "entity", "crm_key", "erp_key", name=op.f("uq_reviews_entity_crm_key_erp_key")
        ),
    )
    op.create_table(
        "run_lock",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_run_lock")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=3), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stats", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_table(
        "conflicts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=100), nullable=False),
        sa.Column("base_value", sa.Text(), nullable=True),
        sa.Column("crm_value", sa.Text(), nullable=True),
        sa.Column("erp_value", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolved_value", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["link_id"], ["links.id"], name=op.f("fk_conflicts_link_id_links")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_conflicts_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflicts")),
    )
    with op.batch_alter_table("conflicts", schema=None) as batch_op:
        batch_op.create_index(
            "uq_conflicts_open",
            ["link_id", "field"],
            unique=True,
            sqlite_where=sa.text("status IN ('open', 'resolved')"),
            postgresql_where=sa.text("status IN ('open', 'resolved')"),
        )

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("side", sa.String(length=3), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_events_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint(
            "run_id",
            "side",
            "entity",
            "source_key",
            name=op.f("uq_events_run_id_side_entity_source_key"),
        ),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("side", sa.String(length=3), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("changed_fields", sa.Text(), nullable=False),
        sa.Column("expected", sa.Text(), nullable=True),
        sa.Column("source_side", sa.String(length=3), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("source_hash", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["link_id"], ["links.id"], name=op.f("fk_operations_link_id_links")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_operations_run_id_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
    )
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_operations_side_status_entity"),
            ["side", "status", "entity"],
            unique=False,
        )
        batch_op.create_index(
            "uq_operations_open",
            ["link_id", "side"],
            unique=True,
            sqlite_where=sa.text("status IN ('pending', 'in_flight')"),
            postgresql_where=sa.text("status IN ('pending', 'in_flight')"),
        )

    op.create_table(
        "quarantine",
        sa.Column("side", sa.String(length=3), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("source_key", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("field", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_quarantine_run_id_runs")),
        sa.PrimaryKeyConstraint(
            "side", "entity", "source_key", "reason", name=op.f("pk_quarantine")
        ),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quarantine_released_at"), ["released_at"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_released_at"))

    op.drop_table("quarantine")
    with op.batch_alter_table("operations", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_operations_open",
            sqlite_where=sa.text("status IN ('pending', 'in_flight')"),
            postgresql_where=sa.text("status IN ('pending', 'in_flight')"),
        )
        batch_op.drop_index(batch_op.f("ix_operations_side_status_entity"))

    op.drop_table("operations")
    op.drop_table("events")
    with op.batch_alter_table("conflicts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_conflicts_open",
            sqlite_where=sa.text("status IN ('open', 'resolved')"),
            postgresql_where=sa.text("status IN ('open', 'resolved')"),
        )

    op.drop_table("conflicts")
    op.drop_table("runs")
    op.drop_table("run_lock")
    op.drop_table("reviews")
    with op.batch_alter_table("observed", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_observed_vat_key",
            sqlite_where=sa.text("vat_key IS NOT NULL"),
            postgresql_where=sa.text("vat_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_observed_siren_key",
            sqlite_where=sa.text("siren_key IS NOT NULL"),
            postgresql_where=sa.text("siren_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_observed_pending",
            sqlite_where=sa.text("pending"),
            postgresql_where=sa.text("pending"),
        )
        batch_op.drop_index(
            "ix_observed_name_key",
            sqlite_where=sa.text("name_key IS NOT NULL"),
            postgresql_where=sa.text("name_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_observed_deferred",
            sqlite_where=sa.text("deferred"),
            postgresql_where=sa.text("deferred"),
        )
        batch_op.drop_index(
            "ix_observed_code_key",
            sqlite_where=sa.text("code_key IS NOT NULL"),
            postgresql_where=sa.text("code_key IS NOT NULL"),
        )

    op.drop_table("observed")
    op.drop_table("links")
