"""Write the CRM half of the sample data through BottleCRM's REST API, idempotently.

A second seed finds what the first created (accounts and deals by name, products by SKU,
contacts by email) and creates nothing twice.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.client import CrmApiError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from coulisse.bottlecrm.client import BottleCrmClient
    from coulisse.stack.seed_data import SeedClient, SeedData, SeedDeal


@dataclass
class CrmSeedReport:
    products_created: int = 0
    accounts_created: int = 0
    contacts_created: int = 0
    deals_created: int = 0
    deals_won: int = 0
    errors: list[str] = field(default_factory=list)


def _list_all(client: BottleCrmClient, path: str, key: str) -> list[dict[str, Any]]:
    """Every row of a list endpoint, read with few, large pages (``limit`` has no maximum)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    page = 5000
    while True:
        payload = client.get(path, limit=page, offset=offset)
        batch = _dig(payload, key)
        rows.extend(batch)
        if len(batch) < page:
            return rows
        offset += page


def _dig(payload: Any, key: str) -> list[dict[str, Any]]:
    node = payload
    for part in key.split("."):
        node = node[part]
    return list(node)


def existing_accounts(client: BottleCrmClient) -> dict[str, str]:
    """Account ids by lower-cased name, open and closed (names are unique ignoring case)."""
    open_rows = _list_all(client, "accounts/", "active_accounts.open_accounts")
    # One more read for closed accounts: same endpoint, other key.
    closed = client.get("accounts/", limit=100000)["closed_accounts"]["close_accounts"]
    return {str(row["name"]).lower(): str(row["id"]) for row in [*open_rows, *closed]}


def seed_crm(
    client: BottleCrmClient,
    data: SeedData,
    *,
    advisor_profile_ids: list[str],
    won_stage: str,
    progress: Callable[[str, int], None] | None = None,
    workers: int = 6,
) -> CrmSeedReport:
    """Create the CRM's products, accounts (with contacts) and deals (with line items)."""
    report = CrmSeedReport()
    tick = progress or (lambda _what, _n: None)

    products = {
        str(row["sku"]): str(row["id"])
        for row in _list_all(client, "invoices/products/", "results")
        if row.get("sku")
    }
    for product in data.products:
        if product.code in products:
            continue
        answer = client.post(
            "invoices/products/",
            {
                "name": product.name,
                "sku": product.code,
                "price": str(product.unit_price),
                "currency": product.currency,
            },
        )
        products[product.code] = str(answer["product"]["id"])
        report.products_created += 1
    tick("products", len(data.products))

    accounts = existing_accounts(client)
    todo = [c for _, c in data.crm_clients if c.name.lower() not in accounts]

    def create_account(seed_client: SeedClient) -> tuple[SeedClient, str | None, str | None]:
        try:
            return seed_client, _create_account(client, seed_client, advisor_profile_ids), None
        except CrmApiError as exc:
            return seed_client, None, f"{seed_client.name}: {exc}"

    for seed_client, account_id, error in _parallel(
        create_account, todo, workers, tick, "accounts"
    ):
        if error:
            report.errors.append(error)
        elif account_id:
            accounts[seed_client.name.lower()] = account_id
            report.accounts_created += 1

    emails = {
        str(row["email"]).lower()
        for row in _list_all(client, "contacts/", "results")
        if row["email"]
    }
    missing = [
        (c, accounts[c.name.lower()])
        for _, c in data.crm_clients
        if c.email.lower() not in emails and c.name.lower() in accounts
    ]

    def create_contact(item: tuple[SeedClient, str]) -> str | None:
        seed_client, account_id = item
        try:
            _create_contact(client, seed_client, account_id, advisor_profile_ids)
        except CrmApiError as exc:
            return f"{seed_client.name}'s contact: {exc}"
        return None

    for error in _parallel(create_contact, missing, workers, tick, "contacts"):
        if error:
            report.errors.append(error)
        else:
            report.contacts_created += 1

    deals = {
        str(row["name"]).lower() for row in _list_all(client, "opportunities/", "opportunities")
    }
    pending = [d for d in data.deals if d.name.lower() not in deals]

    def create_deal(deal: SeedDeal) -> tuple[bool, str | None]:
        account_id = accounts.get(data.clients[deal.client_index].name.lower())
        if account_id is None:
            return False, f"{deal.name}: its account was not created"
        try:
            _create_deal(
                client,
                deal,
                account_id=account_id,
                products=products,
                advisors=advisor_profile_ids,
                won_stage=won_stage,
                data=data,
            )
        except CrmApiError as exc:
            return False, f"{deal.name}: {exc}"
        return deal.won, None

    for won, error in _parallel(create_deal, pending, workers, tick, "deals"):
        if error:
            report.errors.append(error)
        else:
            report.deals_created += 1
            report.deals_won += int(won)
    return report


def _parallel(
    work: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    tick: Callable[[str, int], None],
    what: str,
) -> list[Any]:
    results = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(work, items):
            results.append(result)
            tick(what, 1)
    return results


def _create_account(client: BottleCrmClient, seed: SeedClient, advisors: list[str]) -> str:
    custom_fields = {k: v for k, v in (("vat", seed.vat), ("siren", seed.siren)) if v}
    body: dict[str, Any] = {
        "name": seed.name,
        "email": seed.email,
        "phone": seed.phone,
        "website": seed.website,
        "address_line": seed.street,
        "postcode": seed.postal_code,
        "city": seed.city,
        "country": seed.country,
        "currency": "EUR",
        "custom_fields": custom_fields,
    }
    if advisors:
        body["assigned_to"] = [advisors[seed.advisor % len(advisors)]]
    return str(client.post("accounts/", body)["id"])


def _create_contact(
    client: BottleCrmClient, seed: SeedClient, account_id: str, advisors: list[str]
) -> None:
    body: dict[str, Any] = {
        "first_name": seed.contact_first_name,
        "last_name": seed.contact_last_name,
        "email": seed.email,
        "phone": seed.phone,
        "account": account_id,
        "title": "Responsable administratif",
    }
    if advisors:
        body["assigned_to"] = [advisors[seed.advisor % len(advisors)]]
    client.post("contacts/", body)


def _create_deal(
    client: BottleCrmClient,
    deal: SeedDeal,
    *,
    account_id: str,
    products: dict[str, str],
    advisors: list[str],
    won_stage: str,
    data: SeedData,
) -> None:
    seed_client = data.clients[deal.client_index]
    body: dict[str, Any] = {"name": deal.name, "account": account_id, "currency": "EUR"}
    if advisors:
        body["assigned_to"] = [advisors[seed_client.advisor % len(advisors)]]
    if not deal.won:
        body["closed_on"] = deal.close_date.isoformat()
    deal_id = str(client.post("opportunities/", body)["id"])
    for order, line in enumerate(deal.lines):
        item: dict[str, Any] = {
            "product_id": products[line.product_code],
            "quantity": str(line.quantity),
            "unit_price": str(line.unit_price),
            "order": order,
        }
        if line.discount_percent:
            item["discount_type"] = "PERCENTAGE"
            item["discount_value"] = str(line.discount_percent)
        client.post(f"opportunities/{deal_id}/line-items/", item)
    if deal.won:
        # A deal is won when its stage's kind is `won`; the CRM then wants the close date (the
        # amount is computed from the line items).
        client.patch(
            f"opportunities/{deal_id}/",
            {"stage": won_stage, "closed_on": deal.close_date.isoformat()},
        )
