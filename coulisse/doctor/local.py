"""Checks of what runs beside the sync: the ledger (schema, run lock) and the Meltano project.

The ledger is opened without migrating, so doctor tells that a migration is pending instead of
applying it behind the engineer's back (``--fix`` applies it; any sync would too).
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import yaml
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from coulisse.doctor.report import Check, DoctorReport
from coulisse.project import ConfigError, ledger_url, sync_policy
from coulisse.stack.layout import PROJECT_ROOT

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

MELTANO_YML = PROJECT_ROOT / "meltano.yml"
BIN_DIR = PROJECT_ROOT / ".venv" / "bin"


def ledger_checks(env: Mapping[str, str], report: DoctorReport, *, fix: bool = False) -> None:
    """The ledger opens, is at the latest migration, and who holds the run lock."""
    from coulisse.ledger import Ledger
    from coulisse.ledger.migrate import alembic_config, upgrade

    try:
        url = ledger_url(dict(env))
    except ConfigError as exc:
        report.add(Check("ledger", "database", "failed", "COULISSE_LEDGER_URL not set", str(exc)))
        return
    shown = sa.make_url(url).render_as_string(hide_password=True)
    ledger = Ledger.open(url, migrate=False)
    try:
        head = ScriptDirectory.from_config(alembic_config(ledger.engine)).get_current_head()
        try:
            with ledger.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except sa.exc.SQLAlchemyError as exc:
            report.add(
                Check(
                    "ledger",
                    "database",
                    "failed",
                    f"cannot open {shown}: {str(exc).splitlines()[0]}",
                    "check COULISSE_LEDGER_URL and that its database server runs",
                )
            )
            return
        if current != head and fix:
            upgrade(ledger.engine)
            report.fixed.append(f"ledger migrated from {current or 'empty'} to {head}")
            current = head
        if current == head:
            report.add(Check("ledger", "database", "ok", f"{shown} at the latest migration {head}"))
            _run_lock(ledger, report)
        elif current is None:
            report.add(
                Check(
                    "ledger",
                    "database",
                    "warning",
                    f"{shown} is empty: the first sync creates its tables",
                    "nothing to do, or run `coulisse doctor --fix` to create them now",
                )
            )
        else:
            report.add(
                Check(
                    "ledger",
                    "database",
                    "warning",
                    f"{shown} is at migration {current}, the latest is {head}",
                    "the next sync migrates it, or run `coulisse doctor --fix` now",
                )
            )
    finally:
        ledger.close()


def _run_lock(ledger: Any, report: DoctorReport) -> None:
    holder = ledger.lock_holder()
    if holder is None:
        report.add(Check("ledger", "run lock", "ok", "free: no sync is running"))
        return
    report.add(
        Check(
            "ledger",
            "run lock",
            "warning",
            f"held by {holder}: a sync is running (a lock left by a crashed run expires after "
            "an hour)",
            "wait for that run to finish; `coulisse status` shows the last runs",
        )
    )


def meltano_checks(report: DoctorReport, meltano_yml: Path = MELTANO_YML) -> None:
    """meltano.yml parses, its policy is valid, and every plugin's executable is installed."""
    try:
        document: dict[str, Any] = yaml.safe_load(meltano_yml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        report.add(
            Check(
                "meltano",
                "meltano.yml",
                "failed",
                f"{meltano_yml} cannot be read: {exc}",
                "restore meltano.yml from the repository and redo your changes",
            )
        )
        return
    try:
        sync_policy(meltano_yml)
    except ConfigError as exc:
        report.add(
            Check("meltano", "meltano.yml", "failed", "the sync policy is not valid", str(exc))
        )
    else:
        report.add(Check("meltano", "meltano.yml", "ok", f"{meltano_yml} parses; policy valid"))
    plugins = document.get("plugins") or {}
    executables = {"meltano"} | {
        str(plugin["executable"])
        for kind in ("extractors", "loaders", "utilities")
        for plugin in plugins.get(kind) or []
        if isinstance(plugin, dict) and plugin.get("executable")
    }
    missing = sorted(
        name for name in executables if not (BIN_DIR / name).exists() and shutil.which(name) is None
    )
    if missing:
        report.add(
            Check(
                "meltano",
                "plugins",
                "failed",
                f"not installed in {BIN_DIR} nor on PATH: {', '.join(missing)}",
                "run `make venv` (installs Coulisse, Meltano and the taps and targets into .venv)",
            )
        )
        return
    report.add(Check("meltano", "plugins", "ok", f"{', '.join(sorted(executables))} in {BIN_DIR}"))


__all__ = ["ledger_checks", "meltano_checks"]
