"""Tryton customer invoices as canonical invoices, read incrementally.

An invoice changes in Tryton in more ways than its own writes show: a payment is a move line
(the pay wizard links it to the invoice, a bank reconciliation may not write the invoice at
all), a draft's lines are rows of their own, and an invoice falls overdue by the calendar with
no write whatsoever. So a run reads what three cursors name (invoices, invoice lines, receivable
move lines) plus a sweep by due date, as the clients stream does for balances.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from coulisse.bottlecrm.invoices import payment_order
from coulisse.model import Invoice, stream_schema
from coulisse.tryton.references import crm_id_from_reference
from tap_tryton.client import (
    WITH_INACTIVE,
    ChangeCursor,
    Row,
    TrytonStream,
    explained,
    read_pages,
    stamp,
)
from tap_tryton.streams import RECEIVABLE_LINES, fallen_due

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from singer_sdk.helpers.types import Context

CUSTOMER_INVOICES = (("type", "=", "out"),)
#: An invoice with its lines, taxes, instalments and payments, in one read.
INVOICE_FIELDS = (
    "number",
    "reference",
    "state",
    "party",
    "invoice_date",
    "accounting_date",
    "currency.code",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "amount_to_pay",
    "create_date",
    "write_date",
    "lines.type",
    "lines.product.code",
    "lines.description",
    "lines.quantity",
    "lines.unit_price",
    "lines.taxes",
    "lines.taxes_date",
    "lines.origin",
    "taxes.tax.rate",
    "taxes.base",
    "taxes.amount",
    "lines_to_pay.maturity_date",
    "lines_to_pay.reconciliation",
    "payment_lines.date",
    "payment_lines.debit",
    "payment_lines.credit",
    "payment_lines.move.number",
    "reconciliation_lines.date",
    "reconciliation_lines.debit",
    "reconciliation_lines.credit",
    "reconciliation_lines.move.number",
)
TAX_FIELDS = ("type", "rate", "start_date", "end_date", "childs")
#: Tryton's invoice states as canonical ones (posted splits on what was paid).
STATES = {"draft": "draft", "validated": "draft", "paid": "paid", "cancelled": "cancelled"}
SALE_LINE = "sale.line"


def watched_models(overlap: dt.timedelta) -> dict[str, ChangeCursor]:
    """One cursor per model whose changes alter a canonical invoice (what each names)."""
    return {
        # Posting, paying through the wizard or cancelling writes the invoice: its id.
        "account.invoice": ChangeCursor(
            "account.invoice", overlap, party_field="id", domain=CUSTOMER_INVOICES
        ),
        # A draft's lines change on their own rows: their invoice.
        "account.invoice.line": ChangeCursor(
            "account.invoice.line",
            overlap,
            party_field="invoice",
            domain=(("invoice.type", "=", "out"),),
        ),
        # Payments and reconciliations are receivable lines: their move (the invoice's own
        # move for an instalment, a payment move for a payment).
        "account.move.line": ChangeCursor(
            "account.move.line", overlap, party_field="move", domain=RECEIVABLE_LINES
        ),
    }


class InvoicesStream(TrytonStream):
    """Every customer invoice as a canonical invoice, read incrementally.

    The first run, or one with ``full_scan``, reads every customer invoice; later runs read
    the invoices the cursors and the due-date sweep name. ``invoice_ids`` reads just those and
    moves no cursor.
    """

    name = "invoices"
    primary_keys: ClassVar[list[str]] = ["erp_id"]
    replication_key = "source_updated_at"
    is_sorted = False
    schema = stream_schema(Invoice, permissive=True)

    _taxes: dict[int, Row] | None = None

    @property
    def replication_method(self) -> str:
        """A full scan is a full-table read (the ledger then learns what was deleted)."""
        if self.config.get("full_scan") and not self.config.get("invoice_ids"):
            return "FULL_TABLE"
        return super().replication_method

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The invoices to emit; the cursors move in STATE only once all were emitted."""
        del context
        with explained(self.config):
            today = self.company.today()
            wanted = self.config.get("invoice_ids")
            if wanted:
                ids = sorted({int(str(i).strip()) for i in wanted})
                yield from self._invoices([("id", "in", ids)], today)
                return
            state = self.stream_state
            cursors = watched_models(self.overlap)
            saved = state.get("cursors") or {}
            for model, cursor in cursors.items():
                if model in saved:
                    cursor.load(saved[model])
            overdue_as_of = state.get("overdue_as_of")
            if self.config.get("full_scan") or overdue_as_of is None or cursors.keys() - saved:
                # Cursors first: a change landing during the read is then in what is read or
                # newer than the cursor.
                for model, cursor in cursors.items():
                    if model in saved:
                        cursor.fetch(self.tryton, self.page_size)
                    else:
                        cursor.start(self.tryton, self.page_size)
                yield from self._invoices([], today)
            else:
                changed = cursors["account.invoice"].fetch(self.tryton, self.page_size)
                changed |= cursors["account.invoice.line"].fetch(self.tryton, self.page_size)
                moves = cursors["account.move.line"].fetch(self.tryton, self.page_size)
                since = dt.date.fromisoformat(str(overdue_as_of))
                moves |= fallen_due(self.tryton, since, today, "move", page_size=self.page_size)
                changed |= self._invoices_of_moves(sorted(moves))
                for start in range(0, len(changed), self.page_size):
                    part = sorted(changed)[start : start + self.page_size]
                    yield from self._invoices([("id", "in", part)], today)
            state["cursors"] = {model: cursor.to_state() for model, cursor in cursors.items()}
            state["overdue_as_of"] = today.isoformat()
            self.logger.info("Tryton calls this run: %d", self.rpc_calls)

    def _invoices_of_moves(self, moves: Sequence[int]) -> set[int]:
        """Customer invoices whose own move or one of whose payments is in ``moves``."""
        found: set[int] = set()
        for start in range(0, len(moves), self.page_size):
            part = list(moves[start : start + self.page_size])
            domain = [
                *CUSTOMER_INVOICES,
                ["OR", ("move", "in", part), ("payment_lines.move", "in", part)],
            ]
            found.update(self.tryton.search("account.invoice", domain, context=WITH_INACTIVE))
        return found

    def _invoices(self, domain: Sequence[Any], today: dt.date) -> Iterator[dict[str, Any]]:
        """Canonical invoices for the customer invoices matching ``domain``, a page at a time."""
        count = 0
        for page in read_pages(
            self.tryton,
            "account.invoice",
            [*CUSTOMER_INVOICES, *domain],
            INVOICE_FIELDS,
            page_size=self.page_size,
            context=WITH_INACTIVE,
        ):
            taxes = self._tax_tree(
                {int(t) for row in page for line in row.get("lines.") or [] for t in line["taxes"]}
            )
            sales = self._sales(page)
            for row in page:
                yield invoice_record(row, taxes=taxes, sales=sales, today=today)
            count += len(page)
        self.logger.info("Read %d customer invoices", count)

    def _tax_tree(self, tax_ids: set[int]) -> dict[int, Row]:
        """The taxes named and all their children (read once per run: they rarely change)."""
        if self._taxes is None:
            self._taxes = {}
        missing = tax_ids - self._taxes.keys()
        while missing:
            rows = self.tryton.read("account.tax", sorted(missing), TAX_FIELDS, WITH_INACTIVE)
            for row in rows:
                self._taxes[int(row["id"])] = row
            children = {int(c) for row in rows for c in row.get("childs") or []}
            missing = children - self._taxes.keys()
        return self._taxes

    def _sales(self, invoices: Sequence[Row]) -> dict[int, Row]:
        """The sale behind each sale line the invoices' lines come from, by sale line id."""
        line_ids = {
            origin[1]
            for row in invoices
            for line in row.get("lines.") or []
            if (origin := _origin(line.get("origin"))) and origin[0] == SALE_LINE
        }
        if not line_ids:
            return {}
        rows = self.tryton.read(SALE_LINE, sorted(line_ids), ["sale", "sale.reference"])
        return {int(row["id"]): row for row in rows}


def invoice_record(
    row: Row, *, taxes: Mapping[int, Row], sales: Mapping[int, Row], today: dt.date
) -> dict[str, Any]:
    """A Tryton customer invoice (read with :data:`INVOICE_FIELDS`) as a canonical invoice."""
    total = Decimal(row.get("total_amount") or 0)
    amount_due = Decimal(row.get("amount_to_pay") or 0)
    due_date = min(
        (
            line["maturity_date"]
            for line in row.get("lines_to_pay.") or []
            if line.get("maturity_date") is not None
        ),
        default=None,
    )
    tax_day = row.get("accounting_date") or row.get("invoice_date") or today
    lines = []
    sale: Row | None = None
    for line in row.get("lines.") or []:
        if line.get("type", "line") != "line":
            continue
        origin = _origin(line.get("origin"))
        if sale is None and origin and origin[0] == SALE_LINE:
            sale = sales.get(origin[1])
        product = line.get("product.") or {}
        lines.append(
            {
                "product_code": product.get("code"),
                "description": line.get("description"),
                "quantity": line.get("quantity"),
                "unit_price": line.get("unit_price"),
                "tax_rate": tax_rate(
                    line.get("taxes") or [], taxes, line.get("taxes_date") or tax_day
                ),
            }
        )
    sale_ref = (sale or {}).get("sale.") or {}
    currency = row.get("currency.") or {}
    record: dict[str, Any] = {
        "source": "erp",
        "erp_id": str(row["id"]),
        "crm_id": crm_id_from_reference(row.get("reference")),
        "source_updated_at": stamp(row),
        "client_erp_id": str(row["party"]) if row.get("party") is not None else None,
        "order_erp_id": str(sale["sale"]) if sale and sale.get("sale") is not None else None,
        "order_crm_id": crm_id_from_reference(sale_ref.get("reference")),
        "number": row.get("number"),
        "state": invoice_state(str(row.get("state")), total, amount_due),
        "invoice_date": row.get("invoice_date"),
        "due_date": due_date,
        "currency": currency.get("code"),
        "lines": lines,
        "taxes": sorted(
            (
                {
                    "rate": (tax.get("tax.") or {}).get("rate") or Decimal(0),
                    "base": tax.get("base"),
                    "amount": tax.get("amount"),
                }
                for tax in row.get("taxes.") or []
            ),
            key=lambda tax: (tax["rate"], tax["base"] or 0),
        ),
        "untaxed_amount": row.get("untaxed_amount"),
        "tax_amount": row.get("tax_amount"),
        "total_amount": total,
        "amount_due": amount_due,
        "overdue": due_date is not None and due_date < today and amount_due > 0,
        "payments": payments(row),
    }
    return Invoice.model_validate(record).plain()


def invoice_state(state: str, total: Decimal, amount_due: Decimal) -> str:
    """Tryton's state in canonical words: a posted invoice with something paid is partly paid.

    >>> invoice_state("posted", Decimal("100"), Decimal("60"))
    'partially_paid'
    >>> invoice_state("validated", Decimal("100"), Decimal("0"))
    'draft'
    """
    if state == "posted":
        return "partially_paid" if total and amount_due != total else "posted"
    return STATES.get(state, state)


def payments(row: Row) -> list[dict[str, Any]]:
    """What paid the invoice: the lines the pay wizard linked, and what was reconciled with it.

    >>> line = {"id": 7, "date": dt.date(2026, 11, 2), "debit": 0, "credit": Decimal("50"),
    ...         "move.": {"number": "2026-00023"}}
    >>> found = payments({"payment_lines.": [line], "reconciliation_lines.": [line]})
    >>> [(p["amount"], p["reference"]) for p in found]
    [(Decimal('50'), '2026-00023')]
    """
    seen: dict[int, dict[str, Any]] = {}
    for line in [*(row.get("payment_lines.") or []), *(row.get("reconciliation_lines.") or [])]:
        if int(line["id"]) in seen:
            continue
        move = line.get("move.") or {}
        seen[int(line["id"])] = {
            "payment_date": line.get("date"),
            "amount": Decimal(line.get("credit") or 0) - Decimal(line.get("debit") or 0),
            "reference": move.get("number") or f"move line {line['id']}",
        }
    return sorted(seen.values(), key=payment_order)


def tax_rate(tax_ids: Iterable[int], taxes: Mapping[int, Row], day: dt.date) -> Decimal:
    """The rate a line's taxes charge on ``day``, as Tryton adds them up (children included,
    taxes out of their validity dates left out), as a fraction.

    >>> taxes = {2: {"type": "none", "childs": [44, 45]},
    ...          44: {"type": "percentage", "rate": Decimal("0.20"),
    ...               "start_date": dt.date(2014, 1, 1)},
    ...          45: {"type": "percentage", "rate": Decimal("0.196"),
    ...               "end_date": dt.date(2013, 12, 31)}}
    >>> tax_rate([2], taxes, dt.date(2026, 11, 26))
    Decimal('0.20')
    """
    rate = Decimal(0)
    for tax_id in tax_ids:
        tax = taxes.get(int(tax_id))
        if tax is None:
            continue
        start, end = tax.get("start_date") or dt.date.min, tax.get("end_date") or dt.date.max
        if not start <= day <= end:
            continue
        if tax.get("type") == "percentage" and tax.get("rate") is not None:
            rate += Decimal(tax["rate"])
        rate += tax_rate(tax.get("childs") or [], taxes, day)
    return rate


def _origin(value: Any) -> tuple[str, int] | None:
    """A Reference field as Tryton's JSON-RPC sends it (``"sale.line,12"``)."""
    if isinstance(value, str) and "," in value:
        model, _, ident = value.partition(",")
        if ident.strip().lstrip("-").isdigit() and int(ident) >= 0:
            return model, int(ident)
        return None
    if isinstance(value, list | tuple) and len(value) == 2 and value[1] is not None:
        return str(value[0]), int(value[1])
    return None
