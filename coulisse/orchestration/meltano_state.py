"""A tap's saved Singer state (its incremental cursors), read from Meltano's system database.

The change check needs tap-tryton's cursors before deciding to start any `meltano run`, and
`meltano state get` would itself cost a Meltano start-up (about 2.3 s). Meltano keeps the state
of each job (``<environment>:<tap>-to-<target>``) in the ``state`` table of its system database
(``MELTANO_DATABASE_URI``, which `coulisse stack up` sets per stack): one indexed read.

    >>> state_id("tap-tryton", "target-ledger-erp", {})
    'dev:tap-tryton-to-target-ledger-erp'
    >>> merged({"a": {"x": 1}}, {"a": {"y": 2}})
    {'a': {'x': 1, 'y': 2}}
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from coulisse.stack.layout import PROJECT_ROOT

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Meltano's default state backend: its own system database.
SYSTEMDB = "systemdb"


def state_id(tap: str, target: str, env: Mapping[str, str]) -> str:
    """The id Meltano files a `meltano run` pair's state under (environment ``dev`` here)."""
    environment = env.get("MELTANO_ENVIRONMENT", "").strip() or "dev"
    return f"{environment}:{tap}-to-{target}"


def merged(completed: Mapping[str, Any], partial: Mapping[str, Any]) -> dict[str, Any]:
    """A partial state (a run that stopped half-way) over the last completed one, as Meltano."""
    result = dict(completed)
    for key, value in partial.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str | bytes):
        value = json.loads(value)
    return dict(value) if isinstance(value, dict) else {}


def singer_state(env: Mapping[str, str], tap: str, target: str) -> dict[str, Any] | None:
    """The tap's Singer state as its next run will receive it; None when unknown.

    Unknown: no run saved any state yet, or the state lives in a backend other than the
    system database (``MELTANO_STATE_BACKEND_URI``): the caller then assumes a change.
    """
    backend = env.get("MELTANO_STATE_BACKEND_URI", "").strip() or SYSTEMDB
    if backend != SYSTEMDB:
        return None
    url = env.get("MELTANO_DATABASE_URI", "").strip() or (
        f"sqlite:///{PROJECT_ROOT / '.meltano' / 'meltano.db'}"
    )
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT completed_state, partial_state FROM state WHERE state_id = :id"),
                {"id": state_id(tap, target, env)},
            ).first()
    except sa.exc.DBAPIError:
        return None  # no system database or no state table yet: Meltano never ran here
    finally:
        engine.dispose()
    if row is None:
        return None
    state = merged(_as_dict(row.completed_state), _as_dict(row.partial_state))
    singer = state.get("singer_state")
    return dict(singer) if isinstance(singer, dict) else None
