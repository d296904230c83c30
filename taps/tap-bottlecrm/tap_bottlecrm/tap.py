"""tap-bottlecrm: reads BottleCRM through its REST API and emits Coulisse's canonical streams."""

from __future__ import annotations

from singer_sdk import Tap
from singer_sdk import typing as th

from tap_bottlecrm.streams import ClientsStream


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
                "A bcrm_pat_... token of an org-admin profile with accounts:read and "
                "contacts:read (non-admin tokens see only their own records)."
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
    ).to_dict()

    def discover_streams(self) -> list[ClientsStream]:
        return [ClientsStream(self)]


if __name__ == "__main__":
    TapBottleCRM.cli()
