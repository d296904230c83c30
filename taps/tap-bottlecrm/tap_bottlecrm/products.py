"""BottleCRM's product catalogue (``/api/invoices/products/``) as canonical products.

The list is ordered by name, which is not unique, so offset pages may skip or repeat a product
when names tie; and it has no updated-since filter. The catalogue is small, so it is read whole
in one page (``limit`` has no maximum): the first request says how many products there are,
and a second one reads them all when they did not fit. What a complete read no longer returns
was deleted (ACTIVATE_VERSION tells the ledger so).
"""

from __future__ import annotations

import decimal
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.exceptions import FatalAPIError
from singer_sdk.pagination import BaseAPIPaginator

from coulisse.bottlecrm.products import canonical_product
from coulisse.model import Product, stream_schema
from tap_bottlecrm.client import BottleCrmStream

if TYPE_CHECKING:
    from collections.abc import Iterable

    import requests
    from singer_sdk.helpers.types import Context

#: Re-reads allowed when the catalogue keeps growing between the count and the read.
MAX_REREADS = 3


def _page(response: requests.Response) -> tuple[list[dict[str, Any]], int]:
    payload = response.json(parse_float=decimal.Decimal)
    rows = list(payload.get("results") or [])
    return rows, int(payload.get("count") or 0)


class WholeListPaginator(BaseAPIPaginator[int]):
    """The token is the page's ``limit``, always from offset 0: one page that holds the list.

    When the first page comes back with fewer rows than the list's ``count``, the list is read
    again with a limit above that count; the short page's rows are not emitted (see
    :meth:`ProductsStream.parse_response`).
    """

    def __init__(self, page_size: int) -> None:
        super().__init__(start_value=page_size)
        self.page_size = page_size
        self.rereads = 0

    def has_more(self, response: requests.Response) -> bool:
        rows, count = _page(response)
        return len(rows) < count

    def continue_if_empty(self, response: requests.Response) -> bool:
        return self.has_more(response)

    def get_next(self, response: requests.Response) -> int:
        _rows, count = _page(response)
        self.rereads += 1
        if self.rereads > MAX_REREADS:
            raise FatalAPIError(
                f"BottleCRM's product list kept growing while it was read ({count} products "
                f"now); nothing was emitted. Run again, or raise page_size above {count}."
            )
        return count + self.page_size


class ProductsStream(BottleCrmStream):
    """Every CRM product, active or not, read whole at each run."""

    name = "products"
    path = "/invoices/products/"
    primary_keys: ClassVar[list[str]] = ["crm_id"]
    replication_key = None
    schema = stream_schema(Product, permissive=True)

    @property
    def emit_activate_version_messages(self) -> bool:
        """Every run reads the whole catalogue: the ledger may learn what was deleted."""
        return bool(self.config.get("emit_activate_version_messages", True))

    def get_new_paginator(self) -> WholeListPaginator:
        return WholeListPaginator(self.page_size)

    def get_url_params(
        self, context: Context | None, next_page_token: int | None
    ) -> dict[str, Any]:
        return {"limit": next_page_token or self.page_size, "offset": 0}

    def validate_response(self, response: requests.Response) -> None:
        if response.status_code in {401, 403}:
            raise FatalAPIError(
                f"BottleCRM refused {response.request.path_url} ({response.status_code}: "
                f"{response.text[:200]}). Check api_token: the product catalogue is readable "
                "by org-admin tokens with the invoices:read scope."
            )
        super().validate_response(response)

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        """The page's products, unless they are only part of the list (it is read again)."""
        rows, count = _page(response)
        if len(rows) >= count:
            yield from rows

    def post_process(
        self, row: dict[str, Any], context: Context | None = None
    ) -> dict[str, Any] | None:
        """A CRM product as a canonical product (SKU as the code)."""
        return canonical_product(row)
