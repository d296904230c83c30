"""Money and timestamps in BottleCRM custom fields, which have no money or datetime type.

A number custom field is stored as a float, never fit for money, so Coulisse writes amounts as
text with their currency, and timestamps as ISO 8601 text in UTC.

>>> format_money(Decimal("1234.5"), "EUR")
'1234.50 EUR'
>>> parse_money("1234.50 EUR")
(Decimal('1234.50'), 'EUR')
>>> parse_money("")
(None, None)
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

CENT = Decimal("0.01")


def format_money(amount: Decimal, currency: str) -> str:
    """``amount`` rounded to the cent, a space, the ISO 4217 currency."""
    return f"{amount.quantize(CENT)} {currency.upper()}"


def parse_money(text: object) -> tuple[Decimal | None, str | None]:
    """The amount and currency of a value written by ``format_money``; (None, None) if empty.

    A value a person typed in another shape ("12,50 €") comes back as text in the amount's
    place would be wrong, so it raises ValueError: the caller quarantines it with the reason.
    """
    if text is None or not str(text).strip():
        return None, None
    parts = str(text).split()
    if len(parts) != 2 or len(parts[1]) != 3 or not parts[1].isalpha():
        raise ValueError(f"{text!r} is not an amount with its currency, like '1234.50 EUR'")
    try:
        amount = Decimal(parts[0])
    except InvalidOperation:
        raise ValueError(
            f"{text!r} is not an amount with its currency, like '1234.50 EUR'"
        ) from None
    return amount, parts[1].upper()
