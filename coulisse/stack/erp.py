"""The local Tryton ERP: its virtualenv, prepared database, server process and integration user."""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import shutil
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import psycopg2
import requests

from coulisse.stack import postgres
from coulisse.stack.envfile import read_env_file, update_env_file
from coulisse.stack.errors import StackError
from coulisse.stack.locks import file_lock, prepare_lock
from coulisse.stack.process import ManagedProcess, port_in_use, run_checked
from coulisse.stack.pythons import find_python311
from coulisse.tryton.rpc import TrytonClient, TrytonError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from coulisse.stack.layout import StackLayout
    from coulisse.stack.settings import StackSettings

ERP_SERIES = "8.2"
# Activated in the prepared database (their dependencies come along).
ERP_MODULES = (
    "party",
    "company",
    "currency",
    "country",
    "product",
    "account",
    "account_invoice",
    "account_product",
    "sale",
    "stock",
    "account_invoice_stock",
    "party_siret",
    "account_fr",
)
ERP_REQUIREMENTS = (
    f"trytond=={ERP_SERIES}.*",
    *(f"trytond-{module.replace('_', '-')}=={ERP_SERIES}.*" for module in ERP_MODULES),
    f"proteus=={ERP_SERIES}.*",
    "phonenumbers>=8.13",  # Tryton then validates phones and rewrites them internationally
    # trytond 8.2 talks to PostgreSQL through psycopg 3 (its `postgresql` extra), not psycopg2.
    "psycopg[binary,pool]>=3.2,<4",
    # No email-validator: with it, Tryton checks every email's domain in the DNS, which fails
    # offline (and for the seed's .example domains); Coulisse validates emails itself.
)
SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
PREPARE_SCRIPTS = ("erp_common.py", "erp_prepare.py")
# Tryton's user-facing messages (refusals quarantined by Coulisse) in the clerks' language.
ERP_LANGUAGE = "fr"
ADMIN_EMAIL = "admin@coulisse.example"
INTEGRATION_LOGIN = "coulisse"
INVOICE_STATES = ("draft", "validated", "posted", "paid", "cancelled")


def _today() -> datetime.date:
    """Today for the company (Europe/Paris), which is what Tryton's own dates follow."""
    return datetime.datetime.now(tz=ZoneInfo("Europe/Paris")).date()


def prepared_stamp() -> str:
    """Changes whenever the module list, the pins or the set-up scripts change."""
    digest = hashlib.sha256()
    digest.update("\n".join((*ERP_MODULES, *ERP_REQUIREMENTS, ERP_LANGUAGE)).encode())
    for name in PREPARE_SCRIPTS:
        digest.update((SCRIPTS_DIR / name).read_bytes())
    return digest.hexdigest()[:12]


class ErpStack:
    """Tryton on 127.0.0.1: install once, prepare once, copy per instance, serve, report.

    The prepared database (company, French chart, taxes, catalogue, integration user) is built
    once per recipe stamp and shared by every stack instance; each instance copies it, then gets
    its own secrets and the fiscal years today's date needs.
    """

    def __init__(self, layout: StackLayout, settings: StackSettings) -> None:
        self.layout = layout
        self.settings = settings
        self.venv = layout.venvs_dir / "erp"
        self.config_file = layout.home / "trytond.conf"
        self.process = ManagedProcess(
            name="erp",
            pid_file=layout.run_dir / "erp.pid",
            log_file=layout.log_dir / "erp.log",
            marker=str(self.config_file),
        )

    # -- install -------------------------------------------------------------------------

    @property
    def _install_stamp(self) -> Path:
        return self.venv / ".coulisse-installed"

    def ensure_installed(self) -> bool:
        """See ``_install``; several stacks share the virtualenv, so one builds it at a time
        (each would otherwise delete the other's half-built one)."""
        wanted = "\n".join(ERP_REQUIREMENTS)
        if self._install_stamp.exists() and self._install_stamp.read_text() == wanted:
            return False
        with file_lock(self.venv.with_name("erp-install.lock")):
            return self._install()

    def _install(self) -> bool:
        """Create Tryton's own Python 3.11 virtualenv; True when something was installed."""
        wanted = "\n".join(ERP_REQUIREMENTS)
        if self._install_stamp.exists() and self._install_stamp.read_text() == wanted:
            return False
        python = find_python311()
        self.layout.ensure_dirs()
        log = self.layout.log_dir / "erp-install.log"
        if self.venv.exists():
            shutil.rmtree(self.venv)
        run_checked(
            [python, "-m", "venv", str(self.venv)],
            os.environ,
            self.layout.root,
            "creating the ERP virtualenv",
            log,
        )
        run_checked(
            [
                str(self.venv / "bin" / "pip"),
                "install",
                "--disable-pip-version-check",
                "-q",
                *ERP_REQUIREMENTS,
            ],
            os.environ,
            self.layout.root,
            f"installing Tryton {ERP_SERIES} and its modules",
            log,
        )
        self._install_stamp.write_text(wanted)
        return True

    def _bin(self, name: str) -> str:
        path = self.venv / "bin" / name
        if not path.exists():
            raise StackError(f"{path} is missing: run `coulisse stack up` to install the ERP.")
        return str(path)

    # -- configuration -------------------------------------------------------------------

    def _database_uri(self) -> str:
        if not self.settings.uses_postgres:
            return "sqlite://"
        host, port, user, password = self.settings.pg_parts()
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@{host}:{port}/"

    def _write_config(self, path: Path, sqlite_dir: Path) -> None:
        """A trytond.conf for our database server; private, as it may hold a password."""
        text = "\n".join(
            [
                "# Written by `coulisse stack`: regenerated on every start, do not edit.",
                "[database]",
                f"uri = {self._database_uri()}",
                f"path = {sqlite_dir}",
                f"language = {ERP_LANGUAGE}",
                "list = False",
                "",
                "[web]",
                f"listen = 127.0.0.1:{self.settings.erp_port}",
                "",
            ]
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.replace(path)

    def _script_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TZ": "Europe/Paris",
        }
        env.update(extra or {})
        return env

    # -- prepared database ---------------------------------------------------------------

    @property
    def _sqlite_template(self) -> Path:
        return self.layout.cache_dir / f"erp-{prepared_stamp()}.sqlite"

    @property
    def _pg_template(self) -> str:
        return f"coulisse_tpl_erp_{prepared_stamp()}"

    def prepared_exists(self) -> bool:
        if self.settings.uses_postgres:
            return postgres.database_exists(self.settings, self._pg_template)
        return self._sqlite_template.exists()

    def ensure_prepared(self) -> bool:
        """Build the prepared database once (about a minute); True when it was built now."""
        self.layout.ensure_dirs()
        with prepare_lock(self.layout, self.settings, "erp"):
            if self.prepared_exists():
                return False
            if self.settings.uses_postgres:
                building = f"{self._pg_template}_build"
                postgres.drop_database(self.settings, building)
                postgres.create_database(self.settings, building)
                try:
                    self._build(building, self.layout.cache_dir)
                except BaseException:
                    postgres.drop_database(self.settings, building)
                    raise
                conn = postgres.connect_admin(self.settings)
                try:
                    with conn.cursor() as cur:
                        cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{self._pg_template}"')
                        cur.execute(
                            "SELECT datname FROM pg_database WHERE datname LIKE %s",
                            ("coulisse\\_tpl\\_erp\\_%",),
                        )
                        stale = [row[0] for row in cur.fetchall() if row[0] != self._pg_template]
                finally:
                    conn.close()
                for name in stale:  # templates of older recipes: nothing copies them any more
                    postgres.drop_database(self.settings, name)
                return True
            build_dir = self.layout.cache_dir / f"erp-{prepared_stamp()}.build"
            shutil.rmtree(build_dir, ignore_errors=True)
            build_dir.mkdir(parents=True)
            name = "prepared"
            (build_dir / f"{name}.sqlite").touch()
            try:
                self._build(name, build_dir)
                (build_dir / f"{name}.sqlite").replace(self._sqlite_template)
            finally:
                shutil.rmtree(build_dir, ignore_errors=True)
            for old_file in self.layout.cache_dir.glob("erp-*.sqlite"):
                if old_file != self._sqlite_template:  # an older recipe's: nothing copies it
                    old_file.unlink(missing_ok=True)
            return True

    def _build(self, database: str, workdir: Path) -> None:
        """Activate the modules (trytond-admin), then run the set-up script on ``database``."""
        config = workdir / f"trytond-prepare-{prepared_stamp()}.conf"
        passfile = workdir / f"admin-pass-{prepared_stamp()}"
        self._write_config(config, workdir)
        # Throwaway secrets: each instance sets its own when it copies the database.
        throwaway = {
            "COULISSE_ERP_ADMIN_PASSWORD": secrets.token_urlsafe(24),
            "COULISSE_ERP_USER_PASSWORD": secrets.token_urlsafe(24),
            "COULISSE_ERP_APPLICATION_KEY": secrets.token_hex(32),
        }
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(throwaway["COULISSE_ERP_ADMIN_PASSWORD"] + "\n")
        log = self.layout.log_dir / "erp-prepare.log"
        try:
            run_checked(
                [
                    self._bin("trytond-admin"),
                    "-c",
                    str(config),
                    "-d",
                    database,
                    "-u",
                    *ERP_MODULES,
                    "--activate-dependencies",
                    "-l",
                    ERP_LANGUAGE,
                    "--email",
                    ADMIN_EMAIL,
                ],
                self._script_env({"TRYTONPASSFILE": str(passfile)}),
                workdir,
                "activating the Tryton modules (trytond-admin)",
                log,
            )
            run_checked(
                [self._bin("python"), str(SCRIPTS_DIR / "erp_prepare.py"), str(config), database],
                self._script_env(throwaway),
                workdir,
                "setting up the ERP company, chart of accounts and catalogue",
                log,
            )
        finally:
            config.unlink(missing_ok=True)
            passfile.unlink(missing_ok=True)

    # -- instance database ---------------------------------------------------------------

    @property
    def _sqlite_path(self) -> Path:
        return self.layout.data_dir / f"{self.settings.erp_database}.sqlite"

    @property
    def _credentials_marker(self) -> Path:
        """What secrets were last written into the instance database (as a digest)."""
        return self.layout.data_dir / f"{self.settings.erp_database}.credentials"

    def database_exists(self) -> bool:
        if self.settings.uses_postgres:
            return postgres.database_exists(self.settings, self.settings.erp_database)
        return self._sqlite_path.exists()

    def ensure_database(self, today: datetime.date | None = None) -> bool:
        """Copy the prepared database when missing, then bring it up to date; True when copied.

        Every time: the instance's secrets are written into it when they changed, and fiscal
        years are added when today needs one the database lacks (the cache is never frozen in
        the year it was built). ``today`` overrides the date, for tests of a year change.
        """
        self.ensure_prepared()
        copied = False
        if not self.database_exists():
            self._credentials_marker.unlink(missing_ok=True)
            if self.settings.uses_postgres:
                postgres.create_database(
                    self.settings, self.settings.erp_database, template=self._pg_template
                )
            else:
                self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._sqlite_path.with_suffix(".copying")
                shutil.copyfile(self._sqlite_template, tmp)
                tmp.replace(self._sqlite_path)
            copied = True
        values = self._secrets()
        today = today or _today()
        flags = []
        if self._missing_fiscal_years(today):
            flags.append("--fiscal-years")
        if self._credentials_digest(values) != self._applied_digest():
            flags.append("--credentials")
        if flags:
            self._run_instance_script(flags, values, today)
        return copied

    def drop_database(self) -> None:
        self._credentials_marker.unlink(missing_ok=True)
        if self.settings.uses_postgres:
            postgres.drop_database(self.settings, self.settings.erp_database)
        else:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self._sqlite_path}{suffix}").unlink(missing_ok=True)

    def reset(self) -> None:
        """Stop the server, drop the instance database and copy the prepared one again.

        The server is left stopped: ``start`` serves the fresh copy.
        """
        self.stop()
        self.drop_database()
        self.ensure_database()

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Run one read-only query on the instance database (no Tryton start-up needed)."""
        if self.settings.uses_postgres:
            host, port, user, password = self.settings.pg_parts()
            conn = psycopg2.connect(
                host=host,
                port=port,
                user=user,
                password=password,
                dbname=self.settings.erp_database,
                connect_timeout=5,
            )
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    return list(cur.fetchall())
            finally:
                conn.close()
        sqlite = sqlite3.connect(f"file:{self._sqlite_path}?mode=ro", uri=True)
        try:
            return list(sqlite.execute(sql.replace("%s", "?"), params).fetchall())
        finally:
            sqlite.close()

    def _missing_fiscal_years(self, today: datetime.date) -> list[int]:
        """Years among the previous and current one that no fiscal year covers entirely."""
        missing = []
        for year in (today.year - 1, today.year):
            rows = self._query(
                "SELECT COUNT(*) FROM account_fiscalyear WHERE start_date <= %s AND end_date >= %s",
                (
                    datetime.date(year, 1, 1).isoformat(),
                    datetime.date(year, 12, 31).isoformat(),
                ),
            )
            if not rows or not rows[0][0]:
                missing.append(year)
        return missing

    def _run_instance_script(
        self, flags: list[str], values: Mapping[str, str], today: datetime.date | None = None
    ) -> None:
        workdir = self.layout.home
        config = workdir / "trytond-instance.conf"
        self._write_config(config, self.layout.data_dir)
        try:
            run_checked(
                [
                    self._bin("python"),
                    str(SCRIPTS_DIR / "erp_instance.py"),
                    str(config),
                    self.settings.erp_database,
                    *flags,
                ],
                self._script_env(
                    {
                        "COULISSE_ERP_ADMIN_PASSWORD": values["TRYTON_ADMIN_PASSWORD"],
                        "COULISSE_ERP_USER_PASSWORD": values["TRYTON_PASSWORD"],
                        "COULISSE_ERP_APPLICATION_KEY": values["TRYTON_APPLICATION_KEY"],
                        "COULISSE_ERP_TODAY": (today or _today()).isoformat(),
                    }
                ),
                workdir,
                "updating the ERP database (" + ", ".join(f.strip("-") for f in flags) + ")",
                self.layout.log_dir / "erp-instance.log",
            )
        finally:
            config.unlink(missing_ok=True)
        if "--credentials" in flags:
            self._credentials_marker.write_text(self._credentials_digest(values))

    # -- credentials ---------------------------------------------------------------------

    def _secrets(self) -> dict[str, str]:
        """The env-file entries, secrets generated once and reused from then on."""
        env = read_env_file(self.layout.env_file)
        values = {
            "TRYTON_URL": self.settings.erp_url,
            "TRYTON_DATABASE": self.settings.erp_database,
            "TRYTON_USERNAME": INTEGRATION_LOGIN,
            "TRYTON_PASSWORD": env.get("TRYTON_PASSWORD") or secrets.token_urlsafe(24),
            "TRYTON_APPLICATION_KEY": env.get("TRYTON_APPLICATION_KEY") or secrets.token_hex(32),
            "TRYTON_ADMIN_PASSWORD": env.get("TRYTON_ADMIN_PASSWORD") or secrets.token_urlsafe(24),
        }
        changed = {key: value for key, value in values.items() if env.get(key) != value}
        if changed:
            update_env_file(self.layout.env_file, changed)
        return values

    def _credentials_digest(self, values: Mapping[str, str]) -> str:
        text = "\n".join(
            [
                self.settings.erp_database,
                values["TRYTON_PASSWORD"],
                values["TRYTON_APPLICATION_KEY"],
                values["TRYTON_ADMIN_PASSWORD"],
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _applied_digest(self) -> str | None:
        try:
            return self._credentials_marker.read_text().strip()
        except FileNotFoundError:
            return None

    def credentials(self) -> dict[str, str]:
        """TRYTON_URL, TRYTON_DATABASE, TRYTON_USERNAME, TRYTON_PASSWORD, TRYTON_APPLICATION_KEY.

        Generated once and kept in the env file (with TRYTON_ADMIN_PASSWORD); written into the
        instance database whenever they differ from what it holds.
        """
        values = self._secrets()
        if self.database_exists() and self._credentials_digest(values) != self._applied_digest():
            self._run_instance_script(["--credentials"], values)
        return {key: value for key, value in values.items() if key != "TRYTON_ADMIN_PASSWORD"}

    def client(self, timeout: float = 30.0) -> TrytonClient:
        """A JSON-RPC client logged in (lazily) as the integration user."""
        values = self.credentials()
        return TrytonClient(
            values["TRYTON_URL"],
            values["TRYTON_DATABASE"],
            values["TRYTON_USERNAME"],
            values["TRYTON_PASSWORD"],
            timeout,
        )

    def admin_client(self, timeout: float = 60.0) -> TrytonClient:
        """A JSON-RPC client as Tryton's admin, for seeding only."""
        values = self._secrets()
        return TrytonClient(
            values["TRYTON_URL"],
            values["TRYTON_DATABASE"],
            "admin",
            values["TRYTON_ADMIN_PASSWORD"],
            timeout,
        )

    # -- server --------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.process.is_running()

    def _answers(self) -> bool:
        try:
            response = requests.post(
                f"{self.settings.erp_url}/rpc/",
                json={"id": 0, "method": "common.server.version", "params": []},
                timeout=2,
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    def start(self, timeout: float = 120.0) -> None:
        """Serve the instance database on 127.0.0.1:COULISSE_ERP_PORT until ``stop``."""
        if self.is_running():
            return
        port = self.settings.erp_port
        if port_in_use(port):
            raise StackError(
                f"port {port} is already taken by another program, so Tryton cannot listen "
                f"there: stop that program, or set COULISSE_ERP_PORT to a free port (e.g. "
                f"{port + 1}) in the environment or .env."
            )
        if not self.database_exists():
            raise StackError(
                f"the ERP database {self.settings.erp_database!r} does not exist: run "
                "`coulisse stack up` (it copies the prepared one)."
            )
        self._write_config(self.config_file, self.layout.data_dir)
        self.layout.ensure_dirs()
        # `-d` loads the database's modules before listening: without it, trytond 8.2 serves
        # the first request from an empty pool and every login fails with KeyError 'res.user'.
        # `-vv` logs every RPC call with its model, method, duration and abbreviated arguments:
        # what ops read when a sync misbehaves, and what bench/clients.py counts.
        self.process.start(
            [
                self._bin("trytond"),
                "-vv",
                "-c",
                str(self.config_file),
                "-d",
                self.settings.erp_database,
            ],
            self._script_env(),
            self.layout.home,
        )
        self.process.wait_until_ready(self._answers, timeout, "Tryton (the ERP)")

    def stop(self) -> bool:
        """Stop the server this stack started; False when it was not running."""
        stopped = self.process.stop()
        if stopped:
            # The process looks gone (its command line is cleared) a moment before the kernel
            # closes its listening socket: wait for the port, so a restart finds it free.
            deadline = time.monotonic() + 10
            while port_in_use(self.settings.erp_port) and time.monotonic() < deadline:
                time.sleep(0.1)
        return stopped

    # -- status --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Running or not, and what the integration user sees (a real authenticated call)."""
        report: dict[str, Any] = {
            "system": "Tryton",
            "running": self.is_running(),
            "url": self.settings.erp_url,
            "rpc": f"{self.settings.erp_url}/{self.settings.erp_database}/rpc/",
            "database": self.settings.erp_database,
            "credentials_ok": False,
            "counts": {},
        }
        if not report["running"]:
            report["error"] = "Tryton is not running: start it with `coulisse stack up`."
            return report
        values = self._secrets()
        client = TrytonClient(
            values["TRYTON_URL"],
            values["TRYTON_DATABASE"],
            values["TRYTON_USERNAME"],
            values["TRYTON_PASSWORD"],
            timeout=10,
            max_retries=1,
        )
        try:
            client.login()
            report["credentials_ok"] = True
            counts: dict[str, int] = {
                "parties": client.search_count("party.party", []),
                "products": client.search_count("product.product", []),
                "sales": client.search_count("sale.sale", []),
            }
            for state in INVOICE_STATES:
                counts[f"invoices_{state}"] = client.search_count(
                    "account.invoice", [("type", "=", "out"), ("state", "=", state)]
                )
            report["counts"] = counts
        except TrytonError as exc:
            report["error"] = str(exc)
        finally:
            client.close()
        return report
