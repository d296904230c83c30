"""The Prefect ``sync`` flow: the change check, then observe, plan and apply as tasks.

One task per step, never per record: ``change-check``, ``observe`` (one `meltano run` of the
taps that have something to read), ``plan``, ``apply-erp``, ``observe-erp`` and ``plan`` again
(only when the ERP got writes: what it stored goes back to the CRM in the same run), and
``apply-crm`` — the steps of `coulisse sync` (:mod:`coulisse.sync`), which both share. Each
step is retried (``COULISSE_STEP_RETRIES``): observing and applying are idempotent, a plan is
one transaction.

The flow holds the ledger's run lock, shared with `coulisse sync` and `coulisse serve`: a run
that finds it taken waits ``COULISSE_LOCK_WAIT`` seconds, then ends as *Skipped* (nothing
written). Every ledger run it starts carries its Prefect flow run id, and it publishes what the
ledger says it did as artifacts (:mod:`coulisse.orchestration.report`). A failed step fails the
flow run with that step's name and error (the `meltano run`, its exit code and its log's tail):
``Step observe failed: ...``, the state message the failure alert carries. A run that put at
least ``COULISSE_ALERT_QUARANTINE_GROWTH`` records newly in quarantine emits a
``coulisse.quarantine.grew`` event, failed or not (:mod:`coulisse.orchestration.alerts`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.states import Completed
from prefect.utilities.annotations import quote
from prefect.variables import Variable

from coulisse.ledger import LockBusyError
from coulisse.ledger.store import utcnow
from coulisse.orchestration.alerts import announce_quarantine_growth, quarantine_growth
from coulisse.orchestration.changes import Workload, check_changes, consume_crm_changes
from coulisse.orchestration.report import build_report, markdown
from coulisse.orchestration.settings import FlowSettings
from coulisse.project import ConfigError, project_env
from coulisse.sync import (
    OBSERVE_SIDE,
    STREAMS,
    SyncSession,
    SyncStepError,
    apply_step,
    crosscheck_step,
    holder_name,
    observe_step,
    parse_only,
    plan_step,
    run_lock,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from prefect import Task
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.context import FlowRunContext

    from coulisse.model import Side

P = ParamSpec("P")
R = TypeVar("R")
#: The Prefect variable holding when each entity was last read in full from the CRM.
CRM_READS_VARIABLE = "coulisse_crm_full_reads"
#: The artifact keys: one summary, one table per entity (``sync-clients``...).
SUMMARY_KEY = "sync-summary"


@dataclass
class _Progress:
    """The step a run is in: a failure names it."""

    step: str = "change-check"


def _failed(step: str, exc: Exception) -> SyncStepError:
    """The run's error: the step, then its cause (Coulisse's own errors say what to fix)."""
    cause = str(exc) if isinstance(exc, (SyncStepError, ConfigError)) else None
    return SyncStepError(f"Step {step} failed: {cause or f'{type(exc).__name__}: {exc}'}")


def _as_is(session: SyncSession) -> SyncSession:
    """Hand the session to a task as it is: Prefect neither walks nor copies it for futures."""
    return cast("SyncSession", quote(session))


def _retried(step: Task[P, R], settings: FlowSettings) -> Task[P, R]:
    """The step with the configured retries."""
    return step.with_options(retries=settings.retries, retry_delay_seconds=settings.retry_delay)


def table_key(entity: str) -> str:
    """The artifact key of an entity's table."""
    return f"sync-{STREAMS.get(entity, entity)}"


@task(name="change-check", cache_policy=NO_CACHE)
def change_check(
    session: SyncSession, last_crm_reads: Mapping[str, dt.datetime], every: float, force: bool
) -> Workload:
    """What this cycle has to do (:func:`coulisse.orchestration.changes.check_changes`)."""
    return check_changes(
        session.ledger,
        session.env,
        session.entities,
        last_crm_reads=last_crm_reads,
        crm_read_every=dt.timedelta(minutes=every),
        force=force,
    )


@task(name="observe", task_run_name="{step}", cache_policy=NO_CACHE)
def observe(
    session: SyncSession,
    pairs: Sequence[tuple[str, str]],
    step: str = "observe",
    extra_env: Mapping[str, str] | None = None,
) -> float:
    """One `meltano run` reading these taps into the ledger."""
    return observe_step(session, pairs, step=step, extra_env=extra_env)


@task(name="plan", cache_policy=NO_CACHE)
def plan(session: SyncSession, settle: bool = False) -> dict[str, Any]:
    """Validate, match, merge; queue the writes."""
    summary = plan_step(session, settle=settle)
    return {k: v for k, v in summary.to_dict().items() if k != "items"}


@task(name="apply", task_run_name="apply-{side}", cache_policy=NO_CACHE)
def apply(session: SyncSession, side: Side) -> int:
    """One `meltano run` writing the pending operations to ``side``."""
    return apply_step(session, side)


def _last_crm_reads() -> dict[str, dt.datetime]:
    raw: Any = Variable.get(CRM_READS_VARIABLE)
    if not isinstance(raw, dict):
        return {}
    return {str(k): dt.datetime.fromisoformat(str(v)) for k, v in raw.items()}


def _remember_crm_reads(entities: Sequence[str], at: dt.datetime) -> None:
    reads: dict[str, Any] = {k: v.isoformat() for k, v in _last_crm_reads().items()}
    reads.update({entity: at.isoformat() for entity in entities})
    Variable.set(CRM_READS_VARIABLE, reads, overwrite=True)


@flow(name="sync")
def sync_flow(
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    lock_wait: float | None = None,
) -> dict[str, Any] | State[Any]:
    """Bring the CRM and the ERP in step when something changed (see the module docstring).

    ``only``: entities or stream names (default: all that sync). ``force``: read both systems
    in full whatever the change check says. ``dry_run``: observe and plan, write nothing.
    ``lock_wait``: seconds to wait for another sync (default ``COULISSE_LOCK_WAIT``).
    """
    logger = get_run_logger()
    settings = FlowSettings.load(project_env())
    entities = parse_only(",".join(only) if only else None)
    context: FlowRunContext | None = get_run_context()  # type: ignore[assignment]
    assert context is not None
    assert context.flow_run is not None
    run: FlowRun = context.flow_run
    wait = settings.lock_wait if lock_wait is None else lock_wait
    session = SyncSession.open(entities, dry_run=dry_run, say=logger.info, flow_run_id=str(run.id))
    with contextlib.ExitStack() as stack:
        stack.callback(session.close)
        try:
            stack.enter_context(
                run_lock(
                    session.ledger,
                    holder_name(f"prefect flow run {run.name} ({run.id})"),
                    wait=wait,
                    on_wait=lambda holder: logger.info(
                        "Another sync holds the run lock (%s): waiting up to %g s", holder, wait
                    ),
                )
            )
        except LockBusyError as exc:
            logger.warning("Skipped: %s", exc)
            return Completed(name="Skipped", message=f"Skipped: {exc}")
        return _cycle(session, settings, run, force=force)


def _cycle(
    session: SyncSession, settings: FlowSettings, run: FlowRun, *, force: bool
) -> dict[str, Any]:
    """The run under the lock: check, then the steps the check asked for, then the report."""
    logger = get_run_logger()
    started = utcnow()
    try:
        work = _retried(change_check, settings)(
            _as_is(session), _last_crm_reads(), settings.crm_scan_minutes, force
        )
    except Exception as exc:
        raise _failed("change-check", exc) from exc
    title = f"Sync {run.name}"
    outcome: dict[str, Any] = {"flow_run_id": str(run.id), "checks": work.to_dict()}
    if work.idle:
        logger.info("Idle: nothing changed in either system; no Meltano job started.")
        create_markdown_artifact(
            f"# {title}\n\nNothing changed in the CRM or the ERP: no Meltano job started.",
            description="An idle cycle",
        )
        return {**outcome, "idle": True}
    logger.info("To do: %s", "; ".join(work.reasons))
    error: str | None = None
    progress = _Progress()
    try:
        _steps(session, work, settings, started, progress)
    except Exception as exc:
        failure = _failed(progress.step, exc)
        error = str(failure)
        raise failure from exc
    finally:
        _publish(session, work, title, error)
        _announce_quarantine(session, settings, run, started)
    return {**outcome, "idle": False, **session.result.to_dict()}


def _steps(
    session: SyncSession,
    work: Workload,
    settings: FlowSettings,
    started: dt.datetime,
    progress: _Progress,
) -> None:
    """Observe, plan, apply: what ``work`` needs, in the order of `coulisse sync`."""
    pairs = work.observe_pairs()
    if pairs:
        progress.step = "observe"
        _retried(observe, settings)(_as_is(session), pairs, extra_env=work.observe_env())
        consume_crm_changes(
            session.ledger, work.flags, by=f"prefect flow run {session.flow_run_id}"
        )
        if work.crm_full:
            _remember_crm_reads(work.crm_full, started)
    if pairs or work.unplanned:
        progress.step = "plan"
        _retried(plan, settings)(_as_is(session))
    if session.result.dry_run:
        return
    progress.step = "apply-erp"
    if _retried(apply, settings)(_as_is(session), "erp"):
        # What the ERP did with our writes (a new party's client code, its balance) belongs
        # in the CRM too: read it back now, so the next run has nothing left to write.
        progress.step = "observe-erp"
        _retried(observe, settings)(_as_is(session), [OBSERVE_SIDE["erp"]], "observe-erp")
        progress.step = "plan"
        _retried(plan, settings)(_as_is(session), settle=True)
    progress.step = "apply-crm"
    _retried(apply, settings)(_as_is(session), "crm")
    progress.step = "cross-check"
    crosscheck_step(session)


def _publish(session: SyncSession, work: Workload, title: str, error: str | None) -> None:
    """The run's artifacts, from the ledger's events: a table per entity, a summary."""
    logger = get_run_logger()
    try:
        assert session.flow_run_id is not None
        report = build_report(session.ledger, session.flow_run_id)
        for entity in report.entities:
            create_table_artifact(
                report.table(entity),
                key=table_key(entity),
                description=(
                    f"{STREAMS.get(entity, entity)}: per system, the records read and what "
                    "this run did with them (created or updated in the other system, "
                    "unchanged, quarantined, deferred, in conflict), and who needs a person."
                ),
            )
        create_markdown_artifact(
            markdown(
                report,
                title=title + (" failed" if error else ""),
                checks=work.to_dict(),
                steps=session.result.steps,
                applied=session.result.applied,
                mismatches=session.result.mismatches,
                error=error,
            ),
            key=SUMMARY_KEY,
            description="What this sync run did, from the ledger",
        )
    except Exception:  # a report must never hide the run's own outcome
        logger.exception("Could not publish this run's artifacts")


def _announce_quarantine(
    session: SyncSession, settings: FlowSettings, run: FlowRun, started: dt.datetime
) -> None:
    """Emit the quarantine-growth event when this run held back enough new records."""
    logger = get_run_logger()
    threshold = settings.alerts.quarantine_growth
    try:
        growth = quarantine_growth(session.ledger, str(run.id), started)
        if announce_quarantine_growth(growth, run_name=run.name, threshold=threshold):
            logger.warning(
                "%d new record(s) in quarantine (alert threshold %d): %s",
                growth.records,
                threshold,
                ", ".join(f"{reason} {n}" for reason, n in growth.reasons().most_common()),
            )
        elif growth.records:
            logger.info(
                "%d new record(s) in quarantine, under the alert threshold (%d)",
                growth.records,
                threshold,
            )
    except Exception:  # an alert must never hide the run's own outcome
        logger.exception("Could not check this run's quarantine for an alert")
