"""Settings of ``coulisse serve``, from the environment or the git-ignored ``.env``.

- ``COULISSE_WEBHOOK_SECRET``: the signing secret of the CRM's webhook endpoint (``whsec_...``;
  `coulisse stack up` writes it for the local stack). Required; never logged.
- ``COULISSE_WEBHOOK_PORT``: where the receiver listens; default the CRM's port + 5 (8605 beside
  the demo's CRM on 8600), so every local stack gets its own receiver.
- ``COULISSE_WEBHOOK_HOST``: the address it binds; default 127.0.0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coulisse.project import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The path BottleCRM posts to: http://<host>:<port>/bottlecrm.
RECEIVER_PATH = "/bottlecrm"
#: Offset of the receiver's default port from the CRM's.
PORT_OFFSET = 5


def receiver_port(env: Mapping[str, str]) -> int:
    """``COULISSE_WEBHOOK_PORT``, or the CRM's port (``COULISSE_CRM_PORT``, 8600) + 5."""
    raw = env.get("COULISSE_WEBHOOK_PORT", "").strip()
    if not raw:
        crm = env.get("COULISSE_CRM_PORT", "").strip() or "8600"
        raw = str(int(crm) + PORT_OFFSET) if crm.isdigit() else ""
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise ConfigError(
            f"COULISSE_WEBHOOK_PORT={raw!r} is not a port: set it to a free port between "
            "1024 and 65535, e.g. 8605."
        )
    return int(raw)


def receiver_url(env: Mapping[str, str]) -> str:
    """The URL the local CRM delivers to (loopback: allowed by the sandbox's settings only)."""
    return f"http://127.0.0.1:{receiver_port(env)}{RECEIVER_PATH}"


@dataclass(frozen=True)
class ReceiverSettings:
    """Where ``coulisse serve`` listens and the secret it checks deliveries with."""

    secret: str = field(repr=False)
    host: str
    port: int

    @classmethod
    def load(cls, env: Mapping[str, str]) -> ReceiverSettings:
        secret = env.get("COULISSE_WEBHOOK_SECRET", "").strip()
        if not secret:
            raise ConfigError(
                "COULISSE_WEBHOOK_SECRET is not set: it is the signing secret of the CRM's "
                "webhook endpoint. `coulisse stack up` registers the receiver and writes it to "
                ".env for the local stack; for another CRM, copy the secret BottleCRM showed "
                "when the webhook was created (or rotated) into the environment or .env."
            )
        return cls(
            secret=secret,
            host=env.get("COULISSE_WEBHOOK_HOST", "").strip() or "127.0.0.1",
            port=receiver_port(env),
        )
