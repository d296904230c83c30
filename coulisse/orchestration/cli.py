"""`coulisse flows ...`: the local Prefect server, the scheduled sync, and one sync through it."""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from coulisse.project import ConfigError, project_env
from coulisse.stack.errors import StackError
from coulisse.stack.layout import StackLayout

if TYPE_CHECKING:
    from coulisse.orchestration.server import PrefectStack
    from coulisse.orchestration.settings import FlowSettings

console = Console(stderr=True)
out = Console()

flows_app = typer.Typer(
    help=(
        "Prefect runs the sync: a local Prefect server (UI and API on 127.0.0.1, its own "
        "SQLite database, no telemetry) and the `sync` flow served on an interval.\n\n"
        "Settings (environment or .env): COULISSE_PREFECT_PORT (default 4200), "
        "COULISSE_SYNC_INTERVAL (seconds between runs, 15), COULISSE_CRM_SCAN_MINUTES (full "
        "CRM read, 10), COULISSE_LOCK_WAIT (seconds a run waits for another sync, 30), "
        "COULISSE_STEP_RETRIES (2), PREFECT_HOME (default <stack home>/prefect).\n\n"
        "Alerts: COULISSE_ALERT_WEBHOOK_URL (a webhook that takes a JSON POST: Slack, Teams, "
        "ntfy...; unset: alerts off) gets a message when a sync run fails, and when one run "
        "puts COULISSE_ALERT_QUARANTINE_GROWTH (1) or more new records in quarantine; `flows "
        "up` sets them up on the Prefect server."
    ),
    no_args_is_help=True,
)


def _settings() -> FlowSettings:
    from coulisse.orchestration.settings import FlowSettings

    try:
        return FlowSettings.load(project_env())
    except ConfigError as exc:
        console.print(f"[bold red]configuration:[/] {exc}")
        raise typer.Exit(code=1) from exc


def _stack() -> PrefectStack:
    from coulisse.orchestration.server import PrefectStack

    settings = _settings()
    _use_local_server(settings)  # `up` and `status` talk to the server through Prefect's client
    return PrefectStack(StackLayout.from_env(), settings)


def _use_local_server(settings: FlowSettings) -> None:
    """Point this process's Prefect client at the stack's server (before importing prefect)."""
    os.environ.update(settings.prefect_env(os.environ))


def _print_status(status: dict[str, Any]) -> None:
    from coulisse.orchestration.alerts import describe

    served = "[green]yes[/]" if status["deployment_served"] else "[red]no[/]"
    running = "[green]yes[/]" if status["server_running"] else "[red]no[/]"
    out.print(f"Prefect server running: {running}   UI: {status['ui']}")
    out.print(
        f"Deployment {status['deployment']} served: {served}   every "
        f"{status['interval_seconds']:g} s"
    )
    out.print(f"Alerts: {describe(status['alerts'])}", highlight=False)
    out.print(f"Logs: {', '.join(status['logs'])}")


@flows_app.command()
def up() -> None:
    """Start the local Prefect server, set up its alerts, and serve the `sync` flow.

    Both run in the background (PID files in the stack's run/ folder) until `coulisse flows
    down`; the first start creates the server's database (about 10 s). Alerts follow
    COULISSE_ALERT_WEBHOOK_URL each time: created or updated, or removed when it is unset.
    """
    try:
        status = _stack().up()
    except StackError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=1) from exc
    _print_status(status)


@flows_app.command()
def down() -> None:
    """Stop the served deployment (its schedule pauses) and the Prefect server. Runs are kept."""
    for name, was_running in _stack().down().items():
        out.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@flows_app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Whether the server answers and the deployment is served; exit 1 when not."""
    report = _stack().status()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
    if not (report["server_running"] and report["deployment_served"]):
        raise typer.Exit(code=1)


@flows_app.command()
def serve() -> None:
    """Serve the `sync` deployment in the foreground (what `flows up` runs in the background)."""
    _use_local_server(_settings())
    from coulisse.orchestration.serve import serve as run_serve

    run_serve()


@flows_app.command()
def run(
    only: Annotated[
        str | None, typer.Option(help="Comma-separated entities (default: all that sync).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Read both systems in full, changed or not.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Observe and plan; write nothing to either system.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run to end.")] = 1800,
) -> None:
    """Run the served `sync` deployment once now, wait for it, and print where to see it.

    Exit 1 when the run fails (its cause is printed) or the deployment is not served.
    """
    from coulisse.orchestration.server import DEPLOYMENT, FLOW

    settings = _settings()
    stack = _stack()
    if not stack.deployment_served():
        console.print(
            "[bold red]error:[/] the sync deployment is not served: run `coulisse flows up`."
        )
        raise typer.Exit(code=1)
    _use_local_server(settings)
    from prefect.deployments import arun_deployment

    parameters: dict[str, Any] = {"force": force, "dry_run": dry_run}
    if only:
        parameters["only"] = [name.strip() for name in only.split(",") if name.strip()]
    flow_run = asyncio.run(
        arun_deployment(
            f"{FLOW}/{DEPLOYMENT}", parameters=parameters, timeout=timeout, tags=["manual"]
        )
    )
    state = flow_run.state
    url = f"{settings.ui_url}/runs/flow-run/{flow_run.id}"
    name = state.name if state is not None else "unknown"
    out.print(f"Flow run {flow_run.name}: {name}   {url}")
    if state is None or not state.is_completed():
        console.print(f"[bold red]sync failed:[/] {state.message if state else 'no state'}")
        raise typer.Exit(code=1)
