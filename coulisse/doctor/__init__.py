"""`coulisse doctor`: a preflight of a customer's CRM and ERP, by probing their endpoints.

A BottleCRM token cannot read its own scopes and a Tryton user's rights are spread over
groups, so doctor asks each system what the sync will ask of it, without changing any data
(``--fix`` aside): credentials, the admin role and scopes, Coulisse's custom fields, won
stages, access rights, the company and its currency, a fiscal year open today, a payment
method, customer taxes, the currency mapping, then the ledger and the Meltano project, and
whether alerts are on (:func:`coulisse.orchestration.alerts.alert_checks`).
Settings are read exactly as the sync reads them (:func:`coulisse.project.project_env`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from coulisse.doctor.crm import CrmFacts, crm_checks
from coulisse.doctor.erp import ErpFacts, erp_checks
from coulisse.doctor.local import ledger_checks, meltano_checks
from coulisse.doctor.mapping import mapping_checks
from coulisse.doctor.report import Check, DoctorReport
from coulisse.orchestration.alerts import alert_checks
from coulisse.project import project_env

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def run_doctor(
    env: Mapping[str, str] | None = None,
    *,
    fix: bool = False,
    today: dt.date | None = None,
    currency: str = "EUR",
    say: Callable[[str], None] = lambda _message: None,
) -> DoctorReport:
    """Every check, in order; an area that breaks unexpectedly is one failed check, not a crash.

    ``today`` is the date the fiscal year must cover (default: today, in UTC); ``currency`` the
    currency the ERP company is expected to keep its books in.
    """
    settings = dict(project_env() if env is None else env)
    report = DoctorReport()
    day = today or dt.datetime.now(dt.UTC).date()
    crm = CrmFacts()
    erp = ErpFacts()

    def guarded(area: str, step: Callable[[], object]) -> None:
        say(f"checking the {area}...")
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one broken area must not hide the others
            report.add(
                Check(
                    area,
                    "unexpected error",
                    "failed",
                    f"{type(exc).__name__}: {exc}",
                    "the checks of this area stopped here; fix the cause and run doctor again",
                )
            )

    def run_crm() -> None:
        nonlocal crm
        crm = crm_checks(settings, report, fix=fix)

    def run_erp() -> None:
        nonlocal erp
        erp = erp_checks(settings, report, today=day, currency=currency)

    guarded("crm", run_crm)
    guarded("erp", run_erp)
    guarded("mapping", lambda: mapping_checks(crm, erp, report))
    guarded("ledger", lambda: ledger_checks(settings, report, fix=fix))
    guarded("meltano", lambda: meltano_checks(report))
    guarded("alerts", lambda: alert_checks(settings, report))
    return report


__all__ = ["Check", "DoctorReport", "run_doctor"]
