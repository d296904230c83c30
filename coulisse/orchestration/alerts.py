"""Alerts: a sync run that fails, or one that puts new records in quarantine, tells a person.

Prefect sends them, not the flow: at `coulisse flows up` (:func:`configure_alerts`) the local
server gets one notification block, ``coulisse-alerts`` (a *Custom Webhook* that POSTs JSON to
``COULISSE_ALERT_WEBHOOK_URL``, the URL kept as a block secret), and two automations:

- ``coulisse: a sync run failed``: a flow run of the ``sync`` flow enters *Failed*, *Crashed* or
  *TimedOut* -> the run's name, its state message (the step that failed and why, see
  :mod:`coulisse.orchestration.flow`) and its link in the UI. The server sees the state change
  itself, so a run whose process died (*Crashed*) is reported too, which a hook inside the flow
  could not do.
- ``coulisse: the quarantine grew``: the ``sync`` flow emits a ``coulisse.quarantine.grew``
  event when one run put at least ``COULISSE_ALERT_QUARANTINE_GROWTH`` records newly in
  quarantine (:func:`announce_quarantine_growth`) -> how many, by reason, and the command that
  lists them. The event is emitted whether alerts are on or not: it is in the UI's event feed.

Both are created or updated by name, so `flows up` may run any number of times; without a
webhook URL they (and the block) are removed, and alerts are off. The server's ``triggers`` and
``actions`` services (on by default in `prefect server start`) evaluate them. Measured here: the
webhook got the POST 0.2 s after a served run's Failed state, 0.4 s after its process was killed
(Crashed), about 0.3 s after the flow emitted the quarantine event.

The JSON body: ``{"title": subject, "text": "subject\\n\\nbody", "subject": ..., "body": ...,
"source": "coulisse"}``: Slack and Teams incoming webhooks read ``text``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from coulisse.ledger import tables as t
from coulisse.sync import STREAMS

if TYPE_CHECKING:
    from collections.abc import Mapping
    from uuid import UUID

    from prefect.automations import Automation

    from coulisse.doctor.report import DoctorReport
    from coulisse.ledger import Ledger
    from coulisse.orchestration.settings import AlertSettings

#: The notification block that carries every alert.
BLOCK_NAME = "coulisse-alerts"
FAILED_AUTOMATION = "coulisse: a sync run failed"
QUARANTINE_AUTOMATION = "coulisse: the quarantine grew"
AUTOMATIONS = (FAILED_AUTOMATION, QUARANTINE_AUTOMATION)
#: The flow whose runs are watched (every run of it: served, `flows run`, or started by hand).
FLOW_NAME = "sync"
#: Flow run states that alert: Prefect's failed state names.
FAILED_STATES = ("Failed", "Crashed", "TimedOut")
QUARANTINE_EVENT = "coulisse.quarantine.grew"
QUARANTINE_RESOURCE = "coulisse.quarantine"
#: How many reason lines and example records an alert shows before "and N more".
SHOWN_REASONS = 10
LIST_COMMAND = "coulisse quarantine list"

FAILED_SUBJECT = (
    "Coulisse: sync run {{ flow_run.name }} {{ event.resource['prefect.state-name'] | lower }}"
)
#: The run's state message (the step and its cause, see the flow) without Prefect's prefix and
#: the log's tail, which the run's summary in the UI has.
FAILED_BODY = """\
The Coulisse sync run {{ flow_run.name }} ended {{ event.resource['prefect.state-name'] }}.

{{ (flow_run.state.message or '').split('\\nLast lines of ')[0] \
| replace('Flow run encountered an exception: ', '') | replace('SyncStepError: ', '') \
| truncate(1500) }}

The run, its logs and its summary: {{ flow_run | ui_url }}
{% if event.resource['prefect.state-name'] == 'Crashed' %}A crashed run may still hold the \
sync's run lock: later runs end Skipped until it expires (an hour after it was taken); \
`coulisse doctor` names the holder.
{% endif %}What it left undone stays in the ledger for the next run. `coulisse doctor` checks the \
settings and both systems."""
QUARANTINE_SUBJECT = "{{ event.payload.subject }}"
QUARANTINE_BODY = """\
{{ event.payload.text }}

The run: {{ flow_run | ui_url }}"""


@dataclass(frozen=True)
class QuarantinedRecord:
    """One record a run newly held back, with one of its reasons."""

    entity: str
    side: str
    key: str
    reason: str
    message: str


@dataclass
class QuarantineGrowth:
    """The records a flow run put in quarantine that were not held back before it."""

    flow_run_id: str
    entries: list[QuarantinedRecord] = field(default_factory=list)

    @property
    def records(self) -> int:
        """How many records (a record held for two reasons counts once)."""
        return len({(e.entity, e.side, e.key) for e in self.entries})

    def by_reason(self) -> Counter[tuple[str, str, str]]:
        """Records per (reason, entity, system), most first."""
        held = {(e.reason, e.entity, e.side, e.key) for e in self.entries}
        return Counter((reason, entity, side) for reason, entity, side, _key in held)

    def reasons(self) -> Counter[str]:
        """Records per reason code, whatever their entity and system."""
        counts: Counter[str] = Counter()
        for (reason, _entity, _side), count in self.by_reason().items():
            counts[reason] += count
        return counts

    def subject(self) -> str:
        return f"Coulisse: {self.records} new record(s) in quarantine"

    def text(self, *, run_name: str, threshold: int) -> str:
        """What a person reads: how many, why (with an example each), how to see them."""
        lines = [
            f"The Coulisse sync run {run_name} held back {self.records} new record(s) "
            f"(alert threshold: {threshold}). They are not synced until fixed at their source:",
        ]
        counts = self.by_reason().most_common()
        for (reason, entity, side), count in counts[:SHOWN_REASONS]:
            example = next(
                e for e in self.entries if (e.reason, e.entity, e.side) == (reason, entity, side)
            )
            lines.append(
                f"- {count} x {reason}: {STREAMS.get(entity, entity)} from the {side.upper()}, "
                f"e.g. {example.key}: {example.message}"
            )
        if len(counts) > SHOWN_REASONS:
            lines.append(f"- and {len(counts) - SHOWN_REASONS} more reason(s)")
        lines += [
            "",
            f"See them all: `{LIST_COMMAND}`; one with the record as read: `coulisse quarantine "
            "show ID`; after a fix at the source: `coulisse quarantine retry ID`.",
        ]
        return "\n".join(lines)

    def payload(self, *, run_name: str, threshold: int) -> dict[str, Any]:
        """The event's payload: the figures for machines, the sentences for the alert."""
        return {
            "flow_run_id": self.flow_run_id,
            "new_records": self.records,
            "threshold": threshold,
            "by_reason": dict(self.reasons()),
            "records": sorted({f"{e.side}:{e.entity}:{e.key}" for e in self.entries})[:50],
            "subject": self.subject(),
            "text": self.text(run_name=run_name, threshold=threshold),
        }


def quarantine_growth(ledger: Ledger, flow_run_id: str, since: dt.datetime) -> QuarantineGrowth:
    """What ``flow_run_id`` newly quarantined: held now, first held by one of its ledger runs.

    A record that was already held back before ``since`` (for any reason) is not new, even if
    this run found it another reason; one released and held again is (a new episode).
    """
    q, r = t.quarantine.c, t.runs.c
    older = sa.alias(t.quarantine, "older")
    held_before = (
        sa.select(sa.literal(1))
        .select_from(older)
        .where(
            older.c.side == q.side,
            older.c.entity == q.entity,
            older.c.source_key == q.source_key,
            older.c.released_at.is_(None),
            older.c.first_seen_at < since,
        )
    )
    query = (
        sa.select(q.entity, q.side, q.source_key, q.reason, q.message)
        .select_from(t.quarantine.join(t.runs, r.id == q.run_id))
        .where(
            r.flow_run_id == flow_run_id,
            q.released_at.is_(None),
            q.first_seen_at >= since,
            ~held_before.exists(),
        )
        .order_by(q.entity, q.side, q.source_key, q.reason)
    )
    with ledger.engine.connect() as conn:
        entries = [
            QuarantinedRecord(row.entity, row.side, row.source_key, row.reason, row.message)
            for row in conn.execute(query)
        ]
    return QuarantineGrowth(flow_run_id, entries)


def announce_quarantine_growth(growth: QuarantineGrowth, *, run_name: str, threshold: int) -> bool:
    """Emit ``coulisse.quarantine.grew`` when the growth reaches ``threshold``; whether it did.

    Called inside the flow run: Prefect relates the event to the run (and its flow and
    deployment), which the alert's link to the run uses.
    """
    if growth.records < threshold:
        return False
    from prefect.events import emit_event

    emit_event(
        QUARANTINE_EVENT,
        resource={
            "prefect.resource.id": QUARANTINE_RESOURCE,
            "prefect.resource.name": "Coulisse quarantine",
        },
        payload=growth.payload(run_name=run_name, threshold=threshold),
    )
    return True


# -- the Prefect server's side: the block and the automations --------------------------------


def _block(webhook_url: str) -> Any:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.types import SecretDict

    return CustomWebhookNotificationBlock(
        name=BLOCK_NAME,
        # The URL is a block secret (hidden in the UI and the API), substituted when sending.
        url="{{webhook_url}}",
        json_data={
            "title": "{{subject}}",
            "text": "{{subject}}\n\n{{body}}",
            "subject": "{{subject}}",
            "body": "{{body}}",
            "source": "coulisse",
        },
        secrets=SecretDict({"webhook_url": webhook_url}),
        headers=None,
        cookies=None,
    )


def automations(block_id: UUID) -> list[Automation]:
    """The two automations (see the module docstring), sending through block ``block_id``."""
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification

    failed = Automation(
        name=FAILED_AUTOMATION,
        description="Tell a person when a run of the Coulisse sync flow fails or crashes.",
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{state}" for state in FAILED_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},
            posture=Posture.Reactive,
            threshold=1,
            within=dt.timedelta(0),
        ),
        actions=[
            SendNotification(block_document_id=block_id, subject=FAILED_SUBJECT, body=FAILED_BODY)
        ],
    )
    grew = Automation(
        name=QUARANTINE_AUTOMATION,
        description=(
            "Tell a person when one Coulisse sync run put new records in quarantine "
            "(COULISSE_ALERT_QUARANTINE_GROWTH or more)."
        ),
        trigger=EventTrigger(
            expect={QUARANTINE_EVENT},
            match={"prefect.resource.id": QUARANTINE_RESOURCE},
            posture=Posture.Reactive,
            threshold=1,
            within=dt.timedelta(0),
        ),
        actions=[
            SendNotification(
                block_document_id=block_id, subject=QUARANTINE_SUBJECT, body=QUARANTINE_BODY
            )
        ],
    )
    return [failed, grew]


def configure_alerts(alerts: AlertSettings, api_url: str) -> list[str]:
    """Make the server at ``api_url`` match ``alerts``; the automations now there, by name.

    On: the block saved (overwritten) with the URL, each automation created or updated by name
    (a duplicate of the name is removed). Off: Coulisse's automations and block removed.
    """
    from prefect import get_client
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.schemas.automations import AutomationCore
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        if alerts.webhook_url is None:
            for name in AUTOMATIONS:
                for stale in client.read_automations_by_name(name):
                    client.delete_automation(stale.id)
            with contextlib.suppress(ValueError):  # ValueError: it was never saved
                CustomWebhookNotificationBlock.delete(BLOCK_NAME)
            return []
        block_id = _block(alerts.webhook_url).save(BLOCK_NAME, overwrite=True)
        for automation in automations(block_id):
            # Left unset, not None: the server's update refuses an owner_resource field.
            wanted = AutomationCore(**automation.model_dump(exclude={"id", "owner_resource"}))
            existing = client.read_automations_by_name(automation.name)
            for duplicate in existing[1:]:
                client.delete_automation(duplicate.id)
            if existing:
                client.update_automation(existing[0].id, wanted)
            else:
                client.create_automation(wanted)
        return configured_automations(client)


def configured_automations(client: Any) -> list[str]:
    """Coulisse's automations the server has, enabled ones only."""
    return [
        name
        for name in AUTOMATIONS
        if any(found.enabled for found in client.read_automations_by_name(name))
    ]


def alert_status(alerts: AlertSettings, api_url: str, *, server_running: bool) -> dict[str, Any]:
    """What `flows status` says about alerts: the settings, and what the server really has."""
    status: dict[str, Any] = {
        "enabled": alerts.enabled,
        "receiver": alerts.receiver,
        "quarantine_growth": alerts.quarantine_growth,
        "automations": None,
    }
    if server_running:
        from prefect import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            with (
                temporary_settings(updates={PREFECT_API_URL: api_url}),
                get_client(sync_client=True) as client,
            ):
                status["automations"] = configured_automations(client)
        except Exception as exc:  # noqa: BLE001 - a status line, not a reason to fail status
            status["error"] = f"{type(exc).__name__}: {exc}"
    return status


def describe(status: dict[str, Any]) -> str:
    """The status as one line for a person (`coulisse flows status`)."""
    found = status.get("automations")
    if not status["enabled"]:
        line = "off (set COULISSE_ALERT_WEBHOOK_URL, then run `coulisse flows up`)"
        if found:
            line += f"; the server still has {', '.join(found)}: run `coulisse flows up`"
        return line
    line = (
        f"on, to {status['receiver']} (failed runs; {status['quarantine_growth']} or more "
        "new quarantined records in one run)"
    )
    if "error" in status:
        return f"{line}; cannot read the server's automations: {status['error']}"
    if found is None:
        return f"{line}; the server is not running"
    missing = [name for name in AUTOMATIONS if name not in found]
    if missing:
        return f"{line}; missing on the server: {', '.join(missing)}: run `coulisse flows up`"
    return line


def alert_checks(env: Mapping[str, str], report: DoctorReport) -> None:
    """`coulisse doctor`'s line on alerts: on (and where to), off, or a setting to fix.

    Off is a choice, not a fault: the line is ok and says what that means. Nothing is sent.
    """
    from coulisse.doctor.report import Check
    from coulisse.orchestration.settings import AlertSettings
    from coulisse.project import ConfigError

    try:
        alerts = AlertSettings.load(env)
    except ConfigError as exc:
        report.add(Check("alerts", "settings", "failed", "an alert setting is not valid", str(exc)))
        return
    if not alerts.enabled:
        found = (
            "off: no COULISSE_ALERT_WEBHOOK_URL, so a failed sync run or new records in "
            "quarantine are only seen in the Prefect UI and `coulisse status`; set it to an "
            "incoming-webhook URL (Slack, Teams, ntfy...) to be told"
        )
    else:
        found = (
            f"on: failed sync runs and {alerts.quarantine_growth} or more new quarantined "
            f"records in one run are POSTed to {alerts.receiver} (set up by `coulisse flows up`)"
        )
    report.add(Check("alerts", "webhook", "ok", found))
