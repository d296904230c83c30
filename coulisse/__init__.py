"""Coulisse: two-way sync between a front-office CRM and back-office accounting."""

__version__ = "0.1.0"
