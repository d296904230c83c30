"""The ``orders`` streams of tap-bottlecrm (won deals) and tap-tryton (sales): the live systems,
and what a live CRM cannot show on demand (a deal list shifting while it is read, a refusal)."""

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
from singer_sdk.exceptions import FatalAPIError
from tap_bottlecrm.tap import TapBottleCRM
from tap_tryton.tap import TapTryton

from coulisse.bottlecrm.deals import net_unit_price, order_from_deal, won_deals
from coulisse.stack.envfile import read_env_file
from coulisse.tryton.sales import SALE, order_from_sale
from tests.deals import (
    deal,
    erp_sale,
    new_party,
    set_stage,
    some_crm_account,
    won_deal,
)
from tests.invoicing import today
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from singer_sdk import Tap

    from tests.conftest import LiveStack

#: The sales below are made seconds before the taps read them: with a day's overlap, every
#: incremental run re-reads all of them, so these tests show that rows already seen stay quiet.
WIDE = {"overlap_seconds": 86_400}


class Run:
    """What one run of a tap printed, orders stream only."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    def by_crm_id(self) -> dict[str, dict[str, Any]]:
        return {r["crm_id"]: r for r in self.records if r["crm_id"]}

    def by_erp_id(self) -> dict[str, dict[str, Any]]:
        return {r["erp_id"]: r for r in self.records}

    @property
    def state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return copy.deepcopy(states[-1])

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


def run_orders(
    tap_class: type[Tap], config: dict[str, Any], state: dict[str, Any] | None = None
) -> Run:
    out = io.StringIO()
    catalog = catalog_of(tap_class, config, ["orders"])
    tap = tap_class(config=config, catalog=catalog, state=state, parse_env_config=False)
    with redirect_stdout(out):
        tap.sync_all()
    return Run([json.loads(line) for line in out.getvalue().splitlines() if line.strip()])


def crm_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {"api_url": env["BOTTLECRM_API_URL"], "api_token": env["BOTTLECRM_API_TOKEN"], **extra}


def erp_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {
        "url": env["TRYTON_URL"],
        "database": env["TRYTON_DATABASE"],
        "username": env["TRYTON_USERNAME"],
        "password": env["TRYTON_PASSWORD"],
        **extra,
    }


# -- tap-bottlecrm: won deals -------------------------------------------------------------------


@pytest.mark.live
def test_every_won_deal_is_emitted_once_with_its_lines_and_nothing_else(live: LiveStack):
    crm = live.stack.crm.client()
    every = crm.get("opportunities/", limit=100_000, offset=0)["opportunities"]
    won = {str(d["id"]): d for d in every if d["stage_kind"] == "won"}
    assert won, "the seed has won deals"
    assert len(won) < len(every), "and open ones, which are not orders"
    run = run_orders(TapBottleCRM, crm_config(live))
    ids = [r["crm_id"] for r in run.records]
    assert len(ids) == len(set(ids)), "no deal emitted twice"
    assert set(ids) == set(won)
    for record in run.records:
        source = won[record["crm_id"]]
        assert record["source"] == "crm"
        assert record["client_crm_id"] == source["account"]["id"]
        assert record["name"] == source["name"]
        assert record["order_date"] == source["closed_on"]
        assert record["currency"] == "EUR"
        assert [line["product_code"] for line in record["lines"]] == [
            item["product"]["sku"] for item in source["line_items"]
        ]
        # Discounts are folded into the unit price: quantity x price gives the deal's line total.
        for line, item in zip(record["lines"], source["line_items"], strict=True):
            total = Decimal(str(line["quantity"])) * Decimal(str(line["unit_price"]))
            assert abs(total - Decimal(item["total"])) < Decimal("0.01")
    discounted = [
        item for d in won.values() for item in d["line_items"] if Decimal(item["discount_value"])
    ]
    assert discounted, "the seed has discounted lines, whose unit price the tap lowers"


@pytest.mark.live
def test_every_run_is_a_complete_scan_announced_to_the_ledger(live: LiveStack):
    run = run_orders(TapBottleCRM, crm_config(live))
    assert "ACTIVATE_VERSION" in run.types()


@pytest.mark.live
def test_the_erp_status_in_the_deal_custom_fields_is_read_back(live: LiveStack):
    crm = live.stack.crm.client()
    account = some_crm_account(crm)
    deal_id = won_deal(crm, account_id=account["id"], lines=[("DEV-HEURE", "3", "95.00", None)])
    crm.patch(
        f"opportunities/{deal_id}/",
        {
            "custom_fields": {
                "erp_ref": "41",
                "erp_sale_number": "S0041",
                "erp_sale_state": "processing",
                "erp_untaxed_total": "285.00 EUR",
                "erp_shipment_progress": "none",
                "erp_invoice_progress": "pending",
            }
        },
    )
    record = run_orders(TapBottleCRM, crm_config(live)).by_crm_id()[deal_id]
    assert record["erp_id"] == "41"
    assert record["number"] == "S0041"
    assert record["state"] == "processing"
    assert Decimal(str(record["untaxed_amount"])) == Decimal("285.00")
    assert record["shipment_state"] == "none"
    assert record["invoice_state"] == "pending"
    # The CRM has no place for them: read as nothing, every time.
    assert record["tax_amount"] is None
    assert record["total_amount"] is None


@pytest.mark.live
def test_a_deal_that_leaves_its_won_stage_is_no_longer_emitted(live: LiveStack):
    crm = live.stack.crm.client()
    account = some_crm_account(crm)
    deal_id = won_deal(crm, account_id=account["id"], lines=[("FORM-01", "1", "1200.00", "5")])
    assert deal_id in run_orders(TapBottleCRM, crm_config(live)).by_crm_id()
    set_stage(crm, deal_id, "lost", closed_on=dt.date.today())
    assert deal(crm, deal_id)["stage_kind"] == "lost"
    assert deal_id not in run_orders(TapBottleCRM, crm_config(live)).by_crm_id()


# -- tap-bottlecrm: what a live CRM cannot do on demand ------------------------------------------


CRM = "http://crm.invalid"
PIPELINES = {
    "pipelines": [
        {
            "id": "p1",
            "stages": [
                {"code": "PROPOSAL", "kind": "open"},
                {"code": "SIGNED", "kind": "won"},
                {"code": "GONE", "kind": "lost"},
            ],
        }
    ]
}


def _deal_row(number: int, kind: str = "won") -> dict[str, Any]:
    return {
        "id": f"00000000-0000-0000-0000-{number:012d}",
        "name": f"Deal {number}",
        "account": {"id": "a1", "name": "Dupont SARL"},
        "stage": "SIGNED",
        "stage_kind": kind,
        "currency": "EUR",
        "closed_on": "2026-11-02",
        "line_items": [],
        "custom_fields": {},
    }


@responses.activate
def test_only_won_stages_are_listed_and_each_row_is_checked_again():
    responses.get(f"{CRM}/api/opportunities/pipelines/", json=PIPELINES)
    listed = responses.get(
        f"{CRM}/api/opportunities/",
        json={
            "opportunities_count": 2,
            "opportunities": [_deal_row(1), _deal_row(2, kind="open")],
        },
    )
    records = run_orders(TapBottleCRM, {"api_url": CRM, "api_token": "t"}).records
    assert [r["name"] for r in records] == ["Deal 1"], "a substring match is not a won deal"
    query = parse_qs(urlsplit(listed.calls[0].request.url).query)
    assert query["stage"] == ["SIGNED"]
    assert query["pipeline"] == ["p1"]


@responses.activate
def test_a_deal_list_that_shifts_while_read_is_read_again_then_refused():
    responses.get(f"{CRM}/api/opportunities/pipelines/", json=PIPELINES)
    # Page size 1: the first page holds one deal, the second is empty, and the list says 2.
    pages = [
        {"opportunities_count": 2, "opportunities": [_deal_row(1)]},
        {"opportunities_count": 2, "opportunities": []},
    ]
    for _attempt in range(3):
        for page in pages:
            responses.get(f"{CRM}/api/opportunities/", json=page)
    with pytest.raises(FatalAPIError, match="kept changing while it was read"):
        run_orders(TapBottleCRM, {"api_url": CRM, "api_token": "t", "page_size": 1})
    listed = [c for c in responses.calls if "pipelines" not in str(c.request.url)]
    assert len(listed) == 6, "three complete attempts before giving up"


@responses.activate
def test_a_refused_token_names_the_scope_deals_need():
    responses.get(f"{CRM}/api/opportunities/pipelines/", status=403, json={"detail": "no"})
    with pytest.raises(FatalAPIError, match=r"opportunities:read"):
        run_orders(TapBottleCRM, {"api_url": CRM, "api_token": "t"})


def test_a_discount_is_folded_into_the_unit_price():
    percent = {"quantity": "4.00", "unit_price": "46.08", "subtotal": "184.32", "total": "165.89"}
    assert net_unit_price(percent) == Decimal("41.4725")
    plain = {"quantity": "2.00", "unit_price": "95.00", "subtotal": "190.00", "total": "190.00"}
    assert net_unit_price(plain) == Decimal("95.00")
    whole = {"quantity": "2.00", "unit_price": "100.00", "subtotal": "200.00", "total": "180.00"}
    assert net_unit_price(whole) == Decimal("90.00")
    assert net_unit_price({"quantity": "0", "unit_price": "5.00", "total": "0"}) == Decimal("5.00")


def test_a_mirrored_amount_typed_over_reaches_the_ledger_as_text():
    row = _deal_row(3) | {"custom_fields": {"erp_untaxed_total": "12,50 €"}}
    assert order_from_deal(row)["untaxed_amount"] == "12,50 €"


def test_each_won_stage_of_each_pipeline_is_read():
    pipelines = {
        "pipelines": [
            {"id": "p1", "stages": [{"code": "WON", "kind": "won"}]},
            {"id": "p2", "stages": [{"code": "SIGNED", "kind": "won"}]},
        ]
    }
    asked: list[tuple[str, str]] = []

    def get(path: str, params: dict[str, Any]) -> Any:
        if path.endswith("pipelines/"):
            return pipelines
        asked.append((params["pipeline"], params["stage"]))
        return {"opportunities_count": 1, "opportunities": [_deal_row(len(asked))]}

    assert len(list(won_deals(get, 100))) == 2
    assert asked == [("p1", "WON"), ("p2", "SIGNED")]


# -- tap-tryton: sales ---------------------------------------------------------------------------


@pytest.mark.live
def test_every_sale_is_emitted_with_its_deal_reference_lines_and_totals(live: LiveStack):
    erp = live.stack.erp.client()
    party = new_party(erp)
    deal_id = "d0000000-0000-0000-0000-000000000001"
    sale_id = erp_sale(
        erp,
        party=party,
        deal_id=deal_id,
        lines=[("DEV-HEURE", "3", "85.5000"), ("FORM-01", "1", "1200.0000")],
        state="confirmed",
    )
    run = run_orders(TapTryton, erp_config(live))
    record = run.by_erp_id()[str(sale_id)]
    assert record["crm_id"] == deal_id
    assert record["client_erp_id"] == str(party["id"])
    assert record["source"] == "erp"
    assert record["state"] in {"confirmed", "processing"}
    assert record["number"]
    assert record["invoice_state"] == "pending", "confirming made its invoice"
    assert [(line["product_code"], Decimal(str(line["quantity"]))) for line in record["lines"]] == [
        ("DEV-HEURE", Decimal(3)),
        ("FORM-01", Decimal(1)),
    ]
    assert Decimal(str(record["untaxed_amount"])) == Decimal("1456.50")
    total = Decimal(str(record["untaxed_amount"])) + Decimal(str(record["tax_amount"]))
    assert Decimal(str(record["total_amount"])) == total
    assert record["currency"] == "EUR"
    assert record["source_updated_at"]


@pytest.mark.live
def test_a_run_from_the_previous_state_emits_only_the_sales_that_changed(live: LiveStack):
    erp = live.stack.erp.client()
    party = new_party(erp)
    config = erp_config(live, **WIDE)
    quoted = erp_sale(
        erp, party=party, deal_id="d-quoted", lines=[("DEV-HEURE", "1", "95")], state="draft"
    )
    edited = erp_sale(
        erp, party=party, deal_id="d-edited", lines=[("DEV-HEURE", "1", "95")], state="draft"
    )
    quiet = erp_sale(
        erp, party=party, deal_id="d-quiet", lines=[("DEV-HEURE", "1", "95")], state="draft"
    )
    first = run_orders(TapTryton, config)
    assert {str(quoted), str(edited), str(quiet)} <= set(first.by_erp_id())
    again = run_orders(TapTryton, config, state=first.state)
    assert again.records == [], "nothing changed, nothing emitted"
    erp.execute(SALE, "quote", [quoted])
    (line,) = erp.search("sale.line", [("sale", "=", edited)])
    erp.write("sale.line", [line], {"quantity": 2.0})
    changed = run_orders(TapTryton, config, state=again.state).by_erp_id()
    assert set(changed) == {str(quoted), str(edited)}
    assert changed[str(quoted)]["state"] == "quotation"
    assert changed[str(quoted)]["number"], "quoting numbers the sale"
    assert Decimal(str(changed[str(edited)]["lines"][0]["quantity"])) == 2


@pytest.mark.live
def test_a_sale_whose_invoice_is_posted_is_emitted_again(live: LiveStack):
    """Tryton writes the sale's invoice progress on the sale: the sale cursor sees it."""
    erp = live.stack.erp.client()
    party = new_party(erp)
    config = erp_config(live, **WIDE)
    sale_id = erp_sale(
        erp, party=party, deal_id="d-invoiced", lines=[("FORM-01", "1", "1200")], state="confirmed"
    )
    first = run_orders(TapTryton, config)
    assert first.by_erp_id()[str(sale_id)]["invoice_state"] == "pending"
    (invoice,) = erp.search("account.invoice", [("sales", "=", sale_id)])
    # The company's date (Paris), not the machine's: Tryton numbers invoices in date order, and
    # other tests date theirs in the company's time zone.
    erp.write("account.invoice", [invoice], {"invoice_date": today()})
    erp.execute("account.invoice", "post", [invoice])
    record = run_orders(TapTryton, config, state=first.state).by_erp_id()[str(sale_id)]
    assert record["invoice_state"] == "awaiting payment"


@pytest.mark.live
def test_a_full_scan_reads_every_sale_and_announces_it(live: LiveStack):
    erp = live.stack.erp.client()
    config = erp_config(live, full_scan=True, emit_activate_version_messages=True)
    run = run_orders(TapTryton, config)
    assert "ACTIVATE_VERSION" in run.types()
    assert len(run.records) == erp.search_count(SALE, [])


def test_a_sale_becomes_an_order_the_way_the_target_records_it():
    sale = {
        "id": 12,
        "reference": "ventes-comptoir",
        "party": 5,
        "description": None,
        "number": None,
        "state": "draft",
        "shipment_state": "none",
        "invoice_state": "none",
        "sale_date": None,
        "currency.": {"code": "EUR"},
        "untaxed_amount": Decimal("0"),
        "tax_amount": Decimal("0"),
        "total_amount": Decimal("0"),
        "create_date": dt.datetime(2026, 11, 2, 8),
        "write_date": None,
        "lines.": [{"type": "title", "description": "Matériel"}],
    }
    order = order_from_sale(sale)
    assert order["crm_id"] is None, "a reference not written by Coulisse names no deal"
    assert order["lines"] == []
    assert order["source_updated_at"] == "2026-11-02T08:00:00+00:00"
