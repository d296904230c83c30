"""`coulisse sync`: observe both systems into the ledger, plan, apply to each system, in order.

Each step is one `meltano run` (about 2.3 s of start-up however many records it moves) or one
in-process call, never one per record. The whole run holds the ledger's run lock, so two syncs
(CLI, Meltano job, Prefect flow) never write at the same time.

The steps are plain functions over a :class:`SyncSession`, so `coulisse sync` and the Prefect
``sync`` flow (:mod:`coulisse.orchestration.flow`, one task per step) run the same code::

    session = SyncSession.open(("client",))
    with run_lock(session.ledger, holder_name("me")):
        observe_step(session)
        plan_step(session)
        if apply_step(session, "erp"):
            read_back_step(session)
        apply_step(session, "crm")
        crosscheck_step(session)
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coulisse.ledger import Ledger, LockBusyError
from coulisse.ledger.store import FLOW_RUN_ENV
from coulisse.planner.crosscheck import cross_check
from coulisse.planner.plan import Planner
from coulisse.project import ConfigError, ledger_url, project_env, sync_policy
from coulisse.stack.layout import PROJECT_ROOT, StackLayout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from coulisse.model import Entity, Side
    from coulisse.planner.plan import PlanSummary

#: What each canonical entity is called as a Singer stream.
STREAMS: dict[str, str] = {
    "client": "clients",
    "product": "products",
    "order": "orders",
    "invoice": "invoices",
}
#: Entities the connectors sync, in dependency order; `--only` outside these is a mistake.
SUPPORTED: tuple[Entity, ...] = ("client", "product", "order", "invoice")

OBSERVE: tuple[tuple[str, str], ...] = (
    ("tap-bottlecrm", "target-ledger-crm"),
    ("tap-tryton", "target-ledger-erp"),
)
#: Observing one system: its tap and the ledger target for its side.
OBSERVE_SIDE: dict[Side, tuple[str, str]] = {"crm": OBSERVE[0], "erp": OBSERVE[1]}
APPLY: dict[Side, tuple[str, str]] = {
    "erp": ("tap-ledger-erp", "target-tryton"),
    "crm": ("tap-ledger-crm", "target-bottlecrm"),
}


#: A plugin's exception as Python prints it last, after the plugin's name in Meltano's log:
#: ``tap-x some.module.SomeError: what happened``.
_ERROR_LINE = re.compile(r"^(?:\S+\s+)?[\w.]*(?:Error|Exception): \S")


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
    #: Linked documents whose figures differ between the systems (reported, never written).
    mismatches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "steps": self.steps,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "settle_plan": self.settle_plan.to_dict() if self.settle_plan is not None else None,
            "applied": self.applied,
            "mismatches": self.mismatches,
        }


def parse_only(only: str | None) -> tuple[Entity, ...]:
    """``"orders,clients"`` -> ("client", "order"): entities in dependency order."""
    if not only:
        return SUPPORTED
    by_name = {**{v: k for k, v in STREAMS.items()}, **{k: k for k in STREAMS}}
    chosen: set[str] = set()
    for raw in only.split(","):
        name = raw.strip().lower()
        entity = by_name.get(name)
        if entity is None:
            raise ConfigError(
                f"--only {raw!r}: not an entity; use a comma-separated list of "
                f"{', '.join(STREAMS.values())}."
            )
        chosen.add(entity)
    # Dependency order whatever the order given: clients, products, orders, invoices.
    return tuple(entity for entity in SUPPORTED if entity in chosen)


def select_filter(tap: str, entities: Sequence[Entity]) -> dict[str, str]:
    """The environment that makes ``tap`` emit only the streams of ``entities``."""
    return {
        f"{tap.upper().replace('-', '_')}__SELECT_FILTER": json.dumps(
            [STREAMS[e] for e in entities]
        )
    }


def meltano_env(entities: Sequence[Entity]) -> dict[str, str]:
    """The environment of every `meltano run`: .env, plugins on PATH, streams selected."""
    env = project_env()
    bin_dir = str(Path(PROJECT_ROOT) / ".venv" / "bin")
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env.setdefault("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false")
    # Meltano writes each run's catalogs and configs under its system folder (.meltano/run/);
    # two stacks syncing at once in one checkout would overwrite each other's files there, so
    # each stack has its own, beside its logs.
    env.setdefault("MELTANO_SYS_DIR_ROOT", str(StackLayout.from_env(env).home / "meltano"))
    # Meltano's state (the taps' incremental cursors) lives in MELTANO_DATABASE_URI, which
    # `coulisse stack up` sets per stack (PostgreSQL or SQLite), like the ledger.
    for tap in ("tap-bottlecrm", "tap-tryton", "tap-ledger-crm", "tap-ledger-erp"):
        env.update(select_filter(tap, entities))
    return env


def run_meltano(blocks: Sequence[str], env: Mapping[str, str], log_file: Path) -> float:
    """One `meltano run` of ``blocks``; returns its duration, raises with the run's errors."""
    started = time.monotonic()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a", encoding="utf-8") as log:
        log.write(f"\n$ meltano run {' '.join(blocks)}\n")
        log.flush()
        offset = log.tell()
        result = subprocess.run(
            [str(Path(PROJECT_ROOT) / ".venv" / "bin" / "meltano"), "run", *blocks],
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        with log_file.open(encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            lines = [line.rstrip() for line in log if "METRIC" not in line]
        raise SyncStepError(
            f"`meltano run {' '.join(blocks)}` failed (exit {result.returncode}).{_errors(lines)}"
            f"\nLast lines of {log_file}:\n" + "\n".join(lines[-25:])
        )
    return time.monotonic() - started


def _errors(lines: Sequence[str], most: int = 8) -> str:
    """The run's error lines (a plugin's exception, said once), which its tail may not hold.

    A tap that fails lets its target finish (and log at length) before Meltano stops, so the
    log's last lines are often the target's; the tap's own sentence is kept here.
    """
    found: list[str] = []
    for line in lines:
        text = line.split("] ", 1)[-1].strip()
        if _ERROR_LINE.search(text) and text not in found:
            found.append(text)
    return ("\nErrors:\n" + "\n".join(found[-most:])) if found else ""


def holder_name(what: str) -> str:
    """Who holds the run lock, as another run's refusal names it."""
    return f"{what} on {socket.gethostname()} pid {os.getpid()}"


@contextmanager
def run_lock(
    ledger: Ledger,
    holder: str,
    *,
    wait: float = 0.0,
    poll: float = 1.0,
    on_wait: Callable[[str | None], None] | None = None,
) -> Iterator[None]:
    """Hold the ledger's run lock for the block, waiting up to ``wait`` seconds for it.

    Raises :class:`LockBusyError` naming the holder when it is still taken after ``wait``
    (``0``: at once, as `coulisse sync` does). ``on_wait`` hears the holder once, when the
    lock was found busy.
    """
    deadline = time.monotonic() + wait
    told = False
    while not ledger.acquire_lock(holder):
        current = ledger.lock_holder()
        if time.monotonic() >= deadline:
            msg = f"the 'sync' lock is held by {current}; try again later"
            raise LockBusyError(msg)
        if on_wait is not None and not told:
            on_wait(current)
            told = True
        time.sleep(min(poll, max(deadline - time.monotonic(), 0.05)))
    try:
        yield
    finally:
        ledger.release_lock(holder)


@dataclass
class SyncSession:
    """One sync's working set: the ledger, Meltano's environment, its log, and what it did.

    ``flow_run_id`` (a Prefect flow run id) is written on every ledger run the sync starts:
    the planner's directly, the Singer targets' through ``COULISSE_FLOW_RUN_ID``.
    """

    ledger: Ledger
    entities: tuple[Entity, ...]
    env: dict[str, str]
    log_file: Path
    result: SyncResult
    tell: Callable[[str], None]
    flow_run_id: str | None = None

    @classmethod
    def open(
        cls,
        entities: Sequence[Entity] = SUPPORTED,
        *,
        dry_run: bool = False,
        say: Callable[[str], None] | None = None,
        flow_run_id: str | None = None,
    ) -> SyncSession:
        """Read the settings and open the ledger (close it with :meth:`close`)."""
        env = meltano_env(entities)
        if flow_run_id is not None:
            env[FLOW_RUN_ENV] = flow_run_id
        else:
            env.pop(FLOW_RUN_ENV, None)
        return cls(
            ledger=Ledger.open(ledger_url(env)),
            entities=tuple(entities),
            env=env,
            log_file=StackLayout.from_env(env).home / "logs" / "sync.log",
            result=SyncResult(dry_run=dry_run),
            tell=say or (lambda _message: None),
            flow_run_id=flow_run_id,
        )

    def close(self) -> None:
        """Release the ledger's connections."""
        self.ledger.close()

    def record(self, step: str, seconds: float) -> None:
        """Note a step's duration in the result."""
        self.result.steps.append({"step": step, "seconds": round(seconds, 2)})


def observe_step(
    session: SyncSession,
    pairs: Sequence[tuple[str, str]] = OBSERVE,
    *,
    step: str = "observe",
    extra_env: Mapping[str, str] | None = None,
) -> float:
    """Read systems into the ledger: one `meltano run` of each tap with its ledger target.

    ``extra_env`` narrows a run (streams selected, ids to read) without changing the session.
    """
    blocks = [plugin for pair in pairs for plugin in pair]
    seconds = run_meltano(blocks, {**session.env, **(extra_env or {})}, session.log_file)
    session.record(step, seconds)
    return seconds


def plan_step(session: SyncSession, *, settle: bool = False) -> PlanSummary:
    """Validate, match and merge what was observed; queue the writes (none in a dry run).

    ``settle`` is the plan after reading back the ERP's writes: never a dry run.
    """
    started = time.monotonic()
    policy = sync_policy()
    planner = Planner(
        session.ledger,
        policy,
        flow_run_id=session.flow_run_id,
        crm_invoices_to_erp=policy.crm_invoices_to_erp,
    )
    summary = planner.plan(dry_run=session.result.dry_run and not settle)
    session.record("plan", time.monotonic() - started)
    if settle:
        session.result.settle_plan = summary
    else:
        session.result.plan = summary
    return summary


def apply_step(session: SyncSession, side: Side) -> int:
    """Apply the pending writes of one system; how many were applied (no run when none)."""
    ledger = session.ledger
    pending = ledger.count_operations(side=side, status="pending")
    if not pending:
        return 0
    session.tell(f"apply: {pending} write(s) to the {side.upper()}")
    seconds = run_meltano(list(APPLY[side]), session.env, session.log_file)
    session.record(f"apply-{side}", seconds)
    applied = pending - ledger.count_operations(side=side, status="pending")
    session.result.applied[side] = session.result.applied.get(side, 0) + applied
    return applied


def read_back_step(session: SyncSession) -> PlanSummary:
    """Read back what the ERP stored after our writes, and plan again.

    What the ERP did with our writes (a new party's client code, its balance) belongs in the
    CRM too: reading it now means the next run has nothing left to write.
    """
    session.tell("observe: reading back what the ERP stored")
    observe_step(session, (OBSERVE_SIDE["erp"],), step="observe-erp")
    return plan_step(session, settle=True)


def crosscheck_step(session: SyncSession) -> list[str]:
    """Compare the linked documents' figures in both systems; report what differs."""
    if not {"order", "invoice"} & set(session.entities):
        return []
    started = time.monotonic()
    mismatches = cross_check(session.ledger, flow_run_id=session.flow_run_id)
    session.record("cross-check", time.monotonic() - started)
    session.result.mismatches = [m.message for m in mismatches]
    if mismatches:
        session.tell(f"cross-check: {len(mismatches)} document(s) add up differently")
    return session.result.mismatches


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
    session = SyncSession.open(entities, dry_run=dry_run, say=say)
    try:
        with run_lock(session.ledger, holder_name("coulisse sync")):
            session.tell("observe: reading the CRM and the ERP into the ledger")
            observe_step(session)
            session.tell("plan: validate, match, merge" + (" (dry run)" if dry_run else ""))
            plan_step(session)
            if not dry_run:
                if apply_step(session, "erp"):
                    read_back_step(session)
                apply_step(session, "crm")
                crosscheck_step(session)
    finally:
        session.close()
    return session.result
