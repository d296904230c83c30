"""Helpers shared by the ERP set-up scripts (run by the ERP venv's python, never imported)."""

# Tryton models are classes: CamelCase names, as in every Tryton module.
# ruff: noqa: N806

from __future__ import annotations

import datetime
import os
import sys

from proteus import Model
from proteus import config as proteus_config

COMPANY_NAME = "Coulisse Démo SAS"
INTEGRATION_LOGIN = "coulisse"


def connect(config_file: str, database: str) -> object:
    """Open the database in-process as the admin user (proteus on top of trytond)."""
    return proteus_config.set_trytond(database, user="admin", config_file=config_file)


def model_data_id(module: str, fs_id: str) -> int:
    ModelData = Model.get("ir.model.data")
    return ModelData.get_id(module, fs_id, proteus_config.get_config().context)


def get_company() -> object:
    Company = Model.get("company.company")
    companies = Company.find([])
    if len(companies) != 1:
        sys.exit(f"expected exactly one company in the ERP database, found {len(companies)}")
    return companies[0]


def ensure_fiscal_years(company: object, today: datetime.date) -> list[str]:
    """Make calendar fiscal years exist for the previous and the current year; return those created.

    Each gets monthly periods, an account-move sequence and its own invoice and credit-note
    sequences (French numbering: FAC-2025-00001, AV-2025-00001).
    """
    FiscalYear = Model.get("account.fiscalyear")
    Sequence = Model.get("ir.sequence.strict")
    SequenceType = Model.get("ir.sequence.type")
    move_type = SequenceType(model_data_id("account", "sequence_type_account_move"))
    invoice_type = SequenceType(model_data_id("account_invoice", "sequence_type_account_invoice"))
    created = []
    for year in (today.year - 1, today.year):
        start, end = datetime.date(year, 1, 1), datetime.date(year, 12, 31)
        overlapping = FiscalYear.find(
            [
                ("company", "=", company.id),
                ("start_date", "<=", end),
                ("end_date", ">=", start),
            ]
        )
        if overlapping:
            continue

        def strict_sequence(name: str, prefix: str, sequence_type: object) -> object:
            sequence = Sequence(
                name=name,
                sequence_type=sequence_type,
                company=company,
                prefix=prefix,
                padding=5,
            )
            sequence.save()
            return sequence

        fiscal_year = FiscalYear(name=str(year), start_date=start, end_date=end, company=company)
        fiscal_year.move_sequence = strict_sequence(f"Écritures {year}", f"{year}-", move_type)
        invoices = strict_sequence(f"Factures {year}", f"FAC-{year}-", invoice_type)
        credit_notes = strict_sequence(f"Avoirs {year}", f"AV-{year}-", invoice_type)
        supplier = strict_sequence(f"Factures fournisseurs {year}", f"FF-{year}-", invoice_type)
        (invoice_sequences,) = fiscal_year.invoice_sequences
        invoice_sequences.out_invoice_sequence = invoices
        invoice_sequences.out_credit_note_sequence = credit_notes
        invoice_sequences.in_invoice_sequence = supplier
        invoice_sequences.in_credit_note_sequence = supplier
        fiscal_year.save()
        fiscal_year.click("create_period")
        created.append(str(year))
    return created


def set_credentials(company: object) -> None:
    """Give admin and the integration user the passwords and REST key from the environment."""
    User = Model.get("res.user")
    Application = Model.get("res.user.application")
    admin_password = os.environ["COULISSE_ERP_ADMIN_PASSWORD"]
    user_password = os.environ["COULISSE_ERP_USER_PASSWORD"]
    application_key = os.environ["COULISSE_ERP_APPLICATION_KEY"]

    (admin,) = User.find([("login", "=", "admin")])
    admin.password = admin_password
    admin.save()

    (user,) = User.find([("login", "=", INTEGRATION_LOGIN)])
    user.password = user_password
    user.save()

    applications = Application.find([("user", "=", user.id), ("application", "=", "rest")])
    for application in applications:
        if application.key != application_key and application.state != "cancelled":
            application.click("cancel")
    if not any(a.key == application_key and a.state == "validated" for a in applications):
        application = Application(user=user, application="rest", key=application_key)
        application.save()
        if application.state == "requested":
            application.click("validate_")
