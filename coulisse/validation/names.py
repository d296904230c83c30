"""Company names reduced to a comparison key, to spot probable duplicates across systems.

The key ignores case, accents, punctuation and legal forms (SA, SAS, SARL, GmbH, Ltd...), taken
from ``cleanco``'s list of legal-form terms; ``cleanco.basename`` itself is too slow for a
hundred thousand names per run (it scans every term for every name), so the terms are indexed
once here.

Example:
    >>> company_name_key("Boulangerie Dupont S.A.R.L.") == company_name_key("boulangerie  dupont")
    True
    >>> company_name_key("SAS Société Générale")
    'societe generale'
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

from cleanco import prepare_default_terms

_SEPARATORS = re.compile(r"[^\w&]+")


@cache
def _legal_forms() -> frozenset[tuple[str, ...]]:
    terms: list[tuple[int, list[str]]] = prepare_default_terms()
    return frozenset(tuple(_fold(part) for part in parts) for _, parts in terms)


@cache
def _longest_form() -> int:
    return max(len(form) for form in _legal_forms())


def _fold(text: str) -> str:
    if text.isascii():
        # What the general case gives for ASCII, at a fraction of its cost.
        return text.lower().replace(".", "")
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char)).replace(".", "")


def company_name_key(name: str) -> str:
    """``name`` folded (case, accents, punctuation) without a leading or trailing legal form."""
    words = [word for word in _SEPARATORS.split(_fold(name)) if word]
    forms = _legal_forms()
    changed = True
    while changed and len(words) > 1:
        changed = False
        for size in range(min(_longest_form(), len(words) - 1), 0, -1):
            if tuple(words[-size:]) in forms:
                del words[-size:]
                changed = True
                break
            if tuple(words[:size]) in forms:
                del words[:size]
                changed = True
                break
    return " ".join(words)
