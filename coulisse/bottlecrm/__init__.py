"""BottleCRM's REST API as Coulisse uses it: an HTTP client and the CRM preparation."""
