"""Canonical records shared by every connector: clients, products, orders and invoices."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

Side = Literal["crm", "erp"]
SIDES: tuple[Side, Side] = ("crm", "erp")
Entity = Literal["client", "product", "order", "invoice"]
#: Dependency order: an order needs its client and products, an invoice its client and order.
ENTITIES: tuple[Entity, ...] = ("client", "product", "order", "invoice")

OrderState = Literal["draft", "quotation", "confirmed", "processing", "done", "cancelled"]
InvoiceState = Literal["draft", "posted", "partially_paid", "paid", "cancelled"]
ORDER_STATES: tuple[str, ...] = get_args(OrderState)
INVOICE_STATES: tuple[str, ...] = get_args(InvoiceState)


def other_side(side: Side) -> Side:
    """The system facing ``side``: ``other_side("crm") == "erp"``."""
    return "erp" if side == "crm" else "crm"


def _blank_to_none(value: object) -> object:
    """Systems send "" and "   " for an empty field: both mean no value."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _to_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def _no_bool_amount(value: object) -> object:
    """``True`` is an int to Python; as an amount it is a mapping mistake."""
    if isinstance(value, bool):
        raise ValueError("a yes/no value is not an amount")
    return value


Text = Annotated[str | None, BeforeValidator(_blank_to_none)]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Amount = Annotated[Decimal, BeforeValidator(_no_bool_amount), Field(allow_inf_nan=False)]
OptionalAmount = Annotated[Amount | None, BeforeValidator(_blank_to_none)]
OptionalDate = Annotated[dt.date | None, BeforeValidator(_blank_to_none)]


class _Part(BaseModel):
    """A nested part of a record (an order line, a payment)."""

    model_config = ConfigDict(
        extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True, frozen=True
    )


class CanonicalRecord(BaseModel):
    """What every record carries: its id in each system, where it was read, and when it changed.

    Example:
        >>> Client(source="crm", crm_id="a1", name="Dupont SARL").entity
        'client'
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, coerce_numbers_to_str=True)

    entity: ClassVar[Entity]
    stream: ClassVar[str]
    #: Fields that identify a record or point at another one; never merged as data.
    reference_fields: ClassVar[tuple[str, ...]] = ()

    crm_id: Text = None
    erp_id: Text = None
    source: Side
    source_updated_at: UtcDatetime | None = None

    def key(self, side: Side) -> str | None:
        """The record's id in ``side``."""
        return self.crm_id if side == "crm" else self.erp_id

    @classmethod
    def data_fields(cls) -> tuple[str, ...]:
        """Fields whose values are synchronised (merged field by field)."""
        skip = {"crm_id", "erp_id", "source", "source_updated_at", *cls.reference_fields}
        return tuple(name for name in cls.model_fields if name not in skip)

    def data(self) -> dict[str, Any]:
        """The synchronised values, JSON-ready (Decimal kept, dates as ISO text)."""
        dumped = self.model_dump(mode="python", include=set(self.data_fields()))
        return {name: _plain(value) for name, value in dumped.items()}

    def plain(self) -> dict[str, Any]:
        """Every field, JSON-ready (Decimal kept, dates and times as ISO text)."""
        return {name: _plain(value) for name, value in self.model_dump(mode="python").items()}


def _plain(value: Any) -> Any:
    """Dates as ISO text and nested parts as dicts, so values compare and hash the same way."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class Client(CanonicalRecord):
    """A customer: a CRM account and a Tryton party.

    The CRM owns who the client is and how to reach them; the ERP owns the fiscal status
    (``erp_code``, ``balance_due``, ``overdue_amount``, ``last_invoice_date``).
    """

    entity: ClassVar[Entity] = "client"
    stream: ClassVar[str] = "clients"

    name: Text = None
    vat: Text = None
    siren: Text = None
    siret: Text = None
    iban: Text = None
    email: Text = None
    phone: Text = None
    website: Text = None
    billing_street: Text = None
    billing_postal_code: Text = None
    billing_city: Text = None
    billing_country: Text = None
    active: bool = True
    erp_code: Text = None
    currency: Text = None
    balance_due: OptionalAmount = None
    overdue_amount: OptionalAmount = None
    last_invoice_date: OptionalDate = None


class Product(CanonicalRecord):
    """A catalogue item that order and invoice lines point at by ``code`` (the SKU)."""

    entity: ClassVar[Entity] = "product"
    stream: ClassVar[str] = "products"

    code: Text = None
    name: Text = None
    unit_price: OptionalAmount = None
    currency: Text = None
    active: bool = True


class OrderLine(_Part):
    """One line of an order: a product by its code, a quantity and a unit price."""

    product_code: Text = None
    description: Text = None
    quantity: Amount
    unit_price: Amount


class Order(CanonicalRecord):
    """A CRM deal that becomes a Tryton sale; the CRM's until the sale is confirmed."""

    entity: ClassVar[Entity] = "order"
    stream: ClassVar[str] = "orders"
    reference_fields: ClassVar[tuple[str, ...]] = ("client_crm_id", "client_erp_id")

    client_crm_id: Text = None
    client_erp_id: Text = None
    #: The deal's name; the sale's description in the ERP.
    name: Text = None
    number: Text = None
    state: OrderState | None = None
    #: The ERP's progress words, mirrored as they are: Tryton's ``shipment_state`` (none,
    #: waiting, partially shipped, sent, exception) and ``invoice_state`` (none, waiting,
    #: partially paid, paid, exception).
    shipment_state: Text = None
    invoice_state: Text = None
    order_date: OptionalDate = None
    currency: Text = None
    lines: list[OrderLine] = Field(default_factory=list)
    untaxed_amount: OptionalAmount = None
    tax_amount: OptionalAmount = None
    total_amount: OptionalAmount = None


class InvoiceLine(_Part):
    """One invoice line; ``tax_rate`` is a fraction (0.20 for 20 %)."""

    product_code: Text = None
    description: Text = None
    quantity: Amount
    unit_price: Amount
    tax_rate: OptionalAmount = None


class TaxTotal(_Part):
    """The tax of an invoice at one rate: what it applies to (``base``) and how much."""

    rate: Amount
    base: Amount
    amount: Amount


class Payment(_Part):
    """A payment received against an invoice."""

    payment_date: dt.date
    amount: Amount
    reference: Text = None


class Invoice(CanonicalRecord):
    """A customer invoice; the ERP's once posted, the CRM then only mirrors its status."""

    entity: ClassVar[Entity] = "invoice"
    stream: ClassVar[str] = "invoices"
    reference_fields: ClassVar[tuple[str, ...]] = (
        "client_crm_id",
        "client_erp_id",
        "order_crm_id",
        "order_erp_id",
    )

    client_crm_id: Text = None
    client_erp_id: Text = None
    order_crm_id: Text = None
    order_erp_id: Text = None
    number: Text = None
    state: InvoiceState | None = None
    invoice_date: OptionalDate = None
    due_date: OptionalDate = None
    currency: Text = None
    lines: list[InvoiceLine] = Field(default_factory=list)
    taxes: list[TaxTotal] = Field(default_factory=list)
    untaxed_amount: OptionalAmount = None
    tax_amount: OptionalAmount = None
    total_amount: OptionalAmount = None
    amount_due: OptionalAmount = None
    #: Due before today and not fully paid (the ERP's reading; the calendar changes it).
    overdue: bool | None = None
    payments: list[Payment] = Field(default_factory=list)


MODELS: dict[Entity, type[CanonicalRecord]] = {
    "client": Client,
    "product": Product,
    "order": Order,
    "invoice": Invoice,
}
STREAMS: dict[str, Entity] = {model.stream: entity for entity, model in MODELS.items()}
