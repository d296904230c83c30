"""The change check and the run report, without a live system: what a cycle decides to run."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from coulisse.ledger import Ledger
from coulisse.ledger import tables as t
from coulisse.ledger.store import EventItem, QuarantineItem, utcnow
from coulisse.orchestration import changes
from coulisse.orchestration.erp_changes import ErpCheck, check_erp, cursor_moved
from coulisse.orchestration.meltano_state import singer_state
from coulisse.orchestration.report import build_report, markdown

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

NOON = dt.datetime(2026, 11, 26, 12, 0)  # Tryton's datetimes: naive UTC
SEEN = {"latest": "2026-11-26T12:00:00+00:00", "seen": [[3, "2026-11-26T12:00:00+00:00"]]}


class FakeTryton:
    """Answers the check's reads from a table of rows per model."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]], today: dt.date) -> None:
        self.rows = rows
        self.today = today
        self.calls = 0
        self.asked: list[tuple[str, Any, int | None]] = []

    def search_read(
        self, model: str, domain: Sequence[Any], fields: Sequence[str], limit: int | None
    ) -> list[dict[str, Any]]:
        self.calls += 1
        self.asked.append((model, domain, limit))
        return self.rows.get(model, [])[:limit]

    def company_dates(self) -> list[dt.date]:
        return [self.today]

    def close(self) -> None:
        """Nothing to release: the rows are in memory."""


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    yield opened
    opened.close()


def _meltano_env(tmp_path: Path, bookmarks: dict[str, Any]) -> dict[str, str]:
    """A Meltano system database holding tap-tryton's state, as `meltano run` leaves it."""
    url = f"sqlite:///{tmp_path / 'meltano.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE state (state_id VARCHAR PRIMARY KEY, completed_state TEXT, "
                "partial_state TEXT, updated_at TIMESTAMP)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO state VALUES (:id, :completed, :partial, NULL)"),
            {
                "id": "dev:tap-tryton-to-target-ledger-erp",
                "completed": json.dumps({"singer_state": {"bookmarks": bookmarks}}),
                "partial": json.dumps({}),
            },
        )
    engine.dispose()
    return {"MELTANO_DATABASE_URI": url}


def _clients_state(overdue_as_of: str) -> dict[str, Any]:
    from tap_tryton.streams import watched_models

    models = watched_models(dt.timedelta(minutes=5))
    return {
        "clients": {
            "cursors": dict.fromkeys(models, SEEN),
            "overdue_as_of": overdue_as_of,
        }
    }


def test_the_state_is_read_from_meltanos_system_database(tmp_path: Path):
    env = _meltano_env(tmp_path, {"clients": {"overdue_as_of": "2026-11-26"}})
    assert singer_state(env, "tap-tryton", "target-ledger-erp") == {
        "bookmarks": {"clients": {"overdue_as_of": "2026-11-26"}}
    }
    assert singer_state(env, "tap-bottlecrm", "target-ledger-crm") is None
    assert singer_state({**env, "MELTANO_STATE_BACKEND_URI": "s3://bucket/state"}, "a", "b") is None
    no_db = {"MELTANO_DATABASE_URI": f"sqlite:///{tmp_path / 'none.db'}"}
    assert singer_state(no_db, "tap-tryton", "target-ledger-erp") is None


def _cursor() -> Any:
    from tap_tryton.client import ChangeCursor

    cursor = ChangeCursor("party.address", dt.timedelta(minutes=5))
    cursor.load(SEEN)
    return cursor


@pytest.mark.parametrize(
    ("rows", "moved"),
    [
        ([], False),  # the row seen was deleted: the tap cannot see that either
        ([{"id": 3, "create_date": NOON, "write_date": None}], False),
        # A long transaction committed a change stamped before the cursor: a count of rows
        # newer than the cursor would miss it.
        ([{"id": 3, "create_date": NOON}, {"id": 4, "create_date": NOON.replace(minute=0)}], True),
        ([{"id": 3, "create_date": NOON, "write_date": NOON.replace(second=1)}], True),
        ([{"id": 9, "create_date": NOON}], True),
    ],
)
def test_a_cursor_moved_when_the_tap_would_read_a_row(rows: list[dict[str, Any]], moved: bool):
    fake = FakeTryton({"party.address": rows}, dt.date(2026, 11, 26))
    assert cursor_moved(fake, _cursor()) is moved
    ((_model, _domain, limit),) = fake.asked
    assert limit == 2, "never more than one row beyond what the cursor saw"


def test_an_idle_erp_needs_one_read_per_watched_model(tmp_path: Path):
    env = _meltano_env(tmp_path, _clients_state("2026-11-26"))
    fake = FakeTryton({"party.party": [{"id": 3, "create_date": NOON}]}, dt.date(2026, 11, 26))
    check = check_erp(env, ("client",), tryton=fake)
    assert not check.changed, check.reasons
    assert check.calls == 6, "party, address, contact, identifier, invoice, move line"


def test_a_new_day_is_a_change_for_invoices_that_fell_due(tmp_path: Path):
    env = _meltano_env(tmp_path, _clients_state("2026-11-25"))
    fake = FakeTryton({}, dt.date(2026, 11, 26))
    check = check_erp(env, ("client",), tryton=fake)
    assert check.changed
    assert "a new day" in check.reasons[0]


def test_a_stream_never_read_is_a_change(tmp_path: Path):
    env = _meltano_env(tmp_path, _clients_state("2026-11-26"))
    fake = FakeTryton({}, dt.date(2026, 11, 26))
    check = check_erp(env, ("product",), tryton=fake)
    assert check.changed
    assert check.calls == 0


def _flag(ledger: Ledger, crm_id: str, action: str = "updated", entity: str = "client") -> None:
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.insert(t.crm_changes).values(
                entity=entity,
                crm_id=crm_id,
                action=action,
                event=f"account.{action}",
                delivery_id=f"d-{crm_id}",
                received_at=utcnow(),
            )
        )


@pytest.fixture
def quiet_erp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "check_erp", lambda env, entities: ErpCheck())


def _check(ledger: Ledger, *, read_minutes_ago: float = 1, force: bool = False) -> Any:
    now = utcnow()
    return changes.check_changes(
        ledger,
        {},
        ("client",),
        last_crm_reads={"client": now - dt.timedelta(minutes=read_minutes_ago)},
        crm_read_every=dt.timedelta(minutes=10),
        force=force,
        now=now,
    )


@pytest.mark.usefixtures("quiet_erp")
def test_nothing_changed_is_an_idle_cycle(ledger: Ledger):
    work = _check(ledger)
    assert work.idle
    assert work.observe_pairs() == []


@pytest.mark.usefixtures("quiet_erp")
def test_flagged_crm_records_are_read_by_id(ledger: Ledger):
    _flag(ledger, "a1")
    _flag(ledger, "a2")
    _flag(ledger, "deal-1", entity="order")  # not synced in this cycle: left for its own
    work = _check(ledger)
    assert not work.idle
    assert work.observe_pairs() == [("tap-bottlecrm", "target-ledger-crm")]
    env = work.observe_env()
    assert json.loads(env["TAP_BOTTLECRM_ACCOUNT_IDS"]) == ["a1", "a2"]
    assert json.loads(env["TAP_BOTTLECRM__SELECT_FILTER"]) == ["clients"]
    assert [c.crm_id for c in work.flags] == ["a1", "a2"]
    assert changes.consume_crm_changes(ledger, work.flags, by="test") == 2
    assert [c.crm_id for c in changes.pending_crm_changes(ledger)] == ["deal-1"]


@pytest.mark.usefixtures("quiet_erp")
def test_a_flagged_deletion_needs_a_full_read(ledger: Ledger):
    _flag(ledger, "a1")
    _flag(ledger, "a2", action="deleted")
    work = _check(ledger)
    assert work.crm_full == ("client",)
    assert "TAP_BOTTLECRM_ACCOUNT_IDS" not in work.observe_env()


@pytest.mark.usefixtures("quiet_erp")
def test_the_crm_is_read_in_full_every_n_minutes(ledger: Ledger):
    assert _check(ledger, read_minutes_ago=9).idle
    assert _check(ledger, read_minutes_ago=11).crm_full == ("client",)


@pytest.mark.usefixtures("quiet_erp")
def test_work_left_by_a_failed_run_is_taken_up_without_reading(ledger: Ledger):
    run = ledger.start_run("observe", "crm")
    from coulisse.ledger.store import ObservedRecord

    ledger.observe(run, "crm", "client", [ObservedRecord("a1", {"name": "Atelier"})])
    work = _check(ledger)
    assert work.unplanned
    assert not work.idle
    assert work.observe_pairs() == [], "a plan, no `meltano run`"


def test_the_report_counts_each_record_once_from_this_flow_runs_events(ledger: Ledger):
    observe = ledger.start_run("observe", "crm", flow_run_id="f1")
    ledger.record_events(observe, [EventItem("crm", "client", k, "created") for k in "abc"])
    plan = ledger.start_run("plan", flow_run_id="f1")
    ledger.record_events(
        plan,
        [
            EventItem("crm", "client", "a", "created"),
            EventItem("crm", "client", "b", "quarantined"),
            EventItem("crm", "client", "c", "deferred"),
        ],
    )
    ledger.quarantine(
        plan, [QuarantineItem("crm", "client", "b", "vat_checksum", "vat", "VAT FR1: bad")]
    )
    settle = ledger.start_run("plan", flow_run_id="f1")
    ledger.record_events(
        settle,
        [EventItem("crm", "client", "a", "updated"), EventItem("crm", "client", "c", "created")],
    )
    other = ledger.start_run("plan", flow_run_id="f2")
    ledger.record_events(other, [EventItem("crm", "client", "z", "conflict")])

    report = build_report(ledger, "f1")

    crm, erp = report.table("client")
    assert crm["read"] == 3
    assert crm["created"] == 2, "a: created, then updated by the read-back; c: deferred, then"
    assert crm["quarantined"] == 1
    assert crm["deferred"] == crm["conflicts"] == 0
    assert crm["needs a person"] == "b"
    assert erp["read"] == 0
    text = markdown(report, title="Sync test")
    assert "VAT FR1: bad" in text
    assert "`z`" not in text, "another flow run's events stay out"
