"""`coulisse stack ...`: bring the local BottleCRM and Tryton up, down, back; seed, inspect them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coulisse.stack.errors import StackError
from coulisse.stack.layout import StackLayout
from coulisse.stack.settings import StackSettings

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    help=(
        "The local CRM (BottleCRM) and ERP (Tryton) that the demo and the tests sync.\n\n"
        "Settings come from the environment or the git-ignored .env: COULISSE_CRM_PORT "
        "(default 8600), COULISSE_ERP_PORT (8610), COULISSE_STACK_DATABASE_URL (a PostgreSQL "
        "server such as postgresql://postgres@127.0.0.1:5432; empty: SQLite files), "
        "COULISSE_STACK_NAME (database name prefix), COULISSE_STACK_HOME (data, logs, PIDs; "
        "default .stack/demo)."
    ),
    no_args_is_help=True,
)


def _stack() -> Any:
    from coulisse.stack.local import LocalStack

    layout = StackLayout.from_env()
    return LocalStack(layout, StackSettings.load(layout), say=lambda m: console.print(f"  {m}"))


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=1)


def _print_status(status: dict[str, Any]) -> None:
    table = Table(title=f"Local stack ({status['stack_home']})")
    for column in ("system", "running", "URL", "credentials", "records", "note"):
        table.add_column(column)
    for key in ("crm", "erp"):
        row = status[key]
        counts = ", ".join(f"{k} {v}" for k, v in row.get("counts", {}).items()) or "-"
        table.add_row(
            str(row.get("system", key)),
            "yes" if row.get("running") else "[red]no[/]",
            str(row.get("url", "")),
            "ok" if row.get("credentials_ok") else "[red]failing[/]",
            counts,
            str(row.get("error", "")),
        )
    out.print(table)


@app.command()
def up() -> None:
    """Install, prepare and start both systems, and write their credentials to .env.

    The first run builds each system's virtualenv and prepared database (a few minutes); later
    runs copy or reuse them and take seconds. Running `up` on a running stack changes nothing.
    """
    try:
        status = _stack().up()
    except StackError as exc:
        raise _fail(exc) from exc
    _print_status(status)
    crm, erp = status["crm"], status["erp"]
    out.print(
        f"CRM: {crm['url']} (API {crm['api']})\nERP: {erp['url']} "
        f"(JSON-RPC {erp.get('rpc', erp['url'])})\nCredentials: {status['env_file']} "
        "(git-ignored; never printed)"
    )


@app.command()
def down() -> None:
    """Stop the servers `up` and `coulisse flows up` started (only those, by PID). Data is kept.

    The Prefect server and its served sync stop first: left running, the schedule would fail
    every interval against a CRM and an ERP that are gone.
    """
    for name, was_running in _stop_flows().items():
        out.print(f"{name}: {'stopped' if was_running else 'was not running'}")
    try:
        stopped = _stack().down()
    except StackError as exc:
        raise _fail(exc) from exc
    for system, was_running in stopped.items():
        out.print(f"{system}: {'stopped' if was_running else 'was not running'}")


def _stop_flows() -> dict[str, bool]:
    """Stop this stack's Prefect server and served deployment, when `flows up` started them."""
    from coulisse.orchestration.server import PrefectStack
    from coulisse.orchestration.settings import FlowSettings
    from coulisse.project import ConfigError, project_env

    try:
        settings = FlowSettings.load(project_env())
    except ConfigError as exc:
        console.print(f"[yellow]Prefect left as it is:[/] {exc}")
        return {}
    return PrefectStack(StackLayout.from_env(), settings).down()


@app.command()
def reset() -> None:
    """Throw away both databases and start again from the prepared ones (no sample data)."""
    try:
        status = _stack().reset()
    except StackError as exc:
        raise _fail(exc) from exc
    _print_status(status)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Per system: running, URL, whether the integration credentials work, record counts.

    Exits 1 when a system is down or its credentials fail.
    """
    try:
        report = _stack().status()
    except StackError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
    healthy = all(report[k]["running"] and report[k]["credentials_ok"] for k in ("crm", "erp"))
    if not healthy:
        raise typer.Exit(code=1)


@app.command()
def seed(
    clients: Annotated[
        int, typer.Option(help="How many client companies (use 10000 for benchmarks).", min=1)
    ] = 40,
    random_seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 20261126,
) -> None:
    """Load realistic French B2B sample data into both systems; a second run adds nothing.

    CRM: accounts with accents, valid and broken VAT/SIREN, phones in mixed formats,
    near-duplicates, contacts, products with the ERP's codes, won and open deals with line
    items. ERP: clients only it has, clients both have (same VAT, not linked yet), invoices in
    every state (draft, posted, partially paid, paid, overdue, cancelled).
    """
    from coulisse.stack.seeding import seed_stack

    try:
        report = seed_stack(_stack(), clients=clients, random_seed=random_seed, console=console)
    except StackError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(report, indent=2, default=str))
