"""ERP invoices mirrored in the CRM through the real systems, as `coulisse sync` runs it.

These tests share the live stack and ledger with the other end-to-end tests: they never assume
an empty ledger, only that the invoices they create are theirs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from coulisse.bottlecrm.money import format_money
from coulisse.sync import sync
from tests.invoicing import crm_mirrors, erp_amounts, erp_invoice, erp_pay, follow_up_tasks, today

if TYPE_CHECKING:
    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.model import Entity
    from coulisse.tryton.rpc import TrytonClient
    from tests.conftest import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.e2e]
ENTITIES: tuple[Entity, ...] = ("client", "invoice")


def _accounts(crm: BottleCrmClient) -> list[dict[str, Any]]:
    payload = crm.get("accounts/", limit=100000)
    return [
        *payload["active_accounts"]["open_accounts"],
        *payload["closed_accounts"]["close_accounts"],
    ]


@dataclass
class Scenario:
    """A linked client with an advisor, and the two ERP invoices these tests follow."""

    account: dict[str, Any]
    party: int
    #: Posted today, due in 30 days: paid in two steps by the tests.
    posted: int
    #: Due a month ago, unpaid: overdue.
    late: int


def _linked_account(crm: BottleCrmClient, erp: TrytonClient) -> tuple[dict[str, Any], int]:
    """An active CRM account linked to an ERP party with an address, and with an advisor."""
    for account in _accounts(crm):
        ref = (account.get("custom_fields") or {}).get("erp_ref")
        if not (account["is_active"] and ref and account["assigned_to"]):
            continue
        if erp.search("party.address", [("party", "=", int(ref))], limit=1):
            return account, int(ref)
    raise AssertionError("after a first sync, seeded clients both systems hold are linked")


@pytest.fixture(scope="module")
def scenario(live: LiveStack) -> Scenario:
    """A first sync (clients linked, the seed's posted invoices mirrored), then two new ERP
    invoices and the sync that mirrors them."""
    sync(ENTITIES)
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    account, party = _linked_account(crm, erp)
    posted = erp_invoice(erp, party)
    late = erp_invoice(
        erp,
        party,
        lines=(("CONS-DEMI", "1", "520"),),
        # Tryton numbers invoices in date order: the invoice is dated today, its payment term
        # runs from a month ago (posting accepts the "due date is past" warning).
        due_date=today() - dt.timedelta(days=30),
    )
    sync(ENTITIES)
    return Scenario(account=account, party=party, posted=posted, late=late)


def _mirror(crm: BottleCrmClient, erp_id: int) -> dict[str, Any]:
    (mirror,) = crm_mirrors(crm, erp_id)
    return mirror


def test_a_posted_erp_invoice_appears_once_on_its_account(live: LiveStack, scenario: Scenario):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    mirrors = crm_mirrors(crm, scenario.posted)
    assert len(mirrors) == 1, "one mirror per ERP invoice"
    (mirror,) = mirrors
    amounts = erp_amounts(erp, scenario.posted)
    assert mirror["account"]["id"] == scenario.account["id"]
    assert mirror["custom_fields"]["erp_number"] == amounts["number"]
    assert mirror["custom_fields"]["erp_state"] == "posted"
    assert mirror["custom_fields"]["erp_total"] == format_money(amounts["total_amount"], "EUR")
    assert Decimal(str(mirror["total_amount"])) == amounts["total_amount"]
    assert mirror["status"] == "Sent"
    assert mirror["client_email"] == "", "never emailed to the customer"


def test_payments_in_the_erp_move_the_mirror_to_partly_paid_then_paid(
    live: LiveStack, scenario: Scenario
):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    erp_pay(erp, scenario.posted, "300.00")
    sync(ENTITIES)
    mirror = _mirror(crm, scenario.posted)
    amounts = erp_amounts(erp, scenario.posted)
    assert mirror["status"] == "Partially_Paid"
    assert mirror["custom_fields"]["erp_state"] == "partially_paid"
    assert Decimal(str(mirror["amount_due"])) == amounts["amount_to_pay"]
    assert mirror["custom_fields"]["erp_amount_due"] == format_money(
        amounts["amount_to_pay"], "EUR"
    )

    erp_pay(erp, scenario.posted, amounts["amount_to_pay"])
    assert erp_amounts(erp, scenario.posted)["state"] == "paid"
    sync(ENTITIES)
    mirror = _mirror(crm, scenario.posted)
    assert mirror["status"] == "Paid"
    assert Decimal(str(mirror["amount_due"])) == 0
    assert mirror["custom_fields"]["erp_state"] == "paid"
    assert len(mirror["payments"]) == 2
    # The account's balance follows the payments (the clients flow mirrors it).
    (party,) = erp.read("party.party", [scenario.party], ["receivable"])
    account = crm.get(f"accounts/{scenario.account['id']}/")["account_obj"]
    assert account["custom_fields"]["erp_balance_due"] == format_money(party["receivable"], "EUR")


def test_a_back_dated_unpaid_invoice_is_overdue_with_one_follow_up_task(
    live: LiveStack, scenario: Scenario
):
    crm = live.stack.crm.client()
    mirror = _mirror(crm, scenario.late)
    assert mirror["custom_fields"]["erp_overdue"] is True
    assert mirror["custom_fields"]["erp_state"] == "posted"
    (task,) = follow_up_tasks(crm, scenario.account["id"], scenario.late)
    advisors = sorted(p["id"] for p in scenario.account["assigned_to"])
    assert sorted(p["id"] for p in task["assigned_to"]) == advisors
    assert mirror["custom_fields"]["erp_number"] in task["title"]

    sync(ENTITIES)
    assert len(follow_up_tasks(crm, scenario.account["id"], scenario.late)) == 1


def test_a_second_run_with_no_change_writes_nothing(live: LiveStack, scenario: Scenario):
    crm = live.stack.crm.client()
    before = {row["id"]: row for row in crm.get("invoices/", limit=100000)["results"]}
    again = sync(ENTITIES)
    assert again.applied == {}
    assert again.plan is not None
    assert again.plan.sides["crm"].total == 0
    assert again.plan.sides["erp"].total == 0
    after = {row["id"]: row for row in crm.get("invoices/", limit=100000)["results"]}
    assert after == before
