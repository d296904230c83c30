"""Tryton sales as canonical orders, read the same way by tap-tryton and target-tryton.

A sale made from a CRM deal carries the deal's id in its ``reference`` (``"bottlecrm:<deal
id>"``, :mod:`coulisse.tryton.references`), so a create whose answer was lost is found again and
links can be rebuilt from the two systems. Tryton names the states as Coulisse does (draft,
quotation, confirmed, processing, done, cancelled); the shipment and invoice progress are
Tryton's own words, mirrored as they are. Only product lines (``type`` ``line``) are order lines:
titles, comments and subtotals are layout.

target-tryton records what it wrote in this form, so that the next observation of the sale
is recognised as its own write:

>>> import datetime
>>> from decimal import Decimal
>>> sale = {
...     "id": 7, "reference": "bottlecrm:d-1", "party": 3, "description": "Projet 1",
...     "number": "12", "state": "processing", "shipment_state": "none",
...     "invoice_state": "pending", "sale_date": datetime.date(2026, 11, 16),
...     "currency.": {"code": "EUR"}, "untaxed_amount": Decimal("100.00"),
...     "tax_amount": Decimal("20.00"), "total_amount": Decimal("120.00"),
...     "create_date": datetime.datetime(2026, 11, 20, 9), "write_date": None,
...     "lines.": [
...         {"type": "line", "product.": {"code": "DEV-HEURE"}, "description": "Dev",
...          "quantity": Decimal("2.0"), "unit_price": Decimal("50.0000"),
...          "create_date": datetime.datetime(2026, 11, 20, 9), "write_date": None},
...         {"type": "comment", "description": "Merci"},
...     ],
... }
>>> order = order_from_sale(sale)
>>> order["crm_id"], order["client_erp_id"], len(order["lines"]), order["order_date"]
('d-1', '3', 1, '2026-11-16')
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from coulisse.model import Order, OrderLine
from coulisse.tryton.references import crm_id_from_reference, crm_reference

if TYPE_CHECKING:
    from collections.abc import Mapping

SALE = "sale.sale"
SALE_LINE = "sale.line"

#: Everything an order needs from a sale and its lines, in one read.
SALE_FIELDS: tuple[str, ...] = (
    "reference",
    "party",
    "description",
    "number",
    "state",
    "shipment_state",
    "invoice_state",
    "sale_date",
    "currency.code",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "create_date",
    "write_date",
    "lines.type",
    "lines.product.code",
    "lines.description",
    "lines.quantity",
    "lines.unit_price",
    "lines.create_date",
    "lines.write_date",
)

#: States in which Tryton still lets a sale's content be edited (draft) or cancelled.
EDITABLE_STATES = frozenset({"draft"})
CANCELLABLE_STATES = frozenset({"draft", "quotation"})


def sale_reference(deal_id: str) -> str:
    """The ``reference`` of the sale made from CRM deal ``deal_id``."""
    return crm_reference(deal_id)


def deal_id_from_reference(reference: str | None) -> str | None:
    """The CRM deal id in a sale's ``reference``, None for a reference not written by us."""
    return crm_id_from_reference(reference)


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def last_change(sale: Mapping[str, Any]) -> dt.datetime | None:
    """When the sale or one of its lines last changed (Tryton's datetimes are naive UTC)."""
    rows = [sale, *(sale.get("lines.") or [])]
    stamps = [
        stamp
        for row in rows
        for stamp in (_utc(row.get("create_date")), _utc(row.get("write_date")))
        if stamp is not None
    ]
    return max(stamps, default=None)


def order_lines(sale: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sale's product lines as canonical order lines, in Tryton's order."""
    return [
        {
            "product_code": (line.get("product.") or {}).get("code"),
            "description": line.get("description"),
            "quantity": line.get("quantity"),
            "unit_price": line.get("unit_price"),
        }
        for line in sale.get("lines.") or []
        if line.get("type", "line") == "line"
    ]


def order_from_sale(sale: Mapping[str, Any]) -> dict[str, Any]:
    """A :data:`SALE_FIELDS` row as a canonical order (plain, JSON-ready)."""
    order = Order(
        source="erp",
        erp_id=str(sale["id"]),
        crm_id=deal_id_from_reference(sale.get("reference")),
        source_updated_at=last_change(sale),
        client_erp_id=str(sale["party"]) if sale.get("party") is not None else None,
        name=sale.get("description"),
        number=sale.get("number"),
        state=sale.get("state"),
        shipment_state=sale.get("shipment_state"),
        invoice_state=sale.get("invoice_state"),
        order_date=sale.get("sale_date"),
        currency=(sale.get("currency.") or {}).get("code"),
        lines=[OrderLine.model_validate(line) for line in order_lines(sale)],
        untaxed_amount=sale.get("untaxed_amount"),
        tax_amount=sale.get("tax_amount"),
        total_amount=sale.get("total_amount"),
    )
    return order.plain()


__all__ = [
    "CANCELLABLE_STATES",
    "EDITABLE_STATES",
    "SALE",
    "SALE_FIELDS",
    "SALE_LINE",
    "deal_id_from_reference",
    "last_change",
    "order_from_sale",
    "order_lines",
    "sale_reference",
]
