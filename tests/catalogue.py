"""Products for the tests: created in the live ERP or CRM with codes no other test uses."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decimal import Decimal

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.tryton.rpc import TrytonClient

#: Read inactive products too.
WITH_INACTIVE = {"active_test": False}


def new_code(prefix: str = "T") -> str:
    """A product code (SKU) that no other test, nor the seed, uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8].upper()}"


def create_erp_product(
    erp: TrytonClient,
    *,
    code: str | None,
    name: str,
    price: Decimal,
    salable: bool = True,
) -> int:
    """A service template with one variant, as the catalogue's are; the variant's id."""
    unit = int(erp.model_call("ir.model.data", "get_id", "product", "uom_unit"))
    values: dict[str, Any] = {
        "name": name,
        "type": "service",
        "list_price": price,
        "default_uom": unit,
        "sale_uom": unit,
        "salable": salable,
        "products": [("create", [{}])],
    }
    if code is not None:
        values["code"] = code
    (template,) = erp.create("product.template", [values])
    (product,) = erp.search("product.product", [("template", "=", template)], context=WITH_INACTIVE)
    return product


def template_of(erp: TrytonClient, product_id: int) -> int:
    (row,) = erp.read("product.product", [product_id], ["template"], context=WITH_INACTIVE)
    return int(row["template"])


def change_erp_template(erp: TrytonClient, product_id: int, **values: Any) -> None:
    """Write the variant's template (name, list_price, salable, active)."""
    erp.write("product.template", [template_of(erp, product_id)], values, context=WITH_INACTIVE)


def crm_products(crm: BottleCrmClient) -> list[dict[str, Any]]:
    """Every CRM product, active or not, in one page."""
    page = crm.get("invoices/products/", limit=100_000, offset=0)
    return list(page["results"])


def crm_products_with_sku(crm: BottleCrmClient, sku: str) -> list[dict[str, Any]]:
    return [row for row in crm_products(crm) if row.get("sku") == sku]
