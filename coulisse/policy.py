"""Who owns which field, and what to do when both systems change a shared one.

Loaded from a plain dict (the ``coulisse`` section of ``meltano.yml``); anything left out keeps
the defaults below, which follow the design: the CRM owns who a client is and how to reach them,
the ERP owns fiscal status, the catalogue, and documents once handed off.

Example:
    >>> email = {"owner": "crm", "shared": True}
    >>> policy = SyncPolicy.model_validate(
    ...     {"clients": {"on_conflict": "newest", "fields": {"email": email}}}
    ... )
    >>> policy.rule("client", "email")
    FieldRule(owner='crm', shared=True, on_conflict='newest')
    >>> policy.rule("client", "balance_due").owner
    'erp'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coulisse.model.records import MODELS, Entity, Side

ConflictPolicy = Literal["owner", "newest", "manual"]


class FieldRule(BaseModel):
    """The rule for one field, as the merge applies it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The system whose value wins: always for an owned field, on conflict for ``owner``.
    owner: Side
    #: Both systems may change it (three-way merge); otherwise only the owner's changes count
    #: and the other system's edits are overwritten.
    shared: bool = False
    #: For a shared field both systems changed differently; None means the entity's setting.
    on_conflict: ConflictPolicy | None = None


class EntityPolicy(BaseModel):
    """Ownership and conflict rules for one kind of record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_owner: Side
    shared_by_default: bool = False
    on_conflict: ConflictPolicy = "manual"
    fields: dict[str, FieldRule] = Field(default_factory=dict)

    @field_validator("fields", mode="before")
    @classmethod
    def _owner_shorthand(cls, value: Any) -> Any:
        """``fields: {name: crm}`` is short for ``fields: {name: {owner: crm}}``."""
        if isinstance(value, dict):
            return {
                name: {"owner": rule} if isinstance(rule, str) else rule
                for name, rule in value.items()
            }
        return value

    def rule(self, field: str) -> FieldRule:
        """The rule for ``field``, with the entity's defaults filled in."""
        rule = self.fields.get(field)
        if rule is None:
            return FieldRule(
                owner=self.default_owner,
                shared=self.shared_by_default,
                on_conflict=self.on_conflict,
            )
        if rule.on_conflict is None:
            return rule.model_copy(update={"on_conflict": self.on_conflict})
        return rule


_SHARED_CRM = {"owner": "crm", "shared": True}

#: The defaults; a configuration only says what it changes (fields are merged one by one).
DEFAULTS: dict[str, dict[str, Any]] = {
    "clients": {
        "default_owner": "crm",
        "on_conflict": "manual",
        "fields": {
            # Accounting fixes identifiers and addresses too: both sides may change them.
            "vat": _SHARED_CRM,
            "siren": _SHARED_CRM,
            "siret": _SHARED_CRM,
            "iban": _SHARED_CRM,
            "billing_street": _SHARED_CRM,
            "billing_postal_code": _SHARED_CRM,
            "billing_city": _SHARED_CRM,
            "billing_country": _SHARED_CRM,
            "active": _SHARED_CRM,
            "erp_code": "erp",
            "currency": "erp",
            "balance_due": "erp",
            "overdue_amount": "erp",
            "last_invoice_date": "erp",
        },
    },
    "products": {"default_owner": "erp"},
    # Before the hand-off (the ERP sale confirmed) the CRM's deal decides; Tryton numbers the
    # sale and computes its totals. After the hand-off the ERP owns every field.
    "orders": {
        "default_owner": "crm",
        "fields": {
            "number": "erp",
            "state": "erp",
            "shipment_state": "erp",
            "invoice_state": "erp",
            "untaxed_amount": "erp",
            "tax_amount": "erp",
            "total_amount": "erp",
        },
    },
    "invoices": {"default_owner": "erp"},
}


class SyncPolicy(BaseModel):
    """The whole policy: one :class:`EntityPolicy` per stream, plus validation choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: EntityPolicy
    products: EntityPolicy
    orders: EntityPolicy
    invoices: EntityPolicy
    #: Region for phone numbers written without a country prefix (ISO 3166 alpha-2).
    default_phone_region: str = "FR"
    #: A draft invoice an advisor writes in the CRM, with no ERP sale behind its deal, becomes
    #: an ERP draft for a clerk to check and post; the CRM draft then mirrors the ERP invoice.
    #: Off: CRM drafts stay in the CRM (the planner's ``crm_invoices_to_erp``).
    crm_invoices_to_erp: bool = True

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        """Lay the configuration over :data:`DEFAULTS`, field by field."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = dict(value)
        for stream, defaults in DEFAULTS.items():
            given = value.get(stream) or {}
            if not isinstance(given, dict):
                continue
            fields = {**defaults.get("fields", {}), **(given.get("fields") or {})}
            merged[stream] = {**defaults, **given, "fields": fields}
        return merged

    @classmethod
    def default(cls) -> SyncPolicy:
        """The policy with every default."""
        return cls.model_validate({})

    @model_validator(mode="after")
    def _known_fields(self) -> SyncPolicy:
        for entity, model in MODELS.items():
            known = set(model.data_fields())
            unknown = sorted(set(self.entity(entity).fields) - known)
            if unknown:
                msg = (
                    f"{model.stream}: no field named {', '.join(unknown)}; "
                    f"fields are {', '.join(sorted(known))}"
                )
                raise ValueError(msg)
        return self

    def entity(self, entity: Entity) -> EntityPolicy:
        """The policy of one entity: ``policy.entity("client")``."""
        policy: EntityPolicy = getattr(self, MODELS[entity].stream)
        return policy

    def rule(self, entity: Entity, field: str) -> FieldRule:
        """The rule of one field: ``policy.rule("client", "email")``."""
        return self.entity(entity).rule(field)

    def rules(self, entity: Entity) -> dict[str, FieldRule]:
        """The rule of every synchronised field of ``entity``."""
        policy = self.entity(entity)
        return {field: policy.rule(field) for field in MODELS[entity].data_fields()}
