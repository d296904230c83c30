"""Alerts, end to end: a real Prefect server's automations POST to a webhook receiver here.

The receiver is a local HTTP server in a thread, named by ``COULISSE_ALERT_WEBHOOK_URL`` as a
Slack or Teams incoming webhook would be. The server is the stack's own tooling on a test port
(CRM port + 3) and a fresh database; its alerts are set up as `coulisse flows up` sets them
(:meth:`coulisse.orchestration.server.PrefectStack.configure_alerts`). Flow runs go against the
live CRM and ERP, and fail or quarantine for real: a dead ERP address, CRM accounts with a VAT
number whose check digits are wrong.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from coulisse.ledger import Ledger
from coulisse.orchestration.alerts import AUTOMATIONS, BLOCK_NAME, LIST_COMMAND
from coulisse.project import ledger_url, project_env
from coulisse.stack.layout import StackLayout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.orchestration.server import PrefectStack
    from tests.conftest import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.e2e]

#: Every flow run of the module: no retries (a failure shows at once), and a threshold of 2
#: new quarantined records, so that one is not worth an alert and two are.
FLOW_ENV = {
    "COULISSE_STEP_RETRIES": "0",
    "COULISSE_STEP_RETRY_DELAY": "0",
    "COULISSE_ALERT_QUARANTINE_GROWTH": "2",
}
#: How long an alert may take to arrive; seen here: well under 2 s.
ALERT_WAIT = 60.0
#: How long a run that must not alert is watched after it ended.
QUIET_WAIT = 10.0


@dataclass
class Receiver:
    """A webhook receiver: every JSON POST it got, with when (wall clock) it got it."""

    url: str = ""
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _at, body in self.received]

    def wait_for(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float = ALERT_WAIT
    ) -> tuple[float, dict[str, Any]]:
        """The first message ``wanted`` accepts, waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for at, body in self.received:
                    if wanted(body):
                        return at, body
            time.sleep(0.1)
        pytest.fail(f"no such alert within {timeout:g} s; received: {self.messages()}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with got.lock:
                got.received.append((time.time(), json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/coulisse-test"
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def alerting(receiver: Receiver) -> Iterator[PrefectStack]:
    """The stack's Prefect server (fresh database) with its alerts set up for ``receiver``."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from coulisse.orchestration.server import PrefectStack
    from coulisse.orchestration.settings import FlowSettings

    layout = StackLayout.from_env()
    crm_port = int(os.environ.get("COULISSE_CRM_PORT", "8620"))
    port = os.environ.get("COULISSE_TEST_PREFECT_PORT") or str(crm_port + 3)
    home = layout.home / "prefect-alerts"
    shutil.rmtree(home, ignore_errors=True)
    env = {**FLOW_ENV, "COULISSE_ALERT_WEBHOOK_URL": receiver.url}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = FlowSettings.load(
            {**project_env(), "COULISSE_PREFECT_PORT": port, "PREFECT_HOME": str(home)}
        )
        stack = PrefectStack(layout, settings)
        stack.start_server()
        try:
            assert stack.configure_alerts() == list(AUTOMATIONS)
            with temporary_settings(
                updates={PREFECT_API_URL: settings.api_url, PREFECT_HOME: home}
            ):
                yield stack
        finally:
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            EventsWorker.drain_all(timeout=5)
            APILogWorker.drain_all(timeout=5)
            stack.down()


def _automations(stack: PrefectStack) -> list[Any]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return [a for name in AUTOMATIONS for a in client.read_automations_by_name(name)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _broken_vat_account(crm: BottleCrmClient) -> str:
    """A CRM account whose VAT number fails its check digits: the planner quarantines it."""
    return str(
        crm.post(
            "accounts/",
            {
                "name": f"Alerte Fausse TVA {uuid.uuid4().hex[:8]} SAS",
                "email": "compta@fausse-tva.example",
                "address_line": "3 quai Saint-Vincent",
                "postcode": "69001",
                "city": "Lyon",
                "country": "FR",
                "custom_fields": {"vat": "FR12345678901"},
            },
        )["id"]
    )


def _reasons(keys: list[str]) -> dict[str, set[str]]:
    """The open quarantine reasons of these CRM records, as the ledger has them."""
    ledger = Ledger.open(ledger_url())
    try:
        held: dict[str, set[str]] = {}
        for entry in ledger.quarantined(side="crm"):
            if entry.source_key in keys:
                held.setdefault(entry.source_key, set()).add(entry.reason)
        return held
    finally:
        ledger.close()


def _sync(**options: Any) -> tuple[Any, str, float]:
    """One sync flow run in this process: its final state, its name, when it ended."""
    from prefect import get_client

    from coulisse.orchestration.flow import sync_flow

    state = sync_flow(return_state=True, **options)
    ended = time.time()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    return state, run.name, ended


def test_flows_up_sets_alerts_up_once_and_removes_them_when_unset(alerting: PrefectStack):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from coulisse.orchestration.settings import AlertSettings

    first = {a.name: a.id for a in _automations(alerting)}
    assert alerting.configure_alerts() == list(AUTOMATIONS), "a second `flows up`"
    again = _automations(alerting)
    assert {a.name: a.id for a in again} == first, "updated in place, never duplicated"
    assert all(a.enabled for a in again)
    block = CustomWebhookNotificationBlock.load(BLOCK_NAME)
    assert isinstance(block, CustomWebhookNotificationBlock)
    assert "127.0.0.1" not in block.url, "the URL is a block secret, not a plain field"
    status = alerting.status()["alerts"]
    assert status["enabled"] is True
    assert status["automations"] == list(AUTOMATIONS)
    assert status["quarantine_growth"] == 2

    url = alerting.settings.alerts.webhook_url
    try:
        object.__setattr__(alerting.settings, "alerts", AlertSettings(None, 2))
        assert alerting.configure_alerts() == []
        assert _automations(alerting) == []
        with pytest.raises(ValueError, match=BLOCK_NAME):
            CustomWebhookNotificationBlock.load(BLOCK_NAME)
        assert alerting.status()["alerts"]["enabled"] is False
    finally:
        object.__setattr__(alerting.settings, "alerts", AlertSettings(url, 2))
        assert alerting.configure_alerts() == list(AUTOMATIONS)


def test_a_failed_run_sends_one_alert_naming_the_run_the_step_and_the_cause(
    live: LiveStack,
    alerting: PrefectStack,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
):
    dead = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("TRYTON_URL", dead)

    # Not forced: the change check asks the ERP first, as every scheduled run does.
    state, name, ended = _sync()

    assert state.is_failed()
    at, alert = receiver.wait_for(lambda body: name in body["subject"])
    print(f"failed run -> alert received: {at - ended:.2f} s after the run returned")
    assert alert["subject"] == f"Coulisse: sync run {name} failed"
    text = alert["text"]
    print(text)
    # The change check asks the ERP when tap-tryton has read before; otherwise observing is
    # the first step to reach for it.
    assert re.search(r"^Step (change-check|observe) failed: ", text, re.MULTILINE), "the step"
    assert dead in text, "the cause names the address that does not answer"
    assert "TRYTON_URL" in text, "and the setting to check"
    link = f"{alerting.settings.ui_url}/runs/flow-run/{state.state_details.flow_run_id}"
    assert link in text
    time.sleep(2)
    assert [m for m in receiver.messages() if name in m["text"]] == [alert], "one alert"


def test_new_quarantined_records_alert_from_the_threshold_with_count_and_reasons(
    live: LiveStack, alerting: PrefectStack, receiver: Receiver
):
    crm = live.stack.crm.client()
    # Whatever the seed or earlier tests left to sync is synced (and quarantined) now.
    state, _name, _ended = _sync(force=True)
    assert state.is_completed(), state.message

    one = _broken_vat_account(crm)
    state, below, ended = _sync(force=True)
    assert state.is_completed(), state.message
    assert _reasons([one]), "the broken VAT was quarantined"
    time.sleep(QUIET_WAIT)
    assert not [m for m in receiver.messages() if below in m["text"]], "1 is under 2"

    two = [_broken_vat_account(crm), _broken_vat_account(crm)]
    state, name, ended = _sync(force=True)
    assert state.is_completed(), state.message
    at, alert = receiver.wait_for(lambda body: name in body["text"])
    print(f"quarantining run -> alert received: {at - ended:.2f} s after the run returned")
    assert alert["subject"] == "Coulisse: 2 new record(s) in quarantine"
    text = alert["text"]
    print(text)
    assert f"{name} held back 2 new record(s) (alert threshold: 2)" in text
    reasons = _reasons(two)
    assert set(reasons) == set(two)
    for reason in set().union(*reasons.values()):
        assert f"2 x {reason}: clients from the CRM" in text
    assert any(key in text for key in two), "an example record by its CRM id"
    assert LIST_COMMAND in text
    assert f"/runs/flow-run/{state.state_details.flow_run_id}" in text


def test_a_run_with_no_new_quarantined_record_sends_nothing(
    live: LiveStack, alerting: PrefectStack, receiver: Receiver
):
    before = len(receiver.messages())
    started = dt.datetime.now(dt.UTC)

    state, name, _ended = _sync(force=True)

    assert state.is_completed(), state.message
    ledger = Ledger.open(ledger_url())
    try:
        held = ledger.quarantined()
    finally:
        ledger.close()
    assert held, "records are still in quarantine: only new ones would alert"
    assert all(entry.first_seen_at < started for entry in held)
    time.sleep(QUIET_WAIT)
    assert receiver.messages()[before:] == [], f"run {name} alerted"
