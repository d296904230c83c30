"""Ownership and merge policy, loaded from a plain dict as meltano.yml will give it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from coulisse.policy import SyncPolicy


def test_defaults_follow_the_design() -> None:
    policy = SyncPolicy.default()
    assert policy.rule("client", "name").owner == "crm"
    assert not policy.rule("client", "name").shared
    assert policy.rule("client", "balance_due").owner == "erp"
    assert policy.rule("client", "vat").shared
    assert policy.rule("product", "unit_price").owner == "erp"
    assert policy.rule("order", "total_amount").owner == "erp"


def test_a_configuration_only_says_what_it_changes() -> None:
    policy = SyncPolicy.model_validate(
        {
            "clients": {
                "on_conflict": "newest",
                "fields": {"email": {"owner": "erp", "shared": True}},
            }
        }
    )
    assert policy.rule("client", "email").owner == "erp"
    assert policy.rule("client", "email").on_conflict == "newest"
    # Untouched defaults survive the override.
    assert policy.rule("client", "balance_due").owner == "erp"
    assert policy.rule("client", "vat").on_conflict == "newest"


def test_an_owner_alone_is_a_shorthand() -> None:
    policy = SyncPolicy.model_validate({"products": {"fields": {"name": "crm"}}})
    assert policy.rule("product", "name").owner == "crm"


def test_a_misspelt_field_is_an_error_that_names_the_fields() -> None:
    with pytest.raises(ValidationError, match="clients: no field named mail; fields are"):
        SyncPolicy.model_validate({"clients": {"fields": {"mail": "crm"}}})


def test_an_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValidationError):
        SyncPolicy.model_validate({"clients": {"on_conflict": "coin_toss"}})
