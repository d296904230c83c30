"""target-tryton: applies the ledger's planned client writes to Tryton through JSON-RPC."""
