"""``coulisse plan``: plan the writes that bring the CRM and the ERP in step, or show them dry."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path  # noqa: TC003 - typer reads the annotations at run time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from coulisse.planner.plan import PlanSummary

app = typer.Typer(help="Plan the sync: validate, match, merge, and queue writes per system.")

_KINDS = ("create", "update", "deactivate", "cancel")


def _print_summary(summary: PlanSummary, console: Console) -> None:
    title = "Plan (dry run: nothing written)" if summary.dry_run else f"Plan {summary.run_id}"
    table = Table(title=title)
    table.add_column("System")
    for heading in ("Creates", "Updates", "Deactivations", "Cancellations"):
        table.add_column(heading, justify="right")
    for side, plan in summary.sides.items():
        table.add_row(
            side.upper(),
            str(plan.creates),
            str(plan.updates),
            str(plan.deactivations),
            str(plan.cancellations),
        )
    console.print(table)
    console.print(
        f"checked {summary.checked} changed records; linked {summary.linked}; "
        f"conflicts {summary.conflicts}; quarantined {summary.quarantined}; "
        f"deferred {summary.deferred}; probable duplicates {summary.reviews}"
    )
    for side in ("crm", "erp"):
        lines = [item for item in summary.items if item.side == side and item.kind in _KINDS]
        if lines:
            console.print(f"\n[bold]{side.upper()}[/bold]")
            for item in lines:
                console.print(f"  {item.text}")
    for kind, heading in (
        ("conflict", "Conflicts (decide with the conflicts command)"),
        ("review", "Probable duplicates (never merged without a person)"),
        ("quarantine", "Quarantined"),
        ("deferral", "Deferred"),
    ):
        lines = [item for item in summary.items if item.kind == kind]
        if lines:
            console.print(f"\n[bold]{heading}[/bold]")
            for item in lines:
                where = f"{item.side.upper()} " if item.side else ""
                console.print(f"  {where}{item.entity} {item.key}: {item.text}")


@app.command()
def plan(
    ledger_url: Annotated[
        str | None,
        typer.Option(
            "--ledger-url",
            envvar="COULISSE_LEDGER_URL",
            help="Ledger database URL (default: a SQLite file coulisse-ledger.db).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan per system and write nothing.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the plan as JSON instead of tables.")
    ] = False,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            envvar="COULISSE_POLICY_FILE",
            help="JSON file with the ownership and merge policy (default: built-in policy).",
        ),
    ] = None,
) -> None:
    """Validate, match and merge what the ledger observed; queue the writes for each system."""
    from coulisse.ledger import Ledger, LockBusyError
    from coulisse.planner.plan import Planner
    from coulisse.policy import SyncPolicy

    policy = (
        SyncPolicy.model_validate_json(policy_file.read_text())
        if policy_file is not None
        else SyncPolicy.default()
    )
    ledger = Ledger.open(ledger_url)
    console = Console()
    try:
        planner = Planner(ledger, policy, crm_invoices_to_erp=policy.crm_invoices_to_erp)
        if dry_run:
            summary = planner.plan(dry_run=True)
        else:
            holder = f"coulisse plan on {socket.gethostname()} pid {os.getpid()}"
            try:
                with ledger.lock(holder):
                    summary = planner.plan()
            except LockBusyError as exc:
                console.print(f"[red]Not planning: {exc}[/red]")
                raise typer.Exit(code=2) from exc
    finally:
        ledger.close()
    if json_output:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary, console)


def main() -> None:
    """Run ``coulisse plan`` on its own (``python -m coulisse.planner.cli``)."""
    app()


if __name__ == "__main__":
    main()
