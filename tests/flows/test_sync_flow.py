"""The Prefect `sync` flow against the live CRM and ERP, on a real local Prefect server.

One server for the module (its start costs about 10 s), started and stopped by the stack's own
tooling (:class:`coulisse.orchestration.server.PrefectStack`) on a fresh database; the flows
run in this process against it, as the served deployment runs them in its own.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from stdnum import luhn
from stdnum.fr import siren as siren_number

from coulisse.ledger import Ledger
from coulisse.ledger import tables as t
from coulisse.project import ledger_url, project_env
from coulisse.stack.layout import StackLayout

if TYPE_CHECKING:
    from collections.abc import Iterator

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.orchestration.settings import FlowSettings
    from tests.conftest import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.e2e]

#: The module's settings for every flow run: no retries (a failure shows at once).
FLOW_ENV = {"COULISSE_STEP_RETRIES": "0", "COULISSE_STEP_RETRY_DELAY": "0"}


@pytest.fixture(scope="module")
def prefect(live: LiveStack) -> Iterator[FlowSettings]:
    """The stack's Prefect server on a test port (CRM port + 3) and a fresh database."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from coulisse.orchestration.server import PrefectStack
    from coulisse.orchestration.settings import FlowSettings

    layout = StackLayout.from_env()
    port = os.environ.get("COULISSE_TEST_PREFECT_PORT") or str(live.stack.settings.crm_port + 3)
    home = layout.home / "prefect-test"
    shutil.rmtree(home, ignore_errors=True)
    settings = FlowSettings.load(
        {**project_env(), "COULISSE_PREFECT_PORT": port, "PREFECT_HOME": str(home)}
    )
    stack = PrefectStack(layout, settings)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FLOW_ENV.items():
            patch.setenv(key, value)
        stack.start_server()
        try:
            with temporary_settings(
                updates={PREFECT_API_URL: settings.api_url, PREFECT_HOME: home}
            ):
                yield settings
        finally:
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # the runs' last log lines, before the server goes
            stack.down()


def _ledger() -> Ledger:
    return Ledger.open(ledger_url())


def _runs(flow_run_id: str) -> list[Any]:
    ledger = _ledger()
    try:
        with ledger.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t.runs)
                    .where(t.runs.c.flow_run_id == flow_run_id)
                    .order_by(t.runs.c.id)
                )
            )
    finally:
        ledger.close()


def _last_run_id() -> int:
    ledger = _ledger()
    try:
        with ledger.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.runs.c.id))).scalar() or 0)
    finally:
        ledger.close()


def _artifacts(flow_run_id: str) -> dict[str | None, list[Any]]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
        )
    by_key: dict[str | None, list[Any]] = {}
    for artifact in found:
        by_key.setdefault(artifact.key, []).append(artifact)
    return by_key


def _siren() -> str:
    body = f"{uuid.uuid4().int % 90_000_000 + 10_000_000}"
    return body + luhn.calc_check_digit(body)


def _new_account(crm: BottleCrmClient, *, siren: str, vat: str) -> str:
    return str(
        crm.post(
            "accounts/",
            {
                "name": f"Menuiserie Flux {uuid.uuid4().hex[:6]} SARL",
                "email": "atelier@menuiserie-flux.example",
                "phone": "04 78 11 22 33",
                "address_line": "5 rue du Plat",
                "postcode": "69002",
                "city": "Lyon",
                "country": "FR",
                "custom_fields": {"vat": vat, "siren": siren},
            },
        )["id"]
    )


def _ledger_counts(flow_run_id: str) -> dict[tuple[str, str], dict[str, int]]:
    """Per (stage, side) the ledger's own numbers, counted in SQL (not by the report's code).

    A record planned twice in the run counts once, under its weightiest outcome.
    """
    weight = (
        "CASE e.kind WHEN 'unchanged' THEN 0 WHEN 'deferred' THEN 1 WHEN 'updated' THEN 3 "
        "WHEN 'deleted' THEN 4 WHEN 'created' THEN 5 WHEN 'quarantined' THEN 6 "
        "WHEN 'conflict' THEN 7 ELSE 2 END"
    )
    outcomes = sa.text(
        "SELECT side, kind, count(*) AS n FROM ("
        f"  SELECT e.side, e.source_key, e.kind, row_number() OVER ("
        f"    PARTITION BY e.side, e.source_key ORDER BY {weight} DESC) AS pick"
        "  FROM events e JOIN runs r ON r.id = e.run_id"
        "  WHERE r.flow_run_id = :f AND r.kind = 'plan' AND e.entity = 'client') ranked "
        "WHERE pick = 1 GROUP BY side, kind"
    )
    read = sa.text(
        "SELECT e.side, count(DISTINCT e.source_key) AS n FROM events e "
        "JOIN runs r ON r.id = e.run_id WHERE r.flow_run_id = :f AND r.kind = 'observe' "
        "AND e.entity = 'client' GROUP BY e.side"
    )
    counts: dict[tuple[str, str], dict[str, int]] = {}
    ledger = _ledger()
    try:
        with ledger.engine.connect() as conn:
            for row in conn.execute(outcomes, {"f": flow_run_id}):
                counts.setdefault(("plan", row.side), {})[row.kind] = row.n
            for row in conn.execute(read, {"f": flow_run_id}):
                counts.setdefault(("observe", row.side), {})["read"] = row.n
    finally:
        ledger.close()
    return counts


def test_a_flow_run_publishes_what_the_ledger_recorded(live: LiveStack, prefect: FlowSettings):
    from coulisse.orchestration.flow import sync_flow

    crm = live.stack.crm.client()
    siren = _siren()
    vat = str(siren_number.to_tva(siren))
    created = _new_account(crm, siren=siren, vat=vat if vat.startswith("FR") else f"FR{vat}")
    broken = _new_account(crm, siren=_siren(), vat="FR12345678901")
    before = _last_run_id()

    state = sync_flow(force=True, return_state=True)

    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    runs = _runs(flow_run_id)
    assert {r.kind for r in runs} >= {"observe", "plan", "apply"}
    ledger = _ledger()
    try:
        with ledger.engine.connect() as conn:
            started_meanwhile = conn.execute(
                sa.select(t.runs.c.flow_run_id).where(t.runs.c.id > before)
            ).scalars()
            assert set(started_meanwhile) == {flow_run_id}, "every ledger run carries the id"
    finally:
        ledger.close()

    artifacts = _artifacts(flow_run_id)
    assert "sync-summary" in artifacts
    (table,) = artifacts["sync-clients"]
    rows = {row["system"]: row for row in json.loads(table.data)}
    counts = _ledger_counts(flow_run_id)
    for side in ("crm", "erp"):
        row, planned = rows[side.upper()], counts.get(("plan", side), {})
        for kind, column in (
            ("created", "created"),
            ("updated", "updated"),
            ("unchanged", "unchanged"),
            ("quarantined", "quarantined"),
            ("deferred", "deferred"),
            ("conflict", "conflicts"),
        ):
            assert row[column] == planned.get(kind, 0), (side, column)
        assert row["read"] == counts.get(("observe", side), {}).get("read", 0)
    crm_row = rows["CRM"]
    assert crm_row["created"] >= 1, f"account {created} was created in the ERP"
    assert broken in crm_row["needs a person"], "the broken VAT waits for a person"
    (summary,) = artifacts["sync-summary"]
    assert broken in str(summary.data)
    ledger = _ledger()
    try:
        reasons = [q.message for q in ledger.quarantined() if q.source_key == broken]
    finally:
        ledger.close()
    assert any(reason in str(summary.data) for reason in reasons), "it says why, as the ledger"


def test_an_idle_cycle_starts_no_meltano_job(prefect: FlowSettings):
    from coulisse.orchestration.flow import sync_flow

    # Whatever other tests changed since the last read is read now; then nothing is left.
    assert sync_flow(return_state=True).is_completed()
    log = StackLayout.from_env().home / "logs" / "sync.log"
    log_size, before = log.stat().st_size, _last_run_id()

    started = time.monotonic()
    state = sync_flow(return_state=True)
    seconds = time.monotonic() - started

    assert state.is_completed(), state.message
    outcome = state.result()
    assert isinstance(outcome, dict)
    assert outcome["idle"] is True, outcome["checks"]
    assert log.stat().st_size == log_size, "no `meltano run` started"
    assert _last_run_id() == before, "no ledger run"
    print(f"idle flow run against a running server: {seconds:.2f} s")


def test_overlapping_runs_never_both_write(prefect: FlowSettings):
    from coulisse.orchestration.flow import sync_flow

    states: dict[str, Any] = {}

    def run(name: str, **options: Any) -> None:
        states[name] = sync_flow(force=True, return_state=True, **options)

    first = threading.Thread(target=run, args=("first",))
    first.start()
    ledger = _ledger()
    try:
        deadline = time.monotonic() + 60
        while not (ledger.lock_holder() or "").startswith("prefect flow run"):
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        waiting = threading.Thread(target=run, args=("waiting",), kwargs={"lock_wait": 600})
        waiting.start()
        skipped = sync_flow(force=True, lock_wait=0, return_state=True)
        first.join(600)
        waiting.join(600)
    finally:
        ledger.close()

    assert skipped.name == "Skipped"
    assert "held by prefect flow run" in (skipped.message or "")
    assert not _runs(str(skipped.state_details.flow_run_id)), "the skipped run wrote nothing"
    assert states["first"].is_completed(), states["first"].message
    assert states["waiting"].is_completed(), states["waiting"].message
    first_runs = _runs(str(states["first"].state_details.flow_run_id))
    later_runs = _runs(str(states["waiting"].state_details.flow_run_id))
    assert first_runs
    assert later_runs
    assert max(r.finished_at for r in first_runs) <= min(r.started_at for r in later_runs), (
        "the waiting run started once the first had finished"
    )


def test_a_failing_step_fails_the_flow_run_with_its_cause(
    prefect: FlowSettings, monkeypatch: pytest.MonkeyPatch
):
    from coulisse.orchestration.flow import sync_flow

    monkeypatch.setenv("TRYTON_PASSWORD", "not-the-password")

    state = sync_flow(force=True, return_state=True)

    assert state.is_failed()
    message = state.message or ""
    assert "`meltano run tap-bottlecrm target-ledger-crm tap-tryton target-ledger-erp`" in message
    assert "refused the login" in message, "the tap's own words say what to fix"
    assert "TRYTON_PASSWORD" in message
    ledger = _ledger()
    try:
        assert ledger.lock_holder() is None, "a failed run gives the lock back"
    finally:
        ledger.close()
    (summary,) = _artifacts(str(state.state_details.flow_run_id))["sync-summary"]
    assert "failed" in str(summary.data)


def test_the_served_deployment_runs_a_sync_on_demand(prefect: FlowSettings):
    import subprocess

    from coulisse.orchestration.server import PrefectStack

    env = {**os.environ, "COULISSE_PREFECT_PORT": str(prefect.port)}
    env.update({"PREFECT_HOME": str(prefect.prefect_home), "COULISSE_SYNC_INTERVAL": "3600"})
    stack = PrefectStack(StackLayout.from_env(), prefect, env)
    stack.start_worker()
    try:
        coulisse = str(StackLayout.from_env().root / ".venv" / "bin" / "coulisse")
        result = subprocess.run(
            [coulisse, "flows", "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{prefect.ui_url}/runs/flow-run/" in result.stdout
        status = subprocess.run(
            [coulisse, "flows", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert json.loads(status.stdout)["deployment_served"] is True
    finally:
        assert stack.worker.stop()
