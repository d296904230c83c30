"""The ``sync`` flow (:mod:`coulisse.orchestration.flow`); run this file to serve it.

``python flows/sync.py`` serves the deployment on ``COULISSE_SYNC_INTERVAL`` against the
server in ``PREFECT_API_URL``, as `coulisse flows serve` does with the stack's settings.
"""

from __future__ import annotations

from coulisse.orchestration.flow import sync_flow
from coulisse.orchestration.serve import serve

__all__ = ["sync_flow"]

if __name__ == "__main__":
    serve()
