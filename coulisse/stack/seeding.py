"""`coulisse stack seed`: one deterministic data set, written to both systems."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from coulisse.stack.crm_seed import seed_crm
from coulisse.stack.erp_seed import seed_erp
from coulisse.stack.errors import StackError
from coulisse.stack.seed_data import SeedProduct, build_seed_data

if TYPE_CHECKING:
    from rich.console import Console

    from coulisse.stack.local import LocalStack


def erp_catalogue(stack: LocalStack) -> list[SeedProduct]:
    """The ERP's salable products with a code: the catalogue both systems share."""
    rows = stack.erp.client().search_read(
        "product.product",
        [("salable", "=", True), ("code", "!=", None)],
        # list_price is empty on variants in Tryton 8.2: list_price_used is the template's.
        ["code", "name", "list_price_used"],
        order=[("code", "ASC")],
    )
    return [
        SeedProduct(
            code=str(r["code"]), name=str(r["name"]), unit_price=Decimal(r["list_price_used"])
        )
        for r in rows
    ]


def seed_stack(
    stack: LocalStack, *, clients: int, random_seed: int = 20261126, console: Console | None = None
) -> dict[str, Any]:
    """Seed both systems (they must be running); returns what was created where."""
    if not (stack.crm.is_running() and stack.erp.is_running()):
        raise StackError("both systems must be running to seed: run `coulisse stack up` first")
    catalogue = erp_catalogue(stack)
    if not catalogue:
        raise StackError("the ERP has no salable product with a code: run `coulisse stack reset`")
    today = datetime.now(UTC).date()
    data = build_seed_data(catalogue, clients=clients, seed=random_seed, today=today)
    say = console.print if console is not None else (lambda *_a, **_k: None)

    say(f"Seeding the ERP: {len(data.erp_clients)} clients, {len(data.invoices)} invoices...")
    # Bulk writes (hundreds of invoices posted in one call): minutes, not the sync's 30 s, on a
    # busy machine, so a slow answer is not mistaken for a lost one.
    erp_report = seed_erp(stack.erp.client(timeout=600), stack.erp.admin_client(timeout=600), data)

    say(
        f"Seeding the CRM: {len(data.crm_clients)} accounts with contacts, "
        f"{len(data.deals)} deals, {len(data.products)} products..."
    )
    done = {"accounts": 0, "deals": 0}
    step = max(1, len(data.crm_clients) // 10)

    def progress(what: str, count: int) -> None:
        if what in done:
            done[what] += count
            if done[what] % step == 0:
                say(f"  CRM {what}: {done[what]}")

    crm_report = seed_crm(
        stack.crm.client(),
        data,
        advisor_profile_ids=stack.advisor_profile_ids(),
        won_stage=stack.won_stage(),
        progress=progress,
    )
    if crm_report.errors:
        raise StackError(
            f"the CRM refused {len(crm_report.errors)} seed records, first: {crm_report.errors[0]}"
        )
    return {
        "clients": clients,
        "seed": random_seed,
        "crm": dataclasses.asdict(crm_report),
        "erp": erp_report if isinstance(erp_report, dict) else _as_dict(erp_report),
    }


def _as_dict(report: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return dataclasses.asdict(report)
    return {"report": str(report)}
