"""`coulisse sync`: observe both systems into the ledger, plan, apply to each system, in order.

Each step is one `meltano run` (about 2.3 s of start-up however many records it moves) or one
in-process call, never one per record. The whole run holds the ledger's run lock, so two syncs
(CLI, Meltano job, Prefect flow) never write at the same time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coulisse.ledger import Ledger
from coulisse.planner.plan import Planner
from coulisse.project import ConfigError, ledger_url, project_env, sync_policy
from coulisse.stack.layout import PROJECT_ROOT, StackLayout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from coulisse.model import Entity, Side
    from coulisse.planner.plan import PlanSummary

#: What each canonical entity is called as a Singer stream.
STREAMS: dict[str, str] = {
    "client": "clients",
    "product": "products",
    "order": "orders",
    "invoice": "invoices",
}
#: Entities each connector handles today; `--only` outside these is a configuration mistake.
SUPPORTED: tuple[Entity, ...] = ("client",)

OBSERVE: tuple[tuple[str, str], ...] = (
    ("tap-bottlecrm", "target-ledger-crm"),
    ("tap-tryton", "target-ledger-erp"),
)
APPLY: dict[Side, tuple[str, str]] = {
    "erp": ("tap-ledger-erp", "target-tryton"),
    "crm": ("tap-ledger-crm", "target-bottlecrm"),
}


class SyncStepError(RuntimeError):
    """A step of the sync failed; the message names the step, the cause and the log."""


@dataclass
class SyncResult:
    """What one sync did: its steps with their durations, and the plan."""

    dry_run: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    plan: PlanSummary | None = None
    #: The plan made after reading back what the ERP stored (None when the ERP got no write).
    settle_plan: PlanSummary | None = None
    applied: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "steps": self.steps,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "settle_plan": self.settle_plan.to_dict() if self.settle_plan is not None else None,
            "applied": self.applied,
        }


def parse_only(only: str | None) -> tuple[Entity, ...]:
    """``"clients,orders"`` -> ("client", "order"), refusing what the connectors cannot sync."""
    if not only:
        return SUPPORTED
    by_name = {**{v: k for k, v in STREAMS.items()}, **{k: k for k in STREAMS}}
    chosen: list[Entity] = []
    for raw in only.split(","):
        name = raw.strip().lower()
        entity = by_name.get(name)
        if entity is None:
            raise ConfigError(
                f"--only {raw!r}: not an entity; use a comma-separated list of "
                f"{', '.join(STREAMS.values())}."
            )
        if entity not in SUPPORTED:
            raise ConfigError(
                f"--only {raw!r}: the CRM and ERP connectors do not sync {STREAMS[entity]} yet; "
                f"today: {', '.join(STREAMS[e] for e in SUPPORTED)}."
            )
        chosen.append(entity)
    return tuple(chosen)


def meltano_env(entities: Sequence[Entity]) -> dict[str, str]:
    """The environment of every `meltano run`: .env, plugins on PATH, streams selected."""
    env = project_env()
    bin_dir = str(Path(PROJECT_ROOT) / ".venv" / "bin")
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env.setdefault("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false")
    # Meltano's state (the taps' incremental cursors) lives in MELTANO_DATABASE_URI, which
    # `coulisse stack up` sets per stack (PostgreSQL or SQLite), like the ledger.
    selected = json.dumps([STREAMS[e] for e in entities])
    for tap in ("tap-bottlecrm", "tap-tryton", "tap-ledger-crm", "tap-ledger-erp"):
        env[f"{tap.upper().replace('-', '_')}__SELECT_FILTER"] = selected
    return env


def run_meltano(blocks: Sequence[str], env: dict[str, str], log_file: Path) -> float:
    """One `meltano run` of ``blocks``; returns its duration, raises with the log's tail."""
    started = time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"\n$ meltano run {' '.join(blocks)}\n")
        log.flush()
        result = subprocess.run(
            [str(Path(PROJECT_ROOT) / ".venv" / "bin" / "meltano"), "run", *blocks],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join(line for line in lines[-40:] if "METRIC" not in line)
        raise SyncStepError(
            f"`meltano run {' '.join(blocks)}` failed (exit {result.returncode}). "
            f"Last lines of {log_file}:\n{tail}"
        )
    return time.monotonic() - started


def _apply(
    ledger: Ledger,
    side: Side,
    *,
    env: dict[str, str],
    log_file: Path,
    result: SyncResult,
    tell: Callable[[str], None],
) -> int:
    """Apply the pending writes of one system; how many were applied."""
    pending = ledger.count_operations(side=side, status="pending")
    if not pending:
        return 0
    tell(f"apply: {pending} write(s) to the {side.upper()}")
    seconds = run_meltano(list(APPLY[side]), env, log_file)
    result.steps.append({"step": f"apply-{side}", "seconds": round(seconds, 2)})
    applied = pending - ledger.count_operations(side=side, status="pending")
    result.applied[side] = result.applied.get(side, 0) + applied
    return applied


def sync(
    entities: Sequence[Entity] = SUPPORTED,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] | None = None,
) -> SyncResult:
    """Observe both systems, plan, and (unless ``dry_run``) apply to each system.

    ``dry_run`` still observes (the ledger learns what the systems hold) but writes nothing to
    either system: the plan is printed and rolled back.
    """
    tell = say or (lambda _message: None)
    env = meltano_env(entities)
    log_file = StackLayout.from_env(env).home / "logs" / "sync.log"
    result = SyncResult(dry_run=dry_run)
    ledger = Ledger.open(ledger_url(env))
    holder = f"coulisse sync on {socket.gethostname()} pid {os.getpid()}"
    try:
        with ledger.lock(holder):
            tell("observe: reading the CRM and the ERP into the ledger")
            blocks = [plugin for pair in OBSERVE for plugin in pair]
            result.steps.append(
                {"step": "observe", "seconds": round(run_meltano(blocks, env, log_file), 2)}
            )
            tell("plan: validate, match, merge" + (" (dry run)" if dry_run else ""))
            started = time.monotonic()
            result.plan = Planner(ledger, sync_policy()).plan(dry_run=dry_run)
            result.steps.append({"step": "plan", "seconds": round(time.monotonic() - started, 2)})
            if dry_run:
                return result
            if _apply(ledger, "erp", env=env, log_file=log_file, result=result, tell=tell):
                # What the ERP did with our writes (a new party's client code, its balance)
                # belongs in the CRM too: read it back now, so the next run has nothing left.
                tell("observe: reading back what the ERP stored")
                seconds = run_meltano(list(OBSERVE[1]), env, log_file)
                result.steps.append({"step": "observe-erp", "seconds": round(seconds, 2)})
                started = time.monotonic()
                settled = Planner(ledger, sync_policy()).plan()
                result.steps.append(
                    {"step": "plan", "seconds": round(time.monotonic() - started, 2)}
                )
                result.settle_plan = settled
            _apply(ledger, "crm", env=env, log_file=log_file, result=result, tell=tell)
    finally:
        ledger.close()
    return result
