"""The default run for flagged CRM records: ``coulisse sync`` limited to them.

A targeted run reads only the flagged accounts from the CRM (tap-bottlecrm's ``account_ids``
setting, given to Meltano as ``TAP_BOTTLECRM_ACCOUNT_IDS``) and plans and applies as usual. A
deletion cannot be seen by reading the record (it answers 404), so a flagged deletion makes the
run a full scan of that entity, whose end tells the ledger what is gone. Entities the
connectors do not sync yet are consumed without a run: the periodic full scan covers them once
they are.

``coulisse sync`` runs as a child process so that a failing run never takes the receiver down,
and its exit code says whether the lock was busy (2).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from coulisse.webhooks.trigger import Outcome

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from coulisse.webhooks.store import CrmChange

logger = logging.getLogger("coulisse.webhooks")

#: Entity -> (stream name for --only, the tap setting's environment variable listing ids).
#: tap-bottlecrm reads given ids for accounts only so far; deals and invoices get a full read
#: of their stream until the tap has id lists for them.
TARGETS: dict[str, tuple[str, str | None]] = {
    "client": ("clients", "TAP_BOTTLECRM_ACCOUNT_IDS"),
    "order": ("orders", None),
    "invoice": ("invoices", None),
}


def plan_command(
    changes: Sequence[CrmChange], supported: Sequence[str]
) -> tuple[list[str], dict[str, str]] | None:
    """The ``coulisse sync`` arguments and extra environment for these flags, or None."""
    entities = sorted({c.entity for c in changes if c.entity in supported and c.entity in TARGETS})
    if not entities:
        return None
    env: dict[str, str] = {}
    for entity in entities:
        variable = TARGETS[entity][1]
        mine = [c for c in changes if c.entity == entity]
        if variable is None or any(c.action == "deleted" for c in mine):
            continue  # a full read of this stream
        env[variable] = json.dumps(sorted({c.crm_id for c in mine}))
    only = ",".join(TARGETS[e][0] for e in entities)
    return ["sync", "--only", only, "--json"], env


class SubprocessSync:
    """Run ``coulisse sync`` for the flags in a child process; its exit code is the outcome."""

    def __init__(self, environ: Mapping[str, str] | None = None, timeout: float = 3600) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.timeout = timeout

    def __call__(self, changes: Sequence[CrmChange]) -> tuple[Outcome, str]:
        from coulisse.sync import SUPPORTED

        name = f"coulisse serve pid {os.getpid()}"
        planned = plan_command(changes, SUPPORTED)
        if planned is None:
            logger.info("%d flag(s) for entities not synced yet: consumed", len(changes))
            return Outcome.DONE, f"{name} (not synced yet: left to the full scan)"
        args, extra = planned
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "coulisse.cli", *args],
            env={**self.environ, **extra},
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        seconds = time.monotonic() - started
        if result.returncode == 2:
            logger.info("another sync holds the lock; the %d flag(s) wait", len(changes))
            return Outcome.BUSY, name
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            logger.error("targeted sync failed (exit %d):\n%s", result.returncode, tail)
            return Outcome.FAILED, name
        logger.info(
            "targeted sync of %d flag(s) (%s) done in %.1f s: %s",
            len(changes),
            args[2],
            seconds,
            _steps(result.stdout),
        )
        return Outcome.DONE, f"{name} sync {args[2]} at {time.strftime('%H:%M:%S')}"


def _steps(output: str) -> str:
    """``observe 3.1 s, plan 0.2 s, apply-erp 2.4 s; applied erp 1`` from `sync --json`."""
    try:
        document = json.loads(output)
        steps = ", ".join(f"{s['step']} {s['seconds']} s" for s in document["steps"])
        applied = " ".join(f"{side} {count}" for side, count in document["applied"].items())
    except (ValueError, KeyError, TypeError):
        return "(no summary)"
    return f"{steps}; applied {applied or 'nothing'}"
