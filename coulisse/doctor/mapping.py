"""Checks that need both systems: the currencies each side must know of the other's amounts.

Products and invoices go ERP -> CRM in the ERP company's currency, which must then be one of
BottleCRM's currency choices; won deals go CRM -> ERP in their own currency, which Tryton must
have (target-tryton looks it up by code and quarantines the deal otherwise).

>>> from coulisse.doctor.crm import CrmFacts
>>> from coulisse.doctor.erp import ErpFacts
>>> currency_verdict(CrmFacts(["USD", "EUR"], ["EUR"], True), ErpFacts("EUR", ["EUR"]))[0]
'ok'
>>> currency_verdict(CrmFacts(["USD", "EUR"], ["USD"], True), ErpFacts("EUR", ["EUR"]))[0]
'warning'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coulisse.doctor.report import Check, DoctorReport, Status

if TYPE_CHECKING:
    from coulisse.doctor.crm import CrmFacts
    from coulisse.doctor.erp import ErpFacts

AREA = "mapping"


def currency_verdict(crm: CrmFacts, erp: ErpFacts) -> tuple[Status, str, str | None]:
    """(status, finding, fix) of the currency mapping between the two systems."""
    company = erp.company_currency
    if company and crm.currencies and company not in crm.currencies:
        return (
            "failed",
            f"the ERP company's currency {company} is not one of BottleCRM's currencies "
            f"({', '.join(crm.currencies)}): products and invoices cannot be mirrored",
            "sync with an ERP company in one of those currencies; BottleCRM's list is fixed",
        )
    unknown = [code for code in crm.deal_currencies if code not in erp.currencies]
    if unknown:
        return (
            "warning",
            f"CRM deals use {', '.join(unknown)}, which Tryton does not have: such deals are "
            "quarantined once won",
            f"add {', '.join(unknown)} in Tryton (Currency > Currencies), or correct those "
            "deals' currency in the CRM",
        )
    used = ", ".join(crm.deal_currencies) or "no currency yet"
    return (
        "ok",
        f"ERP company in {company}, known to BottleCRM; CRM deals in {used}, known to Tryton",
        None,
    )


def mapping_checks(crm: CrmFacts, erp: ErpFacts, report: DoctorReport) -> None:
    """Add the cross-system checks, when both systems could be read."""
    if not crm.reachable or erp.company_currency is None:
        report.add(
            Check(
                AREA,
                "currencies",
                "warning",
                "not checked: the CRM or the ERP could not be read (see above)",
            )
        )
        return
    status, found, fix = currency_verdict(crm, erp)
    report.add(Check(AREA, "currencies", status, found, fix))


__all__ = ["AREA", "currency_verdict", "mapping_checks"]
