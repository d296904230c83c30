"""`coulisse status`, `conflicts` and `quarantine show|retry|dismiss`, on a real ledger file."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from coulisse.cli import app
from coulisse.ledger import Ledger
from tests.core.test_planner import DUPONT, World, _linked_pair

if TYPE_CHECKING:
    from pathlib import Path

runner = CliRunner()


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """A ledger the commands find through .env, as on an operator's machine."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env_file = tmp_path / ".env"
    env_file.write_text(f"COULISSE_LEDGER_URL={url}\n")
    monkeypatch.setenv("COULISSE_ENV_FILE", str(env_file))
    return Ledger.open(url)


def _broken_vat_client(world: World) -> None:
    world.put("crm", "client", "a9", **{**DUPONT, "name": "Fromagerie Martin", "vat": "FR123"})
    world.observe("crm")
    world.plan()


def test_status_counts_what_waits_and_shows_freshness(ledger: Ledger) -> None:
    world = World(ledger)
    _linked_pair(world)
    _broken_vat_client(world)
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["waiting"]["quarantined_records"] == 1
    assert report["waiting"]["open_conflicts"] == 0
    clients = {row["side"]: row for row in report["freshness"] if row["entity"] == "client"}
    assert clients["crm"]["records"] == 2
    assert clients["erp"]["records"] == 1
    assert clients["crm"]["last_observed_at"] is not None
    assert report["runs"][0]["kind"] == "plan"
    text = runner.invoke(app, ["status"])
    assert text.exit_code == 0, text.output
    assert "1 record(s) in quarantine" in text.output


def test_a_quarantined_record_is_shown_retried_and_dismissed(ledger: Ledger) -> None:
    world = World(ledger)
    _broken_vat_client(world)
    shown = runner.invoke(app, ["quarantine", "show", "a9"])
    assert shown.exit_code == 0, shown.output
    assert "VAT FR123" in shown.output
    assert "Fromagerie Martin" in shown.output, "the record as the CRM holds it"
    # Retried unchanged: released now, held again by the next plan with today's reason.
    retried = runner.invoke(app, ["quarantine", "retry", "a9"])
    assert retried.exit_code == 0, retried.output
    assert ledger.quarantined() == []
    world.plan()
    (held,) = ledger.quarantined()
    assert held.source_key == "a9"
    # Dismissed: off the list, and not checked again until it changes.
    dismissed = runner.invoke(app, ["quarantine", "dismiss", "a9", "--side", "crm"])
    assert dismissed.exit_code == 0, dismissed.output
    world.plan()
    assert ledger.quarantined() == []
    # Fixed at the source later, it is checked like any change and synced.
    world.put("crm", "client", "a9", vat=None)
    world.observe("crm")
    summary = world.plan()
    assert summary.sides["erp"].creates == 1


def test_retrying_a_record_not_in_quarantine_says_where_to_look(ledger: Ledger) -> None:
    result = runner.invoke(app, ["quarantine", "retry", "nope"])
    assert result.exit_code == 1
    assert "coulisse quarantine list" in result.output


def test_a_conflict_is_listed_then_resolved_from_the_command_line(ledger: Ledger) -> None:
    world = World(ledger)
    _linked_pair(world)
    erp_key = next(iter(world.systems["erp"]["client"]))
    world.put("crm", "client", "a1", billing_street="14 rue de la Paix")
    world.put("erp", "client", erp_key, billing_street="12 bis rue de la Paix")
    world.observe("crm")
    world.observe("erp")
    world.plan()
    listed = runner.invoke(app, ["conflicts", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    (conflict,) = json.loads(listed.output)
    assert conflict["field"] == "billing_street"
    assert (conflict["crm_key"], conflict["erp_key"]) == ("a1", erp_key)
    resolved = runner.invoke(app, ["conflicts", "resolve", str(conflict["id"]), "--take", "erp"])
    assert resolved.exit_code == 0, resolved.output
    world.plan()
    (operation,) = ledger.pending_operations("crm")
    assert operation.payload["billing_street"] == "12 bis rue de la Paix"
    again = runner.invoke(app, ["conflicts", "resolve", str(conflict["id"]), "--take", "crm"])
    assert again.exit_code == 1
    assert "not open" in again.output


def test_a_person_links_twins_no_rule_found_and_finds_the_link(ledger: Ledger) -> None:
    world = World(ledger)
    # The same bakery, typed without VAT and under another name in the ERP: no rule links them.
    world.put("crm", "client", "a1", **{**DUPONT, "vat": None})
    world.put("erp", "client", "e7", **{**DUPONT, "vat": None, "name": "DUPONT PAINS ET GATEAUX"})
    world.observe("crm")
    world.observe("erp")
    linked = runner.invoke(app, ["links", "link", "a1", "e7"])
    assert linked.exit_code == 0, linked.output
    summary = world.plan()
    assert summary.sides["erp"].creates == 0
    assert summary.sides["crm"].creates == 0, "linked, so neither is created in the other system"
    found = runner.invoke(app, ["links", "find", "e7", "--json"])
    assert found.exit_code == 0, found.output
    (row,) = json.loads(found.output)
    assert (row["entity"], row["crm"], row["erp"], row["origin"]) == (
        "client",
        "a1",
        "e7",
        "manual",
    )
    refused = runner.invoke(app, ["links", "link", "a1", "e8"])
    assert refused.exit_code == 1
    assert "coulisse links find" in " ".join(refused.output.split())
    assert runner.invoke(app, ["links", "find", "nobody"]).exit_code == 1
