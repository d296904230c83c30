"""target-bottlecrm's orders sink against the live test CRM: the ERP's sale status on the deal.

Each test queues real order operations for the CRM in its own SQLite ledger (as the planner
queues them once the ERP sale exists), runs tap-ledger (side crm) into target-bottlecrm
in-process, and reads the deal back.
"""

from __future__ import annotations

import io
import json
import uuid
from contextlib import redirect_stdout
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import requests
import sqlalchemy as sa
from tap_ledger.tap import TapLedger
from target_bottlecrm.connector import AccountsConnector
from target_bottlecrm.target import TargetBottleCRM

from coulisse.bottlecrm.client import BottleCrmClient
from coulisse.bottlecrm.deals import order_from_deal
from coulisse.ledger import Ledger, NewOperation, tables
from coulisse.stack.envfile import read_env_file
from tests.deals import deal, some_crm_account, won_deal

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import LiveStack

pytestmark = pytest.mark.live

STATUS = [
    "invoice_state",
    "number",
    "shipment_state",
    "state",
    "tax_amount",
    "total_amount",
    "untaxed_amount",
]


class RecordingSession(requests.Session):
    """Keeps every request sent: method, path and JSON body."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data")
        body = json.loads(data) if data else None
        self.sent.append((str(method).upper(), str(url).split("/api/", 1)[-1], body))
        return super().request(method, url, *args, **kwargs)

    def writes(self) -> list[tuple[str, str, Any]]:
        return [item for item in self.sent if item[0] not in {"GET", "HEAD"}]


def crm_config(live: LiveStack, ledger_url: str) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {
        "api_url": env["BOTTLECRM_API_URL"],
        "api_token": env["BOTTLECRM_API_TOKEN"],
        "ledger_url": ledger_url,
    }


def apply(config: dict[str, Any]) -> RecordingSession:
    """tap-ledger (side crm) into target-bottlecrm, in-process; what was sent to the CRM."""
    out = io.StringIO()
    with redirect_stdout(out):
        TapLedger(
            config={"side": "crm", "ledger_url": config["ledger_url"]}, parse_env_config=False
        ).sync_all()
    target = TargetBottleCRM(config=config, parse_env_config=False)
    session = RecordingSession()
    target._connector = AccountsConnector(
        BottleCrmClient(config["api_url"], config["api_token"], session=session)
    )
    with redirect_stdout(io.StringIO()):
        target.listen(file_input=io.StringIO(out.getvalue()))
    return session


def status(deal_row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The deal as the ERP sees it once its sale is confirmed (what the planner sends)."""
    record = order_from_deal(deal_row)
    record.update(
        {
            "erp_id": "77",
            "source": "erp",
            "client_erp_id": "5",
            "number": "S0077",
            "state": "processing",
            "shipment_state": "none",
            "invoice_state": "pending",
            "untaxed_amount": Decimal("2400.00"),
            "tax_amount": Decimal("480.00"),
            "total_amount": Decimal("2880.00"),
            **changes,
        }
    )
    return record


def queue(
    ledger: Ledger, action: str, payload: dict[str, Any], changed: list[str] | None = None
) -> int:
    run = ledger.start_run("plan")
    links = ledger.links_for("order", "crm", [payload["crm_id"]])
    link = links.get(payload["crm_id"]) or ledger.link(
        "order", payload["crm_id"], payload.get("erp_id"), origin="crm"
    )
    ledger.add_operations(
        run,
        [
            NewOperation(
                link_id=link.id,
                entity="order",
                side="crm",
                action=action,  # type: ignore[arg-type]
                payload=payload,
                changed_fields=changed or STATUS,
                source_side="erp",
                source_key=str(payload.get("erp_id") or "0"),
            )
        ],
    )
    return max(op.id for op in ledger.pending_operations("crm", entity="order"))


def outcome(ledger: Ledger, operation_id: int) -> dict[str, Any]:
    ops = tables.operations.c
    with ledger.engine.connect() as conn:
        row = conn.execute(
            sa.select(ops.status, ops.error_message, ops.result).where(ops.id == operation_id)
        ).one()
    return {
        "status": row.status,
        "message": row.error_message or "",
        "result": json.loads(row.result) if row.result else {},
    }


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(ledger_url: str) -> Any:
    opened = Ledger.open(ledger_url)
    yield opened
    opened.close()


@pytest.fixture
def crm(live: LiveStack) -> BottleCrmClient:
    return live.stack.crm.client()


@pytest.fixture
def won(crm: BottleCrmClient) -> dict[str, Any]:
    """A won deal of the CRM's, with an advisor's account and two line items."""
    account = some_crm_account(crm)
    deal_id = won_deal(
        crm,
        account_id=account["id"],
        lines=[("FORM-01", "2", "1200.00", None), ("DEV-HEURE", "1", "95.00", "10")],
    )
    return deal(crm, deal_id)


def test_the_erp_status_lands_in_the_deal_custom_fields_and_nothing_else(
    live, ledger, ledger_url, crm, won
):
    operation_id = queue(ledger, "update", status(won))
    sent = apply(crm_config(live, ledger_url))
    ((method, path, body),) = sent.writes()
    assert (method, path) == ("PATCH", f"opportunities/{won['id']}/"), "PATCH, never PUT"
    assert body == {
        "custom_fields": {
            "erp_ref": "77",
            "erp_sale_number": "S0077",
            "erp_sale_state": "processing",
            "erp_shipment_progress": "none",
            "erp_invoice_progress": "pending",
            "erp_untaxed_total": "2400.00 EUR",
        }
    }
    after = deal(crm, won["id"])
    assert after["custom_fields"]["erp_sale_state"] == "processing"
    for kept in ("name", "stage", "closed_on", "amount", "account", "assigned_to"):
        assert after[kept] == won[kept], f"the deal's {kept} is the sales team's"
    assert [i["id"] for i in after["line_items"]] == [i["id"] for i in won["line_items"]]
    result = outcome(ledger, operation_id)
    assert result["status"] == "applied"
    stored = result["result"]["stored"]
    assert stored["number"] == "S0077"
    assert Decimal(str(stored["untaxed_amount"])) == Decimal("2400.00")
    # No place for them in the CRM: recorded as the CRM holds them, so they are no change.
    assert stored["tax_amount"] is None
    assert stored["total_amount"] is None


def test_only_the_fields_that_changed_are_sent_and_an_unchanged_deal_is_not_written(
    live, ledger, ledger_url, crm, won
):
    queue(ledger, "update", status(won))
    apply(crm_config(live, ledger_url))
    shipped = status(won, shipment_state="sent", state="done")
    queue(ledger, "update", shipped)
    sent = apply(crm_config(live, ledger_url))
    ((_method, _path, body),) = sent.writes()
    assert body == {"custom_fields": {"erp_shipment_progress": "sent", "erp_sale_state": "done"}}
    again = queue(ledger, "update", shipped)
    assert apply(crm_config(live, ledger_url)).writes() == []
    assert outcome(ledger, again)["status"] == "applied"


def test_a_deal_s_own_content_is_never_written_but_recorded_as_the_crm_holds_it(
    live, ledger, ledger_url, crm, won
):
    """After the hand-off the ERP owns the lines too; the CRM keeps its own, as our echo."""
    erp_lines = [{"product_code": "FORM-01", "description": "x", "quantity": 2, "unit_price": 1100}]
    operation_id = queue(
        ledger, "update", status(won, lines=erp_lines, name="Autre"), changed=["lines", "name"]
    )
    sent = apply(crm_config(live, ledger_url))
    assert [body for _m, _p, body in sent.writes()] == [{"custom_fields": {"erp_ref": "77"}}]
    stored = outcome(ledger, operation_id)["result"]["stored"]
    assert stored["name"] == won["name"]
    assert [line["product_code"] for line in stored["lines"]] == ["FORM-01", "DEV-HEURE"]


def test_a_cancelled_sale_shows_as_cancelled_on_the_deal(live, ledger, ledger_url, crm, won):
    queue(ledger, "cancel", status(won, state="cancelled"), changed=["state"])
    apply(crm_config(live, ledger_url))
    after = deal(crm, won["id"])
    assert after["custom_fields"]["erp_sale_state"] == "cancelled"
    assert after["stage_kind"] == "won", "the deal's stage is the sales team's"


def test_coulisse_never_creates_a_deal(live, ledger, ledger_url, crm):
    payload: dict[str, Any] = {
        "crm_id": None,
        "erp_id": "78",
        "source": "erp",
        "client_erp_id": "5",
        "name": f"Vente comptoir {uuid.uuid4().hex[:6]}",
        "state": "processing",
        "currency": "EUR",
        "lines": [],
    }
    run = ledger.start_run("plan")
    link = ledger.link("order", None, "78", origin="erp")
    ledger.add_operations(
        run,
        [
            NewOperation(
                link_id=link.id,
                entity="order",
                side="crm",
                action="create",
                payload=payload,
                changed_fields=["name", "state"],
                source_side="erp",
                source_key="78",
            )
        ],
    )
    (operation,) = ledger.pending_operations("crm", entity="order")
    before = crm.get("opportunities/", limit=1)["opportunities_count"]
    sent = apply(crm_config(live, ledger_url))
    assert sent.writes() == []
    refused = outcome(ledger, operation.id)
    assert refused["status"] == "refused"
    assert "never creates deals" in refused["message"]
    assert crm.get("opportunities/", limit=1)["opportunities_count"] == before


def test_an_amount_without_currency_is_refused_and_nothing_is_written(
    live, ledger, ledger_url, crm, won
):
    operation_id = queue(ledger, "update", status(won, currency=None))
    sent = apply(crm_config(live, ledger_url))
    assert sent.writes() == []
    refused = outcome(ledger, operation_id)
    assert refused["status"] == "refused"
    assert "no currency" in refused["message"]


def test_a_deleted_deal_is_planned_again(live, ledger, ledger_url, crm, won):
    operation_id = queue(ledger, "update", status(won))
    crm.delete(f"opportunities/{won['id']}/")
    apply(crm_config(live, ledger_url))
    failed = outcome(ledger, operation_id)
    assert failed["status"] == "pending", "failed once: the next CRM scan sees the deletion"
    assert "no longer in BottleCRM" in failed["message"]
