"""The trigger: one debounced run for a burst of flags, never two at once, retries, consumption."""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from coulisse.ledger.store import utcnow
from coulisse.webhooks.events import Delivery, FlaggedRecord
from coulisse.webhooks.runner import _steps, plan_command
from coulisse.webhooks.store import ChangeStore, CrmChange
from coulisse.webhooks.trigger import Outcome, SyncTrigger

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


def flag(
    store: ChangeStore, crm_id: str, *, entity: str = "client", action: str = "updated"
) -> None:
    record = FlaggedRecord(entity, crm_id, action, f"x.{action}", None)  # type: ignore[arg-type]
    delivery = Delivery(str(uuid.uuid4()), f"x.{action}", None, (record,))
    assert store.record_delivery(delivery, signed_at=utcnow())


class FakeSync:
    """Records each run and how many ran at the same time; answers as told."""

    def __init__(self, seconds: float = 0.0, outcomes: Sequence[Outcome] = ()) -> None:
        self.seconds = seconds
        self.outcomes = list(outcomes)
        self.runs: list[list[str]] = []
        self.active = 0
        self.most_at_once = 0
        self.lock = threading.Lock()
        self.ran = threading.Event()

    def __call__(self, changes: Sequence[CrmChange]) -> tuple[Outcome, str]:
        with self.lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
            self.runs.append([c.crm_id for c in changes])
        self.ran.set()
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome.DONE
        return outcome, f"fake run {len(self.runs)}"


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def stop_after() -> Iterator[list[SyncTrigger]]:
    started: list[SyncTrigger] = []
    yield started
    for trigger in started:
        trigger.stop(10)


def test_a_burst_of_flags_makes_one_run_and_is_consumed(store: ChangeStore, stop_after):
    sync = FakeSync()
    trigger = SyncTrigger(store, sync, debounce=0.3)
    stop_after.append(trigger)
    trigger.start()
    wait_for(lambda: store.count_pending() == 0)  # the start-up check finds nothing
    for crm_id in ("a1", "a2", "a3"):
        flag(store, crm_id)
        trigger.notify()
        time.sleep(0.05)
    wait_for(lambda: sync.runs)
    wait_for(lambda: store.count_pending() == 0)
    assert sync.runs == [["a1", "a2", "a3"]]


def test_runs_never_overlap_and_flags_of_a_running_sync_wait_for_the_next(
    store: ChangeStore, stop_after
):
    sync = FakeSync(seconds=0.5)
    trigger = SyncTrigger(store, sync, debounce=0.05)
    stop_after.append(trigger)
    trigger.start()
    flag(store, "a1")
    trigger.notify()
    wait_for(lambda: sync.active == 1)
    flag(store, "a2")  # arrives while a1's run is going
    trigger.notify()
    wait_for(lambda: len(sync.runs) == 2)
    assert sync.runs == [["a1"], ["a2"]]
    assert sync.most_at_once == 1
    wait_for(lambda: store.count_pending() == 0)


def test_busy_and_failed_runs_keep_the_flags_and_try_again(store: ChangeStore, stop_after):
    sync = FakeSync(outcomes=[Outcome.BUSY, Outcome.FAILED, Outcome.DONE])
    trigger = SyncTrigger(store, sync, debounce=0.01, busy_retry=0.1, failure_backoff=0.2)
    stop_after.append(trigger)
    flag(store, "a1")
    trigger.start()  # flags left from before a restart run at start-up
    wait_for(lambda: len(sync.runs) == 3)
    assert sync.runs == [["a1"], ["a1"], ["a1"]]
    wait_for(lambda: store.count_pending() == 0)
    with store.engine.connect() as conn:
        by = conn.exec_driver_sql("SELECT consumed_by FROM crm_changes").scalar_one()
    assert by == "fake run 3"


def test_a_broken_runner_does_not_stop_the_trigger(store: ChangeStore, stop_after):
    calls: list[int] = []

    def broken(changes: Sequence[CrmChange]) -> tuple[Outcome, str]:
        calls.append(len(changes))
        if len(calls) == 1:
            raise RuntimeError("meltano vanished")
        return Outcome.DONE, "second try"

    trigger = SyncTrigger(store, broken, debounce=0.01, failure_backoff=0.1)
    stop_after.append(trigger)
    flag(store, "a1")
    trigger.start()
    wait_for(lambda: store.count_pending() == 0)
    assert calls == [1, 1]


def change(crm_id: str, entity: str = "client", action: str = "updated") -> CrmChange:
    return CrmChange(0, entity, crm_id, action, f"x.{action}", "d", utcnow(), None)


def test_a_targeted_run_reads_only_the_flagged_accounts():
    args, env = plan_command([change("b"), change("a"), change("a")], ("client",))  # type: ignore[misc]
    assert args == ["sync", "--only", "clients", "--json"]
    assert env == {"TAP_BOTTLECRM_ACCOUNT_IDS": '["a", "b"]'}


def test_a_deleted_account_makes_a_full_scan_of_clients():
    planned = plan_command([change("a"), change("b", action="deleted")], ("client",))
    assert planned == (["sync", "--only", "clients", "--json"], {})


def test_entities_not_synced_yet_run_nothing_and_others_run_whole():
    assert plan_command([change("d1", entity="order")], ("client",)) is None
    planned = plan_command([change("d1", entity="order"), change("a")], ("client", "order"))
    assert planned == (
        ["sync", "--only", "clients,orders", "--json"],
        {"TAP_BOTTLECRM_ACCOUNT_IDS": '["a"]'},
    )


def test_the_run_log_line_sums_up_what_the_sync_did():
    output = '{"steps": [{"step": "observe", "seconds": 3.1}], "applied": {"erp": 1}}'
    assert _steps(output) == "observe 3.1 s; applied erp 1"
    assert _steps("Traceback...") == "(no summary)"
