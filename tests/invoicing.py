"""Invoices for the tests: customer invoices written in the live ERP as a clerk would, and the
CRM's invoices and tasks as the tests read them."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.stack.erp_seed import (
    _invoice_values,
    _read_setup,
    accepting_warnings,
    pay_invoice,
    today_in_paris,
)
from coulisse.stack.seed_data import SeedInvoice, SeedLine

if TYPE_CHECKING:
    from collections.abc import Sequence

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.tryton.rpc import TrytonClient

#: Two VAT rates (services at 20 %, a printed book at 5.5 %), as the seeded catalogue has them.
TWO_RATES = (("CONS-DEMI", "2", "520"), ("LIVRE-GUIDE", "3", "29.90"))


def today() -> dt.date:
    """Today as the ERP's company sees it (its due dates are in Paris time)."""
    return today_in_paris()


def erp_invoice(
    erp: TrytonClient,
    party: int,
    *,
    lines: Sequence[tuple[str, str, str]] = TWO_RATES,
    invoice_date: dt.date | None = None,
    due_date: dt.date | None = None,
    post: bool = True,
) -> int:
    """A customer invoice of ``party`` created (and posted) by the integration user; its id.

    Tryton numbers invoices in date order, so ``invoice_date`` may not be older than the last
    numbered invoice's; a ``due_date`` in the past makes it late (posting accepts Tryton's
    warning that the due date is past, as a clerk would).
    """
    invoice_date = invoice_date or today()
    seed = SeedInvoice(
        key=f"TEST-INV-{uuid.uuid4().hex[:8]}",
        client_index=0,
        lines=tuple(SeedLine(code, Decimal(qty), Decimal(price)) for code, qty, price in lines),
        invoice_date=invoice_date,
        due_date=due_date or invoice_date + dt.timedelta(days=30),
        state="posted",
    )
    addresses = erp.search("party.address", [("party", "=", party)], limit=1)
    values = _invoice_values(
        seed, {"id": party, "address": addresses[0] if addresses else None}, _read_setup(erp)
    )
    assert isinstance(values, dict), values
    (invoice,) = erp.create("account.invoice", [values])
    if post:
        accepting_warnings(erp, lambda: erp.execute("account.invoice", "post", [invoice]))
    return invoice


def erp_pay(erp: TrytonClient, invoice: int, amount: Decimal | str) -> None:
    """A payment received, recorded through Tryton's pay wizard (partial ones keep the rest)."""
    (method,) = erp.search("account.invoice.payment.method", [], limit=1)
    pay_invoice(
        erp,
        invoice,
        amount=Decimal(str(amount)),
        payment_method=method,
        paid_on=today(),
        description=f"test {invoice}",
    )


def erp_amounts(erp: TrytonClient, invoice: int) -> dict[str, Any]:
    """The invoice's number, state, total and amount still to pay, as Tryton computes them."""
    (row,) = erp.read(
        "account.invoice", [invoice], ["number", "state", "total_amount", "amount_to_pay"]
    )
    return row


def crm_invoices(crm: BottleCrmClient) -> list[dict[str, Any]]:
    """Every CRM invoice as the list shows it."""
    return list(crm.get("invoices/", limit=100_000)["results"])


def crm_mirrors(crm: BottleCrmClient, erp_id: int | str) -> list[dict[str, Any]]:
    """The CRM invoices carrying ``erp_ref`` = ``erp_id``, read in full."""
    found = []
    for row in crm_invoices(crm):
        invoice = crm.get(f"invoices/{row['id']}/")["invoice"]
        if (invoice.get("custom_fields") or {}).get("erp_ref") == str(erp_id):
            found.append(invoice)
    return found


def follow_up_tasks(
    crm: BottleCrmClient, account_id: str, erp_id: int | str
) -> list[dict[str, Any]]:
    """The account's tasks marked as the follow-up of ERP invoice ``erp_id``."""
    tasks = crm.get(f"accounts/{account_id}/")["tasks"]
    ref = f"overdue:{erp_id}"
    found: list[dict[str, Any]] = [
        t for t in tasks if (t.get("custom_fields") or {}).get("coulisse_ref") == ref
    ]
    return found


def advisor_profiles(crm: BottleCrmClient) -> list[str]:
    """The sales advisors' profile ids (every active user but the integration profile)."""
    users = crm.get("tasks/", limit=1, slim="true")["users"]
    return [u["id"] for u in users if not str(u["user__email"]).startswith("integration@")]


def ensure_crm_invoice(crm: BottleCrmClient) -> str:
    """A CRM invoice (a Draft billed to a seeded account's contact), so that the invoices
    stream has something to read on a freshly seeded CRM (the seed writes none); its id."""
    existing = crm_invoices(crm)
    if existing:
        return str(existing[0]["id"])
    page = crm.get("accounts/", limit=200)
    for account in page["active_accounts"]["open_accounts"]:
        contacts = crm.get(f"accounts/{account['id']}/")["contacts"]
        if not contacts:
            continue
        created = crm.post(
            "invoices/",
            {
                "invoice_title": "Prestation de conseil",
                "account_id": account["id"],
                "contact_id": contacts[0]["id"],
                "currency": "EUR",
                "tax_rate": "20",
                "line_items": [{"name": "Demi-journée", "quantity": "1", "unit_price": "520"}],
            },
        )
        return str(created["invoice"]["id"])
    raise AssertionError("the seed gives CRM accounts a contact")
