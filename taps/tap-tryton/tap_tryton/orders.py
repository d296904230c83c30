"""Tryton's sales as canonical orders, read incrementally: number, state, progress, totals.

What changes an order: a write on the sale (quoting, confirming, and also its shipment and
invoice progress: Tryton's ``sale.process``, run when an invoice is posted or paid or a
shipment moves, writes ``invoice_state`` and ``shipment_state`` on the sale itself) or on one of
its lines. A cursor on each model, with the overlap window of every Tryton cursor, names the
sales to read again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from coulisse.model import Order, stream_schema
from coulisse.tryton.sales import SALE, SALE_FIELDS, SALE_LINE, order_from_sale
from tap_tryton.client import ChangeCursor, Row, TrytonStream, explained, read_pages

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Iterator, Sequence

    from singer_sdk.helpers.types import Context


class LineCursor(ChangeCursor):
    """A cursor on rows that point at their sale (``party_field`` names that field)."""

    @property
    def fields(self) -> list[str]:
        """The stamps, and the field naming the sale each row changes."""
        return ["create_date", "write_date", self.party_field]


def watched_models(overlap: dt.timedelta) -> dict[str, ChangeCursor]:
    """One cursor per model whose changes alter a canonical order: the sale, its lines."""
    return {
        SALE: ChangeCursor(SALE, overlap, party_field="id"),
        SALE_LINE: LineCursor(SALE_LINE, overlap, party_field="sale"),
    }


class OrdersStream(TrytonStream):
    """Every sale as a canonical order, read incrementally like the clients.

    Sales made from CRM deals carry the deal's id in their reference (``crm_id``); the others
    are emitted too (the planner decides: ERP-only sales never become deals). The first run, or
    one with ``full_scan``, reads every sale (with ``emit_activate_version_messages``, the
    ledger then learns which sales were deleted).
    """

    name = "orders"
    primary_keys: ClassVar[list[str]] = ["erp_id"]
    replication_key = "source_updated_at"
    is_sorted = False
    schema = stream_schema(Order, permissive=True)

    @property
    def replication_method(self) -> str:
        """A full scan is a full-table read (sales not received were deleted)."""
        if self.config.get("full_scan"):
            return "FULL_TABLE"
        return super().replication_method

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The orders to emit; the cursors move in STATE only once all were emitted."""
        del context
        with explained(self.config):
            state = self.stream_state
            cursors = watched_models(self.overlap)
            saved = state.get("cursors") or {}
            for model, cursor in cursors.items():
                if model in saved:
                    cursor.load(saved[model])
            if not cursors.keys() <= saved.keys() or self.config.get("full_scan"):
                yield from self._full_read(cursors)
            else:
                changed: set[int] = set()
                for cursor in cursors.values():
                    changed |= cursor.fetch(self.tryton, self.page_size)
                yield from self._orders(sorted(changed))
            state["cursors"] = {model: cursor.to_state() for model, cursor in cursors.items()}
            self.logger.info("Tryton calls this run: %d", self.rpc_calls)

    def _full_read(self, cursors: dict[str, ChangeCursor]) -> Iterator[dict[str, Any]]:
        """Every sale with its lines; both cursors restart from what was read."""
        stamps: dict[str, list[Row]] = {SALE: [], SALE_LINE: []}
        count = 0
        for page in read_pages(self.tryton, SALE, [], SALE_FIELDS, page_size=self.page_size):
            for sale in page:
                stamps[SALE].append(_stamps(sale, sale["id"]))
                stamps[SALE_LINE].extend(
                    _stamps(line, sale["id"]) for line in sale.get("lines.") or []
                )
                count += 1
                yield order_from_sale(sale)
        for model, rows in stamps.items():
            cursors[model].latest = None
            cursors[model].observe(rows)
        self.logger.info("Full read: %d orders", count)

    def _orders(self, sale_ids: Sequence[int]) -> Iterator[dict[str, Any]]:
        """These sales (those deleted since are skipped), a page at a time."""
        for start in range(0, len(sale_ids), self.page_size):
            batch = list(sale_ids[start : start + self.page_size])
            for sale in self.tryton.search_read(SALE, [("id", "in", batch)], SALE_FIELDS):
                yield order_from_sale(sale)


def _stamps(row: Row, sale: int) -> Row:
    """What a cursor needs of a row: its id, stamps, and the sale it belongs to."""
    return {key: row.get(key) for key in ("id", "create_date", "write_date")} | {"sale": sale}
