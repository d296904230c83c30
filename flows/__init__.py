"""Coulisse's Prefect flows, as Prefect finds them: ``flows/sync.py:sync_flow``.

The code lives in :mod:`coulisse.orchestration` (installed with the package); this folder is
the conventional entry point, e.g. for ``prefect deploy flows/sync.py:sync_flow``.
"""
