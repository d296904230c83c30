"""The invoices streams of tap-tryton and tap-bottlecrm against the live test systems."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import uuid
from contextlib import redirect_stdout
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from tap_bottlecrm.tap import TapBottleCRM
from tap_tryton.invoices import invoice_state, tax_rate
from tap_tryton.tap import TapTryton

from coulisse.bottlecrm.invoices import mirror_custom_fields, mirror_lines
from coulisse.model import Invoice
from coulisse.stack.envfile import read_env_file
from tests.invoicing import erp_amounts, erp_invoice, erp_pay, today
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from singer_sdk import Tap

    from tests.conftest import LiveStack


@dataclass
class Run:
    messages: list[dict[str, Any]]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return copy.deepcopy(states[-1])

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


def run_invoices(
    tap_class: type[Tap], config: dict[str, Any], state: dict[str, Any] | None = None
) -> Run:
    """The tap's invoices stream alone, in-process."""
    out = io.StringIO()
    catalog = catalog_of(tap_class, config, ["invoices"])
    tap = tap_class(config=config, catalog=catalog, state=state, parse_env_config=False)
    with redirect_stdout(out):
        tap.sync_all()
    lines = out.getvalue().splitlines()
    return Run([json.loads(line, parse_float=Decimal) for line in lines if line.strip()])


def erp_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {
        "url": env["TRYTON_URL"],
        "database": env["TRYTON_DATABASE"],
        "username": env["TRYTON_USERNAME"],
        "password": env["TRYTON_PASSWORD"],
        **extra,
    }


def crm_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {"api_url": env["BOTTLECRM_API_URL"], "api_token": env["BOTTLECRM_API_TOKEN"], **extra}


def some_party(live: LiveStack) -> int:
    """A client the seed already invoiced (never the company's own party)."""
    erp = live.stack.erp.client()
    (row,) = erp.search_read("account.invoice", [("type", "=", "out")], ["party"], limit=1)
    return int(row["party"])


# -- tap-tryton --------------------------------------------------------------------------------


@pytest.mark.live
def test_every_customer_invoice_is_read_in_canonical_words(live: LiveStack):
    erp = live.stack.erp.client()
    run = run_invoices(TapTryton, erp_config(live))
    records = run.records
    assert len(records) == erp.search_count("account.invoice", [("type", "=", "out")])
    # The seed brings invoices to every state (overdue ones are back-dated posted invoices).
    assert {r["state"] for r in records} >= {"draft", "posted", "partially_paid", "paid"}
    assert "cancelled" in {r["state"] for r in records}
    for record in records:
        invoice = Invoice.model_validate(record)
        assert invoice.source == "erp"
        untaxed, tax, total = invoice.untaxed_amount, invoice.tax_amount, invoice.total_amount
        due = invoice.amount_due
        assert untaxed is not None
        assert tax is not None
        assert total is not None
        assert due is not None
        assert untaxed + tax == total
        assert sum((t.amount for t in invoice.taxes), Decimal(0)) == tax
        paid = sum((p.amount for p in invoice.payments), Decimal(0))
        if invoice.state == "partially_paid":
            assert Decimal(0) < due < total
            assert paid == total - due
        if invoice.state == "paid":
            assert due == 0
            assert paid == total
        if invoice.overdue:
            assert invoice.due_date is not None
            assert invoice.due_date < today()
            assert due > 0
    assert any(r["overdue"] for r in records), "the seed's back-dated unpaid invoices are late"


@pytest.mark.live
def test_line_tax_rates_come_from_the_taxes_valid_on_the_invoice_date(live: LiveStack):
    erp = live.stack.erp.client()
    invoice = erp_invoice(erp, some_party(live))
    run = run_invoices(TapTryton, erp_config(live, invoice_ids=[invoice]))
    (record,) = run.records
    # CONS-DEMI's tax is a parent with a 20 % child (and a 19.6 % one that ended in 2013).
    assert [(line["product_code"], line["tax_rate"]) for line in record["lines"]] == [
        ("CONS-DEMI", Decimal("0.20")),
        ("LIVRE-GUIDE", Decimal("0.055")),
    ]
    assert [tax["rate"] for tax in record["taxes"]] == [Decimal("0.055"), Decimal("0.20")]
    amounts = erp_amounts(erp, invoice)
    assert record["number"] == amounts["number"]
    assert record["state"] == "posted"
    assert record["total_amount"] == amounts["total_amount"] == record["amount_due"]
    assert record["due_date"] == (today() + dt.timedelta(days=30)).isoformat()
    assert record["overdue"] is False
    assert record["client_erp_id"] == str(some_party(live))
    assert "ACTIVATE_VERSION" not in run.types()


@pytest.mark.live
def test_a_payment_is_read_at_the_next_run_and_nothing_else(live: LiveStack):
    erp = live.stack.erp.client()
    invoice = erp_invoice(erp, some_party(live))
    first = run_invoices(TapTryton, erp_config(live))
    quiet = run_invoices(TapTryton, erp_config(live), first.state)
    assert quiet.records == [], "rows already seen are not emitted again"

    erp_pay(erp, invoice, "100.00")
    after = run_invoices(TapTryton, erp_config(live), quiet.state)
    (record,) = after.records
    assert record["erp_id"] == str(invoice)
    assert record["state"] == "partially_paid"
    (payment,) = record["payments"]
    assert payment["amount"] == Decimal("100.00")
    assert payment["payment_date"] == today().isoformat()
    assert payment["reference"], "the payment's move number, to match it in the CRM"
    assert record["amount_due"] == record["total_amount"] - Decimal("100.00")


@pytest.mark.live
def test_an_invoice_fallen_due_by_the_calendar_is_read_again(live: LiveStack):
    """Nothing is written in Tryton when a due date passes: the due-date sweep finds it."""
    first = run_invoices(TapTryton, erp_config(live))
    late = next(r for r in first.records if r["overdue"])
    due = dt.date.fromisoformat(late["due_date"])
    state = first.state
    bookmark = state["bookmarks"]["invoices"]
    # As if the previous run had been the day the invoice fell due.
    bookmark["overdue_as_of"] = due.isoformat()
    swept = run_invoices(TapTryton, erp_config(live), state)
    assert late["erp_id"] in {r["erp_id"] for r in swept.records}
    assert all(r["overdue"] for r in swept.records if r["erp_id"] == late["erp_id"])


def test_tryton_states_and_tax_rates_in_canonical_words():
    assert invoice_state("posted", Decimal("100"), Decimal("100")) == "posted"
    assert invoice_state("posted", Decimal("100"), Decimal("40")) == "partially_paid"
    assert invoice_state("paid", Decimal("100"), Decimal("0")) == "paid"
    assert invoice_state("validated", Decimal("100"), Decimal("0")) == "draft"
    assert invoice_state("cancelled", Decimal("100"), Decimal("0")) == "cancelled"
    taxes: dict[int, dict[str, Any]] = {
        1: {"type": "none", "childs": [2, 3]},
        2: {"type": "percentage", "rate": Decimal("0.20"), "start_date": dt.date(2014, 1, 1)},
        3: {"type": "percentage", "rate": Decimal("0.196"), "end_date": dt.date(2013, 12, 31)},
        4: {"type": "percentage", "rate": Decimal("0.055")},
    }
    assert tax_rate([1], taxes, dt.date(2026, 1, 1)) == Decimal("0.20")
    assert tax_rate([1], taxes, dt.date(2013, 6, 1)) == Decimal("0.196")
    assert tax_rate([1, 4], taxes, dt.date(2026, 1, 1)) == Decimal("0.255")
    assert tax_rate([], taxes, dt.date(2026, 1, 1)) == Decimal(0)


# -- tap-bottlecrm -----------------------------------------------------------------------------


def _deal_with_contact(live: LiveStack) -> tuple[dict[str, Any], str]:
    """A seeded deal whose account has a contact (an invoice is billed to one)."""
    crm = live.stack.crm.client()
    for deal in crm.get("opportunities/", limit=500)["opportunities"]:
        account = deal.get("account") or {}
        contacts = crm.get(f"accounts/{account['id']}/")["contacts"] if account else []
        if contacts:
            return deal, str(contacts[0]["id"])
    raise AssertionError("the seed gives CRM accounts deals and contacts")


@pytest.mark.live
def test_a_crm_mirror_reads_the_erps_figures_back_from_its_custom_fields(live: LiveStack):
    crm = live.stack.crm.client()
    deal, contact = _deal_with_contact(live)
    account = deal["account"]
    erp_id = f"9{uuid.uuid4().int % 10**8}"
    erp = Invoice.model_validate(
        {
            "source": "erp",
            "erp_id": erp_id,
            "number": f"FAC-T-{erp_id}",
            "state": "partially_paid",
            "currency": "EUR",
            "invoice_date": today(),
            "due_date": today() + dt.timedelta(days=30),
            "taxes": [
                {"rate": "0.055", "base": "89.70", "amount": "4.93"},
                {"rate": "0.20", "base": "1040.00", "amount": "208.00"},
            ],
            "untaxed_amount": Decimal("1129.70"),
            "tax_amount": Decimal("212.93"),
            "total_amount": Decimal("1342.63"),
            "amount_due": Decimal("1242.63"),
            "overdue": False,
        }
    )
    created = crm.post(
        "invoices/",
        {
            "invoice_title": f"Invoice {erp.number}",
            "account_id": account["id"],
            "contact_id": contact,
            "currency": "EUR",
            "tax_rate": "0",
            "issue_date": today().isoformat(),
            "due_date": erp.due_date.isoformat() if erp.due_date else None,
            "payment_terms": "CUSTOM",
            "line_items": mirror_lines(erp),
            "custom_fields": mirror_custom_fields(erp),
        },
    )["invoice"]
    crm.post(f"invoices/{created['id']}/send/", {})
    crm.post(
        f"invoices/{created['id']}/payments/",
        {
            "amount": "100.00",
            "payment_date": today().isoformat(),
            "payment_method": "OTHER",
            "reference_number": "2026-T-1",
        },
    )

    run = run_invoices(TapBottleCRM, crm_config(live))
    assert "ACTIVATE_VERSION" in run.types(), "a complete scan lets the ledger see deletions"
    (record,) = [r for r in run.records if r["crm_id"] == created["id"]]
    assert record["erp_id"] == erp_id
    assert record["client_crm_id"] == account["id"]
    assert record["number"] == erp.number
    assert record["state"] == "partially_paid"
    assert record["total_amount"] == Decimal("1342.63")
    assert record["untaxed_amount"] == Decimal("1129.70")
    assert record["tax_amount"] == Decimal("212.93")
    assert record["amount_due"] == Decimal("1242.63")
    assert record["overdue"] is False
    assert record["currency"] == "EUR"
    # The mirror's lines as the CRM holds them: one tax-included line per VAT rate.
    assert [(line["description"], line["unit_price"]) for line in record["lines"]] == [
        ("VAT 5.5%, tax included", Decimal("94.63")),
        ("VAT 20%, tax included", Decimal("1248.00")),
    ]
    assert sum(line["unit_price"] for line in record["lines"]) == erp.total_amount
    assert record["payments"] == [
        {"payment_date": today().isoformat(), "amount": Decimal("100.00"), "reference": "2026-T-1"}
    ]

    only = run_invoices(TapBottleCRM, crm_config(live, invoice_ids=[created["id"]]))
    assert [r["crm_id"] for r in only.records] == [created["id"]]
    assert "ACTIVATE_VERSION" not in only.types()


@pytest.mark.live
def test_a_crm_draft_reads_its_own_lines_deal_and_totals(live: LiveStack):
    crm = live.stack.crm.client()
    deal, contact = _deal_with_contact(live)
    account = deal["account"]
    products = crm.get("invoices/products/", limit=100)["results"]
    product = next(p for p in products if p["sku"] == "CONS-DEMI")
    body: dict[str, Any] = {
        "invoice_title": "Prestation de conseil",
        "account_id": account["id"],
        "contact_id": contact,
        "opportunity_id": deal["id"],
        "currency": "EUR",
        "tax_rate": "20",
        "line_items": [
            {"product": product["id"], "name": "Demi-journée", "quantity": "3", "unit_price": "520"}
        ],
    }
    created = crm.post("invoices/", body)["invoice"]

    run = run_invoices(TapBottleCRM, crm_config(live, invoice_ids=[created["id"]]))
    (record,) = run.records
    assert record["erp_id"] is None
    assert record["state"] == "draft"
    assert record["number"] is None, "the CRM's own number is not the ERP's"
    assert record["client_crm_id"] == account["id"]
    assert record["order_crm_id"] == deal["id"]
    (line,) = record["lines"]
    assert line["product_code"] == "CONS-DEMI"
    assert line["quantity"] == Decimal("3.00")
    assert line["tax_rate"] == Decimal("0.2")
    assert record["untaxed_amount"] == Decimal("1560.00")
    assert record["tax_amount"] == Decimal("312.00")
    assert record["total_amount"] == Decimal("1872.00")
    assert record["taxes"] == [
        {"rate": Decimal("0.2"), "base": Decimal("1560.00"), "amount": Decimal("312.00")}
    ]
