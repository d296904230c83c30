"""Validation and normalisation of canonical records, each refusal with a reason a clerk reads."""

from __future__ import annotations

from coulisse.validation.names import company_name_key
from coulisse.validation.reasons import Reason, Refusal
from coulisse.validation.records import (
    CheckedPlain,
    CheckedRecord,
    ValidationSettings,
    check_plain,
    check_record,
)

__all__ = [
    "CheckedPlain",
    "CheckedRecord",
    "Reason",
    "Refusal",
    "ValidationSettings",
    "check_plain",
    "check_record",
    "company_name_key",
]
