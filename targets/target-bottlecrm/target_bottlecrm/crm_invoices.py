"""Every call target-bottlecrm makes to BottleCRM for invoices, their accounts and follow-ups.

BottleCRM facts this module lives with (read from its source, django-crm 1.35.0):

- The invoice list carries no custom fields, lines or payments: an invoice is read in full
  through its detail. Looking an invoice up by custom field (``?cf_erp_ref=``) fails on SQLite,
  so a lost answer is found again among the invoices with the same total, read in full.
- Invoices have no PATCH; their PUT is partial (custom fields are merged with the stored ones).
  ``client_email`` cannot be blanked through the API: the model's ``EmailField(default="")``
  has neither ``blank`` nor ``null``, so its serializer answers ``""`` with "This field may not
  be blank" and ``null`` with "This field may not be null"; nothing copies a contact's email
  onto an invoice either (changing the contact leaves it as it is).
- Status is read-only: Draft -> Sent through ``/send/`` (which emails the customer only when
  the invoice has a customer email), Paid or Partially_Paid through ``/payments/`` (never above
  the amount due; a Draft takes payments too, and no payment sends an email), Cancelled through
  ``/cancel/`` (refused for a Paid invoice). Payment reminders go only to Sent, Viewed,
  Partially_Paid and Overdue invoices with a customer email and ``reminder_enabled``.
- A task's creation answer carries no id; an account's detail lists its tasks with their custom
  fields, its contacts and its advisors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.custom_fields import existing_definitions
from coulisse.bottlecrm.invoices import CUSTOM_FIELD_KEYS
from target_bottlecrm.connector import CrmSetupError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from coulisse.bottlecrm.client import BottleCrmClient

#: The custom fields the invoices sink writes: BottleCRM drops unknown keys without a word.
REQUIRED_CUSTOM_FIELDS = (
    *(("Invoice", key) for key in CUSTOM_FIELD_KEYS),
    ("Task", "coulisse_ref"),
)
INVOICE_SCOPES = "invoices:read, invoices:write, accounts:read, contacts:write and tasks:write"


@dataclass
class AccountView:
    """One account as an invoice needs it: a contact to bill, advisors, Coulisse's tasks."""

    id: str
    name: str
    contacts: list[dict[str, Any]]
    advisors: list[str]
    #: Open or closed tasks Coulisse created, by their ``coulisse_ref``.
    follow_ups: dict[str, str] = field(default_factory=dict)

    @property
    def contact_id(self) -> str | None:
        """The account's first contact (by creation), the invoice's "bill to"."""
        if not self.contacts:
            return None
        first = min(self.contacts, key=lambda c: str(c.get("created_at") or ""))
        return str(first["id"])


class CrmInvoices:
    """BottleCRM's invoices, read and written through one :class:`BottleCrmClient`."""

    def __init__(self, client: BottleCrmClient, *, page_size: int = 5000) -> None:
        """Call BottleCRM through ``client``; lists are read ``page_size`` rows at a time."""
        self.client = client
        self.page_size = page_size
        self._checked = False

    def check_custom_fields(self) -> None:
        """Fail once, before any write, when a custom field the mirrors need is missing.

        Without ``erp_ref`` a lost answer could no longer be recognised, and every rerun
        would create the mirror again.
        """
        if self._checked:
            return
        definitions = existing_definitions(self.client)
        missing = [
            f"{model}.{key}"
            for model, key in REQUIRED_CUSTOM_FIELDS
            if not (definitions.get((model, key)) or {}).get("is_active", False)
        ]
        if missing:
            raise CrmSetupError(
                "BottleCRM has no active custom field "
                + ", ".join(missing)
                + "; it would silently drop those values. Create them with `coulisse doctor "
                "--fix` (locally `coulisse stack up` does it), then run again."
            )
        self._checked = True

    def invoices(self) -> list[dict[str, Any]]:
        """Every invoice as the list shows it (id, account, status, totals), oldest first."""
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.client.get(
                "invoices/", limit=self.page_size, offset=offset, sort="created_at"
            )
            rows = list(page.get("results") or [])
            found.extend(rows)
            if len(rows) < self.page_size:
                return found
            offset += self.page_size

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        """One invoice in full: lines, payments, custom fields (``CrmApiError`` 404 if gone)."""
        payload: dict[str, Any] = self.client.get(f"invoices/{invoice_id}/")["invoice"]
        return payload

    def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Draft invoice with its lines; the invoice as stored."""
        answer: dict[str, Any] = self.client.post("invoices/", dict(body))["invoice"]
        return answer

    def update(self, invoice_id: str, body: Mapping[str, Any]) -> None:
        """Change only the keys in ``body`` (BottleCRM's invoice PUT is partial)."""
        self.client.put(f"invoices/{invoice_id}/", dict(body))

    def send(self, invoice_id: str) -> None:
        """Draft -> Sent (emails the customer only if the invoice has a customer email)."""
        self.client.post(f"invoices/{invoice_id}/send/", {})

    def pay(self, invoice_id: str, body: Mapping[str, Any]) -> Decimal:
        """Record a payment; the invoice's amount due after it."""
        answer = self.client.post(f"invoices/{invoice_id}/payments/", dict(body))
        return Decimal(str(answer["invoice"]["amount_due"]))

    def delete_payment(self, invoice_id: str, payment_id: str) -> None:
        """Remove a payment the ERP no longer records."""
        self.client.delete(f"invoices/{invoice_id}/payments/{payment_id}/")

    def cancel(self, invoice_id: str) -> None:
        """Any status but Paid -> Cancelled."""
        self.client.post(f"invoices/{invoice_id}/cancel/", {})

    def account(self, account_id: str) -> AccountView:
        """An account with its contacts, advisors and the follow-up tasks Coulisse created."""
        payload = self.client.get(f"accounts/{account_id}/")
        row = payload["account_obj"]
        follow_ups = {
            str(ref): str(task["id"])
            for task in payload.get("tasks") or []
            if (ref := (task.get("custom_fields") or {}).get("coulisse_ref"))
        }
        return AccountView(
            id=str(row["id"]),
            name=str(row.get("name") or ""),
            contacts=list(payload.get("contacts") or []),
            advisors=[
                str(profile["id"])
                for profile in row.get("assigned_to") or []
                if profile.get("is_active", True)
            ],
            follow_ups=follow_ups,
        )

    def create_contact(self, body: Mapping[str, Any]) -> str:
        """Create a contact; its id."""
        return str(self.client.post("contacts/", dict(body))["id"])

    def create_task(self, body: Mapping[str, Any]) -> None:
        """Create a task (BottleCRM's answer carries no id: mark it with ``coulisse_ref``)."""
        self.client.post("tasks/", dict(body))
