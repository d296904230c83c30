"""BottleCRM's product catalogue as canonical products: one mapping for tap and target alike.

tap-bottlecrm emits a CRM product through :func:`canonical_product`, and target-bottlecrm tells
the ledger what it stored through the same function, so that reading our own write back at the
next observation is recognised as our own write (echo suppression).

The CRM keeps a product's SKU (unique per organisation, case included), its name (at most 255
characters), one price with two decimals, an optional currency and an active flag. It has no
custom fields for products: the SKU is the ERP's product code, the link between the two.

>>> row = {"id": "p1", "sku": "LIC-ANN", "name": "Licence annuelle", "price": "3600.00",
...        "currency": "EUR", "is_active": True, "updated_at": "2026-11-26T10:00:00+01:00"}
>>> record = canonical_product(row)
>>> record["code"], record["unit_price"], record["active"]
('LIC-ANN', Decimal('3600.00'), True)
>>> crm_price(Decimal("12.3450"))
Decimal('12.35')
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

CENT = Decimal("0.01")
#: Where each canonical product field lives on a CRM product.
HOMES: dict[str, str] = {
    "code": "sku",
    "name": "name",
    "unit_price": "price",
    "currency": "currency",
    "active": "is_active",
}
#: The CRM's name for a product field, back to the canonical one (for refusals).
FIELDS_BY_HOME = {home: name for name, home in HOMES.items()}


def canonical_product(row: Mapping[str, Any]) -> dict[str, Any]:
    """A CRM product as a canonical product record (the tap's and the target's reading).

    A price that is not a number is passed on as it is: the planner quarantines it with the
    reason instead of the stream failing.
    """
    return {
        "crm_id": str(row["id"]),
        "erp_id": None,
        "source": "crm",
        "source_updated_at": row.get("updated_at"),
        "code": row.get("sku"),
        "name": row.get("name"),
        "unit_price": _amount(row.get("price")),
        "currency": row.get("currency"),
        "active": bool(True if row.get("is_active") is None else row.get("is_active")),
    }


def crm_price(amount: Decimal) -> Decimal:
    """``amount`` as the CRM keeps it: to the cent (it refuses more than two decimals)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def sku_key(sku: object) -> str:
    """How the planner matches product codes (upper case, trimmed); the CRM itself compares
    SKUs exactly."""
    return str(sku or "").strip().upper()


def _amount(value: object) -> object:
    if value is None or isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return value
