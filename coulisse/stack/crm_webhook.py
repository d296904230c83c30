"""Register `coulisse serve` as the local CRM's webhook receiver, and keep its secret in .env.

Runs after the CRM's database is copied from the prepared one (``coulisse stack up``), so the
prepared database, and its cache key, know nothing of it: a new receiver port or secret never
forces the 100-second rebuild.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

from coulisse.stack.crm import INTEGRATION_EMAIL, ORG_NAME, SCRIPTS_DIR
from coulisse.stack.envfile import read_env_file, update_env_file
from coulisse.stack.errors import StackError
from coulisse.webhooks.events import SUBSCRIBED
from coulisse.webhooks.settings import receiver_url

if TYPE_CHECKING:
    from coulisse.stack.crm import CrmStack

SECRET_SETTING = "COULISSE_WEBHOOK_SECRET"  # noqa: S105 - a setting name, not a secret


def register_receiver(crm: CrmStack, url: str | None = None) -> dict[str, Any]:
    """Point the CRM's Coulisse webhook at ``url`` (default: this stack's receiver); idempotent.

    The signing secret stays the one in the env file when there is one; a new one minted by the
    CRM is written there. What is returned carries no secret.
    """
    known = read_env_file(crm.layout.env_file)
    settings = {**known, **os.environ, "COULISSE_CRM_PORT": str(crm.settings.crm_port)}
    target = url or receiver_url(settings)
    spec = {
        "org_name": ORG_NAME,
        "integration_email": INTEGRATION_EMAIL,
        "url": target,
        "events": list(SUBSCRIBED),
        "secret": known.get(SECRET_SETTING) or None,
    }
    result = subprocess.run(
        [str(crm.venv / "bin" / "python"), str(SCRIPTS_DIR / "crm_webhook.py")],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=crm._django_env(crm._database_name()),
        cwd=crm.layout.log_dir,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            "registering Coulisse's webhook receiver in the CRM failed:\n"
            + "\n".join(result.stderr.strip().splitlines()[-20:])
        )
    info: dict[str, Any] = json.loads(result.stdout)
    secret = info.pop("secret")
    if secret != known.get(SECRET_SETTING):
        update_env_file(crm.layout.env_file, {SECRET_SETTING: secret})
    return info
