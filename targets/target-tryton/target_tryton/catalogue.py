"""What new Tryton documents (sales, invoices) need from Tryton, read once per batch.

A document names its client's party, the products of its lines by code and its currency; a
batch reads each of these in one call, whatever its size. Tryton's ``create`` runs no
on-change, so what a clerk's client would fill in by itself (the invoice address, the payment
term, a line's unit and taxes) is read here and written explicitly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from coulisse.tryton.rpc import TrytonClient

PARTY = "party.party"
PRODUCT = "product.product"
CURRENCY = "currency.currency"
#: Unit prices keep four decimals (Tryton's default ``price_digits``); more would be refused as
#: too many digits.
PRICE = Decimal("0.0001")
#: What a document needs of its client's party.
PARTY_FIELDS: tuple[str, ...] = (
    "addresses.active",
    "addresses.invoice",
    "addresses.delivery",
    "customer_payment_term",
)
#: What a sale line needs of its product.
PRODUCT_FIELDS: tuple[str, ...] = (
    "code",
    "active",
    "template.salable",
    "template.sale_uom",
    "template.account_category",
    "template.account_category.customer_taxes_used",
)


@dataclass(slots=True)
class Catalogue:
    """The parties, products (by upper-case code) and currencies (by code) of a batch."""

    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    currencies: dict[str, int] = field(default_factory=dict)
    parties: dict[int, dict[str, Any]] = field(default_factory=dict)

    def product(self, code: Any) -> dict[str, Any] | None:
        """The product with ``code``, whatever its case; None without a code or a product."""
        return self.products.get(str(code).upper()) if code else None


def read_catalogue(
    tryton: TrytonClient,
    *,
    parties: Iterable[int],
    codes: Iterable[str],
    currencies: Iterable[str],
    party_fields: Sequence[str] = PARTY_FIELDS,
    product_fields: Sequence[str] = PRODUCT_FIELDS,
) -> Catalogue:
    """The parties, products and currencies a batch of documents names, one read each."""
    catalogue = Catalogue()
    wanted_codes = sorted(set(codes))
    if wanted_codes:
        # The planner matches codes ignoring case, as people type SKUs: so does this lookup,
        # in the same call (an exact match first, then the active product).
        clauses: list[Any] = [("code", "ilike", like(code)) for code in wanted_codes]
        rows = tryton.search_read(
            PRODUCT,
            ["OR", *clauses],
            product_fields,
            order=[("active", "DESC"), ("id", "ASC")],
            context={"active_test": False},
        )
        exact = [row for row in rows if str(row["code"]) in wanted_codes]
        for row in [*exact, *rows]:
            catalogue.products.setdefault(str(row["code"]).upper(), row)
    wanted_currencies = sorted(set(currencies))
    if wanted_currencies:
        for row in tryton.search_read(CURRENCY, [("code", "in", wanted_currencies)], ["code"]):
            catalogue.currencies[str(row["code"])] = int(row["id"])
    wanted_parties = sorted(set(parties))
    if wanted_parties:
        for row in tryton.search_read(
            PARTY, [("id", "in", wanted_parties)], party_fields, context={"active_test": False}
        ):
            catalogue.parties[int(row["id"])] = row
    return catalogue


def unit_price(value: Any) -> Decimal:
    """A unit price as a Tryton line holds it: four decimals, half up.

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


def like(code: str) -> str:
    r"""``code`` as an ``ilike`` pattern matching only itself (wildcards escaped).

    >>> like("KIT_50%")
    'KIT\\_50\\%'
    """
    return code.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def as_date(value: Any) -> dt.date | None:
    """A canonical date (ISO text or a date) as Tryton takes it."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


__all__ = [
    "CURRENCY",
    "PARTY",
    "PARTY_FIELDS",
    "PRODUCT",
    "PRODUCT_FIELDS",
    "Catalogue",
    "as_date",
    "first_address",
    "like",
    "read_catalogue",
    "unit_price",
]
