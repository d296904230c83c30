"""CRM webhooks: the deliveries received (replay memory) and the records they flag for a run."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_deliveries_received_at"), ["received_at"], unique=False
        )
    op.create_table(
        "crm_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("crm_id", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("source_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_changes")),
    )
    with op.batch_alter_table("crm_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_crm_changes_pending",
            ["entity", "id"],
            unique=False,
            sqlite_where=sa.text("consumed_at IS NULL"),
            postgresql_where=sa.text("consumed_at IS NULL"),
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("crm_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_changes_pending")
    op.drop_table("crm_changes")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_received_at"))
    op.drop_table("webhook_deliveries")
