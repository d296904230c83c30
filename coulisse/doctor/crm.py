"""Probe a BottleCRM organisation the way the sync will use it, without changing its data.

A personal access token cannot read its own scopes or its profile's role, so each is probed:

- reads with a cheap ``GET <root>?limit=1``;
- writes with a ``POST <root>`` of an empty body. BottleCRM checks a token's scopes in its
  middleware (``common/middleware/get_company.py``, ``common/scopes.py``) before any view runs,
  and answers a refusal with 403 ``"This token is not scoped for write access to <root>. It
  needs the <root>:write scope."``; a token with the scope reaches the view, whose serializer
  refuses the empty body with 400. Nothing is ever created;
- the org-admin role with the same empty POST on the admin-only custom-field definitions (or,
  without that scope, products): a non-admin gets 403 "Admin access required" / "Only an
  administrator..." before validation, an admin gets 400.

A token BottleCRM does not know (wrong, revoked, expired, or its profile deactivated) gets 403
"Organization context is required".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coulisse.bottlecrm.client import BottleCrmClient, CrmApiError, CrmUnavailableError
from coulisse.bottlecrm.custom_fields import (
    COULISSE_FIELDS,
    CustomField,
    CustomFieldMismatchError,
    ensure_custom_fields,
    existing_definitions,
)
from coulisse.bottlecrm.deals import won_stages
from coulisse.doctor.report import Check, DoctorReport

if TYPE_CHECKING:
    from collections.abc import Mapping

AREA = "crm"
URL_SETTING = "BOTTLECRM_API_URL"
TOKEN_SETTING = "BOTTLECRM_API_TOKEN"  # noqa: S105 - a setting's name, not a secret
#: The API roots Coulisse reads and writes (products live under invoices/), and why.
ROOTS: tuple[tuple[str, str], ...] = (
    ("accounts", "clients"),
    ("contacts", "the contact each mirrored invoice needs"),
    ("opportunities", "won deals and their ERP status"),
    ("invoices", "invoice mirrors and payments"),
    ("invoices/products", "the catalogue"),
    ("tasks", "follow-up tasks for overdue invoices"),
    ("custom-fields", "Coulisse's custom fields"),
)
ALL_SCOPES = ", ".join(
    f"{root}:read, {root}:write" for root, _why in ROOTS if not root.startswith("invoices/")
)
MINT_TOKEN = (
    f"mint a new personal access token (bcrm_pat_...) from the integration profile in "
    f"BottleCRM (Profile > API tokens) with the scopes {ALL_SCOPES}, and set "
    f"{TOKEN_SETTING} to it"
)
_NO_CONTEXT = "organization context is required"
_NOT_SCOPED = "is not scoped for"
_NOT_ADMIN = ("admin access required", "only an administrator")


@dataclass
class CrmFacts:
    """What the other checks need from the CRM: the currencies it knows and deals use."""

    currencies: list[str] = field(default_factory=list)
    deal_currencies: list[str] = field(default_factory=list)
    reachable: bool = False


def _scope_refused(exc: CrmApiError) -> bool:
    return exc.status == 403 and _NOT_SCOPED in exc.detail.lower()


def _admin_refused(exc: CrmApiError) -> bool:
    return exc.status == 403 and any(text in exc.detail.lower() for text in _NOT_ADMIN)


def crm_checks(
    env: Mapping[str, str], report: DoctorReport, *, fix: bool = False, timeout: float = 15.0
) -> CrmFacts:
    """Run every CRM check into ``report``; return the facts the mapping checks need."""
    facts = CrmFacts()
    url = env.get(URL_SETTING, "").strip()
    token = env.get(TOKEN_SETTING, "").strip()
    missing = [name for name, value in ((URL_SETTING, url), (TOKEN_SETTING, token)) if not value]
    if missing:
        report.add(
            Check(
                AREA,
                "settings",
                "failed",
                f"{' and '.join(missing)} not set",
                f"set {' and '.join(missing)} in the environment or .env (`coulisse stack up` "
                "writes them for the local stack); the CRM was not probed",
            )
        )
        return facts
    client = BottleCrmClient(url, token, timeout=timeout, max_attempts=2, backoff=0.2)
    if not _api_answers(client, report):
        return facts
    facts.reachable = True
    _admin_role(client, report)
    readable = _scopes(client, report)
    if "custom-fields" in readable:
        _custom_fields(client, report, fix=fix)
    if "opportunities" in readable:
        _won_stages(client, report)
        _deal_currencies(client, facts)
    return facts


def _api_answers(client: BottleCrmClient, report: DoctorReport) -> bool:
    """The API answers at the URL and accepts the token; False stops the CRM checks."""
    try:
        client.get("opportunities/pipelines/")
    except CrmUnavailableError as exc:
        report.add(
            Check(
                AREA,
                "API",
                "failed",
                f"no answer from {client.base_url}: {exc}",
                f"check {URL_SETTING} (the CRM's base URL; its API is under /api/) and that "
                "BottleCRM runs",
            )
        )
        return False
    except CrmApiError as exc:
        if exc.status in {401, 403} and (exc.status == 401 or _NO_CONTEXT in exc.detail.lower()):
            report.add(Check(AREA, "API", "ok", f"BottleCRM answers at {client.base_url}/api/"))
            report.add(
                Check(
                    AREA,
                    "token",
                    "failed",
                    f"BottleCRM refused {TOKEN_SETTING} ({exc.status}: {exc.detail}): the token "
                    "is wrong, revoked or expired, or its profile is deactivated",
                    MINT_TOKEN,
                )
            )
            return False
        if exc.status == 403 and _scope_refused(exc):
            pass  # the token is known; its missing scopes are reported below
        else:
            report.add(
                Check(
                    AREA,
                    "API",
                    "failed",
                    f"{client.base_url}/api/ does not answer like BottleCRM ({exc.status}: "
                    f"{exc.detail[:200]})",
                    f"check {URL_SETTING}: the CRM's base URL, e.g. https://crm.example.com "
                    "(without /api/)",
                )
            )
            return False
    report.add(Check(AREA, "API", "ok", f"BottleCRM answers at {client.base_url}/api/"))
    report.add(Check(AREA, "token", "ok", f"{TOKEN_SETTING} is accepted"))
    return True


def _empty_post(client: BottleCrmClient, root: str) -> CrmApiError | None:
    """POST an empty body to ``root``: the refusal (a 400 means the write scope is there)."""
    try:
        client.post(f"{root}/", {})
    except CrmApiError as exc:
        return exc
    msg = f"BottleCRM accepted an empty POST to {root}/: doctor no longer probes it safely"
    raise AssertionError(msg)  # pragma: no cover - BottleCRM 1.35 validates every root


def _admin_role(client: BottleCrmClient, report: DoctorReport) -> None:
    """The token's profile is an org admin (custom-field definitions and products need it)."""
    verdicts = [
        (_empty_post(client, root), root) for root in ("custom-fields", "invoices/products")
    ]
    for refusal, root in verdicts:
        if refusal is None or _scope_refused(refusal):
            continue
        if _admin_refused(refusal):
            report.add(
                Check(
                    AREA,
                    "admin role",
                    "failed",
                    f"the token's profile is not an org admin (POST {root}/: {refusal.detail})",
                    "give the integration profile the Admin role in BottleCRM (Settings > "
                    f"Users), or {MINT_TOKEN[0].lower()}{MINT_TOKEN[1:]} from an admin profile",
                )
            )
            return
        if refusal.status == 400:
            report.add(Check(AREA, "admin role", "ok", "the token belongs to an org-admin profile"))
            return
    report.add(
        Check(
            AREA,
            "admin role",
            "warning",
            "could not tell: the token may write neither custom-fields nor invoices",
            MINT_TOKEN,
        )
    )


def _scopes(client: BottleCrmClient, report: DoctorReport) -> set[str]:
    """Read and write access to each API root; returns the roots the token can read."""
    readable: set[str] = set()
    for root, why in ROOTS:
        lacking: list[str] = []
        other: list[str] = []
        try:
            client.get(f"{root}/", limit=1)
            readable.add(root)
        except CrmApiError as exc:
            (lacking if _scope_refused(exc) else other).append(f"read ({exc.status}: {exc.detail})")
        refusal = _empty_post(client, root)
        if refusal is not None and refusal.status != 400 and not _admin_refused(refusal):
            (lacking if _scope_refused(refusal) else other).append(
                f"write ({refusal.status}: {refusal.detail})"
            )
        scope_root = root.split("/")[0]
        if not lacking and not other:
            report.add(Check(AREA, f"scope {root}", "ok", f"read and write ({why})"))
            continue
        only_fix_needs_it = root == "custom-fields" and not other and lacking[0].startswith("w")
        report.add(
            Check(
                AREA,
                f"scope {root}",
                "warning" if only_fix_needs_it else "failed",
                f"no {' and no '.join(lacking + other)} for {why}"
                + (" (only `coulisse doctor --fix` writes there)" if only_fix_needs_it else ""),
                MINT_TOKEN
                if lacking
                else f"see BottleCRM's answer; the token needs {scope_root}:read and "
                f"{scope_root}:write",
            )
        )
    return readable


def _field_problems(
    specs: tuple[CustomField, ...], existing: Mapping[tuple[str, str], Mapping[str, Any]]
) -> tuple[list[str], list[str]]:
    """(problems ``--fix`` repairs, problems it leaves to a person) of Coulisse's fields."""
    fixable: list[str] = []
    manual: list[str] = []
    for spec in specs:
        name = f"{spec.target_model}.{spec.key}"
        row = existing.get((spec.target_model, spec.key))
        if row is None:
            fixable.append(f"{name} missing")
            continue
        if row.get("field_type") != spec.field_type:
            manual.append(f"{name} is {row.get('field_type')}, Coulisse needs {spec.field_type}")
            continue
        if not row.get("is_active", True):
            fixable.append(f"{name} deactivated")
        if spec.field_type == "dropdown":
            values = {
                str(option.get("value"))
                for option in row.get("options") or []
                if isinstance(option, dict)
            }
            lacking = [value for value, _label in spec.options if value not in values]
            if lacking:
                fixable.append(f"{name} lacks the values {', '.join(lacking)}")
    return fixable, manual


def _custom_fields(client: BottleCrmClient, report: DoctorReport, *, fix: bool) -> None:
    """Coulisse's custom fields exist, are active, have the right types and dropdown values."""
    if fix:
        try:
            done = ensure_custom_fields(client)
        except CustomFieldMismatchError:
            pass  # reported by the check below, with the fields named
        except CrmApiError as exc:
            report.fixed.append(f"custom fields not repaired: {exc}")
        else:
            for verb, names in (
                ("created", done.created),
                ("re-activated", done.reactivated),
                ("given Coulisse's dropdown values", done.extended),
            ):
                if names:
                    report.fixed.append(f"custom fields {verb}: {', '.join(names)}")
    fixable, manual = _field_problems(COULISSE_FIELDS, existing_definitions(client))
    if not fixable and not manual:
        report.add(
            Check(
                AREA,
                "custom fields",
                "ok",
                f"all {len(COULISSE_FIELDS)} of Coulisse's custom fields present and active, "
                "with the right types and dropdown values",
            )
        )
        return
    fixes = []
    if fixable:
        fixes.append("run `coulisse doctor --fix` (creates, re-activates, adds dropdown values)")
    if manual:
        fixes.append(
            "rename or delete the fields of the wrong type in BottleCRM (Settings > Custom "
            "fields), then run `coulisse doctor --fix`"
        )
    report.add(
        Check(AREA, "custom fields", "failed", "; ".join(manual + fixable), "; ".join(fixes))
    )


def _won_stages(client: BottleCrmClient, report: DoctorReport) -> None:
    """At least one deal stage whose kind is won: only deals there become ERP sales."""
    stages = won_stages(client.get("opportunities/pipelines/"))
    if stages:
        codes = ", ".join(sorted({code for _pipeline, code in stages}))
        report.add(Check(AREA, "won stages", "ok", f"{len(stages)} won stage(s) ({codes})"))
        return
    report.add(
        Check(
            AREA,
            "won stages",
            "failed",
            "no deal stage has the kind won, so no deal would ever become an ERP sale",
            "in BottleCRM's pipeline settings (Settings > Pipelines), give the stage that "
            "closes a deal the kind Won",
        )
    )


def _deal_currencies(client: BottleCrmClient, facts: CrmFacts) -> None:
    """The CRM's currency choices and the currencies its deals use (one small list request)."""
    page = client.get("opportunities/", limit=1)
    facts.currencies = [str(choice[0]) for choice in page.get("currency") or [] if choice]
    totals = page.get("totals") or {}
    facts.deal_currencies = sorted(
        {str(row["currency"]) for row in totals.get("by_currency") or [] if row.get("currency")}
    )


__all__ = ["AREA", "ROOTS", "CrmFacts", "crm_checks"]
