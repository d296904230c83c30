"""Tests of the Tryton JSON-RPC client."""

from __future__ import annotations
