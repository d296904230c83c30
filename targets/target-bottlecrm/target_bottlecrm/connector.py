"""BottleCRM's accounts as target-bottlecrm reads and writes them, and the canonical mapping.

Every CRM call of the target goes through :class:`AccountsConnector`; the functions around it
translate between a canonical :class:`~coulisse.model.Client` and an account. Account values are
handled flat, custom fields as ``custom_fields.<key>``, so that comparing what an account holds
with what it should hold, and writing only the difference, is one loop:

>>> from decimal import Decimal
>>> from coulisse.model import Client
>>> client = Client(source="erp", erp_id="77", balance_due=Decimal("1234.5"), currency="EUR")
>>> account_values(client, ["balance_due"])
{'custom_fields.erp_balance_due': '1234.50 EUR'}
>>> patch_body({"city": "Lyon", "custom_fields.erp_ref": "77"})
{'city': 'Lyon', 'custom_fields': {'erp_ref': '77'}}
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.custom_fields import COULISSE_FIELDS, existing_definitions
from coulisse.bottlecrm.money import format_money, parse_money

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from coulisse.bottlecrm.client import BottleCrmClient, CrmApiError
    from coulisse.model import Client

CUSTOM = "custom_fields."
#: Where each canonical client field lives on an account. SIRET and IBAN have no home in the
#: CRM; the currency is part of each amount's text ("1234.50 EUR").
HOMES: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "email": ("email",),
    "phone": ("phone",),
    "website": ("website",),
    "billing_street": ("address_line",),
    "billing_postal_code": ("postcode",),
    "billing_city": ("city",),
    "billing_country": ("country",),
    "active": ("is_active",),
    "vat": (f"{CUSTOM}vat",),
    "siren": (f"{CUSTOM}siren",),
    "erp_id": (f"{CUSTOM}erp_ref",),
    "erp_code": (f"{CUSTOM}erp_client_code",),
    "last_invoice_date": (f"{CUSTOM}erp_last_invoice_date",),
    "balance_due": (f"{CUSTOM}erp_balance_due",),
    "overdue_amount": (f"{CUSTOM}erp_overdue_amount",),
    "currency": (f"{CUSTOM}erp_balance_due", f"{CUSTOM}erp_overdue_amount"),
}
#: The ERP's status mirrored on the account: the ERP's to write, whatever the account holds.
ERP_STATUS = frozenset(
    {"erp_id", "erp_code", "currency", "balance_due", "overdue_amount", "last_invoice_date"}
)
#: The account custom fields the target writes; BottleCRM silently drops unknown keys.
REQUIRED_CUSTOM_FIELDS = tuple(
    spec.key for spec in COULISSE_FIELDS if spec.target_model == "Account"
)
SCOPES = "accounts:read, accounts:write and custom-fields:read"
_OPEN = ("active_accounts", "open_accounts")
_CLOSED = ("closed_accounts", "close_accounts")
_NAME_TAKEN = "already exists"
_MONEY_FIELDS = frozenset({"balance_due", "overdue_amount"})


class CrmSetupError(RuntimeError):
    """The CRM is not ready for Coulisse (a custom field is missing); nothing can be written."""


class MissingCurrencyError(ValueError):
    """An amount came without its currency: it cannot be written as "1234.50 EUR"."""


def account_key(account: Mapping[str, Any], key: str) -> Any:
    """The value of a flat key (``city``, ``custom_fields.vat``) on an account row."""
    if key.startswith(CUSTOM):
        return (account.get("custom_fields") or {}).get(key.removeprefix(CUSTOM))
    return account.get(key)


def account_value(client: Client, key: str) -> Any:
    """What the account key ``key`` should hold for ``client``, as the CRM stores it."""
    simple = {
        "name": client.name,
        "email": client.email,
        "phone": client.phone,
        "website": client.website,
        "address_line": client.billing_street,
        "postcode": client.billing_postal_code,
        "city": client.billing_city,
        "country": client.billing_country,
        "is_active": client.active,
        f"{CUSTOM}vat": client.vat,
        f"{CUSTOM}siren": client.siren,
        f"{CUSTOM}erp_ref": client.erp_id,
        f"{CUSTOM}erp_client_code": client.erp_code,
    }
    if key in simple:
        return simple[key]
    if key == f"{CUSTOM}erp_last_invoice_date":
        return client.last_invoice_date.isoformat() if client.last_invoice_date else None
    amount = {
        f"{CUSTOM}erp_balance_due": client.balance_due,
        f"{CUSTOM}erp_overdue_amount": client.overdue_amount,
    }[key]
    if amount is None:
        return None
    if not client.currency:
        raise MissingCurrencyError(f"{key.removeprefix(CUSTOM)} {amount} has no currency")
    return format_money(amount, client.currency)


def account_values(client: Client, fields: Iterable[str]) -> dict[str, Any]:
    """The account keys holding ``fields`` (canonical names), with ``client``'s values."""
    return {key: account_value(client, key) for name in fields for key in HOMES.get(name, ())}


def same_stored(key: str, current: Any, wanted: Any) -> bool:
    """True when an account key already holds ``wanted`` (blank and None are alike)."""
    if key == "is_active":
        return bool(True if current is None else current) == bool(wanted)
    return _text(current) == _text(wanted)


def is_blank(key: str, value: Any) -> bool:
    """True when an account key holds nothing (a yes/no field always holds something)."""
    return key != "is_active" and _text(value) is None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def same_canonical(name: str, left: Any, right: Any) -> bool:
    """True when two canonical values of field ``name`` are the same (1234.5 == "1234.50")."""
    if name == "active":
        return bool(True if left is None else left) == bool(True if right is None else right)
    left_text, right_text = _text(left), _text(right)
    if left_text is None or right_text is None:
        return left_text == right_text
    if name in _MONEY_FIELDS:
        try:
            return Decimal(left_text) == Decimal(right_text)
        except InvalidOperation:
            return left_text == right_text
    if name == "last_invoice_date":
        return left_text[:10] == right_text[:10]
    return left_text == right_text


def patch_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH (or POST) body from flat account keys; custom fields nested, merged on PATCH."""
    body: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(CUSTOM):
            body.setdefault("custom_fields", {})[key.removeprefix(CUSTOM)] = value
        else:
            body[key] = value
    return body


def canonical_field(key: str) -> str:
    """The canonical field an account key holds (for messages and quarantine)."""
    for name, homes in HOMES.items():
        if key in homes and name != "currency":
            return name
    return key.removeprefix(CUSTOM)


def canonical_client(
    account: Mapping[str, Any], contacts: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """An account as tap-bottlecrm emits it (``ClientsStream.post_process``).

    What the CRM stored after a write is passed to the ledger in this form, so that reading it
    back at the next observation is recognised as our own write. ``contacts`` are the account's
    contacts, the earliest one filling a missing email or phone, as the tap does.
    """
    custom = account.get("custom_fields") or {}
    primary: Mapping[str, Any] = {}
    own = [c for c in contacts if str(c.get("account") or "") == str(account["id"])]
    if own:
        primary = min(own, key=lambda c: str(c.get("created_at") or ""))
    record: dict[str, Any] = {
        "crm_id": str(account["id"]),
        "erp_id": custom.get("erp_ref") or None,
        "source": "crm",
        "source_updated_at": account.get("updated_at"),
        "name": account.get("name"),
        "vat": custom.get("vat"),
        "siren": custom.get("siren"),
        "siret": None,
        "iban": None,
        "email": account.get("email") or primary.get("email"),
        "phone": account.get("phone") or primary.get("phone"),
        "website": account.get("website"),
        "billing_street": account.get("address_line"),
        "billing_postal_code": account.get("postcode"),
        "billing_city": account.get("city"),
        "billing_country": account.get("country"),
        "active": bool(account.get("is_active", True)),
        "erp_code": custom.get("erp_client_code"),
        "currency": None,
        "last_invoice_date": custom.get("erp_last_invoice_date"),
    }
    for name, key in (("balance_due", "erp_balance_due"), ("overdue_amount", "erp_overdue_amount")):
        try:
            amount, currency = parse_money(custom.get(key))
        except ValueError:
            record[name] = custom.get(key)
            continue
        record[name] = amount
        if currency:
            record["currency"] = currency
    return record


def _compact(value: Any) -> str:
    return re.sub(r"[^0-9A-Z]", "", str(value or "").upper())


def same_company(account: Mapping[str, Any], client: Client) -> str | None:
    """How an account is known to be ``client`` ("same VAT ..."), or None when it is not.

    A French VAT number holds the SIREN (``FR`` + 2-digit key + SIREN), so a VAT on one side
    and a SIREN on the other can prove it too.
    """
    custom = account.get("custom_fields") or {}
    vat, siren = _compact(custom.get("vat")), _compact(custom.get("siren"))
    client_vat, client_siren = _compact(client.vat), _compact(client.siren)
    if vat and vat == client_vat:
        return f"same VAT {client.vat}"
    sirens = {s for s in (siren, vat[4:] if vat.startswith("FR") else "") if len(s) == 9}
    client_sirens = {
        s
        for s in (client_siren, client_vat[4:] if client_vat.startswith("FR") else "")
        if len(s) == 9
    }
    common = sirens & client_sirens
    if common:
        return f"same SIREN {min(common)}"
    return None


def field_errors(exc: CrmApiError) -> dict[str, str]:
    """A 400's errors by account key (``name``, ``custom_fields.vat``), from its detail.

    BottleCRM answers ``{"errors": {"name": ["Account already exists with this name"]}}``;
    the client keeps that dict as text, which is read back here.
    """
    try:
        errors = ast.literal_eval(exc.detail)
    except (ValueError, SyntaxError):
        return {}
    if not isinstance(errors, dict):
        return {}
    found: dict[str, str] = {}
    for key, value in errors.items():
        if key == "custom_fields" and isinstance(value, dict):
            for custom_key, message in value.items():
                found[f"{CUSTOM}{custom_key}"] = _message(message)
        else:
            found[str(key)] = _message(value)
    return found


def _message(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(item) for item in value)
    return str(value)


def name_taken(exc: CrmApiError) -> bool:
    """True when a 400 says the account name is already used in the organisation."""
    return exc.status == 400 and _NAME_TAKEN in field_errors(exc).get("name", "")


def name_key(name: Any) -> str:
    """How BottleCRM compares account names: unique per organisation, ignoring case."""
    return str(name or "").strip().lower()


@dataclass
class AccountIndex:
    """The organisation's accounts by ERP reference and by name, read once per batch."""

    by_ref: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_name: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, account: dict[str, Any]) -> None:
        """Index (or re-index) one account."""
        ref = (account.get("custom_fields") or {}).get("erp_ref")
        if ref:
            self.by_ref[str(ref)] = account
        self.by_name[name_key(account.get("name"))] = account


@dataclass(frozen=True)
class Account:
    """One account as its detail page shows it, with its contacts."""

    row: dict[str, Any]
    contacts: list[dict[str, Any]]

    @property
    def id(self) -> str:
        """The account id."""
        return str(self.row["id"])

    def canonical(self) -> dict[str, Any]:
        """The account as tap-bottlecrm would emit it."""
        return canonical_client(self.row, self.contacts)


class AccountsConnector:
    """Every call target-bottlecrm makes to BottleCRM, through :class:`BottleCrmClient`.

    Accounts are only ever written with POST and PATCH: PUT clears the assigned advisors,
    tags, teams and contacts left out of its body.
    """

    def __init__(self, client: BottleCrmClient, *, page_size: int = 5000) -> None:
        """Call BottleCRM through ``client``, reading lists ``page_size`` accounts at a time."""
        self.client = client
        self.page_size = page_size
        self._checked = False

    def check_custom_fields(self) -> None:
        """Fail once, before any write, when a custom field Coulisse writes is missing.

        BottleCRM drops unknown custom-field keys without a word: without ``erp_ref`` a lost
        answer could no longer be recognised, and every rerun would create the client again.
        """
        if self._checked:
            return
        definitions = existing_definitions(self.client)
        missing = [
            key
            for key in REQUIRED_CUSTOM_FIELDS
            if not (definitions.get(("Account", key)) or {}).get("is_active", False)
        ]
        if missing:
            raise CrmSetupError(
                "BottleCRM has no active account custom field "
                + ", ".join(missing)
                + "; it would silently drop those values. Create them with `coulisse doctor "
                "--fix` (locally `coulisse stack up` does it), then run again."
            )
        self._checked = True

    def accounts(self) -> AccountIndex:
        """Every account, open and closed, in few large pages (never ``?cf_`` filters)."""
        index = AccountIndex()
        offset = 0
        while True:
            page = self.client.get("accounts/", limit=self.page_size, offset=offset)
            rows = {path: _dig(page, path) for path in (_OPEN, _CLOSED)}
            for found in rows.values():
                for row in found:
                    index.add(row)
            if all(len(found) < self.page_size for found in rows.values()):
                return index
            offset += self.page_size

    def account(self, account_id: str) -> Account:
        """One account with its contacts (raises ``CrmApiError`` 404 when it is gone)."""
        payload = self.client.get(f"accounts/{account_id}/")
        return Account(row=payload["account_obj"], contacts=list(payload.get("contacts") or []))

    def create(self, body: Mapping[str, Any]) -> str:
        """Create an account; its new id."""
        answer = self.client.post("accounts/", dict(body))
        return str(answer["id"])

    def update(self, account_id: str, body: Mapping[str, Any]) -> None:
        """Change only the keys in ``body``; custom fields are merged, advisors and tags kept."""
        self.client.patch(f"accounts/{account_id}/", dict(body))


def _dig(payload: Any, path: tuple[str, ...]) -> list[dict[str, Any]]:
    node = payload
    for key in path:
        node = node.get(key, []) if isinstance(node, dict) else []
    return node if isinstance(node, list) else []
