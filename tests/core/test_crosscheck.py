"""Reconciliation: linked documents whose figures differ are reported, never changed."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.ledger import ObservedRecord
from coulisse.planner.crosscheck import compare, cross_check, lines_total

if TYPE_CHECKING:
    from coulisse.ledger import Ledger
    from coulisse.model import Entity, Side


def _observe(ledger: Ledger, side: Side, entity: Entity, key: str, **values: Any) -> None:
    run = ledger.start_run("observe", side)
    record = {f"{side}_id": key, "source": side, **values}
    ledger.observe(run, side, entity, [ObservedRecord(key, record)], version=run)


DEAL_LINES = [
    {"product_code": "PAIN", "quantity": "10", "unit_price": "1.20"},
    {"product_code": "CROISSANT", "quantity": "3", "unit_price": "0.95"},
]


def test_a_deal_and_its_sale_that_add_up_differently_are_reported(sqlite_ledger: Ledger) -> None:
    _observe(sqlite_ledger, "crm", "order", "d1", client_crm_id="a1", lines=DEAL_LINES)
    _observe(sqlite_ledger, "erp", "order", "s1", client_erp_id="1", untaxed_amount="14.85")
    _observe(sqlite_ledger, "crm", "order", "d2", client_crm_id="a1", lines=DEAL_LINES)
    _observe(sqlite_ledger, "erp", "order", "s2", client_erp_id="1", untaxed_amount="20.00")
    sqlite_ledger.link("order", "d1", "s1", origin="reference")
    sqlite_ledger.link("order", "d2", "s2", origin="reference")
    (mismatch,) = cross_check(sqlite_ledger)
    assert (mismatch.crm_key, mismatch.erp_key, mismatch.figure) == ("d2", "s2", "untaxed total")
    assert (mismatch.crm_value, mismatch.erp_value) == (Decimal("14.85"), Decimal("20.00"))
    assert "14.85 in the CRM, 20.00 in the ERP" in mismatch.message
    # Reported in the ledger, and neither record is changed or queued for a write.
    assert sqlite_ledger.count_operations() == 0
    stored = sqlite_ledger.observed_record("erp", "order", "s2")
    assert stored is not None
    assert stored["untaxed_amount"] == "20.00"


def test_an_invoice_mirror_is_checked_tax_included_and_by_what_was_paid() -> None:
    erp = {
        "state": "partially_paid",
        "total_amount": "120.00",
        "payments": [{"payment_date": "2026-11-01", "amount": "50.00"}],
    }
    mirror = {
        "lines": [{"description": "VAT 20 %", "quantity": "1", "unit_price": "120.00"}],
        "payments": [{"payment_date": "2026-11-01", "amount": "50.00"}],
    }
    assert compare("invoice", "v1", "i1", mirror, erp) == []
    draft = {"lines": [{"quantity": "2", "unit_price": "50.00", "tax_rate": "0.20"}]}
    assert compare("invoice", "v2", "i2", draft, erp) == [], "an advisor's draft, tax added"
    unpaid = {**mirror, "payments": []}
    (mismatch,) = compare("invoice", "v1", "i1", unpaid, erp)
    assert mismatch.figure == "amount paid"
    assert compare("invoice", "v1", "i1", mirror, {**erp, "state": "cancelled"}) == []


def test_rounding_by_a_cent_is_not_a_difference() -> None:
    lines = [{"quantity": "3", "unit_price": "0.333"}]
    assert lines_total(lines) == Decimal("1.00")
    assert compare("order", "d", "s", {"lines": lines}, {"untaxed_amount": "1.01"}) == []
    assert compare("order", "d", "s", {"lines": lines}, {"untaxed_amount": "1.02"}) != []
