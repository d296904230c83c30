"""Bring one instance's ERP database up to date; run by the ERP venv's python before serving it.

Usage: erp_instance.py TRYTOND_CONF DATABASE [--fiscal-years] [--credentials]

--fiscal-years  create the calendar fiscal years of the previous and current year (with periods
                and invoice sequences) when today has moved past what the database covers;
                COULISSE_ERP_TODAY (YYYY-MM-DD) stands for today when set.
--credentials   set the admin and integration passwords and the REST application key from
                COULISSE_ERP_ADMIN_PASSWORD, COULISSE_ERP_USER_PASSWORD and
                COULISSE_ERP_APPLICATION_KEY.
"""

# Tryton models are classes: CamelCase names, as in every Tryton module.
# ruff: noqa: N806

from __future__ import annotations

import datetime
import os
import sys

from erp_common import connect, ensure_fiscal_years, get_company, set_credentials
from proteus import Model


def main() -> None:
    config_file, database, *flags = sys.argv[1:]
    config = connect(config_file, database)
    User = Model.get("res.user")
    config._context = User.get_preferences(True, {})
    company = get_company()
    if "--fiscal-years" in flags:
        raw = os.environ.get("COULISSE_ERP_TODAY")
        # The process runs with TZ=Europe/Paris, the company's timezone.
        today = datetime.date.fromisoformat(raw) if raw else datetime.date.today()  # noqa: DTZ011
        created = ensure_fiscal_years(company, today)
        print(f"[erp_instance] fiscal years created: {', '.join(created) or 'none needed'}")
    if "--credentials" in flags:
        set_credentials(company)
        print("[erp_instance] credentials set")


if __name__ == "__main__":
    main()
