"""The plan that checked a record, so that one write per record both checks and settles it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("observed", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checked_run", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("observed", schema=None) as batch_op:
        batch_op.drop_column("checked_run")
