"""`coulisse serve`: receive the CRM's webhooks and run targeted syncs for what they flag."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (COULISSE_WEBHOOK_HOST; default 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (COULISSE_WEBHOOK_PORT; default the CRM's port + 5)."),
    ] = None,
    run: Annotated[
        bool,
        typer.Option(
            "--run/--no-run",
            help="Start a targeted `coulisse sync` for the flagged records (default), or only "
            "flag them in the ledger for a Prefect flow to pick up.",
        ),
    ] = True,
    debounce: Annotated[
        float,
        typer.Option(help="Seconds to gather a burst of deliveries into one run."),
    ] = 1.0,
) -> None:
    """Receive BottleCRM's webhooks and sync the records they name, seconds after a change.

    Each delivery's HMAC-SHA256 signature is checked with COULISSE_WEBHOOK_SECRET; unsigned,
    tampered, expired (older than 5 minutes) and replayed deliveries are refused. Accepted ones
    are remembered in the ledger and their records flagged (table crm_changes); then one
    `coulisse sync` limited to those records runs, never two at once (the ledger's run lock).
    `coulisse stack up` registers this receiver in the local CRM. Stop with Ctrl-C.
    """
    from dataclasses import replace

    from coulisse.ledger import Ledger
    from coulisse.project import ConfigError, ledger_url, project_env
    from coulisse.webhooks.receiver import WebhookReceiver, make_server
    from coulisse.webhooks.runner import SubprocessSync
    from coulisse.webhooks.settings import RECEIVER_PATH, ReceiverSettings
    from coulisse.webhooks.store import ChangeStore
    from coulisse.webhooks.trigger import SyncTrigger

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    env = project_env()
    try:
        settings = ReceiverSettings.load(env)
        url = ledger_url(env)
    except ConfigError as exc:
        console.print(f"[bold red]configuration:[/] {exc}")
        raise typer.Exit(code=1) from exc
    settings = replace(settings, host=host or settings.host, port=port or settings.port)
    ledger = Ledger.open(url)
    store = ChangeStore(ledger.engine)
    store.prune()
    trigger = SyncTrigger(store, SubprocessSync(), debounce=debounce) if run else None
    receiver = WebhookReceiver(
        settings.secret, store, on_flagged=trigger.notify if trigger else None
    )
    try:
        server = make_server(receiver, settings.host, settings.port)
    except OSError as exc:
        console.print(
            f"[bold red]cannot listen on {settings.host}:{settings.port}:[/] {exc.strerror}. "
            "Stop what uses it, or choose another port: COULISSE_WEBHOOK_PORT=<port> (then "
            "`coulisse stack up` registers the new address in the local CRM)."
        )
        raise typer.Exit(code=1) from exc
    console.print(
        f"Receiving BottleCRM webhooks on http://{settings.host}:{settings.port}{RECEIVER_PATH}"
        + ("" if run else " (flag only: a Prefect flow consumes crm_changes)")
    )
    if trigger:
        trigger.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        server.server_close()
        if trigger:
            trigger.stop()
        ledger.close()
