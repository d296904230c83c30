"""target-tryton's invoices sink against the live test Tryton: CRM drafts become ERP drafts.

Each test queues real invoice operations in its own SQLite ledger (as the planner queues a CRM
draft invoice of a linked client: the CRM's lines, its client's party), runs tap-ledger (side
erp) into target-tryton in-process, and checks Tryton and the ledger. Invoices are read back
with plain calls, the way an observation of the ERP reads them.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from coulisse.ledger import Ledger, NewOperation
from coulisse.stack.erp_seed import accepting_warnings
from coulisse.tryton.references import crm_reference
from tests.deals import new_party
from tests.invoicing import today
from tests.targets.test_target_tryton_orders import CountingSession, apply, erp_config, outcome

if TYPE_CHECKING:
    from pathlib import Path

    from coulisse.tryton.rpc import TrytonClient

pytestmark = pytest.mark.live

INVOICE = "account.invoice"
#: What the tests read of an invoice and its lines.
FIELDS = (
    "type",
    "state",
    "number",
    "reference",
    "party",
    "invoice_address",
    "invoice_date",
    "payment_term",
    "journal",
    "currency.code",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "lines.product.code",
    "lines.description",
    "lines.quantity",
    "lines.unit_price",
    "lines.unit",
    "lines.account",
    "lines.taxes",
)


def draft(party: int, **overrides: Any) -> dict[str, Any]:
    """A CRM draft invoice as the planner sends it to the ERP: a product line, a service line
    described only, both at 20 % as the CRM charges them."""
    return {
        "crm_id": str(uuid.uuid4()),
        "erp_id": None,
        "source": "crm",
        "client_crm_id": str(uuid.uuid4()),
        "client_erp_id": str(party),
        "order_crm_id": None,
        "order_erp_id": None,
        "state": "draft",
        "invoice_date": today().isoformat(),
        "currency": "EUR",
        "lines": [
            {
                "product_code": "FORM-01",
                "description": "Formation sécurité",
                "quantity": Decimal("2"),
                "unit_price": Decimal("1200.00"),
                "tax_rate": Decimal("0.20"),
            },
            {
                "product_code": None,
                "description": "Frais de déplacement",
                "quantity": Decimal("1"),
                "unit_price": Decimal("84.50"),
                "tax_rate": Decimal("0.20"),
            },
        ],
        "untaxed_amount": Decimal("2484.50"),
        "tax_amount": Decimal("496.90"),
        "total_amount": Decimal("2981.40"),
        **overrides,
    }


def queue(
    ledger: Ledger,
    action: str,
    payload: dict[str, Any],
    *,
    changed: list[str] | None = None,
    expected: dict[str, Any] | None = None,
) -> int:
    """One planned invoice write for the ERP; its operation id."""
    run = ledger.start_run("plan")
    links = ledger.links_for("invoice", "crm", [payload["crm_id"]])
    link = links.get(payload["crm_id"]) or ledger.link(
        "invoice", payload["crm_id"], payload.get("erp_id"), origin="crm"
    )
    ledger.add_operations(
        run,
        [
            NewOperation(
                link_id=link.id,
                entity="invoice",
                side="erp",
                action=action,  # type: ignore[arg-type]
                payload=payload,
                changed_fields=changed or [],
                source_side="crm",
                source_key=payload["crm_id"],
                expected=expected,
            )
        ],
    )
    return max(op.id for op in ledger.pending_operations("erp", entity="invoice"))


def invoices_with_reference(erp: TrytonClient, crm_id: str) -> list[dict[str, Any]]:
    return erp.search_read(INVOICE, [("reference", "=", crm_reference(crm_id))], FIELDS)


def post(erp: TrytonClient, invoice: int) -> None:
    """What the clerk does: date the draft today (the company's day) and post it."""
    erp.write(INVOICE, [invoice], {"invoice_date": today()})
    accepting_warnings(erp, lambda: erp.execute(INVOICE, "post", [invoice]))


def defaults(erp: TrytonClient) -> dict[str, Any]:
    (config,) = erp.read(
        "account.configuration",
        [1],
        ["default_customer_payment_term", "default_category_account_revenue"],
    )
    return config


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(ledger_url: str) -> Any:
    opened = Ledger.open(ledger_url)
    yield opened
    opened.close()


@pytest.fixture
def erp(live: Any) -> Any:
    client = live.stack.erp.client()
    yield client
    client.close()


# -- creates ------------------------------------------------------------------------------------


def test_crm_drafts_become_customer_drafts_in_a_few_calls(live, ledger, ledger_url, erp):
    party = new_party(erp)
    invoices = [draft(party["id"]) for _ in range(3)]
    ids = [queue(ledger, "create", invoice) for invoice in invoices]
    http = CountingSession()
    apply(erp_config(live, ledger_url), http)
    setup = defaults(erp)
    (product,) = erp.search_read(
        "product.product",
        [("code", "=", "FORM-01")],
        ["template.account_category.account_revenue", "template.account_category.customer_taxes"],
    )
    category = product["template."]["account_category."]
    for payload, operation_id in zip(invoices, ids, strict=True):
        (invoice,) = invoices_with_reference(erp, payload["crm_id"])
        assert (invoice["type"], invoice["state"]) == ("out", "draft")
        assert invoice["number"] is None
        assert invoice["invoice_date"] is None, "the clerk dates it by posting"
        assert invoice["party"] == party["id"]
        assert invoice["invoice_address"] == party["addresses"][0]
        assert invoice["payment_term"] == setup["default_customer_payment_term"]
        assert invoice["journal"] is not None
        assert invoice["currency."]["code"] == "EUR"
        formation, travel = invoice["lines."]
        assert (formation["product."]["code"], formation["quantity"]) == ("FORM-01", 2)
        assert formation["unit_price"] == Decimal("1200")
        assert formation["account"] == category["account_revenue"]
        assert formation["taxes"] == category["customer_taxes"]
        assert travel["product."] is None
        assert travel["description"] == "Frais de déplacement"
        assert travel["account"] == setup["default_category_account_revenue"]
        (tax,) = erp.read("account.tax", travel["taxes"], ["name", "group.kind"])
        assert "services" in tax["name"], "the services' 20 % on the services' revenue account"
        assert invoice["untaxed_amount"] == Decimal("2484.50")
        assert invoice["total_amount"] == Decimal("2981.40"), "the CRM's total, to the cent"
        result = outcome(ledger, operation_id)
        assert result["status"] == "applied"
        assert result["result"]["system_id"] == str(invoice["id"])
        stored = result["result"]["stored"]
        assert stored["state"] == "draft"
        assert Decimal(str(stored["total_amount"])) == Decimal("2981.40")
        assert [Decimal(str(line["tax_rate"])) for line in stored["lines"]] == [Decimal("0.2")] * 2
        link = ledger.links_for("invoice", "crm", [payload["crm_id"]])[payload["crm_id"]]
        assert link.erp_key == str(invoice["id"])
    # Login, context, reference search, three catalogue reads, configuration, journal, the
    # company's day, taxes (categories, sale taxes, two levels of their tree), create, read
    # back: 15, whatever the batch's size.
    assert http.posts <= 16


def test_a_create_whose_answer_was_lost_is_not_made_twice(live, ledger_url, erp, tmp_path):
    party = new_party(erp)
    payload = draft(party["id"])
    first = Ledger.open(ledger_url)
    try:
        queue(first, "create", payload)
        apply(erp_config(live, ledger_url))
    finally:
        first.close()
    (earlier,) = invoices_with_reference(erp, payload["crm_id"])
    # Another ledger never heard of it: the answer was lost before the ledger recorded it.
    again_url = f"sqlite:///{tmp_path / 'again.db'}"
    again = Ledger.open(again_url)
    try:
        operation_id = queue(again, "create", payload)
        apply(erp_config(live, again_url))
        assert outcome(again, operation_id)["result"]["system_id"] == str(earlier["id"])
    finally:
        again.close()
    assert len(invoices_with_reference(erp, payload["crm_id"])) == 1


def test_what_tryton_cannot_hold_is_refused_naming_the_invoice_and_the_reason(
    live, ledger, ledger_url, erp
):
    party = new_party(erp)
    good = draft(party["id"])
    unknown = draft(party["id"])
    unknown["lines"] = [{**unknown["lines"][0], "product_code": "NOPE-404"}]
    odd_rate = draft(party["id"])
    odd_rate["lines"] = [{**odd_rate["lines"][1], "tax_rate": Decimal("0.07")}]
    homeless = draft(new_party(erp, address=False)["id"])
    # 10 % off the whole invoice in the CRM: the lines alone would bill the full price.
    discounted = draft(party["id"], total_amount=Decimal("2683.26"))
    ids = {
        name: queue(ledger, "create", payload)
        for name, payload in (
            ("good", good),
            ("unknown", unknown),
            ("odd_rate", odd_rate),
            ("homeless", homeless),
            ("discounted", discounted),
        )
    }
    apply(erp_config(live, ledger_url))
    assert outcome(ledger, ids["good"])["status"] == "applied"
    unknown_result = outcome(ledger, ids["unknown"])
    assert unknown_result["status"] == "refused"
    assert unknown["crm_id"] in unknown_result["message"]
    assert "'NOPE-404'" in unknown_result["message"]
    odd = outcome(ledger, ids["odd_rate"])
    assert odd["status"] == "refused"
    assert "VAT at 7 %" in odd["message"]
    assert "no address" in outcome(ledger, ids["homeless"])["message"]
    lost = outcome(ledger, ids["discounted"])
    assert lost["status"] == "refused"
    assert "lines add up to 2981.40 tax included" in lost["message"]
    assert "total is 2683.26" in lost["message"]
    for payload in (unknown, odd_rate, homeless, discounted):
        assert not invoices_with_reference(erp, payload["crm_id"])
    held = {entry.source_key: entry for entry in ledger.quarantined(entity="invoice")}
    assert held[unknown["crm_id"]].reason == "refused_by_erp"
    assert held[unknown["crm_id"]].field == "lines"


def test_a_refusal_by_tryton_quarantines_only_that_invoice_with_tryton_s_message(
    live, ledger, ledger_url, erp
):
    """Tryton counts FORM-01 in whole units: it refuses half a training, not the batch."""
    party = new_party(erp)
    good = draft(party["id"])
    half = draft(party["id"])
    half["lines"] = [{**half["lines"][0], "quantity": Decimal("1.5")}]
    half["total_amount"] = Decimal("2160.00")
    good_id, half_id = queue(ledger, "create", good), queue(ledger, "create", half)
    apply(erp_config(live, ledger_url))
    assert outcome(ledger, good_id)["status"] == "applied"
    refused = outcome(ledger, half_id)
    assert refused["status"] == "refused"
    label = f"invoice draft (CRM invoice {half['crm_id']}"
    assert refused["message"].startswith(f"Tryton refused {label}")
    assert "'1.5'" in refused["message"], "Tryton's own words, in the company's language"
    assert not invoices_with_reference(erp, half["crm_id"])
    assert len(invoices_with_reference(erp, good["crm_id"])) == 1


# -- updates and cancellations --------------------------------------------------------------------


def _created(live: Any, ledger: Ledger, ledger_url: str, erp: TrytonClient) -> dict[str, Any]:
    """A CRM draft already made a Tryton draft by the sink; the payload, linked."""
    payload = draft(new_party(erp)["id"])
    queue(ledger, "create", payload)
    apply(erp_config(live, ledger_url))
    (invoice,) = invoices_with_reference(erp, payload["crm_id"])
    return {**payload, "erp_id": str(invoice["id"])}


def test_a_draft_takes_the_crm_s_new_lines_until_it_is_posted(live, ledger, ledger_url, erp):
    payload = _created(live, ledger, ledger_url, erp)
    payload["lines"] = [{**payload["lines"][1], "quantity": Decimal("3")}]
    operation_id = queue(ledger, "update", payload, changed=["lines"])
    apply(erp_config(live, ledger_url))
    assert outcome(ledger, operation_id)["status"] == "applied"
    (invoice,) = invoices_with_reference(erp, payload["crm_id"])
    assert [(line["description"], line["quantity"]) for line in invoice["lines."]] == [
        ("Frais de déplacement", 3)
    ]
    assert invoice["untaxed_amount"] == Decimal("253.50")

    post(erp, int(payload["erp_id"]))
    payload["lines"] = [{**payload["lines"][0], "quantity": Decimal("4")}]
    late_id = queue(ledger, "update", payload, changed=["lines"])
    apply(erp_config(live, ledger_url))
    late = outcome(ledger, late_id)
    assert late["status"] == "pending", "failed once: a posted invoice is the ERP's"
    assert "posted in Tryton" in late["message"]
    (invoice,) = invoices_with_reference(erp, payload["crm_id"])
    assert invoice["lines."][0]["quantity"] == 3, "nothing written"


def test_a_deleted_crm_draft_cancels_its_erp_draft_but_never_a_posted_invoice(
    live, ledger, ledger_url, erp
):
    drafted = _created(live, ledger, ledger_url, erp)
    posted = _created(live, ledger, ledger_url, erp)
    post(erp, int(posted["erp_id"]))
    ops = [
        queue(ledger, "cancel", {**payload, "state": "cancelled"}, changed=["state"])
        for payload in (drafted, posted)
    ]
    apply(erp_config(live, ledger_url))
    states = {
        row["id"]: row["state"]
        for row in erp.read(INVOICE, [int(drafted["erp_id"]), int(posted["erp_id"])], ["state"])
    }
    assert states[int(drafted["erp_id"])] == "cancelled"
    assert states[int(posted["erp_id"])] == "posted"
    cancelled = outcome(ledger, ops[0])
    assert cancelled["status"] == "applied"
    assert cancelled["result"]["stored"]["state"] == "cancelled"
    refused = outcome(ledger, ops[1])
    assert refused["status"] == "refused"
    assert "never cancels a posted invoice" in refused["message"]
