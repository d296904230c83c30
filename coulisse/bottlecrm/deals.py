"""BottleCRM deals as canonical orders: which deals are won, their lines, the ERP's status.

A deal becomes an order once it sits in a stage whose *kind* is ``won`` (stage codes and labels
are each organisation's own; ``CLOSED_WON`` is only the default pipeline's). Its line items name
products by SKU; BottleCRM keeps a per-line discount (a percentage or an amount) and no tax at
the deal stage, so the discount is folded into the unit price: what the line costs per unit.

The ERP's side of the order (the sale's id, number, state, progress and untaxed total) is kept
in the deal's custom fields, written by target-bottlecrm and read back here, so that a run with
no change writes nothing. Money is text with its currency (:mod:`coulisse.bottlecrm.money`).

>>> line = {"quantity": "3.00", "unit_price": "120.00", "total": "324.00"}
>>> net_unit_price(line)
Decimal('108.00')
>>> net_unit_price({"quantity": "3.00", "unit_price": "100.00", "total": "290.00"})
Decimal('96.6667')
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.money import CENT, format_money, parse_money

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

WON = "won"
#: Unit prices keep four decimals, as Tryton's sale lines do (``price_digits``).
PRICE = Decimal("0.0001")

#: Where each ERP-owned order field lives on a deal (its custom-field key).
STATUS_FIELDS: dict[str, str] = {
    "erp_id": "erp_ref",
    "number": "erp_sale_number",
    "state": "erp_sale_state",
    "shipment_state": "erp_shipment_progress",
    "invoice_state": "erp_invoice_progress",
    "untaxed_amount": "erp_untaxed_total",
}
#: Canonical order fields the CRM has no place for: never written, read back as nothing.
UNSTORED_FIELDS = frozenset({"tax_amount", "total_amount"})


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def net_unit_price(item: Mapping[str, Any]) -> Decimal | None:
    """A line item's price per unit once its discount is taken off.

    BottleCRM stores the discounted line total (``total``, to the cent); divided by the quantity
    and kept to four decimals, the ERP's line total comes back to the same cent. A line with no
    discount keeps its unit price as it is.
    """
    unit_price = _decimal(item.get("unit_price"))
    quantity = _decimal(item.get("quantity"))
    total = _decimal(item.get("total"))
    subtotal = _decimal(item.get("subtotal"))
    if unit_price is None or quantity is None or total is None or quantity == 0:
        return unit_price
    if subtotal is not None and total == subtotal:
        return unit_price
    if total == quantity * unit_price:
        return unit_price
    net = (total / quantity).quantize(PRICE, rounding=ROUND_HALF_UP)
    return net.quantize(CENT) if net == net.quantize(CENT) else net


def order_line(item: Mapping[str, Any]) -> dict[str, Any]:
    """One line item as a canonical order line (permissive: a bad value stays as it is)."""
    product = item.get("product") or {}
    quantity = _decimal(item.get("quantity"))
    return {
        "product_code": product.get("sku") or None,
        "description": item.get("name") or item.get("description") or None,
        "quantity": item.get("quantity") if quantity is None else quantity,
        "unit_price": net_unit_price(item),
    }


def _when(text: Any) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def updated_at(deal: Mapping[str, Any]) -> str | None:
    """When the deal last changed, as far as the API tells (it carries no ``updated_at``).

    The latest of its creation, its last stage change and its line items' updates.
    """
    times = [
        _when(deal.get("created_at")),
        _when(deal.get("stage_changed_at")),
        *(_when(item.get("updated_at")) for item in deal.get("line_items") or []),
    ]
    known = [moment.astimezone(dt.UTC) for moment in times if moment is not None]
    return max(known).isoformat() if known else None


def order_from_deal(deal: Mapping[str, Any]) -> dict[str, Any]:
    """A deal (a list row or a detail's ``opportunity_obj``) as a canonical order.

    The ERP-owned fields come from the deal's custom fields; the CRM has no place for the tax
    and total amounts, read as nothing. A mirrored amount someone typed over is passed on as
    text, for the planner to quarantine.
    """
    custom = deal.get("custom_fields") or {}
    account = deal.get("account") or {}
    record: dict[str, Any] = {
        "crm_id": str(deal["id"]),
        "erp_id": custom.get("erp_ref") or None,
        "source": "crm",
        "source_updated_at": updated_at(deal),
        "client_crm_id": str(account["id"]) if account.get("id") else None,
        "client_erp_id": None,
        "name": deal.get("name"),
        "number": custom.get("erp_sale_number"),
        "state": custom.get("erp_sale_state"),
        "shipment_state": custom.get("erp_shipment_progress"),
        "invoice_state": custom.get("erp_invoice_progress"),
        "order_date": deal.get("closed_on"),
        "currency": deal.get("currency"),
        "lines": [order_line(item) for item in deal.get("line_items") or []],
        "untaxed_amount": None,
        "tax_amount": None,
        "total_amount": None,
    }
    try:
        record["untaxed_amount"], _currency = parse_money(custom.get("erp_untaxed_total"))
    except ValueError:
        record["untaxed_amount"] = custom.get("erp_untaxed_total")
    return record


def status_value(field: str, order: Mapping[str, Any]) -> str | None:
    """What the custom field holding ``field`` should say for ``order`` (canonical values).

    Raises ``ValueError`` for an amount without its currency: it cannot be written.
    """
    value = order.get(field)
    if value is None or value == "":
        return None
    if field == "untaxed_amount":
        amount = _decimal(value)
        currency = order.get("currency")
        if amount is None:
            raise ValueError(f"untaxed amount {value!r} is not a number")
        if not currency:
            raise ValueError(f"untaxed amount {value} has no currency")
        return format_money(amount, str(currency))
    return str(value)


def won_stages(pipelines: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(pipeline id, stage code)`` of every won stage, from ``opportunities/pipelines/``."""
    return [
        (str(pipeline["id"]), str(stage["code"]))
        for pipeline in pipelines.get("pipelines") or []
        for stage in pipeline.get("stages") or []
        if stage.get("kind") == WON
    ]


class IncompleteScanError(RuntimeError):
    """The deal list changed while it was read page by page: a full scan could not be had."""


def won_deals(
    get: Callable[[str, dict[str, Any]], Any], page_size: int, *, attempts: int = 3
) -> Iterator[dict[str, Any]]:
    """Every won deal, read with few large pages, each deal once.

    ``get(path, params)`` returns a decoded answer. One read of the pipelines finds the won
    stages, then each is listed with ``?pipeline=&stage=`` (the stage filter is a substring
    match, so each row's ``stage_kind`` is checked again). Lists are ordered by UUID and paged
    by offset, so a deal created meanwhile can shift a page: when fewer deals were read than
    the list counts, the stage is read again (up to ``attempts`` times), since a scan that
    missed a deal would tell the ledger it was deleted.
    """
    for pipeline, code in won_stages(get("opportunities/pipelines/", {})):
        for attempt in range(1, attempts + 1):
            deals: dict[str, dict[str, Any]] = {}
            counted = 0
            offset = 0
            while True:
                page = get(
                    "opportunities/",
                    {"pipeline": pipeline, "stage": code, "limit": page_size, "offset": offset},
                )
                rows = page.get("opportunities") or []
                counted = max(counted, int(page.get("opportunities_count") or 0))
                for row in rows:
                    deals.setdefault(str(row["id"]), row)
                if len(rows) < page_size:
                    break
                offset += page_size
            if len(deals) >= counted:
                break
            if attempt == attempts:
                raise IncompleteScanError(
                    f"BottleCRM's deal list kept changing while it was read ({len(deals)} of "
                    f"{counted} deals in stage {code}): raise page_size above {counted} so "
                    "one page holds them all, or run again."
                )
        for deal in deals.values():
            if deal.get("stage_kind") == WON:
                yield deal


__all__ = [
    "STATUS_FIELDS",
    "UNSTORED_FIELDS",
    "WON",
    "IncompleteScanError",
    "net_unit_price",
    "order_from_deal",
    "order_line",
    "status_value",
    "won_deals",
    "won_stages",
]
