"""The local stack as a user meets it: real HTTP to the test stack's live BottleCRM and Tryton."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from stdnum.fr import tva

from coulisse.bottlecrm.client import BottleCrmClient, CrmApiError
from coulisse.bottlecrm.custom_fields import COULISSE_FIELDS, existing_definitions
from coulisse.stack.crm import CrmStack
from coulisse.stack.crm_seed import existing_accounts
from coulisse.stack.envfile import read_env_file
from coulisse.stack.errors import StackError
from coulisse.stack.layout import StackLayout
from coulisse.stack.seed_data import build_seed_data
from coulisse.stack.seeding import erp_catalogue, seed_stack
from coulisse.stack.settings import StackSettings
from coulisse.tryton.rpc import TrytonClient, TrytonError
from tests.conftest import SEED_CLIENTS, LiveStack

pytestmark = pytest.mark.live


def _seed_data(live: LiveStack):
    catalogue = erp_catalogue(live.stack)
    return build_seed_data(catalogue, clients=SEED_CLIENTS, today=datetime.now(UTC).date())


# -- credentials and their limits ------------------------------------------------------------


def test_both_apis_answer_with_the_integration_credentials(live: LiveStack):
    status = live.stack.status()
    for system in ("crm", "erp"):
        assert status[system]["running"], status[system]
        assert status[system]["credentials_ok"], status[system]
    assert status["crm"]["counts"]["accounts"] > 0
    assert status["erp"]["counts"]["parties"] > 0


def test_crm_token_is_refused_outside_its_scopes(live: LiveStack):
    client = live.stack.crm.client()
    with pytest.raises(CrmApiError) as leads:
        client.get("leads/")
    assert leads.value.status == 403
    assert "leads:read" in leads.value.detail
    # No token may manage credentials or webhooks, whatever its scopes.
    for path in ("profile/tokens/", "webhooks/", "org/api-key/"):
        with pytest.raises(CrmApiError) as refused:
            client.get(path)
        assert refused.value.status in {401, 403}, path


def test_crm_token_belongs_to_an_org_admin(live: LiveStack):
    # Custom-field definitions are admin-only: the integration profile reads them all.
    definitions = existing_definitions(live.stack.crm.client())
    for spec in COULISSE_FIELDS:
        row = definitions[(spec.target_model, spec.key)]
        assert row["field_type"] == spec.field_type
        assert row["is_active"]


def test_wrong_crm_token_is_refused_with_a_fix(live: LiveStack):
    client = BottleCrmClient(live.stack.settings.crm_url, "bcrm_pat_not-a-real-token")
    with pytest.raises(CrmApiError) as refused:
        client.get("accounts/", limit=1)
    assert refused.value.status in {401, 403}
    assert "BOTTLECRM_API_TOKEN" in str(refused.value)


def test_erp_user_cannot_write_users(live: LiveStack):
    client = live.stack.erp.client()
    assert client.login() > 0, "the integration user logs in"
    assert client.context.get("company"), "and works in the demo company"
    ids = client.search("res.user", [("login", "=", "admin")])
    assert ids, "res.user is readable by every user"
    with pytest.raises(TrytonError):
        client.write("res.user", ids, {"name": "Hacked"})


def test_erp_refuses_invoices_to_a_user_outside_accounting(live: LiveStack):
    admin = live.stack.erp.admin_client()
    login = "coulisse_test_no_accounting"
    password = "Not-an-accountant-42!"
    existing = admin.search("res.user", [("login", "=", login)])
    if not existing:
        admin.create("res.user", [{"login": login, "name": "No accounting", "password": password}])
    outsider = TrytonClient(
        live.stack.settings.erp_url, live.stack.settings.erp_database, login, password
    )
    outsider.login()
    # Parties have no access rule in Tryton: everyone reads them.
    assert outsider.search_count("party.party", []) > 0
    with pytest.raises(TrytonError):
        outsider.search_read("account.invoice", [], ["number"])
    # The integration user, in the accounting groups, reads them.
    assert live.stack.erp.client().search_count("account.invoice", []) > 0


def test_wrong_erp_password_is_refused(live: LiveStack):
    settings = live.stack.settings
    client = TrytonClient(settings.erp_url, settings.erp_database, "coulisse", "wrong-password")
    with pytest.raises(TrytonError):
        client.login()


# -- seed ------------------------------------------------------------------------------------


def test_seed_put_the_promised_clients_in_the_crm(live: LiveStack):
    data = _seed_data(live)
    client = live.stack.crm.client()
    accounts = existing_accounts(client)
    expected = {c.name.lower() for _, c in data.crm_clients}
    assert expected <= set(accounts)
    assert not {c.name.lower() for c in data.clients if not c.in_crm} & set(accounts)
    rows = client.get("accounts/", limit=1000)["active_accounts"]["open_accounts"]
    vats = {str(r["name"]).lower(): (r.get("custom_fields") or {}).get("vat") for r in rows}
    broken = [c for _, c in data.crm_clients if c.vat and not tva.is_valid(c.vat)]
    assert broken, "the seed holds CRM clients with a broken VAT"
    for seed_client in broken:
        assert vats[seed_client.name.lower()] == seed_client.vat
    assert any(any(ch in "éèàçÉ" for ch in name) for name in accounts)


def test_seed_gave_the_crm_the_erp_catalogue_and_deals(live: LiveStack):
    data = _seed_data(live)
    client = live.stack.crm.client()
    skus = {r["sku"] for r in client.get("invoices/products/", limit=1000)["results"]}
    assert {p.code for p in data.products} <= skus
    deals = client.get("opportunities/", limit=1000)["opportunities"]
    won = [d for d in deals if d["stage"] == live.stack.won_stage()]
    assert len(won) == sum(d.won for d in data.deals)
    assert len(deals) - len(won) == sum(not d.won for d in data.deals)
    detail = client.get(f"opportunities/{won[0]['id']}/")["opportunity_obj"]
    assert detail["line_items"], "won deals carry their line items"
    assert Decimal(str(detail["amount"])) > 0


def test_seed_put_invoices_in_every_state_in_the_erp(live: LiveStack):
    data = _seed_data(live)
    erp = live.stack.erp.client()
    rows = erp.search_read(
        "account.invoice",
        [("reference", "like", "SEED-INV-%")],
        ["reference", "state", "total_amount", "amount_to_pay", "invoice_date"],
    )
    by_ref = {r["reference"]: r for r in rows}
    today = datetime.now(UTC).date()
    assert len(by_ref) == len(data.invoices)
    for invoice in data.invoices:
        row = by_ref[invoice.key]
        total, due = Decimal(row["total_amount"]), Decimal(row["amount_to_pay"])
        if invoice.state == "draft":
            assert row["state"] == "draft"
        elif invoice.state == "cancelled":
            assert row["state"] == "cancelled"
        elif invoice.state == "paid":
            assert row["state"] == "paid"
        elif invoice.state == "partially_paid":
            assert row["state"] == "posted"
            assert 0 < due < total
        else:  # posted and overdue: open for their whole amount
            assert row["state"] == "posted"
            assert due == total
            if invoice.state == "overdue":
                assert row["invoice_date"] + timedelta(days=30) < today


def test_seed_put_only_erp_clients_in_the_erp_with_valid_identifiers(live: LiveStack):
    data = _seed_data(live)
    erp = live.stack.erp.client()
    names = {r["name"] for r in erp.search_read("party.party", [], ["name"])}
    for _, seed_client in data.erp_clients:
        assert (seed_client.erp_name or seed_client.name) in names
    for seed_client in data.clients:
        if not seed_client.in_erp:
            assert seed_client.name not in names


def test_second_seed_creates_nothing(live: LiveStack):
    before = live.stack.status()
    report = seed_stack(live.stack, clients=SEED_CLIENTS)
    assert report["crm"]["accounts_created"] == 0
    assert report["crm"]["deals_created"] == 0
    assert report["crm"]["products_created"] == 0
    after = live.stack.status()
    assert after["crm"]["counts"] == before["crm"]["counts"]
    assert after["erp"]["counts"] == before["erp"]["counts"]


# -- lifecycle -------------------------------------------------------------------------------


def test_a_dropdown_missing_coulisse_values_gets_them_and_keeps_its_own(live: LiveStack):
    from coulisse.bottlecrm.custom_fields import ensure_custom_fields

    crm = live.stack.crm.client()
    definition = existing_definitions(crm)[("Invoice", "erp_state")]
    # An older Coulisse (or an admin) left the dropdown without "partially_paid", with a value
    # of the admin's own.
    options = definition["options"]
    assert isinstance(options, list)
    narrowed = [o for o in options if o["value"] != "partially_paid"]
    crm.put(
        f"custom-fields/{definition['id']}/",
        {"options": [*narrowed, {"value": "disputed", "label": "Disputed"}]},
    )
    report = ensure_custom_fields(crm)
    assert report.extended == ["Invoice.erp_state"]
    after = existing_definitions(crm)[("Invoice", "erp_state")]["options"]
    assert isinstance(after, list)
    assert {"partially_paid", "disputed"} <= {o["value"] for o in after}
    assert not ensure_custom_fields(crm).changed, "a second run changes nothing"


def test_stack_up_twice_is_harmless(live: LiveStack):
    stack = live.stack
    pids = (stack.crm.process.pid(), stack.erp.process.pid())
    env_before = read_env_file(stack.layout.env_file)
    counts = stack.status()["crm"]["counts"]
    stack.up()
    assert (stack.crm.process.pid(), stack.erp.process.pid()) == pids
    assert read_env_file(stack.layout.env_file) == env_before
    assert stack.status()["crm"]["counts"] == counts


def test_down_then_up_keeps_data(live: LiveStack):
    stack = live.stack
    before = stack.status()
    stopped = stack.down()
    assert stopped == {"crm": True, "erp": True}
    assert not stack.crm.is_running()
    assert not stack.erp.is_running()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.settings.crm_url}/api/", timeout=2)
    assert stack.down() == {"crm": False, "erp": False}
    after = stack.up()
    assert after["crm"]["counts"] == before["crm"]["counts"]
    assert after["erp"]["counts"] == before["erp"]["counts"]


def test_status_json_for_scripts(live: LiveStack):
    result = subprocess.run(
        [sys.executable, "-m", "coulisse.cli", "stack", "status", "--json"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["crm"]["running"]
    assert report["erp"]["credentials_ok"]
    token = read_env_file(live.stack.layout.env_file)["BOTTLECRM_API_TOKEN"]
    assert token.startswith("bcrm_pat_")
    assert token not in result.stdout + result.stderr, "secrets are never printed"


def test_a_taken_port_gets_a_clear_message(tmp_path):
    layout = StackLayout.from_env(
        {"COULISSE_STACK_HOME": str(tmp_path / "h"), "COULISSE_ENV_FILE": str(tmp_path / "env")}
    )
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = StackSettings.load(layout, {"COULISSE_CRM_PORT": str(port)})
        with pytest.raises(StackError, match=f"port {port} is already in use.*COULISSE_CRM_PORT"):
            CrmStack(layout, settings).start()
