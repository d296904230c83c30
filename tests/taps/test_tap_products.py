"""The ``products`` streams of tap-tryton and tap-bottlecrm: the live catalogues, and what a live
CRM cannot show on demand (a list growing while it is read, a refused token)."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from contextlib import redirect_stdout
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from singer_sdk.exceptions import ConfigValidationError, FatalAPIError
from tap_bottlecrm.tap import TapBottleCRM
from tap_tryton.tap import TapTryton

from coulisse.stack.envfile import read_env_file
from coulisse.stack.seeding import erp_catalogue
from tests.catalogue import change_erp_template, create_erp_product, crm_products, new_code
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from singer_sdk import Tap

    from tests.conftest import LiveStack

#: The seed was written seconds ago: with a day's overlap, every incremental run re-reads all
#: of it, so these tests show that rows already seen are not emitted again.
WIDE = {"overlap_seconds": 86_400}


class Run:
    """What one run of a tap printed, products stream only."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    def by_code(self) -> dict[str, dict[str, Any]]:
        return {r["code"]: r for r in self.records if r["code"]}

    @property
    def state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return copy.deepcopy(states[-1])

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


def run_products(
    tap_class: type[Tap], config: dict[str, Any], state: dict[str, Any] | None = None
) -> Run:
    out = io.StringIO()
    catalog = catalog_of(tap_class, config, ["products"])
    tap = tap_class(config=config, catalog=catalog, state=state, parse_env_config=False)
    with redirect_stdout(out):
        tap.sync_all()
    return Run([json.loads(line) for line in out.getvalue().splitlines() if line.strip()])


def erp_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {
        "url": env["TRYTON_URL"],
        "database": env["TRYTON_DATABASE"],
        "username": env["TRYTON_USERNAME"],
        "password": env["TRYTON_PASSWORD"],
        **extra,
    }


def crm_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {"api_url": env["BOTTLECRM_API_URL"], "api_token": env["BOTTLECRM_API_TOKEN"], **extra}


# -- tap-tryton ------------------------------------------------------------------------------


@pytest.mark.live
def test_every_salable_erp_product_is_emitted_once_with_its_code_price_and_currency(
    live: LiveStack,
):
    run = run_products(TapTryton, erp_config(live))
    ids = [r["erp_id"] for r in run.records]
    assert len(ids) == len(set(ids)), "no product emitted twice"
    emitted = run.by_code()
    catalogue = erp_catalogue(live.stack)
    assert len(catalogue) >= 10
    for product in catalogue:
        record = emitted[product.code]
        assert record["name"] == product.name
        # The variant's list_price is empty: the template's price is the one used.
        assert Decimal(str(record["unit_price"])) == product.unit_price
        assert record["currency"] == "EUR"
        assert record["active"] is True
        assert record["source"] == "erp"
        assert record["crm_id"] is None
        assert dt.datetime.fromisoformat(record["source_updated_at"]).utcoffset() == dt.timedelta()


@pytest.mark.live
def test_a_run_from_the_previous_state_emits_only_what_changed_in_the_catalogue(live: LiveStack):
    erp = live.stack.erp.client()
    code = new_code("TAP")
    product_id = create_erp_product(erp, code=code, name="Atelier d'essai", price=Decimal(80))
    first = run_products(TapTryton, erp_config(live, **WIDE))
    assert first.by_code()[code]["unit_price"] == 80
    assert set(first.state["bookmarks"]["products"]["cursors"]) == {
        "product.product",
        "product.template",
    }
    assert run_products(TapTryton, erp_config(live, **WIDE), first.state).records == []

    # The price and the name are the template's: changing them writes the template only.
    change_erp_template(erp, product_id, list_price=Decimal("84.5"), name="Atelier révisé")
    after = run_products(TapTryton, erp_config(live, **WIDE), first.state)
    assert [r["code"] for r in after.records] == [code]
    (record,) = after.records
    assert Decimal(str(record["unit_price"])) == Decimal("84.5")
    assert record["name"] == "Atelier révisé"
    assert record["source_updated_at"] > first.by_code()[code]["source_updated_at"]
    assert run_products(TapTryton, erp_config(live, **WIDE), after.state).records == []


@pytest.mark.live
def test_a_product_taken_off_sale_or_deactivated_is_emitted_inactive(live: LiveStack):
    erp = live.stack.erp.client()
    off_sale, retired = new_code("OFF"), new_code("RET")
    off_id = create_erp_product(erp, code=off_sale, name="Hors vente", price=Decimal(10))
    retired_id = create_erp_product(erp, code=retired, name="Retiré", price=Decimal(20))
    first = run_products(TapTryton, erp_config(live, **WIDE))
    assert first.by_code()[off_sale]["active"] is True

    change_erp_template(erp, off_id, salable=False)
    change_erp_template(erp, retired_id, active=False)
    after = run_products(TapTryton, erp_config(live, **WIDE), first.state)
    assert {r["code"]: r["active"] for r in after.records} == {off_sale: False, retired: False}


@pytest.mark.live
def test_a_salable_product_without_code_is_emitted_for_the_planner_to_hold_back(
    live: LiveStack,
):
    erp = live.stack.erp.client()
    name = f"Sans code {new_code()}"
    salable = create_erp_product(erp, code=None, name=name, price=Decimal(5))
    create_erp_product(erp, code=None, name=f"{name} (achat)", price=Decimal(5), salable=False)
    records = [r for r in run_products(TapTryton, erp_config(live)).records if r["name"] == name]
    assert [(r["erp_id"], r["code"]) for r in records] == [(str(salable), None)]


@pytest.mark.live
def test_only_a_full_scan_announces_a_complete_catalogue(live: LiveStack):
    config = erp_config(live, emit_activate_version_messages=True, **WIDE)
    first = run_products(TapTryton, config)
    incremental = run_products(TapTryton, config, first.state)
    assert "ACTIVATE_VERSION" not in incremental.types(), "a partial read never deletes"
    full = run_products(TapTryton, {**config, "full_scan": True}, first.state)
    assert "ACTIVATE_VERSION" in full.types()
    assert sorted(r["erp_id"] for r in full.records) == sorted(r["erp_id"] for r in first.records)
    assert run_products(TapTryton, config, full.state).records == []


@pytest.mark.live
def test_only_the_requested_products_are_read_and_the_cursors_stay(live: LiveStack):
    everyone = run_products(TapTryton, erp_config(live))
    wanted = [everyone.records[0]["erp_id"], int(everyone.records[-1]["erp_id"]), 999_999]
    targeted = run_products(TapTryton, erp_config(live, product_ids=wanted), everyone.state)
    assert sorted(r["erp_id"] for r in targeted.records) == sorted(
        [everyone.records[0]["erp_id"], everyone.records[-1]["erp_id"]]
    )
    cursors = everyone.state["bookmarks"]["products"]["cursors"]
    assert targeted.state["bookmarks"]["products"]["cursors"] == cursors


def test_product_ids_and_full_scan_exclude_each_other():
    config = {
        "url": "http://127.0.0.1:9",
        "database": "d",
        "username": "u",
        "password": "p",
        "product_ids": [1],
        "full_scan": True,
    }
    with pytest.raises(ConfigValidationError, match="product_ids and full_scan"):
        run_products(TapTryton, config)


# -- tap-bottlecrm ---------------------------------------------------------------------------


@pytest.mark.live
def test_every_crm_product_becomes_one_canonical_product(live: LiveStack):
    crm = live.stack.crm.client()
    retired = crm.post(
        "invoices/products/",
        {"name": "Ancienne offre", "sku": new_code("CRM"), "price": "12.50", "is_active": False},
    )["product"]
    rows = {row["id"]: row for row in crm_products(crm)}
    run = run_products(TapBottleCRM, crm_config(live))
    ids = [r["crm_id"] for r in run.records]
    assert sorted(ids) == sorted(rows), "each product once, none missing"
    assert "ACTIVATE_VERSION" in run.types(), "a whole read: the ledger may learn deletions"
    for record in run.records:
        row = rows[record["crm_id"]]
        assert record["code"] == row["sku"]
        assert Decimal(str(record["unit_price"])) == Decimal(row["price"])
        assert record["currency"] == row["currency"]
        assert record["source"] == "crm"
        assert record["erp_id"] is None
    assert run.by_code()[retired["sku"]]["active"] is False
    # The seed gave the CRM the ERP's catalogue (products tests add later are ERP-only).
    seeded = [p for p in erp_catalogue(live.stack) if p.code in run.by_code()]
    assert len(seeded) >= 10
    assert all(run.by_code()[p.code]["name"] == p.name for p in seeded)


@pytest.mark.live
def test_a_catalogue_larger_than_a_page_is_read_whole_in_one_more_request(live: LiveStack):
    whole = run_products(TapBottleCRM, crm_config(live))
    paged = run_products(TapBottleCRM, crm_config(live, page_size=5))
    assert len(whole.records) > 5
    assert sorted(r["crm_id"] for r in paged.records) == sorted(r["crm_id"] for r in whole.records)


def _product(product_id: str, sku: str) -> dict[str, Any]:
    return {
        "id": product_id,
        "name": f"Produit {sku}",
        "sku": sku,
        "price": "10.00",
        "currency": "EUR",
        "is_active": True,
        "updated_at": "2026-11-26T10:00:00+01:00",
    }


@responses.activate
def test_a_product_added_while_the_list_is_read_is_not_missed_nor_repeated():
    url = "http://crm.test/api/invoices/products/"
    first = [_product("p1", "A"), _product("p2", "B")]
    # Two fit in the first page, but the list says three: it is read again, whole.
    responses.get(url, json={"count": 3, "results": first})
    responses.get(url, json={"count": 3, "results": [*first, _product("p3", "C")]})
    run = run_products(
        TapBottleCRM, {"api_url": "http://crm.test", "api_token": "t", "page_size": 2}
    )
    assert [r["crm_id"] for r in run.records] == ["p1", "p2", "p3"]
    limits = [parse_qs(urlsplit(str(call.request.url)).query)["limit"] for call in responses.calls]
    assert limits == [["2"], ["5"]]


@responses.activate
def test_a_token_without_the_invoices_scope_is_named_in_the_error():
    responses.get(
        "http://crm.test/api/invoices/products/",
        status=403,
        json={"detail": "Token lacks scope invoices:read"},
    )
    with pytest.raises(FatalAPIError, match="invoices:read"):
        run_products(TapBottleCRM, {"api_url": "http://crm.test", "api_token": "t"})
