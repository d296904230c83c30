"""Prefect orchestration: the ``sync`` flow, its change check, its artifacts, its local server."""
