"""tap-bottlecrm against the live test CRM, and against failures a live CRM cannot show."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from typing import TYPE_CHECKING, Any

import pytest
import requests
import responses
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.testing import get_tap_test_class
from singer_sdk.testing.runners import TapTestRunner
from stdnum.fr import tva
from tap_bottlecrm.client import BottleCrmPaginator
from tap_bottlecrm.streams import CLOSED, OPEN
from tap_bottlecrm.tap import TapBottleCRM

from coulisse.stack.envfile import read_env_file
from tests.invoicing import ensure_crm_invoice
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from tests.conftest import LiveStack


def live_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {"api_url": env["BOTTLECRM_API_URL"], "api_token": env["BOTTLECRM_API_TOKEN"], **extra}


def run_tap(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the tap in-process; the RECORD messages it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        catalog = catalog_of(TapBottleCRM, config, ["clients"])
        TapBottleCRM(config=config, catalog=catalog, parse_env_config=False).sync_all()
    messages = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [m["record"] for m in messages if m["type"] == "RECORD"]


# The standard suites. The class is built at import time, before the test stack exists, so it
# gets a placeholder config; the `runner` fixture below swaps in the live one.
_StandardTests = get_tap_test_class(
    TapBottleCRM,
    config={"api_url": "http://127.0.0.1:8620", "api_token": "placeholder"},
    parse_env_config=False,  # the project's .env belongs to the demo stack, not to tests
)


@pytest.mark.live
class TestTapBottleCRMStandard(_StandardTests):  # type: ignore[misc, valid-type]
    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls, live: LiveStack) -> TapTestRunner:
        ensure_crm_invoice(live.stack.crm.client())  # the seed writes no CRM invoice
        runner = TapTestRunner(tap_class=TapBottleCRM, config=live_config(live))
        runner.sync_all()
        return runner


@pytest.mark.live
def test_every_crm_account_becomes_one_canonical_client(live: LiveStack):
    records = run_tap(live_config(live))
    ids = [r["crm_id"] for r in records]
    assert len(ids) == len(set(ids)), "no client emitted twice"
    assert len(records) == live.stack.crm.status()["counts"]["accounts"]
    assert all(r["source"] == "crm" for r in records)
    # Permissive on purpose: a broken VAT reaches the ledger, to be quarantined there.
    vats = [r["vat"] for r in records if r["vat"]]
    assert any(not tva.is_valid(v) for v in vats)
    assert any(tva.is_valid(v) for v in vats)
    assert all(r["billing_country"] == "FR" for r in records)


@pytest.mark.live
def test_only_the_requested_accounts_are_read(live: LiveStack):
    everyone = run_tap(live_config(live))
    wanted = [everyone[0]["crm_id"], everyone[-1]["crm_id"], "00000000-0000-0000-0000-000000000000"]
    records = run_tap(live_config(live, account_ids=wanted))
    assert sorted(r["crm_id"] for r in records) == sorted(wanted[:2])
    assert records[0]["name"] in {everyone[0]["name"], everyone[-1]["name"]}


ACCOUNT = {
    "id": "a1",
    "name": "Fromagerie Noël SARL",
    "email": "",
    "phone": "01 23 45 67 89",
    "is_active": True,
    "country": "FR",
    "custom_fields": {"vat": "FR40303265045", "erp_balance_due": "1200.50 EUR"},
}


def _page(accounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "active_accounts": {"open_accounts": accounts, "offset": 0},
        "closed_accounts": {"close_accounts": [], "offset": 0},
    }


@responses.activate
def test_a_429_storm_is_waited_out_honouring_retry_after():
    responses.get("http://crm.test/api/contacts/", json={"results": []})
    url = "http://crm.test/api/accounts/"
    for _ in range(3):
        responses.get(url, status=429, headers={"Retry-After": "0"})
    responses.get(url, json=_page([ACCOUNT]))
    records = run_tap({"api_url": "http://crm.test", "api_token": "t"})
    assert [r["crm_id"] for r in records] == ["a1"]
    assert len([c for c in responses.calls if str(c.request.url).startswith(url)]) == 4


@responses.activate
def test_missing_contact_details_come_from_the_primary_contact():
    responses.get(
        "http://crm.test/api/contacts/",
        json={
            "results": [
                {"account": "a1", "email": "later@x.fr", "created_at": "2026-02-01T00:00:00Z"},
                {"account": "a1", "email": "first@x.fr", "created_at": "2026-01-01T00:00:00Z"},
            ]
        },
    )
    responses.get("http://crm.test/api/accounts/", json=_page([ACCOUNT]))
    (record,) = run_tap({"api_url": "http://crm.test", "api_token": "t"})
    assert record["email"] == "first@x.fr"
    assert record["balance_due"] == 1200.5
    assert record["currency"] == "EUR"


@responses.activate
def test_a_refused_token_stops_with_a_message_naming_the_setting():
    responses.get("http://crm.test/api/contacts/", status=401, json={"detail": "Invalid token"})
    responses.get("http://crm.test/api/accounts/", status=401, json={"detail": "Invalid token"})
    with pytest.raises(Exception, match="api_token"):
        run_tap({"api_url": "http://crm.test", "api_token": "t"})


def _response(payload: dict[str, Any]) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(payload).encode()
    return response


def test_paginator_goes_on_while_either_list_fills_a_page():
    paginator = BottleCrmPaginator(2, (OPEN, CLOSED))
    full_open = _page([ACCOUNT, ACCOUNT])
    assert paginator.has_more(_response(full_open))
    closed_full = _page([ACCOUNT])
    closed_full["closed_accounts"]["close_accounts"] = [ACCOUNT, ACCOUNT]
    assert paginator.has_more(_response(closed_full))
    assert not paginator.has_more(_response(_page([ACCOUNT])))
    paginator.advance(_response(full_open))
    assert paginator.current_value == 2


@responses.activate
def test_a_targeted_read_never_claims_to_be_a_full_scan():
    """ACTIVATE_VERSION after a partial read would make the ledger delete every other client."""
    responses.get("http://crm.test/api/contacts/", json={"results": []})
    responses.get("http://crm.test/api/accounts/a1/", json={"account_obj": ACCOUNT})
    responses.get("http://crm.test/api/accounts/", json=_page([ACCOUNT]))
    config = {"api_url": "http://crm.test", "api_token": "t"}

    def message_types(extra: dict[str, Any]) -> list[str]:
        out = io.StringIO()
        with redirect_stdout(out):
            catalog = catalog_of(TapBottleCRM, {**config, **extra}, ["clients"])
            TapBottleCRM(
                config={**config, **extra}, catalog=catalog, parse_env_config=False
            ).sync_all()
        return [json.loads(line)["type"] for line in out.getvalue().splitlines() if line]

    full = message_types({})
    assert full.count("ACTIVATE_VERSION") == 2, "a full scan is opened and closed"
    assert full.index("RECORD") < len(full) - 1 - full[::-1].index("ACTIVATE_VERSION")
    assert "ACTIVATE_VERSION" not in message_types({"account_ids": ["a1"]})


@responses.activate
def test_a_full_scan_that_fails_halfway_is_never_closed():
    """Only the opening ACTIVATE_VERSION: the ledger must not take the scan as complete."""
    responses.get("http://crm.test/api/contacts/", json={"results": []})
    responses.get("http://crm.test/api/accounts/", status=403, json={"detail": "nope"})
    config = {"api_url": "http://crm.test", "api_token": "t"}
    out = io.StringIO()
    tap = TapBottleCRM(
        config=config, catalog=catalog_of(TapBottleCRM, config, ["clients"]), parse_env_config=False
    )
    with redirect_stdout(out), pytest.raises(FatalAPIError, match=r"403"):
        tap.sync_all()
    types = [json.loads(line)["type"] for line in out.getvalue().splitlines() if line]
    assert types.count("ACTIVATE_VERSION") <= 1
