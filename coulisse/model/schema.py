"""Singer stream schemas generated from the canonical models.

Connector taps emit with the *permissive* schema: every value may also arrive as text or be
missing, so a malformed VAT number or an amount written "12,50" reaches the ledger, where the
planner quarantines it with a reason, instead of failing the whole stream. ``tap-ledger`` emits
with the *strict* schema: what it sends has passed validation.

Example:
    >>> stream_schema(Product, permissive=True)["properties"]["unit_price"]
    {'type': ['number', 'string', 'null']}
    >>> stream_schema(Product, permissive=False)["properties"]["unit_price"]
    {'type': ['number', 'null']}
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from decimal import Decimal
from typing import Any, Literal, get_args, get_origin

from pydantic import AwareDatetime, BaseModel

from coulisse.model.records import MODELS, CanonicalRecord, Entity

JsonSchema = dict[str, Any]

_SCALARS: dict[type, tuple[str, str | None]] = {
    str: ("string", None),
    bool: ("boolean", None),
    int: ("integer", None),
    Decimal: ("number", None),
    dt.datetime: ("string", "date-time"),
    AwareDatetime: ("string", "date-time"),
    dt.date: ("string", "date"),
}


def _unwrap(annotation: Any) -> tuple[list[Any], bool]:
    """Split ``Annotated[X | None, ...]`` into its member types and whether None is allowed."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        members: list[Any] = []
        nullable = False
        for arg in get_args(annotation):
            inner, inner_nullable = _unwrap(arg)
            members.extend(inner)
            nullable = nullable or inner_nullable
        return members, nullable
    if annotation is type(None):
        return [], True
    return [annotation], False


def _property(annotation: Any, *, permissive: bool) -> JsonSchema:
    members, nullable = _unwrap(annotation)
    if len(members) != 1:
        msg = f"cannot map {annotation!r} to a JSON schema"
        raise TypeError(msg)
    member = members[0]
    schema: JsonSchema
    if get_origin(member) is Literal:
        schema = {"type": ["string"]}
        if not permissive:
            schema["enum"] = [*get_args(member), *([None] if nullable else [])]
    elif get_origin(member) is list:
        (item,) = get_args(member)
        schema = {"type": ["array"], "items": _property(item, permissive=permissive)}
    elif isinstance(member, type) and issubclass(member, BaseModel):
        schema = _object(member, permissive=permissive)
    else:
        json_type, json_format = _SCALARS[member]
        schema = {"type": [json_type]}
        if json_format and not permissive:
            schema["format"] = json_format
    if permissive and schema["type"][0] not in {"string", "array", "object"}:
        schema["type"].append("string")
    if nullable or permissive:
        schema["type"].append("null")
    return schema


def _object(model: type[BaseModel], *, permissive: bool) -> JsonSchema:
    properties = {
        name: _property(field.annotation, permissive=permissive)
        for name, field in model.model_fields.items()
    }
    return {"type": ["object"], "properties": properties}


def stream_schema(model: type[CanonicalRecord], *, permissive: bool = True) -> JsonSchema:
    """The Singer schema of a canonical stream (``clients``, ``products``...)."""
    schema = _object(model, permissive=permissive)
    schema["type"] = "object"
    # The SDK drops and warns about properties it does not know; taps may add their own.
    schema["additionalProperties"] = True
    return schema


def entity_schema(entity: Entity, *, permissive: bool = True) -> JsonSchema:
    """:func:`stream_schema` by entity name: ``entity_schema("client")``."""
    return stream_schema(MODELS[entity], permissive=permissive)
