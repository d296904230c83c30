"""tap-tryton: reads Tryton over JSON-RPC and emits Coulisse's canonical streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

from singer_sdk import Tap
from singer_sdk import typing as th

from tap_tryton.invoices import InvoicesStream
from tap_tryton.orders import OrdersStream
from tap_tryton.products import ProductsStream
from tap_tryton.streams import ClientsStream

if TYPE_CHECKING:
    from tap_tryton.client import TrytonStream


class TapTryton(Tap):
    """Tryton, observed: parties with their parts and receivable status as canonical ``clients``."""

    name = "tap-tryton"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "url",
            th.StringType,
            required=True,
            title="Tryton URL",
            description=(
                "Tryton's base URL, e.g. http://127.0.0.1:8610 (JSON-RPC answers at "
                "<url>/<database>/rpc/)."
            ),
        ),
        th.Property(
            "database",
            th.StringType,
            required=True,
            title="Database",
            description="The Tryton database to read, e.g. coulisse_demo_erp.",
        ),
        th.Property(
            "username",
            th.StringType,
            required=True,
            title="Login",
            description=(
                "The integration user's login. It needs read access to parties, customer "
                "invoices and receivable move lines (an accounting group), and a current company."
            ),
        ),
        th.Property(
            "password",
            th.StringType,
            required=True,
            secret=True,
            title="Password",
            description="The integration user's password (JSON-RPC logs in with it).",
        ),
        th.Property(
            "page_size",
            th.IntegerType,
            default=500,
            title="Page size",
            description=(
                "Parties (and invoices, move lines) per search_read. Each page of parties is "
                "read with its addresses, contact mechanisms and identifiers in one call."
            ),
        ),
        th.Property(
            "overlap_seconds",
            th.IntegerType,
            default=300,
            title="Overlap window (seconds)",
            description=(
                "How far before each cursor a run reads again. Tryton stamps a change with its "
                "transaction's start, so a long transaction can commit a change older than the "
                "newest one read; rows already seen with the same stamp are not emitted again."
            ),
        ),
        th.Property(
            "party_ids",
            th.ArrayType(th.CustomType({"type": ["integer", "string"]})),
            title="Only these parties",
            description=(
                "Read just these party ids (targeted or webhook-triggered runs) instead of "
                "what changed; the cursors do not move."
            ),
        ),
        th.Property(
            "product_ids",
            th.ArrayType(th.CustomType({"type": ["integer", "string"]})),
            title="Only these products",
            description=(
                "Read just these product (variant) ids instead of what changed in the catalogue; "
                "the cursors do not move."
            ),
        ),
        th.Property(
            "invoice_ids",
            th.ArrayType(th.CustomType({"type": ["integer", "string"]})),
            title="Only these invoices",
            description=(
                "Read just these customer invoice ids instead of what changed; the cursors do "
                "not move."
            ),
        ),
        th.Property(
            "full_scan",
            th.BooleanType,
            default=False,
            title="Full scan",
            description=(
                "Emit every party (periodic reconciliation). With "
                "emit_activate_version_messages, the ledger then learns which parties were "
                "deleted; the cursors restart from what was read."
            ),
        ),
        th.Property(
            "emit_activate_version_messages",
            th.BooleanType,
            default=False,
            title="Announce full scans",
            description=(
                "Send ACTIVATE_VERSION around a full_scan run, so the loader can treat parties "
                "it did not receive as deleted. Incremental and party_ids runs never send it."
            ),
        ),
    ).to_dict()

    def discover_streams(self) -> list[TrytonStream]:
        return [ClientsStream(self), ProductsStream(self), OrdersStream(self), InvoicesStream(self)]


if __name__ == "__main__":
    TapTryton.cli()
