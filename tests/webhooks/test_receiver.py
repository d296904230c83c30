"""`coulisse serve`'s receiver over a real socket: what it accepts, refuses, and remembers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import requests
import sqlalchemy as sa

from coulisse.ledger import Ledger
from coulisse.ledger import tables as t
from coulisse.webhooks.receiver import WebhookReceiver, make_server
from coulisse.webhooks.signature import sign
from coulisse.webhooks.store import ChangeStore
from coulisse.webhooks.trigger import Outcome, SyncTrigger
from tests.webhooks.conftest import SECRET, account_event

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from coulisse.webhooks.store import CrmChange


class Receiver:
    """A receiver listening on a free port of 127.0.0.1, in a thread."""

    def __init__(self, store: ChangeStore, on_flagged: Callable[[], None] | None = None) -> None:
        self.flagged = 0

        def count() -> None:
            self.flagged += 1
            if on_flagged:
                on_flagged()

        self.server = make_server(WebhookReceiver(SECRET, store, on_flagged=count), "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bottlecrm"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(store: ChangeStore) -> Iterator[Receiver]:
    running = Receiver(store)
    yield running
    running.close()


def deliver(
    url: str,
    body: bytes,
    *,
    delivery_id: str | None = None,
    signature: str | None = None,
    signed_at: int | None = None,
    secret: str = SECRET,
    event: str = "account.updated",
) -> requests.Response:
    """POST as BottleCRM does (webhooks/tasks.py: build_request)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "BottleCRM-Webhooks",
        "X-BottleCRM-Event": event,
        "X-BottleCRM-Delivery": delivery_id or str(uuid.uuid4()),
    }
    if signature is None:
        signature = sign(secret, signed_at or int(time.time()), body)
    if signature:
        headers["X-BottleCRM-Signature"] = signature
    return requests.post(url, data=body, headers=headers, timeout=5)


def flags(ledger: Ledger) -> list[Any]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(sa.select(t.crm_changes).order_by(t.crm_changes.c.id)).all())


def deliveries(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(t.webhook_deliveries)).scalar_one()
        )


def test_a_valid_delivery_is_accepted_and_its_account_flagged(receiver: Receiver, ledger: Ledger):
    account = str(uuid.uuid4())
    delivery = str(uuid.uuid4())
    answer = deliver(receiver.url, account_event(account), delivery_id=delivery)
    assert answer.status_code == 202
    assert answer.json() == {"accepted": True, "flagged": 1}
    (flag,) = flags(ledger)
    assert (flag.entity, flag.crm_id, flag.action, flag.delivery_id) == (
        "client",
        account,
        "updated",
        delivery,
    )
    assert flag.consumed_at is None
    assert flag.source_updated_at.isoformat() == "2025-03-01T10:00:00+00:00"
    assert receiver.flagged == 1


def test_a_tampered_body_is_refused_and_flags_nothing(receiver: Receiver, ledger: Ledger):
    body = account_event()
    signature = sign(SECRET, int(time.time()), body)
    answer = deliver(receiver.url, body.replace(b"Boulangerie", b"Boucherie"), signature=signature)
    assert (answer.status_code, answer.json()["reason"]) == (401, "mismatch")
    assert flags(ledger) == []
    assert deliveries(ledger) == 0


def test_a_delivery_signed_with_another_secret_is_refused(receiver: Receiver, ledger: Ledger):
    answer = deliver(receiver.url, account_event(), secret="whsec_not-ours")
    assert (answer.status_code, answer.json()["reason"]) == (401, "mismatch")
    assert SECRET not in answer.text
    assert flags(ledger) == []


def test_an_unsigned_delivery_is_refused(receiver: Receiver, ledger: Ledger):
    answer = deliver(receiver.url, account_event(), signature="")
    assert (answer.status_code, answer.json()["reason"]) == (401, "unsigned")
    assert flags(ledger) == []


def test_an_expired_delivery_is_refused(receiver: Receiver, ledger: Ledger):
    answer = deliver(receiver.url, account_event(), signed_at=int(time.time()) - 301)
    assert (answer.status_code, answer.json()["reason"]) == (401, "expired")
    assert flags(ledger) == []


def test_a_replayed_delivery_is_refused_even_after_a_restart(
    receiver: Receiver, ledger: Ledger, tmp_path: Path
):
    body = account_event()
    delivery = str(uuid.uuid4())
    signature = sign(SECRET, int(time.time()), body)
    first = deliver(receiver.url, body, delivery_id=delivery, signature=signature)
    replay = deliver(receiver.url, body, delivery_id=delivery, signature=signature)
    assert (first.status_code, replay.status_code) == (202, 409)
    assert replay.json()["reason"] == "replayed"
    # Signed anew (only the secret's holder can: BottleCRM retrying a delivery whose answer
    # it missed): answered 2xx so it stops retrying, and nothing is flagged twice.
    resigned = deliver(receiver.url, body, delivery_id=delivery, signed_at=int(time.time()) - 5)
    assert (resigned.status_code, resigned.json()) == (
        200,
        {"accepted": True, "duplicate": True, "flagged": 0},
    )
    # The memory is the ledger's: a receiver started again on it still refuses the replay.
    receiver.close()
    reopened = Ledger.open(str(ledger.engine.url))
    again = Receiver(ChangeStore(reopened.engine))
    try:
        assert (
            deliver(again.url, body, delivery_id=delivery, signature=signature).status_code == 409
        )
    finally:
        again.close()
        reopened.close()
    assert len(flags(ledger)) == 1
    assert receiver.flagged == 1


def test_events_coulisse_does_not_sync_are_accepted_and_flag_nothing(
    receiver: Receiver, ledger: Ledger
):
    ping = json.dumps({"id": str(uuid.uuid4()), "event": "ping", "data": {}}).encode()
    lead = account_event(event="lead.created")
    for body, event in ((ping, "ping"), (lead, "lead.created")):
        answer = deliver(receiver.url, body, event=event)
        assert (answer.status_code, answer.json()) == (202, {"accepted": True, "flagged": 0})
    assert flags(ledger) == []
    assert deliveries(ledger) == 2
    assert receiver.flagged == 0


def test_a_contact_flags_its_account_and_a_deletion_is_kept_as_such(
    receiver: Receiver, ledger: Ledger
):
    account = str(uuid.uuid4())
    contact = json.dumps(
        {"id": "e1", "event": "contact.updated", "data": {"id": "c1", "account_id": account}}
    ).encode()
    deleted = account_event(account, event="account.deleted")
    deal = json.dumps({"id": "e2", "event": "deal.won", "data": {"id": "d1"}}).encode()
    for body in (contact, deleted, deal):
        assert deliver(receiver.url, body).status_code == 202
    assert [(f.entity, f.crm_id, f.action) for f in flags(ledger)] == [
        ("client", account, "updated"),
        ("client", account, "deleted"),
        ("order", "d1", "won"),
    ]


@pytest.mark.parametrize(
    ("body", "delivery_id", "status"),
    [
        (b"not json", "d-not-json", 400),
        (b'{"no": "event"}', "d-no-event", 400),
        (account_event(), "../../etc/passwd", 400),
    ],
)
def test_what_is_not_a_delivery_is_refused(
    receiver: Receiver, ledger: Ledger, body, delivery_id, status
):
    assert deliver(receiver.url, body, delivery_id=delivery_id).status_code == status
    assert flags(ledger) == []


def test_only_the_receiver_path_takes_deliveries(receiver: Receiver):
    base = receiver.url.rsplit("/", 1)[0]
    assert deliver(f"{base}/other", account_event()).status_code == 404
    assert requests.get(f"{base}/health", timeout=5).json() == {"ok": True}


def test_the_answer_does_not_wait_for_the_sync(store: ChangeStore, ledger: Ledger):
    """The CRM waits for the answer inside its own write: the run happens after it."""
    started = threading.Event()
    release = threading.Event()

    def slow_sync(changes: Sequence[CrmChange]) -> tuple[Outcome, str]:
        started.set()
        release.wait(10)
        return Outcome.DONE, "test"

    trigger = SyncTrigger(store, slow_sync, debounce=0.05)
    trigger.start()
    running = Receiver(store, on_flagged=trigger.notify)
    try:
        assert deliver(running.url, account_event()).status_code == 202
        assert started.wait(5), "the flag started a run"
        began = time.monotonic()
        answer = deliver(running.url, account_event())
        assert answer.status_code == 202
        assert time.monotonic() - began < 1.0, "answered while the run was still going"
    finally:
        release.set()
        running.close()
        trigger.stop(10)
