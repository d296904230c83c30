"""The `coulisse` command: the local stack today; sync, status and review queues as they land."""

from __future__ import annotations

import typer

from coulisse.planner.cli import plan
from coulisse.stack.cli import app as stack_app

app = typer.Typer(
    help=(
        "Coulisse keeps a CRM (BottleCRM) and an accounting ERP (Tryton) in step, both ways: "
        "clients, orders, invoices and the product catalogue."
    ),
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")
app.command("plan")(plan)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
