"""`coulisse links ...` and `coulisse quarantine list`: what waits for a person, and deciding it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from coulisse.project import ConfigError, ledger_url

if TYPE_CHECKING:
    from collections.abc import Callable

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
    """What waits for a person before anything is linked or created.

    Probable twins across the systems (same normalised name and postcode): decide each with
    `coulisse links decide ID --same` (one client: link them) or `--different` (two clients).
    Duplicates inside one system (two records with one VAT or SIREN): neither is synced until
    `coulisse links decide-duplicate ID --different` (two clients) or the duplicate is removed
    in that system (`--same` records that it is one client entered twice).
    """
    ledger = _ledger()
    try:
        twins = ledger.reviews()
        duplicates = ledger.duplicates()
    finally:
        ledger.close()
    if as_json:
        typer.echo(
            json.dumps(
                {"twins": _plain(twins), "duplicates": _plain(duplicates)}, indent=2, default=str
            )
        )
        return
    if not twins and not duplicates:
        console.print("Nothing waits for review.")
        return
    if twins:
        table = Table(title=f"{len(twins)} probable twin(s) across the systems")
        for column in ("id", "entity", "CRM record", "ERP record", "why"):
            table.add_column(column)
        for row in twins:
            table.add_row(str(row.id), row.entity, row.crm_key, row.erp_key, row.reason)
        console.print(table)
    if duplicates:
        table = Table(title=f"{len(duplicates)} duplicate(s) inside one system")
        for column in ("id", "system", "entity", "record", "same as", "why"):
            table.add_column(column)
        for dup in duplicates:
            table.add_row(
                str(dup.id),
                dup.side.upper(),
                dup.entity,
                dup.first_key,
                dup.second_key,
                dup.reason,
            )
        console.print(table)


def _settle(decision: Callable[[Any], None]) -> None:
    """Record a person's decision on the ledger; a closed or unknown id exits 1."""
    from coulisse.ledger import LedgerError

    ledger = _ledger()
    try:
        decision(ledger)
    except LedgerError as exc:
        Console(stderr=True).print(
            f"[bold red]error:[/] {exc}. `coulisse links review` lists the open ones."
        )
        raise typer.Exit(code=1) from exc
    finally:
        ledger.close()


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
    _settle(lambda ledger: ledger.decide_review(review_id, same=same))
    console.print(f"review {review_id}: {'linked' if same else 'kept apart'}; next sync applies it")


@links_app.command("decide-duplicate")
def decide_duplicate(
    duplicate_id: Annotated[int, typer.Argument(help="The id shown by `coulisse links review`.")],
    same: Annotated[
        bool,
        typer.Option(
            "--same/--different",
            help="--same: one client entered twice (fix it in that system); --different: two "
            "clients sharing an identifier, both synced from the next run.",
        ),
    ],
) -> None:
    """Settle two records of one system that share a VAT or SIREN."""
    _settle(lambda ledger: ledger.decide_duplicate(duplicate_id, same=same))
    console.print(
        f"duplicate {duplicate_id}: "
        + ("one client twice; remove the extra record in its system" if same else "two clients")
    )


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
