"""The freshness benchmark's own running product: CRM, ERP, Prefect server, served flow, receiver.

It runs everything the way the product runs it, on ports of its own: `coulisse stack up` and
`stack seed` (through :class:`coulisse.stack.local.LocalStack`), `coulisse flows up` (the local
Prefect server and the served ``sync`` deployment, :class:`coulisse.orchestration.server.
PrefectStack`, on the default ``COULISSE_SYNC_INTERVAL``), and `coulisse serve` (the webhook
receiver the stack registered in the CRM, at the CRM's port + 5). Everything it started is
stopped by PID on the way out, Ctrl-C included.

:func:`configure` must run before anything reads the environment: every Coulisse setting is
taken from it or from the bench stack's own env file, never from the project's ``.env``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.ledger import Ledger
    from coulisse.orchestration.server import PrefectStack
    from coulisse.orchestration.settings import FlowSettings
    from coulisse.stack.local import LocalStack
    from coulisse.stack.process import ManagedProcess
    from coulisse.tryton.rpc import TrytonClient

ROOT = Path(__file__).resolve().parent.parent

#: Settings of another stack (the demo's .env, a developer's shell) that would point the bench
#: at someone else's systems, or off the product's defaults it measures.
FOREIGN_SETTINGS = (
    "BOTTLECRM_API_URL",
    "BOTTLECRM_API_TOKEN",
    "TRYTON_URL",
    "TRYTON_DATABASE",
    "TRYTON_USERNAME",
    "TRYTON_PASSWORD",
    "TRYTON_APPLICATION_KEY",
    "TRYTON_ADMIN_PASSWORD",
    "COULISSE_LEDGER_URL",
    "MELTANO_DATABASE_URI",
    "MELTANO_SYS_DIR_ROOT",
    "COULISSE_WEBHOOK_SECRET",
    "COULISSE_WEBHOOK_PORT",
    "COULISSE_WEBHOOK_HOST",
    "COULISSE_SYNC_INTERVAL",
    "COULISSE_CRM_SCAN_MINUTES",
    "COULISSE_LOCK_WAIT",
    "COULISSE_STEP_RETRIES",
    "COULISSE_STEP_RETRY_DELAY",
    "PREFECT_HOME",
    "PREFECT_API_URL",
)


@dataclass(frozen=True)
class BenchPlace:
    """Where the bench's stack lives: its name (database prefix), folder and ports."""

    name: str
    crm_port: int
    erp_port: int
    prefect_port: int

    @property
    def home(self) -> Path:
        return ROOT / ".stack" / self.name

    @property
    def receiver_port(self) -> int:
        """`coulisse serve`'s default port, which `stack up` registers in the CRM."""
        return self.crm_port + 5


def configure(place: BenchPlace, database_url: str) -> None:
    """Point this process (and every child it starts) at the bench's own stack."""
    for key in FOREIGN_SETTINGS:
        os.environ.pop(key, None)
    os.environ.update(
        {
            "COULISSE_STACK_HOME": str(place.home),
            "COULISSE_ENV_FILE": str(place.home / ".env"),
            "COULISSE_STACK_NAME": place.name,
            "COULISSE_CRM_PORT": str(place.crm_port),
            "COULISSE_ERP_PORT": str(place.erp_port),
            "COULISSE_PREFECT_PORT": str(place.prefect_port),
            "COULISSE_STACK_DATABASE_URL": database_url,
        }
    )


@dataclass
class BenchStack:
    """The systems and processes of one benchmark run; :meth:`stop` undoes what it started."""

    place: BenchPlace
    say: Callable[[str], None] = print
    stack: LocalStack = field(init=False)
    prefect: PrefectStack = field(init=False)
    flow_settings: FlowSettings = field(init=False)
    receiver: ManagedProcess = field(init=False)
    started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from coulisse.orchestration.server import PrefectStack
        from coulisse.orchestration.settings import FlowSettings
        from coulisse.project import project_env
        from coulisse.stack.layout import StackLayout
        from coulisse.stack.local import LocalStack
        from coulisse.stack.process import ManagedProcess
        from coulisse.stack.settings import StackSettings

        layout = StackLayout.from_env()
        self.stack = LocalStack(layout, StackSettings.load(layout), say=self.say)
        self.flow_settings = FlowSettings.load(project_env())
        self.prefect = PrefectStack(layout, self.flow_settings)
        self.receiver = ManagedProcess(
            name="coulisse-serve",
            pid_file=layout.run_dir / "coulisse-serve.pid",
            log_file=layout.log_dir / "coulisse-serve.log",
            marker="coulisse serve",
        )

    def systems_up(self, *, fresh: bool) -> None:
        """`coulisse stack up`, from the prepared databases when ``fresh``."""
        if fresh:
            self.stack.forget_databases()
        self.started.append("systems")
        self.stack.up()

    def seed(self, clients: int) -> str:
        """What `coulisse stack seed` writes (clients, deals, invoices in every state).

        The same data set as the command's, written with a generous ERP timeout: posting the
        seed's invoices takes Tryton more than its client's default 30 s on a busy machine.
        """
        from coulisse.stack.crm_seed import seed_crm
        from coulisse.stack.erp_seed import seed_erp
        from coulisse.stack.errors import StackError
        from coulisse.stack.seed_data import build_seed_data
        from coulisse.stack.seeding import erp_catalogue

        data = build_seed_data(
            erp_catalogue(self.stack), clients=clients, today=dt.datetime.now(dt.UTC).date()
        )
        seed_erp(self.stack.erp.client(timeout=600), self.stack.erp.admin_client(timeout=600), data)
        report = seed_crm(
            self.crm(),
            data,
            advisor_profile_ids=self.stack.advisor_profile_ids(),
            won_stage=self.stack.won_stage(),
        )
        if report.errors:
            raise StackError(f"the CRM refused seed records, first: {report.errors[0]}")
        return (
            f"{len(data.erp_clients)} ERP clients, {len(data.invoices)} ERP invoices, "
            f"{report.accounts_created} CRM accounts, {len(data.deals)} deals"
        )

    def orchestration_up(self, *, fresh: bool) -> None:
        """`coulisse flows up` (a new Prefect database when ``fresh``), then `coulisse serve`."""
        from coulisse.orchestration.settings import FlowSettings
        from coulisse.project import project_env
        from coulisse.stack.process import port_in_use

        # The env file now holds the webhook secret and the ledger's URL: read it again.
        self.flow_settings = FlowSettings.load(project_env())
        if fresh and not self.prefect.server.is_running():
            shutil.rmtree(self.flow_settings.prefect_home, ignore_errors=True)
        self.started.append("prefect")
        self.prefect.up()
        if not self.receiver.is_running():
            self.started.append("receiver")
            self.receiver.start(
                [str(ROOT / ".venv" / "bin" / "coulisse"), "serve"], dict(os.environ), ROOT
            )
            self.receiver.wait_until_ready(
                lambda: port_in_use(self.place.receiver_port), 60, "`coulisse serve`"
            )

    def stop(self, *, everything: bool = False) -> None:
        """Stop the receiver, the served flow, the Prefect server and both systems, by PID.

        Only what this run started, unless ``everything`` (what an earlier ``--keep`` left).
        """
        if everything or "receiver" in self.started:
            self.receiver.stop()
        if everything or "prefect" in self.started:
            self.prefect.down()
        if everything or "systems" in self.started:
            self.stack.down()
        self.started.clear()

    # -- clients of the running systems --------------------------------------------------

    def crm(self) -> BottleCrmClient:
        return self.stack.crm.client()

    def erp(self) -> TrytonClient:
        return self.stack.erp.client()

    def ledger(self) -> Ledger:
        from coulisse.ledger import Ledger
        from coulisse.project import ledger_url

        return Ledger.open(ledger_url())

    @property
    def prefect_api(self) -> str:
        return self.flow_settings.api_url

    @property
    def interval(self) -> float:
        return self.flow_settings.interval

    @property
    def logs(self) -> list[Path]:
        return [
            self.prefect.worker.log_file,
            self.receiver.log_file,
            self.stack.layout.log_dir / "sync.log",
        ]


def python_ok() -> None:
    """Refuse to run outside the project's virtualenv (the plugins and `coulisse` live there)."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        sys.exit(f"run with the project's Python: {venv / 'bin' / 'python'} bench/freshness.py")
