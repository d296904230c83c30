"""A CRM draft invoice as Tryton ``account.invoice`` values: a customer draft for a clerk.

Pure functions of the planned invoice, the batch's :class:`~target_tryton.catalogue.Catalogue`
and the company's :class:`InvoicingSetup`. Tryton's ``create`` runs no on-change, so what a
clerk's client fills in by itself is written explicitly: the party's invoice address, its
receivable account (else the company's default), its customer payment term (else the
company's default), the revenue journal; each line's account, unit and taxes. A line naming a
product takes the product's revenue account, sale unit and customer taxes; a line with only a
description takes the company's default revenue account and the customer tax charging the
CRM's rate. The invoice date stays empty: the clerk dates it by posting (Tryton numbers
invoices in date order). ``reference`` = ``bottlecrm:<CRM invoice id>`` marks it as the CRM
invoice's twin, so a lost answer or a rerun finds it instead of making a second.

What cannot be a Tryton invoice raises :class:`~target_tryton.operations.RefusedError` with a
sentence for a clerk, naming the field; so does a CRM invoice whose lines do not make its total
(a discount or shipping the canonical lines cannot carry): the ERP would bill another amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from coulisse.tryton.references import crm_reference
from target_tryton.catalogue import PARTY_FIELDS, PRODUCT_FIELDS, first_address, unit_price
from target_tryton.operations import PlannedWrite, RefusedError

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping, Sequence

    from target_tryton.catalogue import Catalogue
    from target_tryton.taxes import TaxTree

INVOICE = "account.invoice"
#: What a customer invoice needs of its client's party, beyond what a sale needs.
INVOICE_PARTY_FIELDS: tuple[str, ...] = (*PARTY_FIELDS, "account_receivable")
#: What an invoice line needs of its product, beyond what a sale line needs.
INVOICE_PRODUCT_FIELDS: tuple[str, ...] = (
    *PRODUCT_FIELDS,
    "template.account_category.account_revenue",
)
#: What a draft's content is, while both systems hold a draft: the rest is Tryton's.
DRAFT_FIELDS = ("currency", "lines")
#: Tryton's states in which an invoice's lines may still be written.
EDITABLE_STATES = frozenset({"draft"})
#: States Tryton's ``cancel`` takes an invoice from without a cancelling move.
CANCELLABLE_STATES = frozenset({"draft", "validated"})
HUNDRED = Decimal(100)
CENT = Decimal("0.01")


class InvoiceOperation(PlannedWrite):
    """One planned invoice write: the CRM's draft as it should be in Tryton."""

    __slots__ = ()
    noun = "invoice"
    crm_noun = "CRM invoice"
    erp_noun = "invoice"

    @classmethod
    def unplanned_label(cls, record: Mapping[str, Any]) -> str:
        """How a record that is not a planned write is named: ``invoice (CRM invoice v1)``."""
        return f"invoice (CRM invoice {record.get('crm_id')})"

    @property
    def invoice(self) -> dict[str, Any]:
        """The invoice as the plan wants it in Tryton."""
        return self.values

    @property
    def party_id(self) -> int | None:
        """The client's party in Tryton."""
        value = self.invoice.get("client_erp_id")
        return int(value) if value not in {None, ""} else None

    @property
    def label(self) -> str:
        """``invoice draft (CRM invoice v1, invoice 12, operation 7)``, its number once it has
        one."""
        where = f"CRM invoice {self.crm_id}, " if self.crm_id else ""
        if self.erp_id is not None:
            where += f"invoice {self.erp_id}, "
        return f"invoice {self.invoice.get('number') or 'draft'} ({where}operation {self.id})"

    def lines(self) -> list[dict[str, Any]]:
        """The invoice lines as planned."""
        return [dict(line) for line in self.invoice.get("lines") or []]


@dataclass(frozen=True, slots=True)
class InvoicingSetup:
    """What every new customer invoice needs from the company's accounting, read once a batch.

    ``receivable`` and ``payment_term`` are the defaults of parties that have none of their own;
    ``revenue`` is the account of lines without a product.
    """

    receivable: int | None
    payment_term: int | None
    revenue: int | None
    journal: int | None
    taxes: TaxTree
    #: The day taxes are valid on (the company's today: the invoice is not dated yet).
    day: dt.date


def invoice_reference(crm_id: str) -> str:
    """The ``reference`` of the Tryton invoice made from CRM invoice ``crm_id``."""
    return crm_reference(crm_id)


def same(name: str, left: Any, right: Any) -> bool:
    """Two canonical values of an invoice field, compared as the systems mean them."""
    if name == "lines":
        return _lines_key(left) == _lines_key(right)
    if isinstance(left, str) or isinstance(right, str):
        return (str(left).strip() if left else None) == (str(right).strip() if right else None)
    return bool(left == right)


def _lines_key(lines: Any) -> list[tuple[Any, ...]]:
    key: list[tuple[Any, ...]] = []
    for line in lines or []:
        code = line.get("product_code")
        values: list[Any] = [str(code).upper() if code else None, line.get("description") or None]
        for name in ("quantity", "unit_price", "tax_rate"):
            try:
                values.append(Decimal(str(line.get(name))))
            except InvalidOperation:
                values.append(line.get(name))
        key.append(tuple(values))
    return key


def stale(operation: InvoiceOperation, current: Mapping[str, Any]) -> str | None:
    """Why the write must wait, when Tryton changed a field since the plan was made."""
    if operation.expected is None:
        return None
    moved = [
        name
        for name in operation.changed_fields
        if name in operation.expected
        and not same(name, operation.expected[name], current.get(name))
        and not same(name, operation.invoice.get(name), current.get(name))
    ]
    if not moved:
        return None
    return (
        f"{operation.label}: {', '.join(moved)} changed in Tryton since it was planned; "
        "not written, it will be planned again from both systems' current values"
    )


def invoice_values(
    operation: InvoiceOperation, catalogue: Catalogue, setup: InvoicingSetup
) -> dict[str, Any]:
    """``account.invoice.create`` values for a new customer draft, or why there can be none."""
    party = catalogue.parties.get(operation.party_id or 0)
    if party is None:
        where = f"party {operation.party_id}" if operation.party_id else "no party"
        raise RefusedError(
            f"Tryton refused {operation.label}: its client is {where} in Tryton, which does "
            "not exist; the invoice waits until the client is synchronised",
            "client_erp_id",
        )
    address = first_address(party, "invoice")
    if address is None:
        raise RefusedError(
            f"Tryton refused {operation.label}: client party {party['id']} has no address in "
            "Tryton, and an invoice is addressed; add the client's address (in the CRM or in "
            "Tryton)",
            "client_erp_id",
        )
    receivable = party.get("account_receivable") or setup.receivable
    if not receivable:
        raise RefusedError(
            f"Tryton refused {operation.label}: neither client party {party['id']} nor the "
            "company's accounting configuration has a receivable account; set the default "
            "receivable account in Tryton",
            "client_erp_id",
        )
    values: dict[str, Any] = {
        "type": "out",
        "party": int(party["id"]),
        "invoice_address": address,
        "account": int(receivable),
        "reference": invoice_reference(operation.crm_id or ""),
        "invoice_date": None,
    }
    payment_term = party.get("customer_payment_term") or setup.payment_term
    if payment_term:
        values["payment_term"] = int(payment_term)
    if setup.journal:
        values["journal"] = setup.journal
    currency = _currency(operation, catalogue)
    if currency is not None:
        values["currency"] = currency
    values["lines"] = [("create", line_values(operation, catalogue, setup, currency))]
    _check_total(operation)
    return values


def _check_total(operation: InvoiceOperation) -> None:
    """Refuse a CRM invoice whose total its lines do not make: what made the difference (a
    discount, shipping, a line rate the CRM does not charge) has no place in the lines sent.

    Only a create carries the CRM's total (an update's figures are the ERP's own)."""
    total = operation.invoice.get("total_amount")
    if total is None or not operation.lines():
        return
    made = Decimal(0)
    for line in operation.lines():
        rate = Decimal(str(line.get("tax_rate") or 0))
        made += (
            Decimal(str(line.get("quantity"))) * Decimal(str(line.get("unit_price"))) * (1 + rate)
        )
    made = made.quantize(CENT, rounding=ROUND_HALF_UP)
    if abs(made - Decimal(str(total))) > CENT:
        raise RefusedError(
            f"{operation.label} cannot become an ERP draft as it is: its lines add up to {made} "
            f"tax included, but the CRM invoice's total is {total}. Coulisse sends the lines "
            "only, so a discount, shipping or a line's own tax rate (the CRM charges the "
            "invoice's) would be lost: bill it as a line, or remove it, in the CRM",
            "total_amount",
        )


def _currency(operation: InvoiceOperation, catalogue: Catalogue) -> int | None:
    """The invoice's currency in Tryton (None: the company's)."""
    code = operation.invoice.get("currency")
    if not code:
        return None
    if str(code) not in catalogue.currencies:
        raise RefusedError(
            f"Tryton refused {operation.label}: Tryton has no currency {code!r}; add it to "
            "Tryton's currencies or correct the invoice's currency in the CRM",
            "currency",
        )
    return catalogue.currencies[str(code)]


def line_values(
    operation: InvoiceOperation,
    catalogue: Catalogue,
    setup: InvoicingSetup,
    currency: int | None,
) -> list[dict[str, Any]]:
    """``account.invoice.line`` values for every CRM line, or why one cannot be made."""
    lines = operation.lines()
    if not lines:
        raise RefusedError(
            f"Tryton refused {operation.label}: the invoice has no lines; add them in the CRM, "
            "then it becomes an ERP draft",
            "lines",
        )
    values = []
    for number, line in enumerate(lines, start=1):
        row = (
            _product_line(operation, number, line, catalogue)
            if line.get("product_code")
            else _description_line(operation, number, line, setup)
        )
        row.update(
            {
                "type": "line",
                # Tryton's quantity is a Float field: it travels as a float.
                "quantity": float(Decimal(str(line.get("quantity")))),
                "unit_price": unit_price(line.get("unit_price")),
                "description": line.get("description") or None,
            }
        )
        if currency is not None:
            row["currency"] = currency
        values.append(row)
    return values


def _product_line(
    operation: InvoiceOperation, number: int, line: Mapping[str, Any], catalogue: Catalogue
) -> dict[str, Any]:
    """A line billing a product of the catalogue: its revenue account, unit and taxes."""
    code = line.get("product_code")
    product = catalogue.product(code)
    template = (product or {}).get("template.") or {}
    category = template.get("account_category.") or {}
    problem = None
    if product is None:
        problem = f"names product {code!r}, which Tryton does not have"
    elif not product.get("active", True) or not template.get("salable"):
        problem = f"names product {code!r}, which is not for sale in Tryton"
    elif not category.get("account_revenue"):
        problem = (
            f"names product {code!r}, which has no revenue account in Tryton (its accounting "
            "category has none)"
        )
    if problem:
        raise RefusedError(
            f"Tryton refused {operation.label}: line {number} {problem}; correct the line in "
            "the CRM or the product in Tryton",
            "lines",
        )
    assert product is not None
    return {
        "product": int(product["id"]),
        "unit": template.get("sale_uom"),
        "account": int(category["account_revenue"]),
        "taxes": [("add", [int(tax) for tax in category.get("customer_taxes_used") or []])],
    }


def _description_line(
    operation: InvoiceOperation, number: int, line: Mapping[str, Any], setup: InvoicingSetup
) -> dict[str, Any]:
    """A line with only a description: the default revenue account, the CRM rate's tax."""
    if not line.get("description"):
        raise RefusedError(
            f"Tryton refused {operation.label}: line {number} has neither a product nor a "
            "description; describe it in the CRM",
            "lines",
        )
    if not setup.revenue:
        raise RefusedError(
            f"Tryton refused {operation.label}: line {number} names no product, and the "
            "company's accounting configuration has no default revenue account for it; set "
            "one in Tryton or pick a product in the CRM",
            "lines",
        )
    rate = Decimal(str(line.get("tax_rate") or 0))
    taxes: list[int] = []
    if rate:
        tax = setup.taxes.customer_tax(rate, setup.day, setup.revenue)
        if tax is None:
            raise RefusedError(
                f"Tryton refused {operation.label}: line {number} charges VAT at "
                f"{format((rate * HUNDRED).normalize(), 'f')} %, and Tryton has no customer "
                "tax at that rate; correct the rate in the CRM or add the tax in Tryton",
                "lines",
            )
        taxes.append(tax)
    return {"account": int(setup.revenue), "taxes": [("add", taxes)]}


def update_values(
    operation: InvoiceOperation,
    row: Mapping[str, Any],
    fields: Sequence[str],
    catalogue: Catalogue,
    setup: InvoicingSetup,
) -> dict[str, Any]:
    """``account.invoice.write`` values bringing a draft's content up to the CRM's."""
    values: dict[str, Any] = {}
    currency = _currency(operation, catalogue)
    if "currency" in fields and currency is not None:
        values["currency"] = currency
    if "lines" in fields or "currency" in values:
        old = [int(line["id"]) for line in row.get("lines.") or []]
        values["lines"] = [
            *([("delete", old)] if old else []),
            ("create", line_values(operation, catalogue, setup, currency)),
        ]
    return values


__all__ = [
    "CANCELLABLE_STATES",
    "DRAFT_FIELDS",
    "EDITABLE_STATES",
    "INVOICE",
    "INVOICE_PARTY_FIELDS",
    "INVOICE_PRODUCT_FIELDS",
    "InvoiceOperation",
    "InvoicingSetup",
    "invoice_reference",
    "invoice_values",
    "line_values",
    "same",
    "stale",
    "update_values",
]
