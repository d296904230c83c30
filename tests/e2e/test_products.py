"""The ERP's catalogue reaching the CRM through the real systems: `coulisse sync` for products.

The ledger and both systems are shared with the other end-to-end tests of the session, so this
module makes its own products (codes no one else uses) and asserts on the whole catalogue only
what holds whatever else ran before.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from coulisse.bottlecrm.products import crm_price
from coulisse.sync import SyncResult, sync
from tests.catalogue import change_erp_template, create_erp_product, crm_products, new_code

if TYPE_CHECKING:
    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.tryton.rpc import TrytonClient
    from tests.conftest import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.e2e]


def _by_sku(crm: BottleCrmClient) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in crm_products(crm):
        found.setdefault(str(row.get("sku")), []).append(row)
    return found


def _salable(erp: TrytonClient) -> list[dict[str, Any]]:
    """The ERP's active salable products with a code: what the CRM's catalogue must hold."""
    return erp.search_read(
        "product.product",
        [("salable", "=", True), ("code", "!=", None)],
        ["code", "name", "list_price_used"],
    )


@dataclass
class Catalogue:
    first: SyncResult
    #: A product only the ERP had.
    new_id: int
    new_code: str
    #: A product the CRM already had by hand, with another name and price.
    known_id: int
    known_code: str
    known_crm_id: str
    #: The CRM's products before the sync, by SKU.
    crm_before: dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def catalogue(live: LiveStack) -> Catalogue:
    erp, crm = live.stack.erp.client(), live.stack.crm.client()
    new, known = new_code("E2E"), new_code("E2E")
    new_id = create_erp_product(erp, code=new, name="Audit flash", price=Decimal("1250.00"))
    known_id = create_erp_product(erp, code=known, name="Pack démarrage", price=Decimal("390.00"))
    by_hand = crm.post(
        "invoices/products/",
        {"name": "Pack démarrage (ancien)", "sku": known, "price": "350.00", "currency": "EUR"},
    )["product"]
    before = _by_sku(crm)
    return Catalogue(
        first=sync(("product",)),
        new_id=new_id,
        new_code=new,
        known_id=known_id,
        known_code=known,
        known_crm_id=str(by_hand["id"]),
        crm_before=before,
    )


def test_every_active_salable_erp_product_is_once_in_the_crm_with_the_erp_price(
    live: LiveStack, catalogue: Catalogue
):
    crm = _by_sku(live.stack.crm.client())
    salable = _salable(live.stack.erp.client())
    assert {p["code"] for p in salable} >= {catalogue.new_code, catalogue.known_code}
    for product in salable:
        (row,) = crm[product["code"]]
        assert row["name"] == product["name"]
        assert Decimal(row["price"]) == crm_price(product["list_price_used"])
        assert row["currency"] == "EUR"
        assert row["is_active"] is True


def test_products_the_crm_already_had_are_linked_not_duplicated(
    live: LiveStack, catalogue: Catalogue
):
    crm = _by_sku(live.stack.crm.client())
    assert catalogue.first.plan is not None
    assert catalogue.first.plan.linked > 0
    # The seed's products (same codes as the ERP's) and the one added by hand keep their id.
    kept = [sku for sku in catalogue.crm_before if sku in crm]
    assert len(kept) >= 10
    for sku in kept:
        assert [row["id"] for row in crm[sku]] == [r["id"] for r in catalogue.crm_before[sku]]
    (known,) = crm[catalogue.known_code]
    assert known["id"] == catalogue.known_crm_id
    assert (known["name"], known["price"]) == ("Pack démarrage", "390.00"), "the ERP's values"


def test_a_price_or_name_change_in_the_erp_shows_in_the_crm(live: LiveStack, catalogue: Catalogue):
    erp = live.stack.erp.client()
    change_erp_template(
        erp, catalogue.new_id, list_price=Decimal("1312.50"), name="Audit flash (1 jour)"
    )
    result = sync(("product",))
    assert result.applied.get("crm") == 1
    (row,) = _by_sku(live.stack.crm.client())[catalogue.new_code]
    assert (row["name"], row["price"]) == ("Audit flash (1 jour)", "1312.50")


def test_a_product_deactivated_in_the_erp_is_inactive_in_the_crm(
    live: LiveStack, catalogue: Catalogue
):
    change_erp_template(live.stack.erp.client(), catalogue.known_id, active=False)
    result = sync(("product",))
    assert result.applied.get("crm") == 1
    (row,) = _by_sku(live.stack.crm.client())[catalogue.known_code]
    assert row["id"] == catalogue.known_crm_id
    assert row["is_active"] is False


def test_a_second_run_with_no_change_writes_nothing(live: LiveStack, catalogue: Catalogue):
    crm = live.stack.crm.client()
    before = {row["id"]: row["updated_at"] for row in crm_products(crm)}
    again = sync(("product",))
    assert again.plan is not None
    assert again.plan.sides["crm"].total == 0
    assert all(count == 0 for count in again.applied.values())
    assert {row["id"]: row["updated_at"] for row in crm_products(crm)} == before
