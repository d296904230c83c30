"""tap-tryton against the live test ERP: canonical clients, incremental runs, failures."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import io
import json
import re
import socket
from collections import Counter, defaultdict
from contextlib import redirect_stdout
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import phonenumbers
import pytest
from singer_sdk.exceptions import FatalAPIError
from singer_sdk.testing import get_tap_test_class
from singer_sdk.testing.runners import TapTestRunner
from stdnum.fr import siren as fr_siren
from tap_tryton import client as tap_client
from tap_tryton.client import ChangeCursor
from tap_tryton.streams import overdue_amount
from tap_tryton.tap import TapTryton

from coulisse.stack.envfile import read_env_file
from coulisse.stack.seed_data import build_seed_data
from coulisse.stack.seeding import erp_catalogue
from coulisse.tryton.rpc import TrytonClient
from tests.conftest import SEED_CLIENTS
from tests.deals import ensure_erp_sale
from tests.taps.selection import catalog_of

if TYPE_CHECKING:
    from coulisse.stack.seed_data import SeedClient, SeedData
    from tests.conftest import LiveStack

E164 = re.compile(r"^\+[1-9]\d{7,14}$")
#: The seed was written seconds ago: with a day's overlap, every incremental run re-reads all
#: of it, so these tests show that rows already seen are not emitted again.
WIDE = {"overlap_seconds": 86_400}


def live_config(live: LiveStack, **extra: Any) -> dict[str, Any]:
    env = read_env_file(live.stack.layout.env_file)
    return {
        "url": env["TRYTON_URL"],
        "database": env["TRYTON_DATABASE"],
        "username": env["TRYTON_USERNAME"],
        "password": env["TRYTON_PASSWORD"],
        **extra,
    }


@dataclass
class Run:
    """What one run of the tap printed, and how many calls it made to Tryton."""

    messages: list[dict[str, Any]]
    rpc_calls: int

    @property
    def records(self) -> list[dict[str, Any]]:
        return [m["record"] for m in self.messages if m["type"] == "RECORD"]

    @property
    def state(self) -> dict[str, Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return copy.deepcopy(states[-1])

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]


def run_tap(config: dict[str, Any], state: dict[str, Any] | None = None) -> Run:
    """Run the tap in-process, as `tap-tryton --config ... --state ...` would."""
    out = io.StringIO()
    catalog = catalog_of(TapTryton, config, ["clients"])
    tap = TapTryton(config=config, catalog=catalog, state=state, parse_env_config=False)
    with redirect_stdout(out):
        tap.sync_all()
    messages = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return Run(messages, tap.streams["clients"].rpc_calls)  # type: ignore[attr-defined]


def seed_data(live: LiveStack) -> SeedData:
    return build_seed_data(
        erp_catalogue(live.stack),
        clients=SEED_CLIENTS,
        seed=live.seed_report["seed"],
        today=dt.datetime.now(dt.UTC).date(),
    )


def valid_phone(client: SeedClient) -> bool:
    return phonenumbers.is_valid_number(phonenumbers.parse(client.phone_e164))


def by_vat(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["vat"]: r for r in records if r["vat"]}


# The standard suites. The class is built at import time, before the test stack exists, so it
# gets a placeholder config; the `runner` fixture below swaps in the live one. Every standard
# test applies: none is left out.
_StandardTests = get_tap_test_class(
    TapTryton,
    config={
        "url": "http://127.0.0.1:8630",
        "database": "placeholder",
        "username": "placeholder",
        "password": "placeholder",
    },
    parse_env_config=False,  # the project's .env belongs to the demo stack, not to tests
)


@pytest.mark.live
class TestTapTrytonStandard(_StandardTests):  # type: ignore[misc, valid-type]
    @pytest.fixture(scope="class")
    @classmethod
    def runner(cls, live: LiveStack) -> TapTestRunner:
        ensure_erp_sale(live.stack.erp.client())  # the seed makes no sale
        runner = TapTestRunner(tap_class=TapTryton, config=live_config(live))
        runner.sync_all()
        return runner


# -- what a first run emits ------------------------------------------------------------------


@pytest.mark.live
def test_every_erp_client_is_emitted_once_with_its_identifiers(live: LiveStack):
    run = run_tap(live_config(live))
    records = run.records
    ids = [r["erp_id"] for r in records]
    assert len(ids) == len(set(ids)), "no client emitted twice"
    emitted = by_vat(records)
    seeded: list[SeedClient] = [client for _, client in seed_data(live).erp_clients]
    assert seeded
    for client in seeded:
        assert client.vat in emitted, f"{client.name} ({client.vat}) missing"
        record = emitted[client.vat]
        assert record["name"] == (client.erp_name or client.name)
        assert record["siren"] == client.siren
        assert fr_siren.is_valid(record["siren"]), "a SIREN is 9 digits, without spaces"
        # The ERP only holds phones it accepts as valid; it stores them spaced, we emit E.164.
        assert record["phone"] == (client.phone_e164 if valid_phone(client) else None)
        assert record["email"] == client.email
        assert record["billing_country"] == "FR"
        assert record["billing_postal_code"] == client.postal_code
        assert record["currency"] == "EUR"
        assert isinstance(record["balance_due"], int | float)
        assert record["erp_code"]
        assert record["source"] == "erp"
        assert dt.datetime.fromisoformat(record["source_updated_at"]).utcoffset() == dt.timedelta()
    assert sum(1 for r in records if r["phone"] and E164.match(r["phone"])) > len(seeded) // 2
    # The company's own party is not a client (other tests add clients of their own, so the
    # count is not the seed's).
    companies = live.stack.erp.client().search_read("company.company", [], ["party"])
    assert companies
    assert not {str(c["party"]) for c in companies} & set(ids)


@pytest.mark.live
def test_overdue_amount_and_last_invoice_date_follow_the_invoices(live: LiveStack):
    data = seed_data(live)
    erp = live.stack.erp.client()
    out = erp.search_read(
        "account.invoice",
        [("type", "=", "out")],
        ["party", "reference", "total_amount", "amount_to_pay", "state", "invoice_date"],
    )
    seeded = {row["reference"]: row for row in out if row["reference"]}
    records = run_tap(live_config(live)).records
    # Other tests share this ERP (they add invoices, and parties with a seeded VAT): a VAT
    # names a client here only when one party holds it.
    vats = Counter(r["vat"] for r in records if r["vat"])
    party_of = {r["vat"]: r["erp_id"] for r in records if r["vat"] and vats[r["vat"]] == 1}
    overdue: dict[str, Decimal] = defaultdict(Decimal)
    touched: set[str] = set()
    for invoice in data.invoices:
        party = party_of.get(data.clients[invoice.client_index].vat)
        if party is None or invoice.key not in seeded:
            continue
        row = seeded[invoice.key]
        if invoice.state == "overdue":
            if row["state"] != "posted" or row["amount_to_pay"] != row["total_amount"]:
                touched.add(party)  # paid since, by another test
            overdue[party] += row["total_amount"]
    billed: dict[str, list[dt.date]] = defaultdict(list)
    for row in out:
        if not str(row["reference"] or "").startswith("SEED-INV-"):
            touched.add(str(row["party"]))
        if row["state"] in {"posted", "paid"} and row["invoice_date"]:
            billed[str(row["party"])].append(row["invoice_date"])
    assert set(overdue) - touched, "clients with overdue invoices no other test touched"
    for record in records:
        party = record["erp_id"]
        expected = max(billed[party]).isoformat() if billed[party] else None
        assert record["last_invoice_date"] == expected, record["name"]
        if party in touched or party not in party_of.values():
            continue
        assert Decimal(str(record["overdue_amount"])) == overdue.get(party, 0), record["name"]
        if party in overdue:
            assert Decimal(str(record["balance_due"])) >= overdue[party]


# -- incremental runs ------------------------------------------------------------------------


@pytest.mark.live
def test_a_run_with_the_previous_state_emits_nothing_when_nothing_changed(live: LiveStack):
    first = run_tap(live_config(live, **WIDE))
    types = first.types()
    last_record = max(i for i, kind in enumerate(types) if kind == "RECORD")
    assert "STATE" in types[last_record:], "the cursors are written after the records"
    cursors = first.state["bookmarks"]["clients"]["cursors"]
    assert set(cursors) == {
        "party.party",
        "party.address",
        "party.contact_mechanism",
        "party.identifier",
        "account.invoice",
        "account.move.line",
    }

    second = run_tap(live_config(live, **WIDE), first.state)
    assert second.records == []
    assert second.rpc_calls <= 10
    assert run_tap(live_config(live, **WIDE), second.state).records == []


@pytest.mark.live
def test_changing_one_address_emits_exactly_that_client(live: LiveStack):
    before = run_tap(live_config(live, **WIDE))
    target = before.records[len(before.records) // 2]
    erp = live.stack.erp.client()
    (party,) = erp.read("party.party", [int(target["erp_id"])], ["addresses"])
    new_street = f"{target['billing_street']} bis"
    # Tryton leaves the party's write_date alone when an address changes.
    erp.write("party.address", [party["addresses"][0]], {"street": new_street})

    after = run_tap(live_config(live, **WIDE), before.state)
    assert [r["erp_id"] for r in after.records] == [target["erp_id"]]
    assert after.records[0]["billing_street"] == new_street
    assert after.records[0]["source_updated_at"] > target["source_updated_at"]
    assert run_tap(live_config(live, **WIDE), after.state).records == []


@pytest.mark.live
def test_a_client_whose_invoice_fell_due_since_the_last_run_is_emitted_again(live: LiveStack):
    first = run_tap(live_config(live, **WIDE))
    # As if the last run was 100 days ago: invoices due since then are now late, though
    # nothing was written in the ERP.
    state = first.state
    today = dt.date.fromisoformat(state["bookmarks"]["clients"]["overdue_as_of"])
    state["bookmarks"]["clients"]["overdue_as_of"] = (today - dt.timedelta(days=100)).isoformat()

    later = run_tap(live_config(live, **WIDE), state)
    # Other tests share this ERP (they add, pay and date invoices of their own): the clients
    # late now, whatever made them late, are emitted again, and nothing but late clients.
    late = {r["erp_id"] for r in first.records if Decimal(str(r["overdue_amount"])) > 0}
    assert late, "the seed has late invoices"
    assert late <= {r["erp_id"] for r in later.records}
    assert all(Decimal(str(r["overdue_amount"])) > 0 for r in later.records)


@pytest.mark.live
def test_only_the_requested_parties_are_read_and_the_cursors_stay(live: LiveStack):
    everyone = run_tap(live_config(live))
    wanted = [everyone.records[0]["erp_id"], int(everyone.records[-1]["erp_id"]), 999_999]
    targeted = run_tap(live_config(live, party_ids=wanted), everyone.state)
    assert sorted(r["erp_id"] for r in targeted.records) == sorted(
        [everyone.records[0]["erp_id"], everyone.records[-1]["erp_id"]]
    )
    assert targeted.records[0] in everyone.records
    cursors = everyone.state["bookmarks"]["clients"]["cursors"]
    assert targeted.state["bookmarks"]["clients"]["cursors"] == cursors


@pytest.mark.live
def test_calls_to_tryton_do_not_grow_with_the_number_of_clients(live: LiveStack):
    everyone = run_tap(live_config(live))
    ids = [r["erp_id"] for r in everyone.records]
    one = run_tap(live_config(live, party_ids=ids[:1]))
    all_of_them = run_tap(live_config(live, party_ids=ids))
    assert len(all_of_them.records) == len(ids) > 10
    assert all_of_them.rpc_calls == one.rpc_calls
    assert everyone.rpc_calls <= 10


@pytest.mark.live
def test_only_a_full_scan_announces_a_complete_version(live: LiveStack):
    config = live_config(live, emit_activate_version_messages=True, **WIDE)
    first = run_tap(config)
    incremental = run_tap(config, first.state)
    assert "ACTIVATE_VERSION" not in incremental.types(), "a partial read never deletes"

    full = run_tap({**config, "full_scan": True}, first.state)
    types = full.types()
    # Opened before the records, closed after the last one: only a closed scan may delete.
    assert types.count("ACTIVATE_VERSION") == 2
    last_record = max(i for i, kind in enumerate(types) if kind == "RECORD")
    assert types.index("ACTIVATE_VERSION") < types.index("RECORD")
    assert "ACTIVATE_VERSION" in types[last_record:]
    assert sorted(r["erp_id"] for r in full.records) == sorted(r["erp_id"] for r in first.records)
    assert run_tap(config, full.state).records == []


# -- failures --------------------------------------------------------------------------------


@pytest.mark.live
def test_a_wrong_password_stops_with_a_message_naming_the_setting(live: LiveStack):
    with pytest.raises(FatalAPIError, match="password"):
        run_tap(live_config(live, password="not-the-password"))


def test_an_unreachable_erp_stops_with_a_message_naming_the_url_setting(monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The client's retries back off for seconds; this test has no need to wait for them.
    monkeypatch.setattr(
        tap_client, "TrytonClient", functools.partial(TrytonClient, sleep=lambda _s: None)
    )
    config = {"url": f"http://127.0.0.1:{port}", "database": "d", "username": "u", "password": "p"}
    with pytest.raises(FatalAPIError, match="`url`"):
        run_tap(config)


# -- the arithmetic, without a server --------------------------------------------------------

NOON = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)


def test_a_change_committed_late_with_an_older_stamp_is_still_caught():
    cursor = ChangeCursor("party.address", overlap=dt.timedelta(minutes=5))
    assert cursor.observe([{"id": 1, "party": 10, "create_date": NOON}]) == {10}
    resumed = ChangeCursor("party.address", overlap=dt.timedelta(minutes=5))
    resumed.load(json.loads(json.dumps(cursor.to_state())))
    late = {"id": 2, "party": 20, "create_date": NOON - dt.timedelta(minutes=2)}
    written = {"id": 1, "party": 10, "create_date": NOON, "write_date": NOON + dt.timedelta(1)}
    assert resumed.observe([{"id": 1, "party": 10, "create_date": NOON}, late]) == {20}
    assert resumed.observe([written, late]) == {10}
    assert resumed.latest == NOON + dt.timedelta(1)


def test_overdue_counts_only_what_fell_due_before_today_less_partial_payments():
    today = dt.date(2026, 11, 26)

    def line(due: dt.date | None, debit: str = "0", credit: str = "0", rec: int | None = None):
        return {
            "maturity_date": due,
            "debit": Decimal(debit),
            "credit": Decimal(credit),
            "reconciliation": rec,
        }

    late = {"state": "posted", "lines_to_pay.": [line(dt.date(2026, 10, 1), "1000")]}
    due_today = {"state": "posted", "lines_to_pay.": [line(today, "400")]}
    partly_paid = {
        "state": "posted",
        "lines_to_pay.": [line(dt.date(2026, 11, 1), "600")],
        "payment_lines.": [line(None, credit="250")],
    }
    paid = {"state": "paid", "lines_to_pay.": [line(dt.date(2026, 9, 1), "900", rec=3)]}
    assert overdue_amount([late, due_today, partly_paid, paid], today) == Decimal(1350)
    assert overdue_amount([due_today], today) == 0
