"""The local Prefect server and the served ``sync`` deployment: two processes of the stack.

``prefect server start`` keeps its own SQLite database under ``PREFECT_HOME`` (the stack's
``prefect/`` folder) and listens on 127.0.0.1 only; a second process serves the ``sync``
deployment (``flow.serve``) on an interval. Both are started and stopped by PID like the CRM
and the ERP (:class:`coulisse.stack.process.ManagedProcess`), their logs in the stack's
``logs/`` folder. Between the two, the server's alerts are made to match the settings
(:mod:`coulisse.orchestration.alerts`): a notification block and two automations, or none.

The served process keeps Prefect and Coulisse imported between runs, but Prefect 3.9's runner
starts each flow run in a fresh interpreter (``multiprocessing`` spawn), which imports them
again: about 1.5 s of an idle cycle on this machine, see the README.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import TYPE_CHECKING, Any

import requests

from coulisse.stack.errors import StackError
from coulisse.stack.layout import PROJECT_ROOT
from coulisse.stack.process import ManagedProcess, http_answers, port_in_use

if TYPE_CHECKING:
    from collections.abc import Mapping

    from coulisse.orchestration.settings import FlowSettings
    from coulisse.stack.layout import StackLayout

#: The served deployment: ``sync/coulisse`` in Prefect's names.
DEPLOYMENT = "coulisse"
FLOW = "sync"


class PrefectStack:
    """The stack's Prefect server and its served ``sync`` deployment."""

    def __init__(
        self, layout: StackLayout, settings: FlowSettings, env: Mapping[str, str] | None = None
    ) -> None:
        self.layout = layout
        self.settings = settings
        base = dict(os.environ if env is None else env)
        self.env = {**base, **settings.prefect_env(base)}
        self.server = ManagedProcess(
            name="prefect-server",
            pid_file=layout.run_dir / "prefect-server.pid",
            log_file=layout.log_dir / "prefect-server.log",
            marker="prefect server start",
        )
        self.worker = ManagedProcess(
            name="prefect-serve",
            pid_file=layout.run_dir / "prefect-serve.pid",
            log_file=layout.log_dir / "prefect-serve.log",
            marker="coulisse.orchestration.serve",
        )

    @property
    def deployment_url(self) -> str:
        return f"{self.settings.api_url}/deployments/name/{FLOW}/{DEPLOYMENT}"

    def server_answers(self) -> bool:
        return http_answers(f"{self.settings.api_url}/health")

    def deployment_ready(self, polled_since: dt.datetime | None = None) -> bool:
        """Whether a served process polls for the deployment's runs (since ``polled_since``).

        The server keeps a deployment after its process stopped (paused, with its last poll),
        so being known is not enough.
        """
        try:
            response = requests.get(self.deployment_url, timeout=2)
        except requests.RequestException:
            return False
        if response.status_code != 200:
            return False
        deployment = response.json()
        polled = deployment.get("last_polled")
        return (
            deployment.get("status") == "READY"
            and not deployment.get("paused")
            and polled is not None
            and (polled_since is None or dt.datetime.fromisoformat(polled) >= polled_since)
        )

    def deployment_served(self) -> bool:
        return self.worker.is_running() and self.deployment_ready()

    def start_server(self, timeout: float = 90.0) -> bool:
        """Start ``prefect server start`` unless it runs; False when it already did."""
        if self.server.is_running():
            return False
        if port_in_use(self.settings.port):
            raise StackError(
                f"port {self.settings.port} is already taken, so the Prefect server cannot "
                "listen there: stop that program, or set COULISSE_PREFECT_PORT to a free port."
            )
        self.settings.prefect_home.mkdir(parents=True, exist_ok=True)
        prefect = PROJECT_ROOT / ".venv" / "bin" / "prefect"
        self.server.start(
            [
                str(prefect),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.settings.port),
            ],
            self.env,
            PROJECT_ROOT,
        )
        self.server.wait_until_ready(self.server_answers, timeout, "The Prefect server")
        return True

    def start_worker(self, timeout: float = 90.0) -> bool:
        """Serve the ``sync`` deployment in the background; False when it already ran."""
        if self.worker.is_running():
            return False
        started = dt.datetime.now(dt.UTC)
        self.worker.start(
            [sys.executable, "-m", "coulisse.orchestration.serve"], self.env, PROJECT_ROOT
        )
        self.worker.wait_until_ready(
            lambda: self.deployment_ready(started), timeout, "The served sync deployment"
        )
        return True

    def configure_alerts(self) -> list[str]:
        """Create, update or remove the server's alerts as the settings say; their names."""
        from coulisse.orchestration.alerts import configure_alerts

        try:
            return configure_alerts(self.settings.alerts, self.settings.api_url)
        except Exception as exc:
            raise StackError(
                f"could not set up the alerts on the Prefect server ({type(exc).__name__}: "
                f"{exc}); see {self.server.log_file}, fix, and run `coulisse flows up` again."
            ) from exc

    def up(self) -> dict[str, Any]:
        """Start the server, set its alerts, then the served deployment; harmless when they run."""
        self.layout.ensure_dirs()
        self.start_server()
        self.configure_alerts()
        self.start_worker()
        return self.status()

    def down(self) -> dict[str, bool]:
        """Stop the served deployment (its schedule pauses), then the server."""
        return {"prefect-serve": self.worker.stop(), "prefect-server": self.server.stop()}

    def status(self) -> dict[str, Any]:
        from coulisse.orchestration.alerts import alert_status

        running = self.server.is_running() and self.server_answers()
        return {
            "ui": self.settings.ui_url,
            "api": self.settings.api_url,
            "prefect_home": str(self.settings.prefect_home),
            "server_running": running,
            "deployment": f"{FLOW}/{DEPLOYMENT}",
            "deployment_served": self.deployment_served(),
            "interval_seconds": self.settings.interval,
            "alerts": alert_status(
                self.settings.alerts, self.settings.api_url, server_running=running
            ),
            "logs": [str(self.server.log_file), str(self.worker.log_file)],
        }
