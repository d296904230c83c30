"""Configuration mistakes get a message that names the setting and the fix."""

from __future__ import annotations

import pytest

from coulisse.project import ConfigError, ledger_url, sync_policy
from coulisse.sync import meltano_env, parse_only


def test_only_accepts_entities_and_stream_names():
    assert parse_only("clients") == ("client",)
    assert parse_only(" Client ") == ("client",)
    assert parse_only(None) == ("client", "product", "order", "invoice")
    assert parse_only("invoices, orders,clients,orders") == ("client", "order", "invoice")


def test_only_names_what_is_wrong():
    with pytest.raises(ConfigError, match="'customers': not an entity"):
        parse_only("customers")


def test_missing_ledger_url_says_how_to_set_it():
    with pytest.raises(ConfigError, match=r"COULISSE_LEDGER_URL is not set.*coulisse stack up"):
        ledger_url({})
    assert ledger_url({"COULISSE_LEDGER_URL": "sqlite:///x.db"}) == "sqlite:///x.db"


def test_policy_comes_from_meltano_yml(tmp_path):
    meltano_yml = tmp_path / "meltano.yml"
    meltano_yml.write_text(
        "plugins:\n  utilities:\n  - name: coulisse\n    config:\n      policy:\n"
        "        clients:\n          on_conflict: newest\n          fields:\n"
        "            email: {owner: crm, shared: true}\n"
    )
    policy = sync_policy(meltano_yml)
    assert policy.rule("client", "email").shared
    assert policy.rule("client", "balance_due").owner == "erp"


def test_a_misspelt_policy_field_names_the_section(tmp_path):
    meltano_yml = tmp_path / "meltano.yml"
    meltano_yml.write_text(
        "plugins:\n  utilities:\n  - name: coulisse\n    config:\n      policy:\n"
        "        clients:\n          fields:\n            e_mail: crm\n"
    )
    with pytest.raises(ConfigError, match="utilities > coulisse > config > policy"):
        sync_policy(meltano_yml)


def test_the_project_policy_is_valid():
    assert sync_policy().rule("client", "name").owner == "crm"


def test_meltano_runs_only_the_chosen_streams():
    env = meltano_env(("client",))
    assert env["TAP_LEDGER_ERP__SELECT_FILTER"] == '["clients"]'
    assert env["PATH"].split(":")[0].endswith(".venv/bin")
