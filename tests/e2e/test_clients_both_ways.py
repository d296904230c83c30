"""Clients both ways through the real CRM and ERP: `coulisse sync` as an operator runs it."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from stdnum import luhn
from stdnum.fr import siren as siren_number

from coulisse.bottlecrm.client import CrmApiError
from coulisse.ledger import Ledger
from coulisse.project import ledger_url
from coulisse.sync import SyncResult, sync
from coulisse.tryton.references import crm_reference

if TYPE_CHECKING:
    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.tryton.rpc import TrytonClient
    from tests.conftest import LiveStack

pytestmark = [pytest.mark.live, pytest.mark.e2e]


def _accounts(crm: BottleCrmClient) -> list[dict[str, Any]]:
    payload = crm.get("accounts/", limit=100000)
    return [
        *payload["active_accounts"]["open_accounts"],
        *payload["closed_accounts"]["close_accounts"],
    ]


def _parties(erp: TrytonClient, domain: list[Any] | None = None) -> list[dict[str, Any]]:
    return erp.search_read(
        "party.party",
        domain or [],
        ["name", "active", "identifiers", "write_date", "create_date"],
        context={"active_test": False},
    )


def _identifiers(erp: TrytonClient, party_ids: list[int]) -> list[dict[str, Any]]:
    return erp.search_read(
        "party.identifier", [("party", "in", party_ids)], ["party", "type", "code"]
    )


@pytest.fixture(scope="module")
def first_sync(live: LiveStack) -> SyncResult:
    """The first day: both systems seeded, nothing linked yet."""
    return sync(("client",))


def test_first_day_links_same_vat_clients_instead_of_duplicating(live: LiveStack, first_sync):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    names = [a["name"].lower() for a in _accounts(crm)]
    assert len(names) == len(set(names)), "no account created twice in the CRM"
    parties = _parties(erp)
    identifiers = _identifiers(erp, [p["id"] for p in parties])
    vats = [i["code"] for i in identifiers if i["type"] == "eu_vat"]
    assert len(vats) == len(set(vats)), "no VAT twice in the ERP: same-VAT clients were linked"
    assert first_sync.plan is not None
    assert first_sync.plan.linked > 0


def test_valid_crm_clients_reach_the_erp_normalised(live: LiveStack, first_sync):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    parties = _parties(erp)
    refs = {
        i["code"]: i["party"]
        for i in _identifiers(erp, [p["id"] for p in parties])
        if i["code"].startswith("bottlecrm:")
    }
    created_from_crm = [a for a in _accounts(crm) if crm_reference(a["id"]) in refs]
    assert created_from_crm, "CRM-only clients were created in the ERP with their reference"
    phones = erp.search_read(
        "party.contact_mechanism",
        [("party", "in", list(refs.values())), ("type", "in", ["phone", "mobile"])],
        ["value"],
    )
    assert phones
    assert all(p["value"].startswith("+33") for p in phones), "phones in international form"


def test_bad_records_wait_in_quarantine_with_a_reason(live: LiveStack, first_sync):
    ledger = Ledger.open(ledger_url())
    try:
        quarantined = ledger.quarantined()
    finally:
        ledger.close()
    texts = " | ".join(q.message for q in quarantined)
    assert "check digits do not match" in texts
    erp = live.stack.erp.client()
    broken = [a for a in _accounts(live.stack.crm.client()) if a["phone"] == "01 23 45"]
    assert broken
    refs = [crm_reference(a["id"]) for a in broken]
    assert not erp.search("party.identifier", [("code", "in", refs)]), "never loaded silently"


def test_erp_only_clients_appear_in_the_crm_with_their_status(live: LiveStack, first_sync):
    crm = live.stack.crm.client()
    mirrored = [a for a in _accounts(crm) if (a.get("custom_fields") or {}).get("erp_ref")]
    assert mirrored
    with_balance = [a for a in mirrored if a["custom_fields"].get("erp_balance_due")]
    assert with_balance, "ERP-owned status is mirrored on the account"
    assert all(a["custom_fields"]["erp_balance_due"].endswith(" EUR") for a in with_balance)


def test_a_second_run_with_no_change_writes_nothing(live: LiveStack, first_sync):
    erp = live.stack.erp.client()
    before = {p["id"]: p["write_date"] for p in _parties(erp)}
    accounts_before = len(_accounts(live.stack.crm.client()))
    again = sync(("client",))
    assert again.applied == {}
    assert again.plan is not None
    assert again.plan.sides["crm"].total == 0
    assert again.plan.sides["erp"].total == 0
    assert {p["id"]: p["write_date"] for p in _parties(erp)} == before
    assert len(_accounts(live.stack.crm.client())) == accounts_before


def test_changes_flow_both_ways_and_deletes_deactivate(live: LiveStack, first_sync):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    # A new client typed in the CRM, with identifiers no other test has used (the target tests
    # write fixed ones into the same live systems).
    body = f"{uuid.uuid4().int % 90_000_000 + 10_000_000}"
    siren = body + luhn.calc_check_digit(body)
    vat = str(siren_number.to_tva(siren))
    vat = vat if vat.startswith("FR") else f"FR{vat}"
    name = f"Ferronnerie Nouvelle {uuid.uuid4().hex[:6]} SARL"
    new_id = crm.post(
        "accounts/",
        {
            "name": name,
            "email": "contact@ferronnerie.example",
            "phone": "04 72 10 20 30",
            "address_line": "3 rue Mercière",
            "postcode": "69002",
            "city": "Lyon",
            "country": "FR",
            "custom_fields": {"vat": vat, "siren": siren},
        },
    )["id"]
    # Its invoice address corrected by accounting in the ERP, for a client already linked.
    by_party = {
        int(a["custom_fields"]["erp_ref"]): a
        for a in _accounts(crm)
        if a["is_active"] and (a.get("custom_fields") or {}).get("erp_ref")
    }
    address = erp.search_read(
        "party.address", [("party", "in", list(by_party))], ["id", "party"], limit=1
    )[0]
    linked = by_party[address["party"]]
    erp.write("party.address", [address["id"]], {"street": "12 quai Saint-Antoine"})
    # A client deleted in the CRM: an active one (an inactive client is already inactive in the
    # ERP, so deleting it changes nothing there).
    # A client the sync linked, active in both systems (other tests leave accounts whose ERP
    # reference names a party of their own). The CRM refuses to delete an account holding
    # invoices (409): take one without.
    active = [a for a in _accounts(crm) if a["is_active"] and a["id"] != linked["id"]]
    ledger = Ledger.open(ledger_url())
    try:
        links = ledger.links_for("client", "crm", [a["id"] for a in active])
    finally:
        ledger.close()
    party_ids = [int(link.erp_key) for link in links.values() if link.erp_key]
    # Only parties that exist (other tests' ledgers may hold links to ids of their own).
    parties = erp.search_read(
        "party.party", [("id", "in", party_ids)], ["active"], context={"active_test": False}
    )
    live_parties = {str(p["id"]) for p in parties if p["active"]}
    candidates = [
        a
        for a in active
        if a["id"] in links
        and links[a["id"]].erp_key in live_parties
        and (a.get("custom_fields") or {}).get("erp_ref") == links[a["id"]].erp_key
    ]
    for doomed in candidates:
        try:
            crm.delete(f"accounts/{doomed['id']}/")
        except CrmApiError as exc:
            if exc.status != 409:
                raise
            continue
        break
    else:
        raise AssertionError("no linked CRM account could be deleted")

    sync(("client",))

    created = erp.search("party.identifier", [("code", "=", crm_reference(new_id))])
    assert len(created) == 1, "the new CRM client exists once in the ERP"
    account = crm.get(f"accounts/{linked['id']}/")["account_obj"]
    assert account["address_line"] == "12 quai Saint-Antoine"
    (gone,) = erp.read("party.party", [int(doomed["custom_fields"]["erp_ref"])], ["active"])
    assert gone["active"] is False, "a CRM deletion deactivates the ERP client"


def test_a_field_changed_on_both_sides_becomes_a_conflict(live: LiveStack, first_sync):
    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    linked = {
        int(a["custom_fields"]["erp_ref"]): a
        for a in _accounts(crm)
        if a["is_active"] and (a.get("custom_fields") or {}).get("erp_ref")
    }
    addresses = erp.search_read(
        "party.address", [("party", "in", list(linked))], ["id", "party"], order=[("id", "DESC")]
    )
    address = addresses[0]
    account = linked[address["party"]]
    crm.patch(f"accounts/{account['id']}/", {"city": "Villeurbanne"})
    erp.write("party.address", [address["id"]], {"city": "Vénissieux"})

    result = sync(("client",))
    assert result.plan is not None
    assert result.plan.conflicts >= 1
    ledger = Ledger.open(ledger_url())
    try:
        conflicts = [c for c in ledger.conflicts() if c.field == "billing_city"]
    finally:
        ledger.close()
    assert conflicts, "the conflict waits for a person"
    # The manual policy changes neither side.
    assert crm.get(f"accounts/{account['id']}/")["account_obj"]["city"] == "Villeurbanne"
    (after,) = erp.read("party.address", [address["id"]], ["city"])
    assert after["city"] == "Vénissieux"


def test_clerks_see_the_quarantine_and_the_review_list(live: LiveStack, first_sync):
    from typer.testing import CliRunner

    from coulisse.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["quarantine", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {"vat", "siren", "phone"} <= {row["field"] for row in rows}
    assert all(row["message"] for row in rows)
    refused = runner.invoke(app, ["links", "decide", "999999", "--same"])
    assert refused.exit_code == 1
    assert "coulisse links review" in refused.output


def test_a_probable_duplicate_waits_for_a_person_then_is_linked(live: LiveStack, first_sync):
    from typer.testing import CliRunner

    from coulisse.cli import app

    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    tag = uuid.uuid4().hex[:5]
    # The same bakery typed in both systems, without VAT or SIREN: only name and postcode agree.
    (france,) = erp.search("country.country", [("code", "=", "FR")])
    (party_id,) = erp.create(
        "party.party",
        [
            {
                "name": f"Boulangerie Gérard {tag}",
                "addresses": [
                    [
                        "create",
                        [
                            {
                                "street": "8 rue Neuve",
                                "postal_code": "69001",
                                "city": "Lyon",
                                "country": france,
                            }
                        ],
                    ]
                ],
            }
        ],
    )
    account_id = crm.post(
        "accounts/",
        {
            "name": f"BOULANGERIE GERARD {tag} SARL",
            "postcode": "69001",
            "city": "Lyon",
            "country": "FR",
            "address_line": "8 rue Neuve",
        },
    )["id"]

    sync(("client",))
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["links", "review", "--json"]).output)
    (item,) = [r for r in listed["twins"] if r["crm_key"] == account_id]
    assert item["erp_key"] == str(party_id)
    assert not erp.search("party.identifier", [("code", "=", crm_reference(account_id))]), (
        "a probable duplicate is never created on the other side while it waits"
    )

    decided = runner.invoke(app, ["links", "decide", str(item["id"]), "--same"])
    assert decided.exit_code == 0, decided.output
    sync(("client",))
    account = crm.get(f"accounts/{account_id}/")["account_obj"]
    assert account["custom_fields"].get("erp_ref") == str(party_id)
    assert len([a for a in _accounts(crm) if tag in a["name"].lower()]) == 1
    assert len(erp.search("party.party", [("name", "ilike", f"%{tag}%")])) == 1


def test_a_wrong_link_is_undone_and_never_made_again(live: LiveStack, first_sync):
    from typer.testing import CliRunner

    from coulisse.cli import app

    crm, erp = live.stack.crm.client(), live.stack.erp.client()
    tag = uuid.uuid4().hex[:5]
    # Two different clients that a person linked by mistake.
    account_id = crm.post(
        "accounts/",
        {"name": f"Librairie Vautrin {tag}", "postcode": "33000", "city": "Bordeaux"},
    )["id"]
    (party_id,) = erp.create("party.party", [{"name": f"Garage Lemoine {tag}"}])
    runner = CliRunner()
    linked = runner.invoke(app, ["links", "link", account_id, str(party_id)])
    assert linked.exit_code == 0, linked.output
    sync(("client",))
    account = crm.get(f"accounts/{account_id}/")["account_obj"]
    assert account["custom_fields"].get("erp_ref") == str(party_id)
    assert erp.search("party.identifier", [("code", "=", crm_reference(account_id))])

    undone = runner.invoke(app, ["links", "unlink", account_id, "--yes"])

    assert undone.exit_code == 0, undone.output
    assert "CRM reference cleared, ERP reference deleted" in undone.output
    account = crm.get(f"accounts/{account_id}/")["account_obj"]
    assert not account["custom_fields"].get("erp_ref"), "the CRM no longer names the party"
    assert not erp.search("party.identifier", [("code", "=", crm_reference(account_id))])
    again = runner.invoke(app, ["links", "unlink", account_id, "--yes"])
    assert again.exit_code == 1
    assert "names no client link" in again.output

    sync(("client",))

    account = crm.get(f"accounts/{account_id}/")["account_obj"]
    new_party = account["custom_fields"].get("erp_ref")
    assert new_party
    assert new_party != str(party_id), "the account got a twin of its own"
    (twin,) = erp.search("party.identifier", [("code", "=", crm_reference(account_id))])
    (identifier,) = erp.read("party.identifier", [twin], ["party"])
    assert identifier["party"] == int(new_party)
    ledger = Ledger.open(ledger_url())
    try:
        party_link = ledger.links_for("client", "erp", [str(party_id)]).get(str(party_id))
    finally:
        ledger.close()
    assert party_link is None or party_link.crm_key != account_id, "never linked again"
