"""Three-way merge of one linked record, field by field, against the last agreed snapshot.

For each field, ``base`` is what both systems last agreed on, and ``crm`` and ``erp`` what they
hold now (our own writes coming back already folded into ``base``, see :func:`effective`):

- both hold the same value: nothing to do (a change made on both sides alike is no conflict);
- an owned field: the owner's value wins and is written to the other system;
- a shared field changed on one side only: that change wins;
- a shared field changed on both sides differently: the field's conflict policy decides
  (``owner``: the owner's value; ``newest``: the most recently updated record's value;
  ``manual``: nothing is written and the conflict waits for a person).

Example:
    >>> from coulisse.policy import FieldRule
    >>> rules = {"email": FieldRule(owner="crm", shared=True, on_conflict="manual")}
    >>> result = merge(rules, {"email": "a@x.fr"}, {"email": "a@x.fr"}, {"email": "b@x.fr"})
    >>> result.writes
    {'crm': {'email': 'b@x.fr'}, 'erp': {}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Mapping

    from coulisse.model.records import Side
    from coulisse.policy import FieldRule

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class FieldConflict:
    """Both systems changed a shared field differently since they last agreed."""

    field: str
    base: Any
    crm: Any
    erp: Any
    #: How it was settled: ``owner`` or ``newest`` by policy; None when left for a person.
    resolution: str | None
    value: Any = None


@dataclass(slots=True)
class MergeResult:
    """What to write to each system, the conflicts found, and the new agreed snapshot."""

    writes: dict[Side, dict[str, Any]] = field(default_factory=lambda: {"crm": {}, "erp": {}})
    conflicts: list[FieldConflict] = field(default_factory=list)
    #: The base of the next merge: fields both systems already hold alike, else the old base.
    agreed: dict[str, Any] = field(default_factory=dict)
    #: The value every field should have in both systems (manual conflicts keep the base).
    merged: dict[str, Any] = field(default_factory=dict)

    @property
    def is_noop(self) -> bool:
        """Nothing to write and no conflict to record."""
        return not self.writes["crm"] and not self.writes["erp"] and not self.conflicts


def effective(
    values: Mapping[str, Any],
    raw: Mapping[str, Any],
    echo: Mapping[str, Any],
    base: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A system's values with our own writes coming back read as "unchanged".

    ``echo`` is what the system stored after our last write (it may have rewritten it: a
    phone number in its own format, a city in capitals). A value still equal to it, in its
    normalised or raw form, is the value we agreed on, whatever the system made of it.
    """
    result = dict(values)
    if not echo or base is None:
        return result
    for name, echoed in echo.items():
        if name in base and name in result and echoed in (result[name], raw.get(name, _MISSING)):
            result[name] = base[name]
    return result


def _newest(crm_updated_at: dt.datetime | None, erp_updated_at: dt.datetime | None) -> Side | None:
    if crm_updated_at is None or erp_updated_at is None or crm_updated_at == erp_updated_at:
        return None
    return "crm" if crm_updated_at > erp_updated_at else "erp"


def merge(  # noqa: PLR0912 - one branch per rule of the merge, kept in one place on purpose
    rules: Mapping[str, FieldRule],
    base: Mapping[str, Any] | None,
    crm: Mapping[str, Any],
    erp: Mapping[str, Any],
    *,
    crm_updated_at: dt.datetime | None = None,
    erp_updated_at: dt.datetime | None = None,
    decisions: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Merge the fields in ``rules``; ``decisions`` are conflicts a person settled (field: value).

    Pure and symmetric: swapping ``crm`` and ``erp`` (and the owners in ``rules``) swaps the
    result, so it does not matter which system was read first.
    """
    result = MergeResult()
    base = base or {}
    decisions = decisions or {}
    for name, rule in rules.items():
        crm_value = crm.get(name)
        erp_value = erp.get(name)
        base_value = base.get(name, _MISSING)
        if name in decisions:
            value = decisions[name]
        elif crm_value == erp_value:
            value = crm_value
        elif not rule.shared:
            value = crm_value if rule.owner == "crm" else erp_value
        elif base_value is _MISSING and (crm_value is None or erp_value is None):
            # Never agreed on before (a fresh link): a value fills a blank, whichever side.
            value = erp_value if crm_value is None else crm_value
        elif crm_value == base_value:
            value = erp_value
        elif erp_value == base_value:
            value = crm_value
        else:
            policy = rule.on_conflict or "manual"
            winner: Side | None = rule.owner if policy == "owner" else None
            if policy == "newest":
                winner = _newest(crm_updated_at, erp_updated_at) or rule.owner
            shown_base = None if base_value is _MISSING else base_value
            if winner is None:
                result.conflicts.append(
                    FieldConflict(name, shown_base, crm_value, erp_value, resolution=None)
                )
                if base_value is not _MISSING:
                    result.agreed[name] = base_value
                    result.merged[name] = base_value
                continue
            value = crm_value if winner == "crm" else erp_value
            result.conflicts.append(
                FieldConflict(name, shown_base, crm_value, erp_value, policy, value)
            )
        result.merged[name] = value
        if crm_value != value:
            result.writes["crm"][name] = value
        if erp_value != value:
            result.writes["erp"][name] = value
        if crm_value == value == erp_value:
            result.agreed[name] = value
        elif base_value is not _MISSING:
            # Agreed only once the write is applied (Ledger.record_applied); until then a
            # re-plan must still see which side changed.
            result.agreed[name] = base_value
    return result
