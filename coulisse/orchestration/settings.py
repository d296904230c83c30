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
| ``COULISSE_ALERT_WEBHOOK_URL`` | (none: alerts off) | where alerts are POSTed as JSON (a secret) |
| ``COULISSE_ALERT_QUARANTINE_GROWTH`` | 1 | records newly quarantined by one run that alert |

The interval is 15 s because the freshness aim (an ERP change in the CRM within 30 s, p95)
is one wait for the next run plus a run (about 10 s with its `meltano run`s); an idle run only
costs the change check, a few Tryton calls.

The two alert settings are declared in meltano.yml as settings of the ``coulisse`` utility
(``alert_webhook_url``, sensitive, and ``alert_quarantine_growth``), so `meltano config coulisse
set ...` works too: Meltano writes the URL to ``.env`` and the threshold to meltano.yml, where
:meth:`AlertSettings.load` reads it when the environment does not say.
"""

from __future__ import annotations

import string
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from coulisse.project import ConfigError
from coulisse.stack.layout import PROJECT_ROOT, StackLayout

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


#: The alert settings, as environment variables and as settings of meltano.yml's ``coulisse``.
ALERT_WEBHOOK_URL = "COULISSE_ALERT_WEBHOOK_URL"
ALERT_QUARANTINE_GROWTH = "COULISSE_ALERT_QUARANTINE_GROWTH"


def _meltano_setting(name: str, env: Mapping[str, str], meltano_yml: Path) -> str:
    """A value set in meltano.yml under ``plugins > utilities > coulisse > config`` ("" if none).

    ``$VAR`` and ``${VAR}`` are taken from ``env``, as Meltano expands them.
    """
    try:
        document: dict[str, Any] = yaml.safe_load(meltano_yml.read_text(encoding="utf-8")) or {}
    except OSError:
        return ""
    utilities = (document.get("plugins") or {}).get("utilities") or []
    coulisse = next((u for u in utilities if u.get("name") == "coulisse"), None)
    value = ((coulisse or {}).get("config") or {}).get(name)
    return "" if value is None else string.Template(str(value)).safe_substitute(env).strip()


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go, and how much quarantine growth in one run is worth one.

    ``webhook_url`` None means alerts are off: nothing is configured on the Prefect server.
    """

    webhook_url: str | None = None
    quarantine_growth: int = 1

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None

    @property
    def receiver(self) -> str:
        """The webhook's scheme and host only: its path often carries the secret (Slack's)."""
        if self.webhook_url is None:
            return "off"
        parts = urllib.parse.urlsplit(self.webhook_url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."

    @classmethod
    def load(
        cls, env: Mapping[str, str], meltano_yml: Path = PROJECT_ROOT / "meltano.yml"
    ) -> AlertSettings:
        """The environment (or ``.env``) first, then meltano.yml; bad values are refused."""
        url = env.get(ALERT_WEBHOOK_URL, "").strip() or _meltano_setting(
            "alert_webhook_url", env, meltano_yml
        )
        raw = env.get(ALERT_QUARANTINE_GROWTH, "").strip() or _meltano_setting(
            "alert_quarantine_growth", env, meltano_yml
        )
        return cls(webhook_url=_webhook_url(url), quarantine_growth=_growth(raw))


def _webhook_url(raw: str) -> str | None:
    if not raw:
        return None
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        # The value is not echoed: a webhook URL is a secret, even a mistyped one.
        raise ConfigError(
            f"{ALERT_WEBHOOK_URL} is not a web address (it must start with https:// or "
            "http:// and name a host): set it to the incoming-webhook URL your chat or "
            "notification service gives (Slack, Teams, ntfy...), or leave it empty to turn "
            "alerts off."
        )
    return raw


def _growth(raw: str) -> int:
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{ALERT_QUARANTINE_GROWTH}={raw!r} is not valid: use a whole number of at least 1 "
            "(how many records newly quarantined by one sync run raise an alert)."
        )
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
    alerts: AlertSettings = field(default_factory=AlertSettings)

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
            alerts=AlertSettings.load(env),
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
