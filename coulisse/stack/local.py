"""The whole local stack, BottleCRM and Tryton together: what `coulisse stack ...` runs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from coulisse.stack import postgres
from coulisse.stack.crm import CrmStack
from coulisse.stack.crm_webhook import register_receiver
from coulisse.stack.envfile import update_env_file
from coulisse.stack.erp import ErpStack
from coulisse.stack.errors import StackError

if TYPE_CHECKING:
    from collections.abc import Callable

    from coulisse.stack.layout import StackLayout
    from coulisse.stack.settings import StackSettings


class LocalStack:
    """Brings both systems up, down, back to their prepared state, and seeds them."""

    def __init__(
        self,
        layout: StackLayout,
        settings: StackSettings,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.crm = CrmStack(layout, settings)
        self.erp = ErpStack(layout, settings)
        self.say = say or (lambda _message: None)

    @property
    def _bootstrap_file(self) -> Any:
        return self.layout.run_dir / "crm-bootstrap.json"

    def up(self) -> dict[str, Any]:
        """Install, prepare, copy, start and bootstrap both systems; harmless when they run."""
        self.layout.ensure_dirs()

        def crm_ready() -> None:
            if self.crm.ensure_installed():
                self.say("CRM: installed django-crm 1.35.0 in its Python 3.12 virtualenv")
            if self.crm.ensure_prepared():
                self.say("CRM: built the prepared (migrated) database; later runs copy it")
            if self.crm.ensure_database():
                self.say(f"CRM: database {self.settings.crm_database} copied from the prepared one")

        def erp_ready() -> None:
            if self.erp.ensure_installed():
                self.say("ERP: installed Tryton 8.2 and its modules in their virtualenv")
            if self.erp.ensure_prepared():
                self.say("ERP: built the prepared database (company, chart, taxes, catalogue)")
            if self.erp.ensure_database():
                self.say(f"ERP: database {self.settings.erp_database} ready")

        self.say("Preparing BottleCRM and Tryton (the first time takes a few minutes)...")
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(crm_ready), pool.submit(erp_ready)]
            for future in futures:
                future.result()

        info = self.crm.bootstrap()
        self._bootstrap_file.write_text(json.dumps(info))
        hook = register_receiver(self.crm)
        if hook["changed"]:
            self.say(f"CRM: webhooks go to {hook['url']} (`coulisse serve` receives them)")
        if self.crm.start():
            self.say(f"CRM: serving on {self.settings.crm_url}")
        fields = self.crm.prepare_custom_fields()
        if fields.changed:
            self.say(
                f"CRM: custom fields created {len(fields.created)}, "
                f"re-activated {len(fields.reactivated)}, "
                f"dropdowns given new values {len(fields.extended)}"
            )
        self.erp.credentials()
        self.ensure_sync_databases()
        if not self.erp.is_running():
            self.erp.start()
            self.say(f"ERP: serving on {self.settings.erp_url}")
        return self.status()

    def down(self) -> dict[str, bool]:
        """Stop what `up` started (by PID); data stays."""
        return {"crm": self.crm.stop(), "erp": self.erp.stop()}

    def reset(self) -> dict[str, Any]:
        """Stop, throw both databases away, and start again from the prepared ones."""
        self.forget_databases()
        return self.up()

    def forget_databases(self) -> None:
        """Stop both systems and drop their databases, the ledger and Meltano's state too.

        The next `up` copies the prepared databases and starts a new, empty ledger.
        """
        self.down()
        self.crm.drop_database()
        self.erp.drop_database()
        if self.settings.uses_postgres:
            for name in self._sync_database_names():
                postgres.drop_database(self.settings, name)
        else:
            for path in (
                self.layout.data_dir / "ledger.sqlite",
                self.layout.data_dir / "meltano.db",
            ):
                path.unlink(missing_ok=True)

    def _sync_database_names(self) -> tuple[str, str]:
        return f"{self.settings.name}_ledger", f"{self.settings.name}_meltano"

    def ensure_sync_databases(self) -> dict[str, str]:
        """The ledger and Meltano's system database (its state) for this stack, in the env file.

        On PostgreSQL (the production configuration) both are databases of that server; on
        SQLite, files in the stack's data folder.
        """
        if self.settings.uses_postgres:
            host, port, user, password = self.settings.pg_parts()
            auth = f"{user}:{password}@" if password else f"{user}@"
            urls = []
            for name in self._sync_database_names():
                if not postgres.database_exists(self.settings, name):
                    postgres.create_database(self.settings, name)
                urls.append(f"postgresql://{auth}{host}:{port}/{name}")
            ledger, meltano = urls
        else:
            ledger = f"sqlite:///{self.layout.data_dir / 'ledger.sqlite'}"
            meltano = f"sqlite:///{self.layout.data_dir / 'meltano.db'}"
        values = {"COULISSE_LEDGER_URL": ledger, "MELTANO_DATABASE_URI": meltano}
        update_env_file(self.layout.env_file, values)
        return values

    def status(self) -> dict[str, Any]:
        return {
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "stack_home": str(self.layout.home),
            "env_file": str(self.layout.env_file),
            "crm": self.crm.status(),
            "erp": self.erp.status(),
        }

    def advisor_profile_ids(self) -> list[str]:
        if not self._bootstrap_file.exists():
            raise StackError("the CRM was never bootstrapped: run `coulisse stack up` first")
        info = json.loads(self._bootstrap_file.read_text())
        return [a["profile_id"] for a in info["advisors"]]

    def won_stage(self) -> str:
        info = json.loads(self._bootstrap_file.read_text())
        stages: list[str] = info["won_stages"]
        if not stages:
            raise StackError("the CRM's default pipeline has no won stage")
        return stages[0]
