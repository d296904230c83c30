"""The invoices sink: CRM draft invoices become Tryton customer drafts for a clerk to post.

The planner sends a CRM invoice to the ERP only as a draft with no ERP sale behind it (its
option ``crm_invoices_to_erp``); the client must already be in the ERP (the plan defers it
otherwise). For a batch of operations from tap-ledger (side ``erp``):

- **creates**: one search for customer invoices already carrying the CRM invoice's reference
  (``"bottlecrm:<CRM invoice id>"``: a create whose answer was lost is never made twice), one
  read each of the parties, the products (by code), the currencies and the company's invoicing
  defaults, then one ``create`` of customer drafts (one by one if Tryton refuses the batch, to
  tell which invoice it refused; a refusal quarantines the CRM invoice with Tryton's message).
  Nothing is validated or posted: a clerk checks the draft, dates it and posts it.
- **updates** (possible only while both are drafts, under a policy giving the CRM the draft's
  content): a draft's currency and lines are rewritten, compare-and-set on its ``_timestamp``;
  an invoice past draft is the ERP's and is not written.
- **cancels** (the CRM draft was deleted): Tryton's ``cancel`` on a draft or validated invoice;
  a posted invoice is never touched (credit it in Tryton).

Then one read of the invoices as tap-tryton reads them (through the same function), recorded as
each operation's stored values, so the next observation is not taken for a change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink
from tap_tryton.client import Company
from tap_tryton.invoices import INVOICE_FIELDS, invoice_record

from coulisse.tryton.references import crm_id_from_reference
from coulisse.tryton.rpc import TrytonConcurrencyError, TrytonUserError
from target_tryton.bookkeeping import Bookkeeping, Tally
from target_tryton.catalogue import read_catalogue
from target_tryton.invoice_values import (
    CANCELLABLE_STATES,
    DRAFT_FIELDS,
    EDITABLE_STATES,
    INVOICE,
    INVOICE_PARTY_FIELDS,
    INVOICE_PRODUCT_FIELDS,
    InvoiceOperation,
    InvoicingSetup,
    invoice_reference,
    invoice_values,
    same,
    stale,
    update_values,
)
from target_tryton.operations import RefusedError, TrytonApplyError
from target_tryton.taxes import TaxTree

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Sequence

    from coulisse.ledger import Ledger
    from coulisse.tryton.rpc import TrytonClient
    from target_tryton.catalogue import Catalogue

#: How a batch's log line orders what it did.
OUTCOMES = ("created", "found", "updated", "cancelled", "unchanged", "refused", "replan")
#: Canonical fields not recorded as stored: they are the link, not the invoice.
_LINK_FIELDS = frozenset({"crm_id", "erp_id", "source", "source_updated_at"})


class InvoicesSink(BatchSink):
    """Applies planned invoice writes (create, update, cancel) to Tryton customer invoices."""

    MAX_SIZE_DEFAULT = 100

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the Tryton session and the ledger."""
        self._target = target
        super().__init__(target, stream_name, schema, key_properties)
        self._today: dt.date | None = None

    @property
    def max_size(self) -> int:
        """Invoices per batch (``batch_size``): each batch costs a handful of Tryton calls."""
        size = self.config.get("batch_size") or self.batch_size_rows or self.MAX_SIZE_DEFAULT
        return max(1, int(size))

    @property
    def tryton(self) -> TrytonClient:
        """The target's Tryton session, shared by every sink."""
        client: TrytonClient = self._target.connector.client
        return client

    @property
    def ledger(self) -> Ledger:
        """The target's ledger, where each outcome is recorded."""
        ledger: Ledger = self._target.ledger
        return ledger

    def process_batch(self, context: dict[str, Any]) -> None:
        """Apply the batch; record every outcome in the ledger before returning."""
        records: list[dict[str, Any]] = context.get("records", [])
        operations = [InvoiceOperation.from_record(record) for record in records]
        if not operations:
            return
        books = Bookkeeping(self.ledger, self.logger, Tally(OUTCOMES), "invoices")
        for operation in operations:
            if operation.action not in {"create", "update", "cancel"}:
                books.failed(
                    operation,
                    f"{operation.label}: an invoice takes no {operation.action!r} write in "
                    "Tryton; left for the planner to correct",
                )
        self._apply_creates([op for op in operations if op.action == "create"], books)
        self._apply_updates([op for op in operations if op.action == "update"], books)
        self._apply_cancels([op for op in operations if op.action == "cancel"], books)
        self.logger.info("invoices applied to Tryton at %s: %s", self.tryton.url, books.tally)

    # -- creates -------------------------------------------------------------------------------

    def _apply_creates(self, operations: list[InvoiceOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        for operation in operations:
            if operation.crm_id is None:
                msg = (
                    f"{operation.label} has no crm_id: without it target-tryton cannot mark "
                    "the invoice against duplicates; fix the operation's source"
                )
                raise TrytonApplyError(msg)
        with books.calling("looking up", operations):
            found = self._find_by_reference(op.crm_id for op in operations if op.crm_id)
        existing: list[tuple[InvoiceOperation, int]] = []
        missing: list[InvoiceOperation] = []
        for operation in operations:
            invoice = found.get(operation.crm_id or "")
            if invoice is None:
                missing.append(operation)
                continue
            self.logger.info(
                "%s already exists as invoice %s (an earlier run created it): not created again",
                operation.label,
                invoice,
            )
            books.tally.counts["found"] += 1
            existing.append((operation, invoice))
        ready: list[tuple[InvoiceOperation, dict[str, Any]]] = []
        taxes = TaxTree(self.tryton)
        if missing:
            with books.calling("reading what the new invoices need for", missing):
                catalogue = self._catalogue(missing)
                setup = self._setup(taxes)
                for operation in missing:
                    try:
                        ready.append((operation, invoice_values(operation, catalogue, setup)))
                    except RefusedError as exc:
                        books.refused(operation, str(exc), field=exc.field)
        created = self._create(ready, books)
        books.tally.counts["created"] += len(created)
        self._record_applied(existing + created, books, taxes)

    def _find_by_reference(self, crm_ids: Iterable[str]) -> dict[str, int]:
        """Customer invoices already carrying these CRM invoices' references, by CRM id."""
        references = sorted({invoice_reference(crm_id) for crm_id in crm_ids})
        if not references:
            return {}
        rows = self.tryton.search_read(
            INVOICE,
            [("type", "=", "out"), ("reference", "in", references)],
            ["reference"],
            order=[("id", "ASC")],
        )
        found: dict[str, int] = {}
        for row in rows:
            crm_id = crm_id_from_reference(row.get("reference"))
            if crm_id is not None:
                found.setdefault(crm_id, int(row["id"]))
        return found

    def _catalogue(self, operations: Sequence[InvoiceOperation]) -> Catalogue:
        """The parties, products and currencies these invoices name, one read each."""
        return read_catalogue(
            self.tryton,
            parties=(op.party_id for op in operations if op.party_id is not None),
            codes=(
                str(line["product_code"])
                for op in operations
                for line in op.lines()
                if line.get("product_code")
            ),
            currencies=(
                str(op.invoice["currency"]) for op in operations if op.invoice.get("currency")
            ),
            party_fields=INVOICE_PARTY_FIELDS,
            product_fields=INVOICE_PRODUCT_FIELDS,
        )

    def _setup(self, taxes: TaxTree) -> InvoicingSetup:
        """The company's invoicing defaults: two reads (``taxes`` are read when a line asks)."""
        (config,) = self.tryton.read(
            "account.configuration",
            [1],
            [
                "default_account_receivable",
                "default_customer_payment_term",
                "default_category_account_revenue",
            ],
        )
        journals = self.tryton.search(
            "account.journal", [("type", "=", "revenue")], limit=1, order=[("id", "ASC")]
        )
        return InvoicingSetup(
            receivable=config.get("default_account_receivable"),
            payment_term=config.get("default_customer_payment_term"),
            revenue=config.get("default_category_account_revenue"),
            journal=journals[0] if journals else None,
            taxes=taxes,
            day=self._company_today(),
        )

    def _company_today(self) -> dt.date:
        """Today in the company's time zone (taxes are valid by date), read once per run."""
        if self._today is None:
            company_id = self.tryton.context.get("company")
            timezone = None
            if company_id is not None:
                (row,) = self.tryton.read("company.company", [int(company_id)], ["timezone"])
                timezone = row.get("timezone")
            self._today = Company(
                id=int(company_id or 0), party=None, currency=None, timezone=timezone
            ).today()
        return self._today

    def _create(
        self, ready: list[tuple[InvoiceOperation, dict[str, Any]]], books: Bookkeeping
    ) -> list[tuple[InvoiceOperation, int]]:
        """Create in one call; if Tryton refuses it, one by one to find the refused invoices."""
        if not ready:
            return []
        operations = [operation for operation, _values in ready]
        try:
            with books.calling("creating", operations, passing=(TrytonUserError,)):
                ids = self.tryton.create(INVOICE, [values for _operation, values in ready])
            return list(zip(operations, ids, strict=True))
        except TrytonUserError as exc:
            if len(ready) == 1:
                books.refused(ready[0][0], f"Tryton refused {ready[0][0].label}: {exc}")
                return []
            self.logger.info(
                "Tryton refused a batch of %d new invoices (%s): creating them one by one",
                len(ready),
                exc,
            )
        created: list[tuple[InvoiceOperation, int]] = []
        for operation, values in ready:
            try:
                with books.calling("creating", [operation], passing=(TrytonUserError,)):
                    (invoice,) = self.tryton.create(INVOICE, [values])
            except TrytonUserError as exc:
                books.refused(operation, f"Tryton refused {operation.label}: {exc}")
                continue
            created.append((operation, invoice))
        return created

    # -- updates -------------------------------------------------------------------------------

    def _apply_updates(self, operations: list[InvoiceOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        invoices = self._current(operations, books)
        if not invoices:
            return
        with books.calling("reading what the invoices need for", [op for op, _r in invoices]):
            catalogue = self._catalogue([op for op, _row in invoices])
            setup = self._setup(TaxTree(self.tryton))
            canonical = self._canonical([row for _op, row in invoices], setup.taxes)
        planned: list[tuple[InvoiceOperation, int, dict[str, Any], str]] = []
        unchanged: list[tuple[InvoiceOperation, int]] = []
        for operation, row in invoices:
            current = canonical[int(row["id"])]
            moved = stale(operation, current)
            if moved:
                books.failed(operation, moved)
                continue
            fields = [
                name
                for name in operation.changed_fields
                if name in DRAFT_FIELDS
                and not same(name, operation.invoice.get(name), current.get(name))
            ]
            if not fields:
                unchanged.append((operation, int(row["id"])))
                continue
            state = str(row.get("state"))
            if state not in EDITABLE_STATES:
                books.failed(
                    operation,
                    f"{operation.label}: invoice {row.get('number') or row['id']} is {state} "
                    "in Tryton, and only a draft's lines may change; not written, it will be "
                    "planned again",
                )
                continue
            try:
                with books.calling("reading taxes for", [operation]):
                    values = update_values(operation, row, fields, catalogue, setup)
            except RefusedError as exc:
                books.refused(operation, str(exc), field=exc.field)
                continue
            planned.append((operation, int(row["id"]), values, str(row["_timestamp"])))
        written = self._write(planned, books)
        books.tally.counts["updated"] += len(written)
        books.tally.counts["unchanged"] += len(unchanged)
        self._record_applied(written + unchanged, books, setup.taxes)

    def _current(
        self, operations: list[InvoiceOperation], books: Bookkeeping
    ) -> list[tuple[InvoiceOperation, dict[str, Any]]]:
        """The invoices these operations write to, as Tryton holds them now (with timestamps)."""
        known = [op for op in operations if op.erp_id is not None]
        for operation in operations:
            if operation.erp_id is None:
                books.failed(
                    operation,
                    f"{operation.label}: no Tryton invoice id to write to; the planner will "
                    "plan it again once the invoice is linked",
                )
        if not known:
            return []
        with books.calling("reading", known):
            rows = {
                int(row["id"]): row
                for row in self.tryton.search_read(
                    INVOICE,
                    [("id", "in", sorted({op.erp_id for op in known if op.erp_id}))],
                    [*INVOICE_FIELDS, "_timestamp", "lines.id"],
                )
            }
        found: list[tuple[InvoiceOperation, dict[str, Any]]] = []
        for operation in known:
            row = rows.get(operation.erp_id or 0)
            if row is None:
                books.failed(
                    operation,
                    f"{operation.label}: invoice {operation.erp_id} is no longer in Tryton at "
                    f"{self.tryton.url}; not written, planned again once the ERP is observed",
                )
                continue
            found.append((operation, row))
        return found

    def _write(
        self,
        planned: list[tuple[InvoiceOperation, int, dict[str, Any], str]],
        books: Bookkeeping,
    ) -> list[tuple[InvoiceOperation, int]]:
        """Write in one call (compare-and-set on each invoice); one by one if Tryton objects."""
        if not planned:
            return []
        passing = (TrytonUserError, TrytonConcurrencyError)
        operations = [operation for operation, *_rest in planned]
        try:
            with books.calling("writing", operations, passing=passing):
                self._write_invoices(planned)
            return [(operation, invoice) for operation, invoice, _values, _stamp in planned]
        except passing as exc:
            self.logger.info(
                "Tryton turned down %d invoice writes together (%s): one by one",
                len(planned),
                exc,
            )
        written: list[tuple[InvoiceOperation, int]] = []
        for item in planned:
            operation, invoice = item[0], item[1]
            try:
                with books.calling("writing", [operation], passing=passing):
                    self._write_invoices([item])
            except TrytonConcurrencyError:
                books.failed(
                    operation,
                    f"{operation.label}: changed in Tryton while it was being written "
                    "(timestamp check); not written, it will be planned again",
                )
                continue
            except TrytonUserError as exc:
                books.refused(operation, f"Tryton refused {operation.label}: {exc}")
                continue
            written.append((operation, invoice))
        return written

    def _write_invoices(
        self, planned: Sequence[tuple[InvoiceOperation, int, dict[str, Any], str]]
    ) -> None:
        arguments: list[Any] = []
        stamps: dict[str, str] = {}
        for _operation, invoice, values, stamp in planned:
            arguments.extend([[invoice], values])
            stamps[f"{INVOICE},{invoice}"] = stamp
        self.tryton.model_call(INVOICE, "write", *arguments, context={"_timestamp": stamps})

    # -- cancellations ------------------------------------------------------------------------

    def _apply_cancels(self, operations: list[InvoiceOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        invoices = self._current(operations, books)
        due: list[tuple[InvoiceOperation, int]] = []
        already: list[tuple[InvoiceOperation, int]] = []
        for operation, row in invoices:
            state = str(row.get("state"))
            if state == "cancelled":
                already.append((operation, int(row["id"])))
            elif state in CANCELLABLE_STATES:
                due.append((operation, int(row["id"])))
            else:
                books.refused(
                    operation,
                    f"{operation.label} was deleted or cancelled in the CRM, but invoice "
                    f"{row.get('number') or row['id']} is {state} in Tryton: Coulisse never "
                    "cancels a posted invoice. Credit it in Tryton if the client is not to "
                    "pay it.",
                    field="state",
                )
        cancelled = self._cancel(due, books)
        books.tally.counts["cancelled"] += len(cancelled)
        books.tally.counts["unchanged"] += len(already)
        self._record_applied(cancelled + already, books, TaxTree(self.tryton))

    def _cancel(
        self, invoices: list[tuple[InvoiceOperation, int]], books: Bookkeeping
    ) -> list[tuple[InvoiceOperation, int]]:
        """Cancel every invoice in one call; one by one if Tryton refuses one."""
        if not invoices:
            return []
        operations = [operation for operation, _invoice in invoices]
        try:
            with books.calling("cancelling", operations, passing=(TrytonUserError,)):
                self.tryton.execute(INVOICE, "cancel", [invoice for _op, invoice in invoices])
            return invoices
        except TrytonUserError as exc:
            self.logger.info(
                "Tryton would not cancel %d invoices together (%s): one by one", len(invoices), exc
            )
        done: list[tuple[InvoiceOperation, int]] = []
        for operation, invoice in invoices:
            try:
                with books.calling("cancelling", [operation], passing=(TrytonUserError,)):
                    self.tryton.execute(INVOICE, "cancel", [invoice])
            except TrytonUserError as exc:
                books.refused(operation, f"Tryton would not cancel {operation.label}: {exc}")
                continue
            done.append((operation, invoice))
        return done

    # -- outcomes ------------------------------------------------------------------------------

    def _canonical(
        self, rows: Sequence[dict[str, Any]], taxes: TaxTree
    ) -> dict[int, dict[str, Any]]:
        """Invoices read with ``INVOICE_FIELDS`` as tap-tryton emits them, by id."""
        taxes.load(
            int(tax) for row in rows for line in row.get("lines.") or [] for tax in line["taxes"]
        )
        today = self._company_today()
        return {
            int(row["id"]): invoice_record(row, taxes=taxes.rows, sales={}, today=today)
            for row in rows
        }

    def _record_applied(
        self, done: list[tuple[InvoiceOperation, int]], books: Bookkeeping, taxes: TaxTree
    ) -> None:
        """Read back what Tryton stored (one call, and the taxes ``taxes`` has not read yet)
        and record it as each invoice's echo."""
        if not done:
            return
        with books.calling("reading back", [operation for operation, _id in done]):
            rows = self.tryton.search_read(
                INVOICE, [("id", "in", sorted({invoice for _op, invoice in done}))], INVOICE_FIELDS
            )
            records = self._canonical(rows, taxes)
        for operation, invoice in done:
            record = records.get(invoice) or {}
            stored = {k: v for k, v in record.items() if k not in _LINK_FIELDS}
            books.applied(
                operation, invoice, stored, row="invoice", compare=f"Compare invoice {invoice}"
            )


__all__ = ["InvoicesSink"]
