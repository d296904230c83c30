"""Settings of one local stack: ports, database server, names; read from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from coulisse.stack.envfile import read_env_file
from coulisse.stack.errors import StackError

if TYPE_CHECKING:
    from coulisse.stack.layout import StackLayout


def _port(env: dict[str, str], key: str, default: int) -> int:
    raw = env.get(key, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{key}={raw!r} is not a port number: set it to e.g. {default}.") from None
    if not 1024 <= port <= 65535:
        raise StackError(f"{key}={port} is out of range: use a port between 1024 and 65535.")
    return port


@dataclass(frozen=True)
class StackSettings:
    """What ``coulisse stack`` needs to know; every field comes from an environment variable.

    - ``COULISSE_CRM_PORT`` / ``COULISSE_ERP_PORT``: where BottleCRM and Tryton listen.
    - ``COULISSE_STACK_DATABASE_URL``: a PostgreSQL server (``postgresql://user@host:port``);
      both systems then keep their databases there. Empty: SQLite files under the stack home.
    - ``COULISSE_STACK_NAME``: prefix of the databases on that server, so several stacks
      (the demo's, the tests') share one PostgreSQL without touching each other.
    """

    crm_port: int
    erp_port: int
    database_url: str | None
    name: str

    @classmethod
    def load(cls, layout: StackLayout, environ: dict[str, str] | None = None) -> StackSettings:
        env = {**read_env_file(layout.env_file), **(os.environ if environ is None else environ)}
        url = env.get("COULISSE_STACK_DATABASE_URL", "").strip() or None
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in {"postgresql", "postgres"} or not parts.hostname:
                raise StackError(
                    f"COULISSE_STACK_DATABASE_URL={url!r} is not a PostgreSQL server URL: "
                    "use postgresql://USER@HOST:PORT, or leave it empty for SQLite."
                )
        name = env.get("COULISSE_STACK_NAME", "coulisse_demo")
        if not name.replace("_", "").isalnum() or not name[0].isalpha():
            raise StackError(
                f"COULISSE_STACK_NAME={name!r} must be letters, digits and underscores, "
                "starting with a letter (it prefixes database names)."
            )
        crm_port = _port(env, "COULISSE_CRM_PORT", 8600)
        erp_port = _port(env, "COULISSE_ERP_PORT", 8610)
        if crm_port == erp_port:
            raise StackError(
                f"COULISSE_CRM_PORT and COULISSE_ERP_PORT are both {crm_port}: give them "
                "different ports."
            )
        return cls(crm_port=crm_port, erp_port=erp_port, database_url=url, name=name.lower())

    @property
    def uses_postgres(self) -> bool:
        return self.database_url is not None

    @property
    def crm_url(self) -> str:
        return f"http://127.0.0.1:{self.crm_port}"

    @property
    def erp_url(self) -> str:
        return f"http://127.0.0.1:{self.erp_port}"

    @property
    def crm_database(self) -> str:
        return f"{self.name}_crm"

    @property
    def erp_database(self) -> str:
        return f"{self.name}_erp"

    def pg_parts(self) -> tuple[str, int, str, str]:
        """Host, port, user and password of the PostgreSQL server."""
        if self.database_url is None:
            raise StackError("no PostgreSQL server configured (COULISSE_STACK_DATABASE_URL)")
        parts = urlsplit(self.database_url)
        return (
            parts.hostname or "127.0.0.1",
            parts.port or 5432,
            parts.username or "postgres",
            parts.password or "",
        )
