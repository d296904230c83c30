"""BottleCRM invoices as canonical invoices: mirrors of ERP invoices and the CRM's own.

The invoice list carries neither custom fields, lines, payments, the deal nor an update time,
so every invoice is read in full (``/api/invoices/<id>/``), several at a time. The list has no
updated-since filter: each run is a complete scan, and the ledger's content hashes find what
changed (what a complete scan no longer returns was deleted).
"""

from __future__ import annotations

import decimal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.exceptions import FatalAPIError

from coulisse.bottlecrm.client import BottleCrmClient, CrmApiError, CrmUnavailableError
from coulisse.bottlecrm.invoices import canonical_invoice
from coulisse.model import Invoice, stream_schema
from tap_bottlecrm.client import BottleCrmPaginator, BottleCrmStream

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import requests
    from singer_sdk.helpers.types import Context

RESULTS = ("results",)
#: Invoices read in full per round of parallel requests.
CHUNK = 50


class InvoicesStream(BottleCrmStream):
    """Every invoice of the organisation, each read in full, as a canonical invoice.

    With ``invoice_ids`` set, only those invoices are read.
    """

    name = "invoices"
    path = "/invoices/"
    primary_keys: ClassVar[list[str]] = ["crm_id"]
    replication_key = None
    schema = stream_schema(Invoice, permissive=True)

    _skus: dict[str, str] | None = None
    _local = threading.local()

    @property
    def emit_activate_version_messages(self) -> bool:
        """Only a complete scan may tell the ledger that unseen invoices were deleted."""
        return bool(self.config.get("emit_activate_version_messages", True)) and not (
            self.config.get("invoice_ids")
        )

    def get_new_paginator(self) -> BottleCrmPaginator:
        return BottleCrmPaginator(self.page_size, (RESULTS,))

    def get_url_params(
        self, context: Context | None, next_page_token: int | None
    ) -> dict[str, Any]:
        # Oldest first: an invoice created during the scan lands on the last page instead of
        # shifting the pages not read yet.
        return {"limit": self.page_size, "offset": next_page_token or 0, "sort": "created_at"}

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        yield from response.json(parse_float=decimal.Decimal).get("results") or []

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """Each listed (or requested) invoice read in full, several requests at a time."""
        wanted = self.config.get("invoice_ids")
        ids: Iterable[str] = (
            [str(i) for i in wanted]
            if wanted
            else (str(row["id"]) for row in self.request_records(context))
        )
        workers = max(1, int(self.config.get("parallel_reads", 4)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for chunk in _chunks(ids, CHUNK):
                for invoice_id, row in zip(chunk, pool.map(self._detail, chunk), strict=True):
                    if row is None:
                        self.logger.info("invoice %s no longer exists in BottleCRM", invoice_id)
                        continue
                    yield canonical_invoice(row, self.skus())

    def _client(self) -> BottleCrmClient:
        """This thread's own HTTP client (retries 429 and 5xx with backoff, Decimal amounts)."""
        client: BottleCrmClient | None = getattr(self._local, "client", None)
        if client is None:
            client = BottleCrmClient(
                str(self.config["api_url"]), str(self.config["api_token"]), timeout=self.timeout
            )
            self._local.client = client
        return client

    def _read(self, path: str, **params: Any) -> Any:
        """A GET on the API; None for a 404, the tap's own messages for a refusal."""
        try:
            return self._client().get(path, **params)
        except CrmApiError as exc:
            if exc.status == 404:
                return None
            if exc.status in {401, 403}:
                raise FatalAPIError(
                    f"BottleCRM refused GET {path} ({exc.status}: {exc.detail[:200]}). Check "
                    "api_token: an org-admin token with the invoices:read scope."
                ) from exc
            raise FatalAPIError(str(exc)) from exc
        except CrmUnavailableError as exc:
            raise FatalAPIError(str(exc)) from exc

    def _detail(self, invoice_id: str) -> dict[str, Any] | None:
        """One invoice in full (None when it is gone)."""
        payload = self._read(f"invoices/{invoice_id}/")
        return None if payload is None else dict(payload["invoice"])

    def skus(self) -> dict[str, str]:
        """The SKU of each CRM product, by product id, read once per run."""
        if self._skus is None:
            skus: dict[str, str] = {}
            offset = 0
            while True:
                page = self._read("invoices/products/", limit=self.page_size, offset=offset)
                rows = (page or {}).get("results") or []
                skus.update({str(row["id"]): str(row["sku"]) for row in rows if row.get("sku")})
                if len(rows) < self.page_size:
                    break
                offset += self.page_size
            self._skus = skus
        return self._skus


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
