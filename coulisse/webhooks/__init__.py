"""Near-real-time from the CRM: BottleCRM's signed webhooks flag records for a targeted run.

``coulisse serve`` receives the deliveries (:mod:`coulisse.webhooks.receiver`), checks their
signature (:mod:`coulisse.webhooks.signature`), remembers each delivery and flags the records it
names in the ledger's ``crm_changes`` table (:mod:`coulisse.webhooks.store`), then starts one
debounced sync for them (:mod:`coulisse.webhooks.trigger`). A Prefect flow can consume the same
flags instead; the periodic full scan catches whatever a lost delivery did not say.
"""
