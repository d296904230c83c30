"""A won deal as Tryton ``sale.sale`` values: the header, the lines, the changes of a draft.

Pure functions of the planned order and the batch's :class:`~target_tryton.catalogue.Catalogue`:
what cannot be a sale (no client party, no address, a product Tryton does not sell) raises
:class:`~target_tryton.operations.RefusedError` with a sentence for a clerk, naming the field.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from coulisse.tryton.sales import sale_reference
from target_tryton.catalogue import as_date, first_address, unit_price
from target_tryton.operations import PlannedWrite, RefusedError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from target_tryton.catalogue import Catalogue

#: The sale's content, the CRM's until the hand-off; the rest is Tryton's.
CONTENT_FIELDS = ("name", "order_date", "currency", "lines")
#: What a quotation still lets change (its lines are frozen).
QUOTATION_FIELDS = frozenset({"order_date"})


class OrderOperation(PlannedWrite):
    """One planned order write: the won deal as it should be in Tryton, and what to check."""

    __slots__ = ()
    noun = "order"
    crm_noun = "CRM deal"
    erp_noun = "sale"

    @property
    def order(self) -> dict[str, Any]:
        """The order as the plan wants it in Tryton."""
        return self.values

    @property
    def sale_id(self) -> int | None:
        """The sale's id in Tryton (None for a create)."""
        return self.erp_id

    @property
    def party_id(self) -> int | None:
        """The client's party in Tryton."""
        value = self.order.get("client_erp_id")
        return int(value) if value not in {None, ""} else None

    def lines(self) -> list[dict[str, Any]]:
        """The order lines as planned."""
        return [dict(line) for line in self.order.get("lines") or []]


def same(name: str, left: Any, right: Any) -> bool:
    """Two canonical values of an order field, compared as the systems mean them."""
    if name == "lines":
        return _lines_key(left) == _lines_key(right)
    if name == "order_date":
        return str(left or "")[:10] == str(right or "")[:10]
    if isinstance(left, str) or isinstance(right, str):
        return (str(left).strip() if left else None) == (str(right).strip() if right else None)
    return bool(left == right)


def _lines_key(lines: Any) -> list[tuple[Any, ...]]:
    key: list[tuple[Any, ...]] = []
    for line in lines or []:
        values: list[Any] = [line.get("product_code"), line.get("description") or None]
        for name in ("quantity", "unit_price"):
            try:
                values.append(Decimal(str(line.get(name))))
            except InvalidOperation:
                values.append(line.get(name))
        key.append(tuple(values))
    return key


def stale(operation: OrderOperation, current: Mapping[str, Any]) -> str | None:
    """Why the write must wait, when Tryton changed a field since the plan was made."""
    if operation.expected is None:
        return None
    moved = [
        name
        for name in operation.changed_fields
        if name in operation.expected
        and not same(name, operation.expected[name], current.get(name))
        and not same(name, operation.order.get(name), current.get(name))
    ]
    if not moved:
        return None
    return (
        f"{operation.label}: {', '.join(moved)} changed in Tryton since it was planned; "
        "not written, it will be planned again from both systems' current values"
    )


def sale_values(operation: OrderOperation, catalogue: Catalogue) -> dict[str, Any]:
    """``sale.sale.create`` values for a new draft sale, or why Tryton cannot hold it."""
    party = catalogue.parties.get(operation.party_id or 0)
    if party is None:
        where = f"party {operation.party_id}" if operation.party_id else "no party"
        raise RefusedError(
            f"Tryton refused {operation.label}: its client is {where} in Tryton, which "
            "does not exist; the order waits until the client is synchronised",
            "client_erp_id",
        )
    invoice_address = first_address(party, "invoice")
    if invoice_address is None:
        raise RefusedError(
            f"Tryton refused {operation.label}: client party {party['id']} has no address "
            "in Tryton, and a sale needs one to invoice and ship to; add the client's "
            "address (in the CRM or in Tryton)",
            "client_erp_id",
        )
    values: dict[str, Any] = {
        "party": int(party["id"]),
        "invoice_address": invoice_address,
        "shipment_address": first_address(party, "delivery"),
        "reference": sale_reference(operation.crm_id or ""),
        "description": operation.order.get("name"),
        "sale_date": as_date(operation.order.get("order_date")),
        "lines": [("create", line_values(operation, catalogue))],
    }
    currency = operation.order.get("currency")
    if currency:
        if str(currency) not in catalogue.currencies:
            raise RefusedError(
                f"Tryton refused {operation.label}: Tryton has no currency {currency!r}; "
                "add it to Tryton's currencies or correct the deal's currency in the CRM",
                "currency",
            )
        values["currency"] = catalogue.currencies[str(currency)]
    if party.get("customer_payment_term"):
        values["payment_term"] = int(party["customer_payment_term"])
    return values


def line_values(operation: OrderOperation, catalogue: Catalogue) -> list[dict[str, Any]]:
    """``sale.line`` values, each product found by its code, or why one cannot be made."""
    lines = operation.lines()
    if not lines:
        raise RefusedError(
            f"Tryton refused {operation.label}: the deal has no line items; add its "
            "products in the CRM, then it becomes a sale",
            "lines",
        )
    values: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        code = line.get("product_code")
        product = catalogue.product(code)
        template = (product or {}).get("template.") or {}
        problem = None
        if not code:
            problem = "names no product (Coulisse sends product lines only)"
        elif product is None:
            problem = f"names product {code!r}, which Tryton does not have"
        elif not product.get("active", True) or not template.get("salable"):
            problem = f"names product {code!r}, which is not for sale in Tryton"
        elif not template.get("account_category"):
            problem = (
                f"names product {code!r}, which has no accounting category in Tryton "
                "(no revenue account or taxes to invoice it with)"
            )
        if problem:
            raise RefusedError(
                f"Tryton refused {operation.label}: line {number} {problem}; correct the "
                "line in the CRM or the product in Tryton",
                "lines",
            )
        assert product is not None
        taxes = (template.get("account_category.") or {}).get("customer_taxes_used") or []
        values.append(
            {
                "type": "line",
                "product": int(product["id"]),
                "unit": template.get("sale_uom"),
                # Tryton's quantity is a Float field: it travels as a float.
                "quantity": float(Decimal(str(line.get("quantity")))),
                "unit_price": unit_price(line.get("unit_price")),
                "description": line.get("description") or None,
                "taxes": [("add", [int(tax) for tax in taxes])],
            }
        )
    return values


def update_values(
    operation: OrderOperation,
    row: Mapping[str, Any],
    fields: Sequence[str],
    catalogue: Catalogue,
) -> dict[str, Any]:
    """``sale.sale.write`` values bringing a draft (or a quotation's date) up to the deal."""
    values: dict[str, Any] = {}
    if "name" in fields:
        values["description"] = operation.order.get("name")
    if "order_date" in fields:
        values["sale_date"] = as_date(operation.order.get("order_date"))
    if "currency" in fields:
        currency = str(operation.order.get("currency") or "")
        if currency not in catalogue.currencies:
            raise RefusedError(
                f"Tryton refused {operation.label}: Tryton has no currency {currency!r}",
                "currency",
            )
        values["currency"] = catalogue.currencies[currency]
    if "lines" in fields:
        old = [int(line["id"]) for line in row.get("lines.") or []]
        values["lines"] = [
            *([("delete", old)] if old else []),
            ("create", line_values(operation, catalogue)),
        ]
    return values


__all__ = [
    "CONTENT_FIELDS",
    "QUOTATION_FIELDS",
    "OrderOperation",
    "line_values",
    "sale_values",
    "same",
    "stale",
    "update_values",
]
