"""The changes the freshness benchmark makes, as people would, and how it sees them land.

- **ERP -> CRM**: an accounting clerk records a part payment on a posted invoice in Tryton
  (its ``account.invoice.pay`` wizard, paid today in the company's Paris time); it has landed
  when the invoice's mirror in the CRM shows Tryton's new amount due, both in the ERP's figure
  (custom field ``erp_amount_due``) and in the CRM's own (the mirrored payment lowers it).
- **CRM -> ERP**: a sales advisor edits an account's billing street through the CRM's API; it
  has landed when the twin party in Tryton has an address with that street.

Each change is timed from its commit (the payment wizard's last step has returned; the CRM's
write is about to be sent) to the sending of the first poll that sees it; polls are half a
second apart by default, so the figure is late by at most one pause plus one request.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.money import parse_money

if TYPE_CHECKING:
    from collections.abc import Callable

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.ledger import Ledger
    from coulisse.tryton.rpc import TrytonClient

#: What each part payment pays; invoices are chosen with room for all of theirs.
PART_PAYMENT = Decimal("10.00")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Sample:
    """One change: what it was, when it was committed, how long until the other side had it."""

    what: str
    record: str  # the changed record's id (ERP invoice id, CRM account id)
    committed_at: dt.datetime
    seconds: float | None  # None: not seen within the timeout
    load: float  # the machine's 1-minute load average when the change was made
    landed_at: dt.datetime | None = None
    via: str = ""  # who delivered it (a Prefect run's phase, or the path a webhook took)


def poll(seen: Callable[[], bool], timeout: float, every: float) -> float | None:
    """Ask ``seen`` until it says yes, pausing ``every`` s between an answer and the next ask.

    Returns the monotonic time at which the asking that saw it was sent (the change landed
    before that, after the previous ask), or None after ``timeout`` s. The pause follows each
    answer rather than keeping a rate, so a slow server is never asked back to back.
    """
    deadline = time.monotonic() + timeout
    while True:
        asked = time.monotonic()
        if seen():
            return asked
        if asked >= deadline:
            return None
        time.sleep(every)


def _landed(committed_at: dt.datetime, committed: float, seen: float | None) -> dt.datetime | None:
    """The wall-clock time of the poll that saw a change (monotonic ``seen``)."""
    return None if seen is None else committed_at + dt.timedelta(seconds=seen - committed)


def load_now() -> float:
    return os.getloadavg()[0]


@dataclass(frozen=True)
class MirroredInvoice:
    """A posted ERP invoice and its mirror in the CRM."""

    erp_id: int
    number: str
    crm_id: str


class ErpPayments:
    """Part payments on posted ERP invoices that the CRM already mirrors."""

    def __init__(self, erp: TrytonClient, crm: BottleCrmClient, changes: int) -> None:
        self.erp = erp
        self.crm = crm
        self.invoices = self._candidates(changes)
        if not self.invoices:
            raise RuntimeError(
                "no posted ERP invoice with room for part payments is mirrored in the CRM: "
                "did the first sync run?"
            )
        (self.method,) = erp.search("account.invoice.payment.method", [], limit=1)

    def _mirrors(self) -> dict[str, dict[str, Any]]:
        """The CRM's invoice mirrors by the ERP invoice id they carry (``erp_ref``)."""
        rows = self.crm.get("invoices/", limit=10_000)["results"]
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            invoice = self.crm.get(f"invoices/{row['id']}/")["invoice"]
            ref = (invoice.get("custom_fields") or {}).get("erp_ref")
            if ref:
                found[str(ref)] = invoice
        return found

    def _candidates(self, changes: int) -> list[MirroredInvoice]:
        """Posted invoices mirrored as they are now, with room for their share of payments."""
        rows = self.erp.search_read(
            "account.invoice",
            [("type", "=", "out"), ("state", "=", "posted")],
            ["number", "amount_to_pay", "total_amount"],
            order=[("id", "ASC")],
        )
        mirrors = self._mirrors()
        usable = []
        for row in rows:
            mirror = mirrors.get(str(row["id"]))
            due = Decimal(str(row["amount_to_pay"]))
            if mirror is None or due <= PART_PAYMENT * 2:
                continue
            if _mirror_due(mirror) == (due, due):
                usable.append((row, mirror, due))
        # Each invoice gets its share of the payments and is never paid off (a full payment
        # would end the series on it): keep those with room for that many, until it holds.
        while usable:
            share = -(-changes // len(usable))
            roomy = [u for u in usable if u[2] > PART_PAYMENT * (share + 1)]
            if len(roomy) == len(usable):
                break
            usable = roomy
        return [
            MirroredInvoice(erp_id=int(r["id"]), number=str(r["number"]), crm_id=str(m["id"]))
            for r, m, _due in usable
        ]

    def due(self, invoice: MirroredInvoice) -> Decimal:
        (row,) = self.erp.read("account.invoice", [invoice.erp_id], ["amount_to_pay"])
        return Decimal(str(row["amount_to_pay"]))

    def pay(self, index: int, timeout: float, every: float) -> Sample:
        """Record one part payment in the ERP; wait for the CRM's mirror to show it."""
        from coulisse.stack.erp_seed import pay_invoice, today_in_paris

        invoice = self.invoices[index % len(self.invoices)]
        load = load_now()
        pay_invoice(
            self.erp,
            invoice.erp_id,
            amount=PART_PAYMENT,
            payment_method=self.method,
            paid_on=today_in_paris(),
            description=f"freshness {index + 1}",
        )
        committed, committed_at = time.monotonic(), utc_now()
        expected = self.due(invoice)

        def shown() -> bool:
            mirror = self.crm.get(f"invoices/{invoice.crm_id}/")["invoice"]
            return _mirror_due(mirror) == (expected, expected)

        seen = poll(shown, timeout, every)
        return Sample(
            what=f"{PART_PAYMENT} paid on {invoice.number} (due now {expected})",
            record=str(invoice.erp_id),
            committed_at=committed_at,
            seconds=None if seen is None else seen - committed,
            load=load,
            landed_at=_landed(committed_at, committed, seen),
        )


def _mirror_due(mirror: dict[str, Any]) -> tuple[Decimal | None, Decimal | None]:
    """The amount due a mirror shows: the ERP's figure (custom field) and the CRM's own."""
    erp_figure, _currency = parse_money((mirror.get("custom_fields") or {}).get("erp_amount_due"))
    own = mirror.get("amount_due")
    return erp_figure, None if own is None else Decimal(str(own))


@dataclass(frozen=True)
class LinkedAccount:
    """A CRM account linked to an ERP party (its ``erp_ref``) and in no quarantine."""

    crm_id: str
    name: str
    party: int


class CrmAccountEdits:
    """Billing-street edits on linked CRM accounts, waited for in Tryton."""

    def __init__(self, erp: TrytonClient, crm: BottleCrmClient, ledger: Ledger, tag: str) -> None:
        self.erp = erp
        self.crm = crm
        self.ledger = ledger
        self.tag = tag
        self.accounts = self._candidates()
        if not self.accounts:
            raise RuntimeError("no CRM account is linked to an ERP party: did the first sync run?")

    def _candidates(self) -> list[LinkedAccount]:
        held = {q.source_key for q in self.ledger.quarantined()}
        page = self.crm.get("accounts/", limit=10_000)
        rows = page["active_accounts"]["open_accounts"]
        found = []
        for row in rows:
            ref = (row.get("custom_fields") or {}).get("erp_ref")
            if ref and str(ref).isdigit() and str(row["id"]) not in held:
                found.append(LinkedAccount(str(row["id"]), str(row["name"]), int(ref)))
        return sorted(found, key=lambda a: a.name)

    def edit(self, index: int, timeout: float, every: float) -> Sample:
        """Change one account's billing street in the CRM; wait for its party to have it."""
        account = self.accounts[index % len(self.accounts)]
        street = f"{index + 1} rue de la Fraîcheur {self.tag}"
        load = load_now()
        committed, committed_at = time.monotonic(), utc_now()
        self.crm.patch(f"accounts/{account.crm_id}/", {"address_line": street})

        def shown() -> bool:
            rows = self.erp.search_read(
                "party.address", [("party", "=", account.party)], ["street"]
            )
            return any((r.get("street") or "").strip() == street for r in rows)

        seen = poll(shown, timeout, every)
        return Sample(
            what=f"{account.name}: billing street -> {street!r}",
            record=account.crm_id,
            committed_at=committed_at,
            seconds=None if seen is None else seen - committed,
            load=load,
            landed_at=_landed(committed_at, committed, seen),
        )

    def delivered_by(self, account_crm_id: str, since: dt.datetime, timeout: float) -> str:
        """Who consumed this change's webhook flags (`coulisse serve` or a Prefect run).

        Waits for them to be consumed: a flag is marked only after the run that read it ended.
        """
        import sqlalchemy as sa

        from coulisse.ledger import tables as t

        c = t.crm_changes.c
        query = (
            sa.select(c.consumed_at, c.consumed_by)
            .where(c.crm_id == account_crm_id, c.entity == "client", c.received_at >= since)
            .order_by(c.id)
        )
        deadline = time.monotonic() + timeout
        while True:
            with self.ledger.engine.connect() as conn:
                mine = list(conn.execute(query))
            if mine and all(row.consumed_at is not None for row in mine):
                return str(mine[-1].consumed_by or "")
            if time.monotonic() >= deadline:
                return "flag not consumed yet" if mine else "no webhook flag received"
            time.sleep(0.5)
