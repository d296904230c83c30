"""Serve the ``sync`` deployment on its interval until stopped (the stack's background process).

Run by `coulisse flows up` in the background, or in the foreground by `coulisse flows serve`;
``PREFECT_API_URL`` must name the server (both commands set it).
"""

from __future__ import annotations

from coulisse.orchestration.settings import FlowSettings
from coulisse.project import project_env


def serve() -> None:
    """Register the deployment with its interval schedule and run its flow runs, one at a time.

    One at a time (``limit=1``): the run lock would serialise overlapping runs anyway, this
    keeps them from queueing as processes. Stopping pauses the schedule, so no late runs pile
    up while the stack is down.
    """
    from coulisse.orchestration.flow import sync_flow
    from coulisse.orchestration.server import DEPLOYMENT

    settings = FlowSettings.load(project_env())
    sync_flow.serve(
        name=DEPLOYMENT,
        interval=settings.interval,
        limit=1,
        pause_on_shutdown=True,
        description=(
            "Coulisse: check both systems for changes, then observe, plan and apply what "
            f"changed; every {settings.interval:g} s."
        ),
        tags=["coulisse"],
    )


if __name__ == "__main__":
    serve()
