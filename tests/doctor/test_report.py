"""The doctor's report and its judgements, on data alone (no system needed)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from coulisse.doctor.crm import CrmFacts
from coulisse.doctor.erp import ErpFacts, fiscal_year_verdict
from coulisse.doctor.local import ledger_checks, meltano_checks
from coulisse.doctor.mapping import currency_verdict, mapping_checks
from coulisse.doctor.report import Check, DoctorReport
from coulisse.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]


def _year(name: str, start: dt.date, end: dt.date, state: str = "open") -> dict[str, object]:
    return {"name": name, "start_date": start, "end_date": end, "state": state}


Y2026 = _year("2026", dt.date(2026, 1, 1), dt.date(2026, 12, 31))
Y2027 = _year("2027", dt.date(2027, 1, 1), dt.date(2027, 12, 31))


def test_exit_code_is_1_only_when_a_check_failed():
    report = DoctorReport()
    report.add(Check("crm", "API", "ok", "answers"))
    report.add(Check("ledger", "run lock", "warning", "held by x"))
    assert report.exit_code == 0
    report.add(Check("erp", "login", "failed", "refused", "check TRYTON_PASSWORD"))
    assert report.exit_code == 1
    assert report.counts() == {"ok": 1, "warning": 1, "failed": 1}
    assert [c.name for c in report.failed] == ["login"]


def test_json_carries_every_check_and_what_was_fixed():
    report = DoctorReport([Check("crm", "token", "failed", "refused", "set BOTTLECRM_API_TOKEN")])
    report.fixed.append("custom fields re-activated: Task.coulisse_ref")
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["ok"] is False
    assert payload["fixed"] == ["custom fields re-activated: Task.coulisse_ref"]
    assert payload["checks"] == [
        {
            "area": "crm",
            "name": "token",
            "status": "failed",
            "found": "refused",
            "fix": "set BOTTLECRM_API_TOKEN",
        }
    ]


def test_text_groups_by_area_shows_fixes_and_escapes_markup():
    report = DoctorReport(
        [
            Check("crm", "scope tasks", "failed", "no write [tasks:write]", "mint a token"),
            Check("crm", "won stages", "ok", "1 won stage(s)"),
            Check("erp", "login", "ok", "logs in"),
        ]
    )
    lines = report.rich_lines()
    assert lines[0] == "[bold]CRM[/]"
    assert sum(line.startswith("[bold]") and line.endswith("[/]") for line in lines) == 2
    assert any(r"\[tasks:write]" in line for line in lines)
    assert any("mint a token" in line for line in lines)
    assert "not ready" in lines[-1]
    assert "1 failed" in lines[-1]
    assert "-> mint a token" in report.checks[0].line()


def test_find_names_a_check_that_did_not_run():
    with pytest.raises(KeyError, match="erp: fiscal year"):
        DoctorReport().find("erp", "fiscal year")


@pytest.mark.parametrize(
    ("rows", "today", "status", "words"),
    [
        ([Y2026], dt.date(2026, 6, 1), "ok", "is open"),
        ([], dt.date(2026, 6, 1), "failed", "no fiscal year covers today (2026-06-01)"),
        ([Y2026], dt.date(2027, 1, 2), "failed", "no fiscal year covers today"),
        ([{**Y2026, "state": "closed"}], dt.date(2026, 6, 1), "failed", "is closed"),
        ([Y2026], dt.date(2026, 12, 10), "warning", "none follows it"),
        ([Y2026, Y2027], dt.date(2026, 12, 10), "ok", "is open"),
    ],
)
def test_fiscal_year_verdict(rows, today, status, words):
    verdict, found, fix = fiscal_year_verdict(rows, today)
    assert verdict == status
    assert words in found
    assert (fix is None) == (status == "ok")


def test_an_erp_currency_the_crm_lacks_fails():
    status, found, fix = currency_verdict(CrmFacts(["USD", "EUR"], [], True), ErpFacts("XOF", []))
    assert status == "failed"
    assert "XOF" in found
    assert fix


def test_a_deal_currency_tryton_lacks_is_a_warning():
    status, found, _fix = currency_verdict(
        CrmFacts(["USD", "EUR"], ["EUR", "USD"], True), ErpFacts("EUR", ["EUR"])
    )
    assert status == "warning"
    assert "USD" in found
    assert "EUR," not in found


def test_currencies_are_not_judged_when_a_system_was_unreadable():
    report = DoctorReport()
    mapping_checks(CrmFacts(), ErpFacts("EUR", ["EUR"]), report)
    assert report.find("mapping", "currencies").status == "warning"


def test_the_projects_meltano_yml_passes():
    report = DoctorReport()
    meltano_checks(report)
    assert {c.name: c.status for c in report.checks} == {"meltano.yml": "ok", "plugins": "ok"}


def test_a_plugin_not_installed_fails(tmp_path: Path):
    document = (ROOT / "meltano.yml").read_text(encoding="utf-8")
    meltano_yml = tmp_path / "meltano.yml"
    meltano_yml.write_text(
        document.replace("executable: tap-tryton", "executable: tap-tryton-nowhere"),
        encoding="utf-8",
    )
    report = DoctorReport()
    meltano_checks(report, meltano_yml)
    plugins = report.find("meltano", "plugins")
    assert plugins.status == "failed"
    assert "tap-tryton-nowhere" in plugins.found
    assert plugins.fix is not None
    assert "make venv" in plugins.fix


def test_a_broken_meltano_yml_fails(tmp_path: Path):
    meltano_yml = tmp_path / "meltano.yml"
    meltano_yml.write_text("plugins: [unclosed\n", encoding="utf-8")
    report = DoctorReport()
    meltano_checks(report, meltano_yml)
    assert report.find("meltano", "meltano.yml").status == "failed"


def test_an_unmigrated_ledger_is_a_warning_and_fix_migrates_it(tmp_path: Path):
    env = {"COULISSE_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}"}
    report = DoctorReport()
    ledger_checks(env, report)
    assert report.find("ledger", "database").status == "warning"
    fixed = DoctorReport()
    ledger_checks(env, fixed, fix=True)
    assert fixed.find("ledger", "database").status == "ok"
    assert fixed.find("ledger", "run lock").status == "ok"
    assert fixed.fixed
    assert "migrated" in fixed.fixed[0]


def test_a_held_lock_is_named(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    ledger = Ledger.open(url)
    ledger.acquire_lock("worker-7")
    ledger.close()
    report = DoctorReport()
    ledger_checks({"COULISSE_LEDGER_URL": url}, report)
    lock = report.find("ledger", "run lock")
    assert lock.status == "warning"
    assert "worker-7" in lock.found


def test_a_missing_ledger_url_fails_naming_it():
    report = DoctorReport()
    ledger_checks({}, report)
    check = report.find("ledger", "database")
    assert check.status == "failed"
    assert "COULISSE_LEDGER_URL" in check.found
