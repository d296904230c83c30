"""Tryton's customer taxes by the rate they charge, read once per batch.

Two questions about taxes come up when a CRM invoice becomes a Tryton draft: which rate a line's
taxes charge (read back as tap-tryton reads it, through the same :func:`tax_rate`: a tax may be
a parent whose date-bounded children hold the rate), and which customer tax charges the rate a
CRM line names when the line has no product to take its taxes from. For the second, a tax the
catalogue's accounting categories charge customers on the same revenue account is preferred
(Tryton's French chart has two taxes at 20 %, on goods and on services; the default revenue
account is the services' one), then the catalogue's other customer taxes, then any sale tax.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tap_tryton.invoices import tax_rate

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterable
    from decimal import Decimal

    from coulisse.tryton.rpc import TrytonClient

TAX = "account.tax"
CATEGORY = "product.category"
#: What the rate of a tax needs (the same fields tap-tryton reads).
TAX_FIELDS = ("type", "rate", "start_date", "end_date", "childs")
WITH_INACTIVE = {"active_test": False}


class TaxTree:
    """The taxes read so far, with their children; the customer taxes, by preference."""

    def __init__(self, tryton: TrytonClient) -> None:
        """Read through ``tryton``, lazily: a batch with no tax question reads nothing."""
        self.tryton = tryton
        self._rows: dict[int, dict[str, Any]] = {}
        self._categories: list[dict[str, Any]] | None = None
        self._sale_taxes: list[int] = []

    @property
    def rows(self) -> dict[int, dict[str, Any]]:
        """Every tax read so far, by id (what :func:`tax_rate` walks)."""
        return self._rows

    def load(self, tax_ids: Iterable[int]) -> None:
        """Read the taxes named and all their children (one call per level of the tree)."""
        missing = {int(tax) for tax in tax_ids} - self._rows.keys()
        while missing:
            rows = self.tryton.read(TAX, sorted(missing), TAX_FIELDS, WITH_INACTIVE)
            for row in rows:
                self._rows[int(row["id"])] = row
            children = {int(child) for row in rows for child in row.get("childs") or []}
            missing = children - self._rows.keys()

    def rate(self, tax_ids: Iterable[int], day: dt.date) -> Decimal:
        """The rate ``tax_ids`` charge together on ``day``, as a fraction (0.20 for 20 %)."""
        ids = [int(tax) for tax in tax_ids]
        self.load(ids)
        return tax_rate(ids, self._rows, day)

    def customer_tax(self, rate: Decimal, day: dt.date, account: int | None) -> int | None:
        """The customer tax charging ``rate`` on ``day``; None when Tryton has none.

        Taxes the catalogue charges on revenue ``account`` come first (the default revenue
        account is for services: their tax is the services' one), then the catalogue's other
        customer taxes, then any other sale tax.
        """
        for tax in self._customer_taxes(account):
            if self.rate([tax], day) == rate:
                return tax
        return None

    def _customer_taxes(self, account: int | None) -> list[int]:
        """Top-level sale taxes, in the order :meth:`customer_tax` prefers them."""
        if self._categories is None:
            self._categories = self.tryton.search_read(
                CATEGORY,
                [("accounting", "=", True)],
                ["account_revenue", "customer_taxes_used"],
                order=[("id", "ASC")],
            )
            self._sale_taxes = self.tryton.search(
                TAX,
                [("parent", "=", None), ("group.kind", "in", ["sale", "both"])],
                order=[("id", "ASC")],
            )
        ordered: list[int] = []
        same_account = [c for c in self._categories if c.get("account_revenue") == account]
        for category in [*same_account, *self._categories]:
            ordered.extend(int(tax) for tax in category.get("customer_taxes_used") or [])
        ordered.extend(self._sale_taxes)
        unique = list(dict.fromkeys(ordered))
        self.load(unique)
        return unique


__all__ = ["TAX", "TaxTree"]
