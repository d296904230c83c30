"""Tryton's catalogue: product variants as canonical products, read incrementally.

A variant (``product.product``) is what sale and invoice lines point at, and its ``code`` is
the SKU the CRM knows it by. Its name, list price and sale flag live on its template: changing
the template's price writes the template (its ``product.list_price`` row cannot be read over
RPC, but Tryton stamps the template too), so a cursor on each model finds what changed.

What is emitted: every salable variant, and every variant with a code (one taken off sale is
then seen as inactive at the next run, not only as gone at the next full scan). A salable
variant without a code is emitted too: the planner quarantines it (no SKU, no link).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.exceptions import ConfigValidationError

from coulisse.model import Product, stream_schema
from tap_tryton.client import (
    WITH_INACTIVE,
    ChangeCursor,
    Company,
    Domain,
    Row,
    TrytonStream,
    explained,
    read_pages,
    stamp,
)

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable, Iterator, Sequence

    from singer_sdk.helpers.types import Context

#: A variant and what it takes from its template, in one read. ``list_price_used`` is the
#: variant's own list price, else its template's (``list_price`` alone is empty on variants).
PRODUCT_FIELDS = (
    "code",
    "name",
    "active",
    "salable",
    "list_price_used",
    "create_date",
    "write_date",
    "template",
    "template.active",
    "template.create_date",
    "template.write_date",
)
#: The variants the CRM's catalogue may hold.
SCOPE: Domain = ["OR", ("salable", "=", True), ("code", "!=", None)]


def watched_models(overlap: dt.timedelta) -> dict[str, ChangeCursor]:
    """One cursor per model whose changes alter a canonical product: the variant, its template."""
    return {
        "product.product": ChangeCursor("product.product", overlap, party_field="id"),
        "product.template": ChangeCursor("product.template", overlap, party_field="id"),
    }


class ProductsStream(TrytonStream):
    """The catalogue as canonical products, read incrementally like the clients.

    A run reads what changed since the previous one (a cursor on variants, one on templates,
    each with the overlap window); the first run, or one with ``full_scan``, reads every
    variant; ``product_ids`` reads just those and moves no cursor.
    """

    name = "products"
    primary_keys: ClassVar[list[str]] = ["erp_id"]
    replication_key = "source_updated_at"
    is_sorted = False
    schema = stream_schema(Product, permissive=True)

    @property
    def replication_method(self) -> str:
        """A full scan is a full-table read: with ``emit_activate_version_messages`` the
        ledger learns that products it did not receive were deleted."""
        if self.config.get("full_scan") and not self.config.get("product_ids"):
            return "FULL_TABLE"
        return super().replication_method

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The products to emit; the cursors move in STATE only once all were emitted."""
        del context
        with explained(self.config):
            requested = self._requested_products()
            company = self.company
            if requested is not None:
                yield from self._products(requested, company)
                self.logger.info("Read %d requested products", len(requested))
                return
            state = self.stream_state
            cursors = watched_models(self.overlap)
            saved = state.get("cursors") or {}
            for model, cursor in cursors.items():
                if model in saved:
                    cursor.load(saved[model])
            if not cursors.keys() <= saved.keys() or self.config.get("full_scan"):
                yield from self._full_read(cursors, company)
            else:
                changed = cursors["product.product"].fetch(self.tryton, self.page_size)
                templates = cursors["product.template"].fetch(self.tryton, self.page_size)
                changed |= self._variants(sorted(templates))
                yield from self._products(sorted(changed), company)
            state["cursors"] = {model: cursor.to_state() for model, cursor in cursors.items()}
            self.logger.info("Tryton calls this run: %d", self.rpc_calls)

    def _requested_products(self) -> list[int] | None:
        wanted = self.config.get("product_ids")
        if not wanted:
            return None
        if self.config.get("full_scan"):
            raise ConfigValidationError(
                "product_ids and full_scan exclude each other: a targeted run reads only the "
                "listed products, a full scan reads them all. Unset one of them."
            )
        try:
            return sorted({int(str(product).strip()) for product in wanted})
        except ValueError as exc:
            raise ConfigValidationError(
                f"product_ids must hold Tryton product ids (numbers); got {wanted!r}"
            ) from exc

    def _full_read(
        self, cursors: dict[str, ChangeCursor], company: Company
    ) -> Iterator[dict[str, Any]]:
        """Every variant in scope; both cursors restart from what was read."""
        variants: list[Row] = []
        templates: dict[int, Row] = {}
        count = 0
        for page in read_pages(
            self.tryton,
            "product.product",
            SCOPE,
            PRODUCT_FIELDS,
            page_size=self.page_size,
            context=WITH_INACTIVE,
        ):
            for row in page:
                variants.append(_stamps(row))
                template = row.get("template.")
                if template:
                    templates[int(template["id"])] = _stamps(template)
                count += 1
                yield product_record(row, company)
        for model, rows in (
            ("product.product", variants),
            ("product.template", list(templates.values())),
        ):
            cursors[model].latest = None
            cursors[model].observe(rows)
        self.logger.info("Full read: %d products", count)

    def _variants(self, template_ids: Sequence[int]) -> set[int]:
        """The variants of these templates, active or not."""
        found: set[int] = set()
        for start in range(0, len(template_ids), self.page_size):
            batch = list(template_ids[start : start + self.page_size])
            found.update(
                self.tryton.search(
                    "product.product", [("template", "in", batch)], context=WITH_INACTIVE
                )
            )
        return found

    def _products(self, product_ids: Sequence[int], company: Company) -> Iterator[dict[str, Any]]:
        """These variants (those out of scope or gone are skipped), a page at a time."""
        for start in range(0, len(product_ids), self.page_size):
            batch = list(product_ids[start : start + self.page_size])
            rows = self.tryton.search_read(
                "product.product",
                [("id", "in", batch), SCOPE],
                PRODUCT_FIELDS,
                context=WITH_INACTIVE,
            )
            for row in rows:
                yield product_record(row, company)


def product_record(row: Row, company: Company) -> dict[str, Any]:
    """A Tryton variant as a canonical product.

    It is active when the variant and its template are, and it is for sale; its price is in
    the company's currency, as Tryton's list prices are.
    """
    template = row.get("template.") or {}
    times = [stamp(row)]
    if template.get("create_date"):
        times.append(stamp(template))
    active = (
        bool(row.get("active", True))
        and bool(template.get("active", True))
        and bool(row.get("salable"))
    )
    product = Product(
        source="erp",
        erp_id=str(row["id"]),
        source_updated_at=max(times),
        code=row.get("code"),
        name=row.get("name"),
        unit_price=row.get("list_price_used"),
        currency=company.currency,
        active=active,
    )
    return product.plain()


def _stamps(row: Row) -> Row:
    return {key: row.get(key) for key in ("id", "create_date", "write_date")}
