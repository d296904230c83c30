"""tap-ledger: emits the Coulisse ledger's pending writes for one system as canonical streams."""
