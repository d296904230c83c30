"""target-bottlecrm: applies the ledger's client operations to BottleCRM and records the outcome."""
