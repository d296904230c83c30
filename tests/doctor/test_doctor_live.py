"""`coulisse doctor` against the test stack's live BottleCRM and Tryton.

Faults are made real where the systems allow it: a wrong token, a deactivated custom field,
tokens minted through the CRM's own models with a scope less or for a non-admin profile, a
Tryton user without access groups. Only the calendar is moved (``today=``) to show a date no
fiscal year covers, since closing the sandbox's fiscal year would break every other test.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from coulisse.bottlecrm.client import BottleCrmClient
from coulisse.bottlecrm.custom_fields import ensure_custom_fields, existing_definitions
from coulisse.doctor import run_doctor
from coulisse.ledger import Ledger
from coulisse.project import ledger_url, project_env
from coulisse.stack.crm import ADVISORS, INTEGRATION_EMAIL, ORG_NAME, TOKEN_SCOPES

if TYPE_CHECKING:
    from tests.conftest import LiveStack

pytestmark = pytest.mark.live

MINT = """
import json, sys
import django
django.setup()
from django.utils import timezone
from common.models import PersonalAccessToken, Profile
spec = json.load(sys.stdin)
profile = Profile.objects.get(user__email=spec["email"], org__name=spec["org"])
PersonalAccessToken.objects.filter(
    profile=profile, name=spec["name"], revoked_at__isnull=True
).update(revoked_at=timezone.now())
raw = None
if spec["scopes"]:
    raw, _ = PersonalAccessToken.generate(profile, spec["name"], scopes=spec["scopes"])
print(json.dumps({"token": raw}))
"""


def _mint(live: LiveStack, email: str, scopes: list[str]) -> str | None:
    """A personal access token of ``email``'s profile, made inside the CRM (none: revoke)."""
    crm = live.stack.crm
    spec = {"email": email, "org": ORG_NAME, "name": "coulisse-doctor-test", "scopes": scopes}
    result = subprocess.run(
        [str(crm.venv / "bin" / "python"), "-c", MINT],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=crm._django_env(crm._database_name()),
        cwd=crm.layout.log_dir,
        check=True,
    )
    token: str | None = json.loads(result.stdout.strip().splitlines()[-1])["token"]
    return token


@pytest.fixture
def env(live: LiveStack) -> dict[str, str]:
    """The settings as the sync reads them, with the ledger migrated as any sync leaves it."""
    settings = project_env()
    Ledger.open(ledger_url(settings)).close()
    return settings


def _statuses(report: Any) -> dict[str, str]:
    return {f"{c.area}: {c.name}": c.status for c in report.checks}


def test_the_sandbox_passes_every_check(env: dict[str, str]):
    report = run_doctor(env)
    statuses = _statuses(report)
    today = dt.datetime.now(dt.UTC).date()
    if today.month == 12:  # the stack makes this year's and last year's fiscal years only
        statuses.pop("erp: fiscal year")
    assert set(statuses.values()) == {"ok"}, [c.line() for c in report.checks if c.status != "ok"]
    for expected in (
        "crm: token",
        "crm: admin role",
        "crm: scope invoices/products",
        "crm: scope custom-fields",
        "crm: custom fields",
        "crm: won stages",
        "erp: access rights",
        "erp: company",
        "erp: payment method",
        "erp: customer taxes",
        "mapping: currencies",
        "ledger: database",
        "ledger: run lock",
        "meltano: plugins",
    ):
        assert expected in statuses
    assert report.exit_code == 0


def test_the_command_prints_json_and_exits_0(env: dict[str, str]):
    import typer

    from coulisse.doctor.cli import doctor

    app = typer.Typer()
    app.command()(doctor)
    result = CliRunner().invoke(app, ["--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True
    assert payload["counts"]["failed"] == 0
    assert {"area", "name", "status", "found", "fix"} <= set(payload["checks"][0])


def test_a_wrong_token_fails_naming_the_setting(env: dict[str, str]):
    report = run_doctor({**env, "BOTTLECRM_API_TOKEN": "bcrm_pat_not-a-real-token"})
    token = report.find("crm", "token")
    assert token.status == "failed"
    assert "BOTTLECRM_API_TOKEN" in token.found
    assert token.fix is not None
    assert "BOTTLECRM_API_TOKEN" in token.fix
    assert report.exit_code == 1
    # the ERP is still checked, and passes
    assert report.find("erp", "login").status == "ok"


def test_an_unreachable_crm_names_the_url_setting(env: dict[str, str]):
    report = run_doctor({**env, "BOTTLECRM_API_URL": "http://127.0.0.1:9"})
    api = report.find("crm", "API")
    assert api.status == "failed"
    assert api.fix is not None
    assert "BOTTLECRM_API_URL" in api.fix


def test_a_deactivated_custom_field_fails_then_fix_repairs_it(env: dict[str, str]):
    client = BottleCrmClient(env["BOTTLECRM_API_URL"], env["BOTTLECRM_API_TOKEN"])
    row = existing_definitions(client)[("Opportunity", "erp_sale_state")]
    client.delete(f"custom-fields/{row['id']}/")  # BottleCRM's delete only deactivates
    try:
        broken = run_doctor(env)
        fields = broken.find("crm", "custom fields")
        assert fields.status == "failed"
        assert "Opportunity.erp_sale_state deactivated" in fields.found
        assert fields.fix is not None
        assert "--fix" in fields.fix
        assert broken.exit_code == 1

        fixed = run_doctor(env, fix=True)
        assert fixed.find("crm", "custom fields").status == "ok"
        assert any("Opportunity.erp_sale_state" in change for change in fixed.fixed)

        again = run_doctor(env)
        assert again.find("crm", "custom fields").status == "ok"
        assert again.fixed == []
    finally:
        ensure_custom_fields(client)


def test_a_token_missing_a_scope_fails_that_root(live: LiveStack, env: dict[str, str]):
    scopes = [s for s in TOKEN_SCOPES if s != "tasks:write"]
    token = _mint(live, INTEGRATION_EMAIL, scopes)
    try:
        report = run_doctor({**env, "BOTTLECRM_API_TOKEN": str(token)})
    finally:
        _mint(live, INTEGRATION_EMAIL, [])
    tasks = report.find("crm", "scope tasks")
    assert tasks.status == "failed"
    assert "tasks:write" in tasks.found
    assert tasks.fix is not None
    assert "BOTTLECRM_API_TOKEN" in tasks.fix
    assert report.find("crm", "scope accounts").status == "ok"
    assert report.find("crm", "admin role").status == "ok"


def test_a_non_admin_token_fails_the_admin_role(live: LiveStack, env: dict[str, str]):
    advisor = ADVISORS[0]["email"]
    token = _mint(live, advisor, list(TOKEN_SCOPES))
    try:
        report = run_doctor({**env, "BOTTLECRM_API_TOKEN": str(token)})
    finally:
        _mint(live, advisor, [])
    admin = report.find("crm", "admin role")
    assert admin.status == "failed"
    assert admin.fix is not None
    assert "Admin role" in admin.fix
    # a non-admin may still write deals: the scope lines stay about scopes
    assert report.find("crm", "scope opportunities").status == "ok"


def test_a_wrong_erp_password_fails_naming_the_settings(env: dict[str, str]):
    report = run_doctor({**env, "TRYTON_PASSWORD": "wrong-password"})
    login = report.find("erp", "login")
    assert login.status == "failed"
    assert login.fix is not None
    assert "TRYTON_PASSWORD" in login.fix
    assert report.exit_code == 1


def test_an_erp_user_without_groups_fails_access_rights(live: LiveStack, env: dict[str, str]):
    admin = live.stack.erp.admin_client()
    login, password = "coulisse_doctor_no_groups", "No-groups-at-all-42!"
    if not admin.search("res.user", [("login", "=", login)]):
        admin.create("res.user", [{"login": login, "name": "No groups", "password": password}])
    report = run_doctor({**env, "TRYTON_USERNAME": login, "TRYTON_PASSWORD": password})
    access = report.find("erp", "access rights")
    assert access.status == "failed"
    assert "cannot read account.invoice" in access.found
    assert "cannot create or write sale.sale" in access.found
    assert access.fix is not None
    assert "Sales" in access.fix
    assert login in access.fix


def test_a_day_no_fiscal_year_covers_fails(env: dict[str, str]):
    report = run_doctor(env, today=dt.date(2040, 1, 15))
    year = report.find("erp", "fiscal year")
    assert year.status == "failed"
    assert "2040-01-15" in year.found
    assert year.fix is not None
    assert "Fiscal Years" in year.fix


def test_the_run_lock_holder_is_named(env: dict[str, str]):
    ledger = Ledger.open(ledger_url(env))
    try:
        assert ledger.acquire_lock("doctor-test@host:42")
        report = run_doctor(env)
    finally:
        ledger.release_lock("doctor-test@host:42")
        ledger.close()
    lock = report.find("ledger", "run lock")
    assert lock.status == "warning"
    assert "doctor-test@host:42" in lock.found
    assert report.exit_code == 0
