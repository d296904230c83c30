"""Stack pieces that need no running system: settings, .env handling, seed data, HTTP retries."""

from __future__ import annotations

import stat
import threading
from datetime import date
from decimal import Decimal

import pytest
import requests
import responses
from stdnum.fr import siren as siren_number
from stdnum.fr import tva

from coulisse.bottlecrm.client import BottleCrmClient, CrmApiError, CrmUnavailableError
from coulisse.stack.envfile import read_env_file, update_env_file
from coulisse.stack.errors import StackError
from coulisse.stack.layout import StackLayout
from coulisse.stack.pythons import find_python312
from coulisse.stack.seed_data import SAMPLE_CATALOGUE, build_seed_data
from coulisse.stack.settings import StackSettings


def _layout(tmp_path) -> StackLayout:
    return StackLayout.from_env(
        {"COULISSE_STACK_HOME": str(tmp_path / "home"), "COULISSE_ENV_FILE": str(tmp_path / "e")}
    )


def test_env_file_update_keeps_other_lines_and_stays_private(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# mine\nOTHER=1\nBOTTLECRM_API_TOKEN=old\n")
    update_env_file(path, {"BOTTLECRM_API_TOKEN": "new", "TRYTON_URL": "http://x"})
    assert path.read_text().splitlines() == [
        "# mine",
        "OTHER=1",
        "BOTTLECRM_API_TOKEN=new",
        "TRYTON_URL=http://x",
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path)["BOTTLECRM_API_TOKEN"] == "new"


def test_env_file_updates_from_parallel_threads_are_all_kept(tmp_path):
    path = tmp_path / ".env"

    def write(n: int) -> None:
        for round_ in range(5):
            update_env_file(path, {f"KEY_{n}": f"value-{n}-{round_}"})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_env_file(path) == {f"KEY_{n}": f"value-{n}-4" for n in range(8)}


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"COULISSE_CRM_PORT": "eighty"}, "COULISSE_CRM_PORT"),
        ({"COULISSE_ERP_PORT": "80"}, "COULISSE_ERP_PORT"),
        ({"COULISSE_CRM_PORT": "9000", "COULISSE_ERP_PORT": "9000"}, "COULISSE_ERP_PORT"),
        ({"COULISSE_STACK_DATABASE_URL": "mysql://x"}, "COULISSE_STACK_DATABASE_URL"),
        ({"COULISSE_STACK_NAME": "my-stack"}, "COULISSE_STACK_NAME"),
    ],
)
def test_config_mistakes_name_the_setting(tmp_path, env, names):
    with pytest.raises(StackError, match=names):
        StackSettings.load(_layout(tmp_path), env)


def test_settings_defaults_to_sqlite(tmp_path):
    settings = StackSettings.load(_layout(tmp_path), {})
    assert not settings.uses_postgres
    assert settings.crm_url == "http://127.0.0.1:8600"
    assert settings.erp_database == "coulisse_demo_erp"


def test_missing_python312_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("COULISSE_PYTHON312", "/nonexistent/python3.12")
    with pytest.raises(StackError, match="COULISSE_PYTHON312"):
        find_python312()


def test_seed_data_is_deterministic_and_covers_the_first_day():
    today = date(2026, 11, 26)
    data = build_seed_data(SAMPLE_CATALOGUE, clients=40, today=today)
    assert data == build_seed_data(SAMPLE_CATALOGUE, clients=40, today=today)
    assert data != build_seed_data(SAMPLE_CATALOGUE, clients=40, seed=1, today=today)
    crm_only = [c for c in data.clients if c.in_crm and not c.in_erp]
    erp_only = [c for c in data.clients if c.in_erp and not c.in_crm]
    both = [c for c in data.clients if c.in_crm and c.in_erp]
    assert crm_only
    assert erp_only
    assert both
    # Accents in names, phones in several formats, broken identifiers, near-duplicates.
    assert any(ch in "éèêàçôÉ" for c in data.clients for ch in c.name)
    assert len({c.phone[:3] for c in data.clients}) >= 3
    assert any(c.vat and not tva.is_valid(c.vat) for c in crm_only)
    assert any(c.siren and not siren_number.is_valid(c.siren) for c in crm_only)
    assert any(c.duplicate_of for c in crm_only)
    # Whatever reaches the ERP holds valid identifiers (Tryton refuses invalid ones).
    for client in [*erp_only, *both]:
        assert client.vat
        assert tva.is_valid(client.vat)
        assert client.siren
        assert siren_number.is_valid(client.siren)
    states = {invoice.state for invoice in data.invoices}
    assert states == {"draft", "posted", "partially_paid", "paid", "overdue", "cancelled"}
    for invoice in data.invoices:
        assert data.clients[invoice.client_index].in_erp
        if invoice.state == "overdue":
            assert invoice.due_date < today
    assert any(d.won for d in data.deals)
    assert any(not d.won for d in data.deals)
    assert all(isinstance(line.unit_price, Decimal) for d in data.deals for line in d.lines)


@responses.activate
def test_crm_client_honours_retry_after_then_succeeds():
    url = "http://crm.test/api/accounts/"
    responses.get(url, status=429, headers={"Retry-After": "0"})
    responses.get(url, status=503)
    responses.get(url, json={"amount": 12.30})
    client = BottleCrmClient("http://crm.test", "bcrm_pat_x", backoff=0)
    assert client.get("accounts/") == {"amount": Decimal("12.30")}
    assert client.calls["read"] == 3
    assert responses.calls[0].request.headers["Authorization"] == "Bearer bcrm_pat_x"


@responses.activate
def test_crm_client_gives_up_with_a_message_after_timeouts():
    url = "http://crm.test/api/accounts/"
    responses.get(url, body=requests.ConnectTimeout("slow"))
    client = BottleCrmClient("http://crm.test", "t", backoff=0, max_attempts=2)
    with pytest.raises(CrmUnavailableError, match="did not answer GET accounts/ after 2"):
        client.get("accounts/")


@responses.activate
def test_crm_client_reports_a_malformed_body():
    responses.get("http://crm.test/api/accounts/", body="<html>oops</html>")
    client = BottleCrmClient("http://crm.test", "t", backoff=0)
    with pytest.raises(CrmApiError, match="not JSON"):
        client.get("accounts/")


@responses.activate
def test_crm_client_refusal_names_the_fix():
    responses.get("http://crm.test/api/leads/", status=401, json={"detail": "Invalid token."})
    client = BottleCrmClient("http://crm.test", "t", backoff=0)
    with pytest.raises(CrmApiError, match="BOTTLECRM_API_TOKEN"):
        client.get("leads/")
