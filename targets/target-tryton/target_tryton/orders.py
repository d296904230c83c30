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

import datetime as dt
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from singer_sdk.sinks import BatchSink

from coulisse.ledger import LedgerError
from coulisse.tryton.rpc import TrytonConcurrencyError, TrytonError, TrytonUserError
from coulisse.tryton.sales import (
    CANCELLABLE_STATES,
    SALE,
    SALE_FIELDS,
    deal_id_from_reference,
    order_from_sale,
    sale_reference,
)
from target_tryton.sinks import TrytonApplyError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from coulisse.ledger import Ledger
    from coulisse.tryton.rpc import TrytonClient

PARTY = "party.party"
PRODUCT = "product.product"
CURRENCY = "currency.currency"
#: Sale line unit prices keep four decimals (Tryton's default ``price_digits``); more would be
#: refused as too many digits.
PRICE = Decimal("0.0001")
#: The sale's content, the CRM's until the hand-off; the rest is Tryton's.
CONTENT_FIELDS = ("name", "order_date", "currency", "lines")
#: What a quotation still lets change (its lines are frozen).
QUOTATION_FIELDS = frozenset({"order_date"})
_PARTY_FIELDS = (
    "addresses.active",
    "addresses.invoice",
    "addresses.delivery",
    "customer_payment_term",
)
_PRODUCT_FIELDS = (
    "code",
    "active",
    "template.salable",
    "template.sale_uom",
    "template.account_category",
    "template.account_category.customer_taxes_used",
)


class OrderRefusedError(Exception):
    """Tryton cannot hold this order as it is; the message is for a clerk."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class OrderOperation:
    """One planned write from tap-ledger: the order as it should be, and what to check."""

    id: int
    action: str
    order: dict[str, Any]
    changed_fields: tuple[str, ...]
    expected: dict[str, Any] | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OrderOperation:
        """Read an ``orders`` record; one without an operation id is not a planned write."""
        operation_id = record.get("operation_id")
        if operation_id is None:
            msg = (
                f"order {record.get('name')!r} (CRM deal {record.get('crm_id')}) has no "
                "operation_id: target-tryton applies the writes planned in the ledger, fed by "
                "tap-ledger with side erp"
            )
            raise TrytonApplyError(msg)
        order = {
            key: value
            for key, value in record.items()
            if key not in {"operation_id", "operation", "changed_fields", "expected"}
            and not key.startswith("_sdc_")
        }
        return cls(
            id=int(operation_id),
            action=str(record.get("operation") or "update"),
            order=order,
            changed_fields=tuple(record.get("changed_fields") or ()),
            expected=dict(record["expected"]) if record.get("expected") is not None else None,
        )

    @property
    def crm_id(self) -> str | None:
        """The deal's id in the CRM."""
        value = self.order.get("crm_id")
        return str(value) if value else None

    @property
    def sale_id(self) -> int | None:
        """The sale's id in Tryton (None for a create)."""
        value = self.order.get("erp_id")
        return int(value) if value not in {None, ""} else None

    @property
    def party_id(self) -> int | None:
        """The client's party in Tryton."""
        value = self.order.get("client_erp_id")
        return int(value) if value not in {None, ""} else None

    @property
    def label(self) -> str:
        """How messages name the order: ``order 'Projet 1' (CRM deal d1, operation 12)``."""
        where = f"CRM deal {self.crm_id}, " if self.crm_id else ""
        if self.sale_id is not None:
            where += f"sale {self.sale_id}, "
        return f"order {self.order.get('name')!r} ({where}operation {self.id})"

    def lines(self) -> list[dict[str, Any]]:
        """The order lines as planned."""
        return [dict(line) for line in self.order.get("lines") or []]


@dataclass(slots=True)
class Catalogue:
    """What new sale lines and headers need from Tryton, read once per batch."""

    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    currencies: dict[str, int] = field(default_factory=dict)
    parties: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class OrderOutcome:
    """What a batch did, for the log line."""

    counts: Counter[str] = field(default_factory=Counter)

    def __str__(self) -> str:
        order = ("created", "found", "confirmed", "updated", "cancelled", "unchanged")
        kinds = (*order, "refused", "replan")
        return ", ".join(f"{self.counts[kind]} {kind}" for kind in kinds if self.counts[kind])


def unit_price(value: Any) -> Decimal:
    """A unit price as a sale line holds it: four decimals, half up.

    >>> unit_price("96.666666")
    Decimal('96.6667')
    """
    return Decimal(str(value)).quantize(PRICE, rounding=ROUND_HALF_UP)


def first_address(party: Mapping[str, Any], flag: str) -> int | None:
    """The party's first active address flagged ``flag`` (invoice, delivery), else its first."""
    addresses = [a for a in party.get("addresses.") or [] if a.get("active", True)]
    flagged = [a for a in addresses if a.get(flag)]
    chosen = (flagged or addresses)[:1]
    return int(chosen[0]["id"]) if chosen else None


def _same(name: str, left: Any, right: Any) -> bool:
    """Two canonical values of an order field, compared as the systems mean them."""
    if name == "lines":
        return _lines_key(left) == _lines_key(right)
    if name == "order_date":
        return str(left or "")[:10] == str(right or "")[:10]
    if isinstance(left, str) or isinstance(right, str):
        return (str(left).strip() if left else None) == (str(right).strip() if right else None)
    return bool(left == right)


def _lines_key(lines: Any) -> list[tuple[Any, ...]]:
    key: list[tuple[Any, ...]] = []
    for line in lines or []:
        values: list[Any] = [line.get("product_code"), line.get("description") or None]
        for name in ("quantity", "unit_price"):
            try:
                values.append(Decimal(str(line.get(name))))
            except InvalidOperation:
                values.append(line.get(name))
        key.append(tuple(values))
    return key


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
        outcome = OrderOutcome()
        known = {"create", "update", "cancel"}
        for operation in operations:
            if operation.action not in known:
                self._failed(
                    operation,
                    f"{operation.label}: an order takes no {operation.action!r} write in "
                    "Tryton; left for the planner to correct",
                    outcome,
                )
        self._apply_creates([op for op in operations if op.action == "create"], outcome)
        self._apply_updates([op for op in operations if op.action == "update"], outcome)
        self._apply_cancels([op for op in operations if op.action == "cancel"], outcome)
        self.logger.info("orders applied to Tryton at %s: %s", self.tryton.url, outcome)

    # -- creates -------------------------------------------------------------------------------

    def _apply_creates(self, operations: list[OrderOperation], outcome: OrderOutcome) -> None:
        if not operations:
            return
        for operation in operations:
            if operation.crm_id is None:
                msg = (
                    f"{operation.label} has no crm_id: without it target-tryton cannot mark "
                    "the sale against duplicates; fix the operation's source"
                )
                raise TrytonApplyError(msg)
        with self._calling("looking up", operations):
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
            outcome.counts["found"] += 1
            existing.append((operation, sale_id))
        ready: list[tuple[OrderOperation, dict[str, Any]]] = []
        if missing:
            with self._calling("reading what the new sales need for", missing):
                catalogue = self._catalogue(missing)
            for operation in missing:
                try:
                    ready.append((operation, self._sale_values(operation, catalogue)))
                except OrderRefusedError as exc:
                    self._refused(operation, str(exc), outcome, field=exc.field)
        created = self._create(ready, outcome)
        outcome.counts["created"] += len(created)
        advanced = self._advance(existing + created, {sale for _op, sale in created}, outcome)
        self._record_applied(advanced, outcome)

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
        catalogue = Catalogue()
        codes = sorted(
            {
                str(line["product_code"])
                for op in operations
                for line in op.lines()
                if line.get("product_code")
            }
        )
        if codes:
            # The planner matches codes ignoring case, as people type SKUs: so does this
            # lookup, in the same call (an exact match first, then the active product).
            clauses: list[Any] = [("code", "ilike", _like(code)) for code in codes]
            rows = self.tryton.search_read(
                PRODUCT,
                ["OR", *clauses],
                _PRODUCT_FIELDS,
                order=[("active", "DESC"), ("id", "ASC")],
                context={"active_test": False},
            )
            exact = [row for row in rows if str(row["code"]) in codes]
            for row in [*exact, *rows]:
                catalogue.products.setdefault(str(row["code"]).upper(), row)
        currencies = sorted(
            {str(op.order["currency"]) for op in operations if op.order.get("currency")}
        )
        if currencies:
            for row in self.tryton.search_read(CURRENCY, [("code", "in", currencies)], ["code"]):
                catalogue.currencies[str(row["code"])] = int(row["id"])
        parties = sorted({op.party_id for op in operations if op.party_id is not None})
        if parties:
            for row in self.tryton.search_read(
                PARTY, [("id", "in", parties)], _PARTY_FIELDS, context={"active_test": False}
            ):
                catalogue.parties[int(row["id"])] = row
        return catalogue

    def _sale_values(self, operation: OrderOperation, catalogue: Catalogue) -> dict[str, Any]:
        """``sale.sale.create`` values for a new draft sale, or why Tryton cannot hold it."""
        party = catalogue.parties.get(operation.party_id or 0)
        if party is None:
            where = f"party {operation.party_id}" if operation.party_id else "no party"
            raise OrderRefusedError(
                f"Tryton refused {operation.label}: its client is {where} in Tryton, which "
                "does not exist; the order waits until the client is synchronised",
                "client_erp_id",
            )
        invoice_address = first_address(party, "invoice")
        if invoice_address is None:
            raise OrderRefusedError(
                f"Tryton refused {operation.label}: client party {party['id']} has no address "
                "in Tryton, and a sale needs one to invoice and ship to; add the client's "
                "address (in the CRM or in Tryton)",
                "client_erp_id",
            )
        values: dict[str, Any] = {
            "party": int(party["id"]),
            "invoice_address": invoice_address,
            "shipment_address": first_address(party, "delivery"),
            "reference": sale_reference(operation.crm_id or ""),
            "description": operation.order.get("name"),
            "sale_date": _date(operation.order.get("order_date")),
            "lines": [("create", self._line_values(operation, catalogue))],
        }
        currency = operation.order.get("currency")
        if currency:
            if str(currency) not in catalogue.currencies:
                raise OrderRefusedError(
                    f"Tryton refused {operation.label}: Tryton has no currency {currency!r}; "
                    "add it to Tryton's currencies or correct the deal's currency in the CRM",
                    "currency",
                )
            values["currency"] = catalogue.currencies[str(currency)]
        if party.get("customer_payment_term"):
            values["payment_term"] = int(party["customer_payment_term"])
        return values

    def _line_values(self, operation: OrderOperation, catalogue: Catalogue) -> list[dict[str, Any]]:
        """``sale.line`` values, each product found by its code, or why one cannot be made."""
        lines = operation.lines()
        if not lines:
            raise OrderRefusedError(
                f"Tryton refused {operation.label}: the deal has no line items; add its "
                "products in the CRM, then it becomes a sale",
                "lines",
            )
        values: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            code = line.get("product_code")
            product = catalogue.products.get(str(code).upper()) if code else None
            template = (product or {}).get("template.") or {}
            problem = None
            if not code:
                problem = "names no product (Coulisse sends product lines only)"
            elif product is None:
                problem = f"names product {code!r}, which Tryton does not have"
            elif not product.get("active", True) or not template.get("salable"):
                problem = f"names product {code!r}, which is not for sale in Tryton"
            elif not template.get("account_category"):
                problem = (
                    f"names product {code!r}, which has no accounting category in Tryton "
                    "(no revenue account or taxes to invoice it with)"
                )
            if problem:
                raise OrderRefusedError(
                    f"Tryton refused {operation.label}: line {number} {problem}; correct the "
                    "line in the CRM or the product in Tryton",
                    "lines",
                )
            assert product is not None
            taxes = (template.get("account_category.") or {}).get("customer_taxes_used") or []
            values.append(
                {
                    "type": "line",
                    "product": int(product["id"]),
                    "unit": template.get("sale_uom"),
                    # Tryton's quantity is a Float field: it travels as a float.
                    "quantity": float(Decimal(str(line.get("quantity")))),
                    "unit_price": unit_price(line.get("unit_price")),
                    "description": line.get("description") or None,
                    "taxes": [("add", [int(tax) for tax in taxes])],
                }
            )
        return values

    def _create(
        self, ready: list[tuple[OrderOperation, dict[str, Any]]], outcome: OrderOutcome
    ) -> list[tuple[OrderOperation, int]]:
        """Create in one call; if Tryton refuses it, one by one to find the refused orders."""
        if not ready:
            return []
        operations = [operation for operation, _values in ready]
        try:
            with self._calling("creating", operations, passing=(TrytonUserError,)):
                ids = self.tryton.create(SALE, [values for _operation, values in ready])
            return list(zip(operations, ids, strict=True))
        except TrytonUserError as exc:
            if len(ready) == 1:
                self._refused(ready[0][0], f"Tryton refused {ready[0][0].label}: {exc}", outcome)
                return []
            self.logger.info(
                "Tryton refused a batch of %d new sales (%s): creating them one by one",
                len(ready),
                exc,
            )
        created: list[tuple[OrderOperation, int]] = []
        for operation, values in ready:
            try:
                with self._calling("creating", [operation], passing=(TrytonUserError,)):
                    (sale_id,) = self.tryton.create(SALE, [values])
            except TrytonUserError as exc:
                self._refused(operation, f"Tryton refused {operation.label}: {exc}", outcome)
                continue
            created.append((operation, sale_id))
        return created

    # -- the sale's workflow -------------------------------------------------------------------

    def _advance(
        self,
        sales: list[tuple[OrderOperation, int]],
        new: set[int],
        outcome: OrderOutcome,
    ) -> list[tuple[OrderOperation, int]]:
        """Quote the drafts, then confirm the quotations (``confirm_orders``).

        Returns the sales still standing; a refused one is quarantined with Tryton's reason
        and, being ours (it carries the deal's reference), removed again when Tryton lets it,
        so the next attempt starts from a clean slate.
        """
        if not sales:
            return []
        with self._calling("reading the state of", [op for op, _id in sales]):
            states = {
                int(row["id"]): str(row["state"])
                for row in self.tryton.search_read(
                    SALE, [("id", "in", sorted({sale for _op, sale in sales}))], ["state"]
                )
            }
        standing = [(op, sale) for op, sale in sales if sale in states]
        for operation, sale in sales:
            if sale not in states:
                self._failed(
                    operation,
                    f"{operation.label}: sale {sale} is no longer in Tryton; not written, "
                    "planned again once the ERP is observed",
                    outcome,
                )
        steps = [("quote", "draft")]
        if self.confirm_orders:
            steps.append(("confirm", "quotation"))
        for button, state in steps:
            due = [(op, sale) for op, sale in standing if states.get(sale) == state]
            passed = self._click(button, due, new, outcome)
            for _operation, sale in passed:
                states[sale] = "quotation" if button == "quote" else "confirmed"
            refused = {sale for _op, sale in due} - {sale for _op, sale in passed}
            standing = [(op, sale) for op, sale in standing if sale not in refused]
            if button == "confirm":
                outcome.counts["confirmed"] += len(passed)
        return standing

    def _click(
        self,
        button: str,
        sales: list[tuple[OrderOperation, int]],
        new: set[int],
        outcome: OrderOutcome,
    ) -> list[tuple[OrderOperation, int]]:
        """Click ``button`` on every sale in one call; one by one if Tryton refuses one."""
        if not sales:
            return []
        operations = [operation for operation, _sale in sales]
        try:
            with self._calling(f"{button}ing", operations, passing=(TrytonUserError,)):
                self.tryton.execute(SALE, button, [sale for _op, sale in sales])
            return sales
        except TrytonUserError as exc:
            self.logger.info(
                "Tryton would not %s %d sales together (%s): one by one", button, len(sales), exc
            )
        passed: list[tuple[OrderOperation, int]] = []
        for operation, sale in sales:
            try:
                with self._calling(f"{button}ing", [operation], passing=(TrytonUserError,)):
                    self.tryton.execute(SALE, button, [sale])
            except TrytonUserError as exc:
                removed = self._remove(sale) if sale in new else False
                after = (
                    " The draft sale was removed again; it is made afresh once the deal or "
                    "the ERP is corrected."
                    if removed
                    else f" Sale {sale} stays in Tryton as it is."
                )
                self._refused(
                    operation,
                    f"Tryton would not {button} the sale for {operation.label}: {exc}.{after}",
                    outcome,
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

    def _apply_updates(self, operations: list[OrderOperation], outcome: OrderOutcome) -> None:
        if not operations:
            return
        sales = self._current(operations, outcome)
        if not sales:
            return
        with self._calling("reading what the sales need for", [op for op, _row in sales]):
            catalogue = self._catalogue([op for op, _row in sales])
        planned: list[tuple[OrderOperation, int, dict[str, Any], str]] = []
        unchanged: list[tuple[OrderOperation, int]] = []
        for operation, row in sales:
            current = order_from_sale(row)
            stale = self._stale(operation, current)
            if stale:
                self._failed(operation, stale, outcome)
                continue
            fields = [
                name
                for name in operation.changed_fields
                if name in CONTENT_FIELDS
                and not _same(name, operation.order.get(name), current.get(name))
            ]
            if not fields:
                unchanged.append((operation, int(row["id"])))
                continue
            state = str(row.get("state"))
            if state == "quotation" and not set(fields) <= QUOTATION_FIELDS:
                self._refused(
                    operation,
                    f"Tryton cannot take {operation.label}'s new "
                    f"{', '.join(f for f in fields if f not in QUOTATION_FIELDS)}: sale "
                    f"{row.get('number') or row['id']} is a quotation, and Tryton freezes a "
                    "sale's lines once quoted. Put the sale back to draft in Tryton to take the "
                    "deal's changes, or undo them in the CRM.",
                    outcome,
                    field=fields[0],
                )
                continue
            if state not in {"draft", "quotation"}:
                self._failed(
                    operation,
                    f"{operation.label}: sale {row['id']} is {state} in Tryton, and a confirmed "
                    "sale is the ERP's; not written, it will be planned again",
                    outcome,
                )
                continue
            try:
                values = self._update_values(operation, row, fields, catalogue)
            except OrderRefusedError as exc:
                self._refused(operation, str(exc), outcome, field=exc.field)
                continue
            planned.append((operation, int(row["id"]), values, str(row["_timestamp"])))
        written = self._write(planned, outcome)
        outcome.counts["updated"] += len(written)
        outcome.counts["unchanged"] += len(unchanged)
        self._record_applied(written + unchanged, outcome)

    def _current(
        self, operations: list[OrderOperation], outcome: OrderOutcome
    ) -> list[tuple[OrderOperation, dict[str, Any]]]:
        """The sales these operations write to, as Tryton holds them now (with timestamps)."""
        known = [op for op in operations if op.sale_id is not None]
        for operation in operations:
            if operation.sale_id is None:
                self._failed(
                    operation,
                    f"{operation.label}: no Tryton sale id to write to; the planner will plan "
                    "it again once the sale is linked",
                    outcome,
                )
        if not known:
            return []
        with self._calling("reading", known):
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
                self._failed(
                    operation,
                    f"{operation.label}: sale {operation.sale_id} is no longer in Tryton at "
                    f"{self.tryton.url}; not written, planned again once the ERP is observed",
                    outcome,
                )
                continue
            found.append((operation, row))
        return found

    def _stale(self, operation: OrderOperation, current: Mapping[str, Any]) -> str | None:
        """Why the write must wait, when Tryton changed a field since the plan was made."""
        if operation.expected is None:
            return None
        moved = [
            name
            for name in operation.changed_fields
            if name in operation.expected
            and not _same(name, operation.expected[name], current.get(name))
            and not _same(name, operation.order.get(name), current.get(name))
        ]
        if not moved:
            return None
        return (
            f"{operation.label}: {', '.join(moved)} changed in Tryton since it was planned; "
            "not written, it will be planned again from both systems' current values"
        )

    def _update_values(
        self,
        operation: OrderOperation,
        row: Mapping[str, Any],
        fields: Sequence[str],
        catalogue: Catalogue,
    ) -> dict[str, Any]:
        """``sale.sale.write`` values bringing a draft (or a quotation's date) up to the deal."""
        values: dict[str, Any] = {}
        if "name" in fields:
            values["description"] = operation.order.get("name")
        if "order_date" in fields:
            values["sale_date"] = _date(operation.order.get("order_date"))
        if "currency" in fields:
            currency = str(operation.order.get("currency") or "")
            if currency not in catalogue.currencies:
                raise OrderRefusedError(
                    f"Tryton refused {operation.label}: Tryton has no currency {currency!r}",
                    "currency",
                )
            values["currency"] = catalogue.currencies[currency]
        if "lines" in fields:
            old = [int(line["id"]) for line in row.get("lines.") or []]
            values["lines"] = [
                *([("delete", old)] if old else []),
                ("create", self._line_values(operation, catalogue)),
            ]
        return values

    def _write(
        self,
        planned: list[tuple[OrderOperation, int, dict[str, Any], str]],
        outcome: OrderOutcome,
    ) -> list[tuple[OrderOperation, int]]:
        """Write in one call (compare-and-set on each sale); one by one if Tryton objects."""
        if not planned:
            return []
        passing = (TrytonUserError, TrytonConcurrencyError)
        operations = [operation for operation, *_rest in planned]
        try:
            with self._calling("writing", operations, passing=passing):
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
                with self._calling("writing", [operation], passing=passing):
                    self._write_sales([item])
            except TrytonConcurrencyError:
                self._failed(
                    operation,
                    f"{operation.label}: changed in Tryton while it was being written "
                    "(timestamp check); not written, it will be planned again",
                    outcome,
                )
                continue
            except TrytonUserError as exc:
                self._refused(operation, f"Tryton refused {operation.label}: {exc}", outcome)
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

    def _apply_cancels(self, operations: list[OrderOperation], outcome: OrderOutcome) -> None:
        if not operations:
            return
        sales = self._current(operations, outcome)
        due: list[tuple[OrderOperation, int]] = []
        already: list[tuple[OrderOperation, int]] = []
        for operation, row in sales:
            state = str(row.get("state"))
            if state == "cancelled":
                already.append((operation, int(row["id"])))
            elif state in CANCELLABLE_STATES:
                due.append((operation, int(row["id"])))
            else:
                self._refused(
                    operation,
                    f"{operation.label} was deleted or lost in the CRM, but sale "
                    f"{row.get('number') or row['id']} is {state} in Tryton: Coulisse never "
                    "cancels a confirmed sale. Cancel or credit it in Tryton if the deal is "
                    "really off.",
                    outcome,
                    field="state",
                )
        cancelled = self._click("cancel", due, set(), outcome)
        outcome.counts["cancelled"] += len(cancelled)
        outcome.counts["unchanged"] += len(already)
        self._record_applied(cancelled + already, outcome)

    # -- outcomes ------------------------------------------------------------------------------

    def _record_applied(
        self, done: list[tuple[OrderOperation, int]], outcome: OrderOutcome
    ) -> None:
        """Read back what Tryton stored (one call) and record it as each order's echo."""
        if not done:
            return
        with self._calling("reading back", [operation for operation, _id in done]):
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
            try:
                recorded = self.ledger.record_applied(
                    operation.id, system_id=str(sale), stored=stored
                )
            except LedgerError as exc:
                msg = (
                    f"{operation.label} was written to Tryton as sale {sale}, but the ledger "
                    f"refused to record it: {exc}. Compare sale {sale} with the ledger's link "
                    "before the next run."
                )
                raise TrytonApplyError(msg) from exc
            if not recorded:
                self.logger.info("%s was already recorded by another run", operation.label)

    def _refused(
        self,
        operation: OrderOperation,
        message: str,
        outcome: OrderOutcome,
        *,
        field: str | None = None,
    ) -> None:
        """Tryton will not hold this order as it is: quarantine it with the reason."""
        self.logger.warning("%s", message)
        outcome.counts["refused"] += 1
        self.ledger.record_refused(operation.id, message=message, field=field)

    def _failed(self, operation: OrderOperation, message: str, outcome: OrderOutcome) -> None:
        """Not written this time, for a reason that passes: planned and tried again."""
        self.logger.warning("%s", message)
        outcome.counts["replan"] += 1
        self.ledger.record_failed(operation.id, message=message)

    @contextmanager
    def _calling(
        self,
        doing: str,
        operations: Sequence[OrderOperation],
        *,
        passing: tuple[type[TrytonError], ...] = (),
    ) -> Iterator[None]:
        """Turn a Tryton failure that stops the run into a message naming the orders."""
        try:
            yield
        except TrytonError as exc:
            if isinstance(exc, passing):
                raise
            shown = ", ".join(operation.label for operation in operations[:3])
            more = len(operations) - 3
            names = f"{shown} and {more} more" if more > 0 else shown
            msg = (
                f"target-tryton stopped while {doing} {names}: {exc} These orders' writes "
                "stay pending in the ledger and are retried on the next run."
            )
            raise TrytonApplyError(msg) from exc


def _like(code: str) -> str:
    r"""``code`` as an ``ilike`` pattern matching only itself (wildcards escaped).

    >>> _like("KIT_50%")
    'KIT\\_50\\%'
    """
    return code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _date(value: Any) -> dt.date | None:
    """A canonical date (ISO text or a date) as Tryton takes it."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


__all__ = ["OrderOperation", "OrderRefusedError", "OrdersSink", "first_address", "unit_price"]
