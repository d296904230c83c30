"""The local BottleCRM: its virtualenv, prepared database, server and integration profile."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.client import BottleCrmClient, CrmApiError, CrmUnavailableError
from coulisse.bottlecrm.custom_fields import CustomFieldReport, ensure_custom_fields
from coulisse.stack import postgres
from coulisse.stack.envfile import read_env_file, update_env_file
from coulisse.stack.errors import StackError
from coulisse.stack.locks import file_lock, prepare_lock
from coulisse.stack.process import ManagedProcess, http_answers, port_in_use, run_checked
from coulisse.stack.pythons import find_python312

if TYPE_CHECKING:
    from coulisse.stack.layout import StackLayout
    from coulisse.stack.settings import StackSettings

CRM_PACKAGE = "django-crm==1.35.0"
CRM_REQUIREMENTS = (CRM_PACKAGE, "psycopg2-binary>=2.9,<3", "gunicorn>=23")
# Bump when the way the prepared database is built changes, so caches are rebuilt.
PREPARED_RECIPE = "migrate-1"
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"

ORG_NAME = "Coulisse Démo"
INTEGRATION_EMAIL = "integration@coulisse.example"
ADVISORS = (
    {"email": "claire.martin@coulisse.example", "name": "Claire Martin"},
    {"email": "hugo.lefebvre@coulisse.example", "name": "Hugo Lefebvre"},
    {"email": "ines.bernard@coulisse.example", "name": "Inès Bernard"},
)
# The API roots Coulisse touches (products live under invoices/). BottleCRM's `write` does not
# imply `read`, so both are granted where both are needed; nothing else is.
API_ROOTS = ("accounts", "contacts", "opportunities", "invoices", "tasks", "custom-fields")
TOKEN_SCOPES = tuple(f"{root}:{action}" for root in API_ROOTS for action in ("read", "write"))


def _stamp() -> str:
    return hashlib.sha256(f"{CRM_PACKAGE}|{PREPARED_RECIPE}".encode()).hexdigest()[:10]


class CrmStack:
    """BottleCRM on 127.0.0.1: install once, prepare once, copy per instance, serve, bootstrap."""

    def __init__(self, layout: StackLayout, settings: StackSettings) -> None:
        self.layout = layout
        self.settings = settings
        self.venv = layout.venvs_dir / "crm"
        self.process = ManagedProcess(
            name="crm",
            pid_file=layout.run_dir / "crm.pid",
            log_file=layout.log_dir / "crm.log",
            marker="crm.wsgi:application",
        )

    # -- install -------------------------------------------------------------------------

    @property
    def _install_stamp(self) -> Path:
        return self.venv / ".coulisse-installed"

    def ensure_installed(self) -> bool:
        """See ``_install``; several stacks share the virtualenv, so one builds it at a time
        (each would otherwise delete the other's half-built one)."""
        wanted = "\n".join(CRM_REQUIREMENTS)
        if self._install_stamp.exists() and self._install_stamp.read_text() == wanted:
            return False
        with file_lock(self.venv.with_name("crm-install.lock")):
            return self._install()

    def _install(self) -> bool:
        """Create the CRM's own Python 3.12 virtualenv; True when something was installed."""
        wanted = "\n".join(CRM_REQUIREMENTS)
        if self._install_stamp.exists() and self._install_stamp.read_text() == wanted:
            return False
        python = find_python312()
        log = self.layout.log_dir / "crm-install.log"
        if self.venv.exists():
            shutil.rmtree(self.venv)
        run_checked(
            [python, "-m", "venv", str(self.venv)],
            os.environ,
            self.layout.root,
            "creating the CRM virtualenv",
            log,
        )
        run_checked(
            [
                str(self.venv / "bin" / "pip"),
                "install",
                "--disable-pip-version-check",
                "-q",
                *CRM_REQUIREMENTS,
            ],
            os.environ,
            self.layout.root,
            f"installing {CRM_PACKAGE}",
            log,
        )
        self._install_stamp.write_text(wanted)
        return True

    # -- databases -----------------------------------------------------------------------

    @property
    def _sqlite_path(self) -> Path:
        return self.layout.data_dir / "crm.sqlite3"

    @property
    def _sqlite_template(self) -> Path:
        return self.layout.cache_dir / f"crm-{_stamp()}.sqlite3"

    @property
    def _pg_template(self) -> str:
        return f"coulisse_tpl_crm_{_stamp()}"

    def _secret_key(self) -> str:
        key = read_env_file(self.layout.env_file).get("COULISSE_CRM_SECRET_KEY")
        if not key:
            key = secrets.token_urlsafe(48)
            update_env_file(self.layout.env_file, {"COULISSE_CRM_SECRET_KEY": key})
        return key

    def _django_env(self, database: str, secret_key: str | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(SCRIPTS_DIR),
            "DJANGO_SETTINGS_MODULE": "coulisse_crm_settings",
            "SECRET_KEY": secret_key or self._secret_key(),
            "COULISSE_CRM_LOG_DIR": str(self.layout.log_dir),
            "COULISSE_CRM_MAIL_DIR": str(self.mail_dir),
        }
        if self.settings.uses_postgres:
            host, port, user, password = self.settings.pg_parts()
            env.update(
                COULISSE_CRM_DB_ENGINE="postgresql",
                COULISSE_CRM_DB_NAME=database,
                DBHOST=host,
                DBPORT=str(port),
                DBUSER=user,
                DBPASSWORD=password,
            )
        else:
            env.update(COULISSE_CRM_DB_ENGINE="sqlite", COULISSE_CRM_DB_NAME=database)
        return env

    @property
    def mail_dir(self) -> Path:
        """Where the CRM writes the emails it would have sent (one file per message)."""
        return self.layout.data_dir / "crm-mail"

    def ensure_prepared(self) -> bool:
        """Build the migrated database once (about 2 minutes); True when it was built now."""
        self.layout.ensure_dirs()
        with prepare_lock(self.layout, self.settings, "crm"):
            if self.settings.uses_postgres:
                if postgres.database_exists(self.settings, self._pg_template):
                    return False
                building = f"{self._pg_template}_build"
                postgres.drop_database(self.settings, building)
                postgres.create_database(self.settings, building)
                self._migrate(building)
                conn = postgres.connect_admin(self.settings)
                try:
                    with conn.cursor() as cur:
                        cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{self._pg_template}"')
                finally:
                    conn.close()
                return True
            if self._sqlite_template.exists():
                return False
            building_file = self._sqlite_template.with_suffix(".build")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{building_file}{suffix}").unlink(missing_ok=True)
            self._migrate(str(building_file))
            building_file.replace(self._sqlite_template)
            return True

    def _migrate(self, database: str) -> None:
        run_checked(
            [str(self.venv / "bin" / "django-admin"), "migrate", "--no-input"],
            self._django_env(database, secret_key=secrets.token_urlsafe(48)),
            self.layout.log_dir,
            "BottleCRM migrations",
            self.layout.log_dir / "crm-migrate.log",
        )

    def database_exists(self) -> bool:
        if self.settings.uses_postgres:
            return postgres.database_exists(self.settings, self.settings.crm_database)
        return self._sqlite_path.exists()

    def ensure_database(self) -> bool:
        """Copy the prepared database for this instance when it has none; True when copied."""
        if self.database_exists():
            return False
        if self.settings.uses_postgres:
            postgres.create_database(
                self.settings, self.settings.crm_database, template=self._pg_template
            )
        else:
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._sqlite_template, self._sqlite_path)
        return True

    def drop_database(self) -> None:
        if self.settings.uses_postgres:
            postgres.drop_database(self.settings, self.settings.crm_database)
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self._sqlite_path}{suffix}").unlink(missing_ok=True)

    def _database_name(self) -> str:
        return self.settings.crm_database if self.settings.uses_postgres else str(self._sqlite_path)

    # -- bootstrap -----------------------------------------------------------------------

    def bootstrap(self) -> dict[str, Any]:
        """Organisation, integration profile, advisors, pipeline and token; idempotent.

        The raw token goes to the env file only; what is returned carries no secret.
        """
        known = read_env_file(self.layout.env_file).get("BOTTLECRM_API_TOKEN")
        spec = {
            "org_name": ORG_NAME,
            "integration_email": INTEGRATION_EMAIL,
            "advisors": list(ADVISORS),
            "scopes": list(TOKEN_SCOPES),
            "token": known,
        }
        env = self._django_env(self._database_name())
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), str(SCRIPTS_DIR / "crm_bootstrap.py")],
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            env=env,
            cwd=self.layout.log_dir,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                "preparing the CRM organisation and integration token failed:\n"
                + "\n".join(result.stderr.strip().splitlines()[-20:])
            )
        info: dict[str, Any] = json.loads(result.stdout)
        token = info.pop("token")
        if token:
            update_env_file(self.layout.env_file, {"BOTTLECRM_API_TOKEN": token})
        update_env_file(self.layout.env_file, {"BOTTLECRM_API_URL": self.settings.crm_url})
        return info

    def prepare_custom_fields(self) -> CustomFieldReport:
        return ensure_custom_fields(self.client())

    def client(self) -> BottleCrmClient:
        token = read_env_file(self.layout.env_file).get("BOTTLECRM_API_TOKEN", "")
        return BottleCrmClient(self.settings.crm_url, token, max_attempts=3)

    # -- process -------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self) -> bool:
        """Serve BottleCRM with gunicorn; False when it was already running."""
        if self.process.is_running():
            return False
        port = self.settings.crm_port
        if port_in_use(port):
            raise StackError(
                f"port {port} is already in use by another program, so BottleCRM cannot listen "
                f"there. Stop that program, or choose another port: COULISSE_CRM_PORT=<port>."
            )
        workers = "2" if self.settings.uses_postgres else "1"
        self.process.start(
            [
                str(self.venv / "bin" / "gunicorn"),
                "crm.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                workers,
                "--threads",
                "4",
                "--timeout",
                "120",
                "--access-logfile",
                "-",
            ],
            self._django_env(self._database_name()),
            self.layout.log_dir,
        )
        self.process.wait_until_ready(
            lambda: http_answers(f"{self.settings.crm_url}/api/accounts/"),
            timeout=90,
            what=f"BottleCRM on {self.settings.crm_url}",
        )
        return True

    def stop(self) -> bool:
        return self.process.stop()

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Running, URL, whether the token works (a real call), record counts."""
        report: dict[str, Any] = {
            "system": "BottleCRM",
            "running": self.is_running(),
            "url": self.settings.crm_url,
            "api": f"{self.settings.crm_url}/api/",
            "database": "postgresql" if self.settings.uses_postgres else "sqlite",
            "credentials_ok": False,
            "counts": {},
        }
        if not report["running"]:
            report["error"] = "not running: `coulisse stack up` starts it"
            return report
        client = self.client()
        try:
            report["counts"] = crm_counts(client)
            report["credentials_ok"] = True
        except CrmApiError as exc:
            report["error"] = str(exc)
        except CrmUnavailableError as exc:
            report["error"] = str(exc)
        return report


def crm_counts(client: BottleCrmClient) -> dict[str, int]:
    """How many accounts, contacts, deals, invoices and products the organisation holds."""
    accounts = client.get("accounts/", limit=1)
    return {
        "accounts": int(accounts["active_accounts"]["open_accounts_count"])
        + int(accounts["closed_accounts"]["close_accounts_count"]),
        "contacts": _count(client.get("contacts/", limit=1)),
        "deals": _count(client.get("opportunities/", limit=1)),
        "invoices": _count(client.get("invoices/", limit=1)),
        "products": _count(client.get("invoices/products/", limit=1)),
    }


def _count(payload: Any) -> int:
    if isinstance(payload, dict):
        for key in ("count", "contacts_count", "opportunities_count", "total"):
            if key in payload:
                return int(payload[key])
    raise CrmUnavailableError(f"unexpected list answer from BottleCRM: {str(payload)[:200]}")
