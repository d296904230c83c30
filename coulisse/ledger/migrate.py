"""Bring a ledger database up to date with the package's alembic migrations, from Python."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
#: alembic keeps its running context in module globals: two threads migrating at once (sinks
#: draining in parallel, overlapping flow runs in one process) would trample each other.
_MIGRATING = threading.Lock()


def alembic_config(engine: Engine) -> Config:
    """An alembic configuration that runs on ``engine`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision``; a no-op on an up-to-date ledger."""
    with _MIGRATING:
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (``base`` drops every ledger table)."""
    with _MIGRATING:
        command.downgrade(alembic_config(engine), revision)
