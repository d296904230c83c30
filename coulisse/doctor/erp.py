"""Probe a Tryton database the way the sync uses it: login, access rights, accounting set-up.

Tryton says what a user may do through ``ir.model.access.get_access`` (callable over RPC by
any user), so write rights are read, never tried; reads are also tried with ``search_count``,
which record rules can narrow further. The accounting checks read what creating, quoting and
confirming a sale needs: the company and its currency, a fiscal year open today, customer
taxes on the product categories (target-tryton gives each sale line its product category's
``customer_taxes_used``, since Tryton's ``create`` runs no on-change), and a payment method for
the invoice pay wizard (the sample data and clerks use it; the sync records no payment).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coulisse.doctor.report import Check, DoctorReport, Status
from coulisse.tryton.rpc import TrytonAuthError, TrytonClient, TrytonError, TrytonUnavailableError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

AREA = "erp"
SETTINGS = ("TRYTON_URL", "TRYTON_DATABASE", "TRYTON_USERNAME", "TRYTON_PASSWORD")
USERS_SCREEN = "Tryton: Administration > Users > Users > {login} > Access Groups"
#: What the sync reads (taps) and writes (targets), with the access group that grants it.
READS: dict[str, str] = {
    "party.party": "(any user)",
    "product.product": "Product Administration or Sales",
    "sale.sale": "Sales",
    "account.invoice": "Accounting or Sales",
    "account.move.line": "Accounting",
}
WRITES: dict[str, str] = {
    "party.party": "Party Administration or Sales",
    "party.address": "Party Administration or Sales",
    "party.identifier": "Party Administration or Sales",
    "party.contact_mechanism": "Party Administration or Sales",
    "sale.sale": "Sales",
    "sale.line": "Sales",
}
#: Days before a fiscal year ends when the next one should exist.
FISCAL_YEAR_NOTICE = dt.timedelta(days=31)


@dataclass
class ErpFacts:
    """What the mapping checks need from the ERP."""

    company_currency: str | None = None
    currencies: list[str] = field(default_factory=list)


def erp_checks(
    env: Mapping[str, str],
    report: DoctorReport,
    *,
    today: dt.date,
    currency: str = "EUR",
    timeout: float = 15.0,
) -> ErpFacts:
    """Run every ERP check into ``report``; return the facts the mapping checks need."""
    facts = ErpFacts()
    missing = [name for name in SETTINGS if not env.get(name, "").strip()]
    if missing:
        report.add(
            Check(
                AREA,
                "settings",
                "failed",
                f"{', '.join(missing)} not set",
                f"set {', '.join(missing)} in the environment or .env (`coulisse stack up` "
                "writes them for the local stack); the ERP was not probed",
            )
        )
        return facts
    client = TrytonClient(
        env["TRYTON_URL"],
        env["TRYTON_DATABASE"],
        env["TRYTON_USERNAME"],
        env["TRYTON_PASSWORD"],
        timeout=timeout,
        max_retries=1,
        backoff=0.2,
    )
    if not _login(client, report):
        return facts
    _access(client, report)
    company = _company(client, report, currency, facts)
    if company is None:
        return facts
    _fiscal_year(client, report, company, today)
    _payment_method(client, report, company)
    _taxes(client, report)
    facts.currencies = sorted(
        str(row["code"]) for row in client.search_read("currency.currency", [], ["code"])
    )
    return facts


def _login(client: TrytonClient, report: DoctorReport) -> bool:
    try:
        user_id = client.login()
    except TrytonUnavailableError as exc:
        report.add(
            Check(
                AREA,
                "login",
                "failed",
                f"no answer from {client.url}: {exc}",
                "check TRYTON_URL (the server's base URL, without the database) and that "
                "trytond runs",
            )
        )
        return False
    except TrytonAuthError as exc:
        report.add(
            Check(AREA, "login", "failed", str(exc), "check TRYTON_USERNAME and TRYTON_PASSWORD")
        )
        return False
    except TrytonError as exc:
        report.add(Check(AREA, "login", "failed", str(exc), "check TRYTON_URL and TRYTON_DATABASE"))
        return False
    report.add(
        Check(
            AREA,
            "login",
            "ok",
            f"{client.username!r} logs in to {client.database!r} at {client.url} "
            f"(user id {user_id})",
        )
    )
    return True


def _allowed(access: Mapping[str, Any], *perms: str) -> bool:
    return all(bool(access.get(perm)) for perm in perms)


def _access(client: TrytonClient, report: DoctorReport) -> None:
    """The user's groups let it read what the taps read and write what the targets write."""
    models = sorted(set(READS) | set(WRITES))
    rights: dict[str, Any] = client.model_call("ir.model.access", "get_access", models)
    problems: list[str] = []
    groups: set[str] = set()
    for model, group in READS.items():
        if not _allowed(rights.get(model) or {}, "read"):
            problems.append(f"cannot read {model}")
            groups.add(group)
            continue
        try:
            client.search_count(model, [])
        except TrytonError as exc:
            problems.append(f"cannot read {model} ({exc})")
            groups.add(group)
    for model, group in WRITES.items():
        if not _allowed(rights.get(model) or {}, "create", "write"):
            problems.append(f"cannot create or write {model}")
            groups.add(group)
    if not problems:
        report.add(
            Check(
                AREA,
                "access rights",
                "ok",
                f"reads {', '.join(READS)}; creates and writes parties and sales",
            )
        )
        return
    report.add(
        Check(
            AREA,
            "access rights",
            "failed",
            f"{client.username!r} " + "; ".join(problems),
            f"add the groups {' / '.join(sorted(groups))} to the user in "
            + USERS_SCREEN.format(login=client.username),
        )
    )


def _company(
    client: TrytonClient, report: DoctorReport, currency: str, facts: ErpFacts
) -> int | None:
    company = client.context.get("company")
    if not company:
        report.add(
            Check(
                AREA,
                "company",
                "failed",
                f"{client.username!r} works in no company",
                "set the user's current company in "
                + USERS_SCREEN.format(login=client.username).replace("Access Groups", "Company"),
            )
        )
        return None
    (row,) = client.read("company.company", [int(company)], ["rec_name", "currency.code"])
    code = (row.get("currency.") or {}).get("code")
    facts.company_currency = str(code) if code else None
    name = row.get("rec_name") or f"company {company}"
    if code == currency:
        report.add(Check(AREA, "company", "ok", f"{name}, in {code}"))
    else:
        report.add(
            Check(
                AREA,
                "company",
                "warning",
                f"{name} keeps its books in {code}, not {currency}",
                f"run `coulisse doctor --currency {code}` if {code} is intended; amounts are "
                "synced in the company's currency",
            )
        )
    return int(company)


def fiscal_year_verdict(
    rows: Sequence[Mapping[str, Any]], today: dt.date
) -> tuple[Status, str, str | None]:
    """(status, finding, fix) for the company's fiscal years ``rows`` on ``today``.

    >>> year = {"name": "2026", "start_date": dt.date(2026, 1, 1),
    ...         "end_date": dt.date(2026, 12, 31), "state": "open"}
    >>> fiscal_year_verdict([year], dt.date(2026, 6, 1))[0]
    'ok'
    >>> fiscal_year_verdict([year], dt.date(2027, 1, 2))[0]
    'failed'
    """
    screen = "Tryton: Financial > Configuration > Fiscal Years > Fiscal Years"
    covering = [r for r in rows if r["start_date"] <= today <= r["end_date"]]
    if not covering:
        return (
            "failed",
            f"no fiscal year covers today ({today.isoformat()}): Tryton refuses to invoice "
            "or post anything dated today",
            f"create the fiscal year of {today.year} with its periods and invoice sequences in "
            + screen,
        )
    year = covering[0]
    if year.get("state") != "open":
        return (
            "failed",
            f"the fiscal year {year['name']} covering today is {year.get('state')}",
            f"re-open it or create an open one in {screen}",
        )
    end = year["end_date"]
    following = [r for r in rows if r["start_date"] == end + dt.timedelta(days=1)]
    if end - today < FISCAL_YEAR_NOTICE and not following:
        return (
            "warning",
            f"the fiscal year {year['name']} ends on {end.isoformat()} and none follows it",
            f"create the next fiscal year in {screen} before {end.isoformat()}",
        )
    return (
        "ok",
        f"{year['name']} ({year['start_date'].isoformat()} to {end.isoformat()}) is open",
        None,
    )


def _fiscal_year(client: TrytonClient, report: DoctorReport, company: int, today: dt.date) -> None:
    rows = client.search_read(
        "account.fiscalyear",
        [("company", "=", company)],
        ["name", "start_date", "end_date", "state"],
        order=[("start_date", "ASC")],
    )
    status, found, fix = fiscal_year_verdict(rows, today)
    report.add(Check(AREA, "fiscal year", status, found, fix))


def _payment_method(client: TrytonClient, report: DoctorReport, company: int) -> None:
    rows = client.search_read(
        "account.invoice.payment.method", [("company", "=", company)], ["name"]
    )
    if rows:
        names = ", ".join(str(row["name"]) for row in rows)
        report.add(Check(AREA, "payment method", "ok", f"{names} (for the invoice pay wizard)"))
        return
    report.add(
        Check(
            AREA,
            "payment method",
            "warning",
            "no invoice payment method: clerks cannot record payments with the pay wizard, so "
            "no invoice reaches paid (the sync itself records no payment)",
            "create one in Tryton: Financial > Configuration > Payment Methods",
        )
    )


def _taxes(client: TrytonClient, report: DoctorReport) -> None:
    """Each product for sale has an accounting category with customer taxes (sale lines' taxes)."""
    categories = {
        int(row["id"]): row
        for row in client.search_read(
            "product.category",
            [("accounting", "=", True)],
            ["name", "customer_taxes_used", "account_revenue"],
        )
    }
    taxed = {cid for cid, row in categories.items() if row.get("customer_taxes_used")}
    products = client.search_read(
        "product.product",
        [("salable", "=", True), ("code", "!=", None)],
        ["code", "template.account_category"],
    )
    untaxed = sorted(
        str(row["code"])
        for row in products
        if (row.get("template.") or {}).get("account_category") not in taxed
    )
    screen = "Tryton: Product > Configuration > Categories (Accounting: Customer Taxes)"
    if not taxed:
        report.add(
            Check(
                AREA,
                "customer taxes",
                "failed",
                "no accounting product category has customer taxes: every sale line would be "
                "untaxed",
                f"give the accounting categories their customer taxes in {screen}",
            )
        )
        return
    if untaxed:
        more = f" and {len(untaxed) - 8} more" if len(untaxed) > 8 else ""
        shown = ", ".join(untaxed[:8]) + more
        report.add(
            Check(
                AREA,
                "customer taxes",
                "warning",
                f"{len(untaxed)} of {len(products)} products for sale have no accounting "
                f"category with customer taxes ({shown}): a deal naming one without a category "
                "is quarantined, one whose category has no customer taxes is sold untaxed",
                f"set each product's accounting category in Tryton (Product > Products > "
                f"Accounting) to one with customer taxes, see {screen}",
            )
        )
        return
    report.add(
        Check(
            AREA,
            "customer taxes",
            "ok",
            f"{len(products)} products for sale, each in one of {len(taxed)} accounting "
            "categories with customer taxes",
        )
    )


__all__ = ["AREA", "ErpFacts", "erp_checks", "fiscal_year_verdict"]
