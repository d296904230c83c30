"""Canonical JSON for the ledger: sorted keys, exact decimals, and content hashes built on it.

Example:
    >>> from decimal import Decimal
    >>> dumps({"b": Decimal("12.50"), "a": None})
    '{"a":null,"b":12.50}'
    >>> loads('{"amount": 12.50}')
    {'amount': Decimal('12.50')}
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Not part of a record's content: when the source says it changed, and Singer's own metadata.
VOLATILE_FIELDS = frozenset({"source_updated_at"})

_encoder = msgspec.json.Encoder(decimal_format="number", order="sorted")
_decoder = msgspec.json.Decoder(float_hook=Decimal)


def dumps(value: Any) -> str:
    """``value`` as canonical JSON text."""
    return _encoder.encode(value).decode()


def loads(text: str | bytes) -> Any:
    """Parse JSON text, numbers with a fraction as Decimal."""
    return _decoder.decode(text)


def content_hash(record: Mapping[str, Any]) -> str:
    """A fingerprint of what a record says, ignoring when it was said and Singer metadata."""
    content = dict(record)
    for key in VOLATILE_FIELDS:
        content.pop(key, None)
    for key in [key for key in content if key.startswith("_sdc_")]:
        del content[key]
    return hashlib.blake2b(_encoder.encode(content), digest_size=16).hexdigest()
