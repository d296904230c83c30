"""BottleCRM's won deals, with their line items and the ERP's status, as canonical orders."""

from __future__ import annotations

import decimal
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.exceptions import FatalAPIError

from coulisse.bottlecrm.deals import IncompleteScanError, order_from_deal, won_deals
from coulisse.model import Order, stream_schema
from tap_bottlecrm.client import BottleCrmStream

if TYPE_CHECKING:
    from collections.abc import Iterable

    import requests
    from singer_sdk.helpers.types import Context


class OrdersStream(BottleCrmStream):
    """Every deal in a won stage, read in full at each run.

    The deal list carries each deal's line items (with the product and its SKU), so one list
    request per won stage reads everything; there is no updated-since filter, so the ledger's
    content hashes find what changed. A complete scan is announced with ACTIVATE_VERSION: a
    deal deleted, or moved out of its won stage, is then seen as deleted (the planner cancels
    its ERP sale unless the sale is already confirmed).
    """

    name = "orders"
    path = "/opportunities/"
    primary_keys: ClassVar[list[str]] = ["crm_id"]
    replication_key = None
    schema = stream_schema(Order, permissive=True)

    @property
    def emit_activate_version_messages(self) -> bool:
        """Every run is a complete scan of the won deals."""
        return bool(self.config.get("emit_activate_version_messages", True))

    def validate_response(self, response: requests.Response) -> None:
        """As every BottleCRM stream, but a refusal names the scope deals need."""
        if response.status_code in {401, 403}:
            raise FatalAPIError(
                f"BottleCRM refused {response.request.path_url} ({response.status_code}: "
                f"{response.text[:200]}). Check api_token: an org-admin token with the "
                "opportunities:read scope."
            )
        super().validate_response(response)

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """One GET with the stream's token, retries and error messages."""
        prepared = self.build_prepared_request(
            method="GET",
            url=f"{self.url_base}/{path.lstrip('/')}",
            params=params,
            headers=self.http_headers,
        )
        response = self.request_decorator(self._request)(prepared, None)
        return response.json(parse_float=decimal.Decimal)

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The won deals, one list read per won stage (the SDK runs ``post_process``)."""
        del context
        try:
            yield from won_deals(self._get, self.page_size)
        except IncompleteScanError as exc:
            raise FatalAPIError(str(exc)) from exc

    def post_process(
        self, row: dict[str, Any], context: Context | None = None
    ) -> dict[str, Any] | None:
        """A deal as a canonical order; the ERP-owned values come from its custom fields."""
        return order_from_deal(row)
