"""The `coulisse` command: the local stack, planning and syncing; more operator commands to come."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from coulisse.doctor.cli import doctor
from coulisse.operations_cli import conflicts_app, status
from coulisse.orchestration.cli import flows_app
from coulisse.planner.cli import plan
from coulisse.review_cli import links_app, quarantine_app
from coulisse.stack.cli import app as stack_app
from coulisse.webhooks.cli import serve

app = typer.Typer(
    help=(
        "Coulisse keeps a CRM (BottleCRM) and an accounting ERP (Tryton) in step, both ways: "
        "clients, orders, invoices and the product catalogue. Settings come from the "
        "environment and the git-ignored .env; plugins, jobs and the merge policy from "
        "meltano.yml."
    ),
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")
app.command("plan")(plan)
app.add_typer(links_app, name="links")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(conflicts_app, name="conflicts")
app.command("status")(status)
app.command("doctor")(doctor)
app.command("serve")(serve)
app.add_typer(flows_app, name="flows")
console = Console(stderr=True)


@app.command()
def sync(
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated entities to sync: clients, products, orders, invoices "
            "(each with what it depends on already synced). Default: all of them."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Observe both systems and print the plan; write nothing to either system.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Observe the CRM and the ERP into the ledger, plan, then apply to each system.

    Holds the ledger's run lock for the whole run: a second sync started meanwhile stops at
    once with the holder's name. Exit code 1 when a step fails (its log's tail is printed),
    2 when another sync holds the lock.
    """
    from coulisse.ledger import LockBusyError
    from coulisse.planner.cli import _print_summary
    from coulisse.project import ConfigError
    from coulisse.sync import SyncStepError, parse_only
    from coulisse.sync import sync as run_sync

    try:
        entities = parse_only(only)
        result = run_sync(entities, dry_run=dry_run, say=lambda m: console.print(f"  {m}"))
    except ConfigError as exc:
        console.print(f"[bold red]configuration:[/] {exc}")
        raise typer.Exit(code=1) from exc
    except SyncStepError as exc:
        console.print(f"[bold red]sync failed:[/] {exc}")
        raise typer.Exit(code=1) from exc
    except LockBusyError as exc:
        console.print(f"[yellow]not syncing:[/] {exc}")
        raise typer.Exit(code=2) from exc
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    if result.plan is not None:
        _print_summary(result.plan, Console())
    for step in result.steps:
        console.print(f"  {step['step']}: {step['seconds']} s")
    for side, count in result.applied.items():
        console.print(f"  applied to the {side.upper()}: {count} write(s)")
    for message in result.mismatches:
        console.print(f"  [yellow]adds up differently:[/] {message} (reported, not changed)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
