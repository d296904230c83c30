"""The invoices sink: ERP invoices mirrored in BottleCRM, their payments and follow-up tasks.

An ERP invoice reaches the CRM once posted (the planner's rule). The CRM cannot take an ERP
invoice as it is (it numbers invoices itself, charges one tax rate per invoice and moves its
status only through its own endpoints), so each operation brings the CRM invoice to the ERP's
state step by step, every step checked against what the CRM holds, so a rerun after a crash
finishes the work instead of repeating it:

1. **find or create**: a CRM invoice already carrying the ERP reference (``erp_ref``) is our
   own earlier write whose answer was lost: it is adopted, never created twice. Otherwise a
   Draft is created on the client's account (with a contact: an ERP-only client gets one),
   *without* the customer's email, its lines adding up exactly to the ERP's totals (one
   tax-included line per VAT rate, tax rate 0), the ERP's number, state and figures in custom
   fields, and the deal when the ERP invoice comes from a sale the CRM knows. A CRM draft an
   ERP invoice was made from (linked, no ``erp_ref`` yet) becomes that invoice's mirror at its
   first update: every ERP figure is written to it at once; it keeps its own lines.
2. **custom fields and dates** that differ are written with one partial PUT.
3. **send**: Draft -> Sent. With no customer email BottleCRM sends no email and schedules no
   reminder (reminders skip invoices without one; ours are also created with reminders off).
   A CRM draft an advisor wrote that became this ERP invoice (the planner's
   ``crm_invoices_to_erp``) may carry the customer's email, which BottleCRM's API will not
   blank: it is never sent and stays a Draft carrying the ERP's figures, its reminders turned
   off; payments still reach it (a Draft takes payments, becoming Partially_Paid or Paid
   without any email).
4. **payments** as the ERP records them, matched by reference (the ERP's move number): what is
   missing is added (never above the CRM's amount due), what the ERP no longer has is removed,
   so the CRM's status follows (Partially_Paid, Paid) and a rerun never pays twice.
5. **cancel** when the ERP cancelled the invoice.
6. **follow-up**: an overdue invoice gets one task for the account's advisor (``followup``).

What the CRM then holds, read back as tap-bottlecrm reads it, goes to the ledger (echo
suppression). A refusal is recorded with a sentence a clerk can act on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from singer_sdk.sinks import BatchSink

from coulisse.bottlecrm.client import CrmApiError, CrmUnavailableError
from coulisse.bottlecrm.invoices import (
    MIRROR_HOMES,
    NotMirrorableError,
    canonical_invoice,
    mirror_custom_fields,
    mirror_lines,
)
from coulisse.model import Invoice, Payment
from target_bottlecrm.bookkeeping import Bookkeeping, access_message, admin_token
from target_bottlecrm.connector import field_errors
from target_bottlecrm.crm_invoices import INVOICE_SCOPES, CrmInvoices
from target_bottlecrm.followup import ensure_follow_up, needs_follow_up
from target_bottlecrm.sinks import CrmAccessError, CrmStoppedError, Outcome

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Mapping

    from coulisse.ledger import Ledger
    from target_bottlecrm.crm_invoices import AccountView
    from target_bottlecrm.target import TargetBottleCRM

CENT = Decimal("0.01")
#: The fields a create writes: every ERP-owned one.
ALL_FIELDS = frozenset(Invoice.data_fields())
#: Issued CRM invoices keep their lines and amounts: these can only be set on creation.
FROZEN_FIELDS = frozenset({"lines", "taxes"})


@dataclass(frozen=True)
class InvoiceOperation:
    """One planned write, as tap-ledger emits it: the canonical invoice and what to change."""

    id: int
    action: str
    invoice: Invoice
    changed_fields: tuple[str, ...]

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InvoiceOperation:
        """Read an ``invoices`` record of tap-ledger (raises ``ValidationError`` on a bad one)."""
        invoice = Invoice.model_validate(record)
        action = str(record["operation"])
        changed = tuple(record.get("changed_fields") or ())
        if action == "cancel":
            invoice = invoice.model_copy(update={"state": "cancelled"})
            changed = changed if "state" in changed else (*changed, "state")
        return cls(
            id=int(record["operation_id"]), action=action, invoice=invoice, changed_fields=changed
        )

    @property
    def label(self) -> str:
        """How people recognise it: "invoice FAC-2026-00014 (ERP 11, operation 12)"."""
        ids = [f"ERP {self.invoice.erp_id}"] if self.invoice.erp_id else []
        if self.invoice.crm_id:
            ids.append(f"CRM invoice {self.invoice.crm_id}")
        ids.append(f"operation {self.id}")
        return f"invoice {self.invoice.number or '(no number)'} ({', '.join(ids)})"


@dataclass
class _Batch:
    """What one batch reads once: the invoice list (for lost answers) and accounts."""

    listed: list[dict[str, Any]] | None = None
    accounts: dict[str, AccountView] | None = None


class InvoicesSink(BatchSink):
    """Applies the ``invoices`` operations of tap-ledger (side ``crm``) to BottleCRM."""

    MAX_SIZE_DEFAULT = 200

    def __init__(
        self, target: Any, stream_name: str, schema: dict[str, Any], key_properties: Any
    ) -> None:
        """Keep a handle on the target, which owns the CRM client, the ledger and the run."""
        self._target: TargetBottleCRM = target
        super().__init__(target, stream_name, schema, key_properties)
        self._crm: CrmInvoices | None = None

    @property
    def crm(self) -> CrmInvoices:
        """BottleCRM's invoices, through the target's HTTP client (retries, backoff)."""
        if self._crm is None:
            self._crm = CrmInvoices(
                self._target.connector.client,
                page_size=int(self.config.get("page_size", 5000)),
            )
        return self._crm

    @property
    def ledger(self) -> Ledger:
        """The ledger the operations come from and their outcomes go to."""
        return self._target.ledger

    @property
    def outcomes(self) -> Counter[str]:
        """Counts per outcome for the run's statistics."""
        return self._target.outcomes

    @property
    def follow_ups_on(self) -> bool:
        """Whether overdue invoices get a follow-up task (setting ``followup_tasks``)."""
        return bool(self.config.get("followup_tasks", True))

    def process_record(self, record: dict[str, Any], context: dict[str, Any]) -> None:
        """Queue the operation for the next batch."""
        context.setdefault("records", []).append(record)

    def process_batch(self, context: dict[str, Any]) -> None:
        """Apply the batch's operations one by one, each outcome recorded before the next."""
        records: list[dict[str, Any]] = context.get("records", [])
        if not records:
            return
        try:
            self._process(records)
        except Exception:
            self._target.finish_run("failed")
            raise

    def _process(self, records: list[dict[str, Any]]) -> None:
        try:
            self.crm.check_custom_fields()
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, None)) from exc
            raise
        batch = _Batch(accounts={})
        for record in records:
            try:
                operation = InvoiceOperation.from_record(record)
            except (ValidationError, KeyError, TypeError, ValueError) as exc:
                self._reject_malformed(record, exc)
                continue
            self._record(operation, self._apply_safely(operation, batch))

    # -- one operation ------------------------------------------------------------------------

    def _apply_safely(self, operation: InvoiceOperation, batch: _Batch) -> Outcome:
        try:
            return self._apply(operation, batch)
        except NotMirrorableError as exc:
            return Outcome(
                "refused",
                f"ERP {operation.label} cannot be mirrored in the CRM: {exc}. It stays in the "
                "ERP only.",
                field="total_amount",
            )
        except CrmApiError as exc:
            if exc.status in {401, 403}:
                raise CrmAccessError(self._access_message(exc, operation)) from exc
            if exc.status == 400:
                return self._refusal(operation, exc)
            if exc.status == 404 and operation.action == "create":
                # Not a passing failure: retrying would fail the same way at every run.
                return Outcome(
                    "refused",
                    f"{operation.label}: its client's account is no longer in BottleCRM "
                    "(deleted there), so the invoice cannot be shown to the advisor; it stays "
                    "in the ERP only. Re-create the client in the CRM to mirror it.",
                    field="client_crm_id",
                )
            if exc.status == 404:
                return Outcome(
                    "failed",
                    f"{operation.label}: the CRM invoice is no longer in BottleCRM (deleted?); "
                    "the next CRM scan records it and the plan decides what follows.",
                )
            return Outcome("failed", f"{operation.label}: {exc} It is tried again at the next run.")
        except CrmUnavailableError as exc:
            self.ledger.record_failed(operation.id, message=f"{operation.label}: {exc}")
            self.outcomes["failed"] += 1
            raise CrmStoppedError(
                f"{exc} Stopped at {operation.label}; it and the operations after it stay "
                "pending for the next run."
            ) from exc

    def _apply(self, operation: InvoiceOperation, batch: _Batch) -> Outcome:
        invoice = operation.invoice
        if operation.action not in {"create", "update", "cancel"}:
            return Outcome(
                "refused",
                f"{operation.label}: target-bottlecrm does not {operation.action} invoices.",
            )
        if not invoice.erp_id:
            return Outcome(
                "refused",
                f"{operation.label}: only ERP invoices are mirrored in the CRM; this one has no "
                "ERP id.",
                field="erp_id",
            )
        fields = set(operation.changed_fields)
        done: list[str] = []
        wrote = False
        if operation.action == "create" or not invoice.crm_id:
            if not invoice.client_crm_id:
                return Outcome(
                    "failed",
                    f"{operation.label}: its client has no CRM account yet; it is planned "
                    "again once the client is in the CRM.",
                )
            row = self._find(invoice, batch)
            if row is None:
                row = self._create(invoice, batch)
                done.append("created")
                wrote = True
            else:
                done.append(f"found CRM invoice {row['id']} after a lost answer")
            fields = set(ALL_FIELDS)
        else:
            row = self.crm.invoice(invoice.crm_id)
            if not (row.get("custom_fields") or {}).get("erp_ref"):
                # A draft the advisor wrote in the CRM, now an ERP invoice: it becomes that
                # invoice's mirror, every ERP figure written at once.
                done.append("now mirrors the ERP invoice made from it")
                fields = set(ALL_FIELDS)
            frozen = sorted(FROZEN_FIELDS & fields)
            if frozen and row.get("status") != "Draft":
                self.logger.info(
                    "%s: %s changed in the ERP, but an issued CRM invoice keeps its lines and "
                    "amounts; the ERP's figures are in its custom fields",
                    operation.label,
                    " and ".join(frozen),
                )
        wrote = self._converge(row, invoice, fields, done) or wrote
        row = self.crm.invoice(str(row["id"]))
        if self.follow_ups_on and needs_follow_up(invoice) and row.get("account"):
            account = self._account(str(row["account"]["id"]), batch)
            if ensure_follow_up(self.crm, invoice, account):
                done.append("follow-up task created")
                wrote = True
        stored = Invoice.model_validate(canonical_invoice(row)).data()
        return Outcome(
            "applied",
            ", ".join(done) or "already up to date",
            account_id=str(row["id"]),
            stored={name: stored.get(name) for name in operation.changed_fields},
            wrote=wrote,
        )

    def _find(self, invoice: Invoice, batch: _Batch) -> dict[str, Any] | None:
        """The CRM invoice already mirroring ``invoice`` (an earlier answer was lost), if any.

        Mirrors add up to the ERP's total, so only invoices with that total are read in full.
        """
        if batch.listed is None:
            batch.listed = self.crm.invoices()
        total = invoice.total_amount
        for listed in batch.listed:
            if total is None or _decimal(listed.get("total_amount")) != total:
                continue
            row = self.crm.invoice(str(listed["id"]))
            if (row.get("custom_fields") or {}).get("erp_ref") == invoice.erp_id:
                self.logger.info(
                    "ERP invoice %s is already mirrored as CRM invoice %s; adopting it",
                    invoice.erp_id,
                    row["id"],
                )
                return row
        return None

    def _create(self, invoice: Invoice, batch: _Batch) -> dict[str, Any]:
        """A Draft mirror of ``invoice`` on its client's account, without the customer's email."""
        lines = mirror_lines(invoice)
        assert invoice.client_crm_id is not None  # checked by _apply
        account = self._account(invoice.client_crm_id, batch)
        contact = account.contact_id or self._add_contact(account)
        number = invoice.number or f"ERP {invoice.erp_id}"
        body: dict[str, Any] = {
            "invoice_title": f"Invoice {number}"[:100],
            "account_id": account.id,
            "contact_id": contact,
            "currency": invoice.currency,
            "tax_rate": "0",
            "reminder_enabled": False,
            "notes": f"Mirror of ERP invoice {number}: the ERP's figures are in its custom fields.",
            "line_items": lines,
            "custom_fields": mirror_custom_fields(invoice),
        }
        if invoice.invoice_date:
            body["issue_date"] = invoice.invoice_date.isoformat()
        if invoice.due_date:
            body["due_date"] = invoice.due_date.isoformat()
            body["payment_terms"] = "CUSTOM"
        if invoice.order_crm_id:
            body["opportunity_id"] = invoice.order_crm_id
        row = self.crm.create(body)
        if batch.listed is not None:
            batch.listed.append(row)
        return row

    def _add_contact(self, account: AccountView) -> str:
        """A contact for an account that has none (BottleCRM bills an invoice to a contact)."""
        contact = self.crm.create_contact(
            {
                "first_name": "Accounts",
                "last_name": account.name[:255] or "payable",
                "account": account.id,
                "description": (
                    "Created by Coulisse: a CRM invoice needs a contact. It has no email, so "
                    "no invoice is ever emailed to it."
                ),
            }
        )
        account.contacts.append({"id": contact, "created_at": ""})
        self.logger.info("Account %s had no contact: created contact %s", account.id, contact)
        return contact

    def _account(self, account_id: str, batch: _Batch) -> AccountView:
        assert batch.accounts is not None
        if account_id not in batch.accounts:
            batch.accounts[account_id] = self.crm.account(account_id)
        return batch.accounts[account_id]

    def _converge(
        self, row: dict[str, Any], invoice: Invoice, fields: set[str], done: list[str]
    ) -> bool:
        """Steps 2 to 5: bring the CRM invoice to the ERP's state; True when it wrote."""
        invoice_id = str(row["id"])
        wrote = False
        body = self._differences(row, invoice, fields)
        if body:
            self.crm.update(invoice_id, body)
            keys = {*body, *body.get("custom_fields", {})} - {"custom_fields"}
            done.append("wrote " + ", ".join(sorted(keys)))
            wrote = True
        status = row.get("status")
        if status == "Draft" and invoice.state not in {"draft", "cancelled"}:
            if row.get("client_email"):
                # An advisor's draft that became this ERP invoice: BottleCRM will not blank its
                # customer email, and sending would email the customer a second invoice. It
                # stays a Draft mirroring the ERP's figures; payments still reach it.
                self.logger.info(
                    "Invoice %s: CRM invoice %s has a customer email BottleCRM cannot blank, so "
                    "it is not sent (that would email the customer); it stays a Draft carrying "
                    "the ERP's number, state and amounts",
                    invoice.number,
                    invoice_id,
                )
            else:
                self.crm.send(invoice_id)
                done.append("sent (no email: it has no customer email)")
                status = "Sent"
                wrote = True
        if status != "Cancelled" and ({"payments", "state"} & fields):
            current = self.crm.invoice(invoice_id) if wrote else row
            paid = self._payments(current, invoice)
            if paid:
                done.append(paid)
                wrote = True
        if invoice.state == "cancelled" and status != "Cancelled":
            self.crm.cancel(invoice_id)
            done.append("cancelled")
            wrote = True
        return wrote

    def _differences(
        self, row: Mapping[str, Any], invoice: Invoice, fields: set[str]
    ) -> dict[str, Any]:
        """A partial PUT body: the custom fields and dates of ``fields`` that differ, and
        reminders off on a mirror that has a customer email."""
        custom = row.get("custom_fields") or {}
        wanted = mirror_custom_fields(
            invoice, sorted({*fields, "erp_id"} & {*MIRROR_HOMES, "erp_id"})
        )
        changed = {key: value for key, value in wanted.items() if not _same(custom.get(key), value)}
        body: dict[str, Any] = {"custom_fields": changed} if changed else {}
        if row.get("client_email") and row.get("reminder_enabled"):
            # A CRM draft that became an ERP invoice keeps its customer email (BottleCRM will
            # not blank it): its reminders go off before a payment can make it Partially_Paid,
            # a status BottleCRM sends reminders for. The ERP reminds the customer, not the CRM.
            body["reminder_enabled"] = False
        for name, key in (("invoice_date", "issue_date"), ("due_date", "due_date")):
            value = getattr(invoice, name)
            if name in fields and value is not None and str(row.get(key)) != value.isoformat():
                body[key] = value.isoformat()
        return body

    def _payments(self, row: Mapping[str, Any], invoice: Invoice) -> str:
        """Make the CRM's payments the ERP's (step 4); what was done, in words."""
        invoice_id = str(row["id"])
        wanted = _wanted_payments(invoice)
        wanted_refs = {payment.reference for payment in wanted}
        current = list(row.get("payments") or [])
        removed = 0
        seen: set[str] = set()
        for payment in current:
            ref = str(payment.get("reference_number") or "")
            if ref in wanted_refs and ref not in seen:
                seen.add(ref)
                continue
            self.crm.delete_payment(invoice_id, str(payment["id"]))
            removed += 1
        amount_due = _decimal(row.get("amount_due"))
        if removed:
            amount_due = _decimal(self.crm.invoice(invoice_id).get("amount_due"))
        added = 0
        for payment in wanted:
            if payment.reference in seen:
                continue
            amount = payment.amount
            if amount_due is not None:
                amount = min(amount, amount_due)
            if amount <= 0:
                self.logger.warning(
                    "%s: payment %s of %s is not recorded in the CRM: nothing is left due there",
                    invoice.number,
                    payment.reference,
                    payment.amount,
                )
                continue
            amount_due = self.crm.pay(
                invoice_id,
                {
                    "amount": str(amount.quantize(CENT)),
                    "payment_date": payment.payment_date.isoformat(),
                    "payment_method": "OTHER",
                    "reference_number": payment.reference,
                    "notes": f"Recorded in the ERP on invoice {invoice.number}.",
                },
            )
            added += 1
        parts = [f"{added} payment(s) added"] if added else []
        if removed:
            parts.append(f"{removed} payment(s) the ERP no longer has removed")
        return ", ".join(parts)

    # -- outcomes -----------------------------------------------------------------------------

    def _refusal(self, operation: InvoiceOperation, exc: CrmApiError) -> Outcome:
        errors = field_errors(exc)
        if not errors:
            return Outcome(
                "refused",
                f"{operation.label}: BottleCRM refused {exc.method} {exc.path}: "
                f"{exc.detail.rstrip('.')}. Correct it in the ERP or the CRM; it is tried "
                "again once the ERP invoice changes.",
            )
        reasons = "; ".join(f"{key}: {message.rstrip('.')}" for key, message in errors.items())
        return Outcome(
            "refused",
            f"{operation.label}: BottleCRM refused {reasons}. Correct it in the ERP or the CRM; "
            "it is tried again once the ERP invoice changes.",
            field=next(iter(errors)).removeprefix("custom_fields."),
        )

    def _access_message(self, exc: CrmApiError, operation: InvoiceOperation | None) -> str:
        return access_message(
            exc,
            operation.label if operation else None,
            admin_token(INVOICE_SCOPES),
        )

    def _reject_malformed(self, record: Mapping[str, Any], exc: Exception) -> None:
        self._books.reject_malformed(record, exc)

    def _record(self, operation: InvoiceOperation, outcome: Outcome) -> None:
        self._books.record(operation.id, operation.label, outcome, outcome.account_id)

    @property
    def _books(self) -> Bookkeeping:
        return Bookkeeping(self.ledger, self.outcomes, self.logger, "invoice", "invoice")


def _wanted_payments(invoice: Invoice) -> list[Payment]:
    """The payments the CRM should show: the ERP's, plus what settles an invoice the ERP calls
    paid without payments covering its total (a write-off, a settlement by credit note)."""
    wanted = [payment for payment in invoice.payments if payment.amount > 0 and payment.reference]
    if invoice.state == "paid" and invoice.total_amount is not None:
        short = invoice.total_amount - sum((p.amount for p in wanted), Decimal(0))
        if short > 0:
            day = max((p.payment_date for p in wanted), default=None) or invoice.invoice_date
            wanted.append(
                Payment(
                    payment_date=day or dt.datetime.now(dt.UTC).date(),
                    amount=short,
                    reference=f"{invoice.number or invoice.erp_id}: settled in the ERP",
                )
            )
    return wanted


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(current, bool):
        return bool(current) == bool(wanted) and current is not None
    left = None if current is None else str(current).strip() or None
    right = None if wanted is None else str(wanted).strip() or None
    return left == right


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None
