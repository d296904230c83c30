"""Prepare a BottleCRM organisation for Coulisse through the CRM's own models (run by the CRM venv).

No API credential may mint another one (BottleCRM's common/scopes.py deny-list), so the
integration profile and its personal access token are made here, inside the CRM, once:

- the organisation (EUR, France, Europe/Paris), found again by name on later runs;
- an org-admin integration profile (custom-field definitions and products are admin-only);
- sales advisor profiles, so accounts and deals have someone assigned to them;
- the default deal pipeline, so won stages exist;
- a personal access token with scopes narrowed to what Coulisse touches. An existing token is
  kept when the caller proves it knows it (same SHA-256); otherwise it is revoked and replaced.

Input: one JSON object on stdin. Output: one JSON object on stdout (the raw token only when a
new one was minted; the caller stores it in the git-ignored .env and never prints it).
"""

import json
import sys

import django

django.setup()

from common.models import Org, PersonalAccessToken, Profile, User  # noqa: E402
from django.db import transaction  # noqa: E402
from opportunity.models import DealPipeline  # noqa: E402

TOKEN_NAME = "coulisse-integration"


def ensure_profile(org, email, name, role):
    user, created = User.objects.get_or_create(email=email, defaults={"name": name})
    if created:
        user.set_unusable_password()
        user.save()
    profile, _ = Profile.objects.get_or_create(
        user=user,
        org=org,
        defaults={"role": role, "has_sales_access": True, "is_active": True},
    )
    if profile.role != role or not profile.is_active or not profile.has_sales_access:
        profile.role = role
        profile.is_active = True
        profile.has_sales_access = True
        profile.save()
    return profile


def main():
    spec = json.load(sys.stdin)
    with transaction.atomic():
        org, _ = Org.objects.get_or_create(
            name=spec["org_name"],
            defaults={
                "company_name": spec["org_name"],
                "default_currency": "EUR",
                "default_country": "FR",
                "country": "FR",
                "timezone": "Europe/Paris",
            },
        )
        integration = ensure_profile(org, spec["integration_email"], "Coulisse", "ADMIN")
        advisors = [ensure_profile(org, a["email"], a["name"], "USER") for a in spec["advisors"]]
        pipeline = DealPipeline.default_for(org)
        won_stages = [s.code for s in pipeline.stages.all() if s.kind == "won"]

        wanted = sorted(spec["scopes"])
        known = spec.get("token")
        live = PersonalAccessToken.objects.filter(
            profile=integration, name=TOKEN_NAME, revoked_at__isnull=True
        )
        keep = None
        if known:
            keep = live.filter(token_hash=PersonalAccessToken.hash_token(known)).first()
            if keep is not None and (sorted(keep.scopes) != wanted or not keep.is_valid()):
                keep = None
        raw = None
        if keep is None:
            from django.utils import timezone

            live.update(revoked_at=timezone.now())
            raw, _ = PersonalAccessToken.generate(integration, TOKEN_NAME, scopes=wanted)

    json.dump(
        {
            "org_id": str(org.id),
            "integration_profile_id": str(integration.id),
            "advisors": [{"email": p.user.email, "profile_id": str(p.id)} for p in advisors],
            "won_stages": won_stages,
            "token": raw,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
