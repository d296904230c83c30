"""Settings of the Prefect orchestration, from the environment or the git-ignored ``.env``.

| setting | default | what |
|---|---|---|
| ``COULISSE_SYNC_INTERVAL`` | 15 | seconds between two scheduled ``sync`` flow runs |
| ``COULISSE_CRM_SCAN_MINUTES`` | 10 | minutes between two full reads of the CRM |
| ``COULISSE_LOCK_WAIT`` | 30 | seconds a flow run waits for another sync before it skips |
| ``COULISSE_STEP_RETRIES`` | 2 | retries of a failed step (a `meltano run` or the plan) |
| ``COULISSE_STEP_RETRY_DELAY`` | 10 | seconds before a step is retried |
| ``COULISSE_PREFECT_PORT`` | 4200 | where the local Prefect server (API and UI) listens |
| ``PREFECT_HOME`` | ``<stack home>/prefect`` | the local server's SQLite database and settings |

The interval is 15 s because the freshness aim (an ERP change in the CRM within 30 s, p95)
is one wait for the next run plus a run (about 10 s with its `meltano run`s); an idle run only
costs the change check, a few Tryton calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from coulisse.project import ConfigError
from coulisse.stack.layout import StackLayout

if TYPE_CHECKING:
    from collections.abc import Mapping


def _number(env: Mapping[str, str], key: str, default: float, *, minimum: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{key}={raw!r} is not valid: use a number of at least {minimum:g}.")
    return value


@dataclass(frozen=True)
class FlowSettings:
    """What the ``sync`` flow and its local Prefect server need to know."""

    interval: float
    crm_scan_minutes: float
    lock_wait: float
    retries: int
    retry_delay: float
    port: int
    prefect_home: Path

    @classmethod
    def load(cls, env: Mapping[str, str]) -> FlowSettings:
        """Read the settings (see the module docstring), refusing values that cannot work."""
        port = int(_number(env, "COULISSE_PREFECT_PORT", 4200, minimum=1024))
        if port > 65535:
            raise ConfigError(f"COULISSE_PREFECT_PORT={port} is not a port: use 1024 to 65535.")
        home = env.get("PREFECT_HOME", "").strip()
        return cls(
            interval=_number(env, "COULISSE_SYNC_INTERVAL", 15, minimum=1),
            crm_scan_minutes=_number(env, "COULISSE_CRM_SCAN_MINUTES", 10, minimum=0),
            lock_wait=_number(env, "COULISSE_LOCK_WAIT", 30, minimum=0),
            retries=int(_number(env, "COULISSE_STEP_RETRIES", 2, minimum=0)),
            retry_delay=_number(env, "COULISSE_STEP_RETRY_DELAY", 10, minimum=0),
            port=port,
            prefect_home=Path(home) if home else StackLayout.from_env(dict(env)).home / "prefect",
        )

    @property
    def api_url(self) -> str:
        """The local Prefect server's API."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """Where a person watches the runs."""
        return f"http://127.0.0.1:{self.port}"

    def prefect_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Prefect's settings for the local server and its clients: no network, no telemetry.

        Where the server is and where it keeps its database are fixed; the rest are defaults a
        ``PREFECT_...`` variable in ``env`` overrides.
        """
        defaults = {
            # Anonymous usage reports to prefect.io at server start; there is no network here.
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
            # CPU and memory samples of each flow run process: not needed to watch a sync.
            "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
            # A run every few seconds: keep a week of runs and events, not Prefect's 90 days.
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
            "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(7 * 24 * 3600),
            "PREFECT_SERVER_EVENTS_RETENTION_PERIOD": "P7D",
        }
        given = {k: v for k, v in (env or {}).items() if k in defaults}
        return {
            **defaults,
            **given,
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.ui_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": (
                f"sqlite+aiosqlite:///{self.prefect_home / 'prefect.db'}"
            ),
        }
