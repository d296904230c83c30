"""The CRM's own webhooks, live: BottleCRM signs and delivers inside its write request.

`coulisse stack up` registered this stack's receiver in the CRM (its URL on 127.0.0.1, at the
CRM's port + 5, which the sandbox settings alone allow) and wrote the signing secret to the
stack's env file; these tests listen there and change records through the CRM's API.
"""

from __future__ import annotations

import json
import subprocess
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
from coulisse.stack.crm import SCRIPTS_DIR
from coulisse.stack.crm_webhook import register_receiver
from coulisse.stack.envfile import read_env_file
from coulisse.sync import sync
from coulisse.tryton.references import crm_reference
from coulisse.webhooks.receiver import WebhookReceiver, make_server
from coulisse.webhooks.runner import SubprocessSync
from coulisse.webhooks.settings import receiver_port
from coulisse.webhooks.store import ChangeStore
from coulisse.webhooks.trigger import SyncTrigger

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.conftest import LiveStack

pytestmark = pytest.mark.live


class Listening:
    """The receiver on the port the stack registered, writing to the stack's ledger."""

    def __init__(self, live: LiveStack, *, run_syncs: bool) -> None:
        env = read_env_file(live.stack.layout.env_file)
        self.ledger = Ledger.open(env["COULISSE_LEDGER_URL"])
        self.store = ChangeStore(self.ledger.engine)
        self.trigger = (
            SyncTrigger(self.store, SubprocessSync(), debounce=1.0) if run_syncs else None
        )
        receiver = WebhookReceiver(
            env["COULISSE_WEBHOOK_SECRET"],
            self.store,
            on_flagged=self.trigger.notify if self.trigger else None,
        )
        port = receiver_port({"COULISSE_CRM_PORT": str(live.stack.settings.crm_port)})
        self.server = make_server(receiver, "127.0.0.1", port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        if self.trigger:
            self.trigger.start()

    def flags_since(self, first_id: int) -> list[Any]:
        with self.ledger.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(t.crm_changes)
                    .where(t.crm_changes.c.id > first_id)
                    .order_by(t.crm_changes.c.id)
                ).all()
            )

    def last_flag_id(self) -> int:
        with self.ledger.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.crm_changes.c.id))).scalar() or 0)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.trigger:
            self.trigger.stop(120)
        # Nothing left for another test's run: what the receiver flagged here is settled.
        pending = [c.id for c in self.store.pending()]
        self.store.mark_consumed(pending, consumed_by="tests/webhooks teardown")
        self.ledger.close()


@pytest.fixture
def listening(live: LiveStack) -> Iterator[Listening]:
    receiver = Listening(live, run_syncs=False)
    yield receiver
    receiver.close()


def test_a_crm_account_change_arrives_signed_and_is_flagged(live: LiveStack, listening: Listening):
    crm = live.stack.crm.client()
    before = listening.last_flag_id()
    name = f"Webhook Vérif {uuid.uuid4().hex[:6]}"
    account_id = crm.post("accounts/", {"name": name, "city": "Lyon", "country": "FR"})["id"]
    try:
        crm.patch(f"accounts/{account_id}/", {"website": "https://verif.example"})
        # With eager Celery the CRM delivered inside each write request: no waiting.
        flags = listening.flags_since(before)
        mine = [(f.entity, f.crm_id, f.action, f.event) for f in flags if f.crm_id == account_id]
        assert mine == [
            ("client", account_id, "created", "account.created"),
            ("client", account_id, "updated", "account.updated"),
        ]
        assert all(f.consumed_at is None for f in flags)
        assert len({f.delivery_id for f in flags}) == len(flags), "one delivery id each"
        assert all(listening.store.was_received(f.delivery_id) for f in flags)
    finally:
        crm.delete(f"accounts/{account_id}/")
    deleted = listening.flags_since(before)[-1]
    assert (deleted.crm_id, deleted.action) == (account_id, "deleted")


def test_the_sandbox_relaxes_the_crm_url_check_for_its_receiver_only(live: LiveStack):
    """webhooks/ssrf.py still refuses every other private, loopback or non-HTTPS URL."""
    crm = live.stack.crm
    probe = (
        "import json, sys\n"
        "import django\n"
        "django.setup()\n"
        "from webhooks import ssrf\n"
        "verdicts = {}\n"
        "for url in json.load(sys.stdin):\n"
        "    try:\n"
        "        ssrf.validate_url(url)\n"
        "        verdicts[url] = 'allowed'\n"
        "    except ssrf.UnsafeDestination as exc:\n"
        "        verdicts[url] = str(exc)\n"
        "print(json.dumps(verdicts))\n"
    )
    urls = [
        "http://127.0.0.1:8746/bottlecrm",
        "http://localhost:8746/bottlecrm",
        "http://10.1.2.3/hook",
        "https://127.0.0.2/hook",
        "http://169.254.169.254/latest/meta-data",
        "https://user:pw@127.0.0.1/hook",
    ]
    result = subprocess.run(
        [str(crm.venv / "bin" / "python"), "-c", probe],
        input=json.dumps(urls),
        capture_output=True,
        text=True,
        env=crm._django_env(crm._database_name()),
        cwd=SCRIPTS_DIR,
        check=True,
    )
    verdicts = json.loads(result.stdout)
    assert verdicts.pop("http://127.0.0.1:8746/bottlecrm") == "allowed"
    assert all(v != "allowed" for v in verdicts.values()), verdicts


def test_registering_the_receiver_again_changes_nothing_and_keeps_the_secret(live: LiveStack):
    env_file = live.stack.layout.env_file
    secret = read_env_file(env_file)["COULISSE_WEBHOOK_SECRET"]
    assert secret.startswith("whsec_"), "minted by the CRM"
    again = register_receiver(live.stack.crm)
    assert again["changed"] is False
    assert again["url"] == f"http://127.0.0.1:{live.stack.settings.crm_port + 5}/bottlecrm"
    assert set(again["events"]) >= {"account.created", "account.updated", "account.deleted"}
    assert secret not in json.dumps(again)
    assert read_env_file(env_file)["COULISSE_WEBHOOK_SECRET"] == secret


def _new_client_body() -> dict[str, Any]:
    body = f"{uuid.uuid4().int % 90_000_000 + 10_000_000}"
    siren = body + luhn.calc_check_digit(body)
    vat = str(siren_number.to_tva(siren))
    return {
        "name": f"Menuiserie Webhook {uuid.uuid4().hex[:6]} SARL",
        "email": "contact@menuiserie.example",
        "phone": "04 78 00 11 22",
        "address_line": "8 place Bellecour",
        "postcode": "69002",
        "city": "Lyon",
        "country": "FR",
        "custom_fields": {"vat": vat if vat.startswith("FR") else f"FR{vat}", "siren": siren},
    }


@pytest.mark.e2e
def test_a_crm_change_reaches_the_erp_through_the_webhook(live: LiveStack):
    """`coulisse serve`'s path: signed delivery, flag, debounced targeted sync, ERP written."""
    sync(("client",))  # a settled starting point: what was pending elsewhere is synced
    receiver = Listening(live, run_syncs=True)
    try:
        crm, erp = live.stack.crm.client(), live.stack.erp.client()
        changed_at = time.monotonic()
        new_id = crm.post("accounts/", _new_client_body())["id"]
        reference = crm_reference(new_id)
        deadline = changed_at + 60
        while not erp.search("party.identifier", [("code", "=", reference)]):
            assert time.monotonic() < deadline, "the new CRM client never reached the ERP"
            time.sleep(0.2)
        latency = time.monotonic() - changed_at
        print(f"CRM create -> ERP party through the webhook: {latency:.1f} s")
        assert receiver.trigger is not None
        deadline = time.monotonic() + 90
        while receiver.store.count_pending():
            assert time.monotonic() < deadline, "flags left unconsumed"
            time.sleep(0.2)
        consumed = [f for f in receiver.flags_since(0) if f.crm_id == new_id]
        assert consumed
        assert all(f.consumed_by.startswith("coulisse serve") for f in consumed)
    finally:
        receiver.close()
