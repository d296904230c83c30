"""Write the sample data's ERP side into Tryton: parties, then invoices brought to their state.

Idempotent: a party is found again by its VAT or SIREN identifier, or else by its exact name;
an invoice by its reference (the seed key, e.g. ``SEED-INV-00001``). What exists is not created
twice, and an invoice a previous run left half-way (created but not posted, posted but not
paid) is carried on to its target state.

Parties and invoices are written by the integration user, as Coulisse itself would; payments go
through the ``account.invoice.pay`` wizard, also as that user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import phonenumbers
from stdnum.eu import vat as eu_vat
from stdnum.fr import siren as fr_siren

from coulisse.tryton.rpc import TrytonError, TrytonUserError, TrytonUserWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from coulisse.stack.seed_data import SeedClient, SeedData, SeedInvoice, SeedLine
    from coulisse.tryton.rpc import TrytonClient

logger = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_SIZE = 100
CENT = Decimal("0.01")
PAY_WIZARD = "account.invoice.pay"
PARTIAL_SHARE = Decimal("0.40")  # what a partly paid invoice has received


@dataclass
class ErpSeedReport:
    """What a seed run did; ``refused`` holds (seed key, Tryton's message) pairs."""

    parties_created: int = 0
    parties_found: int = 0
    invoices_created: int = 0
    invoices_found: int = 0
    invoices_advanced: int = 0  # posted, paid or cancelled by this run
    refused: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Setup:
    """Ids the invoices need, read once from the ERP."""

    countries: dict[str, int]
    products: dict[str, dict[str, Any]]
    receivable: int
    journal: int
    payment_method: int
    net30: int
    upon_receipt: int


def today_in_paris() -> date:
    return datetime.now(tz=ZoneInfo("Europe/Paris")).date()


def seed_erp(
    client: TrytonClient,
    admin_client: TrytonClient,
    data: SeedData,
    *,
    today: date | None = None,
) -> ErpSeedReport:
    """Create the ERP clients and invoices of ``data`` that Tryton does not hold yet.

    ``client`` is the integration user; ``admin_client`` (Tryton's admin) is kept for steps
    the integration user may be refused (none with the stack's access groups today).
    """
    del admin_client  # every step works with the integration user's groups
    today = today or today_in_paris()
    report = ErpSeedReport()
    setup = _read_setup(client)
    parties = _ensure_parties(client, data, setup, report)
    _ensure_invoices(client, data, setup=setup, parties=parties, today=today, report=report)
    return report


# -- set-up ------------------------------------------------------------------------------------


def _read_setup(client: TrytonClient) -> _Setup:
    def model_data(module: str, fs_id: str) -> int:
        return int(client.model_call("ir.model.data", "get_id", module, fs_id))

    countries = {
        row["code"]: row["id"] for row in client.search_read("country.country", [], ["code"])
    }
    products: dict[str, dict[str, Any]] = {}
    rows = client.search_read(
        "product.product",
        [("code", "!=", None), ("salable", "=", True)],
        ["code", "default_uom", "template.account_category", "name"],
    )
    categories = {
        row["id"]: row
        for row in client.search_read(
            "product.category", [("accounting", "=", True)], ["account_revenue", "customer_taxes"]
        )
    }
    for row in rows:
        category = categories.get(row["template."]["account_category"] or -1)
        if category is None or category["account_revenue"] is None:
            continue
        products[row["code"]] = {
            "id": row["id"],
            "name": row["name"],
            "unit": row["default_uom"],
            "account": category["account_revenue"],
            "taxes": list(category["customer_taxes"]),
        }
    (configuration,) = client.read("account.configuration", [1], ["default_account_receivable"])
    journals = client.search("account.journal", [("type", "=", "revenue")], limit=1)
    methods = client.search("account.invoice.payment.method", [], limit=1)
    if not journals or not methods or configuration["default_account_receivable"] is None:
        raise TrytonError(
            "the ERP lacks a revenue journal, a payment method or a default receivable account: "
            "it was not prepared by `coulisse stack up` (run `coulisse stack reset`)."
        )
    return _Setup(
        countries=countries,
        products=products,
        receivable=int(configuration["default_account_receivable"]),
        journal=journals[0],
        payment_method=methods[0],
        net30=model_data("account_invoice", "payment_term_net30"),
        upon_receipt=model_data("account_invoice", "payment_term_0"),
    )


# -- parties -----------------------------------------------------------------------------------


def _identifiers(client: SeedClient) -> list[tuple[str, str]]:
    """The identifiers Tryton will accept: only valid numbers reach the ERP."""
    found = []
    if client.vat and eu_vat.is_valid(client.vat):
        found.append(("eu_vat", eu_vat.compact(client.vat)))
    if client.siren and fr_siren.is_valid(client.siren):
        found.append(("fr_siren", fr_siren.compact(client.siren)))
    return found


def _stored_form(code: str) -> str:
    return fr_siren.format(code) if code.isdigit() and fr_siren.is_valid(code) else code


def _valid_phone(raw: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, "FR")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _party_values(client: SeedClient, setup: _Setup) -> dict[str, Any]:
    address: dict[str, Any] = {
        "street": client.street,
        "postal_code": client.postal_code,
        "city": client.city,
    }
    if client.country in setup.countries:
        address["country"] = setup.countries[client.country]
    mechanisms = []
    phone = _valid_phone(client.erp_phone or client.phone)
    if phone:
        mechanisms.append({"type": "phone", "value": phone})
    if client.email and "@" in client.email and " " not in client.email:
        mechanisms.append({"type": "email", "value": client.email})
    if client.website:
        mechanisms.append({"type": "website", "value": client.website})
    values: dict[str, Any] = {
        "name": client.erp_name or client.name,
        "addresses": [("create", [address])],
        "contact_mechanisms": [("create", mechanisms)],
    }
    identifiers = _identifiers(client)
    if identifiers:
        values["identifiers"] = [
            ("create", [{"type": kind, "code": code} for kind, code in identifiers])
        ]
    return values


def _ensure_parties(
    client: TrytonClient, data: SeedData, setup: _Setup, report: ErpSeedReport
) -> dict[int, dict[str, Any]]:
    """Party id and first address per client index, creating the missing ones in batches."""
    wanted = data.erp_clients
    codes = sorted({code for _, c in wanted for _, code in _identifiers(c)})
    by_code: dict[str, int] = {}
    if codes:
        # Tryton stores a SIREN formatted ("732 829 320") and a VAT compact: look up both forms.
        stored = {_stored_form(code): code for code in codes}
        rows = client.search_read(
            "party.identifier", [("code", "in", sorted({*codes, *stored}))], ["code", "party"]
        )
        for row in rows:
            by_code[stored.get(row["code"], row["code"])] = row["party"]
    names = sorted({c.erp_name or c.name for _, c in wanted})
    by_name: dict[str, int] = {}
    for row in client.search_read("party.party", [("name", "in", names)], ["name"]):
        by_name.setdefault(row["name"], row["id"])

    found: dict[int, int] = {}
    missing: list[tuple[int, SeedClient]] = []
    for index, seed in wanted:
        party = next(
            (by_code[code] for _, code in _identifiers(seed) if code in by_code),
            by_name.get(seed.erp_name or seed.name),
        )
        if party is None:
            missing.append((index, seed))
        else:
            found[index] = party
    report.parties_found += len(found)

    for start in range(0, len(missing), BATCH_SIZE):
        batch = missing[start : start + BATCH_SIZE]
        values = [_party_values(seed, setup) for _, seed in batch]
        try:
            ids = client.create("party.party", values)
        except TrytonUserError:
            # One refused record fails the whole batch: retry one by one to keep the others.
            ids = []
            for (_, seed), one in zip(batch, values, strict=True):
                try:
                    ids.extend(client.create("party.party", [one]))
                except TrytonUserError as exc:
                    report.refused.append((seed.key, str(exc)))
                    ids.append(-1)
        for (index, _), party in zip(batch, ids, strict=True):
            if party >= 0:
                found[index] = party
                report.parties_created += 1

    addresses = {
        row["id"]: row["addresses"]
        for row in client.read("party.party", sorted(set(found.values())), ["addresses"])
    }
    return {
        index: {"id": party, "address": (addresses.get(party) or [None])[0]}
        for index, party in found.items()
    }


# -- invoices ----------------------------------------------------------------------------------


def _net_price(line: SeedLine) -> Decimal:
    """Unit price after the line's discount (plain account_invoice has no discount field)."""
    share = (Decimal(100) - line.discount_percent) / Decimal(100)
    return (line.unit_price * share).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def _invoice_values(
    invoice: SeedInvoice, party: dict[str, Any], setup: _Setup
) -> dict[str, Any] | str:
    """Values for ``account.invoice.create``, or why the invoice cannot be written."""
    if party["address"] is None:
        return "the client has no address in the ERP"
    lines = []
    for line in invoice.lines:
        product = setup.products.get(line.product_code)
        if product is None:
            return f"no salable product with code {line.product_code!r} in the ERP"
        lines.append(
            {
                "type": "line",
                "product": product["id"],
                "description": product["name"],
                # quantity is a Float field in Tryton (not money): sent as a JSON number
                "quantity": float(line.quantity),
                "unit": product["unit"],
                "unit_price": _net_price(line),
                "account": product["account"],
                "taxes": [("add", product["taxes"])],
            }
        )
    values: dict[str, Any] = {
        "type": "out",
        "party": party["id"],
        "invoice_address": party["address"],
        "account": setup.receivable,
        "journal": setup.journal,
        "reference": invoice.key,
        "description": f"Données de démonstration {invoice.key}",
        "invoice_date": invoice.invoice_date,
        "lines": [("create", lines)],
    }
    if invoice.due_date - invoice.invoice_date == timedelta(days=30):
        values["payment_term"] = setup.net30
    else:
        # Any other due date: the whole amount falls due on the payment term date.
        values["payment_term"] = setup.upon_receipt
        values["payment_term_date"] = invoice.due_date
    return values


def _read_invoices(client: TrytonClient, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = client.search_read(
        "account.invoice",
        [("type", "=", "out"), ("reference", "in", list(keys))],
        ["reference", "state", "total_amount", "amount_to_pay"],
    )
    return {row["reference"]: row for row in rows}


def _ensure_invoices(
    client: TrytonClient,
    data: SeedData,
    *,
    setup: _Setup,
    parties: dict[int, dict[str, Any]],
    today: date,
    report: ErpSeedReport,
) -> None:
    invoices = [i for i in data.invoices if i.client_index in parties]
    for invoice in data.invoices:
        if invoice.client_index not in parties:
            report.refused.append((invoice.key, "its client is not in the ERP"))
    keys = [i.key for i in invoices]
    existing = _read_invoices(client, keys) if keys else {}
    report.invoices_found += len(existing)

    to_create: list[tuple[SeedInvoice, dict[str, Any]]] = []
    for invoice in invoices:
        if invoice.key in existing:
            continue
        values = _invoice_values(invoice, parties[invoice.client_index], setup)
        if isinstance(values, str):
            report.refused.append((invoice.key, values))
        else:
            to_create.append((invoice, values))
    for start in range(0, len(to_create), BATCH_SIZE):
        batch = to_create[start : start + BATCH_SIZE]
        try:
            client.create("account.invoice", [values for _, values in batch])
            report.invoices_created += len(batch)
        except TrytonUserError:
            for invoice, values in batch:
                try:
                    client.create("account.invoice", [values])
                    report.invoices_created += 1
                except TrytonUserError as exc:
                    report.refused.append((invoice.key, str(exc)))

    current = _read_invoices(client, keys) if keys else {}
    _advance(client, invoices, current=current, setup=setup, today=today, report=report)


def _advance(
    client: TrytonClient,
    invoices: Sequence[SeedInvoice],
    *,
    current: dict[str, dict[str, Any]],
    setup: _Setup,
    today: date,
    report: ErpSeedReport,
) -> None:
    """Bring each invoice from where it is to its target state: cancel, post, then pay."""
    posting = {"posted", "overdue", "partially_paid", "paid"}
    to_cancel = [
        current[i.key]["id"]
        for i in invoices
        if i.key in current and i.state == "cancelled" and current[i.key]["state"] == "draft"
    ]
    # Tryton numbers invoices in date order (a number never goes to an earlier date than the
    # previous one): post the oldest first.
    to_post = sorted(
        (
            i
            for i in invoices
            if i.key in current and i.state in posting and current[i.key]["state"] == "draft"
        ),
        key=lambda i: (i.invoice_date, i.key),
    )
    # A posted customer invoice can only be cancelled when the company allows it (French
    # practice issues a credit note instead): the seed cancels its draft.
    if to_cancel:
        client.execute("account.invoice", "cancel", to_cancel)
        report.invoices_advanced += len(to_cancel)
    if to_post:
        ids = [current[i.key]["id"] for i in to_post]
        try:
            _post(client, ids)
            report.invoices_advanced += len(to_post)
        except TrytonUserError:
            for invoice in to_post:
                invoice_id = current[invoice.key]["id"]
                try:
                    _post(client, [invoice_id])
                    report.invoices_advanced += 1
                except TrytonUserError as exc:
                    report.refused.append((invoice.key, str(exc)))

    current = _read_invoices(client, [i.key for i in invoices])
    for invoice in invoices:
        row = current.get(invoice.key)
        if row is None or row["state"] != "posted":
            continue
        unpaid = row["amount_to_pay"] == row["total_amount"]
        if invoice.state == "paid":
            amount = row["amount_to_pay"]
        elif invoice.state == "partially_paid" and unpaid:
            amount = (row["total_amount"] * PARTIAL_SHARE).quantize(CENT, rounding=ROUND_HALF_UP)
        else:
            continue
        paid_on = min(today, invoice.invoice_date + timedelta(days=10))
        try:
            pay_invoice(
                client,
                row["id"],
                amount=amount,
                payment_method=setup.payment_method,
                paid_on=paid_on,
                description=invoice.key,
            )
            report.invoices_advanced += 1
        except TrytonUserError as exc:
            report.refused.append((invoice.key, str(exc)))


def _post(client: TrytonClient, ids: list[int]) -> None:
    accepting_warnings(client, lambda: client.execute("account.invoice", "post", ids))


def accepting_warnings(client: TrytonClient, call: Callable[[], T], limit: int = 50) -> T:
    """Run ``call``, accepting each Tryton warning as a clerk clicking "Yes" would, then retry.

    Seeded invoices are back-dated, so posting them warns that their due date is past; a
    warning is accepted once by ``res.user.warning.skip``, as the Tryton client does.
    """
    for _ in range(limit):
        try:
            return call()
        except TrytonUserWarning as warning:
            logger.info("accepting Tryton warning: %s", warning.message)
            client.model_call("res.user.warning", "skip", warning.name, False)
    return call()


def pay_invoice(
    client: TrytonClient,
    invoice_id: int,
    *,
    amount: Decimal,
    payment_method: int,
    paid_on: date,
    description: str,
) -> None:
    """Record a payment through the ``account.invoice.pay`` wizard, as a clerk would.

    The wizard's ``start`` form takes the amount, method and date; ``choice`` goes straight to
    ``pay`` for the full amount, or shows ``ask`` for a partial one, where ``partial`` keeps
    the rest due.
    """
    context = {
        "active_model": "account.invoice",
        "active_id": invoice_id,
        "active_ids": [invoice_id],
    }
    session, start_state, _ = client.wizard_create(PAY_WIZARD, context=context)
    try:
        view = client.wizard_execute(PAY_WIZARD, session, {}, start_state, context=context)
        start = _form(view["view"]["defaults"])
        start.update(
            amount=amount,
            payment_method=payment_method,
            date=paid_on,
            description=f"Paiement {description}",
        )
        result = client.wizard_execute(
            PAY_WIZARD, session, {"start": start}, "choice", context=context
        )
        if result.get("view", {}).get("state") == "ask":
            ask = _form(result["view"]["defaults"])
            ask["type"] = "partial"
            client.wizard_execute(
                PAY_WIZARD, session, {"start": start, "ask": ask}, "pay", context=context
            )
    finally:
        client.wizard_delete(PAY_WIZARD, session, context=context)


def _form(defaults: dict[str, Any]) -> dict[str, Any]:
    """A wizard form's values from its defaults, without the ``field.`` display companions."""
    return {key: value for key, value in defaults.items() if "." not in key}
