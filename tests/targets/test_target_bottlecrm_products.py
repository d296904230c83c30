"""target-bottlecrm: the ERP's catalogue written to the live test CRM.

Each test builds real operations: ERP products shaped as tap-tryton emits them are observed into
a temporary SQLite ledger (the CRM side through the real tap-bottlecrm and target-ledger), the
planner plans, and tap-ledger (side crm) feeds target-bottlecrm in-process.
"""

from __future__ import annotations

import datetime as dt
import io
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from tap_bottlecrm.tap import TapBottleCRM
from tap_ledger.tap import TapLedger
from target_bottlecrm.target import TargetBottleCRM
from target_ledger.target import TargetLedger

from coulisse.bottlecrm.client import BottleCrmClient
from coulisse.ledger import Ledger, ObservedRecord
from coulisse.ledger import tables as t
from coulisse.planner import Planner
from coulisse.stack.envfile import read_env_file
from tests.catalogue import crm_products, crm_products_with_sku, new_code
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.conftest import LiveStack

pytestmark = pytest.mark.live


# -- building operations ---------------------------------------------------------------------


def erp_product(**values: Any) -> dict[str, Any]:
    """A product as tap-tryton emits it, with a code no other test uses."""
    record: dict[str, Any] = {
        "erp_id": str(100_000 + int(new_code("0").split("-")[1], 16) % 10**8),
        "source": "erp",
        "source_updated_at": dt.datetime.now(dt.UTC).isoformat(),
        "code": new_code("TGT"),
        "name": "Accompagnement sur site",
        "unit_price": Decimal("640.00"),
        "currency": "EUR",
        "active": True,
    }
    record.update(values)
    return record


def observe_erp(ledger: Ledger, *records: dict[str, Any]) -> None:
    run = ledger.start_run("observe", "erp")
    ledger.observe(run, "erp", "product", [ObservedRecord(r["erp_id"], r) for r in records])
    ledger.finish_run(run)


def observe_crm(config: dict[str, Any]) -> None:
    """tap-bottlecrm (products) into target-ledger, as the observe job runs them."""
    tap_config = {"api_url": config["api_url"], "api_token": config["api_token"]}
    out = io.StringIO()
    with redirect_stdout(out):
        TapBottleCRM(
            config=tap_config,
            catalog=catalog_of(TapBottleCRM, tap_config, ["products"]),
            parse_env_config=False,
        ).sync_all()
    with redirect_stdout(io.StringIO()):
        TargetLedger(
            config={"side": "crm", "ledger_url": config["ledger_url"]}, parse_env_config=False
        ).listen(file_input=io.StringIO(out.getvalue()))


def plan(ledger: Ledger) -> None:
    Planner(ledger).plan()


def apply(config: dict[str, Any]) -> TargetBottleCRM:
    """tap-ledger (side crm, products) into target-bottlecrm, in-process."""
    ledger_config = {"side": "crm", "ledger_url": config["ledger_url"]}
    out = io.StringIO()
    with redirect_stdout(out):
        TapLedger(
            config=ledger_config,
            catalog=catalog_of(TapLedger, ledger_config, ["products"]),
            parse_env_config=False,
        ).sync_all()
    target = TargetBottleCRM(config=config, parse_env_config=False)
    with redirect_stdout(io.StringIO()):
        target.listen(file_input=io.StringIO(out.getvalue()))
    return target


def product_operations(ledger: Ledger) -> list[Any]:
    o = t.operations.c
    with ledger.engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(t.operations).where(o.side == "crm", o.entity == "product").order_by(o.id)
            )
        )


def statuses(ledger: Ledger) -> list[tuple[str, str]]:
    return [(op.action, op.status) for op in product_operations(ledger)]


def link_of(ledger: Ledger, erp_id: str) -> str | None:
    return ledger.links_for("product", "erp", [erp_id])[erp_id].crm_key


# -- the live CRM ----------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    body: Any


@dataclass
class Setup:
    ledger: Ledger
    config: dict[str, Any]
    crm: BottleCrmClient
    calls: list[Call] = field(default_factory=list)

    def writes(self) -> list[Call]:
        return [call for call in self.calls if call.method != "GET"]

    def reads_of_the_catalogue(self) -> int:
        return sum(1 for c in self.calls if c.method == "GET" and c.path == "invoices/products/")


@pytest.fixture
def setup(live: LiveStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """A fresh ledger, the live CRM, every call recorded; the products made here are deleted
    afterwards (the end-to-end tests share the CRM)."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = read_env_file(live.stack.layout.env_file)
    config = {
        "api_url": env["BOTTLECRM_API_URL"],
        "api_token": env["BOTTLECRM_API_TOKEN"],
        "ledger_url": url,
    }
    crm = live.stack.crm.client()
    before = {row["id"] for row in crm_products(crm)}
    ledger = Ledger.open(url)
    setup = Setup(ledger, config, crm)
    original = BottleCrmClient.request

    def recording(
        self: BottleCrmClient,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        setup.calls.append(Call(method.upper(), path, body))
        return original(self, method, path, params=params, body=body)

    monkeypatch.setattr(BottleCrmClient, "request", recording)
    yield setup
    ledger.close()
    monkeypatch.undo()
    for row in crm_products(crm):
        if row["id"] not in before:
            crm.delete(f"invoices/products/{row['id']}/")


# -- tests -----------------------------------------------------------------------------------


def test_an_erp_product_is_created_once_with_its_sku_price_and_currency(setup: Setup):
    product = erp_product()
    observe_erp(setup.ledger, product)
    plan(setup.ledger)
    target = apply(setup.config)
    assert target.outcomes["applied"] == 1
    (created,) = crm_products_with_sku(setup.crm, product["code"])
    assert created["name"] == product["name"]
    assert Decimal(created["price"]) == product["unit_price"]
    assert created["currency"] == "EUR"
    assert created["is_active"] is True
    assert link_of(setup.ledger, product["erp_id"]) == created["id"]
    assert [call.method for call in setup.writes()] == ["POST"]
    # Read back by the observe job, the product is our own write: nothing more to do.
    observe_crm(setup.config)
    plan(setup.ledger)
    assert statuses(setup.ledger) == [("create", "applied")]


def test_a_sku_created_in_the_crm_meanwhile_is_adopted_not_duplicated(setup: Setup):
    product = erp_product()
    observe_erp(setup.ledger, product)
    plan(setup.ledger)
    # Someone adds the product by hand before the sync writes it (or our own answer was lost).
    by_hand = setup.crm.post(
        "invoices/products/",
        {"name": "Accompagnement", "sku": product["code"], "price": "600.00", "currency": "USD"},
    )["product"]
    setup.calls.clear()
    target = apply(setup.config)
    assert target.outcomes["applied"] == 1
    (adopted,) = crm_products_with_sku(setup.crm, product["code"])
    assert adopted["id"] == by_hand["id"]
    assert (adopted["name"], adopted["price"], adopted["currency"]) == (
        product["name"],
        "640.00",
        "EUR",
    )
    assert [call.method for call in setup.writes()] == ["PUT"]
    assert link_of(setup.ledger, product["erp_id"]) == by_hand["id"]
    observe_crm(setup.config)
    plan(setup.ledger)
    assert statuses(setup.ledger) == [("create", "applied")]


def test_a_crm_product_already_there_is_linked_by_code_and_given_the_erp_values(setup: Setup):
    product = erp_product()
    existing = setup.crm.post(
        "invoices/products/",
        {"name": "Vieux libellé", "sku": product["code"], "price": "1.00", "currency": "EUR"},
    )["product"]
    observe_erp(setup.ledger, product)
    observe_crm(setup.config)
    plan(setup.ledger)
    assert statuses(setup.ledger) == [("update", "pending")], "linked by code, not created"
    apply(setup.config)
    (linked,) = crm_products_with_sku(setup.crm, product["code"])
    assert linked["id"] == existing["id"]
    assert (linked["name"], linked["price"]) == (product["name"], "640.00")
    observe_crm(setup.config)
    plan(setup.ledger)
    assert statuses(setup.ledger) == [("update", "applied")]


def test_a_rerun_after_a_lost_answer_creates_no_second_product(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
):
    product = erp_product()
    observe_erp(setup.ledger, product)
    plan(setup.ledger)

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the ledger's disk is full")

    with monkeypatch.context() as lost:
        lost.setattr(Ledger, "record_applied", crash)
        with pytest.raises(RuntimeError, match="disk is full"):
            apply(setup.config)
    assert statuses(setup.ledger) == [("create", "pending")]
    setup.calls.clear()
    target = apply(setup.config)
    assert setup.writes() == []
    assert target.outcomes["already_in_crm"] == 1
    (created,) = crm_products_with_sku(setup.crm, product["code"])
    assert link_of(setup.ledger, product["erp_id"]) == created["id"]


def test_price_name_and_deactivation_reach_the_crm_and_are_not_written_twice(setup: Setup):
    product = erp_product()
    observe_erp(setup.ledger, product)
    plan(setup.ledger)
    apply(setup.config)
    observe_crm(setup.config)

    changed = {**product, "unit_price": Decimal("12.3456"), "name": "Accompagnement renforcé"}
    observe_erp(setup.ledger, changed)
    plan(setup.ledger)
    setup.calls.clear()
    apply(setup.config)
    (row,) = crm_products_with_sku(setup.crm, product["code"])
    # BottleCRM keeps prices to the cent.
    assert (row["name"], row["price"]) == ("Accompagnement renforcé", "12.35")
    assert [call.method for call in setup.writes()] == ["PUT"]
    assert set(setup.writes()[0].body) == {"name", "price"}, "only what changed is sent"

    observe_crm(setup.config)
    observe_erp(setup.ledger, {**changed, "active": False})
    plan(setup.ledger)
    apply(setup.config)
    (row,) = crm_products_with_sku(setup.crm, product["code"])
    assert row["is_active"] is False
    assert Decimal(row["price"]) == Decimal("12.35")

    observe_crm(setup.config)
    plan(setup.ledger)
    assert [status for _action, status in statuses(setup.ledger)] == ["applied"] * 3
    assert [action for action, _status in statuses(setup.ledger)] == [
        "create",
        "update",
        "deactivate",
    ]


def test_a_batch_reads_the_crm_catalogue_once(setup: Setup):
    products = [erp_product() for _ in range(4)]
    observe_erp(setup.ledger, *products)
    plan(setup.ledger)
    setup.calls.clear()
    target = apply(setup.config)
    assert target.outcomes["applied"] == 4
    assert setup.reads_of_the_catalogue() == 1
    assert [call.method for call in setup.writes()] == ["POST"] * 4


def test_a_value_the_crm_refuses_is_quarantined_with_a_sentence_a_clerk_reads(setup: Setup):
    product = erp_product(currency="XOF")  # ISO 4217, but not one BottleCRM offers
    observe_erp(setup.ledger, product)
    plan(setup.ledger)
    target = apply(setup.config)
    assert target.outcomes["refused"] == 1
    assert crm_products_with_sku(setup.crm, product["code"]) == []
    (entry,) = setup.ledger.quarantined(entity="product")
    assert (entry.side, entry.source_key, entry.field) == ("erp", product["erp_id"], "currency")
    assert product["code"] in entry.message
    assert "currency 'XOF'" in entry.message
    assert "Correct it in the ERP" in entry.message


def test_a_new_code_already_used_as_a_sku_is_refused_without_a_write(setup: Setup):
    first, second = erp_product(), erp_product()
    observe_erp(setup.ledger, first, second)
    plan(setup.ledger)
    apply(setup.config)
    observe_crm(setup.config)
    # The ERP gives the second product the first one's code (the first is renamed later).
    observe_erp(setup.ledger, {**second, "code": first["code"] + "-B"})
    setup.crm.post(
        "invoices/products/", {"name": "Autre", "sku": first["code"] + "-B", "price": "1.00"}
    )
    plan(setup.ledger)
    setup.calls.clear()
    target = apply(setup.config)
    assert target.outcomes["refused"] == 1
    assert setup.writes() == []
    (update,) = [op for op in product_operations(setup.ledger) if op.action == "update"]
    assert update.status == "refused"
    (row,) = crm_products_with_sku(setup.crm, second["code"])
    assert row["name"] == second["name"], "left as it was"


def test_an_update_of_a_product_deleted_in_the_crm_waits_for_the_next_scan(setup: Setup):
    product = erp_product()
    observe_erp(setup.ledger, product)
    plan(setup.ledger)
    apply(setup.config)
    observe_crm(setup.config)
    observe_erp(setup.ledger, {**product, "unit_price": Decimal("700.00")})
    plan(setup.ledger)
    (row,) = crm_products_with_sku(setup.crm, product["code"])
    setup.crm.delete(f"invoices/products/{row['id']}/")
    target = apply(setup.config)
    assert target.outcomes["failed"] == 1
    update = product_operations(setup.ledger)[-1]
    assert (update.action, update.status) == ("update", "pending"), "tried again later"
    assert "no longer in BottleCRM" in update.error_message
    assert crm_products_with_sku(setup.crm, product["code"]) == [], "not created again"
