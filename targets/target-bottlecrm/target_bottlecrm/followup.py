"""One CRM follow-up task per overdue invoice, for the advisor of the invoice's account.

BottleCRM's answer to a task creation carries no id, so the task is marked with the Task custom
field ``coulisse_ref`` (``overdue:<ERP invoice id>``) and looked for before creating: the
account's detail lists its tasks with their custom fields, read once per batch. A rerun, or a
second change to the same overdue invoice, finds the task and creates none.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from coulisse.bottlecrm.money import format_money

if TYPE_CHECKING:
    from coulisse.model import Invoice
    from target_bottlecrm.crm_invoices import AccountView, CrmInvoices

log = logging.getLogger(__name__)


def follow_up_ref(invoice: Invoice) -> str:
    """The ``coulisse_ref`` of the follow-up task of an ERP invoice."""
    return f"overdue:{invoice.erp_id}"


def needs_follow_up(invoice: Invoice) -> bool:
    """An overdue invoice still to be paid (the ERP's reading)."""
    return bool(invoice.overdue) and invoice.state in {"posted", "partially_paid"}


def ensure_follow_up(crm: CrmInvoices, invoice: Invoice, account: AccountView) -> bool:
    """Create the follow-up task unless the account already has it; True when created.

    The task goes to the account's advisors; an account without one gets an unassigned task
    (and a log line), so the overdue invoice is still on someone's list.
    """
    ref = follow_up_ref(invoice)
    if ref in account.follow_ups:
        return False
    due = (
        format_money(invoice.amount_due, invoice.currency)
        if invoice.amount_due is not None and invoice.currency
        else "an amount"
    )
    since = f" since {invoice.due_date.isoformat()}" if invoice.due_date else ""
    number = invoice.number or f"ERP {invoice.erp_id}"
    if not account.advisors:
        log.info(
            "Account %s (%s) has no advisor: the follow-up task of overdue invoice %s is left "
            "unassigned",
            account.id,
            account.name,
            number,
        )
    crm.create_task(
        {
            "title": f"Follow up overdue invoice {number}: {due} due{since}"[:200],
            "status": "New",
            "priority": "High",
            "due_date": dt.datetime.now(dt.UTC).date().isoformat(),
            "account": account.id,
            "assigned_to": account.advisors,
            "description": (
                f"Invoice {number} of {account.name} is overdue in the ERP: {due} still to pay"
                f"{since}. Created by Coulisse; it is not created again for this invoice."
            ),
            "custom_fields": {"coulisse_ref": ref},
        }
    )
    account.follow_ups[ref] = ""
    return True
