"""A draft invoice an advisor writes in the CRM, through the real systems as `coulisse sync` runs:
it becomes an ERP draft for a clerk, then the CRM draft mirrors the posted ERP invoice without
the customer ever being sent a second invoice.

These tests share the live stack and ledger with the other end-to-end tests: they never assume
an empty ledger, only that the accounts, deals and invoices they make are theirs.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from stdnum import luhn

from coulisse.bottlecrm.client import CrmApiError
from coulisse.bottlecrm.money import format_money
from coulisse.ledger import Ledger
from coulisse.project import ledger_url
from coulisse.stack.erp_seed import accepting_warnings
from coulisse.sync import sync
from coulisse.tryton.references import crm_reference
from tests.deals import crm_product_ids, new_crm_account, won_deal
from tests.invoicing import erp_pay, today

if TYPE_CHECKING:
    from pathlib import Path

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.model import Entity
    from coulisse.tryton.rpc import TrytonClient
    from tests.conftest import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.e2e]

ENTITIES: tuple[Entity, ...] = ("client", "product", "order", "invoice")
INVOICE = "account.invoice"
ERP_FIELDS = (
    "state",
    "number",
    "party",
    "invoice_date",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "lines.product.code",
    "lines.description",
    "lines.quantity",
    "lines.unit_price",
)


def _vat_and_siren() -> tuple[str, str]:
    """A valid French VAT and SIREN no seeded client has."""
    body = f"{random.randint(10_000_000, 99_999_999)}"
    siren = body + luhn.calc_check_digit(body)
    key = (12 + 3 * (int(siren) % 97)) % 97
    return f"FR{key:02d}{siren}", siren


@dataclass
class Client:
    """A CRM account synchronised to the ERP, with the contact its invoices are billed to."""

    account: str
    contact: str
    email: str
    party: int


def _client(crm: BottleCrmClient, erp: TrytonClient) -> Client:
    vat, siren = _vat_and_siren()
    account = new_crm_account(crm, vat=vat, siren=siren)
    email = f"compta-{uuid.uuid4().hex[:6]}@client.example"
    contact = str(
        crm.post(
            "contacts/",
            {"first_name": "Claire", "last_name": "Compta", "email": email, "account": account},
        )["id"]
    )
    sync(("client",))
    rows = erp.search_read("party.identifier", [("code", "=", crm_reference(account))], ["party"])
    assert rows, "the new account reached the ERP"
    return Client(account=account, contact=contact, email=email, party=int(rows[0]["party"]))


def advisor_draft(crm: BottleCrmClient, client: Client, *, deal: str | None = None) -> str:
    """A Draft the advisor types in the CRM, emailable to the customer as the CRM's form fills
    it: a training from the catalogue and travel costs, at the CRM's 20 %; its id."""
    body: dict[str, Any] = {
        "invoice_title": "Formation et déplacement",
        "account_id": client.account,
        "contact_id": client.contact,
        "client_email": client.email,
        "currency": "EUR",
        "tax_rate": "20",
        "line_items": [
            {
                "product": crm_product_ids(crm)["FORM-01"],
                "name": "Formation sécurité",
                "quantity": "2",
                "unit_price": "1200.00",
            },
            {"name": "Frais de déplacement", "quantity": "1", "unit_price": "84.50"},
        ],
    }
    if deal is not None:
        body["opportunity_id"] = deal
    return str(crm.post("invoices/", body)["invoice"]["id"])


def erp_invoices(erp: TrytonClient, crm_invoice: str) -> list[dict[str, Any]]:
    return erp.search_read(INVOICE, [("reference", "=", crm_reference(crm_invoice))], ERP_FIELDS)


def crm_invoice(crm: BottleCrmClient, invoice_id: str) -> dict[str, Any]:
    return dict(crm.get(f"invoices/{invoice_id}/")["invoice"])


def mails_to(mail_dir: Path, address: str) -> list[Path]:
    """The emails the CRM wrote (its file backend) with ``address`` among their lines."""
    if not mail_dir.exists():
        return []
    return [path for path in mail_dir.iterdir() if address in path.read_text(errors="replace")]


@dataclass
class Scenario:
    client: Client
    invoice: str
    first: Any
    second: Any


@pytest.fixture(scope="module")
def scenario(live: LiveStack) -> Scenario:
    """The catalogue and clients in step, a linked client, its advisor's draft, two syncs."""
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    sync(ENTITIES)
    client = _client(crm, erp)
    invoice = advisor_draft(crm, client)
    first = sync(ENTITIES)
    second = sync(ENTITIES)
    return Scenario(client=client, invoice=invoice, first=first, second=second)


def test_the_advisor_s_draft_becomes_one_erp_draft_with_its_lines(
    live: LiveStack, scenario: Scenario
):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    (draft,) = erp_invoices(erp, scenario.invoice)
    assert draft["state"] == "draft"
    assert draft["number"] is None, "a clerk posts it"
    assert draft["invoice_date"] is None, "and dates it"
    assert draft["party"] == scenario.client.party
    assert [
        (line["product."] and line["product."]["code"], line["description"], line["quantity"])
        for line in draft["lines."]
    ] == [("FORM-01", "Formation sécurité", 2), (None, "Frais de déplacement", 1)]
    ours = crm_invoice(crm, scenario.invoice)
    assert draft["untaxed_amount"] == Decimal("2484.50")
    assert draft["total_amount"] == Decimal(str(ours["total_amount"])) == Decimal("2981.40")
    assert scenario.first.applied.get("erp", 0) >= 1


def test_a_second_sync_creates_nothing_more(live: LiveStack, scenario: Scenario):
    erp = live.stack.erp.client()
    assert len(erp_invoices(erp, scenario.invoice)) == 1
    assert scenario.second.applied.get("erp", 0) == 0, "nothing more written to the ERP"
    third = sync(ENTITIES)
    assert third.applied == {}, "both systems in step: nothing written either way"


def test_the_posted_invoice_is_mirrored_on_the_crm_draft_never_sent_to_the_customer(
    live: LiveStack, scenario: Scenario
):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    (draft,) = erp_invoices(erp, scenario.invoice)
    # The clerk checks the draft, dates it today (the company's day: Tryton numbers invoices
    # in date order) and posts it.
    erp.write(INVOICE, [draft["id"]], {"invoice_date": today()})
    accepting_warnings(erp, lambda: erp.execute(INVOICE, "post", [draft["id"]]))
    sync(ENTITIES)
    (posted,) = erp_invoices(erp, scenario.invoice)
    assert posted["number"]
    ours = crm_invoice(crm, scenario.invoice)
    fields = ours["custom_fields"]
    assert fields["erp_ref"] == str(posted["id"])
    assert fields["erp_number"] == posted["number"]
    assert fields["erp_state"] == "posted"
    assert fields["erp_total"] == format_money(posted["total_amount"], "EUR")
    # BottleCRM will not blank the customer's email: the CRM draft stays a Draft, never sent.
    for blank, refusal in (("", "may not be blank"), (None, "may not be null")):
        with pytest.raises(CrmApiError) as refused:
            crm.put(f"invoices/{scenario.invoice}/", {"client_email": blank})
        assert refused.value.status == 400
        assert refusal in refused.value.detail
    assert ours["client_email"] == scenario.client.email
    assert ours["status"] == "Draft"
    assert ours["sent_at"] is None
    assert ours["reminder_enabled"] is False
    assert not mails_to(live.stack.crm.mail_dir, scenario.client.email)

    erp_pay(erp, posted["id"], "1000.00")
    sync(ENTITIES)
    ours = crm_invoice(crm, scenario.invoice)
    assert ours["custom_fields"]["erp_state"] == "partially_paid"
    assert [Decimal(str(p["amount"])) for p in ours["payments"]] == [Decimal("1000.00")]
    assert ours["status"] == "Partially_Paid", "payments reach it, so its status follows"
    assert ours["reminder_enabled"] is False, "no reminder goes to the customer"
    assert not mails_to(live.stack.crm.mail_dir, scenario.client.email)
    assert len(erp_invoices(erp, scenario.invoice)) == 1


def test_a_draft_for_a_deal_with_an_erp_sale_waits_in_quarantine(
    live: LiveStack, scenario: Scenario
):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    deal = won_deal(crm, account_id=scenario.client.account, lines=[("FORM-01", "1", "1200", None)])
    sync(ENTITIES)
    assert erp.search("sale.sale", [("reference", "=", crm_reference(deal))]), "the sale"
    invoice = advisor_draft(crm, scenario.client, deal=deal)
    sync(ENTITIES)
    assert not erp_invoices(erp, invoice), "the sale's own invoice bills the client"
    ledger = Ledger.open(ledger_url())
    try:
        held = [e for e in ledger.quarantined(entity="invoice") if e.source_key == invoice]
    finally:
        ledger.close()
    (entry,) = held
    assert entry.reason == "invoice_of_sale"
    assert "delete this CRM draft" in entry.message
