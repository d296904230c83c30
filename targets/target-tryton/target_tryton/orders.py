"""The orders sink: won CRM deals become Tryton sales; each outcome recorded in the ledger.

For a batch of operations from tap-ledger (side ``erp``):

- **creates**: one search for sales already carrying the deal's reference (``"bottlecrm:<deal
  id>"``: a create whose answer was lost is never made twice), one read each of the parties, the
  products (by code) and the currencies the others need, then one ``create`` of draft sales
  (one by one if Tryton refuses the batch, to tell which deal it refused). The new sales, and
  those found still in draft, are quoted in one call, then confirmed in one call when
  ``confirm_orders`` is on (confirming makes the invoice and shipments, as the sale's invoice
  and shipment methods say). A sale Tryton will not quote or confirm is removed again (it is
  ours and brand new) and the deal is quarantined with Tryton's reason.
- **updates** (the CRM changed the deal before the hand-off): a draft sale's description, date,
  currency and lines are rewritten (compare-and-set on the sale's ``_timestamp``); a quotation's
  lines are frozen in Tryton, so only its date may change and anything else is refused with
  that reason. A confirmed sale is the ERP's: nothing is written, it is planned again.
- **cancels** (the deal was deleted or left its won stage): Tryton's ``cancel`` on a draft or
  quotation; a confirmed sale is never touched.

Then one read of the sales as tap-tryton reads them (number, state, amounts after confirming),
recorded as each operation's stored values, so the next observation is not taken for a change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from coulisse.tryton.rpc import TrytonConcurrencyError, TrytonError, TrytonUserError
from coulisse.tryton.sales import (
    CANCELLABLE_STATES,
    SALE,
    SALE_FIELDS,
    deal_id_from_reference,
    order_from_sale,
    sale_reference,
)
from target_tryton.bookkeeping import Bookkeeping, Tally
from target_tryton.catalogue import read_catalogue
from target_tryton.operations import RefusedError, TrytonApplyError
from target_tryton.sale_values import (
    CONTENT_FIELDS,
    QUOTATION_FIELDS,
    OrderOperation,
    sale_values,
    same,
    stale,
    update_values,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from coulisse.ledger import Ledger
    from coulisse.tryton.rpc import TrytonClient
    from target_tryton.catalogue import Catalogue

#: How a batch's log line orders what it did.
OUTCOMES = (
    "created",
    "found",
    "confirmed",
    "updated",
    "cancelled",
    "unchanged",
    "refused",
    "replan",
)


class OrdersSink(BatchSink):
    """Applies planned order writes (create, update, cancel) to Tryton sales."""

    MAX_SIZE_DEFAULT = 100

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the Tryton session and the ledger."""
        self._target = target
        super().__init__(target, stream_name, schema, key_properties)

    @property
    def max_size(self) -> int:
        """Orders per batch (``batch_size``): each batch costs a handful of Tryton calls."""
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

    @property
    def confirm_orders(self) -> bool:
        """Whether new sales are confirmed after quotation (``confirm_orders``)."""
        return bool(self.config.get("confirm_orders", True))

    def process_batch(self, context: dict[str, Any]) -> None:
        """Apply the batch; record every outcome in the ledger before returning."""
        records: list[dict[str, Any]] = context.get("records", [])
        operations = [OrderOperation.from_record(record) for record in records]
        if not operations:
            return
        books = Bookkeeping(self.ledger, self.logger, Tally(OUTCOMES), "orders")
        known = {"create", "update", "cancel"}
        for operation in operations:
            if operation.action not in known:
                books.failed(
                    operation,
                    f"{operation.label}: an order takes no {operation.action!r} write in "
                    "Tryton; left for the planner to correct",
                )
        self._apply_creates([op for op in operations if op.action == "create"], books)
        self._apply_updates([op for op in operations if op.action == "update"], books)
        self._apply_cancels([op for op in operations if op.action == "cancel"], books)
        self.logger.info("orders applied to Tryton at %s: %s", self.tryton.url, books.tally)

    # -- creates -------------------------------------------------------------------------------

    def _apply_creates(self, operations: list[OrderOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        for operation in operations:
            if operation.crm_id is None:
                msg = (
                    f"{operation.label} has no crm_id: without it target-tryton cannot mark "
                    "the sale against duplicates; fix the operation's source"
                )
                raise TrytonApplyError(msg)
        with books.calling("looking up", operations):
            found = self._find_by_reference(op.crm_id for op in operations if op.crm_id)
        existing: list[tuple[OrderOperation, int]] = []
        missing: list[OrderOperation] = []
        for operation in operations:
            sale_id = found.get(operation.crm_id or "")
            if sale_id is None:
                missing.append(operation)
                continue
            self.logger.info(
                "%s already exists as sale %s (an earlier run created it): not created again",
                operation.label,
                sale_id,
            )
            books.tally.counts["found"] += 1
            existing.append((operation, sale_id))
        ready: list[tuple[OrderOperation, dict[str, Any]]] = []
        if missing:
            with books.calling("reading what the new sales need for", missing):
                catalogue = self._catalogue(missing)
            for operation in missing:
                try:
                    ready.append((operation, sale_values(operation, catalogue)))
                except RefusedError as exc:
                    books.refused(operation, str(exc), field=exc.field)
        created = self._create(ready, books)
        books.tally.counts["created"] += len(created)
        advanced = self._advance(existing + created, {sale for _op, sale in created}, books)
        self._record_applied(advanced, books)

    def _find_by_reference(self, crm_ids: Iterable[str]) -> dict[str, int]:
        """Sales already carrying these deals' references: ``{deal id: sale id}``."""
        references = sorted({sale_reference(crm_id) for crm_id in crm_ids})
        if not references:
            return {}
        rows = self.tryton.search_read(
            SALE, [("reference", "in", references)], ["reference"], order=[("id", "ASC")]
        )
        found: dict[str, int] = {}
        for row in rows:
            deal_id = deal_id_from_reference(row.get("reference"))
            if deal_id is not None:
                found.setdefault(deal_id, int(row["id"]))
        return found

    def _catalogue(self, operations: Sequence[OrderOperation]) -> Catalogue:
        """The parties, products and currencies these orders name, one read each."""
        return read_catalogue(
            self.tryton,
            parties=(op.party_id for op in operations if op.party_id is not None),
            codes=(
                str(line["product_code"])
                for op in operations
                for line in op.lines()
                if line.get("product_code")
            ),
            currencies=(str(op.order["currency"]) for op in operations if op.order.get("currency")),
        )

    def _create(
        self, ready: list[tuple[OrderOperation, dict[str, Any]]], books: Bookkeeping
    ) -> list[tuple[OrderOperation, int]]:
        """Create in one call; if Tryton refuses it, one by one to find the refused orders."""
        if not ready:
            return []
        operations = [operation for operation, _values in ready]
        try:
            with books.calling("creating", operations, passing=(TrytonUserError,)):
                ids = self.tryton.create(SALE, [values for _operation, values in ready])
            return list(zip(operations, ids, strict=True))
        except TrytonUserError as exc:
            if len(ready) == 1:
                books.refused(ready[0][0], f"Tryton refused {ready[0][0].label}: {exc}")
                return []
            self.logger.info(
                "Tryton refused a batch of %d new sales (%s): creating them one by one",
                len(ready),
                exc,
            )
        created: list[tuple[OrderOperation, int]] = []
        for operation, values in ready:
            try:
                with books.calling("creating", [operation], passing=(TrytonUserError,)):
                    (sale_id,) = self.tryton.create(SALE, [values])
            except TrytonUserError as exc:
                books.refused(operation, f"Tryton refused {operation.label}: {exc}")
                continue
            created.append((operation, sale_id))
        return created

    # -- the sale's workflow -------------------------------------------------------------------

    def _advance(
        self,
        sales: list[tuple[OrderOperation, int]],
        new: set[int],
        books: Bookkeeping,
    ) -> list[tuple[OrderOperation, int]]:
        """Quote the drafts, then confirm the quotations (``confirm_orders``).

        Returns the sales still standing; a refused one is quarantined with Tryton's reason
        and, being ours (it carries the deal's reference), removed again when Tryton lets it,
        so the next attempt starts from a clean slate.
        """
        if not sales:
            return []
        with books.calling("reading the state of", [op for op, _id in sales]):
            states = {
                int(row["id"]): str(row["state"])
                for row in self.tryton.search_read(
                    SALE, [("id", "in", sorted({sale for _op, sale in sales}))], ["state"]
                )
            }
        standing = [(op, sale) for op, sale in sales if sale in states]
        for operation, sale in sales:
            if sale not in states:
                books.failed(
                    operation,
                    f"{operation.label}: sale {sale} is no longer in Tryton; not written, "
                    "planned again once the ERP is observed",
                )
        steps = [("quote", "draft")]
        if self.confirm_orders:
            steps.append(("confirm", "quotation"))
        for button, state in steps:
            due = [(op, sale) for op, sale in standing if states.get(sale) == state]
            passed = self._click(button, due, new, books)
            for _operation, sale in passed:
                states[sale] = "quotation" if button == "quote" else "confirmed"
            refused = {sale for _op, sale in due} - {sale for _op, sale in passed}
            standing = [(op, sale) for op, sale in standing if sale not in refused]
            if button == "confirm":
                books.tally.counts["confirmed"] += len(passed)
        return standing

    def _click(
        self,
        button: str,
        sales: list[tuple[OrderOperation, int]],
        new: set[int],
        books: Bookkeeping,
    ) -> list[tuple[OrderOperation, int]]:
        """Click ``button`` on every sale in one call; one by one if Tryton refuses one."""
        if not sales:
            return []
        operations = [operation for operation, _sale in sales]
        try:
            with books.calling(f"{button}ing", operations, passing=(TrytonUserError,)):
                self.tryton.execute(SALE, button, [sale for _op, sale in sales])
            return sales
        except TrytonUserError as exc:
            self.logger.info(
                "Tryton would not %s %d sales together (%s): one by one", button, len(sales), exc
            )
        passed: list[tuple[OrderOperation, int]] = []
        for operation, sale in sales:
            try:
                with books.calling(f"{button}ing", [operation], passing=(TrytonUserError,)):
                    self.tryton.execute(SALE, button, [sale])
            except TrytonUserError as exc:
                removed = self._remove(sale) if sale in new else False
                after = (
                    " The draft sale was removed again; it is made afresh once the deal or "
                    "the ERP is corrected."
                    if removed
                    else f" Sale {sale} stays in Tryton as it is."
                )
                books.refused(
                    operation,
                    f"Tryton would not {button} the sale for {operation.label}: {exc}.{after}",
                )
                continue
            passed.append((operation, sale))
        return passed

    def _remove(self, sale: int) -> bool:
        """Delete a sale this run just made (back to draft first); False if Tryton will not."""
        try:
            (row,) = self.tryton.read(SALE, [sale], ["state"])
            if row["state"] != "draft":
                self.tryton.execute(SALE, "draft", [sale])
            self.tryton.delete(SALE, [sale])
        except TrytonError as exc:
            self.logger.warning("could not remove the refused sale %s again: %s", sale, exc)
            return False
        return True

    # -- updates ---------------------------------------------------------------------------------

    def _apply_updates(self, operations: list[OrderOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        sales = self._current(operations, books)
        if not sales:
            return
        with books.calling("reading what the sales need for", [op for op, _row in sales]):
            catalogue = self._catalogue([op for op, _row in sales])
        planned: list[tuple[OrderOperation, int, dict[str, Any], str]] = []
        unchanged: list[tuple[OrderOperation, int]] = []
        for operation, row in sales:
            current = order_from_sale(row)
            moved = stale(operation, current)
            if moved:
                books.failed(operation, moved)
                continue
            fields = [
                name
                for name in operation.changed_fields
                if name in CONTENT_FIELDS
                and not same(name, operation.order.get(name), current.get(name))
            ]
            if not fields:
                unchanged.append((operation, int(row["id"])))
                continue
            state = str(row.get("state"))
            if state == "quotation" and not set(fields) <= QUOTATION_FIELDS:
                books.refused(
                    operation,
                    f"Tryton cannot take {operation.label}'s new "
                    f"{', '.join(f for f in fields if f not in QUOTATION_FIELDS)}: sale "
                    f"{row.get('number') or row['id']} is a quotation, and Tryton freezes a "
                    "sale's lines once quoted. Put the sale back to draft in Tryton to take the "
                    "deal's changes, or undo them in the CRM.",
                    field=fields[0],
                )
                continue
            if state not in {"draft", "quotation"}:
                books.failed(
                    operation,
                    f"{operation.label}: sale {row['id']} is {state} in Tryton, and a confirmed "
                    "sale is the ERP's; not written, it will be planned again",
                )
                continue
            try:
                values = update_values(operation, row, fields, catalogue)
            except RefusedError as exc:
                books.refused(operation, str(exc), field=exc.field)
                continue
            planned.append((operation, int(row["id"]), values, str(row["_timestamp"])))
        written = self._write(planned, books)
        books.tally.counts["updated"] += len(written)
        books.tally.counts["unchanged"] += len(unchanged)
        self._record_applied(written + unchanged, books)

    def _current(
        self, operations: list[OrderOperation], books: Bookkeeping
    ) -> list[tuple[OrderOperation, dict[str, Any]]]:
        """The sales these operations write to, as Tryton holds them now (with timestamps)."""
        known = [op for op in operations if op.sale_id is not None]
        for operation in operations:
            if operation.sale_id is None:
                books.failed(
                    operation,
                    f"{operation.label}: no Tryton sale id to write to; the planner will plan "
                    "it again once the sale is linked",
                )
        if not known:
            return []
        with books.calling("reading", known):
            rows = {
                int(row["id"]): row
                for row in self.tryton.search_read(
                    SALE,
                    [("id", "in", sorted({op.sale_id for op in known if op.sale_id}))],
                    [*SALE_FIELDS, "_timestamp", "lines.id"],
                )
            }
        found: list[tuple[OrderOperation, dict[str, Any]]] = []
        for operation in known:
            row = rows.get(operation.sale_id or 0)
            if row is None:
                books.failed(
                    operation,
                    f"{operation.label}: sale {operation.sale_id} is no longer in Tryton at "
                    f"{self.tryton.url}; not written, planned again once the ERP is observed",
                )
                continue
            found.append((operation, row))
        return found

    def _write(
        self,
        planned: list[tuple[OrderOperation, int, dict[str, Any], str]],
        books: Bookkeeping,
    ) -> list[tuple[OrderOperation, int]]:
        """Write in one call (compare-and-set on each sale); one by one if Tryton objects."""
        if not planned:
            return []
        passing = (TrytonUserError, TrytonConcurrencyError)
        operations = [operation for operation, *_rest in planned]
        try:
            with books.calling("writing", operations, passing=passing):
                self._write_sales(planned)
            return [(operation, sale) for operation, sale, _values, _stamp in planned]
        except passing as exc:
            self.logger.info(
                "Tryton turned down %d sale writes together (%s): one by one", len(planned), exc
            )
        written: list[tuple[OrderOperation, int]] = []
        for item in planned:
            operation, sale = item[0], item[1]
            try:
                with books.calling("writing", [operation], passing=passing):
                    self._write_sales([item])
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
            written.append((operation, sale))
        return written

    def _write_sales(
        self, planned: Sequence[tuple[OrderOperation, int, dict[str, Any], str]]
    ) -> None:
        arguments: list[Any] = []
        stamps: dict[str, str] = {}
        for _operation, sale, values, stamp in planned:
            arguments.extend([[sale], values])
            stamps[f"{SALE},{sale}"] = stamp
        self.tryton.model_call(SALE, "write", *arguments, context={"_timestamp": stamps})

    # -- cancellations ------------------------------------------------------------------------

    def _apply_cancels(self, operations: list[OrderOperation], books: Bookkeeping) -> None:
        if not operations:
            return
        sales = self._current(operations, books)
        due: list[tuple[OrderOperation, int]] = []
        already: list[tuple[OrderOperation, int]] = []
        for operation, row in sales:
            state = str(row.get("state"))
            if state == "cancelled":
                already.append((operation, int(row["id"])))
            elif state in CANCELLABLE_STATES:
                due.append((operation, int(row["id"])))
            else:
                books.refused(
                    operation,
                    f"{operation.label} was deleted or lost in the CRM, but sale "
                    f"{row.get('number') or row['id']} is {state} in Tryton: Coulisse never "
                    "cancels a confirmed sale. Cancel or credit it in Tryton if the deal is "
                    "really off.",
                    field="state",
                )
        cancelled = self._click("cancel", due, set(), books)
        books.tally.counts["cancelled"] += len(cancelled)
        books.tally.counts["unchanged"] += len(already)
        self._record_applied(cancelled + already, books)

    # -- outcomes ------------------------------------------------------------------------------

    def _record_applied(self, done: list[tuple[OrderOperation, int]], books: Bookkeeping) -> None:
        """Read back what Tryton stored (one call) and record it as each order's echo."""
        if not done:
            return
        with books.calling("reading back", [operation for operation, _id in done]):
            rows = {
                int(row["id"]): row
                for row in self.tryton.search_read(
                    SALE, [("id", "in", sorted({sale for _op, sale in done}))], SALE_FIELDS
                )
            }
        skip = {"crm_id", "erp_id", "source", "source_updated_at"}
        for operation, sale in done:
            row = rows.get(sale)
            stored = (
                {k: v for k, v in order_from_sale(row).items() if k not in skip}
                if row is not None
                else {}
            )
            books.applied(operation, sale, stored, row="sale", compare=f"Compare sale {sale}")


__all__ = ["OrdersSink"]
