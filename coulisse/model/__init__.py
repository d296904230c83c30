"""The canonical model: what a client, product, order and invoice are, whichever system says so."""

from __future__ import annotations

from coulisse.model.records import (
    ENTITIES,
    INVOICE_STATES,
    MODELS,
    ORDER_STATES,
    SIDES,
    STREAMS,
    CanonicalRecord,
    Client,
    Entity,
    Invoice,
    InvoiceLine,
    InvoiceState,
    Order,
    OrderLine,
    OrderState,
    Payment,
    Product,
    Side,
    TaxTotal,
    other_side,
)
from coulisse.model.schema import entity_schema, stream_schema

__all__ = [
    "ENTITIES",
    "INVOICE_STATES",
    "MODELS",
    "ORDER_STATES",
    "SIDES",
    "STREAMS",
    "CanonicalRecord",
    "Client",
    "Entity",
    "Invoice",
    "InvoiceLine",
    "InvoiceState",
    "Order",
    "OrderLine",
    "OrderState",
    "Payment",
    "Product",
    "Side",
    "TaxTotal",
    "entity_schema",
    "other_side",
    "stream_schema",
]
