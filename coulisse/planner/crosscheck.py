"""Reconciliation: do the linked documents still add up the same in both systems?

Each sync ends with a cross-check of every linked order and invoice, as last observed:

- an order: the deal's lines (quantity x unit price, CRM discounts folded in) against the ERP
  sale's untaxed total;
- an invoice: the CRM invoice's lines (for a mirror, one tax-included line per VAT rate)
  against the ERP invoice's total, and what was paid on each side.

A difference is reported (a ``mismatch`` event on a ledger run of kind ``check``, and in the
sync's output), never "fixed": an amount that differs is a person's question (a line edited
in the CRM after the hand-off, a payment recorded on one side only).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.ledger.codec import loads
from coulisse.ledger.store import EventItem

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from coulisse.ledger.store import Ledger
    from coulisse.model import Entity

CENT = Decimal("0.01")
_PAIRS = (
    "SELECT l.id, l.crm_key, l.erp_key, c.data AS crm_data, e.data AS erp_data "
    "FROM links l "
    "JOIN observed c ON c.side = 'crm' AND c.entity = l.entity AND c.source_key = l.crm_key "
    "JOIN observed e ON e.side = 'erp' AND e.entity = l.entity AND e.source_key = l.erp_key "
    "WHERE l.entity = ? AND c.deleted_at IS NULL AND e.deleted_at IS NULL AND l.id > ? "
    "ORDER BY l.id LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One figure that differs between the CRM and the ERP for a linked document."""

    entity: Entity
    crm_key: str
    erp_key: str
    figure: str
    crm_value: Decimal
    erp_value: Decimal

    @property
    def message(self) -> str:
        label = "deal" if self.entity == "order" else "invoice"
        return (
            f"{label} CRM {self.crm_key} / ERP {self.erp_key}: {self.figure} "
            f"{self.crm_value} in the CRM, {self.erp_value} in the ERP"
        )


def _amount(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def lines_total(lines: Iterable[Mapping[str, Any]], *, with_tax: bool = False) -> Decimal | None:
    """The sum of quantity x unit price (plus each line's tax rate if ``with_tax``), to the
    cent; None when a line has no figures."""
    total = Decimal(0)
    for line in lines:
        quantity, price = _amount(line.get("quantity")), _amount(line.get("unit_price"))
        if quantity is None or price is None:
            return None
        rate = (_amount(line.get("tax_rate")) or Decimal(0)) if with_tax else Decimal(0)
        total += quantity * price * (1 + rate)
    return total.quantize(CENT)


def _paid(record: Mapping[str, Any]) -> Decimal:
    return sum(
        (_amount(p.get("amount")) or Decimal(0) for p in record.get("payments") or ()),
        Decimal(0),
    ).quantize(CENT)


def compare(
    entity: Entity, crm_key: str, erp_key: str, crm: Mapping[str, Any], erp: Mapping[str, Any]
) -> list[Mismatch]:
    """The figures of one linked document that differ between the two systems."""
    found: list[Mismatch] = []

    def differs(figure: str, crm_value: Decimal | None, erp_value: Decimal | None) -> None:
        if crm_value is None or erp_value is None:
            return
        # A cent apart is rounding (the CRM rounds tax once per invoice, the ERP per line).
        if abs(crm_value - erp_value) > CENT:
            found.append(Mismatch(entity, crm_key, erp_key, figure, crm_value, erp_value))

    if entity == "order":
        if crm.get("lines"):
            differs("untaxed total", lines_total(crm["lines"]), _amount(erp.get("untaxed_amount")))
    elif crm.get("lines") and erp.get("state") != "cancelled":
        # A mirror's lines are tax included (rate 0); an advisor's draft has its tax rate.
        differs("total", lines_total(crm["lines"], with_tax=True), _amount(erp.get("total_amount")))
        if crm.get("payments") is not None and erp.get("payments") is not None:
            differs("amount paid", _paid(crm), _paid(erp))
    return found


def cross_check(
    ledger: Ledger, *, chunk_size: int = 2000, flow_run_id: str | None = None
) -> list[Mismatch]:
    """Compare every linked order and invoice; record each difference as a ledger event."""
    run_id = ledger.start_run("check", flow_run_id=flow_run_id)
    mismatches: list[Mismatch] = []
    checked = 0
    try:
        for entity in ("order", "invoice"):
            last = 0
            while True:
                with ledger.engine.connect() as conn:
                    rows = ledger._select(conn, _PAIRS, (entity, last, chunk_size))
                if not rows:
                    break
                last = rows[-1].id
                checked += len(rows)
                for row in rows:
                    mismatches.extend(
                        compare(
                            entity,
                            row.crm_key,
                            row.erp_key,
                            loads(row.crm_data),
                            loads(row.erp_data),
                        )
                    )
        ledger.record_events(
            run_id,
            [
                EventItem(
                    "crm",
                    m.entity,
                    m.crm_key,
                    "mismatch",
                    {
                        "erp_key": m.erp_key,
                        "figure": m.figure,
                        "crm": str(m.crm_value),
                        "erp": str(m.erp_value),
                        "message": m.message,
                    },
                )
                for m in mismatches
            ],
        )
    except Exception:
        ledger.finish_run(run_id, status="failed")
        raise
    ledger.finish_run(run_id, stats={"checked": checked, "mismatches": len(mismatches)})
    return mismatches
