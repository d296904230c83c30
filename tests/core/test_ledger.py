"""The ledger on SQLite and PostgreSQL: observations, links, operations, quarantine, lock."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from coulisse.ledger import (
    Ledger,
    LedgerError,
    LockBusyError,
    NewOperation,
    ObservedRecord,
    QuarantineItem,
    SweepRefusedError,
)
from coulisse.ledger.tables import metadata

if TYPE_CHECKING:
    from coulisse.model import Side


def _client(key: str, side: Side = "crm", **values: object) -> ObservedRecord:
    return ObservedRecord(key, {"source": side, f"{side}_id": key, **values})


def test_migrations_create_exactly_the_declared_tables(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_observing_marks_what_changed_and_ignores_what_did_not(ledger: Ledger) -> None:
    run = ledger.start_run("observe", "crm")
    first = ledger.observe(run, "crm", "client", [_client("a1", name="Dupont"), _client("a2")])
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    run = ledger.start_run("observe", "crm")
    again = ledger.observe(
        run,
        "crm",
        "client",
        [
            # Only the update time moved: same content.
            ObservedRecord(
                "a1",
                {"source": "crm", "crm_id": "a1", "name": "Dupont", "source_updated_at": "x"},
            ),
            _client("a2", name="Martin"),
        ],
    )
    assert (again.created, again.updated, again.unchanged) == (0, 1, 1)
    assert ledger.events(run) == {
        ("crm", "client", "a1"): "unchanged",
        ("crm", "client", "a2"): "updated",
    }
    assert ledger.observed_record("crm", "client", "a2") == {
        "source": "crm",
        "crm_id": "a2",
        "name": "Martin",
    }


def test_amounts_keep_every_digit(ledger: Ledger) -> None:
    run = ledger.start_run("observe", "erp")
    ledger.observe(run, "erp", "client", [_client("7", "erp", balance_due=Decimal("1250.10"))])
    stored = ledger.observed_record("erp", "client", "7")
    assert stored is not None
    assert stored["balance_due"] == Decimal("1250.10")


def test_a_record_sent_twice_in_a_run_has_one_event(ledger: Ledger) -> None:
    run = ledger.start_run("observe", "crm")
    ledger.observe(run, "crm", "client", [_client("a1"), _client("a1", name="x")])
    ledger.observe(run, "crm", "client", [_client("a1", name="x")])
    assert ledger.events(run) == {("crm", "client", "a1"): "created"}


def test_batches_of_thousands(ledger: Ledger) -> None:
    run = ledger.start_run("observe", "crm")
    records = [_client(f"c{number:05d}", name=f"Client {number}") for number in range(5000)]
    assert ledger.observe(run, "crm", "client", records).created == 5000
    assert ledger.observe(run, "crm", "client", records).unchanged == 5000


def test_a_full_scan_marks_unseen_records_deleted(ledger: Ledger) -> None:
    first = ledger.start_run("observe", "crm")
    ledger.observe(
        first, "crm", "client", [_client(key) for key in ("a1", "a2", "a3", "a4")], version=first
    )
    scan = ledger.start_run("observe", "crm")
    ledger.observe(
        scan, "crm", "client", [_client(key) for key in ("a1", "a2", "a3")], version=scan
    )
    assert ledger.sweep_unseen(scan, "crm", "client", scan) == 1
    assert ledger.is_deleted("crm", "client", "a4")
    assert not ledger.is_deleted("crm", "client", "a1")
    # Seen again: back to life.
    ledger.observe(scan, "crm", "client", [_client("a4")], version=scan)
    assert not ledger.is_deleted("crm", "client", "a4")


def test_a_truncated_scan_deletes_nothing(ledger: Ledger) -> None:
    first = ledger.start_run("observe", "crm")
    ledger.observe(first, "crm", "client", [_client(f"a{n}") for n in range(10)], version=first)
    scan = ledger.start_run("observe", "crm")
    ledger.observe(scan, "crm", "client", [_client("a1")], version=scan)
    with pytest.raises(SweepRefusedError, match="missed 9 of 10 records"):
        ledger.sweep_unseen(scan, "crm", "client", scan)
    assert not ledger.is_deleted("crm", "client", "a2")


def test_links_are_unique_per_record(ledger: Ledger) -> None:
    alone = ledger.link("client", "a1", None, origin="crm")
    completed = ledger.link("client", "a1", "7", origin="vat")
    assert completed.id == alone.id
    assert completed.erp_key == "7"
    with pytest.raises(LedgerError, match="is linked to ERP 7"):
        ledger.link("client", "a1", "8", origin="vat")
    assert ledger.count_links("client") == 1


@pytest.mark.postgres
def test_two_workers_racing_to_link_the_same_record_make_one_link(pg_url: str) -> None:
    Ledger.open(pg_url).close()
    workers = [Ledger.open(pg_url, migrate=False) for _ in range(8)]
    start = threading.Barrier(len(workers))
    results: list[int] = []
    errors: list[BaseException] = []

    def link(worker: Ledger, number: int) -> None:
        start.wait()
        try:
            for key in range(50):
                erp_key = str(key) if number % 2 else None
                results.append(worker.link("client", f"a{key}", erp_key, origin="race").id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=link, args=(worker, number))
        for number, worker in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    check = workers[0]
    assert check.count_links("client") == 50
    links = check.links_for("client", "crm", [f"a{key}" for key in range(50)])
    assert {link.erp_key for link in links.values()} == {str(key) for key in range(50)}
    for worker in workers:
        worker.close()


def _queue(ledger: Ledger, key: str = "a1") -> int:
    link = ledger.link("client", key, None, origin="crm")
    run = ledger.start_run("plan")
    ledger.add_operations(
        run,
        [
            NewOperation(
                link_id=link.id,
                entity="client",
                side="erp",
                action="create",
                payload={"crm_id": key, "name": "Dupont", "phone": "+33142685300"},
                changed_fields=["name", "phone"],
                source_side="crm",
                source_key=key,
                source_hash="h1",
            )
        ],
    )
    return ledger.pending_operations("erp")[-1].id


def test_an_applied_write_links_the_new_record_and_remembers_what_was_stored(
    ledger: Ledger,
) -> None:
    operation_id = _queue(ledger)
    stored = {"name": "Dupont", "phone": "+33 1 42 68 53 00"}
    assert ledger.record_applied(operation_id, system_id="42", stored=stored)
    assert not ledger.record_applied(operation_id, system_id="42", stored=stored)
    link = ledger.get_link(ledger.operation(operation_id).link_id)
    assert link.erp_key == "42"
    assert link.agreed == {"name": "Dupont", "phone": "+33142685300"}
    assert link.erp_echo == stored
    assert ledger.pending_operations("erp") == []


def test_a_refused_write_quarantines_its_source_with_the_systems_words(ledger: Ledger) -> None:
    operation_id = _queue(ledger)
    assert ledger.record_refused(
        operation_id, message="VAT FR123: rejected by the ERP (invalid VAT)", field="vat"
    )
    (entry,) = ledger.quarantined()
    assert (entry.side, entry.source_key, entry.reason) == ("crm", "a1", "refused_by_erp")
    assert entry.message == "VAT FR123: rejected by the ERP (invalid VAT)"
    assert not ledger.record_applied(operation_id, system_id="42")


def test_a_failed_write_is_retried_then_given_up(ledger: Ledger) -> None:
    operation_id = _queue(ledger)
    for _ in range(2):
        (claimed,) = ledger.claim_operations("erp", "worker-1")
        assert claimed.id == operation_id
        assert ledger.record_failed(operation_id, message="503 from the ERP", max_attempts=2)
    assert ledger.operation(operation_id).status == "failed"


def test_claimed_writes_go_to_one_worker_only(ledger: Ledger) -> None:
    ids = {_queue(ledger, f"a{number}") for number in range(10)}
    first = ledger.claim_operations("erp", "worker-1", limit=6)
    second = ledger.claim_operations("erp", "worker-2", limit=6)
    assert len(first) == 6
    assert len(second) == 4
    assert {op.id for op in first} | {op.id for op in second} == ids
    assert ledger.claim_operations("erp", "worker-3") == []
    # A vanished worker's claims come back after the lease.
    assert len(ledger.claim_operations("erp", "worker-3", lease=dt.timedelta(0))) == 10


@pytest.mark.postgres
def test_two_workers_never_apply_the_same_write_twice(pg_url: str) -> None:
    setup = Ledger.open(pg_url)
    ids = [_queue(setup, f"a{number}") for number in range(40)]
    workers = [Ledger.open(pg_url, migrate=False) for _ in range(4)]
    start = threading.Barrier(len(workers))
    applied: list[int] = []

    def apply(worker: Ledger) -> None:
        start.wait()
        for operation_id in ids:
            if worker.record_applied(operation_id, system_id=f"erp-{operation_id}"):
                applied.append(operation_id)

    threads = [threading.Thread(target=apply, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(applied) == sorted(ids)
    for worker in [setup, *workers]:
        worker.close()


def test_quarantine_keeps_first_and_last_seen(ledger: Ledger) -> None:
    item = QuarantineItem("crm", "client", "a1", "vat_checksum", "vat", "VAT FR1: bad")
    ledger.quarantine(None, [item])
    (first,) = ledger.quarantined()
    ledger.quarantine(None, [item])
    (again,) = ledger.quarantined()
    assert again.first_seen_at == first.first_seen_at
    assert again.last_seen_at >= first.last_seen_at


def test_one_run_at_a_time(ledger: Ledger) -> None:
    with (
        ledger.lock("prefect flow 1"),
        pytest.raises(LockBusyError, match="held by prefect flow 1"),
        ledger.lock("coulisse plan"),
    ):
        pass
    with ledger.lock("coulisse plan"):
        assert ledger.lock_holder() == "coulisse plan"
    assert ledger.lock_holder() is None


def test_an_expired_lock_is_taken_over(ledger: Ledger) -> None:
    assert ledger.acquire_lock("crashed worker", ttl=dt.timedelta(seconds=-1))
    assert ledger.acquire_lock("next worker")


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    run = ledger.start_run("observe", "crm")
    with pytest.raises(ValueError, match="naive"):
        ledger.observe(
            run,
            "crm",
            "client",
            [ObservedRecord("a1", {}, dt.datetime(2026, 1, 1))],
        )


def test_threads_opening_one_ledger_at_once_all_get_it(sqlite_url: str) -> None:
    """Sinks drain in parallel threads and flow runs overlap: each opens (and migrates) the
    ledger; alembic's module-global context must not be shared between them."""
    from concurrent.futures import ThreadPoolExecutor

    def open_and_count(_: int) -> int:
        ledger = Ledger.open(sqlite_url)
        try:
            return ledger.count_links()
        finally:
            ledger.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(open_and_count, range(16))) == [0] * 16
