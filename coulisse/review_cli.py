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


@links_app.command("unlink")
def unlink(
    record: Annotated[
        str, typer.Argument(help="The link id, or the CRM account id or ERP party id it joins.")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Undo a wrong client link: the two records are different clients.

    Removes the reference each system keeps of the other (the CRM account's ERP reference, the
    ERP party's CRM identifier), then forgets the link and records the pair as distinct, so no
    rule links them again. The next `coulisse sync` matches each anew (same VAT or SIREN, or a
    probable twin for review) or creates its own twin in the other system: link the right twin
    first with `coulisse links link` if no rule would find it. Clients only.
    """
    import os

    from coulisse.bottlecrm.client import CrmApiError, CrmUnavailableError
    from coulisse.project import project_env
    from coulisse.tryton.rpc import TrytonError
    from coulisse.unlink import UnlinkError, connect, find_client_link, unlink_client

    errors = Console(stderr=True)
    ledger = _ledger()
    try:
        link = find_client_link(ledger, record)
        console.print(
            f"link {link.id}: client CRM account {link.crm_key} = ERP party {link.erp_key} "
            f"(linked by {link.origin})"
        )
        if not yes and not typer.confirm(
            "Unlink them? The next sync matches each again or creates its own twin", default=False
        ):
            raise typer.Exit(code=1)
        crm, erp = connect(project_env())
        done = unlink_client(
            ledger, link, crm, erp, holder=f"coulisse links unlink ({os.getpid()})"
        )
    except (UnlinkError, ConfigError) as exc:
        errors.print(f"[bold red]unlink:[/] {exc}")
        raise typer.Exit(code=1) from exc
    except (CrmApiError, CrmUnavailableError, TrytonError) as exc:
        errors.print(
            f"[bold red]unlink:[/] {exc}\nThe link is kept in the ledger; once the system "
            "answers, run the command again (what was already removed is skipped)."
        )
        raise typer.Exit(code=1) from exc
    finally:
        ledger.close()
    console.print(
        f"link {link.id} undone: CRM reference "
        + ("cleared" if done.crm_reference_cleared else "was already gone")
        + ", ERP reference "
        + ("deleted" if done.erp_reference_deleted else "was already gone")
        + "; the next `coulisse sync` matches each record again, never to the other."
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
