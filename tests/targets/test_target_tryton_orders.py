"""target-tryton's orders sink against the live test Tryton: won deals become sales.

Each test queues real order operations in its own SQLite ledger (as the planner queues them for
a won deal: the deal's content, its client's party), runs tap-ledger (side erp) into
target-tryton in-process, and checks Tryton and the ledger. Sales are read back with plain
calls, the way an observation of the ERP reads them.
"""

from __future__ import annotations

import datetime as dt
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
from target_tryton.connector import PartyConnector
from target_tryton.target import TargetTryton

from coulisse.ledger import Ledger, NewOperation, tables
from coulisse.stack.envfile import read_env_file
from coulisse.tryton.rpc import TrytonClient
from coulisse.tryton.sales import SALE
from tests.deals import erp_sale, new_party, sales_with_reference

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import LiveStack

pytestmark = pytest.mark.live


class CountingSession(requests.Session):
    """Counts the JSON-RPC calls (one HTTP POST each)."""

    def __init__(self) -> None:
        super().__init__()
        self.posts = 0

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.posts += 1
        return super().post(*args, **kwargs)


def erp_config(live: LiveStack, ledger_url: str, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {
        "url": env["TRYTON_URL"],
        "database": env["TRYTON_DATABASE"],
        "username": env["TRYTON_USERNAME"],
        "password": env["TRYTON_PASSWORD"],
        "ledger_url": ledger_url,
        **extra,
    }


def apply(config: dict[str, Any], http: requests.Session | None = None) -> None:
    """tap-ledger (side erp) into target-tryton, in-process."""
    out = io.StringIO()
    with redirect_stdout(out):
        TapLedger(
            config={"side": "erp", "ledger_url": config["ledger_url"]}, parse_env_config=False
        ).sync_all()
    target = TargetTryton(config=config)
    if http is not None:
        client = TrytonClient(
            config["url"], config["database"], config["username"], config["password"], http=http
        )
        target.connector = PartyConnector(client)
    with redirect_stdout(io.StringIO()):
        target.listen(file_input=io.StringIO(out.getvalue()))


def order(party: int, **overrides: Any) -> dict[str, Any]:
    """A won deal as the planner sends it to the ERP."""
    deal_id = str(uuid.uuid4())
    return {
        "crm_id": deal_id,
        "erp_id": None,
        "source": "crm",
        "client_crm_id": str(uuid.uuid4()),
        "client_erp_id": str(party),
        "name": f"Projet {deal_id[:8]}",
        "order_date": dt.date.today().isoformat(),
        "currency": "EUR",
        "lines": [
            {
                "product_code": "FORM-01",
                "description": "Formation",
                "quantity": Decimal("2"),
                "unit_price": Decimal("1200.00"),
            },
            {
                "product_code": "DEV-HEURE",
                "description": "Développement",
                "quantity": Decimal("3"),
                "unit_price": Decimal("85.5"),
            },
        ],
        **overrides,
    }


CONTENT = ["currency", "lines", "name", "order_date"]


def queue(
    ledger: Ledger,
    action: str,
    payload: dict[str, Any],
    *,
    changed: list[str] | None = None,
    expected: dict[str, Any] | None = None,
) -> int:
    """One planned write for the ERP; its operation id."""
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
                side="erp",
                action=action,  # type: ignore[arg-type]
                payload=payload,
                changed_fields=changed or CONTENT,
                source_side="crm",
                source_key=payload["crm_id"],
                expected=expected,
            )
        ],
    )
    return max(op.id for op in ledger.pending_operations("erp", entity="order"))


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
def erp(live: LiveStack) -> Any:
    client = live.stack.erp.client()
    yield client
    client.close()


# -- creates ------------------------------------------------------------------------------------


def test_won_deals_become_confirmed_sales_in_a_few_calls(live, ledger, ledger_url, erp):
    party = new_party(erp)
    orders = [order(party["id"]) for _ in range(3)]
    ids = [queue(ledger, "create", o) for o in orders]
    http = CountingSession()
    apply(erp_config(live, ledger_url), http)
    for payload, operation_id in zip(orders, ids, strict=True):
        (sale,) = sales_with_reference(erp, payload["crm_id"])
        assert sale["party"] == party["id"]
        assert sale["description"] == payload["name"]
        assert sale["sale_date"] == dt.date.today()
        assert sale["state"] in {"confirmed", "processing"}
        assert sale["number"]
        assert [
            (line["product."]["code"], line["quantity"], line["unit_price"])
            for line in sale["lines."]
        ] == [("FORM-01", 2, Decimal("1200")), ("DEV-HEURE", 3, Decimal("85.5"))]
        assert all(line["taxes"] for line in sale["lines."]), "the products' customer taxes"
        assert sale["tax_amount"] > 0
        result = outcome(ledger, operation_id)
        assert result["status"] == "applied"
        assert result["result"]["system_id"] == str(sale["id"])
        stored = result["result"]["stored"]
        assert stored["number"] == sale["number"]
        assert stored["state"] == sale["state"]
        link = ledger.links_for("order", "crm", [payload["crm_id"]])[payload["crm_id"]]
        assert link.erp_key == str(sale["id"])
    # Login, context, reference search, three catalogue reads, create, state read, quote,
    # confirm, read back: whatever the batch's size.
    assert http.posts <= 12


def test_a_create_whose_answer_was_lost_is_not_made_twice(live, ledger, ledger_url, erp):
    party = new_party(erp)
    payload = order(party["id"])
    earlier = erp_sale(
        erp, party=party, deal_id=payload["crm_id"], lines=[("FORM-01", "2", "1200")]
    )
    operation_id = queue(ledger, "create", payload)
    apply(erp_config(live, ledger_url))
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert sale["id"] == earlier
    assert sale["state"] in {"confirmed", "processing"}, "its workflow is carried on"
    assert outcome(ledger, operation_id)["result"]["system_id"] == str(earlier)


def test_confirm_orders_off_leaves_a_quotation(live, ledger, ledger_url, erp):
    party = new_party(erp)
    payload = order(party["id"])
    queue(ledger, "create", payload)
    apply(erp_config(live, ledger_url, confirm_orders=False))
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert sale["state"] == "quotation"
    assert sale["number"]


def test_an_unknown_product_is_refused_naming_the_deal_and_the_code(live, ledger, ledger_url, erp):
    party = new_party(erp)
    good = order(party["id"])
    bad = order(party["id"])
    bad["lines"] = [{**bad["lines"][0], "product_code": "NOPE-404"}]
    good_id, bad_id = queue(ledger, "create", good), queue(ledger, "create", bad)
    apply(erp_config(live, ledger_url))
    assert outcome(ledger, good_id)["status"] == "applied"
    refused = outcome(ledger, bad_id)
    assert refused["status"] == "refused"
    assert bad["crm_id"] in refused["message"]
    assert "'NOPE-404'" in refused["message"]
    assert not sales_with_reference(erp, bad["crm_id"])
    (entry,) = ledger.quarantined(entity="order")
    assert entry.source_key == bad["crm_id"]
    assert entry.field == "lines"


def test_a_product_code_typed_in_another_case_is_found(live, ledger, ledger_url, erp):
    """The planner matches SKUs ignoring case; Tryton's lookup does too, and only that code."""
    party = new_party(erp)
    payload = order(party["id"])
    payload["lines"] = [{**payload["lines"][1], "product_code": "dev-heure"}]
    queue(ledger, "create", payload)
    apply(erp_config(live, ledger_url))
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert [line["product."]["code"] for line in sale["lines."]] == ["DEV-HEURE"]


def test_a_client_without_address_is_refused_with_the_reason(live, ledger, ledger_url, erp):
    party = new_party(erp, address=False)
    payload = order(party["id"])
    operation_id = queue(ledger, "create", payload)
    apply(erp_config(live, ledger_url))
    refused = outcome(ledger, operation_id)
    assert refused["status"] == "refused"
    assert "no address" in refused["message"]
    assert not sales_with_reference(erp, payload["crm_id"])


def test_a_sale_tryton_will_not_confirm_is_removed_and_the_deal_quarantined(
    live, ledger, ledger_url, erp
):
    """A quotation valid one day cannot be confirmed for a date a month away: Tryton says so."""
    admin = live.stack.erp.admin_client()
    admin.write("sale.configuration", [1], {"sale_quotation_validity": dt.timedelta(days=1)})
    try:
        party = new_party(erp)
        later = (dt.date.today() + dt.timedelta(days=30)).isoformat()
        payload = order(party["id"], order_date=later)
        operation_id = queue(ledger, "create", payload)
        apply(erp_config(live, ledger_url))
    finally:
        admin.write("sale.configuration", [1], {"sale_quotation_validity": None})
    refused = outcome(ledger, operation_id)
    assert refused["status"] == "refused"
    assert refused["message"].startswith("Tryton would not confirm the sale for order")
    assert "removed again" in refused["message"]
    assert not sales_with_reference(erp, payload["crm_id"]), "no half-made sale is left"


# -- updates and cancellations --------------------------------------------------------------------


def test_a_draft_sale_takes_the_deal_s_new_lines(live, ledger, ledger_url, erp):
    party = new_party(erp)
    payload = order(party["id"])
    sale_id = erp_sale(erp, party=party, deal_id=payload["crm_id"], lines=[("LIC-MENS", "1", "1")])
    payload["erp_id"] = str(sale_id)
    operation_id = queue(ledger, "update", payload, changed=["lines", "name"])
    apply(erp_config(live, ledger_url))
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert sale["state"] == "draft", "an update does not move the sale's workflow"
    assert sale["description"] == payload["name"]
    assert [line["product."]["code"] for line in sale["lines."]] == ["FORM-01", "DEV-HEURE"]
    assert outcome(ledger, operation_id)["status"] == "applied"


def test_a_quotation_s_lines_are_frozen_so_the_change_is_refused(live, ledger, ledger_url, erp):
    party = new_party(erp)
    payload = order(party["id"])
    sale_id = erp_sale(
        erp,
        party=party,
        deal_id=payload["crm_id"],
        lines=[("FORM-01", "2", "1200")],
        state="quotation",
    )
    payload["erp_id"] = str(sale_id)
    lines_id = queue(ledger, "update", payload, changed=["lines"])
    apply(erp_config(live, ledger_url))
    refused = outcome(ledger, lines_id)
    assert refused["status"] == "refused"
    assert "freezes a sale's lines once quoted" in refused["message"]
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert len(sale["lines."]) == 1, "nothing written"
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    date_id = queue(
        ledger, "update", {**payload, "order_date": tomorrow.isoformat()}, changed=["order_date"]
    )
    apply(erp_config(live, ledger_url))
    assert outcome(ledger, date_id)["status"] == "applied"
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert sale["sale_date"] == tomorrow, "a quotation's date may still change"


def test_a_sale_changed_in_tryton_since_the_plan_is_planned_again(live, ledger, ledger_url, erp):
    party = new_party(erp)
    payload = order(party["id"])
    sale_id = erp_sale(erp, party=party, deal_id=payload["crm_id"], lines=[("FORM-01", "1", "1")])
    erp.write(SALE, [sale_id], {"description": "Renommée dans Tryton"})
    payload["erp_id"] = str(sale_id)
    operation_id = queue(
        ledger, "update", payload, changed=["name"], expected={"name": "Vente d'origine"}
    )
    apply(erp_config(live, ledger_url))
    assert outcome(ledger, operation_id)["status"] == "pending", "failed once: planned again"
    (sale,) = sales_with_reference(erp, payload["crm_id"])
    assert sale["description"] == "Renommée dans Tryton"


def test_a_deleted_deal_cancels_its_quotation_but_never_a_confirmed_sale(
    live, ledger, ledger_url, erp
):
    party = new_party(erp)
    quoted, confirmed = order(party["id"]), order(party["id"])
    quoted_id = erp_sale(
        erp,
        party=party,
        deal_id=quoted["crm_id"],
        lines=[("FORM-01", "1", "1")],
        state="quotation",
    )
    confirmed_id = erp_sale(
        erp,
        party=party,
        deal_id=confirmed["crm_id"],
        lines=[("FORM-01", "1", "1")],
        state="confirmed",
    )
    ops = [
        queue(ledger, "cancel", {**o, "erp_id": str(i), "state": "cancelled"}, changed=["state"])
        for o, i in ((quoted, quoted_id), (confirmed, confirmed_id))
    ]
    apply(erp_config(live, ledger_url))
    states = {
        row["id"]: row["state"] for row in erp.read(SALE, [quoted_id, confirmed_id], ["state"])
    }
    assert states[quoted_id] == "cancelled"
    assert states[confirmed_id] in {"confirmed", "processing"}
    assert outcome(ledger, ops[0])["status"] == "applied"
    assert outcome(ledger, ops[0])["result"]["stored"]["state"] == "cancelled"
    refused = outcome(ledger, ops[1])
    assert refused["status"] == "refused"
    assert "never cancels a confirmed sale" in refused["message"]
