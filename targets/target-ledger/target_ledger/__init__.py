"""target-ledger: stores what a system returned (canonical streams) in the Coulisse ledger."""
