"""BottleCRM invoices as canonical invoices, and ERP invoices as the CRM can hold them.

One mapping for tap and target alike: tap-bottlecrm emits a CRM invoice through
:func:`canonical_invoice`, and target-bottlecrm tells the ledger what it stored through the same
function, so that reading our own write back at the next observation is recognised as our own
write (echo suppression).

A CRM invoice is one of two kinds:

- a **mirror** of an ERP invoice (its ``erp_ref`` custom field is set): the ERP owns everything,
  so the ERP's number, state and figures are read back from the custom fields Coulisse wrote
  (the CRM numbers invoices itself and knows only one tax rate per invoice); its lines and
  payments are read as the CRM holds them;
- a **CRM invoice** (no ``erp_ref``): its own status, lines and totals.

BottleCRM computes an invoice's totals from lines priced to the cent and one invoice-level tax
rate, so an ERP invoice with several VAT rates is mirrored with one tax-included line per rate
(:func:`mirror_lines`), tax rate 0: the lines add up exactly to the ERP's total.

>>> from coulisse.model import Invoice
>>> erp = Invoice(source="erp", erp_id="11", number="FAC-1", currency="EUR",
...     total_amount=Decimal("57757.72"), taxes=[
...         {"rate": "0.055", "base": "149.50", "amount": "8.22"},
...         {"rate": "0.20", "base": "48000.00", "amount": "9600.00"}])
>>> [(line["name"], line["unit_price"]) for line in mirror_lines(erp)]
[('VAT 5.5%, tax included', '157.72'), ('VAT 20%, tax included', '57600.00')]
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.money import format_money, parse_money

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from coulisse.model import Invoice

CENT = Decimal("0.01")
HUNDRED = Decimal(100)
#: The CRM's invoice statuses as canonical states, for invoices the CRM issued itself. Sent,
#: Viewed, Overdue and Pending are all billed and unpaid; only a Draft may still become an ERP
#: invoice (the planner's rule).
CRM_STATES: dict[str, str] = {
    "Draft": "draft",
    "Sent": "posted",
    "Viewed": "posted",
    "Overdue": "posted",
    "Pending": "posted",
    "Partially_Paid": "partially_paid",
    "Paid": "paid",
    "Cancelled": "cancelled",
}
#: The ERP-owned figures of a mirror, by canonical field, and the custom field holding each.
MONEY_FIELDS: dict[str, str] = {
    "total_amount": "erp_total",
    "untaxed_amount": "erp_untaxed_total",
    "tax_amount": "erp_tax_total",
    "amount_due": "erp_amount_due",
}
#: Every invoice custom field Coulisse writes (BottleCRM silently drops unknown keys).
CUSTOM_FIELD_KEYS = ("erp_ref", "erp_number", "erp_state", *MONEY_FIELDS.values(), "erp_overdue")
#: Where a mirror's canonical fields live on the CRM invoice (custom fields as ``cf.<key>``).
MIRROR_HOMES: dict[str, tuple[str, ...]] = {
    "number": ("cf.erp_number",),
    "state": ("cf.erp_state",),
    **{name: (f"cf.{key}",) for name, key in MONEY_FIELDS.items()},
    "currency": tuple(f"cf.{key}" for key in MONEY_FIELDS.values()),
    "overdue": ("cf.erp_overdue",),
    "invoice_date": ("issue_date",),
    "due_date": ("due_date",),
}


def canonical_invoice(
    row: Mapping[str, Any], skus: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A CRM invoice (``/api/invoices/<id>/``'s ``invoice``) as a canonical invoice record.

    ``skus`` maps CRM product ids to their SKU (the ERP's product code). A value someone typed
    over a mirrored custom field is passed on as it is: the planner quarantines it with the
    reason instead of the stream failing.
    """
    custom = row.get("custom_fields") or {}
    account = row.get("account") or {}
    deal = row.get("opportunity") or {}
    erp_ref = _text(custom.get("erp_ref"))
    record: dict[str, Any] = {
        "crm_id": str(row["id"]),
        "erp_id": erp_ref,
        "source": "crm",
        "source_updated_at": row.get("updated_at"),
        "client_crm_id": _text(account.get("id") if isinstance(account, dict) else account),
        "client_erp_id": None,
        "order_crm_id": _text(deal.get("id") if isinstance(deal, dict) else deal),
        "order_erp_id": None,
        "invoice_date": row.get("issue_date"),
        "due_date": row.get("due_date"),
        "currency": row.get("currency"),
        "lines": crm_lines(row, skus or {}),
        "payments": crm_payments(row.get("payments") or ()),
    }
    if erp_ref:
        record.update(_mirror_values(custom, row))
    else:
        record.update(_crm_values(row))
    return record


def _mirror_values(custom: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The ERP's figures a mirror keeps in its custom fields."""
    values: dict[str, Any] = {
        "number": _text(custom.get("erp_number")),
        "state": _text(custom.get("erp_state")),
        "taxes": [],
        "overdue": custom.get("erp_overdue") if "erp_overdue" in custom else None,
    }
    currency = None
    for name, key in MONEY_FIELDS.items():
        try:
            amount, found = parse_money(custom.get(key))
        except ValueError:
            values[name] = custom.get(key)
            continue
        values[name] = amount
        currency = currency or found
    values["currency"] = currency or row.get("currency")
    return values


def _crm_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of an invoice the CRM issued itself (or a draft still being prepared)."""
    status = str(row.get("status") or "")
    total, tax = _decimal(row.get("total_amount")), _decimal(row.get("tax_amount"))
    rate = _decimal(row.get("tax_rate")) or Decimal(0)
    taxes = []
    if isinstance(tax, Decimal) and tax:
        subtotal = _decimal(row.get("subtotal")) or Decimal(0)
        discount = _decimal(row.get("discount_amount")) or Decimal(0)
        base = subtotal - discount if isinstance(subtotal, Decimal) else subtotal
        taxes.append({"rate": rate / HUNDRED, "base": base, "amount": tax})
    untaxed = total - tax if isinstance(total, Decimal) and isinstance(tax, Decimal) else None
    return {
        "number": None,
        "state": CRM_STATES.get(status, status or None),
        "taxes": taxes,
        # Shipping is charged untaxed: the untaxed amount is what the total holds beyond tax.
        "untaxed_amount": untaxed,
        "tax_amount": tax,
        "total_amount": total,
        "amount_due": _decimal(row.get("amount_due")),
        "overdue": bool(row.get("is_overdue")) if "is_overdue" in row else None,
    }


def crm_lines(row: Mapping[str, Any], skus: Mapping[str, str]) -> list[dict[str, Any]]:
    """The invoice's line items in the CRM's order, as canonical lines.

    A line's own tax rate is only shown beside it: the invoice-level rate is what the CRM
    charges, so that is the line's rate unless the line names another.
    """
    document_rate = _decimal(row.get("tax_rate")) or Decimal(0)
    items = sorted(row.get("line_items") or (), key=lambda item: int(item.get("order") or 0))
    lines = []
    for item in items:
        own = _decimal(item.get("tax_rate")) or Decimal(0)
        rate = own or document_rate
        product = item.get("product")
        lines.append(
            {
                "product_code": skus.get(str(product)) if product else None,
                "description": _text(item.get("name")) or _text(item.get("description")),
                "quantity": _decimal(item.get("quantity")),
                "unit_price": _decimal(item.get("unit_price")),
                "tax_rate": rate / HUNDRED if isinstance(rate, Decimal) else rate,
            }
        )
    return lines


def crm_payments(payments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Payments as canonical payments, oldest first (the ERP tap sorts the same way)."""
    found = [
        {
            "payment_date": payment.get("payment_date"),
            "amount": _decimal(payment.get("amount")),
            "reference": _text(payment.get("reference_number")),
        }
        for payment in payments
    ]
    return sorted(found, key=payment_order)


def payment_order(payment: Mapping[str, Any]) -> tuple[str, str, str]:
    """How both taps order an invoice's payments: by date, then reference, then amount."""
    return (
        str(payment.get("payment_date") or ""),
        str(payment.get("reference") or ""),
        str(payment.get("amount") or ""),
    )


# -- ERP invoices as the CRM holds them ------------------------------------------------------


class NotMirrorableError(ValueError):
    """An ERP invoice the CRM cannot hold (a credit note: the CRM has no negative invoice)."""


def mirror_lines(invoice: Invoice) -> list[dict[str, Any]]:
    """Line items adding up exactly to the ERP invoice's total: one per VAT rate, tax included.

    What no tax line covers (lines without VAT) is one more line. When the taxes do not split
    the total into positive parts (a tax on a tax, a discount line), the invoice is one line
    holding its total. Raises :class:`NotMirrorableError` for a negative total.
    """
    total = invoice.total_amount
    if total is None:
        raise NotMirrorableError("it has no total")
    if total < 0:
        raise NotMirrorableError(
            f"its total {total} is negative (a credit note), and BottleCRM cannot hold a "
            "negative invoice"
        )
    lines: list[tuple[str, str, Decimal]] = []
    by_rate: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for tax in invoice.taxes:
        base, amount = by_rate.get(tax.rate, (Decimal(0), Decimal(0)))
        by_rate[tax.rate] = (base + tax.base, amount + tax.amount)
    currency = invoice.currency or ""
    for rate, (base, amount) in sorted(by_rate.items()):
        lines.append(
            (
                f"VAT {percent(rate)}%, tax included",
                f"Base {_money(base, currency)} + VAT {_money(amount, currency)}",
                base + amount,
            )
        )
    rest = total - sum((amount for _, _, amount in lines), Decimal(0))
    if rest:
        lines.append(("Not subject to VAT", f"{_money(rest, currency)}", rest))
    if any(amount < 0 for _, _, amount in lines) or not lines:
        lines = [("Total, tax included", f"{_money(total, currency)}", total)]
    return [
        {
            "name": name,
            "description": description,
            "quantity": "1",
            "unit_price": str(amount.quantize(CENT, rounding=ROUND_HALF_UP)),
            "tax_rate": "0",
            "order": order,
        }
        for order, (name, description, amount) in enumerate(lines)
    ]


def mirror_custom_fields(invoice: Invoice, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The custom fields holding the ERP's values of ``names`` (all of them by default)."""
    wanted = set(names) if names is not None else set(MIRROR_HOMES) | {"erp_id"}
    values: dict[str, Any] = {}
    if "erp_id" in wanted:
        values["erp_ref"] = invoice.erp_id
    if "number" in wanted:
        values["erp_number"] = invoice.number
    if "state" in wanted:
        values["erp_state"] = invoice.state
    if "overdue" in wanted:
        values["erp_overdue"] = bool(invoice.overdue)
    for name, key in MONEY_FIELDS.items():
        if name in wanted or "currency" in wanted:
            amount = getattr(invoice, name)
            values[key] = (
                format_money(amount, invoice.currency)
                if amount is not None and invoice.currency
                else None
            )
    return values


def percent(rate: Decimal) -> str:
    """A tax rate (a fraction) as people write it: ``Decimal("0.055")`` -> ``"5.5"``."""
    return format((rate * HUNDRED).normalize(), "f")


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount.quantize(CENT, rounding=ROUND_HALF_UP)} {currency}".strip()


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _decimal(value: object) -> Any:
    """A CRM amount as Decimal (JSON numbers already are); other text is passed on as it is."""
    if value is None or isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return value
