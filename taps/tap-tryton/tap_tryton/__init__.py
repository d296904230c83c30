"""tap-tryton: Tryton parties as Coulisse's canonical clients, read incrementally over JSON-RPC."""
