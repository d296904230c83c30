"""Register Coulisse's webhook receiver in the local BottleCRM, through the CRM's own models.

Run by the CRM's virtualenv (like crm_bootstrap.py). No API credential may manage webhooks (the
webhooks API is for org admins' browser sessions), so the sandbox makes the endpoint here:

- one endpoint per organisation, found again by its description, created or brought back to
  the wanted URL and events, switched on, owned by the integration profile's user (an endpoint
  whose creator is not an org admin is paused by the CRM before every send);
- its signing secret is the one the caller already holds (from the stack's .env) when given,
  so a receiver that is running keeps working; otherwise the CRM mints one (whsec_...).

The URL is on 127.0.0.1, which the CRM refuses everywhere except in the sandbox's settings
(coulisse_crm_settings.py relaxes webhooks/ssrf.py for that address only).

Input: one JSON object on stdin. Output: one JSON object on stdout, the secret included (the
caller stores it in the git-ignored .env and never prints it).
"""

import json
import sys

import django

django.setup()

from common.models import Org, User  # noqa: E402
from common.tasks import clear_rls_context, set_rls_context  # noqa: E402
from django.db import transaction  # noqa: E402
from webhooks.models import JSON, WebhookEndpoint, generate_secret  # noqa: E402

DESCRIPTION = "Coulisse sync (local sandbox receiver)"


def main():
    spec = json.load(sys.stdin)
    org = Org.objects.get(name=spec["org_name"])
    owner = User.objects.get(email=spec["integration_email"])
    set_rls_context(org.id)
    try:
        with transaction.atomic():
            endpoint = WebhookEndpoint.objects.filter(org=org, description=DESCRIPTION).first()
            changed = endpoint is None
            if endpoint is None:
                endpoint = WebhookEndpoint(org=org, description=DESCRIPTION)
            wanted = {
                "url": spec["url"],
                "events": list(spec["events"]),
                "format": JSON,
                "is_active": True,
                "disabled_reason": "",
                "created_by": owner,
            }
            for field, value in wanted.items():
                if getattr(endpoint, field) != value:
                    setattr(endpoint, field, value)
                    changed = True
            secret = spec.get("secret") or endpoint.secret or generate_secret()
            if endpoint.secret != secret:
                endpoint.secret = secret
                changed = True
            if changed:
                endpoint.save()
    finally:
        clear_rls_context()
    json.dump(
        {
            "endpoint_id": str(endpoint.id),
            "url": endpoint.url,
            "events": endpoint.events,
            "changed": changed,
            "secret": endpoint.secret,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
