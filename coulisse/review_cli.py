"""`coulisse links ...` and `coulisse quarantine list`: what waits for a person, and deciding it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coulisse.project import ConfigError, ledger_url

links_app = typer.Typer(
    help="Links between CRM and ERP records, and the probable duplicates waiting for review.",
    no_args_is_help=True,
)
quarantine_app = typer.Typer(
    help="Records held back because they failed validation or a system refused them.",
    no_args_is_help=True,
)
console = Console()


def _ledger() -> Any:
    from coulisse.ledger import Ledger

    try:
        return Ledger.open(ledger_url())
    except ConfigError as exc:
        Console(stderr=True).print(f"[bold red]configuration:[/] {exc}")
        raise typer.Exit(code=1) from exc


def _plain(rows: list[Any]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


@links_app.command("review")
def review(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Probable duplicates (same normalised name and postcode): linked by nobody until decided.

    Decide each with `coulisse links decide ID --same` (one client: link them) or
    `--different` (two clients: each is synced on its own from the next run).
    """
    ledger = _ledger()
    try:
        rows = ledger.reviews()
    finally:
        ledger.close()
    if as_json:
        typer.echo(json.dumps(_plain(rows), indent=2, default=str))
        return
    if not rows:
        console.print("No probable duplicate waits for review.")
        return
    table = Table(title=f"{len(rows)} probable duplicate(s) to review")
    for column in ("id", "entity", "CRM record", "ERP record", "why"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row.id), row.entity, row.crm_key, row.erp_key, row.reason)
    console.print(table)


@links_app.command("decide")
def decide(
    review_id: Annotated[int, typer.Argument(help="The id shown by `coulisse links review`.")],
    same: Annotated[
        bool,
        typer.Option(
            "--same/--different",
            help="--same: one client, link the two records; --different: two clients.",
        ),
    ],
) -> None:
    """Settle one probable duplicate; the next sync acts on it."""
    from coulisse.ledger import LedgerError

    ledger = _ledger()
    try:
        ledger.decide_review(review_id, same=same)
    except LedgerError as exc:
        Console(stderr=True).print(
            f"[bold red]error:[/] {exc}. `coulisse links review` lists the open ones."
        )
        raise typer.Exit(code=1) from exc
    finally:
        ledger.close()
    console.print(f"review {review_id}: {'linked' if same else 'kept apart'}; next sync applies it")


@quarantine_app.command("list")
def quarantine_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Every record held back, with the reason a clerk reads; fixed at the source, it leaves
    the quarantine on the next sync."""
    ledger = _ledger()
    try:
        rows = ledger.quarantined()
    finally:
        ledger.close()
    if as_json:
        typer.echo(json.dumps(_plain(rows), indent=2, default=str))
        return
    if not rows:
        console.print("Nothing is in quarantine.")
        return
    table = Table(title=f"{len(rows)} record(s) in quarantine")
    for column in ("system", "entity", "record", "field", "reason", "since"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.side.upper(),
            row.entity,
            row.source_key,
            row.field or "",
            row.message,
            row.first_seen_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
