"""`coulisse status`, `coulisse conflicts ...` and `coulisse quarantine show|retry|dismiss`.

The operator's view of the sync as the ledger holds it: no system is called, so these answer
at once even when the CRM or the ERP is down.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from coulisse.review_cli import _ledger, _plain, links_app, quarantine_app

conflicts_app = typer.Typer(
    help=(
        "Shared fields both systems changed differently, parked under the `manual` policy: "
        "neither system is written until a person decides."
    ),
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)

SideOption = Annotated[
    str | None, typer.Option("--side", help="crm or erp, when the id exists in both systems.")
]
EntityOption = Annotated[
    str | None,
    typer.Option("--entity", help="client, product, order or invoice, when the id is ambiguous."),
]


def _side(value: str | None) -> Any:
    if value is None:
        return None
    side = value.lower()
    if side not in {"crm", "erp"}:
        errors.print(f"[bold red]--side {value!r}:[/] use crm or erp")
        raise typer.Exit(code=1)
    return side


def _entity(value: str | None) -> Any:
    if value is None:
        return None
    entity = value.lower().rstrip("s")
    if entity not in {"client", "product", "order", "invoice"}:
        errors.print(f"[bold red]--entity {value!r}:[/] use client, product, order or invoice")
        raise typer.Exit(code=1)
    return entity


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "never"


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    runs: Annotated[int, typer.Option(help="How many recent runs to show.")] = 10,
) -> None:
    """Is the sync healthy? The last runs, freshness per entity, and what waits for a person.

    Read from the ledger alone. Freshness is when each system's records were last observed
    and the newest change a system reported; `waiting` counts the records in quarantine, the
    open conflicts, the probable duplicates to review and the writes not yet applied.
    """
    from coulisse.ledger.status import overview

    ledger = _ledger()
    try:
        report = overview(ledger, runs=runs)
    finally:
        ledger.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    waiting = report["waiting"]
    pending = waiting["pending_writes"]
    console.print(
        f"Waiting for a person: {waiting['quarantined_records']} record(s) in quarantine, "
        f"{waiting['open_conflicts']} conflict(s), "
        f"{waiting['reviews'] + waiting['duplicates']} probable duplicate(s) to review. "
        f"Writes not yet applied: CRM {pending.get('crm', 0)}, ERP {pending.get('erp', 0)}."
    )
    if report["lock"]:
        console.print(f"A sync is running: {report['lock']}")
    fresh = Table(title="Freshness")
    for column in ("entity", "system", "records", "deleted", "last observed", "last change"):
        fresh.add_column(column)
    for row in report["freshness"]:
        fresh.add_row(
            row["entity"],
            row["side"].upper(),
            str(row["records"]),
            str(row["deleted"]),
            _when(row["last_observed_at"]),
            _when(row["last_changed_at"]),
        )
    console.print(fresh)
    table = Table(title="Last runs")
    for column in ("run", "kind", "system", "status", "started", "finished", "flow run"):
        table.add_column(column)
    for run in report["runs"]:
        table.add_row(
            str(run["id"]),
            run["kind"],
            (run["side"] or "").upper(),
            run["status"],
            _when(run["started_at"]),
            _when(run["finished_at"]),
            run["flow_run_id"] or "",
        )
    console.print(table)
    if not report["runs"]:
        console.print("No run yet: `coulisse sync` makes the first one.")


@quarantine_app.command("show")
def quarantine_show(
    record: Annotated[str, typer.Argument(help="The record's id in its system.")],
    side: SideOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """One record's reasons (current and past) and the record as last read from its system."""
    from coulisse.ledger.status import held_record

    ledger = _ledger()
    try:
        rows = held_record(ledger, record, side=_side(side))
    finally:
        ledger.close()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        errors.print(f"{record!r} has never been in quarantine.")
        raise typer.Exit(code=1)
    for row in rows:
        state = "held" if row["released_at"] is None else f"released {_when(row['released_at'])}"
        console.print(
            f"{row['side'].upper()} {row['entity']} {row['record']}: {row['message']} "
            f"[{row['reason']}; since {_when(row['first_seen_at'])}; {state}]"
        )
    observed = rows[0]["observed"]
    if observed is not None:
        console.print_json(json.dumps(observed, default=str))


def _act(action: Literal["retry", "dismiss"], record: str, side: Any, entity: Any) -> str:
    from coulisse.ledger import LedgerError
    from coulisse.ledger.status import dismiss, retry

    ledger = _ledger()
    try:
        done = (retry if action == "retry" else dismiss)(ledger, record, side=side, entity=entity)
    except LedgerError as exc:
        errors.print(f"[bold red]{action}:[/] {exc}")
        raise typer.Exit(code=1) from exc
    finally:
        ledger.close()
    return done


@quarantine_app.command("retry")
def quarantine_retry(
    record: Annotated[str, typer.Argument(help="The record's id in its system.")],
    side: SideOption = None,
    entity: EntityOption = None,
) -> None:
    """Check a held record again at the next sync (after fixing what the ERP or CRM refused,
    or changing a setting); still wrong, it comes back with today's reason."""
    where = _act("retry", record, _side(side), _entity(entity))
    console.print(f"{where} {record}: released; the next `coulisse sync` checks it again.")


@quarantine_app.command("dismiss")
def quarantine_dismiss(
    record: Annotated[str, typer.Argument(help="The record's id in its system.")],
    side: SideOption = None,
    entity: EntityOption = None,
) -> None:
    """Take a record off the list without syncing it: it stays out of the sync until it
    changes in its system (then it is checked like any other)."""
    where = _act("dismiss", record, _side(side), _entity(entity))
    console.print(f"{where} {record}: dismissed; it is checked again when it changes.")


@conflicts_app.command("list")
def conflicts_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Open conflicts: the field, its value when both systems last agreed, and each side's."""
    ledger = _ledger()
    try:
        rows = ledger.conflicts()
        links = {row.link_id: ledger.get_link(row.link_id) for row in rows}
    finally:
        ledger.close()
    if as_json:
        plain = _plain(rows)
        for item in plain:
            link = links[item["link_id"]]
            item.update(crm_key=link.crm_key, erp_key=link.erp_key)
        typer.echo(json.dumps(plain, indent=2, default=str))
        return
    if not rows:
        console.print("No open conflict.")
        return
    table = Table(title=f"{len(rows)} open conflict(s): coulisse conflicts resolve ID --take ...")
    for column in (
        "id",
        "entity",
        "CRM",
        "ERP",
        "field",
        "agreed before",
        "CRM value",
        "ERP value",
    ):
        table.add_column(column)
    for row in rows:
        link = links[row.link_id]
        table.add_row(
            str(row.id),
            row.entity,
            link.crm_key or "",
            link.erp_key or "",
            row.field,
            repr(row.base_value),
            repr(row.crm_value),
            repr(row.erp_value),
        )
    console.print(table)


@conflicts_app.command("resolve")
def conflicts_resolve(
    conflict_id: Annotated[int, typer.Argument(help="The id `coulisse conflicts list` shows.")],
    take: Annotated[str, typer.Option("--take", help="crm or erp: whose value both systems get.")],
) -> None:
    """Decide a conflict: the next `coulisse sync` writes the chosen value to the other system."""
    from coulisse.ledger import LedgerError

    choice = _side(take)
    if choice is None:
        raise typer.Exit(code=1)
    ledger = _ledger()
    try:
        ledger.resolve_conflict(conflict_id, choice=choice)
    except LedgerError as exc:
        errors.print(f"[bold red]resolve:[/] {exc}; `coulisse conflicts list` shows open ones")
        raise typer.Exit(code=1) from exc
    finally:
        ledger.close()
    console.print(
        f"conflict {conflict_id}: the {choice.upper()}'s value is kept; the next "
        "`coulisse sync` writes it to the other system."
    )


@links_app.command("find")
def links_find(
    record: Annotated[str, typer.Argument(help="A record's id in the CRM or in the ERP.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Which record of the other system ``record`` is linked to, for every kind of record."""
    from coulisse.model import ENTITIES

    ledger = _ledger()
    try:
        found = [
            link
            for entity in ENTITIES
            for side in ("crm", "erp")
            for link in ledger.links_for(entity, side, [record]).values()
        ]
    finally:
        ledger.close()
    unique = {link.id: link for link in found}
    rows = [
        {
            "link": link.id,
            "entity": link.entity,
            "crm": link.crm_key,
            "erp": link.erp_key,
            "origin": link.origin,
        }
        for link in unique.values()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        errors.print(f"{record!r} is linked to nothing (`coulisse links review` lists twins).")
        raise typer.Exit(code=1)
    for row in rows:
        console.print(
            f"link {row['link']}: {row['entity']} CRM {row['crm'] or '(not created yet)'} = "
            f"ERP {row['erp'] or '(not created yet)'} (linked by {row['origin']})"
        )


@links_app.command("link")
def links_link(
    crm: Annotated[str, typer.Argument(help="The record's id in the CRM.")],
    erp: Annotated[str, typer.Argument(help="The record's id in the ERP.")],
    entity: Annotated[
        str, typer.Option("--entity", help="client, product, order or invoice.")
    ] = "client",
) -> None:
    """Declare a CRM record and an ERP record the same (a twin no rule could find).

    The next `coulisse sync` merges them field by field under the policy; neither is created
    again in the other system. Refused when either is already linked to another record.
    """
    from coulisse.ledger import LedgerError
    from coulisse.ledger.status import plan_again

    kind = _entity(entity)
    ledger = _ledger()
    try:
        link = ledger.link(kind, crm, erp, origin="manual")
        plan_again(ledger, kind, crm_key=crm, erp_key=erp)
    except LedgerError as exc:
        errors.print(f"[bold red]link:[/] {exc}; `coulisse links find ID` shows its link")
        raise typer.Exit(code=1) from exc
    finally:
        ledger.close()
    console.print(
        f"link {link.id}: {kind} CRM {crm} = ERP {erp}; the next `coulisse sync` merges them."
    )
