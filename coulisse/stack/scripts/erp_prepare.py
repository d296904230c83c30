"""Set up a freshly activated Tryton database as a French company; run by the ERP venv's python.

Usage: erp_prepare.py TRYTOND_CONF DATABASE (secrets in COULISSE_ERP_* environment variables).

Builds what every Coulisse stack needs: the company "Coulisse Démo SAS" (EUR, France,
Europe/Paris), the French chart of accounts with its VAT taxes, calendar fiscal years for the
previous and current year, net 30 days as the default payment term, a bank payment method and
its journal, a product catalogue, and the integration user ``coulisse`` with only the groups it
needs.
"""

# Tryton models are classes: CamelCase names, as in every Tryton module.
# ruff: noqa: N806

from __future__ import annotations

import datetime
import sys
from decimal import Decimal

from erp_common import (
    COMPANY_NAME,
    INTEGRATION_LOGIN,
    connect,
    ensure_fiscal_years,
    model_data_id,
    set_credentials,
)
from proteus import Model, Wizard

COUNTRIES = [
    ("FR", "France"),
    ("BE", "Belgique"),
    ("LU", "Luxembourg"),
    ("CH", "Suisse"),
    ("MC", "Monaco"),
    ("DE", "Allemagne"),
    ("ES", "Espagne"),
    ("IT", "Italie"),
    ("NL", "Pays-Bas"),
    ("PT", "Portugal"),
    ("IE", "Irlande"),
    ("GB", "Royaume-Uni"),
    ("US", "États-Unis"),
    ("CA", "Canada"),
]

# (code, name, type, list price in EUR, VAT rate, unit)
PRODUCTS = [
    ("CONS-JOUR", "Journée de conseil", "service", "950.00", "20", "day"),
    ("CONS-DEMI", "Demi-journée de conseil", "service", "520.00", "20", "unit"),
    ("AUDIT-SI", "Audit du système d'information", "service", "4800.00", "20", "unit"),
    ("FORM-01", "Formation utilisateurs (1 jour)", "service", "1200.00", "20", "unit"),
    ("FORM-02", "Formation administrateurs (2 jours)", "service", "2300.00", "20", "unit"),
    ("LIC-ANN", "Licence annuelle", "service", "3600.00", "20", "unit"),
    ("LIC-MENS", "Licence mensuelle", "service", "320.00", "20", "unit"),
    ("SUPP-PREM", "Support premium (mois)", "service", "450.00", "20", "unit"),
    ("HEB-CLOUD", "Hébergement cloud (mois)", "service", "180.00", "20", "unit"),
    ("DEV-HEURE", "Heure de développement", "service", "95.00", "20", "hour"),
    ("SEM-REPAS", "Séminaire : repas et pauses (par personne)", "service", "48.50", "10", "unit"),
    ("LIVRE-GUIDE", "Guide pratique imprimé", "goods", "29.90", "5.5", "unit"),
]

UNITS = {
    "unit": ("product", "uom_unit"),
    "day": ("product", "uom_day"),
    "hour": ("product", "uom_hour"),
}


def log(message: str) -> None:
    print(f"[erp_prepare] {message}", flush=True)


def create_countries() -> dict[str, object]:
    Country = Model.get("country.country")
    countries = {}
    for code, name in COUNTRIES:
        found = Country.find([("code", "=", code)])
        country = found[0] if found else Country(code=code, name=name)
        country.save()
        countries[code] = country
    return countries


def create_euro() -> object:
    Currency = Model.get("currency.currency")
    CurrencyRate = Model.get("currency.currency.rate")
    found = Currency.find([("code", "=", "EUR")])
    if found:
        return found[0]
    euro = Currency(name="Euro", code="EUR", symbol="€", rounding=Decimal("0.01"))
    euro.save()
    CurrencyRate(date=datetime.date(2000, 1, 1), rate=Decimal(1), currency=euro).save()
    return euro


def create_company(config: object, euro: object, france: object) -> object:
    Party = Model.get("party.party")
    User = Model.get("res.user")
    party = Party(name=COMPANY_NAME)
    address = party.addresses[0]
    address.street = "12 rue de la Coulisse"
    address.postal_code = "75011"
    address.city = "Paris"
    address.country = france
    identifier = party.identifiers.new()
    identifier.type = "fr_siren"
    identifier.code = "732829320"
    party.save()

    company_config = Wizard("company.company.config")
    company_config.execute("company")
    company = company_config.form
    company.party = party
    company.currency = euro
    company.timezone = "Europe/Paris"
    company_config.execute("add")
    # Later calls run in the new company's context, as in the Tryton client after set-up.
    config._context = User.get_preferences(True, {})
    Company = Model.get("company.company")
    (company,) = Company.find([])
    return company


def find_account(company: object, code: str) -> object:
    Account = Model.get("account.account")
    (account,) = Account.find([("company", "=", company.id), ("code", "=", code)], limit=1)
    return account


def create_chart(company: object) -> tuple[str, dict[str, object]]:
    """The French chart (account_fr); the minimal chart only if that fails."""
    AccountTemplate = Model.get("account.account.template")
    try:
        template = AccountTemplate(model_data_id("account_fr", "root"))
        kind = "account_fr"
    except ValueError:
        template = AccountTemplate(model_data_id("account", "account_template_root_en"))
        kind = "minimal"
        log("WARNING: the French chart (account_fr) is missing: using the minimal chart")
    wizard = Wizard("account.create_chart")
    wizard.execute("account")
    wizard.form.account_template = template
    wizard.form.company = company
    wizard.execute("create_account")
    if kind == "account_fr":
        accounts = {
            "receivable": find_account(company, "4111"),
            "payable": find_account(company, "4011"),
            "revenue_services": find_account(company, "706"),
            "revenue_goods": find_account(company, "7071"),
            "expense": find_account(company, "6071"),
            "bank": find_account(company, "5121"),
        }
    else:
        Account = Model.get("account.account")

        def first(domain: list[tuple[str, str, object]]) -> object:
            return Account.find([("company", "=", company.id), ("closed", "!=", True), *domain])[0]

        revenue = first([("type.revenue", "=", True)])
        accounts = {
            "receivable": first([("type.receivable", "=", True)]),
            "payable": first([("type.payable", "=", True)]),
            "revenue_services": revenue,
            "revenue_goods": revenue,
            "expense": first([("type.expense", "=", True)]),
            "bank": first([("code", "=", "1.1.1")]),
        }
    wizard.form.account_receivable = accounts["receivable"]
    wizard.form.account_payable = accounts["payable"]
    if hasattr(wizard.form, "category_account_revenue"):
        wizard.form.category_account_revenue = accounts["revenue_services"]
    if hasattr(wizard.form, "category_account_expense"):
        wizard.form.category_account_expense = accounts["expense"]
    wizard.execute("create_properties")
    return kind, accounts


# account_fr's customer VAT: the 20 % and 10 % taxes are children of a dated parent (19,6 % and
# 7 % before 2014); products take the parent, which picks the child valid at the invoice date.
FRENCH_SALE_TAXES = {
    ("service", "20"): "T.V.A. Vente de services Taux Normal",
    ("service", "10"): "T.V.A. Vente de services Taux Intermédiaire",
    ("service", "5.5"): "T.V.A. Vente de services 5,5%",
    ("goods", "20"): "T.V.A. Vente de biens Taux Normal",
    ("goods", "10"): "T.V.A. Vente de biens Taux Intermédiaire",
    ("goods", "5.5"): "T.V.A. Vente de biens 5,5%",
}


def sale_taxes(
    company: object, kind: str, accounts: dict[str, object]
) -> dict[tuple[str, str], object]:
    """Customer VAT per product type and rate: account_fr's own taxes, or created ones."""
    Tax = Model.get("account.tax")
    taxes = {}
    if kind == "account_fr":
        for key, name in FRENCH_SALE_TAXES.items():
            (taxes[key],) = Tax.find(
                [("company", "=", company.id), ("name", "=", name), ("parent", "=", None)]
            )
        return taxes
    for label, rate in (("20", "0.20"), ("10", "0.10"), ("5.5", "0.055")):
        tax = Tax(
            name=f"TVA collectée {label.replace('.', ',')} %",
            description=f"TVA {label.replace('.', ',')} %",
            type="percentage",
            rate=Decimal(rate),
            company=company,
            invoice_account=accounts["payable"],
            credit_note_account=accounts["payable"],
        )
        tax.save()
        taxes["service", label] = taxes["goods", label] = tax
    return taxes


def set_default_payment_term() -> None:
    """account_invoice ships the usual terms (net 30, upon receipt...): new clients get net 30."""
    Term = Model.get("account.invoice.payment_term")
    Configuration = Model.get("account.configuration")
    configuration = Configuration(1)
    configuration.default_customer_payment_term = Term(
        model_data_id("account_invoice", "payment_term_net30")
    )
    configuration.save()


def create_payment_method(company: object, accounts: dict[str, object]) -> None:
    Journal = Model.get("account.journal")
    Method = Model.get("account.invoice.payment.method")
    journal = Journal(name="Banque", code="BQ", type="cash")
    journal.save()
    method = Method(
        name="Virement bancaire",
        company=company,
        journal=journal,
        credit_account=accounts["bank"],
        debit_account=accounts["bank"],
    )
    method.save()


def create_catalogue(accounts: dict[str, object], taxes: dict[tuple[str, str], object]) -> None:
    Category = Model.get("product.category")
    Template = Model.get("product.template")
    Uom = Model.get("product.uom")
    categories = {}
    revenue = {"service": accounts["revenue_services"], "goods": accounts["revenue_goods"]}
    for (kind, rate), tax in taxes.items():
        label = "Prestations" if kind == "service" else "Marchandises"
        category = Category(name=f"{label} TVA {rate.replace('.', ',')} %", accounting=True)
        category.account_revenue = revenue[kind]
        category.account_expense = accounts["expense"]
        while category.customer_taxes:  # the revenue account's default taxes
            category.customer_taxes.pop()
        category.customer_taxes.append(tax)
        category.save()
        categories[kind, rate] = category
    for code, name, kind, price, rate, unit in PRODUCTS:
        uom = Uom(model_data_id(*UNITS[unit]))
        template = Template(
            name=name,
            code=code,
            type=kind,
            list_price=Decimal(price),
            default_uom=uom,
            salable=True,
            sale_uom=uom,
            account_category=categories[kind, rate],
        )
        (product,) = template.products
        product.cost_price = (Decimal(price) * Decimal("0.40")).quantize(Decimal("0.0001"))
        template.save()


def create_integration_user(company: object) -> None:
    """Login ``coulisse``: sales, accounting (invoices, payments) and product administration."""
    User = Model.get("res.user")
    Group = Model.get("res.group")
    user = User(name="Coulisse (intégration)", login=INTEGRATION_LOGIN)
    for module, fs_id in (
        ("sale", "group_sale"),
        ("account", "group_account"),
        ("product", "group_product_admin"),
    ):
        user.groups.append(Group(model_data_id(module, fs_id)))
    user.companies.append(company)
    user.company = company
    user.save()


def main() -> None:
    config_file, database = sys.argv[1:3]
    config = connect(config_file, database)
    today = datetime.date.today()  # noqa: DTZ011 - the process runs with TZ=Europe/Paris
    countries = create_countries()
    euro = create_euro()
    company = create_company(config, euro, countries["FR"])
    log(f"company {COMPANY_NAME} created")
    kind, accounts = create_chart(company)
    log(f"chart of accounts: {kind}")
    created = ensure_fiscal_years(company, today)
    log(f"fiscal years: {', '.join(created)}")
    taxes = sale_taxes(company, kind, accounts)
    set_default_payment_term()
    create_payment_method(company, accounts)
    create_catalogue(accounts, taxes)
    log(f"{len(PRODUCTS)} products created")
    create_integration_user(company)
    set_credentials(company)
    log(f"user {INTEGRATION_LOGIN} created; done (chart={kind})")


if __name__ == "__main__":
    main()
