"""Project-wide settings: the .env file, the ledger's URL, the sync policy from meltano.yml.

Secrets and connection settings come from the environment, then from the git-ignored ``.env``
that `coulisse stack up` writes (``COULISSE_ENV_FILE`` names another one); the environment wins.
The ownership and conflict policy is configured in ``meltano.yml``, as the ``policy`` setting of
the ``coulisse`` utility, so integration engineers keep all configuration in one file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from coulisse.policy import SyncPolicy
from coulisse.stack.envfile import read_env_file
from coulisse.stack.layout import PROJECT_ROOT


class ConfigError(RuntimeError):
    """A setting is missing or wrong; the message names it and the fix."""


def project_env() -> dict[str, str]:
    """The environment as Coulisse and its plugins see it: ``.env`` under the real environment."""
    env_file = Path(os.environ.get("COULISSE_ENV_FILE") or PROJECT_ROOT / ".env")
    return {**read_env_file(env_file), **os.environ}


def ledger_url(env: dict[str, str] | None = None) -> str:
    """The ledger's SQLAlchemy URL, from ``COULISSE_LEDGER_URL``."""
    url = (env if env is not None else project_env()).get("COULISSE_LEDGER_URL", "").strip()
    if not url:
        raise ConfigError(
            "COULISSE_LEDGER_URL is not set: `coulisse stack up` writes one to .env for the "
            "local stack; elsewhere set it to sqlite:////path/ledger.sqlite or "
            "postgresql://user@host:5432/coulisse."
        )
    return url


def sync_policy(meltano_yml: Path | None = None) -> SyncPolicy:
    """The ``policy`` of the ``coulisse`` utility in meltano.yml, over the built-in defaults."""
    path = meltano_yml or PROJECT_ROOT / "meltano.yml"
    document: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    utilities = (document.get("plugins") or {}).get("utilities") or []
    coulisse = next((u for u in utilities if u.get("name") == "coulisse"), None)
    raw = ((coulisse or {}).get("config") or {}).get("policy")
    if not raw:
        return SyncPolicy.default()
    try:
        return SyncPolicy.model_validate(raw)
    except ValueError as exc:
        raise ConfigError(
            f"the sync policy in {path} (plugins > utilities > coulisse > config > policy) is "
            f"not valid:\n{exc}\nFix that section; see coulisse/policy.py for every setting."
        ) from exc
