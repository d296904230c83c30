"""Tryton streams: parties, with their parts and their receivable status, as canonical clients."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.exceptions import ConfigValidationError
from stdnum.eu import vat as eu_vat
from stdnum.fr import siren as fr_siren
from stdnum.fr import siret as fr_siret

from coulisse.model import Client, stream_schema
from coulisse.tryton.references import crm_id_from_reference
from tap_tryton.client import (
    WITH_INACTIVE,
    ChangeCursor,
    Company,
    Row,
    TrytonStream,
    explained,
    read_pages,
    stamp,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from singer_sdk.helpers.types import Context

    from coulisse.tryton.rpc import TrytonClient

#: A party and its parts in one read (Tryton follows ``x.y`` through relations, lists included).
PARTY_FIELDS = (
    "code",
    "name",
    "active",
    "receivable",
    "create_date",
    "write_date",
    "addresses.active",
    "addresses.invoice",
    "addresses.street",
    "addresses.postal_code",
    "addresses.city",
    "addresses.country.code",
    "addresses.create_date",
    "addresses.write_date",
    "contact_mechanisms.active",
    "contact_mechanisms.type",
    "contact_mechanisms.value",
    "contact_mechanisms.value_compact",
    "contact_mechanisms.create_date",
    "contact_mechanisms.write_date",
    "identifiers.active",
    "identifiers.type",
    "identifiers.code",
    "identifiers.address",
    "identifiers.create_date",
    "identifiers.write_date",
)
#: The parts of a party, by model, and where a party read puts them.
PARTS = {
    "party.address": "addresses.",
    "party.contact_mechanism": "contact_mechanisms.",
    "party.identifier": "identifiers.",
}
#: What the ERP-owned status needs from customer invoices.
INVOICE_FIELDS = (
    "party",
    "state",
    "invoice_date",
    "lines_to_pay.maturity_date",
    "lines_to_pay.debit",
    "lines_to_pay.credit",
    "lines_to_pay.reconciliation",
    "payment_lines.debit",
    "payment_lines.credit",
    "payment_lines.reconciliation",
)
BILLED_STATES = ("posted", "paid")
#: Receivable move lines: what a client owes, in the company's currency.
RECEIVABLE_LINES = (("party", "!=", None), ("account.type.receivable", "=", True))
VAT_TYPES = ("eu_vat", "fr_tva")
PHONE_TYPES = ("phone", "mobile")


def watched_models(overlap: dt.timedelta) -> dict[str, ChangeCursor]:
    """One cursor per model whose changes alter a canonical client."""
    return {
        "party.party": ChangeCursor("party.party", overlap, party_field="id"),
        **{model: ChangeCursor(model, overlap) for model in PARTS},
        # Posting, paying or cancelling an invoice writes it.
        "account.invoice": ChangeCursor("account.invoice", overlap, domain=(("type", "=", "out"),)),
        # Payments, reconciliations and journal entries move the balance with no invoice write.
        "account.move.line": ChangeCursor("account.move.line", overlap, domain=RECEIVABLE_LINES),
    }


class ClientsStream(TrytonStream):
    """Every party (but the company's own) as a canonical client, read incrementally.

    A run reads what changed since the previous one: a cursor per model (the party, its
    addresses, contact mechanisms and identifiers, customer invoices and receivable move lines)
    names the parties to read again, and a sweep by due date adds those whose unpaid invoices
    fell due since the last run (they changed with no write at all). The first run, or one with
    ``full_scan``, reads every party; ``party_ids`` reads just those and moves no cursor.
    """

    name = "clients"
    primary_keys: ClassVar[list[str]] = ["erp_id"]
    replication_key = "source_updated_at"
    is_sorted = False
    schema = stream_schema(Client, permissive=True)

    @property
    def replication_method(self) -> str:
        """A full scan is a full-table read: with ``emit_activate_version_messages`` the
        ledger learns that parties it did not receive were deleted."""
        if self.config.get("full_scan") and not self.config.get("party_ids"):
            return "FULL_TABLE"
        return super().replication_method

    def get_records(self, context: Context | None) -> Iterable[dict[str, Any]]:
        """The clients to emit; the cursors move in STATE only once all were emitted."""
        del context
        with explained(self.config):
            requested = self._requested_parties()
            company = self.company
            today = company.today()
            if requested is not None:
                yield from self._clients(requested, company, today)
                self.logger.info("Read %d requested parties", len(requested))
                return
            state = self.stream_state
            cursors = watched_models(self.overlap)
            saved = state.get("cursors") or {}
            for model, cursor in cursors.items():
                if model in saved:
                    cursor.load(saved[model])
            overdue_as_of = state.get("overdue_as_of")
            full = not cursors.keys() <= saved.keys() or overdue_as_of is None
            if full or self.config.get("full_scan"):
                yield from self._full_read(cursors, saved, company, today)
            else:
                changed: set[int] = set()
                for cursor in cursors.values():
                    changed |= cursor.fetch(self.tryton, self.page_size)
                changed |= self._fallen_due(dt.date.fromisoformat(str(overdue_as_of)), today)
                changed.discard(company.party or 0)
                yield from self._clients(sorted(changed), company, today)
            state["cursors"] = {model: cursor.to_state() for model, cursor in cursors.items()}
            state["overdue_as_of"] = today.isoformat()
            self.logger.info("Tryton calls this run: %d", self.rpc_calls)

    def _requested_parties(self) -> list[int] | None:
        wanted = self.config.get("party_ids")
        if not wanted:
            return None
        if self.config.get("full_scan"):
            raise ConfigValidationError(
                "party_ids and full_scan exclude each other: a targeted run reads only the "
                "listed parties, a full scan reads them all. Unset one of them."
            )
        try:
            return sorted({int(str(party).strip()) for party in wanted})
        except ValueError as exc:
            raise ConfigValidationError(
                f"party_ids must hold Tryton party ids (numbers); got {wanted!r}"
            ) from exc

    def _full_read(
        self,
        cursors: dict[str, ChangeCursor],
        saved: dict[str, Any],
        company: Company,
        today: dt.date,
    ) -> Iterator[dict[str, Any]]:
        """Every party; the party cursors restart from what was read.

        Invoice and move-line cursors move first: a change landing while the parties are read
        is then either in what is read or newer than the cursor.
        """
        for model in ("account.invoice", "account.move.line"):
            if model in saved:
                cursors[model].fetch(self.tryton, self.page_size)
            else:
                cursors[model].start(self.tryton, self.page_size)
        rows: dict[str, list[Row]] = defaultdict(list)
        count = 0
        for page in read_pages(
            self.tryton,
            "party.party",
            [],
            PARTY_FIELDS,
            page_size=self.page_size,
            context=WITH_INACTIVE,
        ):
            for party in page:
                # Only what the cursors need: a full read may cover many parties.
                rows["party.party"].append(_stamps(party, party["id"]))
                for model, key in PARTS.items():
                    rows[model].extend(_stamps(part, party["id"]) for part in party[key])
            clients = self._with_status(page, company, today)
            count += len(clients)
            yield from clients
        for model in ("party.party", *PARTS):
            cursors[model].latest = None
            cursors[model].observe(rows[model])
        self.logger.info("Full read: %d clients", count)

    def _fallen_due(self, since: dt.date, today: dt.date) -> set[int]:
        """Parties with unpaid receivables that fell due since ``since``: late by the calendar."""
        return fallen_due(self.tryton, since, today, "party", page_size=self.page_size)

    def _clients(
        self, party_ids: Sequence[int], company: Company, today: dt.date
    ) -> Iterator[dict[str, Any]]:
        """These parties, read a page at a time (ids that no longer exist are skipped)."""
        for start in range(0, len(party_ids), self.page_size):
            batch = list(party_ids[start : start + self.page_size])
            parties = self.tryton.search_read(
                "party.party", [("id", "in", batch)], PARTY_FIELDS, context=WITH_INACTIVE
            )
            yield from self._with_status(parties, company, today)

    def _with_status(
        self, parties: list[Row], company: Company, today: dt.date
    ) -> list[dict[str, Any]]:
        """Canonical clients for ``parties``, their invoices read in one go."""
        parties = [p for p in parties if p["id"] != company.party]
        if not parties:
            return []
        invoices: dict[int, list[Row]] = defaultdict(list)
        domain = [
            ("type", "=", "out"),
            ("state", "in", BILLED_STATES),
            ("party", "in", [p["id"] for p in parties]),
        ]
        for page in read_pages(
            self.tryton, "account.invoice", domain, INVOICE_FIELDS, page_size=self.page_size
        ):
            for invoice in page:
                invoices[int(invoice["party"])].append(invoice)
        return [
            client_record(party, invoices[int(party["id"])], company=company, today=today)
            for party in parties
        ]


def fallen_due(
    tryton: TrytonClient, since: dt.date, today: dt.date, field: str, *, page_size: int
) -> set[int]:
    """``field`` (``party``, ``move``) of the unpaid receivable lines that fell due since
    ``since``: what became late by the calendar alone, with no write in Tryton."""
    if since >= today:
        return set()
    domain = [
        *RECEIVABLE_LINES,
        ("reconciliation", "=", None),
        ("maturity_date", ">=", since),
        ("maturity_date", "<", today),
    ]
    return {
        int(row[field])
        for page in read_pages(tryton, "account.move.line", domain, [field], page_size=page_size)
        for row in page
        if row.get(field) is not None
    }


def client_record(
    party: Row, invoices: Sequence[Row], *, company: Company, today: dt.date
) -> dict[str, Any]:
    """A Tryton party and its customer invoices as a canonical client."""
    addresses = _active(party, "addresses.")
    billing = next((a for a in addresses if a.get("invoice")), addresses[0] if addresses else {})
    mechanisms = _active(party, "contact_mechanisms.")
    identifiers = _active(party, "identifiers.")
    parts: list[Row] = [part for key in PARTS.values() for part in party.get(key) or []]
    vat = _identifier(identifiers, VAT_TYPES)
    siren = _identifier(identifiers, ("fr_siren",))
    # A SIRET belongs to an establishment: the billing address's, else the first one.
    siret = _identifier(identifiers, ("fr_siret",), address=billing.get("id")) or _identifier(
        identifiers, ("fr_siret",)
    )
    references = (crm_id_from_reference(str(i.get("code") or "")) for i in identifiers)
    country = billing.get("country.") or {}
    client = Client(
        source="erp",
        erp_id=str(party["id"]),
        crm_id=next((crm_id for crm_id in references if crm_id), None),
        source_updated_at=max([stamp(party), *(stamp(part) for part in parts)]),
        name=party.get("name"),
        vat=str(eu_vat.compact(vat)) if vat else None,
        siren=str(fr_siren.compact(siren)) if siren else None,
        siret=str(fr_siret.compact(siret)) if siret else None,
        email=_contact(mechanisms, ("email",)),
        # value_compact is a phone's E.164 form (Tryton shows it spaced: "+33 2 17 82 87 36").
        phone=_contact(mechanisms, PHONE_TYPES, compact=True),
        website=_contact(mechanisms, ("website",)),
        billing_street=billing.get("street"),
        billing_postal_code=billing.get("postal_code"),
        billing_city=billing.get("city"),
        billing_country=country.get("code"),
        active=bool(party.get("active", True)),
        erp_code=party.get("code"),
        currency=company.currency,
        balance_due=party.get("receivable"),
        overdue_amount=overdue_amount(invoices, today),
        last_invoice_date=max(
            (i["invoice_date"] for i in invoices if i.get("invoice_date")), default=None
        ),
    )
    return client.plain()


def _stamps(row: Row, party: int) -> Row:
    return {key: row.get(key) for key in ("id", "create_date", "write_date")} | {"party": party}


def _active(party: Row, key: str) -> list[Row]:
    """The party's parts under ``key`` that are still active, in Tryton's order."""
    return [dict(part) for part in party.get(key) or [] if part.get("active", True)]


def _identifier(
    identifiers: Sequence[Row], types: Sequence[str], *, address: int | None = None
) -> str | None:
    """The code of the first identifier of the first type present (of ``address`` if given)."""
    for kind in types:
        for row in identifiers:
            if row.get("type") != kind or not row.get("code"):
                continue
            if address is None or row.get("address") == address:
                return str(row["code"])
    return None


def _contact(
    mechanisms: Sequence[Row], types: Sequence[str], *, compact: bool = False
) -> str | None:
    """The first contact mechanism of one of ``types``."""
    for row in mechanisms:
        if row.get("type") in types and row.get("value"):
            return str((compact and row.get("value_compact")) or row["value"])
    return None


def overdue_amount(invoices: Iterable[Row], today: dt.date) -> Decimal:
    """What is still to pay on posted invoices for instalments due before ``today``.

    In the company's currency, as the balance: open instalments due before today, less the
    partial payments not yet reconciled (applied to the oldest dues first), never below zero
    and never above what the invoice still asks for.

    >>> due = {"maturity_date": dt.date(2026, 10, 1), "debit": Decimal("1200"), "credit": 0}
    >>> later = {"maturity_date": dt.date(2026, 12, 1), "debit": Decimal("800"), "credit": 0}
    >>> paid = {"debit": 0, "credit": Decimal("500")}
    >>> invoice = {"state": "posted", "lines_to_pay.": [due, later], "payment_lines.": [paid]}
    >>> overdue_amount([invoice], dt.date(2026, 11, 26))
    Decimal('700')
    """
    total = Decimal(0)
    for invoice in invoices:
        if invoice.get("state") != "posted":
            continue
        open_lines = [
            line
            for line in invoice.get("lines_to_pay.") or []
            if line.get("reconciliation") is None
        ]
        payments = sum(
            (
                _amount(line)
                for line in invoice.get("payment_lines.") or []
                if line.get("reconciliation") is None
            ),
            Decimal(0),
        )
        to_pay = sum((_amount(line) for line in open_lines), Decimal(0)) + payments
        fallen_due = sum(
            (
                _amount(line)
                for line in open_lines
                if line.get("maturity_date") is not None and line["maturity_date"] < today
            ),
            Decimal(0),
        )
        late = fallen_due + payments
        # An invoice is late by at most what it still asks for; a credit note owes the client.
        total += max(Decimal(0), min(late, to_pay)) if to_pay >= 0 else max(late, to_pay)
    return max(total, Decimal(0))


def _amount(line: Row) -> Decimal:
    return Decimal(line.get("debit") or 0) - Decimal(line.get("credit") or 0)
