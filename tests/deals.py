"""Deals and sales for the order tests: won deals made in the live CRM, sales in the live ERP."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.tryton.sales import SALE, SALE_FIELDS, sale_reference

if TYPE_CHECKING:
    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.tryton.rpc import TrytonClient


def stage_codes(crm: BottleCrmClient) -> dict[str, str]:
    """The default pipeline's first stage code of each kind (open, won, lost)."""
    pipelines = crm.get("opportunities/pipelines/")["pipelines"]
    pipeline = next(p for p in pipelines if p.get("is_default")) if pipelines else {}
    codes: dict[str, str] = {}
    for stage in pipeline.get("stages") or []:
        codes.setdefault(str(stage["kind"]), str(stage["code"]))
    return codes


def crm_product_ids(crm: BottleCrmClient) -> dict[str, str]:
    """CRM product ids by SKU."""
    rows = crm.get("invoices/products/", limit=100_000, offset=0)["results"]
    return {str(row["sku"]): str(row["id"]) for row in rows if row.get("sku")}


def crm_account(crm: BottleCrmClient, account_id: str) -> dict[str, Any]:
    return dict(crm.get(f"accounts/{account_id}/")["account_obj"])


def some_crm_account(crm: BottleCrmClient) -> dict[str, Any]:
    """An open account of the seed."""
    page = crm.get("accounts/", limit=1, offset=0)
    return dict(page["active_accounts"]["open_accounts"][0])


def new_crm_account(crm: BottleCrmClient, *, vat: str, siren: str) -> str:
    """An account no other test uses, with an address, a VAT and a SIREN; its id."""
    tag = uuid.uuid4().hex[:6]
    body = {
        "name": f"Brasserie {tag} SAS",
        "email": f"contact@brasserie-{tag}.fr",
        "address_line": "3 rue des Brasseurs",
        "postcode": "35000",
        "city": "Rennes",
        "country": "FR",
        "currency": "EUR",
        "custom_fields": {"vat": vat, "siren": siren},
    }
    return str(crm.post("accounts/", body)["id"])


def won_deal(
    crm: BottleCrmClient,
    *,
    account_id: str,
    lines: list[tuple[str, str, str, str | None]],
    closed_on: dt.date | None = None,
    name: str | None = None,
) -> str:
    """A deal with line items ``(sku, quantity, unit price, discount %)``, won; its id."""
    products = crm_product_ids(crm)
    deal_id = str(
        crm.post(
            "opportunities/",
            {
                "name": name or f"Commande {uuid.uuid4().hex[:8]}",
                "account": account_id,
                "currency": "EUR",
            },
        )["id"]
    )
    for order, (sku, quantity, price, discount) in enumerate(lines):
        item: dict[str, Any] = {
            "product_id": products[sku],
            "quantity": quantity,
            "unit_price": price,
            "order": order,
        }
        if discount:
            item["discount_type"] = "PERCENTAGE"
            item["discount_value"] = discount
        crm.post(f"opportunities/{deal_id}/line-items/", item)
    set_stage(crm, deal_id, "won", closed_on=closed_on or dt.date.today())
    return deal_id


def set_stage(
    crm: BottleCrmClient, deal_id: str, kind: str, *, closed_on: dt.date | None = None
) -> None:
    """Move a deal to the default pipeline's first stage of ``kind`` (open, won, lost)."""
    body: dict[str, Any] = {"stage": stage_codes(crm)[kind]}
    if closed_on is not None:
        body["closed_on"] = closed_on.isoformat()
    crm.patch(f"opportunities/{deal_id}/", body)


def deal(crm: BottleCrmClient, deal_id: str) -> dict[str, Any]:
    return dict(crm.get(f"opportunities/{deal_id}/")["opportunity_obj"])


def erp_products(erp: TrytonClient, codes: list[str]) -> dict[str, dict[str, Any]]:
    """Variants by code, with what a sale line needs."""
    rows = erp.search_read(
        "product.product",
        [("code", "in", codes)],
        ["code", "template.sale_uom", "template.account_category.customer_taxes_used"],
    )
    return {str(row["code"]): row for row in rows}


def new_party(erp: TrytonClient, *, address: bool = True) -> dict[str, Any]:
    """A party no other test uses (the seed's balances stay as the clients tests expect)."""
    (france,) = erp.search("country.country", [("code", "=", "FR")])
    values: dict[str, Any] = {"name": f"Épicerie {uuid.uuid4().hex[:6]} SARL"}
    if address:
        values["addresses"] = [
            (
                "create",
                [
                    {
                        "street": "1 place du Marché",
                        "postal_code": "44000",
                        "city": "Nantes",
                        "country": france,
                    }
                ],
            )
        ]
    (party_id,) = erp.create("party.party", [values])
    (row,) = erp.read("party.party", [party_id], ["name", "addresses"])
    return row


def erp_sale(
    erp: TrytonClient,
    *,
    party: dict[str, Any],
    deal_id: str,
    lines: list[tuple[str, str, str]],
    state: str = "draft",
    sale_date: dt.date | None = None,
) -> int:
    """A sale as Coulisse makes it (the deal's reference), left in ``state``; its id."""
    products = erp_products(erp, [code for code, _q, _p in lines])
    address = party["addresses"][0]
    values = {
        "party": party["id"],
        "invoice_address": address,
        "shipment_address": address,
        "reference": sale_reference(deal_id),
        "description": f"Vente {deal_id[:8]}",
        "sale_date": sale_date or dt.date.today(),
        "lines": [
            (
                "create",
                [
                    {
                        "type": "line",
                        "product": products[code]["id"],
                        "unit": products[code]["template."]["sale_uom"],
                        "quantity": float(quantity),
                        "unit_price": Decimal(price),
                        "description": code,
                        "taxes": [
                            (
                                "add",
                                products[code]["template."]["account_category."][
                                    "customer_taxes_used"
                                ],
                            )
                        ],
                    }
                    for code, quantity, price in lines
                ],
            )
        ],
    }
    (sale_id,) = erp.create(SALE, [values])
    if state in {"quotation", "confirmed"}:
        erp.execute(SALE, "quote", [sale_id])
    if state == "confirmed":
        erp.execute(SALE, "confirm", [sale_id])
    return sale_id


def sales_with_reference(erp: TrytonClient, deal_id: str) -> list[dict[str, Any]]:
    return erp.search_read(
        SALE, [("reference", "=", sale_reference(deal_id))], [*SALE_FIELDS, "lines.taxes"]
    )


def ensure_erp_sale(erp: TrytonClient) -> None:
    """At least one sale in the ERP (the seed makes none): an ERP-only quotation."""
    if erp.search_count(SALE, []):
        return
    (product,) = erp.search_read(
        "product.product", [("salable", "=", True), ("code", "!=", None)], ["code"], limit=1
    )
    erp_sale(
        erp,
        party=new_party(erp),
        deal_id=f"erp-only-{uuid.uuid4().hex[:8]}",
        lines=[(product["code"], "1", "10.00")],
        state="quotation",
    )
