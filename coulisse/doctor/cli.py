"""The `coulisse doctor` command (registered in coulisse/cli.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console


def doctor(
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Repair what Coulisse may repair itself: create or re-activate its CRM custom "
            "fields and add their dropdown values; migrate the ledger. Nothing else changes.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    currency: Annotated[
        str, typer.Option(help="The currency the ERP company is expected to keep its books in.")
    ] = "EUR",
) -> None:
    """Check that the CRM, the ERP, the ledger and Meltano are ready to sync, by probing them.

    Run it against any customer's systems before the first sync, and when a sync fails. Reads
    the settings the sync reads (environment, then .env): BOTTLECRM_API_URL,
    BOTTLECRM_API_TOKEN, TRYTON_URL, TRYTON_DATABASE, TRYTON_USERNAME, TRYTON_PASSWORD,
    COULISSE_LEDGER_URL. Each check prints ok, warning or failed, what it found and, when it
    did not pass, what to do. Changes no data unless --fix. Exit code 1 when a check failed.
    """
    from coulisse.doctor import run_doctor

    err = Console(stderr=True)
    report = run_doctor(
        fix=fix, currency=currency.upper(), say=lambda m: None if as_json else err.print(m)
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        out = Console()
        for line in report.rich_lines():
            out.print(line, highlight=False)
    raise typer.Exit(code=report.exit_code)


__all__ = ["doctor"]
