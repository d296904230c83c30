"""BottleCRM streams: accounts with their primary contact, as canonical Coulisse clients."""

from __future__ import annotations

import decimal
from typing import TYPE_CHECKING, Any, ClassVar

from coulisse.bottlecrm.money import parse_money
from coulisse.model import Client, stream_schema
from tap_bottlecrm.client import BottleCrmPaginator, BottleCrmStream

if TYPE_CHECKING:
    from collections.abc import Iterable

    import requests
    from singer_sdk.helpers.types import Context

OPEN = ("active_accounts", "open_accounts")
CLOSED = ("closed_accounts", "close_accounts")


class ClientsStream(BottleCrmStream):
    """Every account, open and closed, read in full with few large pages.

    The list has no updated-since filter and is ordered by UUID, so there is no incremental
    read: the ledger's content hashes find what changed, and what a complete scan no longer
    returns was deleted. With ``account_ids`` set, only those accounts are read.
    """

    name = "clients"
    path = "/accounts/"
    primary_keys: ClassVar[list[str]] = ["crm_id"]
    replication_key = None
    schema = stream_schema(Client, permissive=True)

    _contacts: dict[str, dict[str, Any]] | None = None

    @property
    def emit_activate_version_messages(self) -> bool:
        """Only a complete scan may tell the ledger that unseen accounts were deleted."""
        return bool(self.config.get("emit_activate_version_messages", True)) and not (
            self.config.get("account_ids")
        )

    def get_new_paginator(self) -> BottleCrmPaginator:
        return BottleCrmPaginator(self.page_size, (OPEN, CLOSED))

    def get_url_params(
        self, context: Context | None, next_page_token: int | None
    ) -> dict[str, Any]:
        return {"limit": self.page_size, "offset": next_page_token or 0}

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, Any]]:
        payload = response.json(parse_float=decimal.Decimal)
        for path in (OPEN, CLOSED):
            node: Any = payload
            for key in path:
                node = node.get(key, [])
            yield from node

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        wanted = self.config.get("account_ids")
        if not wanted:
            yield from super().get_records(context)
            return
        for account_id in wanted:
            response = self.requests_session.get(
                f"{self.url_base}/accounts/{account_id}/",
                headers=self.authenticator.auth_headers,
                timeout=self.timeout,
            )
            if response.status_code == 404:
                self.logger.info("account %s no longer exists in BottleCRM", account_id)
                continue
            self.validate_response(response)
            # The SDK runs post_process on what this yields.
            yield response.json(parse_float=decimal.Decimal)["account_obj"]

    def primary_contacts(self) -> dict[str, dict[str, Any]]:
        """The first contact of each account (by creation), read once per run."""
        if self._contacts is None:
            contacts: dict[str, dict[str, Any]] = {}
            offset = 0
            while True:
                response = self.requests_session.get(
                    f"{self.url_base}/contacts/",
                    params={"limit": self.page_size, "offset": offset},
                    headers=self.authenticator.auth_headers,
                    timeout=self.timeout,
                )
                self.validate_response(response)
                rows = response.json(parse_float=decimal.Decimal)["results"]
                for row in sorted(rows, key=lambda r: str(r.get("created_at") or "")):
                    account = row.get("account")
                    if account and account not in contacts:
                        contacts[str(account)] = row
                if len(rows) < self.page_size:
                    break
                offset += self.page_size
            self._contacts = contacts
        return self._contacts

    def post_process(
        self, row: dict[str, Any], context: Context | None = None
    ) -> dict[str, Any] | None:
        """An account as a canonical client; ERP-owned values come from their custom fields."""
        custom = row.get("custom_fields") or {}
        contact = self.primary_contacts().get(str(row["id"]), {})
        record: dict[str, Any] = {
            "crm_id": str(row["id"]),
            "erp_id": custom.get("erp_ref") or None,
            "source": "crm",
            "source_updated_at": row.get("updated_at"),
            "name": row.get("name"),
            "vat": custom.get("vat"),
            "siren": custom.get("siren"),
            "email": row.get("email") or contact.get("email"),
            "phone": row.get("phone") or contact.get("phone"),
            "website": row.get("website"),
            "billing_street": row.get("address_line"),
            "billing_postal_code": row.get("postcode"),
            "billing_city": row.get("city"),
            "billing_country": row.get("country"),
            "active": bool(row.get("is_active", True)),
            "erp_code": custom.get("erp_client_code"),
            "last_invoice_date": custom.get("erp_last_invoice_date"),
        }
        for field, key in (
            ("balance_due", "erp_balance_due"),
            ("overdue_amount", "erp_overdue_amount"),
        ):
            try:
                amount, currency = parse_money(custom.get(key))
            except ValueError:
                # Someone typed over the mirrored value: let the ledger see it as it is.
                record[field] = custom.get(key)
                continue
            record[field] = amount
            if currency:
                record["currency"] = currency
        return record
