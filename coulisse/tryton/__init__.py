"""Talk to Tryton 8.2 over JSON-RPC: sessions, retries, exact Decimal and dates, user errors."""

from __future__ import annotations

from coulisse.tryton.rpc import (
    TrytonAuthError,
    TrytonClient,
    TrytonConcurrencyError,
    TrytonError,
    TrytonServerError,
    TrytonUnavailableError,
    TrytonUserError,
    TrytonUserWarning,
)

__all__ = [
    "TrytonAuthError",
    "TrytonClient",
    "TrytonConcurrencyError",
    "TrytonError",
    "TrytonServerError",
    "TrytonUnavailableError",
    "TrytonUserError",
    "TrytonUserWarning",
]
