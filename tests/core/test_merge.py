"""Three-way merge: unit cases and properties (hypothesis)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from coulisse.planner.merge import effective, merge
from coulisse.policy import FieldRule

FIELDS = ("name", "email", "vat", "city")
values = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "Paris", "PARIS"]))
records = st.fixed_dictionaries(dict.fromkeys(FIELDS, values))
sides = st.sampled_from(["crm", "erp"])
policies = st.sampled_from(["owner", "newest", "manual"])
rule_sets = st.fixed_dictionaries(
    {
        name: st.builds(FieldRule, owner=sides, shared=st.booleans(), on_conflict=policies)
        for name in FIELDS
    }
)
times = st.one_of(st.none(), st.datetimes(timezones=st.just(dt.UTC)))


def _mirror(rules: dict[str, FieldRule]) -> dict[str, FieldRule]:
    return {
        name: rule.model_copy(update={"owner": "erp" if rule.owner == "crm" else "crm"})
        for name, rule in rules.items()
    }


@given(rule_sets, records)
def test_no_change_on_either_side_is_a_no_op(
    rules: dict[str, FieldRule], base: dict[str, Any]
) -> None:
    result = merge(rules, base, dict(base), dict(base))
    assert result.is_noop
    assert result.agreed == base


@given(rule_sets, records, records)
def test_a_one_sided_change_to_a_shared_field_always_wins(
    rules: dict[str, FieldRule], base: dict[str, Any], changed: dict[str, Any]
) -> None:
    shared = {name: rule.model_copy(update={"shared": True}) for name, rule in rules.items()}
    from_crm = merge(shared, base, changed, dict(base))
    from_erp = merge(shared, base, dict(base), changed)
    assert from_crm.conflicts == []
    assert from_erp.conflicts == []
    assert from_crm.writes["crm"] == {}
    assert from_erp.writes["erp"] == {}
    expected = {name: changed[name] for name in FIELDS if changed[name] != base[name]}
    assert from_crm.writes["erp"] == expected
    assert from_erp.writes["crm"] == expected


@given(rule_sets, records, records)
def test_the_same_change_on_both_sides_is_no_conflict(
    rules: dict[str, FieldRule], base: dict[str, Any], changed: dict[str, Any]
) -> None:
    result = merge(rules, base, changed, dict(changed))
    assert result.is_noop
    assert result.agreed == changed


@given(rule_sets, st.one_of(st.none(), records), records, records, times, times)
def test_the_result_does_not_depend_on_which_side_is_read_first(
    rules: dict[str, FieldRule],
    base: dict[str, Any] | None,
    crm: dict[str, Any],
    erp: dict[str, Any],
    crm_time: dt.datetime | None,
    erp_time: dt.datetime | None,
) -> None:
    forward = merge(rules, base, crm, erp, crm_updated_at=crm_time, erp_updated_at=erp_time)
    backward = merge(
        _mirror(rules), base, erp, crm, crm_updated_at=erp_time, erp_updated_at=crm_time
    )
    assert forward.writes["crm"] == backward.writes["erp"]
    assert forward.writes["erp"] == backward.writes["crm"]
    assert forward.merged == backward.merged
    assert forward.agreed == backward.agreed
    assert [(c.field, c.resolution, c.value) for c in forward.conflicts] == [
        (c.field, c.resolution, c.value) for c in backward.conflicts
    ]


@given(rule_sets, st.one_of(st.none(), records), records, records, times, times)
def test_applying_a_merge_and_merging_again_changes_nothing(
    rules: dict[str, FieldRule],
    base: dict[str, Any] | None,
    crm: dict[str, Any],
    erp: dict[str, Any],
    crm_time: dt.datetime | None,
    erp_time: dt.datetime | None,
) -> None:
    first = merge(rules, base, crm, erp, crm_updated_at=crm_time, erp_updated_at=erp_time)
    # Apply: each system takes the values written to it; the ledger records them as agreed.
    crm_after = {**crm, **first.writes["crm"]}
    erp_after = {**erp, **first.writes["erp"]}
    agreed = {**first.agreed, **first.writes["crm"], **first.writes["erp"]}
    second = merge(
        rules, agreed, crm_after, erp_after, crm_updated_at=crm_time, erp_updated_at=erp_time
    )
    assert second.writes == {"crm": {}, "erp": {}}
    # Only conflicts parked for a person remain, and they are the same ones.
    assert {c.field for c in second.conflicts} == {
        c.field for c in first.conflicts if c.resolution is None
    }
    assert all(conflict.resolution is None for conflict in second.conflicts)


def test_an_owned_field_takes_the_owners_value_even_if_the_other_side_edited_it() -> None:
    rules = {"name": FieldRule(owner="crm")}
    result = merge(rules, {"name": "Dupont"}, {"name": "Dupont"}, {"name": "DUPONT SA"})
    assert result.writes == {"crm": {}, "erp": {"name": "Dupont"}}


def test_conflict_policies() -> None:
    base, crm, erp = {"email": "a@x.fr"}, {"email": "b@x.fr"}, {"email": "c@x.fr"}
    earlier = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    later = dt.datetime(2026, 5, 2, tzinfo=dt.UTC)

    def run(policy: str) -> Any:
        rules = {"email": FieldRule(owner="crm", shared=True, on_conflict=policy)}  # type: ignore[arg-type]
        return merge(rules, base, crm, erp, crm_updated_at=earlier, erp_updated_at=later)

    owner = run("owner")
    assert owner.writes == {"crm": {}, "erp": {"email": "b@x.fr"}}
    assert owner.conflicts[0].resolution == "owner"
    newest = run("newest")
    assert newest.writes == {"crm": {"email": "c@x.fr"}, "erp": {}}
    assert newest.conflicts[0].resolution == "newest"
    manual = run("manual")
    assert manual.writes == {"crm": {}, "erp": {}}
    assert manual.conflicts[0].resolution is None
    assert manual.agreed == base


def test_a_fresh_link_fills_blanks_from_either_side() -> None:
    rules = {
        "email": FieldRule(owner="crm", shared=True),
        "vat": FieldRule(owner="crm", shared=True),
    }
    result = merge(rules, None, {"email": "a@x.fr", "vat": None}, {"email": None, "vat": "FR1"})
    assert result.writes == {"crm": {"vat": "FR1"}, "erp": {"email": "a@x.fr"}}
    assert result.conflicts == []


def test_a_system_rewriting_our_write_is_not_a_change() -> None:
    base = {"city": "Paris"}
    # We wrote "Paris"; the ERP stored "PARIS": reading "PARIS" back is our echo.
    erp = effective({"city": "PARIS"}, {"city": "PARIS"}, {"city": "PARIS"}, base)
    assert erp == {"city": "Paris"}
    rules = {"city": FieldRule(owner="crm", shared=True)}
    assert merge(rules, base, {"city": "Paris"}, erp).is_noop
    # A real change in the ERP afterwards is one.
    erp = effective({"city": "Lyon"}, {"city": "Lyon"}, {"city": "PARIS"}, base)
    assert merge(rules, base, {"city": "Paris"}, erp).writes["crm"] == {"city": "Lyon"}
