"""tap-bottlecrm: reads BottleCRM through its REST API and emits Coulisse's canonical streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

from singer_sdk import Tap
from singer_sdk import typing as th

from tap_bottlecrm.invoices import InvoicesStream
from tap_bottlecrm.orders import OrdersStream
from tap_bottlecrm.products import ProductsStream
from tap_bottlecrm.streams import ClientsStream

if TYPE_CHECKING:
    from tap_bottlecrm.client import BottleCrmStream


class TapBottleCRM(Tap):
    """BottleCRM, observed: accounts (with their primary contact) as canonical ``clients``."""

    name = "tap-bottlecrm"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_url",
            th.StringType,
            required=True,
            title="API URL",
            description="BottleCRM's base URL, e.g. http://127.0.0.1:8600 (its API is /api/).",
        ),
        th.Property(
            "api_token",
            th.StringType,
            required=True,
            secret=True,
            title="Personal access token",
            description=(
                "A bcrm_pat_... token of an org-admin profile with accounts:read, "
                "contacts:read and invoices:read (the product catalogue lives there; "
                "non-admin tokens see only their own records)."
            ),
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=5000,
            title="Page size",
            description=(
                "Records per list request. BottleCRM puts the organisation's whole contact, "
                "lead and user lists on every accounts page, so few large pages are cheapest."
            ),
        ),
        th.Property(
            "emit_activate_version_messages",
            th.BooleanType,
            default=True,
            title="Mark full scans",
            description=(
                "Send ACTIVATE_VERSION around each full scan, so the ledger can tell which "
                "accounts were deleted (not sent when account_ids limits the read)."
            ),
        ),
        th.Property(
            "account_ids",
            th.ArrayType(th.StringType),
            title="Only these accounts",
            description=(
                "Read just these account ids (webhook-triggered runs) instead of a full scan."
            ),
        ),
        th.Property(
            "invoice_ids",
            th.ArrayType(th.StringType),
            title="Only these invoices",
            description=(
                "Read just these invoice ids (webhook-triggered runs) instead of a full scan."
            ),
        ),
        th.Property(
            "parallel_reads",
            th.IntegerType,
            default=4,
            title="Parallel invoice reads",
            description=(
                "Invoices read in full at once. The invoice list carries no custom fields, "
                "lines or payments, so each invoice is one more request."
            ),
        ),
    ).to_dict()

    def discover_streams(self) -> list[BottleCrmStream]:
        return [ClientsStream(self), ProductsStream(self), OrdersStream(self), InvoicesStream(self)]


if __name__ == "__main__":
    TapBottleCRM.cli()
